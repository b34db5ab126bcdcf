//! Creating or binding the cluster's buckets and event stream in JetStream (with
//! `[cluster] replicas`, warning about an existing one whose settings differ), and listing a
//! bucket's latest values by key pattern.

use super::{keys, records, within, ClusterError, KV_TIMEOUT};
use crate::config::ClusterConfig;
use async_nats::jetstream::{self, kv, stream};
use futures_util::StreamExt;
use std::fmt::Write as _;
use std::time::Duration;

/// The cluster's key-value buckets, bound.
#[derive(Clone)]
pub struct Stores {
    /// `CRR_<C>_LEASES`.
    pub leases: kv::Store,
    /// `CRR_<C>_NODES`.
    pub nodes: kv::Store,
    /// `CRR_<C>_SEQ`.
    pub seq: kv::Store,
    /// `CRR_<C>_REGS`.
    pub regs: kv::Store,
    /// `CRR_<C>_CALLS`.
    pub calls: kv::Store,
    /// `CRR_<C>_SESS`.
    pub sessions: kv::Store,
}

/// The buckets of the cluster, created or bound.
pub(super) async fn create_buckets(
    js: &jetstream::Context,
    cfg: &ClusterConfig,
    node: &str,
) -> Result<Stores, ClusterError> {
    let c = &cfg.name;
    let ttl = cfg.lease_ttl.0;
    let bucket = |name: String, max_age: Duration, markers: Duration| kv::Config {
        bucket: name,
        history: 1,
        max_age,
        num_replicas: cfg.replicas,
        storage: stream::StorageType::File,
        // With markers, an entry that ages out leaves a marker every watcher sees (a lapsed
        // lease, a node gone), and a deleted record's marker can be given a lifetime.
        limit_markers: Some(markers),
        ..Default::default()
    };
    Ok(Stores {
        leases: bind_bucket(js, bucket(keys::leases_bucket(c), ttl, ttl), node).await?,
        nodes: bind_bucket(js, bucket(keys::nodes_bucket(c), ttl, ttl), node).await?,
        seq: bind_bucket(js, bucket(keys::seq_bucket(c), Duration::ZERO, ttl), node).await?,
        regs: bind_bucket(
            js,
            bucket(keys::regs_bucket(c), Duration::ZERO, records::MARKER_TTL),
            node,
        )
        .await?,
        calls: bind_bucket(
            js,
            bucket(keys::calls_bucket(c), Duration::ZERO, records::MARKER_TTL),
            node,
        )
        .await?,
        sessions: bind_bucket(
            js,
            bucket(
                keys::sessions_bucket(c),
                Duration::ZERO,
                records::MARKER_TTL,
            ),
            node,
        )
        .await?,
    })
}

/// Bind a bucket that exists (warning about settings that differ from `want`), else create
/// it; when another node created it meanwhile, bind that one.
async fn bind_bucket(
    js: &jetstream::Context,
    want: kv::Config,
    node: &str,
) -> Result<kv::Store, ClusterError> {
    let what = format!("bucket {}", want.bucket);
    let replicas = want.num_replicas;
    let attempt = async {
        if let Ok(store) = js.get_key_value(want.bucket.clone()).await {
            warn_differences(
                node,
                &what,
                &store.stream.cached_info().config,
                &bucket_settings(&want),
            );
            return Ok(store);
        }
        let created = js.create_key_value(want.clone()).await;
        match created {
            Ok(store) => Ok(store),
            Err(e) => match js.get_key_value(want.bucket.clone()).await {
                Ok(store) => {
                    warn_differences(
                        node,
                        &what,
                        &store.stream.cached_info().config,
                        &bucket_settings(&want),
                    );
                    Ok(store)
                }
                Err(_) => Err(ClusterError::Setup {
                    what: what.clone(),
                    reason: setup_reason(e, replicas),
                }),
            },
        }
    };
    within(KV_TIMEOUT * 5, || format!("creating {what}"), attempt).await
}

/// The stream settings a bucket created from `want` has, for comparison.
fn bucket_settings(want: &kv::Config) -> stream::Config {
    stream::Config {
        max_age: want.max_age,
        num_replicas: want.num_replicas,
        max_messages_per_subject: want.history,
        allow_message_ttl: want.limit_markers.is_some(),
        subject_delete_marker_ttl: want.limit_markers,
        ..Default::default()
    }
}

/// The event stream, created or bound.
pub(super) async fn create_stream(
    js: &jetstream::Context,
    cfg: &ClusterConfig,
    node: &str,
) -> Result<stream::Stream, ClusterError> {
    let want = stream::Config {
        name: keys::events_stream(&cfg.name),
        subjects: vec![keys::events_subjects(&cfg.name)],
        max_age: cfg.replay_window.0,
        num_replicas: cfg.replicas,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::Old,
        retention: stream::RetentionPolicy::Limits,
        // Gap repair reads single messages by subject and sequence from any replica.
        allow_direct: true,
        ..Default::default()
    };
    let what = format!("stream {}", want.name);
    let attempt = async {
        if let Ok(existing) = js.get_stream(want.name.clone()).await {
            warn_differences(node, &what, &existing.cached_info().config, &want);
            return Ok(existing);
        }
        match js.create_stream(want.clone()).await {
            Ok(created) => Ok(created),
            Err(e) => match js.get_stream(want.name.clone()).await {
                Ok(existing) => {
                    warn_differences(node, &what, &existing.cached_info().config, &want);
                    Ok(existing)
                }
                Err(_) => Err(ClusterError::Setup {
                    what: what.clone(),
                    reason: setup_reason(e, cfg.replicas),
                }),
            },
        }
    };
    within(KV_TIMEOUT * 5, || format!("creating {what}"), attempt).await
}

/// The settings this node works with: its configuration's, except `lease-ttl`, `replicas`
/// and `replay-window` where the existing buckets and stream have other values — those are
/// the cluster's, and a node acting on another lease than the others' would fence too late
/// or take switches too early. Each difference is logged, naming the setting, this node's
/// value, the bucket's and the value used.
pub(super) fn settings_in_force(
    cfg: &ClusterConfig,
    stores: &Stores,
    events: &stream::Stream,
    node: &str,
) -> ClusterConfig {
    let mut used = cfg.clone();
    let leases = &stores.leases.stream.cached_info().config;
    let stream = &events.cached_info().config;
    let dur = |d: Duration| humantime::format_duration(d).to_string();
    let differ = |setting: &str, here: String, there: String, what: &str| {
        tracing::warn!(
            node = %node,
            "{setting} is {here} in this node's configuration, but the existing {what} has {there}: this node uses {there}, as the other nodes do (to change it, stop every node and delete the cluster's buckets and stream with the nats CLI)"
        );
    };
    if !leases.max_age.is_zero() && leases.max_age != cfg.lease_ttl.0 {
        differ(
            "lease-ttl",
            dur(cfg.lease_ttl.0),
            dur(leases.max_age),
            &format!("bucket {}", stores.leases.name),
        );
        used.lease_ttl.0 = leases.max_age;
    }
    if leases.num_replicas != cfg.replicas {
        differ(
            "replicas",
            cfg.replicas.to_string(),
            leases.num_replicas.to_string(),
            &format!("bucket {}", stores.leases.name),
        );
        used.replicas = leases.num_replicas;
    }
    if !stream.max_age.is_zero() && stream.max_age != cfg.replay_window.0 {
        differ(
            "replay-window",
            dur(cfg.replay_window.0),
            dur(stream.max_age),
            &format!("stream {}", stream.name),
        );
        used.replay_window.0 = stream.max_age;
    }
    used
}

/// Why creating a bucket or stream failed, with the likely remedy for replicas.
fn setup_reason(error: impl std::fmt::Display, replicas: usize) -> String {
    let mut reason = error.to_string();
    if replicas > 1 {
        let _ = write!(
            reason,
            " (replicas = {replicas} needs a NATS cluster of at least {replicas} JetStream servers)"
        );
    }
    reason
}

/// Log, as a warning, each technical setting of an existing bucket or stream that differs
/// from what this node creates (history, TTL markers, subjects); the existing settings are
/// used.
fn warn_differences(node: &str, what: &str, have: &stream::Config, want: &stream::Config) {
    let dur = |d: Duration| humantime::format_duration(d).to_string();
    let opt = |d: Option<Duration>| d.map(dur).unwrap_or_else(|| "none".into());
    let mut differences: Vec<(&str, String, String)> = Vec::new();
    // max_age (lease-ttl, replay-window) and replicas: see settings_in_force.
    if want.max_messages_per_subject != 0
        && have.max_messages_per_subject != want.max_messages_per_subject
    {
        differences.push((
            "history",
            have.max_messages_per_subject.to_string(),
            want.max_messages_per_subject.to_string(),
        ));
    }
    if want.allow_message_ttl && !have.allow_message_ttl {
        differences.push(("per-message TTL", "off".into(), "on".into()));
    }
    if want.subject_delete_marker_ttl.is_some() && have.subject_delete_marker_ttl.is_none() {
        differences.push((
            "delete markers on expiry",
            opt(have.subject_delete_marker_ttl),
            opt(want.subject_delete_marker_ttl),
        ));
    }
    if !want.subjects.is_empty() && have.subjects != want.subjects {
        differences.push(("subjects", have.subjects.join(" "), want.subjects.join(" ")));
    }
    for (setting, have, want) in differences {
        tracing::warn!(
            node = %node,
            "{what} exists with {setting} {have}, where this node's configuration gives {want}; the existing setting is used (change it with the nats CLI, or delete the {what} while no node runs)"
        );
    }
}

/// The latest value of every key of `store` matching `filter` (a key pattern with `*` and
/// `>`): (key, value) for each key whose latest entry is a value, not a deletion. Read with a
/// short-lived consumer, in batches, within [`KV_TIMEOUT`].
pub(crate) async fn latest_values(
    store: &kv::Store,
    filter: &str,
) -> Result<Vec<(String, bytes::Bytes)>, ClusterError> {
    latest_values_within(store, filter, KV_TIMEOUT).await
}

/// [`latest_values`] within `limit` (a listing that may be long: a session's registrations).
pub(crate) async fn latest_values_within(
    store: &kv::Store,
    filter: &str,
    limit: Duration,
) -> Result<Vec<(String, bytes::Bytes)>, ClusterError> {
    let what = || format!("listing {filter} in bucket {}", store.name);
    within(limit, what, async {
        let consumer = store
            .stream
            .create_consumer(jetstream::consumer::pull::Config {
                deliver_policy: jetstream::consumer::DeliverPolicy::LastPerSubject,
                ack_policy: jetstream::consumer::AckPolicy::None,
                filter_subject: format!("{}{filter}", store.prefix),
                inactive_threshold: Duration::from_secs(30),
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(|e| ClusterError::nats(what(), e))?;
        let mut out = Vec::new();
        let result = read_all(&consumer, &store.prefix, &mut out).await;
        let name = consumer.cached_info().name.clone();
        let _ = store.stream.delete_consumer(&name).await;
        result.map_err(|e| ClusterError::nats(what(), e))?;
        Ok(out)
    })
    .await
}

/// Every message `consumer` has now, as (key, value) for the values (deletions skipped).
async fn read_all(
    consumer: &jetstream::consumer::PullConsumer,
    prefix: &str,
    out: &mut Vec<(String, bytes::Bytes)>,
) -> Result<(), async_nats::Error> {
    const BATCH: usize = 512;
    loop {
        let mut batch = consumer.fetch().max_messages(BATCH).messages().await?;
        let mut got = 0;
        while let Some(message) = batch.next().await {
            let message = message?;
            got += 1;
            let deleted = message.headers.as_ref().is_some_and(|h| {
                h.get("KV-Operation").is_some_and(|op| op.as_str() != "PUT")
                    || h.get("Nats-Marker-Reason").is_some()
            });
            if let Some(key) = message.subject.as_str().strip_prefix(prefix) {
                if !deleted {
                    out.push((key.to_owned(), message.payload.clone()));
                }
            }
        }
        if got < BATCH {
            return Ok(());
        }
    }
}
