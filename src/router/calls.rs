//! Calls and their connIds.
//!
//! A connId is what clients and reporting systems store for a call: 16 lowercase hex digits,
//! the same at every device of the call, stable for the call's life and unique across router
//! restarts. The switch's call ID is not enough (switches reuse them), so each switch has a
//! [`CallTable`] mapping the call IDs it currently uses to connIds, and each device (extension
//! actor) has a [`DeviceCalls`] list of its active calls. The devices of a call share the
//! table's entry (the entry knows which devices hold it); when the last device lets go the
//! entry goes, so a call ID reused later is a new call with a new connId. After a link loss the
//! entries are kept for `call-grace` (a call ID seen again in that time keeps its connId, one
//! seen after it is a new call) and then swept.
//!
//! A contact centre's busiest DN (a queue, a hunt group) can see hundreds of thousands of
//! calls, and a switch can forget to clear some: every operation here is O(1) or O(log n) in
//! the number of calls (hash maps, and ordered maps keyed by counters for "oldest",
//! "idlest" and "most recently active"), and both the per-device lists and the per-switch
//! table are bounded (`max-calls-per-dn`, `max-calls-per-switch`): beyond the bound the call
//! idle the longest is evicted.

use rand::Rng;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A call's connId: 40 bits of milliseconds since the epoch and 24 random bits, written as 16
/// lowercase hex digits. Kept as a number inside the router (a tenth of the memory of a
/// string, and hashed in one step), written out only for clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(u64);

impl ConnId {
    /// A new connId. Unique across restarts (time moves on) and within a process (random bits,
    /// checked against the connIds in use by [`CallTable::hold`]).
    pub fn generate() -> ConnId {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let random: u64 = rand::rng().random_range(0..(1 << 24));
        ConnId(((millis & ((1 << 40) - 1)) << 24) | random)
    }

    /// A connId as a client sends it back: exactly 16 lowercase hex digits, else `None` (it
    /// cannot name any call).
    pub fn parse(text: &str) -> Option<ConnId> {
        if text.len() != 16 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        u64::from_str_radix(text, 16).ok().map(ConnId)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A new connId as text (see [`ConnId`]).
pub fn new_conn_id() -> String {
    ConnId::generate().to_string()
}

/// A call in use by the router.
#[derive(Debug)]
struct Live {
    conn_id: ConnId,
    /// The DNs whose call list holds the call (usually one to three).
    holders: Vec<Arc<str>>,
    /// Key in `Inner::idle`: when a device last reported an event of the call.
    touched: u64,
}

/// A call kept after a link loss, for a call ID seen again within `call-grace`.
#[derive(Debug)]
struct Graced {
    conn_id: ConnId,
    until: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    live: HashMap<Arc<str>, Live>,
    /// Live calls by `touched`: the first is the call idle the longest.
    idle: BTreeMap<u64, Arc<str>>,
    /// Every connId in use (live and graced), so a new one is never a duplicate.
    conn_ids: HashSet<ConnId>,
    graced: HashMap<Arc<str>, Graced>,
    /// Graced calls in the order their grace ends. Entries whose call was taken back into use
    /// meanwhile are skipped by the sweep.
    grace_order: BTreeMap<(Instant, u64), (Arc<str>, ConnId)>,
    stamp: u64,
}

impl Inner {
    fn next_stamp(&mut self) -> u64 {
        self.stamp += 1;
        self.stamp
    }

    fn fresh_conn_id(&mut self) -> ConnId {
        loop {
            let c = ConnId::generate();
            if self.conn_ids.insert(c) {
                return c;
            }
        }
    }

    fn remove_live(&mut self, call_id: &str) -> Option<(Arc<str>, Live)> {
        let (id, live) = self.live.remove_entry(call_id)?;
        self.idle.remove(&live.touched);
        self.conn_ids.remove(&live.conn_id);
        Some((id, live))
    }
}

/// What [`CallTable::hold`] gives a device.
#[derive(Debug)]
pub struct Hold {
    /// The call's connId.
    pub conn_id: ConnId,
    /// Calls evicted from the table to stay within `max-calls-per-switch`: their holders must
    /// forget them.
    pub evicted: Vec<Evicted>,
}

/// A call evicted from a switch's table.
#[derive(Debug)]
pub struct Evicted {
    /// The switch's call ID.
    pub call_id: Arc<str>,
    /// Its connId (so a holder does not drop a newer call that reuses the call ID).
    pub conn_id: ConnId,
    /// The DNs whose call lists held it.
    pub holders: Vec<Arc<str>>,
}

/// What a cluster records of a switch's calls, so that a call outliving a failover keeps its
/// connId: told by the [`CallTable`] as calls come and go, written elsewhere (never waits).
#[derive(Debug, Clone)]
pub enum CallNote {
    /// A call got a new connId.
    Started(Arc<str>, ConnId),
    /// A call's last holder let go: its record may go once `call-grace` has passed.
    Cleared(Arc<str>, ConnId),
    /// A call was evicted, or its grace ran out: its record goes now.
    Gone(Arc<str>, ConnId),
}

/// Where a clustered switch's [`CallNote`]s go.
pub type CallJournal = Box<dyn Fn(CallNote) + Send + Sync>;

/// The call IDs of one switch in use by the router, with their connIds (see the
/// [module docs](self)). Used by the switch's extension actors, which all run on the switch's
/// router thread, and by the metrics scrape: the lock is short and rarely contended.
#[derive(Default)]
pub struct CallTable {
    inner: Mutex<Inner>,
    /// In a cluster: where the calls' connIds are recorded.
    journal: std::sync::OnceLock<CallJournal>,
}

impl std::fmt::Debug for CallTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallTable")
            .field("inner", &self.inner)
            .field("journal", &self.journal.get().is_some())
            .finish()
    }
}

impl CallTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// In a cluster: record the calls' connIds through `journal` from now on (set once).
    pub fn set_journal(&self, journal: CallJournal) {
        let _ = self.journal.set(journal);
    }

    fn note(&self, note: CallNote) {
        if let Some(journal) = self.journal.get() {
            journal(note);
        }
    }

    /// A new owner of the switch takes over the calls recorded in the cluster: each keeps its
    /// connId if the switch reports it again within `grace`.
    pub fn adopt(&self, calls: Vec<(String, ConnId)>, grace: Duration) {
        let until = Instant::now() + grace;
        let mut g = self.lock();
        let inner = &mut *g;
        for (call_id, conn_id) in calls {
            let call_id: Arc<str> = Arc::from(call_id);
            if inner.live.contains_key(&call_id) || !inner.conn_ids.insert(conn_id) {
                continue;
            }
            inner.stamp += 1;
            inner
                .grace_order
                .insert((until, inner.stamp), (call_id.clone(), conn_id));
            if let Some(old) = inner.graced.insert(call_id, Graced { conn_id, until }) {
                inner.conn_ids.remove(&old.conn_id);
            }
        }
    }

    /// Device `dn` takes hold of a call: the call's connId (new for a call ID not in use, or
    /// one whose grace after a link loss has run out). When the table then holds more than
    /// `max_calls`, the calls idle the longest are evicted and returned.
    pub fn hold(&self, call_id: &Arc<str>, dn: &Arc<str>, max_calls: usize) -> Hold {
        let now = Instant::now();
        let mut g = self.lock();
        let stamp = g.next_stamp();
        if let Some(e) = g.live.get_mut(call_id) {
            if !e.holders.iter().any(|h| h == dn) {
                e.holders.push(dn.clone());
            }
            let old = std::mem::replace(&mut e.touched, stamp);
            let conn_id = e.conn_id;
            g.idle.remove(&old);
            g.idle.insert(stamp, call_id.clone());
            return Hold {
                conn_id,
                evicted: Vec::new(),
            };
        }
        let conn_id = match g.graced.remove(call_id) {
            // Seen again within its grace: the same call, the same connId.
            Some(graced) if graced.until > now => graced.conn_id,
            // Grace over: a new call (its old connId is free again).
            Some(graced) => {
                g.conn_ids.remove(&graced.conn_id);
                let c = g.fresh_conn_id();
                self.note(CallNote::Started(call_id.clone(), c));
                c
            }
            None => {
                let c = g.fresh_conn_id();
                self.note(CallNote::Started(call_id.clone(), c));
                c
            }
        };
        g.live.insert(
            call_id.clone(),
            Live {
                conn_id,
                holders: vec![dn.clone()],
                touched: stamp,
            },
        );
        g.idle.insert(stamp, call_id.clone());
        let mut evicted = Vec::new();
        while g.live.len() > max_calls.max(1) {
            let Some((_, oldest)) = g.idle.pop_first() else {
                break;
            };
            if let Some((call_id, live)) = g.remove_live(&oldest) {
                self.note(CallNote::Gone(call_id.clone(), live.conn_id));
                evicted.push(Evicted {
                    call_id,
                    conn_id: live.conn_id,
                    holders: live.holders,
                });
            }
        }
        Hold { conn_id, evicted }
    }

    /// A device reported an event of the call: it is not idle.
    pub fn touch(&self, call_id: &str, conn_id: ConnId) {
        let mut g = self.lock();
        let stamp = g.next_stamp();
        let Some(e) = g.live.get_mut(call_id).filter(|e| e.conn_id == conn_id) else {
            return;
        };
        let old = std::mem::replace(&mut e.touched, stamp);
        let Some(id) = g.idle.remove(&old) else {
            return;
        };
        g.idle.insert(stamp, id);
    }

    /// Device `dn` lets go of call `conn_id`; the entry goes with the last holder. A call the
    /// table no longer has under that connId (evicted, graced, or its call ID reused since) is
    /// left alone.
    pub fn release(&self, call_id: &str, conn_id: ConnId, dn: &str) {
        let mut g = self.lock();
        let Some(e) = g.live.get_mut(call_id).filter(|e| e.conn_id == conn_id) else {
            return;
        };
        e.holders.retain(|h| &**h != dn);
        if e.holders.is_empty() {
            if let Some((call_id, live)) = g.remove_live(call_id) {
                self.note(CallNote::Cleared(call_id, live.conn_id));
            }
        }
    }

    /// The link was lost: every call list is being cleared; keep the connIds for `grace`.
    pub fn link_lost(&self, grace: Duration) {
        let until = Instant::now() + grace;
        let mut g = self.lock();
        let inner = &mut *g;
        inner.idle.clear();
        for (call_id, live) in inner.live.drain() {
            inner.stamp += 1;
            inner
                .grace_order
                .insert((until, inner.stamp), (call_id.clone(), live.conn_id));
            let replaced = inner.graced.insert(
                call_id,
                Graced {
                    conn_id: live.conn_id,
                    until,
                },
            );
            if let Some(old) = replaced {
                inner.conn_ids.remove(&old.conn_id);
            }
        }
    }

    /// Forget the calls whose grace has run out (called periodically by the switch's router).
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut g = self.lock();
        while g
            .grace_order
            .first_key_value()
            .is_some_and(|((until, _), _)| *until <= now)
        {
            let Some((_, (call_id, conn_id))) = g.grace_order.pop_first() else {
                break;
            };
            if g.graced.get(&call_id).is_some_and(|e| e.conn_id == conn_id) {
                g.graced.remove(&call_id);
                g.conn_ids.remove(&conn_id);
                self.note(CallNote::Gone(call_id, conn_id));
            }
        }
    }

    /// How many calls are in use (for the active-calls gauge).
    pub fn len(&self) -> usize {
        self.lock().live.len()
    }

    /// Whether no call is in use.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many calls are kept for their grace after a link loss (diagnostics and tests).
    pub fn graced(&self) -> usize {
        self.lock().graced.len()
    }
}

/// One call in a device's list.
#[derive(Debug)]
pub struct DeviceCall {
    /// The switch's call ID.
    pub call_id: Arc<str>,
    /// Its connId.
    pub conn_id: ConnId,
    /// Its state at the device, as call events tell it.
    pub state: crate::protocol::CallState,
    /// The other party, when known (the DN, or the number as the switch names it).
    pub other: Option<Box<str>>,
    /// Key in `DeviceCalls::calls` (order of addition).
    added: u64,
    /// Key in `DeviceCalls::active` when established or retrieved at the device (0: never).
    activated: u64,
    /// Key in `DeviceCalls::idle`.
    touched: u64,
    last_event: Instant,
}

/// A device's active calls (see the [module docs](self)): found by call ID or connId in O(1),
/// listed oldest first, and the most recently active one and the one idle the longest found in
/// O(log n).
#[derive(Debug, Default)]
pub struct DeviceCalls {
    by_call_id: HashMap<Arc<str>, u64>,
    by_conn_id: HashMap<ConnId, u64>,
    /// By order of addition: oldest first.
    calls: BTreeMap<u64, DeviceCall>,
    /// `touched` → `added`: the first is the call idle the longest.
    idle: BTreeMap<u64, u64>,
    /// `activated` → `added`: the last is the call most recently established or retrieved.
    active: BTreeMap<u64, u64>,
    counter: u64,
}

impl DeviceCalls {
    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// The call, if in the list: marked as just heard of (and as established or retrieved at
    /// the device when `activated`).
    pub fn touch(&mut self, call_id: &str, activated: bool, now: Instant) -> Option<&DeviceCall> {
        let added = *self.by_call_id.get(call_id)?;
        let stamp = self.next();
        let call = self.calls.get_mut(&added)?;
        call.last_event = now;
        self.idle.remove(&call.touched);
        call.touched = stamp;
        self.idle.insert(stamp, added);
        if activated {
            self.active.remove(&call.activated);
            call.activated = stamp;
            self.active.insert(stamp, added);
        }
        Some(call)
    }

    /// Add a call not in the list.
    pub fn add(&mut self, call_id: Arc<str>, conn_id: ConnId, activated: bool, now: Instant) {
        if self.by_call_id.contains_key(&call_id) {
            return;
        }
        let added = self.next();
        self.by_call_id.insert(call_id.clone(), added);
        self.by_conn_id.insert(conn_id, added);
        self.idle.insert(added, added);
        if activated {
            self.active.insert(added, added);
        }
        self.calls.insert(
            added,
            DeviceCall {
                call_id,
                conn_id,
                state: crate::protocol::CallState::Dialing,
                other: None,
                added,
                activated: if activated { added } else { 0 },
                touched: added,
                last_event: now,
            },
        );
    }

    fn remove_added(&mut self, added: u64) -> Option<DeviceCall> {
        let call = self.calls.remove(&added)?;
        self.by_call_id.remove(&call.call_id);
        if self.by_conn_id.get(&call.conn_id) == Some(&call.added) {
            self.by_conn_id.remove(&call.conn_id);
        }
        self.idle.remove(&call.touched);
        if call.activated != 0 {
            self.active.remove(&call.activated);
        }
        Some(call)
    }

    /// Remove a call by call ID.
    pub fn remove(&mut self, call_id: &str) -> Option<DeviceCall> {
        let added = *self.by_call_id.get(call_id)?;
        self.remove_added(added)
    }

    /// Remove a call by call ID if it is still the call with this connId (not a newer call
    /// that reuses the call ID).
    pub fn forget(&mut self, call_id: &str, conn_id: ConnId) -> Option<DeviceCall> {
        let added = *self.by_call_id.get(call_id)?;
        if self.calls.get(&added)?.conn_id != conn_id {
            return None;
        }
        self.remove_added(added)
    }

    /// Remove the call idle the longest.
    pub fn pop_idlest(&mut self) -> Option<DeviceCall> {
        let (_, added) = self.idle.first_key_value()?;
        let added = *added;
        self.remove_added(added)
    }

    /// Remove the call idle the longest if it has had no event for more than `idle`.
    pub fn pop_idle_longer_than(&mut self, idle: Duration, now: Instant) -> Option<DeviceCall> {
        let (_, added) = self.idle.first_key_value()?;
        let added = *added;
        let call = self.calls.get(&added)?;
        if now.saturating_duration_since(call.last_event) > idle {
            self.remove_added(added)
        } else {
            None
        }
    }

    /// The most recent active call: the one most recently established or retrieved at the
    /// device, else the one most recently added.
    pub fn most_recent(&self) -> Option<&DeviceCall> {
        let added = match self.active.last_key_value() {
            Some((_, added)) => *added,
            None => *self.calls.last_key_value()?.0,
        };
        self.calls.get(&added)
    }

    /// The call with this call ID, to read or to update its state and other party.
    pub fn get_mut(&mut self, call_id: &str) -> Option<&mut DeviceCall> {
        self.calls.get_mut(self.by_call_id.get(call_id)?)
    }

    /// The call with this call ID.
    pub fn get(&self, call_id: &str) -> Option<&DeviceCall> {
        self.calls.get(self.by_call_id.get(call_id)?)
    }

    /// The call with this connId.
    pub fn by_conn_id(&self, conn_id: ConnId) -> Option<&DeviceCall> {
        self.calls.get(self.by_conn_id.get(&conn_id)?)
    }

    /// The calls, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &DeviceCall> {
        self.calls.values()
    }

    /// Remove every call, oldest first.
    pub fn drain(&mut self) -> impl Iterator<Item = DeviceCall> {
        self.by_call_id.clear();
        self.by_conn_id.clear();
        self.idle.clear();
        self.active.clear();
        std::mem::take(&mut self.calls).into_values()
    }

    /// How many calls.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn conn_ids_are_16_lowercase_hex() {
        let c = new_conn_id();
        assert_eq!(c.len(), 16);
        assert!(c
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(ConnId::parse(&c).map(|p| p.to_string()), Some(c.clone()));
        assert_eq!(ConnId::parse(&c.to_uppercase()), None);
        assert_eq!(ConnId::parse("12345"), None);
    }

    #[test]
    fn shared_by_devices_and_new_after_reuse() {
        let t = CallTable::default();
        let (c1, a, b) = (id("C1"), id("5001"), id("4001"));
        let first = t.hold(&c1, &a, 10).conn_id;
        assert_eq!(
            t.hold(&c1, &b, 10).conn_id,
            first,
            "second device of the call"
        );
        t.release("C1", first, "5001");
        assert_eq!(t.len(), 1, "still held by 4001");
        t.release("C1", first, "4001");
        assert!(t.is_empty());
        assert_ne!(
            t.hold(&c1, &a, 10).conn_id,
            first,
            "a reused call ID is a new call"
        );
    }

    #[test]
    fn a_release_of_an_older_call_leaves_the_newer_one_alone() {
        let t = CallTable::default();
        let (c1, a, b) = (id("C1"), id("5001"), id("4001"));
        let old = t.hold(&c1, &a, 1).conn_id;
        // Evicted by another call, then the call ID is reused by another device.
        let evicted = t.hold(&id("C2"), &a, 1).evicted;
        assert_eq!(evicted.len(), 1);
        assert_eq!(evicted[0].conn_id, old);
        let new = t.hold(&c1, &b, 2).conn_id;
        assert_ne!(new, old);
        t.release("C1", old, "5001");
        assert_eq!(t.hold(&c1, &b, 2).conn_id, new);
    }

    #[test]
    fn grace_keeps_conn_ids_across_a_link_loss_and_sweep_frees_them() {
        let t = CallTable::default();
        let (c1, a) = (id("C1"), id("5001"));
        let first = t.hold(&c1, &a, 10).conn_id;
        t.link_lost(Duration::from_secs(60));
        assert_eq!(t.len(), 0);
        assert_eq!(t.graced(), 1);
        t.release("C1", first, "5001"); // the device clears its list: no effect on a graced call
        assert_eq!(
            t.hold(&c1, &a, 10).conn_id,
            first,
            "seen again within its grace"
        );
        t.link_lost(Duration::ZERO);
        t.sweep();
        assert_eq!(t.graced(), 0, "grace over: swept");
        assert_ne!(t.hold(&c1, &a, 10).conn_id, first);
    }

    #[test]
    fn a_call_id_seen_after_its_grace_is_a_new_call_even_before_the_sweep() {
        let t = CallTable::default();
        let (c1, a) = (id("C1"), id("5001"));
        let first = t.hold(&c1, &a, 10).conn_id;
        t.link_lost(Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert_ne!(
            t.hold(&c1, &a, 10).conn_id,
            first,
            "after call-grace a call ID seen again is a new call with a new connId"
        );
        assert_eq!(t.graced(), 0);
    }

    #[test]
    fn the_table_evicts_the_call_idle_the_longest() {
        let t = CallTable::default();
        let (a, b) = (id("5001"), id("4001"));
        let c1 = t.hold(&id("C1"), &a, 3).conn_id;
        t.hold(&id("C1"), &b, 3);
        let c2 = t.hold(&id("C2"), &a, 3).conn_id;
        t.hold(&id("C3"), &a, 3);
        t.touch("C1", c1); // C2 is now the idlest
        let evicted = t.hold(&id("C4"), &a, 3).evicted;
        assert_eq!(evicted.len(), 1);
        assert_eq!(&*evicted[0].call_id, "C2");
        assert_eq!(evicted[0].conn_id, c2);
        assert_eq!(evicted[0].holders, vec![a.clone()]);
        assert_eq!(t.len(), 3);
        let evicted = t.hold(&id("C5"), &a, 3).evicted;
        assert_eq!(&*evicted[0].call_id, "C3");
        let evicted = t.hold(&id("C6"), &a, 3).evicted;
        assert_eq!(&*evicted[0].call_id, "C1");
        assert_eq!(evicted[0].holders, vec![a, b], "every holder is named");
    }

    #[test]
    fn device_calls_keep_their_orders() {
        let now = Instant::now();
        let mut d = DeviceCalls::default();
        let conn = |n: u64| ConnId(n);
        d.add(id("C1"), conn(1), false, now);
        d.add(id("C2"), conn(2), false, now);
        d.add(id("C3"), conn(3), false, now);
        assert_eq!(
            d.most_recent().map(|c| &*c.call_id),
            Some("C3"),
            "last added"
        );
        d.touch("C1", true, now);
        assert_eq!(
            d.most_recent().map(|c| &*c.call_id),
            Some("C1"),
            "last established"
        );
        d.touch("C2", false, now);
        assert_eq!(d.most_recent().map(|c| &*c.call_id), Some("C1"));
        assert_eq!(d.by_conn_id(conn(2)).map(|c| &*c.call_id), Some("C2"));
        let order: Vec<&str> = d.iter().map(|c| &*c.call_id).collect();
        assert_eq!(order, ["C1", "C2", "C3"], "oldest first");
        assert_eq!(d.pop_idlest().map(|c| c.call_id), Some(id("C3")));
        assert!(d.remove("C1").is_some());
        assert_eq!(d.most_recent().map(|c| &*c.call_id), Some("C2"));
        assert_eq!(d.len(), 1);
        let later = now + Duration::from_secs(10);
        assert!(d
            .pop_idle_longer_than(Duration::from_secs(20), later)
            .is_none());
        assert!(d
            .pop_idle_longer_than(Duration::from_secs(5), later)
            .is_some());
        assert!(d.is_empty());
        assert!(d.by_conn_id(conn(2)).is_none());
    }
}
