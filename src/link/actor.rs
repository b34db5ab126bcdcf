//! The link actor: one TCP connection to one PBX link, kept alive for the life of the router.

use super::report::{DownReport, Report};
use super::switch::{LinkState, LinkStatusChanged};
use super::{Backoff, InvokeAllocator, LinkError, LinkSettings, QueueSlot, SwitchEvent};
use crate::csta::{encode_frame, CstaCodec, Dialect, Frame, FrameError, InvokeId, Message};
use actix::prelude::*;
use bytes::BytesMut;
use futures_util::StreamExt;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Semaphore, TryAcquireError};
use tokio_util::codec::FramedRead;
use tracing::{debug, info, warn};

/// Counters of one link, shared with whoever wants to read them (metrics, tests).
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Frames whose XML could not be read (counted and skipped).
    pub decode_errors: AtomicU64,
    /// Answers that arrived after their request had timed out (counted and dropped).
    pub late_answers: AtomicU64,
    /// Answers to no request we know of.
    pub unmatched_answers: AtomicU64,
    /// Successful handshakes after the first one.
    pub reconnects: AtomicU64,
    /// Times the link was reset because the byte stream lost its framing.
    pub framing_resets: AtomicU64,
    /// Keep-alives that went unanswered.
    pub keepalive_misses: AtomicU64,
    /// Requests in flight right now (timed-out ones excluded).
    pub in_flight: AtomicU64,
    /// Invoke IDs held by requests that timed out and were never answered (freed by a link
    /// reset).
    pub invoke_ids_expired: AtomicU64,
    /// Times the link stopped reading because `link-queue` frames it had read were still
    /// waiting for the router.
    pub read_pauses: AtomicU64,
}

/// A request to a link. Answered with the switch's positive answer, or a [`LinkError`]
/// (a `CSTAErrorCode` answer becomes [`LinkError::Rejected`]).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Message, LinkError>")]
pub enum LinkRequest {
    /// Send this service request and return its answer.
    Service(Message),
    /// Start a monitor on this DN; events on it are then reported for the DN.
    Monitor(Arc<str>),
    /// Stop this DN's monitor, if it has one on this link.
    Unmonitor(Arc<str>),
}

/// A service request whose answer (or failure, even an immediate one) is delivered as
/// [`SwitchEvent::Answer`] through
/// the same path as the switch's events, so that whoever receives both sees them in the order
/// the frames were read (a reply before the event it caused).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct RoutedRequest {
    /// The request.
    pub message: Message,
    /// The DN the answer is for.
    pub dn: Arc<str>,
    /// The requester's tag, returned with the answer.
    pub tag: u64,
}

#[derive(Debug)]
enum Waiting {
    /// Someone awaits the answer.
    Caller(oneshot::Sender<Result<Message, LinkError>>),
    /// The answer goes to the event subscriber.
    Routed(Arc<str>, u64),
    /// A monitor start: the cross-reference is recorded before the caller hears of it.
    Monitor(Arc<str>, oneshot::Sender<Result<Message, LinkError>>),
    /// The link's own handshake.
    Handshake,
    /// The link's own keep-alive.
    Keepalive,
    /// Timed out: the ID stays reserved until the answer arrives or the link resets.
    Expired,
}

#[derive(Debug)]
struct Pending {
    waiting: Waiting,
    /// When the request was queued to the switch.
    sent: Instant,
    name: &'static str,
    /// Tells this request from a later one that reuses its invoke ID.
    serial: u64,
}

/// An established connection to the switch, before it is split.
enum LinkStream {
    Plain(TcpStream),
    /// The TLS stream, and whether its certificate went unverified.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>, bool),
}

/// Why a connection could not be established.
enum ConnectError {
    Tcp(std::io::Error),
    Tls(std::io::Error),
}

struct Connection {
    generation: u64,
    writer: mpsc::Sender<Frame>,
    reader: SpawnHandle,
}

/// The link queue: frames read from the switch and not yet handled by the router (see
/// [`QueueSlot`]), shared by the actor and its reader.
#[derive(Debug)]
struct Flow {
    permits: Arc<Semaphore>,
    /// The reader is waiting for a place (it is not reading the socket).
    paused: AtomicBool,
    /// Times the reader had to wait.
    pauses: AtomicU64,
}

/// Clears [`Flow::paused`] when the wait ends, also when the reader is dropped while waiting.
struct Unpause<'a>(&'a AtomicBool);

impl Drop for Unpause<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// What the reader hands the actor: the connection's generation, the frame (or `None` at the
/// end of the stream), and the frame's place in the link queue.
type ReadItem = (u64, Option<Result<Frame, FrameError>>, QueueSlot);

/// One CSTA link (see the [link module docs](super)).
pub struct LinkActor {
    switch: Arc<str>,
    index: usize,
    address: SocketAddr,
    settings: Arc<LinkSettings>,
    dialect: Arc<Dialect>,
    owner: Recipient<LinkStatusChanged>,
    events: Recipient<SwitchEvent>,
    seq: Arc<AtomicU64>,
    stats: Arc<LinkStats>,
    metrics: crate::metrics::LinkMetrics,
    state: LinkState,
    generation: u64,
    connection: Option<Connection>,
    invokes: InvokeAllocator,
    pending: HashMap<u16, Pending>,
    monitors: HashMap<String, Arc<str>>,
    dn_monitors: HashMap<Arc<str>, String>,
    last_rx: Instant,
    keepalive_outstanding: bool,
    keepalive_misses: u32,
    backoff: Backoff,
    handshakes: u64,
    serial: u64,
    deadlines: VecDeque<(Instant, InvokeId, u64)>,
    flow: Arc<Flow>,
    /// [`Flow::pauses`] when the outstanding keep-alive was sent.
    keepalive_pauses: u64,
    /// No keep-alive before this (one could not be sent for want of an invoke ID).
    keepalive_blocked_until: Option<Instant>,
    /// Invoke ID counts last published to the gauges: in flight, expired.
    published_ids: (usize, usize),
    /// [`Flow::pauses`] at the last deadline check, and when the link was last seen not
    /// reading: answers may have waited unread in the socket meanwhile, so expired IDs are
    /// not held against the switch until it has read for a `request-timeout` again.
    seen_pauses: u64,
    last_paused: Option<Instant>,
    down: DownReport,
}

impl LinkActor {
    /// A link actor for link `index` of `switch`. It starts connecting as soon as it runs.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        switch: Arc<str>,
        index: usize,
        address: SocketAddr,
        settings: Arc<LinkSettings>,
        dialect: Arc<Dialect>,
        owner: Recipient<LinkStatusChanged>,
        events: Recipient<SwitchEvent>,
        seq: Arc<AtomicU64>,
        stats: Arc<LinkStats>,
    ) -> LinkActor {
        let settings_link_queue = settings.link_queue.clamp(1, Semaphore::MAX_PERMITS);
        LinkActor {
            invokes: InvokeAllocator::new(settings.first_invoke_id),
            backoff: Backoff::new(settings.reconnect_min, settings.reconnect_max),
            metrics: crate::metrics::LinkMetrics::new(&switch, index),
            switch,
            index,
            address,
            settings,
            dialect,
            owner,
            events,
            seq,
            stats,
            state: LinkState::Starting,
            generation: 0,
            connection: None,
            pending: HashMap::new(),
            monitors: HashMap::new(),
            dn_monitors: HashMap::new(),
            last_rx: Instant::now(),
            keepalive_outstanding: false,
            keepalive_misses: 0,
            handshakes: 0,
            serial: 0,
            deadlines: VecDeque::new(),
            flow: Arc::new(Flow {
                permits: Arc::new(Semaphore::new(settings_link_queue)),
                paused: AtomicBool::new(false),
                pauses: AtomicU64::new(0),
            }),
            keepalive_pauses: 0,
            keepalive_blocked_until: None,
            published_ids: (0, 0),
            seen_pauses: 0,
            last_paused: None,
            down: DownReport::default(),
        }
    }

    /// Publish the invoke ID counts (gauges are per switch, shared by its links: add the
    /// difference).
    fn publish_ids(&mut self) {
        let now = (self.invokes.in_flight(), self.invokes.expired());
        let (before, metrics) = (self.published_ids, &self.metrics);
        for (new, old, gauge) in [
            (now.0, before.0, &metrics.invoke_ids_in_flight),
            (now.1, before.1, &metrics.invoke_ids_expired),
        ] {
            if new > old {
                gauge.increment((new - old) as f64);
            } else if old > new {
                gauge.decrement((old - new) as f64);
            }
        }
        self.stats
            .invoke_ids_expired
            .store(now.1 as u64, Ordering::Relaxed);
        self.published_ids = now;
    }

    /// Whether the reader is waiting for the router to catch up.
    fn paused(&self) -> bool {
        self.flow.paused.load(Ordering::Relaxed)
    }

    fn set_state(&mut self, state: LinkState) {
        if self.state != state {
            self.state = state;
            self.owner.do_send(LinkStatusChanged {
                link: self.index,
                state,
            });
        }
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        self.generation += 1;
        let generation = self.generation;
        let address = self.address;
        let timeout = self.settings.connect_timeout;
        let tls = self.settings.tls.clone();
        debug!(switch = %self.switch, link = self.index, %address, tls = tls.is_some(), "connecting");
        // TCP connect and, with `tls = true`, the TLS handshake, within one connect timeout.
        let fut = async move {
            tokio::time::timeout(timeout, async move {
                let tcp = TcpStream::connect(address)
                    .await
                    .map_err(ConnectError::Tcp)?;
                let _ = tcp.set_nodelay(true);
                match tls {
                    None => Ok(LinkStream::Plain(tcp)),
                    Some(tls) => {
                        let stream = tls.connect(tcp, address).await.map_err(ConnectError::Tls)?;
                        Ok(LinkStream::Tls(Box::new(stream), tls.insecure))
                    }
                }
            })
            .await
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            if act.generation != generation {
                return;
            }
            match res {
                Ok(Ok(stream)) => act.connected(stream, ctx),
                Ok(Err(ConnectError::Tcp(e))) => act.lost(&format!("connect failed: {e}"), ctx),
                Ok(Err(ConnectError::Tls(e))) => {
                    // A certificate problem needs a person: say so at every attempt (the
                    // back-off bounds how often), not only at debug level like a refused TCP
                    // connect while the switch restarts.
                    let why = crate::tls::explain_handshake_error(&e, &act.switch);
                    warn!(switch = %act.switch, link = act.index, address = %act.address, "CSTA link not up: {why}");
                    act.drop_link(&why, true, ctx);
                }
                Err(_) => act.lost("connect timed out (TCP connect or TLS handshake)", ctx),
            }
        }));
    }

    fn connected(&mut self, stream: LinkStream, ctx: &mut Context<Self>) {
        match stream {
            LinkStream::Plain(tcp) => {
                let (read, write) = tcp.into_split();
                self.start_io(read, write, ctx);
            }
            LinkStream::Tls(tls, insecure) => {
                if insecure {
                    warn!(switch = %self.switch, link = self.index, address = %self.address,
                        "CSTA link over TLS WITHOUT certificate verification (tls-insecure-skip-verify = true): anyone on the path can impersonate the switch");
                } else {
                    debug!(switch = %self.switch, link = self.index, address = %self.address, "TLS handshake done, certificate verified");
                }
                // A TLS stream has no owned halves: split it (reads and writes stay independent).
                let (read, write) = tokio::io::split(*tls);
                self.start_io(read, write, ctx);
            }
        }
    }

    /// Start the writer task and the reader stream on an established connection.
    fn start_io<R, W>(&mut self, read: R, mut write: W, ctx: &mut Context<Self>)
    where
        R: AsyncRead + Unpin + 'static,
        W: AsyncWrite + Unpin + 'static,
    {
        let generation = self.generation;
        let (tx, mut rx) = mpsc::channel::<Frame>(self.settings.write_queue.max(1));
        // The writer drains the queue in batches; the actor never waits on the socket.
        actix_rt::spawn(async move {
            let mut buf = BytesMut::with_capacity(8192);
            while let Some(frame) = rx.recv().await {
                let mut next = Some(frame);
                while let Some(f) = next {
                    if let Err(e) = tokio_util::codec::Encoder::encode(&mut CstaCodec, f, &mut buf)
                    {
                        warn!("dropping an unencodable frame: {e}");
                    }
                    next = if buf.len() < 64 * 1024 {
                        rx.try_recv().ok()
                    } else {
                        None
                    };
                }
                // The flush matters for TLS only (records still buffered in the session);
                // for plain TCP it is a no-op.
                if write.write_all(&buf).await.is_err() || write.flush().await.is_err() {
                    break;
                }
                buf.clear();
            }
            let _ = write.shutdown().await;
        });
        // Each frame is read only once it has a place in the link queue: while the router is
        // `link-queue` frames behind, the socket is not read and TCP slows the switch down.
        let flow = self.flow.clone();
        let gauge = self.metrics.link_queue_frames.clone();
        let pauses = self.metrics.read_pauses.clone();
        let stats = self.stats.clone();
        let frames =
            futures_util::stream::unfold(Some(FramedRead::new(read, CstaCodec)), move |framed| {
                let (flow, gauge, pauses, stats) =
                    (flow.clone(), gauge.clone(), pauses.clone(), stats.clone());
                async move {
                    let mut framed = framed?;
                    let permit = match flow.permits.clone().try_acquire_owned() {
                        Ok(permit) => permit,
                        Err(TryAcquireError::NoPermits) => {
                            flow.paused.store(true, Ordering::Relaxed);
                            let _unpause = Unpause(&flow.paused);
                            flow.pauses.fetch_add(1, Ordering::Relaxed);
                            stats.read_pauses.fetch_add(1, Ordering::Relaxed);
                            pauses.increment(1);
                            flow.permits.clone().acquire_owned().await.ok()?
                        }
                        Err(TryAcquireError::Closed) => return None,
                    };
                    match framed.next().await {
                        Some(item) => Some((
                            (generation, Some(item), QueueSlot::held(permit, gauge)),
                            Some(framed),
                        )),
                        // The end of the stream, reported once.
                        None => Some(((generation, None, QueueSlot::default()), None)),
                    }
                }
            });
        let reader = ctx.add_stream(frames);
        self.connection = Some(Connection {
            generation,
            writer: tx,
            reader,
        });
        self.last_rx = Instant::now();
        self.set_state(LinkState::Handshaking);
        self.handshake(ctx);
    }

    fn handshake(&mut self, ctx: &mut Context<Self>) {
        if let Err(e) = self.send_request(Message::RequestSystemStatus, Waiting::Handshake, ctx) {
            let reason = e.to_string();
            self.lost(&reason, ctx);
        }
    }

    /// Encode and queue a request; the answer is delivered to `waiting`.
    fn send_request(
        &mut self,
        message: Message,
        waiting: Waiting,
        _ctx: &mut Context<Self>,
    ) -> Result<(), LinkError> {
        let Some(conn) = &self.connection else {
            return Err(self.no_switch());
        };
        // The link's own requests may take the ID that ordinary ones always leave free.
        let id = match waiting {
            Waiting::Keepalive | Waiting::Handshake => self.invokes.allocate_spare(),
            _ => self.invokes.allocate(),
        }
        .ok_or_else(|| LinkError::Overload {
            switch: self.switch.clone(),
        })?;
        let frame = match encode_frame(id, &message, &self.dialect) {
            Ok(f) => f,
            Err(e) => {
                self.invokes.release(id);
                return Err(LinkError::BadAnswer {
                    switch: self.switch.clone(),
                    detail: format!("the request could not be encoded: {e}"),
                });
            }
        };
        self.trace("out", &frame);
        match conn.writer.try_send(frame) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.invokes.release(id);
                return Err(LinkError::Overload {
                    switch: self.switch.clone(),
                });
            }
            // The writer stopped: the connection is gone and the reader is about to notice.
            // The request was not sent, so the switch has not acted: "no switch", not overload.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.invokes.release(id);
                return Err(self.no_switch());
            }
        }
        let name = static_name(&message);
        self.serial += 1;
        let serial = self.serial;
        self.pending.insert(
            id.get(),
            Pending {
                waiting,
                sent: Instant::now(),
                name,
                serial,
            },
        );
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        self.metrics.in_flight.increment(1.0);
        // The timeout is the same for every request, so deadlines come in order: one queue and
        // one periodic check instead of a timer per request (actix polls every spawned timer of
        // an actor on each wake-up, which would make many requests in flight quadratic).
        self.deadlines
            .push_back((Instant::now() + self.settings.request_timeout, id, serial));
        self.publish_ids();
        Ok(())
    }

    fn expire(&mut self, id: InvokeId, serial: u64, ctx: &mut Context<Self>) {
        let Some(p) = self.pending.get_mut(&id.get()) else {
            return;
        };
        if p.serial != serial {
            return;
        }
        let waiting = std::mem::replace(&mut p.waiting, Waiting::Expired);
        if !matches!(waiting, Waiting::Expired) {
            {
                self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
                self.metrics.in_flight.decrement(1.0);
            }
            // The ID stays reserved (a late answer must not meet a newer request) until the
            // answer comes or the link is reset.
            self.invokes.expire(id, Instant::now());
            self.publish_ids();
        }
        let err = LinkError::Timeout {
            switch: self.switch.clone(),
            timeout: self.settings.request_timeout,
        };
        match waiting {
            Waiting::Caller(tx) | Waiting::Monitor(_, tx) => {
                let _ = tx.send(Err(err));
            }
            Waiting::Routed(dn, tag) => self.route_answer(dn, tag, Err(err), QueueSlot::default()),
            Waiting::Handshake => self.lost("the switch did not answer RequestSystemStatus", ctx),
            Waiting::Keepalive => {
                self.keepalive_outstanding = false;
                if self.paused()
                    || self.flow.pauses.load(Ordering::Relaxed) != self.keepalive_pauses
                {
                    // The answer may be sitting unread in the socket: the link stopped reading
                    // while the router was behind. Not the switch's fault.
                    debug!(switch = %self.switch, link = self.index, "keep-alive unanswered while the link was not reading (link-queue full); not counted as a miss");
                } else {
                    self.keepalive_missed(
                        &format!("{} keep-alives unanswered", self.keepalive_misses + 1),
                        ctx,
                    );
                }
            }
            Waiting::Expired => {}
        }
    }

    fn keepalive_missed(&mut self, why: &str, ctx: &mut Context<Self>) {
        self.keepalive_misses += 1;
        self.stats.keepalive_misses.fetch_add(1, Ordering::Relaxed);
        self.metrics.keepalive_misses.increment(1);
        if self.keepalive_misses >= self.settings.kpl_tolerance.max(1) {
            self.lost(why, ctx);
        }
    }

    fn expire_due(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        while let Some(&(deadline, id, serial)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            self.expire(id, serial, ctx);
        }
        if self.connection.is_none() {
            return;
        }
        let pauses = self.flow.pauses.load(Ordering::Relaxed);
        if self.paused() || pauses != self.seen_pauses {
            self.seen_pauses = pauses;
            self.last_paused = Some(now);
        }
        let timeout = self.settings.request_timeout;
        if self
            .last_paused
            .is_some_and(|t| now.saturating_duration_since(t) < timeout)
        {
            return;
        }
        if let Some(exhausted) = self.invokes.check(now, timeout) {
            warn!(switch = %self.switch, link = self.index, address = %self.address, "CSTA link reset: {exhausted}");
            self.drop_link(&exhausted.to_string(), true, ctx);
        }
    }

    fn no_switch(&self) -> LinkError {
        LinkError::NoSwitch {
            switch: self.switch.clone(),
        }
    }

    /// The connection is gone (or never came): fail everything in flight and try again later.
    fn lost(&mut self, why: &str, ctx: &mut Context<Self>) {
        self.drop_link(why, false, ctx);
    }

    /// [`lost`](Self::lost); `warned`: the caller already logged why at WARN.
    fn drop_link(&mut self, why: &str, warned: bool, ctx: &mut Context<Self>) {
        let was_up = self.state == LinkState::Up;
        if let Some(conn) = self.connection.take() {
            ctx.cancel_future(conn.reader);
            drop(conn.writer);
        }
        self.generation += 1;
        for (_, p) in std::mem::take(&mut self.pending) {
            let err = LinkError::LinkLost {
                switch: self.switch.clone(),
            };
            match p.waiting {
                Waiting::Caller(tx) | Waiting::Monitor(_, tx) => {
                    let _ = tx.send(Err(err));
                    {
                        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
                        self.metrics.in_flight.decrement(1.0);
                    }
                }
                Waiting::Routed(dn, tag) => {
                    self.route_answer(dn, tag, Err(err), QueueSlot::default());
                    {
                        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
                        self.metrics.in_flight.decrement(1.0);
                    }
                }
                Waiting::Handshake | Waiting::Keepalive => {
                    self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
                    self.metrics.in_flight.decrement(1.0);
                }
                Waiting::Expired => {}
            }
        }
        self.invokes.release_all();
        self.publish_ids();
        self.deadlines.clear();
        self.monitors.clear();
        self.dn_monitors.clear();
        self.keepalive_outstanding = false;
        self.keepalive_misses = 0;
        self.keepalive_blocked_until = None;
        self.set_state(LinkState::Down);
        let delay = self.backoff.next_delay();
        // At the default log level: the first failure, then a reminder at most once a minute
        // while the link stays down (every attempt at debug).
        let next = human(delay);
        match self.down.failed(Instant::now(), warned) {
            Report::First if was_up => {
                warn!(switch = %self.switch, link = self.index, address = %self.address, "CSTA link lost: {why}; reconnecting in {next}");
            }
            Report::First => {
                warn!(switch = %self.switch, link = self.index, address = %self.address, "CSTA link not up: {why}; next attempt in {next} (while the link stays down, a reminder at most once a minute)");
            }
            Report::StillDown { down_for, failures } => {
                warn!(switch = %self.switch, link = self.index, address = %self.address, "CSTA link still down after {} ({failures} failures), last reason: {why}; next attempt in {next}", human(down_for));
            }
            Report::Quiet => {
                debug!(switch = %self.switch, link = self.index, address = %self.address, "CSTA link not up: {why}; next attempt in {next}");
            }
        }
        let generation = self.generation;
        ctx.run_later(delay, move |act, ctx| {
            if act.generation == generation && act.connection.is_none() {
                act.connect(ctx);
            }
        });
    }

    fn trace(&self, direction: &str, frame: &Frame) {
        if self.settings.wire_trace {
            info!(target: "csta_wire", switch = %self.switch, link = self.index, invoke = %frame.invoke_id, "{direction} {}", String::from_utf8_lossy(&frame.body));
        }
    }

    fn send_frame(&mut self, frame: Frame) {
        self.trace("out", &frame);
        if let Some(conn) = &self.connection {
            if conn.writer.try_send(frame).is_err() {
                warn!(switch = %self.switch, link = self.index, "outbound queue to the switch is full; an answer to the switch was dropped");
            }
        }
    }

    /// Handle one frame; `slot` (its place in the link queue) goes with the event or answer
    /// to the router, or is given back at once when the frame goes to nobody.
    fn on_frame(&mut self, frame: Frame, slot: QueueSlot, ctx: &mut Context<Self>) {
        self.trace("in", &frame);
        self.last_rx = Instant::now();
        self.keepalive_misses = 0;
        let message = match Message::decode(&frame.body, &self.dialect) {
            Ok(m) => m,
            Err(e) => {
                self.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                self.metrics.decode_errors.increment(1);
                warn!(switch = %self.switch, link = self.index, invoke = %frame.invoke_id, "skipping a CSTA frame that cannot be read: {e}");
                if frame.invoke_id != InvokeId::EVENT {
                    self.answer(
                        frame.invoke_id,
                        Err(LinkError::BadAnswer {
                            switch: self.switch.clone(),
                            detail: e.to_string(),
                        }),
                        slot,
                        ctx,
                    );
                }
                return;
            }
        };
        match message {
            // Requests from the switch: answered with the switch's own invoke ID.
            Message::SystemStatus { status } => {
                let reply = Message::SystemStatusResponse;
                match encode_frame(frame.invoke_id, &reply, &self.dialect) {
                    Ok(f) => self.send_frame(f),
                    Err(e) => warn!("cannot encode SystemStatusResponse: {e}"),
                }
                if self.state == LinkState::Up && !is_operational(&status) {
                    self.lost(&format!("the switch reports systemStatus {status}"), ctx);
                }
            }
            Message::RequestSystemStatus => {
                let reply = Message::RequestSystemStatusResponse {
                    status: "normal".into(),
                };
                match encode_frame(frame.invoke_id, &reply, &self.dialect) {
                    Ok(f) => self.send_frame(f),
                    Err(e) => warn!("cannot encode RequestSystemStatusResponse: {e}"),
                }
            }
            m if frame.invoke_id == InvokeId::EVENT => self.on_event(m, slot),
            Message::Error(error) => self.answer(
                frame.invoke_id,
                Err(LinkError::Rejected {
                    switch: self.switch.clone(),
                    error,
                }),
                slot,
                ctx,
            ),
            m => self.answer(frame.invoke_id, Ok(m), slot, ctx),
        }
    }

    fn on_event(&mut self, message: Message, slot: QueueSlot) {
        let Some(cross_ref) = message.cross_ref() else {
            debug!(switch = %self.switch, "event {} without monitorCrossRefID ignored", message.name());
            return;
        };
        let Some(dn) = self.monitors.get(cross_ref) else {
            debug!(switch = %self.switch, cross_ref, "event {} for an unknown monitor ignored", message.name());
            return;
        };
        self.metrics.events_received.increment(1);
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.events.do_send(SwitchEvent::Csta {
            switch: self.switch.clone(),
            seq,
            dn: dn.clone(),
            message: Arc::new(message),
            slot,
        });
    }

    fn answer(
        &mut self,
        id: InvokeId,
        result: Result<Message, LinkError>,
        slot: QueueSlot,
        ctx: &mut Context<Self>,
    ) {
        let Some(p) = self.pending.remove(&id.get()) else {
            self.stats.unmatched_answers.fetch_add(1, Ordering::Relaxed);
            debug!(switch = %self.switch, invoke = %id, "answer to no request in flight ignored");
            return;
        };
        self.invokes.release(id);
        self.publish_ids();
        if !matches!(p.waiting, Waiting::Expired) {
            self.metrics.roundtrip(p.name, p.sent.elapsed());
            {
                self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
                self.metrics.in_flight.decrement(1.0);
            }
        }
        match p.waiting {
            Waiting::Caller(tx) => {
                let _ = tx.send(result);
            }
            Waiting::Routed(dn, tag) => self.route_answer(dn, tag, result, slot),
            Waiting::Monitor(dn, tx) => {
                if let Ok(Message::MonitorStartResponse { cross_ref }) = &result {
                    if let Some(old) = self.dn_monitors.insert(dn.clone(), cross_ref.clone()) {
                        self.monitors.remove(&old);
                    }
                    self.monitors.insert(cross_ref.clone(), dn);
                }
                let _ = tx.send(result);
            }
            Waiting::Handshake => match result {
                Ok(Message::RequestSystemStatusResponse { status }) if is_operational(&status) => {
                    self.handshakes += 1;
                    if self.handshakes > 1 {
                        self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                        self.metrics.reconnects.increment(1);
                    }
                    self.backoff.reset();
                    match self.down.up(Instant::now()) {
                        Some((down_for, failures)) => {
                            info!(switch = %self.switch, link = self.index, address = %self.address, "CSTA link up (systemStatus {status}) after {} down ({failures} failures)", human(down_for))
                        }
                        None => {
                            info!(switch = %self.switch, link = self.index, address = %self.address, "CSTA link up (systemStatus {status})")
                        }
                    }
                    self.set_state(LinkState::Up);
                }
                Ok(Message::RequestSystemStatusResponse { status }) => {
                    debug!(switch = %self.switch, link = self.index, "switch not ready (systemStatus {status}); asking again");
                    let delay = self.settings.reconnect_min;
                    let generation = self.generation;
                    ctx.run_later(delay, move |act, ctx| {
                        if act.generation == generation {
                            act.handshake(ctx);
                        }
                    });
                }
                other => {
                    let why = format!("unexpected answer to RequestSystemStatus: {other:?}");
                    self.lost(&why, ctx);
                }
            },
            Waiting::Keepalive => {
                self.keepalive_outstanding = false;
            }
            Waiting::Expired => {
                self.stats.late_answers.fetch_add(1, Ordering::Relaxed);
                self.metrics.late_answers.increment(1);
                debug!(switch = %self.switch, invoke = %id, request = p.name, "late answer dropped");
            }
        }
    }

    fn route_answer(
        &self,
        dn: Arc<str>,
        tag: u64,
        result: Result<Message, LinkError>,
        slot: QueueSlot,
    ) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.events.do_send(SwitchEvent::Answer {
            switch: self.switch.clone(),
            dn,
            tag,
            seq,
            result,
            slot,
        });
    }

    fn keepalive_tick(&mut self, ctx: &mut Context<Self>) {
        let interval = self.settings.kpl_interval;
        if self.state != LinkState::Up || self.keepalive_outstanding || interval.is_zero() {
            return;
        }
        // While the link is not reading (the router is behind), silence is ours, not the
        // switch's, and an answer could not be read anyway.
        if self.paused() {
            return;
        }
        let now = Instant::now();
        if self.keepalive_blocked_until.is_some_and(|t| now < t) {
            return;
        }
        if self.last_rx.elapsed() < interval {
            return;
        }
        if self.invokes.free() == 0 {
            // Every ID is reserved, the one ordinary requests leave for keep-alives included:
            // an earlier keep-alive holds it, unanswered. As unanswered as that one, so a
            // miss, at the pace of real keep-alives.
            self.keepalive_blocked_until = Some(now + self.settings.request_timeout);
            let why = format!(
                "{} keep-alives unanswered (the last could not be sent: every invoke ID is held by a request the switch has not answered)",
                self.keepalive_misses + 1
            );
            debug!(switch = %self.switch, link = self.index, "keep-alive not sent, counted as a miss: {why}");
            self.keepalive_missed(&why, ctx);
            return;
        }
        let pauses = self.flow.pauses.load(Ordering::Relaxed);
        match self.send_request(Message::RequestSystemStatus, Waiting::Keepalive, ctx) {
            Ok(()) => {
                self.keepalive_outstanding = true;
                self.keepalive_pauses = pauses;
            }
            Err(e) => debug!(switch = %self.switch, "keep-alive not sent: {e}"),
        }
    }
}

/// A duration as a person reads it in a log line: "250 ms", "8.5 s", "3 min 20 s".
fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else if d < Duration::from_secs(120) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} min {} s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

fn is_operational(status: &str) -> bool {
    matches!(status, "normal" | "enabled")
}

fn static_name(m: &Message) -> &'static str {
    match m {
        Message::RequestSystemStatus => "RequestSystemStatus",
        Message::MonitorStart { .. } => "MonitorStart",
        Message::MonitorStop { .. } => "MonitorStop",
        Message::Escape(_) => "Escape",
        Message::AssociateData { .. } => "AssociateData",
        _ => "other",
    }
}

impl Actor for LinkActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Requests are queued here in the order they were sent (a bounded mailbox would make
        // senders wait and could reorder a DN's MonitorStop and MonitorStart); the real bound
        // is the invoke IDs and the outbound queue, which refuse the excess as overload.
        ctx.set_mailbox_capacity(1 << 20);
        self.connect(ctx);
        let tick = (self.settings.request_timeout / 50)
            .clamp(Duration::from_millis(1), Duration::from_millis(20));
        ctx.run_interval(tick, |act, ctx| act.expire_due(ctx));
        if !self.settings.kpl_interval.is_zero() {
            let tick = (self.settings.kpl_interval / 4).max(Duration::from_millis(5));
            ctx.run_interval(tick, |act, ctx| act.keepalive_tick(ctx));
        }
    }
}

impl StreamHandler<ReadItem> for LinkActor {
    fn handle(&mut self, (generation, item, slot): ReadItem, ctx: &mut Self::Context) {
        if self.connection.as_ref().map(|c| c.generation) != Some(generation) {
            return;
        }
        match item {
            Some(Ok(frame)) => self.on_frame(frame, slot, ctx),
            Some(Err(FrameError::Io(e))) => self.lost(&format!("read failed: {e}"), ctx),
            Some(Err(e)) => {
                self.stats.framing_resets.fetch_add(1, Ordering::Relaxed);
                self.metrics.framing_resets.increment(1);
                self.lost(&format!("framing broken, resetting the link: {e}"), ctx);
            }
            None => self.lost("the switch closed the connection", ctx),
        }
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        // End of stream is signalled by the `None` item; the actor lives on to reconnect.
    }
}

impl Handler<LinkRequest> for LinkActor {
    type Result = ResponseFuture<Result<Message, LinkError>>;

    fn handle(&mut self, req: LinkRequest, ctx: &mut Self::Context) -> Self::Result {
        if self.state != LinkState::Up {
            let err = self.no_switch();
            return Box::pin(async move { Err(err) });
        }
        let (tx, rx) = oneshot::channel();
        let sent = match req {
            LinkRequest::Service(m) => self.send_request(m, Waiting::Caller(tx), ctx),
            LinkRequest::Monitor(dn) => self.send_request(
                Message::MonitorStart {
                    device: dn.to_string(),
                },
                Waiting::Monitor(dn, tx),
                ctx,
            ),
            LinkRequest::Unmonitor(dn) => match self.dn_monitors.remove(&dn) {
                None => return Box::pin(async { Ok(Message::MonitorStopResponse) }),
                Some(cross_ref) => {
                    // Events after this point are not reported for the DN any more.
                    self.monitors.remove(&cross_ref);
                    self.send_request(Message::MonitorStop { cross_ref }, Waiting::Caller(tx), ctx)
                }
            },
        };
        let switch = self.switch.clone();
        Box::pin(async move {
            sent?;
            rx.await.unwrap_or(Err(LinkError::LinkLost { switch }))
        })
    }
}

impl Handler<RoutedRequest> for LinkActor {
    type Result = ();

    /// Sent with `do_send` straight from the extension actor: even a request that cannot be
    /// sent is answered through the event path, so its requester hears exactly once.
    fn handle(&mut self, req: RoutedRequest, ctx: &mut Self::Context) {
        let (dn, tag) = (req.dn.clone(), req.tag);
        let sent = if self.state == LinkState::Up {
            self.send_request(req.message, Waiting::Routed(req.dn, req.tag), ctx)
        } else {
            Err(self.no_switch())
        };
        if let Err(e) = sent {
            self.route_answer(dn, tag, Err(e), QueueSlot::default());
        }
    }
}

/// Ask the link to drop its connection and reconnect (used at shutdown and by tests).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ResetLink;

impl Handler<ResetLink> for LinkActor {
    type Result = ();

    fn handle(&mut self, _: ResetLink, ctx: &mut Self::Context) {
        if self.connection.is_some() {
            self.lost("reset requested", ctx);
        }
    }
}
