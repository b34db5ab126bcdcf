//! Writing the router's messages (README, "Client protocol v1"): one constructor per message, each writing
//! its JSON straight into the bytes every recipient shares.

use super::{ErrorCode, ProtocolError, RegisterMode, SharedText};
use bytestring::ByteString;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::SystemTime;

/// Call `f` with the current time as RFC 3339, UTC, milliseconds
/// (`2026-11-25T05:49:19.123Z`). Every message carries it, so it is formatted at most once per
/// millisecond per thread.
fn with_now<R>(f: impl FnOnce(&str) -> R) -> R {
    thread_local! {
        static LAST: std::cell::RefCell<(u128, String)> =
            const { std::cell::RefCell::new((u128::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let millis = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != millis {
            last.1.clear();
            // Writing to a String cannot fail.
            let _ = write!(last.1, "{}", humantime::format_rfc3339_millis(now));
            last.0 = millis;
        }
        f(&last.1)
    })
}

/// A message being built: a JSON object with `message` and `time` already set, written
/// straight into its final bytes (fields in the order they are added). Private: every message
/// has its constructor below, the one place that names its fields.
///
/// Why not a `serde_json::Map`: every event is built on the hot path of fan-out and of every
/// reply, and a map costs a tree insert and an allocation per field before the same text is
/// written anyway. Each key must be added once; keys are written as given (they are the
/// protocol's field names, never client input).
#[derive(Debug)]
pub(super) struct MessageBuilder(Vec<u8>);

impl MessageBuilder {
    /// Start a message with its name.
    pub(super) fn new(message: &str) -> MessageBuilder {
        let mut out = Vec::with_capacity(192);
        out.extend_from_slice(b"{\"message\":");
        push_json(&mut out, message);
        out.extend_from_slice(b",\"time\":\"");
        with_now(|t| out.extend_from_slice(t.as_bytes()));
        out.push(b'"');
        MessageBuilder(out)
    }

    /// Add a field.
    pub(super) fn with(mut self, key: &str, value: impl serde::Serialize) -> MessageBuilder {
        self.0.extend_from_slice(b",\"");
        self.0.extend_from_slice(key.as_bytes());
        self.0.extend_from_slice(b"\":");
        push_json(&mut self.0, &value);
        self
    }

    /// Add a field when there is a value.
    pub(super) fn with_some(
        self,
        key: &str,
        value: Option<impl serde::Serialize>,
    ) -> MessageBuilder {
        match value {
            Some(v) => self.with(key, v),
            None => self,
        }
    }

    /// Set `referenceId` (only on replies).
    fn reference(self, reference_id: u64) -> MessageBuilder {
        self.with("referenceId", reference_id)
    }

    /// Serialize once.
    pub(super) fn finish(mut self) -> SharedText {
        self.0.push(b'}');
        // Everything written is UTF-8 (JSON from serde_json, keys and time from `str`s).
        ByteString::try_from(self.0).unwrap_or_else(|_| ByteString::from_static("{}"))
    }
}

/// Append the JSON of `value`.
fn push_json(out: &mut Vec<u8>, value: &(impl serde::Serialize + ?Sized)) {
    if serde_json::to_writer(&mut *out, value).is_err() {
        // Only maps with non-string keys fail, and no message has one; write null rather
        // than a broken object.
        out.extend_from_slice(b"null");
    }
}

/// A switch as clients see it in `EventServerConnected` and `EventServerInfo`.
#[derive(Debug, Clone)]
pub struct SwitchView<'a> {
    /// Its name.
    pub name: &'a str,
    /// Whether it has an operational, announced link.
    pub link_up: bool,
    /// The active link's index (meaningful while `link_up`).
    pub active_link: usize,
    /// Whether it is an embedded simulator.
    pub simulated: bool,
    /// In a cluster, the node that owns it (`Some(None)` while no node does); `None` for a
    /// router alone.
    pub owner: Option<Option<std::sync::Arc<str>>>,
}

impl SwitchView<'_> {
    fn link_state(&self) -> &'static str {
        link_state(self.link_up)
    }
}

/// `linkState` of a switch: "connected" or "disconnected".
fn link_state(up: bool) -> &'static str {
    if up {
        "connected"
    } else {
        "disconnected"
    }
}

/// `hotDesk` of a DN: `null`, or the association {`guestDn`, `hostDn`}.
fn hotdesk_json(hotdesk: Option<(&str, &str)>) -> Value {
    match hotdesk {
        Some((guest, host)) => serde_json::json!({"guestDn": guest, "hostDn": host}),
        None => Value::Null,
    }
}

/// What `EventServerConnected` says of the client's session.
#[derive(Debug, Clone, Copy)]
pub struct SessionInfo<'a> {
    /// `sessionId`: what a later `RequestOpen` gives to resume the session.
    pub id: &'a str,
    /// `sessionLinger`: how long the session outlives its connection (written in seconds, to
    /// the millisecond).
    pub linger: std::time::Duration,
    /// `None` when no resume was asked; else whether it resumed, how many events it
    /// replays (`replayed`), and the switches with events no longer kept (`resumeGap`).
    pub resumed: Option<(bool, usize, &'a [&'a str])>,
}

/// `EventServerConnected`, the reply to `RequestOpen`.
pub fn server_connected(
    reference_id: u64,
    private_services: &[u32],
    accode_name: &str,
    switches: &[SwitchView<'_>],
    session: &SessionInfo<'_>,
) -> SharedText {
    let mut m = MessageBuilder::new("EventServerConnected")
        .reference(reference_id)
        .with("protocolVersion", 1)
        .with("serverVersion", env!("CARGO_PKG_VERSION"))
        .with("privateServices", private_services)
        .with("accodeName", accode_name)
        .with("switches", switches_json(switches, false))
        .with("sessionId", session.id);
    m = if session.linger.subsec_millis() == 0 {
        m.with("sessionLinger", session.linger.as_secs())
    } else {
        m.with("sessionLinger", session.linger.as_millis() as f64 / 1000.0)
    };
    if let Some((resumed, replayed, gap)) = session.resumed {
        m = m.with("resumed", resumed).with("replayed", replayed);
        if !gap.is_empty() {
            m = m.with("resumeGap", gap);
        }
    }
    m.finish()
}

/// `EventClosed`, the reply to `RequestClose`: the session is over.
pub fn closed(reference_id: u64) -> SharedText {
    MessageBuilder::new("EventClosed")
        .reference(reference_id)
        .finish()
}

/// `EventServerInfo`, the reply to `RequestQueryServer`.
pub fn server_info(reference_id: u64, switches: &[SwitchView<'_>]) -> SharedText {
    MessageBuilder::new("EventServerInfo")
        .reference(reference_id)
        .with("serverVersion", env!("CARGO_PKG_VERSION"))
        .with("switches", switches_json(switches, true))
        .finish()
}

/// The `switches` list: {`name`, `linkState`, `simulated`}, and `activeLink` (the index, or
/// `null` while down) when asked.
fn switches_json(switches: &[SwitchView<'_>], active_link: bool) -> Vec<Value> {
    switches
        .iter()
        .map(|s| {
            let mut v = serde_json::json!({
                "name": s.name,
                "linkState": s.link_state(),
                "simulated": s.simulated,
            });
            if active_link {
                v["activeLink"] = if s.link_up {
                    Value::from(s.active_link)
                } else {
                    Value::Null
                };
                if let Some(owner) = &s.owner {
                    v["owner"] = owner.as_deref().map_or(Value::Null, Value::from);
                }
            }
            v
        })
        .collect()
}

/// `EventLinkConnected` (`up`) or `EventLinkDisconnected`, sent to every open client; `link`
/// is the active (or lost) link's index when there is one, `reason` why (in a cluster:
/// `link_lost`, `failover`, `rebalance`, `fenced`, `shutdown`).
pub fn link_event(switch: &str, up: bool, link: Option<usize>, reason: Option<&str>) -> SharedText {
    let name = if up {
        "EventLinkConnected"
    } else {
        "EventLinkDisconnected"
    };
    MessageBuilder::new(name)
        .with("switch", switch)
        .with_some("link", link)
        .with_some("reason", reason)
        .finish()
}

/// `EventRegistered`, the reply to `RequestRegisterAddress`: the mode and `callEvents` as
/// registered.
pub fn registered(
    reference_id: u64,
    dn: &str,
    switch: &str,
    (mode, call_events): (RegisterMode, bool),
    link_up: bool,
    hotdesk: Option<(&str, &str)>,
    hotdesk_known: bool,
) -> SharedText {
    MessageBuilder::new("EventRegistered")
        .reference(reference_id)
        .with("thisDn", dn)
        .with("switch", switch)
        .with("registerMode", mode.as_str())
        .with("callEvents", call_events)
        .with("linkState", link_state(link_up))
        .with("hotDesk", hotdesk_json(hotdesk))
        .with("hotDeskKnown", hotdesk_known)
        .finish()
}

/// `EventUnregistered`, the reply to `RequestUnregisterAddress`.
pub fn unregistered(reference_id: u64, dn: &str) -> SharedText {
    MessageBuilder::new("EventUnregistered")
        .reference(reference_id)
        .with("thisDn", dn)
        .finish()
}

/// The unsolicited `EventUnregistered`: the switch refused to monitor `dn` again after a
/// reconnect, so the router dropped its registrations.
pub fn monitor_lost(dn: &str, switch: &str, code: ErrorCode, message: &str) -> SharedText {
    MessageBuilder::new("EventUnregistered")
        .with("thisDn", dn)
        .with("switch", switch)
        .with("errorCode", code.code())
        .with("errorMessage", message)
        .finish()
}

/// `EventAddressInfo`, the reply to `RequestQueryAddress`; `calls` oldest first, as connIds or
/// (for a client registered on the DN with `callEvents`) as objects.
pub fn address_info(
    reference_id: u64,
    dn: &str,
    switch: &str,
    hotdesk: Option<(&str, &str)>,
    hotdesk_known: bool,
    calls: &super::Calls,
) -> SharedText {
    MessageBuilder::new("EventAddressInfo")
        .reference(reference_id)
        .with("thisDn", dn)
        .with("switch", switch)
        .with("hotDesk", hotdesk_json(hotdesk))
        .with("hotDeskKnown", hotdesk_known)
        .with("calls", calls)
        .finish()
}

/// `EventPrivateInfo` as the reply to `RequestPrivateService` (with its `referenceId`): the
/// switch accepted the request. `other_dn` is the host (1, 2), `conn_id` the call (501).
pub fn private_info_reply(
    reference_id: u64,
    msg_id: u32,
    dn: &str,
    switch: &str,
    extensions: &BTreeMap<String, String>,
    other_dn: Option<&str>,
    conn_id: Option<&str>,
) -> SharedText {
    MessageBuilder::new("EventPrivateInfo")
        .reference(reference_id)
        .with("privateMsgId", msg_id)
        .with("thisDn", dn)
        .with("switch", switch)
        .with("extensions", extensions)
        .with_some("otherDn", other_dn)
        .with_some("connId", conn_id)
        .finish()
}

/// The start of an unsolicited `EventPrivateInfo`: the fields every private event carries.
fn private_event(monitored_dn: &str, switch: &str, seq: u64, msg_id: u32) -> MessageBuilder {
    MessageBuilder::new("EventPrivateInfo")
        .with("privateMsgId", msg_id)
        .with("monitoredDn", monitored_dn)
        .with("switch", switch)
        .with("eventSeq", seq)
}

/// The unsolicited `EventPrivateInfo` of a hot-desk event (`privateMsgId` 1: established, 2:
/// cancelled), serialized once for all the DN's subscribers.
pub fn hotdesk_event(
    monitored_dn: &str,
    switch: &str,
    seq: u64,
    msg_id: u32,
    guest: &str,
    host: Option<&str>,
) -> SharedText {
    private_event(monitored_dn, switch, seq, msg_id)
        .with("thisDn", guest)
        .with_some("otherDn", host)
        .finish()
}

/// The unsolicited `EventPrivateInfo` 501: an account code was set on call `conn_id` of
/// `monitored_dn`; `accode_name` is the extension key that carries it.
pub fn account_code_event(
    monitored_dn: &str,
    switch: &str,
    seq: u64,
    conn_id: &str,
    accode_name: &str,
    code: &str,
) -> SharedText {
    let mut extensions = Map::new();
    extensions.insert(accode_name.to_owned(), Value::from(code));
    private_event(monitored_dn, switch, seq, 501)
        .with("thisDn", monitored_dn)
        .with("connId", conn_id)
        .with("extensions", extensions)
        .finish()
}

/// An `EventError`. Building it counts nothing: whoever sends it counts it
/// (`csta_router_errors_total`).
pub fn event_error(
    e: &ProtocolError,
    switch: Option<&str>,
    extensions: Option<&Map<String, Value>>,
) -> SharedText {
    MessageBuilder::new("EventError")
        .reference(e.reference_id)
        .with("errorCode", e.code.code())
        .with("errorMessage", e.message.as_str())
        .with_some("thisDn", e.this_dn.as_deref())
        .with_some("switch", switch)
        .with_some("extensions", extensions)
        .finish()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn outgoing_writes_one_json_object_in_field_order() {
        let mut ext = BTreeMap::new();
        ext.insert("HOST_DN".to_owned(), "40\"01\u{e9}".to_owned());
        let text = MessageBuilder::new("EventPrivateInfo")
            .reference(9)
            .with("thisDn", "5001")
            .with("hotDesk", Value::Null)
            .with("ok", true)
            .with("extensions", &ext)
            .with("calls", vec!["a\nb"])
            .finish();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["message"], "EventPrivateInfo");
        assert_eq!(v["referenceId"], 9);
        assert_eq!(v["extensions"]["HOST_DN"], "40\"01\u{e9}");
        assert_eq!(v["calls"][0], "a\nb");
        assert_eq!(
            (v["hotDesk"].clone(), v["ok"].clone()),
            (Value::Null, Value::Bool(true))
        );
        assert_eq!(v["time"].as_str().map(str::len), Some(24));
        let order: Vec<usize> = [
            "\"message\"",
            "\"time\"",
            "\"referenceId\"",
            "\"thisDn\"",
            "\"calls\"",
        ]
        .iter()
        .map(|k| text.find(k).unwrap())
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    #[test]
    fn time_is_rfc3339_utc_millis() {
        let t = with_now(str::to_owned);
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[19] == b'.');
    }
}
