//! eventSeq across owners: strictly increasing per switch for the life of the cluster, without
//! a NATS round trip per event.
//!
//! The bucket `CRR_<C>_SEQ` (no `max_age`: it must outlive every node) holds, per switch, the
//! highest eventSeq ever reserved, as a decimal number. An owner reserves a block of
//! [`BLOCK`] numbers by compare-and-set — read `v` at revision `r`, write `v + BLOCK` expecting
//! `r`, read again on a conflict — and then numbers events `v + 1`, `v + 2`, ... on its own;
//! it reserves the next block before this one runs out. Two owners of one switch (the old one
//! not yet fenced, the new one started) can never get overlapping blocks, and a new owner's
//! numbers start above everything any earlier owner could have used. A block whose write
//! succeeded but whose answer was lost is simply skipped: numbers may jump, never go back.
//!
//! Not the stream's sequence (live delivery would wait for JetStream), and not "lease revision
//! × 2^k + counter" (a long ownership would run into the next epoch's range).

use super::{keys, within, ClusterError, KV_TIMEOUT};
use async_nats::jetstream::kv::{self, Operation, UpdateErrorKind};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

/// How many eventSeq numbers one reservation takes: 2^20 (a switch at 1 000 events a second
/// reserves a block about every 17 minutes).
pub const BLOCK: u64 = 1 << 20;

/// The highest eventSeq: clients read it as a JSON number, exact below 2^53.
pub const MAX_EVENT_SEQ: u64 = (1 << 53) - 1;

/// Conflicting reservations retried before giving up (each conflict means another reserver
/// advanced the counter: more than a few in a row is not a race but something broken).
const ATTEMPTS: usize = 16;

/// The eventSeq blocks of every switch.
#[derive(Clone)]
pub struct SeqBlocks {
    kv: kv::Store,
    /// The highest number this process reserved per switch, to write back when the bucket
    /// was lost (a NATS server restarted on an empty store): numbers never go back.
    reserved: Arc<Mutex<HashMap<String, u64>>>,
}

impl SeqBlocks {
    /// The blocks kept in `kv`.
    pub fn new(kv: kv::Store) -> SeqBlocks {
        SeqBlocks {
            kv,
            reserved: Arc::default(),
        }
    }

    /// Write back, for each switch this process reserved numbers for, the highest it
    /// reserved, where the bucket has less (it was created again empty).
    pub async fn restore(&self) -> Result<(), ClusterError> {
        let reserved: Vec<(String, u64)> = self
            .reserved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for (switch, mine) in reserved {
            let what = || format!("restoring the eventSeq of switch {switch:?}");
            within(KV_TIMEOUT, what, async {
                let key = keys::encode(&switch);
                for _ in 0..ATTEMPTS {
                    let (highest, revision) = self.highest(&switch, &key).await?;
                    if highest >= mine {
                        return Ok(());
                    }
                    match self
                        .kv
                        .update(&key, mine.to_string().into(), revision)
                        .await
                    {
                        Ok(_) => return Ok(()),
                        Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
                        Err(e) => return Err(ClusterError::nats(what(), e)),
                    }
                }
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    /// Reserve the next block of a switch: the numbers after the highest ever reserved, at
    /// most [`KV_TIMEOUT`] in all.
    pub async fn reserve(&self, switch: &str) -> Result<Range<u64>, ClusterError> {
        let what = || format!("reserving eventSeq numbers for switch {switch:?}");
        within(KV_TIMEOUT, what, async {
            let key = keys::encode(switch);
            for _ in 0..ATTEMPTS {
                let (highest, revision) = self.highest(switch, &key).await?;
                let next = highest
                    .checked_add(BLOCK)
                    .filter(|n| *n <= MAX_EVENT_SEQ)
                    .ok_or_else(|| ClusterError::Corrupt {
                        what: format!("eventSeq of switch {switch:?}"),
                        reason: format!("{highest} leaves no block below 2^53"),
                    })?;
                match self
                    .kv
                    .update(&key, next.to_string().into(), revision)
                    .await
                {
                    Ok(_) => {
                        let mut reserved =
                            self.reserved.lock().unwrap_or_else(PoisonError::into_inner);
                        let mine = reserved.entry(switch.to_owned()).or_default();
                        *mine = (*mine).max(next);
                        return Ok(highest + 1..next + 1);
                    }
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
                    Err(e) => return Err(ClusterError::nats(what(), e)),
                }
            }
            Err(ClusterError::nats(
                what(),
                format!("{ATTEMPTS} conflicting reservations in a row"),
            ))
        })
        .await
    }

    /// The highest eventSeq reserved for a switch and the revision it was read at (0, 0 when
    /// none ever was).
    async fn highest(&self, switch: &str, key: &str) -> Result<(u64, u64), ClusterError> {
        let entry = self.kv.entry(key).await.map_err(|e| {
            ClusterError::nats(format!("reading the eventSeq of switch {switch:?}"), e)
        })?;
        match entry {
            Some(entry) if entry.operation == Operation::Put => {
                let text = std::str::from_utf8(&entry.value).unwrap_or("");
                let highest = text.parse::<u64>().map_err(|_| ClusterError::Corrupt {
                    what: format!("eventSeq of switch {switch:?}"),
                    reason: format!("{text:?} is not a number"),
                })?;
                Ok((highest, entry.revision))
            }
            Some(entry) => Ok((0, entry.revision)),
            None => Ok((0, 0)),
        }
    }
}
