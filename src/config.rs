//! Configuration (README, section "Configuration"): TOML with kebab-case keys, read once at start.
//!
//! Unknown keys and invalid values are refused with a message that names the file and the
//! key. Every timer is a string with a unit (`"250ms"`, `"4s"`, `"2m"`, `"2h"`), so tests can run
//! with millisecond timers. The shipped default is embedded in the binary
//! ([`EMBEDDED_DEFAULT`]) and is the same file as `config/csta-router.toml`.

use crate::csta::{AccodeEncoding, Dialect, EscapeRoot, PrivateDataPosition};
use crate::dnplan::DnPlan;
use crate::link::{LinkConfig, LinkSettings, SwitchConfig};
use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The shipped configuration, compiled in so the router starts even without the file.
pub const EMBEDDED_DEFAULT: &str = include_str!("../config/csta-router.toml");

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is invalid, or a key unknown, or a value of the wrong form.
    #[error("invalid configuration in {file}: {message}")]
    Parse {
        /// The file.
        file: String,
        /// The parser's message (it names the key and the line).
        message: String,
    },
    /// The values are individually valid but do not make a usable configuration.
    #[error("invalid configuration in {file}: key `{key}`: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// The key, as a path (`switch[1].dns`).
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Below this many characters an application token gets a warning at start (tokens under 8
/// characters are refused).
pub const RECOMMENDED_TOKEN_CHARS: usize = 16;

/// A duration written with a unit: `"250ms"`, `"4s"`, `"2m"`, `"2h"` (`"0s"` allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl Dur {
    /// Parse `"<number><unit>"`.
    pub fn parse(s: &str) -> Result<Dur, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| {
            format!("{s:?} has no unit; write e.g. \"250ms\", \"4s\", \"2m\" or \"2h\"")
        })?;
        let (num, unit) = s.split_at(split);
        if num.is_empty() {
            return Err(format!("{s:?} does not start with a whole number"));
        }
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?} is far too long a duration"))?;
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => {
                return Err(format!(
                    "{s:?} has an unknown unit {unit:?}; use ms, s, m or h"
                ))
            }
        };
        Ok(Dur(d))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Dur::parse(&s).map_err(de::Error::custom)
    }
}

/// Longest value most duration keys accept: a day. Longer values are certainly typing errors,
/// and timers computed from absurd values (`"18446744073709551615s"`) overflow the clock.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Longest value of the keys that measure idleness of long-lived things (`call-cleanup-idle`):
/// a week.
pub const MAX_LONG_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Read a socket address, with an error that says what is expected (serde's own says
/// "invalid socket address syntax").
fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    parse_addr(&s).map_err(de::Error::custom)
}

/// [`socket_addr`] for an optional key.
fn opt_socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    socket_addr(d).map(Some)
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        format!(
            "{s:?} is not an address: write an IP address and a port, e.g. \"127.0.0.1:7700\" or \"[::1]:7700\" (host names are not resolved)"
        )
    })
}

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
    /// The links, at least one.
    #[serde(default)]
    pub link: Vec<LinkEntry>,
}

fn default_csta_ns() -> String {
    crate::csta::dialect::CSTA_ED3_NAMESPACE.to_owned()
}

fn default_hotdesk_ns() -> String {
    crate::csta::dialect::HOTDESK_NAMESPACE.to_owned()
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// `[server]`.
    #[serde(default)]
    pub server: ServerConfig,
    /// `[options]`.
    #[serde(default)]
    pub options: OptionsConfig,
    /// `[[application]]`; empty means no tokens are required.
    #[serde(default)]
    pub application: Vec<ApplicationConfig>,
    /// `[[switch]]`.
    #[serde(default)]
    pub switch: Vec<SwitchEntry>,
    /// The DN plans, parsed and checked (same order as `switch`).
    #[serde(skip)]
    pub plans: Vec<DnPlan>,
}

impl Config {
    /// Read and check a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Config::parse(&text, &file)
    }

    /// Parse and check a configuration; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_owned(),
            message: redact_secrets(&plain_type_names(e.to_string().trim_end()), text),
        })?;
        config.check(file)?;
        Ok(config)
    }

    /// Every duration key with its value and the longest value it accepts. A new duration key
    /// is one line here.
    fn durations(&self) -> Vec<(&'static str, Dur, Duration)> {
        let (s, o) = (&self.server, &self.options);
        vec![
            (
                "server.client-ping-interval",
                s.client_ping_interval,
                MAX_DURATION,
            ),
            ("server.open-timeout", s.open_timeout, MAX_DURATION),
            ("options.request-timeout", o.request_timeout, MAX_DURATION),
            ("options.kpl-interval", o.kpl_interval, MAX_DURATION),
            ("options.call-grace", o.call_grace, MAX_DURATION),
            (
                "options.call-cleanup-idle",
                o.call_cleanup_idle,
                MAX_LONG_DURATION,
            ),
            ("options.reconnect-min", o.reconnect_min, MAX_DURATION),
            ("options.reconnect-max", o.reconnect_max, MAX_DURATION),
        ]
    }

    /// Every count that must be at least 1, one line per key: (key, value, why, as the end
    /// of the error sentence). A new count is one more line here.
    fn counts(&self) -> Vec<(&'static str, u64, &'static str)> {
        let (s, o) = (&self.server, &self.options);
        let n = |v: usize| v as u64;
        vec![
            ("server.max-clients", n(s.max_clients), ": with 0 every client would be refused"),
            ("server.client-queue", n(s.client_queue), ""),
            ("server.client-ping-tolerance", u64::from(s.client_ping_tolerance), " (pings unanswered in a row before a client is closed)"),
            ("server.max-frame-size", n(s.max_frame_size), ""),
            ("server.client-max-in-flight", n(s.client_max_in_flight), ""),
            ("server.max-http-connections", n(s.max_http_connections), ""),
            ("options.kpl-tolerance", u64::from(o.kpl_tolerance), " (the number of unanswered keep-alives in a row after which the link is lost; to disable keep-alives set kpl-interval = \"0s\")"),
            ("options.link-queue", n(o.link_queue), ""),
            ("options.max-calls-per-dn", n(o.max_calls_per_dn), ""),
            ("options.max-calls-per-switch", n(o.max_calls_per_switch), ""),
        ]
    }

    /// What is allowed but unwise, to be logged as warnings at start (and by
    /// `--check-config`): short application tokens, named by application, never shown.
    pub fn warnings(&self) -> Vec<String> {
        self.application
            .iter()
            .enumerate()
            .filter(|(_, app)| app.token.chars().count() < RECOMMENDED_TOKEN_CHARS)
            .map(|(i, app)| {
                format!(
                    "application {:?} (application[{i}].token) has a token of fewer than {RECOMMENDED_TOKEN_CHARS} characters: a short token can be guessed; use a long random string",
                    app.name
                )
            })
            .collect()
    }

    fn check(&mut self, file: &str) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            file: file.to_owned(),
            key,
            message,
        };
        if self.switch.is_empty() {
            return Err(invalid(
                "switch".into(),
                "at least one [[switch]] is needed".into(),
            ));
        }
        if self.options.accode_name.trim().is_empty() {
            return Err(invalid(
                "options.accode-name".into(),
                "must not be empty".into(),
            ));
        }
        if self.options.request_timeout.0.is_zero() {
            return Err(invalid(
                "options.request-timeout".into(),
                "must be more than 0".into(),
            ));
        }
        for (key, value, max) in self.durations() {
            if value.0 > max {
                return Err(invalid(
                    key.into(),
                    format!(
                        "{} is longer than {}, the most this key accepts",
                        humantime::format_duration(value.0),
                        describe_max(max)
                    ),
                ));
            }
        }
        if self.options.reconnect_min.0 > self.options.reconnect_max.0 {
            return Err(invalid(
                "options.reconnect-min".into(),
                format!(
                    "reconnect-min ({}) is longer than reconnect-max ({}): the back-off starts at reconnect-min and doubles up to reconnect-max",
                    humantime::format_duration(self.options.reconnect_min.0),
                    humantime::format_duration(self.options.reconnect_max.0)
                ),
            ));
        }
        for (key, value, why) in self.counts() {
            if value == 0 {
                return Err(invalid(key.into(), format!("must be at least 1{why}")));
            }
        }
        let mut plans = Vec::new();
        for (i, sw) in self.switch.iter().enumerate() {
            if sw.name.trim().is_empty() {
                return Err(invalid(
                    format!("switch[{i}].name"),
                    "must not be empty".into(),
                ));
            }
            if self.switch[..i].iter().any(|o| o.name == sw.name) {
                return Err(invalid(
                    format!("switch[{i}].name"),
                    format!("two switches are named {:?}", sw.name),
                ));
            }
            if sw.link.is_empty() {
                return Err(invalid(
                    format!("switch[{i}].link"),
                    format!("switch {:?} needs at least one [[switch.link]]", sw.name),
                ));
            }
            if sw.dns.is_empty() {
                return Err(invalid(
                    format!("switch[{i}].dns"),
                    format!("switch {:?} owns no DN", sw.name),
                ));
            }
            let plan = DnPlan::parse(&sw.dns)
                .map_err(|e| invalid(format!("switch[{i}].dns"), e.to_string()))?;
            for (j, other) in plans.iter().enumerate() {
                if let Some((a, b)) = plan.overlap(other) {
                    return Err(invalid(
                        format!("switch[{i}].dns"),
                        format!(
                            "switch {:?} claims {a}, which overlaps {b} of switch {:?}: a DN belongs to exactly one switch",
                            sw.name, self.switch[j].name
                        ),
                    ));
                }
            }
            plans.push(plan);
        }
        for (i, app) in self.application.iter().enumerate() {
            if app.token.len() < 8 {
                return Err(invalid(
                    format!("application[{i}].token"),
                    "tokens must be at least 8 characters".into(),
                ));
            }
        }
        self.plans = plans;
        self.check_tls(file)
    }

    /// Check the TLS keys and load every file they name, so that a missing or broken
    /// certificate stops the router at start rather than at the first connection.
    fn check_tls(&mut self, file: &str) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            file: file.to_owned(),
            key,
            message,
        };
        let server = &mut self.server;
        server.tls_config = match (&server.tls_cert, &server.tls_key) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    "server.tls-key".into(),
                    "tls-cert is set, so tls-key must be too (both or neither)".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "server.tls-cert".into(),
                    "tls-key is set, so tls-cert must be too (both or neither)".into(),
                ))
            }
            (Some(cert), Some(key)) => Some(load_server_tls(
                cert,
                key,
                ("server.tls-cert".into(), "server.tls-key".into()),
                invalid,
            )?),
        };
        for (i, sw) in self.switch.iter_mut().enumerate() {
            let key = |k: &str| format!("switch[{i}].{k}");
            if !sw.tls {
                let set = [
                    ("tls-ca", sw.tls_ca.is_some()),
                    ("tls-server-name", sw.tls_server_name.is_some()),
                    ("tls-insecure-skip-verify", sw.tls_insecure_skip_verify),
                    ("simulator-tls-cert", sw.simulator_tls_cert.is_some()),
                    ("simulator-tls-key", sw.simulator_tls_key.is_some()),
                ];
                if let Some((k, _)) = set.iter().find(|(_, set)| *set) {
                    return Err(invalid(
                        key(k),
                        format!(
                            "switch {:?} does not use TLS: set tls = true (or remove {k}); the link would run in clear text",
                            sw.name
                        ),
                    ));
                }
                continue;
            }
            let trust = match (&sw.tls_ca, sw.tls_insecure_skip_verify) {
                (Some(_), true) => {
                    return Err(invalid(
                        key("tls-insecure-skip-verify"),
                        "tls-ca is set too: either verify against tls-ca or skip verification"
                            .into(),
                    ))
                }
                (Some(ca), false) => crate::tls::Trust::CaFile(ca),
                (None, true) => crate::tls::Trust::Insecure,
                (None, false) => crate::tls::Trust::WebpkiRoots,
            };
            let config = crate::tls::client_config(trust)
                .map_err(|e| invalid(key("tls-ca"), e.to_string()))?;
            let server_name = match &sw.tls_server_name {
                Some(name) => Some(
                    crate::tls::server_name(name)
                        .map_err(|e| invalid(key("tls-server-name"), e.to_string()))?,
                ),
                None => None,
            };
            sw.link_tls = Some(crate::tls::LinkTls {
                config,
                server_name,
                insecure: sw.tls_insecure_skip_verify,
            });
            if !sw.simulated {
                let stray = [
                    ("simulator-tls-cert", sw.simulator_tls_cert.is_some()),
                    ("simulator-tls-key", sw.simulator_tls_key.is_some()),
                ];
                if let Some((k, _)) = stray.iter().find(|(_, set)| *set) {
                    return Err(invalid(
                        key(k),
                        format!(
                            "switch {:?} is not simulated (only simulated = true starts an embedded simulator)",
                            sw.name
                        ),
                    ));
                }
                continue;
            }
            sw.simulator_tls = match (&sw.simulator_tls_cert, &sw.simulator_tls_key) {
                (Some(cert), Some(k)) => Some(load_server_tls(
                    cert,
                    k,
                    (key("simulator-tls-cert"), key("simulator-tls-key")),
                    invalid,
                )?),
                (None, None) => {
                    return Err(invalid(
                        key("simulator-tls-cert"),
                        format!(
                            "switch {:?} is simulated with tls = true: its embedded simulator needs a certificate (simulator-tls-cert and simulator-tls-key, PEM)",
                            sw.name
                        ),
                    ))
                }
                (Some(_), None) => {
                    return Err(invalid(
                        key("simulator-tls-key"),
                        "simulator-tls-cert is set, so simulator-tls-key must be too".into(),
                    ))
                }
                (None, Some(_)) => {
                    return Err(invalid(
                        key("simulator-tls-cert"),
                        "simulator-tls-key is set, so simulator-tls-cert must be too".into(),
                    ))
                }
            };
        }
        Ok(())
    }

    /// The link-layer timers derived from `[options]`.
    pub fn link_settings(&self, wire_trace: bool) -> LinkSettings {
        LinkSettings {
            request_timeout: self.options.request_timeout.0,
            kpl_interval: self.options.kpl_interval.0,
            kpl_tolerance: self.options.kpl_tolerance,
            reconnect_min: self.options.reconnect_min.0,
            reconnect_max: self.options.reconnect_max.0,
            connect_timeout: self.options.request_timeout.0,
            link_queue: self.options.link_queue,
            wire_trace,
            ..LinkSettings::default()
        }
    }

    /// The switches as the link layer wants them.
    pub fn switch_configs(&self) -> Vec<SwitchConfig> {
        self.switch
            .iter()
            .map(|sw| SwitchConfig {
                name: Arc::from(sw.name.as_str()),
                links: sw
                    .link
                    .iter()
                    .map(|l| LinkConfig {
                        address: l.address,
                        priority: l.priority,
                    })
                    .collect(),
                dialect: sw.dialect(),
                settings: LinkSettings {
                    tls: sw.link_tls.clone(),
                    ..self.link_settings(sw.wire_trace)
                },
            })
            .collect()
    }
}

/// Load a certificate chain and its private key (PEM files) into a TLS server
/// configuration; an error names the key (`cert_key` or `key_key`) whose file is at fault.
fn load_server_tls(
    cert: &Path,
    key: &Path,
    (cert_key, key_key): (String, String),
    invalid: impl Fn(String, String) -> ConfigError,
) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    let read = |path: &Path, k: &String| {
        std::fs::read(path)
            .map_err(|e| invalid(k.clone(), format!("cannot read {}: {e}", path.display())))
    };
    let (cert_pem, key_pem) = (read(cert, &cert_key)?, read(key, &key_key)?);
    let origin = (cert.display().to_string(), key.display().to_string());
    crate::tls::parse_certs(&cert_pem, &origin.0).map_err(|e| invalid(cert_key, e.to_string()))?;
    crate::tls::parse_key(&key_pem, &origin.1)
        .map_err(|e| invalid(key_key.clone(), e.to_string()))?;
    // What is left is rustls refusing the pair, e.g. a key that is not the certificate's.
    crate::tls::server_config_from_pem(&cert_pem, &key_pem, (&origin.0, &origin.1))
        .map_err(|e| invalid(key_key, e.to_string()))
}

/// A duration limit as an operator writes it: "24h", "168h (7 days)".
fn describe_max(max: Duration) -> String {
    let hours = max.as_secs() / 3600;
    if hours > 24 && hours.is_multiple_of(24) {
        format!("{hours}h ({} days)", hours / 24)
    } else {
        format!("{hours}h")
    }
}

/// Serde names integer types in its messages ("expected usize"); an operator reads "a whole
/// number".
fn plain_type_names(message: &str) -> String {
    let mut out = message.to_owned();
    for (rust, plain) in [
        ("expected usize", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected u16", "expected a whole number"),
        ("expected u8", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected a boolean", "expected true or false"),
    ] {
        out = out.replace(rust, plain);
    }
    out
}

/// Remove application tokens from a parser message. The TOML parser quotes the offending line
/// (and may quote a value): a syntax error on a `token` line, or a misspelt key in an
/// `[[application]]` table, would print the secret. Every quoted source line that holds a
/// token (any line naming `token`, and any line of an `[[application]]` table other than its
/// `name` and `access`) is replaced, and the values of those lines are cut from the rest of
/// the message.
fn redact_secrets(message: &str, text: &str) -> String {
    let mut secret_lines = std::collections::BTreeSet::new();
    let mut secret_values: Vec<String> = Vec::new();
    let mut in_application = false;
    let mut open_multiline: Option<&str> = None;
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        if let Some(delimiter) = open_multiline {
            secret_lines.insert(number);
            secret_values.push(line.trim().to_owned());
            if line.contains(delimiter) {
                open_multiline = None;
            }
            continue;
        }
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            in_application = trimmed
                .trim_start_matches('[')
                .trim_end_matches(']')
                .trim()
                .eq_ignore_ascii_case("application");
            continue;
        }
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let key = trimmed
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches(|c| c == '"' || c == '\'');
        let secret = trimmed.to_ascii_lowercase().contains("token")
            || (in_application && key != "name" && key != "access");
        if !secret {
            continue;
        }
        secret_lines.insert(number);
        if let Some((_, value)) = trimmed.split_once('=') {
            let value = value.trim();
            for delimiter in ["\"\"\"", "\'\'\'"] {
                if value.starts_with(delimiter) && value.matches(delimiter).count() == 1 {
                    open_multiline = Some(delimiter);
                }
            }
            secret_values.push(value.to_owned());
            // The bare value too (the parser may quote it without its quotes), and every
            // quoted string on the line (inline tables).
            secret_values.push(value.trim_matches(|c| c == '"' || c == '\'').to_owned());
            secret_values.extend(
                value
                    .split(['"', '\''])
                    .skip(1)
                    .step_by(2)
                    .map(str::to_owned),
            );
        }
    }
    let mut lines: Vec<String> = message
        .lines()
        .map(|l| {
            // The parser's quoted lines look like "12 | token = ...".
            let quoted = l
                .split_once('|')
                .and_then(|(n, _)| n.trim().parse::<usize>().ok());
            match quoted {
                Some(n) if secret_lines.contains(&n) => {
                    format!(
                        "{} | (a line with a token, not shown)",
                        l.split('|').next().unwrap_or("").trim_end()
                    )
                }
                _ => l.to_owned(),
            }
        })
        .collect();
    // Longest first, so that a value is never cut in two by a shorter one inside it.
    secret_values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    for line in &mut lines {
        for value in secret_values.iter().filter(|v| v.len() >= 4) {
            if line.contains(value.as_str()) {
                *line = line.replace(value.as_str(), "<redacted>");
            }
        }
    }
    lines.join("\n")
}

impl SwitchEntry {
    /// The switch's dialect.
    pub fn dialect(&self) -> Dialect {
        Dialect {
            csta_namespace: self.csta_namespace.clone(),
            hotdesk_namespace: self.hotdesk_namespace.clone(),
            escape_root: self.escape_root,
            private_data: self.private_data,
            accode_encoding: self.accode_encoding,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::parse(EMBEDDED_DEFAULT, "embedded").unwrap();
        assert_eq!(c.switch.len(), 2);
        assert!(c.switch.iter().all(|s| s.simulated));
    }

    #[test]
    fn durations() {
        assert_eq!(Dur::parse("250ms").unwrap().0, Duration::from_millis(250));
        assert_eq!(Dur::parse("2h").unwrap().0, Duration::from_secs(7200));
        assert!(Dur::parse("4").is_err());
        assert!(Dur::parse("4x").is_err());
        assert!(Dur::parse("-4s").is_err());
    }

    #[test]
    fn every_count_must_be_at_least_one() {
        let base = "[[switch]]\nname = \"a\"\ndns = [\"5000-5999\"]\n[[switch.link]]\naddress = \"127.0.0.1:1\"\n";
        let config = Config::parse(base, "x.toml").unwrap();
        let keys: Vec<&str> = config.counts().iter().map(|(k, _, _)| *k).collect();
        assert!(keys.len() >= 10, "{keys:?}");
        for key in keys {
            let (section, name) = key.split_once('.').unwrap();
            let text = format!("[{section}]\n{name} = 0\n{base}");
            let e = Config::parse(&text, "x.toml").unwrap_err().to_string();
            assert!(
                e.contains("x.toml") && e.contains(key) && e.contains("at least 1"),
                "{key}: {e}"
            );
        }
    }

    #[test]
    fn errors_name_the_key_and_the_file() {
        let base = "[[switch]]\nname = \"a\"\ndns = [\"5000-5999\"]\n[[switch.link]]\naddress = \"127.0.0.1:1\"\n";
        let e = Config::parse(&format!("[options]\nbogus-key = 1\n{base}"), "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.toml") && e.contains("bogus-key"), "{e}");
        let e = Config::parse(
            &format!("[options]\nrequest-timeout = \"4y\"\n{base}"),
            "x.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("request-timeout") && e.contains("unknown unit"),
            "{e}"
        );
        let two = format!("{base}[[switch]]\nname = \"b\"\ndns = [\"5500\"]\n[[switch.link]]\naddress = \"127.0.0.1:2\"\n");
        let e = Config::parse(&two, "x.toml").unwrap_err().to_string();
        assert!(e.contains("switch[1].dns") && e.contains("overlaps"), "{e}");
    }

    #[test]
    fn call_limits_must_be_at_least_one() {
        let base = "[[switch]]\nname = \"a\"\ndns = [\"5000-5999\"]\n[[switch.link]]\naddress = \"127.0.0.1:1\"\n";
        let c = Config::parse(base, "x.toml").unwrap();
        assert_eq!(
            (c.options.max_calls_per_dn, c.options.max_calls_per_switch),
            (1000, 200_000)
        );
        for key in ["max-calls-per-dn", "max-calls-per-switch"] {
            let e = Config::parse(&format!("[options]\n{key} = 0\n{base}"), "x.toml")
                .unwrap_err()
                .to_string();
            assert!(e.contains("x.toml") && e.contains(key), "{e}");
        }
    }
}
