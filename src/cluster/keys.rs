//! The cluster's names in NATS: buckets, the event stream, subjects, and the keys under which
//! switches, DNs, call IDs and sessions are stored.
//!
//! NATS key-value keys allow only `[-/_=.a-zA-Z0-9]` and subjects split on `.`, but DNs carry
//! `*`, `#`, `+` and dots, and switch names and call IDs are whatever the operator and the
//! switch chose. [`encode`] writes every byte outside `[A-Za-z0-9_-]` as `=XX` (two upper-case
//! hex digits; `=` itself too), which is reversible ([`decode`]), keeps a name that needs no
//! escape as it is, and never produces a `.`: an encoded name is always exactly one subject
//! token and one key token. The empty string is written `=`, which no escape produces.

/// Write `raw` as one NATS key/subject token: bytes outside `[A-Za-z0-9_-]` as `=XX`; the
/// empty string as `=`.
pub fn encode(raw: &str) -> String {
    if raw.is_empty() {
        return "=".to_owned();
    }
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push('=');
            out.push(hex_digit(b >> 4));
            out.push(hex_digit(b & 0xF));
        }
    }
    out
}

/// The key of client session `id` in the sessions bucket: `s` and the first 128 bits of its
/// SHA-256 digest in hex, so the bucket never holds an id.
pub fn session_key(id: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(id.as_bytes());
    let mut key = String::with_capacity(33);
    key.push('s');
    for b in digest.iter().take(16) {
        key.push(hex_digit(b >> 4));
        key.push(hex_digit(b & 0xF));
    }
    key
}

fn hex_digit(n: u8) -> char {
    char::from(if n < 10 { b'0' + n } else { b'A' + n - 10 })
}

/// The name [`encode`] wrote, or `None` when `token` is not something it writes (a key
/// written by someone else).
pub fn decode(token: &str) -> Option<String> {
    if token == "=" {
        return Some(String::new());
    }
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' => {
                let hi = bytes.get(i + 1).and_then(|c| hex_value(*c))?;
                let lo = bytes.get(i + 2).and_then(|c| hex_value(*c))?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    if out.is_empty() {
        return None;
    }
    String::from_utf8(out).ok()
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Bucket of switch leases: switch key → owner (`max_age` = lease-ttl).
pub fn leases_bucket(cluster: &str) -> String {
    format!("CRR_{cluster}_LEASES")
}

/// Bucket of node presence: node name → id and start time (`max_age` = lease-ttl).
pub fn nodes_bucket(cluster: &str) -> String {
    format!("CRR_{cluster}_NODES")
}

/// Bucket of eventSeq blocks: switch key → the highest eventSeq ever reserved (no `max_age`).
pub fn seq_bucket(cluster: &str) -> String {
    format!("CRR_{cluster}_SEQ")
}

/// Bucket of registrations: `<switch>.<dn>.<node id>.<session>` → mode and application.
pub fn regs_bucket(cluster: &str) -> String {
    format!("CRR_{cluster}_REGS")
}

/// Bucket of client sessions: a digest of the session id → its application and holder.
pub fn sessions_bucket(cluster: &str) -> String {
    format!("CRR_{cluster}_SESS")
}

/// The subject on which a node is told to give up one of its sessions (resumed elsewhere).
pub fn session_subject(cluster: &str, node_id: &str) -> String {
    format!("crr.{cluster}.sess.{}", encode(node_id))
}

/// Bucket of connIds: `<switch>.<call id>` → connId.
pub fn calls_bucket(cluster: &str) -> String {
    format!("CRR_{cluster}_CALLS")
}

/// The stream of delivered events (retained `replay-window`).
pub fn events_stream(cluster: &str) -> String {
    format!("CRR_{cluster}_EVENTS")
}

/// Every subject of the event stream.
pub fn events_subjects(cluster: &str) -> String {
    format!("crr.{cluster}.ev.>")
}

/// The subject of a switch's events in the event stream.
pub fn event_subject(cluster: &str, switch: &str) -> String {
    format!("crr.{cluster}.ev.{}", encode(switch))
}

/// The subject of one DN's events in the event stream (under its switch's subject).
pub fn event_dn_subject(cluster: &str, switch: &str, dn: &str) -> String {
    format!("{}.{}", event_subject(cluster, switch), encode(dn))
}

/// The subject on which a node takes the requests forwarded to it.
pub fn request_subject(cluster: &str, node_id: &str) -> String {
    format!("crr.{cluster}.req.{}", encode(node_id))
}

/// The subject of the flows (replies and events) from owners to a node.
pub fn flow_subject(cluster: &str, node_id: &str) -> String {
    format!("crr.{cluster}.flow.{}", encode(node_id))
}

/// The subject of link-state broadcasts.
pub fn link_subject(cluster: &str) -> String {
    format!("crr.{cluster}.link")
}

/// The key of one registration: `<switch>.<dn>.<node id>.<session>`, each encoded.
pub fn registration_key(switch: &str, dn: &str, node_id: &str, session: &str) -> String {
    format!(
        "{}.{}.{}.{}",
        encode(switch),
        encode(dn),
        encode(node_id),
        encode(session)
    )
}

/// The (switch, dn, node id, session) of a registration key, or `None` for a key that
/// [`registration_key`] did not write.
pub fn parse_registration_key(key: &str) -> Option<(String, String, String, String)> {
    let mut parts = key.split('.');
    let parsed = (
        decode(parts.next()?)?,
        decode(parts.next()?)?,
        decode(parts.next()?)?,
        decode(parts.next()?)?,
    );
    parts.next().is_none().then_some(parsed)
}

/// The key of a call's connId: `<switch>.<call id>`, each encoded.
pub fn call_key(switch: &str, call_id: &str) -> String {
    format!("{}.{}", encode(switch), encode(call_id))
}

/// The (switch, call id) of a call key, or `None` for a key that [`call_key`] did not write.
pub fn parse_call_key(key: &str) -> Option<(String, String)> {
    let (switch, call) = key.split_once('.')?;
    Some((decode(switch)?, decode(call)?))
}

/// What the cluster's subjects are called, for one cluster.
#[derive(Debug, Clone)]
pub struct Subjects {
    /// The cluster's name.
    pub cluster: std::sync::Arc<str>,
}

impl Subjects {
    /// The subject of one DN's events in the event stream.
    pub fn event_dn(&self, switch: &str, dn: &str) -> String {
        event_dn_subject(&self.cluster, switch, dn)
    }

    /// Every DN's events of a switch in the event stream.
    pub fn event_all(&self, switch: &str) -> String {
        format!("{}.>", self.event(switch))
    }

    /// The subject on which a node gives up its sessions.
    pub fn session(&self, node_id: &str) -> String {
        session_subject(&self.cluster, node_id)
    }

    /// The flow subject of a node.
    pub fn flow(&self, node_id: &str) -> String {
        flow_subject(&self.cluster, node_id)
    }

    /// The event-stream subject of a switch.
    pub fn event(&self, switch: &str) -> String {
        event_subject(&self.cluster, switch)
    }

    /// The link-state subject.
    pub fn link(&self) -> String {
        link_subject(&self.cluster)
    }

    /// The subject of a node's forwarded requests.
    pub fn request(&self, node_id: &str) -> String {
        request_subject(&self.cluster, node_id)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// What NATS accepts as a key (async-nats's own rule).
    fn valid_key(key: &str) -> bool {
        !key.is_empty()
            && !key.starts_with('.')
            && !key.ends_with('.')
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b))
    }

    #[test]
    fn plain_names_are_kept_and_the_rest_escaped() {
        assert_eq!(encode("sw1"), "sw1");
        assert_eq!(encode("node_a-1"), "node_a-1");
        assert_eq!(encode("5001"), "5001");
        assert_eq!(encode("*55#"), "=2A55=23");
        assert_eq!(encode("+4930.12"), "=2B4930=2E12");
        assert_eq!(encode("a=b"), "a=3Db");
        assert_eq!(encode("a b/c"), "a=20b=2Fc");
        assert_eq!(encode("é"), "=C3=A9");
        assert_eq!(encode(""), "=");
    }

    #[test]
    fn encoding_is_reversible_and_one_token() {
        for raw in [
            "sw1",
            "*55#",
            "+49.30.1234",
            "a=b",
            "=",
            "==2A",
            "",
            "é日本",
            "x.y.z",
            ">",
            "*",
            "call id 17/3",
            "0x1F",
            "-",
            "_",
        ] {
            let token = encode(raw);
            assert!(valid_key(&token), "{raw:?} -> {token:?}");
            assert!(!token.contains('.'), "{raw:?} -> {token:?}");
            assert_eq!(decode(&token).as_deref(), Some(raw), "{raw:?} -> {token:?}");
        }
    }

    #[test]
    fn foreign_tokens_are_not_decoded() {
        for token in ["a.b", "=2", "=G1", "=2a", "a b", "=FF", ""] {
            assert_eq!(decode(token), None, "{token:?}");
        }
    }

    #[test]
    fn registration_and_call_keys_round_trip() {
        let key = registration_key("sw.1", "*55#", "a-0123456789abcdef", "s/7");
        assert!(valid_key(&key), "{key}");
        assert_eq!(key.matches('.').count(), 3);
        assert_eq!(
            parse_registration_key(&key),
            Some((
                "sw.1".to_owned(),
                "*55#".to_owned(),
                "a-0123456789abcdef".to_owned(),
                "s/7".to_owned()
            ))
        );
        assert_eq!(parse_registration_key("a.b.c"), None);
        assert_eq!(parse_registration_key("a.b.c.d.e"), None);
        let key = call_key("sw1", "0042.7");
        assert!(valid_key(&key));
        assert_eq!(
            parse_call_key(&key),
            Some(("sw1".to_owned(), "0042.7".to_owned()))
        );
    }

    #[test]
    fn names_follow_the_cluster() {
        assert_eq!(leases_bucket("cc"), "CRR_cc_LEASES");
        assert_eq!(nodes_bucket("cc"), "CRR_cc_NODES");
        assert_eq!(seq_bucket("cc"), "CRR_cc_SEQ");
        assert_eq!(regs_bucket("cc"), "CRR_cc_REGS");
        assert_eq!(calls_bucket("cc"), "CRR_cc_CALLS");
        assert_eq!(events_stream("cc"), "CRR_cc_EVENTS");
        assert_eq!(events_subjects("cc"), "crr.cc.ev.>");
        assert_eq!(event_subject("cc", "sw.1"), "crr.cc.ev.sw=2E1");
        assert_eq!(request_subject("cc", "a-00ff"), "crr.cc.req.a-00ff");
        assert_eq!(flow_subject("cc", "a-00ff"), "crr.cc.flow.a-00ff");
        assert_eq!(link_subject("cc"), "crr.cc.link");
    }
}
