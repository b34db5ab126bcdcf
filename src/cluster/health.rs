//! JetStream's health as this node sees it, apart from the NATS connection: core NATS may
//! work while JetStream does not (a NATS cluster that lost its quorum, a server restarted
//! without its store). The node's periodic JetStream writes (its presence) report here; a node
//! whose writes have all failed for longer than `lease-ttl` is not ready and takes no switch.
//!
//! It also keeps the identity (creation time) of every bucket and of the stream, so that a
//! node notices when they were lost — a NATS server restarted on an empty store — creates them
//! again and puts back what it holds ([`Cluster::check_stores`]).

use super::{buckets, within, Cluster, ClusterError, Stores, KV_TIMEOUT};
use async_nats::jetstream::{self, context::GetStreamErrorKind, stream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;
use tokio::sync::watch;

/// JetStream's health and the buckets' identity.
pub(super) struct Health {
    /// When the last JetStream write that succeeded was sent.
    last_ok: Mutex<Instant>,
    /// Whether a write failed since.
    failing: AtomicBool,
    /// The last error, for the log.
    last_error: Mutex<String>,
    /// (stream name, creation time in ns) of every bucket and the stream.
    identity: Mutex<Vec<(String, i128)>>,
    /// Incremented each time the buckets were found created again.
    generation: watch::Sender<u64>,
}

impl Health {
    pub(super) fn new(identity: Vec<(String, i128)>) -> Health {
        Health {
            last_ok: Mutex::new(Instant::now()),
            failing: AtomicBool::new(false),
            last_error: Mutex::new(String::new()),
            identity: Mutex::new(identity),
            generation: watch::channel(0).0,
        }
    }
}

/// The identity of the buckets and the stream as bound at join.
pub(super) fn identity(stores: &Stores, events: &stream::Stream) -> Vec<(String, i128)> {
    [
        &stores.leases.stream,
        &stores.nodes.stream,
        &stores.seq.stream,
        &stores.regs.stream,
        &stores.calls.stream,
        &stores.sessions.stream,
        events,
    ]
    .into_iter()
    .map(|s| {
        let info = s.cached_info();
        (
            info.config.name.clone(),
            info.created.unix_timestamp_nanos(),
        )
    })
    .collect()
}

/// What [`Cluster::check_stores`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoresCheck {
    /// The buckets and the stream are the ones this node bound.
    Same,
    /// They were created again (by this node or another) since this node last looked: what
    /// this node holds must be put back.
    Recreated,
}

impl Cluster {
    /// A JetStream write sent at `sent` succeeded.
    pub fn jetstream_answered(&self, sent: Instant) {
        let health = &self.inner.health;
        let mut last = health
            .last_ok
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if sent > *last {
            *last = sent;
        }
        health.failing.store(false, Ordering::Release);
    }

    /// A JetStream write failed (`why`, for the log).
    pub fn jetstream_failed(&self, why: &ClusterError) {
        let health = &self.inner.health;
        health.failing.store(true, Ordering::Release);
        *health
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = why.to_string();
    }

    /// Whether JetStream answered this node within `lease-ttl`: when not, the node is not
    /// ready and takes no switch.
    pub fn jetstream_available(&self) -> bool {
        let health = &self.inner.health;
        !health.failing.load(Ordering::Acquire)
            || health
                .last_ok
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .elapsed()
                <= self.inner.lease_ttl
    }

    /// The last JetStream error, for the log.
    pub fn jetstream_error(&self) -> String {
        self.inner
            .health
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes each time the buckets and the stream were found created again: watches over
    /// them must start again from their beginning.
    pub fn recreated(&self) -> watch::Receiver<u64> {
        self.inner.health.generation.subscribe()
    }

    /// Check that the buckets and the stream are the ones this node bound: create those
    /// missing (a NATS server restarted on an empty store) and say whether any was created
    /// again since the last check, by this node or another.
    pub async fn check_stores(&self) -> Result<StoresCheck, ClusterError> {
        let js = &self.inner.jetstream;
        let names: Vec<String> = self
            .inner
            .health
            .identity
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, _)| name.clone())
            .collect();
        let mut now = created(js, &names).await?;
        if now.iter().any(|(_, c)| c.is_none()) {
            tracing::warn!(
                "the cluster's buckets or stream are gone from JetStream (a NATS server restarted without its store?): creating them again"
            );
            let cfg = &self.inner.settings;
            let node = &self.inner.node_name;
            let leases_missing = now.first().is_some_and(|(_, c)| c.is_none());
            let stores = buckets::create_buckets(js, cfg, node).await?;
            buckets::create_stream(js, cfg, node).await?;
            if leases_missing {
                skip_epochs(&stores).await;
            }
            now = created(js, &names).await?;
        }
        let now: Vec<(String, i128)> = now
            .into_iter()
            .map(|(n, c)| (n, c.unwrap_or_default()))
            .collect();
        let mut identity = self
            .inner
            .health
            .identity
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *identity == now {
            return Ok(StoresCheck::Same);
        }
        *identity = now;
        drop(identity);
        self.inner.health.generation.send_modify(|g| *g += 1);
        Ok(StoresCheck::Recreated)
    }
}

/// The creation time of each stream (`None`: it does not exist).
async fn created(
    js: &jetstream::Context,
    names: &[String],
) -> Result<Vec<(String, Option<i128>)>, ClusterError> {
    let what = || "checking the cluster's buckets and stream".to_owned();
    within(KV_TIMEOUT, what, async {
        let mut out = Vec::new();
        for name in names {
            let created = match js.get_stream(name).await {
                Ok(s) => Some(s.cached_info().created.unix_timestamp_nanos()),
                Err(e) => match e.kind() {
                    GetStreamErrorKind::JetStream(j)
                        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                    {
                        None
                    }
                    _ => return Err(ClusterError::nats(what(), e)),
                },
            };
            out.push((name.clone(), created));
        }
        Ok(out)
    })
    .await
}

/// A lease's epoch is its revision at acquisition, and a new lease bucket starts its
/// revisions over: an ownership taken there could get the epoch of an earlier one, and the
/// other nodes would take its messages for the earlier owner's. So the new bucket's
/// revisions start at the current time in milliseconds, above any a bucket could have
/// reached.
async fn skip_epochs(stores: &Stores) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let stream = &stores.leases.stream;
    let last = stream.cached_info().state.last_sequence;
    if last >= now {
        return;
    }
    let what = || "starting the lease bucket's revisions above the earlier ones".to_owned();
    let done = within(KV_TIMEOUT, what, async {
        stream
            .purge()
            .sequence(now)
            .await
            .map_err(|e| ClusterError::nats(what(), e))
    })
    .await;
    if let Err(e) = done {
        tracing::warn!("{e}");
    }
}
