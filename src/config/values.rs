//! The forms of the configuration's values: durations with a unit, socket addresses, and
//! parser messages in an operator's words.

use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

/// A duration written with a unit: `"250ms"`, `"4s"`, `"2m"`, `"2h"` (`"0s"` allowed), read by
/// `humantime` (so `"1h30m"` and `"90 s"` are read too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl Dur {
    /// Parse a duration, with an error an operator can act on.
    pub fn parse(s: &str) -> Result<Dur, String> {
        let s = s.trim();
        humantime::parse_duration(s).map(Dur).map_err(|e| match e {
            humantime::DurationError::UnknownUnit { unit, .. } if unit.is_empty() => {
                format!("{s:?} has no unit; write e.g. \"250ms\", \"4s\", \"2m\" or \"2h\"")
            }
            humantime::DurationError::UnknownUnit { unit, .. } => {
                format!("{s:?} has an unknown unit {unit:?}; use ms, s, m or h")
            }
            humantime::DurationError::NumberOverflow => {
                format!("{s:?} is far too long a duration")
            }
            _ => format!("{s:?} does not start with a whole number; write e.g. \"250ms\", \"4s\", \"2m\" or \"2h\""),
        })
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
pub(super) fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    parse_addr(&s).map_err(de::Error::custom)
}

/// [`socket_addr`] for an optional key.
pub(super) fn opt_socket_addr<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    socket_addr(d).map(Some)
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        format!(
            "{s:?} is not an address: write an IP address and a port, e.g. \"127.0.0.1:7700\" or \"[::1]:7700\" (host names are not resolved)"
        )
    })
}

/// A duration limit as an operator writes it: "24h", "168h (7 days)".
pub(super) fn describe_max(max: Duration) -> String {
    let hours = max.as_secs() / 3600;
    if hours > 24 && hours.is_multiple_of(24) {
        format!("{hours}h ({} days)", hours / 24)
    } else {
        format!("{hours}h")
    }
}

/// Serde names integer types in its messages ("expected usize"); an operator reads "a whole
/// number".
pub(super) fn plain_type_names(message: &str) -> String {
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
