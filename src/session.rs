//! Client sessions: one WebSocket connection each (SPEC section 3).
//!
//! A session is a task, not an actor: it reads the client's frames, answers what it can
//! itself (opening, server queries, malformed input), and hands everything about a DN to the
//! router of the DN's switch. Everything the router sends to a client (replies and events)
//! goes through the client's bounded outbound queue ([`ClientInner::push`]); whoever pushes
//! never waits: when the queue is full the client is too slow, it is closed with 4008 and its
//! registrations are released, and nobody else is slowed down.

use crate::config::Access;
use crate::protocol::{
    self, ErrorCode, Outgoing, ProtocolError, RegisterMode, Request, SharedText,
};
use crate::router::{DnOp, Shared, ToDn};
use actix_ws::{CloseCode, CloseReason, Message as WsMessage};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// One message queued for a client.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// The serialized message (shared with the other recipients of the same event).
    pub text: SharedText,
    /// Whether this answers one of the client's requests (frees a place in its in-flight limit).
    pub reply: bool,
}

/// How the router reaches a client. Cheap to clone (one reference count); pushing never waits.
#[derive(Debug, Clone)]
pub struct ClientHandle(Arc<ClientInner>);

/// The parts of a client handle.
#[derive(Debug)]
pub struct ClientInner {
    /// Unique per connection for the life of the process.
    pub id: u64,
    /// The application name from `RequestOpen`.
    pub application: Arc<str>,
    /// What the application may do.
    pub access: Access,
    tx: mpsc::Sender<Outbound>,
    slow: CancellationToken,
}

impl std::ops::Deref for ClientHandle {
    type Target = ClientInner;

    fn deref(&self) -> &ClientInner {
        &self.0
    }
}

impl ClientInner {
    /// Queue a message; `false` if the client is gone or too slow (it is then being closed).
    pub fn push(&self, text: SharedText, reply: bool) -> bool {
        match self.tx.try_send(Outbound { text, reply }) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.slow.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Queue a reply to one of the client's requests.
    pub fn reply(&self, text: SharedText) -> bool {
        self.push(text, true)
    }

    /// Queue an `EventError` reply.
    pub fn reply_error(&self, e: &ProtocolError, switch: Option<&str>) -> bool {
        self.reply(protocol::event_error(e, switch, None))
    }

    /// Queue a reply the session makes itself (not to a request it forwarded, so it does not
    /// free a place in the in-flight limit).
    pub fn answer(&self, text: SharedText) -> bool {
        self.push(text, false)
    }

    /// Queue an `EventError` the session makes itself.
    pub fn answer_error(&self, e: &ProtocolError, switch: Option<&str>) -> bool {
        self.answer(protocol::event_error(e, switch, None))
    }

    /// Whether the client is still there.
    pub fn is_open(&self) -> bool {
        !self.tx.is_closed() && !self.slow.is_cancelled()
    }
}

/// Every open session, for the messages that go to all clients (link events).
#[derive(Default)]
pub struct Hub {
    clients: Mutex<HashMap<u64, ClientHandle>>,
}

impl Hub {
    /// Send one message to every open client.
    pub fn broadcast(&self, text: SharedText) {
        let clients: Vec<ClientHandle> = self
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for c in clients {
            c.push(text.clone(), false);
        }
    }

    /// How many clients are open.
    pub fn len(&self) -> usize {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no client is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn add(&self, c: ClientHandle) {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(c.id, c);
    }

    fn remove(&self, id: u64) {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }
}

/// The most queued messages a session writes before it looks at the client's input again.
const WRITE_BURST: usize = 256;

static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);

/// Why a session ended (the metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCause {
    /// The client closed, or the connection dropped.
    Closed,
    /// The outbound queue overflowed (4008).
    SlowConsumer,
    /// Pings went unanswered.
    PingTimeout,
    /// The client broke the protocol (1008, 1009, 1002).
    ProtocolError,
    /// Authentication failed (1008).
    Auth,
    /// Over the connection limit (1013).
    Limit,
    /// The router is stopping (1001).
    Shutdown,
}

impl CloseCause {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            CloseCause::Closed => "closed",
            CloseCause::SlowConsumer => "slow_consumer",
            CloseCause::PingTimeout => "ping_timeout",
            CloseCause::ProtocolError => "protocol_error",
            CloseCause::Auth => "auth",
            CloseCause::Limit => "limit",
            CloseCause::Shutdown => "shutdown",
        }
    }
}

fn close_reason(code: u16, description: &str) -> Option<CloseReason> {
    Some(CloseReason {
        code: CloseCode::from(code),
        description: Some(description.to_owned()),
    })
}

struct State {
    shared: Arc<Shared>,
    client: Option<ClientHandle>,
    /// DNs this client may have registered, with their switch index, for clean-up.
    registered: HashMap<Arc<str>, usize>,
    in_flight: usize,
}

/// What to do after a client frame.
enum Next {
    Continue,
    Close(u16, &'static str, CloseCause),
}

/// Run one client session until it ends. `shutdown` closes it with 1001.
pub async fn run(
    shared: Arc<Shared>,
    mut session: actix_ws::Session,
    stream: actix_ws::MessageStream,
    shutdown: CancellationToken,
) {
    let server = &shared.config.server;
    let mut stream = stream.max_frame_size(server.max_frame_size);
    if shared.hub.len() >= server.max_clients {
        crate::metrics::client_disconnected(CloseCause::Limit.label());
        let _ = session
            .close(close_reason(1013, "try again later: too many clients"))
            .await;
        return;
    }
    let (tx, mut rx) = mpsc::channel::<Outbound>(server.client_queue);
    let slow = CancellationToken::new();
    let id = NEXT_CLIENT.fetch_add(1, Ordering::Relaxed);
    let mut state = State {
        shared: shared.clone(),
        client: None,
        registered: HashMap::new(),
        in_flight: 0,
    };
    // The handle exists from the start so replies before RequestOpen share the queue, but it
    // joins the hub (link events) only once the client is open.
    let mut pending_handle = Some(ClientInner {
        id,
        application: Arc::from(""),
        access: Access::Control,
        tx,
        slow: slow.clone(),
    });
    let ping_every = server.client_ping_interval.0.max(Duration::from_millis(10));
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    let tolerance = server.client_ping_tolerance.max(1);
    let mut missed = 0u32;
    let cause: CloseCause;
    let mut close: Option<(u16, &'static str)> = None;
    // Made once: a fresh `cancelled()` future per loop turn registers and unregisters a waiter
    // on every message, which showed in fan-out profiles.
    let shutdown_wait = shutdown.cancelled();
    let slow_wait = slow.cancelled();
    tokio::pin!(shutdown_wait, slow_wait);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown_wait => {
                // Replies and events already queued go out before the close frame.
                while let Ok(out) = rx.try_recv() {
                    if session.text(out.text).await.is_err() {
                        break;
                    }
                }
                cause = CloseCause::Shutdown;
                close = Some((1001, "going away"));
                break;
            }
            _ = &mut slow_wait => {
                cause = CloseCause::SlowConsumer;
                close = Some((4008, "slow consumer"));
                break;
            }
            out = rx.recv() => {
                let Some(out) = out else { cause = CloseCause::Closed; break; };
                // Write what is queued in one go (up to a bound, so reading the client and
                // pinging are not starved): one wake-up of this task and, usually, one send
                // for a burst of events instead of a turn of the loop per message.
                let mut next = Some(out);
                let mut written = 0;
                let mut stop = false;
                while let Some(out) = next.take() {
                    if out.reply {
                        state.in_flight = state.in_flight.saturating_sub(1);
                    }
                    // Ready at once unless actix-ws's own queue is full; a slow client or a
                    // shutdown must not wait behind it.
                    let written_ok = tokio::select! {
                        biased;
                        r = session.text(out.text) => r.is_ok(),
                        // The outer loop closes the session next.
                        _ = &mut slow_wait => break,
                        _ = &mut shutdown_wait => break,
                    };
                    if !written_ok {
                        stop = true;
                        break;
                    }
                    written += 1;
                    if written < WRITE_BURST {
                        next = rx.try_recv().ok();
                    }
                }
                if stop {
                    cause = CloseCause::Closed;
                    break;
                }
            }
            _ = ping.tick() => {
                if missed >= tolerance {
                    cause = CloseCause::PingTimeout;
                    close = Some((1000, "ping timeout"));
                    break;
                }
                missed += 1;
                if session.ping(b"csta-router").await.is_err() {
                    cause = CloseCause::Closed;
                    break;
                }
            }
            msg = stream.recv() => {
                let next = match msg {
                    None => { cause = CloseCause::Closed; break; }
                    Some(Err(actix_ws::ProtocolError::Overflow)) => {
                        Next::Close(1009, "message too big", CloseCause::ProtocolError)
                    }
                    Some(Err(_)) => Next::Close(1002, "WebSocket protocol error", CloseCause::ProtocolError),
                    Some(Ok(WsMessage::Ping(p))) => {
                        missed = 0;
                        if session.pong(&p).await.is_err() { cause = CloseCause::Closed; break; }
                        Next::Continue
                    }
                    Some(Ok(WsMessage::Pong(_))) => { missed = 0; Next::Continue }
                    Some(Ok(WsMessage::Close(_))) => { cause = CloseCause::Closed; break; }
                    Some(Ok(WsMessage::Text(text))) => {
                        missed = 0;
                        state.on_text(&text, &mut pending_handle)
                    }
                    Some(Ok(WsMessage::Binary(_))) => {
                        missed = 0;
                        match &state.client {
                            None => Next::Close(1008, "the first request must be RequestOpen", CloseCause::ProtocolError),
                            Some(c) => {
                                c.answer_error(&ProtocolError::new(0, ErrorCode::InvalidAttr,
                                    "Binary frames are not part of the protocol; send JSON in text frames."), None);
                                Next::Continue
                            }
                        }
                    }
                    Some(Ok(_)) => Next::Continue,
                };
                if let Next::Close(code, why, c) = next {
                    // Flush what is queued (the error that explains the close), then close.
                    while let Ok(out) = rx.try_recv() {
                        if session.text(out.text).await.is_err() { break; }
                    }
                    cause = c;
                    close = Some((code, why));
                    break;
                }
            }
        }
    }
    // Release everything first: the client may never read again.
    state.release_all();
    if let Some(c) = &state.client {
        shared.hub.remove(c.id);
    }
    drop(rx);
    debug!(client = id, cause = cause.label(), "client session ends");
    crate::metrics::client_disconnected(cause.label());
    if let Some((code, why)) = close {
        let closing = session.close(close_reason(code, why));
        let _ = tokio::time::timeout(Duration::from_secs(5), closing).await;
    }
}

impl State {
    fn on_text(&mut self, text: &str, pending_handle: &mut Option<ClientInner>) -> Next {
        let parsed = protocol::parse_request(text);
        let Some(client) = self.client.clone() else {
            // Before RequestOpen only RequestOpen is accepted.
            return match parsed {
                Ok((
                    reference_id,
                    Request::Open {
                        protocol_version,
                        application,
                        token,
                    },
                )) => {
                    let Some(mut handle) = pending_handle.take() else {
                        return Next::Close(1011, "internal error", CloseCause::ProtocolError);
                    };
                    if protocol_version != 1 {
                        handle.answer_error(
                            &ProtocolError::new(reference_id, ErrorCode::ProtoVers,
                                format!("Protocol version {protocol_version} is not supported; this router speaks version 1.")),
                            None,
                        );
                        return Next::Close(
                            1002,
                            "unsupported protocol version",
                            CloseCause::ProtocolError,
                        );
                    }
                    let apps = &self.shared.config.application;
                    if !apps.is_empty() {
                        let found = token.as_deref().and_then(|t| {
                            apps.iter()
                                .find(|a| constant_time_eq(a.token.as_bytes(), t.as_bytes()))
                        });
                        match found {
                            Some(app) => handle.access = app.access,
                            None => {
                                info!(application = %application, "client refused: missing or wrong token");
                                return Next::Close(
                                    1008,
                                    "authentication failed",
                                    CloseCause::Auth,
                                );
                            }
                        }
                    }
                    handle.application = Arc::from(application.as_str());
                    let handle = ClientHandle(Arc::new(handle));
                    info!(client = handle.id, application = %application, "client opened");
                    self.client = Some(handle.clone());
                    self.server_connected(&handle, reference_id);
                    Next::Continue
                }
                _ => Next::Close(
                    1008,
                    "the first request must be RequestOpen",
                    CloseCause::ProtocolError,
                ),
            };
        };
        let (reference_id, request) = match parsed {
            Ok(r) => r,
            Err(e) => {
                client.answer_error(&e, None);
                return Next::Continue;
            }
        };
        let limit = self.shared.config.server.client_max_in_flight;
        if self.in_flight >= limit
            && !matches!(request, Request::QueryServer | Request::Open { .. })
        {
            let (dn, service) = match &request {
                Request::PrivateService { dn, msg_id, .. } => {
                    (Some(dn.as_str()), crate::errors::Service::private(*msg_id))
                }
                Request::Register { dn, .. }
                | Request::Unregister { dn }
                | Request::QueryAddress { dn } => (Some(dn.as_str()), None),
                _ => (None, None),
            };
            let switch = dn.and_then(|d| self.shared.switch_of(d));
            if let (Some(sw), Some(service)) = (switch, service) {
                sw.metrics
                    .private_service(service, Some(ErrorCode::TooManyReq));
            }
            let mut e = ProtocolError::new(reference_id, ErrorCode::TooManyReq,
                format!("This client already has {limit} requests in flight; wait for replies before sending more."));
            if let Some(dn) = dn {
                e = e.dn(dn);
            }
            client.answer_error(&e, switch.map(|s| &*s.name));
            return Next::Continue;
        }
        match request {
            Request::Open { .. } => {
                client.answer_error(
                    &ProtocolError::new(reference_id, ErrorCode::InvalidAttr,
                        "The connection is already open; RequestOpen is accepted once per connection."),
                    None,
                );
            }
            Request::QueryServer => {
                let switches: Vec<serde_json::Value> = self.shared.switches.iter().map(|s| {
                    let up = s.link_up.load(Ordering::Relaxed);
                    serde_json::json!({
                        "name": &*s.name,
                        "linkState": if up { "connected" } else { "disconnected" },
                        "activeLink": if up { serde_json::Value::from(s.active_link.load(Ordering::Relaxed)) } else { serde_json::Value::Null },
                        "simulated": s.simulated,
                    })
                }).collect();
                client.answer(
                    Outgoing::new("EventServerInfo")
                        .reference(reference_id)
                        .with("serverVersion", env!("CARGO_PKG_VERSION"))
                        .with("switches", switches)
                        .finish(),
                );
            }
            Request::Register { dn, mode } => {
                if mode == RegisterMode::Share && client.access == Access::Monitor {
                    client.answer_error(
                        &ProtocolError::new(reference_id, ErrorCode::InvalidAttr,
                            format!("Application {} has monitor access only; register {dn} with \"registerMode\": \"monitor\".", client.application)).dn(&dn),
                        None,
                    );
                    return Next::Continue;
                }
                self.forward(&client, reference_id, dn, |c| DnOp::Register {
                    client: c,
                    reference_id,
                    mode,
                });
            }
            Request::Unregister { dn } => {
                self.registered.remove(dn.as_str());
                self.forward(&client, reference_id, dn, |c| DnOp::Unregister {
                    client: c,
                    reference_id: Some(reference_id),
                });
            }
            Request::QueryAddress { dn } => {
                self.forward(&client, reference_id, dn, |c| DnOp::QueryAddress {
                    client: c,
                    reference_id,
                });
            }
            Request::PrivateService {
                dn,
                msg_id,
                conn_id,
                extensions,
            } => {
                self.forward(&client, reference_id, dn, |c| DnOp::PrivateService {
                    client: c,
                    reference_id,
                    msg_id,
                    conn_id,
                    extensions,
                });
            }
        }
        Next::Continue
    }

    fn forward(
        &mut self,
        client: &ClientHandle,
        reference_id: u64,
        dn: String,
        op: impl FnOnce(ClientHandle) -> DnOp,
    ) {
        let Some(switch) = self.shared.switch_of(&dn) else {
            client.answer_error(
                &ProtocolError::new(reference_id, ErrorCode::NotConfigured,
                    format!("{dn} is in no switch's DN plan; check the number or the router's configuration.")).dn(&dn),
                None,
            );
            return;
        };
        let Some(router) = switch.router.get() else {
            client.answer_error(
                &ProtocolError::new(
                    reference_id,
                    ErrorCode::Internal,
                    "The router is still starting; retry in a moment.",
                )
                .dn(&dn),
                None,
            );
            return;
        };
        let dn: Arc<str> = Arc::from(dn.as_str());
        let op = op(client.clone());
        if matches!(op, DnOp::Register { .. }) {
            self.registered.insert(dn.clone(), switch.index);
        }
        self.in_flight += 1;
        router.do_send(ToDn { dn, op });
    }

    fn server_connected(&self, client: &ClientHandle, reference_id: u64) {
        let switches: Vec<serde_json::Value> = self.shared.switches.iter().map(|s| {
            serde_json::json!({
                "name": &*s.name,
                "linkState": if s.link_up.load(Ordering::Relaxed) { "connected" } else { "disconnected" },
                "simulated": s.simulated,
            })
        }).collect();
        client.answer(
            Outgoing::new("EventServerConnected")
                .reference(reference_id)
                .with("protocolVersion", 1)
                .with("serverVersion", env!("CARGO_PKG_VERSION"))
                .with("privateServices", self.shared.private_services())
                .with(
                    "accodeName",
                    self.shared.config.options.accode_name.as_str(),
                )
                .with("switches", switches)
                .finish(),
        );
        // Only now does the client get link events: its first message is the reply to
        // RequestOpen. The states below are read after joining, so a change in between may
        // arrive twice but is never missed.
        self.shared.hub.add(client.clone());
        for s in &self.shared.switches {
            let up = s.link_up.load(Ordering::Relaxed);
            let mut ev = Outgoing::new(if up {
                "EventLinkConnected"
            } else {
                "EventLinkDisconnected"
            })
            .with("switch", &*s.name);
            if up {
                ev = ev.with("link", s.active_link.load(Ordering::Relaxed));
            }
            client.push(ev.finish(), false);
        }
    }

    fn release_all(&mut self) {
        let Some(client) = &self.client else { return };
        for (dn, switch) in self.registered.drain() {
            if let Some(router) = self
                .shared
                .switches
                .get(switch)
                .and_then(|s| s.router.get())
            {
                router.do_send(ToDn {
                    dn,
                    op: DnOp::Unregister {
                        client: client.clone(),
                        reference_id: None,
                    },
                });
            }
        }
    }
}

/// Compare secrets without leaking their common prefix length through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
