//! A bounded soak: many clients hot-desk and cancel continuously across two switches for a
//! minute while one link is dropped every few seconds, calls come and go and account codes are
//! entered. At the end every request got exactly one reply, every association made through the
//! router is the same in the router's view and the simulator's, and the gauges are back at
//! their baseline (once the sessions of clients that left without closing have lingered out).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{process, router, sim_control};

use process::RouterProcess;
use router::Client;
use serde_json::{json, Value};
use sim_control::SimControl;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Sessions linger briefly: the clients that leave without RequestClose are released 2 s later.
fn config() -> String {
    process::two_switches("session-linger = \"2s\"", "request-timeout = \"500ms\"\nkpl-interval = \"1s\"\nreconnect-min = \"20ms\"\nreconnect-max = \"200ms\"\ncall-grace = \"2s\"", "", 1)
}

const SOAK: Duration = Duration::from_secs(60);
const PAIRS: u32 = 16;

async fn open(url: &str) -> Client {
    Client::open(url, None, 2).await
}

/// Send one request and return its reply, skipping events; fails if it takes over 3 s.
async fn ask(c: &mut Client, id: &mut u64, mut msg: Value) -> Value {
    *id += 1;
    msg["referenceId"] = json!(*id);
    c.send(&msg).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    let (r, m) = c
        .next_reply(deadline, || {
            format!("request {id} not answered within 3 s: {msg}")
        })
        .await;
    assert_eq!(
        r, *id,
        "reply to {r} while waiting for {id} (a second reply?): {m}"
    );
    m
}

/// One agent: hot-desks its guest onto its host and back, as fast as replies come.
async fn agent(url: String, guest: String, host: String, stop: Arc<AtomicBool>) -> (u64, u64) {
    let mut c = open(&url).await;
    let mut id = 0;
    for dn in [&guest, &host] {
        let r = ask(
            &mut c,
            &mut id,
            json!({"message": "RequestRegisterAddress", "thisDn": dn}),
        )
        .await;
        assert_eq!(r["message"], "EventRegistered");
    }
    let (mut ok, mut failed) = (0, 0);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let msg = if n % 2 == 1 {
            json!({"message": "RequestPrivateService", "thisDn": guest, "privateMsgId": 1, "extensions": {"HOST_DN": host}})
        } else {
            json!({"message": "RequestPrivateService", "thisDn": guest, "privateMsgId": 2})
        };
        let r = ask(&mut c, &mut id, msg).await;
        if r["message"] == "EventPrivateInfo" {
            ok += 1;
        } else {
            let code = r["errorCode"].as_u64().unwrap();
            assert!([42, 43, 54, 57].contains(&code), "unexpected {r}");
            failed += 1;
        }
    }
    // Settle: leave the pair associated (cancel whatever is there, then associate), and check
    // the router's view against the switch's.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let _ = ask(
            &mut c,
            &mut id,
            json!({"message": "RequestPrivateService", "thisDn": guest, "privateMsgId": 2}),
        )
        .await;
        let r = ask(&mut c, &mut id, json!({"message": "RequestPrivateService", "thisDn": guest, "privateMsgId": 1, "extensions": {"HOST_DN": host}})).await;
        if r["message"] == "EventPrivateInfo" {
            break;
        }
        assert!(Instant::now() < deadline, "cannot settle {guest}: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The event that follows makes the router's view known.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let q = ask(
            &mut c,
            &mut id,
            json!({"message": "RequestQueryAddress", "thisDn": guest}),
        )
        .await;
        if q["hotDeskKnown"] == true {
            assert_eq!(
                q["hotDesk"],
                json!({"guestDn": guest, "hostDn": host}),
                "router's view"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "hot-desk state of {guest} stays unknown"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (ok, failed)
}

/// Calls come and go on `from`/`to`, with account codes entered on the phone and set by the
/// client registered on `from`.
async fn calls(
    url: String,
    sim: SimControl,
    from: String,
    to: String,
    stop: Arc<AtomicBool>,
) -> u64 {
    let mut c = open(&url).await;
    let mut id = 0;
    ask(
        &mut c,
        &mut id,
        json!({"message": "RequestRegisterAddress", "thisDn": from}),
    )
    .await;
    let mut codes = 0;
    while !stop.load(Ordering::Relaxed) {
        let (status, call) = sim.post("/calls", json!({"from": from, "to": to})).await;
        if status != 200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let call_id = call["callId"].as_str().unwrap().to_owned();
        sim.post(
            &format!("/calls/{call_id}/account-code"),
            json!({"device": from, "code": "77"}),
        )
        .await;
        let r = ask(&mut c, &mut id, json!({"message": "RequestPrivateService", "thisDn": from, "privateMsgId": 501, "extensions": {"AccountCode": "88"}})).await;
        if r["message"] == "EventPrivateInfo" {
            codes += 1;
        } else {
            // The call may not be known yet, or the link may be down.
            let code = r["errorCode"].as_u64().unwrap();
            assert!([54, 56, 57].contains(&code), "unexpected {r}");
        }
        sim.post(&format!("/calls/{call_id}/clear"), json!({}))
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    codes
}

#[test]
fn soak_with_link_drops_calls_and_account_codes() {
    let r = RouterProcess::start("soak", &config());
    let rt = process::runtime();
    rt.block_on(async {
        r.wait_connected(&["sw1", "sw2"]).await;
        let sims = [r.controls[0], r.controls[1]];
        let (_, baseline) = r.scrape().await;
        let stop = Arc::new(AtomicBool::new(false));
        let url = r.url();
        let mut agents = Vec::new();
        let mut pairs = Vec::new();
        for i in 0..PAIRS {
            let (guest, host) = if i % 2 == 0 {
                (5100 + i, 4100 + i)
            } else {
                (6100 + i, 7100 + i)
            };
            pairs.push((guest.to_string(), host.to_string()));
            agents.push(tokio::spawn(agent(
                url.clone(),
                guest.to_string(),
                host.to_string(),
                stop.clone(),
            )));
        }
        let mut callers = Vec::new();
        for (i, sim) in sims.iter().enumerate() {
            let (from, to) = if i == 0 {
                ("5500", "5501")
            } else {
                ("6500", "6501")
            };
            callers.push(tokio::spawn(calls(
                url.clone(),
                *sim,
                from.into(),
                to.into(),
                stop.clone(),
            )));
        }
        // One link dropped every few seconds.
        let started = Instant::now();
        let mut drops = 0;
        while started.elapsed() < SOAK {
            tokio::time::sleep(Duration::from_secs(3)).await;
            sims[0].post_ok("/faults/drop", json!({})).await;
            drops += 1;
        }
        stop.store(true, Ordering::Relaxed);
        let (mut ok, mut failed) = (0, 0);
        for a in agents {
            let (o, f) = a.await.unwrap();
            ok += o;
            failed += f;
        }
        let mut codes = 0;
        for c in callers {
            codes += c.await.unwrap();
        }
        assert!(ok > 100, "ok {ok}, failed {failed}");
        assert!(codes > 5, "account codes set {codes}");
        eprintln!(
            "soak: {ok} ok, {failed} failed (links dropped {drops} times), {codes} account codes"
        );

        // The switch's view equals the router's (checked per pair by each agent).
        let mut on_switch = HashSet::new();
        for sim in &sims {
            for a in sim.state().await["associations"].as_array().unwrap() {
                on_switch.insert((
                    a["guest"].as_str().unwrap().to_owned(),
                    a["host"].as_str().unwrap().to_owned(),
                ));
            }
        }
        let made: HashSet<(String, String)> = pairs.into_iter().collect();
        assert_eq!(on_switch, made, "associations on the switches");

        // Everyone has left: back to the baseline.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (_, now) = r.scrape().await;
            let mut differing = Vec::new();
            for (series, v) in &baseline {
                let gauge = [
                    "csta_router_registered_dns",
                    "csta_router_extension_actors",
                    "csta_router_active_calls",
                    "csta_router_csta_requests_in_flight",
                    "csta_router_clients_connected",
                    "csta_router_sessions_lingering",
                ]
                .iter()
                .any(|g| series.starts_with(g));
                if gauge && now.get(series) != Some(v) {
                    differing.push(format!("{series}: {v} then, {:?} now", now.get(series)));
                }
            }
            if differing.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not back to baseline:\n{}",
                differing.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    r.stop();
}
