//! Configuration (README, section "Configuration"): TOML with kebab-case keys, read once at start.
//!
//! Unknown keys and invalid values are refused with a message that names the file and the
//! key. Every timer is a string with a unit (`"250ms"`, `"4s"`, `"2m"`, `"2h"`), so tests can run
//! with millisecond timers. The shipped default is embedded in the binary
//! ([`EMBEDDED_DEFAULT`]) and is the same file as `config/csta-router.toml`.
//!
//! - [`sections`]: the file's sections and their defaults;
//! - [`values`]: durations, addresses, and parser messages in an operator's words;
//! - [`secrets`]: no token or password in an error message, a log line or a debug print;
//! - `tls`: the TLS keys and the files they name, loaded at start;
//! - `cluster`: the checks of `[cluster]`.

mod cluster;
pub mod reload;
pub mod secrets;
pub mod sections;
mod tls;
pub mod values;

pub use cluster::{host_node_name, is_plain_name};
pub use secrets::Secret;
pub use sections::{
    Access, AdminConfig, ApplicationConfig, ClusterConfig, LinkEntry, OptionsConfig, Rebalance,
    ServerConfig, SwitchEntry,
};
pub use values::{Dur, MAX_DURATION, MAX_LONG_DURATION};

use crate::dnplan::DnPlan;
use crate::link::{LinkConfig, LinkSettings, SwitchConfig};
use secrets::redact_secrets;
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use values::{describe_max, plain_type_names};

/// The shipped configuration, compiled in so the router starts even without the file.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/csta-router.toml");

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

/// A configuration refused by a check: the key (a path such as `switch[1].dns`) and what is
/// wrong with it; the file is added where the error leaves this module.
type Bad = (String, String);

/// Below this many characters an application token gets a warning at start (tokens under 8
/// characters are refused).
pub const RECOMMENDED_TOKEN_CHARS: usize = 16;

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
    /// `[[admin]]`: who may reload the configuration; empty means anyone reaching
    /// `metrics-listen` may (a warning at start says so).
    #[serde(default)]
    pub admin: Vec<AdminConfig>,
    /// `[[switch]]`.
    #[serde(default)]
    pub switch: Vec<SwitchEntry>,
    /// `[cluster]`: this router is a node of a cluster (absent: it runs alone).
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
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
        config
            .check()
            .map_err(|(key, message)| ConfigError::Invalid {
                file: file.to_owned(),
                key,
                message,
            })?;
        Ok(config)
    }

    /// Every duration key with its value and the longest value it accepts. A new duration key
    /// is one line here.
    fn durations(&self) -> Vec<(&'static str, Dur, Duration)> {
        let (s, o) = (&self.server, &self.options);
        let mut durations = vec![
            (
                "server.client-ping-interval",
                s.client_ping_interval,
                MAX_DURATION,
            ),
            ("server.open-timeout", s.open_timeout, MAX_DURATION),
            ("server.session-linger", s.session_linger, MAX_LONG_DURATION),
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
        ];
        if let Some(c) = &self.cluster {
            durations.push(("cluster.lease-ttl", c.lease_ttl, MAX_DURATION));
            durations.push(("cluster.replay-window", c.replay_window, MAX_DURATION));
            durations.push(("cluster.rebalance-after", c.rebalance_after, MAX_DURATION));
        }
        durations
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

    /// Check the values together; the key and what is wrong with it.
    fn check(&mut self) -> Result<(), Bad> {
        self.check_values()?;
        self.plans = self.check_switches()?;
        self.check_cluster()?;
        for (i, app) in self.application.iter().enumerate() {
            if app.token.len() < 8 {
                return Err((
                    format!("application[{i}].token"),
                    "tokens must be at least 8 characters".into(),
                ));
            }
        }
        for (i, admin) in self.admin.iter().enumerate() {
            if admin.name.trim().is_empty() {
                return Err((format!("admin[{i}].name"), "must not be empty".into()));
            }
            if admin.token.expose().chars().count() < 8 {
                return Err((
                    format!("admin[{i}].token"),
                    "tokens must be at least 8 characters".into(),
                ));
            }
        }
        self.check_tls()
    }

    /// Values that must be set, durations within their limits, counts at least 1.
    fn check_values(&self) -> Result<(), Bad> {
        let bad = |key: &str, message: String| Err((key.to_owned(), message));
        if self.switch.is_empty() {
            return bad("switch", "at least one [[switch]] is needed".into());
        }
        if self.options.accode_name.trim().is_empty() {
            return bad("options.accode-name", "must not be empty".into());
        }
        if let Some(url) = &self.server.console_client_url {
            if !(url.starts_with("ws://") || url.starts_with("wss://"))
                || url.contains(['"', '<', '>'])
            {
                return bad(
                    "server.console-client-url",
                    "must be a WebSocket URL starting with ws:// or wss://, such as \"wss://cti.example.com/v1\"".into(),
                );
            }
        }
        if self.options.request_timeout.0.is_zero() {
            return bad("options.request-timeout", "must be more than 0".into());
        }
        for (key, value, max) in self.durations() {
            if value.0 > max {
                return bad(
                    key,
                    format!(
                        "{} is longer than {}, the most this key accepts",
                        humantime::format_duration(value.0),
                        describe_max(max)
                    ),
                );
            }
        }
        let (min, max) = (self.options.reconnect_min.0, self.options.reconnect_max.0);
        if min > max {
            return bad(
                "options.reconnect-min",
                format!(
                    "reconnect-min ({}) is longer than reconnect-max ({}): the back-off starts at reconnect-min and doubles up to reconnect-max",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            );
        }
        for (key, value, why) in self.counts() {
            if value == 0 {
                return bad(key, format!("must be at least 1{why}"));
            }
        }
        Ok(())
    }

    /// Each switch named once, with links and a DN plan that overlaps no other: the plans.
    fn check_switches(&self) -> Result<Vec<DnPlan>, Bad> {
        let mut plans: Vec<DnPlan> = Vec::new();
        for (i, sw) in self.switch.iter().enumerate() {
            let bad = |k: &str, message: String| Err((format!("switch[{i}].{k}"), message));
            if sw.name.trim().is_empty() {
                return bad("name", "must not be empty".into());
            }
            if self.switch[..i].iter().any(|o| o.name == sw.name) {
                return bad("name", format!("two switches are named {:?}", sw.name));
            }
            if sw.link.is_empty() {
                return bad(
                    "link",
                    format!("switch {:?} needs at least one [[switch.link]]", sw.name),
                );
            }
            if sw.dns.is_empty() {
                return bad("dns", format!("switch {:?} owns no DN", sw.name));
            }
            if let Err((key, message)) = sw.check_session() {
                return bad(key, message);
            }
            let plan = match DnPlan::parse(&sw.dns) {
                Ok(plan) => plan,
                Err(e) => return bad("dns", e.to_string()),
            };
            for (j, other) in plans.iter().enumerate() {
                if let Some((a, b)) = plan.overlap(other) {
                    return bad("dns", format!(
                        "switch {:?} claims {a}, which overlaps {b} of switch {:?}: a DN belongs to exactly one switch",
                        sw.name, self.switch[j].name
                    ));
                }
            }
            plans.push(plan);
        }
        Ok(plans)
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
                    app_session: sw.session_settings(),
                    system_register: sw.system_register,
                    ..self.link_settings(sw.wire_trace)
                },
            })
            .collect()
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
        assert_eq!(Dur::parse("1h30m").unwrap().0, Duration::from_secs(5400));
        assert!(Dur::parse("4").unwrap_err().contains("no unit"));
        assert!(Dur::parse("99999999999999999999s")
            .unwrap_err()
            .contains("far too long"));
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
            // (humantime reads "4y" as four years, refused by the key's limit instead)
            &format!("[options]\nrequest-timeout = \"4x\"\n{base}"),
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
    fn the_console_client_url_must_be_a_websocket_url() {
        let base = "[[switch]]\nname = \"a\"\ndns = [\"5000-5999\"]\n[[switch.link]]\naddress = \"127.0.0.1:1\"\n";
        let url = |u: &str| format!("[server]\nconsole-client-url = \"{u}\"\n{base}");
        let c = Config::parse(&url("wss://cti.example.com/v1"), "x.toml").unwrap();
        assert_eq!(
            c.server.console_client_url.as_deref(),
            Some("wss://cti.example.com/v1")
        );
        for bad in [
            "https://cti.example.com/v1",
            "cti.example.com:7700",
            "ws://a/<b>",
        ] {
            let e = Config::parse(&url(bad), "x.toml").unwrap_err().to_string();
            assert!(
                e.contains("x.toml") && e.contains("server.console-client-url"),
                "{bad}: {e}"
            );
        }
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
