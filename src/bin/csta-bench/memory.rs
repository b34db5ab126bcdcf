//! `memory`: what a registered DN costs the router in resident memory. One client (with
//! `--spawn`, one switch by default) registers N DNs (`--dns`, default 200,000: the first N/2
//! guests and the first N/2 hosts of sw1's plan) in share mode, with `--window` (at most 128)
//! registrations in flight; the router's
//! RSS (`/proc/PID/status`, `VmRSS`) is read once the client is open and before the first
//! registration, and again once every registration is
//! answered and the router has settled for a moment. `bytes_per_dn` is the difference over N.
//! The registrations are the measured operations: `ops_per_s` is registrations per second and
//! `cpu_router_us_per_op` the router's CPU per registration (its MonitorStart included).

use super::plan::Plan;
use super::spawn::Environment;
use super::stats::{self, Phase, Summary};
use super::ws::WsClient;
use super::{procfs, Args, BenchError, Outcome, Scenario, Settings};
use clap::parser::ValueSource;
use clap::{ArgMatches, FromArgMatches};
use std::time::{Duration, Instant};

/// DNs registered by default.
pub const DEFAULT_DNS: usize = 200_000;
/// The most registrations in flight: half the router's default `client-max-in-flight` (256).
/// With a window of 256, a run on a loaded machine had registrations answered 111 (limit
/// reached); 128 is as fast.
const MAX_IN_FLIGHT: u64 = 128;
/// How long the router is left to settle before its memory is read again.
const SETTLE: Duration = Duration::from_millis(300);

/// The command line, with the defaults of `memory` (`--dns 200000`, `--switches 1`) where the
/// user gave none. Exits with clap's message when the command line is not valid.
pub fn with_defaults(matches: &ArgMatches) -> Args {
    let mut args = Args::from_arg_matches(matches).unwrap_or_else(|e| e.exit());
    let default = |id: &str| matches.value_source(id) == Some(ValueSource::DefaultValue);
    if args.scenario == Scenario::Memory {
        if default("dns") {
            args.dns = DEFAULT_DNS;
        }
        if default("switches") {
            args.switches = 1;
        }
    }
    if args.scenario == Scenario::Compare {
        super::compare::defaults(&mut args, default);
    }
    args
}

/// Run the scenario and fill in the summary.
pub async fn run(s: &Settings, env: &Environment, mut summary: Summary) -> Outcome {
    let a = &s.args;
    let pid = env
        .router_pid
        .ok_or_else(|| BenchError::Setup("memory needs the router the bench spawned".into()))?;
    let rss = || {
        procfs::memory_mib(pid)
            .map(|m| m.0)
            .ok_or_else(|| BenchError::Setup(format!("cannot read /proc/{pid}/status")))
    };
    let pairs = a.dns / 2;
    let plan = Plan::new(1)?;
    let mut dns: Vec<String> = (0..pairs).map(|k| plan.guest_dn(0, k)).collect();
    dns.extend((0..pairs).map(|k| plan.host_dn(0, k)));
    let (progress, _display) = stats::progress("memory", &env.window);
    let mut c = WsClient::connect(&env.router()?, "csta-bench-memory").await?;
    tokio::time::sleep(SETTLE).await;
    let before = rss()?;
    progress.start_window().await;
    progress.set_phase(Phase::Run);
    let started = Instant::now();
    let registered = c
        .register_all(
            &dns,
            "share",
            a.window.clamp(1, MAX_IN_FLIGHT) as usize,
            &progress,
        )
        .await;
    let elapsed = started.elapsed();
    progress.end_window().await;
    let events = registered?;
    tokio::time::sleep(SETTLE).await;
    let after = rss()?;
    let n = dns.len();
    summary.set("clients", 1);
    summary.set("dns", n);
    summary.set("window", a.window.clamp(1, MAX_IN_FLIGHT));
    summary.set("setup_events", events);
    summary.set_measure(n as u64, elapsed, &stats::Latency::new());
    for key in ["p50_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms"] {
        summary.set(key, serde_json::Value::Null);
    }
    summary.set_f("router_rss_before_mib", before);
    summary.set_f("router_rss_after_mib", after);
    summary.set_f(
        "bytes_per_dn",
        (after - before) * 1024.0 * 1024.0 / n.max(1) as f64,
    );
    c.close().await;
    Ok(summary)
}
