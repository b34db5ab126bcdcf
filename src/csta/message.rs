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

use super::call::{decode_call, encode_call};
use super::dialect::Dialect;
use super::xml::{Element, XmlError, XmlWriter};

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
    /// The switch tells its status (a request from the switch; some send it on connect).
    SystemStatus {
        /// The `systemStatus` value.
        status: String,
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
        let ns = d.csta_namespace.as_str();
        match self {
            Message::RequestSystemStatus => XmlWriter::empty("RequestSystemStatus", ns),
            Message::SystemStatusResponse => XmlWriter::empty("SystemStatusResponse", ns),
            Message::MonitorStopResponse => XmlWriter::empty("MonitorStopResponse", ns),
            Message::AssociateDataResponse => XmlWriter::empty("AssociateDataResponse", ns),
            Message::EscapeResponse => XmlWriter::empty(d.escape_root.response(), ns),
            Message::RequestSystemStatusResponse { status } => {
                let mut w = XmlWriter::new("RequestSystemStatusResponse", ns);
                w.leaf("systemStatus", status);
                w.finish("RequestSystemStatusResponse")
            }
            Message::SystemStatus { status } => {
                let mut w = XmlWriter::new("SystemStatus", ns);
                w.leaf("systemStatus", status);
                w.finish("SystemStatus")
            }
            Message::MonitorStart { device } => {
                let mut w = XmlWriter::new("MonitorStart", ns);
                w.open("monitorObject")
                    .leaf("deviceObject", device)
                    .close("monitorObject");
                w.finish("MonitorStart")
            }
            Message::MonitorStartResponse { cross_ref } => {
                let mut w = XmlWriter::new("MonitorStartResponse", ns);
                w.leaf("monitorCrossRefID", cross_ref);
                w.finish("MonitorStartResponse")
            }
            Message::MonitorStop { cross_ref } => {
                let mut w = XmlWriter::new("MonitorStop", ns);
                w.leaf("monitorCrossRefID", cross_ref);
                w.finish("MonitorStop")
            }
            Message::Escape(req) => encode_escape(req, d),
            Message::PrivateEvent { cross_ref, event } => {
                encode_private_event(cross_ref.as_deref(), event, d)
            }
            Message::Call(c) => encode_call(c, ns),
            Message::CallInformation {
                cross_ref,
                connection,
                device,
                account_code,
            } => {
                let mut w = XmlWriter::new("CallInformationEvent", ns);
                w.opt_leaf("monitorCrossRefID", cross_ref.as_deref());
                connection.write(&mut w, "connection");
                if let Some(device) = device {
                    w.open("device")
                        .leaf("deviceIdentifier", device)
                        .close("device");
                }
                if let Some(code) = account_code {
                    w.leaf("accountInfo", &d.accode_encoding.encode(code));
                }
                w.finish("CallInformationEvent")
            }
            Message::AssociateData { call, account_code } => {
                let mut w = XmlWriter::new("AssociateData", ns);
                call.write(&mut w, "existingCall");
                w.leaf("accountCode", &d.accode_encoding.encode(account_code));
                w.finish("AssociateData")
            }
            Message::Error(e) => {
                let mut w = XmlWriter::new("CSTAErrorCode", ns);
                w.leaf(&e.category, &e.value);
                w.finish("CSTAErrorCode")
            }
            Message::Other { name } => XmlWriter::empty(name, ns),
        }
    }

    /// Read a message from an XML document. The namespace and prefixes are ignored; only the
    /// account-code encoding is taken from the dialect.
    pub fn decode(bytes: &[u8], d: &Dialect) -> Result<Message, DecodeError> {
        let root = Element::parse(bytes)?;
        Message::from_element(&root, d)
    }

    fn from_element(root: &Element, d: &Dialect) -> Result<Message, DecodeError> {
        let status = |message: &'static str| {
            root.child_value("systemStatus")
                .map(str::to_owned)
                .ok_or(DecodeError::Missing {
                    message,
                    missing: "systemStatus",
                })
        };
        let cross_ref = || root.child_value("monitorCrossRefID").map(str::to_owned);
        Ok(match root.name.as_str() {
            "RequestSystemStatus" => Message::RequestSystemStatus,
            "RequestSystemStatusResponse" => Message::RequestSystemStatusResponse {
                status: status("RequestSystemStatusResponse")?,
            },
            "SystemStatus" => Message::SystemStatus {
                status: status("SystemStatus")?,
            },
            "SystemStatusResponse" => Message::SystemStatusResponse,
            "MonitorStart" => Message::MonitorStart {
                device: root
                    .child("monitorObject")
                    .and_then(Element::value)
                    .map(str::to_owned)
                    .ok_or(DecodeError::Missing {
                        message: "MonitorStart",
                        missing: "monitorObject/deviceObject",
                    })?,
            },
            "MonitorStartResponse" => Message::MonitorStartResponse {
                cross_ref: cross_ref().ok_or(DecodeError::Missing {
                    message: "MonitorStartResponse",
                    missing: "monitorCrossRefID",
                })?,
            },
            "MonitorStop" => Message::MonitorStop {
                cross_ref: cross_ref().ok_or(DecodeError::Missing {
                    message: "MonitorStop",
                    missing: "monitorCrossRefID",
                })?,
            },
            "MonitorStopResponse" => Message::MonitorStopResponse,
            "Escape" | "EscapeService" => decode_escape(root)?,
            "EscapeResponse" | "EscapeServiceResponse" => Message::EscapeResponse,
            "PrivateEvent" => decode_private_event(root)?,
            "CallInformationEvent" => decode_call_information(root, d)?,
            "AssociateData" => decode_associate_data(root, d)?,
            "AssociateDataResponse" => Message::AssociateDataResponse,
            "CSTAErrorCode" => decode_error(root)?,
            name => match CallEventKind::from_root(name) {
                Some(kind) => Message::Call(decode_call(kind, root)),
                None => Message::Other {
                    name: name.to_owned(),
                },
            },
        })
    }
}

/// The hot-desk request in an `Escape` (or `EscapeService`).
fn encode_escape(req: &HotDeskRequest, d: &Dialect) -> String {
    let root = d.escape_root.request();
    let mut w = XmlWriter::new(root, &d.csta_namespace);
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
fn encode_private_event(cross_ref: Option<&str>, event: &HotDeskEvent, d: &Dialect) -> String {
    let mut w = XmlWriter::new("PrivateEvent", &d.csta_namespace);
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

/// `value`, or the error naming what is missing from `message`.
fn required(
    value: Option<&str>,
    message: &'static str,
    missing: &'static str,
) -> Result<String, DecodeError> {
    value
        .map(str::to_owned)
        .ok_or(DecodeError::Missing { message, missing })
}

fn decode_escape(root: &Element) -> Result<Message, DecodeError> {
    let payload =
        private_payload(root, "guestAssociatedExtension").ok_or(DecodeError::Missing {
            message: "Escape",
            missing: "privateData/private/guestAssociatedExtension",
        })?;
    let guest = required(payload.child_value("guestDevice"), "Escape", "guestDevice")?;
    let action = match payload.child_value("action") {
        Some("associate") => HotDeskAction::Associate {
            host: required(payload.child_value("hostDevice"), "Escape", "hostDevice")?,
        },
        Some("cancel") => HotDeskAction::Cancel,
        other => {
            return Err(DecodeError::Invalid {
                message: "Escape",
                field: "action",
                value: other.unwrap_or_default().to_owned(),
            })
        }
    };
    Ok(Message::Escape(HotDeskRequest { guest, action }))
}

fn decode_private_event(root: &Element) -> Result<Message, DecodeError> {
    let Some(payload) = private_payload(root, "guestAssociatedEvent") else {
        // A private event of another vendor feature: not ours.
        return Ok(Message::Other {
            name: root.name.clone(),
        });
    };
    let state = match payload.child_value("state") {
        Some("established") => HotDeskState::Established,
        Some("cancelled") | Some("canceled") => HotDeskState::Cancelled,
        other => {
            return Err(DecodeError::Invalid {
                message: "PrivateEvent",
                field: "state",
                value: other.unwrap_or_default().to_owned(),
            })
        }
    };
    let guest = required(
        payload.child_value("guestDevice"),
        "PrivateEvent",
        "guestDevice",
    )?;
    Ok(Message::PrivateEvent {
        cross_ref: root.child_value("monitorCrossRefID").map(str::to_owned),
        event: HotDeskEvent {
            state,
            guest,
            host: payload.child_value("hostDevice").map(str::to_owned),
        },
    })
}

/// An account code in the dialect's encoding.
fn account_code(
    root: &Element,
    d: &Dialect,
    message: &'static str,
    field: &'static str,
) -> Result<String, DecodeError> {
    let wire = root.child_value(field).ok_or(DecodeError::Missing {
        message,
        missing: field,
    })?;
    d.accode_encoding
        .decode(wire)
        .ok_or_else(|| DecodeError::Invalid {
            message,
            field,
            value: wire.to_owned(),
        })
}

fn decode_call_information(root: &Element, d: &Dialect) -> Result<Message, DecodeError> {
    let account_code = match root.child_value("accountInfo") {
        Some(_) => Some(account_code(
            root,
            d,
            "CallInformationEvent",
            "accountInfo",
        )?),
        None => None,
    };
    Ok(Message::CallInformation {
        account_code,
        cross_ref: root.child_value("monitorCrossRefID").map(str::to_owned),
        connection: root
            .child("connection")
            .map(Connection::read)
            .unwrap_or_default(),
        device: root.child_value("device").map(str::to_owned),
    })
}

fn decode_associate_data(root: &Element, d: &Dialect) -> Result<Message, DecodeError> {
    Ok(Message::AssociateData {
        account_code: account_code(root, d, "AssociateData", "accountCode")?,
        call: root
            .child("existingCall")
            .map(Connection::read)
            .unwrap_or_default(),
    })
}

fn decode_error(root: &Element) -> Result<Message, DecodeError> {
    let e = root
        .children
        .iter()
        .find(|c| ERROR_CATEGORIES.contains(&c.name.as_str()))
        .ok_or(DecodeError::Missing {
            message: "CSTAErrorCode",
            missing: "an error category",
        })?;
    Ok(Message::Error(CstaError {
        category: e.name.clone(),
        value: e.value().unwrap_or_default().to_owned(),
    }))
}

/// The named payload under `privateData/private`, directly under the root or under
/// `extensions`, whichever the switch used.
fn private_payload<'a>(root: &'a Element, payload: &str) -> Option<&'a Element> {
    [
        root.path(&["privateData", "private"]),
        root.path(&["extensions", "privateData", "private"]),
    ]
    .into_iter()
    .flatten()
    .find_map(|p| p.child(payload))
}

fn open_private(w: &mut XmlWriter, d: &Dialect) {
    if d.private_data == super::dialect::PrivateDataPosition::Extensions {
        w.open("extensions");
    }
    w.open("privateData").open("private");
}

fn close_private(w: &mut XmlWriter, d: &Dialect) {
    w.close("private").close("privateData");
    if d.private_data == super::dialect::PrivateDataPosition::Extensions {
        w.close("extensions");
    }
}
