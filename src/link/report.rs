//! What a link says in the log about its failures, so that an unreachable switch is visible at
//! the default log level without flooding it.
//!
//! A link retries every few seconds (the reconnect back-off) for as long as its switch is
//! unreachable, so logging every failed attempt would flood the log, and logging none (as a
//! refused connect during a switch restart might deserve) hides a dead PBX from a newcomer. The
//! rule:
//!
//! - the first failure of a down period is a WARN (the link was lost, or it could not be
//!   established), with the reason and the delay before the next attempt;
//! - later failures are logged at debug only, except for a reminder at most once every
//!   [`REMINDER_EVERY`] (one minute): a WARN saying the link is still down, since when, how
//!   many failures, the last reason and when the next retry is;
//! - the link coming up ends the period with an INFO that says how long it was down.

use std::time::{Duration, Instant};

/// At most one "still down" reminder per link this often.
pub const REMINDER_EVERY: Duration = Duration::from_secs(60);

/// How to report one failure of the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The first failure of a down period: a WARN.
    First,
    /// A reminder that the link is still down: a WARN.
    StillDown {
        /// How long the link has been down.
        down_for: Duration,
        /// Failures since it went down (the loss or the first failed attempt included).
        failures: u64,
    },
    /// Nothing at WARN (debug only).
    Quiet,
}

/// The down period of one link, if it is in one.
#[derive(Debug, Clone, Default)]
pub struct DownReport {
    period: Option<Period>,
}

#[derive(Debug, Clone)]
struct Period {
    since: Instant,
    last_warn: Instant,
    failures: u64,
}

impl DownReport {
    /// A link that failed at `now` (a lost connection, a failed connect or handshake).
    /// `already_warned`: the caller logged this failure at WARN itself (a certificate problem
    /// is reported at every attempt), so a reminder is not needed now.
    pub fn failed(&mut self, now: Instant, already_warned: bool) -> Report {
        match &mut self.period {
            None => {
                self.period = Some(Period {
                    since: now,
                    last_warn: now,
                    failures: 1,
                });
                if already_warned {
                    Report::Quiet
                } else {
                    Report::First
                }
            }
            Some(p) => {
                p.failures += 1;
                if already_warned {
                    p.last_warn = now;
                    return Report::Quiet;
                }
                if now.saturating_duration_since(p.last_warn) >= REMINDER_EVERY {
                    p.last_warn = now;
                    Report::StillDown {
                        down_for: now.saturating_duration_since(p.since),
                        failures: p.failures,
                    }
                } else {
                    Report::Quiet
                }
            }
        }
    }

    /// The link came up at `now`: how long it was down and how many failures it had, if it
    /// was down.
    pub fn up(&mut self, now: Instant) -> Option<(Duration, u64)> {
        self.period
            .take()
            .map(|p| (now.saturating_duration_since(p.since), p.failures))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_failure_warns_then_one_reminder_a_minute() {
        let t0 = Instant::now();
        let mut r = DownReport::default();
        assert_eq!(r.failed(t0, false), Report::First);
        // A retry every 100 ms for a minute: quiet.
        let mut warns = 0;
        for i in 1..600u32 {
            if r.failed(t0 + Duration::from_millis(100) * i, false) != Report::Quiet {
                warns += 1;
            }
        }
        assert_eq!(warns, 0);
        assert_eq!(
            r.failed(t0 + Duration::from_secs(60), false),
            Report::StillDown {
                down_for: Duration::from_secs(60),
                failures: 601
            }
        );
        assert_eq!(r.failed(t0 + Duration::from_secs(61), false), Report::Quiet);
        assert!(matches!(
            r.failed(t0 + Duration::from_secs(120), false),
            Report::StillDown { .. }
        ));
        assert_eq!(
            r.up(t0 + Duration::from_secs(125)),
            Some((Duration::from_secs(125), 603))
        );
        assert_eq!(r.up(t0 + Duration::from_secs(126)), None, "already up");
        // A new down period starts with a WARN again.
        assert_eq!(
            r.failed(t0 + Duration::from_secs(130), false),
            Report::First
        );
    }

    #[test]
    fn a_failure_already_warned_about_postpones_the_reminder() {
        let t0 = Instant::now();
        let mut r = DownReport::default();
        assert_eq!(r.failed(t0, true), Report::Quiet, "said once is enough");
        assert_eq!(r.failed(t0 + Duration::from_secs(59), true), Report::Quiet);
        assert_eq!(r.failed(t0 + Duration::from_secs(61), false), Report::Quiet);
        assert!(matches!(
            r.failed(t0 + Duration::from_secs(120), false),
            Report::StillDown { failures: 4, .. }
        ));
    }
}
