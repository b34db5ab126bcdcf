//! Secrets (application tokens, NATS credentials) never appear in a configuration error, a
//! log line or a debug print.

use serde::{Deserialize, Deserializer};
use std::fmt;

/// A secret from the configuration (`nats-token`, `nats-password`): its `Debug` and `Display`
/// print `<redacted>`, so a configuration printed whole, or an error that carries one, never
/// shows it. [`Secret::expose`] is the one way to read it, for the code that sends it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// The keys of `[cluster]` that hold no secret; any other line of the table (a misspelt
/// `nats-pasword`) is treated as one.
const CLUSTER_PLAIN_KEYS: &[&str] = &[
    "name",
    "node",
    "nats",
    "lease-ttl",
    "replicas",
    "replay-window",
    "rebalance",
    "rebalance-after",
    "nats-user",
    "nats-creds",
    "nats-tls-ca",
];

/// Whether a configuration line holds a secret wherever it stands: a token or a password
/// (`token`, `nats-token`, `nats-password`), or a URL with credentials in it
/// (`nats://user:password@host`).
fn secret_line(trimmed: &str) -> bool {
    let lower = trimmed.to_ascii_lowercase();
    lower.contains("token")
        || lower.contains("password")
        || (lower.contains("://") && lower.contains('@'))
}

/// Remove secrets from a parser message. The TOML parser quotes the offending line (and may
/// quote a value): a syntax error on a `token` or `nats-password` line, or a misspelt key in
/// an `[[application]]` table, would print the secret. Every quoted source line that holds
/// one (any line naming a token or a password, any URL with credentials, and any line of an
/// `[[application]]` table other than its `name` and `access`) is replaced, and the values of
/// those lines are cut from the rest of the message.
pub(super) fn redact_secrets(message: &str, text: &str) -> String {
    let mut secret_lines = std::collections::BTreeSet::new();
    let mut secret_values: Vec<String> = Vec::new();
    let mut in_application = false;
    let mut in_cluster = false;
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
            let table = trimmed.trim_start_matches('[').trim_end_matches(']').trim();
            in_application =
                table.eq_ignore_ascii_case("application") || table.eq_ignore_ascii_case("admin");
            in_cluster = table.eq_ignore_ascii_case("cluster");
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
        let secret = secret_line(trimmed)
            || (in_application && key != "name" && key != "access")
            || (in_cluster && !CLUSTER_PLAIN_KEYS.contains(&key));
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
                        "{} | (a line with a secret, not shown)",
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
