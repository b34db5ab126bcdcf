//! `reload`: how long a live reload of a large DN-plan change takes (README, "Live reload").
//!
//! With `--spawn` (one router): sw1's plan is first narrowed by a setup reload so that it has
//! three parts: N guests to be removed, N guests to be added, and the rest. N guests (`--dns`,
//! 10,000 by default) are registered from `--clients` clients. Each of `--rounds` rounds then
//! writes the other plan (the registered DNs removed, N others added) and sends SIGHUP; the
//! times are from the signal to the generation gauge changing (`reload_applied_ms`: the
//! reload applied, every MonitorStop handed to the link), to the last `EventUnregistered` at
//! the clients (`reload_unregistered_ms`) and to the simulator monitoring none of the removed
//! DNs (`reload_monitors_stopped_ms`). Every removed DN's client must get its
//! `EventUnregistered` (59), and a DN of the added range must register.

use super::spawn::Environment;
use super::stats::{median, Latency, Progress, Summary};
use super::ws::{quote, WsClient};
use super::{share_client, BenchError, Outcome, Settings};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long each step may take.
const STEP: Duration = Duration::from_secs(60);

/// Run the scenario and fill in the summary.
pub async fn run(s: &Settings, env: &Environment, mut summary: Summary) -> Outcome {
    let (Some(file), Some(metrics), Some(pid)) =
        (env.config_path(), env.router_metrics, env.router_pid)
    else {
        return Err(BenchError::Setup(
            "reload needs --spawn without --cluster (it rewrites the router's file and signals it)"
                .into(),
        ));
    };
    let n = s.args.dns;
    if 2 * n >= s.plan.per_switch() {
        return Err(BenchError::Setup(format!(
            "reload needs --dns under {} (2 x --dns guests of sw1 in the plan)",
            s.plan.per_switch() / 2
        )));
    }
    let url = env.router()?;
    let plans = Plans::new(s, n);
    // Setup: the plan with the DNs to remove.
    std::fs::write(file, config_text(s, env, &plans.before)).map_err(|e| e.to_string())?;
    let mut generation = gauge(metrics).await?;
    sighup(pid)?;
    generation = wait_generation(metrics, generation).await?;
    let started = Instant::now();
    let mut latency = Latency::new();
    let (mut applied, mut unregistered, mut stopped) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..s.args.rounds {
        // Odd rounds go back: the DNs added by the last round are removed.
        let (from, to) = if round % 2 == 0 {
            (&plans.removed, &plans.after)
        } else {
            (&plans.added, &plans.before)
        };
        let clients = register(s, &url, from).await?;
        std::fs::write(file, config_text(s, env, to)).map_err(|e| e.to_string())?;
        let signal = Instant::now();
        sighup(pid)?;
        let waiting = clients
            .into_iter()
            .map(|(c, dns)| tokio::spawn(unregistrations(c, dns)));
        let ends = futures_util::future::join_all(waiting);
        let (g, ends) = tokio::join!(wait_generation(metrics, generation), ends);
        generation = g?;
        let applied_at = signal.elapsed();
        let mut last = Duration::ZERO;
        for end in ends {
            let at = end.map_err(|e| e.to_string())??;
            last = last.max(at.saturating_duration_since(signal));
        }
        let control = env.controls(1, "reload")?[0];
        wait_monitors_gone(control, from).await?;
        let gone = signal.elapsed();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        eprintln!(
            "reload {}: {n} DNs removed and {n} added with {n} registered: applied after {:.1} ms, last EventUnregistered after {:.1} ms, monitors stopped after {:.1} ms",
            round + 1,
            ms(applied_at),
            ms(last),
            ms(gone)
        );
        latency.record(applied_at);
        applied.push(ms(applied_at));
        unregistered.push(ms(last));
        stopped.push(ms(gone));
        check_added(
            &url,
            if round % 2 == 0 {
                &plans.added
            } else {
                &plans.removed
            },
        )
        .await?;
    }
    summary.set("clients", s.args.clients);
    summary.set("registered", n);
    summary.set("dns_removed", n);
    summary.set("dns_added", n);
    summary.set_measure(applied.len() as u64, started.elapsed(), &latency);
    summary.set_f("reload_applied_ms", median(&applied));
    summary.set_f("reload_unregistered_ms", median(&unregistered));
    summary.set_f("reload_monitors_stopped_ms", median(&stopped));
    Ok(summary)
}

/// sw1's guests in three parts, and the plans (entries of sw1's `dns`) before and after.
struct Plans {
    removed: Vec<String>,
    added: Vec<String>,
    before: Vec<String>,
    after: Vec<String>,
}

impl Plans {
    fn new(s: &Settings, n: usize) -> Plans {
        let dn = |i: usize| s.plan.guest_dn(0, i);
        let range = |a: usize, b: usize| format!("{}-{}", dn(a), dn(b));
        let hosts = s.plan.switch_dns(0)[1].clone();
        let rest = range(2 * n, s.plan.per_switch() - 1);
        Plans {
            removed: (0..n).map(dn).collect(),
            added: (n..2 * n).map(dn).collect(),
            before: vec![range(0, n - 1), rest.clone(), hosts.clone()],
            after: vec![range(n, 2 * n - 1), rest, hosts],
        }
    }
}

/// The router's file with sw1's plan `dns` (the other switches as spawned).
fn config_text(s: &Settings, env: &Environment, dns: &[String]) -> String {
    let mut text = String::from(
        "# written by csta-bench reload\n[server]\nclient-listen = \"127.0.0.1:0\"\nmetrics-listen = \"127.0.0.1:0\"\n",
    );
    for (i, sim) in env.sims.iter().enumerate().take(s.plan.switches) {
        let entries: Vec<String> = if i == 0 {
            dns.iter().map(|d| quote(d)).collect()
        } else {
            s.plan.switch_dns(i).iter().map(|d| quote(d)).collect()
        };
        text.push_str(&format!(
            "\n[[switch]]\nname = \"{}\"\ndns = [{}]\n\n[[switch.link]]\naddress = \"{}\"\n",
            super::plan::Plan::switch_name(i),
            entries.join(", "),
            sim.link
        ));
    }
    text
}

/// Register `dns` from `--clients` clients: each client and its DNs.
async fn register(
    s: &Settings,
    url: &str,
    dns: &[String],
) -> Result<Vec<(WsClient, Vec<String>)>, BenchError> {
    let progress = Progress::default();
    let clients = s.args.clients.min(dns.len()).max(1);
    let per = dns.len().div_ceil(clients);
    let mut out = Vec::with_capacity(clients);
    for (i, chunk) in dns.chunks(per).enumerate() {
        let (c, _) = share_client(s, url, i, chunk, &progress).await?;
        out.push((c, chunk.to_vec()));
    }
    Ok(out)
}

/// Read until every one of `dns` got its `EventUnregistered` (59, no `referenceId`): when the
/// last came. The client is closed then.
async fn unregistrations(mut c: WsClient, dns: Vec<String>) -> Result<Instant, BenchError> {
    let mut left: std::collections::HashSet<String> = dns.into_iter().collect();
    let deadline = tokio::time::Instant::now() + STEP;
    while !left.is_empty() {
        let text = tokio::time::timeout_at(deadline, c.recv())
            .await
            .map_err(|_| {
                BenchError::Setup(format!(
                    "{} DNs got no EventUnregistered within {STEP:?}",
                    left.len()
                ))
            })??;
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        if v["message"] == "EventUnregistered" && v.get("referenceId").is_none() {
            if v["errorCode"] != 59 {
                return Err(BenchError::Setup(format!("not 59: {v}")));
            }
            left.remove(v["thisDn"].as_str().unwrap_or_default());
        }
    }
    let at = Instant::now();
    c.close().await;
    Ok(at)
}

/// `csta_router_config_generation`.
async fn gauge(metrics: SocketAddr) -> Result<u64, BenchError> {
    let r = super::http::get(metrics, "/metrics", Duration::from_secs(10)).await?;
    let text = r.text();
    text.lines()
        .find_map(|l| l.strip_prefix("csta_router_config_generation "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .ok_or_else(|| BenchError::Setup("no csta_router_config_generation in /metrics".into()))
}

/// Poll the generation every 5 ms until it is past `from`: the new one.
async fn wait_generation(metrics: SocketAddr, from: u64) -> Result<u64, BenchError> {
    let deadline = Instant::now() + STEP;
    loop {
        let g = gauge(metrics).await?;
        if g > from {
            return Ok(g);
        }
        if Instant::now() > deadline {
            return Err(BenchError::Setup(format!(
                "the generation stayed at {g} for {STEP:?} after SIGHUP (reload rejected? see the router's log)"
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Poll the simulator until it monitors none of `dns`.
async fn wait_monitors_gone(control: SocketAddr, dns: &[String]) -> Result<(), BenchError> {
    let gone: std::collections::HashSet<&str> = dns.iter().map(String::as_str).collect();
    let deadline = Instant::now() + STEP;
    loop {
        let r = super::http::get(control, "/state", Duration::from_secs(10)).await?;
        let state = r.ok_json("GET /state")?;
        let left = state["monitors"].as_array().map_or(0, |m| {
            m.iter()
                .filter(|m| gone.contains(m["device"].as_str().unwrap_or_default()))
                .count()
        });
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Setup(format!(
                "{left} removed DNs still monitored {STEP:?} after the reload"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A DN of the added range registers (and is unregistered again by its client's close).
async fn check_added(url: &str, added: &[String]) -> Result<(), BenchError> {
    let dn = added.first().map_or("", String::as_str);
    let mut c = WsClient::connect(url, "csta-bench-check").await?;
    let r = c
        .call(
            &format!(
                r#""message":"RequestRegisterAddress","thisDn":{}"#,
                quote(dn)
            ),
            STEP,
        )
        .await?;
    c.close().await;
    if r["message"] != "EventRegistered" {
        return Err(BenchError::Setup(format!(
            "{dn} of the added range did not register: {r}"
        )));
    }
    Ok(())
}

/// SIGHUP to the router.
fn sighup(pid: u32) -> Result<(), BenchError> {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .map_err(|e| BenchError::Setup(format!("kill -HUP {pid}: {e}")))?;
    if !status.success() {
        return Err(BenchError::Setup(format!("kill -HUP {pid} failed")));
    }
    Ok(())
}
