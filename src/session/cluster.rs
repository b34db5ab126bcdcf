//! Sessions in a cluster (README, "Resumable sessions"): each session is recorded in NATS
//! ([`crate::cluster::sessions`]), so that a desktop may resume it on any node, also after the
//! node that held it died.
//!
//! A resume of a session this node does not hold:
//! 1. its record: unknown → a new session; another application's → refused like a bad token;
//! 2. held here from now on, by a compare-and-set on the record (of two nodes resuming it at
//!    once, the other gets `resumed: false`);
//! 3. its registrations (those of the previous node's session) registered again, for this
//!    node, while no connection is attached: the replies are not sent, the events are kept.
//!    When the previous node had itself just taken the session over and was still
//!    registering them again, the record names where they were before (`prev`), and those
//!    count too;
//! 4. the events of its DNs since the client's `lastEventSeq` read back from the event stream
//!    and kept with those (each once, in order);
//! 5. the previous node told to give the session up (close its connection with 4009, release
//!    its own registrations: the monitors never stop in between);
//! 6. this connection attached, as for a session held here.

use super::registry::{constant_time_eq, Sessions};
use super::requests::{Elsewhere, Next, Resuming, State};
use crate::audit::LogStr;
use crate::client::{ClientHandle, ClientInner, ReadBack};
use crate::cluster::node::{Node, SessionGiveUp};
use crate::cluster::records::Registration;
use crate::cluster::sessions::{Replayed, SessionRecord};
use crate::protocol::{self, CloseCause};
use crate::router::messages::{DnOp, ToDn};
use crate::router::Shared;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tracing::{debug, info, warn};

/// How many times `client-queue` events a resume on another node may replay at most (what
/// the event stream holds within `replay-window`, where one router keeps `client-queue`).
const REPLAY_FACTOR: usize = 16;

/// The node's sessions, for the node to give one up.
struct GiveUp {
    shared: Arc<Shared>,
    sessions: Arc<Sessions>,
}

impl SessionGiveUp for GiveUp {
    fn give_up(&self, session: &str) {
        let Some(record) = session
            .parse::<u64>()
            .ok()
            .and_then(|id| self.sessions.find_client(id))
        else {
            return;
        };
        record.client.take_away();
        if self.sessions.end(&record) {
            debug!(
                client = record.client.id,
                "session resumed on another node: given up here"
            );
            super::end_session(&self.shared, &record);
        }
    }
}

impl super::Clients {
    /// What gives up a session of this node resumed on another.
    pub fn give_up(&self, shared: &Arc<Shared>) -> Arc<dyn SessionGiveUp> {
        Arc::new(GiveUp {
            shared: shared.clone(),
            sessions: self.sessions.clone(),
        })
    }
}

/// The cluster node, if this router is one and has joined.
fn node_of(slot: &OnceLock<Arc<Node>>) -> Option<Arc<Node>> {
    slot.get().cloned()
}

/// The session of `record` ended here: its record in the cluster goes too (unless another
/// node holds it by now).
pub(super) fn forget(slot: &Arc<OnceLock<Arc<Node>>>, record: &super::registry::Record) {
    let Some(node) = node_of(slot) else {
        return;
    };
    let id = record.id();
    tokio::spawn(async move {
        if let Err(e) = node.sessions().delete_if_held(&id, node.node_id()).await {
            warn!("a client session's record was not removed from the cluster: {e}");
        }
    });
}

impl State {
    /// Whether this router is a node of a cluster.
    pub(super) fn clustered(&self) -> bool {
        self.shared.config().cluster.is_some()
    }

    /// Record a new session in the cluster (in the background), so any node can resume it.
    pub(super) fn publish_session(&self, record: &super::registry::Record) {
        let Some(node) = node_of(&self.node) else {
            return;
        };
        if self.shared.config().server.session_linger.0.is_zero() {
            return;
        }
        let id = record.id();
        let value = SessionRecord {
            app: record.client.application.to_string(),
            node: node.node_id().to_string(),
            session: record.client.id.to_string(),
            opened_ms: record.opened_ms,
            prev: None,
        };
        tokio::spawn(async move {
            if let Err(e) = node.sessions().put(&id, &value).await {
                warn!("a client session was not recorded in the cluster (it can be resumed on this node only): {e}");
            }
        });
    }
}

impl super::Session {
    /// Resume a session this node does not hold (see the [module docs](self)): what to do
    /// next (attach, a new session, or refuse).
    pub(super) async fn resume_elsewhere(&mut self) -> Next {
        let Some(e) = self.state.elsewhere.take() else {
            return Next::Continue;
        };
        let Some(node) = node_of(&self.state.node) else {
            return self.state.open_new(e.reference_id, e.handle, true);
        };
        let found = node.sessions().get(&e.session_id).await;
        let (held, revision) = match found {
            Ok(Some(found)) => found,
            Ok(None) => return self.state.open_new(e.reference_id, e.handle, true),
            Err(err) => {
                warn!("a resume could not read the cluster's sessions; a new session is opened: {err}");
                return self.state.open_new(e.reference_id, e.handle, true);
            }
        };
        if !constant_time_eq(held.app.as_bytes(), e.handle.application.as_bytes()) {
            crate::metrics::session_resume("refused");
            info!(application = %LogStr(&e.handle.application), "resume refused: the session belongs to another application");
            self.state.pending = Some(e.handle);
            return Next::Close(1008, "authentication failed", CloseCause::Auth);
        }
        if held.node == **node.node_id() {
            // Recorded as held here, but gone (it ended as the record was being removed).
            return self.state.open_new(e.reference_id, e.handle, true);
        }
        match self.take_from(&node, &e, (&held, revision)).await {
            // Still ours: another node may have resumed it meanwhile, and this one gave it up.
            Some(resuming) if self.state.sessions.generation(&resuming.record).is_some() => {
                self.state.resuming = Some(resuming);
                Next::Resume
            }
            _ => self.state.open_new(e.reference_id, e.handle, true),
        }
    }

    /// Steps 2 to 5: the session held here, its registrations and missed events, the previous
    /// node told. `None` when another node took it first.
    async fn take_from(
        &mut self,
        node: &Arc<Node>,
        e: &Elsewhere,
        (held, revision): (&SessionRecord, u64),
    ) -> Option<Resuming> {
        let shared = self.state.shared.clone();
        let server = &shared.config().server;
        let (mut inner, rx) = ClientInner::local(
            crate::client::next_client_id(),
            server.client_queue,
            server.client_queue,
            self.state.conn.clone(),
        );
        // What the event stream holds within `replay-window` is replayed, not only the last
        // `client-queue` events; the session keeps `client-queue` again once resumed.
        inner.widen_kept(REPLAY_FACTOR);
        inner.application = e.handle.application.clone();
        inner.access = e.handle.access;
        // No connection until the replay is ready: replies are not sent, events are kept.
        inner.detach(&self.state.conn, Vec::new(), rx);
        let client = ClientHandle::new(inner);
        let (record, generation) =
            self.state
                .sessions
                .adopt(&e.session_id, client.clone(), held.opened_ms)?;
        let mine = SessionRecord {
            app: held.app.clone(),
            node: node.node_id().to_string(),
            session: client.id.to_string(),
            opened_ms: held.opened_ms,
            prev: Some((held.node.clone(), held.session.clone())),
        };
        if !matches!(
            node.sessions().claim(&e.session_id, revision, &mine).await,
            Ok(true)
        ) {
            self.state.sessions.end(&record);
            client.end();
            return None;
        }
        let last = self.state.last_by_switch(&e.last_event_seq);
        let dns = register_again(&shared, node, held, &client, &record).await;
        for (switch, dns) in dns {
            let Some(name) = shared
                .switches
                .get(usize::from(switch))
                .map(|s| s.name.clone())
            else {
                continue;
            };
            let after = last.get(usize::from(switch)).copied().unwrap_or(0);
            let replayed = node
                .sessions()
                .replay(&name, (after, held.opened_ms), &dns)
                .await;
            let link = shared
                .switches
                .get(usize::from(switch))
                .map(|s| s.view().active_link);
            client.merge_kept(switch, replayed.map(|r| with_failovers(&name, link, r)));
        }
        node.sessions().take_over(&held.node, &held.session).await;
        Some(Resuming {
            reference_id: e.reference_id,
            record,
            generation,
            session_id: e.session_id.clone(),
            last,
        })
    }
}

impl super::Session {
    /// A session held here, resumed in a cluster: what its kept events miss above the
    /// client's `lastEventSeq` (a gap: more than `client-queue` events while away) is read
    /// back from the event stream first, as a resume on another node would.
    pub(super) async fn fill_gaps(&mut self) {
        let (Some(node), Some(r)) = (node_of(&self.state.node), self.state.resuming.as_ref())
        else {
            return;
        };
        let client = r.record.client.clone();
        let last = r.last.clone();
        let at = |s: u16| last.get(usize::from(s)).copied().unwrap_or(0);
        let plan = client.plan(at);
        if plan.gap.is_empty() {
            return;
        }
        let mut dns: HashMap<u16, HashMap<Arc<str>, bool>> = HashMap::new();
        for (dn, (switch, calls)) in r.record.registered().iter() {
            if let Ok(s) = u16::try_from(*switch) {
                dns.entry(s).or_default().insert(dn.clone(), *calls);
            }
        }
        let opened = r.record.opened_ms;
        let shared = self.state.shared.clone();
        client.widen_kept(REPLAY_FACTOR);
        for switch in plan.gap {
            let (Some(sw), Some(dns)) =
                (shared.switches.get(usize::from(switch)), dns.get(&switch))
            else {
                continue;
            };
            let replayed = node
                .sessions()
                .replay(&sw.name, (at(switch), opened), dns)
                .await;
            let link = Some(sw.view().active_link);
            client.merge_kept(switch, replayed.map(|r| with_failovers(&sw.name, link, r)));
        }
    }
}

/// Register for `client` the DNs of the previous node's session `held`, and wait (bounded)
/// for the replies: the DNs by switch index, each with whether it has `callEvents`.
async fn register_again(
    shared: &Arc<Shared>,
    node: &Arc<Node>,
    held: &SessionRecord,
    client: &ClientHandle,
    record: &super::registry::Record,
) -> HashMap<u16, HashMap<Arc<str>, bool>> {
    let mut regs = list_registrations(node, &held.node, &held.session).await;
    if let Some((prev_node, prev_session)) = &held.prev {
        // The holder may still be registering the DNs again: what it has not yet are the
        // previous holder's.
        let have: HashSet<String> = regs.iter().map(|r| r.dn.clone()).collect();
        let earlier = list_registrations(node, prev_node, prev_session).await;
        regs.extend(earlier.into_iter().filter(|r| !have.contains(&r.dn)));
    }
    let mut by_switch: HashMap<u16, HashMap<Arc<str>, bool>> = HashMap::new();
    let mut sent = 0usize;
    for (i, reg) in regs.iter().enumerate() {
        let Some(switch) = shared.switch_of(&reg.dn) else {
            continue;
        };
        let (Some(requests), Ok(index)) = (switch.requests(), u16::try_from(switch.index)) else {
            continue;
        };
        let dn: Arc<str> = Arc::from(reg.dn.as_str());
        record
            .registered()
            .insert(dn.clone(), (switch.index, reg.call_events));
        by_switch
            .entry(index)
            .or_default()
            .insert(dn.clone(), reg.call_events);
        requests.do_send(ToDn {
            dn,
            op: DnOp::Register {
                client: client.clone(),
                reference_id: u64::MAX - i as u64,
                mode: reg.mode,
                call_events: reg.call_events,
            },
        });
        sent += 1;
    }
    // A monitoring session may register 100,000 DNs: a millisecond more each.
    let deadline = tokio::time::Instant::now()
        + shared.config().options.request_timeout.0
        + Duration::from_secs(1)
        + Duration::from_millis(u64::try_from(sent).unwrap_or(u64::MAX));
    while client.replies_away() < sent && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    debug!(
        client = client.id,
        registrations = sent,
        "a session resumed from another node registered again"
    );
    by_switch
}

/// The registrations the cluster records for one node's local session (none, logged, when
/// they cannot be read).
async fn list_registrations(node: &Arc<Node>, node_id: &str, session: &str) -> Vec<Registration> {
    match node.records().list_session(node_id, session).await {
        Ok(regs) => regs,
        Err(e) => {
            warn!("a resumed session's registrations could not be read from the cluster: {e}");
            Vec::new()
        }
    }
}

/// The events read back, and where the owner changed between two of them (or since the
/// client's last event) the `EventLinkDisconnected`/`EventLinkConnected` of that failover,
/// to be sent just before the first event of the new owner: what the client would have got.
fn with_failovers(switch: &str, link: Option<usize>, r: Replayed) -> ReadBack {
    let mut prev = r.epoch_before;
    let mut events = Vec::with_capacity(r.events.len());
    let mut notices = Vec::new();
    for e in r.events {
        if let (Some(p), Some(epoch)) = (prev, e.epoch) {
            if epoch > p {
                notices.push((
                    e.seq,
                    protocol::link_event(switch, false, None, Some("failover")),
                ));
                notices.push((
                    e.seq,
                    protocol::link_event(switch, true, link, Some("failover")),
                ));
            }
        }
        prev = e.epoch.or(prev);
        events.push((e.seq, e.text));
    }
    (events, notices, r.covered)
}
