//! Switch ownership and node presence, in two key-value buckets whose entries expire
//! (`max_age` = `lease-ttl`) unless renewed.
//!
//! A switch's lease (`CRR_<C>_LEASES`, key = the switch) is acquired with `create`, which
//! fails while a live entry exists; its revision is the owner's *epoch*, stamped on
//! everything the owner sends. The owner renews it every `lease-ttl`/3 with a compare-and-set
//! `update` (a new write each time, so the bucket's `max_age` counts from the last renew),
//! each renew bounded by its own timeout of `lease-ttl`/3. When renews stop (the owner died,
//! paused or lost NATS), the entry ages out, the server leaves a delete marker that every
//! watcher sees, and another node's `create` succeeds with a higher revision.
//!
//! The owner itself must stop acting before that can happen: its [`Fence`] holds a deadline
//! on the monotonic clock — the send time of the last successful renew + `lease-ttl` −
//! max(250 ms, `lease-ttl`/5) — and every CSTA write, every publish of something read from a
//! link and every answer to a forwarded request checks it first. Counting from the *send*
//! time makes the deadline earlier than the expiry the server applies (it counts from when it
//! stored the write), whatever the renew's round trip took; the margin covers the difference
//! between the clocks' rates and the time a check takes to act.
//!
//! Node presence (`CRR_<C>_NODES`, key = node name) works the same way: a node refuses to
//! start while a live entry of its name carries another process's id.

use super::{keys, latest_values, within, ClusterError, KV_TIMEOUT};
pub use crate::link::{fence_margin, Fence};
use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long one write of a lease renewal may take before it is tried again (within the
/// renewal's own bound, `lease-ttl`/3).
pub const RENEW_ATTEMPT: Duration = Duration::from_secs(1);

/// The value of a lease entry.
#[derive(Debug, Serialize, Deserialize)]
struct LeaseValue {
    node: String,
    id: String,
    /// Absent in the entry written by `create` (its revision is the epoch), present in every
    /// renew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    epoch: Option<u64>,
}

/// Who holds a switch's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The owner's node name.
    pub node: String,
    /// The owner's node id (one process).
    pub id: String,
    /// The epoch: the revision at which the lease was acquired.
    pub epoch: u64,
    /// The revision of this entry (each renew makes a new one).
    pub revision: u64,
}

/// A lease this node holds.
#[derive(Debug)]
pub struct Lease {
    /// The switch.
    pub switch: String,
    /// The epoch (revision at acquisition), stamped on everything the owner sends.
    pub epoch: u64,
    /// The revision of the last write, which the next renew must find.
    pub revision: u64,
    /// The permission to act, moved by every successful renew.
    pub fence: Fence,
}

/// The switch leases, as one node.
#[derive(Clone)]
pub struct Leases {
    kv: kv::Store,
    node: Arc<str>,
    id: Arc<str>,
    ttl: Duration,
    /// Per switch, when an acquire that failed (JetStream did not answer) may be tried again:
    /// a bucket without a leader is not asked five times a second.
    retry_at: Arc<std::sync::Mutex<std::collections::HashMap<String, Instant>>>,
    /// (switch, epoch) of every lease this process acquired: its own messages about them,
    /// echoed back by NATS (late, after a reconnection), are not news from another owner.
    epochs: Arc<std::sync::Mutex<std::collections::HashSet<(String, u64)>>>,
}

/// How long after a failed acquire the next is tried.
pub const ACQUIRE_BACKOFF: Duration = Duration::from_secs(1);

impl Leases {
    /// The leases in `kv`, acting as node `node` (`id`), with `lease-ttl` `ttl`.
    pub fn new(kv: kv::Store, node: &str, id: &str, ttl: Duration) -> Leases {
        Leases {
            kv,
            node: Arc::from(node),
            id: Arc::from(id),
            ttl,
            retry_at: Arc::default(),
            epochs: Arc::default(),
        }
    }

    /// How often a lease is renewed, and how long each renew may take: `lease-ttl`/3.
    pub fn renew_interval(&self) -> Duration {
        self.ttl / 3
    }

    fn value(&self, epoch: Option<u64>) -> bytes::Bytes {
        let value = LeaseValue {
            node: self.node.to_string(),
            id: self.id.to_string(),
            epoch,
        };
        serde_json::to_vec(&value).unwrap_or_default().into()
    }

    /// Take a switch's lease: `Some` with the fence armed, or `None` when another node holds
    /// it. A lease found under this very process's id (an earlier acquire whose answer was
    /// lost) is taken over and renewed at once.
    ///
    /// After a failure (JetStream did not answer), the next [`ACQUIRE_BACKOFF`] returns `None`
    /// without asking.
    pub async fn acquire(&self, switch: &str) -> Result<Option<Lease>, ClusterError> {
        let now = Instant::now();
        {
            let retry_at = self
                .retry_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if retry_at.get(switch).is_some_and(|at| now < *at) {
                return Ok(None);
            }
        }
        let result = self.acquire_now(switch).await;
        if let Ok(Some(lease)) = &result {
            self.epochs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert((switch.to_owned(), lease.epoch));
        }
        let mut retry_at = self
            .retry_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if result.is_err() {
            retry_at.insert(switch.to_owned(), Instant::now() + ACQUIRE_BACKOFF);
        } else {
            retry_at.remove(switch);
        }
        result
    }

    /// Whether `epoch` is an ownership of `switch` by this process.
    pub fn is_own_epoch(&self, switch: &str, epoch: u64) -> bool {
        self.epochs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&(switch.to_owned(), epoch))
    }

    /// Taking `switch` failed after its lease was acquired (its records could not be read):
    /// the next acquire waits [`ACQUIRE_BACKOFF`] as after a failed acquire.
    pub fn back_off(&self, switch: &str) {
        self.retry_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(switch.to_owned(), Instant::now() + ACQUIRE_BACKOFF);
    }

    async fn acquire_now(&self, switch: &str) -> Result<Option<Lease>, ClusterError> {
        let what = || format!("acquiring the lease of switch {switch:?}");
        let key = keys::encode(switch);
        let sent = Instant::now();
        let created = within(self.renew_interval(), what, async {
            match self.kv.create(&key, self.value(None)).await {
                Ok(revision) => Ok(Some(revision)),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(None),
                Err(e) => Err(ClusterError::nats(what(), e)),
            }
        })
        .await?;
        if let Some(revision) = created {
            let fence = Fence::closed();
            fence.arm(sent, self.ttl);
            return Ok(Some(Lease {
                switch: switch.to_owned(),
                epoch: revision,
                revision,
                fence,
            }));
        }
        match self.current(switch).await? {
            Some(owner) if *owner.id == *self.id => {
                // An earlier acquire whose answer was lost, or a lease this process gave up
                // (fenced) and could not delete: removed, and taken anew with a new epoch,
                // so that nothing this ownership sends is mistaken for the earlier one's.
                let what = || format!("removing a stale lease of switch {switch:?}");
                within(self.renew_interval(), what, async {
                    match self
                        .kv
                        .delete_expect_revision(&key, Some(owner.revision))
                        .await
                    {
                        Ok(()) => Ok(()),
                        Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(()),
                        Err(e) => Err(ClusterError::nats(what(), e)),
                    }
                })
                .await?;
                Box::pin(self.acquire_fresh(switch)).await
            }
            _ => Ok(None),
        }
    }

    /// `create` once more, after a stale lease of this process was removed.
    async fn acquire_fresh(&self, switch: &str) -> Result<Option<Lease>, ClusterError> {
        let what = || format!("acquiring the lease of switch {switch:?}");
        let key = keys::encode(switch);
        let sent = Instant::now();
        within(self.renew_interval(), what, async {
            match self.kv.create(&key, self.value(None)).await {
                Ok(revision) => {
                    let fence = Fence::closed();
                    fence.arm(sent, self.ttl);
                    Ok(Some(Lease {
                        switch: switch.to_owned(),
                        epoch: revision,
                        revision,
                        fence,
                    }))
                }
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(None),
                Err(e) => Err(ClusterError::nats(what(), e)),
            }
        })
        .await
    }

    /// Renew a lease (compare-and-set on its last revision, within `lease-ttl`/3); on success
    /// the fence is armed from this renew's send time. A lease found taken or expired is
    /// lost: the fence is disarmed and [`ClusterError::LeaseLost`] returned. On a timeout or a
    /// NATS error the fence is left as it was (it runs out by itself).
    ///
    /// Within that time, a write that fails or takes longer than [`RENEW_ATTEMPT`] is tried
    /// again (a JetStream leader election, a reconnection to another server), so that the
    /// renew succeeds as soon as the bucket is writable again.
    pub async fn renew(&self, lease: &mut Lease) -> Result<(), ClusterError> {
        let switch = lease.switch.clone();
        let what = || format!("renewing the lease of switch {switch:?}");
        let attempt = self.renew_interval().min(RENEW_ATTEMPT);
        within(self.renew_interval(), what, async {
            loop {
                let started = Instant::now();
                let outcome = tokio::time::timeout(attempt, self.renew_once(lease)).await;
                match outcome {
                    Ok(Ok(())) => return Ok(()),
                    Ok(Err(e @ ClusterError::LeaseLost { .. })) => return Err(e),
                    Ok(Err(_)) | Err(_) => {
                        let pause = attempt.saturating_sub(started.elapsed());
                        tokio::time::sleep(pause.max(Duration::from_millis(100))).await;
                    }
                }
            }
        })
        .await
    }

    async fn renew_once(&self, lease: &mut Lease) -> Result<(), ClusterError> {
        let key = keys::encode(&lease.switch);
        let value = self.value(Some(lease.epoch));
        // Twice at most: once more after finding our own write from a renew whose answer
        // was lost.
        for _ in 0..2 {
            let sent = Instant::now();
            match self.kv.update(&key, value.clone(), lease.revision).await {
                Ok(revision) => {
                    lease.revision = revision;
                    lease.fence.arm(sent, self.ttl);
                    return Ok(());
                }
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                    match self.current(&lease.switch).await? {
                        Some(o)
                            if *o.id == *self.id
                                && o.epoch == lease.epoch
                                && o.revision != lease.revision =>
                        {
                            lease.revision = o.revision;
                        }
                        holder => {
                            lease.fence.close();
                            return Err(ClusterError::LeaseLost {
                                switch: lease.switch.clone(),
                                holder: holder.map(|o| o.node),
                            });
                        }
                    }
                }
                Err(e) => {
                    return Err(ClusterError::nats(
                        format!("renewing the lease of switch {:?}", lease.switch),
                        e,
                    ))
                }
            }
        }
        lease.fence.close();
        Err(ClusterError::LeaseLost {
            switch: lease.switch.clone(),
            holder: None,
        })
    }

    /// Give a lease up: the fence is disarmed first, then the entry deleted — only if it is
    /// still this lease's (an entry another node wrote since is left alone).
    pub async fn release(&self, lease: Lease) -> Result<(), ClusterError> {
        lease.fence.close();
        let key = keys::encode(&lease.switch);
        let what = || format!("releasing the lease of switch {:?}", lease.switch);
        within(
            self.renew_interval().max(Duration::from_secs(1)),
            what,
            async {
                match self
                    .kv
                    .delete_expect_revision(&key, Some(lease.revision))
                    .await
                {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(()),
                    Err(e) => Err(ClusterError::nats(what(), e)),
                }
            },
        )
        .await
    }

    /// Who holds a switch's lease now, if anyone.
    pub async fn current(&self, switch: &str) -> Result<Option<Owner>, ClusterError> {
        let what = || format!("reading the lease of switch {switch:?}");
        let entry = within(KV_TIMEOUT, what, async {
            self.kv
                .entry(keys::encode(switch))
                .await
                .map_err(|e| ClusterError::nats(what(), e))
        })
        .await?;
        match entry {
            Some(entry) if entry.operation == Operation::Put => {
                owner(&entry.value, entry.revision).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Every lease's changes: first the current state of each switch that has an entry, then
    /// each renew (a new revision), acquisition, release and expiry as it happens: `(switch,
    /// Some(owner))` for a holder, `(switch, None)` once no node holds it.
    pub async fn watch(
        &self,
    ) -> Result<BoxStream<'static, Result<(String, Option<Owner>), ClusterError>>, ClusterError>
    {
        watch_values(&self.kv, owner).await
    }
}

/// The owner a lease entry names.
fn owner(value: &[u8], revision: u64) -> Result<Owner, ClusterError> {
    let value: LeaseValue = serde_json::from_slice(value).map_err(|e| ClusterError::Corrupt {
        what: "a switch lease".into(),
        reason: e.to_string(),
    })?;
    Ok(Owner {
        node: value.node,
        id: value.id,
        epoch: value.epoch.unwrap_or(revision),
        revision,
    })
}

/// Watch every key of a bucket, its current entries first.
async fn watch_all(
    store: &kv::Store,
) -> Result<BoxStream<'static, Result<kv::Entry, ClusterError>>, ClusterError> {
    let what = || format!("watching bucket {}", store.name);
    let watch = within(KV_TIMEOUT, what, async {
        store
            .watch_with_history(">")
            .await
            .map_err(|e| ClusterError::nats(what(), e))
    })
    .await?;
    let name = store.name.clone();
    Ok(watch
        .map(move |entry| {
            entry.map_err(|e| ClusterError::nats(format!("watching bucket {name}"), e))
        })
        .boxed())
}

/// Every key of a bucket as `(decoded key, Some(value read by `read`))`, or `None` once the
/// key is removed or expired: first the current entries, then each change.
async fn watch_values<T: Send + 'static>(
    store: &kv::Store,
    read: fn(&[u8], u64) -> Result<T, ClusterError>,
) -> Result<BoxStream<'static, Result<(String, Option<T>), ClusterError>>, ClusterError> {
    let watch = watch_all(store).await?;
    Ok(watch
        .filter_map(move |entry| async move {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => return Some(Err(e)),
            };
            let key = keys::decode(&entry.key)?;
            Some(match entry.operation {
                Operation::Put => read(&entry.value, entry.revision).map(|v| (key, Some(v))),
                Operation::Delete | Operation::Purge => Ok((key, None)),
            })
        })
        .boxed())
}

/// The value of a presence entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's id (one process).
    pub id: String,
    /// When it started, in milliseconds since the Unix epoch.
    pub started: u64,
    /// Its switches as its configuration defines them: name → the DN plan as written, so
    /// that the nodes can tell when they do not agree.
    #[serde(default)]
    pub switches: std::collections::BTreeMap<String, String>,
}

/// This node's presence in the cluster, and the other nodes'. Cheap to clone; the clones share
/// the last revision written.
#[derive(Clone)]
pub struct Presence {
    kv: kv::Store,
    cluster: Arc<str>,
    node: Arc<str>,
    /// What the entry says (the switches change with a reload; shared by the clones).
    info: Arc<std::sync::RwLock<Arc<NodeInfo>>>,
    ttl: Duration,
    /// The revision of our last write (0: none yet).
    revision: Arc<AtomicU64>,
}

impl Presence {
    /// The presence of node `node` (`id`), started now, in `kv`.
    pub fn new(kv: kv::Store, cluster: &str, node: &str, id: &str, ttl: Duration) -> Presence {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Presence {
            kv,
            cluster: Arc::from(cluster),
            node: Arc::from(node),
            info: Arc::new(std::sync::RwLock::new(Arc::new(NodeInfo {
                id: id.to_owned(),
                started,
                switches: std::collections::BTreeMap::new(),
            }))),
            ttl,
            revision: Arc::new(AtomicU64::new(0)),
        }
    }

    /// This presence, announcing the node's switches (name → DN plan as written).
    pub fn with_switches(self, switches: std::collections::BTreeMap<String, String>) -> Presence {
        self.set_switches(switches);
        self
    }

    /// This node's switches changed (a reload): the next renewal writes them.
    pub fn set_switches(&self, switches: std::collections::BTreeMap<String, String>) {
        let mut slot = self
            .info
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut info = (**slot).clone();
        info.switches = switches;
        *slot = Arc::new(info);
    }

    /// What the entry says now.
    fn info(&self) -> Arc<NodeInfo> {
        self.info
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// How often presence is renewed: `lease-ttl`/3.
    pub fn renew_interval(&self) -> Duration {
        self.ttl / 3
    }

    fn name_in_use(&self, other: &NodeInfo) -> ClusterError {
        ClusterError::NameInUse {
            cluster: self.cluster.to_string(),
            node: self.node.to_string(),
            id: other.id.clone(),
            ttl: humantime::format_duration(self.ttl).to_string(),
        }
    }

    /// Announce this node: refused ([`ClusterError::NameInUse`]) while a live entry of its
    /// name carries another id.
    pub async fn announce(&self) -> Result<(), ClusterError> {
        let what = || format!("announcing node {:?}", self.node);
        within(KV_TIMEOUT, what, self.announce_once()).await
    }

    async fn announce_once(&self) -> Result<(), ClusterError> {
        let key = keys::encode(&self.node);
        let value: bytes::Bytes = serde_json::to_vec(&*self.info()).unwrap_or_default().into();
        for _ in 0..2 {
            match self.kv.create(&key, value.clone()).await {
                Ok(revision) => {
                    self.revision.store(revision, Ordering::Release);
                    return Ok(());
                }
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                    if let Some((other, revision)) = self.entry().await? {
                        if other.id != self.info().id {
                            return Err(self.name_in_use(&other));
                        }
                        self.revision.store(revision, Ordering::Release);
                        return Ok(());
                    }
                    // Gone between the two reads: create again.
                }
                Err(e) => {
                    return Err(ClusterError::nats(
                        format!("announcing node {:?}", self.node),
                        e,
                    ))
                }
            }
        }
        Err(ClusterError::nats(
            format!("announcing node {:?}", self.node),
            "the entry kept changing",
        ))
    }

    /// The live entry of this node's name: its info and revision.
    async fn entry(&self) -> Result<Option<(NodeInfo, u64)>, ClusterError> {
        let entry = self
            .kv
            .entry(keys::encode(&self.node))
            .await
            .map_err(|e| ClusterError::nats(format!("reading node {:?}", self.node), e))?;
        match entry {
            Some(entry) if entry.operation == Operation::Put => {
                Ok(Some((node_info(&entry.value)?, entry.revision)))
            }
            _ => Ok(None),
        }
    }

    /// Renew this node's entry (within `lease-ttl`/3). An entry that expired meanwhile is
    /// written again; one that another process of this name wrote is
    /// [`ClusterError::NameInUse`].
    pub async fn renew(&self) -> Result<(), ClusterError> {
        let what = || format!("renewing node {:?}", self.node);
        within(self.renew_interval(), what, async {
            let key = keys::encode(&self.node);
            let value: bytes::Bytes = serde_json::to_vec(&*self.info()).unwrap_or_default().into();
            let revision = self.revision.load(Ordering::Acquire);
            match self.kv.update(&key, value, revision).await {
                Ok(revision) => {
                    self.revision.store(revision, Ordering::Release);
                    Ok(())
                }
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                    match self.entry().await? {
                        Some((other, _)) if other.id != self.info().id => {
                            Err(self.name_in_use(&other))
                        }
                        Some((_, revision)) => {
                            self.revision.store(revision, Ordering::Release);
                            Ok(())
                        }
                        None => self.announce_once().await,
                    }
                }
                Err(e) => Err(ClusterError::nats(what(), e)),
            }
        })
        .await
    }

    /// Remove this node's entry (at a clean stop), unless another process wrote it since.
    pub async fn leave(&self) -> Result<(), ClusterError> {
        let what = || format!("removing node {:?}", self.node);
        within(KV_TIMEOUT, what, async {
            let revision = self.revision.load(Ordering::Acquire);
            match self
                .kv
                .delete_expect_revision(keys::encode(&self.node), Some(revision))
                .await
            {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(()),
                Err(e) => Err(ClusterError::nats(what(), e)),
            }
        })
        .await
    }

    /// The live nodes: (name, id), sorted by name.
    pub async fn live_nodes(&self) -> Result<Vec<(String, String)>, ClusterError> {
        let mut nodes = Vec::new();
        for (key, value) in latest_values(&self.kv, ">").await? {
            if let (Some(name), Ok(info)) = (keys::decode(&key), node_info(&value)) {
                nodes.push((name, info.id));
            }
        }
        nodes.sort();
        Ok(nodes)
    }

    /// Every node's arrivals, renewals and departures (expiry or removal): first the live
    /// nodes, then each change as it happens.
    pub async fn watch(
        &self,
    ) -> Result<BoxStream<'static, Result<(String, Option<NodeInfo>), ClusterError>>, ClusterError>
    {
        watch_values(&self.kv, |value, _| node_info(value)).await
    }
}

fn node_info(value: &[u8]) -> Result<NodeInfo, ClusterError> {
    serde_json::from_slice(value).map_err(|e| ClusterError::Corrupt {
        what: "a node's presence".into(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(3);

    #[test]
    fn a_disarmed_fence_refuses() {
        let fence = Fence::closed();
        assert!(!fence.check());
        assert_eq!(fence.deadline(), None);
    }

    #[test]
    fn the_deadline_counts_from_the_renew_send_time() {
        let fence = Fence::closed();
        let sent = Instant::now();
        fence.arm(sent, TTL);
        // 3 s − max(250 ms, 600 ms) = 2.4 s after the send.
        let deadline = sent + Duration::from_millis(2400);
        let got = fence.deadline().unwrap_or(sent);
        let off = got.max(deadline) - got.min(deadline);
        assert!(off < Duration::from_micros(1), "{off:?}");
        assert!(fence.check_at(sent));
        assert!(fence.check_at(deadline - Duration::from_millis(1)));
        assert!(!fence.check_at(deadline));
        assert!(!fence.check_at(deadline + Duration::from_secs(60)));
    }

    #[test]
    fn the_margin_is_at_least_250ms() {
        assert_eq!(
            fence_margin(Duration::from_secs(1)),
            Duration::from_millis(250)
        );
        assert_eq!(
            fence_margin(Duration::from_secs(3)),
            Duration::from_millis(600)
        );
        assert_eq!(
            fence_margin(Duration::from_secs(30)),
            Duration::from_secs(6)
        );
        let fence = Fence::closed();
        let sent = Instant::now();
        fence.arm(sent, Duration::from_secs(1));
        assert!(fence.check_at(sent + Duration::from_millis(749)));
        assert!(!fence.check_at(sent + Duration::from_millis(750)));
    }

    #[test]
    fn a_renew_sent_long_ago_leaves_the_fence_shut() {
        let fence = Fence::closed();
        let now = Instant::now();
        // A pause (SIGSTOP, a frozen VM) longer than the lease: the renew's answer arrives
        // after the deadline it would set.
        let sent = now.checked_sub(Duration::from_secs(10)).unwrap_or(now);
        fence.arm(sent, TTL);
        if sent < now {
            assert!(!fence.check());
        }
        fence.arm(now, TTL);
        assert!(fence.check());
    }

    #[test]
    fn clones_share_the_deadline_and_disarm_shuts_at_once() {
        let fence = Fence::closed();
        let link_side = fence.clone();
        fence.arm(Instant::now(), TTL);
        assert!(link_side.check());
        std::thread::spawn(move || assert!(link_side.check()))
            .join()
            .unwrap_or(());
        fence.close();
        assert!(!fence.clone().check());
    }

    #[test]
    fn lease_values_round_trip() {
        let v = LeaseValue {
            node: "a".into(),
            id: "a-00".into(),
            epoch: None,
        };
        let text = serde_json::to_string(&v).unwrap_or_default();
        assert_eq!(text, r#"{"node":"a","id":"a-00"}"#);
        let o = owner(text.as_bytes(), 7).ok();
        assert_eq!(o.map(|o| (o.epoch, o.revision)), Some((7, 7)));
        let o = owner(br#"{"node":"a","id":"a-00","epoch":7}"#, 9).ok();
        assert_eq!(o.map(|o| (o.epoch, o.revision)), Some((7, 9)));
        assert!(owner(b"nonsense", 1).is_err());
    }
}
