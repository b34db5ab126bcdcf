//! The simulator's side of ECMA-354 application sessions (README, "pbx-sim", "Connecting your
//! PBX").
//!
//! Each link connection may open one session. The switch grants the duration asked for, capped
//! by its own setting (the preset's, or `POST /session` `{"grantMaxS": N}`), and enforces it:
//! a session whose timer is not reset in time is over, and the connection is closed (no more
//! answers, no more events). `StopApplicationSession` ends it (counted, so tests can see that
//! a router stopped its session). A switch that requires sessions (the `avaya` preset, or
//! `{"required": true}`) refuses every CSTA request outside one with a `CSTAErrorCode`
//! (`security`/`generic`). For tests, the control API can refuse the next start with a given
//! `definedError`, and delay or ignore timer resets.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::csta::{AppSession, CstaError, SessionError};

/// A link connection of the simulator (the state's connection IDs).
type ConnId = u64;

/// An open session.
#[derive(Debug)]
struct Open {
    id: String,
    grant: Duration,
    deadline: Instant,
}

/// What the switch does with timer resets (a fault for tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResetMode {
    /// Answer at once.
    Answer,
    /// Answer (and apply) after this long.
    Delay(Duration),
    /// Read and never answer nor apply.
    Ignore,
}

/// The sessions of one simulated switch.
#[derive(Debug)]
pub(crate) struct Sessions {
    /// Whether ECMA-354 requests are served at all.
    pub serves: bool,
    /// Whether CSTA requests outside a session are refused.
    pub required: bool,
    /// The longest grant, seconds.
    pub cap_s: u32,
    reject_next: Option<String>,
    pub resets: ResetMode,
    open: HashMap<ConnId, Open>,
    next_id: u64,
    started: u64,
    refused: u64,
    stopped: u64,
    expired: u64,
    resets_answered: u64,
    /// CSTA requests read on a connection without an open session.
    requests_outside_session: u64,
}

impl Sessions {
    /// The sessions of a switch of the given kind.
    pub(crate) fn new(serves: bool, required: bool, cap_s: u32) -> Sessions {
        Sessions {
            serves,
            required,
            cap_s,
            reject_next: None,
            resets: ResetMode::Answer,
            open: HashMap::new(),
            next_id: 0,
            started: 0,
            refused: 0,
            stopped: 0,
            expired: 0,
            resets_answered: 0,
            requests_outside_session: 0,
        }
    }

    /// Refuse the next `StartApplicationSession` with this `definedError` (None: no longer).
    pub(crate) fn reject_next_start(&mut self, defined_error: Option<String>) {
        self.reject_next = defined_error;
    }

    /// Answer a `StartApplicationSession` on `conn` asking for `requested` seconds.
    pub(crate) fn start(&mut self, conn: ConnId, requested: u32, now: Instant) -> AppSession {
        if let Some(e) = self.reject_next.take() {
            self.refused += 1;
            return AppSession::StartNeg(SessionError::Defined(e));
        }
        if requested == 0 {
            self.refused += 1;
            return AppSession::StartNeg(SessionError::Defined("invalidApplicationInfo".into()));
        }
        self.next_id += 1;
        self.started += 1;
        let granted = requested.min(self.cap_s.max(1));
        let id = format!(
            "{:08X}-{}",
            0x5E55_0000_u32 + self.next_id as u32,
            self.next_id
        );
        let grant = Duration::from_secs(u64::from(granted));
        self.open.insert(
            conn,
            Open {
                id: id.clone(),
                grant,
                deadline: now + grant,
            },
        );
        AppSession::StartPos {
            session_id: id,
            protocol_version: None,
            duration: Some(granted),
        }
    }

    /// Apply a timer reset of `session_id` on `conn`.
    pub(crate) fn reset(&mut self, conn: ConnId, session_id: &str, now: Instant) -> AppSession {
        match self.open.get_mut(&conn) {
            Some(o) if o.id == session_id && o.deadline > now => {
                o.deadline = now + o.grant;
                self.resets_answered += 1;
                AppSession::ResetPos {
                    duration: Some(o.grant.as_secs() as u32),
                }
            }
            _ => AppSession::ResetNeg(SessionError::Defined("invalidSessionID".into())),
        }
    }

    /// End `session_id` on `conn`.
    pub(crate) fn stop(&mut self, conn: ConnId, session_id: &str) -> AppSession {
        match self.open.get(&conn) {
            Some(o) if o.id == session_id => {
                self.open.remove(&conn);
                self.stopped += 1;
                AppSession::StopPos
            }
            _ => AppSession::StopNeg(SessionError::Defined("invalidSessionID".into())),
        }
    }

    /// A CSTA request was read on `conn`: the refusal when it is outside a session on a
    /// switch that requires one.
    pub(crate) fn gate(&mut self, conn: ConnId) -> Option<CstaError> {
        if self.open.contains_key(&conn) {
            return None;
        }
        self.requests_outside_session += 1;
        self.required.then(|| CstaError::new("security", "generic"))
    }

    /// Whether the session of `conn` ran out (it is then over, and counted once).
    pub(crate) fn expired(&mut self, conn: ConnId, now: Instant) -> bool {
        match self.open.get(&conn) {
            Some(o) if o.deadline <= now => {
                self.open.remove(&conn);
                self.expired += 1;
                true
            }
            _ => false,
        }
    }

    /// Forget a closed connection (its session goes with it).
    pub(crate) fn remove_conn(&mut self, conn: ConnId) {
        self.open.remove(&conn);
    }

    /// The sessions as JSON, for `GET /state`.
    pub(crate) fn json(&self) -> Value {
        let resets = match self.resets {
            ResetMode::Answer => json!("answer"),
            ResetMode::Delay(d) => json!({ "delayMs": d.as_millis() as u64 }),
            ResetMode::Ignore => json!("ignore"),
        };
        json!({
            "served": self.serves,
            "required": self.required,
            "grantMaxS": self.cap_s,
            "open": self.open.len(),
            "started": self.started,
            "refused": self.refused,
            "stopped": self.stopped,
            "expired": self.expired,
            "resetsAnswered": self.resets_answered,
            "requestsOutsideSession": self.requests_outside_session,
            "rejectNextStart": self.reject_next,
            "resets": resets,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn grants_at_most_the_cap_and_enforces_it() {
        let t0 = Instant::now();
        let mut s = Sessions::new(true, true, 2);
        assert!(s.gate(1).is_some(), "required: refused outside a session");
        let AppSession::StartPos {
            session_id,
            duration,
            ..
        } = s.start(1, 180, t0)
        else {
            panic!()
        };
        assert_eq!(duration, Some(2));
        assert_eq!(s.json()["requestsOutsideSession"], 1);
        assert!(s.gate(1).is_none());
        let reset = s.reset(1, &session_id, t0 + Duration::from_millis(1500));
        assert_eq!(reset, AppSession::ResetPos { duration: Some(2) });
        assert!(!s.expired(1, t0 + Duration::from_millis(3000)));
        assert!(s.expired(1, t0 + Duration::from_millis(3600)));
        assert!(matches!(
            s.reset(1, &session_id, t0 + Duration::from_millis(3700)),
            AppSession::ResetNeg(_)
        ));
    }

    #[test]
    fn a_refused_start_and_a_stop_are_counted() {
        let t0 = Instant::now();
        let mut s = Sessions::new(true, false, 180);
        s.reject_next_start(Some("invalidApplicationInfo".into()));
        assert_eq!(
            s.start(1, 60, t0),
            AppSession::StartNeg(SessionError::Defined("invalidApplicationInfo".into()))
        );
        let AppSession::StartPos { session_id, .. } = s.start(1, 60, t0) else {
            panic!()
        };
        assert_eq!(
            s.stop(1, "nope"),
            AppSession::StopNeg(SessionError::Defined("invalidSessionID".into()))
        );
        assert_eq!(s.stop(1, &session_id), AppSession::StopPos);
        assert_eq!(
            (s.json()["stopped"].as_u64(), s.json()["refused"].as_u64()),
            (Some(1), Some(1))
        );
    }
}
