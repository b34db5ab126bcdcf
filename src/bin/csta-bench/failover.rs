//! `failover` (with `--spawn --cluster N`, N of at least 2): how long the desktops of a
//! cluster wait when a node dies.
//!
//! Each node has one client connected (an observer). For each of `--rounds` kills, the owner
//! of switch `k % S + 1` is killed with SIGKILL (no goodbye to NATS or its clients); the
//! failover time is from the kill to the moment the observer of another node receives
//! `EventLinkConnected` for that switch (what a desktop waits for), and the detection time to
//! its `EventLinkDisconnected`. The killed node is then started again under its name (once its
//! presence has expired) and the cluster left to settle before the next kill. The summary's
//! `p50_ms`, `p99_ms` and `max_ms` are those of the failover times; `failover_ms` lists them.

use super::cluster::Cluster;
use super::plan::Plan;
use super::spawn::Environment;
use super::stats::{median, Latency, Summary};
use super::ws::{self, WsClient};
use super::{BenchError, Outcome, Settings};
use std::time::{Duration, Instant};

/// How long to wait for the observer to hear of the switch, beyond the lease.
const EXTRA_WAIT: Duration = Duration::from_secs(15);

/// One kill's times, in milliseconds from the kill.
struct Times {
    detected: Option<f64>,
    connected: f64,
}

/// Run the scenario and fill in the summary.
pub async fn run(s: &Settings, env: &mut Environment, mut summary: Summary) -> Outcome {
    let switches = s.plan.switches;
    let Some(cluster) = env.cluster.as_mut() else {
        return Err(BenchError::Setup(
            "failover needs --spawn --cluster N".into(),
        ));
    };
    let mut observers = Vec::with_capacity(cluster.nodes.len());
    for (i, node) in cluster.nodes.iter().enumerate() {
        observers.push(Some(observer(&node.url(), i).await?));
    }
    let started = Instant::now();
    let mut latency = Latency::new();
    let (mut failovers, mut detections) = (Vec::new(), Vec::new());
    for k in 0..s.args.rounds {
        let switch = Plan::switch_name(k % switches);
        let times = kill_owner(cluster, &mut observers, &switch).await?;
        eprintln!(
            "failover {}: {switch} served again after {:.0} ms (link down seen after {})",
            k + 1,
            times.connected,
            times
                .detected
                .map_or("-".to_owned(), |d| format!("{d:.0} ms"))
        );
        latency.record(Duration::from_secs_f64(times.connected / 1000.0));
        failovers.push(times.connected);
        detections.extend(times.detected);
    }
    summary.set("clients", observers.len());
    summary.set_f("lease_ttl_s", cluster.lease_ttl.as_secs_f64());
    summary.set_measure(failovers.len() as u64, started.elapsed(), &latency);
    summary.set(
        "failover_ms",
        failovers.iter().map(|t| t.round()).collect::<Vec<f64>>(),
    );
    summary.set_f("failover_median_ms", median(&failovers));
    summary.set_f(
        "failover_worst_ms",
        failovers.iter().copied().fold(0.0, f64::max),
    );
    summary.set_f("detect_median_ms", median(&detections));
    for o in observers.iter_mut().flatten() {
        o.close().await;
    }
    Ok(summary)
}

async fn observer(url: &str, index: usize) -> Result<WsClient, String> {
    WsClient::connect(url, &format!("csta-bench-observer-{index}")).await
}

/// Kill the owner of `switch`, time the failover as another node's observer sees it, and
/// bring the killed node back.
async fn kill_owner(
    cluster: &mut Cluster,
    observers: &mut [Option<WsClient>],
    switch: &str,
) -> Result<Times, BenchError> {
    let owners = cluster.settle().await?;
    let victim = owners
        .get(switch)
        .and_then(|o| cluster.nodes.iter().position(|n| n.name == *o))
        .ok_or_else(|| BenchError::Setup(format!("{switch} has no owner")))?;
    let watcher = (victim + 1) % cluster.nodes.len();
    // What the observers were sent so far is not about this kill (and reading it answers the
    // nodes' pings).
    for o in observers.iter_mut().flatten() {
        drain(o).await?;
    }
    let killed_at = Instant::now();
    cluster.kill(victim);
    observers[victim] = None;
    let Some(watching) = observers[watcher].as_mut() else {
        return Err(BenchError::Setup(format!("no observer on node {watcher}")));
    };
    let times = watch(watching, switch, killed_at, cluster.lease_ttl + EXTRA_WAIT).await?;
    // A node of the same name is refused while the killed one's presence lasts.
    tokio::time::sleep(cluster.lease_ttl + Duration::from_millis(500)).await;
    cluster.restart(victim).await?;
    observers[victim] = Some(observer(&cluster.nodes[victim].url(), victim).await?);
    Ok(times)
}

/// Read what is already queued for `c`, without waiting for more.
async fn drain(c: &mut WsClient) -> Result<(), String> {
    loop {
        match tokio::time::timeout(Duration::from_millis(20), c.recv()).await {
            Err(_) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("an observer lost its node: {e}")),
        }
    }
}

/// Wait for `EventLinkConnected` on `switch`, noting `EventLinkDisconnected` on the way.
async fn watch(
    c: &mut WsClient,
    switch: &str,
    since: Instant,
    within: Duration,
) -> Result<Times, String> {
    let deadline = tokio::time::Instant::from_std(since + within);
    let mut detected = None;
    loop {
        let text = tokio::time::timeout_at(deadline, c.recv())
            .await
            .map_err(|_| {
                format!(
                    "{switch} was not served again within {} s of its owner's kill",
                    within.as_secs()
                )
            })??;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{e}: {}", ws::describe(&text)))?;
        if v["switch"] != switch {
            continue;
        }
        let ms = since.elapsed().as_secs_f64() * 1000.0;
        match v["message"].as_str() {
            Some("EventLinkDisconnected") => {
                detected.get_or_insert(ms);
            }
            Some("EventLinkConnected") => {
                return Ok(Times {
                    detected,
                    connected: ms,
                })
            }
            _ => {}
        }
    }
}
