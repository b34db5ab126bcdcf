//! The link's ECMA-354 application session and system registration (README, "Connecting your
//! PBX"), as rules of the [`Session`]:
//!
//! - **Start**: with `application-session = true`, every connection opens a new session with
//!   `StartApplicationSession` before anything else. A positive response (its `sessionID` and
//!   `actualSessionDuration` kept) lets the handshake go on with `RequestSystemStatus`; a
//!   negative one, a `CSTAErrorCode` or no answer within `request-timeout` keeps the link
//!   down (the driver reconnects on its back-off), the reason logged and counted
//!   ([`Output::SessionFailed`]: the standard `definedError`, `other` or `timeout`).
//! - **Reset as keep-alive**: on a session link `ResetApplicationSessionTimer` replaces
//!   `RequestSystemStatus`, sent a third of the granted duration after the last one (traffic
//!   or not: the switch's session timer does not look at traffic). One unanswered within
//!   `request-timeout` or answered negatively is a miss; `kpl-tolerance` misses in a row lose
//!   the link. Only a positive answer ends a run of misses.
//! - **Stop**: [`Session::stop_session`] sends `StopApplicationSession` when the router closes
//!   the link on purpose; nothing is sent on a lost link (the session goes with it).
//! - **System registration**: with `system-register = true`, `SystemRegister` once the link
//!   is up; the switch's `SystemStatus` requests are handled with the others (an inoperative
//!   status on an up link loses it).
//! - **A switch that wants a session**: a link without sessions whose `RequestSystemStatus`
//!   is answered with a `CSTAErrorCode` says so in the reason it stays down for.

use super::super::stats::count;
use super::{LinkState, Loss, Output, Session, Waiting};
use crate::csta::{AppSession, CstaError, Message, SystemRegister};
use crate::link::{AppSessionSettings, LinkError};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// The application session of the current connection.
#[derive(Debug, Default)]
pub(super) struct App {
    /// What to ask for; `None`: the link uses no sessions.
    pub settings: Option<AppSessionSettings>,
    /// Whether to send `SystemRegister` once up.
    pub system_register: bool,
    /// The open session's ID (`None` before the positive response and after a loss).
    pub session_id: Option<String>,
    /// The duration the switch granted.
    pub granted: Duration,
    /// When the next timer reset is due.
    pub next_reset: Option<Instant>,
    /// Whether a `SystemStatus` without its child was already logged on this link.
    pub warned_empty_status: bool,
}

impl App {
    /// The duration we ask for, in whole seconds (at least 1).
    fn requested_seconds(&self) -> u32 {
        self.settings.as_ref().map_or(0, |s| {
            s.duration.as_secs().clamp(1, u64::from(u32::MAX)) as u32
        })
    }

    /// How long after a reset the next one is sent: a third of the granted duration.
    fn reset_interval(&self) -> Duration {
        (self.granted / 3).max(Duration::from_millis(1))
    }
}

impl<C> Session<C> {
    /// Whether this link opens ECMA-354 sessions.
    pub(super) fn uses_sessions(&self) -> bool {
        self.app.settings.is_some()
    }

    /// The ID of the session open on this connection, if any.
    pub fn session_id(&self) -> Option<&str> {
        self.app.session_id.as_deref()
    }

    /// Open the connection's application session (the first request on a session link).
    pub(super) fn app_start(&mut self, now: Instant) {
        let Some(settings) = self.app.settings.clone() else {
            return self.handshake(now);
        };
        self.app.session_id = None;
        let start = Message::AppSession(AppSession::Start {
            application_id: settings.application_id,
            protocol_version: settings.protocol_version,
            duration: self.app.requested_seconds(),
        });
        if let Err((e, _)) = self.send(start, Waiting::AppStart, now) {
            self.lose(Loss::Failed(e.to_string()), now);
        }
    }

    /// The switch answered `StartApplicationSession`.
    pub(super) fn app_started(&mut self, result: Result<Message, LinkError>, now: Instant) {
        let error = match result {
            Ok(Message::AppSession(AppSession::StartPos {
                session_id,
                duration,
                ..
            })) => {
                let requested = self.app.requested_seconds();
                let granted = duration.filter(|d| *d > 0).unwrap_or(requested);
                info!(switch = %self.switch, link = self.link, session = %session_id, granted_s = granted, "ECMA-354 application session open");
                self.app.session_id = Some(session_id);
                self.app.granted = Duration::from_secs(u64::from(granted));
                self.app.next_reset = Some(now + self.app.reset_interval());
                return self.handshake(now);
            }
            Ok(Message::AppSession(AppSession::StartNeg(e))) => (e.label(), e.to_string()),
            Err(LinkError::Rejected { error, .. }) => ("other", format!("CSTAErrorCode {error}")),
            Err(e) => ("other", e.to_string()),
            Ok(other) => ("other", format!("an unexpected {}", other.name())),
        };
        let (reason, error) = error;
        self.out.push(Output::SessionFailed { reason });
        let why = format!("the switch refused the ECMA-354 application session: {error}");
        self.lose(Loss::Failed(why), now);
    }

    /// `StartApplicationSession` went unanswered.
    pub(super) fn app_start_expired(&mut self, now: Instant) {
        self.out.push(Output::SessionFailed { reason: "timeout" });
        let why = "the switch did not answer StartApplicationSession".to_owned();
        self.lose(Loss::Failed(why), now);
    }

    /// The keep-alive of a session link: reset the session's timer.
    pub(super) fn app_reset(&mut self, now: Instant) {
        let Some(session_id) = self.app.session_id.clone() else {
            return;
        };
        self.app.next_reset = Some(now + self.app.reset_interval());
        let reset = Message::AppSession(AppSession::Reset {
            session_id,
            duration: self.app.requested_seconds(),
        });
        if let Err((error, waiting)) = self.send(reset, Waiting::Keepalive, now) {
            self.refuse(waiting, error, now);
        }
    }

    /// The answer to a keep-alive on a session link: only a positive one ends a run of misses.
    pub(super) fn app_reset_answered(&mut self, result: Result<Message, LinkError>, now: Instant) {
        match result {
            Ok(Message::AppSession(AppSession::ResetPos { duration })) => {
                self.keepalive.misses = 0;
                if let Some(d) = duration.filter(|d| *d > 0) {
                    self.app.granted = Duration::from_secs(u64::from(d));
                }
            }
            other => {
                let what = match other {
                    Ok(Message::AppSession(AppSession::ResetNeg(e))) => e.to_string(),
                    Ok(m) => format!("an unexpected {}", m.name()),
                    Err(e) => e.to_string(),
                };
                let why = format!(
                    "{} session timer resets refused or unanswered in a row (last: {what})",
                    self.keepalive.misses + 1
                );
                debug!(switch = %self.switch, link = self.link, "session timer reset refused: {what}");
                self.keepalive_missed(why, now);
            }
        }
    }

    /// When the next session timer reset is due, on a session link with an open session.
    pub(super) fn app_reset_due(&self) -> Option<Option<Instant>> {
        self.app.session_id.as_ref()?;
        Some(self.app.next_reset)
    }

    /// The link is up: register for the switch's status reports, if configured.
    pub(super) fn app_up(&mut self, now: Instant) {
        if self.app.system_register {
            let request = Message::SystemRegister(SystemRegister::Request);
            if let Err((error, waiting)) = self.send(request, Waiting::Register, now) {
                self.refuse(waiting, error, now);
            }
        }
    }

    /// The answer to `SystemRegister`.
    pub(super) fn app_registered(&mut self, result: Result<Message, LinkError>) {
        match result {
            Ok(Message::SystemRegister(SystemRegister::Response { register_id })) => {
                info!(switch = %self.switch, link = self.link, register = ?register_id, "registered for the switch's status reports (SystemRegister)");
            }
            other => {
                info!(switch = %self.switch, link = self.link, "the switch did not accept SystemRegister ({other:?}); its status is still asked by the keep-alive");
            }
        }
    }

    /// A `SystemStatus` without its `systemStatus` (answered all the same): a warning, logged
    /// once per link, never a decode error.
    pub(super) fn empty_status(&mut self) {
        count(&self.stats.warnings);
        if !std::mem::replace(&mut self.app.warned_empty_status, true) {
            warn!(switch = %self.switch, link = self.link, "the switch sent a SystemStatus without systemStatus; answered, and read as no change (logged once per link)");
        }
    }

    /// The reason a link without sessions stays down when the switch refuses its
    /// `RequestSystemStatus`: most likely, it wants an application session first.
    pub(super) fn refused_handshake(&self, error: &CstaError) -> String {
        if self.uses_sessions() {
            format!("the switch refused RequestSystemStatus: {error}")
        } else {
            format!("the switch refused RequestSystemStatus ({error}): the switch wants an ECMA-354 application session before any CSTA request; set application-session = true on this switch")
        }
    }

    /// Close the application session on purpose (`StopApplicationSession`); `caller` hears
    /// the switch's answer, or at once when no session is open (nothing to stop).
    pub fn stop_session(&mut self, caller: C, now: Instant) -> Vec<Output<C>> {
        match self.app.session_id.take() {
            Some(session_id)
                if self.state == LinkState::Up || self.state == LinkState::Handshaking =>
            {
                let stop = Message::AppSession(AppSession::Stop { session_id });
                if let Err((error, waiting)) = self.send(stop, Waiting::Caller(caller), now) {
                    self.refuse(waiting, error, now);
                }
            }
            _ => {
                let result = Ok(Message::AppSession(AppSession::StopPos));
                self.out.push(Output::Answer { to: caller, result });
            }
        }
        self.flush()
    }
}
