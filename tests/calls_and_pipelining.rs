//! Call tracking under a call storm, and pipelined requests, against the router binary.
//!
//! - A call storm on one DN (tens of thousands of calls the switch never clears) costs the
//!   router the same per call at 100,000 calls as at 10,000 (CPU of the router process from
//!   `/proc`, the switch a separate `pbx-sim` process), and does not delay the requests of the
//!   switch's other DNs (`request-timeout = "1s"`: none gets 57); beyond `max-calls-per-dn` the
//!   call idle the longest is evicted and counted.
//! - Calls kept after a link loss for `call-grace` are forgotten once it has run out, and a
//!   call ID seen after it is a new call with a new connId; over `max-calls-per-switch` every
//!   device holding the call idle the longest forgets it (in process, to see the table).
//! - A client that sends `RequestRegisterAddress` and, without waiting, `RequestUnregisterAddress`
//!   or `RequestPrivateService` on the same DN gets exactly one reply to each, in the order it
//!   sent them; the switch ends with no monitor for the unregistered DNs and never sees a
//!   MonitorStop for a monitor it does not have, also when the unregister comes while the
//!   monitors are being restored on a new connection.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{config, process, procfs, router, sim_control};

use process::{RouterProcess, SimProcess};
use router::{config_text, dialect_from_env, Client, Router};
use serde_json::{json, Value};
use sim_control::SimControl;
use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A `pbx-sim` process for switch sw1 owning `dns`, with its control API.
fn sim(dns: &[&str]) -> SimProcess {
    let mut args = vec!["--name", "sw1", "--link", "127.0.0.1:0"];
    args.extend(["--control", "127.0.0.1:0"]);
    for d in dns {
        args.extend(["--dns", d]);
    }
    SimProcess::start(&args, Stdio::null())
}

/// CPU time (user + system, all threads) of a process so far, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    (procfs::cpu_seconds(&pid.to_string()).unwrap() * 100.0).round() as u64
}

/// A metric of switch sw1 from the router's `/metrics`.
async fn sw1_metric(r: &RouterProcess, name: &str) -> f64 {
    let (_, map) = r.scrape().await;
    let series = format!("{name}{{switch=\"sw1\"}}");
    *map.get(&series)
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

/// An open client (its `RequestOpen` answered and the link events read).
async fn open(r: &RouterProcess, switches: usize) -> Client {
    Client::open(&r.url(), None, switches).await
}

/// The tests of this file measure CPU and latency: they run one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Make `count` calls from `from` to `to` on the simulator, `per_post` per control request,
/// and (with `every`) one control request per `every` at most.
async fn storm(
    sim: SimControl,
    from: &str,
    to: &str,
    count: u64,
    per_post: u64,
    every: Option<Duration>,
) {
    let mut made = 0;
    let mut tick = every.map(|every| {
        let mut i = tokio::time::interval(every);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    while made < count {
        if let Some(t) = &mut tick {
            t.tick().await;
        }
        let n = per_post.min(count - made);
        let reply = sim
            .post_ok("/calls/burst", json!({"from": from, "to": to, "count": n}))
            .await;
        assert_eq!(reply["calls"], json!(n), "{reply}");
        made += n;
    }
}

/// Wait until the router has read every event the switch sent so far: a request on `dn` (a
/// hot-desk cancel, refused with 43 as the DN has no association) is answered on the link
/// behind them (asked again after a 57). Fails after 60 s.
async fn absorbed(c: &mut Client, dn: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for reference in 1_000_000.. {
        c.send(
            &json!({"message": "RequestPrivateService", "referenceId": reference,
                       "thisDn": dn, "privateMsgId": 2}),
        )
        .await;
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(reply) = c.next(left).await else {
            panic!("the router did not answer a request on {dn} within 60 s of a call burst");
        };
        assert_eq!(reply["referenceId"], reference, "{reply}");
        if reply["errorCode"] == 43 {
            return;
        }
        assert_eq!(reply["errorCode"], 57, "{reply}");
    }
}

/// Wait until the router tracks `calls` calls on sw1, failing if it used more than
/// `cpu_limit` ticks of CPU since `cpu_from` or more than `wall` on the way. Returns the CPU
/// ticks used since `cpu_from`.
async fn wait_for_calls(
    r: &RouterProcess,
    calls: f64,
    cpu_from: u64,
    cpu_limit: u64,
    wall: Duration,
    what: &str,
) -> u64 {
    let pid = r.child.id();
    let deadline = Instant::now() + wall;
    loop {
        let tracked = sw1_metric(r, "csta_router_active_calls").await;
        let used = cpu_ticks(pid) - cpu_from;
        if tracked >= calls {
            return used;
        }
        assert!(
            used <= cpu_limit,
            "{what}: the router has used {used} ticks of CPU (over the limit of {cpu_limit}) and tracks only {tracked} of {calls} calls"
        );
        assert!(
            Instant::now() < deadline,
            "{what}: the router tracks only {tracked} of {calls} calls after {wall:?} ({used} ticks of CPU)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn call_tracking_costs_as_much_per_call_at_100k_calls_on_a_dn_as_at_10k() {
    let _serial = one_at_a_time();
    let sim = sim(&["4000-4999", "5000-5999"]);
    // The test's client does not read (nor answer pings) while the calls pour in. Every call
    // of the storm stays tracked: the cost measured is the tables', not the eviction's.
    let config = config::head(
        "client-ping-interval = \"1h\"",
        "request-timeout = \"4s\"\nkpl-interval = \"0s\"\nmax-calls-per-dn = 1000000\nmax-calls-per-switch = 1000000",
    ) + &config::switch("sw1", &["4000-4999", "5000-5999"], "", &[&sim.link()]);
    let r = RouterProcess::start("call-cpu", &config);
    let rt = process::runtime();
    rt.block_on(async {
        r.wait_connected(&["sw1"]).await;
        let mut c = open(&r, 1).await;
        // The storm DN is the called party: a queue or hunt group taking call after call
        // (Delivered and Established on its monitor for each).
        c.register("4001").await;
        let pid = r.child.id();
        let cpu0 = cpu_ticks(pid);
        let t0 = Instant::now();
        storm(sim.control(), "5001", "4001", 10_000, 10_000, None).await;
        let small = wait_for_calls(
            &r,
            10_000.0,
            cpu0,
            u64::MAX,
            Duration::from_secs(60),
            "10,000 calls",
        )
        .await
        .max(1);
        let small_wall = t0.elapsed();
        let cpu1 = cpu_ticks(pid);
        let t1 = Instant::now();
        let control = sim.control();
        let storming =
            tokio::spawn(async move { storm(control, "5001", "4001", 100_000, 10_000, None).await });
        // A quadratic table costs about 120 times the CPU of the first 10,000 calls here;
        // the test fails as soon as the router has used 20 times.
        let large = wait_for_calls(
            &r,
            110_000.0,
            cpu1,
            20 * small,
            Duration::from_secs(120),
            "100,000 more calls",
        )
        .await;
        storming.await.unwrap();
        let ratio = large as f64 / small as f64;
        eprintln!(
            "router CPU: 10,000 calls {small} ticks ({small_wall:?} wall), 100,000 calls {large} ticks ({:?} wall): ratio {ratio:.1}",
            t1.elapsed()
        );
        assert!(
            ratio < 20.0,
            "100,000 calls cost {ratio:.1} times the CPU of 10,000 ({large} vs {small} ticks)"
        );
        // Every call is still listed, oldest first, with distinct connIds.
        let info = c
            .request(json!({"message": "RequestQueryAddress", "thisDn": "4001"}))
            .await;
        let calls = info["calls"].as_array().unwrap();
        assert_eq!(calls.len(), 110_000);
        let distinct: std::collections::HashSet<&str> =
            calls.iter().map(|c| c.as_str().unwrap()).collect();
        assert_eq!(distinct.len(), 110_000, "connIds are unique");
    });
    r.stop();
}

#[test]
fn a_call_storm_on_one_dn_does_not_time_out_the_other_dns_requests() {
    let _serial = one_at_a_time();
    let r = RouterProcess::start(
        "call-storm",
        // The storm DN's client does not read (nor answer pings) during the storm.
        &process::two_switches(
            "client-ping-interval = \"1h\"",
            "request-timeout = \"1s\"\nkpl-interval = \"0s\"",
            "",
            1,
        ),
    );
    let sw1 = r.controls[0];
    let rt = process::runtime();
    rt.block_on(async {
        r.wait_connected(&["sw1", "sw2"]).await;
        let mut storm_client = open(&r, 2).await;
        storm_client.register("4001").await;
        let mut desk = open(&r, 2).await;
        let pairs: Vec<(String, String)> = (0..5)
            .map(|i| (format!("{}", 5100 + i), format!("{}", 4100 + i)))
            .collect();
        for (guest, host) in &pairs {
            desk.register(guest).await;
            desk.register(host).await;
        }
        // How fast does the router take calls on this machine now? The first 2,000 calls as
        // fast as the switch makes them, until a request on the storm DN, answered behind
        // their events, comes back.
        let t0 = Instant::now();
        storm(sw1, "5001", "4001", 2_000, 2_000, None).await;
        absorbed(&mut storm_client, "4001").await;
        let capacity = 2_000.0 / t0.elapsed().as_secs_f64();
        // The other 58,000 at 40% of that (2,000 to 5,000 a second): a rate the router
        // sustains with room to spare as long as a call costs the same at the 60,000th call as
        // at the first.
        let rate = (capacity * 0.4).clamp(2_000.0, 5_000.0);
        eprintln!("router takes {capacity:.0} calls/s on an empty DN; storm at {rate:.0} calls/s");
        let t0 = Instant::now();
        let storming = tokio::spawn(storm(
            sw1,
            "5001",
            "4001",
            58_000,
            300,
            Some(Duration::from_secs_f64(300.0 / rate)),
        ));
        // Hot-desk on the other DNs, a request every 20 ms, for as long as the storm lasts.
        let mut latencies = Vec::new();
        let mut errors: HashMap<String, u64> = HashMap::new();
        let mut round = 0usize;
        'probe: while !storming.is_finished() || latencies.is_empty() {
            let (guest, host) = &pairs[round % pairs.len()];
            round += 1;
            for (msg_id, ext) in [(1, json!({"HOST_DN": host})), (2, json!({}))] {
                let sent = Instant::now();
                let reference = latencies.len() + 1;
                desk.send(&json!({"message": "RequestPrivateService", "referenceId": reference,
                                  "thisDn": guest, "privateMsgId": msg_id, "extensions": ext}))
                    .await;
                let Some(reply) = desk.next(Duration::from_secs(10)).await else {
                    panic!(
                        "a hot-desk request on another DN got no reply within 10 s, {:?} into the storm: the router is that far behind",
                        t0.elapsed()
                    );
                };
                assert_eq!(reply["referenceId"], json!(reference), "{reply}");
                latencies.push(sent.elapsed());
                if reply["message"] != "EventPrivateInfo" {
                    *errors.entry(reply["errorCode"].to_string()).or_default() += 1;
                    // The switch may still act on a timed-out request: stop here.
                    storming.abort();
                    break 'probe;
                }
                // The two events of the change (guest's and host's monitor).
                for _ in 0..2 {
                    let ev = desk.recv().await;
                    assert_eq!(ev["message"], "EventPrivateInfo", "{ev}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let storm_wall = t0.elapsed();
        if errors.is_empty() {
            storming.await.unwrap();
        }
        latencies.sort();
        let p99 = latencies[latencies.len() * 99 / 100];
        eprintln!(
            "storm of 58,000 calls: {storm_wall:?}; {} hot-desk requests on other DNs, p99 {p99:?}, max {:?}",
            latencies.len(),
            latencies.last().unwrap()
        );
        assert!(
            errors.is_empty(),
            "a request on another DN failed {storm_wall:?} into the storm (errorCode: count): {errors:?}"
        );
        // The storm DN keeps at most max-calls-per-dn calls; the others were evicted and
        // counted.
        let info = storm_client
            .request(json!({"message": "RequestQueryAddress", "thisDn": "4001"}))
            .await;
        assert_eq!(info["calls"].as_array().unwrap().len(), 1000, "max-calls-per-dn");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let evicted = sw1_metric(&r, "csta_router_calls_evicted_total").await;
            if evicted == 59_000.0 {
                break;
            }
            assert!(Instant::now() < deadline, "{evicted} calls evicted, not 59000");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(sw1_metric(&r, "csta_router_active_calls").await, 1000.0);
    });
    r.stop();
}

/// Read messages until every one of `references` has its reply (within `within`); returns the
/// replies in arrival order and the unsolicited events. Fails on a second reply to a request.
async fn replies(c: &mut Client, references: &[u64], within: Duration) -> (Vec<Value>, Vec<Value>) {
    let mut waiting: std::collections::HashSet<u64> = references.iter().copied().collect();
    let (mut got, mut events) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + within;
    while !waiting.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(m) = c.next(left).await else {
            panic!(
                "no reply to {} requests within {within:?}, e.g. {:?}",
                waiting.len(),
                waiting.iter().min()
            );
        };
        match m["referenceId"].as_u64() {
            Some(r) => {
                assert!(
                    waiting.remove(&r),
                    "a second reply, or one to no request: {m}"
                );
                got.push(m);
            }
            None => events.push(m),
        }
    }
    (got, events)
}

/// Wait until the simulator has no monitor left on `dns`; fails after 10 s naming them.
async fn no_monitor_left(sim: &SimControl, dns: &[String]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = sim.state().await;
        let left: Vec<&Value> = state["monitors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| dns.iter().any(|d| m["device"] == json!(d)))
            .collect();
        if left.is_empty() {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "{} monitors left on the switch for unregistered DNs, e.g. {}",
            left.len(),
            left[0]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pipelining_config() -> String {
    process::two_switches(
        "",
        "request-timeout = \"2s\"\nkpl-interval = \"0s\"\nreconnect-min = \"20ms\"\nreconnect-max = \"100ms\"",
        "",
        1,
    )
}

#[test]
fn pipelined_requests_on_a_dn_get_one_reply_each_in_order_and_leave_no_monitor() {
    let _serial = one_at_a_time();
    let r = RouterProcess::start("pipelined", &pipelining_config());
    let sw1 = r.controls[0];
    let rt = process::runtime();
    rt.block_on(async {
        r.wait_connected(&["sw1", "sw2"]).await;
        let mut c = open(&r, 2).await;
        // The switch answers 50 ms late: every request below arrives while the MonitorStart
        // of its DN's registration is in flight.
        sw1.post_ok("/faults/delay", json!({"ms": 50})).await;
        let dns: Vec<String> = (0..100).map(|i| (5300 + i).to_string()).collect();
        let mut references = Vec::new();
        for (i, dn) in dns.iter().enumerate() {
            let (register, unregister) = (10_000 + 2 * i as u64, 10_001 + 2 * i as u64);
            c.send(&json!({"message": "RequestRegisterAddress", "referenceId": register, "thisDn": dn}))
                .await;
            c.send(&json!({"message": "RequestUnregisterAddress", "referenceId": unregister, "thisDn": dn}))
                .await;
            references.extend([register, unregister]);
        }
        let pairs: Vec<(String, String)> = (0..10)
            .map(|i| ((5500 + i).to_string(), (4500 + i).to_string()))
            .collect();
        for (i, (guest, host)) in pairs.iter().enumerate() {
            let base = 20_000 + 3 * i as u64;
            c.send(&json!({"message": "RequestRegisterAddress", "referenceId": base, "thisDn": guest}))
                .await;
            c.send(&json!({"message": "RequestRegisterAddress", "referenceId": base + 1, "thisDn": host}))
                .await;
            c.send(&json!({"message": "RequestPrivateService", "referenceId": base + 2, "thisDn": guest,
                           "privateMsgId": 1, "extensions": {"HOST_DN": host}}))
                .await;
            references.extend([base, base + 1, base + 2]);
        }
        let (got, events) = replies(&mut c, &references, Duration::from_secs(20)).await;
        let position: HashMap<u64, usize> = got
            .iter()
            .enumerate()
            .map(|(i, m)| (m["referenceId"].as_u64().unwrap(), i))
            .collect();
        let reply = |r: u64| &got[position[&r]];
        for (i, dn) in dns.iter().enumerate() {
            let (register, unregister) = (10_000 + 2 * i as u64, 10_001 + 2 * i as u64);
            assert_eq!(reply(register)["message"], "EventRegistered", "{dn}: {}", reply(register));
            assert_eq!(
                reply(unregister)["message"],
                "EventUnregistered",
                "{dn}: an unregister right after the registration: {}",
                reply(unregister)
            );
            assert!(
                position[&register] < position[&unregister],
                "{dn}: EventUnregistered came before EventRegistered"
            );
        }
        for (i, (guest, _)) in pairs.iter().enumerate() {
            let base = 20_000 + 3 * i as u64;
            assert_eq!(reply(base)["message"], "EventRegistered", "{}", reply(base));
            assert_eq!(
                reply(base + 2)["message"],
                "EventPrivateInfo",
                "{guest}: a hot-desk request right after the registration: {}",
                reply(base + 2)
            );
            assert!(position[&base] < position[&(base + 2)]);
        }
        // Each association is reported on the guest's and the host's monitor.
        let mut hotdesk_events = events
            .iter()
            .filter(|e| e["message"] == "EventPrivateInfo")
            .count();
        while hotdesk_events < 2 * pairs.len() {
            let e = c.recv().await;
            assert_eq!(e["message"], "EventPrivateInfo", "{e}");
            hotdesk_events += 1;
        }
        let state = no_monitor_left(&sw1, &dns).await;
        assert_eq!(
            state["monitors"].as_array().unwrap().len(),
            2 * pairs.len(),
            "the hot-desk DNs stay monitored: {}",
            state["monitors"]
        );
        assert_eq!(state["unknownMonitorStops"], 0, "MonitorStop for a monitor never started");
        c.expect_nothing().await;
    });
    r.stop();
}

#[test]
fn an_unregister_while_monitors_are_restored_stops_the_restored_monitor() {
    let _serial = one_at_a_time();
    let r = RouterProcess::start("restore-unregister", &pipelining_config());
    let sw1 = r.controls[0];
    let rt = process::runtime();
    rt.block_on(async {
        r.wait_connected(&["sw1", "sw2"]).await;
        let mut c = open(&r, 2).await;
        let dns: Vec<String> = (0..20).map(|i| (5600 + i).to_string()).collect();
        for dn in &dns {
            c.register(dn).await;
        }
        assert_eq!(sw1.state().await["monitors"].as_array().unwrap().len(), 20);
        // The link drops; on the new connection the switch answers 300 ms late, so the
        // unregisters below arrive while the restored MonitorStarts are unanswered.
        sw1.post_ok("/faults/delay", json!({"ms": 300})).await;
        let before = sw1.state().await["links"][0]["requests"].as_u64().unwrap();
        sw1.post_ok("/faults/drop", json!({})).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The handshake's RequestSystemStatus, then the first restored MonitorStart.
            let requests = sw1.state().await["links"][0]["requests"].as_u64().unwrap();
            if requests >= before + 2 {
                break;
            }
            assert!(Instant::now() < deadline, "the link did not come back");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let references: Vec<u64> = (0..dns.len() as u64).map(|i| 30_000 + i).collect();
        for (dn, reference) in dns.iter().zip(&references) {
            c.send(&json!({"message": "RequestUnregisterAddress", "referenceId": reference, "thisDn": dn}))
                .await;
        }
        let (got, mut events) = replies(&mut c, &references, Duration::from_secs(10)).await;
        for m in &got {
            assert_eq!(m["message"], "EventUnregistered", "{m}");
        }
        // The restore is over when clients are told the link is up again.
        while !events
            .iter()
            .any(|e| e["message"] == "EventLinkConnected" && e["switch"] == "sw1")
        {
            events.push(c.recv().await);
        }
        let state = no_monitor_left(&sw1, &dns).await;
        assert_eq!(state["unknownMonitorStops"], 0, "MonitorStop for a monitor never started");
    });
    r.stop();
}

#[test]
fn the_call_storm_bench_measures_the_other_dns_requests_during_a_storm() {
    let _serial = one_at_a_time();
    let (v, _) =
        process::bench_summary("call-storm --spawn --switches 1 --clients 2 --dns 10 --calls 3000");
    assert_eq!(v["scenario"], "call-storm", "{v}");
    assert_eq!(v["calls"], 3000, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert!(
        v["ops"].as_u64().unwrap() >= 20,
        "every item hot-desked at least once: {v}"
    );
    let (storm, absorbed) = (
        v["storm_s"].as_f64().unwrap(),
        v["absorbed_s"].as_f64().unwrap(),
    );
    assert!(storm > 0.0 && storm <= absorbed, "{v}");
    let (p50, p99) = (v["p50_ms"].as_f64().unwrap(), v["p99_ms"].as_f64().unwrap());
    assert!(p50 > 0.0 && p50 <= p99, "{v}");
}

#[actix_rt::test]
async fn calls_kept_after_a_link_loss_are_forgotten_when_their_grace_ends() {
    let r = Router::with(&config_text("call-grace = \"300ms\"", dialect_from_env())).await;
    let mut c = r.client().await;
    c.register("5081").await;
    let burst = r
        .sw1
        .post_ok(
            "/calls/burst",
            json!({"from": "5081", "to": "5082", "count": 50}),
        )
        .await;
    let first_call = burst["first"].as_str().unwrap().to_owned();
    let table = &r.running.shared.switches.get(0).unwrap().calls;
    let deadline = Instant::now() + Duration::from_secs(5);
    while table.len() < 50 {
        assert!(Instant::now() < deadline, "{} calls tracked", table.len());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let q = c
        .request(json!({"message": "RequestQueryAddress", "thisDn": "5081"}))
        .await;
    let first_conn = q["calls"][0].clone();
    r.sw1.post_ok("/faults/drop", json!({})).await;
    assert_eq!(c.recv().await["message"], "EventLinkDisconnected");
    assert_eq!(c.recv().await["message"], "EventLinkConnected");
    assert_eq!(table.len(), 0, "call lists are cleared on link loss");
    let deadline = Instant::now() + Duration::from_secs(5);
    while table.graced() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} calls still kept 5 s after a call-grace of 300 ms",
            table.graced()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The switch reports the first call again: after call-grace, a new call.
    r.sw1
        .post_ok(
            &format!("/calls/{first_call}/account-code"),
            json!({"device": "5081", "code": "77"}),
        )
        .await;
    let ev = c.recv().await;
    assert_eq!(ev["privateMsgId"], 501, "{ev}");
    assert_ne!(
        ev["connId"], first_conn,
        "a call ID seen after call-grace: new connId"
    );
    r.stop().await;
}

#[actix_rt::test]
async fn over_max_calls_per_switch_every_device_forgets_the_call_idle_the_longest() {
    let r = Router::with(&config_text(
        "max-calls-per-switch = 10\nmax-calls-per-dn = 100",
        dialect_from_env(),
    ))
    .await;
    let mut c = r.client().await;
    c.register("5091").await;
    c.register("5092").await;
    let table = &r.running.shared.switches.get(0).unwrap().calls;
    let calls_of = |dn: &'static str| json!({"message": "RequestQueryAddress", "thisDn": dn});
    // Both parties of every call are registered: each call is held by both DNs.
    let burst = json!({"from": "5091", "to": "5092", "count": 10});
    r.sw1.post_ok("/calls/burst", burst).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let first_ten = loop {
        let q = c.request(calls_of("5092")).await;
        if q["calls"].as_array().unwrap().len() == 10 {
            break q["calls"].as_array().unwrap().clone();
        }
        assert!(Instant::now() < deadline, "{q}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let burst = json!({"from": "5091", "to": "5092", "count": 5});
    r.sw1.post_ok("/calls/burst", burst).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    for dn in ["5091", "5092"] {
        loop {
            let q = c.request(calls_of(dn)).await;
            let calls = q["calls"].as_array().unwrap();
            if calls.len() == 10 && calls[..5] == first_ten[5..] {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{dn} should list the 10 newest calls, the 5 oldest forgotten: {q}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert_eq!(table.len(), 10, "max-calls-per-switch");
    r.stop().await;
}
