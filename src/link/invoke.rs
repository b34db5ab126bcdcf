//! Invoke ID allocation and reservation for one link.
//!
//! IDs `0001`–`9998` are handed out in order, wrapping after `9998`, skipping any ID that is
//! still reserved. An ID is reserved from the moment its request is sent until its answer
//! arrives, or until the link is reset: a request that timed out keeps its ID ("expired"), so
//! that its late answer can never be taken for the answer to a newer request.
//!
//! Two rules keep a switch that stops answering some requests from wedging the link for good:
//!
//! - ordinary requests may reserve at most [`ORDINARY_LIMIT`] IDs: one is always left for the
//!   link's own keep-alive (and handshake), which are allocated with
//!   [`InvokeAllocator::allocate_spare`];
//! - [`InvokeAllocator::check`] tells the link to reset (which frees every ID) when fewer than
//!   [`LOW_FREE`] IDs are free and at least half of the reserved ones have been expired for
//!   longer than `request-timeout`, or when any ID has been expired for
//!   [`STUCK_FACTOR`] × `request-timeout`.
//!
//! The counts behind those rules are kept as the IDs change state, and expiries are queued in
//! the order they happened, so a check costs a few comparisons, not a scan of the IDs.

use crate::csta::InvokeId;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

/// How many IDs exist (`0001`–`9998`).
pub const ID_SPACE: usize = (InvokeId::LAST_REQUEST - InvokeId::FIRST_REQUEST + 1) as usize;
/// How many IDs ordinary requests may hold at once: one is kept for the keep-alive.
pub const ORDINARY_LIMIT: usize = ID_SPACE - 1;
/// Below this many free IDs, a link whose reserved IDs are mostly long expired is reset.
pub const LOW_FREE: usize = 1000;
/// An ID expired for this many request timeouts resets the link whatever the counts.
pub const STUCK_FACTOR: u32 = 10;

/// What a reserved ID is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Its request awaits an answer, within its timeout.
    InFlight,
    /// Its request timed out and is still unanswered; `stamp` tells this expiry from a later
    /// one of the same ID, `long` says it has been expired for longer than the timeout.
    Expired { stamp: u64, long: bool },
}

/// Why a link must be reset to win its invoke IDs back (see [`InvokeAllocator::check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exhaustion {
    /// IDs reserved (in flight or expired).
    pub reserved: usize,
    /// IDs whose request timed out and was never answered.
    pub expired: usize,
    /// Of those, the ones expired for longer than `request-timeout`.
    pub long_expired: usize,
    /// How long the oldest unanswered expired request has been expired.
    pub oldest: Duration,
}

impl fmt::Display for Exhaustion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the switch is not answering some requests: {} of {ID_SPACE} invoke IDs are reserved, {} of them by requests that timed out and were never answered (the first of those timed out {:.1} s ago); resetting the link to free them",
            self.reserved,
            self.expired,
            self.oldest.as_secs_f64()
        )
    }
}

/// Hands out invoke IDs that are not in use and keeps the reservation counts.
#[derive(Debug, Clone)]
pub struct InvokeAllocator {
    next: u16,
    slots: HashMap<u16, Slot>,
    /// The reserved IDs taken by [`allocate_spare`](Self::allocate_spare) (a keep-alive or
    /// two at most).
    spare: Vec<u16>,
    in_flight: usize,
    expired: usize,
    long_expired: usize,
    stamp: u64,
    /// Expiries not yet older than the timeout, oldest first.
    recent: VecDeque<(Instant, u16, u64)>,
    /// Expiries older than the timeout, oldest first (answered ones are dropped lazily).
    old: VecDeque<(Instant, u16, u64)>,
}

impl InvokeAllocator {
    /// An allocator whose first ID is `first` (clamped into `0001`–`9998`). Starting elsewhere
    /// than 1 lets tests reach the wrap-around quickly.
    pub fn new(first: u16) -> InvokeAllocator {
        InvokeAllocator {
            next: first.clamp(InvokeId::FIRST_REQUEST, InvokeId::LAST_REQUEST),
            slots: HashMap::new(),
            spare: Vec::new(),
            in_flight: 0,
            expired: 0,
            long_expired: 0,
            stamp: 0,
            recent: VecDeque::new(),
            old: VecDeque::new(),
        }
    }

    /// The next free ID for an ordinary request, reserved until [`release`](Self::release);
    /// `None` (overload) when ordinary requests hold [`ORDINARY_LIMIT`] IDs, so that the
    /// keep-alive always finds one.
    pub fn allocate(&mut self) -> Option<InvokeId> {
        if self.slots.len() - self.spare.len() >= ORDINARY_LIMIT {
            return None;
        }
        self.take()
    }

    /// The next free ID for the link's own keep-alive or handshake: may take the one ordinary
    /// requests leave.
    pub fn allocate_spare(&mut self) -> Option<InvokeId> {
        let id = self.take()?;
        self.spare.push(id.get());
        Some(id)
    }

    fn take(&mut self) -> Option<InvokeId> {
        if self.slots.len() >= ID_SPACE {
            return None;
        }
        loop {
            let candidate = self.next;
            self.next = if candidate >= InvokeId::LAST_REQUEST {
                InvokeId::FIRST_REQUEST
            } else {
                candidate + 1
            };
            if let std::collections::hash_map::Entry::Vacant(e) = self.slots.entry(candidate) {
                e.insert(Slot::InFlight);
                self.in_flight += 1;
                return InvokeId::new(candidate);
            }
        }
    }

    /// The request on `id` timed out at `now`: the ID stays reserved, counted as expired.
    pub fn expire(&mut self, id: InvokeId, now: Instant) {
        let Some(slot) = self.slots.get_mut(&id.get()) else {
            return;
        };
        if *slot != Slot::InFlight {
            return;
        }
        self.stamp += 1;
        *slot = Slot::Expired {
            stamp: self.stamp,
            long: false,
        };
        self.in_flight -= 1;
        self.expired += 1;
        self.recent.push_back((now, id.get(), self.stamp));
    }

    /// Free an ID (its answer arrived, in time or late). Returns whether it had expired.
    pub fn release(&mut self, id: InvokeId) -> bool {
        self.spare.retain(|s| *s != id.get());
        match self.slots.remove(&id.get()) {
            Some(Slot::InFlight) => {
                self.in_flight -= 1;
                false
            }
            Some(Slot::Expired { long, .. }) => {
                self.expired -= 1;
                if long {
                    self.long_expired -= 1;
                }
                true
            }
            None => false,
        }
    }

    /// Free every ID (the link was reset). The counter keeps its position, so IDs are not
    /// reused sooner than needed.
    pub fn release_all(&mut self) {
        self.slots.clear();
        self.spare.clear();
        self.recent.clear();
        self.old.clear();
        self.in_flight = 0;
        self.expired = 0;
        self.long_expired = 0;
    }

    fn still_expired(&self, id: u16, stamp: u64) -> bool {
        matches!(self.slots.get(&id), Some(Slot::Expired { stamp: s, .. }) if *s == stamp)
    }

    /// Age the expiries (`timeout` is `request-timeout`) and say whether the link must be
    /// reset: fewer than [`LOW_FREE`] IDs free and at least half of the reserved ones expired
    /// for longer than `timeout`, or one expired for [`STUCK_FACTOR`] × `timeout`.
    pub fn check(&mut self, now: Instant, timeout: Duration) -> Option<Exhaustion> {
        while let Some(&(at, id, stamp)) = self.recent.front() {
            if now.saturating_duration_since(at) <= timeout {
                break;
            }
            self.recent.pop_front();
            if let Some(Slot::Expired { stamp: s, long }) = self.slots.get_mut(&id) {
                if *s == stamp {
                    *long = true;
                    self.long_expired += 1;
                    self.old.push_back((at, id, stamp));
                }
            }
        }
        while let Some(&(_, id, stamp)) = self.old.front() {
            if self.still_expired(id, stamp) {
                break;
            }
            self.old.pop_front();
        }
        let oldest = self
            .old
            .front()
            .or(self.recent.front())
            .map(|(at, _, _)| now.saturating_duration_since(*at))
            .unwrap_or_default();
        let reserved = self.slots.len();
        let crowded = self.free() < LOW_FREE && self.long_expired * 2 >= reserved;
        let stuck = !self.old.is_empty() && oldest >= timeout.saturating_mul(STUCK_FACTOR);
        (crowded || stuck).then_some(Exhaustion {
            reserved,
            expired: self.expired,
            long_expired: self.long_expired,
            oldest,
        })
    }

    /// The next instant at which [`check`](Self::check) may answer differently without any
    /// other change: when the oldest recent expiry becomes older than `timeout`, or when the
    /// oldest long expiry reaches [`STUCK_FACTOR`] × `timeout`. `None` while no ID is expired.
    /// It may be early (an expiry answered since), never late.
    pub fn next_check(&self, timeout: Duration) -> Option<Instant> {
        let aging = self
            .recent
            .front()
            .and_then(|(at, _, _)| at.checked_add(timeout + Duration::from_nanos(1)));
        let stuck = self
            .old
            .front()
            .and_then(|(at, _, _)| at.checked_add(timeout.saturating_mul(STUCK_FACTOR)));
        match (aging, stuck) {
            (Some(a), Some(s)) => Some(a.min(s)),
            (a, s) => a.or(s),
        }
    }

    /// How many IDs are reserved (in flight or expired).
    pub fn in_use(&self) -> usize {
        self.slots.len()
    }

    /// How many IDs await an answer within their timeout.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// How many IDs are held by requests that timed out and were never answered.
    pub fn expired(&self) -> usize {
        self.expired
    }

    /// How many IDs are free.
    pub fn free(&self) -> usize {
        ID_SPACE - self.slots.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn wraps_and_skips_reserved() {
        let mut a = InvokeAllocator::new(9997);
        let first = a.allocate().unwrap();
        assert_eq!(first.get(), 9997);
        let second = a.allocate().unwrap();
        assert_eq!(second.get(), 9998);
        let third = a.allocate().unwrap();
        assert_eq!(third.get(), 1, "wraps after 9998");
        a.release(second);
        a.release(third);
        // Burn through the rest of the range; 9997 is still reserved and must be skipped.
        let mut last = 0;
        for _ in 0..9995 {
            last = a.allocate().unwrap().get();
            a.release(InvokeId::new(last).unwrap());
        }
        assert_eq!(last, 9996);
        assert_eq!(a.allocate().unwrap().get(), 9998, "9997 is in flight");
        a.release(first);
        let mut b = InvokeAllocator::new(1);
        for _ in 0..ORDINARY_LIMIT {
            assert!(b.allocate().is_some());
        }
        assert!(b.allocate().is_none(), "ordinary requests leave one ID");
        b.release(InvokeId::new(5).unwrap());
        assert_eq!(b.allocate().unwrap().get(), 9998, "in order");
        assert!(b.allocate().is_none());
        b.release(InvokeId::new(7).unwrap());
        assert_eq!(
            b.allocate().unwrap().get(),
            5,
            "wrapped, skipping reserved ones"
        );
    }

    #[test]
    fn one_id_is_always_left_for_the_keepalive() {
        let mut a = InvokeAllocator::new(1);
        for _ in 0..ORDINARY_LIMIT {
            a.allocate().unwrap();
        }
        assert_eq!(a.in_use(), 9997);
        assert!(a.allocate().is_none());
        let keepalive = a.allocate_spare().unwrap();
        assert_eq!(keepalive.get(), 9998);
        assert!(a.allocate_spare().is_none(), "all 9998 reserved");
        assert_eq!(a.free(), 0);
        // The keep-alive's answer frees its ID for the next one.
        assert!(!a.release(keepalive));
        assert_eq!(a.allocate_spare().unwrap().get(), 9998);

        // A keep-alive in flight does not take a place from ordinary requests.
        let mut b = InvokeAllocator::new(1);
        let keepalive = b.allocate_spare().unwrap();
        for _ in 0..ORDINARY_LIMIT {
            b.allocate().unwrap();
        }
        assert!(b.allocate().is_none());
        assert_eq!(b.free(), 0);
        b.release(keepalive);
        assert!(b.allocate().is_none(), "still 9,997 ordinary ones");
        assert!(b.allocate_spare().is_some());
    }

    #[test]
    fn expired_ids_stay_reserved_and_are_counted() {
        let t0 = Instant::now();
        let mut a = InvokeAllocator::new(1);
        let ids: Vec<InvokeId> = (0..3).map(|_| a.allocate().unwrap()).collect();
        assert_eq!((a.in_flight(), a.expired()), (3, 0));
        a.expire(ids[0], t0);
        a.expire(ids[0], t0); // twice is once
        assert_eq!((a.in_flight(), a.expired(), a.in_use()), (2, 1, 3));
        // A late answer frees the ID and says it was late.
        assert!(a.release(ids[0]));
        assert_eq!((a.in_flight(), a.expired(), a.in_use()), (2, 0, 2));
        // Releasing an unknown ID changes nothing.
        assert!(!a.release(ids[0]));
        a.expire(ids[1], t0);
        a.release_all();
        assert_eq!((a.in_flight(), a.expired(), a.in_use()), (0, 0, 0));
        assert_eq!(
            a.check(t0 + Duration::from_secs(100), Duration::from_secs(1)),
            None
        );
        // Expiring an ID that is not in flight (already answered) does nothing.
        a.expire(ids[2], t0);
        assert_eq!(a.expired(), 0);
    }

    #[test]
    fn crowded_with_long_expired_ids_resets() {
        let timeout = Duration::from_secs(4);
        let t0 = Instant::now();
        let mut a = InvokeAllocator::new(1);
        let ids: Vec<InvokeId> = (0..9500).map(|_| a.allocate().unwrap()).collect();
        // 4,850 time out; the others stay in flight.
        for id in &ids[..4850] {
            a.expire(*id, t0);
        }
        assert_eq!(a.free(), 498);
        // Expired, but not yet for longer than the timeout: no reset.
        assert_eq!(a.check(t0 + timeout, timeout), None);
        // Now 4,850 of 9,500 have been expired for longer than the timeout.
        let ex = a
            .check(t0 + timeout + Duration::from_millis(1), timeout)
            .unwrap();
        assert_eq!(
            (ex.reserved, ex.expired, ex.long_expired),
            (9500, 4850, 4850)
        );
        assert!(ex
            .to_string()
            .contains("9500 of 9998 invoke IDs are reserved, 4850 of them"));
        // Two hundred late answers: 4,650 of 9,300 is still half.
        for id in &ids[..200] {
            assert!(a.release(*id));
        }
        let later = t0 + timeout * 2;
        assert!(a.check(later, timeout).is_some());
        // One more late answer and it is less than half.
        assert!(a.release(ids[200]));
        assert_eq!(a.check(later, timeout), None);
        // Plenty free (answers to the in-flight ones): no reset even if all the rest expired.
        for id in &ids[4850..] {
            assert!(!a.release(*id));
        }
        assert!(a.free() >= LOW_FREE);
        assert_eq!(a.check(later, timeout), None);
    }

    #[test]
    fn few_free_but_mostly_in_flight_does_not_reset() {
        let timeout = Duration::from_secs(1);
        let t0 = Instant::now();
        let mut a = InvokeAllocator::new(1);
        let ids: Vec<InvokeId> = (0..ORDINARY_LIMIT).map(|_| a.allocate().unwrap()).collect();
        for id in &ids[..4000] {
            a.expire(*id, t0);
        }
        // Less than half long expired: a busy switch, not a deaf one.
        assert_eq!(a.check(t0 + timeout * 2, timeout), None);
    }

    #[test]
    fn one_id_expired_for_ten_timeouts_resets() {
        let timeout = Duration::from_millis(100);
        let t0 = Instant::now();
        let mut a = InvokeAllocator::new(1);
        let stuck = a.allocate().unwrap();
        a.expire(stuck, t0);
        // A later one that is answered late must not keep the older one from counting.
        let other = a.allocate().unwrap();
        a.expire(other, t0 + Duration::from_millis(50));
        assert!(a.release(other));
        assert_eq!(a.check(t0 + timeout * 5, timeout), None);
        assert_eq!(
            a.check(t0 + timeout * 10 - Duration::from_millis(1), timeout),
            None
        );
        let ex = a.check(t0 + timeout * 10, timeout).unwrap();
        assert_eq!((ex.reserved, ex.expired, ex.long_expired), (1, 1, 1));
        assert_eq!(ex.oldest, timeout * 10);
        // Its late answer (before the reset) clears the condition.
        assert!(a.release(stuck));
        assert_eq!(a.check(t0 + timeout * 11, timeout), None);
    }

    #[test]
    fn an_id_expired_again_after_reuse_is_aged_from_its_new_expiry() {
        let timeout = Duration::from_millis(100);
        let t0 = Instant::now();
        let mut a = InvokeAllocator::new(9998);
        let id = a.allocate().unwrap();
        a.expire(id, t0);
        assert!(a.release(id));
        // The same ID again (after a full cycle), expiring much later.
        for _ in 0..ID_SPACE - 1 {
            let x = a.allocate().unwrap();
            a.release(x);
        }
        let again = a.allocate().unwrap();
        assert_eq!(again, id);
        let t1 = t0 + timeout * 8;
        a.expire(again, t1);
        // Ten timeouts after the first expiry, but only two after the second: no reset.
        assert_eq!(a.check(t0 + timeout * 10, timeout), None);
        assert!(a.check(t1 + timeout * 10, timeout).is_some());
    }
}
