//! Client sessions: one WebSocket connection each (SPEC section 3).
//!
//! A session is a task, not an actor: it reads the client's frames, answers what it can
//! itself (opening, server queries, malformed input), and hands everything about a DN to the
//! router of the DN's switch. Everything the router sends to a client (replies and events)
//! goes through the client's bounded outbound queue ([`ClientInner::push`]); whoever pushes
//! never waits: when the queue is full the client is too slow, it is closed with 4008 and its
//! registrations are released, and nobody else is slowed down.
//!
//! What a client costs the router is bounded: every WebSocket connection takes a place under
//! `max-clients` from its upgrade (a connection that sends no valid `RequestOpen` within
//! `open-timeout` is closed); a client whose socket stops taking data is a slow consumer too,
//! even with room in its queue, once one write has waited `client-ping-interval` ×
//! `client-ping-tolerance`; and every connection the router closes is really gone soon after
//! (the close frame gets [`CLOSE_ATTEMPT`], then the TCP connection is reset), because
//! actix-web, once a client's socket is full, never polls the response body again and would
//! hold such a connection for ever. Failed authentications are answered late and lock the
//! source address out after repeated failures.

use crate::audit::LogStr;
use crate::config::Access;
use crate::protocol::{
    self, ErrorCode, Outgoing, ProtocolError, RegisterMode, Request, SharedText,
};
use crate::router::{DnOp, Shared, ToDn};
use actix_ws::{CloseCode, CloseReason, Message as WsMessage};
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::net::IpAddr;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

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
    /// The application, as audited: the configured application whose token the client gave,
    /// or (with no `[[application]]` configured) the validated name from `RequestOpen`.
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

/// Every open session, for the messages that go to all clients (link events), and what the
/// sessions share to protect the router from its clients: the count of WebSocket connections
/// (opened or not) against `max-clients`, and the authentication failures per source address.
#[derive(Default)]
pub struct Hub {
    clients: Mutex<HashMap<u64, ClientHandle>>,
    connections: AtomicUsize,
    auth_failures: AuthFailures,
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

    /// Take a place for a new connection if fewer than `max` are taken.
    fn admit(&self, max: usize) -> Option<Slot<'_>> {
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(&self.connections))
    }
}

/// A connection's place under `max-clients`, given back when dropped.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Failed authentications that lock a source address out: more than this many...
pub const AUTH_FAILURE_LIMIT: u32 = 10;
/// ...within this window...
pub const AUTH_FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// ...and the address's upgrades are refused with 1013 for this long.
pub const AUTH_LOCKOUT: Duration = Duration::from_secs(60);
/// How long the 1008 close after a wrong or missing token waits, so that guessing tokens
/// costs a second per attempt and connection.
pub const AUTH_FAILURE_DELAY: Duration = Duration::from_secs(1);
/// The most source addresses remembered (about 100 bytes each): beyond, the expired ones and
/// then the least recently failed are forgotten, so the table's memory is bounded whatever
/// the number of addresses an attacker uses.
const AUTH_TABLE_CAPACITY: usize = 4096;

/// Authentication failures per source address (IPv4 address, or IPv6 /64 network: one host
/// commonly has a whole /64). Never a global lockout: only the failing address is refused.
#[derive(Default)]
struct AuthFailures {
    table: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    /// Start of the current counting window.
    since: Instant,
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// The key of an address in the failure table.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

impl AuthFailures {
    /// Whether `ip` is locked out now.
    fn locked(&self, ip: IpAddr, now: Instant) -> bool {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&address_key(ip))
            .and_then(|f| f.locked_until)
            .is_some_and(|until| now < until)
    }

    /// Count a failure of `ip`; `true` if this one locks the address out.
    fn record(&self, ip: IpAddr, now: Instant) -> bool {
        let key = address_key(ip);
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if !table.contains_key(&key) && table.len() >= AUTH_TABLE_CAPACITY {
            table.retain(|_, f| {
                f.locked_until.is_some_and(|u| now < u)
                    || now.saturating_duration_since(f.since) < AUTH_FAILURE_WINDOW
            });
            if table.len() >= AUTH_TABLE_CAPACITY {
                if let Some(oldest) = table.iter().min_by_key(|(_, f)| f.last).map(|(k, _)| *k) {
                    table.remove(&oldest);
                }
            }
        }
        let f = table.entry(key).or_insert(Failures {
            since: now,
            count: 0,
            last: now,
            locked_until: None,
        });
        if now.saturating_duration_since(f.since) >= AUTH_FAILURE_WINDOW {
            f.since = now;
            f.count = 0;
        }
        f.count += 1;
        f.last = now;
        if f.count > AUTH_FAILURE_LIMIT && f.locked_until.is_none_or(|u| u <= now) {
            f.locked_until = Some(now + AUTH_LOCKOUT);
            return true;
        }
        false
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// A client connection's TCP socket as the HTTP server holds it, registered when the
/// connection is accepted (`HttpServer::on_connect`) and kept in the connection's data for as
/// long as the server's dispatcher owns the socket.
///
/// Why: a client that stops reading blocks the server's writes, and then actix-web never
/// polls the WebSocket's response body again, so neither a close frame nor dropping the
/// session ends the connection (its dispatcher waits for the socket to become writable for
/// ever). A session resets such a connection from the outside through its [`TcpHandle`].
#[derive(Debug)]
pub struct ConnSocket {
    #[cfg(unix)]
    fd: std::os::fd::RawFd,
}

impl ConnSocket {
    /// The socket of an accepted connection (`None` for a stream the router cannot reach).
    pub fn of(io: &dyn std::any::Any) -> Option<ConnSocket> {
        #[cfg(unix)]
        {
            use actix_web::rt::net::TcpStream;
            use std::os::fd::AsRawFd;
            if let Some(tcp) = io.downcast_ref::<TcpStream>() {
                return Some(ConnSocket {
                    fd: tcp.as_raw_fd(),
                });
            }
            if let Some(tls) =
                io.downcast_ref::<actix_tls::accept::rustls_0_23::TlsStream<TcpStream>>()
            {
                return Some(ConnSocket {
                    fd: tls.get_ref().0.as_raw_fd(),
                });
            }
        }
        let _ = io;
        None
    }
}

/// A session's way to its connection's socket: alive exactly as long as the server's
/// dispatcher for the connection (which owns the socket) is.
#[derive(Debug, Clone, Default)]
pub struct TcpHandle(Option<Weak<ConnSocket>>);

impl TcpHandle {
    /// The handle of the connection `socket` (from the request's connection data).
    pub fn new(socket: Option<&Rc<ConnSocket>>) -> TcpHandle {
        TcpHandle(socket.map(Rc::downgrade))
    }

    /// Whether the server still holds the connection.
    fn alive(&self) -> bool {
        self.0.as_ref().is_some_and(|w| w.strong_count() > 0)
    }

    /// Drop the connection now: reset it (SO_LINGER 0, so the kernel discards what the client
    /// never read and sends RST instead of waiting for it) and shut both directions down, which
    /// wakes the server's dispatcher, whose next write fails, so it releases the socket.
    /// `false` if the connection was already gone.
    fn abort(&self) -> bool {
        let Some(socket) = self.0.as_ref().and_then(Weak::upgrade) else {
            return false;
        };
        #[cfg(unix)]
        {
            // SAFETY: the `ConnSocket` is alive, so the connection's dispatcher has not been
            // dropped, and the dispatcher owns the socket (it only closes it by being
            // dropped). The dispatcher runs on this thread (actix-web runs a connection and
            // the tasks its handlers spawn on the same worker thread), and nothing below
            // yields, so the descriptor cannot be closed, let alone reused, while borrowed.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(socket.fd) };
            let sock = socket2::SockRef::from(&fd);
            let _ = sock.set_linger(Some(Duration::ZERO));
            let _ = sock.shutdown(std::net::Shutdown::Both);
        }
        #[cfg(not(unix))]
        let _ = socket;
        true
    }
}

/// What a session knows of its connection besides the WebSocket.
#[derive(Debug, Clone, Default)]
pub struct Conn {
    /// The client's address (for the authentication back-off).
    pub peer: Option<IpAddr>,
    /// Its TCP socket.
    pub tcp: TcpHandle,
}

/// The most queued messages a session writes before it looks at the client's input again.
const WRITE_BURST: usize = 256;

/// How long a close frame the router sends is given to reach the client: a client that does
/// not take it within this time (it is not reading) has its TCP connection dropped.
pub const CLOSE_ATTEMPT: Duration = Duration::from_secs(1);

/// How long the HTTP server waits, after the last frame of a connection, for the client to
/// close its side before closing the connection itself (actix-web's client disconnect
/// timeout, set by the server from this value).
pub const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// After a close frame was taken, how long the connection may still exist before the session
/// drops it: the server's own disconnect timeout and a margin. Why: a client can take the
/// close frame into the server's buffer and stop reading again, which would leave the
/// connection with the server for ever.
const GONE_WITHIN: Duration = CLIENT_DISCONNECT_TIMEOUT.saturating_add(Duration::from_secs(1));

static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);

/// Why a session ended (the metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCause {
    /// The client closed, or the connection dropped.
    Closed,
    /// The client does not read: its outbound queue overflowed, or a write to its socket
    /// could not finish within `client-ping-interval` × `client-ping-tolerance` (4008).
    SlowConsumer,
    /// Pings went unanswered.
    PingTimeout,
    /// The client broke the protocol (1008, 1009, 1002).
    ProtocolError,
    /// Authentication failed (1008), or the client's address is locked out after repeated
    /// failures (1013).
    Auth,
    /// Over the connection limit (1013).
    Limit,
    /// The router is stopping (1001).
    Shutdown,
    /// No valid `RequestOpen` within `open-timeout` (1008).
    OpenTimeout,
}

impl CloseCause {
    /// Every cause, in the order of [`crate::metrics::DISCONNECT_REASONS`].
    pub const ALL: [CloseCause; 8] = [
        CloseCause::Closed,
        CloseCause::SlowConsumer,
        CloseCause::PingTimeout,
        CloseCause::ProtocolError,
        CloseCause::Auth,
        CloseCause::Limit,
        CloseCause::Shutdown,
        CloseCause::OpenTimeout,
    ];

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
            CloseCause::OpenTimeout => "open_timeout",
        }
    }
}

fn close_reason(code: u16, description: &str) -> Option<CloseReason> {
    Some(CloseReason {
        code: CloseCode::from(code),
        description: Some(description.to_owned()),
    })
}

/// The close frame that answers a client's: the same code (RFC 6455 §5.5.1), unless the
/// client sent one that may not be sent on the wire, which is a protocol error (1002).
fn echo_close(theirs: Option<CloseReason>) -> Option<CloseReason> {
    let theirs = theirs?;
    let code = u16::from(theirs.code);
    let sendable = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
    if sendable {
        Some(CloseReason {
            code: theirs.code,
            description: None,
        })
    } else {
        close_reason(1002, "invalid close code")
    }
}

/// `d` from now, saturating far in the future for absurd durations (never a panic).
fn after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

/// How a write to the WebSocket ended.
enum Write {
    Done,
    /// The connection is gone.
    Gone,
    /// It could not finish in time: the client is not reading.
    Blocked,
}

/// Await one write to the WebSocket for at most `limit`.
async fn write_within(
    write: impl Future<Output = Result<(), actix_ws::Closed>>,
    limit: Duration,
) -> Write {
    let mut write = std::pin::pin!(write);
    // Almost every write completes at once (room in actix-ws's queue): only one that has to
    // wait arms a timer, so the fan-out path pays nothing for the deadline.
    if let Poll::Ready(r) = poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await {
        return if r.is_ok() { Write::Done } else { Write::Gone };
    }
    match tokio::time::timeout(limit, write).await {
        Ok(Ok(())) => Write::Done,
        Ok(Err(_)) => Write::Gone,
        Err(_) => Write::Blocked,
    }
}

/// Write what is queued for the client, giving up at `until`; `false` if it could not all be
/// written.
async fn flush_queue(
    session: &mut actix_ws::Session,
    rx: &mut mpsc::Receiver<Outbound>,
    until: Instant,
) -> bool {
    while let Ok(out) = rx.try_recv() {
        match tokio::time::timeout_at(until, session.text(out.text)).await {
            Ok(Ok(())) => {}
            _ => return false,
        }
    }
    true
}

/// End a connection the router has finished with: send `reason` (a close frame, `None` for
/// none) and make sure the TCP connection goes away. The close frame is given
/// [`CLOSE_ATTEMPT`] to be taken by the client (the server's body stream ends once it has
/// it); a client that does not take it in time is not reading, and its connection is dropped
/// ([`TcpHandle::abort`]). A connection still held by the server [`GONE_WITHIN`] after that is
/// dropped too.
async fn end_connection(
    session: actix_ws::Session,
    stream: &mut actix_ws::MessageStream,
    reason: Option<Option<CloseReason>>,
    tcp: &TcpHandle,
    client: u64,
) {
    let deadline = after(CLOSE_ATTEMPT);
    let taken = match reason {
        None => {
            drop(session);
            true
        }
        Some(reason) => match tokio::time::timeout_at(deadline, session.close(reason)).await {
            // Not even queued: the server is not writing to the client at all.
            Err(_) => false,
            // The server's side of the WebSocket is already gone.
            Ok(Err(_)) => true,
            // The stream ends when the server has taken the close frame (its response body
            // ended) or when the client closed; read and discard until then.
            Ok(Ok(())) => tokio::time::timeout_at(deadline, async {
                while let Some(msg) = stream.recv().await {
                    if matches!(msg, Ok(WsMessage::Close(_)) | Err(_)) {
                        break;
                    }
                }
            })
            .await
            .is_ok(),
        },
    };
    if !taken {
        if tcp.abort() {
            debug!(
                client,
                "connection dropped: the client did not take the close frame within {CLOSE_ATTEMPT:?}"
            );
        }
        return;
    }
    let gone_by = after(GONE_WITHIN);
    while tcp.alive() && Instant::now() < gone_by {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if tcp.abort() {
        debug!(
            client,
            "connection dropped: still open {GONE_WITHIN:?} after its close frame"
        );
    }
}

struct State {
    shared: Arc<Shared>,
    client: Option<ClientHandle>,
    /// DNs this client may have registered, with their switch index, for clean-up.
    registered: HashMap<Arc<str>, usize>,
    in_flight: usize,
    peer: Option<IpAddr>,
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
    conn: Conn,
) {
    let server = &shared.config.server;
    let mut stream = stream.max_frame_size(server.max_frame_size);
    let id = NEXT_CLIENT.fetch_add(1, Ordering::Relaxed);
    if let Some(ip) = conn.peer {
        if shared.hub.auth_failures.locked(ip, Instant::now()) {
            crate::metrics::client_disconnected(CloseCause::Auth.label());
            debug!(client = id, %ip, "upgrade refused: address locked out after failed authentications");
            let reason = close_reason(1013, "try again later: too many failed authentications");
            end_connection(session, &mut stream, Some(reason), &conn.tcp, id).await;
            return;
        }
    }
    // Every upgraded connection takes a place, opened or not: one that never sends
    // RequestOpen holds a descriptor and memory like any other.
    let Some(slot) = shared.hub.admit(server.max_clients) else {
        crate::metrics::client_disconnected(CloseCause::Limit.label());
        let reason = close_reason(1013, "try again later: too many clients");
        end_connection(session, &mut stream, Some(reason), &conn.tcp, id).await;
        return;
    };
    let (tx, mut rx) = mpsc::channel::<Outbound>(server.client_queue);
    let slow = CancellationToken::new();
    let mut state = State {
        shared: shared.clone(),
        client: None,
        registered: HashMap::new(),
        in_flight: 0,
        peer: conn.peer,
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
    let mut ping = tokio::time::interval_at(after(ping_every), ping_every);
    // A ping that could not be sent (the session was busy writing) is not a missed ping: after
    // a stall the next one goes out once, not in a burst that would count as missed pongs the
    // client never had a chance to send.
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let tolerance = server.client_ping_tolerance.max(1);
    // A write that cannot finish while a client would have missed every ping it tolerates
    // means the client is not reading: it is a slow consumer even if its queue is not full.
    let write_limit = ping_every.saturating_mul(tolerance);
    let mut missed = 0u32;
    let cause: CloseCause;
    // The close frame to send at the end (`None`: none, the connection is gone).
    let mut close: Option<Option<CloseReason>> = None;
    // Made once: a fresh `cancelled()` future per loop turn registers and unregisters a waiter
    // on every message, which showed in fan-out profiles.
    //
    // Branch order (biased): stopping first, then pings and the client's input, then writing
    // the queue. Writing comes last so that a queue that never empties (a flood of events)
    // cannot starve the client's requests and pongs: each turn writes up to WRITE_BURST
    // messages, then the other branches get their turn.
    let shutdown_wait = shutdown.cancelled();
    let slow_wait = slow.cancelled();
    let open_wait = tokio::time::sleep_until(after(server.open_timeout.0));
    tokio::pin!(shutdown_wait, slow_wait, open_wait);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown_wait => {
                // Replies and events already queued go out before the close frame (as far as
                // the client takes them).
                flush_queue(&mut session, &mut rx, after(CLOSE_ATTEMPT)).await;
                cause = CloseCause::Shutdown;
                close = Some(close_reason(1001, "going away"));
                break;
            }
            _ = &mut slow_wait => {
                cause = CloseCause::SlowConsumer;
                close = Some(close_reason(4008, "slow consumer"));
                break;
            }
            _ = &mut open_wait, if state.client.is_none() => {
                cause = CloseCause::OpenTimeout;
                close = Some(close_reason(1008, "no RequestOpen within the open timeout"));
                break;
            }
            _ = ping.tick() => {
                if missed >= tolerance {
                    cause = CloseCause::PingTimeout;
                    close = Some(close_reason(1000, "ping timeout"));
                    break;
                }
                missed += 1;
                match write_within(session.ping(b"csta-router"), write_limit).await {
                    Write::Done => {}
                    Write::Gone => { cause = CloseCause::Closed; break; }
                    Write::Blocked => {
                        cause = CloseCause::SlowConsumer;
                        close = Some(close_reason(4008, "slow consumer"));
                        break;
                    }
                }
            }
            msg = stream.recv() => {
                let next = match msg {
                    None => { cause = CloseCause::Closed; break; }
                    Some(Err(actix_ws::ProtocolError::Overflow)) => {
                        Next::Close(1009, "message too big", CloseCause::ProtocolError)
                    }
                    // The connection failed or ended without a close frame (an abrupt drop):
                    // nothing the client did wrong, and nobody left to send a frame to.
                    Some(Err(actix_ws::ProtocolError::Io(e)))
                        if e.kind() != std::io::ErrorKind::InvalidData =>
                    {
                        cause = CloseCause::Closed;
                        break;
                    }
                    Some(Err(_)) => Next::Close(1002, "WebSocket protocol error", CloseCause::ProtocolError),
                    Some(Ok(WsMessage::Ping(p))) => {
                        missed = 0;
                        match write_within(session.pong(&p), write_limit).await {
                            Write::Done => {}
                            Write::Gone => { cause = CloseCause::Closed; break; }
                            Write::Blocked => {
                                cause = CloseCause::SlowConsumer;
                                close = Some(close_reason(4008, "slow consumer"));
                                break;
                            }
                        }
                        Next::Continue
                    }
                    Some(Ok(WsMessage::Pong(_))) => { missed = 0; Next::Continue }
                    Some(Ok(WsMessage::Close(theirs))) => {
                        // Answered with a close frame, so the client sees its own code.
                        cause = CloseCause::Closed;
                        close = Some(echo_close(theirs));
                        break;
                    }
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
                    flush_queue(&mut session, &mut rx, after(CLOSE_ATTEMPT)).await;
                    if c == CloseCause::Auth {
                        // Guessing tokens costs a second per attempt (and the connection's
                        // place meanwhile).
                        tokio::select! {
                            _ = tokio::time::sleep(AUTH_FAILURE_DELAY) => {}
                            _ = &mut shutdown_wait => {}
                        }
                    }
                    cause = c;
                    close = Some(close_reason(code, why));
                    break;
                }
            }
            out = rx.recv() => {
                let Some(out) = out else { cause = CloseCause::Closed; break; };
                // Write what is queued in one go (up to a bound, so reading the client and
                // pinging are not starved): one wake-up of this task and, usually, one send
                // for a burst of events instead of a turn of the loop per message.
                let mut next = Some(out);
                let mut written = 0;
                let mut ended = None;
                while let Some(out) = next.take() {
                    if out.reply {
                        state.in_flight = state.in_flight.saturating_sub(1);
                    }
                    // Ready at once unless actix-ws's own queue is full; a slow client or a
                    // shutdown must not wait behind it.
                    let write = tokio::select! {
                        biased;
                        w = write_within(session.text(out.text), write_limit) => w,
                        // The outer loop closes the session next.
                        _ = &mut slow_wait => break,
                        _ = &mut shutdown_wait => break,
                    };
                    match write {
                        Write::Done => {}
                        Write::Gone => {
                            ended = Some(CloseCause::Closed);
                            break;
                        }
                        Write::Blocked => {
                            ended = Some(CloseCause::SlowConsumer);
                            break;
                        }
                    }
                    written += 1;
                    if written < WRITE_BURST {
                        next = rx.try_recv().ok();
                    }
                }
                match ended {
                    None => {}
                    Some(CloseCause::SlowConsumer) => {
                        cause = CloseCause::SlowConsumer;
                        close = Some(close_reason(4008, "slow consumer"));
                        break;
                    }
                    Some(c) => {
                        cause = c;
                        break;
                    }
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
    match cause {
        CloseCause::SlowConsumer => {
            let application = state.client.as_ref().map(|c| c.application.clone());
            info!(
                client = id,
                application = %LogStr(application.as_deref().unwrap_or("")),
                "client closed as a slow consumer: it does not read what the router sends"
            );
        }
        _ => debug!(client = id, peer = ?conn.peer, cause = cause.label(), "client session ends"),
    }
    crate::metrics::client_disconnected(cause.label());
    // The client's place is free as soon as the router is done with it; the connection's
    // end below is bounded.
    drop(slot);
    end_connection(session, &mut stream, close, &conn.tcp, id).await;
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
                    // The name goes into logs and audit lines: validated before anything
                    // logs it.
                    if let Err(why) = protocol::check_application(&application) {
                        handle.answer_error(
                            &ProtocolError::new(reference_id, ErrorCode::InvalidAttr, why),
                            None,
                        );
                        return Next::Close(
                            1008,
                            "invalid application name",
                            CloseCause::ProtocolError,
                        );
                    }
                    let apps = &self.shared.config.application;
                    // Audited under the configured application its token matched; with no
                    // applications configured, under the name it gave.
                    let mut name = application.as_str();
                    if !apps.is_empty() {
                        let found = token.as_deref().and_then(|t| {
                            apps.iter()
                                .find(|a| constant_time_eq(a.token.as_bytes(), t.as_bytes()))
                        });
                        match found {
                            Some(app) => {
                                handle.access = app.access;
                                name = app.name.as_str();
                            }
                            None => {
                                let locked = self.peer.is_some_and(|ip| {
                                    self.shared.hub.auth_failures.record(ip, Instant::now())
                                });
                                info!(
                                    application = %LogStr(&application),
                                    peer = ?self.peer,
                                    "client refused: missing or wrong token"
                                );
                                if let (true, Some(ip)) = (locked, self.peer) {
                                    warn!(
                                        %ip,
                                        "more than {AUTH_FAILURE_LIMIT} failed authentications from {ip} within {AUTH_FAILURE_WINDOW:?}: its connections are refused for {AUTH_LOCKOUT:?}"
                                    );
                                }
                                return Next::Close(
                                    1008,
                                    "authentication failed",
                                    CloseCause::Auth,
                                );
                            }
                        }
                    }
                    handle.application = Arc::from(name);
                    let handle = ClientHandle(Arc::new(handle));
                    info!(client = handle.id, application = %LogStr(&handle.application), "client opened");
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
            if let (Some(dn), Request::PrivateService { msg_id, .. }) = (dn, &request) {
                crate::audit::private_service(
                    &client.application,
                    dn,
                    &crate::audit::service_name(*msg_id),
                    Some(ErrorCode::TooManyReq),
                    Duration::ZERO,
                );
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
                let audit_dn = dn.clone();
                let refused = self.forward(&client, reference_id, dn, |c| DnOp::PrivateService {
                    client: c,
                    reference_id,
                    msg_id,
                    conn_id,
                    extensions,
                });
                if let Some(code) = refused {
                    crate::audit::private_service(
                        &client.application,
                        &audit_dn,
                        &crate::audit::service_name(msg_id),
                        Some(code),
                        Duration::ZERO,
                    );
                }
            }
        }
        Next::Continue
    }

    /// Hand a request to the router of the DN's switch; the error code sent back when the
    /// router refused it here.
    fn forward(
        &mut self,
        client: &ClientHandle,
        reference_id: u64,
        dn: String,
        op: impl FnOnce(ClientHandle) -> DnOp,
    ) -> Option<ErrorCode> {
        let Some(switch) = self.shared.switch_of(&dn) else {
            client.answer_error(
                &ProtocolError::new(reference_id, ErrorCode::NotConfigured,
                    format!("{dn} is in no switch's DN plan; check the number or the router's configuration.")).dn(&dn),
                None,
            );
            return Some(ErrorCode::NotConfigured);
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
            return Some(ErrorCode::Internal);
        };
        let dn: Arc<str> = Arc::from(dn.as_str());
        let op = op(client.clone());
        if matches!(op, DnOp::Register { .. }) {
            self.registered.insert(dn.clone(), switch.index);
        }
        self.in_flight += 1;
        router.do_send(ToDn { dn, op });
        None
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn more_than_ten_failures_in_a_minute_lock_one_address_for_a_minute() {
        let table = AuthFailures::default();
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for i in 0..AUTH_FAILURE_LIMIT {
            assert!(!table.record(a, t0 + Duration::from_secs(u64::from(i))));
        }
        assert!(!table.locked(a, t0 + Duration::from_secs(10)));
        // The eleventh within the minute locks the address, and only it.
        assert!(table.record(a, t0 + Duration::from_secs(30)));
        assert!(table.locked(a, t0 + Duration::from_secs(31)));
        assert!(!table.locked(ip("192.0.2.2"), t0 + Duration::from_secs(31)));
        // For a minute.
        assert!(table.locked(a, t0 + Duration::from_secs(89)));
        assert!(!table.locked(a, t0 + Duration::from_secs(91)));
        // Failures spread over more than a minute never lock.
        let b = ip("192.0.2.3");
        for i in 0..30u64 {
            assert!(!table.record(b, t0 + Duration::from_secs(i * 7)));
        }
        assert!(!table.locked(b, t0 + Duration::from_secs(210)));
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_bit_network() {
        let table = AuthFailures::default();
        let t0 = Instant::now();
        for i in 0..=AUTH_FAILURE_LIMIT {
            table.record(ip(&format!("2001:db8::{:x}", i + 1)), t0);
        }
        assert!(table.locked(ip("2001:db8::ffff"), t0));
        assert!(!table.locked(ip("2001:db8:0:1::1"), t0));
        // An IPv4 client seen through an IPv6 listener is the IPv4 address.
        assert_eq!(address_key(ip("::ffff:192.0.2.9")), ip("192.0.2.9"));
    }

    #[test]
    fn the_failure_table_is_bounded() {
        let table = AuthFailures::default();
        let t0 = Instant::now();
        for i in 0..(AUTH_TABLE_CAPACITY as u32 + 1000) {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            table.record(a, t0 + Duration::from_millis(u64::from(i)));
        }
        assert_eq!(table.len(), AUTH_TABLE_CAPACITY);
        // Expired entries make room first.
        let later = t0 + AUTH_FAILURE_WINDOW + Duration::from_secs(10);
        table.record(ip("192.0.2.1"), later);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn a_close_frame_is_answered_with_its_own_code() {
        let reason = |code: u16| {
            Some(CloseReason {
                code: CloseCode::from(code),
                description: Some("bye".into()),
            })
        };
        let code = |r: Option<CloseReason>| r.map(|r| u16::from(r.code));
        assert_eq!(code(echo_close(reason(1000))), Some(1000));
        assert_eq!(code(echo_close(reason(4321))), Some(4321));
        assert_eq!(code(echo_close(reason(1001))), Some(1001));
        // Codes that must never be sent are a protocol error.
        for bad in [999, 1004, 1005, 1006, 1015, 2000, 5000] {
            assert_eq!(code(echo_close(reason(bad))), Some(1002), "{bad}");
        }
        assert!(echo_close(None).is_none());
    }
}
