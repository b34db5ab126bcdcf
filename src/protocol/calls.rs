//! Call events for desktops (README, "Call events"): the events a client registered with
//! `callEvents: true` gets for a DN, the state of each call at the DN, and the calls as
//! `RequestQueryAddress` lists them for such a client.
//!
//! Like every event, each is serialized once for all its recipients. Every call event starts
//! with `{"message":"Event…"` and is told apart from the other events by its name alone
//! ([`is_call_event`]), so that the cluster's nodes and replays can keep it from clients that
//! did not ask for call events without reading the rest of it.

use super::write::MessageBuilder;
use super::SharedText;
use serde::Serialize;

/// The state of a call at a device (`callState`), as a desktop shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallState {
    /// Off hook, nothing dialled yet.
    Initiated,
    /// Dialling, or the far end is ringing.
    Dialing,
    /// Ringing at this device.
    Ringing,
    /// Talking.
    Established,
    /// On hold at this device.
    Held,
    /// The call left the device.
    Released,
}

impl CallState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Initiated => "initiated",
            CallState::Dialing => "dialing",
            CallState::Ringing => "ringing",
            CallState::Established => "established",
            CallState::Held => "held",
            CallState::Released => "released",
        }
    }
}

/// The call events a client can get (SPEC table of section 15). One list: metrics export each
/// at 0 from [`CallEventName::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallEventName {
    /// `EventOffHook`: the device went off hook (ServiceInitiated).
    OffHook,
    /// `EventDialing`: the device dials, or the far end rings.
    Dialing,
    /// `EventRinging`: the call rings at the device.
    Ringing,
    /// `EventEstablished`: the call is answered.
    Established,
    /// `EventHeld`: the device put the call on hold.
    Held,
    /// `EventRetrieved`: the device took the call off hold.
    Retrieved,
    /// `EventPartyChanged`: a transfer changed the other party (and maybe the call's ID).
    PartyChanged,
    /// `EventDiverted`: the call left the device for another destination.
    Diverted,
    /// `EventReleased`: the call is over at the device.
    Released,
}

impl CallEventName {
    /// Every event, for metrics exported at 0.
    pub const ALL: [CallEventName; 9] = [
        CallEventName::OffHook,
        CallEventName::Dialing,
        CallEventName::Ringing,
        CallEventName::Established,
        CallEventName::Held,
        CallEventName::Retrieved,
        CallEventName::PartyChanged,
        CallEventName::Diverted,
        CallEventName::Released,
    ];

    /// The message name.
    pub fn message(self) -> &'static str {
        match self {
            CallEventName::OffHook => "EventOffHook",
            CallEventName::Dialing => "EventDialing",
            CallEventName::Ringing => "EventRinging",
            CallEventName::Established => "EventEstablished",
            CallEventName::Held => "EventHeld",
            CallEventName::Retrieved => "EventRetrieved",
            CallEventName::PartyChanged => "EventPartyChanged",
            CallEventName::Diverted => "EventDiverted",
            CallEventName::Released => "EventReleased",
        }
    }

    /// The metrics label (`event` of `csta_router_call_events_total`).
    pub fn label(self) -> &'static str {
        match self {
            CallEventName::OffHook => "off_hook",
            CallEventName::Dialing => "dialing",
            CallEventName::Ringing => "ringing",
            CallEventName::Established => "established",
            CallEventName::Held => "held",
            CallEventName::Retrieved => "retrieved",
            CallEventName::PartyChanged => "party_changed",
            CallEventName::Diverted => "diverted",
            CallEventName::Released => "released",
        }
    }
}

/// One call event for the clients of a DN.
#[derive(Debug, Clone)]
pub struct CallEventOut<'a> {
    /// Which event.
    pub name: CallEventName,
    /// The DN (`thisDn` and `monitoredDn`).
    pub dn: &'a str,
    /// The switch.
    pub switch: &'a str,
    /// The switch-wide event sequence number.
    pub seq: u64,
    /// The call's connId.
    pub conn_id: &'a str,
    /// The connId the call had before a transfer gave it a new call ID.
    pub previous_conn_id: Option<&'a str>,
    /// The other party, when known.
    pub other_dn: Option<&'a str>,
    /// The call's state at the DN after the event.
    pub call_state: CallState,
    /// The CSTA cause, when the switch gave one.
    pub cause: Option<&'a str>,
}

/// A call event, serialized once for every client of the DN registered with `callEvents`.
pub fn call_event(e: &CallEventOut<'_>) -> SharedText {
    MessageBuilder::new(e.name.message())
        .with("thisDn", e.dn)
        .with("monitoredDn", e.dn)
        .with("switch", e.switch)
        .with("eventSeq", e.seq)
        .with("connId", e.conn_id)
        .with_some("previousConnId", e.previous_conn_id)
        .with_some("otherDn", e.other_dn)
        .with("callState", e.call_state.as_str())
        .with_some("cause", e.cause)
        .finish()
}

/// Whether a serialized event is a call event (by its name, the first field of every message).
pub fn is_call_event(text: &str) -> bool {
    let Some(rest) = text.strip_prefix("{\"message\":\"") else {
        return false;
    };
    CallEventName::ALL.iter().any(|n| {
        rest.strip_prefix(n.message())
            .is_some_and(|r| r.starts_with('"'))
    })
}

/// One call of a DN as `RequestQueryAddress` lists it for a client with call events.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallView {
    /// The connId.
    pub conn_id: String,
    /// The state at the DN.
    pub call_state: CallState,
    /// The other party, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_dn: Option<String>,
}

/// `calls` of `EventAddressInfo`: connIds, or objects for a client with call events.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Calls {
    /// The plain list of connIds, oldest first (clients without call events).
    ConnIds(Vec<String>),
    /// {connId, callState, otherDn}, oldest first (clients registered with `callEvents`).
    Objects(Vec<CallView>),
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_call_event_carries_its_fields_and_is_told_apart_by_its_name() {
        let text = call_event(&CallEventOut {
            name: CallEventName::PartyChanged,
            dn: "5001",
            switch: "pbx1",
            seq: 7,
            conn_id: "0123456789abcdef",
            previous_conn_id: Some("fedcba9876543210"),
            other_dn: None,
            call_state: CallState::Held,
            cause: Some("transfer"),
        });
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["message"], "EventPartyChanged");
        assert_eq!(v["thisDn"], "5001");
        assert_eq!(v["monitoredDn"], "5001");
        assert_eq!(v["eventSeq"], 7);
        assert_eq!(v["previousConnId"], "fedcba9876543210");
        assert_eq!(v["callState"], "held");
        assert_eq!(v["cause"], "transfer");
        assert!(v.get("otherDn").is_none());
        assert!(is_call_event(&text));
        assert!(!is_call_event(
            r#"{"message":"EventPrivateInfo","time":"x"}"#
        ));
        assert!(!is_call_event(r#"{"message":"EventRingingX"}"#));
        for n in CallEventName::ALL {
            assert!(is_call_event(&format!(
                "{{\"message\":\"{}\"}}",
                n.message()
            )));
        }
    }

    #[test]
    fn calls_are_a_plain_list_or_objects() {
        let plain = serde_json::to_value(Calls::ConnIds(vec!["a".into()])).unwrap();
        assert_eq!(plain, serde_json::json!(["a"]));
        let objects = serde_json::to_value(Calls::Objects(vec![CallView {
            conn_id: "a".into(),
            call_state: CallState::Ringing,
            other_dn: Some("4001".into()),
        }]))
        .unwrap();
        assert_eq!(
            objects,
            serde_json::json!([{"connId": "a", "callState": "ringing", "otherDn": "4001"}])
        );
    }
}
