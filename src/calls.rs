//! Calls and their connIds.
//!
//! A connId is what clients and reporting systems store for a call: 16 lowercase hex digits,
//! the same at every device of the call, stable for the call's life and unique across router
//! restarts. The switch's call ID is not enough (switches reuse them), so each switch has a
//! [`CallTable`] mapping the call IDs it currently uses to connIds. The extension actors of the
//! call's devices share the entry (reference-counted by device); when the last device lets go the
//! entry goes, so a call ID reused later is a new call with a new connId. After a link loss the
//! entries are kept for `call-grace`, so a call ID seen again in that time keeps its connId.

use rand::Rng;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A new connId: 40 bits of milliseconds since the epoch and 24 random bits. Unique across
/// restarts (time moves on) and within a process (random bits, checked against live entries).
pub fn new_conn_id() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let random: u64 = rand::rng().random_range(0..(1 << 24));
    format!("{:016x}", ((millis & ((1 << 40) - 1)) << 24) | random)
}

#[derive(Debug)]
struct Entry {
    conn_id: String,
    /// Devices whose call list holds the call.
    holders: u32,
    /// Set after a link loss: the entry is kept until then for a reappearing call ID.
    grace_until: Option<Instant>,
}

/// The call IDs of one switch in use by the router, with their connIds.
#[derive(Debug, Default)]
pub struct CallTable {
    entries: Mutex<HashMap<String, Entry>>,
}

impl CallTable {
    /// A device takes hold of a call: the call's connId (new for a call ID not in use).
    pub fn hold(&self, call_id: &str) -> String {
        let mut map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = map.get_mut(call_id) {
            if e.grace_until.take().is_some() {
                e.holders = 0;
            }
            e.holders += 1;
            return e.conn_id.clone();
        }
        let mut conn_id = new_conn_id();
        while map.values().any(|e| e.conn_id == conn_id) {
            conn_id = new_conn_id();
        }
        map.insert(
            call_id.to_owned(),
            Entry {
                conn_id: conn_id.clone(),
                holders: 1,
                grace_until: None,
            },
        );
        conn_id
    }

    /// A device lets go of a call; the entry goes with the last holder.
    pub fn release(&self, call_id: &str) {
        let mut map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = map.get_mut(call_id) {
            if e.grace_until.is_some() {
                return;
            }
            e.holders = e.holders.saturating_sub(1);
            if e.holders == 0 {
                map.remove(call_id);
            }
        }
    }

    /// The link was lost: every call list is being cleared; keep the connIds for `grace`.
    pub fn link_lost(&self, grace: Duration) {
        let until = Instant::now() + grace;
        let mut map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        for e in map.values_mut() {
            e.grace_until = Some(until);
        }
    }

    /// Drop entries whose grace has run out.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, e| e.grace_until.is_none_or(|t| t > now));
    }

    /// How many calls are tracked (for the active-calls gauge).
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|e| e.grace_until.is_none())
            .count()
    }

    /// Whether no call is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_ids_are_16_lowercase_hex() {
        let c = new_conn_id();
        assert_eq!(c.len(), 16);
        assert!(c
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }

    #[test]
    fn shared_by_devices_and_new_after_reuse() {
        let t = CallTable::default();
        let a = t.hold("C1");
        assert_eq!(t.hold("C1"), a, "second device of the call");
        t.release("C1");
        t.release("C1");
        assert!(t.is_empty());
        assert_ne!(t.hold("C1"), a, "a reused call ID is a new call");
    }

    #[test]
    fn grace_keeps_conn_ids_across_a_link_loss() {
        let t = CallTable::default();
        let a = t.hold("C1");
        t.link_lost(Duration::from_secs(60));
        t.release("C1"); // the device clears its list
        assert_eq!(t.hold("C1"), a);
        t.link_lost(Duration::ZERO);
        t.sweep();
        assert_ne!(t.hold("C1"), a);
    }
}
