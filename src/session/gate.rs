//! What a client costs the router, bounded before it can do anything: every WebSocket
//! connection takes a place under `max-clients` from its upgrade, and a source address that
//! keeps failing to authenticate is locked out for a while.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// The admission of client connections: shared by every session of the router.
#[derive(Default)]
pub struct Gate {
    connections: AtomicUsize,
    auth_failures: AuthFailures,
}

impl Gate {
    /// Take a place for a new connection if fewer than `max` are taken (connections opened or
    /// not, and lingering sessions).
    pub(super) fn admit(self: &Arc<Self>, max: usize) -> Option<Slot> {
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }

    /// Whether `ip` is locked out now after failed authentications.
    pub(super) fn locked(&self, ip: IpAddr) -> bool {
        self.auth_failures.locked(ip, Instant::now())
    }

    /// Count a failed authentication of `ip`; `true` if this one locks the address out.
    pub(super) fn failed(&self, ip: IpAddr) -> bool {
        self.auth_failures.record(ip, Instant::now())
    }
}

/// A place under `max-clients`, given back when dropped: a connection's, which a session
/// that lingers after it keeps.
pub struct Slot(Arc<Gate>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Failed authentications that lock a source address out: more than this many...
pub const AUTH_FAILURE_LIMIT: u32 = 10;
/// ...within this window...
pub const AUTH_FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// ...and the address's upgrades are refused with 1013 for this long.
pub const AUTH_LOCKOUT: Duration = Duration::from_secs(60);
/// How long the 1008 close after a wrong or missing token waits, so that guessing tokens
/// costs a second per attempt and connection.
pub const AUTH_FAILURE_DELAY: Duration = Duration::from_secs(1);
/// The most source addresses remembered (about 100 bytes each): beyond, the expired ones and
/// then the least recently failed are forgotten, so the table's memory is bounded whatever
/// the number of addresses an attacker uses.
const AUTH_TABLE_CAPACITY: usize = 4096;

/// Authentication failures per source address (IPv4 address, or IPv6 /64 network: one host
/// commonly has a whole /64). Never a global lockout: only the failing address is refused.
#[derive(Default)]
struct AuthFailures {
    table: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    /// Start of the current counting window.
    since: Instant,
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// The key of an address in the failure table.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

impl AuthFailures {
    /// Whether `ip` is locked out now.
    fn locked(&self, ip: IpAddr, now: Instant) -> bool {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&address_key(ip))
            .and_then(|f| f.locked_until)
            .is_some_and(|until| now < until)
    }

    /// Count a failure of `ip`; `true` if this one locks the address out.
    fn record(&self, ip: IpAddr, now: Instant) -> bool {
        let key = address_key(ip);
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if !table.contains_key(&key) && table.len() >= AUTH_TABLE_CAPACITY {
            table.retain(|_, f| {
                f.locked_until.is_some_and(|u| now < u)
                    || now.saturating_duration_since(f.since) < AUTH_FAILURE_WINDOW
            });
            if table.len() >= AUTH_TABLE_CAPACITY {
                if let Some(oldest) = table.iter().min_by_key(|(_, f)| f.last).map(|(k, _)| *k) {
                    table.remove(&oldest);
                }
            }
        }
        let f = table.entry(key).or_insert(Failures {
            since: now,
            count: 0,
            last: now,
            locked_until: None,
        });
        if now.saturating_duration_since(f.since) >= AUTH_FAILURE_WINDOW {
            f.since = now;
            f.count = 0;
        }
        f.count += 1;
        f.last = now;
        if f.count > AUTH_FAILURE_LIMIT && f.locked_until.is_none_or(|u| u <= now) {
            f.locked_until = Some(now + AUTH_LOCKOUT);
            return true;
        }
        false
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn more_than_ten_failures_in_a_minute_lock_one_address_for_a_minute() {
        let table = AuthFailures::default();
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for i in 0..AUTH_FAILURE_LIMIT {
            assert!(!table.record(a, t0 + Duration::from_secs(u64::from(i))));
        }
        assert!(!table.locked(a, t0 + Duration::from_secs(10)));
        // The eleventh within the minute locks the address, and only it.
        assert!(table.record(a, t0 + Duration::from_secs(30)));
        assert!(table.locked(a, t0 + Duration::from_secs(31)));
        assert!(!table.locked(ip("192.0.2.2"), t0 + Duration::from_secs(31)));
        // For a minute.
        assert!(table.locked(a, t0 + Duration::from_secs(89)));
        assert!(!table.locked(a, t0 + Duration::from_secs(91)));
        // Failures spread over more than a minute never lock.
        let b = ip("192.0.2.3");
        for i in 0..30u64 {
            assert!(!table.record(b, t0 + Duration::from_secs(i * 7)));
        }
        assert!(!table.locked(b, t0 + Duration::from_secs(210)));
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_bit_network() {
        let table = AuthFailures::default();
        let t0 = Instant::now();
        for i in 0..=AUTH_FAILURE_LIMIT {
            table.record(ip(&format!("2001:db8::{:x}", i + 1)), t0);
        }
        assert!(table.locked(ip("2001:db8::ffff"), t0));
        assert!(!table.locked(ip("2001:db8:0:1::1"), t0));
        // An IPv4 client seen through an IPv6 listener is the IPv4 address.
        assert_eq!(address_key(ip("::ffff:192.0.2.9")), ip("192.0.2.9"));
    }

    #[test]
    fn the_failure_table_is_bounded() {
        let table = AuthFailures::default();
        let t0 = Instant::now();
        for i in 0..(AUTH_TABLE_CAPACITY as u32 + 1000) {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            table.record(a, t0 + Duration::from_millis(u64::from(i)));
        }
        assert_eq!(table.len(), AUTH_TABLE_CAPACITY);
        // Expired entries make room first.
        let later = t0 + AUTH_FAILURE_WINDOW + Duration::from_secs(10);
        table.record(ip("192.0.2.1"), later);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn places_are_given_back() {
        let gate = Arc::new(Gate::default());
        let a = gate.admit(2).unwrap();
        let _b = gate.admit(2).unwrap();
        assert!(gate.admit(2).is_none());
        drop(a);
        assert!(gate.admit(2).is_some());
    }
}
