//! Hostile and broken clients against the router binary: arbitrary JSON and bytes, oversized
//! and binary frames, a flood, a thousand connections at once; nothing may panic, every frame
//! gets the answer SPEC section 3 defines, and everything returns to its starting point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{process, router};

use csta_router::protocol::ErrorCode;
use futures_util::SinkExt;
use process::RouterProcess;
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestRunner};
use router::Client;
use serde_json::{json, Map, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message as Ws;

/// Sessions do not linger: a client that leaves releases its registrations at once.
fn config() -> String {
    process::two_switches(
        "session-linger = \"0s\"",
        "request-timeout = \"500ms\"\nkpl-interval = \"0s\"",
        "",
        1,
    )
}

const CASES: u32 = 4096;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn open(url: &str) -> Client {
    Client::open(url, None, 2).await
}

/// The next message that answers a request (events, which carry no referenceId, skipped).
async fn next_reply(c: &mut Client) -> Value {
    loop {
        let m = c.recv().await;
        if m.get("referenceId").is_some() {
            return m;
        }
    }
}

const REPLIES: [&str; 6] = [
    "EventError",
    "EventRegistered",
    "EventUnregistered",
    "EventPrivateInfo",
    "EventAddressInfo",
    "EventServerInfo",
];

/// The reply SPEC section 3 defines for a frame the client sent: one reply, carrying the
/// request's referenceId when it was a positive integer (else 0), of a reply kind; an error
/// has a known code and a sentence.
fn check_reply(sent: &Value, reply: &Value) {
    let expected_ref = match sent.get("referenceId").and_then(Value::as_u64) {
        Some(id) if id > 0 && sent.is_object() => id,
        _ => 0,
    };
    let kind = reply["message"].as_str().unwrap();
    assert!(REPLIES.contains(&kind), "{kind} in reply to {sent}");
    if kind == "EventError" {
        let code = reply["errorCode"].as_u64().unwrap();
        let known = ErrorCode::ALL.iter().any(|c| u64::from(c.code()) == code);
        assert!(known, "code {code} for {sent}");
        assert!(reply["errorMessage"].as_str().unwrap().len() > 10);
        if expected_ref == 0 {
            assert_eq!(reply["referenceId"], 0, "{sent} -> {reply}");
        } else {
            assert_eq!(reply["referenceId"], expected_ref, "{sent} -> {reply}");
        }
    } else {
        assert_eq!(reply["referenceId"], expected_ref, "{sent} -> {reply}");
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("5001"),
            Just("4001"),
            Just("6001"),
            Just("9999"),
            Just("")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Objects shaped like requests, with every field arbitrary: they reach the deeper paths.
fn request_like() -> impl Strategy<Value = Value> {
    let message = prop_oneof![
        Just("RequestRegisterAddress"),
        Just("RequestUnregisterAddress"),
        Just("RequestPrivateService"),
        Just("RequestQueryAddress"),
        Just("RequestQueryServer"),
        Just("RequestOpen"),
        Just("RequestMakeCall"),
    ];
    (
        message,
        prop_oneof![3 => (1u64..1_000_000).prop_map(Value::from), 1 => json_value()],
        json_value(),
        json_value(),
        json_value(),
        json_value(),
    )
        .prop_map(|(message, reference, dn, id, ext, mode)| {
            let mut m = Map::new();
            m.insert("message".into(), Value::from(message));
            m.insert("referenceId".into(), reference);
            m.insert("thisDn".into(), dn);
            m.insert("privateMsgId".into(), id);
            m.insert("extensions".into(), ext);
            m.insert("registerMode".into(), mode);
            Value::Object(m)
        })
}

#[test]
fn arbitrary_json_and_bytes_always_get_the_defined_answer() {
    let r = RouterProcess::start("fuzz", &config());
    let rt = runtime();
    rt.block_on(r.wait_connected(&["sw1", "sw2"]));
    let client = tokio::sync::Mutex::new(rt.block_on(open(&r.url())));
    let mut runner = TestRunner::new(PropConfig::with_cases(CASES));

    // Arbitrary JSON values, and request-shaped objects with arbitrary fields.
    let strategy = prop_oneof![json_value(), request_like()];
    runner
        .run(&strategy, |v| {
            rt.block_on(async {
                let mut c = client.lock().await;
                c.send(&v).await;
                let reply = next_reply(&mut c).await;
                check_reply(&v, &reply);
            });
            Ok(())
        })
        .unwrap();

    // Arbitrary text and arbitrary binary frames.
    runner
        .run(
            &(any::<bool>(), prop::collection::vec(any::<u8>(), 0..512)),
            |(binary, bytes)| {
                rt.block_on(async {
                    let mut c = client.lock().await;
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    let sent = if binary {
                        c.ws.send(Ws::binary(bytes)).await.unwrap();
                        Value::Null
                    } else {
                        c.send_text(&text).await;
                        serde_json::from_str(&text).unwrap_or(Value::Null)
                    };
                    let reply = next_reply(&mut c).await;
                    if binary {
                        assert_eq!(reply["errorCode"], 53);
                        assert_eq!(reply["referenceId"], 0);
                    } else {
                        check_reply(&sent, &reply);
                    }
                });
                Ok(())
            },
        )
        .unwrap();

    // Still the same healthy connection, with nothing stray queued.
    rt.block_on(async {
        let mut c = client.lock().await;
        let info = c.request(json!({"message": "RequestQueryServer"})).await;
        assert_eq!(info["message"], "EventServerInfo");
    });
    drop(client);
    r.stop();
}

#[test]
fn oversized_frames_close_with_1009_and_others_are_unaffected() {
    let r = RouterProcess::start("oversize", &config());
    let rt = runtime();
    rt.block_on(async {
        r.wait_connected(&["sw1", "sw2"]).await;
        let mut other = open(&r.url()).await;
        let mut big = open(&r.url()).await;
        let huge = format!(
            "{{\"message\":\"RequestQueryServer\",\"referenceId\":1,\"pad\":\"{}\"}}",
            "x".repeat(70 * 1024)
        );
        big.send_text(&huge).await;
        assert_eq!(big.closed().await, 1009);
        // Just under the limit is fine.
        let mut ok = open(&r.url()).await;
        let fits = format!(
            "{{\"message\":\"RequestQueryServer\",\"referenceId\":2,\"pad\":\"{}\"}}",
            "x".repeat(60 * 1024)
        );
        ok.send_text(&fits).await;
        assert_eq!(ok.recv().await["message"], "EventServerInfo");
        let info = other
            .request(json!({"message": "RequestQueryServer"}))
            .await;
        assert_eq!(info["message"], "EventServerInfo");
    });
    r.stop();
}

#[test]
fn a_flooding_client_gets_111_and_others_are_unaffected() {
    let r = RouterProcess::start("flood", &config());
    let rt = runtime();
    rt.block_on(async {
        r.wait_connected(&["sw1", "sw2"]).await;
        let sw1 = r.controls[0];
        let mut flood = open(&r.url()).await;
        let mut calm = open(&r.url()).await;
        flood.register("5001").await;
        calm.register("6001").await;
        // The switch answers slowly; the flooder sends 1000 requests without waiting.
        sw1.post_ok("/faults/delay", json!({"ms": 50})).await;
        for i in 0..1000u64 {
            flood
                .send(&json!({"message": "RequestPrivateService", "referenceId": 10_000 + i, "thisDn": "5001", "privateMsgId": 2}))
                .await;
        }
        // Meanwhile the other client is served at once.
        let t = Instant::now();
        let reply = calm
            .request(json!({"message": "RequestPrivateService", "thisDn": "6001", "privateMsgId": 1, "extensions": {"HOST_DN": "7001"}}))
            .await;
        assert_eq!(reply["message"], "EventPrivateInfo");
        assert!(t.elapsed() < Duration::from_secs(1), "took {:?}", t.elapsed());
        // The flooder gets exactly one reply per request: 111 for the excess.
        sw1.post_ok("/faults/delay", json!({"ms": 0})).await;
        let mut too_many = 0;
        let mut seen = std::collections::HashSet::new();
        while seen.len() < 1000 {
            let m = match tokio::time::timeout(Duration::from_secs(4), next_reply(&mut flood)).await {
                Ok(m) => m,
                Err(_) => panic!(
                    "only {} replies ({} were 111); switch: {}",
                    seen.len(),
                    too_many,
                    sw1.state().await
                ),
            };
            assert!(seen.insert(m["referenceId"].as_u64().unwrap()), "one reply per request");
            if m["errorCode"] == 111 {
                too_many += 1;
            } else {
                assert_eq!(m["errorCode"], 43, "{m}");
            }
        }
        // At most 256 in flight: most of the burst is refused at once (places free up as the
        // switch answers, so a few more than 256 get through over the burst).
        assert!(too_many >= 500, "only {too_many} answered 111");
        flood.expect_nothing().await;
    });
    r.stop();
}

#[test]
fn a_thousand_clients_register_and_leave_and_everything_returns_to_baseline() {
    let r = RouterProcess::start("thousand", &config());
    let rt = process::runtime();
    rt.block_on(async {
        r.wait_connected(&["sw1", "sw2"]).await;
        let (_, before) = r.scrape().await;
        let url = r.url();
        let mut tasks = Vec::new();
        for i in 0..1000u32 {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = open(&url).await;
                let dn = if i % 2 == 0 { 5000 + i } else { 6000 + i };
                c.register(&dn.to_string()).await;
                c
            }));
        }
        let mut clients = Vec::new();
        for t in tasks {
            clients.push(t.await.unwrap());
        }
        let (_, during) = r.scrape().await;
        assert_eq!(during["csta_router_clients_connected"], 1000.0);
        let key = |m: &str, sw: &str| process::normalize_series(&format!("{m}{{switch=\"{sw}\"}}"));
        assert_eq!(during[&key("csta_router_registered_dns", "sw1")], 500.0);
        assert_eq!(during[&key("csta_router_registered_dns", "sw2")], 500.0);
        let sims = [
            r.controls[0],
            r.controls[1],
        ];
        for sim in &sims {
            assert_eq!(sim.state().await["monitors"].as_array().unwrap().len(), 500);
        }
        // Everyone leaves (half close properly, half just drop the connection).
        for (i, mut c) in clients.into_iter().enumerate() {
            if i % 2 == 0 {
                let _ = c.ws.close(None).await;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, after) = r.scrape().await;
            let monitors: usize = {
                let mut n = 0;
                for sim in &sims {
                    n += sim.state().await["monitors"].as_array().unwrap().len();
                }
                n
            };
            let baseline = ["csta_router_registered_dns", "csta_router_extension_actors"]
                .iter()
                .all(|m| {
                    ["sw1", "sw2"]
                        .iter()
                        .all(|sw| after[&key(m, sw)] == before[&key(m, sw)])
                });
            if baseline && after["csta_router_clients_connected"] == 0.0 && monitors == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not back to baseline: clients {}, monitors {monitors}, registered {} / {}, actors {} / {}",
                after["csta_router_clients_connected"],
                after[&key("csta_router_registered_dns", "sw1")],
                after[&key("csta_router_registered_dns", "sw2")],
                after[&key("csta_router_extension_actors", "sw1")],
                after[&key("csta_router_extension_actors", "sw2")],
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    r.stop();
}
