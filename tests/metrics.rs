//! `GET /metrics` of the router binary against counts the script computes itself.
//!
//! A scripted session drives every error code the router sends (its own and the switch's),
//! client disconnect reasons, a timeout, a late answer, a decode error, a link drop and a
//! failover; the test then scrapes the real endpoint, checks it with `promtool check metrics`,
//! and asserts every series of SPEC section 7 against the script's own expectations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{observability, process, router, spec};
use csta_router::protocol::CloseCause;

use process::RouterProcess;
use router::Client;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

fn config() -> String {
    process::two_switches("max-clients = 3\nclient-max-in-flight = 2", "request-timeout = \"300ms\"\nkpl-interval = \"0s\"\nreconnect-min = \"20ms\"\nreconnect-max = \"100ms\"", "[[application]]\nname = \"desk\"\ntoken = \"desk-token-123\"\naccess = \"control\"", 2)
}

/// What the script expects, series by series (labels sorted).
#[derive(Default)]
struct Expect(HashMap<String, f64>);

impl Expect {
    fn add(&mut self, series: &str, n: f64) {
        *self
            .0
            .entry(process::normalize_series(series))
            .or_insert(0.0) += n;
    }
    fn set(&mut self, series: &str, n: f64) {
        self.0.insert(process::normalize_series(series), n);
    }
    fn service(&mut self, sw: &str, service: &str, result: &str) {
        self.add(
            &format!("csta_router_private_service_requests_total{{switch=\"{sw}\",service=\"{service}\",result=\"{result}\"}}"),
            1.0,
        );
        if result != "ok" {
            self.error(sw, result);
        }
    }
    fn error(&mut self, sw: &str, code: &str) {
        self.add(
            &format!("csta_router_errors_total{{switch=\"{sw}\",code=\"{code}\"}}"),
            1.0,
        );
    }
    fn latency(&mut self, sw: &str, op: &str) {
        self.add(
            &format!("csta_router_association_latency_seconds_count{{switch=\"{sw}\",operation=\"{op}\"}}"),
            1.0,
        );
    }
}

async fn open(url: &str, token: &str) -> Client {
    Client::open(url, Some(token), 2).await
}

/// Skip messages until a link event for `switch` with this name arrives.
async fn wait_link(c: &mut Client, name: &str, switch: &str) -> Value {
    loop {
        let m = c.recv().await;
        if m["message"] == name && m["switch"] == switch {
            return m;
        }
    }
}

async fn ps(c: &mut Client, dn: &str, id: u64, ext: Value) -> Value {
    let reply = c
        .request(json!({"message": "RequestPrivateService", "thisDn": dn, "privateMsgId": id, "extensions": ext}))
        .await;
    reply
}

#[actix_rt::test]
async fn every_series_matches_what_the_script_did() {
    let r = RouterProcess::start("metrics", &config());
    r.wait_connected(&["sw1", "sw2"]).await;
    let sw1 = r.controls[0];
    let sw2 = r.controls[1];
    let mut e = Expect::default();
    let url = r.url();

    // Everything exported from the start, at 0, and valid for promtool.
    let (body, start) = r.scrape().await;
    promtool_check(&body);
    assert_eq!(start["csta_router_clients_connected"], 0.0);
    assert_eq!(
        start[&process::normalize_series("csta_router_errors_total{switch=\"sw2\",code=\"111\"}")],
        0.0
    );
    // SPEC section 11: the sessions' metrics and every label value, and every disconnect
    // reason (taken_over included), at 0.
    let mut at_zero = vec![
        "csta_router_sessions_lingering".to_owned(),
        "csta_router_events_replayed_total".to_owned(),
    ];
    at_zero.extend(
        spec::RESUME_RESULTS
            .map(|r| format!("csta_router_session_resumes_total{{result=\"{r}\"}}")),
    );
    at_zero.extend(CloseCause::ALL.map(|c| {
        format!(
            "csta_router_client_disconnects_total{{reason=\"{}\"}}",
            c.label()
        )
    }));
    for series in &at_zero {
        assert_eq!(
            start.get(&process::normalize_series(series)),
            Some(&0.0),
            "{series} is not exported at 0 from the start"
        );
    }

    let mut c1 = open(&url, "desk-token-123").await;
    let mut c2 = open(&url, "desk-token-123").await;
    for dn in ["5001", "4001", "6001"] {
        c1.register(dn).await;
    }
    c2.register("5001").await;

    // Hot-desking: ok, then the switch's refusals.
    let reply = ps(&mut c1, "5001", 1, json!({"HOST_DN": "4001"})).await;
    assert_eq!(reply["message"], "EventPrivateInfo");
    e.service("sw1", "hotdesk_initiate", "ok");
    e.latency("sw1", "associate");
    c1.recv().await;
    c1.recv().await;
    c2.recv().await;
    e.add("csta_router_events_delivered_total{switch=\"sw1\"}", 3.0);
    e.add(
        "csta_router_private_events_total{switch=\"sw1\",event=\"hotdesk_established\"}",
        2.0,
    );
    assert_eq!(
        ps(&mut c1, "5001", 1, json!({"HOST_DN": "4002"})).await["errorCode"],
        42
    );
    e.service("sw1", "hotdesk_initiate", "42");
    e.latency("sw1", "associate");
    assert_eq!(
        ps(&mut c1, "5001", 2, json!({})).await["message"],
        "EventPrivateInfo"
    );
    e.service("sw1", "hotdesk_cancel", "ok");
    e.latency("sw1", "cancel");
    c1.recv().await;
    c1.recv().await;
    c2.recv().await;
    e.add("csta_router_events_delivered_total{switch=\"sw1\"}", 3.0);
    e.add(
        "csta_router_private_events_total{switch=\"sw1\",event=\"hotdesk_cancelled\"}",
        2.0,
    );
    e.add(
        "csta_router_csta_events_received_total{switch=\"sw1\"}",
        4.0,
    );
    assert_eq!(ps(&mut c1, "5001", 2, json!({})).await["errorCode"], 43);
    e.service("sw1", "hotdesk_cancel", "43");
    e.latency("sw1", "cancel");
    for (category, value, code, id) in [
        ("unspecified", "unspecified", "50", 2),
        ("systemResourceAvailability", "deviceOutOfService", "58", 1),
    ] {
        sw1.post_ok(
            "/faults/reject",
            json!({"count": 1, "category": category, "value": value, "request": "Escape"}),
        )
        .await;
        let reply = ps(&mut c1, "5001", id, json!({"HOST_DN": "4001"})).await;
        assert_eq!(reply["errorCode"].to_string(), code);
        let (service, op) = if id == 1 {
            ("hotdesk_initiate", "associate")
        } else {
            ("hotdesk_cancel", "cancel")
        };
        e.service("sw1", service, code);
        e.latency("sw1", op);
    }

    // The router's own refusals.
    assert_eq!(ps(&mut c1, "5002", 2, json!({})).await["errorCode"], 41);
    e.service("sw1", "hotdesk_cancel", "41");
    assert_eq!(ps(&mut c1, "5001", 7, json!({})).await["errorCode"], 51);
    e.error("sw1", "51");
    assert_eq!(ps(&mut c1, "5001", 1, json!({})).await["errorCode"], 53);
    e.service("sw1", "hotdesk_initiate", "53");
    assert_eq!(
        ps(&mut c1, "5001", 501, json!({"AccountCode": "12"})).await["errorCode"],
        56
    );
    e.service("sw1", "set_account_code", "56");
    let reply = c1
        .request(json!({"message": "RequestRegisterAddress", "thisDn": "9999"}))
        .await;
    assert_eq!(reply["errorCode"], 59);
    e.error("", "59");
    c1.send_text("{oops").await;
    assert_eq!(c1.recv().await["errorCode"], 53);
    e.error("", "53");
    assert_eq!(
        c1.request(json!({"message": "RequestNothing"})).await["errorCode"],
        51
    );
    e.error("", "51");

    // A timeout, then a late answer.
    sw1.post_ok("/faults/stall", json!({"on": true})).await;
    assert_eq!(ps(&mut c1, "5001", 2, json!({})).await["errorCode"], 57);
    e.service("sw1", "hotdesk_cancel", "57");
    e.latency("sw1", "cancel");
    sw1.post_ok("/faults/stall", json!({"on": false})).await;
    sw1.post_ok("/faults/delay", json!({"ms": 500})).await;
    assert_eq!(ps(&mut c1, "5001", 2, json!({})).await["errorCode"], 57);
    e.service("sw1", "hotdesk_cancel", "57");
    e.latency("sw1", "cancel");
    tokio::time::sleep(Duration::from_millis(400)).await;
    e.add("csta_router_csta_late_answers_total{switch=\"sw1\"}", 1.0);

    // Too many requests in flight from one client (limit 2): the third gets 111 at once.
    sw1.post_ok("/faults/delay", json!({"ms": 200})).await;
    for (i, dn) in ["5001", "4001", "5001"].iter().enumerate() {
        c1.send(&json!({"message": "RequestPrivateService", "referenceId": 900 + i, "thisDn": dn, "privateMsgId": 2}))
            .await;
    }
    let mut replies: Vec<Value> = vec![c1.recv().await, c1.recv().await, c1.recv().await];
    replies.sort_by_key(|r| r["referenceId"].as_u64().unwrap());
    assert_eq!(replies[0]["errorCode"], 43);
    assert_eq!(replies[1]["errorCode"], 43);
    assert_eq!(replies[2]["errorCode"], 111);
    e.service("sw1", "hotdesk_cancel", "43");
    e.service("sw1", "hotdesk_cancel", "43");
    e.latency("sw1", "cancel");
    e.latency("sw1", "cancel");
    e.service("sw1", "hotdesk_cancel", "111");
    sw1.post_ok("/faults/delay", json!({"ms": 0})).await;

    // A decode error.
    sw1.post_ok("/faults/garbage", json!({"kind": "xml"})).await;
    e.add("csta_router_csta_decode_errors_total{switch=\"sw1\"}", 1.0);

    // Disconnect reasons: protocol error (twice: before open, wrong version), auth, limit,
    // closed.
    let mut bad = Client::connect(&url).await;
    bad.send(&json!({"message": "RequestQueryServer", "referenceId": 1}))
        .await;
    assert_eq!(bad.closed().await, 1008);
    let mut old = Client::connect(&url).await;
    let reply = old
        .request(json!({"message": "RequestOpen", "protocolVersion": 2, "application": "desk", "token": "desk-token-123"}))
        .await;
    assert_eq!(reply["errorCode"], 55);
    e.error("", "55");
    old.closed().await;
    let mut intruder = Client::connect(&url).await;
    intruder
        .send(&json!({"message": "RequestOpen", "referenceId": 1, "protocolVersion": 1, "application": "x", "token": "wrong-token-0"}))
        .await;
    assert_eq!(intruder.closed().await, 1008);
    let mut third = open(&url, "desk-token-123").await;
    let mut fourth = Client::connect(&url).await;
    assert_eq!(fourth.closed().await, 1013);
    third.ws.close(None).await.unwrap();
    c2.ws.close(None).await.unwrap();
    e.add(
        "csta_router_client_disconnects_total{reason=\"protocol_error\"}",
        2.0,
    );
    e.add("csta_router_client_disconnects_total{reason=\"auth\"}", 1.0);
    e.add(
        "csta_router_client_disconnects_total{reason=\"limit\"}",
        1.0,
    );
    e.add(
        "csta_router_client_disconnects_total{reason=\"closed\"}",
        2.0,
    );

    // sw2: failover from link 0 to link 1, no fail-back, then no link at all (54), then back.
    sw2.post_ok("/faults/link", json!({"link": 0, "up": false}))
        .await;
    wait_link(&mut c1, "EventLinkDisconnected", "sw2").await;
    let up = wait_link(&mut c1, "EventLinkConnected", "sw2").await;
    assert_eq!(up["link"], 1);
    sw2.post_ok("/faults/link", json!({"link": 0, "up": true}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // link 0 reconnects, stays standby
    sw2.post_ok("/faults/link", json!({"link": 0, "up": false}))
        .await;
    sw2.post_ok("/faults/link", json!({"link": 1, "up": false}))
        .await;
    wait_link(&mut c1, "EventLinkDisconnected", "sw2").await;
    let reply = ps(&mut c1, "6001", 2, json!({})).await;
    assert_eq!(reply["errorCode"], 54);
    e.service("sw2", "hotdesk_cancel", "54");
    e.latency("sw2", "cancel");
    sw2.post_ok("/faults/link", json!({"link": 0, "up": true}))
        .await;
    let up = wait_link(&mut c1, "EventLinkConnected", "sw2").await;
    assert_eq!(up["link"], 0);
    sw2.post_ok("/faults/link", json!({"link": 1, "up": true}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // link 1 reconnects as standby
    e.set("csta_router_link_up{switch=\"sw2\",link=\"0\"}", 1.0);
    e.set("csta_router_link_up{switch=\"sw2\",link=\"1\"}", 0.0);
    e.set("csta_router_link_up{switch=\"sw1\",link=\"0\"}", 1.0);
    e.set(
        "csta_router_link_reconnects_total{switch=\"sw2\",link=\"0\"}",
        2.0,
    );
    e.set(
        "csta_router_link_reconnects_total{switch=\"sw2\",link=\"1\"}",
        1.0,
    );
    e.set(
        "csta_router_link_reconnects_total{switch=\"sw1\",link=\"0\"}",
        0.0,
    );
    e.set("csta_router_link_failovers_total{switch=\"sw2\"}", 2.0);
    e.set("csta_router_link_connected{switch=\"sw2\",link=\"0\"}", 1.0);
    e.set("csta_router_link_connected{switch=\"sw2\",link=\"1\"}", 1.0);
    e.set("csta_router_link_connected{switch=\"sw1\",link=\"0\"}", 1.0);

    // Gauges at the end.
    c1.expect_nothing().await;
    e.set("csta_router_clients_connected", 1.0);
    // c2 and third went without RequestClose: their sessions linger (session-linger 60 s).
    e.set("csta_router_sessions_lingering", 2.0);
    e.set("csta_router_registered_dns{switch=\"sw1\"}", 2.0);
    e.set("csta_router_registered_dns{switch=\"sw2\"}", 1.0);
    e.set("csta_router_extension_actors{switch=\"sw1\"}", 2.0);
    e.set("csta_router_extension_actors{switch=\"sw2\"}", 1.0);
    e.set("csta_router_csta_requests_in_flight{switch=\"sw1\"}", 0.0);
    e.set("csta_router_csta_requests_in_flight{switch=\"sw2\"}", 0.0);
    e.set("csta_router_hotdesk_associations{switch=\"sw1\"}", 0.0);
    e.set("csta_router_active_calls{switch=\"sw1\"}", 0.0);
    e.set("csta_router_events_delivered_total{switch=\"sw2\"}", 0.0);
    e.set(
        "csta_router_private_events_total{switch=\"sw1\",event=\"account_code\"}",
        0.0,
    );

    let (body, got) = r.scrape().await;
    promtool_check(&body);
    let mut wrong = Vec::new();
    for (series, want) in &e.0 {
        match got.get(series) {
            Some(v) if v == want => {}
            other => wrong.push(format!("{series}: expected {want}, got {other:?}")),
        }
    }
    // Counters the script did not touch stay at 0 (it would have said so).
    for (series, v) in &got {
        let counter = series.contains("_total");
        if counter && !e.0.contains_key(series) && *v != 0.0 {
            wrong.push(format!("{series}: expected 0, got {v}"));
        }
    }
    // Every metric of SPEC sections 7 and 11 is there.
    for name in spec::METRICS.into_iter().chain(spec::SESSION_METRICS) {
        if !got.keys().any(|k| k.starts_with(name)) {
            wrong.push(format!("{name} is not exported"));
        }
        assert!(body.contains(&format!("# HELP {name}")));
    }
    assert!(
        body.contains("csta_router_association_latency_seconds_bucket{switch=\"sw1\",operation=\"cancel\",le=\"0.3\"}"),
        "buckets go up to the request timeout"
    );
    assert!(!body.contains("quantile="), "histograms, not summaries");
    assert!(
        wrong.is_empty(),
        "{} series wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // Health endpoints.
    let (status, body) = r.http_get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = r.http_get("/readyz").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("switch sw1 link connected") && body.contains("switch sw2 link connected"),
        "{body}\n{}",
        r.log()
    );
    drop(c1);
    let log = r.stop();
    assert!(
        !log.contains("desk-token-123"),
        "tokens never appear in logs"
    );
}

/// `promtool check metrics` must accept the exposition.
fn promtool_check(body: &str) {
    observability::promtool_ok(&["check", "metrics"], body);
}
