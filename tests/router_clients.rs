//! Client life cycles end to end: slow consumers, liveness, sessions closed releasing monitors,
//! monitors lost across a reconnect, connIds kept within the grace period, and the binary on its
//! embedded default configuration.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{config, default_ports, http, process, router};

use futures_util::StreamExt;
use process::RouterProcess;
use router::{config_text, dialect_from_env, eventually, normalized, Client, Router};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A client whose socket has a tiny receive buffer, so that not reading fills up quickly.
async fn tiny_buffer_client(r: &Router) -> Client {
    r.tiny_buffer_client().await.0
}

/// `csta_router_client_disconnects_total{reason}` from the router's `/metrics`.
async fn disconnects(r: &Router, reason: &str) -> f64 {
    let body = http::get(r.running.metrics_addr, "/metrics", Duration::from_secs(5))
        .await
        .unwrap()
        .text();
    let series = format!("csta_router_client_disconnects_total{{reason=\"{reason}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

async fn extension_actors(r: &Router) -> usize {
    r.running
        .shared
        .switches
        .iter()
        .map(|s| s.extension_count())
        .sum()
}

#[actix_rt::test]
async fn a_client_that_stops_reading_is_closed_with_4008_and_others_get_every_event() {
    let r = Router::start().await;
    let mut good = r.client().await;
    good.register("5041").await;
    let mut slow = tiny_buffer_client(&r).await;
    slow.register("5041").await;
    // The slow client never reads again; the switch sends 50,000 events on 5041's monitor
    // (more than the shipped queue of 4096 plus socket buffers), in chunks the good client
    // reads as they come.
    let rounds = 1000;
    let mut last_seq = 0;
    for _chunk in 0..25 {
        let burst = r
            .sw1
            .post_ok(
                "/burst",
                json!({"guest": "5041", "host": "4041", "count": rounds}),
            )
            .await;
        assert_eq!(burst["hotdeskEvents"], json!(2 * rounds));
        for i in 0..2 * rounds {
            let ev = good.recv().await;
            assert_eq!(ev["monitoredDn"], "5041");
            assert_eq!(
                ev["privateMsgId"],
                json!(if i % 2 == 0 { 1 } else { 2 }),
                "event {i}"
            );
            let seq = ev["eventSeq"].as_u64().unwrap();
            assert!(seq > last_seq, "in order");
            last_seq = seq;
        }
    }
    good.expect_nothing().await;
    // The slow client was cut off with 4008. Its close frame was offered for a second: when
    // the router's socket buffer still had room for it (the kernel may grow that buffer), the
    // client reads it after what had reached its socket; when not, the connection was dropped
    // and reading shows the end of the connection without a close frame. Either way, no
    // other close.
    let end = slow.ended().await;
    assert!(matches!(end, None | Some(4008)), "{end:?}");
    // Counted (only this test makes slow consumers in this process).
    eventually("slow_consumer counted", async || {
        disconnects(&r, "slow_consumer").await == 1.0
    })
    .await;
    // Its registration was released; the good client's remains.
    let q = good
        .request(json!({"message": "RequestQueryAddress", "thisDn": "5041"}))
        .await;
    assert_eq!(q["message"], "EventAddressInfo");
    assert_eq!(r.sw1.state().await["monitors"].as_array().unwrap().len(), 1);
    r.stop().await;
}

#[actix_rt::test]
async fn a_client_that_does_not_answer_pings_is_closed() {
    let text = config_text("", dialect_from_env()).replace(
        "client-ping-interval = \"10s\"",
        "client-ping-interval = \"50ms\"\nclient-ping-tolerance = 2",
    );
    let r = Router::with(&text).await;
    let mut alive = r.client().await;
    alive.register("5045").await;
    let mut mute = r.client().await;
    mute.register("5045").await;
    // `mute` does not read (so does not answer pings) for a while; `alive` keeps reading.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(600) {
        assert!(alive.next(Duration::from_millis(50)).await.is_none());
    }
    assert_eq!(mute.closed().await, 1000);
    eventually("ping_timeout counted", async || {
        disconnects(&r, "ping_timeout").await == 1.0
    })
    .await;
    // Its registration is gone: one client left on 5045, and events still reach the other.
    r.sw1
        .post_ok("/hotdesk", json!({"guest": "5045", "host": "4045"}))
        .await;
    assert_eq!(alive.recv().await["privateMsgId"], 1);
    r.stop().await;
}

#[actix_rt::test]
async fn monitors_are_reference_counted_and_released_on_disconnect() {
    let r = Router::start().await;
    let mut a = r.client().await;
    let mut b = r.client().await;
    a.register("5051").await;
    b.register("5051").await;
    b.request(
        json!({"message": "RequestRegisterAddress", "thisDn": "6051", "registerMode": "monitor"}),
    )
    .await;
    assert_eq!(r.sw1.state().await["monitors"].as_array().unwrap().len(), 1);
    assert_eq!(r.sw2.state().await["monitors"].as_array().unwrap().len(), 1);
    assert_eq!(extension_actors(&r).await, 2);
    // A client that ends its session with RequestClose gets EventClosed, then close 1000.
    let closed = a.request(json!({"message": "RequestClose"})).await;
    assert_eq!(closed["message"], "EventClosed", "{closed}");
    assert_eq!(a.closed().await, 1000);
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(r.sw1.state().await["monitors"].as_array().unwrap().len(), 1);
    let closed = b.request(json!({"message": "RequestClose"})).await;
    assert_eq!(closed["message"], "EventClosed", "{closed}");
    drop(b);
    eventually("monitors stopped", async || {
        r.sw1.state().await["monitors"]
            .as_array()
            .unwrap()
            .is_empty()
            && r.sw2.state().await["monitors"]
                .as_array()
                .unwrap()
                .is_empty()
    })
    .await;
    eventually("extension actors retired", async || {
        extension_actors(&r).await == 0
    })
    .await;
    // A DN can be registered again afterwards (a new actor, a new monitor).
    let mut c = r.client().await;
    c.register("5051").await;
    assert_eq!(r.sw1.state().await["monitors"].as_array().unwrap().len(), 1);
    r.stop().await;
}

#[actix_rt::test]
async fn concurrent_registrations_share_one_monitor_start() {
    let r = Router::start().await;
    r.sw1.post_ok("/faults/delay", json!({"ms": 150})).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(r.client().await);
    }
    for c in clients.iter_mut() {
        c.send(&json!({"message": "RequestRegisterAddress", "referenceId": 9, "thisDn": "5055"}))
            .await;
    }
    for c in clients.iter_mut() {
        assert_eq!(c.recv().await["message"], "EventRegistered");
    }
    let state = r.sw1.state().await;
    assert_eq!(state["monitors"].as_array().unwrap().len(), 1, "{state}");
    r.stop().await;
}

#[actix_rt::test]
async fn a_monitor_refused_after_reconnect_unregisters_the_dn() {
    let r = Router::start().await;
    let mut c = r.client().await;
    c.register("5061").await;
    c.register("5062").await;
    r.sw1
        .post_ok("/faults/reject", json!({"count": 1, "category": "operation", "value": "invalidDeviceID", "request": "MonitorStart"}))
        .await;
    r.sw1.post_ok("/faults/drop", json!({})).await;
    let mut got: Vec<Value> = Vec::new();
    for _ in 0..3 {
        got.push(normalized(&c.recv().await));
    }
    assert_eq!(
        got[0],
        json!({"message": "EventLinkDisconnected", "switch": "sw1", "link": 0})
    );
    let unregistered = got
        .iter()
        .find(|m| m["message"] == "EventUnregistered")
        .unwrap()
        .clone();
    let lost_dn = unregistered["thisDn"].as_str().unwrap().to_owned();
    assert!(lost_dn == "5061" || lost_dn == "5062");
    assert_eq!(unregistered["errorCode"], 59);
    assert_eq!(unregistered["switch"], "sw1");
    assert!(unregistered.get("referenceId").is_none());
    assert!(unregistered["errorMessage"].as_str().unwrap().len() > 20);
    assert!(got
        .iter()
        .any(|m| m == &json!({"message": "EventLinkConnected", "switch": "sw1", "link": 0})));
    // The other DN is monitored again; the lost one is not registered any more.
    let kept = if lost_dn == "5061" { "5062" } else { "5061" };
    let monitors = r.sw1.state().await["monitors"].clone();
    assert_eq!(monitors.as_array().unwrap().len(), 1);
    assert_eq!(monitors[0]["device"], kept);
    let reply = c
        .request(json!({"message": "RequestPrivateService", "thisDn": lost_dn, "privateMsgId": 2}))
        .await;
    assert_eq!(reply["errorCode"], 41);
    c.expect_nothing().await;
    r.stop().await;
}

/// Registrations still waiting for their MonitorStart when the active link fails are started
/// once, by the restore on the new link: the switch ends with exactly one monitor per DN, none
/// left over from a second start.
#[actix_rt::test]
async fn monitors_queued_during_a_failover_are_started_once() {
    let second_link = "address = \"127.0.0.1:0\"\npriority = 1\n\n[[switch.link]]\naddress = \"127.0.0.1:0\"\npriority = 2\n\n[[switch]]\nname = \"sw2\"";
    let text = config_text("", dialect_from_env()).replacen(
        "address = \"127.0.0.1:0\"\npriority = 1\n\n[[switch]]\nname = \"sw2\"",
        second_link,
        1,
    );
    assert!(text.contains("priority = 2"), "{text}");
    let r = Router::with(&text).await;
    let mut c = r.client().await;
    // Slow answers, so that most of the 200 MonitorStarts (32 at a time) are still queued when
    // link 0 goes down.
    r.sw1.post_ok("/faults/delay", json!({"ms": 20})).await;
    let dns: Vec<String> = (5300..5500).map(|n| n.to_string()).collect();
    for (i, dn) in dns.iter().enumerate() {
        c.send(
            &json!({"message": "RequestRegisterAddress", "referenceId": 900_000 + i, "thisDn": dn}),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    r.sw1
        .post_ok("/faults/link", json!({"link": 0, "up": false}))
        .await;
    let (mut registered, mut back_up) = (0, false);
    while registered < dns.len() || !back_up {
        let m = c
            .next(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("{registered} registered, back up: {back_up}"));
        match m["message"].as_str() {
            Some("EventRegistered") => registered += 1,
            Some("EventLinkConnected") if m["switch"] == "sw1" => {
                assert_eq!(m["link"], 1, "{m}");
                back_up = true;
            }
            Some("EventLinkDisconnected") => assert_eq!(m["switch"], "sw1", "{m}"),
            _ => panic!("unexpected {m}"),
        }
    }
    // Anything still queued has been sent by now.
    r.sw1.post_ok("/faults/delay", json!({"ms": 0})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let monitors = r.sw1.state().await["monitors"].clone();
    let mut devices: Vec<String> = monitors
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["link"], 1, "{m}");
            m["device"].as_str().unwrap().to_owned()
        })
        .collect();
    devices.sort();
    assert_eq!(devices, dns, "one monitor per registered DN, on link 1");
    r.stop().await;
}

#[actix_rt::test]
async fn conn_ids_survive_a_link_loss_within_the_grace_period() {
    let r = Router::start().await;
    let mut c = r.client().await;
    c.register("5071").await;
    let call = r
        .sw1
        .post_ok("/calls", json!({"from": "5071", "to": "5072"}))
        .await;
    let call_id = call["callId"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let q = c
        .request(json!({"message": "RequestQueryAddress", "thisDn": "5071"}))
        .await;
    let conn_id = q["calls"][0].as_str().unwrap().to_owned();

    r.sw1.post_ok("/faults/drop", json!({})).await;
    assert_eq!(c.recv().await["message"], "EventLinkDisconnected");
    assert_eq!(c.recv().await["message"], "EventLinkConnected");
    let q = c
        .request(json!({"message": "RequestQueryAddress", "thisDn": "5071"}))
        .await;
    assert_eq!(q["calls"], json!([]), "call lists are cleared on link loss");
    r.sw1
        .post_ok(
            &format!("/calls/{call_id}/account-code"),
            json!({"device": "5071", "code": "55"}),
        )
        .await;
    let ev = c.recv().await;
    assert_eq!(
        ev["connId"],
        json!(conn_id),
        "same call ID within call-grace: same connId"
    );

    // After the call clears, the switch may reuse its ID: that is a new call.
    r.sw1
        .post_ok(&format!("/calls/{call_id}/clear"), json!({}))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    r.sw1
        .post_ok(
            "/calls",
            json!({"from": "5071", "to": "5073", "callId": call_id}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let q = c
        .request(json!({"message": "RequestQueryAddress", "thisDn": "5071"}))
        .await;
    assert_eq!(q["calls"].as_array().unwrap().len(), 1);
    assert_ne!(
        q["calls"][0],
        json!(conn_id),
        "a reused call ID is a new connId"
    );
    r.stop().await;
}

#[test]
fn the_binary_runs_out_of_the_box_on_the_embedded_default() {
    let _ports = default_ports::lock();
    // No configuration file, and no config/ in its working directory: the embedded default
    // (two simulated switches).
    let r = RouterProcess::start_with(None, &[], &[("RUST_LOG", "info")]);
    let default = default_ports::config();
    let clients = default.server.client_listen;
    assert_eq!(r.clients, clients);
    assert_eq!(r.metrics, default.server.metrics_listen);
    assert_eq!(r.controls.len(), 2);
    let rt = process::runtime();
    let close_code = rt.block_on(async {
        let mut c = Client::connect(&r.url()).await;
        let reply = c
            .request(json!({"message": "RequestOpen", "protocolVersion": 1, "application": "readme"}))
            .await;
        assert_eq!(reply["message"], "EventServerConnected");
        assert!(reply["switches"].as_array().unwrap().iter().all(|s| s["simulated"] == true));
        // Wait for both switches to be connected.
        let mut connected = 0;
        for _ in 0..2 {
            if c.recv().await["message"] == "EventLinkConnected" {
                connected += 1;
            }
        }
        while connected < 2 {
            if c.recv().await["message"] == "EventLinkConnected" {
                connected += 1;
            }
        }
        // A link that came up while the client opened may be announced twice (its state read
        // after joining, and the change itself): never missed, perhaps repeated.
        while let Some(m) = c.next(Duration::from_millis(300)).await {
            assert_eq!(m["message"], "EventLinkConnected", "{m}");
        }
        c.register("5001").await;
        let reply = c
            .request(json!({"message": "RequestPrivateService", "thisDn": "5001", "privateMsgId": 1, "extensions": {"HOST_DN": "4001"}}))
            .await;
        assert_eq!(reply["message"], "EventPrivateInfo", "{reply}");
        assert_eq!(c.recv().await["privateMsgId"], 1);
        let reply = c
            .request(json!({"message": "RequestPrivateService", "thisDn": "5001", "privateMsgId": 2}))
            .await;
        assert_eq!(reply["message"], "EventPrivateInfo", "{reply}");
        assert_eq!(c.recv().await["privateMsgId"], 2);
        // SIGTERM: clients are closed with 1001 and the process exits 0.
        process::sigterm(&r.child);
        let code = c.closed().await;
        let _ = c.ws.next().await;
        code
    });
    assert_eq!(close_code, 1001);
    let stderr = r.exited();
    assert!(
        stderr.contains("SIMULATED"),
        "warns that the switches are simulated:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("ws://{clients}/v1")),
        "logs where it listens:\n{stderr}"
    );
    assert!(
        stderr.contains("private service"),
        "audit line per private service:\n{stderr}"
    );
}

#[actix_rt::test]
async fn calls_idle_longer_than_call_cleanup_idle_are_swept() {
    let r = Router::with(&config_text(
        "call-cleanup-idle = \"200ms\"",
        dialect_from_env(),
    ))
    .await;
    let mut c = r.client().await;
    c.register("5081").await;
    r.sw1
        .post_ok("/calls", json!({"from": "5081", "to": "5082"}))
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let q = c
        .request(json!({"message": "RequestQueryAddress", "thisDn": "5081"}))
        .await;
    assert_eq!(q["calls"].as_array().unwrap().len(), 1, "{q}");
    // No event on the call for longer than call-cleanup-idle: the sweep drops it.
    eventually("the idle call is swept", async || {
        let q = c
            .request(json!({"message": "RequestQueryAddress", "thisDn": "5081"}))
            .await;
        q["calls"].as_array().unwrap().is_empty()
    })
    .await;
    r.stop().await;
}

#[actix_rt::test]
async fn application_tokens_and_monitor_access() {
    let apps = config::TWO_APPLICATIONS;
    let r = Router::with(&config_text(apps, dialect_from_env())).await;
    let open = |token: Option<&str>| {
        let mut m = json!({"message": "RequestOpen", "referenceId": 1, "protocolVersion": 1, "application": "x"});
        if let Some(t) = token {
            m["token"] = json!(t);
        }
        m
    };
    // Missing and wrong tokens: closed with 1008.
    for token in [None, Some("desk-secret-9999")] {
        let mut c = Client::connect(&r.url()).await;
        c.send(&open(token)).await;
        assert_eq!(c.closed().await, 1008, "token {token:?}");
    }
    // A monitor application: monitor mode only, no private services.
    let mut wall = Client::connect(&r.url()).await;
    wall.send(&open(Some("wall-secret-0002"))).await;
    assert_eq!(wall.recv().await["message"], "EventServerConnected");
    wall.recv().await;
    wall.recv().await;
    let reply = wall
        .request(json!({"message": "RequestRegisterAddress", "thisDn": "5061"}))
        .await;
    assert_eq!(reply["errorCode"], 53, "{reply}");
    let reply = wall
        .request(json!({"message": "RequestRegisterAddress", "thisDn": "5061", "registerMode": "monitor"}))
        .await;
    assert_eq!(reply["message"], "EventRegistered");
    let reply = wall
        .request(json!({"message": "RequestPrivateService", "thisDn": "5061", "privateMsgId": 2}))
        .await;
    assert_eq!(reply["errorCode"], 41, "{reply}");
    // A control application may do everything.
    let mut desk = Client::connect(&r.url()).await;
    desk.send(&open(Some("desk-secret-0001"))).await;
    assert_eq!(desk.recv().await["message"], "EventServerConnected");
    desk.recv().await;
    desk.recv().await;
    desk.register("5062").await;
    let reply = desk
        .request(json!({"message": "RequestPrivateService", "thisDn": "5062", "privateMsgId": 1, "extensions": {"HOST_DN": "4062"}}))
        .await;
    assert_eq!(reply["message"], "EventPrivateInfo", "{reply}");
    r.stop().await;
}
