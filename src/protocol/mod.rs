//! Client protocol v1 (README, "Client protocol v1"): JSON objects over WebSocket text frames.
//!
//! Reading ([`mod@read`]) is strict about what it needs and lenient about the rest: a request must
//! be a JSON object with a string `message` and (for requests) a positive integer
//! `referenceId`; fields it does not know are ignored. Every reading failure becomes a
//! [`ProtocolError`] carrying the error code and a sentence for the person who wrote the client.
//!
//! Writing ([`mod@write`]): one constructor per message the router sends, each building its JSON
//! with `time` in RFC 3339 UTC milliseconds. Events are serialized once and the resulting
//! bytes shared by all their recipients ([`SharedText`]).
//!
//! This module is a codec and nothing else: it counts nothing and sends nothing, so what it
//! builds can be tested alone and used by whoever sends it.

pub mod asyncapi;
pub mod calls;
pub mod read;
mod wire;
pub mod write;

pub use calls::{
    call_event, is_call_event, CallEventName, CallEventOut, CallState, CallView, Calls,
};
pub use read::{parse_request, Request, Resume};
pub use write::*;

use bytestring::ByteString;
use std::borrow::Cow;

/// Bytes of one serialized message, cheap to clone (reference-counted), ready to be written as
/// a WebSocket text frame to any number of clients.
pub type SharedText = ByteString;

/// The T-Library compatible error codes of the client protocol.
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

/// Why a client's connection ended: the close code it got and the `reason` label of
/// `csta_router_client_disconnects_total`. The one list of reasons: metrics export each at 0
/// from [`CloseCause::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCause {
    /// The client closed, or the connection dropped.
    Closed,
    /// The outbound queue overflowed, or a write could not finish (4008).
    SlowConsumer,
    /// Pings went unanswered.
    PingTimeout,
    /// The client broke the protocol (1008, 1009, 1002).
    ProtocolError,
    /// Authentication failed (1008), or the address is locked out after failures (1013).
    Auth,
    /// Over the connection limit (1013).
    Limit,
    /// The router is stopping (1001).
    Shutdown,
    /// No valid `RequestOpen` within `open-timeout` (1008).
    OpenTimeout,
    /// Another connection resumed the session (4009).
    TakenOver,
}

impl CloseCause {
    /// Every cause, for metrics exported at 0.
    pub const ALL: [CloseCause; 9] = [
        CloseCause::Closed,
        CloseCause::SlowConsumer,
        CloseCause::PingTimeout,
        CloseCause::ProtocolError,
        CloseCause::Auth,
        CloseCause::Limit,
        CloseCause::Shutdown,
        CloseCause::OpenTimeout,
        CloseCause::TakenOver,
    ];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            CloseCause::Closed => "closed",
            CloseCause::SlowConsumer => "slow_consumer",
            CloseCause::PingTimeout => "ping_timeout",
            CloseCause::ProtocolError => "protocol_error",
            CloseCause::Auth => "auth",
            CloseCause::Limit => "limit",
            CloseCause::Shutdown => "shutdown",
            CloseCause::OpenTimeout => "open_timeout",
            CloseCause::TakenOver => "taken_over",
        }
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
}
