//! `compare`: the benchmark's figures side by side with their anchors, from one session of one
//! machine (README, "Benchmark"). It runs the other scenarios as child processes of this same
//! binary (each with `--spawn`), alternately and `--repeat` times each (default 3):
//!
//! 1. login-storm through the router, then `--direct` (the simulators without the router);
//! 2. login-storm through the router offered at half the median ops/s the router reached in
//!    1, for `--duration` (default 10 s): its latency at a realistic load;
//! 3. fanout through the router, then `redis-fanout` with a redis-server the child starts,
//!    publishing the bytes of an event the fanout run received, to as many subscribers;
//! 4. memory: the router's resident memory per registered DN;
//! 5. scaling: login-storm at the same total load on 1 and on 8 switches.
//!
//! Each child's JSON line goes to stderr as it ends; at the end stdout gets one JSON object
//! with the medians and the ratios, and stderr (and `--markdown FILE`) a Markdown table of
//! each target, its measured figure (median, and the range over the runs) and its anchor.
//! A child that fails is counted in `failures` and left out of the medians.
//!
//! Sizes: `--switches` (default 4), `--clients` (200), `--dns` (10,000 login-storm guests),
//! `--rounds` (5), `--monitors` (100); fanout uses min(4,000, `--dns`) DNs, memory
//! min(200,000, 20 × `--dns`).

use super::spawn::TempFile;
use super::stats::{median, Summary};
use super::{Args, BenchError, Outcome};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The sizes of the runs.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    switches: usize,
    clients: usize,
    dns: usize,
    rounds: usize,
    monitors: usize,
    fanout_dns: usize,
    memory_dns: usize,
    repeat: usize,
    rate_secs: f64,
}

/// The defaults of `compare` where the command line gave none (`switches`, `clients`, `dns`,
/// `rounds`, `monitors`, `duration`).
pub fn defaults(args: &mut Args, default: impl Fn(&str) -> bool) {
    if default("switches") {
        args.switches = 4;
    }
    if default("clients") {
        args.clients = 200;
    }
    if default("dns") {
        args.dns = 10_000;
    }
    if default("rounds") {
        args.rounds = 5;
    }
    if default("monitors") {
        args.monitors = 100;
    }
    if args.duration.is_none() {
        args.duration = Some(std::time::Duration::from_secs(10));
    }
}

/// The runs made so far: each group's summaries (of the children that succeeded).
struct Runs {
    exe: PathBuf,
    by_group: HashMap<&'static str, Vec<Value>>,
    failures: u64,
}

impl Runs {
    /// Run `csta-bench ARGS` as a child to its end and keep its summary under `group`.
    async fn run(&mut self, group: &'static str, args: Vec<String>) {
        let exe = self.exe.clone();
        let shown = args.join(" ");
        let out = tokio::task::spawn_blocking(move || {
            Command::new(exe)
                .args(&args)
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
        })
        .await;
        let out = match out {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return self.failed(group, &shown, &format!("cannot start: {e}")),
            Err(e) => return self.failed(group, &shown, &e.to_string()),
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().rev().find(|l| !l.trim().is_empty());
        let summary = line.and_then(|l| serde_json::from_str::<Value>(l).ok());
        match summary {
            Some(v) if out.status.success() => {
                eprintln!("compare [{group}]: {}", line.unwrap_or_default());
                self.by_group.entry(group).or_default().push(v);
            }
            _ => self.failed(
                group,
                &shown,
                &format!("{} ({})", out.status, line.unwrap_or("no summary")),
            ),
        }
    }

    fn failed(&mut self, group: &str, args: &str, why: &str) {
        self.failures += 1;
        eprintln!("compare [{group}]: csta-bench {args} failed: {why}");
    }

    /// The values of `key` in `group`'s runs.
    fn values(&self, group: &str, key: &str) -> Vec<f64> {
        self.by_group
            .get(group)
            .map(|runs| runs.iter().filter_map(|v| v[key].as_f64()).collect())
            .unwrap_or_default()
    }

    /// Median, lowest and highest of `key` in `group`'s runs.
    fn stat(&self, group: &str, key: &str) -> Option<Stat> {
        let v = self.values(group, key);
        if v.is_empty() {
            return None;
        }
        Some(Stat {
            median: median(&v),
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }
}

/// A figure over several runs.
#[derive(Debug, Clone, Copy)]
struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

impl Stat {
    /// "median (min–max)" with `decimals` and a unit.
    fn show(&self, decimals: usize, unit: &str) -> String {
        format!(
            "{:.d$}{unit} ({:.d$}–{:.d$})",
            self.median,
            self.min,
            self.max,
            d = decimals
        )
    }
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

/// Run every comparison and summarise it.
pub async fn run(args: &Args) -> Outcome {
    let exe = std::env::current_exe()
        .map_err(|e| BenchError::Setup(format!("cannot find csta-bench's own path: {e}")))?;
    if args.repeat == 0 {
        return Err(BenchError::Setup("--repeat must be at least 1".into()));
    }
    let z = Sizes {
        switches: args.switches,
        clients: args.clients,
        dns: args.dns,
        rounds: args.rounds,
        monitors: args.monitors,
        fanout_dns: args.dns.min(4000),
        memory_dns: (args.dns * 20).min(200_000),
        repeat: args.repeat,
        rate_secs: args.duration.map_or(10.0, |d| d.as_secs_f64()),
    };
    let payload = TempFile(
        std::env::temp_dir().join(format!("csta-bench-payload-{}.json", std::process::id())),
    );
    let mut runs = Runs {
        exe,
        by_group: HashMap::new(),
        failures: 0,
    };
    login_storms(&mut runs, &z).await;
    fanouts(&mut runs, &z, &payload.0).await;
    for _ in 0..z.repeat {
        let m = format!("memory --spawn --switches 1 --dns {}", z.memory_dns);
        runs.run("memory", words(&m)).await;
    }
    for _ in 0..z.repeat {
        for (group, switches) in [("scaling-1", 1), ("scaling-8", 8)] {
            let a = format!(
                "login-storm --spawn --switches {switches} --clients {} --dns {} --rounds {}",
                z.clients, z.dns, z.rounds
            );
            runs.run(group, words(&a)).await;
        }
    }
    let summary = summarise(&runs, &z);
    let table = markdown(&runs, &summary, &z);
    eprintln!("\n{table}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &table)
            .map_err(|e| BenchError::Setup(format!("--markdown {}: {e}", path.display())))?;
    }
    Ok(summary)
}

/// Router and direct alternately, then the rate runs at half the router's median.
async fn login_storms(runs: &mut Runs, z: &Sizes) {
    let base = format!(
        "login-storm --spawn --switches {} --clients {} --dns {}",
        z.switches, z.clients, z.dns
    );
    for _ in 0..z.repeat {
        let rounds = format!(" --rounds {}", z.rounds);
        runs.run("router", words(&format!("{base}{rounds}"))).await;
        runs.run("direct", words(&format!("{base}{rounds} --direct")))
            .await;
    }
    let rate = (median(&runs.values("router", "ops_per_s")) / 2.0).round();
    if rate < 1.0 {
        return;
    }
    for _ in 0..z.repeat {
        let a = format!(
            "{base} --rounds 1 --rate {rate} --duration {}ms",
            (z.rate_secs * 1000.0).round()
        );
        runs.run("rate", words(&a)).await;
    }
}

/// Fanout through the router and redis-fanout alternately, the same payload and subscribers.
async fn fanouts(runs: &mut Runs, z: &Sizes, payload: &std::path::Path) {
    let path = payload.to_string_lossy().into_owned();
    for _ in 0..z.repeat {
        let mut a = words(&format!(
            "fanout --spawn --switches {} --dns {} --monitors {} --rounds {} --payload-file",
            z.switches, z.fanout_dns, z.monitors, z.rounds
        ));
        a.push(path.clone());
        runs.run("fanout", a).await;
        let mut r = words(&format!(
            "redis-fanout --spawn --dns {} --monitors {} --rounds {} --payload-file",
            z.fanout_dns, z.monitors, z.rounds
        ));
        r.push(path.clone());
        if payload.exists() {
            runs.run("redis", r).await;
        } else {
            runs.failed("redis", &r.join(" "), "no payload (the fanout run failed)");
        }
    }
}

/// The medians and ratios.
fn summarise(runs: &Runs, z: &Sizes) -> Summary {
    let mut s = Summary::default();
    s.set("scenario", "compare");
    s.set("mode", "compare");
    s.set("repeat", z.repeat);
    s.set("failures", runs.failures);
    let med = |g: &str, k: &str| runs.stat(g, k).map(|x| x.median);
    let put = |s: &mut Summary, key: &str, v: Option<f64>| match v {
        Some(v) => s.set_f(key, v),
        None => s.set(key, Value::Null),
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    for (key, group, field) in [
        ("login_storm_router_ops_per_s", "router", "ops_per_s"),
        ("login_storm_direct_ops_per_s", "direct", "ops_per_s"),
        ("login_storm_router_p99_ms", "router", "p99_ms"),
        ("login_storm_direct_p99_ms", "direct", "p99_ms"),
        (
            "login_storm_cpu_router_us_per_op",
            "router",
            "cpu_router_us_per_op",
        ),
        ("rate_target_ops_per_s", "rate", "target_rate"),
        ("rate_ops_per_s", "rate", "ops_per_s"),
        ("rate_p50_ms", "rate", "p50_ms"),
        ("rate_p99_ms", "rate", "p99_ms"),
        ("rate_cpu_router_us_per_op", "rate", "cpu_router_us_per_op"),
        ("fanout_deliveries_per_s", "fanout", "deliveries_per_s"),
        (
            "fanout_cpu_router_us_per_delivery",
            "fanout",
            "cpu_router_us_per_delivery",
        ),
        ("redis_deliveries_per_s", "redis", "deliveries_per_s"),
        (
            "cpu_redis_us_per_delivery",
            "redis",
            "cpu_redis_us_per_delivery",
        ),
        ("payload_bytes", "redis", "payload_bytes"),
        ("memory_bytes_per_dn", "memory", "bytes_per_dn"),
        ("memory_rss_before_mib", "memory", "router_rss_before_mib"),
        ("memory_rss_after_mib", "memory", "router_rss_after_mib"),
        (
            "scaling_1_cpu_router_us_per_op",
            "scaling-1",
            "cpu_router_us_per_op",
        ),
        (
            "scaling_8_cpu_router_us_per_op",
            "scaling-8",
            "cpu_router_us_per_op",
        ),
        ("scaling_1_ops_per_s", "scaling-1", "ops_per_s"),
        ("scaling_8_ops_per_s", "scaling-8", "ops_per_s"),
    ] {
        put(&mut s, key, med(group, field));
    }
    let sum = |g: &str, k: &str| runs.values(g, k).iter().sum::<f64>() as u64;
    s.set("fanout_losses", sum("fanout", "losses"));
    s.set("fanout_out_of_order", sum("fanout", "out_of_order"));
    s.set("memory_dns", z.memory_dns);
    let r = [
        (
            "ratio_router_direct_ops_per_s",
            med("router", "ops_per_s"),
            med("direct", "ops_per_s"),
        ),
        (
            "ratio_router_redis_cpu_per_delivery",
            med("fanout", "cpu_router_us_per_delivery"),
            med("redis", "cpu_redis_us_per_delivery"),
        ),
        (
            "ratio_router_redis_deliveries_per_s",
            med("fanout", "deliveries_per_s"),
            med("redis", "deliveries_per_s"),
        ),
        (
            "ratio_8_vs_1_switches_cpu_per_op",
            med("scaling-8", "cpu_router_us_per_op"),
            med("scaling-1", "cpu_router_us_per_op"),
        ),
    ];
    for (key, a, b) in r {
        put(&mut s, key, ratio(a, b));
    }
    s.errors = runs.failures;
    s
}

/// The Markdown table of the targets (the README's performance table is copied from it).
fn markdown(runs: &Runs, s: &Summary, z: &Sizes) -> String {
    let mut t = Table {
        runs,
        s,
        z,
        text: format!(
            "| target | measured (median of {}; range) | anchor in the same run | met |\n|---|---|---|---|\n",
            z.repeat
        ),
    };
    login_rows(&mut t);
    other_rows(&mut t);
    if runs.failures > 0 {
        let _ = writeln!(
            t.text,
            "\n{} run(s) failed and are left out.",
            runs.failures
        );
    }
    t.text
}

/// The table being written, and what it is written from.
struct Table<'a> {
    runs: &'a Runs,
    s: &'a Summary,
    z: &'a Sizes,
    text: String,
}

impl Table<'_> {
    fn row(&mut self, a: String, b: String, c: String, d: &str) {
        let _ = writeln!(self.text, "| {a} | {b} | {c} | {d} |");
    }

    fn show(&self, g: &str, k: &str, d: usize, unit: &str) -> String {
        self.runs
            .stat(g, k)
            .map_or("–".to_owned(), |x| x.show(d, unit))
    }

    /// A figure of the summary.
    fn f(&self, k: &str) -> Option<f64> {
        self.s.get(k).and_then(Value::as_f64)
    }

    /// A ratio of the summary with 2 decimals.
    fn r2(&self, k: &str) -> String {
        self.f(k).map_or("–".to_owned(), |v| format!("{v:.2}"))
    }

    fn scaled(&self, g: &str, k: &str, by: f64, d: usize, unit: &str) -> String {
        self.runs.stat(g, k).map_or("–".to_owned(), |x| {
            Stat {
                median: x.median / by,
                min: x.min / by,
                max: x.max / by,
            }
            .show(d, unit)
        })
    }

    fn kilo(&self, g: &str, k: &str) -> String {
        self.scaled(g, k, 1000.0, 1, "k")
    }

    fn mega(&self, g: &str) -> String {
        self.scaled(g, "deliveries_per_s", 1e6, 2, " M/s")
    }
}

fn met(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "yes",
        Some(false) => "no",
        None => "–",
    }
}

/// The login-storm rows.
fn login_rows(t: &mut Table<'_>) {
    t.row(
        format!(
            "login-storm ({} switches, {} clients, {} guests): router CPU per operation ≤ 6 µs",
            t.z.switches, t.z.clients, t.z.dns
        ),
        t.show("router", "cpu_router_us_per_op", 2, " µs"),
        "–".into(),
        met(t.f("login_storm_cpu_router_us_per_op").map(|v| v <= 6.0)),
    );
    t.row(
        "login-storm: router/direct throughput ≥ 0.6".into(),
        format!(
            "{}: router {} ops/s, p99 {}",
            t.r2("ratio_router_direct_ops_per_s"),
            t.kilo("router", "ops_per_s"),
            t.show("router", "p99_ms", 1, " ms")
        ),
        format!(
            "direct {} ops/s, p99 {}",
            t.kilo("direct", "ops_per_s"),
            t.show("direct", "p99_ms", 1, " ms")
        ),
        met(t.f("ratio_router_direct_ops_per_s").map(|v| v >= 0.6)),
    );
    t.row(
        format!(
            "login-storm at half the router's ops/s ({} ops/s) for {} s: p99 < 5 ms",
            t.f("rate_target_ops_per_s")
                .map_or("–".into(), |v| format!("{v:.0}")),
            t.z.rate_secs
        ),
        format!(
            "p99 {}, p50 {}; {} µs CPU/op",
            t.show("rate", "p99_ms", 2, " ms"),
            t.show("rate", "p50_ms", 2, " ms"),
            t.f("rate_cpu_router_us_per_op")
                .map_or("–".into(), |v| format!("{v:.2}"))
        ),
        "–".into(),
        met(t.f("rate_p99_ms").map(|v| v < 5.0)),
    );
}

/// The fanout, memory and scaling rows.
fn other_rows(t: &mut Table<'_>) {
    t.row(
        format!(
            "fanout ({} switches, {} DNs, {} monitors): router CPU per delivery ≤ redis-server's",
            t.z.switches, t.z.fanout_dns, t.z.monitors
        ),
        format!(
            "{} (router/redis {})",
            t.show("fanout", "cpu_router_us_per_delivery", 3, " µs"),
            t.r2("ratio_router_redis_cpu_per_delivery")
        ),
        format!(
            "redis-server {}",
            t.show("redis", "cpu_redis_us_per_delivery", 3, " µs")
        ),
        met(t.f("ratio_router_redis_cpu_per_delivery").map(|v| v <= 1.0)),
    );
    t.row(
        "fanout: deliveries/s ≥ redis-server's, 0 losses, order checked".into(),
        format!(
            "{} (router/redis {}); {} lost, {} out of order",
            t.mega("fanout"),
            t.r2("ratio_router_redis_deliveries_per_s"),
            t.s.get("fanout_losses").cloned().unwrap_or_default(),
            t.s.get("fanout_out_of_order").cloned().unwrap_or_default()
        ),
        format!(
            "redis-server {} ({} B payload)",
            t.mega("redis"),
            t.f("payload_bytes")
                .map_or("–".into(), |v| format!("{v:.0}"))
        ),
        met(t.f("ratio_router_redis_deliveries_per_s").map(|v| v >= 1.0)),
    );
    t.row(
        format!(
            "memory: ≤ 500 bytes per registered DN ({} DNs, one client, share mode)",
            t.z.memory_dns
        ),
        format!(
            "{} (RSS {} → {})",
            t.show("memory", "bytes_per_dn", 0, " B"),
            t.show("memory", "router_rss_before_mib", 1, " MiB"),
            t.show("memory", "router_rss_after_mib", 1, " MiB")
        ),
        "–".into(),
        met(t.f("memory_bytes_per_dn").map(|v| v <= 500.0)),
    );
    t.row(
        "scaling: router CPU per operation on 8 switches within ±10 % of 1 switch (same load)"
            .into(),
        format!(
            "8 vs 1: {}; 1 switch {}, 8 switches {}",
            t.r2("ratio_8_vs_1_switches_cpu_per_op"),
            t.show("scaling-1", "cpu_router_us_per_op", 2, " µs"),
            t.show("scaling-8", "cpu_router_us_per_op", 2, " µs")
        ),
        "–".into(),
        met(t
            .f("ratio_8_vs_1_switches_cpu_per_op")
            .map(|v| (0.9..=1.1).contains(&v))),
    );
}
