#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The cluster as an operator runs it (README, "Cluster"; SPEC §10), on real processes: a node
//! joining takes its share by a planned hand-over, an owner that cannot reach its switch
//! releases it, SIGTERM hands over and keeps the clients' sessions, a node refuses clients
//! until it has joined, and hot-desking goes on through rolling restarts and killed owners.
//! One test at a time; `rebalance-after` is shortened to seconds where a test waits for it.

mod common;
use common::bed::*;
use common::process::{wait_exit, RouterProcess};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message as Ws;

/// The hot-desk hosts the phone used on each switch, with when it acted.
type PhoneLog = Vec<(usize, String, Instant)>;

/// A phone on each of `sims` hot-desks its guest to a new host, then cancels, every 200 ms, for
/// `ticks` turns (guest: the switch's first DN + 1; hosts: + 100 + the turn).
async fn phone(sims: Vec<(String, common::sim_control::SimControl)>, ticks: usize) -> PhoneLog {
    let mut log = Vec::new();
    for i in 0..ticks {
        for (k, (first, sim)) in sims.iter().enumerate() {
            let base: u64 = first.parse().unwrap();
            let guest = (base + 1).to_string();
            if i % 2 == 0 {
                let host = (base + 100 + i as u64).to_string();
                let at = Instant::now();
                sim.post_ok("/hotdesk", json!({"guest": guest, "host": host}))
                    .await;
                log.push((k, host, at));
            } else {
                sim.post_ok("/hotdesk/cancel", json!({"guest": guest}))
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    log
}

#[test]
fn a_node_that_joins_gets_its_share_by_a_planned_hand_over() {
    let _serial = one_at_a_time();
    runtime().block_on(async {
        let mut bed = Bed::start_full(
            2,
            1,
            "session-linger = \"5s\"",
            "rebalance-after = \"3s\"",
            LEASE_TTL,
        );
        bed.settled(LEASE_TTL * 3 + Duration::from_secs(5)).await;
        bed.link_up_everywhere("sw1").await;
        bed.link_up_everywhere("sw2").await;
        let mut c = bed.client("a").await;
        c.register("4001").await;
        c.register("6001").await;
        let sims = vec![
            ("4000".to_owned(), bed.pbx("sw1").control()),
            ("6000".to_owned(), bed.pbx("sw2").control()),
        ];
        let phone = tokio::spawn(phone(sims, 60));
        tokio::time::sleep(Duration::from_secs(1)).await;
        bed.add_node("b");
        // Everything the client hears while the phone acts, with when.
        let mut heard: Vec<(Value, Instant)> = Vec::new();
        while !phone.is_finished() {
            if let Some(m) = c.next(Duration::from_millis(100)).await {
                heard.push((m, Instant::now()));
            }
        }
        while let Some(m) = c.next(Duration::from_millis(500)).await {
            heard.push((m, Instant::now()));
        }
        let log = phone.await.unwrap();
        let owners = bed.settled(Duration::from_secs(5)).await;
        let moved: Vec<&String> = owners
            .iter()
            .filter(|(_, o)| o.as_str() == "b")
            .map(|(s, _)| s)
            .collect();
        assert_eq!(moved.len(), 1, "the spread is not even: {owners:?}");
        let moved = moved[0].clone();
        let link = |what: &str| {
            heard
                .iter()
                .filter(|(m, _)| m["message"] == what && m["switch"] == moved.as_str())
                .cloned()
                .collect::<Vec<_>>()
        };
        let (down, up) = (link("EventLinkDisconnected"), link("EventLinkConnected"));
        assert_eq!(
            (down.len(), up.len()),
            (1, 1),
            "link events of {moved}: {down:?} {up:?}"
        );
        assert_eq!(down[0].0["reason"], "rebalance", "{:?}", down[0]);
        assert_eq!(up[0].0["reason"], "rebalance", "{:?}", up[0]);
        let window = up[0].1.duration_since(down[0].1);
        eprintln!("rebalance of {moved}: hand-over window (EventLinkDisconnected to EventLinkConnected) {window:?}");
        assert!(
            window < Duration::from_secs(3),
            "the hand-over window was {window:?}"
        );
        // Every hot-desk outside the window reached the client, once; inside it may be lost
        // (as in any link loss).
        let margin = Duration::from_millis(300);
        let hosts: Vec<String> = heard
            .iter()
            .filter(|(m, _)| m["privateMsgId"] == 1 && m["message"] == "EventPrivateInfo")
            .map(|(m, _)| m["otherDn"].as_str().unwrap_or("").to_owned())
            .collect();
        for (k, host, at) in &log {
            let sw = format!("sw{}", k + 1);
            let inside = sw == moved && *at + margin > down[0].1 && *at < up[0].1 + margin;
            let times = hosts.iter().filter(|h| *h == host).count();
            assert!(times <= 1, "the hot-desk to {host} arrived {times} times");
            assert!(
                inside || times == 1,
                "the hot-desk to {host} on {sw} (outside the hand-over window) never arrived"
            );
        }
        let (_, m) = bed.node("b").scrape().await;
        assert_eq!(
            m[&format!("csta_router_ownership_changes_total{{reason=\"rebalance\",switch=\"{moved}\"}}")],
            1.0
        );
        assert!(bed.node("a").log().contains("this node hands one over"));
        bed.stop();
    });
}

#[test]
fn with_rebalance_off_a_joining_node_waits_for_a_failover() {
    let _serial = one_at_a_time();
    runtime().block_on(async {
        let mut bed = Bed::start_full(
            2,
            1,
            "session-linger = \"1s\"",
            "rebalance = \"off\"\nrebalance-after = \"1s\"",
            LEASE_TTL,
        );
        bed.settled(LEASE_TTL * 3 + Duration::from_secs(5)).await;
        bed.add_node("b");
        tokio::time::sleep(LEASE_TTL + Duration::from_secs(4)).await;
        let owners = bed.settled(Duration::from_secs(5)).await;
        assert!(owners.values().all(|o| o == "a"), "{owners:?}");
        bed.stop();
    });
}

#[test]
fn an_owner_that_cannot_reach_its_switch_releases_it_to_a_node_that_can() {
    let _serial = one_at_a_time();
    runtime().block_on(async {
        let mut bed = Bed::start_full(
            1,
            0,
            "session-linger = \"1s\"",
            "rebalance-after = \"2s\"",
            LEASE_TTL,
        );
        // Node a's address for the switch leads nowhere.
        bed.names.push("a".into());
        let unreachable = bed
            .config(0)
            .replace(&bed.pbx("sw1").sim.link(), "127.0.0.1:1");
        bed.nodes
            .push(Some(RouterProcess::start("node-a", &unreachable)));
        let owners = bed.settled(LEASE_TTL * 3 + Duration::from_secs(5)).await;
        assert_eq!(owners["sw1"], "a");
        bed.add_node("b");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let owners = bed.owners_seen_by("b").await;
            if owners.get("sw1").cloned().flatten().as_deref() == Some("b") {
                break;
            }
            assert!(Instant::now() < deadline, "sw1 still {owners:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bed.node("b").wait_connected(&["sw1"]).await;
        let mut c = bed.client("a").await;
        c.register("4001").await;
        assert!(bed
            .node("a")
            .log()
            .contains("every link to the switch has been down for 2s"));
        // Node a leaves it to b (whose link is up).
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(bed.owners_seen_by("a").await["sw1"].as_deref(), Some("b"));
        let (_, m) = bed.node("b").scrape().await;
        assert_eq!(
            m["csta_router_ownership_changes_total{reason=\"rebalance\",switch=\"sw1\"}"],
            1.0
        );
        bed.stop();
    });
}

#[test]
fn sigterm_closes_clients_with_1001_and_keeps_their_registrations_for_the_linger() {
    let _serial = one_at_a_time();
    runtime().block_on(async {
        let mut bed = Bed::start_with(1, 2, "session-linger = \"4s\"");
        let (owner, other, sim) = bed.one_switch_ready().await;
        let mut c = bed.client(&other).await;
        c.register("4001").await;
        monitors_on(&sim, "4001", 1).await;
        let i = bed.index(&other);
        let mut node = bed.nodes[i].take().unwrap();
        let asked = Instant::now();
        common::process::sigterm(&node.child);
        assert_eq!(c.ended().await, Some(1001));
        let status =
            tokio::task::block_in_place(|| wait_exit(&mut node.child, Duration::from_secs(10)));
        // request-timeout (2 s) + 2 s.
        assert!(
            asked.elapsed() < Duration::from_secs(4),
            "{:?}",
            asked.elapsed()
        );
        assert!(status.is_some_and(|s| s.success()), "{status:?}");
        assert_no_panic(&node.log(), &other);
        // The session lingers: its DN stays monitored (a desktop reconnecting elsewhere finds
        // it so), then goes.
        tokio::time::sleep(Duration::from_secs(1)).await;
        monitors_on(&sim, "4001", 1).await;
        monitors_on(&sim, "4001", 0).await;
        assert!(bed
            .node(&owner)
            .log()
            .contains("lingered out and were released"));
        bed.stop();
    });
}

#[test]
fn a_node_refuses_clients_with_503_until_it_has_joined() {
    let _serial = one_at_a_time();
    runtime().block_on(async {
        let mut bed = Bed::start(1, 0);
        bed.nats.stop();
        bed.names.push("a".into());
        let node = bed.launch(0);
        bed.nodes.push(Some(node));
        let node = bed.node("a");
        node.wait_log("cannot join the cluster yet", 1);
        let refused = tokio_tungstenite::connect_async(node.url()).await;
        match refused {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 503)
            }
            other => panic!("a WebSocket upgrade before the join: {other:?}"),
        }
        let (status, body) = node.http_get("/readyz").await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("joining the cluster"), "{body}");
        tokio::task::block_in_place(|| bed.nats.restart());
        let owners = bed.settled(LEASE_TTL * 3 + Duration::from_secs(10)).await;
        assert_eq!(owners["sw1"], "a");
        bed.link_up_everywhere("sw1").await;
        let mut c = bed.client("a").await;
        c.register("4001").await;
        bed.stop();
    });
}

/// What a client doing hot-desk requests saw: replies per referenceId, and the requests
/// whose connection ended before their reply.
#[derive(Default, Debug)]
struct Tally {
    replies: HashMap<u64, usize>,
    sent: u64,
    cut: u64,
    reconnects: u64,
    errors: BTreeMap<i64, u64>,
    /// How each cut request's connection ended.
    cuts: Vec<String>,
}

/// A desktop: connects to the first node of `urls` that takes it, opens, registers its guest,
/// and hot-desks and cancels one request at a time until `stop`; on a lost connection it
/// moves to the next node of the list.
async fn desktop(
    urls: Arc<std::sync::Mutex<Vec<String>>>,
    guest: String,
    host: String,
    switches: usize,
    stop: Arc<AtomicBool>,
    first_ref: u64,
) -> Tally {
    let mut t = Tally::default();
    let mut next_ref = first_ref;
    let mut turn = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let list = urls.lock().unwrap().clone();
        let url = &list[turn % list.len()];
        turn += 1;
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        t.reconnects += 1;
        let open = json!({"message": "RequestOpen", "protocolVersion": 1, "application": "test", "referenceId": first_ref - 1});
        if ws.send(Ws::text(open.to_string())).await.is_err() {
            continue;
        }
        let mut hot = false;
        let mut registered = false;
        'session: while !stop.load(Ordering::Relaxed) {
            let id = next_ref;
            next_ref += 1;
            let req = if !registered {
                json!({"message": "RequestRegisterAddress", "thisDn": guest, "referenceId": id})
            } else if !hot {
                json!({"message": "RequestPrivateService", "thisDn": guest, "privateMsgId": 1, "extensions": {"HOST_DN": host}, "referenceId": id})
            } else {
                json!({"message": "RequestPrivateService", "thisDn": guest, "privateMsgId": 2, "referenceId": id})
            };
            // A desktop reads what arrived before it sends: a close frame already there ends
            // the session here.
            while let Some(m) = futures_util::FutureExt::now_or_never(ws.next()) {
                match m {
                    Some(Ok(Ws::Text(text))) => {
                        // A second reply to an earlier request would show here.
                        let m: Value = serde_json::from_str(&text).unwrap();
                        if let Some(r) = m["referenceId"].as_u64().filter(|r| *r != first_ref - 1) {
                            *t.replies.entry(r).or_default() += 1;
                        }
                    }
                    Some(Ok(Ws::Ping(_))) | Some(Ok(Ws::Pong(_))) => {}
                    _ => break 'session,
                }
            }
            if ws.send(Ws::text(req.to_string())).await.is_err() {
                break;
            }
            t.sent += 1;
            let sent_at = Instant::now();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                match tokio::time::timeout_at(deadline, ws.next()).await {
                    Err(_) => panic!("no reply to {req} within 10 s"),
                    Ok(Some(Ok(Ws::Text(text)))) => {
                        let m: Value = serde_json::from_str(&text).unwrap();
                        let Some(r) = m["referenceId"].as_u64() else {
                            continue;
                        };
                        if r == first_ref - 1 {
                            assert_eq!(m["message"], "EventServerConnected", "{m}");
                            continue;
                        }
                        *t.replies.entry(r).or_default() += 1;
                        if r != id {
                            continue;
                        }
                        if let Some(code) = m["errorCode"].as_i64() {
                            *t.errors.entry(code).or_default() += 1;
                            if code == 41 {
                                registered = false;
                            }
                        } else if !registered {
                            registered = m["message"] == "EventRegistered";
                        } else {
                            hot = !hot;
                        }
                        break;
                    }
                    Ok(Some(Ok(Ws::Close(frame)))) => {
                        t.cut += 1;
                        // The close crossed the request on the wire: the router closed before
                        // it could read it (a request it took is answered before its close).
                        assert!(
                            sent_at.elapsed() < Duration::from_millis(20),
                            "the connection closed {:?} after {req}, unanswered",
                            sent_at.elapsed()
                        );
                        t.cuts.push(format!(
                            "{:?} {:?} after {}",
                            frame.map(|f| u16::from(f.code)),
                            sent_at.elapsed(),
                            req
                        ));
                        break 'session;
                    }
                    Ok(None) | Ok(Some(Err(_))) => {
                        t.cut += 1;
                        t.cuts.push(format!("dropped after {}", req["message"]));
                        break 'session;
                    }
                    Ok(Some(Ok(_))) => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = switches;
    }
    t
}

/// Start one desktop per (guest, host) pair, spread over the nodes' URLs.
fn desktops(
    bed: &Bed,
    pairs: &[(&str, &str)],
    stop: &Arc<AtomicBool>,
) -> (
    Arc<std::sync::Mutex<Vec<String>>>,
    Vec<tokio::task::JoinHandle<Tally>>,
) {
    let urls: Vec<String> = bed.live().map(|(_, n)| n.url()).collect();
    let mut tasks = Vec::new();
    let shared = Arc::new(std::sync::Mutex::new(urls.clone()));
    for (i, (guest, host)) in pairs.iter().enumerate() {
        let mut mine = urls.clone();
        mine.rotate_left(i % urls.len());
        tasks.push(tokio::spawn(desktop(
            Arc::new(std::sync::Mutex::new(mine)),
            guest.to_string(),
            host.to_string(),
            bed.pbxes.len(),
            stop.clone(),
            1_000_000 * (i as u64 + 1),
        )));
    }
    (shared, tasks)
}

/// Every request got at most one reply, and every reply was to a request; returns the
/// tallies summed: (sent, answered, cut).
fn check_tallies(tallies: &[Tally]) -> (u64, u64, u64) {
    let (mut sent, mut answered, mut cut) = (0, 0, 0);
    for t in tallies {
        for (r, n) in &t.replies {
            assert_eq!(*n, 1, "request {r} was answered {n} times: {t:?}");
        }
        assert_eq!(t.replies.len() as u64 + t.cut, t.sent, "{t:?}");
        sent += t.sent;
        answered += t.replies.len() as u64;
        cut += t.cut;
    }
    (sent, answered, cut)
}

/// For every DN whose `hotDeskKnown` is true on a node, `hotDesk` is the switch's association.
async fn hot_desk_agrees(bed: &Bed, dns: &[&str]) {
    let mut associations: HashMap<String, String> = HashMap::new();
    for p in &bed.pbxes {
        for a in p.control().state().await["associations"]
            .as_array()
            .unwrap()
        {
            associations.insert(
                a["guest"].as_str().unwrap().to_owned(),
                a["host"].as_str().unwrap().to_owned(),
            );
        }
    }
    for (name, _) in bed.live() {
        let mut c = bed.client(name).await;
        for dn in dns {
            let q = c
                .request(json!({"message": "RequestQueryAddress", "thisDn": dn}))
                .await;
            if q["hotDeskKnown"] != true {
                continue;
            }
            let want = associations
                .get(*dn)
                .map(|h| json!({"guestDn": dn, "hostDn": h}))
                .unwrap_or(Value::Null);
            assert_eq!(q["hotDesk"], want, "node {name}, {dn}: {q}");
        }
    }
}

/// The desktops' guests and hosts, on both switches.
const PAIRS: [(&str, &str); 6] = [
    ("4001", "4501"),
    ("4002", "4502"),
    ("6001", "6501"),
    ("6002", "6502"),
    ("4003", "4503"),
    ("6003", "6503"),
];

/// Two switches, three nodes, and a desktop for each of [`PAIRS`] hot-desking through them:
/// the bed, the desktops' stop flag and their tasks.
async fn under_traffic() -> (Bed, Arc<AtomicBool>, Vec<tokio::task::JoinHandle<Tally>>) {
    let bed = Bed::start_with(2, 3, "session-linger = \"10s\"");
    serving(&bed).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (_, tasks) = desktops(&bed, &PAIRS, &stop);
    (bed, stop, tasks)
}

/// Wait until every switch has a live owner and its link is up on every live node.
async fn serving(bed: &Bed) {
    bed.settled(LEASE_TTL * 3 + Duration::from_secs(10)).await;
    for p in &bed.pbxes {
        bed.link_up_everywhere(&p.name).await;
    }
}

#[test]
fn a_rolling_restart_under_traffic_answers_every_request_once() {
    let _serial = one_at_a_time();
    runtime().block_on(async {
        let (mut bed, stop, tasks) = under_traffic().await;
        let pairs = PAIRS;
        tokio::time::sleep(Duration::from_secs(1)).await;
        for i in 0..bed.names.len() {
            let node = bed.nodes[i].take().unwrap();
            let name = bed.names[i].clone();
            let log = tokio::task::block_in_place(|| node.stop());
            assert_no_panic(&log, &name);
            bed.restart(i);
            serving(&bed).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let mut tallies = Vec::new();
        for t in tasks {
            tallies.push(t.await.unwrap());
        }
        let (sent, answered, cut) = check_tallies(&tallies);
        let cuts: Vec<&String> = tallies.iter().flat_map(|t| &t.cuts).collect();
        eprintln!(
            "rolling restart: {sent} requests, {answered} answered, {cut} cut by a close: {cuts:?}"
        );
        // A request is cut only when its node closed the connection while it was on the
        // wire (at most one per desktop and restart).
        assert!(cut <= (pairs.len() * bed.names.len()) as u64, "{cut}");
        assert!(answered > 100, "{answered}");
        let dns: Vec<&str> = pairs.iter().flat_map(|(g, h)| [*g, *h]).collect();
        hot_desk_agrees(&bed, &dns).await;
        bed.stop();
    });
}

/// How long the soak runs: 60 s, or `CLUSTER_SOAK_SECS`.
fn soak_duration() -> Duration {
    let secs = std::env::var("CLUSTER_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

#[test]
fn a_soak_with_owners_killed_in_turn_answers_every_request_once() {
    let _serial = one_at_a_time();
    runtime().block_on(async {
        let (mut bed, stop, tasks) = under_traffic().await;
        let pairs = PAIRS;
        let started = Instant::now();
        let mut turn = 0usize;
        while started.elapsed() < soak_duration() {
            tokio::time::sleep(Duration::from_secs(3)).await;
            // Kill the owner of one switch, then start it again.
            let sw = format!("sw{}", turn % bed.pbxes.len() + 1);
            turn += 1;
            let owners = bed.settled(Duration::from_secs(20)).await;
            let victim = owners[&sw].clone();
            bed.kill(&victim);
            // A node of the same name may start once the killed one's presence has expired.
            tokio::time::sleep(LEASE_TTL * 2).await;
            let i = bed.index(&victim);
            bed.restart(i);
            serving(&bed).await;
        }
        stop.store(true, Ordering::Relaxed);
        let mut tallies = Vec::new();
        for t in tasks {
            tallies.push(t.await.unwrap());
        }
        let (sent, answered, cut) = check_tallies(&tallies);
        let cuts: Vec<&String> = tallies.iter().flat_map(|t| &t.cuts).collect();
        eprintln!("soak: {turn} kills, {sent} requests, {answered} answered, {cut} cut by a kill: {cuts:?}");
        assert!(turn >= 2, "{turn}");
        assert!(answered > 100, "{answered}");
        let dns: Vec<&str> = pairs.iter().flat_map(|(g, h)| [*g, *h]).collect();
        hot_desk_agrees(&bed, &dns).await;
        bed.stop();
    });
}
