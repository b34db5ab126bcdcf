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
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
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

/// The longest application name accepted in `RequestOpen`, in characters: the name is written
/// in logs and audit lines, so it is short and single-line.
pub const MAX_APPLICATION_LEN: usize = 64;

/// The most characters of a client's own text repeated in an error message ([`echo`]).
pub const MAX_ECHO_CHARS: usize = 64;

/// A client's text as repeated in an error message: at most [`MAX_ECHO_CHARS`] characters
/// (cut on a character boundary, "…" marking the cut). Why: an error message names what was
/// wrong, and a 64 KiB frame must not come back as a 64 KiB error, nor be logged as one.
pub fn echo(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(MAX_ECHO_CHARS) {
        None => Cow::Borrowed(text),
        Some((cut, _)) => Cow::Owned(format!("{}…", &text[..cut])),
    }
}

/// Whether a character may not appear in an application name: control characters, and the
/// Unicode line separators and bidirectional controls that make a log line read differently
/// from what it contains.
fn unsafe_in_name(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// Check the `application` of a `RequestOpen`: at most [`MAX_APPLICATION_LEN`] characters, no
/// control characters, Unicode line separators or bidirectional controls. The error is the
/// sentence for the client's `EventError`.
pub fn check_application(name: &str) -> Result<(), String> {
    let chars = name.chars().count();
    if chars > MAX_APPLICATION_LEN {
        return Err(format!(
            "\"application\" has {chars} characters; name the application in at most {MAX_APPLICATION_LEN}."
        ));
    }
    if name.chars().any(unsafe_in_name) {
        return Err(
            "\"application\" must not contain control characters (line breaks, tabs, escapes) or bidirectional controls; send a plain name.".into(),
        );
    }
    Ok(())
}

/// One field of a request as read: just what is needed to accept it or say what is wrong with
/// it. Strings are borrowed from the frame unless they contain escapes.
///
/// Why not `serde_json::Value`: every request is read on the hot path, and a `Value` builds a
/// tree map and owned strings for every field before we look at the four we need.
#[derive(Debug)]
enum Field<'a> {
    Str(Cow<'a, str>),
    Uint(u64),
    Object(Vec<(Cow<'a, str>, Field<'a>)>),
    /// A negative or fractional number.
    Number,
    /// `null` (inside an object), a boolean or an array.
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Field<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Field<'a>, E> {
                Ok(Field::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Field<'a>, E> {
                Ok(Field::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Field<'a>, E> {
                Ok(Field::Str(Cow::Owned(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Field<'a>, E> {
                Ok(Field::Uint(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Field<'a>, E> {
                Ok(u64::try_from(v).map_or(Field::Number, Field::Uint))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Field<'a>, E> {
                Ok(Field::Number)
            }
            fn visit_unit<E>(self) -> Result<Field<'a>, E> {
                Ok(Field::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Field<'a>, E> {
                Ok(Field::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field<'a>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Field::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field<'a>, A::Error> {
                let mut fields = Vec::new();
                while let Some((k, v)) = map.next_entry::<Cow<'a, str>, Field<'a>>()? {
                    fields.push((k, v));
                }
                Ok(Field::Object(fields))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// The fields of a request the router reads (`null` reads as absent); others are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire<'a> {
    #[serde(borrow, default)]
    message: Option<Field<'a>>,
    #[serde(borrow, default)]
    reference_id: Option<Field<'a>>,
    #[serde(borrow, default)]
    this_dn: Option<Field<'a>>,
    #[serde(borrow, default)]
    register_mode: Option<Field<'a>>,
    #[serde(borrow, default)]
    private_msg_id: Option<Field<'a>>,
    #[serde(borrow, default)]
    conn_id: Option<Field<'a>>,
    #[serde(borrow, default)]
    extensions: Option<Field<'a>>,
    #[serde(borrow, default)]
    protocol_version: Option<Field<'a>>,
    #[serde(borrow, default)]
    application: Option<Field<'a>>,
    #[serde(borrow, default)]
    token: Option<Field<'a>>,
}

/// Read one text frame as a request: `(referenceId, request)`.
pub fn parse_request(text: &str) -> Result<(u64, Request), ProtocolError> {
    let not_object = || {
        ProtocolError::new(
            0,
            ErrorCode::InvalidAttr,
            "The frame is not a JSON object; send one object with a \"message\" field per text frame.",
        )
    };
    // A struct would also read an array positionally: only an object is a request.
    if !text.trim_start().starts_with('{') {
        return Err(match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => not_object(),
            Err(e) => ProtocolError::new(
                0,
                ErrorCode::InvalidAttr,
                format!("The frame is not valid JSON ({e}); send one JSON object per text frame."),
            ),
        });
    }
    let wire: Wire = serde_json::from_str(text).map_err(|e| {
        ProtocolError::new(
            0,
            ErrorCode::InvalidAttr,
            format!("The frame is not a valid request ({e}); send one JSON object per text frame, each field once."),
        )
    })?;
    let reference_id = match &wire.reference_id {
        Some(Field::Uint(id)) if *id > 0 => *id,
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
    let message = match &wire.message {
        Some(Field::Str(s)) => &**s,
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
            format!(
                "{:?} needs a \"referenceId\": a positive integer the reply will carry.",
                echo(message)
            ),
        ));
    }
    let string =
        |field: &'static str, value: &Option<Field>| -> Result<Option<String>, ProtocolError> {
            match value {
                None => Ok(None),
                Some(Field::Str(s)) => Ok(Some(s.to_string())),
                Some(_) => Err(err(
                    ErrorCode::InvalidAttr,
                    format!("\"{field}\" must be a string."),
                )),
            }
        };
    let dn = || -> Result<String, ProtocolError> {
        let dn = string("thisDn", &wire.this_dn)?.ok_or_else(|| {
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
            protocol_version: match &wire.protocol_version {
                Some(Field::Uint(v)) => *v,
                Some(Field::Number) => 0,
                _ => {
                    return Err(err(
                        ErrorCode::InvalidAttr,
                        "RequestOpen needs \"protocolVersion\": 1.".into(),
                    ))
                }
            },
            application: string("application", &wire.application)?.unwrap_or_default(),
            token: string("token", &wire.token)?,
        },
        "RequestRegisterAddress" => {
            let dn = dn()?;
            let mode = match string("registerMode", &wire.register_mode)?.as_deref() {
                None | Some("share") => RegisterMode::Share,
                Some("monitor") => RegisterMode::Monitor,
                Some(other) => {
                    return Err(err(
                        ErrorCode::InvalidAttr,
                        format!(
                            "\"registerMode\" {:?} is not \"share\" or \"monitor\".",
                            echo(other)
                        ),
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
            let msg_id = match &wire.private_msg_id {
                Some(Field::Uint(id)) => *id,
                _ => {
                    return Err(err(
                        ErrorCode::InvalidAttr,
                        "RequestPrivateService needs \"privateMsgId\": 1, 2 or 501.".into(),
                    )
                    .dn(&dn))
                }
            };
            let conn_id = string("connId", &wire.conn_id).map_err(|e| e.dn(&dn))?;
            let mut extensions = BTreeMap::new();
            match &wire.extensions {
                None => {}
                Some(Field::Object(map)) => {
                    for (k, v) in map {
                        match v {
                            Field::Str(s) => {
                                extensions.insert(k.to_string(), s.to_string());
                            }
                            _ => {
                                return Err(err(
                                    ErrorCode::InvalidAttr,
                                    format!("Extension {:?} must have a string value.", echo(k)),
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
                format!(
                    "Unknown message {:?}; this router speaks client protocol v1.",
                    echo(other)
                ),
            ))
        }
    };
    Ok((reference_id, request))
}

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
/// straight into its final bytes (fields in the order they are added).
///
/// Why not a `serde_json::Map`: every event is built on the hot path of fan-out and of every
/// reply, and a map costs a tree insert and an allocation per field before the same text is
/// written anyway. Each key must be added once; keys are written as given (they are the
/// protocol's field names, never client input).
#[derive(Debug)]
pub struct Outgoing(Vec<u8>);

impl Outgoing {
    /// Start a message with its name.
    pub fn new(message: &str) -> Outgoing {
        let mut out = Vec::with_capacity(192);
        out.extend_from_slice(b"{\"message\":");
        push_json(&mut out, message);
        out.extend_from_slice(b",\"time\":\"");
        with_now(|t| out.extend_from_slice(t.as_bytes()));
        out.push(b'"');
        Outgoing(out)
    }

    /// Add a field.
    pub fn with(mut self, key: &str, value: impl serde::Serialize) -> Outgoing {
        self.0.extend_from_slice(b",\"");
        self.0.extend_from_slice(key.as_bytes());
        self.0.extend_from_slice(b"\":");
        push_json(&mut self.0, &value);
        self
    }

    /// Set `referenceId` (only on replies).
    pub fn reference(self, reference_id: u64) -> Outgoing {
        self.with("referenceId", reference_id)
    }

    /// Serialize once.
    pub fn finish(mut self) -> SharedText {
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

/// The start of an unsolicited `EventPrivateInfo` (SPEC section 3): the fields every private
/// event carries.
pub fn private_info_event(monitored_dn: &str, switch: &str, seq: u64, msg_id: u32) -> Outgoing {
    Outgoing::new("EventPrivateInfo")
        .with("privateMsgId", msg_id)
        .with("monitoredDn", monitored_dn)
        .with("switch", switch)
        .with("eventSeq", seq)
}

/// The `EventPrivateInfo` of a hot-desk event (`privateMsgId` 1: established, 2: cancelled),
/// serialized once for all the DN's subscribers.
pub fn hotdesk_event(
    monitored_dn: &str,
    switch: &str,
    seq: u64,
    msg_id: u32,
    guest: &str,
    host: Option<&str>,
) -> SharedText {
    let mut out = private_info_event(monitored_dn, switch, seq, msg_id).with("thisDn", guest);
    if let Some(host) = host {
        out = out.with("otherDn", host);
    }
    out.finish()
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
        // Arrays are not read positionally; escaped strings are unescaped; null is absent.
        let e = parse_request(r#"["RequestQueryServer",1]"#).unwrap_err();
        assert!(e.message.contains("not a JSON object"), "{}", e.message);
        let (_, r) = parse_request(
            r#" {"message":"RequestRegisterAddress","referenceId":2,"thisDn":"50\u00301","registerMode":null}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            Request::Register {
                dn: "5001".into(),
                mode: RegisterMode::Share
            }
        );
        let e = parse_request(
            r#"{"message":"RequestPrivateService","referenceId":5,"thisDn":"5001","privateMsgId":1,"extensions":{"HOST_DN":null}}"#,
        )
        .unwrap_err();
        assert_eq!((e.reference_id, e.code), (5, ErrorCode::InvalidAttr));
        let (_, r) =
            parse_request(r#"{"message":"RequestOpen","referenceId":1,"protocolVersion":1.5}"#)
                .unwrap();
        assert!(matches!(
            r,
            Request::Open {
                protocol_version: 0,
                ..
            }
        ));
        let e =
            parse_request(r#"{"message":"RequestOpen","referenceId":1,"protocolVersion":true}"#)
                .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidAttr);
        let e = parse_request(r#"{"message":"RequestOpen","referenceId":1,"referenceId":2}"#)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidAttr);
    }

    #[test]
    fn outgoing_writes_one_json_object_in_field_order() {
        let mut ext = BTreeMap::new();
        ext.insert("HOST_DN".to_owned(), "40\"01\u{e9}".to_owned());
        let text = Outgoing::new("EventPrivateInfo")
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
    fn echoed_client_text_is_cut_to_64_characters_on_a_character_boundary() {
        assert_eq!(echo("RequestFoo"), "RequestFoo");
        let exact: String = "é".repeat(64);
        assert_eq!(echo(&exact), exact.as_str());
        // Two-, three- and four-byte characters: the cut falls between characters, never
        // inside one, and counts characters, not bytes.
        for c in ['é', '€', '𝄞', 'a'] {
            let long: String = std::iter::repeat_n(c, 70_000).collect();
            let cut = echo(&long);
            assert_eq!(cut.chars().count(), 65, "{c}");
            assert!(cut.ends_with('…'));
            assert!(cut.chars().take(64).all(|x| x == c));
        }
        let mixed = format!("{}𝄞tail", "a".repeat(63));
        assert_eq!(echo(&mixed), format!("{}𝄞…", "a".repeat(63)));
    }

    #[test]
    fn long_client_text_comes_back_cut_in_error_messages() {
        let name = "Ü".repeat(30_000);
        let e = parse_request(&format!(r#"{{"message":"{name}","referenceId":3}}"#)).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnsupOper);
        assert!(e.message.len() < 300, "{} bytes", e.message.len());
        assert!(
            e.message.contains(&format!("{}…", "Ü".repeat(64))),
            "{}",
            e.message
        );
        let e = parse_request(&format!(
            r#"{{"message":"RequestRegisterAddress","referenceId":4,"thisDn":"5001","registerMode":"{name}"}}"#
        ))
        .unwrap_err();
        assert!(e.message.len() < 300, "{}", e.message);
        let e = parse_request(&format!(
            r#"{{"message":"RequestPrivateService","referenceId":5,"thisDn":"5001","privateMsgId":1,"extensions":{{"{name}":1}}}}"#
        ))
        .unwrap_err();
        assert!(e.message.len() < 300, "{}", e.message);
        let e = parse_request(&format!(r#"{{"message":"{name}"}}"#)).unwrap_err();
        assert!(e.message.len() < 300, "{}", e.message);
    }

    #[test]
    fn application_names_are_short_and_single_line() {
        assert!(check_application("desktops").is_ok());
        assert!(check_application("").is_ok());
        assert!(check_application("Bureau d'accueil – étage 2").is_ok());
        assert!(check_application(&"é".repeat(64)).is_ok());
        assert!(check_application(&"é".repeat(65)).is_err());
        for bad in [
            "a\nb",
            "a\rb",
            "tab\there",
            "esc\u{1b}[31m",
            "nul\0",
            "del\u{7f}",
            "c1\u{85}",
            "ls\u{2028}",
            "rlo\u{202e}x",
        ] {
            let e = check_application(bad).unwrap_err();
            assert!(e.contains("control characters"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn time_is_rfc3339_utc_millis() {
        let t = with_now(str::to_owned);
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[19] == b'.');
    }
}
