#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Micro-benchmarks of the router's hot paths (`cargo bench --bench hot_paths`):
//!
//! - a CSTA frame read off the wire and its XML parsed, for a hot-desk `PrivateEvent`: the
//!   work the link actor does for every event a switch sends;
//! - the JSON of an `EventPrivateInfo` written: the work an extension actor does once per event
//!   (the bytes are then shared by every subscriber);
//! - a client's `RequestPrivateService` read: the work a session does for every request.
//!
//! The input bytes are written out by hand from SPEC section 5 (not produced by the router's
//! encoder), and each benchmark checks its result once before timing, so a benchmark that
//! stopped doing the work would fail rather than get faster. `cargo test` runs each once.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use csta_router::csta::{CstaCodec, Dialect, HotDeskState, Message};
use std::hint::black_box;
use tokio_util::codec::Decoder;

/// A hot-desk established event in a frame: length 0x18b = 395 bytes, header included, invoke ID 9999 (events
/// carry the switch's own invoke ID).
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

/// What an agent desktop sends to hot-desk.
const PRIVATE_SERVICE_REQUEST: &str = r#"{"message":"RequestPrivateService","referenceId":17,"thisDn":"5001","privateMsgId":1,"extensions":{"HOST_DN":"4001"}}"#;

fn decode_private_event(dialect: &Dialect) -> Message {
    let mut buf = BytesMut::from(PRIVATE_EVENT_FRAME);
    let frame = CstaCodec
        .decode(&mut buf)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("the frame does not decode"));
    Message::decode(&frame.body, dialect).unwrap_or_else(|e| panic!("{e}"))
}

fn csta_decode(c: &mut Criterion) {
    let dialect = Dialect::default();
    // The input must mean what the benchmark says.
    assert_eq!(
        usize::from_str_radix("18b", 16).ok(),
        Some(PRIVATE_EVENT_FRAME.len())
    );
    match decode_private_event(&dialect) {
        Message::PrivateEvent { cross_ref, event } => {
            assert_eq!(cross_ref.as_deref(), Some("77"));
            assert_eq!(event.state, HotDeskState::Established);
            assert_eq!(
                (&*event.guest, event.host.as_deref()),
                ("5001", Some("4001"))
            );
        }
        other => panic!("decoded as {other:?}"),
    }
    let mut g = c.benchmark_group("csta");
    g.throughput(Throughput::Bytes(PRIVATE_EVENT_FRAME.len() as u64));
    g.bench_function("frame decode + XML parse, PrivateEvent", |b| {
        b.iter(|| decode_private_event(black_box(&dialect)))
    });
    g.finish();
}

fn json_encode(c: &mut Criterion) {
    let event = || {
        csta_router::protocol::hotdesk_event(
            black_box("5001"),
            black_box("sw1"),
            black_box(123_456),
            1,
            black_box("5001"),
            Some(black_box("4001")),
        )
    };
    let v: serde_json::Value = serde_json::from_str(&event()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["message"], "EventPrivateInfo");
    assert_eq!(
        (&v["privateMsgId"], &v["eventSeq"], &v["otherDn"]),
        (
            &serde_json::json!(1),
            &serde_json::json!(123_456),
            &serde_json::json!("4001")
        )
    );
    c.bench_function("json encode, EventPrivateInfo", |b| b.iter(event));
}

fn json_decode(c: &mut Criterion) {
    let (reference, request) = csta_router::protocol::parse_request(PRIVATE_SERVICE_REQUEST)
        .unwrap_or_else(|e| panic!("{}", e.message));
    assert_eq!(reference, 17);
    assert!(matches!(
        request,
        csta_router::protocol::Request::PrivateService { msg_id: 1, ref extensions, .. }
            if extensions.get("HOST_DN").map(String::as_str) == Some("4001")
    ));
    c.bench_function("json decode, RequestPrivateService", |b| {
        b.iter(|| csta_router::protocol::parse_request(black_box(PRIVATE_SERVICE_REQUEST)))
    });
}

criterion_group!(hot_paths, csta_decode, json_encode, json_decode);
criterion_main!(hot_paths);
