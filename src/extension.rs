//! The extension actor: one per DN in use, holding everything the router knows of the DN.
//!
//! State: the clients registered on the DN (and their modes), the MonitorStart shared by their
//! registrations, the hot-desk association last reported by the switch (and whether it is
//! known at all), the DN's active calls with their connIds, and the last account code. Work:
//! private-service requests on the DN go to the switch one at a time, in arrival order; every
//! event from the DN's monitor updates the state and, for private events, is serialized once
//! and the same bytes queued to every registered client.
//!
//! Clients pipeline: requests on the DN that arrive while a registration's MonitorStart is in
//! flight wait for its outcome and then run in the order they arrived, so a private service
//! sent right after `RequestRegisterAddress` finds the client registered, and an unregister
//! gets its `EventUnregistered` after the `EventRegistered` and stops the monitor.
//!
//! Answers to the DN's requests arrive through the same path as its events (link → router →
//! here, FIFO all the way), so a client sees the reply to its request before the event the
//! request caused, and events in the order the switch sent them.

use crate::calls::{ConnId, DeviceCalls, Evicted};
use crate::config::Access;
use crate::csta::{
    CallEvent, CallEventKind, Connection, HotDeskAction, HotDeskRequest, HotDeskState, Message,
};
use crate::errors::{self, Service};
use crate::link::{LinkError, MonitorOutcome, RoutedRequest, StartMonitor, StopMonitor};
use crate::protocol::Outgoing as Json;
use crate::protocol::{event_error, ErrorCode, ProtocolError, RegisterMode, SharedText};
use crate::router::{Bounce, Delivery, DnOp, Outgoing, Retiring, Router, Shared, SwitchCtx, ToDn};
use crate::session::ClientHandle;
use actix::prelude::*;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tracing::{debug, warn};

/// A request about this DN from a client (forwarded by the router).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ExtensionOp(pub DnOp);

/// A CSTA event from this DN's monitor.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CstaEvent {
    /// The switch-wide event sequence number.
    pub seq: u64,
    /// The event.
    pub message: Arc<Message>,
}

/// The switch's answer to this DN's request `tag`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Answer {
    /// The answer's position in the switch's stream (for ordered delivery).
    pub seq: u64,
    /// The request's tag.
    pub tag: u64,
    /// The answer.
    pub result: Result<Message, LinkError>,
}

/// The switch's link went down or came back (with monitors restored).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct LinkChange {
    /// Whether the switch is operational now.
    pub up: bool,
}

/// The switch refused to restore this DN's monitor on a new link.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct MonitorLost {
    /// Why.
    pub error: LinkError,
}

/// The router has forgotten this actor; everything it forwarded has arrived.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RetireAck;

#[derive(Debug)]
struct Subscriber {
    client: ClientHandle,
    mode: RegisterMode,
}

#[derive(Debug)]
enum MonitorState {
    /// No monitor.
    Idle,
    /// A MonitorStart (number `start`) is in flight; these registrations wait for it.
    Starting {
        start: u64,
        waiters: Vec<(ClientHandle, u64, RegisterMode)>,
    },
    /// Monitored (or to be monitored as soon as the link is up).
    Active,
}

#[derive(Debug)]
struct PendingRequest {
    client: ClientHandle,
    reference_id: u64,
    service: Service,
    message: Message,
    other_dn: Option<String>,
    conn_id: Option<String>,
    extensions: BTreeMap<String, String>,
    received: Instant,
}

/// The extension actor (see the [module docs](self)).
pub struct Extension {
    dn: Arc<str>,
    id: u64,
    shared: Arc<Shared>,
    switch: Arc<SwitchCtx>,
    subscribers: Vec<Subscriber>,
    monitor: MonitorState,
    hotdesk: Option<(String, String)>,
    hotdesk_known: bool,
    /// Boxed: most DNs have no call, and the actor should stay small.
    calls: Option<Box<DeviceCalls>>,
    last_account_code: Option<String>,
    queue: VecDeque<PendingRequest>,
    /// Client operations that arrived while a MonitorStart was in flight, in arrival order:
    /// they run once it is answered.
    deferred: VecDeque<DnOp>,
    /// Numbers the MonitorStarts, so that a late outcome is never taken for a newer one's.
    starts: u64,
    /// Boxed: most DNs never have a request in flight, and the actor should stay small.
    in_flight: Option<Box<(u64, PendingRequest)>>,
    next_tag: u64,
    retiring: bool,
    /// While handling an event or answer: what it makes clients receive, handed to the router
    /// to be queued in order (see `router::Delivery`).
    outbox: Option<Vec<Outgoing>>,
    /// Whether this DN counts in the registered-DNs gauge.
    counted: bool,
}

impl Extension {
    /// The actor for `dn` on `switch`.
    pub fn new(dn: Arc<str>, id: u64, shared: Arc<Shared>, switch: Arc<SwitchCtx>) -> Extension {
        Extension {
            dn,
            id,
            shared,
            switch,
            subscribers: Vec::new(),
            monitor: MonitorState::Idle,
            hotdesk: None,
            hotdesk_known: false,
            calls: None,
            last_account_code: None,
            queue: VecDeque::new(),
            deferred: VecDeque::new(),
            starts: 0,
            in_flight: None,
            next_tag: 0,
            retiring: false,
            outbox: None,
            counted: false,
        }
    }

    fn error(&self, reference_id: u64, code: ErrorCode, message: String) -> ProtocolError {
        ProtocolError::new(reference_id, code, message).dn(&self.dn)
    }

    fn reply_error(
        &self,
        client: &ClientHandle,
        e: &ProtocolError,
        extensions: Option<Map<String, Value>>,
    ) {
        client.reply(event_error(e, Some(&self.switch.name), extensions));
    }

    fn hotdesk_json(&self) -> Value {
        match &self.hotdesk {
            Some((guest, host)) => serde_json::json!({"guestDn": guest, "hostDn": host}),
            None => Value::Null,
        }
    }

    fn link_state(&self) -> &'static str {
        if self.switch.link_up.load(Ordering::Relaxed) {
            "connected"
        } else {
            "disconnected"
        }
    }

    fn registered(&self, client: &ClientHandle, reference_id: u64, mode: RegisterMode) {
        client.reply(
            Json::new("EventRegistered")
                .reference(reference_id)
                .with("thisDn", &*self.dn)
                .with("switch", &*self.switch.name)
                .with("registerMode", mode.as_str())
                .with("linkState", self.link_state())
                .with("hotDesk", self.hotdesk_json())
                .with("hotDeskKnown", self.hotdesk_known)
                .finish(),
        );
    }

    fn subscribe(&mut self, client: ClientHandle, mode: RegisterMode) {
        match self
            .subscribers
            .iter_mut()
            .find(|s| s.client.id == client.id)
        {
            Some(s) => s.mode = mode,
            None => self.subscribers.push(Subscriber { client, mode }),
        }
        self.count_registration();
    }

    fn on_register(
        &mut self,
        client: ClientHandle,
        reference_id: u64,
        mode: RegisterMode,
        ctx: &mut Context<Self>,
    ) {
        match &mut self.monitor {
            MonitorState::Active => {
                self.subscribe(client.clone(), mode);
                self.registered(&client, reference_id, mode);
            }
            MonitorState::Starting { waiters, .. } => waiters.push((client, reference_id, mode)),
            MonitorState::Idle => {
                self.starts += 1;
                let start = self.starts;
                self.monitor = MonitorState::Starting {
                    start,
                    waiters: vec![(client, reference_id, mode)],
                };
                self.hotdesk_known = false;
                let Some(link) = self.switch.link().cloned() else {
                    return self.not_started(ctx);
                };
                let fut = link.send(StartMonitor(self.dn.clone()));
                ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
                    let res = res.unwrap_or_else(|_| {
                        Err(LinkError::LinkLost {
                            switch: act.switch.name.clone(),
                        })
                    });
                    act.started(start, res, ctx);
                }));
            }
        }
    }

    /// The outcome of MonitorStart number `start`: answer the registrations waiting for it,
    /// then run what was deferred behind it.
    fn started(
        &mut self,
        start: u64,
        res: Result<MonitorOutcome, LinkError>,
        ctx: &mut Context<Self>,
    ) {
        let waiters = match std::mem::replace(&mut self.monitor, MonitorState::Idle) {
            MonitorState::Starting { start: s, waiters } if s == start => waiters,
            other => {
                // Already settled (the monitor was lost meanwhile).
                self.monitor = other;
                return;
            }
        };
        match res {
            Ok(MonitorOutcome::Started) | Ok(MonitorOutcome::Pending) => {
                self.monitor = MonitorState::Active;
                for (client, reference_id, mode) in waiters {
                    if client.is_open() {
                        self.subscribe(client.clone(), mode);
                    }
                    self.registered(&client, reference_id, mode);
                }
            }
            Err(e) => self.registrations_failed(waiters, &e),
        }
        self.run_deferred(ctx);
        self.maybe_retire(ctx);
    }

    /// Registrations whose MonitorStart failed: each gets the error, nothing is registered.
    fn registrations_failed(
        &mut self,
        waiters: Vec<(ClientHandle, u64, RegisterMode)>,
        e: &LinkError,
    ) {
        let (code, message) = errors::link_error(e, Service::Monitor, &self.dn);
        let message = format!("{} could not be registered: {message}", self.dn);
        for (client, reference_id, _) in waiters {
            let err = self.error(reference_id, code, message.clone());
            self.reply_error(&client, &err, csta_extension(e));
        }
    }

    /// Run the operations deferred behind a MonitorStart, in order, until one starts another.
    fn run_deferred(&mut self, ctx: &mut Context<Self>) {
        while !matches!(self.monitor, MonitorState::Starting { .. }) {
            let Some(op) = self.deferred.pop_front() else {
                break;
            };
            self.run_op(op, ctx);
        }
        if self.deferred.is_empty() && self.deferred.capacity() > 0 {
            self.deferred = VecDeque::new();
        }
    }

    /// The switch's link layer is not started yet (only possible during start-up).
    fn not_started(&mut self, ctx: &mut Context<Self>) {
        if let MonitorState::Starting { waiters, .. } =
            std::mem::replace(&mut self.monitor, MonitorState::Idle)
        {
            for (client, reference_id, _) in waiters {
                let e = self.error(
                    reference_id,
                    ErrorCode::Internal,
                    "The router is still starting; retry in a moment.".into(),
                );
                self.reply_error(&client, &e, None);
            }
        }
        self.maybe_retire(ctx);
    }

    fn on_unregister(
        &mut self,
        client: ClientHandle,
        reference_id: Option<u64>,
        ctx: &mut Context<Self>,
    ) {
        let before = self.subscribers.len();
        self.subscribers.retain(|s| s.client.id != client.id);
        // Never while a MonitorStart is in flight: the operation was deferred behind it.
        let removed = self.subscribers.len() != before;
        if let Some(reference_id) = reference_id {
            if removed {
                client.reply(
                    Json::new("EventUnregistered")
                        .reference(reference_id)
                        .with("thisDn", &*self.dn)
                        .finish(),
                );
            } else {
                let e = self.error(
                    reference_id,
                    ErrorCode::NotRegistered,
                    format!(
                        "{} is not registered by this client, so there is nothing to unregister.",
                        self.dn
                    ),
                );
                self.reply_error(&client, &e, None);
            }
        }
        self.maybe_retire(ctx);
    }

    fn on_query(&mut self, client: ClientHandle, reference_id: u64) {
        let calls: Vec<Value> = self
            .calls
            .iter()
            .flat_map(|list| list.iter())
            .map(|c| Value::from(c.conn_id.to_string()))
            .collect();
        client.reply(
            Json::new("EventAddressInfo")
                .reference(reference_id)
                .with("thisDn", &*self.dn)
                .with("switch", &*self.switch.name)
                .with("hotDesk", self.hotdesk_json())
                .with("hotDeskKnown", self.hotdesk_known)
                .with("calls", calls)
                .finish(),
        );
    }

    fn on_private_service(
        &mut self,
        client: ClientHandle,
        reference_id: u64,
        msg_id: u64,
        conn_id: Option<String>,
        extensions: BTreeMap<String, String>,
        ctx: &mut Context<Self>,
    ) {
        let service = Service::private(msg_id);
        let refuse = |act: &Self, code: ErrorCode, message: String| {
            if let Some(service) = service {
                act.switch.metrics.private_service(service, Some(code));
            }
            crate::audit::private_service(
                &client.application,
                &act.dn,
                &crate::audit::service_name(msg_id),
                Some(code),
                std::time::Duration::ZERO,
            );
            let e = act.error(reference_id, code, message);
            act.reply_error(&client, &e, None);
        };
        match self.subscribers.iter().find(|s| s.client.id == client.id) {
            None => {
                return refuse(self, ErrorCode::NotRegistered, format!(
                    "{} is not registered by this client; send RequestRegisterAddress with \"registerMode\": \"share\" first.", self.dn));
            }
            Some(s) if s.mode == RegisterMode::Monitor || client.access == Access::Monitor => {
                return refuse(self, ErrorCode::NotRegistered, format!(
                    "{} is registered in monitor mode, which cannot request private services; register it in share mode.", self.dn));
            }
            Some(_) => {}
        }
        let dn = self.dn.to_string();
        let (service, message, other_dn, conn) = match msg_id {
            1 => {
                let Some(host) = extensions.get("HOST_DN") else {
                    return refuse(self, ErrorCode::InvalidAttr, "Private service 1 needs extensions.HOST_DN: the host DN to associate the guest with.".into());
                };
                if host == &dn {
                    return refuse(
                        self,
                        ErrorCode::InvalidAttr,
                        format!("HOST_DN {host} is the guest itself; give the host device's DN."),
                    );
                }
                if !self.switch.plan.contains(host) {
                    return match self.shared.switch_of(host) {
                        Some(other) => refuse(self, ErrorCode::InvalidAttr, format!(
                            "Host {host} is on switch {}, guest {dn} on switch {}; hot-desking needs both on the same switch.", other.name, self.switch.name)),
                        None => refuse(self, ErrorCode::NotConfigured, format!(
                            "Host {} is in no switch's DN plan; check the number.", crate::protocol::echo(host))),
                    };
                }
                (
                    Service::HotdeskInitiate,
                    Message::Escape(HotDeskRequest {
                        guest: dn.clone(),
                        action: HotDeskAction::Associate { host: host.clone() },
                    }),
                    Some(host.clone()),
                    None,
                )
            }
            2 => (
                Service::HotdeskCancel,
                Message::Escape(HotDeskRequest {
                    guest: dn.clone(),
                    action: HotDeskAction::Cancel,
                }),
                self.hotdesk
                    .as_ref()
                    .filter(|(g, _)| g == &dn)
                    .map(|(_, h)| h.clone()),
                None,
            ),
            501 => {
                if !self.shared.config.options.accode_privateservice {
                    return refuse(self, ErrorCode::UnsupOper, "Account codes (private service 501) are switched off on this router (accode-privateservice = false).".into());
                }
                let name = &self.shared.config.options.accode_name;
                let Some(code) = extensions.get(name) else {
                    return refuse(
                        self,
                        ErrorCode::InvalidAttr,
                        format!("Private service 501 needs extensions.{name}: the account code."),
                    );
                };
                if code.is_empty()
                    || code.chars().count() > 32
                    || !code.chars().all(|c| {
                        !c.is_control() && (c.is_alphanumeric() || c.is_ascii_graphic() || c == ' ')
                    })
                {
                    return refuse(self, ErrorCode::InvalidAttr, format!("The account code must be 1 to 32 printable characters; got {} characters.", code.chars().count()));
                }
                let calls = self.calls.as_deref();
                let call = match &conn_id {
                    Some(cid) => match ConnId::parse(cid).and_then(|c| calls?.by_conn_id(c)) {
                        Some(c) => c,
                        None => return refuse(self, ErrorCode::InvConnId, format!("connId {} is not an active call of {dn}; query the address for its calls.", crate::protocol::echo(cid))),
                    },
                    None => match calls.and_then(DeviceCalls::most_recent) {
                        Some(c) => c,
                        None => return refuse(self, ErrorCode::InvConnId, format!("{dn} has no active call to set an account code on.")),
                    },
                };
                let conn = call.conn_id.to_string();
                (
                    Service::SetAccountCode,
                    Message::AssociateData {
                        call: Connection::new(&*call.call_id, dn.clone()),
                        account_code: code.clone(),
                    },
                    None,
                    Some(conn),
                )
            }
            other => {
                return refuse(
                    self,
                    ErrorCode::UnsupOper,
                    format!(
                        "Private service {other} is not supported; this router offers {:?}.",
                        self.shared.private_services()
                    ),
                );
            }
        };
        let req = PendingRequest {
            client,
            reference_id,
            service,
            message,
            other_dn,
            conn_id: conn,
            extensions,
            received: Instant::now(),
        };
        if self.in_flight.is_none() && self.queue.is_empty() {
            // The usual case: nothing waiting, so the queue is not touched (a push would
            // allocate its buffer, about a kilobyte, for every request).
            self.send(req);
            self.maybe_retire(ctx);
        } else {
            self.queue.push_back(req);
            self.next_request(ctx);
        }
    }

    /// Send a request to the switch's active link; answer it at once if there is none.
    /// Returns whether it is now in flight.
    fn send(&mut self, req: PendingRequest) -> bool {
        self.next_tag += 1;
        let tag = self.next_tag;
        // Straight to the active link; its answer (or failure) comes back as an `Answer`
        // through the router, in frame order.
        let Some(link) = self.switch.handle.get().and_then(|h| h.active_link()) else {
            let e = LinkError::NoSwitch {
                switch: self.switch.name.clone(),
            };
            self.finish(req, Err(e));
            return false;
        };
        link.do_send(RoutedRequest {
            message: req.message.clone(),
            dn: self.dn.clone(),
            tag,
        });
        self.in_flight = Some(Box::new((tag, req)));
        true
    }

    /// Send the next queued request if none is in flight.
    fn next_request(&mut self, ctx: &mut Context<Self>) {
        loop {
            if self.in_flight.is_some() {
                return;
            }
            let Some(req) = self.queue.pop_front() else {
                if self.queue.capacity() > 0 {
                    // A burst queued here is over: give its buffer back.
                    self.queue = VecDeque::new();
                }
                self.maybe_retire(ctx);
                return;
            };
            if self.send(req) {
                return;
            }
        }
    }

    fn finish(&mut self, req: PendingRequest, result: Result<Message, LinkError>) {
        let elapsed = req.received.elapsed();
        let outcome: Result<(), Failure> = match &result {
            Ok(Message::EscapeResponse) if matches!(req.service, Service::HotdeskInitiate | Service::HotdeskCancel) => Ok(()),
            Ok(Message::AssociateDataResponse) if req.service == Service::SetAccountCode => Ok(()),
            Ok(other) => Err((ErrorCode::UnknownError, format!(
                "Switch {} answered {} to a {} request; the switch may or may not have acted, so query {} before retrying.",
                self.switch.name, other.name(), req.service.label(), self.dn), None)),
            Err(e) => {
                let (code, message) = errors::link_error(e, req.service, &self.dn);
                Err((code, message, csta_extension(e)))
            }
        };
        self.switch.metrics.private_service(
            req.service,
            outcome.as_ref().err().map(|(code, _, _)| *code),
        );
        self.switch
            .metrics
            .association_latency(req.service, elapsed);
        crate::audit::private_service(
            &req.client.application,
            &self.dn,
            req.service.label(),
            outcome.as_ref().err().map(|(code, _, _)| *code),
            elapsed,
        );
        match outcome {
            Ok(()) => {
                let msg_id = match req.service {
                    Service::HotdeskInitiate => 1,
                    Service::HotdeskCancel => 2,
                    _ => 501,
                };
                let mut out = Json::new("EventPrivateInfo")
                    .reference(req.reference_id)
                    .with("privateMsgId", msg_id)
                    .with("thisDn", &*self.dn)
                    .with("switch", &*self.switch.name)
                    .with("extensions", &req.extensions);
                if let Some(other) = &req.other_dn {
                    out = out.with("otherDn", other.as_str());
                }
                if let Some(conn) = &req.conn_id {
                    out = out.with("connId", conn.as_str());
                }
                self.emit(vec![req.client.clone()], out.finish(), true);
            }
            Err((code, message, ext)) => {
                let e = self.error(req.reference_id, code, message);
                let text = event_error(&e, Some(&self.switch.name), ext);
                self.emit(vec![req.client.clone()], text, true);
            }
        }
    }

    fn on_answer(&mut self, tag: u64, result: Result<Message, LinkError>, ctx: &mut Context<Self>) {
        if self.in_flight.as_ref().is_none_or(|b| b.0 != tag) {
            debug!(dn = %self.dn, tag, "answer for a request no longer in flight ignored");
            return;
        }
        if let Some(b) = self.in_flight.take() {
            let (_, req) = *b;
            self.finish(req, result);
        }
        self.next_request(ctx);
    }

    /// Queue a message to some clients: through the router's reorder buffer while handling an
    /// event or answer, directly otherwise.
    fn emit(&mut self, to: Vec<ClientHandle>, text: SharedText, reply: bool) {
        match &mut self.outbox {
            Some(out) => out.push(Outgoing { text, to, reply }),
            None => {
                for c in &to {
                    c.push(text.clone(), reply);
                }
            }
        }
    }

    /// Send to the switch's router shard. Its address is taken from the switch (set at start,
    /// before any client can connect) rather than kept per DN: an `Addr` clone allocates, and
    /// a hundred thousand of them add up.
    fn to_router<M>(&self, msg: M)
    where
        M: actix::Message + Send + 'static,
        M::Result: Send,
        Router: Handler<M>,
    {
        match self.switch.router.get() {
            Some(router) => router.do_send(msg),
            None => warn!(dn = %self.dn, "no router shard for the switch; message dropped"),
        }
    }

    /// Queue one serialized event to every subscriber still there.
    fn deliver(&mut self, text: SharedText) {
        self.subscribers.retain(|s| s.client.is_open());
        let to = self.subscribers.iter().map(|s| s.client.clone()).collect();
        self.emit(to, text, false);
    }

    /// Run `f` collecting what it sends, and hand that to the router for ordered delivery.
    fn ordered(&mut self, seq: u64, f: impl FnOnce(&mut Self)) {
        self.outbox = Some(Vec::new());
        f(self);
        let out = self.outbox.take().unwrap_or_default();
        self.to_router(Delivery { seq, out });
    }

    fn on_event(&mut self, seq: u64, message: &Message) {
        match message {
            Message::PrivateEvent { event, .. } => {
                match event.state {
                    HotDeskState::Established => {
                        self.switch.metrics.hotdesk_established.increment(1);
                        self.switch
                            .note_association(&event.guest, event.host.as_deref());
                    }
                    HotDeskState::Cancelled => {
                        self.switch.metrics.hotdesk_cancelled.increment(1);
                        self.switch.note_association(&event.guest, None);
                    }
                }
                self.hotdesk_known = true;
                let msg_id = match event.state {
                    HotDeskState::Established => {
                        self.hotdesk = event.host.clone().map(|h| (event.guest.clone(), h));
                        1
                    }
                    HotDeskState::Cancelled => {
                        self.hotdesk = None;
                        2
                    }
                };
                let text = crate::protocol::hotdesk_event(
                    &self.dn,
                    &self.switch.name,
                    seq,
                    msg_id,
                    &event.guest,
                    event.host.as_deref(),
                );
                self.deliver(text);
            }
            Message::Call(call) => self.on_call_event(call),
            Message::CallInformation {
                connection,
                device,
                account_code,
                ..
            } => {
                let at = device.as_deref().or(connection.device_id.as_deref());
                if at != Some(&*self.dn) {
                    // Reported on every party's monitor; delivered from the named device's only.
                    return;
                }
                let Some(call_id) = connection.call_id.as_deref() else {
                    return;
                };
                let conn_id = self.touch_call(call_id, false).to_string();
                self.last_account_code = Some(account_code.clone());
                self.switch.metrics.account_code.increment(1);
                if !self.shared.config.options.accode_privateservice {
                    return;
                }
                let mut ext = Map::new();
                ext.insert(
                    self.shared.config.options.accode_name.clone(),
                    Value::from(account_code.as_str()),
                );
                let out =
                    crate::protocol::private_info_event(&self.dn, &self.switch.name, seq, 501)
                        .with("thisDn", &*self.dn)
                        .with("connId", conn_id)
                        .with("extensions", ext);
                self.deliver(out.finish());
            }
            _ => {}
        }
    }

    /// Add the call if new (within `max-calls-per-dn` and `max-calls-per-switch`: the call idle
    /// the longest is evicted beyond them); mark it active if asked. Returns its connId.
    fn touch_call(&mut self, call_id: &str, activated: bool) -> ConnId {
        let now = Instant::now();
        if let Some(call) = self
            .calls
            .as_mut()
            .and_then(|list| list.touch(call_id, activated, now))
        {
            let conn_id = call.conn_id;
            self.switch.calls.touch(call_id, conn_id);
            return conn_id;
        }
        let options = &self.shared.config.options;
        let (max_per_dn, max_per_switch) = (options.max_calls_per_dn, options.max_calls_per_switch);
        let call_id: Arc<str> = Arc::from(call_id);
        let hold = self.switch.calls.hold(&call_id, &self.dn, max_per_switch);
        let conn_id = hold.conn_id;
        self.forget_evicted(hold.evicted);
        let list = self.calls.get_or_insert_with(Box::default);
        list.add(call_id, conn_id, activated, now);
        if list.len() > max_per_dn {
            if let Some(old) = list.pop_idlest() {
                debug!(dn = %self.dn, call = %old.call_id, "more than max-calls-per-dn active calls: the call idle the longest is forgotten");
                self.switch
                    .calls
                    .release(&old.call_id, old.conn_id, &self.dn);
                self.switch.metrics.calls_evicted.increment(1);
            }
        }
        conn_id
    }

    /// Calls the switch's table evicted (over `max-calls-per-switch`): every device holding
    /// one forgets it, this one at once, the others through the router.
    fn forget_evicted(&mut self, evicted: Vec<Evicted>) {
        for e in evicted {
            debug!(switch = %self.switch.name, call = %e.call_id, "more than max-calls-per-switch active calls: the call idle the longest is forgotten");
            self.switch.metrics.calls_evicted.increment(1);
            for dn in e.holders {
                if dn == self.dn {
                    if let Some(list) = &mut self.calls {
                        list.forget(&e.call_id, e.conn_id);
                    }
                } else {
                    self.to_router(ForgetCall {
                        dn,
                        call_id: e.call_id.clone(),
                        conn_id: e.conn_id,
                    });
                }
            }
        }
    }

    /// Free the call list's memory once it is empty.
    fn shrink_calls(&mut self) {
        if self.calls.as_ref().is_some_and(|list| list.is_empty()) {
            self.calls = None;
        }
    }

    fn drop_call(&mut self, call_id: &str) {
        if let Some(c) = self.calls.as_mut().and_then(|list| list.remove(call_id)) {
            self.switch.calls.release(&c.call_id, c.conn_id, &self.dn);
            self.shrink_calls();
        }
    }

    /// Let go of every call (the link was lost, or the actor retires).
    fn release_calls(&mut self) {
        if let Some(mut list) = self.calls.take() {
            for c in list.drain() {
                self.switch.calls.release(&c.call_id, c.conn_id, &self.dn);
            }
        }
    }

    fn on_call_event(&mut self, ev: &CallEvent) {
        let Some(call_id) = ev.connection.call_id.as_deref() else {
            return;
        };
        let here = |d: Option<&str>| d == Some(&*self.dn);
        match ev.kind {
            CallEventKind::ServiceInitiated
            | CallEventKind::Originated
            | CallEventKind::Delivered => {
                self.touch_call(call_id, false);
            }
            CallEventKind::Established => {
                self.touch_call(call_id, true);
            }
            CallEventKind::Retrieved => {
                let mine = here(ev.device.as_deref()) || here(ev.connection.device_id.as_deref());
                self.touch_call(call_id, mine);
            }
            CallEventKind::Held => {
                self.touch_call(call_id, false);
            }
            CallEventKind::ConnectionCleared => {
                if here(ev.connection.device_id.as_deref()) {
                    self.drop_call(call_id);
                } else if let Some(call) = self
                    .calls
                    .as_mut()
                    .and_then(|list| list.touch(call_id, false, Instant::now()))
                {
                    let conn_id = call.conn_id;
                    self.switch.calls.touch(call_id, conn_id);
                }
            }
            CallEventKind::CallCleared => self.drop_call(call_id),
            CallEventKind::Transferred | CallEventKind::Diverted => {
                if here(ev.device.as_deref()) || here(ev.connection.device_id.as_deref()) {
                    self.drop_call(call_id);
                } else {
                    self.touch_call(call_id, false);
                }
            }
        }
    }

    fn sweep_calls(&mut self) {
        let idle = self.shared.config.options.call_cleanup_idle.0;
        let now = Instant::now();
        while let Some(c) = self
            .calls
            .as_mut()
            .and_then(|list| list.pop_idle_longer_than(idle, now))
        {
            self.switch.calls.release(&c.call_id, c.conn_id, &self.dn);
        }
        self.shrink_calls();
    }

    /// Keep the registered-DNs gauge in step with the subscriber list.
    fn count_registration(&mut self) {
        let registered = !self.subscribers.is_empty();
        if registered != self.counted {
            self.counted = registered;
            if registered {
                self.switch.metrics.registered_dns.increment(1.0);
            } else {
                self.switch.metrics.registered_dns.decrement(1.0);
            }
        }
    }

    fn maybe_retire(&mut self, ctx: &mut Context<Self>) {
        self.count_registration();
        if self.retiring
            || !self.subscribers.is_empty()
            || !matches!(self.monitor, MonitorState::Idle | MonitorState::Active)
            || self.in_flight.is_some()
            || !self.queue.is_empty()
            || !self.deferred.is_empty()
        {
            return;
        }
        if matches!(self.monitor, MonitorState::Active) {
            if let Some(link) = self.switch.link() {
                link.do_send(StopMonitor(self.dn.clone()));
            }
            self.monitor = MonitorState::Idle;
        }
        self.release_calls();
        self.retiring = true;
        self.to_router(Retiring {
            dn: self.dn.clone(),
            id: self.id,
        });
        let _ = ctx;
    }
}

/// Why a request failed: code, sentence, and `extensions` for the `EventError`.
type Failure = (ErrorCode, String, Option<Map<String, Value>>);

/// `extensions.CSTAError` for a switch rejection.
fn csta_extension(e: &LinkError) -> Option<Map<String, Value>> {
    match e {
        LinkError::Rejected { error, .. } => {
            let mut m = Map::new();
            m.insert("CSTAError".into(), Value::from(error.to_string()));
            Some(m)
        }
        _ => None,
    }
}

impl Actor for Extension {
    type Context = Context<Self>;
}

/// Drop calls idle longer than `call-cleanup-idle` (sent periodically by the router shard, so
/// that a hundred thousand extension actors do not each keep a timer).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SweepCalls;

impl Handler<SweepCalls> for Extension {
    type Result = ();

    fn handle(&mut self, _: SweepCalls, _: &mut Self::Context) {
        if self.calls.is_some() {
            self.sweep_calls();
        }
    }
}

/// Forget a call the switch's table evicted (over `max-calls-per-switch`); sent through the
/// router by the device whose new call pushed it out.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ForgetCall {
    /// The DN whose list holds the call.
    pub dn: Arc<str>,
    /// The switch's call ID.
    pub call_id: Arc<str>,
    /// Its connId (a newer call reusing the call ID is left alone).
    pub conn_id: ConnId,
}

impl Handler<ForgetCall> for Extension {
    type Result = ();

    fn handle(&mut self, msg: ForgetCall, _: &mut Self::Context) {
        if let Some(list) = &mut self.calls {
            list.forget(&msg.call_id, msg.conn_id);
            self.shrink_calls();
        }
    }
}

impl Handler<ExtensionOp> for Extension {
    type Result = ();

    fn handle(&mut self, ExtensionOp(op): ExtensionOp, ctx: &mut Self::Context) {
        if self.retiring {
            self.to_router(Bounce(ToDn {
                dn: self.dn.clone(),
                op,
            }));
            return;
        }
        // While a MonitorStart is in flight a registration joins it; anything else (and a
        // registration behind something deferred) waits for its outcome, so that a client's
        // operations on the DN take effect in the order it sent them.
        if matches!(self.monitor, MonitorState::Starting { .. })
            && (!self.deferred.is_empty() || !matches!(op, DnOp::Register { .. }))
        {
            self.deferred.push_back(op);
            return;
        }
        self.run_op(op, ctx);
    }
}

impl Extension {
    /// Carry out one client operation on the DN.
    fn run_op(&mut self, op: DnOp, ctx: &mut Context<Self>) {
        match op {
            DnOp::Register {
                client,
                reference_id,
                mode,
            } => self.on_register(client, reference_id, mode, ctx),
            DnOp::Unregister {
                client,
                reference_id,
            } => self.on_unregister(client, reference_id, ctx),
            DnOp::QueryAddress {
                client,
                reference_id,
            } => {
                self.on_query(client, reference_id);
                self.maybe_retire(ctx);
            }
            DnOp::PrivateService {
                client,
                reference_id,
                msg_id,
                conn_id,
                extensions,
            } => {
                self.on_private_service(client, reference_id, msg_id, conn_id, extensions, ctx);
                self.maybe_retire(ctx);
            }
        }
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

    fn handle(&mut self, a: Answer, ctx: &mut Self::Context) {
        self.ordered(a.seq, |act| act.on_answer(a.tag, a.result, ctx));
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
        if let MonitorState::Starting { waiters, .. } =
            std::mem::replace(&mut self.monitor, MonitorState::Idle)
        {
            // The switch refused the monitor these registrations were waiting for.
            self.registrations_failed(waiters, &lost.error);
            self.run_deferred(ctx);
            self.maybe_retire(ctx);
            return;
        }
        let (code, message) = errors::link_error(&lost.error, Service::Monitor, &self.dn);
        let text = Json::new("EventUnregistered")
            .with("thisDn", &*self.dn)
            .with("switch", &*self.switch.name)
            .with("errorCode", code.code())
            .with("errorMessage", format!("The switch refused to monitor {} again after the link was restored, so it is no longer registered: {message}", self.dn))
            .finish();
        self.deliver(text);
        self.subscribers.clear();
        self.monitor = MonitorState::Idle;
        self.maybe_retire(ctx);
    }
}

impl Handler<RetireAck> for Extension {
    type Result = ();

    fn handle(&mut self, _: RetireAck, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
