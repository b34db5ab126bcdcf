//! Resumable client sessions in one process (README, "Resumable sessions"): a session outlives
//! its connection for `session-linger`, keeps its last `client-queue` events, and a new
//! connection that resumes it gets what it missed, in order, once, then live events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{config, process, router};

use process::RouterProcess;
use router::{dialect_from_env, eventually, normalized, Client, Router};
use serde_json::{json, Value};
use std::time::Duration;

/// Two simulated switches, with `server` lines in `[server]` and `extra` after `[options]`.
fn config_with(server: &str, extra: &str) -> String {
    let options = format!(
        "request-timeout = \"800ms\"\nkpl-interval = \"0s\"\nreconnect-min = \"20ms\"\nreconnect-max = \"200ms\"\n{extra}"
    );
    config::head(
        &format!("client-ping-interval = \"10s\"\n{server}"),
        &options,
    ) + &config::two_simulated(dialect_from_env(), [1, 1])
}

/// `RequestOpen` (with `resume` when given) on a new connection: the client and the reply,
/// the two link events read.
async fn open(url: &str, application: &str, resume: Option<Value>) -> (Client, Value) {
    Client::open_as(url, application, resume, 2).await
}

/// What came next on a connection within `within`: a message, the end of the connection (the
/// close code, `None` without a close frame), or nothing (`None`).
async fn step(c: &mut Client, within: Duration) -> Option<Result<Value, Option<u16>>> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message as Ws;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, c.ws.next()).await {
            Err(_) => return None,
            Ok(None) | Ok(Some(Err(_))) => return Some(Err(None)),
            Ok(Some(Ok(Ws::Text(t)))) => return Some(Ok(serde_json::from_str(&t).unwrap())),
            Ok(Some(Ok(Ws::Close(f)))) => return Some(Err(f.map(|f| u16::from(f.code)))),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

fn session_id(reply: &Value) -> String {
    reply["sessionId"].as_str().unwrap().to_owned()
}

/// The next `n` events, checking each is an event of `dn`.
async fn events(c: &mut Client, dn: &str, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for _ in 0..n {
        let ev = c.recv().await;
        assert_eq!(ev["monitoredDn"], dn, "{ev}");
        out.push(ev);
    }
    out
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["eventSeq"].as_u64().unwrap())
        .collect()
}

async fn monitors(r: &Router) -> usize {
    r.sw1.state().await["monitors"].as_array().unwrap().len()
}

#[actix_rt::test]
async fn a_blip_replays_what_happened_while_away_with_the_original_event_seq() {
    let r = Router::start().await;
    let (mut c, reply) = open(&r.url(), "desk", None).await;
    assert_eq!(reply["sessionLinger"], 60, "{reply}");
    assert!(reply.get("resumed").is_none(), "no resume asked: {reply}");
    let id = session_id(&reply);
    c.register("5041").await;
    // A second client on the same guest sees what the switch reports.
    let mut watcher = r.client().await;
    watcher.register("5041").await;
    // The desktop's connection drops without a close frame.
    drop(c);
    r.sw1
        .post_ok("/hotdesk", json!({"guest": "5041", "host": "4041"}))
        .await;
    r.sw1
        .post_ok("/hotdesk/cancel", json!({"guest": "5041"}))
        .await;
    let seen = events(&mut watcher, "5041", 2).await;
    // The monitor stayed while the session lingered.
    assert_eq!(monitors(&r).await, 1);
    let (mut c, reply) = open(
        &r.url(),
        "desk",
        Some(json!({"sessionId": id, "lastEventSeq": {}})),
    )
    .await;
    assert_eq!(
        (&reply["resumed"], &reply["replayed"], &reply["sessionId"]),
        (&json!(true), &json!(2), &json!(id)),
        "{reply}"
    );
    assert!(reply.get("resumeGap").is_none(), "{reply}");
    let replayed = events(&mut c, "5041", 2).await;
    assert_eq!(
        replayed, seen,
        "the same events, the same bytes but for time"
    );
    // Then live events, once.
    r.sw1
        .post_ok("/hotdesk", json!({"guest": "5041", "host": "4042"}))
        .await;
    let live = events(&mut c, "5041", 1).await;
    assert!(seqs(&live)[0] > seqs(&replayed)[1]);
    assert_eq!(live[0]["otherDn"], "4042");
    c.expect_nothing().await;
    // The registration is the session's: a private service needs no new registration.
    let q = c
        .request(json!({"message": "RequestPrivateService", "thisDn": "5041", "privateMsgId": 2}))
        .await;
    assert_eq!(q["message"], "EventPrivateInfo", "{q}");
    r.stop().await;
}

#[actix_rt::test]
async fn what_a_dying_socket_swallowed_is_replayed_from_the_last_event_read() {
    let r = Router::start().await;
    let (mut c, reply) = open(&r.url(), "desk", None).await;
    let id = session_id(&reply);
    c.register("5043").await;
    let mut watcher = r.client().await;
    watcher.register("5043").await;
    // 500 events; the client reads 100 and its connection drops.
    r.sw1
        .post_ok(
            "/burst",
            json!({"guest": "5043", "host": "4043", "count": 250}),
        )
        .await;
    let read = events(&mut c, "5043", 100).await;
    let last = *seqs(&read).last().unwrap();
    drop(c);
    // Every event has reached the router's queues (the watcher has them all).
    let seen = seqs(&events(&mut watcher, "5043", 500).await);
    let (mut c, reply) = open(
        &r.url(),
        "desk",
        Some(json!({"sessionId": id, "lastEventSeq": {"sw1": last, "sw2": 0}})),
    )
    .await;
    assert_eq!(reply["resumed"], true, "{reply}");
    assert_eq!(reply["replayed"], 400, "{reply}");
    let rest = seqs(&events(&mut c, "5043", 400).await);
    let all: Vec<u64> = seqs(&read).into_iter().chain(rest).collect();
    assert!(
        all.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing, no duplicate"
    );
    assert_eq!(all, seen);
    c.expect_nothing().await;
    r.stop().await;
}

#[actix_rt::test]
async fn after_the_linger_the_session_is_gone_and_its_monitors_stopped() {
    let r = Router::with(&config_with("session-linger = \"300ms\"", "")).await;
    let (mut c, reply) = open(&r.url(), "desk", None).await;
    assert_eq!(reply["sessionLinger"], 0.3, "in seconds: {reply}");
    let id = session_id(&reply);
    c.register("5044").await;
    drop(c);
    assert_eq!(monitors(&r).await, 1);
    eventually("the monitor stopped", async || monitors(&r).await == 0).await;
    let (mut c, reply) = open(
        &r.url(),
        "desk",
        Some(json!({"sessionId": id, "lastEventSeq": {"sw1": 0}})),
    )
    .await;
    assert_eq!(reply["resumed"], false, "{reply}");
    assert_ne!(reply["sessionId"], json!(id), "a new session");
    let q = c
        .request(json!({"message": "RequestPrivateService", "thisDn": "5044", "privateMsgId": 2}))
        .await;
    assert_eq!(q["errorCode"], 41, "not registered any more: {q}");
    r.stop().await;
}

#[actix_rt::test]
async fn unknown_and_malformed_resumes() {
    let r = Router::start().await;
    // Unknown: a new session.
    let (_c, reply) = open(
        &r.url(),
        "desk",
        Some(json!({"sessionId": "0123456789abcdef0123456789abcdef"})),
    )
    .await;
    assert_eq!(
        normalized(&reply)["resumed"],
        false,
        "unknown session: {reply}"
    );
    assert_eq!(reply["replayed"], 0);
    // Malformed: 53, and the connection may open again.
    let mut c = Client::connect(&r.url()).await;
    for bad in [
        json!("x"),
        json!({"sessionId": 5}),
        json!({"sessionId": "ab", "lastEventSeq": {"sw1": -3}}),
    ] {
        let e = c
            .request(json!({"message": "RequestOpen", "protocolVersion": 1, "application": "desk", "resume": bad}))
            .await;
        assert_eq!(e["errorCode"], 53, "{bad}: {e}");
        assert!(
            e["errorMessage"].as_str().unwrap().contains("resume"),
            "{e}"
        );
    }
    let ok = c
        .request(json!({"message": "RequestOpen", "protocolVersion": 1, "application": "desk"}))
        .await;
    assert_eq!(ok["message"], "EventServerConnected", "{ok}");
    r.stop().await;
}

#[actix_rt::test]
async fn only_the_application_that_opened_a_session_may_resume_it() {
    let apps = config::TWO_APPLICATIONS;
    let r = Router::with(&config_with("", apps)).await;
    let mut c = Client::connect(&r.url()).await;
    let reply = c
        .request(json!({"message": "RequestOpen", "protocolVersion": 1, "application": "desk", "token": "desk-secret-0001"}))
        .await;
    let id = session_id(&reply);
    c.recv().await;
    c.recv().await;
    c.register("5046").await;
    drop(c);
    // The wallboard's token with the desk's session id: refused like a bad token.
    let mut thief = Client::connect(&r.url()).await;
    thief
        .send(&json!({"message": "RequestOpen", "referenceId": 1, "protocolVersion": 1, "application": "desk", "token": "wall-secret-0002", "resume": {"sessionId": id}}))
        .await;
    assert_eq!(thief.closed().await, 1008);
    // The desk resumes it.
    let mut c = Client::connect(&r.url()).await;
    let reply = c
        .request(json!({"message": "RequestOpen", "protocolVersion": 1, "application": "desk", "token": "desk-secret-0001", "resume": {"sessionId": id}}))
        .await;
    assert_eq!(reply["resumed"], true, "{reply}");
    r.stop().await;
}

#[actix_rt::test]
async fn a_second_connection_takes_the_session_over_with_4009() {
    let r = Router::start().await;
    let (mut old, reply) = open(&r.url(), "desk", None).await;
    let id = session_id(&reply);
    old.register("5047").await;
    r.sw1
        .post_ok("/hotdesk", json!({"guest": "5047", "host": "4047"}))
        .await;
    let first = events(&mut old, "5047", 1).await;
    // The old connection is still open when a new one resumes the session.
    let (mut new, reply) = open(
        &r.url(),
        "desk",
        Some(json!({"sessionId": id, "lastEventSeq": {"sw1": seqs(&first)[0]}})),
    )
    .await;
    assert_eq!(
        (&reply["resumed"], &reply["replayed"]),
        (&json!(true), &json!(0))
    );
    assert_eq!(old.closed().await, 4009);
    r.sw1
        .post_ok("/hotdesk/cancel", json!({"guest": "5047"}))
        .await;
    let live = events(&mut new, "5047", 1).await;
    assert_eq!(live[0]["privateMsgId"], 2);
    new.expect_nothing().await;
    r.stop().await;
}

#[actix_rt::test]
async fn two_resumes_at_once_leave_the_session_with_exactly_one_connection() {
    let r = Router::start().await;
    let (mut c, reply) = open(&r.url(), "desk", None).await;
    let id = session_id(&reply);
    c.register("5048").await;
    drop(c);
    r.sw1
        .post_ok("/hotdesk", json!({"guest": "5048", "host": "4048"}))
        .await;
    let resume = json!({"message": "RequestOpen", "referenceId": 7, "protocolVersion": 1, "application": "desk", "resume": {"sessionId": id}});
    let mut a = Client::connect(&r.url()).await;
    let mut b = Client::connect(&r.url()).await;
    // Give the router time to see the event before both resume.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (ra, rb) = tokio::join!(a.send(&resume), b.send(&resume));
    let ((), ()) = (ra, rb);
    // Each connection ends either holding the session or closed with 4009; exactly one holds
    // it, and live events reach that one only.
    r.sw1
        .post_ok("/hotdesk/cancel", json!({"guest": "5048"}))
        .await;
    let mut holders = 0;
    for c in [&mut a, &mut b] {
        let mut got = Vec::new();
        let end = loop {
            match step(c, Duration::from_millis(500)).await {
                None => break None,
                Some(Ok(v)) => got.push(v),
                Some(Err(code)) => break Some(code),
            }
        };
        match end {
            None => {
                holders += 1;
                let privates: Vec<u64> = got
                    .iter()
                    .filter(|m| m["message"] == "EventPrivateInfo")
                    .map(|m| m["privateMsgId"].as_u64().unwrap())
                    .collect();
                assert_eq!(privates, [1, 2], "replayed then live, once: {got:?}");
            }
            Some(code) => assert_eq!(code, Some(4009), "{got:?}"),
        }
    }
    assert_eq!(holders, 1);
    r.stop().await;
}

#[actix_rt::test]
async fn events_beyond_the_queue_bound_are_a_gap() {
    let r = Router::with(&config_with("client-queue = 16", "")).await;
    let (mut c, reply) = open(&r.url(), "desk", None).await;
    let id = session_id(&reply);
    c.register("5049").await;
    drop(c);
    let mut watcher = r.client().await;
    watcher.register("5049").await;
    r.sw1
        .post_ok(
            "/burst",
            json!({"guest": "5049", "host": "4049", "count": 5}),
        )
        .await;
    let seen = seqs(&events(&mut watcher, "5049", 10).await);
    // 10 events while away, within the 16 kept: all replayed.
    let (mut c, reply) = open(
        &r.url(),
        "desk",
        Some(json!({"sessionId": id, "lastEventSeq": {"sw1": 0}})),
    )
    .await;
    assert_eq!(reply["replayed"], 10, "{reply}");
    assert_eq!(seqs(&events(&mut c, "5049", 10).await), seen);
    drop(c);
    // Now 40 more while away (in chunks the watcher's queue of 16 takes): only the last 16
    // are kept.
    let mut seen = Vec::new();
    for _ in 0..5 {
        r.sw1
            .post_ok(
                "/burst",
                json!({"guest": "5049", "host": "4049", "count": 4}),
            )
            .await;
        seen.extend(seqs(&events(&mut watcher, "5049", 8).await));
    }
    let (mut c, reply) = open(
        &r.url(),
        "desk",
        Some(json!({"sessionId": id, "lastEventSeq": {"sw1": *seen.first().unwrap() - 1}})),
    )
    .await;
    assert_eq!(reply["resumed"], true, "{reply}");
    assert_eq!(reply["resumeGap"], json!(["sw1"]), "{reply}");
    assert_eq!(reply["replayed"], 16, "{reply}");
    assert_eq!(seqs(&events(&mut c, "5049", 16).await), seen[24..]);
    c.expect_nothing().await;
    r.stop().await;
}

#[actix_rt::test]
async fn request_close_ends_the_session_at_once() {
    let r = Router::start().await;
    let (mut c, reply) = open(&r.url(), "desk", None).await;
    let id = session_id(&reply);
    c.register("5050").await;
    let closed = c.request(json!({"message": "RequestClose"})).await;
    assert_eq!(normalized(&closed)["message"], "EventClosed");
    assert_eq!(c.closed().await, 1000);
    eventually("the monitor stopped", async || monitors(&r).await == 0).await;
    let (_c, reply) = open(&r.url(), "desk", Some(json!({"sessionId": id}))).await;
    assert_eq!(reply["resumed"], false, "{reply}");
    r.stop().await;
}

/// `csta_router_client_disconnects_total{reason}` of the router in this process.
fn disconnects(r: &Router, reason: &str) -> f64 {
    let text = csta_router::metrics::render(&r.running.shared.gauges());
    let series = format!("csta_router_client_disconnects_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no {series}"))
}

#[actix_rt::test]
async fn a_slow_consumer_may_resume_and_gets_the_last_events_kept() {
    let r = Router::with(&config_with("client-queue = 64", "")).await;
    // A client whose socket has a tiny receive buffer, so that not reading fills up quickly.
    let (mut c, reply) = r.tiny_buffer_client().await;
    let id = session_id(&reply);
    c.register("5052").await;
    let mut watcher = r.client().await;
    watcher.register("5052").await;
    // Events in chunks the watcher reads as they come, while the client does not read, until
    // the client is closed as a slow consumer (this is the only test of this process that
    // makes one); then 20 more.
    let before = disconnects(&r, "slow_consumer");
    let mut seen = Vec::new();
    let mut after_close = 0;
    while after_close < 20 {
        assert!(seen.len() < 200_000, "never a slow consumer");
        if disconnects(&r, "slow_consumer") > before {
            after_close += 20;
        }
        r.sw1
            .post_ok(
                "/burst",
                json!({"guest": "5052", "host": "4052", "count": 10}),
            )
            .await;
        seen.extend(seqs(&events(&mut watcher, "5052", 20).await));
    }
    let end = c.ended().await;
    assert!(matches!(end, None | Some(4008)), "{end:?}");
    // The session lingers with its last 64 events (sent or queued, so those the socket took
    // but the client never read are among them).
    let (mut c, reply) = open(
        &r.url(),
        "slow",
        Some(json!({"sessionId": id, "lastEventSeq": {"sw1": 0}})),
    )
    .await;
    assert_eq!(reply["resumed"], true, "{reply}");
    assert_eq!(reply["resumeGap"], json!(["sw1"]), "{reply}");
    assert_eq!(reply["replayed"], 64, "{reply}");
    assert_eq!(
        seqs(&events(&mut c, "5052", 64).await),
        seen[seen.len() - 64..]
    );
    c.expect_nothing().await;
    r.stop().await;
}

#[actix_rt::test]
async fn a_registration_dropped_while_away_is_announced_before_the_replay() {
    let r = Router::start().await;
    let (mut c, reply) = open(&r.url(), "desk", None).await;
    let id = session_id(&reply);
    c.register("5053").await;
    let mut watcher = r.client().await;
    watcher.register("5053").await;
    drop(c);
    // The link drops and the switch refuses the monitor again on the new link.
    r.sw1
        .post_ok("/faults/reject", json!({"count": 1, "category": "operation", "value": "invalidDeviceID", "request": "MonitorStart"}))
        .await;
    r.sw1.post_ok("/faults/drop", json!({})).await;
    // The watcher sees the registration go (after the link came back).
    loop {
        let m = watcher.recv().await;
        if m["message"] == "EventUnregistered" {
            break;
        }
    }
    let mut c = Client::connect(&r.url()).await;
    let reply = c
        .request(json!({"message": "RequestOpen", "protocolVersion": 1, "application": "desk", "resume": {"sessionId": id}}))
        .await;
    assert_eq!(reply["resumed"], true, "{reply}");
    let mut after = Vec::new();
    for _ in 0..3 {
        after.push(normalized(&c.recv().await));
    }
    assert_eq!(after[0]["message"], "EventLinkConnected");
    assert_eq!(after[1]["message"], "EventLinkConnected");
    assert_eq!(after[2]["message"], "EventUnregistered", "{after:?}");
    assert_eq!(after[2]["thisDn"], "5053");
    assert_eq!(after[2]["errorCode"], 59);
    c.expect_nothing().await;
    r.stop().await;
}

/// The router binary: lingering sessions count under `max-clients`, and the session metrics.
#[test]
fn lingering_sessions_count_under_max_clients_and_are_counted() {
    let config = process::two_switches(
        "max-clients = 3\nsession-linger = \"30s\"",
        "kpl-interval = \"0s\"",
        "",
        1,
    );
    let r = RouterProcess::start("sessions-metrics", &config);
    let rt = process::runtime();
    rt.block_on(async {
        r.wait_connected(&["sw1", "sw2"]).await;
        let value = async |series: &str| -> f64 {
            let (_, m) = r.scrape().await;
            *m.get(series).unwrap_or_else(|| panic!("no {series}"))
        };
        for result in ["resumed", "gap", "unknown", "refused"] {
            let s = format!("csta_router_session_resumes_total{{result=\"{result}\"}}");
            assert_eq!(value(&s).await, 0.0, "{s} exported at 0");
        }
        assert_eq!(value("csta_router_sessions_lingering").await, 0.0);
        assert_eq!(value("csta_router_events_replayed_total").await, 0.0);
        assert_eq!(
            value("csta_router_client_disconnects_total{reason=\"taken_over\"}").await,
            0.0
        );
        let (_a, _) = open(&r.url(), "desk", None).await;
        let (b, reply) = open(&r.url(), "desk", None).await;
        let id = session_id(&reply);
        drop(b);
        eventually("one lingering", async || {
            value("csta_router_sessions_lingering").await == 1.0
        })
        .await;
        // One open connection and one lingering session: one place left under the limit of 3.
        // A connection resuming its own lingering session takes it and gives the session's
        // back: it counts once, so one place is still left.
        let (mut b2, reply) = open(&r.url(), "desk", Some(json!({"sessionId": id}))).await;
        assert_eq!(reply["resumed"], true);
        assert_eq!(value("csta_router_sessions_lingering").await, 0.0);
        let (mut d, _) = open(&r.url(), "desk", None).await;
        let mut refused = Client::connect(&r.url()).await;
        assert_eq!(
            refused.closed().await,
            1013,
            "a, b2 and d hold the 3 places"
        );
        let closed = d.request(json!({"message": "RequestClose"})).await;
        assert_eq!(closed["message"], "EventClosed");
        assert_eq!(d.closed().await, 1000);
        // A resume while the session is in use takes it over: 4009, counted.
        let (_b3, reply) = open(&r.url(), "desk", Some(json!({"sessionId": id}))).await;
        assert_eq!(reply["resumed"], true);
        assert_eq!(b2.closed().await, 4009);
        eventually("taken over counted", async || {
            value("csta_router_client_disconnects_total{reason=\"taken_over\"}").await == 1.0
        })
        .await;
        assert_eq!(
            value("csta_router_session_resumes_total{result=\"resumed\"}").await,
            2.0
        );
    });
    let log = r.stop();
    assert!(!log.contains("panicked at"), "{log}");
}
