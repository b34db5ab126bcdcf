//! The switch actor: which of a switch's links is active, and which DNs are monitored.
//!
//! It elects the active link (the highest-priority operational one, without failing back),
//! publishes it to the switch's [`SwitchHandle`], and keeps the set of monitored DNs, restoring
//! them on whichever link becomes active. It is not on the path of requests or events: a
//! routed request goes from the handle straight to the active [`LinkActor`], and events and
//! answers go from the link straight to the router shard. Monitor starts and stops do go
//! through it, since it must know the monitored DNs to restore them.

use super::actor::{Close, Disown, Own};
use super::actor::{LinkActor, LinkParts, LinkRequest, LinkStatusChanged, RoutedRequest};
use super::feed::ShardFeed;
use super::ownership::{Fence, Sequence};
use super::route::{MonitorOutcome, SwitchRoute};
use super::session::LinkState;
use super::stats::LinkStats;
use super::{LinkError, SwitchConfig, SwitchEvent};
use crate::csta::Message;
use actix::prelude::*;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use tracing::{info, warn};

/// Send a service request over the switch's active link.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Message, LinkError>")]
pub struct SwitchRequest(pub Message);

/// Start monitoring a DN: now if a link is active, else as soon as one is.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<MonitorOutcome, LinkError>")]
pub struct StartMonitor(pub Arc<str>);

/// Stop monitoring a DN.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct StopMonitor(pub Arc<str>);

/// Ask for the switch's link states.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "SwitchStatus")]
pub struct SwitchStatusQuery;

/// A snapshot of a switch's links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchStatus {
    /// The active link, if any.
    pub active: Option<usize>,
    /// Whether the active link has its monitors restored and clients were told it is up.
    pub ready: bool,
    /// Each link's state, in configuration order.
    pub links: Vec<LinkState>,
    /// How many DNs are to be monitored.
    pub monitored: usize,
    /// MonitorStarts and MonitorStops queued or in flight.
    pub monitor_ops: usize,
}

struct Slot {
    addr: Addr<LinkActor>,
    priority: u32,
    state: LinkState,
    /// The link has finished its first connection attempt (up or down).
    settled: bool,
}

/// The switch actor (see the [link module docs](super)).
pub struct Switch {
    config: SwitchConfig,
    links: Vec<Slot>,
    maker: LinkMaker,
    active: Option<usize>,
    announced_up: bool,
    /// The link that was active last (to tell a failover from a reconnect).
    last_active: Option<usize>,
    epoch: u64,
    monitored: HashSet<Arc<str>>,
    /// Shared with the handles: the active link's address.
    active_addr: Arc<std::sync::Mutex<Option<Addr<LinkActor>>>>,
    /// MonitorStarts and MonitorStops waiting for a place, in the order they were asked for
    /// (so a DN's stop always goes out before its next start).
    monitor_ops: VecDeque<MonitorOp>,
    /// Monitor operations sent to the link and not yet answered.
    monitor_ops_in_flight: usize,
    /// DNs with a monitor operation on the active link (sent, not answered), with the epoch
    /// it was sent in. A DN has at most one at a time: a MonitorStop sent while the DN's
    /// MonitorStart is unanswered would find no cross-reference on the link and stop nothing,
    /// leaving the switch monitoring the DN for ever.
    monitor_busy: HashMap<Arc<str>, u64>,
    /// Operations waiting for their DN's operation in flight, in the order they were asked for.
    monitor_parked: HashMap<Arc<str>, VecDeque<MonitorOp>>,
    events: Recipient<SwitchEvent>,
}

/// What the switch needs to start its links, at start and again when a reload changes their
/// settings: the one feed into the router shard (so that `eventSeq` goes on), the threads, and
/// the counters the handle reads.
struct LinkMaker {
    feed: ShardFeed,
    /// A cluster node's switch: links open only while it is owned here ([`Own`]).
    clustered: bool,
    /// The ownership in force, given to links started again while it lasts.
    own: Option<Own>,
    arbiters: Vec<actix::ArbiterHandle>,
    stats: Arc<Mutex<Vec<Arc<LinkStats>>>>,
}

impl LinkMaker {
    /// Start a link actor for each link of `config` (round-robin over the threads), each
    /// reporting to `owner`.
    fn links(
        &self,
        config: &SwitchConfig,
        owner: Recipient<LinkStatusChanged>,
        owned: bool,
    ) -> Vec<Slot> {
        let stats: Vec<Arc<LinkStats>> = config
            .links
            .iter()
            .map(|_| Arc::new(LinkStats::default()))
            .collect();
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner) = stats.clone();
        let settings = Arc::new(config.settings.clone());
        let dialect = Arc::new(config.dialect.clone());
        let arbiters = &self.arbiters;
        config
            .links
            .iter()
            .enumerate()
            .map(|(index, link)| {
                let parts = LinkParts {
                    switch: config.name.clone(),
                    index,
                    address: link.address,
                    settings: settings.clone(),
                    dialect: dialect.clone(),
                    owner: owner.clone(),
                    feed: self.feed.clone(),
                    stats: stats[index].clone(),
                    owned,
                };
                let addr = match arbiters.get(index % arbiters.len().max(1)) {
                    Some(arbiter) => {
                        LinkActor::start_in_arbiter(arbiter, move |_| LinkActor::new(parts))
                    }
                    None => LinkActor::new(parts).start(),
                };
                Slot {
                    addr,
                    priority: link.priority,
                    state: LinkState::Starting,
                    settled: false,
                }
            })
            .collect()
    }
}

/// A monitor operation waiting its turn.
enum MonitorOp {
    Start(
        Arc<str>,
        tokio::sync::oneshot::Sender<Result<MonitorOutcome, LinkError>>,
    ),
    Stop(Arc<str>),
}

impl MonitorOp {
    fn dn(&self) -> &Arc<str> {
        match self {
            MonitorOp::Start(dn, _) | MonitorOp::Stop(dn) => dn,
        }
    }
}

impl Switch {
    /// Start a switch actor on the current Arbiter and its link actors spread over
    /// `arbiters` (round-robin; the current Arbiter when empty). Events go to `events`.
    pub fn start(
        config: SwitchConfig,
        events: Recipient<SwitchEvent>,
        arbiters: &[actix::ArbiterHandle],
    ) -> SwitchHandle {
        Switch::start_with(config, events, arbiters, true)
    }

    /// [`start`](Self::start) for a cluster node: the links stay closed until the node owns
    /// the switch ([`Own`]).
    pub fn start_unowned(
        config: SwitchConfig,
        events: Recipient<SwitchEvent>,
        arbiters: &[actix::ArbiterHandle],
    ) -> SwitchHandle {
        Switch::start_with(config, events, arbiters, false)
    }

    fn start_with(
        config: SwitchConfig,
        events: Recipient<SwitchEvent>,
        arbiters: &[actix::ArbiterHandle],
        owned: bool,
    ) -> SwitchHandle {
        let name = config.name.clone();
        let link_stats = Arc::new(Mutex::new(Vec::new()));
        let stats = link_stats.clone();
        let active = Arc::new(std::sync::Mutex::new(None));
        let active_addr = active.clone();
        let arbiters = arbiters.to_vec();
        let addr = Switch::create(move |ctx| {
            let feed = ShardFeed::new(
                config.name.clone(),
                events.clone(),
                Sequence::unbounded(),
                Fence::open(),
            );
            let maker = LinkMaker {
                feed,
                clustered: !owned,
                own: None,
                arbiters,
                stats,
            };
            let links = maker.links(&config, ctx.address().recipient(), owned);
            Switch {
                config,
                links,
                maker,
                active: None,
                announced_up: false,
                last_active: None,
                epoch: 0,
                monitored: HashSet::new(),
                active_addr,
                monitor_ops: VecDeque::new(),
                monitor_ops_in_flight: 0,
                monitor_busy: HashMap::new(),
                monitor_parked: HashMap::new(),
                events,
            }
        });
        let first = link_stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        SwitchHandle {
            name,
            addr,
            link_stats: first,
            current_stats: link_stats,
            active,
        }
    }

    /// Keep the active link while it is up; otherwise pick the best operational one, but
    /// give a preferred link its first chance to connect before settling for a lesser one.
    fn elect(&mut self, ctx: &mut Context<Self>) {
        if let Some(i) = self.active {
            if self.links[i].state == LinkState::Up {
                return;
            }
        }
        let best = self
            .links
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state == LinkState::Up)
            .min_by_key(|(i, s)| (s.priority, *i))
            .map(|(i, s)| (i, s.priority));
        let Some((best, priority)) = best else {
            return;
        };
        let better_still_trying = self
            .links
            .iter()
            .any(|s| !s.settled && s.priority < priority);
        if better_still_trying {
            return;
        }
        self.activate(best, ctx);
    }

    fn activate(&mut self, link: usize, ctx: &mut Context<Self>) {
        self.active = Some(link);
        self.set_active_addr(Some(self.links[link].addr.clone()));
        if self.last_active.is_some_and(|l| l != link) {
            crate::metrics::failover(&self.config.name);
        }
        self.last_active = Some(link);
        crate::metrics::link_up(&self.config.name, link, true);
        self.epoch += 1;
        let epoch = self.epoch;
        let addr = self.links[link].addr.clone();
        // The restore below starts every monitored DN on the new link, so monitor operations
        // still queued for the old one are void: a start sent as well would leave the switch
        // with a second monitor for the DN (and only one of them known to the link), and a
        // stop has nothing to stop (the old connection's monitors ended with it).
        let parked = std::mem::take(&mut self.monitor_parked);
        for op in std::mem::take(&mut self.monitor_ops)
            .into_iter()
            .chain(parked.into_values().flatten())
        {
            if let MonitorOp::Start(_, tx) = op {
                let _ = tx.send(Ok(MonitorOutcome::Pending));
            }
        }
        let dns: Vec<Arc<str>> = self.monitored.iter().cloned().collect();
        // Until its restore is answered, a DN's next monitor operation waits.
        self.monitor_busy = dns.iter().map(|dn| (dn.clone(), epoch)).collect();
        info!(switch = %self.config.name, link, monitors = dns.len(), "link active; restoring monitors");
        let in_flight = self.config.settings.remonitor_in_flight.max(1);
        let restore = async move {
            futures_util::stream::iter(dns)
                .map(move |dn| {
                    let addr = addr.clone();
                    async move {
                        let r = addr.send(LinkRequest::Monitor(dn.clone())).await;
                        (dn, r)
                    }
                })
                .buffer_unordered(in_flight)
                .collect::<Vec<_>>()
                .await
        };
        ctx.spawn(restore.into_actor(self).map(move |results, act, ctx| {
            for (dn, _) in &results {
                act.monitor_done(dn, epoch);
            }
            act.pump_monitor_ops(ctx);
            if act.epoch != epoch {
                return;
            }
            for (dn, result) in results {
                match result {
                    Ok(Ok(_)) => {}
                    Ok(Err(
                        error @ (LinkError::Rejected { .. }
                        | LinkError::Timeout { .. }
                        | LinkError::BadAnswer { .. }),
                    )) if act.monitored.remove(&dn) => {
                        warn!(switch = %act.config.name, dn = %dn, "monitor not restored: {error}");
                        act.events.do_send(SwitchEvent::MonitorLost {
                            switch: act.config.name.clone(),
                            dn,
                            error,
                        });
                    }
                    // The link went away again: a new election restores monitors.
                    _ => {}
                }
            }
            act.announced_up = true;
            info!(switch = %act.config.name, link, "switch operational");
            act.events.do_send(SwitchEvent::LinkUp {
                switch: act.config.name.clone(),
                link,
            });
        }));
    }

    /// Send queued monitor operations, at most `remonitor-in-flight` at a time: thousands of
    /// clients registering or leaving together must not use up the link's invoke IDs (the
    /// excess would be refused as overload) or flood the switch.
    fn pump_monitor_ops(&mut self, ctx: &mut Context<Self>) {
        let limit = self.config.settings.remonitor_in_flight.max(1);
        while self.monitor_ops_in_flight < limit {
            let Some(op) = self.monitor_ops.pop_front() else {
                break;
            };
            if self.monitor_busy.contains_key(op.dn()) {
                self.monitor_parked
                    .entry(op.dn().clone())
                    .or_default()
                    .push_back(op);
                continue;
            }
            let Some(link) = self.active_link() else {
                // No link: a start waits for the next one (monitors are restored then), a
                // stop has nothing left to stop.
                if let MonitorOp::Start(_, tx) = op {
                    let _ = tx.send(Ok(MonitorOutcome::Pending));
                }
                continue;
            };
            self.monitor_ops_in_flight += 1;
            let epoch = self.epoch;
            self.monitor_busy.insert(op.dn().clone(), epoch);
            match op {
                MonitorOp::Start(dn, tx) => {
                    let fut = link.send(LinkRequest::Monitor(dn.clone()));
                    ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
                        act.monitor_ops_in_flight -= 1;
                        act.monitor_done(&dn, epoch);
                        let outcome = match res {
                            Ok(Ok(_)) => Ok(MonitorOutcome::Started),
                            // The link went away meanwhile: restored with the others.
                            Ok(Err(LinkError::LinkLost { .. } | LinkError::NoSwitch { .. }))
                            | Err(_)
                                if act.epoch != epoch || act.active.is_none() =>
                            {
                                Ok(MonitorOutcome::Pending)
                            }
                            Ok(Err(e)) => {
                                act.monitored.remove(&dn);
                                Err(e)
                            }
                            Err(_) => Err(LinkError::LinkLost {
                                switch: act.config.name.clone(),
                            }),
                        };
                        let _ = tx.send(outcome);
                        act.pump_monitor_ops(ctx);
                    }));
                }
                MonitorOp::Stop(dn) => {
                    let fut = link.send(LinkRequest::Unmonitor(dn.clone()));
                    ctx.spawn(fut.into_actor(self).map(move |_, act, ctx| {
                        act.monitor_ops_in_flight -= 1;
                        act.monitor_done(&dn, epoch);
                        act.pump_monitor_ops(ctx);
                    }));
                }
            }
        }
    }

    /// The DN's monitor operation sent in `epoch` is answered: its next one may go (first in
    /// the queue). An answer from an older epoch changes nothing (a new active link reset
    /// every DN's operations).
    fn monitor_done(&mut self, dn: &Arc<str>, epoch: u64) {
        if self.monitor_busy.get(dn) != Some(&epoch) {
            return;
        }
        self.monitor_busy.remove(dn);
        if let Some(waiting) = self.monitor_parked.get_mut(dn) {
            if let Some(next) = waiting.pop_front() {
                self.monitor_ops.push_front(next);
            }
            if waiting.is_empty() {
                self.monitor_parked.remove(dn);
            }
        }
    }

    fn set_active_addr(&self, addr: Option<Addr<LinkActor>>) {
        *self
            .active_addr
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = addr;
    }

    fn active_link(&self) -> Option<Addr<LinkActor>> {
        self.active.map(|i| self.links[i].addr.clone())
    }
}

impl Actor for Switch {
    type Context = Context<Self>;
}

impl Handler<LinkStatusChanged> for Switch {
    type Result = ();

    fn handle(&mut self, msg: LinkStatusChanged, ctx: &mut Self::Context) {
        let Some(slot) = self.links.get_mut(msg.link) else {
            return;
        };
        slot.state = msg.state;
        crate::metrics::link_connected(&self.config.name, msg.link, msg.state == LinkState::Up);
        if matches!(msg.state, LinkState::Up | LinkState::Down) {
            slot.settled = true;
        }
        if self.active == Some(msg.link) && msg.state != LinkState::Up {
            self.active = None;
            self.set_active_addr(None);
            crate::metrics::link_up(&self.config.name, msg.link, false);
            self.epoch += 1;
            if std::mem::take(&mut self.announced_up) {
                self.events.do_send(SwitchEvent::LinkDown {
                    switch: self.config.name.clone(),
                    link: msg.link,
                });
            }
        }
        self.elect(ctx);
    }
}

impl Handler<SwitchRequest> for Switch {
    type Result = ResponseFuture<Result<Message, LinkError>>;

    fn handle(&mut self, msg: SwitchRequest, _: &mut Self::Context) -> Self::Result {
        let switch = self.config.name.clone();
        let Some(link) = self.active_link() else {
            return Box::pin(async move { Err(LinkError::NoSwitch { switch }) });
        };
        Box::pin(async move {
            link.send(LinkRequest::Service(msg.0))
                .await
                .unwrap_or(Err(LinkError::LinkLost { switch }))
        })
    }
}

impl Handler<StartMonitor> for Switch {
    type Result = ResponseFuture<Result<MonitorOutcome, LinkError>>;

    fn handle(&mut self, msg: StartMonitor, ctx: &mut Self::Context) -> Self::Result {
        let dn = msg.0;
        self.monitored.insert(dn.clone());
        if self.active.is_none() {
            return Box::pin(async { Ok(MonitorOutcome::Pending) });
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.monitor_ops.push_back(MonitorOp::Start(dn, tx));
        self.pump_monitor_ops(ctx);
        Box::pin(async move { rx.await.unwrap_or(Ok(MonitorOutcome::Pending)) })
    }
}

impl Handler<StopMonitor> for Switch {
    type Result = ();

    fn handle(&mut self, msg: StopMonitor, ctx: &mut Self::Context) {
        if self.monitored.remove(&msg.0) && self.active.is_some() {
            self.monitor_ops.push_back(MonitorOp::Stop(msg.0));
            self.pump_monitor_ops(ctx);
        }
    }
}

/// Close every link of the switch on purpose (the router is shutting down): each stops its
/// ECMA-354 application session, if it has one, waiting at most `request-timeout`, and stays
/// closed. Answered once every link has closed.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct CloseLinks;

impl Handler<CloseLinks> for Switch {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: CloseLinks, _: &mut Self::Context) -> Self::Result {
        let closing: Vec<_> = self.links.iter().map(|s| s.addr.send(Close)).collect();
        Box::pin(async move {
            for c in closing {
                let _ = c.await;
            }
        })
    }
}

/// Restart every link with new settings (a reload changed the switch's dialect, TLS, session,
/// device form or links): each closes on purpose as on shutdown, then the new links start and
/// the DNs monitored are monitored again on whichever becomes active. With `keep_addresses`
/// (an embedded simulator's switch) the links keep their addresses and priorities. Answered
/// once the old links are closed and the new ones started.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Relink {
    /// The switch's new configuration.
    pub config: SwitchConfig,
    /// Keep the running links' addresses.
    pub keep_addresses: bool,
}

impl Handler<Relink> for Switch {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, relink: Relink, _: &mut Self::Context) -> Self::Result {
        let closing: Vec<_> = self.links.iter().map(|s| s.addr.send(Close)).collect();
        let mut config = relink.config;
        if relink.keep_addresses {
            config.links.clone_from(&self.config.links);
        }
        let closed = async move {
            for c in closing {
                let _ = c.await;
            }
        };
        Box::pin(closed.into_actor(self).map(move |_, act, ctx| {
            let link = act.active.or(act.last_active).unwrap_or(0);
            act.active = None;
            act.last_active = None;
            act.set_active_addr(None);
            act.epoch += 1;
            if std::mem::take(&mut act.announced_up) {
                act.events.do_send(SwitchEvent::LinkDown {
                    switch: act.config.name.clone(),
                    link,
                });
            }
            info!(switch = %config.name, links = config.links.len(), "restarting the links with the reloaded configuration");
            // In a cluster, the new links number and fence as the ownership in force.
            let clustered = act.maker.clustered;
            act.links = act.maker.links(&config, ctx.address().recipient(), !clustered);
            if let Some(own) = &act.maker.own {
                for slot in &act.links {
                    slot.addr.do_send(own.clone());
                }
            }
            act.config = config;
        }))
    }
}

impl Handler<SwitchStatusQuery> for Switch {
    type Result = MessageResult<SwitchStatusQuery>;

    fn handle(&mut self, _: SwitchStatusQuery, _: &mut Self::Context) -> Self::Result {
        MessageResult(SwitchStatus {
            active: self.active,
            ready: self.announced_up,
            links: self.links.iter().map(|s| s.state).collect(),
            monitored: self.monitored.len(),
            monitor_ops: self.monitor_ops.len()
                + self.monitor_ops_in_flight
                + self
                    .monitor_parked
                    .values()
                    .map(VecDeque::len)
                    .sum::<usize>(),
        })
    }
}

/// A cheap, cloneable handle on a running switch of this process.
#[derive(Clone)]
pub struct SwitchHandle {
    /// The switch's name.
    pub name: Arc<str>,
    /// The switch actor.
    pub addr: Addr<Switch>,
    /// Counters of each link as started, in configuration order.
    pub link_stats: Vec<Arc<LinkStats>>,
    /// Counters of each link now (a reload that restarts the links replaces them).
    current_stats: Arc<Mutex<Vec<Arc<LinkStats>>>>,
    /// The active link, kept by the switch actor, so that the busiest path (a private
    /// service) goes straight to the link without a hop through the switch actor.
    pub(super) active: Arc<Mutex<Option<Addr<LinkActor>>>>,
}

impl SwitchHandle {
    /// The link that serves the switch now, if any.
    pub fn active_link(&self) -> Option<Addr<LinkActor>> {
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Requests the switch's links have sent and not yet seen answered or timed out.
    pub fn in_flight(&self) -> u64 {
        self.current_stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|s| s.in_flight.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }
}

impl SwitchRoute for SwitchHandle {
    fn route(&self, request: RoutedRequest) -> Result<(), LinkError> {
        let Some(link) = self.active_link() else {
            return Err(LinkError::NoSwitch {
                switch: self.name.clone(),
            });
        };
        link.do_send(request);
        Ok(())
    }

    fn start_monitor(&self, dn: Arc<str>) -> BoxFuture<'static, Result<MonitorOutcome, LinkError>> {
        let (addr, switch) = (self.addr.clone(), self.name.clone());
        Box::pin(async move {
            addr.send(StartMonitor(dn))
                .await
                .unwrap_or(Err(LinkError::LinkLost { switch }))
        })
    }

    fn stop_monitor(&self, dn: Arc<str>) {
        self.addr.do_send(StopMonitor(dn));
    }
}

impl Handler<super::Retime> for Switch {
    type Result = ResponseFuture<()>;

    /// New timers for every link (a reload): no connection is touched. Answered once every
    /// link has them.
    fn handle(&mut self, retime: super::Retime, _: &mut Self::Context) -> Self::Result {
        self.config.settings = retime.apply(&self.config.settings);
        let sent: Vec<_> = self.links.iter().map(|s| s.addr.send(retime)).collect();
        Box::pin(async move {
            futures_util::future::join_all(sent).await;
        })
    }
}

impl Handler<Own> for Switch {
    type Result = ();

    /// The switch is owned here from now on: every link connects, numbering from `seq` while
    /// the fence is open.
    fn handle(&mut self, own: Own, _: &mut Self::Context) {
        for slot in &self.links {
            slot.addr.do_send(own.clone());
        }
        self.maker.own = Some(own);
    }
}

impl Handler<Disown> for Switch {
    type Result = ();

    /// The switch is no longer owned here: every link closes and stays closed, and the DNs
    /// monitored are forgotten (a next owner restores them from the cluster's records).
    fn handle(&mut self, disown: Disown, _: &mut Self::Context) {
        self.maker.own = None;
        self.monitored.clear();
        let parked = std::mem::take(&mut self.monitor_parked);
        for op in std::mem::take(&mut self.monitor_ops)
            .into_iter()
            .chain(parked.into_values().flatten())
        {
            if let MonitorOp::Start(_, tx) = op {
                let _ = tx.send(Err(LinkError::NoSwitch {
                    switch: self.config.name.clone(),
                }));
            }
        }
        for slot in &self.links {
            slot.addr.do_send(disown.clone());
        }
    }
}
