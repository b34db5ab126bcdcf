//! Who is registered on a DN, and the life of its monitor on the switch.
//!
//! Registrations of a DN share one MonitorStart; the monitor is stopped when the last client
//! leaves (the actor retires). Clients pipeline: operations on the DN that arrive while a
//! registration's MonitorStart is in flight wait for its outcome and then run in the order
//! they arrived, so a private service sent right after `RequestRegisterAddress` finds the
//! client registered, and an unregister gets its `EventUnregistered` after the
//! `EventRegistered` and stops the monitor.

use super::requests::csta_extension;
use super::Extension;
use crate::client::ClientHandle;
use crate::link::{LinkError, MonitorOutcome};
use crate::protocol::{ErrorCode, RegisterMode};
use crate::router::messages::DnOp;
use actix::prelude::*;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;

#[derive(Debug)]
struct Subscriber {
    client: ClientHandle,
    mode: RegisterMode,
    /// Registered with `callEvents: true`: gets the DN's call events.
    call_events: bool,
}

/// The clients registered on a DN. Almost every DN has one, kept inline (16 bytes, no heap);
/// a DN shared by several clients keeps them on the heap.
#[derive(Debug, Default)]
enum SubList {
    #[default]
    Empty,
    One(Subscriber),
    // Boxed: a `Vec` here would make every DN's list 32 bytes rather than 16.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<Subscriber>>),
}

impl SubList {
    fn as_slice(&self) -> &[Subscriber] {
        match self {
            SubList::Empty => &[],
            SubList::One(s) => std::slice::from_ref(s),
            SubList::Many(v) => v,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [Subscriber] {
        match self {
            SubList::Empty => &mut [],
            SubList::One(s) => std::slice::from_mut(s),
            SubList::Many(v) => v,
        }
    }

    fn push(&mut self, s: Subscriber) {
        *self = match std::mem::take(self) {
            SubList::Empty => SubList::One(s),
            SubList::One(first) => SubList::Many(Box::new(vec![first, s])),
            SubList::Many(mut v) => {
                v.push(s);
                SubList::Many(v)
            }
        };
    }

    fn retain(&mut self, mut keep: impl FnMut(&Subscriber) -> bool) {
        *self = match std::mem::take(self) {
            SubList::Empty => SubList::Empty,
            SubList::One(s) if keep(&s) => SubList::One(s),
            SubList::One(_) => SubList::Empty,
            SubList::Many(v) => SubList::from(*v, keep),
        };
    }

    /// The kept ones of `v`, in the smallest form.
    fn from(mut v: Vec<Subscriber>, keep: impl FnMut(&Subscriber) -> bool) -> SubList {
        v.retain(keep);
        match v.len() {
            0 => SubList::Empty,
            1 => v.pop().map_or(SubList::Empty, SubList::One),
            _ => SubList::Many(Box::new(v)),
        }
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn is_empty(&self) -> bool {
        matches!(self, SubList::Empty)
    }

    fn into_vec(self) -> Vec<Subscriber> {
        match self {
            SubList::Empty => Vec::new(),
            SubList::One(s) => vec![s],
            SubList::Many(v) => *v,
        }
    }
}

/// A registration waiting for a MonitorStart: the client, its `referenceId` (`None` for a
/// registration restored by a new owner of the switch: no reply), the mode, `callEvents`.
type Waiter = (ClientHandle, Option<u64>, RegisterMode, bool);

/// A MonitorStart in flight (boxed: only while a registration starts the monitor).
#[derive(Debug)]
struct Starting {
    /// Its number (see [`Subscriptions::starts`]).
    start: u16,
    /// The registrations waiting for it, in arrival order.
    waiters: Vec<Waiter>,
    /// Client operations that arrived while it was in flight, in arrival order: they run once
    /// it is answered.
    deferred: VecDeque<DnOp>,
}

/// The DN's registrations and monitor, in 32 bytes: the extension actor lives as long as the
/// DN is registered, so its size is the router's memory per registered DN.
#[derive(Debug, Default)]
pub(super) struct Subscriptions {
    subscribers: SubList,
    /// `Some` while a MonitorStart is in flight.
    starting: Option<Box<Starting>>,
    /// Numbers the MonitorStarts (wrapping), so that a late outcome is never taken for a
    /// newer one's.
    starts: u16,
    /// Monitored (or to be monitored as soon as the link is up); false while idle or
    /// starting.
    active: bool,
    /// Whether this DN counts in the registered-DNs gauge.
    counted: bool,
}

impl Subscriptions {
    /// The mode `client` registered the DN in, if it did.
    pub(super) fn mode_of(&self, client: &ClientHandle) -> Option<RegisterMode> {
        self.subscribers
            .as_slice()
            .iter()
            .find(|s| s.client.id == client.id)
            .map(|s| s.mode)
    }

    /// Whether `client` registered the DN with `callEvents: true`.
    pub(super) fn call_events_of(&self, client: &ClientHandle) -> bool {
        self.subscribers
            .as_slice()
            .iter()
            .any(|s| s.client.id == client.id && s.call_events)
    }

    /// Whether any subscriber wants the DN's call events (most do not: then none is built).
    pub(super) fn wants_call_events(&self) -> bool {
        self.subscribers.as_slice().iter().any(|s| s.call_events)
    }

    /// The clients still open that registered with `callEvents: true`.
    pub(super) fn call_event_clients(&mut self) -> Vec<ClientHandle> {
        self.subscribers.retain(|s| s.client.is_open());
        self.subscribers
            .as_slice()
            .iter()
            .filter(|s| s.call_events)
            .map(|s| s.client.clone())
            .collect()
    }

    /// Whether `op` must wait for the MonitorStart in flight: anything but a registration
    /// (which joins it), and a registration behind something already waiting.
    pub(super) fn must_defer(&self, op: &DnOp) -> bool {
        self.starting
            .as_ref()
            .is_some_and(|st| !st.deferred.is_empty() || !matches!(op, DnOp::Register { .. }))
    }

    /// Keep `op` until the MonitorStart in flight is answered.
    pub(super) fn defer(&mut self, op: DnOp) {
        if let Some(st) = &mut self.starting {
            st.deferred.push_back(op);
        }
    }

    /// The clients still open, forgetting the others.
    pub(super) fn open_clients(&mut self) -> Vec<ClientHandle> {
        self.subscribers.retain(|s| s.client.is_open());
        self.subscribers
            .as_slice()
            .iter()
            .map(|s| s.client.clone())
            .collect()
    }

    /// Whether the DN has nothing left to do here: no subscriber, no MonitorStart in flight,
    /// nothing deferred.
    pub(super) fn is_idle(&self) -> bool {
        self.subscribers.is_empty() && self.starting.is_none()
    }

    /// Whether the switch monitors the DN (or will as soon as its link is up).
    pub(super) fn is_monitored(&self) -> bool {
        self.active
    }

    /// The monitor is stopped (the actor retires).
    pub(super) fn stopped(&mut self) {
        self.active = false;
    }

    /// Forget every registration and the monitor (the switch is no longer owned here; the
    /// owner restores the registrations from the cluster's records). Returns the registrations
    /// that waited for a MonitorStart and the operations deferred behind it, still to answer.
    pub(super) fn forget_all(&mut self) -> (Vec<Waiter>, VecDeque<DnOp>) {
        self.subscribers = SubList::Empty;
        self.active = false;
        match self.starting.take() {
            Some(st) => (st.waiters, st.deferred),
            None => (Vec::new(), VecDeque::new()),
        }
    }
}

impl Extension {
    fn registered(
        &self,
        client: &ClientHandle,
        reference_id: Option<u64>,
        mode: RegisterMode,
        call_events: bool,
    ) {
        let Some(reference_id) = reference_id else {
            return;
        };
        client.reply(crate::protocol::registered(
            reference_id,
            &self.dn,
            &self.env.switch.name,
            (mode, call_events),
            self.env.switch.is_up(),
            self.more().state.hotdesk(),
            self.hotdesk_known,
        ));
    }

    fn subscribe(&mut self, client: ClientHandle, mode: RegisterMode, call_events: bool) {
        if let Some(cluster) = self.env.switch.cluster.get() {
            cluster.registered(&self.dn, &client, mode, call_events);
        }
        let subs = &mut self.subs.subscribers;
        match subs
            .as_mut_slice()
            .iter_mut()
            .find(|s| s.client.id == client.id)
        {
            Some(s) => {
                s.mode = mode;
                s.call_events = call_events;
            }
            None => subs.push(Subscriber {
                client,
                mode,
                call_events,
            }),
        }
        self.count_registration();
    }

    /// `RequestRegisterAddress`: join the monitor, or start it.
    pub(super) fn on_register(
        &mut self,
        client: ClientHandle,
        reference_id: Option<u64>,
        mode: RegisterMode,
        call_events: bool,
        ctx: &mut Context<Self>,
    ) {
        if let Some(st) = &mut self.subs.starting {
            st.waiters.push((client, reference_id, mode, call_events));
        } else if self.subs.active {
            self.subscribe(client.clone(), mode, call_events);
            self.registered(&client, reference_id, mode, call_events);
        } else {
            self.subs.starts = self.subs.starts.wrapping_add(1);
            let start = self.subs.starts;
            self.subs.starting = Some(Box::new(Starting {
                start,
                waiters: vec![(client, reference_id, mode, call_events)],
                deferred: VecDeque::new(),
            }));
            self.hotdesk_known = false;
            let Some(started) = self.start_monitor() else {
                return self.not_started();
            };
            ctx.spawn(started.into_actor(self).map(move |res, act, ctx| {
                act.started(start, res, ctx);
            }));
        }
    }

    /// The outcome of MonitorStart number `start`: answer the registrations waiting for it,
    /// then run what was deferred behind it.
    fn started(
        &mut self,
        start: u16,
        res: Result<MonitorOutcome, LinkError>,
        ctx: &mut Context<Self>,
    ) {
        let st = match self.subs.starting.take() {
            Some(st) if st.start == start => st,
            other => {
                // Already settled (the monitor was lost meanwhile).
                self.subs.starting = other;
                return;
            }
        };
        let Starting {
            waiters, deferred, ..
        } = *st;
        match res {
            Ok(MonitorOutcome::Started) | Ok(MonitorOutcome::Pending) => {
                self.subs.active = true;
                for (client, reference_id, mode, call_events) in waiters {
                    if client.is_open() {
                        self.subscribe(client.clone(), mode, call_events);
                    }
                    self.registered(&client, reference_id, mode, call_events);
                }
            }
            Err(e) => self.registrations_failed(waiters, &e),
        }
        self.run_deferred(deferred, ctx);
        self.maybe_retire();
    }

    /// Registrations whose MonitorStart failed: each gets the error, nothing is registered.
    pub(super) fn registrations_failed(&mut self, waiters: Vec<Waiter>, e: &LinkError) {
        let (code, message) = crate::errors::link_error(e, None, &self.dn);
        let message = format!("{} could not be registered: {message}", self.dn);
        let extensions = csta_extension(e);
        for (client, reference_id, _, _) in waiters {
            let Some(reference_id) = reference_id else {
                tracing::warn!(switch = %self.env.switch.name, dn = %self.dn, "a restored registration could not be monitored again: {message}");
                continue;
            };
            let err = self.error(reference_id, code, message.clone());
            client.reply_error(&err, Some(&self.env.switch.name), extensions.as_ref());
        }
    }

    /// Run the operations deferred behind a MonitorStart, in order, until one starts another.
    fn run_deferred(&mut self, mut deferred: VecDeque<DnOp>, ctx: &mut Context<Self>) {
        while let Some(op) = deferred.pop_front() {
            self.run_op(op, ctx);
            if let Some(st) = &mut self.subs.starting {
                // It started another MonitorStart: the rest waits for that one.
                deferred.append(&mut st.deferred);
                st.deferred = deferred;
                return;
            }
        }
    }

    /// The switch's link layer is not started yet (only possible during start-up).
    fn not_started(&mut self) {
        if let Some(st) = self.subs.starting.take() {
            // Nothing was deferred behind a start that never began.
            let Starting { waiters, .. } = *st;
            for (client, reference_id, _, _) in waiters {
                let Some(reference_id) = reference_id else {
                    continue;
                };
                let e = self.error(
                    reference_id,
                    ErrorCode::Internal,
                    "The router is still starting; retry in a moment.".into(),
                );
                client.reply_error(&e, Some(&self.env.switch.name), None);
            }
        }
        self.maybe_retire();
    }

    /// `RequestUnregisterAddress` (`reference_id`), or the client left (`None`: no reply).
    pub(super) fn on_unregister(&mut self, client: ClientHandle, reference_id: Option<u64>) {
        let before = self.subs.subscribers.len();
        self.subs.subscribers.retain(|s| s.client.id != client.id);
        // Never while a MonitorStart is in flight: the operation was deferred behind it.
        let removed = self.subs.subscribers.len() != before;
        // A client that left may have been dropped already as closed: its record goes too.
        if removed || reference_id.is_none() {
            if let Some(cluster) = self.env.switch.cluster.get() {
                cluster.unregistered(&self.dn, &client);
            }
        }
        match reference_id {
            Some(reference_id) if removed => {
                client.reply(crate::protocol::unregistered(reference_id, &self.dn));
            }
            Some(reference_id) => {
                let e = self.error(
                    reference_id,
                    ErrorCode::NotRegistered,
                    format!(
                        "{} is not registered by this client, so there is nothing to unregister.",
                        self.dn
                    ),
                );
                client.reply_error(&e, Some(&self.env.switch.name), None);
            }
            None => {}
        }
        self.maybe_retire();
    }

    /// The switch refused to monitor the DN again on a new link: its registrations are gone.
    pub(super) fn on_monitor_lost(&mut self, error: &LinkError, ctx: &mut Context<Self>) {
        if let Some(st) = self.subs.starting.take() {
            // The switch refused the monitor these registrations were waiting for.
            let Starting {
                waiters, deferred, ..
            } = *st;
            self.registrations_failed(waiters, error);
            self.run_deferred(deferred, ctx);
            self.maybe_retire();
            return;
        }
        let (code, message) = crate::errors::link_error(error, None, &self.dn);
        let text = crate::protocol::monitor_lost(
            &self.dn,
            &self.env.switch.name,
            code,
            &format!("The switch refused to monitor {} again after the link was restored, so it is no longer registered: {message}", self.dn),
        );
        // A lingering session gets it when it resumes.
        for s in self.subs.subscribers.as_slice() {
            s.client.dropped(text.clone());
        }
        self.subs.subscribers = SubList::Empty;
        self.subs.active = false;
        self.maybe_retire();
    }

    /// A reload removed the DN from every plan: every client registered on it (and every
    /// registration waiting for its MonitorStart) gets `EventUnregistered` (59, no
    /// `referenceId`), a lingering session when it resumes; the monitor is stopped as the
    /// actor retires.
    pub(super) fn on_left_plan(&mut self) {
        let text = crate::router::messages::left_plan_notice(&self.dn, &self.env.switch.name);
        let mut clients: Vec<ClientHandle> = Vec::new();
        let mut deferred = VecDeque::new();
        if let Some(st) = self.subs.starting.take() {
            let st = *st;
            clients.extend(st.waiters.into_iter().map(|(client, ..)| client));
            deferred = st.deferred;
        }
        let cluster = self.env.switch.cluster.get();
        for s in std::mem::take(&mut self.subs.subscribers).into_vec() {
            if let Some(cluster) = cluster {
                cluster.unregistered(&self.dn, &s.client);
            }
            clients.push(s.client);
        }
        for client in clients {
            client.dropped(text.clone());
        }
        let gone = LinkError::NoSwitch {
            switch: self.env.switch.name.clone(),
        };
        for op in deferred {
            self.refuse_op(op, &gone);
        }
        self.maybe_retire();
    }

    /// Keep the switch's count of registered DNs in step with the subscriber list.
    pub(super) fn count_registration(&mut self) {
        let registered = !self.subs.subscribers.is_empty();
        if registered != self.subs.counted {
            self.subs.counted = registered;
            if registered {
                self.env.switch.registered.fetch_add(1, Ordering::Relaxed);
            } else {
                self.env.switch.registered.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}
