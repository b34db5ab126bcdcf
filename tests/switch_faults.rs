//! Faults on the switch side, against the router binary and its embedded simulators.
//!
//! Each test keeps a client busy with requests while the simulator misbehaves, then checks what
//! SPEC section 8 promises: every request got exactly one reply and no client was left waiting;
//! the in-flight gauge is back to 0; and once the switch is healthy again requests succeed and
//! events flow.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{process, router, sim_control};

use process::RouterProcess;
use router::Client;
use serde_json::{json, Value};
use sim_control::SimControl;
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn config() -> String {
    process::two_switches("", "request-timeout = \"500ms\"\nkpl-interval = \"300ms\"\nkpl-tolerance = 2\nreconnect-min = \"20ms\"\nreconnect-max = \"200ms\"", "", 2)
}

struct Rig {
    r: RouterProcess,
    sims: [SimControl; 2],
    rt: tokio::runtime::Runtime,
}

fn rig(name: &str) -> Rig {
    let r = RouterProcess::start(name, &config());
    let rt = process::runtime();
    rt.block_on(r.wait_connected(&["sw1", "sw2"]));
    let sims = [r.controls[0], r.controls[1]];
    Rig { r, sims, rt }
}

async fn open(url: &str) -> Client {
    Client::open(url, None, 2).await
}

/// What a busy client saw.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    replies: HashMap<String, u64>,
}

/// Send hot-desk requests on `guest`/`host` one after the other until `stop` says so; each
/// must be answered within `limit` (nobody stuck) and exactly once.
async fn busy(url: String, guest: &'static str, host: &'static str, run_for: Duration) -> Tally {
    let mut c = open(&url).await;
    let mut tally = Tally::default();
    for dn in [guest, host] {
        c.send(&json!({"message": "RequestRegisterAddress", "referenceId": 1, "thisDn": dn}))
            .await;
    }
    let started = Instant::now();
    let mut id = 100u64;
    let mut answered = std::collections::HashSet::new();
    while started.elapsed() < run_for {
        id += 1;
        let msg = if id.is_multiple_of(2) {
            json!({"message": "RequestPrivateService", "referenceId": id, "thisDn": guest, "privateMsgId": 1, "extensions": {"HOST_DN": host}})
        } else {
            json!({"message": "RequestPrivateService", "referenceId": id, "thisDn": guest, "privateMsgId": 2})
        };
        c.send(&msg).await;
        tally.sent += 1;
        // The reply must come within the request timeout plus a margin.
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let (r, m) = c
                .next_reply(deadline, || {
                    format!("request {id} not answered within 3 s: {tally:?}")
                })
                .await;
            if r < 100 {
                continue; // registration replies
            }
            assert!(answered.insert(r), "second reply to {r}: {m}");
            let key = match m["message"].as_str().unwrap() {
                "EventError" => m["errorCode"].to_string(),
                other => other.to_owned(),
            };
            *tally.replies.entry(key).or_default() += 1;
            if r == id {
                break;
            }
        }
    }
    // Nothing more arrives for those requests.
    while let Some(m) = c.next(Duration::from_millis(300)).await {
        if let Some(r) = m.get("referenceId").and_then(Value::as_u64) {
            assert!(r < 100, "stray reply {m}");
        }
    }
    tally
}

/// After a fault: the switch serves requests and events again, and nothing is left in flight.
async fn healthy_again(rig: &Rig, switch: usize) {
    let (guest, host) = if switch == 0 {
        ("5900", "4900")
    } else {
        ("6900", "7900")
    };
    let name = ["sw1", "sw2"][switch];
    rig.r.wait_connected(&["sw1", "sw2"]).await;
    let mut c = open(&rig.r.url()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = c
            .request(json!({"message": "RequestRegisterAddress", "thisDn": guest}))
            .await;
        if reply["message"] == "EventRegistered" && reply["linkState"] == "connected" {
            break;
        }
        assert!(Instant::now() < deadline, "cannot register: {reply}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reply = loop {
        let reply = c
            .request(json!({"message": "RequestPrivateService", "thisDn": guest, "privateMsgId": 1, "extensions": {"HOST_DN": host}}))
            .await;
        if reply["message"] == "EventPrivateInfo" || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(reply["message"], "EventPrivateInfo", "{reply}");
    // The event flows.
    loop {
        let ev = c.recv().await;
        if ev["message"] == "EventPrivateInfo" && ev.get("referenceId").is_none() {
            assert_eq!(ev["monitoredDn"], guest);
            break;
        }
    }
    let reply = c
        .request(json!({"message": "RequestPrivateService", "thisDn": guest, "privateMsgId": 2}))
        .await;
    assert_eq!(reply["message"], "EventPrivateInfo", "{reply}");
    // Nothing left in flight (the gauge comes back to 0 once the last answers are in).
    let key = process::normalize_series(&format!(
        "csta_router_csta_requests_in_flight{{switch=\"{name}\"}}"
    ));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, m) = rig.r.scrape().await;
        if m[&key] == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "in-flight gauge stuck at {}",
            m[&key]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Run the busy client on switch `switch` while `fault` happens, then check everything.
fn with_fault<F, Fut>(name: &str, switch: usize, run_for: Duration, fault: F) -> Tally
where
    F: FnOnce([SimControl; 2]) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let rig = rig(name);
    let (guest, host) = if switch == 0 {
        ("5001", "4001")
    } else {
        ("6001", "7001")
    };
    let tally = rig.rt.block_on(async {
        let work = tokio::spawn(busy(rig.r.url(), guest, host, run_for));
        tokio::time::sleep(Duration::from_millis(200)).await;
        fault(rig.sims).await;
        let tally = work.await.unwrap();
        healthy_again(&rig, switch).await;
        tally
    });
    let answered: u64 = tally.replies.values().sum();
    assert_eq!(
        answered, tally.sent,
        "every request got exactly one reply: {tally:?}"
    );
    assert!(tally.sent > 3, "{tally:?}");
    rig.r.stop();
    tally
}

#[test]
fn a_single_disconnect() {
    let t = with_fault("drop", 0, Duration::from_secs(2), |[sw1, _]| async move {
        sw1.post_ok("/faults/delay", json!({"ms": 100})).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        sw1.post_ok("/faults/drop", json!({})).await;
        sw1.post_ok("/faults/delay", json!({"ms": 0})).await;
    });
    assert!(t.replies.get("54").copied().unwrap_or(0) >= 1, "{t:?}");
}

#[test]
fn disconnects_every_second_for_thirty_seconds() {
    let t = with_fault("flap", 0, Duration::from_secs(31), |[sw1, _]| async move {
        for _ in 0..30 {
            sw1.post_ok("/faults/drop", json!({})).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    assert!(t.replies.get("54").copied().unwrap_or(0) >= 1, "{t:?}");
    assert!(
        t.replies.get("EventPrivateInfo").copied().unwrap_or(0) >= 10,
        "{t:?}"
    );
}

#[test]
fn a_stall_then_recovery() {
    let t = with_fault("stall", 0, Duration::from_secs(3), |[sw1, _]| async move {
        sw1.post_ok("/faults/stall", json!({"on": true})).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        sw1.post_ok("/faults/stall", json!({"on": false})).await;
    });
    // Requests time out (57), or the keep-alive declares the link lost (54).
    let failed =
        t.replies.get("57").copied().unwrap_or(0) + t.replies.get("54").copied().unwrap_or(0);
    assert!(failed >= 1, "{t:?}");
}

#[test]
fn late_answers_after_the_timeout() {
    let t = with_fault("late", 0, Duration::from_secs(3), |[sw1, _]| async move {
        sw1.post_ok("/faults/delay", json!({"ms": 700})).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        sw1.post_ok("/faults/delay", json!({"ms": 0})).await;
    });
    assert!(t.replies.get("57").copied().unwrap_or(0) >= 1, "{t:?}");
}

#[test]
fn error_answers() {
    let t = with_fault("errors", 0, Duration::from_secs(2), |[sw1, _]| async move {
        sw1.post_ok("/faults/reject", json!({"count": 5, "category": "unspecified", "value": "unspecified", "request": "Escape"}))
            .await;
    });
    assert_eq!(t.replies.get("50").copied().unwrap_or(0), 5, "{t:?}");
}

#[test]
fn garbage_frames() {
    with_fault(
        "garbage",
        0,
        Duration::from_secs(2),
        |[sw1, _]| async move {
            sw1.post_ok("/faults/garbage", json!({"kind": "frame"}))
                .await;
        },
    );
}

#[test]
fn malformed_xml() {
    with_fault("xml", 0, Duration::from_secs(2), |[sw1, _]| async move {
        for _ in 0..5 {
            sw1.post_ok("/faults/garbage", json!({"kind": "xml"})).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

#[test]
fn a_frame_announcing_more_bytes_than_it_sends() {
    with_fault(
        "truncated",
        0,
        Duration::from_secs(3),
        |[sw1, _]| async move {
            sw1.post_ok("/faults/garbage", json!({"kind": "truncated"}))
                .await;
        },
    );
}

#[test]
fn failover_between_two_links_and_back() {
    let t = with_fault(
        "failover",
        1,
        Duration::from_secs(4),
        |[_, sw2]| async move {
            sw2.post_ok("/faults/link", json!({"link": 0, "up": false}))
                .await;
            tokio::time::sleep(Duration::from_millis(1000)).await;
            sw2.post_ok("/faults/link", json!({"link": 0, "up": true}))
                .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            sw2.post_ok("/faults/link", json!({"link": 1, "up": false}))
                .await;
            tokio::time::sleep(Duration::from_millis(1000)).await;
            sw2.post_ok("/faults/link", json!({"link": 1, "up": true}))
                .await;
        },
    );
    assert!(
        t.replies.get("EventPrivateInfo").copied().unwrap_or(0) >= 3,
        "{t:?}"
    );
}
