//! The CSTA messages of the link profile (README, "The CSTA link"), written strictly and read tolerantly.
//!
//! # What we write
//!
//! Every document is compact: `<?xml version="1.0" encoding="UTF-8"?>`, then the root element
//! with `xmlns` = the dialect's CSTA namespace, then the children below in exactly this order,
//! with no whitespace between elements. Optional values are left out when absent. Texts are
//! XML-escaped.
//!
//! | message | children |
//! |---|---|
//! | `RequestSystemStatus`, `SystemStatusResponse`, `MonitorStopResponse`, `AssociateDataResponse`, `EscapeResponse` | none: written as `<Root xmlns="…"/>` |
//! | `RequestSystemStatusResponse`, `SystemStatus` | `systemStatus` |
//! | `MonitorStart` | `monitorObject/deviceObject` |
//! | `MonitorStartResponse` | `monitorCrossRefID` |
//! | `MonitorStop` | `monitorCrossRefID` |
//! | `Escape` (root from the dialect) | `privateData/private/guestAssociatedExtension` (`xmlns` = hot-desk namespace) with `action`, `guestDevice`, `hostDevice`; under `extensions/` when the dialect says so |
//! | `PrivateEvent` | `monitorCrossRefID`, then `privateData/private/guestAssociatedEvent` (`xmlns` = hot-desk namespace) with `state`, `guestDevice`, `hostDevice` |
//! | call events | `monitorCrossRefID`, the connection (`callID`, `deviceID`), the subject device and the other device (each as `<x><deviceIdentifier>…</deviceIdentifier></x>`), for a transfer with changed connections `transferredConnections` (one `connectionListItem` per change, `newConnection` then `oldConnection`, as the schema orders them), then `cause` when there is one — see [`CallEventKind`] |
//! | `CallInformationEvent` | `monitorCrossRefID`, `connection` (`callID`, `deviceID`), `device/deviceIdentifier`, `accountInfo` when there is a code |
//! | `AssociateData` | `existingCall` (`callID`, `deviceID`), `accountCode` |
//! | `CSTAErrorCode` | one element named by the category, whose text is the value |
//!
//! # What we read
//!
//! Elements by local name whatever the namespace or prefix; unknown elements ignored; the
//! escape root `Escape` or `EscapeService` (and their responses), with `privateData` under the
//! root or under `extensions`; both spellings of `systemResourceAvailability`; device values
//! either as text or wrapped (`deviceIdentifier`, with or without attributes); a call event's
//! `cause` as written and a transfer's `transferredConnections`; a `CallInformationEvent`
//! without `accountInfo` as call information with no account code (not an error). Devices are
//! kept as the switch wrote them (`N<+4989…>;noa=nk`, `<sip:…@host>`, DMCC IDs): the router
//! finds DNs in them with the switch's [`DeviceNaming`](super::device::DeviceNaming).
//! Attributes carry nothing we read but must be well-formed. A well-formed document whose root
//! we do not use is [`Message::Other`], never an error; one that is not well-formed is a
//! [`DecodeError::Xml`].

pub use super::call::{CallEvent, CallEventKind, Connection, ConnectionChange};

use super::call::encode_call;
use super::dialect::Dialect;
use super::xml::{XmlError, XmlOut, XmlWriter};

/// What a hot-desk escape asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HotDeskAction {
    /// Associate the guest with this host.
    Associate {
        /// The host device.
        host: String,
    },
    /// End the guest's association.
    Cancel,
}

/// The `guestAssociatedExtension` payload of an escape (private services 1 and 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotDeskRequest {
    /// The guest extension.
    pub guest: String,
    /// Associate or cancel.
    pub action: HotDeskAction,
}

/// The state reported by a `guestAssociatedEvent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HotDeskState {
    /// The association exists (private event 1).
    Established,
    /// The association ended (private event 2).
    Cancelled,
}

/// The `guestAssociatedEvent` payload of a private event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotDeskEvent {
    /// Established or cancelled.
    pub state: HotDeskState,
    /// The guest extension.
    pub guest: String,
    /// The host, when the switch says which.
    pub host: Option<String>,
}

/// A negative response (`CSTAErrorCode`): a category and a value, both as the switch wrote them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CstaError {
    /// The category element's local name, e.g. `operation`, `systemResourceAvailibility`.
    pub category: String,
    /// The value, e.g. `invalidDeviceID`.
    pub value: String,
}

impl CstaError {
    /// An error from its parts.
    pub fn new(category: impl Into<String>, value: impl Into<String>) -> CstaError {
        CstaError {
            category: category.into(),
            value: value.into(),
        }
    }

    /// The category with the schema's misspelling `systemResourceAvailibility` corrected, so
    /// that code matching on categories sees one spelling.
    pub fn canonical_category(&self) -> &str {
        if self.category == "systemResourceAvailibility" {
            "systemResourceAvailability"
        } else {
            &self.category
        }
    }
}

impl std::fmt::Display for CstaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.canonical_category(), self.value)
    }
}

/// One CSTA message, either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Asks the switch for its status (link start and keep-alive).
    RequestSystemStatus,
    /// The switch's status: `normal` or `enabled` means operational.
    RequestSystemStatusResponse {
        /// The `systemStatus` value.
        status: String,
    },
    /// The switch tells its status (a request from the switch; some send it on connect, and
    /// system registration reports status changes with it).
    SystemStatus {
        /// The `systemStatus` value; `None` when the element is missing (real peers send a
        /// self-closing `SystemStatus`): answered all the same.
        status: Option<String>,
    },
    /// Our answer to [`Message::SystemStatus`].
    SystemStatusResponse,
    /// Start monitoring a device.
    MonitorStart {
        /// The device.
        device: String,
    },
    /// The monitor started; events on it carry this cross-reference ID.
    MonitorStartResponse {
        /// The opaque `monitorCrossRefID`.
        cross_ref: String,
    },
    /// Stop a monitor.
    MonitorStop {
        /// The monitor's cross-reference ID.
        cross_ref: String,
    },
    /// The monitor stopped.
    MonitorStopResponse,
    /// A hot-desk escape (private services 1 and 2).
    Escape(HotDeskRequest),
    /// The switch accepted an escape.
    EscapeResponse,
    /// A hot-desk private event (private events 1 and 2).
    PrivateEvent {
        /// The monitor it was sent on.
        cross_ref: Option<String>,
        /// The payload.
        event: HotDeskEvent,
    },
    /// A call event.
    Call(CallEvent),
    /// An account code was entered at a device (private event 501).
    CallInformation {
        /// The monitor it was sent on.
        cross_ref: Option<String>,
        /// The call.
        connection: Connection,
        /// The device where the code was entered.
        device: Option<String>,
        /// The code, decoded per the dialect's `accode-encoding`; `None` when the event carries
        /// no `accountInfo` (the common case on some switches: call information without a
        /// code), which is then a call event like any other and no account-code event.
        account_code: Option<String>,
    },
    /// Set an account code on a call (private service 501).
    AssociateData {
        /// The call.
        call: Connection,
        /// The code (encoded per the dialect on the wire).
        account_code: String,
    },
    /// The switch accepted `AssociateData`.
    AssociateDataResponse,
    /// A negative response.
    Error(CstaError),
    /// An ECMA-354 application-session message (see [`super::appsession`]).
    AppSession(super::appsession::AppSession),
    /// A system-registration message (see [`super::appsession`]).
    SystemRegister(super::appsession::SystemRegister),
    /// A well-formed message we have no use for, named by its root.
    Other {
        /// The root element's local name.
        name: String,
    },
}

/// Why a frame's XML is not a message we can use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The XML itself is broken.
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// A message we know lacks a part we need.
    #[error("{message} lacks {missing}")]
    Missing {
        /// The root element.
        message: &'static str,
        /// What is missing.
        missing: &'static str,
    },
    /// A value is not one we understand.
    #[error("{message} has an invalid {field}: {value:?}")]
    Invalid {
        /// The root element.
        message: &'static str,
        /// The element.
        field: &'static str,
        /// What it said.
        value: String,
    },
}

/// The categories a `CSTAErrorCode` may name (both spellings of
/// `systemResourceAvailability`, as the schema itself has one of them).
pub const ERROR_CATEGORIES: [&str; 10] = [
    "operation",
    "security",
    "stateIncompatibility",
    "systemResourceAvailability",
    "systemResourceAvailibility",
    "subscribedResourceAvailability",
    "performanceManagement",
    "privateData",
    "unspecified",
    "privateErrorCode",
];

impl Message {
    /// A short name for logs and metrics (the root element we write, or would write with the
    /// default dialect).
    pub fn name(&self) -> &str {
        match self {
            Message::RequestSystemStatus => "RequestSystemStatus",
            Message::RequestSystemStatusResponse { .. } => "RequestSystemStatusResponse",
            Message::SystemStatus { .. } => "SystemStatus",
            Message::SystemStatusResponse => "SystemStatusResponse",
            Message::MonitorStart { .. } => "MonitorStart",
            Message::MonitorStartResponse { .. } => "MonitorStartResponse",
            Message::MonitorStop { .. } => "MonitorStop",
            Message::MonitorStopResponse => "MonitorStopResponse",
            Message::Escape(_) => "Escape",
            Message::EscapeResponse => "EscapeResponse",
            Message::PrivateEvent { .. } => "PrivateEvent",
            Message::Call(c) => c.kind.root(),
            Message::CallInformation { .. } => "CallInformationEvent",
            Message::AssociateData { .. } => "AssociateData",
            Message::AssociateDataResponse => "AssociateDataResponse",
            Message::Error(_) => "CSTAErrorCode",
            Message::AppSession(m) => m.name(),
            Message::SystemRegister(m) => m.name(),
            Message::Other { name } => name,
        }
    }

    /// The monitor cross-reference ID of an event, if it is one that carries it.
    pub fn cross_ref(&self) -> Option<&str> {
        match self {
            Message::PrivateEvent { cross_ref, .. }
            | Message::CallInformation { cross_ref, .. } => cross_ref.as_deref(),
            Message::Call(c) => c.cross_ref.as_deref(),
            _ => None,
        }
    }

    /// Write the message as an XML document in the given dialect.
    pub fn encode(&self, d: &Dialect) -> String {
        let mut out = String::with_capacity(256);
        self.encode_into(d, &mut out);
        out
    }

    /// Append the message as an XML document in the given dialect to `out`: a link reuses one
    /// buffer (a `String`, or its connection's write buffer) for every message it sends.
    pub fn encode_into<O: XmlOut + ?Sized>(&self, d: &Dialect, out: &mut O) {
        let ns = d.csta_namespace.as_str();
        match self {
            Message::RequestSystemStatus => XmlWriter::empty(out, "RequestSystemStatus", ns),
            Message::SystemStatusResponse => XmlWriter::empty(out, "SystemStatusResponse", ns),
            Message::MonitorStopResponse => XmlWriter::empty(out, "MonitorStopResponse", ns),
            Message::AssociateDataResponse => XmlWriter::empty(out, "AssociateDataResponse", ns),
            Message::EscapeResponse => XmlWriter::empty(out, d.escape_root.response(), ns),
            Message::RequestSystemStatusResponse { status } => {
                let mut w = XmlWriter::new(out, "RequestSystemStatusResponse", ns);
                w.leaf("systemStatus", status);
                w.finish("RequestSystemStatusResponse")
            }
            Message::SystemStatus { status } => {
                let mut w = XmlWriter::new(out, "SystemStatus", ns);
                w.opt_leaf("systemStatus", status.as_deref());
                w.finish("SystemStatus")
            }
            Message::MonitorStart { device } => {
                let mut w = XmlWriter::new(out, "MonitorStart", ns);
                w.open("monitorObject")
                    .leaf("deviceObject", device)
                    .close("monitorObject");
                w.finish("MonitorStart")
            }
            Message::MonitorStartResponse { cross_ref } => {
                let mut w = XmlWriter::new(out, "MonitorStartResponse", ns);
                w.leaf("monitorCrossRefID", cross_ref);
                w.finish("MonitorStartResponse")
            }
            Message::MonitorStop { cross_ref } => {
                let mut w = XmlWriter::new(out, "MonitorStop", ns);
                w.leaf("monitorCrossRefID", cross_ref);
                w.finish("MonitorStop")
            }
            Message::Escape(req) => encode_escape(req, d, out),
            Message::PrivateEvent { cross_ref, event } => {
                encode_private_event(cross_ref.as_deref(), event, d, out)
            }
            Message::Call(c) => encode_call(c, ns, out),
            Message::CallInformation {
                cross_ref,
                connection,
                device,
                account_code,
            } => {
                let mut w = XmlWriter::new(out, "CallInformationEvent", ns);
                w.opt_leaf("monitorCrossRefID", cross_ref.as_deref());
                connection.write(&mut w, "connection");
                if let Some(device) = device {
                    w.open("device")
                        .leaf("deviceIdentifier", device)
                        .close("device");
                }
                if let Some(code) = account_code {
                    account_code_leaf(&mut w, "accountInfo", code, d);
                }
                w.finish("CallInformationEvent")
            }
            Message::AssociateData { call, account_code } => {
                let mut w = XmlWriter::new(out, "AssociateData", ns);
                call.write(&mut w, "existingCall");
                account_code_leaf(&mut w, "accountCode", account_code, d);
                w.finish("AssociateData")
            }
            Message::Error(e) => {
                let mut w = XmlWriter::new(out, "CSTAErrorCode", ns);
                w.leaf(&e.category, &e.value);
                w.finish("CSTAErrorCode")
            }
            Message::AppSession(m) => m.encode_into(out),
            Message::SystemRegister(m) => m.encode_into(d, out),
            Message::Other { name } => XmlWriter::empty(out, name, ns),
        }
    }
}

/// `<name>code</name>`, the code in the dialect's account-code encoding.
fn account_code_leaf<O: XmlOut + ?Sized>(
    w: &mut XmlWriter<'_, O>,
    name: &str,
    code: &str,
    d: &Dialect,
) {
    w.open(name);
    match d.accode_encoding {
        super::dialect::AccodeEncoding::Text => {
            w.text(code);
        }
        super::dialect::AccodeEncoding::Hex => {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            for b in code.bytes() {
                let pair = [HEX[(b >> 4) as usize], HEX[(b & 0x0f) as usize]];
                // Two ASCII hex digits.
                if let Ok(s) = std::str::from_utf8(&pair) {
                    w.raw(s);
                }
            }
        }
    }
    w.close(name);
}

/// The hot-desk request in an `Escape` (or `EscapeService`).
fn encode_escape<O: XmlOut + ?Sized>(req: &HotDeskRequest, d: &Dialect, out: &mut O) {
    let root = d.escape_root.request();
    let mut w = XmlWriter::new(out, root, &d.csta_namespace);
    open_private(&mut w, d);
    w.open_ns("guestAssociatedExtension", &d.hotdesk_namespace);
    match &req.action {
        HotDeskAction::Associate { host } => {
            w.leaf("action", "associate")
                .leaf("guestDevice", &req.guest)
                .leaf("hostDevice", host);
        }
        HotDeskAction::Cancel => {
            w.leaf("action", "cancel").leaf("guestDevice", &req.guest);
        }
    }
    w.close("guestAssociatedExtension");
    close_private(&mut w, d);
    w.finish(root)
}

/// A hot-desk `PrivateEvent`.
fn encode_private_event<O: XmlOut + ?Sized>(
    cross_ref: Option<&str>,
    event: &HotDeskEvent,
    d: &Dialect,
    out: &mut O,
) {
    let mut w = XmlWriter::new(out, "PrivateEvent", &d.csta_namespace);
    w.opt_leaf("monitorCrossRefID", cross_ref);
    open_private(&mut w, d);
    w.open_ns("guestAssociatedEvent", &d.hotdesk_namespace);
    w.leaf(
        "state",
        match event.state {
            HotDeskState::Established => "established",
            HotDeskState::Cancelled => "cancelled",
        },
    );
    w.leaf("guestDevice", &event.guest);
    w.opt_leaf("hostDevice", event.host.as_deref());
    w.close("guestAssociatedEvent");
    close_private(&mut w, d);
    w.finish("PrivateEvent")
}

fn open_private<O: XmlOut + ?Sized>(w: &mut XmlWriter<'_, O>, d: &Dialect) {
    if d.private_data == super::dialect::PrivateDataPosition::Extensions {
        w.open("extensions");
    }
    w.open("privateData").open("private");
}

fn close_private<O: XmlOut + ?Sized>(w: &mut XmlWriter<'_, O>, d: &Dialect) {
    w.close("private").close("privateData");
    if d.private_data == super::dialect::PrivateDataPosition::Extensions {
        w.close("extensions");
    }
}
