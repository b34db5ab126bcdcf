//! Log output of the binaries (`csta-router`, `pbx-sim`): where logs go, in which shape, and
//! which targets are shown when `RUST_LOG` is not set.
//!
//! Logs go to stderr (stdout carries the one machine-readable line each binary prints). Colours
//! are used only when stderr is a terminal, so files and journald get plain text. `json` writes
//! one JSON object per line for log shippers. Without `RUST_LOG`, our own code logs at INFO
//! (with the `audit` and `csta_wire` targets, which `wire-trace` and the audit trail rely on)
//! and every other crate at WARN, so that a dependency's chatter does not drown the router's.

use std::io::IsTerminal;

/// The filter used when `RUST_LOG` is not set (or cannot be read): our crate and the `audit`
/// and `csta_wire` targets at INFO, everything else at WARN.
pub const DEFAULT_FILTER: &str = "warn,csta_router=info,audit=info,csta_wire=info";

/// The shape of log lines: text for people, JSON for log shippers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event (coloured only on a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with `message`).
    Json,
}

/// Install the global subscriber writing to stderr. `extra_default` adds directives to
/// [`DEFAULT_FILTER`] (e.g. `"pbx_sim=info"` for that binary's own target). An unreadable
/// `RUST_LOG` is reported once on stderr and the default is used instead, so a typo in the
/// variable never silences the router.
pub fn init(format: LogFormat, extra_default: &str) {
    let default = if extra_default.is_empty() {
        DEFAULT_FILTER.to_owned()
    } else {
        format!("{DEFAULT_FILTER},{extra_default}")
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => {
            match tracing_subscriber::EnvFilter::try_new(&value) {
                Ok(filter) => filter,
                Err(e) => {
                    eprintln!(
                        "RUST_LOG={value:?} cannot be read ({e}); logging with the default {default:?}"
                    );
                    tracing_subscriber::EnvFilter::new(&default)
                }
            }
        }
        _ => tracing_subscriber::EnvFilter::new(&default),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}
