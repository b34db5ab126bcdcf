//! Client protocol v1 (SPEC section 3): JSON objects over WebSocket text frames.
//!
//! Reading is strict about what it needs and lenient about the rest: a request must be a JSON
//! object with a string `message` and (for requests) a positive integer `referenceId`; fields it
//! does not know are ignored. Every reading failure becomes a [`ProtocolError`] carrying the
//! error code and a sentence for the person who wrote the client.
//!
//! Writing: [`Outgoing`] builds the JSON of every message the router sends, with `time` in
//! RFC 3339 UTC milliseconds. Events are serialized once and the resulting bytes shared by all
//! their recipients ([`SharedText`]).

use bytestring::ByteString;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::SystemTime;

/// Bytes of one serialized message, cheap to clone (reference-counted), ready to be written as
/// a WebSocket text frame to any number of clients.
pub type SharedText = ByteString;

/// The T-Library compatible error codes of SPEC section 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorCode {
    /// 41: private service on a DN not registered in share mode; unregistering an unknown DN.
    NotRegistered = 41,
    /// 42: the guest or host is already associated.
    ResourceSeized = 42,
    /// 43: no association to cancel.
    InSameState = 43,
    /// 50: the switch rejected the request for another reason.
    UnknownError = 50,
    /// 51: unknown privateMsgId or message; account codes switched off.
    UnsupOper = 51,
    /// 52: a fault inside the router.
    Internal = 52,
    /// 53: a missing or malformed field.
    InvalidAttr = 53,
    /// 54: the switch has no operational link.
    NoSwitch = 54,
    /// 55: unsupported protocol version.
    ProtoVers = 55,
    /// 56: unknown connId, or no active call.
    InvConnId = 56,
    /// 57: the switch did not answer in time.
    Timeout = 57,
    /// 58: the device or a resource is out of service.
    OutOfService = 58,
    /// 59: the DN is in no DN plan, or the switch does not know it.
    NotConfigured = 59,
    /// 111: overload.
    TooManyReq = 111,
}

impl ErrorCode {
    /// Every code, for metrics that export them at 0.
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::NotRegistered,
        ErrorCode::ResourceSeized,
        ErrorCode::InSameState,
        ErrorCode::UnknownError,
        ErrorCode::UnsupOper,
        ErrorCode::Internal,
        ErrorCode::InvalidAttr,
        ErrorCode::NoSwitch,
        ErrorCode::ProtoVers,
        ErrorCode::InvConnId,
        ErrorCode::Timeout,
        ErrorCode::OutOfService,
        ErrorCode::NotConfigured,
        ErrorCode::TooManyReq,
    ];

    /// The numeric code.
    pub fn code(self) -> u32 {
        self as u32
    }
}

/// A request that could not be read, or a request refused before it reached a switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    /// The request's `referenceId`, 0 when it could not be read.
    pub reference_id: u64,
    /// The error code.
    pub code: ErrorCode,
    /// What went wrong, for a person.
    pub message: String,
    /// The DN, when the request named one.
    pub this_dn: Option<String>,
}

impl ProtocolError {
    /// An error for a request.
    pub fn new(reference_id: u64, code: ErrorCode, message: impl Into<String>) -> ProtocolError {
        ProtocolError {
            reference_id,
            code,
            message: message.into(),
            this_dn: None,
        }
    }

    /// The same error, naming the DN.
    pub fn dn(mut self, dn: &str) -> ProtocolError {
        self.this_dn = Some(dn.to_owned());
        self
    }
}

/// Register mode of a DN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterMode {
    /// May request private services and receives events.
    Share,
    /// Receives events only.
    Monitor,
}

impl RegisterMode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RegisterMode::Share => "share",
            RegisterMode::Monitor => "monitor",
        }
    }
}

/// A request from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `RequestOpen`.
    Open {
        /// `protocolVersion`.
        protocol_version: u64,
        /// `application`.
        application: String,
        /// `token`.
        token: Option<String>,
    },
    /// `RequestRegisterAddress`.
    Register {
        /// `thisDn`.
        dn: String,
        /// `registerMode`.
        mode: RegisterMode,
    },
    /// `RequestUnregisterAddress`.
    Unregister {
        /// `thisDn`.
        dn: String,
    },
    /// `RequestPrivateService`.
    PrivateService {
        /// `thisDn`.
        dn: String,
        /// `privateMsgId`.
        msg_id: u64,
        /// `connId`.
        conn_id: Option<String>,
        /// `extensions` (string values only).
        extensions: BTreeMap<String, String>,
    },
    /// `RequestQueryAddress`.
    QueryAddress {
        /// `thisDn`.
        dn: String,
    },
    /// `RequestQueryServer`.
    QueryServer,
}

/// The longest DN accepted (longer ones cannot be in any DN plan and are refused early).
pub const MAX_DN_LEN: usize = 64;

/// Read one text frame as a request: `(referenceId, request)`.
pub fn parse_request(text: &str) -> Result<(u64, Request), ProtocolError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        ProtocolError::new(
            0,
            ErrorCode::InvalidAttr,
            format!("The frame is not valid JSON ({e}); send one JSON object per text frame."),
        )
    })?;
    let Value::Object(obj) = value else {
        return Err(ProtocolError::new(
            0,
            ErrorCode::InvalidAttr,
            "The frame is not a JSON object; send one object with a \"message\" field per text frame.",
        ));
    };
    let reference_id = match obj.get("referenceId") {
        Some(Value::Number(n)) => match n.as_u64() {
            Some(id) if id > 0 => id,
            _ => {
                return Err(ProtocolError::new(
                    0,
                    ErrorCode::InvalidAttr,
                    "\"referenceId\" must be a positive integer.",
                ))
            }
        },
        Some(_) => {
            return Err(ProtocolError::new(
                0,
                ErrorCode::InvalidAttr,
                "\"referenceId\" must be a positive integer.",
            ))
        }
        None => 0,
    };
    let err = |code, msg: String| ProtocolError::new(reference_id, code, msg);
    let message = match obj.get("message") {
        Some(Value::String(s)) => s.as_str(),
        _ => {
            return Err(err(
                ErrorCode::InvalidAttr,
                "The request has no \"message\" string naming it.".into(),
            ))
        }
    };
    if reference_id == 0 {
        return Err(err(
            ErrorCode::InvalidAttr,
            format!("{message} needs a \"referenceId\": a positive integer the reply will carry."),
        ));
    }
    let string = |field: &str| -> Result<Option<String>, ProtocolError> {
        match obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(err(
                ErrorCode::InvalidAttr,
                format!("\"{field}\" must be a string."),
            )),
        }
    };
    let dn = || -> Result<String, ProtocolError> {
        let dn = string("thisDn")?.ok_or_else(|| {
            err(
                ErrorCode::InvalidAttr,
                format!("{message} needs \"thisDn\": the directory number it is about."),
            )
        })?;
        if dn.is_empty()
            || dn.len() > MAX_DN_LEN
            || dn.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(err(
                ErrorCode::InvalidAttr,
                format!("\"thisDn\" must be 1 to {MAX_DN_LEN} characters without spaces or control characters."),
            ));
        }
        Ok(dn)
    };
    let request = match message {
        "RequestOpen" => Request::Open {
            protocol_version: match obj.get("protocolVersion") {
                Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
                _ => {
                    return Err(err(
                        ErrorCode::InvalidAttr,
                        "RequestOpen needs \"protocolVersion\": 1.".into(),
                    ))
                }
            },
            application: string("application")?.unwrap_or_default(),
            token: string("token")?,
        },
        "RequestRegisterAddress" => {
            let dn = dn()?;
            let mode = match string("registerMode")?.as_deref() {
                None | Some("share") => RegisterMode::Share,
                Some("monitor") => RegisterMode::Monitor,
                Some(other) => {
                    return Err(err(
                        ErrorCode::InvalidAttr,
                        format!("\"registerMode\" {other:?} is not \"share\" or \"monitor\"."),
                    )
                    .dn(&dn))
                }
            };
            Request::Register { dn, mode }
        }
        "RequestUnregisterAddress" => Request::Unregister { dn: dn()? },
        "RequestQueryAddress" => Request::QueryAddress { dn: dn()? },
        "RequestQueryServer" => Request::QueryServer,
        "RequestPrivateService" => {
            let dn = dn()?;
            let msg_id = match obj.get("privateMsgId") {
                Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().unwrap_or(0),
                _ => {
                    return Err(err(
                        ErrorCode::InvalidAttr,
                        "RequestPrivateService needs \"privateMsgId\": 1, 2 or 501.".into(),
                    )
                    .dn(&dn))
                }
            };
            let conn_id = string("connId").map_err(|e| e.dn(&dn))?;
            let mut extensions = BTreeMap::new();
            match obj.get("extensions") {
                None | Some(Value::Null) => {}
                Some(Value::Object(map)) => {
                    for (k, v) in map {
                        match v {
                            Value::String(s) => {
                                extensions.insert(k.clone(), s.clone());
                            }
                            _ => {
                                return Err(err(
                                    ErrorCode::InvalidAttr,
                                    format!("Extension \"{k}\" must have a string value."),
                                )
                                .dn(&dn))
                            }
                        }
                    }
                }
                Some(_) => {
                    return Err(err(
                        ErrorCode::InvalidAttr,
                        "\"extensions\" must be an object of string values.".into(),
                    )
                    .dn(&dn))
                }
            }
            Request::PrivateService {
                dn,
                msg_id,
                conn_id,
                extensions,
            }
        }
        other => {
            return Err(err(
                ErrorCode::UnsupOper,
                format!("Unknown message {other:?}; this router speaks client protocol v1."),
            ))
        }
    };
    Ok((reference_id, request))
}

/// Current time as RFC 3339, UTC, milliseconds (`2026-11-25T05:49:19.123Z`).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// A message being built: a JSON object with `message` and `time` already set.
#[derive(Debug)]
pub struct Outgoing(Map<String, Value>);

impl Outgoing {
    /// Start a message with its name.
    pub fn new(message: &str) -> Outgoing {
        let mut m = Map::new();
        m.insert("message".into(), Value::from(message));
        m.insert("time".into(), Value::from(now_rfc3339()));
        Outgoing(m)
    }

    /// Set a field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Outgoing {
        self.0.insert(key.into(), value.into());
        self
    }

    /// Set `referenceId` (only on replies).
    pub fn reference(self, reference_id: u64) -> Outgoing {
        self.with("referenceId", reference_id)
    }

    /// Serialize once.
    pub fn finish(self) -> SharedText {
        ByteString::from(Value::Object(self.0).to_string())
    }
}

/// An `EventError`.
pub fn event_error(
    e: &ProtocolError,
    switch: Option<&str>,
    extensions: Option<Map<String, Value>>,
) -> SharedText {
    crate::metrics::error_sent(switch, e.code);
    let mut out = Outgoing::new("EventError")
        .reference(e.reference_id)
        .with("errorCode", e.code.code())
        .with("errorMessage", e.message.as_str());
    if let Some(dn) = &e.this_dn {
        out = out.with("thisDn", dn.as_str());
    }
    if let Some(s) = switch {
        out = out.with("switch", s);
    }
    if let Some(x) = extensions {
        out = out.with("extensions", Value::Object(x));
    }
    out.finish()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests_and_refuses_bad_ones() {
        let (id, r) = parse_request(
            r#"{"message":"RequestPrivateService","referenceId":7,"thisDn":"5001","privateMsgId":1,"extensions":{"HOST_DN":"4001"},"x":1}"#,
        )
        .unwrap();
        assert_eq!(id, 7);
        assert!(
            matches!(r, Request::PrivateService { msg_id: 1, ref extensions, .. } if extensions["HOST_DN"] == "4001")
        );
        let e = parse_request("nope").unwrap_err();
        assert_eq!((e.reference_id, e.code), (0, ErrorCode::InvalidAttr));
        let e = parse_request(r#"{"message":"RequestFoo","referenceId":3}"#).unwrap_err();
        assert_eq!((e.reference_id, e.code), (3, ErrorCode::UnsupOper));
        let e = parse_request(
            r#"{"message":"RequestPrivateService","referenceId":4,"thisDn":"5001","privateMsgId":1,"extensions":{"HOST_DN":4001}}"#,
        )
        .unwrap_err();
        assert_eq!(
            (e.code, e.this_dn.as_deref()),
            (ErrorCode::InvalidAttr, Some("5001"))
        );
        let e = parse_request(r#"{"message":"RequestQueryServer","referenceId":-1}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidAttr);
    }

    #[test]
    fn time_is_rfc3339_utc_millis() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[19] == b'.');
    }
}
