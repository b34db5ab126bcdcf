//! Call events for desktops, against the router binary and its embedded simulator (the
//! first two scenarios in each simulator preset: generic, OpenScape Voice, Avaya, Zultys, with
//! the router keys of the README's "Connecting your PBX"):
//!
//! - an inbound call with hold, retrieve, a transfer that gives the staying party a new call
//!   ID, and clear, seen from all three parties: each event of the table in order, with
//!   `eventSeq` increasing and connIds stable; the transferring device gets `EventReleased`, the
//!   staying one `EventPartyChanged` with `previousConnId` and its state from before;
//!   `RequestQueryAddress` then lists only the new connId (as objects for a client with call
//!   events, as connIds for one without), and clearing the new call empties the lists;
//! - an outbound call: off hook, dialing, dialing when the far end rings, established, nothing
//!   when the far end hangs up, released on the device's own clearing;
//! - a diverted call, seen from the caller, the device it left and the one it went to;
//! - a client registered without `callEvents` (or registered again without it) gets none, and
//!   `csta_router_call_events_total` counts each event once;
//! - in a cluster (real `nats-server`, `pbx-sim` and three router processes), clients on the
//!   owner and on the other nodes get the same call events (names, `eventSeq`, connIds, order),
//!   also after the owner is killed, and a client without `callEvents` on another node none;
//! - the README's Python example prints a ringing call, its answer and its end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{process, router, sim_control};

use process::RouterProcess;
use router::Client;
use serde_json::{json, Value};
use sim_control::SimControl;
use std::time::Duration;

const OPTIONS: &str = "request-timeout = \"2s\"\nkpl-interval = \"0s\"\nreconnect-min = \"20ms\"\nreconnect-max = \"100ms\"";

fn config() -> String {
    process::two_switches("", OPTIONS, "", 1)
}

/// The simulator presets with the router keys each needs (as in the README's "Connecting
/// your PBX"): the call scenarios run against each, so that calls named in each switch's
/// form (OpenScape Voice `N<+1561555…>;displayNumber=…`, Avaya DMCC `…:CM1:…:0`, no namespace
/// for Zultys) give the same client events.
const PRESETS: [(&str, &str); 4] = [
    ("generic", ""),
    (
        "osv",
        "simulator-vendor = \"osv\"\ncsta-namespace = \"http://www.ecma-international.org/standards/ecma-323/csta/ed4\"\ndevice-id-form = \"osv\"\ndn-prefix = \"+1561555\"\n",
    ),
    (
        "avaya",
        "simulator-vendor = \"avaya\"\napplication-session = true\n",
    ),
    ("zultys", "simulator-vendor = \"zultys\"\ncsta-namespace = \"\"\n"),
];

/// Two embedded simulators in the preset `lines` configure.
fn preset_config(lines: &str) -> String {
    common::config::head("", OPTIONS) + "\n" + &common::config::two_simulated(lines, [1, 1])
}

/// An open client.
async fn open(r: &RouterProcess) -> Client {
    Client::open(&r.url(), None, 2).await
}

/// Register `dn`, with `callEvents` as given; the reply echoes it.
async fn register(c: &mut Client, dn: &str, call_events: bool) {
    let reply = c
        .request(
            json!({"message": "RequestRegisterAddress", "thisDn": dn, "callEvents": call_events}),
        )
        .await;
    assert_eq!(reply["message"], "EventRegistered", "{reply}");
    assert_eq!(reply["callEvents"], json!(call_events), "{reply}");
}

/// The next `n` messages, each within 5 s, then nothing more for 200 ms.
async fn events(c: &mut Client, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(c.recv().await);
    }
    c.expect_nothing().await;
    out
}

/// Check a call event: its name, DN, state and other party (`None`: no `otherDn`), and the
/// fields every call event has. Its connId.
fn check(e: &Value, message: &str, dn: &str, state: &str, other: Option<&str>) -> String {
    assert_eq!(e["message"], message, "{e}");
    assert_eq!(e["thisDn"], dn, "{e}");
    assert_eq!(e["monitoredDn"], dn, "{e}");
    assert_eq!(e["switch"], "sw1", "{e}");
    assert_eq!(e["callState"], state, "{e}");
    assert_eq!(e.get("otherDn").and_then(Value::as_str), other, "{e}");
    assert!(e["eventSeq"].as_u64().is_some(), "{e}");
    assert!(
        e["cause"].is_string(),
        "the simulator gives every event a cause: {e}"
    );
    let conn_id = e["connId"].as_str().unwrap().to_owned();
    assert_eq!(conn_id.len(), 16, "{e}");
    conn_id
}

/// `eventSeq` strictly increases along a client's events.
fn increasing(events: &[Value]) {
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["eventSeq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "eventSeq: {seqs:?}");
}

async fn query(c: &mut Client, dn: &str) -> Value {
    let reply = c
        .request(json!({"message": "RequestQueryAddress", "thisDn": dn}))
        .await;
    assert_eq!(reply["message"], "EventAddressInfo", "{reply}");
    reply["calls"].clone()
}

async fn call(sim: &SimControl, call_id: &str, action: &str, body: Value) -> Value {
    sim.post_ok(&format!("/calls/{call_id}/{action}"), body)
        .await
}

async fn metric(r: &RouterProcess, event: &str) -> f64 {
    let (_, map) = r.scrape().await;
    let series = format!("csta_router_call_events_total{{event=\"{event}\",switch=\"sw1\"}}");
    *map.get(&series)
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

#[test]
fn an_inbound_call_held_retrieved_transferred_with_a_new_call_id_and_cleared() {
    for (vendor, lines) in PRESETS {
        println!("preset {vendor}");
        inbound(vendor, lines);
    }
}

fn inbound(vendor: &str, lines: &str) {
    let r = RouterProcess::start(&format!("call-events-in-{vendor}"), &preset_config(lines));
    let sim = r.controls[0];
    process::runtime().block_on(async {
        r.wait_connected(&["sw1", "sw2"]).await;
        for event in [
            "off_hook",
            "dialing",
            "ringing",
            "established",
            "held",
            "retrieved",
            "party_changed",
            "diverted",
            "released",
        ] {
            assert_eq!(metric(&r, event).await, 0.0, "{event} exported at 0");
        }
        // B (4001) calls A (5001), who transfers to C (5002).
        let (mut a, mut b, mut c, mut plain) = (
            open(&r).await,
            open(&r).await,
            open(&r).await,
            open(&r).await,
        );
        register(&mut a, "5001", true).await;
        register(&mut b, "4001", true).await;
        register(&mut c, "5002", true).await;
        register(&mut plain, "4001", false).await;
        let made = sim
            .post_ok(
                "/calls",
                json!({"from": "4001", "to": "5001", "answer": false}),
            )
            .await;
        let call_id = made["callId"].as_str().unwrap().to_owned();
        let b1 = events(&mut b, 3).await;
        let x = check(&b1[0], "EventOffHook", "4001", "initiated", None);
        assert_eq!(
            check(&b1[1], "EventDialing", "4001", "dialing", Some("5001")),
            x
        );
        assert_eq!(
            check(&b1[2], "EventDialing", "4001", "dialing", Some("5001")),
            x
        );
        let a1 = events(&mut a, 1).await;
        assert_eq!(
            check(&a1[0], "EventRinging", "5001", "ringing", Some("4001")),
            x,
            "one connId at every device"
        );
        assert_eq!(
            query(&mut a, "5001").await,
            json!([{"connId": x, "callState": "ringing", "otherDn": "4001"}])
        );

        call(&sim, &call_id, "answer", json!({"device": "5001"})).await;
        let a2 = events(&mut a, 1).await;
        check(
            &a2[0],
            "EventEstablished",
            "5001",
            "established",
            Some("4001"),
        );
        let b2 = events(&mut b, 1).await;
        check(
            &b2[0],
            "EventEstablished",
            "4001",
            "established",
            Some("5001"),
        );

        call(&sim, &call_id, "hold", json!({"device": "5001"})).await;
        call(&sim, &call_id, "retrieve", json!({"device": "5001"})).await;
        let a3 = events(&mut a, 2).await;
        check(&a3[0], "EventHeld", "5001", "held", Some("4001"));
        check(
            &a3[1],
            "EventRetrieved",
            "5001",
            "established",
            Some("4001"),
        );
        b.expect_nothing().await; // another party's hold is not B's connection

        let moved = call(
            &sim,
            &call_id,
            "transfer",
            json!({"from": "5001", "to": "5002", "newCallId": true}),
        )
        .await;
        let new_call_id = moved["callId"].as_str().unwrap().to_owned();
        assert_ne!(new_call_id, call_id);
        let a4 = events(&mut a, 1).await;
        assert_eq!(
            check(&a4[0], "EventReleased", "5001", "released", Some("4001")),
            x
        );
        let b3 = events(&mut b, 1).await;
        let y = check(
            &b3[0],
            "EventPartyChanged",
            "4001",
            "established",
            Some("5002"),
        );
        assert_ne!(y, x, "a new call ID is a new connId");
        assert_eq!(b3[0]["previousConnId"], x.as_str(), "{}", b3[0]);
        let c1 = events(&mut c, 2).await;
        assert_eq!(
            check(&c1[0], "EventRinging", "5002", "ringing", Some("4001")),
            y
        );
        assert_eq!(
            check(
                &c1[1],
                "EventEstablished",
                "5002",
                "established",
                Some("4001")
            ),
            y
        );

        // The staying party's list holds only the new call.
        assert_eq!(
            query(&mut b, "4001").await,
            json!([{"connId": y, "callState": "established", "otherDn": "5002"}])
        );
        assert_eq!(
            query(&mut plain, "4001").await,
            json!([y]),
            "the plain list without callEvents"
        );
        assert_eq!(query(&mut a, "5001").await, json!([]));

        call(&sim, &new_call_id, "clear", json!({})).await;
        let b4 = events(&mut b, 1).await;
        assert_eq!(
            check(&b4[0], "EventReleased", "4001", "released", Some("5002")),
            y
        );
        let c2 = events(&mut c, 1).await;
        assert_eq!(
            check(&c2[0], "EventReleased", "5002", "released", Some("4001")),
            y
        );
        assert_eq!(query(&mut b, "4001").await, json!([]));
        assert_eq!(query(&mut plain, "4001").await, json!([]));
        assert_eq!(query(&mut c, "5002").await, json!([]));

        let all_b: Vec<Value> = [b1, b2, b3, b4].concat();
        increasing(&all_b);
        increasing(&[a1, a2, a3, a4].concat());
        increasing(&[c1, c2].concat());
        plain.expect_nothing().await;

        for (event, n) in [
            ("off_hook", 1.0),
            ("dialing", 2.0),
            ("ringing", 2.0),
            ("established", 3.0),
            ("held", 1.0),
            ("retrieved", 1.0),
            ("party_changed", 1.0),
            ("diverted", 0.0),
            ("released", 3.0),
        ] {
            assert_eq!(metric(&r, event).await, n, "{event}: once per CSTA event");
        }
    });
    r.stop();
}

#[test]
fn an_outbound_call_a_diverted_call_and_clients_without_call_events() {
    for (vendor, lines) in PRESETS {
        println!("preset {vendor}");
        outbound(vendor, lines);
    }
}

fn outbound(vendor: &str, lines: &str) {
    let r = RouterProcess::start(&format!("call-events-out-{vendor}"), &preset_config(lines));
    let sim = r.controls[0];
    process::runtime().block_on(async {
        r.wait_connected(&["sw1", "sw2"]).await;
        let (mut me, mut plain) = (open(&r).await, open(&r).await);
        register(&mut me, "5003", true).await;
        register(&mut plain, "5003", false).await;
        let made = sim
            .post_ok(
                "/calls",
                json!({"from": "5003", "to": "4003", "answer": false}),
            )
            .await;
        let call_id = made["callId"].as_str().unwrap().to_owned();
        call(&sim, &call_id, "answer", json!({"device": "4003"})).await;
        // The far end hangs up: nothing until this device's own connection clears.
        call(&sim, &call_id, "clear", json!({"device": "4003"})).await;
        let out = events(&mut me, 5).await;
        let x = check(&out[0], "EventOffHook", "5003", "initiated", None);
        for (e, (message, state)) in out.iter().zip([
            ("EventOffHook", "initiated"),
            ("EventDialing", "dialing"),
            ("EventDialing", "dialing"),
            ("EventEstablished", "established"),
            ("EventReleased", "released"),
        ]) {
            let other = (message != "EventOffHook").then_some("4003");
            assert_eq!(check(e, message, "5003", state, other), x, "connId stable");
        }
        increasing(&out);
        plain.expect_nothing().await;

        // Registering again without callEvents: no more call events.
        register(&mut me, "5003", false).await;
        let again = sim
            .post_ok("/calls", json!({"from": "5003", "to": "4003"}))
            .await;
        let again_id = again["callId"].as_str().unwrap().to_owned();
        call(&sim, &again_id, "clear", json!({})).await;
        me.expect_nothing().await;

        // A diverted call: 4004 calls 5004, which diverts it to 5005.
        let (mut caller, mut left, mut to) = (open(&r).await, open(&r).await, open(&r).await);
        register(&mut caller, "4004", true).await;
        register(&mut left, "5004", true).await;
        register(&mut to, "5005", true).await;
        let made = sim
            .post_ok(
                "/calls",
                json!({"from": "4004", "to": "5004", "answer": false}),
            )
            .await;
        let call_id = made["callId"].as_str().unwrap().to_owned();
        call(
            &sim,
            &call_id,
            "divert",
            json!({"from": "5004", "to": "5005"}),
        )
        .await;
        let l = events(&mut left, 2).await;
        let x = check(&l[0], "EventRinging", "5004", "ringing", Some("4004"));
        assert_eq!(
            check(&l[1], "EventDiverted", "5004", "released", Some("5005")),
            x
        );
        let t = events(&mut to, 1).await;
        assert_eq!(
            check(&t[0], "EventRinging", "5005", "ringing", Some("4004")),
            x
        );
        let c = events(&mut caller, 4).await;
        check(&c[0], "EventOffHook", "4004", "initiated", None);
        check(&c[1], "EventDialing", "4004", "dialing", Some("5004"));
        check(&c[2], "EventDialing", "4004", "dialing", Some("5004"));
        assert_eq!(
            check(&c[3], "EventDialing", "4004", "dialing", Some("5005")),
            x
        );
        assert_eq!(query(&mut left, "5004").await, json!([]));
        assert_eq!(metric(&r, "diverted").await, 1.0);
    });
    r.stop();
}

/// The call events among `messages` as (message, eventSeq, connId, callState).
fn call_events_of(messages: &[Value]) -> Vec<(String, u64, String, String)> {
    messages
        .iter()
        .filter(|m| m.get("callState").is_some())
        .map(|m| {
            (
                m["message"].as_str().unwrap().to_owned(),
                m["eventSeq"].as_u64().unwrap(),
                m["connId"].as_str().unwrap().to_owned(),
                m["callState"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Every message `c` gets until none comes for `quiet`.
async fn drain(c: &mut Client, quiet: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some(m) = c.next(quiet).await {
        out.push(m);
    }
    out
}

#[test]
fn a_client_on_another_node_gets_the_owner_s_call_events_also_across_an_owner_kill() {
    use common::bed::{monitors_on, one_at_a_time, runtime, until, Bed, LEASE_TTL};
    let _serial = one_at_a_time();
    runtime().block_on(async {
        let mut bed = Bed::start(1, 3);
        let owners = bed.settled(LEASE_TTL * 3 + Duration::from_secs(5)).await;
        let owner = owners["sw1"].clone();
        let survivors: Vec<String> = bed
            .live()
            .map(|(n, _)| n.to_owned())
            .filter(|n| *n != owner)
            .collect();
        bed.link_up_everywhere("sw1").await;
        let sim = bed.pbx("sw1").control();
        let mut on_owner = bed.client(&owner).await;
        let home = bed.node(&survivors[0]).url();
        let (mut first, opened) = Client::open_as(&home, "desk", None, 1).await;
        let first_id = opened["sessionId"].as_str().unwrap().to_owned();
        let mut second = bed.client(&survivors[1]).await;
        let (mut plain, opened) = Client::open_as(&home, "desk", None, 1).await;
        let plain_id = opened["sessionId"].as_str().unwrap().to_owned();
        for c in [&mut on_owner, &mut first, &mut second] {
            register(c, "4001", true).await;
        }
        register(&mut plain, "4001", false).await;
        monitors_on(&sim, "4001", 1).await;

        let made = sim
            .post_ok("/calls", json!({"from": "4001", "to": "4900"}))
            .await;
        let call_id = made["callId"].as_str().unwrap().to_owned();
        call(&sim, &call_id, "hold", json!({"device": "4001"})).await;
        let quiet = Duration::from_millis(500);
        let seen = call_events_of(&drain(&mut on_owner, quiet).await);
        let names: Vec<&str> = seen.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "EventOffHook",
                "EventDialing",
                "EventDialing",
                "EventEstablished",
                "EventHeld"
            ]
        );
        let conn_id = seen[0].2.clone();
        assert!(seen.iter().all(|e| e.2 == conn_id), "{seen:?}");
        for c in [&mut first, &mut second] {
            assert_eq!(
                call_events_of(&drain(c, quiet).await),
                seen,
                "the same events, numbers, connIds and order on every node"
            );
        }
        assert_eq!(drain(&mut plain, quiet).await, Vec::<Value>::new());
        // Give the connId's record a moment to be written (it is off the hot path).
        tokio::time::sleep(Duration::from_millis(300)).await;

        bed.kill(&owner);
        for c in [&mut first, &mut second] {
            until(
                c,
                LEASE_TTL + Duration::from_secs(8),
                "EventLinkConnected",
                |m| m["message"] == "EventLinkConnected" && m["switch"] == "sw1",
            )
            .await;
        }
        bed.settled(Duration::from_secs(5)).await;
        monitors_on(&sim, "4001", 1).await;
        call(&sim, &call_id, "retrieve", json!({"device": "4001"})).await;
        call(&sim, &call_id, "clear", json!({})).await;
        let after = call_events_of(&drain(&mut first, quiet).await);
        let names: Vec<&str> = after.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["EventRetrieved", "EventReleased"], "{after:?}");
        assert!(
            after.iter().all(|e| e.2 == conn_id),
            "the call keeps its connId: {after:?}"
        );
        assert!(
            after[0].1 > seen[4].1,
            "eventSeq keeps increasing: {after:?}"
        );
        assert_eq!(
            call_events_of(&drain(&mut second, quiet).await),
            after,
            "the new owner's clients and another node's get the same"
        );
        assert!(call_events_of(&drain(&mut plain, quiet).await).is_empty());

        // Both sessions on the first survivor drop and resume on the second within their
        // linger (1 s): the call events missed meanwhile are read back from the event stream,
        // for the session registered with callEvents only.
        let last = after[1].1;
        drop(first);
        drop(plain);
        sim.post_ok(
            "/calls",
            json!({"from": "4001", "to": "4900", "answer": false}),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let there = bed.node(&survivors[1]).url();
        let resume = |id: &str| Some(json!({"sessionId": id, "lastEventSeq": {"sw1": last}}));
        let (mut back, reply) = Client::open_as(&there, "desk", resume(&first_id), 1).await;
        assert_eq!(reply["resumed"], true, "{reply}");
        let (mut plain_back, reply) = Client::open_as(&there, "desk", resume(&plain_id), 1).await;
        assert_eq!(reply["resumed"], true, "{reply}");
        assert_eq!(
            reply["replayed"], 0,
            "no call event for a DN without callEvents: {reply}"
        );
        let missed = call_events_of(&drain(&mut second, quiet).await);
        let names: Vec<&str> = missed.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["EventOffHook", "EventDialing", "EventDialing"]);
        assert_eq!(call_events_of(&drain(&mut back, quiet).await), missed);
        assert!(call_events_of(&drain(&mut plain_back, quiet).await).is_empty());
        bed.stop();
    });
}

/// The body of the first ```python block after the README's heading `heading`.
fn readme_python(heading: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let at = readme
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README has no heading {heading:?}"));
    let rest = &readme[at..];
    let start = rest.find("\n```python\n").unwrap() + "\n```python\n".len();
    let len = rest[start..].find("\n```\n").unwrap();
    rest[start..start + len + 1].to_owned()
}

/// The README's call-watching example, run as written: it prints the ringing call (with its
/// caller), then its answer and its end.
#[test]
fn the_readme_python_example_shows_a_ringing_call() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let dir = process::files(&[(
        "calls.py",
        &readme_python("### Watching calls ring (Python)"),
    )]);
    let r = RouterProcess::start("call-events-python", &config());
    let sim = r.controls[0];
    let mut child = process::Killed(
        Command::new("python3")
            .arg(dir.path().join("calls.py"))
            .args([&r.url(), "5001"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("python3 is needed for the README's Python example: {e}")),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let line = || {
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the README's example printed nothing within 10 s (is the websockets package installed?)")
    };
    process::runtime().block_on(async {
        r.wait_connected(&["sw1", "sw2"]).await;
        assert_eq!(line(), "watching 5001");
        let made = sim
            .post_ok(
                "/calls",
                json!({"from": "4001", "to": "5001", "answer": false}),
            )
            .await;
        let ringing = line();
        let conn_id = ringing
            .strip_prefix("5001: call ")
            .and_then(|l| l.strip_suffix(" from 4001 is ringing"))
            .unwrap_or_else(|| panic!("{ringing}"));
        assert_eq!(conn_id.len(), 16, "{ringing}");
        let call_id = made["callId"].as_str().unwrap();
        call(&sim, call_id, "answer", json!({"device": "5001"})).await;
        assert_eq!(
            line(),
            format!("5001: call {conn_id} established (established)")
        );
        call(&sim, call_id, "clear", json!({"device": "4001"})).await;
        assert_eq!(line(), format!("5001: call {conn_id} released (released)"));
    });
    drop(child);
    r.stop();
}

/// `csta-bench fanout --call-events`: the monitors get every call event besides the hot-desk
/// events, in order, none lost.
#[test]
fn the_fanout_bench_with_call_events_delivers_every_one() {
    let (v, _) = process::bench_summary(
        "fanout --spawn --switches 2 --dns 50 --monitors 3 --rounds 2 --window 128 --call-events",
    );
    assert_eq!(v["call_events"], true, "{v}");
    assert_eq!(v["losses"], 0, "{v}");
    assert_eq!(v["out_of_order"], 0, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    // 25 pairs x 2 rounds x (4 hot-desk events + 5 call events at the guest + 3 at the host)
    // x 3 monitors.
    assert_eq!(v["expected"], 1800, "{v}");
    assert_eq!(v["deliveries"], 1800, "{v}");
}

/// A session resumed after its connection dropped keeps `callEvents` and gets the call events
/// it missed replayed (only those of the DN registered with them).
#[test]
fn a_resumed_session_keeps_call_events_and_gets_the_missed_ones() {
    let r = RouterProcess::start("call-events-resume", &config());
    let sim = r.controls[0];
    process::runtime().block_on(async {
        r.wait_connected(&["sw1", "sw2"]).await;
        let (mut c, opened) = Client::open_as(&r.url(), "desk", None, 2).await;
        let session_id = opened["sessionId"].as_str().unwrap().to_owned();
        register(&mut c, "5006", true).await;
        register(&mut c, "5007", false).await;
        drop(c);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let made = sim
            .post_ok(
                "/calls",
                json!({"from": "4006", "to": "5006", "answer": false}),
            )
            .await;
        sim.post_ok(
            "/calls",
            json!({"from": "4007", "to": "5007", "answer": false}),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let resume = json!({"sessionId": session_id, "lastEventSeq": {"sw1": 0, "sw2": 0}});
        let (mut c, reply) = Client::open_as(&r.url(), "desk", Some(resume), 2).await;
        assert_eq!(reply["resumed"], true, "{reply}");
        assert_eq!(reply["replayed"], 1, "only the call event of 5006: {reply}");
        let ringing = events(&mut c, 1).await;
        let conn_id = check(&ringing[0], "EventRinging", "5006", "ringing", Some("4006"));
        call(
            &sim,
            made["callId"].as_str().unwrap(),
            "answer",
            json!({"device": "5006"}),
        )
        .await;
        let answered = events(&mut c, 1).await;
        assert_eq!(
            check(
                &answered[0],
                "EventEstablished",
                "5006",
                "established",
                Some("4006")
            ),
            conn_id
        );
    });
    r.stop();
}
