//! Audit lines: one per private-service request a client made, whatever its outcome (README,
//! "Observability", logs).
//!
//! Every line has the same shape, target `audit`, message "private service", and the fields
//! `application` (the configured application the client's token matched; with no
//! `[[application]]` configured, the name the client claimed, validated at `RequestOpen`),
//! `dn`, `service` (its name), `result` ("ok" or the error code sent back) and `ms` (from the
//! request's arrival to its answer; 0 for a refusal the router makes at once). A log reader
//! can therefore filter and parse them with one pattern, and refusals by the router are
//! audited like the switch's.
//!
//! Nothing a client sends is written raw: [`LogStr`] writes a string bare only when it cannot
//! be mistaken for more than one field, and quoted and escaped otherwise, so no client text
//! can start a new line or add fields to one.

use crate::protocol::ErrorCode;
use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// A string for a log field: bare when it is only letters, digits and `-_.:@/+` (no space,
/// quote, `=` or control character), else in Rust's escaped, quoted form. Why: log lines are
/// read as `key=value` pairs by people and by log shippers, and a client-chosen string must
/// not be able to forge a field or a line.
#[derive(Debug, Clone, Copy)]
pub struct LogStr<'a>(pub &'a str);

impl fmt::Display for LogStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = !self.0.is_empty()
            && self
                .0
                .chars()
                .all(|c| c.is_alphanumeric() || "-_.:@/+".contains(c));
        if plain {
            f.write_str(self.0)
        } else {
            write!(f, "{:?}", self.0)
        }
    }
}

/// Write the audit line of one private-service request: `result` is `None` for success,
/// else the error code the client was sent.
pub fn private_service(
    application: &str,
    dn: &str,
    service: &str,
    result: Option<ErrorCode>,
    elapsed: Duration,
) {
    if !tracing::enabled!(target: "audit", tracing::Level::INFO) {
        return;
    }
    let result: Cow<'static, str> = match result {
        None => Cow::Borrowed("ok"),
        Some(code) => Cow::Owned(code.code().to_string()),
    };
    tracing::info!(
        target: "audit",
        application = %LogStr(application),
        dn = %LogStr(dn),
        service = %service,
        result = %result,
        ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        "private service"
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn log_strings_cannot_forge_fields_or_lines() {
        assert_eq!(LogStr("desktops").to_string(), "desktops");
        assert_eq!(
            LogStr("crm-2.0_eu@site/a+b:1").to_string(),
            "crm-2.0_eu@site/a+b:1"
        );
        assert_eq!(LogStr("").to_string(), "\"\"");
        assert_eq!(
            LogStr("x dn=1 result=ok").to_string(),
            "\"x dn=1 result=ok\""
        );
        assert_eq!(LogStr("a\nb").to_string(), "\"a\\nb\"");
        assert_eq!(LogStr("q\"uote").to_string(), "\"q\\\"uote\"");
        assert!(!LogStr("a\u{2028}b").to_string().contains('\u{2028}'));
    }
}
