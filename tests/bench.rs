#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Smoke runs of the built `csta-bench` binary: each scenario with `--spawn` (simulators and a
//! router started by the bench itself), login-storm with `--direct` and through a cluster of
//! two nodes (`--cluster 2`, with a real nats-server), and a failover. Each checks the
//! one-line JSON summary, the exit status, and that nothing panicked.

mod common;
use common::process;

use process::BENCH;
use serde_json::Value;
use std::process::Command;

/// Run csta-bench with `args`; returns the parsed summary line after checking the run.
fn bench(args: &str) -> Value {
    let (v, stderr) = process::bench_summary(args);
    for key in [
        "scenario",
        "mode",
        "switches",
        "clients",
        "ops",
        "errors",
        "ops_per_s",
        "p50_ms",
        "p99_ms",
        "p999_ms",
    ] {
        assert!(v.get(key).is_some(), "no {key} in {v}");
    }
    assert!(v["ops"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert!(v["ops_per_s"].as_f64().unwrap() > 0.0, "{v}");
    let (p50, p99, p999) = (
        v["p50_ms"].as_f64().unwrap(),
        v["p99_ms"].as_f64().unwrap(),
        v["p999_ms"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= p999, "{v}");
    // Not a terminal: no progress display.
    assert!(
        !stderr.contains('\r'),
        "progress drawn on a non-terminal: {stderr:?}"
    );
    v
}

#[test]
fn login_storm_through_the_router() {
    let v = bench("login-storm --spawn --switches 2 --clients 4 --dns 200");
    assert_eq!(v["scenario"], "login-storm");
    assert_eq!(v["mode"], "router");
    assert_eq!(v["switches"], 2);
    assert_eq!(v["clients"], 4);
    // 200 associates and 200 cancels, all checked.
    assert_eq!(v["ops"], 400, "{v}");
    // Each made one event on its guest's monitor, every one delivered.
    assert_eq!(
        (&v["events"], &v["expected"], &v["losses"]),
        (&400.into(), &400.into(), &0.into()),
        "{v}"
    );
}

#[test]
fn login_storm_direct_baseline() {
    let v = bench("login-storm --spawn --direct --switches 2 --clients 4 --dns 200");
    assert_eq!(v["mode"], "direct");
    assert_eq!(v["ops"], 400, "{v}");
    // The same requests in flight as the router run: 4 clients x 2.
    assert_eq!(v["in_flight"], 8, "{v}");
    // The monitors on the guests saw one event per operation.
    assert_eq!(v["csta_events"], 400, "{v}");
}

#[test]
fn fanout_to_monitors() {
    let v = bench("fanout --spawn --switches 2 --dns 50 --monitors 3 --rounds 2 --window 64");
    assert_eq!(v["scenario"], "fanout");
    assert_eq!(v["clients"], 3);
    assert_eq!(v["losses"], 0, "{v}");
    assert_eq!(v["out_of_order"], 0, "{v}");
    // 25 pairs x 2 rounds x 4 events (associate and cancel on guest and host) x 3 monitors.
    assert_eq!(v["expected"], 600, "{v}");
    assert_eq!(v["deliveries"], 600, "{v}");
    assert_eq!(v["ops"], 600, "{v}");
    assert!(v["deliveries_per_s"].as_f64().unwrap() > 0.0, "{v}");
    // A window of 64 events allows bursts of 16 pairs, so there were several per switch.
    assert!(v["bursts"].as_u64().unwrap() >= 4, "{v}");
}

#[test]
fn account_codes_from_phones_and_clients() {
    let v = bench("account-codes --spawn --switches 2 --clients 3 --dns 30 --rounds 2");
    assert_eq!(v["scenario"], "account-codes");
    assert_eq!(v["losses"], 0, "{v}");
    // 30 devices x 2 codes set by the clients, each answered and then reported.
    assert_eq!(v["ops"], 60, "{v}");
    assert_eq!(v["phone_codes"], 30, "{v}");
    assert_eq!(v["events"], 90, "{v}");
}

#[test]
fn bad_usage_is_refused_with_a_message() {
    let out = Command::new(BENCH)
        .args(["login-storm", "--switches", "3"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--spawn"), "{stderr}");
    let out = Command::new(BENCH)
        .args(["login-storm", "--spawn", "--switches", "12"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--switches must be 1 to 9"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A cluster is one the bench starts itself.
    let out = Command::new(BENCH)
        .args([
            "login-storm",
            "--router",
            "ws://127.0.0.1:9/v1",
            "--cluster",
            "2",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--cluster N needs --spawn"), "{stderr}");
}

/// `--cluster 2`: a NATS server and two nodes in front of two switches; the clients alternate
/// between the nodes, so every client uses a switch its node does not own.
#[test]
fn login_storm_through_a_cluster_of_two() {
    let v =
        bench("login-storm --spawn --cluster 2 --lease-ttl 2 --switches 2 --clients 4 --dns 200");
    assert_eq!(v["cluster_nodes"], 2, "{v}");
    assert_eq!(v["ops"], 400, "{v}");
    assert_eq!(v["losses"], 0, "{v}");
    // Every switch is owned by one of the two nodes.
    let owners = v["owners"]
        .as_object()
        .unwrap_or_else(|| panic!("no owners in {v}"));
    assert_eq!(owners.len(), 2, "{v}");
    let owned: usize = owners.values().map(|s| s.as_array().unwrap().len()).sum();
    assert_eq!(owned, 2, "{v}");
    // Router CPU per operation, summed and per node (the sum of the nodes' shares).
    let sum = v["cpu_router_us_per_op"]
        .as_f64()
        .unwrap_or_else(|| panic!("no CPU figure in {v}"));
    let per_node: Vec<f64> = v["cpu_router_us_per_op_per_node"]
        .as_array()
        .unwrap_or_else(|| panic!("no per-node CPU in {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(per_node.len(), 2, "{v}");
    assert!(sum > 0.0 && per_node.iter().all(|c| *c >= 0.0), "{v}");
    assert!((per_node.iter().sum::<f64>() - sum).abs() < 0.01, "{v}");
    assert!(
        v["cpu_nats_us_per_op"].as_f64().is_some_and(|c| c >= 0.0),
        "{v}"
    );
    // Each request was counted once, by the switch's owner.
    assert_eq!(v["private_service_requests"], 400, "{v}");
    // Each client has guests on both switches and is on one node: half its requests go to the
    // other node's switch.
    let share = v["forwarded_share"]
        .as_f64()
        .unwrap_or_else(|| panic!("no forwarded_share in {v}"));
    assert!((0.4..=0.6).contains(&share), "{v}");
}

/// `failover`: the owner of a switch killed once; another node's client hears the switch is
/// served again within the lease and a second.
#[test]
fn resume_replays_what_a_desktop_missed_on_one_router_and_on_another_node() {
    for (args, elsewhere) in [
        ("resume --spawn --switches 1 --rounds 2 --events 200", false),
        (
            "resume --spawn --cluster 2 --lease-ttl 2 --switches 1 --rounds 1 --events 200",
            true,
        ),
    ] {
        let v = bench(args);
        assert_eq!(v["scenario"], "resume");
        assert_eq!(v["events"], 200, "{v}");
        assert_eq!(v["resumed_on_another_node"], elsewhere, "{v}");
        let first = v["resume_first_ms"].as_f64().unwrap();
        let all = v["resume_all_ms"].as_f64().unwrap();
        assert!(first > 0.0 && first <= all, "{v}");
    }
}

#[test]
fn reload_of_a_plan_change_with_registered_dns() {
    let v = bench("reload --spawn --switches 1 --dns 200 --clients 4 --rounds 2");
    assert_eq!(v["scenario"], "reload");
    assert_eq!(
        (&v["registered"], &v["dns_removed"], &v["dns_added"]),
        (&Value::from(200), &Value::from(200), &Value::from(200)),
        "{v}"
    );
    assert_eq!(v["ops"], 2, "{v}");
    for key in [
        "reload_applied_ms",
        "reload_unregistered_ms",
        "reload_monitors_stopped_ms",
    ] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key}: {v}");
    }
    // A reload needs the bench's own router.
    let out = Command::new(BENCH)
        .args(["reload", "--router", "ws://127.0.0.1:9/v1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reload needs --spawn"));
}

#[test]
fn failover_of_a_killed_owner() {
    let v = bench("failover --spawn --cluster 2 --lease-ttl 2 --switches 2 --rounds 1");
    assert_eq!(v["scenario"], "failover");
    assert_eq!(v["ops"], 1, "{v}");
    let t = v["failover_median_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("no failover time in {v}"));
    // SPEC: another node takes the lease within lease-ttl + 1 s, then connects and monitors;
    // generous for a loaded machine.
    assert!(t > 0.0 && t < 10_000.0, "{v}");
    assert_eq!(v["failover_ms"].as_array().map(Vec::len), Some(1), "{v}");
}

/// A redis-server the test starts on a free loopback port (Debian's redis-server; .ci/run
/// installs it): its address, and the process (killed when dropped).
fn redis_server() -> (String, process::Killed) {
    let port = process::free_port();
    let redis = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("redis-server is needed for this test ({e}); install Debian's redis-server package (bash .ci/run does)"));
    let redis = process::Killed(redis);
    let addr = format!("127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "redis-server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (addr, redis)
}

#[test]
fn redis_fanout_yardstick_smoke() {
    let (addr, redis) = redis_server();
    let (v, _) = process::bench_summary(&format!(
        "redis-fanout --redis {addr} --redis-pid {} --monitors 5 --dns 200",
        redis.0.id()
    ));
    assert_eq!(v["scenario"], "redis-fanout");
    assert_eq!(v["expected"], 5 * 2 * 200);
    assert_eq!(v["ops"], 5 * 2 * 200);
    assert_eq!(
        (v["errors"].clone(), v["losses"].clone()),
        (0.into(), 0.into())
    );
    assert!(v["deliveries_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(v["payload"], "synthetic", "{v}");
    // redis-server's own CPU over the measured window (in clock ticks, so it may be 0 here).
    assert!(
        v["cpu_redis_us_per_delivery"]
            .as_f64()
            .is_some_and(|c| c >= 0.0),
        "{v}"
    );
}

/// fanout for a duration writes one event it received (`--payload-file`); redis-fanout with
/// a redis-server it starts itself publishes those bytes and reports redis-server's CPU.
#[test]
fn fanout_for_a_duration_then_redis_fanout_with_its_event() {
    let dir = tempfile::tempdir().unwrap();
    let payload = dir.path().join("event.json");
    let v = bench(&format!(
        "fanout --spawn --switches 2 --dns 50 --monitors 3 --window 64 --duration 1500ms --payload-file {}",
        payload.display()
    ));
    // Whole rounds until 1.5 s had passed: each round 25 pairs x 4 events x 3 monitors.
    let rounds = v["rounds"].as_u64().unwrap();
    assert!(rounds >= 1, "{v}");
    assert_eq!(v["expected"], rounds * 300, "{v}");
    assert_eq!(v["deliveries"], rounds * 300, "{v}");
    assert_eq!(
        (&v["losses"], &v["out_of_order"]),
        (&0.into(), &0.into()),
        "{v}"
    );
    assert!(v["duration_s"].as_f64().unwrap() >= 1.4, "{v}");
    let event = std::fs::read_to_string(&payload).unwrap();
    let e: Value = serde_json::from_str(&event).unwrap();
    assert_eq!(e["message"], "EventPrivateInfo", "{event}");
    assert_eq!(v["payload_bytes"], event.len(), "{v}");
    let (r, _) = process::bench_summary(&format!(
        "redis-fanout --spawn --monitors 3 --dns 50 --rounds {rounds} --payload-file {}",
        payload.display()
    ));
    assert_eq!(r["payload"], "router event", "{r}");
    // Its eventSeq renumbered with as many digits: the same size.
    assert_eq!(r["payload_bytes"], event.len(), "{r}");
    assert_eq!(r["ops"], rounds * 300, "{r}");
    assert_eq!((&r["errors"], &r["losses"]), (&0.into(), &0.into()), "{r}");
    assert!(r["redis_pid"].as_u64().is_some(), "{r}");
    assert!(
        r["cpu_redis_us_per_delivery"]
            .as_f64()
            .is_some_and(|c| c >= 0.0),
        "{r}"
    );
}

/// `--duration` with `--rate`: whole rounds offered while requests fall due within it.
#[test]
fn login_storm_offers_requests_for_the_duration_at_the_rate() {
    let v = bench("login-storm --spawn --switches 1 --clients 2 --dns 20 --rate 200 --duration 2s");
    // 200 requests/s for 2 s from 2 clients, each with rounds of 20 (10 associates, 10
    // cancels): 400 requests due within the 2 s, a whole number of rounds.
    let ops = v["ops"].as_u64().unwrap();
    assert!((400..=440).contains(&ops) && ops.is_multiple_of(20), "{v}");
    assert_eq!(v["offered"], ops, "{v}");
    assert_eq!(
        (&v["events"], &v["losses"]),
        (&ops.into(), &0.into()),
        "{v}"
    );
    assert!(v["duration_s"].as_f64().unwrap() >= 1.9, "{v}");
    assert_eq!(v["target_duration_s"], 2.0, "{v}");
    let out = Command::new(BENCH)
        .args(["login-storm", "--spawn", "--duration", "soon"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--duration"), "{stderr}");
}

/// `memory`: one client registers the DNs in share mode; the router's resident memory
/// before and after.
#[test]
fn memory_reports_bytes_per_registered_dn() {
    let (v, _) = process::bench_summary("memory --spawn --dns 10000");
    assert_eq!(v["scenario"], "memory");
    assert_eq!(
        (&v["ops"], &v["dns"], &v["errors"]),
        (&10000.into(), &10000.into(), &0.into()),
        "{v}"
    );
    assert_eq!(v["switches"], 1, "{v}");
    let (before, after) = (
        v["router_rss_before_mib"].as_f64().unwrap(),
        v["router_rss_after_mib"].as_f64().unwrap(),
    );
    assert!(before > 0.0 && after > before, "{v}");
    assert!(v["bytes_per_dn"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["cpu_router_us_per_op"].as_f64().is_some(), "{v}");
}

/// The memory target of SPEC section 9 (100,000 DNs registered by 10 clients in under 300 MB)
/// as a per-DN budget: the router's resident memory grows by less than 2.6 KiB per registered
/// DN ((300 MB less a 30 MiB idle router) / 100,000). Measured as the difference between two
/// runs, so the idle router's own size does not count, nor do the events each session keeps
/// for a resume (at most `client-queue` per session): both runs deliver about as many events
/// to each of the 10 clients as that bound (the small one over more rounds).
#[test]
fn registered_dns_stay_within_the_memory_budget() {
    let rss = |dns: &str, rounds: u32| {
        let v = bench(&format!(
            "login-storm --spawn --switches 1 --clients 10 --dns {dns} --rounds {rounds}"
        ));
        v["router_rss_mib"]
            .as_f64()
            .unwrap_or_else(|| panic!("no router_rss_mib in {v}"))
    };
    // 1,000 DNs: 200 events per client and round; 20,000 DNs: 4,000.
    let small = rss("1000", 21);
    let large = rss("20000", 1);
    let kib_per_dn = (large - small) * 1024.0 / 19000.0;
    assert!(
        kib_per_dn > 0.0 && kib_per_dn < 2.6,
        "the router grew by {kib_per_dn:.2} KiB per registered DN ({small:.1} MiB with 1,000 DNs, {large:.1} MiB with 20,000)"
    );
}

/// Driving a running router: its CPU per operation with `--router-pid`, null without.
#[test]
fn a_running_router_cpu_per_operation_with_its_pid() {
    let r =
        process::RouterProcess::start("bench-router-pid", &process::two_switches("", "", "", 1));
    let args = format!(
        "login-storm --router {} --numbering shipped --switches 2 --clients 2 --dns 100 --rounds 5",
        r.url()
    );
    let v = bench(&format!("{args} --router-pid {}", r.child.id()));
    assert_eq!(v["ops"], 1000, "{v}");
    assert!(
        v["cpu_router_us_per_op"].as_f64().is_some_and(|c| c > 0.0),
        "{v}"
    );
    let v = bench(&args);
    assert!(v["cpu_router_us_per_op"].is_null(), "{v}");
}
