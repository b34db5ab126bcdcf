//! Capped exponential back-off with jitter, for reconnecting links.
//!
//! Each failed attempt doubles the base delay up to the cap; the actual delay is drawn
//! uniformly from the upper half of the base ("equal jitter"), so a fleet of routers that lost
//! a switch at the same moment do not all knock on its door at the same instant.

use rand::Rng;
use std::time::Duration;

/// Reconnect delays for one link.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A back-off starting at `min` and never exceeding `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32 << self.attempt.min(20);
        self.attempt = self.attempt.saturating_add(1);
        let base = self.min.saturating_mul(factor).min(self.max);
        let half = base / 2;
        let jitter = rand::rng().random_range(0..=half.as_micros().max(1) as u64);
        half + Duration::from_micros(jitter)
    }

    /// New bounds (a reload), the attempts so far kept.
    pub fn set_bounds(&mut self, min: Duration, max: Duration) {
        self.min = min;
        self.max = max.max(min);
    }

    /// Start again from `min` (after a successful connection).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(101));
        for _ in 0..30 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(2) + Duration::from_micros(1));
        }
        let late = b.next_delay();
        assert!(
            late >= Duration::from_secs(1),
            "capped base is 2 s, half of it at least"
        );
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(101));
    }
}
