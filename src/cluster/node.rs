//! The node: what runs a router process as a member of the cluster. It announces the node,
//! watches the other nodes and the switch leases, takes unowned switches within its fair
//! share, renews what it holds (giving a switch up the moment its fence closes), and listens
//! on the node's three subjects: forwarded requests, the owners' flows to it, link states.
//!
//! Every switch has, on every node, a [`Proxy`] (serving it while another node owns it) and a
//! [`Hooks`] (what the switch's shard tells the cluster while this node owns it). Taking a
//! switch (`Node::take`) goes: lease → eventSeq block → the records (registrations, connIds)
//! → the registrations restored in the shard → the links opened with the new numbers and the
//! lease's fence. Giving it up goes the other way, fence first.

use super::flow::FlowMessage;
use super::forward::{Forwarded, Taken};
use super::keys::Subjects;
use super::lease::{Lease, Leases, Owner, Presence};
use super::owner::{Hooks, LinkMessage, Owned, Publisher};
use super::proxy::{KnownOwner, Proxy};
use super::records::Records;
use super::seq::SeqBlocks;
use super::writer::RecordsWriter;
use super::{Cluster, ClusterError};
use crate::config::Access;
use crate::link::{Disown, Own, Sequence};
use crate::metrics::{ClusterMetrics, OwnershipReason};
use crate::router::calls::CallNote;
use crate::router::messages::{Disowned, DnOp, ToDn};
use crate::router::{Shared, SwitchCtx};
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};
use tracing::{info, warn};

mod definitions;
mod list;
mod rebalance;
mod removal;
mod tasks;
use definitions::Definitions;
use list::SwitchList;
use removal::removed_or_fenced;
use tasks::{numbers, renew_presence, tick, watch_leases, watch_nats, watch_nodes};

/// How long a switch stays unowned before a node already at its fair share takes it anyway
/// (so that no switch is left without an owner while the node count is out of date).
const SHARE_WAIT: Duration = Duration::from_secs(1);

/// How often the owner sends each flow's heartbeat and its links' state.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// One switch on this node.
struct SwitchNode {
    ctx: Arc<SwitchCtx>,
    proxy: Arc<Proxy>,
    hooks: Arc<Hooks>,
    metrics: ClusterMetrics,
    /// The lease as the watch last showed it, and when (`None`: no node holds it).
    seen: Mutex<Seen>,
    /// Whether this node holds the switch's lease (or is taking it).
    held: AtomicBool,
    /// Woken to hand the switch over (a rebalance, or links down too long, or a reload
    /// removed it).
    hand_over: tokio::sync::Notify,
    /// A reload removed the switch from this node's file: never taken again.
    removed: AtomicBool,
}

impl SwitchNode {
    /// Whether this node owns the switch now (not merely contending for it).
    fn is_held_here(&self) -> bool {
        self.held.load(Ordering::Acquire) && self.hooks.owned().is_some()
    }
}

#[derive(Default)]
struct Seen {
    owner: Option<Owner>,
    at: Option<Instant>,
    /// When the switch was last found without an owner.
    unowned_since: Option<Instant>,
    /// Whether any node has owned it since this node started.
    ever_owned: bool,
    /// Why its last owner said it gave it up, when it was planned (`shutdown`, `rebalance`).
    handed_over: Option<&'static str>,
    /// Since when this node, its owner, has had none of its links up.
    links_down_since: Option<Instant>,
    /// This node released it because it could not reach it: it leaves it to the other nodes
    /// until then.
    avoid_until: Option<Instant>,
}

/// How the node has a session of its own given up when another node resumed it: close its
/// connection (4009) and release its registrations. Implemented by the sessions' layer.
pub trait SessionGiveUp: Send + Sync {
    /// Give up local session `session` (the client id, as in the registrations' keys).
    fn give_up(&self, session: &str);
}

/// This node in the cluster (see the [module docs](self)).
pub struct Node {
    cluster: Cluster,
    shared: Arc<Shared>,
    switches: SwitchList,
    publisher: Publisher,
    subjects: Subjects,
    leases: Leases,
    presence: Presence,
    seq: SeqBlocks,
    records: Records,
    writer: RecordsWriter,
    /// The client sessions across the cluster.
    sessions: super::sessions::SessionStore,
    /// What gives up a session of this node resumed on another (set by the sessions' layer).
    give_up: std::sync::OnceLock<Arc<dyn SessionGiveUp>>,
    node_name: Arc<str>,
    node_id: Arc<str>,
    /// The live nodes: name → id.
    live: Mutex<BTreeMap<String, String>>,
    /// When this node may start taking switches (it has seen the other nodes by then).
    settled: Instant,
    /// This node's switches (name → DN plan as written), and the other live nodes'.
    definitions: Mutex<Definitions>,
    /// Nodes gone from the cluster whose sessions' registrations are lingering out.
    expiring: Mutex<std::collections::HashSet<String>>,
    /// Set when the node stops: nothing more is taken.
    stopping: AtomicBool,
    /// Whether NATS has been reachable within `lease-ttl`.
    ready: AtomicBool,
    /// How long the spread of switches has been uneven.
    spread_clock: Mutex<rebalance::Clock>,
    /// When this node last handed a switch over to even the spread.
    last_move: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node", &self.node_name)
            .field("id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Make this process a node of `cluster`: every switch of `shared` gets its proxy and
    /// hooks, the node is announced (refused when a live node has its name), and the node's
    /// tasks start on the current runtime. The switches' links must have been started
    /// unowned.
    pub async fn start(cluster: Cluster, shared: Arc<Shared>) -> Result<Arc<Node>, ClusterError> {
        let node_name: Arc<str> = Arc::from(cluster.node_name());
        let node_id: Arc<str> = Arc::from(cluster.node_id());
        crate::logging::set_node(&node_name);
        let own: BTreeMap<String, String> = shared
            .config()
            .switch
            .iter()
            .map(|sw| (sw.name.clone(), sw.dns.join(",")))
            .collect();
        let presence = cluster.presence().with_switches(own.clone());
        presence.announce().await?;
        let publisher = Publisher::start(cluster.client().clone(), cluster.jetstream().clone());
        let subjects = Subjects {
            cluster: Arc::from(cluster.name()),
        };
        let writer = RecordsWriter::start(cluster.records());
        let names: Vec<Arc<str>> = shared.switches.iter().map(|s| s.name.clone()).collect();
        crate::metrics::init_cluster_labels(&names);
        let switches = shared
            .switches
            .iter()
            .map(|ctx| SwitchNode::start(ctx, &shared, &cluster, &node_id, &subjects, &writer))
            .collect();
        let ttl = cluster.lease_ttl();
        let rebalance_after = shared
            .config()
            .cluster
            .as_ref()
            .map_or(Duration::from_secs(30), |c| c.rebalance_after.0);
        let node = Arc::new(Node {
            sessions: cluster.sessions(subjects.clone()),
            give_up: std::sync::OnceLock::new(),
            leases: cluster.leases(),
            seq: cluster.seq_blocks(),
            records: cluster.records(),
            cluster,
            shared,
            switches: SwitchList::new(switches),
            publisher,
            subjects,
            presence,
            writer,
            node_name,
            node_id,
            live: Mutex::new(BTreeMap::new()),
            definitions: Mutex::new(Definitions::new(own)),
            expiring: Mutex::new(std::collections::HashSet::new()),
            settled: Instant::now() + ttl,
            stopping: AtomicBool::new(false),
            ready: AtomicBool::new(true),
            spread_clock: Mutex::new(rebalance::Clock::new(rebalance_after)),
            last_move: Mutex::new(None),
        });
        node.listen().await?;
        let leases = node.leases.watch().await?;
        let nodes = node.presence.watch().await?;
        tokio::spawn(watch_leases(Arc::downgrade(&node), leases));
        tokio::spawn(watch_nodes(Arc::downgrade(&node), nodes));
        tokio::spawn(tick(Arc::downgrade(&node)));
        tokio::spawn(renew_presence(Arc::downgrade(&node)));
        tokio::spawn(watch_nats(Arc::downgrade(&node)));
        info!(node = %node.node_name, node_id = %node.node_id, "this node is in the cluster; it takes switches after {}", humantime::format_duration(ttl));
        Ok(node)
    }

    /// The client sessions across the cluster.
    pub fn sessions(&self) -> &super::sessions::SessionStore {
        &self.sessions
    }

    /// Registrations and connIds.
    pub fn records(&self) -> &Records {
        &self.records
    }

    /// This node's id (the node of its sessions' registrations).
    pub fn node_id(&self) -> &Arc<str> {
        &self.node_id
    }

    /// Set what gives up a session of this node that another node resumed (once).
    pub fn on_give_up(&self, give_up: Arc<dyn SessionGiveUp>) {
        let _ = self.give_up.set(give_up);
    }

    /// Whether the node can serve: NATS reachable and JetStream answering within
    /// `lease-ttl`.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.cluster.jetstream_available()
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.node_name
    }

    /// What `/readyz` says of the cluster: NATS, and each switch's owner.
    pub fn readiness(&self) -> String {
        let mut out = format!(
            "cluster {} node {} nats {}\n",
            self.cluster.name(),
            self.node_name,
            if self.ready.load(Ordering::Relaxed) {
                "connected"
            } else {
                "disconnected"
            }
        );
        out.push_str(&tasks::jetstream_line(&self.cluster));
        let kept = self
            .switches
            .iter()
            .filter(|s| !s.removed.load(Ordering::Acquire));
        for s in kept {
            let owner = s
                .seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .owner
                .clone();
            let owner = match owner {
                Some(o) if s.held.load(Ordering::Acquire) && o.id == *self.node_id => {
                    format!("{} (this node)", o.node)
                }
                Some(o) => o.node,
                None => "none".to_owned(),
            };
            out.push_str(&format!("switch {} owner {}\n", s.ctx.name, owner));
        }
        out
    }

    /// Subscribe to the node's subjects: forwarded requests, flows, link states.
    async fn listen(self: &Arc<Self>) -> Result<(), ClusterError> {
        let client = self.cluster.client().clone();
        let sub = |subject: String| {
            let client = client.clone();
            async move {
                client
                    .subscribe(subject.clone())
                    .await
                    .map_err(|e| ClusterError::nats(format!("subscribing to {subject}"), e))
            }
        };
        let mut requests = sub(self.subjects.request(&self.node_id)).await?;
        let mut flows = sub(self.subjects.flow(&self.node_id)).await?;
        let mut links = sub(self.subjects.link()).await?;
        let mut sessions = sub(self.subjects.session(&self.node_id)).await?;
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(msg) = sessions.next().await {
                let Some(node) = me.upgrade() else { break };
                let session = String::from_utf8_lossy(&msg.payload).into_owned();
                if let Some(give_up) = node.give_up.get() {
                    give_up.give_up(&session);
                }
                if let Some(reply) = msg.reply {
                    let _ = node.cluster.client().publish(reply, "".into()).await;
                }
            }
        });
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(msg) = requests.next().await {
                let Some(node) = me.upgrade() else { break };
                node.on_request(msg).await;
            }
        });
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(msg) = flows.next().await {
                let Some(node) = me.upgrade() else { break };
                // A malformed message is dropped whole: its flow sees the hole and repairs it.
                for m in FlowMessage::read_all(&msg.payload).unwrap_or_default() {
                    if let Some(s) = node.switch(&m.switch) {
                        s.proxy.on_flow(m);
                    }
                }
            }
        });
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(msg) = links.next().await {
                let Some(node) = me.upgrade() else { break };
                node.on_link(&msg);
            }
        });
        Ok(())
    }

    fn switch(&self, name: &str) -> Option<&SwitchNode> {
        // The last of that name: a switch removed, then added again, is a new one.
        self.switches.iter().filter(|s| &*s.ctx.name == name).last()
    }

    /// A forwarded request: taken (answered `ok`, then done) or refused (`not-owner`).
    async fn on_request(&self, msg: async_nats::Message) {
        let Some(reply) = msg.reply.clone() else {
            return;
        };
        let taken = msg
            .headers
            .as_ref()
            .and_then(|h| Forwarded::decode(h, &msg.payload))
            .and_then(|f| {
                let owned = self.switch(&f.switch)?.hooks.owned()?;
                Some(owned.take(f))
            })
            .unwrap_or(false);
        let answer = if taken { Taken::Ok } else { Taken::NotOwner };
        let _ = self
            .cluster
            .client()
            .publish_with_headers(reply, answer.headers(), bytes::Bytes::new())
            .await;
    }

    /// An owner's link state.
    fn on_link(&self, msg: &async_nats::Message) {
        let Some(m) = msg.headers.as_ref().and_then(LinkMessage::read) else {
            return;
        };
        let Some(s) = self.switch(&m.switch) else {
            return;
        };
        let planned = match m.reason.as_deref() {
            Some("shutdown") => Some("shutdown"),
            Some("rebalance") => Some("rebalance"),
            _ => None,
        };
        if !m.up && planned.is_some() {
            s.seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .handed_over = planned;
        }
        // This node's own message: echoed back (late, after a reconnection), or while it still
        // holds the switch (handing it over). Its clients hear of the link from its shard.
        if self.leases.is_own_epoch(&m.switch, m.epoch) || s.held.load(Ordering::Acquire) {
            return;
        }
        s.proxy
            .link_state(m.epoch, m.up, m.link, m.reason.as_deref(), !m.state);
    }

    /// The lease watch reported a switch's holder.
    fn on_lease(&self, switch: &str, owner: Option<Owner>) {
        let Some(s) = self.switch(switch) else {
            return;
        };
        let mut seen = s.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match &owner {
            Some(o) => {
                if seen
                    .owner
                    .as_ref()
                    .is_none_or(|before| before.epoch != o.epoch)
                {
                    seen.handed_over = None;
                }
                seen.ever_owned = true;
                seen.unowned_since = None;
            }
            None => {
                if seen.unowned_since.is_none() {
                    seen.unowned_since = Some(now);
                }
            }
        }
        // The same entry seen again (a watch made anew) is no renewal.
        if seen.owner != owner || seen.at.is_none() {
            seen.at = Some(now);
        }
        seen.owner = owner.clone();
        drop(seen);
        // This node's own lease is not news to its proxy. Another node's is, even while this
        // node is contending for the switch: it may lose, and its clients' requests must then
        // go to the winner at once.
        let ours = match &owner {
            Some(o) => o.id == *self.node_id,
            None => s.held.load(Ordering::Acquire),
        };
        if ours {
            return;
        }
        s.proxy.set_owner(owner.map(known));
    }

    /// Periodic work: leases not renewed within `lease-ttl` are taken as expired (this node's
    /// own clock), requests waiting too long are answered, unowned switches are taken.
    fn on_tick(self: &Arc<Self>) {
        let ttl = self.cluster.lease_ttl();
        let now = Instant::now();
        for s in self.switches.iter() {
            s.proxy.sweep();
            if s.held.load(Ordering::Acquire) {
                continue;
            }
            let expired = {
                let seen = s.seen.lock().unwrap_or_else(PoisonError::into_inner);
                seen.owner.is_some() && seen.at.is_some_and(|at| now.duration_since(at) > ttl)
            };
            if expired {
                self.verify_expired(&s.ctx.name);
            }
        }
        if now < self.settled || self.stopping.load(Ordering::Acquire) || !self.is_ready() {
            return;
        }
        self.rebalance(now);
        let live = self
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
            .max(1);
        let share = self.kept().div_ceil(live);
        let mut mine = self
            .switches
            .iter()
            .filter(|s| s.held.load(Ordering::Acquire))
            .count();
        for (index, s) in self.switches.iter().enumerate() {
            if s.held.load(Ordering::Acquire) || s.removed.load(Ordering::Acquire) {
                continue;
            }
            let (unowned_for, reason) = {
                let seen = s.seen.lock().unwrap_or_else(PoisonError::into_inner);
                if seen.owner.is_some() {
                    continue;
                }
                let unowned_for = seen.unowned_since.map(|t| now.duration_since(t));
                // Released because this node could not reach it: the others first.
                if seen.avoid_until.is_some_and(|t| now < t)
                    && unowned_for.is_none_or(|d| d < SHARE_WAIT * 3 + ttl)
                {
                    continue;
                }
                let reason = match seen.handed_over {
                    Some("shutdown") => OwnershipReason::Shutdown,
                    Some(_) => OwnershipReason::Rebalance,
                    None if seen.ever_owned => OwnershipReason::Failover,
                    None => OwnershipReason::Start,
                };
                (unowned_for, reason)
            };
            let waited = unowned_for.is_some_and(|d| d >= SHARE_WAIT);
            if mine < share || waited {
                mine += 1;
                s.held.store(true, Ordering::Release);
                let node = self.clone();
                tokio::spawn(async move {
                    if !node.take(index, reason).await {
                        if let Some(s) = node.switches.get(index) {
                            s.held.store(false, Ordering::Release);
                        }
                    }
                });
            }
        }
    }

    /// Take switch `index`: `false` when another node got it first or NATS failed (nothing
    /// was changed then).
    async fn take(self: &Arc<Self>, index: usize, reason: OwnershipReason) -> bool {
        let Some(s) = self.switches.get(index) else {
            return false;
        };
        let name = s.ctx.name.clone();
        let mut lease = match self.leases.acquire(&name).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return false,
            Err(e) => {
                warn!(switch = %name, "could not take the switch's lease: {e}");
                return false;
            }
        };
        let prepared = async {
            let block = self.seq.reserve(&name).await?;
            let regs = self.records.list(&name).await?;
            let calls = self.records.list_calls(&name).await?;
            Ok::<_, ClusterError>((block, regs, calls))
        };
        let (block, regs, calls) = match prepared.await {
            Ok(p) => p,
            Err(e) => {
                warn!(switch = %name, "took the switch's lease but could not read its records; giving it back: {e}");
                self.leases.back_off(&name);
                let _ = self.leases.release(lease).await;
                return false;
            }
        };
        if !lease.fence.check() {
            warn!(switch = %name, "the switch's lease ran out while its records were read; giving it back");
            let _ = self.leases.release(lease).await;
            return false;
        }
        let owned = Arc::new(Owned::new(
            s.ctx.clone(),
            lease.epoch,
            lease.fence.clone(),
            self.publisher.clone(),
            self.subjects.clone(),
        ));
        s.hooks.set_owned(Some(owned.clone()));
        s.ctx
            .calls
            .adopt(calls, self.shared.config().options.call_grace.0);
        s.proxy.owned_here();
        s.ctx.owned_here.store(true, Ordering::Release);
        *s.ctx.owner.lock().unwrap_or_else(PoisonError::into_inner) = Some(self.node_name.clone());
        let link_reason = match reason {
            OwnershipReason::Failover => Some("failover"),
            OwnershipReason::Shutdown => Some("shutdown"),
            OwnershipReason::Rebalance => Some("rebalance"),
            _ => None,
        };
        *s.ctx
            .link_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = link_reason;
        // The registrations first: a monitor asked for before the link is open waits for it,
        // and the link restores every monitor before it announces itself.
        let (restored, gone_nodes) = self.restore(s, &owned, regs);
        // Sessions of nodes no longer in the cluster linger out from now.
        let live = self.live_ids();
        for id in gone_nodes {
            if !live.contains(&id) {
                self.expire_sessions_of(id);
            }
        }
        let seq = numbers(&name, block, self.seq.clone());
        if let Some(handle) = s.ctx.handle.get() {
            handle.addr.do_send(Own {
                seq,
                fence: lease.fence.clone(),
            });
        }
        s.metrics.set_owned(true);
        s.metrics.ownership_change(reason);
        info!(node = %self.node_name, switch = %name, epoch = lease.epoch, registrations = restored, why = reason.label(), "this node owns the switch now");
        // A hand-over asked of an earlier ownership is not this one's.
        let _ = futures_util::FutureExt::now_or_never(s.hand_over.notified());
        // Renew until the lease is lost or the node stops.
        let node = self.clone();
        tokio::spawn(async move {
            let why = node.hold(index, &mut lease, &owned).await;
            node.give_up(index, lease, why).await;
        });
        true
    }

    /// Restore `regs` in the switch's shard, for the ownership `owned`: how many, and the
    /// other nodes they belong to. A registration of a session of this node that is gone is
    /// removed instead.
    fn restore(
        &self,
        s: &SwitchNode,
        owned: &Arc<Owned>,
        regs: Vec<super::records::Registration>,
    ) -> (usize, Vec<String>) {
        let name = &s.ctx.name;
        let mut restored = 0usize;
        let mut gone_nodes: Vec<String> = regs
            .iter()
            .filter(|r| r.node_id != *self.node_id)
            .map(|r| r.node_id.clone())
            .collect();
        gone_nodes.sort();
        gone_nodes.dedup();
        if let Some(shard) = s.ctx.shard.get() {
            for reg in regs {
                let dn: Arc<str> = Arc::from(reg.dn.as_str());
                let client = if reg.node_id == *self.node_id {
                    match reg
                        .session
                        .parse::<u64>()
                        .ok()
                        .and_then(|id| self.shared.hub.get(id))
                    {
                        Some(c) => c,
                        None => {
                            let session: Arc<str> = Arc::from(reg.session.as_str());
                            self.writer.delete(name, &reg.dn, &self.node_id, &session);
                            continue;
                        }
                    }
                } else {
                    let app: Arc<str> = Arc::from(reg.app.as_str());
                    owned.client(
                        &Arc::from(reg.node_id.as_str()),
                        &Arc::from(reg.session.as_str()),
                        &app,
                        self.access_of(&reg.app),
                    )
                };
                if !s.ctx.owns(&dn) {
                    // A reload here removed the DN after it was registered: told, not restored.
                    client.dropped(crate::router::messages::left_plan_notice(&dn, name));
                    let (node, session) = (
                        Arc::from(reg.node_id.as_str()),
                        Arc::from(reg.session.as_str()),
                    );
                    self.writer.delete(name, &reg.dn, &node, &session);
                    continue;
                }
                restored += 1;
                shard.requests.do_send(ToDn {
                    dn,
                    op: DnOp::Restore {
                        client,
                        mode: reg.mode,
                        call_events: reg.call_events,
                    },
                });
            }
        }
        (restored, gone_nodes)
    }

    /// Keep a lease: renew every `lease-ttl`/3, heartbeats and link state every second. Returns
    /// why it ended.
    async fn hold(&self, index: usize, lease: &mut Lease, owned: &Arc<Owned>) -> GiveUp {
        let mut renew = tokio::time::interval(self.leases.renew_interval());
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut beat = tokio::time::interval(HEARTBEAT);
        renew.tick().await;
        let Some(s) = self.switches.get(index) else {
            return GiveUp::Stopping;
        };
        loop {
            if self.stopping.load(Ordering::Acquire) {
                return GiveUp::Stopping;
            }
            tokio::select! {
                _ = s.hand_over.notified() => {
                    if s.removed.load(Ordering::Acquire) {
                        return GiveUp::Removed;
                    }
                    if !self.stopping.load(Ordering::Acquire) {
                        return GiveUp::Rebalance;
                    }
                }
                _ = renew.tick() => {
                    match self.leases.renew(lease).await {
                        Ok(()) => {}
                        Err(ClusterError::LeaseLost { .. }) => return GiveUp::Lost,
                        Err(e) => {
                            if !lease.fence.check() {
                                return GiveUp::Fenced(e.to_string());
                            }
                            warn!(switch = %lease.switch, "a lease renewal failed (the fence is still open): {e}");
                        }
                    }
                }
                _ = beat.tick() => {
                    if !lease.fence.check() {
                        return GiveUp::Fenced("no renewal succeeded in time".into());
                    }
                    owned.heartbeats();
                    if let Some(s) = self.switches.get(index) {
                        owned.link_state(s.ctx.is_up(), s.ctx.active_link.load(Ordering::Relaxed));
                    }
                }
            }
        }
    }

    /// Give switch `index` up: the fence closes first, then the links, the shard's state and
    /// the lease.
    async fn give_up(&self, index: usize, lease: Lease, why: GiveUp) {
        let Some(s) = self.switches.get(index) else {
            return;
        };
        let planned = match why {
            GiveUp::Stopping => Some("shutdown"),
            GiveUp::Rebalance => Some("rebalance"),
            GiveUp::Lost | GiveUp::Fenced(_) | GiveUp::Removed => None,
        };
        if let Some(planned) = planned {
            // The other nodes hear it before the lease goes: their clients get the reason, and
            // the next owner counts a hand-over rather than a failover.
            if let Some(owned) = s.hooks.owned() {
                if matches!(why, GiveUp::Rebalance) {
                    self.drain(s, &owned).await;
                }
                let link = s.ctx.active_link.load(Ordering::Relaxed);
                let (subject, headers) = owned.link_message(false, link, Some(planned), false);
                let client = self.cluster.client();
                let _ = tokio::time::timeout(Duration::from_millis(500), async {
                    let _ = client
                        .publish_with_headers(subject, headers, bytes::Bytes::new())
                        .await;
                    let _ = client.flush().await;
                })
                .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        lease.fence.close();
        s.hooks.set_owned(None);
        s.ctx.owned_here.store(false, Ordering::Release);
        let reason = planned.unwrap_or(removed_or_fenced(&why));
        *s.ctx
            .link_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(reason);
        if let Some(handle) = s.ctx.handle.get() {
            handle.addr.do_send(Disown {
                why: format!("the switch is no longer owned by this node ({reason})"),
            });
        }
        if let Some(shard) = s.ctx.shard.get() {
            shard.disown.do_send(Disowned);
        }
        s.proxy.not_owned_here();
        // The owner the lease watch showed last, if it is another node, serves from now on.
        let seen = s
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .owner
            .clone();
        if let Some(o) = seen.filter(|o| o.id != *self.node_id) {
            s.proxy.set_owner(Some(known(o)));
        }
        s.metrics.set_owned(false);
        match &why {
            GiveUp::Stopping | GiveUp::Rebalance => {
                info!(node = %self.node_name, switch = %s.ctx.name, why = reason, "this node gives the switch up");
                if let Err(e) = self.leases.release(lease).await {
                    warn!(switch = %s.ctx.name, "the lease was not released (it expires by itself): {e}");
                }
            }
            GiveUp::Removed => self.forget_removed(s, lease).await,
            GiveUp::Lost => {
                s.metrics.ownership_change(OwnershipReason::Fenced);
                warn!(node = %self.node_name, switch = %s.ctx.name, why = "fenced", "this node lost the switch's lease to another node");
            }
            GiveUp::Fenced(e) => {
                s.metrics.ownership_change(OwnershipReason::Fenced);
                warn!(node = %self.node_name, switch = %s.ctx.name, why = "fenced", "this node gives the switch up: its lease was not renewed before the fence closed ({e})");
                let _ = self.leases.release(lease).await;
            }
        }
        *s.ctx.owner.lock().unwrap_or_else(PoisonError::into_inner) = None;
        s.held.store(false, Ordering::Release);
    }

    /// The access of a client application, from this node's configuration (every client has
    /// control access when no `[[application]]` is configured, as on the node it uses).
    fn access_of(&self, app: &str) -> Access {
        let apps = &self.shared.config().application;
        if apps.is_empty() {
            return Access::Control;
        }
        apps.iter()
            .find(|a| a.name == app)
            .map_or(Access::Monitor, |a| a.access)
    }

    /// Stop: give every switch up (its lease released, so another node takes it at once) and
    /// leave the cluster.
    pub async fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let deadline = Instant::now() + self.leases.renew_interval() + Duration::from_millis(500);
        while self.switches.iter().any(|s| s.held.load(Ordering::Acquire))
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Err(e) = self.presence.leave().await {
            warn!("this node's presence was not removed (it expires by itself): {e}");
        }
    }

    /// The ids of the live nodes this node sees.
    fn live_ids(&self) -> Vec<String> {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Requests of this node's clients forwarded to other nodes and not answered yet.
    pub fn forwarded_waiting(&self) -> usize {
        self.switches.iter().map(|s| s.proxy.waiting()).sum()
    }

    /// A node joined or left.
    fn on_node(self: &Arc<Self>, name: String, info: Option<super::lease::NodeInfo>) {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let (gone, info_switches) = match info {
            Some(info) => {
                live.insert(name.clone(), info.id);
                (None, Some(info.switches))
            }
            None => (live.remove(&name), None),
        };
        crate::metrics::set_cluster_nodes(live.len());
        drop(live);
        self.compare_definitions(&name, info_switches);
        if let Some(id) = gone {
            self.expire_sessions_of(id);
        }
    }
}

/// A lease holder as a proxy knows it.
fn known(o: Owner) -> KnownOwner {
    KnownOwner {
        node: Arc::from(o.node),
        id: Arc::from(o.id),
        epoch: o.epoch,
        revision: o.revision,
    }
}

/// Why an ownership ended.
enum GiveUp {
    Stopping,
    /// Handed over to even the spread, or because no link reached the switch.
    Rebalance,
    Lost,
    Fenced(String),
    /// A reload removed the switch from this node's file.
    Removed,
}
