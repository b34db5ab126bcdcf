//! The link actor: the driver of one link's [`Session`], kept alive for the life of the router.
//!
//! It holds no protocol state. It connects (and reconnects with back-off, logging the down
//! periods by the [`DownReport`] rule), moves frames between the socket and the session, arms
//! the one timer the session asks for ([`Session::poll_timeout`]), and carries out the
//! session's [`Output`]s: frames to the writer task, answers to their callers, events and
//! routed answers to the router shard (through the [`ShardFeed`]), the link's state to its
//! switch actor, and the session's counters to Prometheus.

use super::backoff::Backoff;
use super::feed::ShardFeed;
use super::io::{self, ConnectError, LinkStream, Read};
use super::ownership::{Fence, Sequence};
use super::report::{DownReport, Report};
use super::session::{Disconnect, LinkState, Loss, Output, Session, Unsent, Waiter};
use super::stats::{Export, LinkStats};
use super::{LinkError, LinkSettings, QueueSlot};
use crate::csta::{Dialect, Frame, Message};
use actix::prelude::*;
use futures_util::StreamExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::{debug, info, warn};

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
/// [`SwitchEvent::Answer`](super::SwitchEvent::Answer) through the same path as the switch's
/// events, so that whoever receives both sees them in the order the frames were read (a reply
/// before the event it caused).
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

/// A link tells its switch actor (its owner) that its state changed.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct LinkStatusChanged {
    /// Index of the link.
    pub link: usize,
    /// Its new state.
    pub state: LinkState,
}

/// The switch is owned here from now on (a cluster node acquired it): connect, number what is
/// read from `seq`, and act while `fence` is open.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Own {
    /// The event numbers of this ownership.
    pub seq: Arc<Sequence>,
    /// Until when the switch may be acted on.
    pub fence: Fence,
}

/// The switch is no longer owned here: close the connection and do not reconnect.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Disown {
    /// Why, for the log.
    pub why: String,
}

/// Close the link on purpose and keep it closed (the router is shutting down): an open
/// ECMA-354 application session is stopped first (`StopApplicationSession`, waiting at most
/// `request-timeout` for the answer). Answered once the connection is closed.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Close;

/// How the session reaches a caller of [`LinkRequest`].
type Reply = oneshot::Sender<Result<Message, LinkError>>;

/// The connection's generation and what its reader read.
type ReadItem = (u64, Read);

struct Connection {
    generation: u64,
    writer: mpsc::Sender<Frame>,
    reader: SpawnHandle,
}

/// What a link actor is given by its switch actor.
pub(super) struct LinkParts {
    /// The switch's name.
    pub switch: Arc<str>,
    /// The link's index in the configuration.
    pub index: usize,
    /// Where the switch listens.
    pub address: SocketAddr,
    /// Timers and limits.
    pub settings: Arc<LinkSettings>,
    /// The switch's dialect.
    pub dialect: Arc<Dialect>,
    /// The switch actor, told of every change of the link's state.
    pub owner: Recipient<LinkStatusChanged>,
    /// The way into the router shard.
    pub feed: ShardFeed,
    /// The link's counters (shared with the switch's handle).
    pub stats: Arc<LinkStats>,
    /// Whether the link connects from the start (a router without a cluster owns its switches
    /// from the start; a cluster node only once it holds the switch's lease).
    pub owned: bool,
}

/// One CSTA link (see the [link module docs](super)).
pub struct LinkActor {
    session: Session<Reply>,
    switch: Arc<str>,
    index: usize,
    address: SocketAddr,
    settings: Arc<LinkSettings>,
    owner: Recipient<LinkStatusChanged>,
    feed: ShardFeed,
    export: Export,
    /// The state last told to the switch actor.
    told: LinkState,
    generation: u64,
    connection: Option<Connection>,
    /// The armed timer: when it fires, and its handle.
    timer: Option<(Instant, SpawnHandle)>,
    /// How late the timer may fire, so that a burst of deadlines costs one wake-up, not one each.
    resolution: Duration,
    /// The link queue: places for frames read and not yet handled by the router (see
    /// [`QueueSlot`]), shared by the connections of this link.
    permits: Arc<Semaphore>,
    backoff: Backoff,
    down: DownReport,
    /// Whether the switch is owned here (the link connects and reconnects only then).
    owned: bool,
    /// The link is stopping its application session: that one frame goes out even with the
    /// fence closed (it ends only this node's own session, never acts on the switch's calls).
    stopping_session: bool,
}

impl LinkActor {
    /// A link actor. It starts connecting as soon as it runs.
    pub(super) fn new(parts: LinkParts) -> LinkActor {
        let LinkParts {
            switch,
            index,
            address,
            settings,
            dialect,
            owner,
            feed,
            stats,
            owned,
        } = parts;
        let metrics = crate::metrics::LinkMetrics::new(&switch, index);
        if settings.app_session.is_some() {
            crate::metrics::session_failures_init(&switch);
        }
        let session = Session::new(
            switch.clone(),
            index,
            &settings,
            dialect,
            stats,
            Instant::now(),
        );
        LinkActor {
            session,
            export: Export::new(metrics),
            backoff: Backoff::new(settings.reconnect_min, settings.reconnect_max),
            resolution: (settings.request_timeout / 50)
                .clamp(Duration::from_millis(1), Duration::from_millis(20)),
            permits: Arc::new(Semaphore::new(
                settings.link_queue.clamp(1, Semaphore::MAX_PERMITS),
            )),
            switch,
            index,
            address,
            settings,
            owner,
            feed,
            told: LinkState::Starting,
            generation: 0,
            connection: None,
            timer: None,
            down: DownReport::default(),
            owned,
            stopping_session: false,
        }
    }

    /// Close the connection on purpose (the actor is no longer owned): stop an open
    /// application session first, waiting at most `request-timeout` for its answer, never on
    /// a lost link. Resolves once the connection is closed.
    fn close_on_purpose(
        &mut self,
        why: String,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, ()> {
        let closed = move |act: &mut LinkActor, ctx: &mut Context<LinkActor>| {
            if act.connection.is_some() {
                act.disconnect(Disconnect::Reported(why), ctx);
            } else {
                // A connect in progress is dropped when it completes (its generation is stale).
                act.generation += 1;
            }
        };
        if self.connection.is_none() || self.session.session_id().is_none() {
            // Nothing to stop: closed at once, as before sessions existed.
            closed(self, ctx);
            return Box::pin(actix::fut::ready(()));
        }
        let (tx, stop) = oneshot::channel();
        let out = self.session.stop_session(tx, Instant::now());
        self.stopping_session = true;
        self.carry_out(out, None, ctx);
        self.stopping_session = false;
        let limit = self.settings.request_timeout + Duration::from_millis(50);
        let switch = self.switch.clone();
        let index = self.index;
        let wait = async move {
            match tokio::time::timeout(limit, stop).await {
                Ok(Ok(Ok(_))) => {
                    info!(switch = %switch, link = index, "ECMA-354 application session stopped")
                }
                Ok(Ok(Err(e))) => {
                    info!(switch = %switch, link = index, "StopApplicationSession not confirmed: {e}")
                }
                _ => {
                    info!(switch = %switch, link = index, "StopApplicationSession not answered in time")
                }
            }
        };
        Box::pin(
            wait.into_actor(self)
                .map(move |(), act, ctx| closed(act, ctx)),
        )
    }

    /// The switch's fence closed (its ownership lapsed): stop acting on it at once.
    fn fenced(&mut self, ctx: &mut Context<Self>) {
        if !self.owned {
            return;
        }
        self.owned = false;
        warn!(switch = %self.switch, link = self.index, address = %self.address, "closing the CSTA link: this node's lease on the switch has lapsed (fenced)");
        let why = "fenced: the lease on the switch lapsed".into();
        self.disconnect(Disconnect::Reported(why), ctx);
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        self.generation += 1;
        let generation = self.generation;
        let tls = self.settings.tls.clone();
        debug!(switch = %self.switch, link = self.index, address = %self.address, tls = tls.is_some(), "connecting");
        let fut = io::connect(self.address, tls, self.settings.connect_timeout);
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            if act.generation != generation {
                return;
            }
            let why = match res {
                Ok(stream) => return act.connected(stream, ctx),
                Err(ConnectError::Tcp(e)) => Disconnect::Transport(format!("connect failed: {e}")),
                Err(ConnectError::Tls(e)) => {
                    // A certificate problem needs a person: say so at every attempt (the
                    // back-off bounds how often), not only at debug level like a refused TCP
                    // connect while the switch restarts.
                    let why = crate::tls::explain_handshake_error(&e, &act.switch);
                    warn!(switch = %act.switch, link = act.index, address = %act.address, "CSTA link not up: {why}");
                    Disconnect::Reported(why)
                }
                Err(ConnectError::TimedOut) => Disconnect::Transport(
                    "connect timed out (TCP connect or TLS handshake)".into(),
                ),
            };
            act.disconnect(why, ctx);
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
        let out = self.session.connected(Instant::now());
        self.carry_out(out, None, ctx);
    }

    /// Start the writer task and the reader on an established connection.
    fn start_io<R, W>(&mut self, read: R, write: W, ctx: &mut Context<Self>)
    where
        R: AsyncRead + Unpin + 'static,
        W: AsyncWrite + Unpin + 'static,
    {
        let generation = self.generation;
        let writer = io::spawn_writer(write, self.settings.write_queue);
        let gauge = self.export.metrics().link_queue_frames.clone();
        let frames = io::reader(read, self.permits.clone(), gauge);
        let reader = ctx.add_stream(StreamExt::map(frames, move |read| (generation, read)));
        self.connection = Some(Connection {
            generation,
            writer,
            reader,
        });
    }

    /// The transport is gone: tell the session, which fails what was in flight.
    fn disconnect(&mut self, why: Disconnect, ctx: &mut Context<Self>) {
        let out = self.session.disconnected(why, Instant::now());
        self.carry_out(out, None, ctx);
    }

    /// Carry out what the session asked for. `slot` is the link-queue place of the frame the
    /// outputs came from: it goes with the event or answer that frame carried to the router
    /// shard, or is given back here when the frame goes to nobody.
    fn carry_out(
        &mut self,
        mut outputs: Vec<Output<Reply>>,
        mut slot: Option<QueueSlot>,
        ctx: &mut Context<Self>,
    ) {
        for output in outputs.drain(..) {
            match output {
                Output::Send(frame) => self.send(frame, ctx),
                Output::Reply(frame) => self.reply(frame),
                Output::Answer { to, result } => {
                    let _ = to.send(result);
                }
                Output::ToShard { dn, delivery } => {
                    let slot = slot.take().unwrap_or_default();
                    if !self.feed.deliver(dn, delivery, slot) {
                        self.fenced(ctx);
                    }
                }
                Output::Up { status } => self.up(&status),
                Output::Lost(loss) => self.lost(loss, ctx),
                Output::SessionFailed { reason } => {
                    crate::metrics::session_failure(&self.switch, reason);
                }
                Output::RoundTrip { request, elapsed } => {
                    self.export.metrics().roundtrip(request, elapsed);
                }
            }
        }
        // The emptied vector takes the session's next outputs (a small one only): a frame
        // read or a request sent then costs no allocation for them.
        if self.session.out.capacity() == 0 && outputs.capacity() <= 64 {
            self.session.out = outputs;
        }
        self.export.publish(self.session.stats());
        let state = self.session.state();
        if state != self.told {
            self.told = state;
            self.owner.do_send(LinkStatusChanged {
                link: self.index,
                state,
            });
        }
        self.arm(ctx);
    }

    /// Queue a request frame to the switch; the session hears of a frame that could not be.
    fn send(&mut self, frame: Frame, ctx: &mut Context<Self>) {
        self.trace("out", &frame);
        let id = frame.invoke_id;
        if !self.feed.may_act() && !self.stopping_session {
            // Never a frame to a switch another node may own now.
            let out = self.session.unsent(id, Unsent::Closed, Instant::now());
            self.carry_out(out, None, ctx);
            return self.fenced(ctx);
        }
        let unsent = match &self.connection {
            None => Some(Unsent::Closed),
            Some(conn) => match conn.writer.try_send(frame) {
                Ok(()) => None,
                Err(mpsc::error::TrySendError::Full(_)) => Some(Unsent::Full),
                // The writer stopped: the connection is gone and the reader is about to
                // notice. The request was not sent, so the switch has not acted.
                Err(mpsc::error::TrySendError::Closed(_)) => Some(Unsent::Closed),
            },
        };
        if let Some(why) = unsent {
            let out = self.session.unsent(id, why, Instant::now());
            self.carry_out(out, None, ctx);
        }
    }

    /// Queue an answer to one of the switch's own requests.
    fn reply(&mut self, frame: Frame) {
        self.trace("out", &frame);
        if !self.feed.may_act() {
            return;
        }
        if let Some(conn) = &self.connection {
            if conn.writer.try_send(frame).is_err() {
                warn!(switch = %self.switch, link = self.index, "outbound queue to the switch is full; an answer to the switch was dropped");
            }
        }
    }

    /// Arm the timer for the session's next deadline, unless one fires early enough already
    /// (a timer that fires early finds nothing to do and arms the next).
    fn arm(&mut self, ctx: &mut Context<Self>) {
        let Some(due) = self.session.poll_timeout() else {
            return;
        };
        let fire = due + self.resolution;
        if let Some((armed, handle)) = self.timer {
            if armed <= fire {
                return;
            }
            ctx.cancel_future(handle);
        }
        let delay = fire.saturating_duration_since(Instant::now());
        let handle = ctx.run_later(delay, |act, ctx| {
            act.timer = None;
            let out = act.session.tick(Instant::now());
            act.carry_out(out, None, ctx);
        });
        self.timer = Some((fire, handle));
    }

    fn up(&mut self, status: &str) {
        self.backoff.reset();
        match self.down.up(Instant::now()) {
            Some((down_for, failures)) => {
                info!(switch = %self.switch, link = self.index, address = %self.address, "CSTA link up (systemStatus {status}) after {} down ({failures} failures)", human(down_for))
            }
            None => {
                info!(switch = %self.switch, link = self.index, address = %self.address, "CSTA link up (systemStatus {status})")
            }
        }
    }

    /// The session dropped the link: close the connection, log, and reconnect later.
    fn lost(&mut self, loss: Loss, ctx: &mut Context<Self>) {
        let was_up = self.told == LinkState::Up;
        let warned = match &loss {
            Loss::Failed(_) => false,
            Loss::Reported(_) => true,
            Loss::Exhausted(exhausted) => {
                warn!(switch = %self.switch, link = self.index, address = %self.address, "CSTA link reset: {exhausted}");
                true
            }
        };
        let why = loss.reason();
        if let Some(conn) = self.connection.take() {
            ctx.cancel_future(conn.reader);
            drop(conn.writer);
        }
        self.generation += 1;
        if !self.owned {
            // Closed on purpose (the switch is not, or no longer, owned here): no reconnect.
            info!(switch = %self.switch, link = self.index, address = %self.address, "CSTA link closed: {why}");
            return;
        }
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
            if act.owned && act.generation == generation && act.connection.is_none() {
                act.connect(ctx);
            }
        });
    }

    fn trace(&self, direction: &str, frame: &Frame) {
        if self.settings.wire_trace {
            info!(target: "csta_wire", switch = %self.switch, link = self.index, invoke = %frame.invoke_id, "{direction} {}", String::from_utf8_lossy(&frame.body));
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

impl Actor for LinkActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Requests are queued here in the order they were sent (a bounded mailbox would make
        // senders wait and could reorder a DN's MonitorStop and MonitorStart); the real bound
        // is the invoke IDs and the outbound queue, which refuse the excess as overload.
        ctx.set_mailbox_capacity(1 << 20);
        if self.owned {
            self.connect(ctx);
        }
    }
}

impl Handler<super::Retime> for LinkActor {
    type Result = ();

    fn handle(&mut self, retime: super::Retime, ctx: &mut Self::Context) {
        self.settings = Arc::new(retime.apply(&self.settings));
        self.session.retime(&self.settings);
        self.backoff
            .set_bounds(self.settings.reconnect_min, self.settings.reconnect_max);
        self.resolution = (self.settings.request_timeout / 50)
            .clamp(Duration::from_millis(1), Duration::from_millis(20));
        // The armed timer was computed with the old values: arm it again.
        if let Some((_, handle)) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        self.arm(ctx);
    }
}

impl Handler<Own> for LinkActor {
    type Result = ();

    fn handle(&mut self, own: Own, ctx: &mut Self::Context) {
        self.feed.own(own.seq, own.fence);
        if !self.owned {
            self.owned = true;
            self.backoff.reset();
            if self.connection.is_none() {
                self.connect(ctx);
            }
        }
    }
}

impl Handler<Disown> for LinkActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, disown: Disown, ctx: &mut Self::Context) -> Self::Result {
        if !self.owned {
            return Box::pin(actix::fut::ready(()));
        }
        self.owned = false;
        self.close_on_purpose(disown.why, ctx)
    }
}

impl Handler<Close> for LinkActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Close, ctx: &mut Self::Context) -> Self::Result {
        let was_owned = std::mem::replace(&mut self.owned, false);
        if !was_owned && self.connection.is_none() {
            return Box::pin(actix::fut::ready(()));
        }
        self.close_on_purpose("the router is shutting down".into(), ctx)
    }
}

impl StreamHandler<ReadItem> for LinkActor {
    fn handle(&mut self, (generation, read): ReadItem, ctx: &mut Self::Context) {
        if self.connection.as_ref().map(|c| c.generation) != Some(generation) {
            return;
        }
        let now = Instant::now();
        match read {
            Read::Frame(Ok(frame), slot) => {
                self.trace("in", &frame);
                let out = self.session.on_frame(frame, now);
                self.carry_out(out, Some(slot), ctx);
            }
            Read::Frame(Err(crate::csta::FrameError::Io(e)), _) => {
                self.disconnect(Disconnect::Transport(format!("read failed: {e}")), ctx);
            }
            Read::Frame(Err(e), _) => {
                let why = format!("framing broken, resetting the link: {e}");
                self.disconnect(Disconnect::Framing(why), ctx);
            }
            Read::End => {
                let why = "the switch closed the connection".into();
                self.disconnect(Disconnect::Transport(why), ctx);
            }
            Read::Paused => {
                self.session.read_paused();
                self.carry_out(Vec::new(), None, ctx);
            }
            Read::Resumed => {
                self.session.read_resumed(now);
                self.carry_out(Vec::new(), None, ctx);
            }
        }
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        // End of stream is signalled by `Read::End`; the actor lives on to reconnect.
    }
}

impl Handler<LinkRequest> for LinkActor {
    type Result = ResponseFuture<Result<Message, LinkError>>;

    fn handle(&mut self, req: LinkRequest, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let now = Instant::now();
        let out = match req {
            LinkRequest::Service(m) => self.session.request(m, Waiter::Caller(tx), now),
            LinkRequest::Monitor(dn) => self.session.start_monitor(dn, tx, now),
            LinkRequest::Unmonitor(dn) => self.session.stop_monitor(dn, tx, now),
        };
        self.carry_out(out, None, ctx);
        let switch = self.switch.clone();
        Box::pin(async move { rx.await.unwrap_or(Err(LinkError::LinkLost { switch })) })
    }
}

impl Handler<RoutedRequest> for LinkActor {
    type Result = ();

    /// Sent with `do_send` straight from the extension actor: even a request that cannot be
    /// sent is answered through the event path, so its requester hears exactly once.
    fn handle(&mut self, req: RoutedRequest, ctx: &mut Self::Context) {
        let waiter = Waiter::Routed {
            dn: req.dn,
            tag: req.tag,
        };
        let out = self.session.request(req.message, waiter, Instant::now());
        self.carry_out(out, None, ctx);
    }
}
