//! SIGTERM on the router binary, with a separate `pbx-sim` process as the switch: the request in
//! flight is answered, clients are closed with 1001, every monitor is stopped on the switch, and
//! the process exits 0 within a bounded time. In process (the only in-process router of this
//! test binary, so its metrics are its own): a stop closes clients with 1001 and counts them as
//! `reason="shutdown"`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{config, process, router};

use process::{RouterProcess, SimProcess};
use router::{Client, Router};
use serde_json::json;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn sigterm_answers_in_flight_requests_closes_clients_and_stops_monitors() {
    let sim = SimProcess::start(
        &[
            "--name",
            "pbx",
            "--dns",
            "5000-5999",
            "--link",
            "127.0.0.1:0",
            "--control",
            "127.0.0.1:0",
        ],
        Stdio::null(),
    );
    let control = sim.control();
    let link = sim.link();
    let config = config::head("", "request-timeout = \"2s\"")
        + &config::switch("pbx", &["5000-5999"], "", &[&link]);
    let r = RouterProcess::start("shutdown", &config);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (reply, code, requests_before) = rt.block_on(async {
        r.wait_connected(&["pbx"]).await;
        let mut c = Client::connect(&r.url()).await;
        c.request(json!({"message": "RequestOpen", "protocolVersion": 1, "application": "t"}))
            .await;
        c.recv().await;
        for dn in ["5001", "5002", "5003"] {
            c.register(dn).await;
        }
        let state = control.state().await;
        assert_eq!(state["monitors"].as_array().unwrap().len(), 3);
        let requests_before = state["links"][0]["requests"].as_u64().unwrap();
        // A request the switch answers slowly is in flight when SIGTERM arrives.
        control.post_ok("/faults/delay", json!({"ms": 400})).await;
        c.send(&json!({"message": "RequestPrivateService", "referenceId": 99, "thisDn": "5001", "privateMsgId": 1, "extensions": {"HOST_DN": "5002"}}))
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        process::sigterm(&r.child);
        let reply = c.recv().await;
        let code = c.closed().await;
        (reply, code, requests_before)
    });
    assert_eq!(
        reply["referenceId"], 99,
        "the request in flight is answered first: {reply}"
    );
    assert_eq!(reply["message"], "EventPrivateInfo", "{reply}");
    assert_eq!(code, 1001, "closed with 1001 going away");
    let t = Instant::now();
    let log = r.stop();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "exit took {:?}",
        t.elapsed()
    );
    assert!(log.contains("monitors stopped"), "{log}");
    // The switch saw a MonitorStop for each registered DN (with the sim's delay still on).
    let state = rt.block_on(control.state());
    let requests_after = state["links"][0]["requests"].as_u64().unwrap();
    assert!(
        requests_after >= requests_before + 1 + 3,
        "the escape and three MonitorStops reached the switch: {requests_before} then {requests_after}"
    );
    drop(sim);
}

#[actix_rt::test]
async fn a_stop_closes_clients_with_1001_and_counts_them_as_shutdown() {
    let r = Router::start().await;
    let shared = r.running.shared.clone();
    let count = || {
        let text = csta_router::metrics::render(&shared.gauges());
        text.lines()
            .find_map(|l| {
                l.strip_prefix("csta_router_client_disconnects_total{reason=\"shutdown\"} ")
            })
            .map(|v| v.trim().parse::<f64>().unwrap())
            .unwrap_or_else(|| panic!("no shutdown series in\n{text}"))
    };
    assert_eq!(count(), 0.0);
    let mut clients = vec![r.client().await, r.client().await];
    clients[0].register("5001").await;
    let closing = async {
        let mut codes = Vec::new();
        for c in &mut clients {
            codes.push(c.closed().await);
        }
        codes
    };
    let ((), codes) = tokio::join!(r.stop(), closing);
    assert_eq!(codes, vec![1001, 1001]);
    assert_eq!(count(), 2.0);
}
