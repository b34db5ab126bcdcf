//! The router: which switch owns a DN, which extension actor holds it, and the hand-off of
//! client requests and switch events to that actor.
//!
//! There is one [`Router`] actor per switch (a shard of the routing table), each on its own
//! Arbiter: a DN's switch is found from the immutable DN plans in [`Shared`] without asking any
//! actor, and everything about the DN then flows through that switch's router, so adding
//! switches adds routing capacity instead of load on one thread. The router keeps no per-DN
//! state but the map from DN to extension actor; the work per DN (state, request queue,
//! serialization and fan-out of events) happens in the [`Extension`] actors, spread over all
//! Arbiters.
//!
//! An extension actor is created on the first request for its DN and retires itself when it
//! has nothing left to do (no subscriber, no request). Retiring is a handshake
//! ([`Retiring`] → [`RetireAck`]) so that a request the router forwarded just before it learned
//! of the retirement is bounced back and re-dispatched, never lost.

use crate::calls::CallTable;
use crate::config::Config;
use crate::dnplan::DnPlan;
use crate::extension::{CstaEvent, Extension, ExtensionOp, LinkChange, MonitorLost, RetireAck};
use crate::link::{SwitchEvent, SwitchHandle};
use crate::protocol::{ErrorCode, Outgoing, ProtocolError, RegisterMode};
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
}

/// Configuration and switches, shared read-only by every actor and session.
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// The switches, in configuration order.
    pub switches: Vec<Arc<SwitchCtx>>,
    /// Every open client session.
    pub hub: Hub,
    /// Arbiters over which extension actors are spread.
    pub arbiters: Vec<ArbiterHandle>,
    /// Round-robin position in `arbiters`.
    pub next_arbiter: AtomicUsize,
}

impl SwitchCtx {
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

    fn arbiter(&self) -> Option<ArbiterHandle> {
        if self.arbiters.is_empty() {
            return None;
        }
        let i = self.next_arbiter.fetch_add(1, Ordering::Relaxed) % self.arbiters.len();
        self.arbiters.get(i).cloned()
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

/// Ask how many extension actors the router has (metrics, tests).
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct CountExtensions;

/// The router shard of one switch (see the [module docs](self)).
pub struct Router {
    shared: Arc<Shared>,
    switch: Arc<SwitchCtx>,
    extensions: HashMap<Arc<str>, (u64, Addr<Extension>)>,
    next_id: u64,
}

impl Router {
    /// A router for `switch`.
    pub fn new(shared: Arc<Shared>, switch: Arc<SwitchCtx>) -> Router {
        Router {
            shared,
            switch,
            extensions: HashMap::new(),
            next_id: 0,
        }
    }

    fn extension(&mut self, dn: &Arc<str>, ctx: &mut Context<Self>) -> Addr<Extension> {
        if let Some((_, addr)) = self.extensions.get(dn) {
            return addr.clone();
        }
        self.next_id += 1;
        let id = self.next_id;
        let ext = {
            let (dn, shared, switch, router) = (
                dn.clone(),
                self.shared.clone(),
                self.switch.clone(),
                ctx.address(),
            );
            move || Extension::new(dn, id, shared, switch, router)
        };
        let addr = match self.shared.arbiter() {
            Some(arbiter) => Extension::start_in_arbiter(&arbiter, move |_| ext()),
            None => ext().start(),
        };
        self.extensions.insert(dn.clone(), (id, addr.clone()));
        addr
    }

    fn dispatch(&mut self, msg: ToDn, ctx: &mut Context<Self>) {
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
                        Outgoing::new("EventAddressInfo")
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
        let ext = self.extension(&msg.dn, ctx);
        ext.do_send(ExtensionOp(msg.op));
    }
}

impl Actor for Router {
    type Context = Context<Self>;
}

impl Handler<ToDn> for Router {
    type Result = ();

    fn handle(&mut self, msg: ToDn, ctx: &mut Self::Context) {
        self.dispatch(msg, ctx);
    }
}

impl Handler<Bounce> for Router {
    type Result = ();

    fn handle(&mut self, msg: Bounce, ctx: &mut Self::Context) {
        self.dispatch(msg.0, ctx);
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
            }
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
                seq, dn, message, ..
            } => {
                if let Some((_, ext)) = self.extensions.get(&dn) {
                    ext.do_send(CstaEvent { seq, message });
                }
            }
            SwitchEvent::Answer {
                dn, tag, result, ..
            } => {
                if let Some((_, ext)) = self.extensions.get(&dn) {
                    ext.do_send(crate::extension::Answer { tag, result });
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
                    Outgoing::new("EventLinkConnected")
                        .with("switch", &*self.switch.name)
                        .with("link", link)
                        .finish(),
                );
            }
            SwitchEvent::LinkDown { link, .. } => {
                self.switch.link_up.store(false, Ordering::Relaxed);
                self.switch
                    .calls
                    .link_lost(self.shared.config.options.call_grace.0);
                for (_, ext) in self.extensions.values() {
                    ext.do_send(LinkChange { up: false });
                }
                self.shared.hub.broadcast(
                    Outgoing::new("EventLinkDisconnected")
                        .with("switch", &*self.switch.name)
                        .with("link", link)
                        .finish(),
                );
            }
        }
    }
}
