//! The CSTA protocol of one link, without IO and without a clock (README, "The CSTA link").
//!
//! [`Session`] is to the link actor what a protocol state machine is to its event loop: it holds
//! every rule of the link and touches nothing outside itself. The driver tells it what happened
//! (connected or gone, a frame read, a request to send, reading paused or resumed, time passed),
//! each time with the instant it happened, and carries out what it asks for ([`Output`]):
//! frames to write, answers for a caller, events and answers for the router shard, the link up
//! or lost, round trips. [`Session::poll_timeout`] says when to call [`Session::tick`] next. So
//! every rule below is unit-tested with made-up instants and literal frames, no socket or timer.
//!
//! The rules it owns:
//!
//! - **Handshake**: once connected, `RequestSystemStatus`; an answer of `normal` or `enabled`
//!   brings the link up, another status is asked again after `reconnect-min`, anything else (or
//!   no answer within `request-timeout`) loses the link.
//! - **Invoke IDs** ([`InvokeAllocator`]): `0001`–`9998` in order, wrapping, never one still
//!   reserved; a request that times out keeps its ID until its late answer (counted, dropped)
//!   or a reset; too many of them, or one for too long, reset the link
//!   ([`InvokeAllocator::check`]).
//! - **Deadlines**: every request is answered exactly once: by the switch, or by the session
//!   with a timeout after `request-timeout`, or with "link lost" when the link goes.
//! - **Keep-alive**: after `kpl-interval` without a frame, a `RequestSystemStatus`; one
//!   unanswered within `request-timeout` is a miss, `kpl-tolerance` misses in a row lose the
//!   link, any frame resets the count, `kpl-interval = 0` disables it. While the driver is not
//!   reading (`link-queue` full) the silence is the router's, not the switch's: no keep-alive
//!   is sent and a keep-alive that went unanswered across a pause is no miss; nor are expired
//!   invoke IDs held against the switch until it has been read for a `request-timeout` again.
//! - **The switch's own requests**: `SystemStatus` and `RequestSystemStatus` are answered on
//!   the switch's invoke ID; a `SystemStatus` other than `normal`/`enabled` while up loses the
//!   link.
//! - **Frames that cannot be read** are counted and skipped; one that carries an invoke ID fails
//!   the request it answers.
//! - **Monitor cross-references**: recorded from `MonitorStartResponse`, removed at
//!   `MonitorStop`, forgotten with the connection; an event is reported for the DN whose
//!   monitor carried it, an event on no known monitor is ignored.
//!
//! - **ECMA-354 sessions and system registration**: see the `app` submodule (a session
//!   opened before the handshake, timer resets as the keep-alive, a stop on purpose).
//!
//! Counters live in the [`LinkStats`] the session is given (the one set of books of a link;
//! the driver exports them to Prometheus).

use super::invoke::{Exhaustion, InvokeAllocator};
use super::stats::{count, LinkStats};
use super::{LinkError, LinkSettings};
use crate::csta::{Dialect, Frame, FrameEncoder, InvokeId, Message};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

mod app;
#[cfg(test)]
mod tests;

/// Where a link is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Not yet tried.
    Starting,
    /// TCP connected, waiting for the switch to say it is operational.
    Handshaking,
    /// Operational.
    Up,
    /// Not connected; a reconnect is scheduled.
    Down,
}

/// Who awaits the answer to a request given to [`Session::request`].
#[derive(Debug)]
pub enum Waiter<C> {
    /// The caller `C` (the driver's reply channel) gets [`Output::Answer`].
    Caller(C),
    /// The answer goes to the router shard as [`Output::ToShard`], in frame order with the
    /// switch's events, so that a reply reaches its client before the event it caused.
    Routed {
        /// The DN the request was for.
        dn: Arc<str>,
        /// The requester's tag, returned with the answer.
        tag: u64,
    },
}

/// What goes to the router shard for one DN.
#[derive(Debug, PartialEq)]
pub enum Delivery {
    /// A CSTA event that arrived on the DN's monitor.
    Event(Message),
    /// The answer to a routed request (exactly one per request).
    Answer {
        /// The requester's tag.
        tag: u64,
        /// The switch's positive answer, or why there is none.
        result: Result<Message, LinkError>,
    },
}

/// Why the driver's transport is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disconnect {
    /// Connecting, reading or writing failed, or the switch closed the connection.
    Transport(String),
    /// The byte stream lost its framing (counted as a framing reset).
    Framing(String),
    /// Connecting failed for a reason the driver already logged at WARN (a certificate
    /// problem, which needs a person at every attempt).
    Reported(String),
}

/// Why the session dropped the link ([`Output::Lost`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loss {
    /// A failure, to be logged by the down-period rule (the text says why).
    Failed(String),
    /// A failure the driver already logged at WARN.
    Reported(String),
    /// The switch leaves requests unanswered: the link is reset to free the invoke IDs.
    Exhausted(Exhaustion),
}

impl Loss {
    /// The reason, as the log and the reconnect report say it.
    pub fn reason(&self) -> String {
        match self {
            Loss::Failed(why) | Loss::Reported(why) => why.clone(),
            Loss::Exhausted(e) => e.to_string(),
        }
    }
}

/// Why a frame the session asked to send ([`Output::Send`]) could not be queued to the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsent {
    /// The outbound queue is full: the request is refused as overload.
    Full,
    /// The connection is gone: the switch never saw the request.
    Closed,
}

/// What the session asks its driver to do.
#[derive(Debug, PartialEq)]
pub enum Output<C> {
    /// Write this request frame to the switch; if it cannot be queued, say so with
    /// [`Session::unsent`] (its invoke ID is the frame's).
    Send(Frame),
    /// Write this answer to one of the switch's own requests (dropped when the queue is full).
    Reply(Frame),
    /// Hand an answer to the caller that awaits it.
    Answer {
        /// The caller.
        to: C,
        /// The switch's positive answer, or why there is none.
        result: Result<Message, LinkError>,
    },
    /// Hand an event or a routed answer to the router shard, for `dn`.
    ToShard {
        /// The DN it is for.
        dn: Arc<str>,
        /// What it is.
        delivery: Delivery,
    },
    /// The handshake succeeded: the link is up.
    Up {
        /// The `systemStatus` the switch answered.
        status: String,
    },
    /// The link is lost (or could not be established): drop the connection and reconnect
    /// later. Everything that was in flight has been answered.
    Lost(Loss),
    /// The switch refused to open an ECMA-354 application session, or did not answer:
    /// count it under `reason` (a standard `definedError`, `other` or `timeout`).
    SessionFailed {
        /// The `reason` label.
        reason: &'static str,
    },
    /// A request was answered (in time) after `elapsed`: one sample of the round-trip
    /// histogram.
    RoundTrip {
        /// Its `request` label (one of [`crate::metrics::CSTA_REQUESTS`], or "other").
        request: &'static str,
        /// Time from sending to reading the answer.
        elapsed: Duration,
    },
}

/// What a reserved invoke ID is waiting for.
#[derive(Debug)]
enum Waiting<C> {
    Caller(C),
    Routed(Arc<str>, u64),
    /// A MonitorStart: its cross-reference is recorded before the caller hears of it.
    Monitor(Arc<str>, C),
    Handshake,
    Keepalive,
    /// `StartApplicationSession`.
    AppStart,
    /// `SystemRegister`.
    Register,
    /// Timed out: the ID stays reserved until the answer arrives or the link resets.
    Expired,
}

#[derive(Debug)]
struct Pending<C> {
    waiting: Waiting<C>,
    sent: Instant,
    request: &'static str,
    /// Tells this request from a later one that reuses its invoke ID.
    serial: u64,
}

/// The keep-alive's state on the current connection.
#[derive(Debug, Clone, Copy)]
struct Keepalive {
    /// When the last frame arrived (or the connection was made).
    last_rx: Instant,
    outstanding: bool,
    misses: u32,
    /// The reader's pause count when the outstanding keep-alive was sent.
    pauses_at_send: u64,
    /// No keep-alive before this (one could not be sent for want of an invoke ID).
    blocked_until: Option<Instant>,
}

/// The driver's reader, as far as the rules care.
#[derive(Debug, Clone, Copy, Default)]
struct Reading {
    /// The reader waits for the router (it is not reading the socket).
    paused: bool,
    /// When the reader last stopped being paused: answers may have waited unread until then.
    last_paused: Option<Instant>,
}

/// The timers and limits the rules use, from [`LinkSettings`].
#[derive(Debug, Clone, Copy)]
struct Timers {
    request_timeout: Duration,
    kpl_interval: Duration,
    kpl_tolerance: u32,
    handshake_retry: Duration,
}

/// The CSTA protocol state of one link (see the module docs). `C` is how the driver reaches a
/// caller (a reply channel; anything in tests).
#[derive(Debug)]
pub struct Session<C> {
    switch: Arc<str>,
    link: usize,
    dialect: Arc<Dialect>,
    frames: FrameEncoder,
    timers: Timers,
    state: LinkState,
    invokes: InvokeAllocator,
    pending: HashMap<u16, Pending<C>>,
    /// Request deadlines in the order they fall.
    deadlines: VecDeque<(Instant, InvokeId, u64)>,
    serial: u64,
    /// Monitor cross-reference → the DN it monitors, and back.
    monitors: HashMap<String, Arc<str>>,
    dn_monitors: HashMap<Arc<str>, String>,
    handshakes: u64,
    handshake_retry_at: Option<Instant>,
    keepalive: Keepalive,
    reading: Reading,
    app: app::App,
    stats: Arc<LinkStats>,
    /// What the last input produced; the driver gives the vector back emptied (no allocation).
    pub(super) out: Vec<Output<C>>,
}

impl<C> Session<C> {
    /// The session of link `link` of `switch`, counting into `stats`. `now` stands for the
    /// start of the link's life (no keep-alive is due before a connection anyway).
    pub fn new(
        switch: Arc<str>,
        link: usize,
        settings: &LinkSettings,
        dialect: Arc<Dialect>,
        stats: Arc<LinkStats>,
        now: Instant,
    ) -> Session<C> {
        Session {
            switch,
            link,
            dialect,
            frames: FrameEncoder::default(),
            timers: Timers {
                request_timeout: settings.request_timeout,
                kpl_interval: settings.kpl_interval,
                kpl_tolerance: settings.kpl_tolerance.max(1),
                handshake_retry: settings.reconnect_min,
            },
            state: LinkState::Starting,
            invokes: InvokeAllocator::new(settings.first_invoke_id),
            pending: HashMap::new(),
            deadlines: VecDeque::new(),
            serial: 0,
            monitors: HashMap::new(),
            dn_monitors: HashMap::new(),
            handshakes: 0,
            handshake_retry_at: None,
            keepalive: Keepalive {
                last_rx: now,
                outstanding: false,
                misses: 0,
                pauses_at_send: 0,
                blocked_until: None,
            },
            reading: Reading::default(),
            app: app::App {
                settings: settings.app_session.clone(),
                system_register: settings.system_register,
                ..app::App::default()
            },
            stats,
            out: Vec::new(),
        }
    }

    /// Where the link is.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// The link's counters.
    pub fn stats(&self) -> &Arc<LinkStats> {
        &self.stats
    }

    /// The transport is connected: start the handshake.
    pub fn connected(&mut self, now: Instant) -> Vec<Output<C>> {
        self.state = LinkState::Handshaking;
        self.keepalive.last_rx = now;
        self.app_start(now);
        self.flush()
    }

    /// The transport is gone (or could not be made): answer everything in flight with "link
    /// lost", free every invoke ID, forget the monitors, and report [`Output::Lost`].
    pub fn disconnected(&mut self, why: Disconnect, now: Instant) -> Vec<Output<C>> {
        let loss = match why {
            Disconnect::Transport(why) => Loss::Failed(why),
            Disconnect::Framing(why) => {
                count(&self.stats.framing_resets);
                Loss::Failed(why)
            }
            Disconnect::Reported(why) => Loss::Reported(why),
        };
        self.lose(loss, now);
        self.flush()
    }

    /// Send a service request; its answer (or failure, even an immediate one) goes to `waiter`.
    pub fn request(&mut self, message: Message, waiter: Waiter<C>, now: Instant) -> Vec<Output<C>> {
        let waiting = match waiter {
            Waiter::Caller(to) => Waiting::Caller(to),
            Waiter::Routed { dn, tag } => Waiting::Routed(dn, tag),
        };
        self.submit(message, waiting, now);
        self.flush()
    }

    /// Start a monitor on `dn`; once the switch accepts it, events on it are reported for `dn`.
    pub fn start_monitor(&mut self, dn: Arc<str>, caller: C, now: Instant) -> Vec<Output<C>> {
        let message = Message::MonitorStart {
            device: self.dialect.device.plain_device(&dn),
        };
        self.submit(message, Waiting::Monitor(dn, caller), now);
        self.flush()
    }

    /// Stop the monitor of `dn`, if it has one on this connection (answered at once
    /// otherwise). Events on it are not reported for `dn` from now on.
    pub fn stop_monitor(&mut self, dn: Arc<str>, caller: C, now: Instant) -> Vec<Output<C>> {
        if self.state != LinkState::Up {
            let result = Err(self.no_switch());
            self.out.push(Output::Answer { to: caller, result });
        } else if let Some(cross_ref) = self.dn_monitors.remove(&dn) {
            self.monitors.remove(&cross_ref);
            self.submit(
                Message::MonitorStop { cross_ref },
                Waiting::Caller(caller),
                now,
            );
        } else {
            let result = Ok(Message::MonitorStopResponse);
            self.out.push(Output::Answer { to: caller, result });
        }
        self.flush()
    }

    /// A frame from the switch.
    pub fn on_frame(&mut self, frame: Frame, now: Instant) -> Vec<Output<C>> {
        self.keepalive.last_rx = now;
        if !self.uses_sessions() {
            // On a session link only a positive timer reset ends a run of misses.
            self.keepalive.misses = 0;
        }
        let id = frame.invoke_id;
        match Message::decode(&frame.body, &self.dialect) {
            Ok(message) => self.on_message(id, message, now),
            Err(e) => {
                count(&self.stats.decode_errors);
                warn!(switch = %self.switch, link = self.link, invoke = %id, "skipping a CSTA frame that cannot be read: {e}");
                if id != InvokeId::EVENT {
                    let detail = e.to_string();
                    let switch = self.switch.clone();
                    self.answer(id, Err(LinkError::BadAnswer { switch, detail }), now);
                }
            }
        }
        self.flush()
    }

    /// The frame of the request on `id` ([`Output::Send`]) could not be queued: its waiter
    /// gets overload (a full queue) or "no switch" (the connection is gone, the switch never
    /// saw it), and the ID is free again.
    pub fn unsent(&mut self, id: InvokeId, why: Unsent, now: Instant) -> Vec<Output<C>> {
        if let Some(p) = self.pending.remove(&id.get()) {
            self.invokes.release(id);
            let error = match why {
                Unsent::Full => self.overload(),
                Unsent::Closed => self.no_switch(),
            };
            self.refuse(p.waiting, error, now);
        }
        self.flush()
    }

    /// The driver's reader stopped reading: `link-queue` frames wait for the router.
    pub fn read_paused(&mut self) {
        self.reading.paused = true;
        count(&self.stats.read_pauses);
    }

    /// The driver's reader reads again.
    pub fn read_resumed(&mut self, now: Instant) {
        self.reading.paused = false;
        self.reading.last_paused = Some(now);
    }

    /// Time has passed: time out due requests, retry the handshake, send a keep-alive or reset
    /// the link whose invoke IDs are exhausted, whichever is due at `now`. Harmless when
    /// nothing is.
    pub fn tick(&mut self, now: Instant) -> Vec<Output<C>> {
        while let Some(&(deadline, id, serial)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            self.expire(id, serial, now);
        }
        if self.connected_now() {
            if let Some(exhausted) = self.exhaustion(now) {
                self.lose(Loss::Exhausted(exhausted), now);
            } else {
                if self.handshake_retry_at.is_some_and(|t| t <= now) {
                    self.handshake(now);
                }
                self.keepalive_tick(now);
            }
        }
        self.flush()
    }

    /// New timers (a reload), for requests sent and keep-alive checks from now on.
    pub fn retime(&mut self, settings: &LinkSettings) {
        self.timers = Timers {
            request_timeout: settings.request_timeout,
            kpl_interval: settings.kpl_interval,
            kpl_tolerance: settings.kpl_tolerance.max(1),
            handshake_retry: settings.reconnect_min,
        };
    }

    /// The next instant [`tick`](Self::tick) has something to do, if any (it may be earlier
    /// than needed, never later).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.deadlines.front().map(|(at, _, _)| *at);
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        if self.connected_now() {
            consider(self.handshake_retry_at);
            consider(self.keepalive_due());
            if !self.reading.paused {
                let timeout = self.timers.request_timeout;
                let resume = self
                    .reading
                    .last_paused
                    .and_then(|p| p.checked_add(timeout));
                let check = self.invokes.next_check(timeout);
                consider(check.map(|c| resume.map_or(c, |r| c.max(r))));
            }
        }
        next
    }

    /// Hand back what the last input produced, after refreshing the invoke ID levels.
    fn flush(&mut self) -> Vec<Output<C>> {
        let levels = [
            (&self.stats.in_flight, self.invokes.in_flight()),
            (&self.stats.invoke_ids_expired, self.invokes.expired()),
        ];
        for (level, value) in levels {
            level.store(value as u64, Ordering::Relaxed);
        }
        std::mem::take(&mut self.out)
    }

    fn connected_now(&self) -> bool {
        matches!(self.state, LinkState::Handshaking | LinkState::Up)
    }

    fn no_switch(&self) -> LinkError {
        LinkError::NoSwitch {
            switch: self.switch.clone(),
        }
    }

    fn overload(&self) -> LinkError {
        LinkError::Overload {
            switch: self.switch.clone(),
        }
    }

    fn handshake(&mut self, now: Instant) {
        self.handshake_retry_at = None;
        if let Err((e, _)) = self.send(Message::RequestSystemStatus, Waiting::Handshake, now) {
            self.lose(Loss::Failed(e.to_string()), now);
        }
    }

    /// Send a request from outside the session, refusing it while the link is not up.
    fn submit(&mut self, message: Message, waiting: Waiting<C>, now: Instant) {
        let sent = if self.state == LinkState::Up {
            self.send(message, waiting, now)
        } else {
            Err((self.no_switch(), waiting))
        };
        if let Err((error, waiting)) = sent {
            self.refuse(waiting, error, now);
        }
    }

    /// Reserve an invoke ID, encode, and ask the driver to send; the answer will go to
    /// `waiting`. On failure the waiting is given back with the error.
    fn send(
        &mut self,
        message: Message,
        waiting: Waiting<C>,
        now: Instant,
    ) -> Result<(), (LinkError, Waiting<C>)> {
        // The link's own requests may take the ID that ordinary ones always leave free.
        let id = match waiting {
            Waiting::Keepalive | Waiting::Handshake | Waiting::AppStart => {
                self.invokes.allocate_spare()
            }
            _ => self.invokes.allocate(),
        };
        let Some(id) = id else {
            return Err((self.overload(), waiting));
        };
        let frame = match self.frames.encode(id, &message, &self.dialect) {
            Ok(frame) => frame,
            Err(e) => {
                self.invokes.release(id);
                let detail = format!("the request could not be encoded: {e}");
                let switch = self.switch.clone();
                return Err((LinkError::BadAnswer { switch, detail }, waiting));
            }
        };
        self.serial += 1;
        let pending = Pending {
            waiting,
            sent: now,
            request: crate::metrics::csta_request_label(&message),
            serial: self.serial,
        };
        self.pending.insert(id.get(), pending);
        let deadline = now + self.timers.request_timeout;
        // In order (a reload may have shortened request-timeout with requests in flight).
        let at = self.deadlines.partition_point(|(d, _, _)| *d <= deadline);
        self.deadlines.insert(at, (deadline, id, self.serial));
        self.out.push(Output::Send(frame));
        Ok(())
    }

    /// A request that was not sent (or could not be queued): its waiter hears why at once.
    fn refuse(&mut self, waiting: Waiting<C>, error: LinkError, now: Instant) {
        match waiting {
            Waiting::Caller(to) | Waiting::Monitor(_, to) => self.out.push(Output::Answer {
                to,
                result: Err(error),
            }),
            Waiting::Routed(dn, tag) => self.route_answer(dn, tag, Err(error)),
            Waiting::Handshake | Waiting::AppStart => {
                self.lose(Loss::Failed(error.to_string()), now)
            }
            Waiting::Keepalive => {
                self.keepalive.outstanding = false;
                debug!(switch = %self.switch, link = self.link, "keep-alive not sent: {error}");
            }
            Waiting::Register => {
                debug!(switch = %self.switch, link = self.link, "SystemRegister not sent: {error}");
            }
            Waiting::Expired => {}
        }
    }

    fn route_answer(&mut self, dn: Arc<str>, tag: u64, result: Result<Message, LinkError>) {
        let delivery = Delivery::Answer { tag, result };
        self.out.push(Output::ToShard { dn, delivery });
    }

    fn reply(&mut self, id: InvokeId, message: &Message) {
        match self.frames.encode(id, message, &self.dialect) {
            Ok(frame) => self.out.push(Output::Reply(frame)),
            Err(e) => warn!(switch = %self.switch, "cannot encode {}: {e}", message.name()),
        }
    }

    fn on_message(&mut self, id: InvokeId, message: Message, now: Instant) {
        match message {
            // Requests from the switch: answered with the switch's own invoke ID.
            Message::SystemStatus { status } => {
                if id != InvokeId::EVENT {
                    self.reply(id, &Message::SystemStatusResponse);
                }
                match status {
                    Some(status) if self.state == LinkState::Up && !is_operational(&status) => {
                        let why = format!("the switch reports systemStatus {status}");
                        self.lose(Loss::Failed(why), now);
                    }
                    Some(_) => {}
                    None => self.empty_status(),
                }
            }
            Message::RequestSystemStatus => {
                let status = "normal".into();
                self.reply(id, &Message::RequestSystemStatusResponse { status });
            }
            m if id == InvokeId::EVENT => self.on_event(m),
            Message::Error(error) => {
                let switch = self.switch.clone();
                self.answer(id, Err(LinkError::Rejected { switch, error }), now);
            }
            m => self.answer(id, Ok(m), now),
        }
    }

    fn on_event(&mut self, message: Message) {
        let Some(cross_ref) = message.cross_ref() else {
            debug!(switch = %self.switch, "event {} without monitorCrossRefID ignored", message.name());
            return;
        };
        let Some(dn) = self.monitors.get(cross_ref).cloned() else {
            debug!(switch = %self.switch, cross_ref, "event {} for an unknown monitor ignored", message.name());
            return;
        };
        count(&self.stats.events_received);
        let delivery = Delivery::Event(message);
        self.out.push(Output::ToShard { dn, delivery });
    }

    /// The switch answered invoke ID `id`.
    fn answer(&mut self, id: InvokeId, result: Result<Message, LinkError>, now: Instant) {
        let Some(p) = self.pending.remove(&id.get()) else {
            count(&self.stats.unmatched_answers);
            debug!(switch = %self.switch, invoke = %id, "answer to no request in flight ignored");
            return;
        };
        self.invokes.release(id);
        if !matches!(p.waiting, Waiting::Expired) {
            let elapsed = now.saturating_duration_since(p.sent);
            self.out.push(Output::RoundTrip {
                request: p.request,
                elapsed,
            });
        }
        match p.waiting {
            Waiting::Caller(to) => self.out.push(Output::Answer { to, result }),
            Waiting::Routed(dn, tag) => self.route_answer(dn, tag, result),
            Waiting::Monitor(dn, to) => {
                if let Ok(Message::MonitorStartResponse { cross_ref }) = &result {
                    if let Some(old) = self.dn_monitors.insert(dn.clone(), cross_ref.clone()) {
                        self.monitors.remove(&old);
                    }
                    self.monitors.insert(cross_ref.clone(), dn);
                }
                self.out.push(Output::Answer { to, result });
            }
            Waiting::Handshake => self.handshake_answered(result, now),
            Waiting::Keepalive => {
                self.keepalive.outstanding = false;
                if self.uses_sessions() {
                    self.app_reset_answered(result, now);
                }
            }
            Waiting::AppStart => self.app_started(result, now),
            Waiting::Register => self.app_registered(result),
            Waiting::Expired => {
                count(&self.stats.late_answers);
                debug!(switch = %self.switch, invoke = %id, request = p.request, "late answer dropped");
            }
        }
    }

    fn handshake_answered(&mut self, result: Result<Message, LinkError>, now: Instant) {
        match result {
            Ok(Message::RequestSystemStatusResponse { status }) if is_operational(&status) => {
                self.handshakes += 1;
                if self.handshakes > 1 {
                    count(&self.stats.reconnects);
                }
                self.state = LinkState::Up;
                self.out.push(Output::Up { status });
                self.app_up(now);
            }
            Ok(Message::RequestSystemStatusResponse { status }) => {
                debug!(switch = %self.switch, link = self.link, "switch not ready (systemStatus {status}); asking again");
                self.handshake_retry_at = Some(now + self.timers.handshake_retry);
            }
            Err(LinkError::Rejected { error, .. }) => {
                let why = self.refused_handshake(&error);
                self.lose(Loss::Failed(why), now);
            }
            other => {
                let why = format!("unexpected answer to RequestSystemStatus: {other:?}");
                self.lose(Loss::Failed(why), now);
            }
        }
    }

    /// The request on `id` (number `serial`) is due: it times out, its ID stays reserved.
    fn expire(&mut self, id: InvokeId, serial: u64, now: Instant) {
        let Some(p) = self.pending.get_mut(&id.get()) else {
            return;
        };
        if p.serial != serial || matches!(p.waiting, Waiting::Expired) {
            return;
        }
        let waiting = std::mem::replace(&mut p.waiting, Waiting::Expired);
        // The ID stays reserved (a late answer must not meet a newer request) until the
        // answer comes or the link is reset.
        self.invokes.expire(id, now);
        let error = LinkError::Timeout {
            switch: self.switch.clone(),
            timeout: self.timers.request_timeout,
        };
        match waiting {
            Waiting::Caller(to) | Waiting::Monitor(_, to) => self.out.push(Output::Answer {
                to,
                result: Err(error),
            }),
            Waiting::Routed(dn, tag) => self.route_answer(dn, tag, Err(error)),
            Waiting::Handshake => {
                let why = "the switch did not answer RequestSystemStatus".to_owned();
                self.lose(Loss::Failed(why), now);
            }
            Waiting::Keepalive => self.keepalive_expired(now),
            Waiting::AppStart => self.app_start_expired(now),
            Waiting::Register => {
                debug!(switch = %self.switch, link = self.link, "SystemRegister unanswered");
            }
            Waiting::Expired => {}
        }
    }

    fn keepalive_expired(&mut self, now: Instant) {
        self.keepalive.outstanding = false;
        let pauses = self.stats.read_pauses.load(Ordering::Relaxed);
        if self.reading.paused || pauses != self.keepalive.pauses_at_send {
            // The answer may be sitting unread in the socket: the link stopped reading while
            // the router was behind. Not the switch's fault.
            debug!(switch = %self.switch, link = self.link, "keep-alive unanswered while the link was not reading (link-queue full); not counted as a miss");
        } else {
            let why = format!("{} keep-alives unanswered", self.keepalive.misses + 1);
            self.keepalive_missed(why, now);
        }
    }

    fn keepalive_missed(&mut self, why: String, now: Instant) {
        self.keepalive.misses += 1;
        count(&self.stats.keepalive_misses);
        if self.keepalive.misses >= self.timers.kpl_tolerance {
            self.lose(Loss::Failed(why), now);
        }
    }

    /// When the next keep-alive is due, if one is to be sent at all.
    fn keepalive_due(&self) -> Option<Instant> {
        let k = &self.keepalive;
        let interval = self.timers.kpl_interval;
        let reset_due = self.app_reset_due();
        // A session's timer runs from its start: it is reset while the handshake waits too.
        let active = self.state == LinkState::Up
            || (reset_due.is_some() && self.state == LinkState::Handshaking);
        if !active || k.outstanding || self.reading.paused {
            return None;
        }
        let due = match reset_due {
            // A session link: the timer resets, whatever the traffic and kpl-interval.
            Some(next_reset) => next_reset?,
            None if interval.is_zero() => return None,
            None => k.last_rx.checked_add(interval)?,
        };
        Some(k.blocked_until.map_or(due, |b| due.max(b)))
    }

    fn keepalive_tick(&mut self, now: Instant) {
        if self.keepalive_due().is_none_or(|due| now < due) {
            return;
        }
        if self.invokes.free() == 0 {
            // Every ID is reserved, the one ordinary requests leave for keep-alives included:
            // an earlier keep-alive holds it, unanswered. As unanswered as that one, so a
            // miss, at the pace of real keep-alives.
            self.keepalive.blocked_until = Some(now + self.timers.request_timeout);
            let why = format!(
                "{} keep-alives unanswered (the last could not be sent: every invoke ID is held by a request the switch has not answered)",
                self.keepalive.misses + 1
            );
            debug!(switch = %self.switch, link = self.link, "keep-alive not sent, counted as a miss: {why}");
            self.keepalive_missed(why, now);
            return;
        }
        self.keepalive.outstanding = true;
        self.keepalive.pauses_at_send = self.stats.read_pauses.load(Ordering::Relaxed);
        if self.app_reset_due().is_some() {
            return self.app_reset(now);
        }
        if let Err((error, waiting)) =
            self.send(Message::RequestSystemStatus, Waiting::Keepalive, now)
        {
            self.refuse(waiting, error, now);
        }
    }

    /// Whether the invoke IDs call for a reset, unless the link has not been reading for a
    /// whole `request-timeout` (answers may be waiting unread in the socket).
    fn exhaustion(&mut self, now: Instant) -> Option<Exhaustion> {
        let timeout = self.timers.request_timeout;
        let recently_paused = self
            .reading
            .last_paused
            .is_some_and(|t| now.saturating_duration_since(t) < timeout);
        if self.reading.paused || recently_paused {
            return None;
        }
        self.invokes.check(now, timeout)
    }

    /// Drop the link: answer everything in flight, free every ID, forget the connection's
    /// monitors and keep-alive, and tell the driver.
    fn lose(&mut self, loss: Loss, now: Instant) {
        for (_, p) in std::mem::take(&mut self.pending) {
            let error = LinkError::LinkLost {
                switch: self.switch.clone(),
            };
            match p.waiting {
                Waiting::Caller(to) | Waiting::Monitor(_, to) => self.out.push(Output::Answer {
                    to,
                    result: Err(error),
                }),
                Waiting::Routed(dn, tag) => self.route_answer(dn, tag, Err(error)),
                Waiting::Handshake
                | Waiting::Keepalive
                | Waiting::AppStart
                | Waiting::Register
                | Waiting::Expired => {}
            }
        }
        // The session goes with the connection: the next one opens a new one.
        self.app.session_id = None;
        self.app.next_reset = None;
        self.invokes.release_all();
        self.deadlines.clear();
        self.monitors.clear();
        self.dn_monitors.clear();
        self.handshake_retry_at = None;
        self.keepalive.outstanding = false;
        self.keepalive.misses = 0;
        self.keepalive.blocked_until = None;
        if std::mem::take(&mut self.reading.paused) {
            // The reader goes with the connection.
            self.reading.last_paused = Some(now);
        }
        self.state = LinkState::Down;
        self.out.push(Output::Lost(loss));
    }
}

/// Whether a `systemStatus` value means operational.
fn is_operational(status: &str) -> bool {
    matches!(status, "normal" | "enabled")
}
