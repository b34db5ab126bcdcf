//! The extension actor: one per DN in use, holding everything the router knows of the DN.
//!
//! Its jobs, one module each:
//! - [`subscriptions`]: the clients registered on the DN (and their modes) and the life of the
//!   DN's monitor on the switch, shared by their registrations;
//! - [`requests`]: the DN's private-service requests, checked against the
//!   [catalogue](crate::services), sent to the switch one at a time in arrival order;
//! - [`call_events`]: the call events clients registered with `callEvents` get;
//! - [`events`]: what the DN's events mean (the hot-desk association, the active calls and
//!   their connIds) and the private events clients get, each serialized once and the same
//!   bytes queued to every registered client.
//!
//! Answers to the DN's requests arrive through the same path as its events (link → shard →
//! here, FIFO all the way), and what the actor makes of either goes back to the shard's
//! ordering stage ([`Delivery`]), so a client sees the reply to its request before the event
//! the request caused, and events in the order the switch sent them.

pub mod call_events;
pub mod events;
pub mod requests;
pub mod subscriptions;

use crate::client::ClientHandle;
use crate::csta::Message;
use crate::link::{LinkError, MonitorOutcome, RoutedRequest, SwitchRoute};
use crate::protocol::{ErrorCode, ProtocolError, SharedText};
use crate::router::messages::{
    Answer, CstaEvent, Delivery, Disowned, DnOp, ExtensionOp, FanOut, ForgetCall, LeftPlan,
    LinkChange, MonitorLost, RetireAck, Retiring, SweepCalls, ToDn,
};
use crate::router::state::{Shared, SwitchCtx};
use actix::prelude::*;
use events::DnState;
use futures_util::future::BoxFuture;
use requests::{Ask, Pipeline};
use std::sync::Arc;
use subscriptions::Subscriptions;
use tracing::warn;

/// What every extension actor of a switch refers to: one allocation per switch, so that each
/// actor holds one pointer to it rather than two.
pub struct Env {
    /// The process state.
    pub shared: Arc<Shared>,
    /// The switch the actors' DNs are on.
    pub switch: Arc<SwitchCtx>,
}

/// The extension actor (see the [module docs](self)).
///
/// One lives for every registered DN, so its size is most of the router's memory per
/// registered DN: the actor is kept to 72 bytes (its task, with actix's context, then fits in
/// 512 bytes; `tests/dn_memory.rs` checks it). What most DNs never use (requests, calls, the
/// hot-desk association, a MonitorStart in flight) is boxed and allocated on first use.
pub struct Extension {
    dn: Arc<str>,
    env: Arc<Env>,
    subs: Subscriptions,
    /// Requests, calls and the association: `None` until the DN first has one of them.
    more: Option<Box<More>>,
    /// The shard's number for this actor (its retirement names it).
    id: u32,
    retiring: bool,
    /// Whether the association (`more.state.hotdesk`) is known: false from the monitor's
    /// start (or a link loss) until the switch reports an event for the DN.
    hotdesk_known: bool,
}

/// The parts of an extension actor's state that most DNs never use.
#[derive(Debug, Default)]
struct More {
    requests: Pipeline,
    state: DnState,
}

/// What a DN without [`More`] reads.
static NO_MORE: More = More {
    requests: Pipeline::new(),
    state: DnState::new(),
};

thread_local! {
    /// While an extension actor of this thread handles an event or answer: what it makes
    /// clients receive, handed to the shard to be queued in order (see [`Delivery`]). Kept
    /// here rather than in every actor (actors of a thread run one at a time).
    static OUTBOX: std::cell::RefCell<Option<Vec<FanOut>>> = const { std::cell::RefCell::new(None) };
}

impl Extension {
    /// The actor for `dn` on the switch of `env`; `id` is the shard's number for it.
    pub fn new(dn: Arc<str>, id: u32, env: Arc<Env>) -> Extension {
        Extension {
            dn,
            env,
            subs: Subscriptions::default(),
            more: None,
            id,
            retiring: false,
            hotdesk_known: false,
        }
    }

    /// Requests, calls and association, as read.
    fn more(&self) -> &More {
        self.more.as_deref().unwrap_or(&NO_MORE)
    }

    /// The DN's calls, to change, if it has any.
    fn calls_mut(&mut self) -> Option<&mut crate::router::calls::DeviceCalls> {
        self.more.as_mut()?.state.calls.as_deref_mut()
    }

    /// Requests, calls and association, to change (allocated on first use, then kept).
    fn more_mut(&mut self) -> &mut More {
        self.more.get_or_insert_with(Box::default)
    }

    fn error(&self, reference_id: u64, code: ErrorCode, message: String) -> ProtocolError {
        ProtocolError::new(reference_id, code, message).dn(&self.dn)
    }

    /// Start the DN's monitor on the switch (now, or when a link comes up); `None` while the
    /// switch's link layer is not started (only during start-up).
    fn start_monitor(&self) -> Option<BoxFuture<'static, Result<MonitorOutcome, LinkError>>> {
        Some(self.env.switch.handle.get()?.start_monitor(self.dn.clone()))
    }

    /// Stop the DN's monitor on the switch.
    fn stop_monitor(&self) {
        if let Some(handle) = self.env.switch.handle.get() {
            handle.stop_monitor(self.dn.clone());
        }
    }

    /// Send a request to the switch; its answer comes back as an [`Answer`] with `tag`.
    /// `Err` when nothing was sent (no operational link).
    fn route(&self, message: Message, tag: u64) -> Result<(), LinkError> {
        let request = RoutedRequest {
            message,
            dn: self.dn.clone(),
            tag,
        };
        match self.env.switch.handle.get() {
            Some(handle) => handle.route(request),
            None => Err(LinkError::NoSwitch {
                switch: self.env.switch.name.clone(),
            }),
        }
    }

    /// Queue a message to some clients: through the shard's ordering stage while handling an
    /// event or answer, directly otherwise.
    fn emit(&mut self, to: Vec<ClientHandle>, text: SharedText, reply: bool) {
        let direct = OUTBOX.with_borrow_mut(|outbox| match outbox {
            Some(out) => {
                out.push(FanOut { text, to, reply });
                None
            }
            None => Some((to, text)),
        });
        if let Some((to, text)) = direct {
            for c in &to {
                c.push(text.clone(), reply);
            }
        }
    }

    /// Queue one serialized event to every subscriber still there.
    fn deliver(&mut self, text: SharedText) {
        let to = self.subs.open_clients();
        self.emit(to, text, false);
    }

    /// Run `f` collecting what it sends, and hand that to the shard for ordered delivery.
    fn ordered(&mut self, seq: u64, f: impl FnOnce(&mut Self)) {
        let outer = OUTBOX.replace(Some(Vec::new()));
        f(self);
        let out = OUTBOX.replace(outer).unwrap_or_default();
        match self.env.switch.shard.get() {
            Some(shard) => shard.deliveries.do_send(Delivery {
                seq,
                dn: self.dn.clone(),
                out,
            }),
            None => warn!(dn = %self.dn, "no router shard for the switch; delivery dropped"),
        }
    }

    /// Carry out one client operation on the DN.
    fn run_op(&mut self, op: DnOp, ctx: &mut Context<Self>) {
        match op {
            DnOp::Register {
                client,
                reference_id,
                mode,
                call_events,
            } => self.on_register(client, Some(reference_id), mode, call_events, ctx),
            DnOp::Restore {
                client,
                mode,
                call_events,
            } => self.on_register(client, None, mode, call_events, ctx),
            DnOp::Unregister {
                client,
                reference_id,
            } => self.on_unregister(client, reference_id),
            DnOp::QueryAddress {
                client,
                reference_id,
            } => {
                let state = &self.more().state;
                let calls = if self.subs.call_events_of(&client) {
                    crate::protocol::Calls::Objects(state.call_views())
                } else {
                    crate::protocol::Calls::ConnIds(state.conn_ids())
                };
                client.reply(crate::protocol::address_info(
                    reference_id,
                    &self.dn,
                    &self.env.switch.name,
                    state.hotdesk(),
                    self.hotdesk_known,
                    &calls,
                ));
                self.maybe_retire();
            }
            DnOp::PrivateService {
                client,
                reference_id,
                msg_id,
                conn_id,
                extensions,
            } => {
                self.on_private_service(Ask {
                    client,
                    reference_id,
                    msg_id,
                    conn_id,
                    extensions,
                });
                self.maybe_retire();
            }
        }
    }

    /// Answer an operation that can no longer be carried out here (the switch is no longer
    /// owned here) with what a lost link gives.
    fn refuse_op(&mut self, op: DnOp, gone: &LinkError) {
        let (code, message) = crate::errors::link_error(gone, None, &self.dn);
        let refuse = |client: &ClientHandle, reference_id: u64| {
            let e = self.error(reference_id, code, message.clone());
            client.reply_error(&e, Some(&self.env.switch.name), None);
        };
        match op {
            DnOp::Register {
                client,
                reference_id,
                ..
            }
            | DnOp::QueryAddress {
                client,
                reference_id,
            }
            | DnOp::PrivateService {
                client,
                reference_id,
                ..
            } => refuse(&client, reference_id),
            DnOp::Unregister {
                client,
                reference_id: Some(reference_id),
            } => {
                client.reply(crate::protocol::unregistered(reference_id, &self.dn));
            }
            DnOp::Unregister { .. } | DnOp::Restore { .. } => {}
        }
    }

    /// Retire when there is nothing left to do: no subscriber, no request, nothing waiting.
    /// The monitor is stopped, the calls let go, and the shard asked to forget the actor.
    fn maybe_retire(&mut self) {
        self.count_registration();
        if self.retiring || !self.subs.is_idle() || !self.more().requests.is_idle() {
            return;
        }
        if self.subs.is_monitored() {
            self.stop_monitor();
            self.subs.stopped();
        }
        self.release_calls();
        self.retiring = true;
        if let Some(shard) = self.env.switch.shard.get() {
            shard.retiring.do_send(Retiring {
                dn: self.dn.clone(),
                id: self.id,
            });
        }
    }
}

impl Actor for Extension {
    type Context = Context<Self>;
}

impl Handler<SweepCalls> for Extension {
    type Result = ();

    fn handle(&mut self, _: SweepCalls, _: &mut Self::Context) {
        if self.more().state.calls.is_some() {
            self.sweep_calls();
        }
    }
}

impl Handler<ForgetCall> for Extension {
    type Result = ();

    fn handle(&mut self, msg: ForgetCall, _: &mut Self::Context) {
        self.forget_call(&msg.call_id, msg.conn_id);
    }
}

impl Handler<ExtensionOp> for Extension {
    type Result = ();

    fn handle(&mut self, ExtensionOp(op): ExtensionOp, ctx: &mut Self::Context) {
        if self.retiring {
            // The shard forwarded this before it learned of the retirement: back for
            // re-dispatch to a new actor.
            if let Some(shard) = self.env.switch.shard.get() {
                shard.requests.do_send(ToDn {
                    dn: self.dn.clone(),
                    op,
                });
            }
            return;
        }
        // While a MonitorStart is in flight a registration joins it; anything else (and a
        // registration behind something deferred) waits for its outcome, so that a client's
        // operations on the DN take effect in the order it sent them.
        if self.subs.must_defer(&op) {
            self.subs.defer(op);
            return;
        }
        self.run_op(op, ctx);
    }
}

impl Handler<CstaEvent> for Extension {
    type Result = ();

    fn handle(&mut self, ev: CstaEvent, _: &mut Self::Context) {
        self.ordered(ev.seq, |act| {
            if !act.retiring {
                act.on_event(ev.seq, &ev.message);
            }
        });
    }
}

impl Handler<Answer> for Extension {
    type Result = ();

    fn handle(&mut self, a: Answer, _: &mut Self::Context) {
        self.ordered(a.seq, |act| act.on_answer(a.tag, a.result));
        self.maybe_retire();
    }
}

impl Handler<LinkChange> for Extension {
    type Result = ();

    fn handle(&mut self, change: LinkChange, _: &mut Self::Context) {
        if !change.up {
            // The switch is the authority and we may have missed events: forget what we knew
            // (the switch's call table keeps the connIds for `call-grace`).
            self.hotdesk_known = false;
            self.release_calls();
        }
    }
}

impl Handler<MonitorLost> for Extension {
    type Result = ();

    fn handle(&mut self, lost: MonitorLost, ctx: &mut Self::Context) {
        self.on_monitor_lost(&lost.error, ctx);
    }
}

impl Handler<Disowned> for Extension {
    type Result = ();

    fn handle(&mut self, _: Disowned, ctx: &mut Self::Context) {
        // Nothing may reach the switch any more: every request waiting here is answered now
        // (54), and the registrations are forgotten (the cluster's records keep them).
        let gone = LinkError::NoSwitch {
            switch: self.env.switch.name.clone(),
        };
        let (waiters, deferred) = self.subs.forget_all();
        self.registrations_failed(waiters, &gone);
        for op in deferred {
            self.refuse_op(op, &gone);
        }
        self.fail_requests();
        self.count_registration();
        self.release_calls();
        self.retiring = true;
        ctx.stop();
    }
}

impl Handler<LeftPlan> for Extension {
    type Result = ();

    fn handle(&mut self, _: LeftPlan, _: &mut Self::Context) {
        self.on_left_plan();
    }
}

impl Handler<RetireAck> for Extension {
    type Result = ();

    fn handle(&mut self, _: RetireAck, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
