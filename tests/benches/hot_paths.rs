#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Micro-benchmarks of the router's hot paths (`cargo bench --bench hot_paths`):
//!
//! - `csta decode/<message>`: a CSTA frame read off the wire and its XML read into a
//!   `Message`, for every message the router's link handles per operation or per event (the
//!   hot-desk private event and the escape's response, the monitor-start response, each call
//!   event, the account-code event 501, `SystemStatus`, a negative response), each with the
//!   streaming reader (`new`) and with the tree reader it replaced (`old`, the tests'
//!   reference reader), side by side;
//! - `csta encode/…`: the hot-desk escape written as a frame, into a fresh buffer and into a
//!   reused one;
//! - `json encode/<event>`: the JSON of each event the router writes to clients (serialized once
//!   per event, then shared by every subscriber);
//! - `json decode/<request>`: a client's request read.
//!
//! The input bytes are written out by hand from SPEC section 5 and the client protocol (not
//! produced by the router's encoder), and each benchmark checks its result once before timing,
//! so a benchmark that stopped doing the work would fail rather than get faster. `cargo test`
//! runs each once.

#[path = "../csta_common/tree.rs"]
mod tree;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

/// The system allocator, counting allocations: the decode loop reports allocations per decode
/// (a figure that does not depend on the machine's load).
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

use bytes::BytesMut;
use criterion::{criterion_group, Criterion, Throughput};
use csta_router::csta::{
    encode_frame, encode_frame_into, CallEvent, CallEventKind, Connection, ConnectionChange,
    CstaCodec, CstaError, Dialect, HotDeskAction, HotDeskEvent, HotDeskRequest, HotDeskState,
    InvokeId, Message,
};
use csta_router::protocol::{
    CallEventName, CallEventOut, CallState, ErrorCode, ProtocolError, RegisterMode, Request,
};
use std::hint::black_box;
use tokio_util::codec::Decoder;

const NS: &str = r#" xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3""#;

/// A frame around `xml`: `00 00`, the length (header included), invoke ID `invoke`.
fn frame(invoke: &str, xml: &str) -> Vec<u8> {
    let len = (8 + xml.len()) as u16;
    let mut out = vec![0, 0];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(invoke.as_bytes());
    out.extend_from_slice(xml.as_bytes());
    out
}

/// The hot-desk established event, a frame whose header is written out byte by byte:
/// length 0x018b = 395 bytes, header included, invoke ID 9999.
const PRIVATE_EVENT_FRAME: &[u8] = b"\x00\x00\x01\x8b9999\
<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
<PrivateEvent xmlns=\"http://www.ecma-international.org/standards/ecma-323/csta/ed3\">\
<monitorCrossRefID>77</monitorCrossRefID>\
<privateData><private>\
<guestAssociatedEvent xmlns=\"urn:csta-router:hotdesk\">\
<state>established</state><guestDevice>5001</guestDevice><hostDevice>4001</hostDevice>\
</guestAssociatedEvent>\
</private></privateData>\
</PrivateEvent>";

fn call(
    kind: CallEventKind,
    conn: (&str, &str),
    device: Option<&str>,
    other: Option<&str>,
    cause: &str,
) -> Message {
    Message::Call(CallEvent {
        kind,
        cross_ref: Some("77".into()),
        connection: Connection::new(conn.0, conn.1),
        device: device.map(Into::into),
        other_device: other.map(Into::into),
        cause: Some(cause.into()),
        changes: vec![],
    })
}

/// (name, invoke ID, XML body, what it must decode to), every body written by hand.
fn csta_inputs() -> Vec<(&'static str, &'static str, String, Message)> {
    let x = r#"<?xml version="1.0" encoding="UTF-8"?>"#;
    let dev =
        |name: &str, v: &str| format!("<{name}><deviceIdentifier>{v}</deviceIdentifier></{name}>");
    let conn = |name: &str, c: &str, d: &str| {
        format!("<{name}><callID>{c}</callID><deviceID>{d}</deviceID></{name}>")
    };
    let xref = "<monitorCrossRefID>77</monitorCrossRefID>";
    use CallEventKind::*;
    vec![
        (
            "EscapeResponse (hot-desk service)",
            "0012",
            format!("{x}<EscapeResponse{NS}/>"),
            Message::EscapeResponse,
        ),
        (
            "MonitorStartResponse",
            "0013",
            format!("{x}<MonitorStartResponse{NS}><monitorCrossRefID>77</monitorCrossRefID><actualMonitorFilter><callcontrol/></actualMonitorFilter></MonitorStartResponse>"),
            Message::MonitorStartResponse { cross_ref: "77".into() },
        ),
        (
            "ServiceInitiatedEvent",
            "9999",
            format!("{x}<ServiceInitiatedEvent{NS}>{xref}{}{}<localConnectionInfo>initiated</localConnectionInfo><cause>newCall</cause></ServiceInitiatedEvent>",
                conn("initiatedConnection", "C1", "5001"), dev("initiatingDevice", "5001")),
            call(ServiceInitiated, ("C1", "5001"), Some("5001"), None, "newCall"),
        ),
        (
            "OriginatedEvent",
            "9999",
            format!("{x}<OriginatedEvent{NS}>{xref}{}{}{}<localConnectionInfo>connected</localConnectionInfo><cause>newCall</cause></OriginatedEvent>",
                conn("originatedConnection", "C1", "5001"), dev("callingDevice", "5001"), dev("calledDevice", "4001")),
            call(Originated, ("C1", "5001"), Some("5001"), Some("4001"), "newCall"),
        ),
        (
            "DeliveredEvent",
            "9999",
            format!("{x}<DeliveredEvent{NS}>{xref}{}{}{}{}<lastRedirectionDevice><notRequired/></lastRedirectionDevice><localConnectionInfo>alerting</localConnectionInfo><cause>newCall</cause></DeliveredEvent>",
                conn("connection", "C1", "4001"), dev("alertingDevice", "4001"), dev("callingDevice", "5001"), dev("calledDevice", "4001")),
            call(Delivered, ("C1", "4001"), Some("4001"), Some("5001"), "newCall"),
        ),
        (
            "EstablishedEvent",
            "9999",
            format!("{x}<EstablishedEvent{NS}>{xref}{}{}{}{}<lastRedirectionDevice><notRequired/></lastRedirectionDevice><localConnectionInfo>connected</localConnectionInfo><cause>newCall</cause></EstablishedEvent>",
                conn("establishedConnection", "C1", "4001"), dev("answeringDevice", "4001"), dev("callingDevice", "5001"), dev("calledDevice", "4001")),
            call(Established, ("C1", "4001"), Some("4001"), Some("5001"), "newCall"),
        ),
        (
            "HeldEvent",
            "9999",
            format!("{x}<HeldEvent{NS}>{xref}{}{}<localConnectionInfo>hold</localConnectionInfo><cause>normal</cause></HeldEvent>",
                conn("heldConnection", "C1", "4001"), dev("holdingDevice", "4001")),
            call(Held, ("C1", "4001"), Some("4001"), None, "normal"),
        ),
        (
            "RetrievedEvent",
            "9999",
            format!("{x}<RetrievedEvent{NS}>{xref}{}{}<localConnectionInfo>connected</localConnectionInfo><cause>normal</cause></RetrievedEvent>",
                conn("retrievedConnection", "C1", "4001"), dev("retrievingDevice", "4001")),
            call(Retrieved, ("C1", "4001"), Some("4001"), None, "normal"),
        ),
        (
            "TransferedEvent",
            "9999",
            format!("{x}<TransferedEvent{NS}>{xref}{}<secondaryOldCall><callID>C2</callID><deviceID>4001</deviceID></secondaryOldCall>{}{}<transferredConnections><connectionListItem>{}{}</connectionListItem></transferredConnections><localConnectionInfo>null</localConnectionInfo><cause>transfer</cause></TransferedEvent>",
                conn("primaryOldCall", "C1", "4001"), dev("transferringDevice", "4001"), dev("transferredToDevice", "4002"),
                conn("newConnection", "C3", "5001"), conn("oldConnection", "C1", "5001")),
            Message::Call(CallEvent {
                changes: vec![ConnectionChange {
                    old: Some(Connection::new("C1", "5001")),
                    new: Some(Connection::new("C3", "5001")),
                }],
                ..match call(Transferred, ("C1", "4001"), Some("4001"), Some("4002"), "transfer") {
                    Message::Call(c) => c,
                    _ => unreachable!(),
                }
            }),
        ),
        (
            "DivertedEvent",
            "9999",
            format!("{x}<DivertedEvent{NS}>{xref}{}{}{}<localConnectionInfo>null</localConnectionInfo><cause>redirected</cause></DivertedEvent>",
                conn("connection", "C1", "4001"), dev("divertingDevice", "4001"), dev("newDestination", "4009")),
            call(Diverted, ("C1", "4001"), Some("4001"), Some("4009"), "redirected"),
        ),
        (
            "ConnectionClearedEvent",
            "9999",
            format!("{x}<ConnectionClearedEvent{NS}>{xref}{}{}<localConnectionInfo>null</localConnectionInfo><cause>normalClearing</cause></ConnectionClearedEvent>",
                conn("droppedConnection", "C1", "4001"), dev("releasingDevice", "4001")),
            call(ConnectionCleared, ("C1", "4001"), Some("4001"), None, "normalClearing"),
        ),
        (
            "CallClearedEvent",
            "9999",
            format!("{x}<CallClearedEvent{NS}>{xref}<clearedCall><callID>C1</callID><deviceID>4001</deviceID></clearedCall><cause>normalClearing</cause></CallClearedEvent>"),
            call(CallCleared, ("C1", "4001"), None, None, "normalClearing"),
        ),
        (
            "CallInformationEvent (account code, 501)",
            "9999",
            format!("{x}<CallInformationEvent{NS}>{xref}{}{}<accountInfo>1234</accountInfo></CallInformationEvent>",
                conn("connection", "C1", "4001"), dev("device", "4001")),
            Message::CallInformation {
                cross_ref: Some("77".into()),
                connection: Connection::new("C1", "4001"),
                device: Some("4001".into()),
                account_code: Some("1234".into()),
            },
        ),
        (
            "SystemStatus",
            "0000",
            format!("{x}<SystemStatus{NS}><systemStatus>normal</systemStatus></SystemStatus>"),
            Message::SystemStatus { status: Some("normal".into()) },
        ),
        (
            "CSTAErrorCode",
            "0014",
            format!("{x}<CSTAErrorCode{NS}><operation>invalidDeviceID</operation></CSTAErrorCode>"),
            Message::Error(CstaError::new("operation", "invalidDeviceID")),
        ),
    ]
}

/// A frame cut from `wire` and read with `decode` (the new or the old reader).
fn read_frame(
    wire: &[u8],
    d: &Dialect,
    decode: fn(&[u8], &Dialect) -> Result<Message, csta_router::csta::DecodeError>,
) -> Message {
    let mut buf = BytesMut::from(wire);
    let frame = CstaCodec
        .decode(&mut buf)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("the frame does not decode"));
    decode(&frame.body, d).unwrap_or_else(|e| panic!("{e}"))
}

fn csta_decode(c: &mut Criterion) {
    let d = Dialect::default();
    let hot_desk = Message::PrivateEvent {
        cross_ref: Some("77".into()),
        event: HotDeskEvent {
            state: HotDeskState::Established,
            guest: "5001".into(),
            host: Some("4001".into()),
        },
    };
    assert_eq!(
        u16::from_be_bytes([0x01, 0x8b]) as usize,
        PRIVATE_EVENT_FRAME.len()
    );
    let mut inputs = vec![(
        "PrivateEvent (hot-desk)",
        PRIVATE_EVENT_FRAME.to_vec(),
        hot_desk,
    )];
    for (name, invoke, xml, expected) in csta_inputs() {
        inputs.push((name, frame(invoke, &xml), expected));
    }
    let mut g = c.benchmark_group("csta decode");
    for (name, wire, expected) in &inputs {
        // The input must mean what the benchmark says, to both readers.
        assert_eq!(&read_frame(wire, &d, Message::decode), expected, "{name}");
        assert_eq!(
            &read_frame(wire, &d, tree::decode),
            expected,
            "{name} (old)"
        );
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_function(format!("{name} new"), |b| {
            b.iter(|| read_frame(black_box(wire), &d, Message::decode))
        });
        g.bench_function(format!("{name} old"), |b| {
            b.iter(|| read_frame(black_box(wire), &d, tree::decode))
        });
    }
    g.finish();
}

fn csta_encode(c: &mut Criterion) {
    let d = Dialect::default();
    let escape = Message::Escape(HotDeskRequest {
        guest: "5001".into(),
        action: HotDeskAction::Associate {
            host: "4001".into(),
        },
    });
    let id = InvokeId::new(12).unwrap();
    let by_hand = frame(
        "0012",
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<Escape xmlns="http://www.ecma-international.org/standards/ecma-323/csta/ed3">"#,
            r#"<privateData><private><guestAssociatedExtension xmlns="urn:csta-router:hotdesk">"#,
            r#"<action>associate</action><guestDevice>5001</guestDevice><hostDevice>4001</hostDevice>"#,
            r#"</guestAssociatedExtension></private></privateData></Escape>"#,
        ),
    );
    assert_eq!(
        encode_frame(id, &escape, &d).unwrap().to_bytes().unwrap(),
        by_hand
    );
    let mut buf = BytesMut::with_capacity(4096);
    encode_frame_into(id, &escape, &d, &mut buf).unwrap();
    assert_eq!(&buf[..], &by_hand[..]);
    let mut g = c.benchmark_group("csta encode");
    g.bench_function("Escape frame, fresh buffer", |b| {
        b.iter(|| {
            encode_frame(id, black_box(&escape), &d)
                .unwrap()
                .to_bytes()
                .unwrap()
        })
    });
    g.bench_function("Escape frame, reused buffer", |b| {
        b.iter(|| {
            buf.clear();
            encode_frame_into(id, black_box(&escape), &d, &mut buf).unwrap();
        })
    });
    g.finish();
}

/// The JSON must hold these fields with these values.
fn check_json(text: &str, fields: &[(&str, serde_json::Value)]) {
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}"));
    for (k, want) in fields {
        assert_eq!(&v[k], want, "{k} in {text}");
    }
}

fn json_encode(c: &mut Criterion) {
    use csta_router::protocol as p;
    use serde_json::json;
    let mut g = c.benchmark_group("json encode");
    let hotdesk = || {
        p::hotdesk_event(
            black_box("5001"),
            "sw1",
            black_box(123_456),
            1,
            "5001",
            Some("4001"),
        )
    };
    check_json(
        &hotdesk(),
        &[
            ("message", json!("EventPrivateInfo")),
            ("privateMsgId", json!(1)),
            ("eventSeq", json!(123_456)),
            ("otherDn", json!("4001")),
        ],
    );
    g.bench_function("EventPrivateInfo (hot-desk event)", |b| b.iter(hotdesk));
    let ext = [("HOST_DN".to_owned(), "4001".to_owned())]
        .into_iter()
        .collect();
    let reply = || p::private_info_reply(black_box(17), 1, "5001", "sw1", &ext, Some("4001"), None);
    check_json(
        &reply(),
        &[
            ("message", json!("EventPrivateInfo")),
            ("referenceId", json!(17)),
            ("extensions", json!({"HOST_DN": "4001"})),
        ],
    );
    g.bench_function("EventPrivateInfo (reply)", |b| b.iter(reply));
    let accode =
        || p::account_code_event(black_box("4001"), "sw1", 9, "C1", "ACCOUNT_CODE", "1234");
    check_json(
        &accode(),
        &[
            ("privateMsgId", json!(501)),
            ("connId", json!("C1")),
            ("extensions", json!({"ACCOUNT_CODE": "1234"})),
        ],
    );
    g.bench_function("EventPrivateInfo (account code, 501)", |b| b.iter(accode));
    let registered = || {
        p::registered(
            black_box(2),
            "5001",
            "sw1",
            (RegisterMode::Share, true),
            true,
            Some(("5001", "4001")),
            true,
        )
    };
    check_json(
        &registered(),
        &[
            ("message", json!("EventRegistered")),
            ("registerMode", json!("share")),
            ("callEvents", json!(true)),
        ],
    );
    g.bench_function("EventRegistered", |b| b.iter(registered));
    let error =
        ProtocolError::new(4, ErrorCode::ResourceSeized, "4001 is already associated").dn("5001");
    let event_error = || p::event_error(black_box(&error), Some("sw1"), None);
    check_json(
        &event_error(),
        &[
            ("message", json!("EventError")),
            ("errorCode", json!(42)),
            ("thisDn", json!("5001")),
        ],
    );
    g.bench_function("EventError", |b| b.iter(event_error));
    for (name, event, state) in [
        ("EventRinging", CallEventName::Ringing, CallState::Ringing),
        (
            "EventEstablished",
            CallEventName::Established,
            CallState::Established,
        ),
        (
            "EventReleased",
            CallEventName::Released,
            CallState::Released,
        ),
    ] {
        let out = CallEventOut {
            name: event,
            dn: "4001",
            switch: "sw1",
            seq: 10,
            conn_id: "sw1:C1",
            previous_conn_id: None,
            other_dn: Some("5001"),
            call_state: state,
            cause: Some("newCall"),
        };
        check_json(
            &p::call_event(&out),
            &[
                ("message", json!(name)),
                ("connId", json!("sw1:C1")),
                ("otherDn", json!("5001")),
            ],
        );
        g.bench_function(name, |b| b.iter(|| p::call_event(black_box(&out))));
    }
    g.finish();
}

/// (name, JSON text, what it must read as).
type RequestInput = (&'static str, &'static str, fn(&Request) -> bool);

fn json_decode(c: &mut Criterion) {
    let requests: [RequestInput; 4] = [
        (
            "RequestPrivateService",
            r#"{"message":"RequestPrivateService","referenceId":17,"thisDn":"5001","privateMsgId":1,"extensions":{"HOST_DN":"4001"}}"#,
            |r| matches!(r, Request::PrivateService { msg_id: 1, extensions, .. } if extensions.get("HOST_DN").map(String::as_str) == Some("4001")),
        ),
        (
            "RequestRegisterAddress",
            r#"{"message":"RequestRegisterAddress","referenceId":2,"thisDn":"5001","registerMode":"share","callEvents":true}"#,
            |r| matches!(r, Request::Register { dn, mode: RegisterMode::Share, call_events: true } if &**dn == "5001"),
        ),
        (
            "RequestUnregisterAddress",
            r#"{"message":"RequestUnregisterAddress","referenceId":3,"thisDn":"5001"}"#,
            |r| matches!(r, Request::Unregister { dn } if &**dn == "5001"),
        ),
        (
            "RequestQueryAddress",
            r#"{"message":"RequestQueryAddress","referenceId":4,"thisDn":"5001"}"#,
            |r| matches!(r, Request::QueryAddress { dn } if &**dn == "5001"),
        ),
    ];
    let mut g = c.benchmark_group("json decode");
    for (name, text, check) in requests {
        let (_, request) =
            csta_router::protocol::parse_request(text).unwrap_or_else(|e| panic!("{}", e.message));
        assert!(check(&request), "{name}: {request:?}");
        g.bench_function(name, |b| {
            b.iter(|| csta_router::protocol::parse_request(black_box(text)))
        });
    }
    g.finish();
}

/// Every CSTA input as a frame, with what it decodes to.
fn csta_frames() -> Vec<(&'static str, Vec<u8>, Message)> {
    let hot_desk = Message::PrivateEvent {
        cross_ref: Some("77".into()),
        event: HotDeskEvent {
            state: HotDeskState::Established,
            guest: "5001".into(),
            host: Some("4001".into()),
        },
    };
    let mut inputs = vec![(
        "PrivateEvent (hot-desk)",
        PRIVATE_EVENT_FRAME.to_vec(),
        hot_desk,
    )];
    for (name, invoke, xml, expected) in csta_inputs() {
        inputs.push((name, frame(invoke, &xml), expected));
    }
    inputs
}

/// `HOT_PATHS_DECODE=new|old HOT_PATHS_LOOP=n [HOT_PATHS_MESSAGE=name]`: decode each CSTA
/// input (or those whose name starts with `name`) `n` times with one reader and exit, printing
/// the allocations of one decode of each. For an instruction count that does not depend on
/// the machine's load: `perf stat -e instructions:u` where the CPU's counters are available,
/// else `valgrind --tool=cachegrind --cache-sim=no` (instructions per decode: the difference
/// between two loop counts' instructions, divided by the difference in decodes).
fn decode_loop() -> bool {
    let (Ok(reader), Ok(n)) = (
        std::env::var("HOT_PATHS_DECODE"),
        std::env::var("HOT_PATHS_LOOP"),
    ) else {
        return false;
    };
    let n: u64 = n.parse().unwrap();
    let only = std::env::var("HOT_PATHS_MESSAGE").unwrap_or_default();
    let decode = if reader == "old" {
        tree::decode
    } else {
        Message::decode
    };
    let d = Dialect::default();
    let inputs: Vec<_> = csta_frames()
        .into_iter()
        .filter(|(name, _, _)| name.starts_with(&only))
        .collect();
    assert!(!inputs.is_empty(), "no message {only:?}");
    for (name, wire, expected) in &inputs {
        assert_eq!(&read_frame(wire, &d, decode), expected, "{name}");
    }
    for (name, wire, _) in &inputs {
        let body = &wire[8..];
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        black_box(decode(black_box(body), &d).unwrap());
        let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
        println!("{name}: {allocations} allocations per decode ({reader} reader, the message's own included)");
    }
    for _ in 0..n {
        for (_, wire, _) in &inputs {
            black_box(read_frame(black_box(wire), &d, decode));
        }
    }
    println!(
        "{} decodes ({reader} reader, {} messages)",
        n * inputs.len() as u64,
        inputs.len()
    );
    true
}

criterion_group!(
    hot_paths,
    csta_decode,
    csta_encode,
    json_encode,
    json_decode
);

fn main() {
    if decode_loop() {
        return;
    }
    hot_paths();
    Criterion::default().configure_from_args().final_summary();
}
