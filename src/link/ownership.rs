//! What a switch's links need to know of who owns the switch: whether they may still act on it
//! ([`Fence`]), and which event numbers are theirs to give ([`Sequence`]).
//!
//! A router alone owns its switches for ever: its fence is always open and its numbers run
//! from 1 without end. In a cluster, a node owns a switch through a lease it must renew: the
//! fence closes at the lease's deadline on the node's own monotonic clock, and the links then
//! stop writing to the switch and stop handing what they read to anyone, so a node that lost
//! its lease (or woke from a pause) never acts on a switch another node may own. Event numbers
//! come in blocks reserved in the cluster, so they keep increasing across owners without a
//! round trip per event.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// The process-wide origin of the fences' clock.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Nanoseconds from [`origin`] to `at` (0 before it).
fn nanos(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(origin()).as_nanos()).unwrap_or(u64::MAX)
}

/// Until when a node may act on a switch, on its monotonic clock. Cheap to clone and to check
/// from any thread (one atomic load).
#[derive(Debug, Clone)]
pub struct Fence(Arc<AtomicU64>);

/// How long before a lease's expiry (counted from a renewal's send time) its owner stops
/// acting: max(250 ms, `ttl`/5).
pub fn fence_margin(ttl: Duration) -> Duration {
    (ttl / 5).max(Duration::from_millis(250))
}

/// A deadline that never comes.
const OPEN: u64 = u64::MAX;

impl Default for Fence {
    fn default() -> Self {
        Fence::open()
    }
}

impl Fence {
    /// A fence that never closes (a router without a cluster owns its switches for ever).
    pub fn open() -> Fence {
        Fence(Arc::new(AtomicU64::new(OPEN)))
    }

    /// A fence already closed (until armed).
    pub fn closed() -> Fence {
        Fence(Arc::new(AtomicU64::new(0)))
    }

    /// Whether the switch may be acted on now.
    pub fn check(&self) -> bool {
        self.check_at(Instant::now())
    }

    /// Whether the switch may be acted on at `now`.
    pub fn check_at(&self, now: Instant) -> bool {
        nanos(now) < self.0.load(Ordering::Acquire)
    }

    /// A lease renewal sent at `renew_sent` succeeded: the fence stays open until
    /// `renew_sent + ttl − max(250 ms, ttl / 5)` (the margin covers clock drift between this
    /// node and the NATS server and the time a renewal takes to be stored).
    pub fn arm(&self, renew_sent: Instant, ttl: Duration) {
        let deadline = renew_sent + ttl.saturating_sub(fence_margin(ttl));
        // Only ever later: a slow answer to an older renewal must not pull the deadline back.
        self.0.fetch_max(nanos(deadline), Ordering::AcqRel);
    }

    /// Close the fence now (the lease was lost or given up).
    pub fn close(&self) {
        self.0.store(0, Ordering::Release);
    }

    /// The deadline, if the fence is neither open for ever nor closed.
    pub fn deadline(&self) -> Option<Instant> {
        match self.0.load(Ordering::Acquire) {
            0 | OPEN => None,
            n => Some(origin() + Duration::from_nanos(n)),
        }
    }
}

/// A switch's event numbers (`eventSeq`): strictly increasing, handed out from a block, and from
/// the next block once one was added. Why blocks: in a cluster each owner reserves its numbers
/// in NATS, and a round trip per event would put NATS on the link's path.
pub struct Sequence {
    /// The last number handed out.
    last: AtomicU64,
    /// The last number of the current block.
    end: AtomicU64,
    /// When `last` reaches this, [`Sequence::on_low`] asks for the next block.
    low: AtomicU64,
    next_block: Mutex<Option<Range<u64>>>,
    on_low: Option<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for Sequence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sequence")
            .field("last", &self.last.load(Ordering::Relaxed))
            .field("end", &self.end.load(Ordering::Relaxed))
            .finish()
    }
}

impl Sequence {
    /// Numbers from 1 without end (a router without a cluster).
    pub fn unbounded() -> Arc<Sequence> {
        Arc::new(Sequence {
            last: AtomicU64::new(0),
            end: AtomicU64::new(u64::MAX),
            low: AtomicU64::new(u64::MAX),
            next_block: Mutex::new(None),
            on_low: None,
        })
    }

    /// The numbers of `block`; `on_low` is called once half of a block is used, to reserve the
    /// next one and [`add_block`](Self::add_block) it.
    pub fn block(block: Range<u64>, on_low: Box<dyn Fn() + Send + Sync>) -> Arc<Sequence> {
        let seq = Sequence {
            last: AtomicU64::new(block.start.saturating_sub(1)),
            end: AtomicU64::new(block.end.saturating_sub(1)),
            low: AtomicU64::new(midpoint(&block)),
            next_block: Mutex::new(None),
            on_low: Some(on_low),
        };
        Arc::new(seq)
    }

    /// The block after the current one (it must start after it).
    pub fn add_block(&self, block: Range<u64>) {
        *self
            .next_block
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(block);
    }

    /// The next number; `None` when the blocks are used up (the caller must not number
    /// anything: a later owner's numbers could repeat it).
    pub fn next(&self) -> Option<u64> {
        loop {
            let n = self.last.fetch_add(1, Ordering::AcqRel).saturating_add(1);
            if n <= self.end.load(Ordering::Acquire) {
                if n == self.low.load(Ordering::Relaxed) {
                    if let Some(on_low) = &self.on_low {
                        on_low();
                    }
                }
                return Some(n);
            }
            // The block is used up: move to the next one, if there is one.
            let mut next = self
                .next_block
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if self.last.load(Ordering::Acquire) <= self.end.load(Ordering::Acquire) {
                // Another link moved to the next block meanwhile.
                continue;
            }
            let block = next.take()?;
            // `last` first: a number taken between the two stores is then above the old
            // block's end and goes through this lock, never one between the two blocks.
            self.last
                .store(block.start.saturating_sub(1), Ordering::Release);
            self.low.store(midpoint(&block), Ordering::Relaxed);
            self.end
                .store(block.end.saturating_sub(1), Ordering::Release);
        }
    }
}

fn midpoint(block: &Range<u64>) -> u64 {
    block.start + (block.end - block.start) / 2
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn a_fence_is_open_until_the_renewal_s_deadline() {
        let f = Fence::closed();
        let t0 = Instant::now();
        assert!(!f.check_at(t0));
        let ttl = Duration::from_secs(3);
        f.arm(t0, ttl);
        // 3 s − max(250 ms, 600 ms) = 2.4 s after the renewal was sent.
        assert!(f.check_at(t0 + Duration::from_millis(2399)));
        assert!(!f.check_at(t0 + Duration::from_millis(2400)));
        // An older renewal answered late does not pull the deadline back.
        f.arm(t0 - Duration::from_secs(1), ttl);
        assert!(f.check_at(t0 + Duration::from_millis(2399)));
        // A short lease keeps at least 250 ms of margin.
        let g = Fence::closed();
        g.arm(t0, Duration::from_secs(1));
        assert!(g.check_at(t0 + Duration::from_millis(749)));
        assert!(!g.check_at(t0 + Duration::from_millis(750)));
        g.close();
        assert!(!g.check_at(t0));
        assert!(Fence::open().check_at(t0 + Duration::from_secs(1_000_000)));
    }

    #[test]
    fn numbers_increase_across_blocks_and_stop_when_used_up() {
        let asked = Arc::new(AtomicUsize::new(0));
        let a = asked.clone();
        let seq = Sequence::block(
            10..14,
            Box::new(move || {
                a.fetch_add(1, Ordering::Relaxed);
            }),
        );
        let got: Vec<u64> = std::iter::from_fn(|| seq.next()).collect();
        assert_eq!(got, [10, 11, 12, 13], "used up without a next block");
        assert_eq!(asked.load(Ordering::Relaxed), 1, "asked once, at half");
        seq.add_block(100..102);
        assert_eq!(seq.next(), Some(100));
        assert_eq!(seq.next(), Some(101));
        assert_eq!(seq.next(), None);
        let u = Sequence::unbounded();
        assert_eq!((u.next(), u.next()), (Some(1), Some(2)));
    }

    #[test]
    fn two_links_numbering_together_never_repeat_a_number() {
        let seq = Sequence::block(1..50_001, Box::new(|| {}));
        seq.add_block(100_000..150_000);
        let run = || {
            let seq = seq.clone();
            std::thread::spawn(move || std::iter::from_fn(|| seq.next()).collect::<Vec<u64>>())
        };
        let (a, b) = (run(), run());
        let mut all = a.join().unwrap();
        all.extend(b.join().unwrap());
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "a number given twice");
        assert_eq!(n, 100_000);
    }
}
