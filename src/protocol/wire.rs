//! A request's fields as read from its frame, before the router makes sense of them
//! ([`Wire`]), and the fast path that reads them.
//!
//! The fast path: a frame as clients send nearly all of them (one flat JSON object, strings
//! without escapes, non-negative integers, booleans, `null`, objects one level deep) is read
//! straight into the request's fields, borrowing every string from the frame. Why: every
//! request is read on the hot path, and serde's general reader spent more instructions on a
//! hot-desk request than the rest of the session's handling of it. Anything the fast path does
//! not take (escapes, arrays, negative or fractional numbers, a field twice, anything
//! malformed) is read by serde as before, which also words every error, so the two agree on
//! every frame the fast path takes (a test checks it).

use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;

/// One field of a request as read: just what is needed to accept it or say what is wrong with
/// it. Strings are borrowed from the frame unless they contain escapes.
///
/// Why not `serde_json::Value`: every request is read on the hot path, and a `Value` builds a
/// tree map and owned strings for every field before we look at the four we need.
#[derive(Debug, PartialEq)]
pub(super) enum Field<'a> {
    Str(Cow<'a, str>),
    Uint(u64),
    Object(Vec<(Cow<'a, str>, Field<'a>)>),
    /// A boolean.
    Bool(bool),
    /// A negative or fractional number.
    Number,
    /// `null` (inside an object) or an array.
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
            fn visit_bool<E>(self, v: bool) -> Result<Field<'a>, E> {
                Ok(Field::Bool(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field<'a>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Field::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field<'a>, A::Error> {
                let mut fields = Vec::new();
                while let Some((Key(k), v)) = map.next_entry::<Key<'a>, Field<'a>>()? {
                    fields.push((k, v));
                }
                Ok(Field::Object(fields))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A key of an object inside a request, borrowed from the frame unless it has escapes (serde's
/// own `Cow<str>` always copies).
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// The fields of a request the router reads (`null` reads as absent); others are ignored.
#[derive(Deserialize, Default, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(super) struct Wire<'a> {
    #[serde(borrow, default)]
    pub(super) message: Option<Field<'a>>,
    #[serde(borrow, default)]
    pub(super) reference_id: Option<Field<'a>>,
    #[serde(borrow, default)]
    pub(super) this_dn: Option<Field<'a>>,
    #[serde(borrow, default)]
    pub(super) register_mode: Option<Field<'a>>,
    #[serde(borrow, default)]
    pub(super) call_events: Option<Field<'a>>,
    #[serde(borrow, default)]
    pub(super) private_msg_id: Option<Field<'a>>,
    #[serde(borrow, default)]
    pub(super) conn_id: Option<Field<'a>>,
    #[serde(borrow, default)]
    pub(super) extensions: Option<Field<'a>>,
    #[serde(borrow, default)]
    pub(super) protocol_version: Option<Field<'a>>,
    #[serde(borrow, default)]
    pub(super) application: Option<Field<'a>>,
    #[serde(borrow, default)]
    pub(super) token: Option<Field<'a>>,
    #[serde(borrow, default)]
    pub(super) resume: Option<Field<'a>>,
}

/// The frame's fields, when it is a simple request; `None` to let serde read it.
pub(super) fn simple_wire(text: &str) -> Option<Wire<'_>> {
    let mut s = Scanner { text, at: 0 };
    s.skip_ws();
    s.eat(b'{')?;
    let mut wire = Wire::default();
    let mut seen = 0u16;
    s.skip_ws();
    if s.peek()? == b'}' {
        s.at += 1;
    } else {
        loop {
            s.skip_ws();
            let key = s.string()?;
            s.skip_ws();
            s.eat(b':')?;
            s.skip_ws();
            let value = s.value(true)?;
            let (bit, slot) = slot(&mut wire, key)?;
            // A known field twice is serde's error to word.
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
            if let Some(slot) = slot {
                // `null` reads as absent.
                *slot = (value != Field::Other).then_some(value);
            }
            s.skip_ws();
            match s.next()? {
                b',' => continue,
                b'}' => break,
                _ => return None,
            }
        }
    }
    s.skip_ws();
    (s.at == text.len()).then_some(wire)
}

/// The field of `wire` named `key` and its bit among the fields seen (`None` for a field the
/// router does not read: bit 0, never a duplicate).
#[allow(clippy::type_complexity)]
fn slot<'w, 'a>(
    wire: &'w mut Wire<'a>,
    key: &str,
) -> Option<(u16, Option<&'w mut Option<Field<'a>>>)> {
    let (bit, slot) = match key {
        "message" => (1, &mut wire.message),
        "referenceId" => (1 << 1, &mut wire.reference_id),
        "thisDn" => (1 << 2, &mut wire.this_dn),
        "registerMode" => (1 << 3, &mut wire.register_mode),
        "callEvents" => (1 << 4, &mut wire.call_events),
        "privateMsgId" => (1 << 5, &mut wire.private_msg_id),
        "connId" => (1 << 6, &mut wire.conn_id),
        "extensions" => (1 << 7, &mut wire.extensions),
        "protocolVersion" => (1 << 8, &mut wire.protocol_version),
        "application" => (1 << 9, &mut wire.application),
        "token" => (1 << 10, &mut wire.token),
        "resume" => (1 << 11, &mut wire.resume),
        _ => return Some((0, None)),
    };
    Some((bit, Some(slot)))
}

struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn eat(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    /// JSON's whitespace.
    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        let end = self.at.checked_add(word.len())?;
        (self.text.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// A string without escapes or control characters, borrowed.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        let len = self
            .text
            .as_bytes()
            .get(start..)?
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        let end = start + len;
        if self.text.as_bytes().get(end) != Some(&b'"') {
            return None;
        }
        self.at = end + 1;
        self.text.get(start..end)
    }

    /// A non-negative integer that fits in a `u64`, without a leading zero.
    fn integer(&mut self) -> Option<u64> {
        let start = self.at;
        let mut n: u64 = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            self.at += 1;
        }
        let digits = self.at - start;
        let leading_zero = digits > 1 && self.text.as_bytes().get(start) == Some(&b'0');
        // A fraction or an exponent makes it a float: serde's.
        if digits == 0 || leading_zero || matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some(n)
    }

    /// A value; objects only when `nested` is allowed (one level below the request).
    fn value(&mut self, nested: bool) -> Option<Field<'a>> {
        match self.peek()? {
            b'"' => Some(Field::Str(Cow::Borrowed(self.string()?))),
            b'0'..=b'9' => Some(Field::Uint(self.integer()?)),
            b't' => self.literal("true").map(|()| Field::Bool(true)),
            b'f' => self.literal("false").map(|()| Field::Bool(false)),
            b'n' => self.literal("null").map(|()| Field::Other),
            b'{' if nested => self.object(),
            _ => None,
        }
    }

    /// An object of simple values (its fields in order, each as often as it comes).
    fn object(&mut self) -> Option<Field<'a>> {
        self.eat(b'{')?;
        let mut fields = Vec::new();
        self.skip_ws();
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(Field::Object(fields));
        }
        loop {
            self.skip_ws();
            let key = self.string()?;
            self.skip_ws();
            self.eat(b':')?;
            self.skip_ws();
            fields.push((Cow::Borrowed(key), self.value(false)?));
            self.skip_ws();
            match self.next()? {
                b',' => continue,
                b'}' => return Some(Field::Object(fields)),
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// What serde reads from `text`, when it reads a request.
    fn by_serde(text: &str) -> Option<Wire<'_>> {
        serde_json::from_str(text).ok()
    }

    #[test]
    fn the_fast_path_reads_what_serde_reads() {
        let taken = [
            r#"{"message":"RequestPrivateService","referenceId":7,"thisDn":"5001","privateMsgId":1,"extensions":{"HOST_DN":"4001"}}"#,
            r#"{"message":"RequestPrivateService","referenceId":8,"thisDn":"5001","privateMsgId":2}"#,
            " {\n\t\"message\" : \"RequestRegisterAddress\" ,\r\n \"thisDn\":\"5001\", \"registerMode\":\"share\",\"callEvents\":true } \n",
            r#"{"message":"RequestOpen","protocolVersion":1,"application":"desk","token":null}"#,
            r#"{"message":"X","referenceId":0,"extensions":{},"other":false,"more":{"a":null,"b":1}}"#,
            r#"{"message":"X","extensions":{"A":"1","A":"2"},"unknown":1,"unknown":2}"#,
            r#"{"referenceId":18446744073709551615}"#,
            r#"{"message":"é ☎ 𝄞"}"#,
            "{}",
        ];
        for text in taken {
            let fast = simple_wire(text);
            assert!(fast.is_some(), "not taken: {text}");
            assert_eq!(fast, by_serde(text), "{text}");
        }
        // Every frame one byte away from those (deleted or replaced by a character that
        // matters to JSON): whatever the fast path takes, serde reads the same.
        let mut tried = 0;
        for text in taken {
            for at in 0..text.len() {
                if !text.is_char_boundary(at) {
                    continue;
                }
                let rest = &text[at..];
                let skip = rest.chars().next().map_or(0, char::len_utf8);
                let mut variants = vec![format!("{}{}", &text[..at], &rest[skip..])];
                for c in [
                    '"', '\\', '{', '}', '[', ',', ':', '0', '1', ' ', '-', '.', 'n', '\n',
                ] {
                    variants.push(format!("{}{c}{}", &text[..at], &rest[skip..]));
                    variants.push(format!("{}{c}{}", &text[..at], rest));
                }
                for v in &variants {
                    tried += 1;
                    if let Some(fast) = simple_wire(v) {
                        assert_eq!(Some(fast), by_serde(v), "{v}");
                    }
                }
            }
        }
        assert!(tried > 10_000, "{tried}");
        // Left to serde: each one differs from a simple request in one way.
        let left = [
            r#"{"message":"Req\"uest"}"#,
            r#"{"mess\u0061ge":"X"}"#,
            r#"{"referenceId":-1}"#,
            r#"{"referenceId":1.5}"#,
            r#"{"referenceId":1e3}"#,
            r#"{"referenceId":01}"#,
            r#"{"referenceId":18446744073709551616}"#,
            r#"{"message":"X","message":"Y"}"#,
            r#"{"message":null,"message":"Y"}"#,
            r#"{"extensions":[1,2]}"#,
            r#"{"resume":{"lastEventSeq":{"sw1":1}}}"#,
            "{\"message\":\"tab\there\"}",
            r#"{"message":"X",}"#,
            r#"{"message":"X"} x"#,
            r#"{"message":"X""#,
            r#"{"message" "X"}"#,
            r#"[1]"#,
            r#""#,
            r#"{"message":tru}"#,
        ];
        for text in left {
            assert!(simple_wire(text).is_none(), "taken: {text}");
        }
    }
}
