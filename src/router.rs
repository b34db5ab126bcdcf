//! The router: which switch owns a DN, which extension actor holds it, and the hand-off of
//! client requests and switch events to that actor.
//!
//! There is one [`Router`] actor per switch (a shard of the routing table), and the switch's
//! [`Extension`] actors live on the shard's thread: a DN's switch is found from the immutable
//! DN plans in [`Shared`] without asking any actor, and everything about the DN then flows
//! through that one thread. Because one thread runs a switch's per-DN actors in the order they
//! were handed work, a client registered on several DNs of a switch gets replies and events in
//! the order the switch's frames were read. Shards are spread over a pool of one Arbiter
//! (thread) per core, switch i on thread i, and switch i's link j on thread i + j, so the
//! active link usually shares its shard's thread: adding switches spreads load over the cores
//! without adding threads (more threads than cores only adds wake-ups). The router keeps no
//! per-DN state but the map from DN to extension actor; the work per DN (state, request queue,
//! serialization and fan-out of events) happens in the extension actors.
//!
//! An extension actor is created on the first request for its DN and retires itself when it
//! has nothing left to do (no subscriber, no request). Retiring is a handshake
//! ([`Retiring`] → [`RetireAck`]) so that a request the router forwarded just before it learned
//! of the retirement is bounced back and re-dispatched, never lost.

use crate::calls::CallTable;
use crate::config::Config;
use crate::dnplan::DnPlan;
use crate::extension::{
    CstaEvent, Extension, ExtensionOp, ForgetCall, LinkChange, MonitorLost, RetireAck,
};
use crate::link::{QueueSlot, SwitchEvent, SwitchHandle};
use crate::protocol::{ErrorCode, ProtocolError, RegisterMode};
use crate::session::{ClientHandle, Hub};
use actix::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// Everything about one switch that sessions and actors read without asking an actor.
pub struct SwitchCtx {
    /// Position in the configuration.
    pub index: usize,
    /// The switch's name.
    pub name: Arc<str>,
    /// Its DN plan.
    pub plan: DnPlan,
    /// Whether it is an embedded simulator.
    pub simulated: bool,
    /// The link layer (set once at start, before any client can connect).
    pub handle: OnceLock<SwitchHandle>,
    /// Whether the switch has an operational, announced link.
    pub link_up: AtomicBool,
    /// The active link's index (meaningful while `link_up`).
    pub active_link: AtomicUsize,
    /// Call IDs in use and their connIds.
    pub calls: CallTable,
    /// The switch's router shard (set once at start).
    pub router: OnceLock<Addr<Router>>,
    /// Metric handles.
    pub metrics: crate::metrics::SwitchMetrics,
    /// Hot-desk associations last reported by the switch (guest → host), for the gauge.
    pub associations: std::sync::Mutex<HashMap<String, String>>,
}

/// Configuration and switches, shared read-only by every actor and session.
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// The switches, in configuration order.
    pub switches: Vec<Arc<SwitchCtx>>,
    /// Every open client session.
    pub hub: Hub,
}

impl SwitchCtx {
    /// How many associations are known.
    pub fn associations_len(&self) -> usize {
        self.associations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Note an association reported by the switch (`None`: the guest's ended).
    pub fn note_association(&self, guest: &str, host: Option<&str>) {
        let mut map = self
            .associations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match host {
            Some(h) => {
                map.insert(guest.to_owned(), h.to_owned());
            }
            None => {
                map.remove(guest);
            }
        }
    }

    /// The switch actor, once started.
    pub fn link(&self) -> Option<&Addr<crate::link::Switch>> {
        self.handle.get().map(|h| &h.addr)
    }
}

impl Shared {
    /// The switch owning a DN.
    pub fn switch_of(&self, dn: &str) -> Option<&Arc<SwitchCtx>> {
        self.switches.iter().find(|s| s.plan.contains(dn))
    }

    /// The private services enabled, for `EventServerConnected`.
    pub fn private_services(&self) -> Vec<u64> {
        if self.config.options.accode_privateservice {
            vec![1, 2, 501]
        } else {
            vec![1, 2]
        }
    }
}

/// A request about one DN, from a client session.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ToDn {
    /// The DN.
    pub dn: Arc<str>,
    /// What is asked.
    pub op: DnOp,
}

/// What a client asks about a DN.
#[derive(Debug, Clone)]
pub enum DnOp {
    /// `RequestRegisterAddress`.
    Register {
        /// The client.
        client: ClientHandle,
        /// Its `referenceId`.
        reference_id: u64,
        /// The mode.
        mode: RegisterMode,
    },
    /// `RequestUnregisterAddress`, or (without a reference) the client left.
    Unregister {
        /// The client.
        client: ClientHandle,
        /// Its `referenceId`; `None` when the client disconnected (no reply).
        reference_id: Option<u64>,
    },
    /// `RequestPrivateService`.
    PrivateService {
        /// The client.
        client: ClientHandle,
        /// Its `referenceId`.
        reference_id: u64,
        /// `privateMsgId`.
        msg_id: u64,
        /// `connId`.
        conn_id: Option<String>,
        /// `extensions`.
        extensions: BTreeMap<String, String>,
    },
    /// `RequestQueryAddress`.
    QueryAddress {
        /// The client.
        client: ClientHandle,
        /// Its `referenceId`.
        reference_id: u64,
    },
}

/// An extension actor has nothing left to do and asks to be forgotten.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Retiring {
    /// Its DN.
    pub dn: Arc<str>,
    /// Its instance.
    pub id: u64,
}

/// A request that reached an extension actor after it retired, sent back for re-dispatch.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Bounce(pub ToDn);

/// What an extension actor made of an event or answer: messages for clients, to be queued in
/// the order of `seq` (see [`Router`]'s reorder buffer).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Delivery {
    /// The event's or answer's position in the switch's stream.
    pub seq: u64,
    /// The messages: for each, the clients and whether it is a reply.
    pub out: Vec<Outgoing>,
}

/// One message for some clients.
#[derive(Debug)]
pub struct Outgoing {
    /// The serialized message, shared by all its recipients.
    pub text: crate::protocol::SharedText,
    /// Who gets it.
    pub to: Vec<ClientHandle>,
    /// Whether it answers a request (of its single recipient).
    pub reply: bool,
}

/// Ask how many extension actors the router has (metrics, tests).
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct CountExtensions;

/// The router shard of one switch (see the [module docs](self)).
///
/// Reorder buffer: every event and answer handed to an extension actor is noted by its `seq`;
/// the actor hands back what it made of it as a [`Delivery`], and deliveries are queued to the
/// clients strictly in `seq` order. So however the actors of the switch's DNs are scheduled,
/// a client sees replies and events in the order the switch's frames were read.
pub struct Router {
    shared: Arc<Shared>,
    switch: Arc<SwitchCtx>,
    extensions: HashMap<Arc<str>, (u64, Addr<Extension>)>,
    next_id: u64,
    /// Per event or answer handed out: its `seq`, what the extension made of it, and the
    /// frame's place in the link queue (given back once delivered, see [`QueueSlot`]).
    reorder: std::collections::VecDeque<(u64, Option<Vec<Outgoing>>, QueueSlot)>,
}

impl Router {
    /// A router for `switch`.
    pub fn new(shared: Arc<Shared>, switch: Arc<SwitchCtx>) -> Router {
        Router {
            shared,
            switch,
            extensions: HashMap::new(),
            next_id: 0,
            reorder: std::collections::VecDeque::new(),
        }
    }

    fn extension(&mut self, dn: &Arc<str>) -> &Addr<Extension> {
        // No `Addr` clone: each one allocates, and there is one actor per DN.
        let (shared, switch, next_id) = (&self.shared, &self.switch, &mut self.next_id);
        &self
            .extensions
            .entry(dn.clone())
            .or_insert_with(|| {
                *next_id += 1;
                let id = *next_id;
                switch.metrics.extension_actors.increment(1.0);
                // On this router's Arbiter: all of a switch's per-DN work shares one
                // thread, so a client registered on several DNs of the switch gets replies and
                // events in the order the frames were read (the thread runs the actors in the
                // order they were handed work).
                let ext = Extension::new(dn.clone(), id, shared.clone(), switch.clone());
                (id, ext.start())
            })
            .1
    }

    fn dispatch(&mut self, msg: ToDn) {
        // Nothing to unregister or query where no actor holds the DN: answer here.
        if !self.extensions.contains_key(&msg.dn) {
            match &msg.op {
                DnOp::Unregister {
                    client,
                    reference_id: Some(reference_id),
                } => {
                    let e = ProtocolError::new(
                        *reference_id,
                        ErrorCode::NotRegistered,
                        format!("{} is not registered by this client, so there is nothing to unregister.", msg.dn),
                    )
                    .dn(&msg.dn);
                    client.reply_error(&e, Some(&self.switch.name));
                    return;
                }
                DnOp::Unregister { .. } => return,
                DnOp::QueryAddress {
                    client,
                    reference_id,
                } => {
                    client.reply(
                        crate::protocol::Outgoing::new("EventAddressInfo")
                            .reference(*reference_id)
                            .with("thisDn", &*msg.dn)
                            .with("switch", &*self.switch.name)
                            .with("hotDesk", serde_json::Value::Null)
                            .with("hotDeskKnown", false)
                            .with("calls", serde_json::Value::Array(Vec::new()))
                            .finish(),
                    );
                    return;
                }
                _ => {}
            }
        }
        self.extension(&msg.dn).do_send(ExtensionOp(msg.op));
    }
}

impl Actor for Router {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // One timer per switch for the periodic call sweep of its extension actors.
        let options = &self.shared.config.options;
        let every = |d: std::time::Duration| {
            (d / 4).clamp(
                std::time::Duration::from_millis(10),
                std::time::Duration::from_secs(60),
            )
        };
        ctx.run_interval(every(options.call_cleanup_idle.0), |act, _| {
            for (_, ext) in act.extensions.values() {
                ext.do_send(crate::extension::SweepCalls);
            }
        });
        // And one for the calls kept after a link loss whose `call-grace` has run out.
        ctx.run_interval(every(options.call_grace.0), |act, _| {
            act.switch.calls.sweep();
        });
    }
}

impl Handler<ToDn> for Router {
    type Result = ();

    fn handle(&mut self, msg: ToDn, _: &mut Self::Context) {
        self.dispatch(msg);
    }
}

impl Handler<Bounce> for Router {
    type Result = ();

    fn handle(&mut self, msg: Bounce, _: &mut Self::Context) {
        self.dispatch(msg.0);
    }
}

impl Handler<Retiring> for Router {
    type Result = ();

    fn handle(&mut self, msg: Retiring, _: &mut Self::Context) {
        if let Some((id, addr)) = self.extensions.get(&msg.dn) {
            if *id == msg.id {
                // Everything forwarded to it so far is already in its mailbox, ahead of this.
                addr.do_send(RetireAck);
                self.extensions.remove(&msg.dn);
                self.switch.metrics.extension_actors.decrement(1.0);
            }
        }
    }
}

impl Handler<Delivery> for Router {
    type Result = ();

    fn handle(&mut self, d: Delivery, _: &mut Self::Context) {
        // Slots are pushed in increasing `seq` order (sorted) except when two links of the
        // switch both deliver during a failover: search by halves, then from the front.
        let at = match self
            .reorder
            .binary_search_by_key(&d.seq, |(seq, _, _)| *seq)
        {
            Ok(i) => Some(i),
            Err(_) => self.reorder.iter().position(|(seq, _, _)| *seq == d.seq),
        };
        if let Some(slot) = at.and_then(|i| self.reorder.get_mut(i)) {
            slot.1 = Some(d.out);
        }
        while let Some((_, Some(_), _)) = self.reorder.front() {
            let Some((_, Some(out), _queue_slot)) = self.reorder.pop_front() else {
                break;
            };
            let mut delivered = 0u64;
            for o in out {
                for client in &o.to {
                    if client.push(o.text.clone(), o.reply) && !o.reply {
                        delivered += 1;
                    }
                }
            }
            self.switch.metrics.events_delivered.increment(delivered);
        }
    }
}

impl Handler<ForgetCall> for Router {
    type Result = ();

    fn handle(&mut self, msg: ForgetCall, _: &mut Self::Context) {
        if let Some((_, ext)) = self.extensions.get(&msg.dn) {
            ext.do_send(msg);
        }
    }
}

impl Handler<CountExtensions> for Router {
    type Result = usize;

    fn handle(&mut self, _: CountExtensions, _: &mut Self::Context) -> usize {
        self.extensions.len()
    }
}

impl Handler<SwitchEvent> for Router {
    type Result = ();

    fn handle(&mut self, ev: SwitchEvent, _: &mut Self::Context) {
        match ev {
            SwitchEvent::Csta {
                seq,
                dn,
                message,
                slot,
                ..
            } => {
                if let Some((_, ext)) = self.extensions.get(&dn) {
                    self.reorder.push_back((seq, None, slot));
                    ext.do_send(CstaEvent { seq, message });
                }
            }
            SwitchEvent::Answer {
                dn,
                tag,
                seq,
                result,
                slot,
                ..
            } => {
                if let Some((_, ext)) = self.extensions.get(&dn) {
                    self.reorder.push_back((seq, None, slot));
                    ext.do_send(crate::extension::Answer { seq, tag, result });
                }
            }
            SwitchEvent::MonitorLost { dn, error, .. } => {
                if let Some((_, ext)) = self.extensions.get(&dn) {
                    ext.do_send(MonitorLost { error });
                }
            }
            SwitchEvent::LinkUp { link, .. } => {
                self.switch.active_link.store(link, Ordering::Relaxed);
                self.switch.link_up.store(true, Ordering::Relaxed);
                for (_, ext) in self.extensions.values() {
                    ext.do_send(LinkChange { up: true });
                }
                self.shared.hub.broadcast(
                    crate::protocol::Outgoing::new("EventLinkConnected")
                        .with("switch", &*self.switch.name)
                        .with("link", link)
                        .finish(),
                );
            }
            SwitchEvent::LinkDown { link, .. } => {
                self.switch.link_up.store(false, Ordering::Relaxed);
                // The switch is the authority: what we knew may be stale now.
                self.switch
                    .associations
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clear();
                self.switch
                    .calls
                    .link_lost(self.shared.config.options.call_grace.0);
                for (_, ext) in self.extensions.values() {
                    ext.do_send(LinkChange { up: false });
                }
                self.shared.hub.broadcast(
                    crate::protocol::Outgoing::new("EventLinkDisconnected")
                        .with("switch", &*self.switch.name)
                        .with("link", link)
                        .finish(),
                );
            }
        }
    }
}
