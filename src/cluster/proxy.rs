//! A switch as this node serves it while another node owns it: the client requests on its
//! DNs go to the owner ([`Proxy::request`], a forwarder per switch that keeps the clients'
//! order), and the owner's flow to this node comes back here ([`Proxy::on_flow`]) to be handed
//! to the clients in the order the owner sent it, holes repaired from the event stream first.
//!
//! The proxy also keeps, whoever owns the switch, which clients of this node are registered on
//! which DN ("interest"): learnt from the replies of the owner, or told by this node's own
//! shard while the switch is owned here, so that when ownership moves the events of the new
//! owner reach the same clients.
//!
//! The rules (README, "Cluster"):
//! - a request is sent to the owner this node knows, with its epoch; when the owner answers
//!   "not the owner" or nobody answers, it is sent once more to a newer owner if one is known,
//!   else answered 54; after a timeout it is never sent again, and its client gets 57 once
//!   `request-timeout` + 1 s have passed without the reply;
//! - nothing of the flow is delivered past a hole: events are read back from the stream, and
//!   clients whose reply or events are lost for good are closed with 1013;
//! - when the owner is found gone (its lease expired, or nobody answered), the clients get
//!   `EventLinkDisconnected` (`reason: "failover"`) and every request waiting on it gets 54.

use super::flow::{FlowMessage, FlowReceiver, Hole, Kind, Step};
use super::forward::{Forwarded, Op};
use super::keys::Subjects;
use super::sessions::{stream_event, stream_messages};
use super::writer::RecordsWriter;
use crate::client::ClientHandle;
use crate::metrics::ClusterMetrics;
use crate::protocol::{self, ErrorCode, ProtocolError, SharedText};
use crate::router::messages::ToDn;
use crate::router::{Shared, SwitchCtx};
use actix::prelude::*;
use async_nats::jetstream::consumer::{self, DeliverPolicy};
use async_nats::jetstream::stream::Stream;
use futures_util::StreamExt;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

mod forwarder;
use forwarder::forwarder;

/// How long the owner has to say whether it took a forwarded request. It answers before doing
/// anything, so this only runs out when the owner is frozen or cut off; the request is then
/// never sent again (it may have been taken). Checked every 100 ms.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(1);

/// How long reading a hole back from the event stream may take.
const REPAIR_TIMEOUT: Duration = Duration::from_secs(2);

/// The owner of a switch as this node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownOwner {
    /// Its node name.
    pub node: Arc<str>,
    /// Its node id (the subject its requests go to).
    pub id: Arc<str>,
    /// Its lease's epoch.
    pub epoch: u64,
    /// The revision of its lease last seen (each renew makes a new one).
    pub revision: u64,
}

/// A request waiting for the owner's reply.
#[derive(Debug)]
struct Waiting {
    client: ClientHandle,
    dn: Arc<str>,
    sent: Instant,
    deadline: Instant,
}

/// What the proxy knows and holds, behind one lock.
#[derive(Debug, Default)]
struct State {
    /// This node owns the switch: the proxy forwards nothing and delivers no flow.
    here: bool,
    owner: Option<KnownOwner>,
    /// The owner stopped answering (nobody answered, or an answer timed out): requests get 54
    /// at once until it renews its lease again (`revision` past this) or another owner comes.
    suspect: Option<u64>,
    /// The clients were told the switch failed over and not yet that it is back.
    failover_told: bool,
    receiver: FlowReceiver,
    /// This node's clients registered on each DN, each with whether it asked for call events.
    interest: HashMap<Arc<str>, Vec<(ClientHandle, bool)>>,
    /// Requests waiting for their reply, by (client id, referenceId).
    waiting: HashMap<(u64, u64), Waiting>,
    /// When the flow last delivered something (where a repair starts reading the stream).
    last_delivery: Option<std::time::SystemTime>,
    /// A reload removed the switch from this node's file: nothing more is delivered.
    removed: bool,
}

/// A forwarded request on its way to the forwarder task.
#[derive(Debug)]
struct Outgoing {
    request: Forwarded,
    /// The waiting entry, when a reply is due.
    key: Option<(u64, u64)>,
}

/// A switch served from another node (see the [module docs](self)).
pub struct Proxy {
    /// The switch.
    pub switch: Arc<SwitchCtx>,
    shared: Arc<Shared>,
    node_id: Arc<str>,
    metrics: ClusterMetrics,
    state: Mutex<State>,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    records: RecordsWriter,
    events: Stream,
    event_subject: String,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("switch", &self.switch.name)
            .finish_non_exhaustive()
    }
}

/// What a proxy needs from the node.
pub struct ProxyParts {
    /// The switch.
    pub switch: Arc<SwitchCtx>,
    /// The process state (clients, configuration).
    pub shared: Arc<Shared>,
    /// This node's id.
    pub node_id: Arc<str>,
    /// The switch's cluster metrics.
    pub metrics: ClusterMetrics,
    /// The NATS client (forwarded requests).
    pub client: async_nats::Client,
    /// The cluster's event stream (repairs).
    pub events: Stream,
    /// The cluster's subjects (the switch's in the stream, the owner's forwarded requests).
    pub subjects: Subjects,
    /// Where registrations are recorded.
    pub records: RecordsWriter,
}

impl Proxy {
    /// Start the proxy of a switch (its forwarder task on the current runtime) and make it
    /// where the switch's requests go while another node owns it.
    pub fn start(parts: ProxyParts) -> Arc<Proxy> {
        let (tx, rx) = mpsc::unbounded_channel();
        let proxy = Arc::new(Proxy {
            event_subject: parts.subjects.event(&parts.switch.name),
            switch: parts.switch,
            shared: parts.shared,
            node_id: parts.node_id,
            metrics: parts.metrics,
            state: Mutex::new(State::default()),
            outgoing: tx,
            records: parts.records,
            events: parts.events,
            runtime: tokio::runtime::Handle::current(),
        });
        tokio::spawn(forwarder(proxy.clone(), parts.client, parts.subjects, rx));
        let inbox = Inbox(proxy.clone()).start();
        let _ = proxy.switch.remote.set(inbox.recipient());
        proxy
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The owner requests may go to now (`None`: nobody, or it stopped answering).
    pub fn owner(&self) -> Option<KnownOwner> {
        let st = self.lock();
        st.owner.clone().filter(|_| st.suspect.is_none())
    }

    /// A client request about one of the switch's DNs (see the [module docs](self)).
    pub fn request(&self, to: ToDn) {
        let ToDn { dn, op } = to;
        // Only a new owner restores registrations, in its own shard.
        let Some((client, op)) = Op::from_dn_op(op) else {
            return;
        };
        let session: Arc<str> = Arc::from(client.id.to_string());
        let mut st = self.lock();
        if st.here {
            drop(st);
            // Owned here since the session looked: the shard takes it.
            if let Some(shard) = self.switch.shard.get() {
                let op = op.into_dn_op(client);
                shard.requests.do_send(ToDn { dn, op });
            }
            return;
        }
        if matches!(op, Op::Unregister { reference_id: None }) {
            // The client left: it is no longer interested, whoever owns the switch now.
            remove_interest(&mut st.interest, &dn, client.id);
            st.waiting.retain(|(id, _), _| *id != client.id);
            self.records
                .delete(&self.switch.name, &dn, &self.node_id, &session);
        }
        let owner = st.owner.clone().filter(|_| st.suspect.is_none());
        let key = op.reference_id().map(|r| (client.id, r));
        let Some(owner) = owner else {
            drop(st);
            if let Some(reference_id) = op.reference_id() {
                self.no_owner(&client, reference_id, &dn, Instant::now());
            }
            return;
        };
        if let Some(k) = key {
            let now = Instant::now();
            let limit = self.shared.config().options.request_timeout.0 + Duration::from_secs(1);
            st.waiting.insert(
                k,
                Waiting {
                    client: client.clone(),
                    dn: dn.clone(),
                    sent: now,
                    deadline: now + limit,
                },
            );
        }
        drop(st);
        let request = Forwarded {
            switch: self.switch.name.clone(),
            epoch: owner.epoch,
            node: self.node_id.clone(),
            session,
            application: client.application.clone(),
            access: client.access,
            dn,
            op,
        };
        let _ = self.outgoing.send(Outgoing { request, key });
    }

    /// Answer a request 54: no node owns the switch now.
    fn no_owner(&self, client: &ClientHandle, reference_id: u64, dn: &str, sent: Instant) {
        let e = ProtocolError::new(
            reference_id,
            ErrorCode::NoSwitch,
            format!(
                "No router node serves switch {} at the moment (its owner is failing over); retry in a few seconds.",
                self.switch.name
            ),
        )
        .dn(dn);
        self.metrics
            .forwarded(Some(ErrorCode::NoSwitch), sent.elapsed());
        client.reply_error(&e, Some(&self.switch.name), None);
    }

    /// Answer a waiting request with an error of our own (the owner's reply, if it still
    /// comes, is dropped).
    fn fail_waiting(&self, key: (u64, u64), code: ErrorCode, message: String) {
        let Some(w) = self.lock().waiting.remove(&key) else {
            return;
        };
        let e = ProtocolError::new(key.1, code, message).dn(&w.dn);
        self.metrics.forwarded(Some(code), w.sent.elapsed());
        w.client.reply_error(&e, Some(&self.switch.name), None);
    }

    /// Answer every waiting request 54 (the owner they went to is gone).
    fn fail_all_waiting(st: &mut State) -> Vec<((u64, u64), Waiting)> {
        st.waiting.drain().collect()
    }

    fn answer_54(&self, failed: Vec<((u64, u64), Waiting)>, why: &str) {
        for ((_, reference_id), w) in failed {
            let e = ProtocolError::new(
                reference_id,
                ErrorCode::NoSwitch,
                format!(
                    "{why}; the request may not have reached switch {}. Check, then retry.",
                    self.switch.name
                ),
            )
            .dn(&w.dn);
            self.metrics
                .forwarded(Some(ErrorCode::NoSwitch), w.sent.elapsed());
            w.client.reply_error(&e, Some(&self.switch.name), None);
        }
    }

    /// Requests waiting past `request-timeout` + 1 s get 57 (called periodically).
    pub fn sweep(&self) {
        let now = Instant::now();
        let expired: Vec<(u64, u64)> = self
            .lock()
            .waiting
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            self.fail_waiting(
                key,
                ErrorCode::Timeout,
                format!(
                    "The node owning switch {} did not answer in time; the request may or may not have been carried out.",
                    self.switch.name
                ),
            );
        }
    }

    /// The owner of the switch as the lease says (`None`: no node holds it).
    pub fn set_owner(&self, owner: Option<KnownOwner>) {
        let mut st = self.lock();
        if st.removed {
            return;
        }
        let before = st.owner.clone();
        match (&before, &owner) {
            (Some(b), Some(o)) if b.epoch == o.epoch => {
                if st.suspect.is_some_and(|r| o.revision > r) {
                    // It renewed its lease after it stopped answering: alive after all.
                    st.suspect = None;
                }
                st.owner = owner;
                return;
            }
            (None, None) => return,
            _ => {}
        }
        if let Some(o) = &owner {
            if o.epoch < st.receiver.epoch() {
                // An older lease than a flow already seen: the watch is behind.
                return;
            }
            if o.epoch > st.receiver.epoch() {
                st.receiver.new_epoch(o.epoch);
            }
        }
        st.owner = owner.clone();
        st.suspect = None;
        if st.here {
            // This node owns the switch (an old lease seen late): what clients see stays.
            return;
        }
        *self
            .switch
            .owner
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = owner.as_ref().map(|o| o.node.clone());
        let failed = Proxy::fail_all_waiting(&mut st);
        // Clients that know the link is down already (its owner said why) are not told again.
        let tell = before.is_some()
            && owner.is_none()
            && !st.failover_told
            && self.switch.link_up.load(Ordering::Relaxed);
        if tell {
            st.failover_told = true;
        }
        drop(st);
        self.answer_54(failed, "The node that owned the switch is gone");
        if tell {
            self.tell_failover();
        }
    }

    /// The owner stopped answering: requests get 54 until it shows it is alive; when nobody
    /// answers at all (`gone`), the clients are told the switch fails over.
    fn suspect(&self, epoch: u64, gone: bool) {
        let mut st = self.lock();
        let Some(owner) = st.owner.clone().filter(|o| o.epoch == epoch) else {
            return;
        };
        st.suspect = Some(owner.revision);
        let tell =
            gone && !st.here && !st.failover_told && self.switch.link_up.load(Ordering::Relaxed);
        if tell {
            st.failover_told = true;
        }
        drop(st);
        if tell {
            info!(switch = %self.switch.name, owner = %owner.node, "the switch's owner does not answer: failing over");
            self.tell_failover();
        }
    }

    /// `EventLinkDisconnected` (`reason: "failover"`) to every client of this node.
    fn tell_failover(&self) {
        self.shared.hub.announce(|| {
            self.switch.set_link_up(false);
            Some(protocol::link_event(
                &self.switch.name,
                false,
                None,
                Some("failover"),
            ))
        });
    }

    /// The owner's link state (`epoch`: the owner's; `event`: a change, else the periodic
    /// state). Clients hear of a change.
    pub fn link_state(&self, epoch: u64, up: bool, link: usize, reason: Option<&str>, event: bool) {
        let mut st = self.lock();
        if st.here
            || st.removed
            || epoch < st.receiver.epoch()
            || st.owner.as_ref().is_some_and(|o| o.epoch > epoch)
        {
            return;
        }
        let was_up = self.switch.link_up.load(Ordering::Relaxed);
        let was_link = self.switch.active_link.load(Ordering::Relaxed);
        let changed = up != was_up || (up && link != was_link);
        if !(changed || up && st.failover_told) {
            return;
        }
        if up {
            st.failover_told = false;
        }
        // A change seen only in the periodic state lost its event: say the plain reason.
        let reason = match (event, up) {
            (true, _) => reason,
            (false, false) => Some("link_lost"),
            (false, true) => None,
        };
        self.shared.hub.announce(|| {
            if up {
                self.switch.active_link.store(link, Ordering::Relaxed);
            }
            self.switch.set_link_up(up);
            Some(protocol::link_event(
                &self.switch.name,
                up,
                Some(link),
                reason,
            ))
        });
        drop(st);
    }

    /// This node took the switch: requests go to its shard from now on; those waiting on the
    /// former owner get 54.
    pub fn owned_here(&self) {
        let mut st = self.lock();
        st.here = true;
        st.suspect = None;
        let failed = Proxy::fail_all_waiting(&mut st);
        drop(st);
        self.answer_54(failed, "The switch's owner changed before it answered");
    }

    /// Requests of this node's clients waiting for the owner's reply (a stopping node lets
    /// them be answered before it closes its clients).
    pub fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }

    /// This node no longer owns the switch (its lease lapsed or it stops).
    pub fn not_owned_here(&self) {
        let mut st = self.lock();
        st.here = false;
        st.owner = None;
    }

    /// A reload removed the switch from this node's file: this node's clients registered on
    /// its DNs get `EventUnregistered` (59) and their records go, requests waiting on the
    /// owner get 54, and no flow, owner or link state of the switch reaches the clients any
    /// more (another node may still serve it until its own reload).
    pub fn removed(&self) {
        let mut st = self.lock();
        st.removed = true;
        st.here = false;
        st.owner = None;
        let interest = std::mem::take(&mut st.interest);
        let failed = Proxy::fail_all_waiting(&mut st);
        drop(st);
        self.answer_54(failed, "The switch was removed from the configuration");
        for (dn, clients) in interest {
            let text = crate::router::messages::left_plan_notice(&dn, &self.switch.name);
            for (client, _) in clients {
                if client.remote_session().is_none() {
                    let session: Arc<str> = Arc::from(client.id.to_string());
                    self.records
                        .delete(&self.switch.name, &dn, &self.node_id, &session);
                }
                client.dropped(text.clone());
            }
        }
    }

    /// A client of this node registered a DN in this node's shard (the switch is owned here).
    pub fn local_registered(&self, dn: &Arc<str>, client: &ClientHandle, call_events: bool) {
        add_interest(&mut self.lock().interest, dn, client, call_events);
    }

    /// A client of this node unregistered a DN in this node's shard.
    pub fn local_unregistered(&self, dn: &str, client: &ClientHandle) {
        remove_interest(&mut self.lock().interest, dn, client.id);
    }

    /// A message of the owner's flow to this node, for this switch.
    pub fn on_flow(self: &Arc<Self>, m: FlowMessage) {
        let mut st = self.lock();
        if st.here || st.removed {
            return;
        }
        let steps = st.receiver.on_message(m);
        self.run(st, steps);
    }

    fn run(self: &Arc<Self>, mut st: MutexGuard<'_, State>, steps: Vec<Step>) {
        let mut close = Vec::new();
        for step in steps {
            match step {
                Step::Deliver(m) => {
                    st.last_delivery = Some(std::time::SystemTime::now());
                    self.deliver(&mut st, m);
                }
                Step::Repair(hole) => {
                    let dns: Vec<Arc<str>> = st.interest.keys().cloned().collect();
                    let since = st.last_delivery;
                    let proxy = self.clone();
                    self.runtime.spawn(async move {
                        let found = proxy.read_hole(hole, dns, since).await;
                        let mut st = proxy.lock();
                        let steps = st.receiver.repaired(found);
                        let lost = steps
                            .iter()
                            .any(|s| matches!(s, Step::RepliesLost | Step::EventsLost));
                        if !lost {
                            proxy.metrics.flow_gap(true);
                        }
                        proxy.run(st, steps);
                    });
                }
                Step::RepliesLost => {
                    warn!(switch = %self.switch.name, "replies from the switch's owner were lost: the clients waiting for them are closed with 1013");
                    self.metrics.flow_gap(false);
                    close.extend(st.waiting.drain().map(|(_, w)| w.client));
                }
                Step::EventsLost => {
                    warn!(switch = %self.switch.name, "events from the switch's owner were lost and are not in the event stream: its registered clients are closed with 1013");
                    self.metrics.flow_gap(false);
                    close.extend(st.interest.values().flatten().map(|(c, _)| c.clone()));
                }
            }
        }
        drop(st);
        for c in close {
            c.close_to_reconnect();
        }
    }

    fn deliver(&self, st: &mut State, m: FlowMessage) {
        match m.kind {
            Kind::Event { dn, seq } => {
                let mut delivered = 0u64;
                // Call events only to the clients that asked for them.
                let call = protocol::is_call_event(&m.text);
                for (c, calls) in st.interest.get(&dn).into_iter().flatten() {
                    if call && !calls {
                        continue;
                    }
                    if c.event(self.switch.index, seq, m.text.clone()) {
                        delivered += 1;
                    }
                }
                self.switch.metrics.events_delivered.increment(delivered);
            }
            Kind::Session { session, reply } => {
                let Ok(id) = session.parse::<u64>() else {
                    return;
                };
                if !reply {
                    if let Some(c) = self.shared.hub.get(id) {
                        c.push(m.text, false);
                    }
                    return;
                }
                let Some(head) = Head::read(&m.text) else {
                    return;
                };
                let Some(w) = st.waiting.remove(&(id, head.reference_id)) else {
                    // Answered already (57, or 54 when the owner changed).
                    debug!(switch = %self.switch.name, client = id, "a late reply from the switch's owner is dropped");
                    return;
                };
                match head.kind.as_str() {
                    "EventRegistered" => {
                        add_interest(&mut st.interest, &w.dn, &w.client, head.call_events)
                    }
                    "EventUnregistered" => remove_interest(&mut st.interest, &w.dn, id),
                    _ => {}
                }
                self.metrics.forwarded(head.error, w.sent.elapsed());
                w.client.reply(m.text);
            }
            Kind::Heartbeat => {}
        }
    }

    /// Read a hole's events back from the stream: the switch's events with `eventSeq` in
    /// the hole, of the DNs this node's clients registered. `None` when the stream could not
    /// be read.
    async fn read_hole(
        &self,
        hole: Hole,
        dns: Vec<Arc<str>>,
        since: Option<std::time::SystemTime>,
    ) -> Option<Vec<FlowMessage>> {
        if hole.events == 0 {
            return Some(Vec::new());
        }
        let start = since
            .unwrap_or_else(std::time::SystemTime::now)
            .checked_sub(Duration::from_secs(5))?;
        let start = time::OffsetDateTime::from(start);
        let config = consumer::pull::OrderedConfig {
            filter_subject: format!("{}.>", self.event_subject),
            deliver_policy: DeliverPolicy::ByStartTime { start_time: start },
            ..Default::default()
        };
        let deadline = tokio::time::Instant::now() + REPAIR_TIMEOUT;
        let mut messages = stream_messages(&self.events, config, deadline).await?;
        let mut found = Vec::new();
        // Until the hole's last event went by, or the time is up (what was found is kept).
        while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, messages.next()).await {
            let Some((dn, seq)) = stream_event(msg.headers.as_ref()) else {
                continue;
            };
            let dn: Arc<str> = Arc::from(dn);
            if seq > hole.after && seq <= hole.until && dns.iter().any(|d| **d == *dn) {
                if let Ok(text) = SharedText::try_from(msg.payload.to_vec()) {
                    found.push(FlowMessage {
                        switch: self.switch.name.clone(),
                        epoch: 0,
                        number: 0,
                        events: 0,
                        prev: 0,
                        kind: Kind::Event { dn, seq },
                        text,
                    });
                }
            }
            if seq >= hole.until {
                break;
            }
        }
        Some(found)
    }
}

/// The start of a reply, as far as the proxy reads it.
#[derive(Debug)]
struct Head {
    kind: String,
    reference_id: u64,
    error: Option<ErrorCode>,
    /// `callEvents` of an `EventRegistered`.
    call_events: bool,
}

impl Head {
    fn read(text: &str) -> Option<Head> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(rename = "message")]
            kind: String,
            #[serde(rename = "referenceId")]
            reference_id: u64,
            #[serde(rename = "errorCode")]
            error_code: Option<u32>,
            #[serde(rename = "callEvents", default)]
            call_events: bool,
        }
        let w: Wire = serde_json::from_str(text).ok()?;
        let error = w
            .error_code
            .and_then(|n| ErrorCode::ALL.iter().copied().find(|c| c.code() == n));
        Some(Head {
            kind: w.kind,
            reference_id: w.reference_id,
            error,
            call_events: w.call_events,
        })
    }
}

fn add_interest(
    interest: &mut HashMap<Arc<str>, Vec<(ClientHandle, bool)>>,
    dn: &Arc<str>,
    client: &ClientHandle,
    call_events: bool,
) {
    let list = interest.entry(dn.clone()).or_default();
    match list.iter_mut().find(|(c, _)| c.id == client.id) {
        // Registering again replaces what it asked for.
        Some((_, calls)) => *calls = call_events,
        None => list.push((client.clone(), call_events)),
    }
}

fn remove_interest(interest: &mut HashMap<Arc<str>, Vec<(ClientHandle, bool)>>, dn: &str, id: u64) {
    if let Some(list) = interest.get_mut(dn) {
        list.retain(|(c, _)| c.id != id);
        if list.is_empty() {
            interest.remove(dn);
        }
    }
}

/// Where sessions send requests for a switch owned elsewhere: hands them to the proxy.
struct Inbox(Arc<Proxy>);

impl Actor for Inbox {
    type Context = Context<Self>;
}

impl Handler<ToDn> for Inbox {
    type Result = ();

    fn handle(&mut self, msg: ToDn, _: &mut Self::Context) {
        self.0.request(msg);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_head_is_read_with_its_error_code() {
        let h = Head::read(
            r#"{"message":"EventError","referenceId":7,"errorCode":54,"errorMessage":"x"}"#,
        )
        .unwrap();
        assert_eq!(
            (h.kind.as_str(), h.reference_id, h.error),
            ("EventError", 7, Some(ErrorCode::NoSwitch))
        );
        let h =
            Head::read(r#"{"message":"EventRegistered","referenceId":1,"thisDn":"4001"}"#).unwrap();
        assert_eq!((h.kind.as_str(), h.error), ("EventRegistered", None));
        assert!(Head::read("{}").is_none());
    }
}
