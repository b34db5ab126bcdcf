//! Invoke ID allocation for one link.
//!
//! IDs `0001`–`9998` are handed out in order, wrapping after `9998`, skipping any ID that is
//! still reserved (in flight, or timed out and not yet answered). When every ID is reserved the
//! link is overloaded: the caller answers the request with TOO_MANY_REQ instead of waiting.

use crate::csta::InvokeId;
use std::collections::HashSet;

/// Hands out invoke IDs that are not in use.
#[derive(Debug, Clone)]
pub struct InvokeAllocator {
    next: u16,
    in_use: HashSet<u16>,
}

impl InvokeAllocator {
    /// An allocator whose first ID is `first` (clamped into `0001`–`9998`). Starting elsewhere
    /// than 1 lets tests reach the wrap-around quickly.
    pub fn new(first: u16) -> InvokeAllocator {
        InvokeAllocator {
            next: first.clamp(InvokeId::FIRST_REQUEST, InvokeId::LAST_REQUEST),
            in_use: HashSet::new(),
        }
    }

    /// The next free ID, reserved until [`release`](Self::release); `None` when all 9998 are
    /// reserved.
    pub fn allocate(&mut self) -> Option<InvokeId> {
        let span = usize::from(InvokeId::LAST_REQUEST - InvokeId::FIRST_REQUEST + 1);
        if self.in_use.len() >= span {
            return None;
        }
        loop {
            let candidate = self.next;
            self.next = if candidate >= InvokeId::LAST_REQUEST {
                InvokeId::FIRST_REQUEST
            } else {
                candidate + 1
            };
            if self.in_use.insert(candidate) {
                return InvokeId::new(candidate);
            }
        }
    }

    /// Free an ID (its answer arrived, or the link was reset).
    pub fn release(&mut self, id: InvokeId) {
        self.in_use.remove(&id.get());
    }

    /// Free every ID (the link was reset). The counter keeps its position, so IDs are not
    /// reused sooner than needed.
    pub fn release_all(&mut self) {
        self.in_use.clear();
    }

    /// How many IDs are reserved.
    pub fn in_use(&self) -> usize {
        self.in_use.len()
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
        for _ in 0..9998 {
            assert!(b.allocate().is_some());
        }
        assert!(b.allocate().is_none(), "exhaustion is reported");
        b.release(InvokeId::new(5).unwrap());
        assert_eq!(b.allocate().unwrap().get(), 5);
    }
}
