//! The router's side of the CSTA links to a switch.
//!
//! ```text
//!                  RoutedRequest (SwitchRoute::route)
//! extension actor ───────────────────────────────────────┐
//!                  start/stop monitor                    ▼
//! extension actor ─────────────► Switch ─ LinkRequest ─► LinkActor (active)  ◄─TCP─► PBX link 1
//!                                ▲   elects the          LinkActor (standby) ◄─TCP─► PBX link 2
//!                                │   active link         │  each drives a Session
//!                                └─ LinkStatusChanged ───┤
//!                                                        │  events and routed answers
//! router shard ◄─ SwitchEvent Csta, Answer ◄─ ShardFeed ◄┘  numbered (eventSeq)
//! router shard ◄─ SwitchEvent LinkUp, LinkDown, MonitorLost ◄─ Switch
//! ```
//!
//! Requests go from the extension actor straight to the active link ([`SwitchRoute::route`]
//! on the [`SwitchHandle`]); events and answers go from the link straight to the switch's
//! router shard, each numbered by the switch's one feed (the `eventSeq` clients see), so the
//! shard can keep them in the order the frames were read. The switch actor is on neither
//! path: it elects the active link and owns the monitored DNs.
//!
//! - [`Session`] (one per link): the CSTA protocol without IO or clock: handshake, invoke IDs,
//!   deadlines and late answers, keep-alive, answers to the switch's own requests, monitor
//!   cross-references, and the link's counters ([`LinkStats`]). Unit-tested with made-up
//!   instants.
//! - [`LinkActor`] (one per PBX link, on an Arbiter of its switch's choosing): the session's
//!   driver. Connects (TCP, TLS), reconnects with back-off ([`Backoff`], logged by the
//!   [`DownReport`] rule), writes frames through a writer task, reads at most `link-queue`
//!   frames ahead of the router (each carries a [`QueueSlot`] until it has been handled, so a
//!   switch faster than the router is slowed down by TCP), arms the session's timer and
//!   carries out its outputs. It never waits on anyone.
//! - [`Switch`] (one per switch): keeps the highest-priority operational link active, fails
//!   over without failing back, keeps the set of monitored DNs and restores them on whichever
//!   link becomes active, and publishes the active link to the [`SwitchHandle`].
//!
//! Failures are [`LinkError`]s, each naming the client-visible error code it maps to.

mod actor;
mod backoff;
mod feed;
mod invoke;
mod io;
mod ownership;
mod report;
mod route;
mod session;
mod stats;
mod switch;

pub use actor::{Close, Disown, LinkActor, LinkRequest, LinkStatusChanged, Own, RoutedRequest};
pub use backoff::Backoff;
pub use invoke::{Exhaustion, InvokeAllocator, ID_SPACE, LOW_FREE, ORDINARY_LIMIT, STUCK_FACTOR};
pub use ownership::{fence_margin, Fence, Sequence};
pub use report::{DownReport, Report, REMINDER_EVERY};
pub use route::{MonitorOutcome, SwitchRoute};
pub use session::{Delivery, Disconnect, LinkState, Loss, Output, Session, Unsent, Waiter};
pub use stats::LinkStats;
pub use switch::{
    CloseLinks, Relink, StartMonitor, StopMonitor, Switch, SwitchHandle, SwitchRequest,
    SwitchStatus, SwitchStatusQuery,
};

use crate::csta::{CstaError, Dialect, Message};
use actix::Message as ActixMessage;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;

/// Why a request to a switch did not get a positive answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// No operational link: the request was not sent.
    #[error("switch {switch} has no operational CTI link; try again once it is back")]
    NoSwitch {
        /// The switch.
        switch: Arc<str>,
    },
    /// The link was lost while the request was in flight.
    #[error("the CTI link to switch {switch} was lost while the request was in flight; the switch may or may not have acted")]
    LinkLost {
        /// The switch.
        switch: Arc<str>,
    },
    /// The switch did not answer within `request-timeout`.
    #[error(
        "switch {switch} did not answer within {timeout:?}; the switch may or may not have acted"
    )]
    Timeout {
        /// The switch.
        switch: Arc<str>,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// Too many requests in flight on the link (invoke IDs exhausted, or the outbound queue
    /// to the switch full).
    #[error("too many requests in flight on the CTI link to switch {switch}; retry shortly")]
    Overload {
        /// The switch.
        switch: Arc<str>,
    },
    /// The switch answered with `CSTAErrorCode`.
    #[error("switch {switch} rejected the request: {error}")]
    Rejected {
        /// The switch.
        switch: Arc<str>,
        /// What it said.
        error: CstaError,
    },
    /// The switch answered with something that is not an answer to this request.
    #[error("switch {switch} sent an answer the router cannot read ({detail}); the switch may or may not have acted")]
    BadAnswer {
        /// The switch.
        switch: Arc<str>,
        /// What was wrong.
        detail: String,
    },
}

/// Timers and limits of a switch's links. Every duration can be milliseconds so tests run
/// fast.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// How long a request may wait for its answer (`request-timeout`).
    pub request_timeout: Duration,
    /// Silence from the switch after which a keep-alive is sent (`kpl-interval`; zero
    /// disables keep-alives).
    pub kpl_interval: Duration,
    /// Unanswered keep-alives in a row after which the link is lost (`kpl-tolerance`).
    pub kpl_tolerance: u32,
    /// First reconnect delay.
    pub reconnect_min: Duration,
    /// Largest reconnect delay.
    pub reconnect_max: Duration,
    /// How long a TCP connect may take.
    pub connect_timeout: Duration,
    /// Frames queued towards the switch before requests are refused as overload.
    pub write_queue: usize,
    /// Frames read from the switch and not yet fully handled by the router (`link-queue`):
    /// with that many outstanding, the link stops reading its socket until the router
    /// catches up, so a switch faster than the router is slowed down by TCP instead of
    /// filling the router's memory.
    pub link_queue: usize,
    /// MonitorStarts in flight at once while restoring monitors on a new active link.
    pub remonitor_in_flight: usize,
    /// The first invoke ID used (tests start near the wrap-around).
    pub first_invoke_id: u16,
    /// Log every CSTA frame in and out (target `csta_wire`).
    pub wire_trace: bool,
    /// TLS on the links (`tls = true`): the TCP connection is wrapped in a TLS client
    /// connection before anything is sent; `None`: plain TCP.
    pub tls: Option<crate::tls::LinkTls>,
    /// ECMA-354 application sessions (`application-session = true`): a session is opened
    /// before anything else on every connection, and its timer resets replace the
    /// keep-alive; `None`: no sessions.
    pub app_session: Option<AppSessionSettings>,
    /// Send `SystemRegister` once the link is up (`system-register = true`), so that the
    /// switch reports its status changes.
    pub system_register: bool,
}

/// New timers for the running links of a switch (a reload changed `[options]`): the links keep
/// their connections, their monitors and their requests; requests sent from now on, the next
/// keep-alive and the next reconnect follow the new values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ActixMessage)]
#[rtype(result = "()")]
pub struct Retime {
    /// `request-timeout` (also the connect timeout).
    pub request_timeout: Duration,
    /// `kpl-interval`.
    pub kpl_interval: Duration,
    /// `kpl-tolerance`.
    pub kpl_tolerance: u32,
    /// `reconnect-min`.
    pub reconnect_min: Duration,
    /// `reconnect-max`.
    pub reconnect_max: Duration,
}

impl Retime {
    /// The timers of these settings.
    pub fn of(s: &LinkSettings) -> Retime {
        Retime {
            request_timeout: s.request_timeout,
            kpl_interval: s.kpl_interval,
            kpl_tolerance: s.kpl_tolerance,
            reconnect_min: s.reconnect_min,
            reconnect_max: s.reconnect_max,
        }
    }

    /// These settings with the new timers.
    pub fn apply(&self, s: &LinkSettings) -> LinkSettings {
        LinkSettings {
            request_timeout: self.request_timeout,
            connect_timeout: self.request_timeout,
            kpl_interval: self.kpl_interval,
            kpl_tolerance: self.kpl_tolerance,
            reconnect_min: self.reconnect_min,
            reconnect_max: self.reconnect_max,
            ..s.clone()
        }
    }
}

/// What a link asks for when it opens an ECMA-354 application session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSessionSettings {
    /// `applicationID` (`session-application-id`): how the switch's administrator knows us.
    pub application_id: String,
    /// The requested `protocolVersion` (`session-protocol-version`).
    pub protocol_version: String,
    /// The requested session duration (`session-duration`, whole seconds).
    pub duration: Duration,
}

impl Default for LinkSettings {
    fn default() -> Self {
        LinkSettings {
            request_timeout: Duration::from_secs(4),
            kpl_interval: Duration::from_secs(10),
            kpl_tolerance: 3,
            reconnect_min: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(4),
            write_queue: 16_384,
            link_queue: 4096,
            remonitor_in_flight: 32,
            first_invoke_id: 1,
            wire_trace: false,
            tls: None,
            app_session: None,
            system_register: false,
        }
    }
}

/// One link of a switch, as configured.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Where the switch listens.
    pub address: SocketAddr,
    /// Lower numbers are preferred.
    pub priority: u32,
}

/// A switch's links, as configured.
#[derive(Debug, Clone)]
pub struct SwitchConfig {
    /// The switch's name (used in events, errors and metrics).
    pub name: Arc<str>,
    /// Its links; at least one.
    pub links: Vec<LinkConfig>,
    /// Its dialect.
    pub dialect: Dialect,
    /// Timers and limits.
    pub settings: LinkSettings,
}

/// What a switch tells its subscriber (the router).
#[derive(Debug, ActixMessage)]
#[rtype(result = "()")]
pub enum SwitchEvent {
    /// A link became the active link and every monitored DN has been restored on it.
    LinkUp {
        /// The switch.
        switch: Arc<str>,
        /// Index of the link in the configuration.
        link: usize,
    },
    /// The switch lost its active link (and has no other operational one yet).
    LinkDown {
        /// The switch.
        switch: Arc<str>,
        /// Index of the link that was lost.
        link: usize,
    },
    /// A CSTA event arrived on the monitor of `dn`.
    Csta {
        /// The switch.
        switch: Arc<str>,
        /// Strictly increasing per switch for the life of the process.
        seq: u64,
        /// The monitored DN whose monitor carried the event.
        dn: Arc<str>,
        /// The event.
        message: Arc<Message>,
        /// The frame's place in the link queue, held until the event has been handled.
        slot: QueueSlot,
    },
    /// The answer to a [`RoutedRequest`]: exactly one per request the link accepted.
    Answer {
        /// The switch.
        switch: Arc<str>,
        /// The DN the request was for.
        dn: Arc<str>,
        /// The requester's tag.
        tag: u64,
        /// Position among the switch's events and answers (same counter as `Csta::seq`), so
        /// that replies and events can be delivered in the order the frames were read.
        seq: u64,
        /// The switch's positive answer, or why there is none.
        result: Result<Message, LinkError>,
        /// The answer frame's place in the link queue (none when the link made the answer
        /// itself: a timeout, a lost link), held until the answer has been handled.
        slot: QueueSlot,
    },
    /// The switch refused to restore the monitor of `dn` on a new link.
    MonitorLost {
        /// The switch.
        switch: Arc<str>,
        /// The DN no longer monitored.
        dn: Arc<str>,
        /// Why.
        error: LinkError,
    },
}

/// A frame's place among the `link-queue` frames a link may have read ahead of the router.
///
/// The link takes one before it reads each frame and stops reading when none is left; the
/// place is given back when the slot is dropped, which the router does once the event or
/// answer the frame carried has been handed to the clients (frames that go to nobody give
/// theirs back at once). This is how a slow router slows the switch down over TCP instead of
/// queueing its frames without bound.
///
/// Not `Clone`: a frame carries at most one event or answer, so its slot has one owner, and
/// taking a slot costs no allocation (every frame read takes one).
#[derive(Debug, Default)]
pub struct QueueSlot {
    /// Held for its `Drop` (`None` for answers the link made itself).
    _held: Option<HeldSlot>,
}

#[derive(Debug)]
struct HeldSlot {
    _permit: OwnedSemaphorePermit,
    gauge: metrics::Gauge,
}

impl Drop for HeldSlot {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}

impl QueueSlot {
    /// A slot holding `permit`, counted in `gauge` until it is given back.
    fn held(permit: OwnedSemaphorePermit, gauge: metrics::Gauge) -> QueueSlot {
        gauge.increment(1.0);
        QueueSlot {
            _held: Some(HeldSlot {
                _permit: permit,
                gauge,
            }),
        }
    }
}
