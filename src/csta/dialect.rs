//! Per-switch dialect: the few ways in which switches differ on the wire.
//!
//! The dialect decides what we *write*. What we *read* is always tolerant of every variant
//! (any namespace, both escape roots, both `privateData` positions), except the account-code
//! encoding, which cannot be guessed from the bytes (`"1234"` is valid text and valid hex) and so
//! is used both ways.

use serde::Deserialize;

use super::device::DeviceNaming;

/// The ECMA-323 edition 3 namespace, the default.
pub const CSTA_ED3_NAMESPACE: &str =
    "http://www.ecma-international.org/standards/ecma-323/csta/ed3";
/// The default namespace of the hot-desking private payload.
pub const HOTDESK_NAMESPACE: &str = "urn:csta-router:hotdesk";

/// The root element name of an escape service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum EscapeRoot {
    /// `<Escape>`, as ECMA-323 names it.
    #[default]
    Escape,
    /// `<EscapeService>`, as some switches name it.
    EscapeService,
}

impl EscapeRoot {
    /// The request's root element name.
    pub fn request(self) -> &'static str {
        match self {
            EscapeRoot::Escape => "Escape",
            EscapeRoot::EscapeService => "EscapeService",
        }
    }

    /// The positive response's root element name.
    pub fn response(self) -> &'static str {
        match self {
            EscapeRoot::Escape => "EscapeResponse",
            EscapeRoot::EscapeService => "EscapeServiceResponse",
        }
    }
}

/// Where `privateData` sits in escapes and private events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrivateDataPosition {
    /// `privateData/private` directly under the root (the link profile).
    #[default]
    Root,
    /// `extensions/privateData/private`, as ordinary services carry it.
    Extensions,
}

/// How account codes are written in `AssociateData/accountCode` and
/// `CallInformationEvent/accountInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccodeEncoding {
    /// Plain characters, as most switches send.
    #[default]
    Text,
    /// hexBinary of the code's bytes, as the schema types it (written upper-case, read either).
    Hex,
}

/// The dialect of one switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialect {
    /// The namespace written on every root element.
    pub csta_namespace: String,
    /// The namespace of the hot-desking payload.
    pub hotdesk_namespace: String,
    /// The escape root element name.
    pub escape_root: EscapeRoot,
    /// Where `privateData` is written.
    pub private_data: PrivateDataPosition,
    /// How account codes are written and read.
    pub accode_encoding: AccodeEncoding,
    /// How devices are named on this switch (`device-id-form`, `dn-prefix`, `dn-suffix`):
    /// the router writes them so and finds DNs in them.
    pub device: DeviceNaming,
}

impl Default for Dialect {
    fn default() -> Self {
        Dialect {
            csta_namespace: CSTA_ED3_NAMESPACE.to_owned(),
            hotdesk_namespace: HOTDESK_NAMESPACE.to_owned(),
            escape_root: EscapeRoot::Escape,
            private_data: PrivateDataPosition::Root,
            accode_encoding: AccodeEncoding::Text,
            device: DeviceNaming::default(),
        }
    }
}

impl AccodeEncoding {
    /// The account code as written on the wire.
    pub fn encode(self, code: &str) -> String {
        match self {
            AccodeEncoding::Text => code.to_owned(),
            AccodeEncoding::Hex => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                let mut out = String::with_capacity(code.len() * 2);
                for b in code.bytes() {
                    out.push(HEX[(b >> 4) as usize] as char);
                    out.push(HEX[(b & 0x0f) as usize] as char);
                }
                out
            }
        }
    }

    /// The account code read from the wire; `None` when hex is expected and the text is not
    /// hexBinary of UTF-8.
    pub fn decode(self, wire: &str) -> Option<String> {
        match self {
            AccodeEncoding::Text => Some(wire.to_owned()),
            AccodeEncoding::Hex => {
                let wire = wire.as_bytes();
                if !wire.len().is_multiple_of(2) {
                    return None;
                }
                let mut bytes = Vec::with_capacity(wire.len() / 2);
                for pair in wire.chunks_exact(2) {
                    let hi = (pair[0] as char).to_digit(16)?;
                    let lo = (pair[1] as char).to_digit(16)?;
                    bytes.push((hi * 16 + lo) as u8);
                }
                String::from_utf8(bytes).ok()
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hex_account_codes() {
        assert_eq!(AccodeEncoding::Hex.encode("12A"), "313241");
        assert_eq!(AccodeEncoding::Hex.decode("313241").unwrap(), "12A");
        assert_eq!(AccodeEncoding::Hex.decode("31324a").unwrap(), "12J");
        assert!(AccodeEncoding::Hex.decode("3").is_none());
        assert!(AccodeEncoding::Hex.decode("zz").is_none());
    }
}
