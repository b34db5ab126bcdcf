//! Client sessions across the cluster (README, "Resumable sessions"): a desktop may resume its
//! session on any node, also after the node that held it died.
//!
//! - bucket `CRR_<C>_SESS`: one record per session, keyed by a SHA-256 digest of its
//!   `sessionId` (the id itself, a secret, is never stored): the application that opened it,
//!   and the node and local session that hold it now. A resume on another node moves it with
//!   a compare-and-set, so that of two nodes resuming one session at once exactly one wins.
//! - The registrations are those of the registrations bucket (`records`), under the holding
//!   node and local session: the resuming node registers the same DNs for itself, then tells
//!   the previous node (core subject `crr.<C>.sess.<node id>`) to close its connection with
//!   4009 and release its own, so the monitors never stop in between.
//! - The events missed are read back from the event stream: the first message of a switch
//!   after the client's `lastEventSeq` is found by halves over the stream's sequence numbers
//!   (a direct get each, no scan of the window), then the switch's events from there are read
//!   up to what the stream held when the reading started; later ones come live.
//!
//! Every call has its own timeout ([`KV_TIMEOUT`]).

use super::flow::header;
use super::keys::{self, session_key as key_of, Subjects};
use super::{within, ClusterError, KV_TIMEOUT};
use crate::protocol::SharedText;
use async_nats::jetstream::consumer::{self, DeliverPolicy};
use async_nats::jetstream::{kv, stream::Stream};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How long the previous node has to close its connection and release its registrations
/// when another node resumes its session.
pub const TAKE_OVER_TIMEOUT: Duration = Duration::from_secs(1);

/// The most DNs of a session whose events a replay reads by their own subjects; beyond, it
/// reads the switch's and keeps the session's.
const PER_DN_SUBJECTS: usize = 64;

/// How long reading one switch's missed events from the stream may take.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(5);

/// A session as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The application that opened it (only it may resume it).
    pub app: String,
    /// The node that holds it now.
    pub node: String,
    /// Its local session on that node (the key of its registrations).
    pub session: String,
    /// When it was opened (Unix milliseconds, on the node's clock): a replay gives nothing
    /// published more than [`CLOCK_MARGIN`] before, events before were never the session's.
    #[serde(default)]
    pub opened_ms: u64,
    /// While the node that took the session over registers its DNs again: the (node, local
    /// session) whose registrations are still the session's. A node taking the session from
    /// it at that moment reads those as well, so that it does not resume with only the DNs
    /// registered again so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<(String, String)>,
}

/// How far the nodes' and the NATS server's clocks may differ before a replay misses
/// events: it starts that long before the session was opened.
pub const CLOCK_MARGIN: Duration = Duration::from_millis(500);

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The sessions bucket and what a resume reads.
#[derive(Clone)]
pub struct SessionStore {
    kv: kv::Store,
    client: async_nats::Client,
    subjects: Subjects,
    events: Stream,
}

impl SessionStore {
    /// The store over these handles.
    pub fn new(
        kv: kv::Store,
        client: async_nats::Client,
        subjects: Subjects,
        events: Stream,
    ) -> SessionStore {
        SessionStore {
            kv,
            client,
            subjects,
            events,
        }
    }

    /// Record a new session.
    pub async fn put(&self, id: &str, record: &SessionRecord) -> Result<(), ClusterError> {
        let value = serde_json::to_vec(record).unwrap_or_default();
        within(
            KV_TIMEOUT,
            || "recording a client session".to_owned(),
            async {
                self.kv
                    .put(key_of(id), value.into())
                    .await
                    .map(|_| ())
                    .map_err(|e| ClusterError::nats("recording a client session", e))
            },
        )
        .await
    }

    /// The record of session `id` and its revision, if any.
    pub async fn get(&self, id: &str) -> Result<Option<(SessionRecord, u64)>, ClusterError> {
        let entry = within(
            KV_TIMEOUT,
            || "reading a client session".to_owned(),
            async {
                self.kv
                    .entry(key_of(id))
                    .await
                    .map_err(|e| ClusterError::nats("reading a client session", e))
            },
        )
        .await?;
        Ok(entry
            .filter(|e| matches!(e.operation, kv::Operation::Put))
            .and_then(|e| {
                serde_json::from_slice::<SessionRecord>(&e.value)
                    .ok()
                    .map(|r| (r, e.revision))
            }))
    }

    /// Move session `id` to `record` if it is still at `revision`: `false` when another node
    /// moved it first.
    pub async fn claim(
        &self,
        id: &str,
        revision: u64,
        record: &SessionRecord,
    ) -> Result<bool, ClusterError> {
        let value = serde_json::to_vec(record).unwrap_or_default();
        let updated = within(KV_TIMEOUT, || "taking a client session".to_owned(), async {
            Ok(self.kv.update(key_of(id), value.into(), revision).await)
        })
        .await?;
        Ok(updated.is_ok())
    }

    /// Forget session `id` if node `node` still holds it.
    pub async fn delete_if_held(&self, id: &str, node: &str) -> Result<(), ClusterError> {
        let Some((record, revision)) = self.get(id).await? else {
            return Ok(());
        };
        if record.node != node {
            return Ok(());
        }
        within(
            KV_TIMEOUT,
            || "removing a client session".to_owned(),
            async {
                self.kv
                    .delete_expect_revision(key_of(id), Some(revision))
                    .await
                    .map_err(|e| ClusterError::nats("removing a client session", e))
            },
        )
        .await
    }

    /// Forget every session held by node `node` (gone from the cluster, its sessions'
    /// linger over); how many.
    pub async fn delete_node(&self, node: &str) -> Result<usize, ClusterError> {
        let values = super::latest_values(&self.kv, ">").await?;
        let mut deleted = 0;
        for (key, value) in values {
            let Ok(record) = serde_json::from_slice::<SessionRecord>(&value) else {
                continue;
            };
            if record.node == node {
                let _ = within(
                    KV_TIMEOUT,
                    || "removing a client session".to_owned(),
                    async {
                        self.kv
                            .delete(key)
                            .await
                            .map_err(|e| ClusterError::nats("removing a client session", e))
                    },
                )
                .await;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Ask node `node` to give up its local session `session` (close its connection with
    /// 4009, release its registrations): `true` when it answered.
    pub async fn take_over(&self, node: &str, session: &str) -> bool {
        let subject = keys::session_subject(&self.subjects.cluster, node);
        let request = self.client.request(subject, session.to_owned().into());
        matches!(
            tokio::time::timeout(TAKE_OVER_TIMEOUT, request).await,
            Ok(Ok(_))
        )
    }

    /// The events of `dns` on switch `switch` with an `eventSeq` above `after`, published
    /// since `since_ms` (Unix milliseconds), in order, as the stream holds them now (call
    /// events only of the DNs whose value says the session registered them with
    /// `callEvents`); `None` when the stream could not be read.
    pub async fn replay(
        &self,
        switch: &str,
        (after, since_ms): (u64, u64),
        dns: &HashMap<Arc<str>, bool>,
    ) -> Option<Replayed> {
        // Only the session's DNs are read, one subject each, unless it has many: then the
        // switch's, keeping the session's.
        let subjects: Vec<String> = if dns.len() <= PER_DN_SUBJECTS {
            dns.keys()
                .map(|dn| self.subjects.event_dn(switch, dn))
                .collect()
        } else {
            vec![self.subjects.event_all(switch)]
        };
        let deadline = tokio::time::Instant::now() + REPLAY_TIMEOUT;
        let mut stream = self.events.clone();
        let info = tokio::time::timeout_at(deadline, stream.info())
            .await
            .ok()?
            .ok()?;
        let first = info.state.first_sequence;
        let Some((last, start, before)) = self.locate(&subjects, after, first, deadline).await?
        else {
            return Some(Replayed {
                covered: after == 0,
                ..Replayed::default()
            });
        };
        let epoch_before = before.and_then(|(_, epoch)| epoch);
        // The stream still holds an event at or below `after`: nothing after it is missing.
        let covered = after == 0 || before.is_some();
        let Some(start) = start else {
            return Some(Replayed {
                epoch_before,
                covered,
                events: Vec::new(),
            });
        };
        let mut config = consumer::pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ..Default::default()
        };
        if let [one] = subjects.as_slice() {
            config.filter_subject = one.clone();
        } else {
            config.filter_subjects = subjects;
        }
        let mut messages = stream_messages(&self.events, config, deadline).await?;
        let mut found = Vec::new();
        let margin = u64::try_from(CLOCK_MARGIN.as_millis()).unwrap_or(0);
        loop {
            let msg = match tokio::time::timeout_at(deadline, messages.next()).await {
                Ok(Some(Ok(msg))) => msg,
                _ => return None,
            };
            let info = msg.info().ok()?;
            let sequence = info.stream_sequence;
            let published_ms =
                u64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
            if let Some((dn, seq)) = stream_event(msg.headers.as_ref()) {
                let wanted = dns.get(dn).copied();
                if seq > after && published_ms + margin >= since_ms && wanted.is_some() {
                    let text = SharedText::try_from(msg.payload.to_vec()).ok();
                    // Call events only for a DN registered with callEvents.
                    let text =
                        text.filter(|t| wanted == Some(true) || !crate::protocol::is_call_event(t));
                    if let Some(text) = text {
                        found.push(ReplayedEvent {
                            seq,
                            epoch: stream_epoch(msg.headers.as_ref()),
                            text,
                        });
                    }
                }
            }
            if sequence >= last {
                return Some(Replayed {
                    epoch_before,
                    covered,
                    events: found,
                });
            }
        }
    }

    /// Where the replay of `subjects` is in the stream: the last message of those subjects now
    /// (later ones come live), the first whose `eventSeq` is above `after`, and the latest at
    /// or below `after` seen (its `eventSeq` and epoch). `Some(None)`: the subjects have no
    /// message; `None`: the stream could not be read.
    async fn locate(
        &self,
        subjects: &[String],
        after: u64,
        first: u64,
        deadline: tokio::time::Instant,
    ) -> Option<Option<Located>> {
        let mut last = None;
        for subject in subjects {
            let probe = tokio::time::timeout_at(
                deadline,
                self.events.direct_get_last_for_subject(subject.clone()),
            )
            .await
            .ok()?;
            if let Ok(msg) = probe {
                last = last.max(Some(msg.sequence));
            }
        }
        let Some(last) = last else {
            return Some(None);
        };
        let (mut start, mut before): (Option<u64>, Option<(u64, Option<u64>)>) = (None, None);
        for subject in subjects {
            let (s, b) = self
                .first_after(subject, after, first, last, deadline)
                .await?;
            start = match (start, s) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some(b) = b {
                if before.is_none_or(|(seq, _)| b.0 > seq) {
                    before = Some(b);
                }
            }
        }
        Some(Some((last, start, before)))
    }

    /// The stream sequence of the first message of `subject` whose `eventSeq` is above
    /// `after`, searched by halves between `first` and `last` (`None`: none), and the latest
    /// message at or below `after` seen on the way (its `eventSeq` and epoch). `None` when the
    /// stream could not be read.
    async fn first_after(
        &self,
        subject: &str,
        after: u64,
        first: u64,
        last: u64,
        deadline: tokio::time::Instant,
    ) -> Option<(Option<u64>, Option<(u64, Option<u64>)>)> {
        let (mut lo, mut hi) = (first.max(1), last.saturating_add(1));
        let mut found = None;
        let mut before: Option<(u64, Option<u64>)> = None;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let probe = tokio::time::timeout_at(
                deadline,
                self.events
                    .direct_get_next_for_subject(subject.to_owned(), Some(mid)),
            )
            .await
            .ok()?;
            let Ok(msg) = probe else {
                // Nothing of the switch at or after `mid`.
                hi = mid;
                continue;
            };
            let seq = stream_event(Some(&msg.headers)).map_or(0, |(_, s)| s);
            if seq > after {
                found = Some(msg.sequence);
                hi = mid;
            } else {
                if before.is_none_or(|(s, _)| seq > s) {
                    before = Some((seq, stream_epoch(Some(&msg.headers))));
                }
                lo = msg.sequence.saturating_add(1);
            }
        }
        Some((found, before))
    }
}

/// Where a replay is in the stream: the last message (stream sequence), the first to replay,
/// and the latest at or below the client's `lastEventSeq` seen (its `eventSeq` and epoch).
type Located = (u64, Option<u64>, Option<(u64, Option<u64>)>);

/// What a replay read back from the stream.
#[derive(Debug, Default)]
pub struct Replayed {
    /// The owner's epoch of the latest event at or below the client's `lastEventSeq` that the
    /// search saw (`None`: none seen).
    pub epoch_before: Option<u64>,
    /// Whether the stream still holds everything after the client's `lastEventSeq` (it holds
    /// an event at or below it, or the client had none): else some may be gone.
    pub covered: bool,
    /// The session's events after it, in order.
    pub events: Vec<ReplayedEvent>,
}

/// One replayed event.
#[derive(Debug)]
pub struct ReplayedEvent {
    /// Its `eventSeq`.
    pub seq: u64,
    /// The epoch of the owner that published it (`None`: not said).
    pub epoch: Option<u64>,
    /// Its bytes.
    pub text: SharedText,
}

/// The owner's epoch a message of the event stream was published in.
fn stream_epoch(headers: Option<&async_nats::HeaderMap>) -> Option<u64> {
    headers?.get(header::EPOCH)?.as_str().parse().ok()
}

/// The messages of the event stream from `config`'s start, with `deadline` for setting up the
/// consumer; `None` when it could not be.
pub(super) async fn stream_messages(
    events: &Stream,
    config: consumer::pull::OrderedConfig,
    deadline: tokio::time::Instant,
) -> Option<consumer::pull::Ordered> {
    let consumer = tokio::time::timeout_at(deadline, events.create_consumer(config))
        .await
        .ok()?
        .ok()?;
    tokio::time::timeout_at(deadline, consumer.messages())
        .await
        .ok()?
        .ok()
}

/// The DN and eventSeq of a message of the event stream.
pub(super) fn stream_event(headers: Option<&async_nats::HeaderMap>) -> Option<(&str, u64)> {
    let headers = headers?;
    let seq = headers.get(header::SEQ)?.as_str().parse().ok()?;
    let dn = headers.get(header::DN)?.as_str();
    Some((dn, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_key_is_a_digest_of_its_id() {
        let a = key_of("0123456789abcdef0123456789abcdef");
        assert_eq!(a.len(), 33);
        assert!(a.starts_with('s'));
        assert!(!a.contains("0123456789abcdef"));
        assert_ne!(a, key_of("0123456789abcdef0123456789abcdee"));
        assert_eq!(a, key_of("0123456789abcdef0123456789abcdef"));
    }
}
