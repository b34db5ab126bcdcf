//! The router shard of one switch: which extension actor holds a DN, the hand-off of client
//! requests and switch events to it, and the ordering of what comes back.
//!
//! There is one [`Router`] actor per switch, and the switch's extension actors live on the
//! shard's thread: a DN's switch is found from the immutable DN plans without asking any actor,
//! and everything about the DN then flows through that one thread. Shards are spread over a
//! pool of one Arbiter (thread) per core, switch i on thread i, and switch i's link j on thread
//! i + j, so the active link usually shares its shard's thread: adding switches spreads load
//! over the cores without adding threads. The shard keeps no per-DN state but the map from DN
//! to extension actor; the work per DN (state, request queue, serialization of events) happens
//! in the extension actors, and the fan-out to clients here, in frame order
//! ([`Reorder`]).
//!
//! An extension actor is created on the first request for its DN and retires itself when it
//! has nothing left to do (no subscriber, no request). Retiring is a handshake
//! ([`Retiring`] → [`RetireAck`]) so that a request the shard forwarded just before it learned
//! of the retirement is bounced back and re-dispatched, never lost.

use super::extension::{Env, Extension};
use super::messages::{
    Answer, CstaEvent, Delivery, Disowned, DnOp, ExtensionOp, FanOut, ForgetCall, LeftPlan,
    LinkChange, MonitorLost, Replanned, RetireAck, Retiring, SweepCalls, ToDn,
};
use super::ordering::Reorder;
use super::state::{ShardInbox, Shared, SwitchCtx};
use crate::client::{ClientHandle, RemoteNode};
use crate::link::{QueueSlot, SwitchEvent};
use crate::protocol::{self, ErrorCode, ProtocolError};
use actix::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The router shard of one switch (see the [module docs](self)).
pub struct Router {
    shared: Arc<Shared>,
    switch: Arc<SwitchCtx>,
    extensions: HashMap<Arc<str>, (u32, Addr<Extension>)>,
    /// Numbers the extension actors (wrapping: two actors of a DN are never 2^32 apart).
    next_id: u32,
    /// What the extension actors refer to (see [`Env`]).
    env: Arc<Env>,
    /// Events and answers handed out, waiting for their turn to reach the clients; each holds
    /// its frame's place in the link queue (given back once delivered, see [`QueueSlot`]).
    reorder: Reorder<(Arc<str>, Vec<FanOut>), QueueSlot>,
    /// When the extension actors' calls were last swept, and the calls kept after a link
    /// loss.
    swept: (Instant, Instant),
}

/// How often calls idle for `d` (or kept for `d` after a link loss) are swept.
fn sweep_every(d: Duration) -> Duration {
    (d / 4).clamp(Duration::from_millis(10), Duration::from_secs(60))
}

impl Router {
    /// Start the shard of `switch` on `arbiter` (the current one if `None`) and make it the
    /// switch's inbox. Returns its address (for the link layer's events).
    pub fn start_for(
        shared: Arc<Shared>,
        switch: Arc<SwitchCtx>,
        arbiter: Option<&ArbiterHandle>,
    ) -> Addr<Router> {
        let make = {
            let switch = switch.clone();
            move || Router {
                env: Arc::new(Env {
                    shared: shared.clone(),
                    switch: switch.clone(),
                }),
                shared,
                switch,
                extensions: HashMap::new(),
                next_id: 0,
                reorder: Reorder::default(),
                swept: (Instant::now(), Instant::now()),
            }
        };
        let addr = match arbiter {
            Some(arbiter) => Router::start_in_arbiter(arbiter, move |_| make()),
            None => make().start(),
        };
        let _ = switch.shard.set(ShardInbox {
            requests: addr.clone().recipient(),
            deliveries: addr.clone().recipient(),
            retiring: addr.clone().recipient(),
            forget: addr.clone().recipient(),
            disown: addr.clone().recipient(),
            replan: addr.clone().recipient(),
        });
        addr
    }

    fn extension(&mut self, dn: &Arc<str>) -> &Addr<Extension> {
        // No `Addr` clone: each one allocates, and there is one actor per DN.
        let (env, switch, next_id) = (&self.env, &self.switch, &mut self.next_id);
        &self
            .extensions
            .entry(dn.clone())
            .or_insert_with(|| {
                *next_id = next_id.wrapping_add(1);
                let id = *next_id;
                switch.extensions.fetch_add(1, Ordering::Relaxed);
                // On this shard's Arbiter: all of a switch's per-DN work shares one thread.
                let ext = Extension::new(dn.clone(), id, env.clone());
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
                } => return self.not_registered(client, *reference_id, &msg.dn),
                DnOp::Unregister { .. } => return,
                DnOp::QueryAddress {
                    client,
                    reference_id,
                } => {
                    client.reply(protocol::address_info(
                        *reference_id,
                        &msg.dn,
                        &self.switch.name,
                        None,
                        false,
                        &protocol::Calls::ConnIds(Vec::new()),
                    ));
                    return;
                }
                _ => {}
            }
        }
        self.extension(&msg.dn).do_send(ExtensionOp(msg.op));
    }

    fn not_registered(&self, client: &ClientHandle, reference_id: u64, dn: &str) {
        let e = ProtocolError::new(
            reference_id,
            ErrorCode::NotRegistered,
            format!("{dn} is not registered by this client, so there is nothing to unregister."),
        )
        .dn(dn);
        client.reply_error(&e, Some(&self.switch.name), None);
    }

    /// Hand an event or answer of the switch to its DN's actor, announcing it to the ordering
    /// stage first. Frames for a DN no actor holds go nowhere (their queue place is given back).
    fn hand_out<M>(&mut self, dn: &str, seq: u64, slot: QueueSlot, message: M)
    where
        M: actix::Message<Result = ()> + Send + 'static,
        Extension: Handler<M>,
    {
        if let Some((_, ext)) = self.extensions.get(dn) {
            self.reorder.expect(seq, slot);
            ext.do_send(message);
        }
    }

    fn link_changed(&mut self, up: bool, link: usize) {
        if !up {
            // The switch is the authority: what we knew may be stale now.
            self.switch.forget_associations();
            self.switch
                .calls
                .link_lost(self.shared.config().options.call_grace.0);
        }
        for (_, ext) in self.extensions.values() {
            ext.do_send(LinkChange { up });
        }
        // The reload that removed a switch told the clients.
        let removed = self.switch.is_removed();
        let reason = if self.switch.reconfiguring.load(Ordering::Acquire) {
            if up {
                self.switch.reconfiguring.store(false, Ordering::Release);
            }
            Some("reconfigured")
        } else {
            self.switch.take_link_reason()
        };
        let reason = match (reason, self.switch.cluster.get()) {
            (Some(reason), _) => Some(reason),
            // In a cluster every link event says why; a lost link is the plain case.
            (None, Some(_)) if !up => Some("link_lost"),
            (None, _) => None,
        };
        let switch = &self.switch;
        self.shared.hub.announce(|| {
            if up {
                switch.active_link.store(link, Ordering::Relaxed);
            }
            switch.set_link_up(up);
            (!removed).then(|| protocol::link_event(&switch.name, up, Some(link), reason))
        });
        if removed {
            return;
        }
        if let Some(cluster) = self.switch.cluster.get() {
            cluster.link_changed(up, link, reason);
        }
    }
}

impl Router {
    /// One timer per switch for the periodic call sweep of its extension actors
    /// (`call-cleanup-idle`) and of the calls kept after a link loss whose `call-grace` has
    /// run out. Both periods are read again at every tick, at least once a second, so that a
    /// reload's new values apply within a second.
    fn sweep_later(&mut self, ctx: &mut Context<Self>) {
        let options = &self.shared.config().options;
        let (idle, grace) = (
            sweep_every(options.call_cleanup_idle.0),
            sweep_every(options.call_grace.0),
        );
        let now = Instant::now();
        if now >= self.swept.0 + idle {
            self.swept.0 = now;
            for (_, ext) in self.extensions.values() {
                ext.do_send(SweepCalls);
            }
        }
        if now >= self.swept.1 + grace {
            self.swept.1 = now;
            self.switch.calls.sweep();
        }
        let next = (self.swept.0 + idle)
            .min(self.swept.1 + grace)
            .saturating_duration_since(now)
            .min(Duration::from_secs(1));
        ctx.run_later(next, |act, ctx| act.sweep_later(ctx));
    }
}

impl Actor for Router {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.sweep_later(ctx);
    }
}

impl Handler<ToDn> for Router {
    type Result = ();

    fn handle(&mut self, msg: ToDn, _: &mut Self::Context) {
        self.dispatch(msg);
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
                self.switch.extensions.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl Handler<Delivery> for Router {
    type Result = ();

    fn handle(&mut self, d: Delivery, _: &mut Self::Context) {
        self.reorder.fill(d.seq, (d.dn, d.out));
        while let Some((seq, (dn, out), _queue_slot)) = self.reorder.pop_ready() {
            self.fan_out(seq, &dn, out);
        }
    }
}

impl Router {
    /// Queue what an event or answer caused to its recipients: each client here gets its
    /// copy; a node of the cluster gets an event once for all its clients (it hands it to
    /// them), and the cluster keeps it once for the others' repairs and replays.
    fn fan_out(&self, seq: u64, dn: &str, out: Vec<FanOut>) {
        let mut delivered = 0u64;
        for o in out {
            if o.reply {
                for client in &o.to {
                    client.push(o.text.clone(), true);
                }
                continue;
            }
            let mut nodes: Vec<&Arc<dyn RemoteNode>> = Vec::new();
            for client in &o.to {
                match client.remote_node() {
                    None => {
                        if client.event(self.switch.index, seq, o.text.clone()) {
                            delivered += 1;
                        }
                    }
                    Some(node) => {
                        if !nodes.iter().any(|n| Arc::ptr_eq(n, node)) {
                            nodes.push(node);
                        }
                    }
                }
            }
            for node in nodes {
                node.event(dn, seq, o.text.clone());
            }
            if let Some(cluster) = self.switch.cluster.get() {
                cluster.event(dn, seq, &o.text);
            }
        }
        self.switch.metrics.events_delivered.increment(delivered);
    }
}

impl Handler<Replanned> for Router {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, _: Replanned, _: &mut Self::Context) -> Self::Result {
        let left: Vec<_> = self
            .extensions
            .iter()
            .filter(|(dn, _)| !self.switch.owns(dn))
            .map(|(_, (_, ext))| ext.send(LeftPlan))
            .collect();
        Box::pin(async move {
            let n = left.len();
            futures_util::future::join_all(left).await;
            n
        })
    }
}

impl Handler<Disowned> for Router {
    type Result = ();

    /// The switch is no longer owned here: every extension actor answers what waits on it and
    /// stops, and nothing handed out is waited for any more.
    fn handle(&mut self, _: Disowned, _: &mut Self::Context) {
        for (_, (_, ext)) in self.extensions.drain() {
            ext.do_send(Disowned);
            self.switch.extensions.fetch_sub(1, Ordering::Relaxed);
        }
        self.reorder = Reorder::default();
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
            } => self.hand_out(&dn, seq, slot, CstaEvent { seq, message }),
            SwitchEvent::Answer {
                dn,
                tag,
                seq,
                result,
                slot,
                ..
            } => self.hand_out(&dn, seq, slot, Answer { seq, tag, result }),
            SwitchEvent::MonitorLost { dn, error, .. } => {
                if let Some((_, ext)) = self.extensions.get(&dn) {
                    ext.do_send(MonitorLost { error });
                }
            }
            SwitchEvent::LinkUp { link, .. } => self.link_changed(true, link),
            SwitchEvent::LinkDown { link, .. } => self.link_changed(false, link),
        }
    }
}
