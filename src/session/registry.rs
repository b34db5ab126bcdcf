//! The sessions of this node by `sessionId`, and their life: attached to a connection,
//! lingering for `session-linger` after it went, or ended (README, "Resumable sessions").
//!
//! A `sessionId` is 128 bits from the OS random source, written as 32 hex digits. It is a
//! secret (whoever has it can resume the session, within its application): it is never logged
//! or exported, and it is found without comparing it in variable time: the table is indexed by
//! its first 64 bits, and the whole id is then compared in constant time.

use super::gate::Slot;
use crate::client::ClientHandle;
use crate::cluster::sessions::now_ms;
use rand::TryRngCore;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The bytes of a `sessionId`.
const ID_BYTES: usize = 16;

/// One session of this node.
pub struct Record {
    secret: [u8; ID_BYTES],
    /// Its handle: the same for every connection that resumes it.
    pub client: ClientHandle,
    /// The DNs it may have registered, with their switch index and whether with
    /// `callEvents`: released when it ends, and what a cluster replay reads for it.
    pub registered: Mutex<HashMap<Arc<str>, (usize, bool)>>,
    /// When it was opened (Unix milliseconds; in a cluster, on the node that opened it).
    pub opened_ms: u64,
    life: Mutex<Life>,
}

/// Where a session is in its life.
enum Life {
    /// A connection is attached; `generation` counts the connections so far.
    Attached { generation: u64 },
    /// No connection since the one of `generation` went; the session holds a place under
    /// `max-clients` meanwhile.
    Lingering { generation: u64, _slot: Slot },
    /// Over: closed, or its linger expired.
    Ended,
}

impl Record {
    fn life(&self) -> MutexGuard<'_, Life> {
        self.life.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Its `sessionId` (a secret: for the cluster's record, never for a log).
    pub fn id(&self) -> String {
        hex(&self.secret)
    }

    /// The DNs registered, for a lock held briefly.
    pub fn registered(&self) -> MutexGuard<'_, HashMap<Arc<str>, (usize, bool)>> {
        self.registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// How a resume found the session.
pub enum Resumed {
    /// It exists and was not ended: now attached to the resuming connection, whose
    /// generation is given (a lingering session's place under `max-clients` is given back:
    /// the connection has its own).
    Attached(Arc<Record>, u64),
    /// No such session here (unknown, expired or closed).
    Unknown,
    /// The session is another application's.
    Refused,
}

/// The sessions of this node.
#[derive(Default)]
pub struct Sessions {
    table: Mutex<HashMap<u64, Arc<Record>>>,
    lingering: AtomicUsize,
}

impl Sessions {
    fn table(&self) -> MutexGuard<'_, HashMap<u64, Arc<Record>>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many sessions linger (`csta_router_sessions_lingering`).
    pub fn lingering(&self) -> usize {
        self.lingering.load(Ordering::Relaxed)
    }

    fn lingering_changed(&self, by: isize) {
        let now = if by < 0 {
            self.lingering
                .fetch_sub(1, Ordering::Relaxed)
                .saturating_sub(1)
        } else {
            self.lingering.fetch_add(1, Ordering::Relaxed) + 1
        };
        crate::metrics::sessions_lingering(now);
    }

    /// How many sessions exist (attached or lingering).
    pub fn len(&self) -> usize {
        self.table().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A new session for `client`, attached to its first connection: the record and its
    /// `sessionId`. `None` when the OS random source failed (the client is told to retry).
    pub fn open(&self, client: ClientHandle) -> Option<(Arc<Record>, String)> {
        let mut table = self.table();
        loop {
            let mut secret = [0u8; ID_BYTES];
            rand::rngs::OsRng.try_fill_bytes(&mut secret).ok()?;
            if let Some(record) = insert(&mut table, secret, &client, now_ms()) {
                return Some((record, hex(&secret)));
            }
        }
    }

    /// Hold here session `id`, resumed from another node of the cluster, for `client`: the
    /// record and its generation (`None`: this node already holds it, or `id` is no id).
    pub fn adopt(
        &self,
        id: &str,
        client: ClientHandle,
        opened_ms: u64,
    ) -> Option<(Arc<Record>, u64)> {
        let secret = unhex(id)?;
        insert(&mut self.table(), secret, &client, opened_ms).map(|record| (record, 1))
    }

    /// The session whose handle has client id `client`.
    pub fn find_client(&self, client: u64) -> Option<Arc<Record>> {
        self.table()
            .values()
            .find(|r| r.client.id == client)
            .cloned()
    }

    /// The session `id`, compared in constant time.
    fn find(&self, id: &str) -> Option<Arc<Record>> {
        let secret = unhex(id)?;
        let record = self.table().get(&index_of(&secret)).cloned()?;
        constant_time_eq(&record.secret, &secret).then_some(record)
    }

    /// A new connection of `application` resumes session `id`: a lingering one stops
    /// lingering, an attached one changes hands (the caller takes the older connection over).
    /// The caller attaches the connection to the handle
    /// ([`crate::client::ClientInner::resume`]). Another application's session is not touched.
    pub fn resume(&self, id: &str, application: &str) -> Resumed {
        let Some(record) = self.find(id) else {
            return Resumed::Unknown;
        };
        if !constant_time_eq(record.client.application.as_bytes(), application.as_bytes()) {
            return Resumed::Refused;
        }
        let mut life = record.life();
        let generation = match &*life {
            Life::Ended => return Resumed::Unknown,
            Life::Attached { generation } => *generation,
            Life::Lingering { generation, .. } => {
                self.lingering_changed(-1);
                *generation
            }
        };
        *life = Life::Attached {
            generation: generation + 1,
        };
        drop(life);
        Resumed::Attached(record, generation + 1)
    }

    /// The connection of `record` went without closing the session: it lingers, holding
    /// `slot`. Returns the generation to give [`Sessions::expire`] when the linger is over;
    /// `None` when the session had already changed hands or ended.
    pub fn linger(&self, record: &Record, generation_seen: u64, slot: Slot) -> Option<u64> {
        let mut life = record.life();
        match &*life {
            Life::Attached { generation } if *generation == generation_seen => {
                *life = Life::Lingering {
                    generation: generation_seen,
                    _slot: slot,
                };
                self.lingering_changed(1);
                Some(generation_seen)
            }
            _ => None,
        }
    }

    /// The generation of the connection attached now (`None`: not attached).
    pub fn generation(&self, record: &Record) -> Option<u64> {
        match &*record.life() {
            Life::Attached { generation } => Some(*generation),
            _ => None,
        }
    }

    /// The linger that started at `generation` is over: `true` if the session ended now (it
    /// was not resumed meanwhile); the caller releases its registrations.
    pub fn expire(&self, record: &Arc<Record>, generation_seen: u64) -> bool {
        let mut life = record.life();
        match &*life {
            Life::Lingering { generation, .. } if *generation == generation_seen => {
                *life = Life::Ended;
                self.lingering_changed(-1);
                drop(life);
                self.forget(record);
                true
            }
            _ => false,
        }
    }

    /// End the session now (closed, or not lingering): `true` if this ended it.
    pub fn end(&self, record: &Arc<Record>) -> bool {
        let mut life = record.life();
        let was = std::mem::replace(&mut *life, Life::Ended);
        drop(life);
        match was {
            Life::Ended => false,
            Life::Lingering { .. } => {
                self.lingering_changed(-1);
                self.forget(record);
                true
            }
            Life::Attached { .. } => {
                self.forget(record);
                true
            }
        }
    }

    /// End every lingering session (the router stops): the records ended, for the caller to
    /// release.
    pub fn end_lingering(&self) -> Vec<Arc<Record>> {
        let records: Vec<Arc<Record>> = self.table().values().cloned().collect();
        records
            .into_iter()
            .filter(|r| {
                let mut life = r.life();
                if !matches!(&*life, Life::Lingering { .. }) {
                    return false;
                }
                *life = Life::Ended;
                drop(life);
                self.lingering_changed(-1);
                self.forget(r);
                true
            })
            .collect()
    }

    fn forget(&self, record: &Arc<Record>) {
        let mut table = self.table();
        let key = index_of(&record.secret);
        if table.get(&key).is_some_and(|r| Arc::ptr_eq(r, record)) {
            table.remove(&key);
        }
    }
}

/// A new session in `table`, attached to its first connection (`None`: its index is taken).
fn insert(
    table: &mut HashMap<u64, Arc<Record>>,
    secret: [u8; ID_BYTES],
    client: &ClientHandle,
    opened_ms: u64,
) -> Option<Arc<Record>> {
    let key = index_of(&secret);
    if table.contains_key(&key) {
        return None;
    }
    let record = Arc::new(Record {
        secret,
        client: client.clone(),
        registered: Mutex::new(HashMap::new()),
        opened_ms,
        life: Mutex::new(Life::Attached { generation: 1 }),
    });
    table.insert(key, record.clone());
    Some(record)
}

/// The table index of a session id: its first 64 bits.
fn index_of(secret: &[u8; ID_BYTES]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&secret[..8]);
    u64::from_le_bytes(first)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

fn unhex(s: &str) -> Option<[u8; ID_BYTES]> {
    let s = s.as_bytes();
    if s.len() != ID_BYTES * 2 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; ID_BYTES];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        let (hi, lo) = (digit(pair[0])?, digit(pair[1])?);
        *out.get_mut(i)? = hi << 4 | lo;
    }
    Some(out)
}

/// Compare secrets without leaking their common prefix length through timing.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::client::{ClientInner, Connection};

    fn client() -> ClientHandle {
        let conn = Arc::new(Connection::default());
        ClientHandle::new(ClientInner::local(1, 4, 4, conn).0)
    }

    #[test]
    fn ids_are_128_bit_hex_and_found_only_whole() {
        let sessions = Sessions::default();
        let (_, id) = sessions.open(client()).unwrap();
        let (_, other) = sessions.open(client()).unwrap();
        assert_ne!(id, other);
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(sessions.find(&id).is_some());
        // Same index (first 64 bits), different rest: not found.
        let mut wrong = id.clone();
        let last = if wrong.ends_with('0') { "1" } else { "0" };
        wrong.replace_range(31.., last);
        assert!(sessions.find(&wrong).is_none());
        assert!(sessions.find(&id.to_uppercase()).is_none());
        assert!(sessions.find("").is_none());
    }

    #[test]
    fn a_session_lingers_and_expires_unless_resumed() {
        let sessions = Sessions::default();
        let gate = Arc::new(super::super::Gate::default());
        let (record, id) = sessions.open(client()).unwrap();
        let g = sessions.generation(&record).unwrap();
        let slot = gate.admit(1).unwrap();
        let lingering = sessions.linger(&record, g, slot).unwrap();
        assert_eq!(sessions.lingering(), 1);
        assert!(
            gate.admit(1).is_none(),
            "a lingering session holds its place"
        );
        assert!(matches!(sessions.resume(&id, ""), Resumed::Attached(_, 2)));
        assert!(
            gate.admit(1).is_some(),
            "the resuming connection counts once"
        );
        assert!(!sessions.expire(&record, lingering), "resumed meanwhile");
        let g2 = sessions.generation(&record).unwrap();
        assert!(
            sessions
                .linger(&record, g, gate.admit(1).unwrap())
                .is_none(),
            "an old connection"
        );
        let l2 = sessions
            .linger(&record, g2, gate.admit(1).unwrap())
            .unwrap();
        assert!(sessions.expire(&record, l2));
        assert_eq!((sessions.lingering(), sessions.len()), (0, 0));
        assert!(matches!(sessions.resume(&id, ""), Resumed::Unknown));
    }
}
