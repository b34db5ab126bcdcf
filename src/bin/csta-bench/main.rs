//! `csta-bench`: the load generator of csta-router (README, section "Benchmark"; `csta-bench
//! --help`).
//!
//! It drives a running router over many WebSocket clients (`--router ws://HOST:PORT/v1`), or
//! starts everything itself (`--spawn`: S `pbx-sim` processes and a `csta-router` with its
//! shipped defaults on free loopback ports), or with `--direct` drives the simulators straight
//! over CSTA with the same number of requests in flight (the baseline without the router). At
//! the end it prints exactly one JSON line on stdout; a progress line is drawn on stderr only
//! when stderr is a terminal.
//!
//! Scenarios:
//! - [`login_storm`]: N guests hot-desk onto N hosts from C clients, then cancel; every reply
//!   checked.
//! - [`fanout`]: M monitoring clients registered on all D DNs; the simulators generate hot-desk
//!   events (`POST /burst`); each client checks, per switch and DN, that no event is missing,
//!   duplicated or out of order (`eventSeq`), and deliveries per second are reported.
//! - [`account_codes`]: calls on N devices; an account code entered on each phone, then codes
//!   set by the clients (private service 501); replies and events checked.
//! - [`call_storm`]: hot-desk requests on N items while one DN of `sw1` takes a storm of calls
//!   (`POST /calls/burst`); the latency of the other DNs' requests during the storm.
//! - [`redis`]: `redis-fanout`, fanout's yardstick: redis-server publishing a router event's
//!   bytes to as many subscribers, with its own CPU per delivery.
//! - [`memory`]: the router's resident memory per registered DN.
//! - [`compare`]: the scenarios above as child runs, side by side, their medians and ratios.
//!
//! Latency is measured from the moment each request was due (its slot in the open-loop
//! schedule with `--rate`, otherwise the moment it could be sent), so queueing is not hidden,
//! and kept in an HDR histogram in microseconds. The DN numbering is in [`plan`].
//!
//! The benchmark is a binary of its own, not part of the router's library: its WebSocket
//! client and HDR histograms are no concern of the router. What it needs of the router it takes
//! through the library's public items (the CSTA codec for `--direct`, the shutdown signal).

mod account_codes;
mod call_storm;
mod cluster;
mod compare;
mod direct;
mod failover;
mod fanout;
mod http;
#[cfg(test)]
mod http_tests;
mod login_storm;
mod memory;
mod plan;
mod procfs;
#[cfg(test)]
mod procfs_tests;
mod readyz;
mod redis;
mod reload;
mod resume;
mod spawn;
mod stats;
mod window;
#[cfg(test)]
mod window_tests;
mod ws;

use clap::{Parser, ValueEnum};
use plan::Plan;
use spawn::{Environment, Routers, SimAddrs};
use stats::{Progress, Summary};
use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// The scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// N guests hot-desk onto N hosts across all switches from C clients, then cancel.
    LoginStorm,
    /// M monitoring clients registered on all D DNs receive the hot-desk events the simulators
    /// generate; losses and order are checked per switch and DN.
    Fanout,
    /// Calls on N devices, account codes entered on the phones and set by the clients.
    AccountCodes,
    /// Hot-desk requests on N items while one DN of sw1 takes a storm of K calls (--calls).
    CallStorm,
    /// The yardstick for `fanout`: a running redis-server (`--redis`) publishes messages of an
    /// event's size to M subscribers as light as the bench's clients.
    RedisFanout,
    /// With `--cluster N` (N >= 2): kill -9 the owner of each switch in turn (--rounds kills),
    /// time until a client of another node gets EventLinkConnected, restart the node.
    Failover,
    /// A desktop loses its connection while the phone makes --events events, then resumes its
    /// session (on another node with --cluster 2 or more): time to the first replayed event
    /// and to the last.
    Resume,
    /// With --spawn: sw1's plan loses the N (--dns) registered guests and gains N others by a
    /// SIGHUP reload (--rounds times, back and forth): time until the reload is applied.
    Reload,
    /// With --spawn: one client registers N DNs (--dns, default 200,000: N/2 guests and N/2
    /// hosts of sw1) in share mode; the router's resident memory before and after, per DN.
    Memory,
    /// Runs the other scenarios as child processes, alternately and --repeat times each
    /// (router and direct, fanout and redis-fanout, memory, 1 and 8 switches) and prints the
    /// medians and ratios (README, "Benchmark").
    Compare,
}

impl Scenario {
    /// The name on the command line and in the summary.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::LoginStorm => "login-storm",
            Scenario::Fanout => "fanout",
            Scenario::AccountCodes => "account-codes",
            Scenario::CallStorm => "call-storm",
            Scenario::RedisFanout => "redis-fanout",
            Scenario::Failover => "failover",
            Scenario::Resume => "resume",
            Scenario::Reload => "reload",
            Scenario::Memory => "memory",
            Scenario::Compare => "compare",
        }
    }
}

/// The command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "csta-bench",
    version,
    about = "Load generator for csta-router: hot-desking login storms, event fan-out, account codes, call storms",
    long_about = "Load generator for csta-router (see the README, section Benchmark). Prints exactly one JSON line on \
stdout at the end (scenario, mode, switches, clients, ops, errors, ops_per_s, p50_ms, p99_ms, \
p999_ms and scenario keys); exits non-zero when there were errors or losses, or when setup failed.",
    after_help = "DN NUMBERING: switch i (1 to 9, named swi) owns guests 1i00000-1i99999 and hosts \
2i00000-2i99999 (7 digits). Item k of a scenario (a guest/host pair, or a calling/called device pair \
for account-codes) is on switch k % S + 1 at local index k / S: guest 1<i><5-digit index>, host \
2<i><5-digit index>. With S = 4, item 0 is 1100000/2100000 on sw1 and item 5 is 1200001/2200001 on sw2. \
A router driven with --router must have switches sw1..swS with these DN plans.

EXAMPLES:
  csta-bench login-storm --spawn --switches 4 --clients 200 --dns 20000
  csta-bench login-storm --spawn --direct --switches 4 --clients 200 --dns 20000
  csta-bench fanout --spawn --switches 4 --dns 10000 --monitors 100
  csta-bench account-codes --spawn --switches 2 --clients 10 --dns 1000
  csta-bench call-storm --spawn --switches 1 --clients 10 --dns 100 --calls 60000 --call-rate 10000
  csta-bench login-storm --spawn --cluster 3 --switches 3 --clients 60 --dns 6000
  csta-bench failover --spawn --cluster 2 --switches 2 --rounds 10
  csta-bench resume --spawn --switches 1 --rounds 5
  csta-bench resume --spawn --cluster 2 --switches 1 --rounds 5
  csta-bench reload --spawn --switches 1 --dns 10000 --clients 10 --rounds 3
  csta-bench login-storm --spawn --switches 4 --clients 200 --dns 10000 --rate 30000 --duration 10s
  csta-bench redis-fanout --spawn --monitors 100 --dns 4000 --payload-file event.json
  csta-bench memory --spawn
  csta-bench compare --markdown compare.md"
)]
pub struct Args {
    /// The scenario to run.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Start S simulators and (unless --direct) a router with shipped defaults on free
    /// loopback ports; kill them at the end.
    #[arg(long, conflicts_with = "router")]
    pub spawn: bool,
    /// Drive this running router, e.g. ws://127.0.0.1:7700/v1.
    #[arg(long, value_name = "URL")]
    pub router: Option<String>,
    /// With --router: a router process's ID (repeat for each), whose CPU over the measured
    /// window gives cpu_router_us_per_op; without, that figure is null.
    #[arg(long = "router-pid", value_name = "PID", conflicts_with = "spawn")]
    pub router_pid: Vec<u32>,
    /// With --spawn: start a nats-server (JetStream, from the PATH) and N router nodes with a
    /// [cluster] section in front of the same simulators; the clients are spread round-robin
    /// over the nodes, and the summary adds each node's CPU per operation, NATS's and the
    /// share of requests forwarded to another node.
    #[arg(long, value_name = "N")]
    pub cluster: Option<usize>,
    /// With --cluster: the nodes' lease-ttl in seconds (how fast a dead node's switches fail
    /// over).
    #[arg(long, default_value_t = 3.0, value_name = "SECS")]
    pub lease_ttl: f64,
    /// Drive the simulators directly over CSTA (the baseline without the router), with the
    /// same number of requests in flight as a router run (clients x --in-flight).
    #[arg(long)]
    pub direct: bool,
    /// Number of switches S (1 to 9).
    #[arg(long, default_value_t = 2, value_name = "S")]
    pub switches: usize,
    /// Which DNs to use: the bench's own numbering, or "shipped": the DNs of
    /// config/csta-router.toml (2 switches, 1,000 pairs each), to drive a router started on it
    /// with --router.
    #[arg(long, value_enum, default_value = "bench", value_name = "NUMBERING")]
    pub numbering: plan::Numbering,
    /// Number of clients C (login-storm, account-codes); with --direct, the number of
    /// workers sharing the CSTA links.
    #[arg(long, default_value_t = 10, value_name = "C")]
    pub clients: usize,
    /// login-storm: N guests (and N hosts). fanout: D DNs monitored (D/2 guests and D/2
    /// hosts). account-codes: N calling devices (N calls). call-storm: N guest/host pairs
    /// hot-desking during the storm.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub dns: usize,
    /// fanout: number of monitoring clients M, each registered on all D DNs.
    #[arg(long, default_value_t = 10, value_name = "M")]
    pub monitors: usize,
    /// login-storm: associate+cancel cycles per guest. fanout: associate+cancel rounds per
    /// pair. account-codes: codes set by the client per device. call-storm: the fewest
    /// associate+cancel cycles per client (they go on while the storm lasts). failover: kills.
    #[arg(long, default_value_t = 1, value_name = "R")]
    pub rounds: usize,
    /// resume: the events the phone makes while the desktop is away (all replayed).
    #[arg(long, default_value_t = 1000, value_name = "E")]
    pub events: usize,
    /// Requests in flight per client (login-storm, account-codes).
    #[arg(long, default_value_t = 2, value_name = "K")]
    pub in_flight: usize,
    /// login-storm: open-loop schedule with this total rate of requests per second (latency
    /// counted from each request's slot); default: as fast as the window allows.
    #[arg(long, value_name = "OPS")]
    pub rate: Option<f64>,
    /// login-storm: go on with whole rounds (after --rounds) while the next request falls due
    /// (with --rate) or comes (without) within D of the start. fanout: go on with whole rounds
    /// while D has not passed. E.g. 10s, 1m.
    #[arg(long, value_name = "D", value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// fanout: the monitors register with callEvents and every pair's round also has a call
    /// from the guest to the host (answered and cleared): call events besides the hot-desk ones.
    #[arg(long)]
    pub call_events: bool,
    /// fanout: the most events per client the bench lets be outstanding (generated but not yet
    /// received); keep it under the router's client-queue (4096 by default).
    #[arg(long, default_value_t = 2048, value_name = "EVENTS")]
    pub window: u64,
    /// fanout: guest/host pairs per POST /burst (default: what the window allows per switch).
    /// call-storm: calls per POST /calls/burst (default 1000).
    #[arg(long, value_name = "N")]
    pub batch: Option<usize>,
    /// call-storm: calls made to the storm DN (sw1's 2199999), never cleared.
    #[arg(long, default_value_t = 60_000, value_name = "K")]
    pub calls: u64,
    /// call-storm: calls per second of the storm (in batches of --batch); default: as fast as
    /// the simulator makes them.
    #[arg(long, value_name = "CPS")]
    pub call_rate: Option<f64>,
    /// With --direct without --spawn: a simulator's CSTA link address, in switch order (repeat
    /// for each switch).
    #[arg(long = "sim-link", value_name = "ADDR")]
    pub sim_link: Vec<SocketAddr>,
    /// Without --spawn: a simulator's control API address, in switch order (repeat for each
    /// switch); fanout and account-codes need them.
    #[arg(long = "sim-control", value_name = "ADDR")]
    pub sim_control: Vec<SocketAddr>,
    /// redis-fanout: the running redis-server to compare with (or --spawn to start one).
    #[arg(long, value_name = "ADDR")]
    pub redis: Option<SocketAddr>,
    /// redis-fanout with --redis: the redis-server's process ID, for its CPU per delivery.
    #[arg(long, value_name = "PID")]
    pub redis_pid: Option<u32>,
    /// fanout: write the text of one event a monitor received to FILE. redis-fanout: publish
    /// these bytes (a real router event; its eventSeq replaced by the message's number).
    #[arg(long, value_name = "FILE")]
    pub payload_file: Option<std::path::PathBuf>,
    /// compare: how many times each run is made (the medians are reported).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub repeat: usize,
    /// compare: also write the Markdown table to FILE (it always goes to stderr).
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<std::path::PathBuf>,
    /// How long to wait for missing replies or events before counting them lost, in seconds.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub drain: f64,
}

/// What went wrong before or around the measurement (not a measured error).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The command line or the setup is not usable.
    #[error("{0}")]
    Setup(String),
    /// Interrupted by a signal.
    #[error("interrupted")]
    Interrupted,
}

/// What a scenario ends with: its summary, or why it could not run.
pub type Outcome = Result<Summary, BenchError>;

/// How long one request to a simulator's control API may take (a large burst takes a while).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(120);

/// `POST path` with a JSON body to a simulator's control API: the JSON reply of a 200, or an
/// error naming the request and what the simulator said.
pub async fn control_post(
    addr: SocketAddr,
    path: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    http::post_json(addr, path, body, CONTROL_TIMEOUT)
        .await?
        .ok_json(&format!("POST {path} {body}"))
}

impl From<String> for BenchError {
    fn from(s: String) -> BenchError {
        BenchError::Setup(s)
    }
}

/// The parameters every scenario reads, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The command line.
    pub args: Args,
    /// The DN plan.
    pub plan: Plan,
    /// "router" or "direct".
    pub mode: &'static str,
}

/// Run `csta-bench` on its own runtime (2 worker threads); the process exit code. The summary
/// line goes to stdout, messages to stderr.
fn main() -> ExitCode {
    let args = memory::with_defaults(&<Args as clap::CommandFactory>::command().get_matches());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("csta-bench: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(run(args));
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(summary) => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", summary.to_line());
            let _ = out.flush();
            if summary.failed() {
                eprintln!(
                    "csta-bench: {} error(s), {} lost event(s)",
                    summary.errors, summary.losses
                );
                for s in &summary.samples {
                    eprintln!("  {s}");
                }
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(BenchError::Interrupted) => {
            eprintln!("csta-bench: interrupted; spawned processes stopped");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("csta-bench: {e}");
            ExitCode::from(2)
        }
    }
}

/// Check the arguments, set up the environment, run the scenario and stop what was spawned.
pub async fn run(args: Args) -> Outcome {
    if args.scenario == Scenario::RedisFanout {
        return redis::run(&args).await;
    }
    if args.scenario == Scenario::Compare {
        return compare::run(&args).await;
    }
    let settings = check(args)?;
    let mut env = tokio::select! {
        env = prepare(&settings) => env?,
        _ = interrupted() => return Err(BenchError::Interrupted),
    };
    let result = tokio::select! {
        r = run_scenario(&settings, &mut env) => r,
        _ = interrupted() => Err(BenchError::Interrupted),
    };
    env.shutdown();
    result
}

fn check(args: Args) -> Result<Settings, BenchError> {
    check_more(&args)?;
    let plan = Plan::with_numbering(args.switches, args.numbering)?;
    let mode = if args.direct { "direct" } else { "router" };
    check_cluster(&args)?;
    if args.scenario == Scenario::Reload && (!args.spawn || args.cluster.is_some() || args.direct) {
        return Err(BenchError::Setup(
            "reload needs --spawn without --cluster or --direct (it rewrites the router's configuration file and sends it SIGHUP)".into(),
        ));
    }
    if !args.spawn {
        if args.direct && args.sim_link.len() != args.switches {
            return Err(BenchError::Setup(format!(
                "--direct without --spawn needs one --sim-link per switch ({} given, --switches {})",
                args.sim_link.len(),
                args.switches
            )));
        }
        if !args.direct && args.router.is_none() {
            return Err(BenchError::Setup(
                "give --spawn, or --router ws://HOST:PORT/v1 to drive a running router".into(),
            ));
        }
        if args.scenario != Scenario::LoginStorm && args.sim_control.len() != args.switches {
            return Err(BenchError::Setup(format!(
                "{} without --spawn needs one --sim-control per switch ({} given, --switches {})",
                args.scenario.name(),
                args.sim_control.len(),
                args.switches
            )));
        }
    }
    if args.direct && args.scenario == Scenario::Fanout {
        return Err(BenchError::Setup(
            "fanout has no --direct baseline (its reference is a pub/sub server, see the README)"
                .into(),
        ));
    }
    if args.clients == 0 || args.monitors == 0 || args.dns == 0 || args.rounds == 0 {
        return Err(BenchError::Setup(
            "--clients, --monitors, --dns and --rounds must be at least 1".into(),
        ));
    }
    if args.in_flight == 0 {
        return Err(BenchError::Setup("--in-flight must be at least 1".into()));
    }
    if args.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err(BenchError::Setup(
            "--rate must be a positive number of requests per second".into(),
        ));
    }
    if args.call_rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err(BenchError::Setup(
            "--call-rate must be a positive number of calls per second".into(),
        ));
    }
    if !(args.drain.is_finite() && args.drain >= 0.0) {
        return Err(BenchError::Setup(
            "--drain must be a number of seconds".into(),
        ));
    }
    match args.scenario {
        Scenario::LoginStorm | Scenario::AccountCodes => plan.check_fits(args.dns, "items")?,
        // Each switch's last local index is the storm's.
        Scenario::CallStorm => plan.check_fits(args.dns + args.switches, "items and the storm")?,
        Scenario::Fanout => {
            if args.dns < 2 {
                return Err(BenchError::Setup(
                    "fanout needs --dns of at least 2 (a guest and a host)".into(),
                ));
            }
            plan.check_fits(args.dns / 2, "guest/host pairs")?;
            if args.window < 4 {
                return Err(BenchError::Setup(
                    "--window must be at least 4 events".into(),
                ));
            }
        }
        Scenario::RedisFanout | Scenario::Failover | Scenario::Resume => {}
        Scenario::Reload | Scenario::Memory | Scenario::Compare => {}
    }
    Ok(Settings { args, plan, mode })
}

/// The rules of `--duration` and of `memory`.
fn check_more(args: &Args) -> Result<(), BenchError> {
    if args.duration.is_some_and(|d| d.is_zero()) {
        return Err(BenchError::Setup("--duration must be longer than 0".into()));
    }
    if args.scenario == Scenario::Memory {
        if !args.spawn || args.cluster.is_some() || args.direct {
            return Err(BenchError::Setup(
                "memory needs --spawn without --cluster or --direct (it reads the router's resident memory)".into(),
            ));
        }
        if args.dns < 2 || args.window == 0 {
            return Err(BenchError::Setup(
                "memory needs --dns of at least 2 (guests and hosts) and --window of at least 1"
                    .into(),
            ));
        }
        Plan::new(1)?.check_fits(args.dns / 2, "guest/host pairs of sw1")?;
    }
    Ok(())
}

/// The rules of `--cluster` (and of the scenario that needs it).
fn check_cluster(args: &Args) -> Result<(), BenchError> {
    let Some(nodes) = args.cluster else {
        if args.scenario == Scenario::Failover {
            return Err(BenchError::Setup(
                "failover needs --spawn --cluster N with N of at least 2 (it kills and restarts nodes the bench started)".into(),
            ));
        }
        return Ok(());
    };
    if !args.spawn {
        return Err(BenchError::Setup(
            "--cluster N needs --spawn: the bench starts the NATS server and the N nodes itself (to drive a running cluster, give --router one node's URL)".into(),
        ));
    }
    if args.direct {
        return Err(BenchError::Setup(
            "--cluster and --direct exclude each other (--direct has no router)".into(),
        ));
    }
    if !(1..=9).contains(&nodes) {
        return Err(BenchError::Setup("--cluster must be 1 to 9 nodes".into()));
    }
    if !(args.lease_ttl.is_finite() && args.lease_ttl >= 1.0) {
        return Err(BenchError::Setup(
            "--lease-ttl must be at least 1 second".into(),
        ));
    }
    if args.scenario == Scenario::Failover && nodes < 2 {
        return Err(BenchError::Setup(
            "failover needs --cluster 2 or more (a node to fail over to)".into(),
        ));
    }
    Ok(())
}

async fn prepare(s: &Settings) -> Result<Environment, BenchError> {
    if s.args.spawn {
        let routers = match s.args.cluster {
            _ if s.args.direct => Routers::Direct,
            Some(n) => Routers::Cluster(n, Duration::from_secs_f64(s.args.lease_ttl)),
            None => Routers::One,
        };
        return Ok(spawn::spawn(s.plan, routers).await?);
    }
    let mut env = Environment::default();
    env.router_urls = s.args.router.clone().into_iter().collect();
    if !s.args.router_pid.is_empty() {
        let routers = s.args.router_pid.iter();
        env.window = Arc::new(window::Window::new(window::Probe {
            routers: routers
                .map(|&pid| window::Watched { pid, metrics: None })
                .collect(),
            nats: None,
        }));
        if let [pid] = s.args.router_pid[..] {
            env.router_pid = Some(pid);
        }
    }
    let n = s.args.sim_link.len().max(s.args.sim_control.len());
    for i in 0..n {
        env.sims.push(SimAddrs {
            link: s
                .args
                .sim_link
                .get(i)
                .copied()
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
            control: s.args.sim_control.get(i).copied(),
        });
    }
    if !s.args.direct {
        if let Some(url) = env.router_urls.first() {
            spawn::wait_links_up(url, s.plan.switches).await?;
        }
    }
    Ok(env)
}

async fn run_scenario(s: &Settings, env: &mut Environment) -> Outcome {
    let mut summary = Summary::default();
    summary.set("scenario", s.args.scenario.name());
    summary.set("mode", s.mode);
    summary.set("switches", s.plan.switches);
    if let Some(nodes) = s.args.cluster {
        summary.set("cluster_nodes", nodes);
    }
    if s.args.scenario == Scenario::Failover {
        return failover::run(s, env, summary).await;
    }
    if s.args.scenario == Scenario::Resume {
        return resume::run(s, env, summary).await;
    }
    if s.args.scenario == Scenario::Reload {
        return reload::run(s, env, summary).await;
    }
    let env = &*env;
    let cpu = |env: &Environment| {
        let pids = env.router_pids();
        let router: Option<f64> = if pids.is_empty() {
            None
        } else {
            pids.iter()
                .map(|p| procfs::cpu_seconds(&p.to_string()))
                .sum()
        };
        let sims: Option<f64> = if env.sim_pids.is_empty() {
            None
        } else {
            env.sim_pids
                .iter()
                .map(|p| procfs::cpu_seconds(&p.to_string()))
                .sum()
        };
        (router, sims, procfs::cpu_seconds("self"))
    };
    if let Some(c) = &env.cluster {
        summary.set("owners", owners_per_node(c).await);
    }
    let before = cpu(env);
    let window_before = env.window.cpu_now();
    let mut summary = match s.args.scenario {
        Scenario::LoginStorm => login_storm::run(s, env, summary).await?,
        Scenario::Fanout => fanout::run(s, env, summary).await?,
        Scenario::AccountCodes => account_codes::run(s, env, summary).await?,
        Scenario::CallStorm => call_storm::run(s, env, summary).await?,
        Scenario::Memory => memory::run(s, env, summary).await?,
        Scenario::RedisFanout
        | Scenario::Failover
        | Scenario::Resume
        | Scenario::Reload
        | Scenario::Compare => {
            return Err(BenchError::Setup(format!(
                "{} runs on its own",
                s.args.scenario.name()
            )))
        }
    };
    // Scenarios without a common end of their measured part end it here.
    env.window.mark_end().await;
    let after = cpu(env);
    // CPU seconds each side used during the scenario (setup included).
    for (key, b, a) in [
        ("cpu_router_s", before.0, after.0),
        ("cpu_sims_s", before.1, after.1),
        ("cpu_bench_s", before.2, after.2),
    ] {
        if let (Some(b), Some(a)) = (b, a) {
            summary.set_f(key, a - b);
        }
    }
    if let Some((rss, hwm)) = env.router_pid.and_then(procfs::memory_mib) {
        summary.set_f("router_rss_mib", rss);
        summary.set_f("router_peak_rss_mib", hwm);
    }
    if let Some(setup) = env.window.setup_cpu(&window_before) {
        summary.set_f("cpu_router_setup_s", setup);
    }
    let ops = summary
        .get("ops")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    env.window.report(&mut summary, ops, env.cluster.is_some());
    if s.mode == "router" && summary.get("cpu_router_us_per_op").is_none() {
        // Not known (a running router without --router-pid, or no measured window).
        summary.set("cpu_router_us_per_op", serde_json::Value::Null);
    }
    if s.args.scenario == Scenario::Fanout {
        if let Some(v) = summary.get("cpu_router_us_per_op").cloned() {
            summary.set("cpu_router_us_per_delivery", v);
        }
    }
    if env.cluster.is_some() {
        eprint!("{}", window::describe(&summary));
    }
    Ok(summary)
}

/// How many switches each node owns, as the cluster agreed when it settled.
async fn owners_per_node(c: &cluster::Cluster) -> serde_json::Value {
    let owners = c.settle().await.unwrap_or_default();
    let map: serde_json::Map<String, serde_json::Value> = c
        .nodes
        .iter()
        .map(|n| {
            let owned: Vec<serde_json::Value> = owners
                .iter()
                .filter(|(_, o)| **o == n.name)
                .map(|(s, _)| s.as_str().into())
                .collect();
            (n.name.clone(), owned.into())
        })
        .collect();
    map.into()
}

/// Resolves on ctrl-c or SIGTERM.
async fn interrupted() {
    csta_router::server::shutdown_signal().await;
}

/// The setup of client `index` of a scenario: connected as `csta-bench-<index>` with `dns`
/// registered in share mode; the hot-desk events seen meanwhile are counted.
pub async fn share_client(
    s: &Settings,
    url: &str,
    index: usize,
    dns: &[String],
    progress: &Progress,
) -> Result<(ws::WsClient, u64), String> {
    let mut c = ws::WsClient::connect(url, &format!("csta-bench-{index}")).await?;
    let window = setup_window(s.plan.switches, s.args.clients, 64);
    let events = c.register_all(dns, "share", window, progress).await?;
    Ok((c, events))
}

/// Wait until every client of the run got here (after its last reply and event), the last
/// one to arrive closing the measured window, so that none leaves while the others are
/// measured: a leaving client makes the router stop its monitors (one MonitorStop per DN).
pub async fn leave_together(done: &tokio::sync::Barrier, progress: &Progress) {
    if done.wait().await.is_leader() {
        progress.end_window().await;
    }
    done.wait().await;
}

/// Setup requests (registrations, MonitorStarts) each client may have in flight: at most
/// `max`, and all clients together about 2,000 per switch, well under the 9,998 invoke IDs of a
/// CSTA link (beyond which a router answers 111).
pub fn setup_window(switches: usize, clients: usize, max: usize) -> usize {
    (switches * 2000 / clients.max(1)).clamp(1, max)
}

/// When each request of one client is due: an open-loop schedule (`--rate`, spread evenly over
/// the clients) or, without a rate, "as soon as the window allows".
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start: Instant,
    step: Option<Duration>,
    offset: Duration,
}

impl Schedule {
    /// The schedule of client `index` of `clients`, starting at `start`.
    pub fn new(start: Instant, rate: Option<f64>, clients: usize, index: usize) -> Schedule {
        match rate {
            Some(rate) => Schedule {
                start,
                step: Some(Duration::from_secs_f64(clients as f64 / rate)),
                offset: Duration::from_secs_f64(index as f64 / rate),
            },
            None => Schedule {
                start,
                step: None,
                offset: Duration::ZERO,
            },
        }
    }

    /// When request `j` of this client is due; `None` in closed loop (due when sendable).
    pub fn due(&self, j: usize) -> Option<Instant> {
        self.step
            .map(|step| self.start + self.offset + step.mul_f64(j as f64))
    }
}

/// Handed to each worker: report readiness after setup, then wait for the common start.
#[derive(Debug)]
pub struct StartGate {
    ready: mpsc::Sender<Result<(), String>>,
    start: watch::Receiver<Option<Instant>>,
}

impl StartGate {
    /// The outcome of the first part of this worker's setup (`who` names the worker in an
    /// error): its value, or `None` once the failure is reported (which calls the run off).
    /// The setup then goes on; [`StartGate::ready`] ends it.
    pub async fn check<T>(&mut self, who: &str, setup: Result<T, String>) -> Option<T> {
        match setup {
            Ok(v) => Some(v),
            Err(e) => {
                self.ready(Err(format!("{who}: {e}"))).await;
                None
            }
        }
    }

    /// Report the outcome of this worker's setup; on success wait for the start time every
    /// worker shares. `None` when the run was called off.
    pub async fn ready(&mut self, setup: Result<(), String>) -> Option<Instant> {
        let failed = setup.is_err();
        let _ = self.ready.send(setup).await;
        if failed {
            return None;
        }
        let start = self
            .start
            .wait_for(Option::is_some)
            .await
            .ok()?
            .as_ref()
            .copied()?;
        tokio::time::sleep_until(start.into()).await;
        Some(start)
    }
}

/// Workers that have all finished their setup and been given the start time.
#[derive(Debug)]
pub struct Started<T> {
    /// When the measured part starts.
    pub start: Instant,
    tasks: tokio::task::JoinSet<T>,
}

impl<T: 'static> Started<T> {
    /// Wait for every worker and return their results.
    pub async fn results(mut self) -> Result<Vec<T>, BenchError> {
        let mut results = Vec::with_capacity(self.tasks.len());
        while let Some(r) = self.tasks.join_next().await {
            match r {
                Ok(w) => results.push(w),
                Err(e) => return Err(BenchError::Setup(format!("a worker failed: {e}"))),
            }
        }
        Ok(results)
    }
}

/// Start `count` workers: each does its setup and calls [`StartGate::ready`]. Once every one
/// is ready they are all given the same start time (a few milliseconds ahead); a setup failure
/// calls the run off (the workers are aborted).
pub async fn start_workers<F, Fut, T>(
    count: usize,
    progress: &Arc<Progress>,
    make: F,
) -> Result<Started<T>, BenchError>
where
    F: Fn(usize, StartGate) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let (ready_tx, mut ready_rx) = mpsc::channel(count.max(1));
    let (start_tx, start_rx) = watch::channel(None);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let gate = StartGate {
            ready: ready_tx.clone(),
            start: start_rx.clone(),
        };
        tasks.spawn(make(i, gate));
    }
    drop(ready_tx);
    for _ in 0..count {
        match ready_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(BenchError::Setup(e)),
            None => return Err(BenchError::Setup("a worker stopped during setup".into())),
        }
    }
    progress.start_window().await;
    let start = Instant::now() + Duration::from_millis(20);
    progress.set_phase(stats::Phase::Run);
    let _ = start_tx.send(Some(start));
    // The receivers keep the start; the sender may go.
    Ok(Started { start, tasks })
}

/// [`start_workers`], then wait for their results.
pub async fn run_workers<F, Fut, T>(
    count: usize,
    progress: &Arc<Progress>,
    make: F,
) -> Result<(Instant, Vec<T>), BenchError>
where
    F: Fn(usize, StartGate) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let started = start_workers(count, progress, make).await?;
    let start = started.start;
    Ok((start, started.results().await?))
}
