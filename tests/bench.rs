#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Smoke runs of the built `csta-bench` binary: each scenario with `--spawn` (simulators and a
//! router started by the bench itself), and login-storm with `--direct`. Each checks the
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
}

#[test]
fn redis_fanout_yardstick_smoke() {
    // A redis-server on a free loopback port (Debian's redis-server; .ci/run installs it).
    let port = process::free_port();
    let redis = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("redis-server is needed for this test ({e}); install Debian's redis-server package (bash .ci/run does)"));
    let _redis = process::Killed(redis);
    let addr = format!("127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "redis-server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (v, _) = process::bench_summary(&format!(
        "redis-fanout --redis {addr} --monitors 5 --dns 200"
    ));
    assert_eq!(v["scenario"], "redis-fanout");
    assert_eq!(v["expected"], 5 * 2 * 200);
    assert_eq!(v["ops"], 5 * 2 * 200);
    assert_eq!(
        (v["errors"].clone(), v["losses"].clone()),
        (0.into(), 0.into())
    );
    assert!(v["deliveries_per_s"].as_f64().unwrap() > 0.0);
}

/// The memory target of SPEC section 9 (100,000 DNs registered by 10 clients in under 300 MB)
/// as a per-DN budget: the router's resident memory grows by less than 2.6 KiB per registered
/// DN ((300 MB less a 30 MiB idle router) / 100,000). Measured as the difference between two
/// runs, so the idle router's own size does not count.
#[test]
fn registered_dns_stay_within_the_memory_budget() {
    let rss = |dns: &str| {
        let v = bench(&format!(
            "login-storm --spawn --switches 1 --clients 10 --dns {dns}"
        ));
        v["router_rss_mib"]
            .as_f64()
            .unwrap_or_else(|| panic!("no router_rss_mib in {v}"))
    };
    let small = rss("1000");
    let large = rss("20000");
    let kib_per_dn = (large - small) * 1024.0 / 19000.0;
    assert!(
        kib_per_dn > 0.0 && kib_per_dn < 2.6,
        "the router grew by {kib_per_dn:.2} KiB per registered DN ({small:.1} MiB with 1,000 DNs, {large:.1} MiB with 20,000)"
    );
}
