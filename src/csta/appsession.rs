//! ECMA-354 application sessions and ECMA-323 system registration, written strictly and read
//! tolerantly (README, "Connecting your PBX").
//!
//! Many switches (Avaya AES, a good part of OpenScape Voice deployments) serve CSTA only inside
//! an ECMA-354 application session: the client opens one with `StartApplicationSession`, keeps
//! it alive with `ResetApplicationSessionTimer` before the granted duration runs out, and ends
//! it with `StopApplicationSession`. `SystemRegister` asks a switch to report its status
//! changes (system-status monitoring) as `SystemStatus` requests.
//!
//! # What we write
//!
//! ECMA-354 documents carry the ECMA-354 namespace ([`APPL_SESSION_NAMESPACE`]) on their root;
//! `SystemRegister*` carry the dialect's CSTA namespace. Children, in this order:
//!
//! | message | children |
//! |---|---|
//! | `StartApplicationSession` | `applicationInfo/applicationID`, `requestedProtocolVersions/protocolVersion`, `requestedSessionDuration` |
//! | `StartApplicationSessionPosResponse` | `sessionID`, `actualProtocolVersion`, `actualSessionDuration` |
//! | `StartApplicationSessionNegResponse`, `ResetApplicationSessionTimerNegResponse`, `StopApplicationSessionNegResponse` | `errorCode/definedError` (a standard value) or `errorCode/applError` |
//! | `ResetApplicationSessionTimer` | `sessionID`, `requestedSessionDuration` |
//! | `ResetApplicationSessionTimerPosResponse` | `actualSessionDuration` |
//! | `StopApplicationSession` | `sessionID`, `sessionEndReason/appEndReason` (`normal`) |
//! | `StopApplicationSessionPosResponse`, `SystemRegister` | none |
//! | `SystemRegisterResponse` | `sysStatRegisterID` |
//! | `SystemRegisterAbort` | `sysStatRegisterID` |
//!
//! # What we read
//!
//! The same elements by local name, whatever the namespace or prefix (OpenScape Voice declares
//! an `aps:` prefix and leaves the root unqualified); optional elements may be missing or empty
//! (Avaya sends an empty `actualProtocolVersion`); `extensions` (`actualHBT`, private data) is
//! ignored; a register ID is any text (OpenScape Voice sends `27ss`).

use super::dialect::Dialect;
use super::xml::{XmlOut, XmlWriter};

/// The ECMA-354 namespace.
pub const APPL_SESSION_NAMESPACE: &str =
    "http://www.ecma-international.org/standards/ecma-354/appl_session";

/// The standard ECMA-354 `definedError` values: those of `StartApplicationSessionNegResponse`
/// (the first four) and of `ResetApplicationSessionTimerNegResponse` /
/// `StopApplicationSessionNegResponse`. A negative response naming one of them is counted
/// under its own name; anything else is counted as `other` (so the label set of
/// `csta_router_link_session_failures_total` stays bounded whatever a switch sends).
pub const DEFINED_ERRORS: [&str; 6] = [
    "invalidApplicationInfo",
    "requestedProtocolVersionNotSupported",
    "serverResourcesBusy",
    "maxNumberSessions",
    "invalidSessionID",
    "serverCannotResetSessionTimer",
];

/// Why a switch refused an ECMA-354 request (`errorCode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionError {
    /// `definedError`: one of the standard values, or another text a switch wrote there.
    Defined(String),
    /// `applError` (or another `errorCode` child), as written.
    Private(String),
}

impl SessionError {
    /// The label this error is counted under: the `definedError` value when it is a standard
    /// one, else `other`.
    pub fn label(&self) -> &'static str {
        match self {
            SessionError::Defined(v) => DEFINED_ERRORS
                .into_iter()
                .find(|d| d == v)
                .unwrap_or("other"),
            SessionError::Private(_) => "other",
        }
    }

    fn write<O: XmlOut + ?Sized>(&self, w: &mut XmlWriter<'_, O>) {
        w.open("errorCode");
        match self {
            SessionError::Defined(v) => w.leaf("definedError", v),
            SessionError::Private(v) => w.leaf("applError", v),
        };
        w.close("errorCode");
    }
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionError::Defined(v) => write!(f, "definedError {v}"),
            SessionError::Private(v) if v.is_empty() => write!(f, "an error without a value"),
            SessionError::Private(v) => write!(f, "applError {v:?}"),
        }
    }
}

/// One ECMA-354 application-session message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppSession {
    /// Open a session (the first request on a link that uses sessions).
    Start {
        /// `applicationInfo/applicationID`.
        application_id: String,
        /// The one requested `protocolVersion` (an ECMA-323 namespace URI).
        protocol_version: String,
        /// `requestedSessionDuration`, seconds.
        duration: u32,
    },
    /// The session is open.
    StartPos {
        /// `sessionID`, to be named by resets and the stop.
        session_id: String,
        /// `actualProtocolVersion` (None when absent or empty).
        protocol_version: Option<String>,
        /// `actualSessionDuration`, seconds (None when absent or not a number).
        duration: Option<u32>,
    },
    /// The switch refused to open a session.
    StartNeg(SessionError),
    /// Restart the session's timer (the keep-alive of a session link).
    Reset {
        /// The session.
        session_id: String,
        /// `requestedSessionDuration`, seconds.
        duration: u32,
    },
    /// The timer was restarted.
    ResetPos {
        /// `actualSessionDuration`, seconds, when given.
        duration: Option<u32>,
    },
    /// The timer was not restarted (the session may be over).
    ResetNeg(SessionError),
    /// End the session.
    Stop {
        /// The session.
        session_id: String,
    },
    /// The session is over.
    StopPos,
    /// The switch refused to end the session.
    StopNeg(SessionError),
}

/// ECMA-323 system registration (system-status monitoring).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemRegister {
    /// Ask the switch to report its status changes.
    Request,
    /// Registered.
    Response {
        /// `sysStatRegisterID`, any text.
        register_id: Option<String>,
    },
    /// The switch ended the registration.
    Abort {
        /// `sysStatRegisterID`, when given.
        register_id: Option<String>,
    },
}

/// Whether `root` names a message of this module (how the codec dispatches to it).
pub(crate) fn is_root(root: &str) -> bool {
    root.contains("ApplicationSession") || root.starts_with("SystemRegister")
}

impl AppSession {
    /// The root element's name.
    pub fn name(&self) -> &'static str {
        match self {
            AppSession::Start { .. } => "StartApplicationSession",
            AppSession::StartPos { .. } => "StartApplicationSessionPosResponse",
            AppSession::StartNeg(_) => "StartApplicationSessionNegResponse",
            AppSession::Reset { .. } => "ResetApplicationSessionTimer",
            AppSession::ResetPos { .. } => "ResetApplicationSessionTimerPosResponse",
            AppSession::ResetNeg(_) => "ResetApplicationSessionTimerNegResponse",
            AppSession::Stop { .. } => "StopApplicationSession",
            AppSession::StopPos => "StopApplicationSessionPosResponse",
            AppSession::StopNeg(_) => "StopApplicationSessionNegResponse",
        }
    }

    /// Write the message (always in the ECMA-354 namespace).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(256);
        self.encode_into(&mut out);
        out
    }

    /// Append the message (always in the ECMA-354 namespace) to `out`.
    pub fn encode_into<O: XmlOut + ?Sized>(&self, out: &mut O) {
        let root = self.name();
        if *self == AppSession::StopPos {
            return XmlWriter::empty(out, root, APPL_SESSION_NAMESPACE);
        }
        let mut w = XmlWriter::new(out, root, APPL_SESSION_NAMESPACE);
        match self {
            AppSession::Start {
                application_id,
                protocol_version,
                duration,
            } => {
                w.open("applicationInfo")
                    .leaf("applicationID", application_id)
                    .close("applicationInfo");
                w.open("requestedProtocolVersions")
                    .leaf("protocolVersion", protocol_version)
                    .close("requestedProtocolVersions");
                w.number("requestedSessionDuration", *duration);
            }
            AppSession::StartPos {
                session_id,
                protocol_version,
                duration,
            } => {
                w.leaf("sessionID", session_id);
                w.opt_leaf("actualProtocolVersion", protocol_version.as_deref());
                if let Some(d) = duration {
                    w.number("actualSessionDuration", *d);
                }
            }
            AppSession::Reset {
                session_id,
                duration,
            } => {
                w.leaf("sessionID", session_id);
                w.number("requestedSessionDuration", *duration);
            }
            AppSession::ResetPos { duration } => {
                if let Some(d) = duration {
                    w.number("actualSessionDuration", *d);
                }
            }
            AppSession::Stop { session_id } => {
                w.leaf("sessionID", session_id);
                w.open("sessionEndReason")
                    .leaf("appEndReason", "normal")
                    .close("sessionEndReason");
            }
            AppSession::StartNeg(e) | AppSession::ResetNeg(e) | AppSession::StopNeg(e) => {
                e.write(&mut w)
            }
            AppSession::StopPos => {}
        }
        w.finish(root)
    }
}

impl SystemRegister {
    /// The root element's name.
    pub fn name(&self) -> &'static str {
        match self {
            SystemRegister::Request => "SystemRegister",
            SystemRegister::Response { .. } => "SystemRegisterResponse",
            SystemRegister::Abort { .. } => "SystemRegisterAbort",
        }
    }

    /// Write the message in the dialect's CSTA namespace.
    pub fn encode(&self, d: &Dialect) -> String {
        let mut out = String::with_capacity(160);
        self.encode_into(d, &mut out);
        out
    }

    /// Append the message in the dialect's CSTA namespace to `out`.
    pub fn encode_into<O: XmlOut + ?Sized>(&self, d: &Dialect, out: &mut O) {
        let root = self.name();
        match self {
            SystemRegister::Request => XmlWriter::empty(out, root, &d.csta_namespace),
            SystemRegister::Response { register_id } | SystemRegister::Abort { register_id } => {
                let mut w = XmlWriter::new(out, root, &d.csta_namespace);
                w.opt_leaf("sysStatRegisterID", register_id.as_deref());
                w.finish(root)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// What a document reads as, through the same dispatch the codec uses.
    #[derive(Debug, PartialEq)]
    enum Read {
        AppSession(AppSession),
        SystemRegister(SystemRegister),
    }

    fn read(xml: &str) -> Read {
        match crate::csta::Message::decode(xml.as_bytes(), &Dialect::default()).unwrap() {
            crate::csta::Message::AppSession(m) => Read::AppSession(m),
            crate::csta::Message::SystemRegister(m) => Read::SystemRegister(m),
            other => unreachable!("{other:?}"),
        }
    }

    #[test]
    fn writes_start_as_ecma_354_says() {
        let m = AppSession::Start {
            application_id: "csta-router".into(),
            protocol_version: crate::csta::dialect::CSTA_ED3_NAMESPACE.into(),
            duration: 180,
        };
        assert_eq!(
            m.encode(),
            r#"<?xml version="1.0" encoding="UTF-8"?><StartApplicationSession xmlns="http://www.ecma-international.org/standards/ecma-354/appl_session"><applicationInfo><applicationID>csta-router</applicationID></applicationInfo><requestedProtocolVersions><protocolVersion>http://www.ecma-international.org/standards/ecma-323/csta/ed3</protocolVersion></requestedProtocolVersions><requestedSessionDuration>180</requestedSessionDuration></StartApplicationSession>"#
        );
    }

    #[test]
    fn reads_a_positive_response_with_an_unused_prefix_and_extensions() {
        // The root left unqualified, a prefix declared for nothing, a heartbeat extension.
        let m = read(
            r#"<?xml version="1.0" encoding="UTF-8"?><StartApplicationSessionPosResponse xmlns:as="http://www.ecma-international.org/standards/ecma-354/appl_session"><sessionID>0042</sessionID><actualProtocolVersion>http://www.ecma-international.org/standards/ecma-323/csta/ed4</actualProtocolVersion><actualSessionDuration>300</actualSessionDuration><extensions><actualHBT>0</actualHBT></extensions></StartApplicationSessionPosResponse>"#,
        );
        assert_eq!(
            m,
            Read::AppSession(AppSession::StartPos {
                session_id: "0042".into(),
                protocol_version: Some(
                    "http://www.ecma-international.org/standards/ecma-323/csta/ed4".into()
                ),
                duration: Some(300),
            })
        );
    }

    #[test]
    fn reads_an_empty_protocol_version_as_none() {
        let m = read(
            r#"<StartApplicationSessionPosResponse xmlns="http://www.ecma-international.org/standards/ecma-354/appl_session"><sessionID>AB12-0</sessionID><actualProtocolVersion></actualProtocolVersion><actualSessionDuration>90</actualSessionDuration></StartApplicationSessionPosResponse>"#,
        );
        let Read::AppSession(AppSession::StartPos {
            protocol_version,
            duration,
            ..
        }) = m
        else {
            unreachable!("{m:?}")
        };
        assert_eq!((protocol_version, duration), (None, Some(90)));
    }

    #[test]
    fn negative_responses_give_a_label() {
        let neg = |inner: &str| {
            read(&format!(
                r#"<StartApplicationSessionNegResponse xmlns="http://www.ecma-international.org/standards/ecma-354/appl_session"><errorCode>{inner}</errorCode></StartApplicationSessionNegResponse>"#
            ))
        };
        let Read::AppSession(AppSession::StartNeg(e)) =
            neg("<definedError>invalidApplicationInfo</definedError>")
        else {
            unreachable!()
        };
        assert_eq!(e.label(), "invalidApplicationInfo");
        let Read::AppSession(AppSession::StartNeg(e)) =
            neg("<definedError>licenceExhausted</definedError>")
        else {
            unreachable!()
        };
        assert_eq!(e.label(), "other");
        let Read::AppSession(AppSession::StartNeg(e)) = neg("<applError>no licence</applError>")
        else {
            unreachable!()
        };
        assert_eq!(
            (e.label(), e.to_string()),
            ("other", "applError \"no licence\"".to_owned())
        );
    }

    #[test]
    fn every_message_reads_back_what_it_wrote() {
        let error = SessionError::Defined("invalidSessionID".into());
        let all = [
            AppSession::Reset {
                session_id: "s1".into(),
                duration: 2,
            },
            AppSession::ResetPos { duration: Some(2) },
            AppSession::ResetNeg(error.clone()),
            AppSession::Stop {
                session_id: "s1".into(),
            },
            AppSession::StopPos,
            AppSession::StopNeg(error.clone()),
            AppSession::StartNeg(error),
        ];
        for m in all {
            let xml = m.encode();
            assert_eq!(read(&xml), Read::AppSession(m), "{xml}");
        }
        for m in [
            SystemRegister::Request,
            SystemRegister::Response {
                register_id: Some("27ss".into()),
            },
            SystemRegister::Abort { register_id: None },
        ] {
            let xml = m.encode(&Dialect::default());
            assert_eq!(read(&xml), Read::SystemRegister(m), "{xml}");
        }
    }

    #[test]
    fn reads_a_register_response_with_a_filter_and_private_data() {
        let m = read(
            r#"<SystemRegisterResponse xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">
                 <sysStatRegisterID> 7001 </sysStatRegisterID>
                 <actualStatusFilter><normal>true</normal><messageLost>false</messageLost></actualStatusFilter>
                 <extensions><privateData><private><v:RegisterData xmlns:v="urn:vendor" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="v:RegisterData"><v:invert>true</v:invert></v:RegisterData></private></privateData></extensions>
               </SystemRegisterResponse>"#,
        );
        assert_eq!(
            m,
            Read::SystemRegister(SystemRegister::Response {
                register_id: Some("7001".into())
            })
        );
    }
}
