//! The sections of the configuration file and their defaults (README, "Configuration").

use super::secrets::Secret;
use super::values::{opt_socket_addr, socket_addr, Dur};
use crate::csta::{
    AccodeEncoding, DeviceForm, DeviceNaming, Dialect, EscapeRoot, PrivateDataPosition,
};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `[server]`: the client side.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ServerConfig {
    /// WebSocket listen address (`ws://…/v1`).
    #[serde(deserialize_with = "socket_addr")]
    pub client_listen: SocketAddr,
    /// Metrics and health listen address.
    #[serde(deserialize_with = "socket_addr")]
    pub metrics_listen: SocketAddr,
    /// Connections beyond this are closed with 1013.
    pub max_clients: usize,
    /// Outbound messages queued per client before it is closed with 4008.
    pub client_queue: usize,
    /// How often each client is pinged.
    pub client_ping_interval: Dur,
    /// Missed pongs in a row before a client is closed.
    pub client_ping_tolerance: u32,
    /// Largest accepted client frame in bytes (larger closes with 1009).
    pub max_frame_size: usize,
    /// Requests one client may have in flight before the excess gets 111.
    pub client_max_in_flight: usize,
    /// PEM certificate chain of the client endpoint (`tls-cert`); with `tls-key`, clients
    /// connect with `wss://` only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls-cert` (`tls-key`).
    pub tls_key: Option<PathBuf>,
    /// The TLS configuration loaded from `tls-cert` and `tls-key` at start (`None`: ws).
    #[serde(skip)]
    pub tls_config: Option<Arc<rustls::ServerConfig>>,
    /// How long a new connection may take to send a valid `RequestOpen` before it is closed
    /// with 1008: a connection that never opens must not hold a descriptor and a client slot
    /// for ever.
    #[serde(default = "default_open_timeout")]
    pub open_timeout: Dur,
    /// Connections the metrics listener holds at once (`/metrics`, `/healthz`, `/readyz`);
    /// more wait in the kernel's backlog, so scrapers cannot exhaust the descriptors.
    #[serde(default = "default_max_http_connections")]
    pub max_http_connections: usize,
    /// Web origins (`scheme://host[:port]`) whose pages may open the WebSocket endpoint: an
    /// upgrade carrying another `Origin` header is refused with 403, so a page on an unrelated
    /// site cannot drive the router from a user's browser. Clients that send no `Origin`
    /// (everything but browsers) are not affected.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// The WebSocket URL the web console (`GET /console`) opens (`console-client-url`), for a
    /// router behind a proxy whose clients do not reach `client-listen` directly; by default
    /// the console opens the host it was loaded from on the `client-listen` port.
    #[serde(default)]
    pub console_client_url: Option<String>,
    /// How long a disconnected client's registrations are kept (`session-linger`): with
    /// `[cluster]`, the sessions of a node that died are disconnected sessions like any other,
    /// and a client that comes back within this time finds its DNs still monitored.
    #[serde(default = "default_session_linger")]
    pub session_linger: Dur,
}

fn default_session_linger() -> Dur {
    Dur(Duration::from_secs(60))
}

fn default_open_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}

fn default_max_http_connections() -> usize {
    256
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            client_listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            max_clients: 10_000,
            client_queue: 4096,
            client_ping_interval: Dur(Duration::from_secs(10)),
            client_ping_tolerance: 3,
            max_frame_size: 64 * 1024,
            client_max_in_flight: 256,
            tls_cert: None,
            tls_key: None,
            tls_config: None,
            open_timeout: default_open_timeout(),
            max_http_connections: default_max_http_connections(),
            allowed_origins: Vec::new(),
            console_client_url: None,
            session_linger: default_session_linger(),
        }
    }
}

/// `[options]`: T-Server options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct OptionsConfig {
    /// The extension key that carries account codes.
    pub accode_name: String,
    /// Whether private service and event 501 are enabled.
    pub accode_privateservice: bool,
    /// How long a request to a switch may take.
    pub request_timeout: Dur,
    /// Silence after which a keep-alive is sent ("0s" disables).
    pub kpl_interval: Dur,
    /// Missed keep-alives in a row before the link is lost.
    pub kpl_tolerance: u32,
    /// How long a call ID seen again after a link loss keeps its connId.
    pub call_grace: Dur,
    /// Calls idle longer than this are swept.
    pub call_cleanup_idle: Dur,
    /// Active calls tracked per DN; beyond, the call idle the longest is forgotten (a switch
    /// that never clears its calls must not grow the router without bound).
    pub max_calls_per_dn: usize,
    /// Active calls tracked per switch; beyond, the call idle the longest is forgotten by
    /// every device that holds it.
    pub max_calls_per_switch: usize,
    /// First reconnect delay of a link.
    pub reconnect_min: Dur,
    /// Largest reconnect delay of a link.
    pub reconnect_max: Dur,
    /// Frames a link may read ahead of its switch's router shard before it stops reading.
    pub link_queue: usize,
}

impl Default for OptionsConfig {
    fn default() -> Self {
        OptionsConfig {
            accode_name: "AccountCode".into(),
            accode_privateservice: true,
            request_timeout: Dur(Duration::from_secs(4)),
            kpl_interval: Dur(Duration::from_secs(10)),
            kpl_tolerance: 3,
            call_grace: Dur(Duration::from_secs(60)),
            call_cleanup_idle: Dur(Duration::from_secs(7200)),
            max_calls_per_dn: 1000,
            max_calls_per_switch: 200_000,
            reconnect_min: Dur(Duration::from_millis(250)),
            reconnect_max: Dur(Duration::from_secs(10)),
            link_queue: 4096,
        }
    }
}

/// What an application may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Register in any mode and request private services.
    Control,
    /// Register in monitor mode only.
    Monitor,
}

/// `[[application]]`: a client application allowed to connect.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ApplicationConfig {
    /// The application's name (as sent in `RequestOpen`).
    pub name: String,
    /// Its secret token.
    pub token: String,
    /// What it may do.
    #[serde(default = "default_access")]
    pub access: Access,
}

fn default_access() -> Access {
    Access::Control
}

/// `[[admin]]`: an operator allowed to reload the configuration (`POST /admin/reload`). Why
/// separate from `[[application]]`: a desktop's token must not be able to change the plan.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AdminConfig {
    /// The operator's name, for the log.
    pub name: String,
    /// The token sent as `Authorization: Bearer <token>`.
    pub token: super::Secret,
}

/// `[[switch.link]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LinkEntry {
    /// Where the switch listens for CSTA.
    #[serde(deserialize_with = "socket_addr")]
    pub address: SocketAddr,
    /// Lower is preferred.
    #[serde(default = "default_priority")]
    pub priority: u32,
}

fn default_priority() -> u32 {
    1
}

/// `simulator-vendor`: the make an embedded simulator imitates (README, "pbx-sim"). Only the
/// simulator reads it; the router follows its own keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SimulatorVendor {
    /// The simulator's own dialect.
    #[default]
    Generic,
    /// Unify OpenScape Voice.
    Osv,
    /// Avaya Aura AES (DMCC).
    Avaya,
    /// Zultys MX.
    Zultys,
}

impl SimulatorVendor {
    /// The value as written in the configuration (and as `pbx-sim --vendor` takes it).
    pub fn name(self) -> &'static str {
        match self {
            SimulatorVendor::Generic => "generic",
            SimulatorVendor::Osv => "osv",
            SimulatorVendor::Avaya => "avaya",
            SimulatorVendor::Zultys => "zultys",
        }
    }
}

/// `[[switch]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SwitchEntry {
    /// The switch's name.
    pub name: String,
    /// Its DN plan.
    pub dns: Vec<String>,
    /// Start an embedded simulator on the link addresses.
    #[serde(default)]
    pub simulated: bool,
    /// HTTP control API of the embedded simulator, if wanted.
    #[serde(default, deserialize_with = "opt_socket_addr")]
    pub simulator_control: Option<SocketAddr>,
    /// CSTA namespace written on every message.
    #[serde(default = "default_csta_ns")]
    pub csta_namespace: String,
    /// Namespace of the hot-desk payload.
    #[serde(default = "default_hotdesk_ns")]
    pub hotdesk_namespace: String,
    /// `"Escape"` or `"EscapeService"`.
    #[serde(default)]
    pub escape_root: EscapeRoot,
    /// `"root"` or `"extensions"`.
    #[serde(default)]
    pub private_data: PrivateDataPosition,
    /// `"text"` or `"hex"`.
    #[serde(default)]
    pub accode_encoding: AccodeEncoding,
    /// How the switch names devices in private data: `"bare"` or `"osv"` (`N<number>`).
    #[serde(default)]
    pub device_id_form: DeviceForm,
    /// Written before every DN sent to the switch, removed from devices it names.
    #[serde(default)]
    pub dn_prefix: String,
    /// Written after every DN sent to the switch, removed from devices it names.
    #[serde(default)]
    pub dn_suffix: String,
    /// Log every CSTA frame of this switch.
    #[serde(default)]
    pub wire_trace: bool,
    /// CSTA over TLS on every link of this switch, the switch's certificate verified.
    #[serde(default)]
    pub tls: bool,
    /// PEM bundle of the CAs trusted for this switch's certificate (default: webpki roots).
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// The name the switch's certificate must carry (default: each link's IP address).
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// Accept any certificate (encrypted, not authenticated); logged loudly.
    #[serde(default)]
    pub tls_insecure_skip_verify: bool,
    /// PEM certificate chain of the embedded simulator (`simulated = true` with `tls = true`).
    #[serde(default)]
    pub simulator_tls_cert: Option<PathBuf>,
    /// PEM private key of `simulator-tls-cert`.
    #[serde(default)]
    pub simulator_tls_key: Option<PathBuf>,
    /// The links' TLS, built at start from the keys above (`None`: plain TCP).
    #[serde(skip)]
    pub link_tls: Option<crate::tls::LinkTls>,
    /// The embedded simulator's TLS, loaded at start from `simulator-tls-cert`/`-key`.
    #[serde(skip)]
    pub simulator_tls: Option<Arc<rustls::ServerConfig>>,
    /// Open an ECMA-354 application session on every link connection before any CSTA
    /// request (`application-session`), as Avaya AES and many OpenScape Voice deployments
    /// require.
    #[serde(default)]
    pub application_session: bool,
    /// The `applicationID` of the session (`session-application-id`).
    #[serde(default = "default_session_application_id")]
    pub session_application_id: String,
    /// The ECMA-323 protocol version asked for (`session-protocol-version`).
    #[serde(default = "default_csta_ns")]
    pub session_protocol_version: String,
    /// The session duration asked for (`session-duration`), whole seconds.
    #[serde(default = "default_session_duration")]
    pub session_duration: Dur,
    /// Register for the switch's status reports after link start (`system-register`).
    #[serde(default)]
    pub system_register: bool,
    /// The make the embedded simulator imitates (`simulator-vendor`, `simulated = true`
    /// only); the router's own reading and writing follow its own keys, never this one.
    #[serde(default)]
    pub simulator_vendor: SimulatorVendor,
    /// The links, at least one.
    #[serde(default)]
    pub link: Vec<LinkEntry>,
}

fn default_session_application_id() -> String {
    "csta-router".to_owned()
}

fn default_session_duration() -> Dur {
    Dur(Duration::from_secs(180))
}

fn default_csta_ns() -> String {
    crate::csta::dialect::CSTA_ED3_NAMESPACE.to_owned()
}

fn default_hotdesk_ns() -> String {
    crate::csta::dialect::HOTDESK_NAMESPACE.to_owned()
}

impl SwitchEntry {
    /// The application session its links open (`application-session = true`), if any.
    pub fn session_settings(&self) -> Option<crate::link::AppSessionSettings> {
        self.application_session
            .then(|| crate::link::AppSessionSettings {
                application_id: self.session_application_id.clone(),
                protocol_version: self.session_protocol_version.clone(),
                duration: self.session_duration.0,
            })
    }

    /// The session keys' values: the key (under the switch) and what is wrong.
    pub fn check_session(&self) -> Result<(), (&'static str, String)> {
        let d = self.session_duration.0;
        if d.subsec_nanos() != 0 || d < Duration::from_secs(1) {
            return Err((
                "session-duration",
                format!(
                    "{} is not a whole number of seconds of at least 1 s: ECMA-354 session durations are whole seconds (write e.g. \"180s\")",
                    humantime::format_duration(d)
                ),
            ));
        }
        if d > super::values::MAX_DURATION {
            return Err(("session-duration", "must be at most a day".into()));
        }
        if self.application_session && self.session_application_id.trim().is_empty() {
            return Err(("session-application-id", "must not be empty".into()));
        }
        Ok(())
    }

    /// The switch's dialect.
    pub fn dialect(&self) -> Dialect {
        Dialect {
            csta_namespace: self.csta_namespace.clone(),
            hotdesk_namespace: self.hotdesk_namespace.clone(),
            escape_root: self.escape_root,
            private_data: self.private_data,
            accode_encoding: self.accode_encoding,
            device: DeviceNaming {
                form: self.device_id_form,
                prefix: self.dn_prefix.clone(),
                suffix: self.dn_suffix.clone(),
            },
        }
    }
}

/// `[cluster] rebalance`: whether switches move between nodes when the spread is uneven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rebalance {
    /// Move one switch at a time to even the spread once it has been uneven for a while.
    #[default]
    Auto,
    /// Never move a healthy switch (an operator moves them by restarting nodes).
    Off,
}

/// `[cluster]`: this router is one node of a cluster whose only shared component is a NATS
/// server (or NATS cluster) with JetStream. Without the section the router runs alone and
/// needs no NATS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterConfig {
    /// The cluster's name (`[A-Za-z0-9_-]+`): every subject, bucket and stream is prefixed
    /// with it, so several clusters can share one NATS.
    #[serde(default)]
    pub name: String,
    /// This node's name (`[A-Za-z0-9_-]+`), unique in the cluster; default: the host name
    /// (filled in when the configuration is loaded).
    #[serde(default)]
    pub node: Option<String>,
    /// NATS seed URLs (`nats://` or `tls://`), at least one.
    #[serde(default)]
    pub nats: Vec<String>,
    /// The switch ownership lease: a dead owner's switches move after about this long.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl: Dur,
    /// JetStream replicas of every bucket and stream the cluster creates (3 on a
    /// 3-server NATS cluster, so that losing one server loses nothing).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// How long events stay in the cluster's event stream, replayable.
    #[serde(default = "default_replay_window")]
    pub replay_window: Dur,
    /// Whether switches move to even the spread.
    #[serde(default)]
    pub rebalance: Rebalance,
    /// How long the spread must stay uneven before a switch moves, and how long an owner's
    /// links to a switch must all be down before it releases the switch to another node
    /// (SPEC: 30 s; shorter in tests).
    #[serde(default = "default_rebalance_after")]
    pub rebalance_after: Dur,
    /// NATS token authentication.
    #[serde(default)]
    pub nats_token: Option<Secret>,
    /// NATS user (with `nats-password`).
    #[serde(default)]
    pub nats_user: Option<String>,
    /// NATS password of `nats-user`.
    #[serde(default)]
    pub nats_password: Option<Secret>,
    /// NATS credentials file (JWT and NKey seed).
    #[serde(default)]
    pub nats_creds: Option<PathBuf>,
    /// PEM bundle of the CAs trusted for the NATS servers' certificates; TLS is then required.
    #[serde(default)]
    pub nats_tls_ca: Option<PathBuf>,
}

fn default_lease_ttl() -> Dur {
    Dur(Duration::from_secs(3))
}

fn default_rebalance_after() -> Dur {
    Dur(Duration::from_secs(30))
}

fn default_replicas() -> usize {
    1
}

fn default_replay_window() -> Dur {
    Dur(Duration::from_secs(300))
}

impl Default for ClusterConfig {
    /// The defaults of every key; `name`, `node` and `nats` empty (a configuration must set
    /// `name` and `nats`).
    fn default() -> Self {
        ClusterConfig {
            name: String::new(),
            node: None,
            nats: Vec::new(),
            lease_ttl: default_lease_ttl(),
            replicas: default_replicas(),
            replay_window: default_replay_window(),
            rebalance: Rebalance::Auto,
            rebalance_after: default_rebalance_after(),
            nats_token: None,
            nats_user: None,
            nats_password: None,
            nats_creds: None,
            nats_tls_ca: None,
        }
    }
}
