//! The reference reader: the CSTA reader as it was before the streaming one, kept for tests
//! only. It parses a document into a tree of owned elements and reads each message's fields
//! from the tree. The differential tests decode every fixture with it and with
//! `Message::decode` and require the same result; the micro-benchmarks time it beside the
//! streaming reader.
#![allow(dead_code)]

use csta_router::csta::message::ERROR_CATEGORIES;
use csta_router::csta::xml::{XmlError, MAX_DEPTH};
use csta_router::csta::{
    AppSession, CallEvent, CallEventKind, Connection, ConnectionChange, CstaError, DecodeError,
    Dialect, HotDeskAction, HotDeskEvent, HotDeskRequest, HotDeskState, Message, SessionError,
    SystemRegister,
};
use quick_xml::events::Event;
use quick_xml::Reader;

/// Read a message as the reference reader does.
pub fn decode(bytes: &[u8], d: &Dialect) -> Result<Message, DecodeError> {
    let root = Element::parse(bytes)?;
    from_element(&root, d)
}

/// One element: its local name, its child elements and its text (concatenated, trimmed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    /// The local name (no prefix).
    pub name: String,
    /// Child elements, in document order.
    pub children: Vec<Element>,
    /// The element's own text content, trimmed of surrounding whitespace.
    pub text: String,
}

impl Element {
    /// Parse a document into its root element.
    pub fn parse(bytes: &[u8]) -> Result<Element, XmlError> {
        let text = std::str::from_utf8(bytes).map_err(|_| XmlError::NotUtf8)?;
        let mut reader = Reader::from_str(text);
        let config = reader.config_mut();
        config.check_end_names = true;
        config.expand_empty_elements = false;
        let mut stack: Vec<Element> = Vec::new();
        let mut root: Option<Element> = None;
        loop {
            let event = reader
                .read_event()
                .map_err(|e| XmlError::Malformed(e.to_string()))?;
            match event {
                Event::Start(start) => {
                    check_attributes(&start)?;
                    if root.is_some() {
                        return Err(XmlError::Malformed("content after the root element".into()));
                    }
                    if stack.len() >= MAX_DEPTH {
                        return Err(XmlError::TooDeep);
                    }
                    stack.push(Element {
                        name: start.local_name().as_ref().to_owned(),
                        ..Element::default()
                    });
                }
                Event::Empty(start) => {
                    check_attributes(&start)?;
                    if root.is_some() {
                        return Err(XmlError::Malformed("content after the root element".into()));
                    }
                    if stack.len() >= MAX_DEPTH {
                        return Err(XmlError::TooDeep);
                    }
                    let element = Element {
                        name: start.local_name().as_ref().to_owned(),
                        ..Element::default()
                    };
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(element),
                        None => root = Some(element),
                    }
                }
                Event::End(_) => {
                    let mut element = stack
                        .pop()
                        .ok_or_else(|| XmlError::Malformed("unexpected end tag".into()))?;
                    let trimmed = element.text.trim();
                    if trimmed.len() != element.text.len() {
                        element.text = trimmed.to_owned();
                    }
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(element),
                        None => root = Some(element),
                    }
                }
                Event::Text(t) => {
                    let s = t.xml10_content();
                    match stack.last_mut() {
                        Some(top) => top.text.push_str(&s),
                        None if s.trim().is_empty() => {}
                        None => {
                            return Err(XmlError::Malformed("text outside the root element".into()))
                        }
                    }
                }
                Event::CData(c) => {
                    let s = c.xml10_content();
                    if let Some(top) = stack.last_mut() {
                        top.text.push_str(&s);
                    }
                }
                Event::GeneralRef(r) => {
                    let resolved = match r.resolve_char_ref() {
                        Ok(Some(ch)) => ch.to_string(),
                        _ => {
                            let name = r.xml10_content();
                            quick_xml::escape::resolve_predefined_entity(&name)
                                .map(str::to_owned)
                                .ok_or_else(|| {
                                    XmlError::Malformed(format!("unknown entity &{name};"))
                                })?
                        }
                    };
                    if let Some(top) = stack.last_mut() {
                        top.text.push_str(&resolved);
                    }
                }
                Event::Eof => break,
                // Declarations, comments, processing instructions, DOCTYPE: nothing to read.
                _ => {}
            }
        }
        if !stack.is_empty() {
            return Err(XmlError::Malformed(
                "the document ends inside an element".into(),
            ));
        }
        root.ok_or(XmlError::Empty)
    }

    /// The first child with this local name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Follow a path of local names from this element.
    pub fn path(&self, names: &[&str]) -> Option<&Element> {
        let mut at = self;
        for name in names {
            at = at.child(name)?;
        }
        Some(at)
    }

    /// The first element with this local name at any depth below this one (breadth-first).
    pub fn find(&self, name: &str) -> Option<&Element> {
        let mut queue: std::collections::VecDeque<&Element> = self.children.iter().collect();
        while let Some(e) = queue.pop_front() {
            if e.name == name {
                return Some(e);
            }
            queue.extend(e.children.iter());
        }
        None
    }

    /// This element's value, tolerant of wrappers: its own text when it has any, else the
    /// value of its first child that has one. So `<device>5001</device>` and
    /// `<device><deviceIdentifier>5001</deviceIdentifier></device>` both read as `5001`.
    pub fn value(&self) -> Option<&str> {
        if !self.text.is_empty() {
            return Some(&self.text);
        }
        self.children.iter().find_map(Element::value)
    }

    /// The value of the child with this local name, if present and not empty.
    pub fn child_value(&self, name: &str) -> Option<&str> {
        self.child(name).and_then(Element::value)
    }
}

/// Attributes carry nothing we read, but a document whose attributes are not well-formed
/// (`a="1"b="2"`, a duplicate, a missing quote) is not XML, and is refused like any other.
fn check_attributes(start: &quick_xml::events::BytesStart<'_>) -> Result<(), XmlError> {
    for attribute in start.attributes() {
        attribute.map_err(|e| XmlError::Malformed(e.to_string()))?;
    }
    // The parser above does not insist on whitespace between attributes: XML does.
    let raw = start.attributes_raw().as_bytes();
    let mut quote: Option<u8> = None;
    for (i, &b) in raw.iter().enumerate() {
        match quote {
            Some(q) if b == q => {
                quote = None;
                let next = raw.get(i + 1).copied();
                if !matches!(next, None | Some(b' ' | b'\t' | b'\n' | b'\r' | b'/')) {
                    return Err(XmlError::Malformed(
                        "no whitespace between two attributes".into(),
                    ));
                }
            }
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None => {}
        }
    }
    Ok(())
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
            status: root.child_value("systemStatus").map(str::to_owned),
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
        name if is_root(name) => decode_session(root),
        name => match from_root(name) {
            Some(kind) => Message::Call(decode_call(kind, root)),
            None => Message::Other {
                name: name.to_owned(),
            },
        },
    })
}

/// Whether `root` names an ECMA-354 or system-register message.
fn is_root(root: &str) -> bool {
    root.contains("ApplicationSession") || root.starts_with("SystemRegister")
}

/// An ECMA-354 or system-register message (a root of that family we do not know is `Other`).
fn decode_session(root: &Element) -> Message {
    app_session(root)
        .map(Message::AppSession)
        .or_else(|| system_register(root).map(Message::SystemRegister))
        .unwrap_or_else(|| Message::Other {
            name: root.name.clone(),
        })
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
            .map(read_connection)
            .unwrap_or_default(),
        device: root.child_value("device").map(str::to_owned),
    })
}

fn decode_associate_data(root: &Element, d: &Dialect) -> Result<Message, DecodeError> {
    Ok(Message::AssociateData {
        account_code: account_code(root, d, "AssociateData", "accountCode")?,
        call: root
            .child("existingCall")
            .map(read_connection)
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

fn read_connection(e: &Element) -> Connection {
    Connection {
        call_id: e.child_value("callID").map(str::to_owned),
        device_id: e.child_value("deviceID").map(str::to_owned),
    }
}

/// The `transferredConnections` of a transfer (an item with neither connection is skipped).
fn read_changes(root: &Element) -> Vec<ConnectionChange> {
    let Some(list) = root.child("transferredConnections") else {
        return Vec::new();
    };
    list.children
        .iter()
        .filter(|item| item.name == "connectionListItem")
        .map(|item| ConnectionChange {
            old: item.child("oldConnection").map(read_connection),
            new: item.child("newConnection").map(read_connection),
        })
        .filter(|c| c.old.is_some() || c.new.is_some())
        .collect()
}

/// A call event of `kind` read from its document (every part optional: switches leave out
/// what they like).
fn decode_call(kind: CallEventKind, root: &Element) -> CallEvent {
    let (conn, dev, other) = layout(kind);
    CallEvent {
        kind,
        cross_ref: root.child_value("monitorCrossRefID").map(str::to_owned),
        connection: root.child(conn).map(read_connection).unwrap_or_default(),
        device: dev.and_then(|n| root.child_value(n)).map(str::to_owned),
        other_device: other.and_then(|n| root.child_value(n)).map(str::to_owned),
        cause: root.child_value("cause").map(str::to_owned),
        changes: read_changes(root),
    }
}

fn session_error(root: &Element) -> SessionError {
    let code = root.child("errorCode");
    match code.and_then(|c| c.child_value("definedError")) {
        Some(v) => SessionError::Defined(v.to_owned()),
        None => SessionError::Private(
            code.and_then(|c| c.children.first())
                .and_then(Element::value)
                .unwrap_or_default()
                .to_owned(),
        ),
    }
}

/// Read an ECMA-354 message whose root is `root`; `None` when the root is not one.
fn app_session(root: &Element) -> Option<AppSession> {
    let text = |name: &str| root.child_value(name).map(str::to_owned);
    let seconds = |name: &str| root.child_value(name).and_then(|v| v.parse::<u32>().ok());
    Some(match root.name.as_str() {
        "StartApplicationSession" => AppSession::Start {
            application_id: root
                .path(&["applicationInfo", "applicationID"])
                .and_then(Element::value)
                .unwrap_or_default()
                .to_owned(),
            protocol_version: root
                .path(&["requestedProtocolVersions", "protocolVersion"])
                .and_then(Element::value)
                .unwrap_or_default()
                .to_owned(),
            duration: seconds("requestedSessionDuration").unwrap_or(0),
        },
        "StartApplicationSessionPosResponse" => AppSession::StartPos {
            session_id: text("sessionID").unwrap_or_default(),
            protocol_version: text("actualProtocolVersion").filter(|v| !v.is_empty()),
            duration: seconds("actualSessionDuration"),
        },
        "StartApplicationSessionNegResponse" => AppSession::StartNeg(session_error(root)),
        "ResetApplicationSessionTimer" => AppSession::Reset {
            session_id: text("sessionID").unwrap_or_default(),
            duration: seconds("requestedSessionDuration").unwrap_or(0),
        },
        "ResetApplicationSessionTimerPosResponse" => AppSession::ResetPos {
            duration: seconds("actualSessionDuration"),
        },
        "ResetApplicationSessionTimerNegResponse" => AppSession::ResetNeg(session_error(root)),
        "StopApplicationSession" => AppSession::Stop {
            session_id: text("sessionID").unwrap_or_default(),
        },
        "StopApplicationSessionPosResponse" => AppSession::StopPos,
        "StopApplicationSessionNegResponse" => AppSession::StopNeg(session_error(root)),
        _ => return None,
    })
}

/// Read a system-register message whose root is `root`; `None` when it is not one.
fn system_register(root: &Element) -> Option<SystemRegister> {
    let register_id = root.child_value("sysStatRegisterID").map(str::to_owned);
    Some(match root.name.as_str() {
        "SystemRegister" => SystemRegister::Request,
        "SystemRegisterResponse" => SystemRegister::Response { register_id },
        "SystemRegisterAbort" => SystemRegister::Abort { register_id },
        _ => return None,
    })
}

/// A call event kind's root.
fn from_root(root: &str) -> Option<CallEventKind> {
    if root == "TransferredEvent" {
        return Some(CallEventKind::Transferred);
    }
    CallEventKind::ALL.into_iter().find(|k| k.root() == root)
}

/// (connection element, subject device element, other device element) of each kind, as
/// ECMA-323 names them.
fn layout(kind: CallEventKind) -> (&'static str, Option<&'static str>, Option<&'static str>) {
    use CallEventKind::*;
    match kind {
        ServiceInitiated => ("initiatedConnection", Some("initiatingDevice"), None),
        Originated => (
            "originatedConnection",
            Some("callingDevice"),
            Some("calledDevice"),
        ),
        Delivered => ("connection", Some("alertingDevice"), Some("callingDevice")),
        Established => (
            "establishedConnection",
            Some("answeringDevice"),
            Some("callingDevice"),
        ),
        ConnectionCleared => ("droppedConnection", Some("releasingDevice"), None),
        CallCleared => ("clearedCall", None, None),
        Held => ("heldConnection", Some("holdingDevice"), None),
        Retrieved => ("retrievedConnection", Some("retrievingDevice"), None),
        Transferred => (
            "primaryOldCall",
            Some("transferringDevice"),
            Some("transferredToDevice"),
        ),
        Diverted => (
            "connection",
            Some("divertingDevice"),
            Some("newDestination"),
        ),
    }
}
