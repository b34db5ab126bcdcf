#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Property tests of the CSTA codec: message and frame round trips, no panic on hostile
//! input (arbitrary bytes, XML-like token soup, mutations of valid messages and frames), and
//! the streaming reader agreeing with the reference reader on all of it.

mod csta_common;

use bytes::BytesMut;
use csta_common::tree::Element;
use csta_router::csta::message::ERROR_CATEGORIES;
use csta_router::csta::{
    encode_frame, AccodeEncoding, CallEvent, CallEventKind, Connection, ConnectionChange,
    CstaCodec, CstaError, Dialect, EscapeRoot, Frame, HotDeskAction, HotDeskEvent, HotDeskRequest,
    HotDeskState, InvokeId, Message, PrivateDataPosition,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::Union;
use tokio_util::codec::{Decoder, Encoder};

const CASES: u32 = 4096;

/// The default dialect and the second one (ed6, `EscapeService`, `extensions`, hex).
fn dialects() -> [Dialect; 2] {
    [
        Dialect::default(),
        Dialect {
            csta_namespace: "http://www.ecma-international.org/standards/ecma-323/csta/ed6"
                .to_owned(),
            hotdesk_namespace: "urn:csta-router:hotdesk".to_owned(),
            escape_root: EscapeRoot::EscapeService,
            private_data: PrivateDataPosition::Extensions,
            accode_encoding: AccodeEncoding::Hex,
            device: Default::default(),
        },
    ]
}

// ---------------------------------------------------------------------------------------------
// Strategies

/// A character allowed in XML 1.0 text, except CR (which XML end-of-line handling turns into LF).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

fn xml_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::char::range('0', '9'),
        2 => prop::char::range('a', 'z'),
        3 => prop::sample::select(vec!['<', '>', '&', '"', '\'', ';', '#', '=', '/', '?', '!', '[', ']', '-']),
        2 => prop::sample::select(vec![' ', ' ', '\t', '\n', '\u{a0}', '\u{2028}', '\u{3000}']),
        2 => prop::sample::select(vec!['ü', 'é', 'ß', '€', '日', '本', '😀', '\u{fffd}', '\u{85}']),
        2 => any::<char>().prop_filter("an XML 1.0 character", |c| is_xml_char(*c)),
    ]
}

/// A character that may start or end a value: the reader trims text, so not whitespace.
fn edge_char() -> impl Strategy<Value = char> {
    xml_char().prop_filter("not whitespace", |c| !c.is_whitespace())
}

/// A non-empty value without leading or trailing whitespace, with XML special characters,
/// interior whitespace and non-ASCII.
fn text() -> impl Strategy<Value = String> {
    (
        edge_char(),
        vec(xml_char(), 0..12),
        edge_char(),
        any::<bool>(),
    )
        .prop_map(|(first, middle, last, one_char)| {
            let mut s = String::new();
            s.push(first);
            if !one_char {
                s.extend(middle);
                s.push(last);
            }
            s
        })
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    prop::option::of(text())
}

fn connection() -> impl Strategy<Value = Connection> {
    (opt_text(), opt_text()).prop_map(|(call_id, device_id)| Connection { call_id, device_id })
}

/// Roots the decoder gives a meaning to, so that `Message::Other` must avoid them.
const KNOWN_ROOTS: &[&str] = &[
    "RequestSystemStatus",
    "RequestSystemStatusResponse",
    "SystemStatus",
    "SystemStatusResponse",
    "MonitorStart",
    "MonitorStartResponse",
    "MonitorStop",
    "MonitorStopResponse",
    "Escape",
    "EscapeService",
    "EscapeResponse",
    "EscapeServiceResponse",
    "CallInformationEvent",
    "AssociateData",
    "AssociateDataResponse",
    "CSTAErrorCode",
    "TransferredEvent",
];

/// Which devices a kind of call event carries: (subject device, other device).
fn devices_of(kind: CallEventKind) -> (bool, bool) {
    use CallEventKind::*;
    match kind {
        CallCleared => (false, false),
        ServiceInitiated | ConnectionCleared | Held | Retrieved => (true, false),
        Originated | Delivered | Established | Transferred | Diverted => (true, true),
    }
}

fn call_event() -> impl Strategy<Value = Message> {
    (
        prop::sample::select(CallEventKind::ALL.to_vec()),
        opt_text(),
        connection(),
        opt_text(),
        opt_text(),
        opt_text(),
        vec(
            (
                prop::option::of(connection()),
                prop::option::of(connection()),
            ),
            0..3,
        ),
    )
        .prop_map(
            |(kind, cross_ref, connection, device, other_device, cause, changes)| {
                let (has_device, has_other) = devices_of(kind);
                // Only transfers carry changes, and an item with neither connection is none.
                let changes = changes
                    .into_iter()
                    .filter(|_| kind == CallEventKind::Transferred)
                    .filter(|(old, new)| old.is_some() || new.is_some())
                    .map(|(old, new)| ConnectionChange { old, new })
                    .collect();
                Message::Call(CallEvent {
                    kind,
                    cross_ref,
                    connection,
                    device: device.filter(|_| has_device),
                    other_device: other_device.filter(|_| has_other),
                    cause,
                    changes,
                })
            },
        )
}

/// Every variant of `Message`.
fn message() -> impl Strategy<Value = Message> {
    let other_name = "[A-Za-z_][A-Za-z0-9_.-]{0,20}"
        .prop_filter("a root the decoder does not use", |n| {
            !KNOWN_ROOTS.contains(&n.as_str()) && CallEventKind::ALL.iter().all(|k| k.root() != n)
        });
    Union::new(vec![
        Just(Message::RequestSystemStatus).boxed(),
        text()
            .prop_map(|status| Message::RequestSystemStatusResponse { status })
            .boxed(),
        text()
            .prop_map(|status| Message::SystemStatus {
                status: Some(status),
            })
            .boxed(),
        Just(Message::SystemStatusResponse).boxed(),
        text()
            .prop_map(|device| Message::MonitorStart { device })
            .boxed(),
        text()
            .prop_map(|cross_ref| Message::MonitorStartResponse { cross_ref })
            .boxed(),
        text()
            .prop_map(|cross_ref| Message::MonitorStop { cross_ref })
            .boxed(),
        Just(Message::MonitorStopResponse).boxed(),
        (text(), opt_text())
            .prop_map(|(guest, host)| {
                Message::Escape(HotDeskRequest {
                    guest,
                    action: match host {
                        Some(host) => HotDeskAction::Associate { host },
                        None => HotDeskAction::Cancel,
                    },
                })
            })
            .boxed(),
        Just(Message::EscapeResponse).boxed(),
        (any::<bool>(), opt_text(), text(), opt_text())
            .prop_map(
                |(established, cross_ref, guest, host)| Message::PrivateEvent {
                    cross_ref,
                    event: HotDeskEvent {
                        state: if established {
                            HotDeskState::Established
                        } else {
                            HotDeskState::Cancelled
                        },
                        guest,
                        host,
                    },
                },
            )
            .boxed(),
        call_event().boxed(),
        call_event().boxed(),
        (opt_text(), connection(), opt_text(), text())
            .prop_map(
                |(cross_ref, connection, device, account_code)| Message::CallInformation {
                    cross_ref,
                    connection,
                    device,
                    account_code: Some(account_code),
                },
            )
            .boxed(),
        (connection(), text())
            .prop_map(|(call, account_code)| Message::AssociateData { call, account_code })
            .boxed(),
        Just(Message::AssociateDataResponse).boxed(),
        (prop::sample::select(&ERROR_CATEGORIES[..]), text())
            .prop_map(|(category, value)| Message::Error(CstaError::new(category, value)))
            .boxed(),
        other_name.prop_map(|name| Message::Other { name }).boxed(),
    ])
}

/// XML-like token soup, to reach deeper into the reader than random bytes do.
fn xml_soup() -> impl Strategy<Value = Vec<u8>> {
    let token = prop::sample::select(vec![
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
        "<",
        ">",
        "</",
        "/>",
        "<!--",
        "-->",
        "<![CDATA[",
        "]]>",
        "<!DOCTYPE a>",
        "<?pi x?>",
        "&amp;",
        "&lt;",
        "&#x41;",
        "&#65;",
        "&#0;",
        "&#xD800;",
        "&#x110000;",
        "&bogus;",
        "&",
        ";",
        "#",
        "=",
        "\"",
        "'",
        " ",
        "\n",
        "\r",
        "\t",
        ":",
        "csta:",
        "xmlns",
        "xmlns:csta",
        "a",
        "b",
        "ü",
        "5001",
        "Escape",
        "EscapeService",
        "PrivateEvent",
        "privateData",
        "private",
        "extensions",
        "guestAssociatedExtension",
        "guestAssociatedEvent",
        "action",
        "associate",
        "cancel",
        "state",
        "established",
        "guestDevice",
        "hostDevice",
        "deviceIdentifier",
        "monitorCrossRefID",
        "monitorObject",
        "deviceObject",
        "MonitorStart",
        "systemStatus",
        "RequestSystemStatusResponse",
        "CSTAErrorCode",
        "operation",
        "CallInformationEvent",
        "accountInfo",
        "AssociateData",
        "accountCode",
        "existingCall",
        "callID",
        "deviceID",
        "DeliveredEvent",
        "connection",
        "\u{feff}",
        "\u{0}",
        "\u{ff}",
    ]);
    prop_oneof![
        vec(token.clone(), 0..80).prop_map(|ts| ts.concat().into_bytes()),
        // Nested deeper than the reader allows, with noise.
        (1usize..80, vec(token, 0..8)).prop_map(|(depth, ts)| {
            let mut s = "<a>".repeat(depth);
            s.push_str(&ts.concat());
            s.push_str(&"</a>".repeat(depth));
            s.into_bytes()
        }),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(prop::sample::Index, u8),
    Set(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Remove(prop::sample::Index),
    Truncate(prop::sample::Index),
    Duplicate(prop::sample::Index, prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    use prop::sample::Index;
    prop_oneof![
        (any::<Index>(), 1u8..=255).prop_map(|(i, m)| Mutation::Flip(i, m)),
        (
            any::<Index>(),
            prop::sample::select(b"<>/&;:\"' \x00\xff0".to_vec())
        )
            .prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<Index>().prop_map(Mutation::Remove),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Duplicate(a, b)),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        if bytes.is_empty() {
            return;
        }
        match m {
            Mutation::Flip(i, mask) => {
                let i = i.index(bytes.len());
                bytes[i] ^= mask;
            }
            Mutation::Set(i, b) => {
                let i = i.index(bytes.len());
                bytes[i] = *b;
            }
            Mutation::Insert(i, b) => {
                let i = i.index(bytes.len() + 1);
                bytes.insert(i, *b);
            }
            Mutation::Remove(i) => {
                bytes.remove(i.index(bytes.len()));
            }
            Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len())),
            Mutation::Duplicate(a, b) => {
                let (a, b) = (a.index(bytes.len()), b.index(bytes.len()));
                let (from, to) = (a.min(b), a.max(b));
                let piece = bytes[from..to].to_vec();
                bytes.splice(to..to, piece);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Decode everything the codec will give from `bytes`, checking that each frame consumes
/// bytes (so the loop ends), and parse each body; must never panic.
fn drain_codec(bytes: &[u8]) {
    let mut buf = BytesMut::from(bytes);
    let [d1, d2] = dialects();
    loop {
        let before = buf.len();
        match CstaCodec.decode(&mut buf) {
            Ok(Some(frame)) => {
                assert!(buf.len() < before, "a frame consumed no bytes");
                assert_eq!(before - buf.len(), frame.body.len() + 8);
                let _ = Message::decode(&frame.body, &d1);
                let _ = Message::decode(&frame.body, &d2);
            }
            Ok(None) | Err(_) => break,
        }
    }
}

/// Read `bytes` with both readers in both dialects: no panic, and the same result from the
/// streaming reader as from the reference reader.
fn parse_everything(bytes: &[u8]) {
    let _ = Element::parse(bytes);
    for d in dialects() {
        assert_eq!(
            Message::decode(bytes, &d),
            csta_common::tree::decode(bytes, &d),
            "the readers differ on {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

fn feed_in_chunks(wire: &[u8], chunks: &[usize]) -> (Vec<Frame>, BytesMut) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut at = 0;
    let mut sizes = chunks.iter().cycle();
    while at < wire.len() {
        let n = (*sizes.next().unwrap()).min(wire.len() - at);
        buf.extend_from_slice(&wire[at..at + n]);
        at += n;
        while let Some(frame) = CstaCodec.decode(&mut buf).unwrap() {
            out.push(frame);
        }
    }
    (out, buf)
}

// ---------------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// (a) What we write, we read back as the same message, in both dialects.
    #[test]
    fn message_round_trip(m in message()) {
        for d in dialects() {
            let xml = m.encode(&d);
            prop_assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><"));
            let namespace_attr = format!(" xmlns=\"{}\"", d.csta_namespace);
            prop_assert!(xml.contains(&namespace_attr));
            prop_assert_eq!(Message::decode(xml.as_bytes(), &d), Ok(m.clone()), "{}", xml);
            // What we write is well-formed and its root is the message's name (or the
            // dialect's escape root).
            let root = Element::parse(xml.as_bytes()).unwrap();
            match &m {
                Message::Escape(_) => prop_assert_eq!(root.name.as_str(), d.escape_root.request()),
                Message::EscapeResponse => {
                    prop_assert_eq!(root.name.as_str(), d.escape_root.response())
                }
                _ => prop_assert_eq!(root.name.as_str(), m.name()),
            }
        }
    }

    /// (a) The reader is tolerant of either dialect's output; only account codes depend on
    /// the reading dialect.
    #[test]
    fn reader_tolerates_the_other_dialect(m in message()) {
        let [d1, d2] = dialects();
        if !matches!(m, Message::CallInformation { .. } | Message::AssociateData { .. }) {
            prop_assert_eq!(Message::decode(m.encode(&d2).as_bytes(), &d1), Ok(m.clone()));
            prop_assert_eq!(Message::decode(m.encode(&d1).as_bytes(), &d2), Ok(m));
        }
    }

    /// (b) Frames survive encoding and any cutting of the byte stream into reads.
    #[test]
    fn frame_round_trip(
        frames in vec((0u16..=9999, vec(any::<u8>(), 0..3000)), 1..4),
        chunks in vec(prop_oneof![Just(1usize), 1usize..16, 1usize..4096], 1..32),
    ) {
        let frames: Vec<Frame> = frames
            .into_iter()
            .map(|(id, body)| Frame::new(InvokeId::new(id).unwrap(), body))
            .collect();
        let mut wire = BytesMut::new();
        for f in &frames {
            CstaCodec.encode(f.clone(), &mut wire).unwrap();
        }
        let expected_len: usize = frames.iter().map(|f| f.body.len() + 8).sum();
        prop_assert_eq!(wire.len(), expected_len);
        let (got, rest) = feed_in_chunks(&wire, &chunks);
        prop_assert_eq!(got, frames);
        prop_assert!(rest.is_empty());
    }

    /// (b) A whole message framed, cut into reads, and read back.
    #[test]
    fn framed_message_round_trip(
        id in 0u16..=9999,
        m in message(),
        chunks in vec(1usize..64, 1..16),
        second in any::<bool>(),
    ) {
        let d = dialects()[usize::from(second)].clone();
        let invoke_id = InvokeId::new(id).unwrap();
        let frame = encode_frame(invoke_id, &m, &d).unwrap();
        let bytes = frame.to_bytes().unwrap();
        // The header by hand: 00 00, the length in bytes, the four digits.
        let len = u16::try_from(bytes.len()).unwrap().to_be_bytes();
        prop_assert_eq!(&bytes[..4], &[0, 0, len[0], len[1]][..]);
        let digits = format!("{id:04}");
        prop_assert_eq!(&bytes[4..8], digits.as_bytes());
        let (got, rest) = feed_in_chunks(&bytes, &chunks);
        prop_assert!(rest.is_empty());
        prop_assert_eq!(got.len(), 1);
        prop_assert_eq!(got[0].invoke_id, invoke_id);
        prop_assert_eq!(Message::decode(&got[0].body, &d), Ok(m));
    }

    /// (c) Arbitrary bytes never make the frame codec or the readers panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..2048)) {
        drain_codec(&bytes);
        parse_everything(&bytes);
    }

    /// (c) Arbitrary bytes after a plausible header (so the codec gets past the magic), with
    /// lengths biased to the edges: under the header size, exactly the bytes present, a few
    /// more or fewer, the maximum.
    #[test]
    fn arbitrary_frames_never_panic(
        len_kind in 0u8..5,
        raw_len in any::<u16>(),
        delta in -3i32..=3,
        id in any::<[u8; 4]>(),
        digits in any::<bool>(),
        body in vec(any::<u8>(), 0..2048),
    ) {
        let exact = i32::try_from(body.len() + 8).unwrap();
        let len = match len_kind {
            0 => raw_len % 9,
            1 => u16::try_from(exact).unwrap(),
            2 => u16::try_from((exact + delta).max(0)).unwrap(),
            3 => u16::MAX,
            _ => raw_len,
        };
        let mut bytes = vec![0, 0];
        bytes.extend_from_slice(&len.to_be_bytes());
        if digits {
            bytes.extend(id.iter().map(|b| b'0' + b % 10));
        } else {
            bytes.extend_from_slice(&id);
        }
        bytes.extend_from_slice(&body);
        drain_codec(&bytes);
    }

    /// (c) XML-like token soup never makes the readers panic.
    #[test]
    fn xml_soup_never_panics(bytes in xml_soup()) {
        parse_everything(&bytes);
    }

    /// (c) Mutations of valid messages never make the readers panic.
    #[test]
    fn mutated_messages_never_panic(
        m in message(),
        second in any::<bool>(),
        mutations in vec(mutation(), 1..6),
    ) {
        let d = dialects()[usize::from(second)].clone();
        let mut bytes = m.encode(&d).into_bytes();
        mutate(&mut bytes, &mutations);
        parse_everything(&bytes);
    }

    /// (d) The streaming reader reads generated documents (as written, pretty-printed,
    /// prefixed, with character references, CDATA, cut short) exactly as the reference reader
    /// does, in both dialects.
    #[test]
    fn readers_agree_on_generated_documents(
        m in message(),
        second in any::<bool>(),
        variant in 0usize..12,
    ) {
        let d = dialects()[usize::from(second)].clone();
        let xml = m.encode(&d).into_bytes();
        let mut docs = csta_common::corpus::variants(&xml, 5);
        docs.push(xml);
        let doc = &docs[variant % docs.len()];
        parse_everything(doc);
    }

    /// (c) Mutations of valid frames (header included) never make the codec panic.
    #[test]
    fn mutated_frames_never_panic(
        ms in vec((0u16..=9999, message()), 1..4),
        mutations in vec(mutation(), 1..6),
    ) {
        let d = Dialect::default();
        let mut bytes = Vec::new();
        for (id, m) in &ms {
            let frame = encode_frame(InvokeId::new(*id).unwrap(), m, &d).unwrap();
            bytes.extend_from_slice(&frame.to_bytes().unwrap());
        }
        mutate(&mut bytes, &mutations);
        drain_codec(&bytes);
    }
}
