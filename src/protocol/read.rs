//! Reading a client's request (README, "Client protocol v1"): one text frame into a [`Request`]
//! and its `referenceId`, or a [`ProtocolError`] that says what is wrong.

use super::wire::{simple_wire, Field, Wire};
use super::{echo, ErrorCode, ProtocolError, RegisterMode, MAX_DN_LEN};
use serde::de::IgnoredAny;
use std::collections::BTreeMap;
use std::sync::Arc;

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
        /// `resume`.
        resume: Resume,
    },
    /// `RequestRegisterAddress`.
    Register {
        /// `thisDn`.
        dn: Arc<str>,
        /// `registerMode`.
        mode: RegisterMode,
        /// `callEvents`: the client wants the DN's call events (default false).
        call_events: bool,
    },
    /// `RequestUnregisterAddress`.
    Unregister {
        /// `thisDn`.
        dn: Arc<str>,
    },
    /// `RequestPrivateService`.
    PrivateService {
        /// `thisDn`.
        dn: Arc<str>,
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
        dn: Arc<str>,
    },
    /// `RequestQueryServer`.
    QueryServer,
    /// `RequestClose`: end the session at once.
    Close,
}

/// The longest `sessionId` accepted in a resume (the router's are 32 characters).
pub const MAX_SESSION_ID_LEN: usize = 64;

/// The most switches a resume's `lastEventSeq` may name.
pub const MAX_RESUME_SWITCHES: usize = 1024;

/// `RequestOpen`'s `resume`: absent, well formed, or malformed (answered with 53).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Resume {
    /// No `resume`: a new session.
    #[default]
    None,
    /// Resume session `session_id`: the client has every event of each switch up to its
    /// `lastEventSeq` (a switch not named: none).
    Session {
        /// `sessionId`.
        session_id: String,
        /// `lastEventSeq`: switch name → the last `eventSeq` the client has.
        last_event_seq: Vec<(String, u64)>,
    },
    /// A `resume` that cannot be read: why, as a sentence for `EventError` 53.
    Malformed(String),
}

/// Read one text frame as a request: `(referenceId, request)`.
pub fn parse_request(text: &str) -> Result<(u64, Request), ProtocolError> {
    let wire = read_wire(text)?;
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
    let message = match &wire.message {
        Some(Field::Str(s)) => &**s,
        _ => {
            return Err(ProtocolError::new(
                reference_id,
                ErrorCode::InvalidAttr,
                "The request has no \"message\" string naming it.",
            ))
        }
    };
    let fields = Fields {
        wire: &wire,
        reference_id,
        message,
    };
    if reference_id == 0 {
        return Err(fields.err(
            ErrorCode::InvalidAttr,
            format!(
                "{:?} needs a \"referenceId\": a positive integer the reply will carry.",
                echo(message)
            ),
        ));
    }
    let request = match message {
        "RequestOpen" => fields.open()?,
        "RequestRegisterAddress" => fields.register()?,
        "RequestUnregisterAddress" => Request::Unregister { dn: fields.dn()? },
        "RequestQueryAddress" => Request::QueryAddress { dn: fields.dn()? },
        "RequestQueryServer" => Request::QueryServer,
        "RequestClose" => Request::Close,
        "RequestPrivateService" => fields.private_service()?,
        other => {
            return Err(fields.err(
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

/// The frame as a JSON object of the fields the router reads.
fn read_wire(text: &str) -> Result<Wire<'_>, ProtocolError> {
    let not_object = || {
        ProtocolError::new(
            0,
            ErrorCode::InvalidAttr,
            "The frame is not a JSON object; send one object with a \"message\" field per text frame.",
        )
    };
    // The common request (flat, no escapes) is read without serde; anything else, and every
    // error, is serde's.
    if let Some(wire) = simple_wire(text) {
        return Ok(wire);
    }
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
    serde_json::from_str(text).map_err(|e| {
        ProtocolError::new(
            0,
            ErrorCode::InvalidAttr,
            format!("The frame is not a valid request ({e}); send one JSON object per text frame, each field once."),
        )
    })
}

/// A request's fields with what every error needs: its `referenceId` and `message`.
struct Fields<'w, 'a> {
    wire: &'w Wire<'a>,
    reference_id: u64,
    message: &'w str,
}

impl Fields<'_, '_> {
    fn err(&self, code: ErrorCode, message: String) -> ProtocolError {
        ProtocolError::new(self.reference_id, code, message)
    }

    /// An optional string field.
    fn string(
        &self,
        field: &'static str,
        value: &Option<Field>,
    ) -> Result<Option<String>, ProtocolError> {
        match value {
            None => Ok(None),
            Some(Field::Str(s)) => Ok(Some(s.to_string())),
            Some(_) => Err(self.err(
                ErrorCode::InvalidAttr,
                format!("\"{field}\" must be a string."),
            )),
        }
    }

    /// `thisDn`: 1 to [`MAX_DN_LEN`] characters without spaces or control characters, in
    /// the one allocation the router keeps it in from here on.
    fn dn(&self) -> Result<Arc<str>, ProtocolError> {
        let dn = match &self.wire.this_dn {
            None => None,
            Some(Field::Str(s)) => Some(&**s),
            Some(_) => {
                return Err(self.err(
                    ErrorCode::InvalidAttr,
                    "\"thisDn\" must be a string.".to_owned(),
                ))
            }
        };
        let dn = dn.ok_or_else(|| {
            self.err(
                ErrorCode::InvalidAttr,
                format!(
                    "{} needs \"thisDn\": the directory number it is about.",
                    self.message
                ),
            )
        })?;
        if dn.is_empty()
            || dn.len() > MAX_DN_LEN
            || dn.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(self.err(
                ErrorCode::InvalidAttr,
                format!("\"thisDn\" must be 1 to {MAX_DN_LEN} characters without spaces or control characters."),
            ));
        }
        Ok(Arc::from(dn))
    }

    fn open(&self) -> Result<Request, ProtocolError> {
        Ok(Request::Open {
            protocol_version: match &self.wire.protocol_version {
                Some(Field::Uint(v)) => *v,
                Some(Field::Number) => 0,
                _ => {
                    return Err(self.err(
                        ErrorCode::InvalidAttr,
                        "RequestOpen needs \"protocolVersion\": 1.".into(),
                    ))
                }
            },
            application: self
                .string("application", &self.wire.application)?
                .unwrap_or_default(),
            token: self.string("token", &self.wire.token)?,
            resume: self.resume(),
        })
    }

    /// `RequestOpen`'s `resume`: {`sessionId`: string, `lastEventSeq`: {switch: integer}}.
    fn resume(&self) -> Resume {
        let malformed = |why: &str| {
            Resume::Malformed(format!("\"resume\" {why}; send {{\"sessionId\": the id from EventServerConnected, \"lastEventSeq\": {{\"<switch>\": the last eventSeq received, ...}}}}, or open without \"resume\"."))
        };
        let fields = match &self.wire.resume {
            None => return Resume::None,
            Some(Field::Object(fields)) => fields,
            Some(_) => return malformed("is not an object"),
        };
        let mut session_id = None;
        let mut last_event_seq = Vec::new();
        for (key, value) in fields {
            match (&**key, value) {
                ("sessionId", Field::Str(id))
                    if !id.is_empty()
                        && id.len() <= MAX_SESSION_ID_LEN
                        && id.bytes().all(|b| b.is_ascii_alphanumeric()) =>
                {
                    session_id = Some(id.to_string());
                }
                ("sessionId", _) => {
                    return malformed("has a \"sessionId\" that is not a session id string")
                }
                ("lastEventSeq", Field::Object(seqs)) if seqs.len() <= MAX_RESUME_SWITCHES => {
                    for (switch, seq) in seqs {
                        let Field::Uint(n) = seq else {
                            return malformed(
                                "has a \"lastEventSeq\" value that is not a non-negative integer",
                            );
                        };
                        last_event_seq.push((switch.to_string(), *n));
                    }
                }
                ("lastEventSeq", _) => {
                    return malformed(
                        "has a \"lastEventSeq\" that is not an object of at most 1024 switches",
                    )
                }
                _ => {}
            }
        }
        match session_id {
            Some(session_id) => Resume::Session {
                session_id,
                last_event_seq,
            },
            None => malformed("has no \"sessionId\""),
        }
    }

    fn register(&self) -> Result<Request, ProtocolError> {
        let dn = self.dn()?;
        let mode = match self
            .string("registerMode", &self.wire.register_mode)?
            .as_deref()
        {
            None | Some("share") => RegisterMode::Share,
            Some("monitor") => RegisterMode::Monitor,
            Some(other) => {
                return Err(self
                    .err(
                        ErrorCode::InvalidAttr,
                        format!(
                            "\"registerMode\" {:?} is not \"share\" or \"monitor\".",
                            echo(other)
                        ),
                    )
                    .dn(&dn))
            }
        };
        let call_events = match &self.wire.call_events {
            None => false,
            Some(Field::Bool(b)) => *b,
            Some(_) => {
                return Err(self
                    .err(
                        ErrorCode::InvalidAttr,
                        "\"callEvents\" must be true or false.".to_owned(),
                    )
                    .dn(&dn))
            }
        };
        Ok(Request::Register {
            dn,
            mode,
            call_events,
        })
    }

    fn private_service(&self) -> Result<Request, ProtocolError> {
        let dn = self.dn()?;
        let msg_id = match &self.wire.private_msg_id {
            Some(Field::Uint(id)) => *id,
            _ => {
                return Err(self
                    .err(
                        ErrorCode::InvalidAttr,
                        "RequestPrivateService needs \"privateMsgId\": 1, 2 or 501.".into(),
                    )
                    .dn(&dn))
            }
        };
        let conn_id = self
            .string("connId", &self.wire.conn_id)
            .map_err(|e| e.dn(&dn))?;
        let extensions = self.extensions().map_err(|e| e.dn(&dn))?;
        Ok(Request::PrivateService {
            dn,
            msg_id,
            conn_id,
            extensions,
        })
    }

    /// `extensions`: an object of string values.
    fn extensions(&self) -> Result<BTreeMap<String, String>, ProtocolError> {
        let mut extensions = BTreeMap::new();
        match &self.wire.extensions {
            None => {}
            Some(Field::Object(map)) => {
                for (k, v) in map {
                    match v {
                        Field::Str(s) => {
                            extensions.insert(k.to_string(), s.to_string());
                        }
                        _ => {
                            return Err(self.err(
                                ErrorCode::InvalidAttr,
                                format!("Extension {:?} must have a string value.", echo(k)),
                            ))
                        }
                    }
                }
            }
            Some(_) => {
                return Err(self.err(
                    ErrorCode::InvalidAttr,
                    "\"extensions\" must be an object of string values.".into(),
                ))
            }
        }
        Ok(extensions)
    }
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
                mode: RegisterMode::Share,
                call_events: false,
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
    fn a_resume_is_read_or_said_to_be_malformed() {
        let open = |resume: &str| {
            let text = format!(
                r#"{{"message":"RequestOpen","referenceId":1,"protocolVersion":1,"application":"a","resume":{resume}}}"#
            );
            match parse_request(&text).unwrap().1 {
                Request::Open { resume, .. } => resume,
                _ => Resume::Malformed("not RequestOpen".into()),
            }
        };
        assert_eq!(
            open(r#"{"sessionId":"0f3a9c","lastEventSeq":{"sw1":12,"sw2":0},"x":1}"#),
            Resume::Session {
                session_id: "0f3a9c".into(),
                last_event_seq: vec![("sw1".into(), 12), ("sw2".into(), 0)],
            }
        );
        assert_eq!(
            open(r#"{"sessionId":"abc"}"#),
            Resume::Session {
                session_id: "abc".into(),
                last_event_seq: vec![],
            }
        );
        assert_eq!(open("null"), Resume::None);
        for bad in [
            "1",
            r#"{"lastEventSeq":{}}"#,
            r#"{"sessionId":""}"#,
            r#"{"sessionId":"a b"}"#,
            r#"{"sessionId":7}"#,
            r#"{"sessionId":"abc","lastEventSeq":{"sw1":-1}}"#,
            r#"{"sessionId":"abc","lastEventSeq":{"sw1":"12"}}"#,
            r#"{"sessionId":"abc","lastEventSeq":[1]}"#,
        ] {
            assert!(matches!(open(bad), Resume::Malformed(_)), "{bad}");
        }
        let (_, close) = parse_request(r#"{"message":"RequestClose","referenceId":9}"#).unwrap();
        assert_eq!(close, Request::Close);
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
    fn call_events_is_a_boolean_false_by_default() {
        let register = |extra: &str| {
            parse_request(&format!(
                r#"{{"message":"RequestRegisterAddress","referenceId":6,"thisDn":"5001"{extra}}}"#
            ))
        };
        for (extra, want) in [
            ("", false),
            (r#","callEvents":null"#, false),
            (r#","callEvents":false"#, false),
            (r#","callEvents":true"#, true),
        ] {
            let (_, r) = register(extra).unwrap();
            assert_eq!(
                r,
                Request::Register {
                    dn: "5001".into(),
                    mode: RegisterMode::Share,
                    call_events: want,
                },
                "{extra}"
            );
        }
        for bad in [
            r#","callEvents":"true""#,
            r#","callEvents":1"#,
            r#","callEvents":[]"#,
        ] {
            let e = register(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidAttr, "{bad}");
            assert!(e.message.contains("callEvents"), "{}", e.message);
            assert_eq!(e.this_dn.as_deref(), Some("5001"));
        }
    }
}
