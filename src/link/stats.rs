//! The counters of one link: one set of books, kept by the link's session and read by
//! everyone else.
//!
//! The [`Session`](super::Session) counts into a [`LinkStats`] (atomics, so that the shutdown
//! sequence and tests can read them from any thread while the link runs). Prometheus sees the
//! same numbers: the link's driver hands them to [`Export::publish`] after each turn, which adds
//! what changed since the last turn to the metric handles. Nothing else increments a link
//! metric, so the two views cannot drift apart.

use crate::metrics::LinkMetrics;
use metrics::{Counter, Gauge};
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one link, shared with whoever wants to read them (shutdown, tests). Written by
/// the link's session only.
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
    /// CSTA events received on a known monitor.
    pub events_received: AtomicU64,
    /// Times the link stopped reading because `link-queue` frames it had read were still
    /// waiting for the router.
    pub read_pauses: AtomicU64,
    /// Requests in flight right now (timed-out ones excluded).
    pub in_flight: AtomicU64,
    /// Invoke IDs held by requests that timed out and were never answered (freed by a link
    /// reset).
    pub invoke_ids_expired: AtomicU64,
    /// Frames read but not quite as the standard has them (a `SystemStatus` without its
    /// `systemStatus`): answered, counted here rather than as decode errors.
    pub warnings: AtomicU64,
}

/// Add one to a counter of [`LinkStats`].
pub(super) fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// How one counter of [`LinkStats`] shows in Prometheus.
enum Series<'a> {
    /// A counter of its own (per switch or per link).
    Counter(&'a Counter),
    /// A level shared by the switch's links: each link adds its own changes.
    Level(&'a Gauge),
}

/// Number of rows in [`Export::table`].
const ROWS: usize = 11;

/// Carries a link's [`LinkStats`] to its Prometheus handles.
#[derive(Debug)]
pub(super) struct Export {
    metrics: LinkMetrics,
    /// The values last published, in the order of [`Export::table`].
    published: [u64; ROWS],
}

impl Export {
    /// An exporter to `metrics`, starting from zero.
    pub(super) fn new(metrics: LinkMetrics) -> Export {
        Export {
            metrics,
            published: [0; ROWS],
        }
    }

    /// The metric handles, for what the driver records itself (round trips, the link queue).
    pub(super) fn metrics(&self) -> &LinkMetrics {
        &self.metrics
    }

    /// Each counter with the series it is exported to: the one place that maps the books to
    /// Prometheus.
    fn table<'a>(stats: &'a LinkStats, m: &'a LinkMetrics) -> [(&'a AtomicU64, Series<'a>); ROWS] {
        [
            (&stats.decode_errors, Series::Counter(&m.decode_errors)),
            (&stats.late_answers, Series::Counter(&m.late_answers)),
            (&stats.reconnects, Series::Counter(&m.reconnects)),
            (&stats.framing_resets, Series::Counter(&m.framing_resets)),
            (
                &stats.keepalive_misses,
                Series::Counter(&m.keepalive_misses),
            ),
            (&stats.events_received, Series::Counter(&m.events_received)),
            (&stats.read_pauses, Series::Counter(&m.read_pauses)),
            (&stats.in_flight, Series::Level(&m.in_flight)),
            (&stats.in_flight, Series::Level(&m.invoke_ids_in_flight)),
            (
                &stats.invoke_ids_expired,
                Series::Level(&m.invoke_ids_expired),
            ),
            (&stats.warnings, Series::Counter(&m.warnings)),
        ]
    }

    /// Add to each series what its counter gained (or lost, for levels) since the last call.
    pub(super) fn publish(&mut self, stats: &LinkStats) {
        for (i, (value, series)) in Self::table(stats, &self.metrics).into_iter().enumerate() {
            let now = value.load(Ordering::Relaxed);
            let before = std::mem::replace(&mut self.published[i], now);
            match series {
                Series::Counter(c) if now > before => c.increment(now - before),
                Series::Level(g) if now > before => g.increment((now - before) as f64),
                Series::Level(g) if now < before => g.decrement((before - now) as f64),
                _ => {}
            }
        }
    }
}
