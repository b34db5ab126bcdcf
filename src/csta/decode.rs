//! Each message's fields, read in one pass by the streaming reader (`reader.rs`).
//!
//! What is read, and which error is reported first when parts are missing, is the contract of
//! the module doc of [`super::message`]; every path below takes the *first* element of its
//! name at each step, as that contract has always been read.

use super::appsession::{is_root, AppSession, SessionError, SystemRegister};
use super::call::{CallEvent, CallEventKind, Connection, ConnectionChange};
use super::dialect::Dialect;
use super::message::{
    CstaError, DecodeError, HotDeskAction, HotDeskEvent, HotDeskRequest, HotDeskState, Message,
    ERROR_CATEGORIES,
};
use super::reader::Step::Name as N;
use super::reader::{List, Query, Scan, Step};

impl Message {
    /// Read a message from an XML document. The namespace and prefixes are ignored; only the
    /// account-code encoding is taken from the dialect. One pass over the bytes, with no tree:
    /// values are sliced from the document and copied once, into the message.
    pub fn decode(bytes: &[u8], d: &Dialect) -> Result<Message, DecodeError> {
        decode(bytes, d)
    }
}

/// See [`Message::decode`].
fn decode(bytes: &[u8], d: &Dialect) -> Result<Message, DecodeError> {
    let mut scan = Scan::new(bytes)?;
    let root = scan.root()?;
    let name: &str = &root;
    let empty = |scan: &mut Scan<'_>, m: Message| -> Result<Message, DecodeError> {
        scan.finish(&mut ())?;
        Ok(m)
    };
    match name {
        "RequestSystemStatus" => empty(&mut scan, Message::RequestSystemStatus),
        "RequestSystemStatusResponse" | "SystemStatus" => {
            let mut q = [Query::child("systemStatus")];
            scan.finish(&mut q)?;
            let status = q[0].take();
            if name == "SystemStatus" {
                return Ok(Message::SystemStatus { status });
            }
            Ok(Message::RequestSystemStatusResponse {
                status: status.ok_or(DecodeError::Missing {
                    message: "RequestSystemStatusResponse",
                    missing: "systemStatus",
                })?,
            })
        }
        "SystemStatusResponse" => empty(&mut scan, Message::SystemStatusResponse),
        "MonitorStart" => {
            let mut q = [Query::child("monitorObject")];
            scan.finish(&mut q)?;
            Ok(Message::MonitorStart {
                device: q[0].take().ok_or(DecodeError::Missing {
                    message: "MonitorStart",
                    missing: "monitorObject/deviceObject",
                })?,
            })
        }
        "MonitorStartResponse" | "MonitorStop" => {
            let mut q = [Query::child("monitorCrossRefID")];
            scan.finish(&mut q)?;
            let message = if name == "MonitorStop" {
                "MonitorStop"
            } else {
                "MonitorStartResponse"
            };
            let cross_ref = q[0].take().ok_or(DecodeError::Missing {
                message,
                missing: "monitorCrossRefID",
            })?;
            Ok(if name == "MonitorStop" {
                Message::MonitorStop { cross_ref }
            } else {
                Message::MonitorStartResponse { cross_ref }
            })
        }
        "MonitorStopResponse" => empty(&mut scan, Message::MonitorStopResponse),
        "Escape" | "EscapeService" => decode_escape(&mut scan),
        "EscapeResponse" | "EscapeServiceResponse" => empty(&mut scan, Message::EscapeResponse),
        "PrivateEvent" => decode_private_event(&mut scan),
        "CallInformationEvent" => decode_call_information(&mut scan, d),
        "AssociateData" => decode_associate_data(&mut scan, d),
        "AssociateDataResponse" => empty(&mut scan, Message::AssociateDataResponse),
        "CSTAErrorCode" => decode_error(&mut scan),
        name if is_root(name) => decode_session(&mut scan, name),
        name => match CallEventKind::from_root(name) {
            Some(kind) => decode_call(&mut scan, kind),
            None => {
                let name = name.to_owned();
                empty(&mut scan, Message::Other { name })
            }
        },
    }
}

/// `value`, or the error naming what is missing from `message`.
fn required(
    value: Option<String>,
    message: &'static str,
    missing: &'static str,
) -> Result<String, DecodeError> {
    value.ok_or(DecodeError::Missing { message, missing })
}

/// The queries of a hot-desk payload's three fields, under `privateData/private` directly
/// below the root (`[0..3]`) and under `extensions/privateData/private` (`[3..6]`); the first
/// of these two places that holds the payload is the one read.
fn payload_queries<'a>(payload: &'static str, fields: [&'static str; 3]) -> [Query<'a>; 6] {
    let at_root = |f| Query::new(&[N("privateData"), N("private"), N(payload), N(f)]);
    let in_ext = |f| {
        Query::new(&[
            N("extensions"),
            N("privateData"),
            N("private"),
            N(payload),
            N(f),
        ])
    };
    [
        at_root(fields[0]),
        at_root(fields[1]),
        at_root(fields[2]),
        in_ext(fields[0]),
        in_ext(fields[1]),
        in_ext(fields[2]),
    ]
}

/// The three fields of the payload that was found (`None`: no payload in either place).
fn payload_fields<'q, 'a>(q: &'q mut [Query<'a>; 6]) -> Option<&'q mut [Query<'a>]> {
    if q[0].reached(3) {
        Some(&mut q[0..3])
    } else if q[3].reached(4) {
        Some(&mut q[3..6])
    } else {
        None
    }
}

fn decode_escape(scan: &mut Scan<'_>) -> Result<Message, DecodeError> {
    let mut q = payload_queries(
        "guestAssociatedExtension",
        ["guestDevice", "action", "hostDevice"],
    );
    scan.finish(&mut q)?;
    let p = payload_fields(&mut q).ok_or(DecodeError::Missing {
        message: "Escape",
        missing: "privateData/private/guestAssociatedExtension",
    })?;
    let guest = required(p[0].take(), "Escape", "guestDevice")?;
    let action = match p[1].get() {
        Some("associate") => HotDeskAction::Associate {
            host: required(p[2].take(), "Escape", "hostDevice")?,
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

fn decode_private_event(scan: &mut Scan<'_>) -> Result<Message, DecodeError> {
    let mut q = (
        [Query::child("monitorCrossRefID")],
        payload_queries(
            "guestAssociatedEvent",
            ["state", "guestDevice", "hostDevice"],
        ),
    );
    scan.finish(&mut q)?;
    let cross_ref = q.0[0].take();
    let Some(p) = payload_fields(&mut q.1) else {
        // A private event of another vendor feature: not ours.
        return Ok(Message::Other {
            name: "PrivateEvent".to_owned(),
        });
    };
    let state = match p[0].get() {
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
    let guest = required(p[1].take(), "PrivateEvent", "guestDevice")?;
    Ok(Message::PrivateEvent {
        cross_ref,
        event: HotDeskEvent {
            state,
            guest,
            host: p[2].take(),
        },
    })
}

/// An account code in the dialect's encoding, from the value of `field`.
fn account_code(
    wire: Option<&str>,
    d: &Dialect,
    message: &'static str,
    field: &'static str,
) -> Result<String, DecodeError> {
    let wire = wire.ok_or(DecodeError::Missing {
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

/// The two queries of a connection element's `callID` and `deviceID`.
fn connection_queries<'a>(name: &'static str) -> [Query<'a>; 2] {
    [
        Query::new(&[N(name), N("callID")]),
        Query::new(&[N(name), N("deviceID")]),
    ]
}

fn connection(q: &mut [Query<'_>]) -> Connection {
    Connection {
        call_id: q[0].take(),
        device_id: q[1].take(),
    }
}

fn decode_call_information(scan: &mut Scan<'_>, d: &Dialect) -> Result<Message, DecodeError> {
    let [c0, c1] = connection_queries("connection");
    let mut q = [
        Query::child("accountInfo"),
        Query::child("monitorCrossRefID"),
        Query::child("device"),
        c0,
        c1,
    ];
    scan.finish(&mut q)?;
    let account_code = match q[0].get() {
        Some(wire) => Some(account_code(
            Some(wire),
            d,
            "CallInformationEvent",
            "accountInfo",
        )?),
        None => None,
    };
    Ok(Message::CallInformation {
        account_code,
        cross_ref: q[1].take(),
        connection: connection(&mut q[3..5]),
        device: q[2].take(),
    })
}

fn decode_associate_data(scan: &mut Scan<'_>, d: &Dialect) -> Result<Message, DecodeError> {
    let [c0, c1] = connection_queries("existingCall");
    let mut q = [Query::child("accountCode"), c0, c1];
    scan.finish(&mut q)?;
    Ok(Message::AssociateData {
        account_code: account_code(q[0].get(), d, "AssociateData", "accountCode")?,
        call: connection(&mut q[1..3]),
    })
}

fn decode_error(scan: &mut Scan<'_>) -> Result<Message, DecodeError> {
    let mut q = [Query::new(&[Step::OneOf(&ERROR_CATEGORIES)])];
    scan.finish(&mut q)?;
    let category = q[0].hit().ok_or(DecodeError::Missing {
        message: "CSTAErrorCode",
        missing: "an error category",
    })?;
    Ok(Message::Error(CstaError {
        category: category.to_owned(),
        value: q[0].take().unwrap_or_default(),
    }))
}

/// A call event of `kind` (every part optional: switches leave out what they like), with the
/// `transferredConnections` of a transfer (an item with neither connection is skipped).
fn decode_call(scan: &mut Scan<'_>, kind: CallEventKind) -> Result<Message, DecodeError> {
    let (_, conn, dev, other, _) = kind.layout();
    let [c0, c1] = connection_queries(conn);
    let optional = |name: Option<&'static str>| match name {
        Some(n) => Query::child(n),
        None => Query::new(&[]),
    };
    let mut changes = Vec::new();
    let [n0, n1] = connection_queries("newConnection");
    let [o0, o1] = connection_queries("oldConnection");
    let items = List::new(
        "transferredConnections",
        "connectionListItem",
        [o0, o1, n0, n1],
        |q: &mut [Query<'_>; 4]| {
            let old = q[0].reached(1).then(|| connection(&mut q[0..2]));
            let new = q[2].reached(1).then(|| connection(&mut q[2..4]));
            if old.is_some() || new.is_some() {
                changes.push(ConnectionChange { old, new });
            }
        },
    );
    let mut q = (
        [
            Query::child("monitorCrossRefID"),
            c0,
            c1,
            optional(dev),
            optional(other),
            Query::child("cause"),
        ],
        items,
    );
    scan.finish(&mut q)?;
    let (mut q, items) = q;
    drop(items);
    Ok(Message::Call(CallEvent {
        kind,
        cross_ref: q[0].take(),
        connection: connection(&mut q[1..3]),
        device: q[3].take(),
        other_device: q[4].take(),
        cause: q[5].take(),
        changes,
    }))
}

/// An ECMA-354 or system-register message (a root of that family we do not know is `Other`).
fn decode_session(scan: &mut Scan<'_>, name: &str) -> Result<Message, DecodeError> {
    let mut q = [
        Query::new(&[N("applicationInfo"), N("applicationID")]),
        Query::new(&[N("requestedProtocolVersions"), N("protocolVersion")]),
        Query::child("requestedSessionDuration"),
        Query::child("sessionID"),
        Query::child("actualProtocolVersion"),
        Query::child("actualSessionDuration"),
        Query::new(&[N("errorCode"), N("definedError")]),
        Query::new(&[N("errorCode"), Step::Any]),
        Query::child("sysStatRegisterID"),
    ];
    scan.finish(&mut q)?;
    let seconds = |q: &Query<'_>| q.get().and_then(|v| v.parse::<u32>().ok());
    let error = |q: &mut [Query<'_>; 9]| match q[6].take() {
        Some(v) => SessionError::Defined(v),
        None => SessionError::Private(q[7].take().unwrap_or_default()),
    };
    Ok(match name {
        "StartApplicationSession" => Message::AppSession(AppSession::Start {
            application_id: q[0].take().unwrap_or_default(),
            protocol_version: q[1].take().unwrap_or_default(),
            duration: seconds(&q[2]).unwrap_or(0),
        }),
        "StartApplicationSessionPosResponse" => Message::AppSession(AppSession::StartPos {
            session_id: q[3].take().unwrap_or_default(),
            protocol_version: q[4].take().filter(|v| !v.is_empty()),
            duration: seconds(&q[5]),
        }),
        "StartApplicationSessionNegResponse" => {
            Message::AppSession(AppSession::StartNeg(error(&mut q)))
        }
        "ResetApplicationSessionTimer" => Message::AppSession(AppSession::Reset {
            session_id: q[3].take().unwrap_or_default(),
            duration: seconds(&q[2]).unwrap_or(0),
        }),
        "ResetApplicationSessionTimerPosResponse" => Message::AppSession(AppSession::ResetPos {
            duration: seconds(&q[5]),
        }),
        "ResetApplicationSessionTimerNegResponse" => {
            Message::AppSession(AppSession::ResetNeg(error(&mut q)))
        }
        "StopApplicationSession" => Message::AppSession(AppSession::Stop {
            session_id: q[3].take().unwrap_or_default(),
        }),
        "StopApplicationSessionPosResponse" => Message::AppSession(AppSession::StopPos),
        "StopApplicationSessionNegResponse" => {
            Message::AppSession(AppSession::StopNeg(error(&mut q)))
        }
        "SystemRegister" => Message::SystemRegister(SystemRegister::Request),
        "SystemRegisterResponse" => Message::SystemRegister(SystemRegister::Response {
            register_id: q[8].take(),
        }),
        "SystemRegisterAbort" => Message::SystemRegister(SystemRegister::Abort {
            register_id: q[8].take(),
        }),
        name => Message::Other {
            name: name.to_owned(),
        },
    })
}
