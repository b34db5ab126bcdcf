//! Client sessions: one WebSocket connection each (README, "Client protocol v1").
//!
//! A session is a task, not an actor: it reads the client's frames, answers what it can
//! itself (opening, server queries, malformed input), and hands everything about a DN to the
//! router shard of the DN's switch ([`requests`]). Everything the router sends to the client
//! goes through the client's outbox ([`crate::client`]); the session writes it to the
//! WebSocket, pings the client, and ends the connection when the client is gone, too slow, or
//! misbehaving, or when the router stops.
//!
//! What a client costs the router is bounded ([`gate`]): every WebSocket connection takes a
//! place under `max-clients` from its upgrade (a connection that sends no valid `RequestOpen`
//! within `open-timeout` is closed); failed authentications are answered late and lock the
//! source address out after repeated failures; a client whose socket stops taking data is a
//! slow consumer too, even with room in its queue, once one write has waited
//! `client-ping-interval` × `client-ping-tolerance`; and every connection the router closes is
//! really gone soon after ([`socket`]).

mod cluster;
pub mod gate;
pub mod registry;
pub mod requests;
pub mod socket;

pub use gate::Gate;
pub use registry::Sessions;
pub use socket::{Conn, ConnSocket, TcpHandle, CLIENT_DISCONNECT_TIMEOUT, CLOSE_ATTEMPT};

use crate::audit::LogStr;
use crate::client::{ClientInner, Connection, Entry, Kind};
use crate::protocol::{CloseCause, ErrorCode, ProtocolError};
use crate::router::Shared;
use actix_ws::{CloseReason, Message as WsMessage};
use gate::{Slot, AUTH_FAILURE_DELAY};
use registry::Record;
use requests::{Next, State};
use socket::{after, close_reason, echo_close, end_connection, write_within, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tracing::{debug, info};

/// The most queued messages a session writes before it looks at the client's input again.
const WRITE_BURST: usize = 256;

/// At shutdown, the requests already received (at most this many) are taken and answered
/// before the close frame: the client sent them before it could know.
const SHUTDOWN_READS: usize = 64;

/// How a session ended: why (the metrics label) and the close frame to send (`None`: none,
/// the connection is gone).
struct End {
    cause: CloseCause,
    close: Option<Option<CloseReason>>,
}

impl End {
    /// Ended without a frame to send.
    fn gone(cause: CloseCause) -> End {
        End { cause, close: None }
    }

    /// Ended with a close frame.
    fn close(cause: CloseCause, code: u16, why: &str) -> End {
        End {
            cause,
            close: Some(close_reason(code, why)),
        }
    }

    fn slow_consumer() -> End {
        End::close(CloseCause::SlowConsumer, 4008, "slow consumer")
    }
}

/// The sessions' shared parts: admission and the sessions of this node.
#[derive(Default, Clone)]
pub struct Clients {
    /// Admission (`max-clients`, authentication back-off).
    pub gate: Arc<Gate>,
    /// The sessions by `sessionId`.
    pub sessions: Arc<Sessions>,
    /// The cluster node, once joined (none without a cluster).
    pub node: Arc<std::sync::OnceLock<Arc<crate::cluster::node::Node>>>,
}

/// Run one client connection until it ends. `shutdown` closes it with 1001.
pub async fn run(
    shared: Arc<Shared>,
    clients: Clients,
    session: actix_ws::Session,
    stream: actix_ws::MessageStream,
    shutdown: CancellationToken,
    conn: Conn,
) {
    let Clients {
        gate,
        sessions,
        node,
    } = clients;
    let server = &shared.config().server;
    let mut stream = stream.max_frame_size(server.max_frame_size);
    let id = crate::client::next_client_id();
    if conn.peer.is_some_and(|ip| gate.locked(ip)) {
        crate::metrics::client_disconnected(CloseCause::Auth.label());
        debug!(client = id, peer = ?conn.peer, "upgrade refused: address locked out after failed authentications");
        let reason = close_reason(1013, "try again later: too many failed authentications");
        end_connection(session, &mut stream, Some(reason), &conn.tcp, id).await;
        return;
    }
    // Every upgraded connection takes a place, opened or not: one that never sends
    // RequestOpen holds a descriptor and memory like any other.
    let Some(slot) = gate.admit(server.max_clients) else {
        crate::metrics::client_disconnected(CloseCause::Limit.label());
        let reason = close_reason(1013, "try again later: too many clients");
        end_connection(session, &mut stream, Some(reason), &conn.tcp, id).await;
        return;
    };
    // The outbox exists from the start so replies before RequestOpen share the queue, but the
    // client joins the hub (link events) only once it is open. Events are kept for a resume
    // only when sessions linger.
    let retain = if server.session_linger.0.is_zero() {
        0
    } else {
        server.client_queue
    };
    let connection = Arc::new(Connection::default());
    let (pending, rx) = ClientInner::local(id, server.client_queue, retain, connection.clone());
    let state = State::new(
        shared.clone(),
        gate.clone(),
        (sessions, node),
        (pending, connection.clone()),
        conn.peer,
    );
    let mut s = Session::new(session, rx, state, &shared);
    let end = s.serve(&mut stream, &shutdown, &connection).await;
    let rx = std::mem::replace(&mut s.rx, mpsc::channel(1).1);
    let unwritten: Vec<Entry> = s.first.drain(..).collect();
    let application = s.state.client.as_ref().map(|c| c.application.clone());
    if let Some(record) = s.state.record.take() {
        // The client may never read again: the session lingers or ends now.
        leave(
            &s.state,
            record,
            (&connection, unwritten, rx),
            slot,
            end.cause,
        );
    } else {
        drop(slot);
    }
    if end.cause == CloseCause::SlowConsumer {
        info!(
            client = id,
            application = %LogStr(application.as_deref().unwrap_or("")),
            "client closed as a slow consumer: it does not read what the router sends"
        );
    } else {
        debug!(client = id, peer = ?conn.peer, cause = end.cause.label(), "client session ends");
    }
    crate::metrics::client_disconnected(end.cause.label());
    // The connection writes nothing more but its close frame.
    connection.gone.cancel();
    end_connection(s.session, &mut stream, end.close, &conn.tcp, id).await;
}

/// The connection of session `record` (of generation `generation`) ended for `cause`: unless
/// another connection took the session over, it lingers for `session-linger` (holding the
/// connection's place under `max-clients`), or ends now when it was closed, when sessions do
/// not linger, or when a router without a cluster stops (nothing would resume it; in a
/// cluster another node can).
fn leave(
    state: &State,
    (record, generation): (Arc<Record>, u64),
    (conn, unwritten, rx): (&Arc<Connection>, Vec<Entry>, mpsc::Receiver<Entry>),
    slot: Slot,
    cause: CloseCause,
) {
    let shared = &state.shared;
    let sessions = &state.sessions;
    record.client.detach(conn, unwritten, rx);
    if sessions.generation(&record) != Some(generation) {
        // Taken over: the session is another connection's now.
        return;
    }
    let linger = shared.config().server.session_linger.0;
    let stopping = cause == CloseCause::Shutdown && shared.config().cluster.is_none();
    if state.closed || linger.is_zero() || stopping {
        if sessions.end(&record) {
            end_session(shared, &record);
            cluster::forget(&state.node, &record);
        }
        return;
    }
    let Some(lingering) = sessions.linger(&record, generation, slot) else {
        return;
    };
    shared.hub.remove(record.client.id);
    let (shared, sessions, node) = (shared.clone(), sessions.clone(), state.node.clone());
    actix_rt::spawn(async move {
        tokio::time::sleep(linger).await;
        if sessions.expire(&record, lingering) {
            debug!(client = record.client.id, "session linger expired");
            end_session(&shared, &record);
            cluster::forget(&node, &record);
        }
    });
}

impl Clients {
    /// The router stops: without a cluster, the lingering sessions end too (their monitors are
    /// stopped: nothing will resume them). In a cluster they stay, for another node to resume.
    pub fn end_lingering(&self, shared: &Shared) {
        if shared.config().cluster.is_some() {
            return;
        }
        for record in self.sessions.end_lingering() {
            end_session(shared, &record);
        }
    }
}

/// A session is over: its registrations are released and nothing of it is kept.
fn end_session(shared: &Shared, record: &Record) {
    shared.hub.remove(record.client.id);
    requests::release_all(shared, record);
    record.client.end();
}

/// A session while it serves its client.
struct Session {
    session: actix_ws::Session,
    /// The session's queue.
    rx: mpsc::Receiver<Entry>,
    /// Written before anything from the queue: what a resume sends first.
    first: std::collections::VecDeque<Entry>,
    state: State,
    /// Messages taken from the outbox, written next (kept to reuse its allocation).
    batch: Vec<Entry>,
    ping_every: Duration,
    /// Pings unanswered in a row that close the client.
    tolerance: u32,
    /// A write that cannot finish within this is a slow consumer's.
    write_limit: Duration,
    missed: u32,
    open_timeout: Duration,
}

impl Session {
    fn new(
        session: actix_ws::Session,
        rx: mpsc::Receiver<Entry>,
        state: State,
        shared: &Shared,
    ) -> Session {
        let server = &shared.config().server;
        let ping_every = server.client_ping_interval.0.max(Duration::from_millis(10));
        let tolerance = server.client_ping_tolerance.max(1);
        Session {
            session,
            rx,
            first: std::collections::VecDeque::new(),
            state,
            batch: Vec::new(),
            ping_every,
            tolerance,
            // A write that cannot finish while a client would have missed every ping it
            // tolerates means the client is not reading.
            write_limit: ping_every.saturating_mul(tolerance),
            missed: 0,
            open_timeout: server.open_timeout.0,
        }
    }

    /// Serve the client until the session ends.
    async fn serve(
        &mut self,
        stream: &mut actix_ws::MessageStream,
        shutdown: &CancellationToken,
        conn: &Arc<Connection>,
    ) -> End {
        let mut ping = tokio::time::interval_at(after(self.ping_every), self.ping_every);
        // A ping that could not be sent (the session was busy writing) is not a missed ping:
        // after a stall the next one goes out once, not in a burst that would count as missed
        // pongs the client never had a chance to send.
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Made once: a fresh `cancelled()` future per loop turn registers and unregisters a
        // waiter on every message, which showed in fan-out profiles.
        //
        // Branch order (biased): stopping first, then pings and the client's input, then
        // writing the queue. Writing comes last so that a queue that never empties (a flood of
        // events) cannot starve the client's requests and pongs: each turn writes up to
        // WRITE_BURST messages, then the other branches get their turn.
        let shutdown_wait = shutdown.cancelled();
        let slow_wait = conn.slow.cancelled();
        let again_wait = conn.again.cancelled();
        let taken_wait = conn.taken.cancelled();
        let open_wait = tokio::time::sleep_until(after(self.open_timeout));
        tokio::pin!(shutdown_wait, slow_wait, again_wait, taken_wait, open_wait);
        loop {
            let end = tokio::select! {
                biased;
                _ = &mut shutdown_wait => {
                    // Requests already received are taken; replies and events already queued,
                    // and the replies to requests taken, go out before the close frame (as far
                    // as the client takes them).
                    for _ in 0..SHUTDOWN_READS {
                        let Some(msg) = futures_util::FutureExt::now_or_never(stream.recv()) else {
                            break;
                        };
                        if let Some(end) = self.on_frame(msg, shutdown).await {
                            return end;
                        }
                    }
                    let in_flight = self.state.in_flight;
                    self.flush(in_flight, after(CLOSE_ATTEMPT)).await;
                    Some(End::close(CloseCause::Shutdown, 1001, "going away"))
                }
                _ = &mut taken_wait => Some(End::close(CloseCause::TakenOver, 4009, "session taken over")),
                _ = &mut slow_wait => Some(End::slow_consumer()),
                _ = &mut again_wait => Some(End::close(
                    CloseCause::Closed,
                    1013,
                    "try again later: reconnect to get what could not be delivered",
                )),
                _ = &mut open_wait, if self.state.client.is_none() => Some(End::close(
                    CloseCause::OpenTimeout,
                    1008,
                    "no RequestOpen within the open timeout",
                )),
                _ = ping.tick() => self.ping().await,
                msg = stream.recv() => self.on_frame(msg, shutdown).await,
                _ = std::future::ready(()), if !self.first.is_empty() => {
                    self.write_first(&mut slow_wait, &mut shutdown_wait).await
                }
                out = self.rx.recv() => match out {
                    None => Some(End::gone(CloseCause::Closed)),
                    Some(out) => self.write_burst(out, &mut slow_wait, &mut shutdown_wait).await,
                },
            };
            if let Some(end) = end {
                return end;
            }
        }
    }

    /// The ping timer: close after `tolerance` unanswered pings, else ping.
    async fn ping(&mut self) -> Option<End> {
        if self.missed >= self.tolerance {
            return Some(End::close(CloseCause::PingTimeout, 1000, "ping timeout"));
        }
        self.missed += 1;
        let write = write_within(self.session.ping(b"csta-router"), self.write_limit).await;
        self.written(write)
    }

    /// How a write went: `None` when done, else how the session ends.
    fn written(&self, write: Write) -> Option<End> {
        match write {
            Write::Done => None,
            Write::Gone => Some(End::gone(CloseCause::Closed)),
            Write::Blocked => Some(End::slow_consumer()),
        }
    }

    /// A frame from the client (or the end of its stream).
    async fn on_frame(
        &mut self,
        msg: Option<Result<WsMessage, actix_ws::ProtocolError>>,
        shutdown: &CancellationToken,
    ) -> Option<End> {
        let next = match msg {
            None => return Some(End::gone(CloseCause::Closed)),
            Some(Err(actix_ws::ProtocolError::Overflow)) => {
                Next::Close(1009, "message too big", CloseCause::ProtocolError)
            }
            // The connection failed or ended without a close frame (an abrupt drop): nothing
            // the client did wrong, and nobody left to send a frame to.
            Some(Err(actix_ws::ProtocolError::Io(e)))
                if e.kind() != std::io::ErrorKind::InvalidData =>
            {
                return Some(End::gone(CloseCause::Closed));
            }
            Some(Err(_)) => {
                Next::Close(1002, "WebSocket protocol error", CloseCause::ProtocolError)
            }
            Some(Ok(WsMessage::Ping(p))) => {
                self.missed = 0;
                let write = write_within(self.session.pong(&p), self.write_limit).await;
                return self.written(write);
            }
            Some(Ok(WsMessage::Pong(_))) => {
                self.missed = 0;
                Next::Continue
            }
            Some(Ok(WsMessage::Close(theirs))) => {
                // Answered with a close frame, so the client sees its own code.
                return Some(End {
                    cause: CloseCause::Closed,
                    close: Some(echo_close(theirs)),
                });
            }
            Some(Ok(WsMessage::Text(text))) => {
                self.missed = 0;
                self.state.on_text(&text)
            }
            Some(Ok(WsMessage::Binary(_))) => {
                self.missed = 0;
                self.on_binary()
            }
            Some(Ok(_)) => Next::Continue,
        };
        match next {
            Next::Continue => None,
            Next::Resume => self.resume().await,
            Next::ResumeElsewhere => match self.resume_elsewhere().await {
                Next::Close(code, why, cause) => {
                    Some(self.close_after(code, why, cause, shutdown).await)
                }
                Next::Resume => self.resume().await,
                Next::Continue | Next::ResumeElsewhere => None,
            },
            Next::Close(code, why, cause) => {
                Some(self.close_after(code, why, cause, shutdown).await)
            }
        }
    }

    /// A binary frame: not part of the protocol.
    fn on_binary(&self) -> Next {
        match &self.state.client {
            None => Next::Close(
                1008,
                "the first request must be RequestOpen",
                CloseCause::ProtocolError,
            ),
            Some(c) => {
                c.answer_error(
                    &ProtocolError::new(
                        0,
                        ErrorCode::InvalidAttr,
                        "Binary frames are not part of the protocol; send JSON in text frames.",
                    ),
                    None,
                );
                Next::Continue
            }
        }
    }

    /// The client broke the rules: flush what is queued (the error that explains the close),
    /// and after a failed authentication wait before closing.
    async fn close_after(
        &mut self,
        code: u16,
        why: &str,
        cause: CloseCause,
        shutdown: &CancellationToken,
    ) -> End {
        self.flush(0, after(CLOSE_ATTEMPT)).await;
        if cause == CloseCause::Auth {
            // Guessing tokens costs a second per attempt (and the connection's place
            // meanwhile).
            tokio::select! {
                _ = tokio::time::sleep(AUTH_FAILURE_DELAY) => {}
                _ = shutdown.cancelled() => {}
            }
        }
        End::close(cause, code, why)
    }

    /// Take over the session being resumed, once the connection holding it (if any) has let
    /// go: bounded, after which the client is told to try again.
    async fn resume(&mut self) -> Option<End> {
        self.fill_gaps().await;
        let deadline = after(CLOSE_ATTEMPT.saturating_mul(2));
        let mut older = None;
        loop {
            match self.state.try_attach() {
                Ok((rx, first)) => {
                    // What this connection's own queue still holds goes first.
                    let mut own = std::mem::replace(&mut self.rx, rx);
                    while let Ok(out) = own.try_recv() {
                        self.first.push_back(out);
                    }
                    if let Some(old) = older {
                        // The older connection gets its 4009 before the replay starts.
                        let old: Arc<Connection> = old;
                        let _ = tokio::time::timeout(CLOSE_ATTEMPT, old.gone.cancelled()).await;
                    }
                    self.first.extend(first);
                    return None;
                }
                Err(old) => older = old.or(older),
            }
            if Instant::now() >= deadline {
                return Some(End::close(
                    CloseCause::Closed,
                    1013,
                    "try again later: the session is still held by another connection",
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Write what is queued in one go (up to a bound, so reading the client and pinging are not
    /// starved): one wake-up of this task and, usually, one send for a burst of events instead
    /// of a turn of the loop per message. The session keeps the events it takes.
    async fn write_burst(
        &mut self,
        first: Entry,
        slow_wait: &mut Pin<&mut WaitForCancellationFuture<'_>>,
        shutdown_wait: &mut Pin<&mut WaitForCancellationFuture<'_>>,
    ) -> Option<End> {
        let mut batch = std::mem::take(&mut self.batch);
        batch.push(first);
        while batch.len() < WRITE_BURST {
            match self.rx.try_recv() {
                Ok(out) => batch.push(out),
                Err(_) => break,
            }
        }
        if let Some(client) = self.state.outbox() {
            client.taken(&batch);
        }
        let end = self.write_all(&mut batch, slow_wait, shutdown_wait).await;
        batch.clear();
        self.batch = batch;
        end
    }

    /// Write what a resume sends first (a burst at a time, like the queue).
    async fn write_first(
        &mut self,
        slow_wait: &mut Pin<&mut WaitForCancellationFuture<'_>>,
        shutdown_wait: &mut Pin<&mut WaitForCancellationFuture<'_>>,
    ) -> Option<End> {
        let n = self.first.len().min(WRITE_BURST);
        let mut batch: Vec<Entry> = self.first.drain(..n).collect();
        if let Some(client) = self.state.outbox() {
            client.taken(&batch);
        }
        self.write_all(&mut batch, slow_wait, shutdown_wait).await
    }

    /// Write `batch` to the WebSocket, in order; how the session ends if it must.
    async fn write_all(
        &mut self,
        batch: &mut Vec<Entry>,
        slow_wait: &mut Pin<&mut WaitForCancellationFuture<'_>>,
        shutdown_wait: &mut Pin<&mut WaitForCancellationFuture<'_>>,
    ) -> Option<End> {
        for out in batch.drain(..) {
            if out.kind == Kind::Reply {
                self.state.in_flight = self.state.in_flight.saturating_sub(1);
            }
            // Ready at once unless actix-ws's own queue is full; a slow client or a shutdown
            // must not wait behind it (the serving loop ends the session next).
            let write = tokio::select! {
                biased;
                w = write_within(self.session.text(out.text), self.write_limit) => w,
                _ = slow_wait.as_mut() => return None,
                _ = shutdown_wait.as_mut() => return None,
            };
            if let Some(end) = self.written(write) {
                return Some(end);
            }
        }
        None
    }

    /// Write what is queued, and the replies still due to `in_flight` requests as they come,
    /// giving up at `until`; `false` if it could not all be written. Why wait for the replies:
    /// a stopping router answers every request it took before its close frame.
    async fn flush(&mut self, mut in_flight: usize, until: Instant) -> bool {
        let mut pending: Vec<Entry> = self.first.drain(..).collect();
        loop {
            if pending.is_empty() {
                match self.rx.try_recv() {
                    Ok(out) => pending.push(out),
                    Err(_) if in_flight == 0 => return true,
                    Err(_) => match tokio::time::timeout_at(until, self.rx.recv()).await {
                        Ok(Some(out)) => pending.push(out),
                        _ => return false,
                    },
                }
            }
            if let Some(client) = self.state.outbox() {
                client.taken(&pending);
            }
            for out in pending.drain(..) {
                if out.kind == Kind::Reply {
                    in_flight = in_flight.saturating_sub(1);
                }
                match tokio::time::timeout_at(until, self.session.text(out.text)).await {
                    Ok(Ok(())) => {}
                    _ => return false,
                }
            }
        }
    }
}
