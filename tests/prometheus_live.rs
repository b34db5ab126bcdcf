#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The Grafana dashboard and the Prometheus rules against a real Prometheus server scraping the
//! real router binary under scripted traffic (SPEC section 7).
//!
//! The test starts the `csta-router` binary with two simulated switches (sw1: 4000-5999,
//! sw2: 6000-7999, two links each), then a Prometheus server on loopback (scrape and rule
//! evaluation every second) that scrapes it and loads the repository's recording and alerting
//! rules. It drives a few seconds of traffic on both switches (registrations, hot-desking with
//! refusals, account codes on calls, phone-side events, a late answer, a decode error, a link
//! failover, a client disconnect, keep-alives in the idle gaps) and then checks:
//!
//! 1. the `switch` template variable (`label_values(...)`) lists exactly the configured switches;
//! 2. every dashboard panel target and annotation query, with its variables substituted (`$switch`
//!    by each switch in turn and by the "All" value `.*`, `$__rate_interval` by
//!    [`RATE_INTERVAL`], ...), passes `promtool check rules` and returns, on the live server, a
//!    successful, non-empty result with no NaN or infinite value, restricted to the selected
//!    switch where it carries a `switch` label (the data source is this Prometheus: every target
//!    uses the `${datasource}` variable, checked by `tests/observability_assets.rs`);
//! 3. every rule of `config/prometheus/rules/` is loaded and evaluates without error, and every
//!    recording rule has a non-empty, finite result for each switch (all of them keep the
//!    `switch` label);
//! 4. the alerts that must follow from the traffic do: the decode-error alert fires for both
//!    switches, and the router-down, router-missing and no-active-link alerts do not fire, nor
//!    the session-resume alerts (no client resumes a session).
//!
//! The router has no `[cluster]`, so it exports no cluster metric (SPEC section 10): the
//! queries and recording rules on them (the dashboard's Cluster row, the forwarded-request and
//! ownership rules) must be valid and evaluate, with an empty result, and the cluster alerts
//! must stay quiet.
//!
//! Every failing check is collected, so the final assertion lists all of them at once.
//!
//! `prometheus` and `promtool` come from Debian's `prometheus` package (`bash .ci/run` installs
//! it when missing); without them the test fails. `PROMETHEUS=/path` and `PROMTOOL=/path` pick
//! other binaries.

mod common;
use common::observability::{self, all_queries, dashboard, repo, tool, yaml_files};
use common::{config, http, process, router, sim_control};

use process::RouterProcess;
use router::Client;
use serde_json::{json, Value};
use sim_control::SimControl;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The switches of the configuration, in order.
const SWITCHES: [&str; 2] = ["sw1", "sw2"];

/// What `$__rate_interval` becomes. Grafana makes it at least four scrape intervals (4 s here);
/// 10 s covers the whole traffic phase (about 6 s) plus the settling time, so every `rate()`
/// of the dashboard has many samples in its window and every histogram has observations in it
/// (a `histogram_quantile` over a window without observations is NaN).
const RATE_INTERVAL: &str = "10s";

/// Rounds of traffic per switch, and the idle gap after each (longer than `kpl-interval`, so
/// the router sends `RequestSystemStatus` keep-alives: the round-trip panel has a series per
/// CSTA request type, and each needs observations in the window).
const ROUNDS: u32 = 8;
const ROUND_GAP: Duration = Duration::from_millis(600);

/// After the traffic: at least one scrape and one rule evaluation (both every second) see the
/// final state. The windows still cover the traffic (`RATE_INTERVAL`).
const SETTLE: Duration = Duration::from_millis(1500);

/// The router's configuration: two simulated switches with two links each (so that a failover
/// changes `csta_router_link_up` without a gap, for the "Active link changes" annotation), a
/// short request timeout (so a late answer is quick to provoke) and frequent keep-alives. Both
/// switches open ECMA-354 application sessions (so that the session-failure series exist, at
/// 0), so their keep-alives are session timer resets, every second.
fn config() -> String {
    let options = "request-timeout = \"300ms\"\nkpl-interval = \"250ms\"\nkpl-tolerance = 5\nreconnect-min = \"20ms\"\nreconnect-max = \"100ms\"";
    let sessions = "application-session = true\nsession-duration = \"3s\"";
    config::head("", options) + &config::two_simulated(sessions, [2, 2])
}

/// A Prometheus server on loopback, killed (and its directory removed) on drop, also when the
/// test fails.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    // Dropped after `Drop::drop` has killed the server.
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Start `prometheus` scraping `target` every second, with these rule files.
    fn start(binary: &Path, target: SocketAddr, rule_files: &[PathBuf]) -> Prometheus {
        let dir = process::files_in("csta-router-prometheus-live-", &[]);
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\nrule_files:\n",
        );
        for file in rule_files {
            // A JSON string is a valid YAML double-quoted scalar.
            let quoted = serde_json::to_string(&file.display().to_string()).unwrap();
            writeln!(config, "  - {quoted}").unwrap();
        }
        write!(
            config,
            "\nscrape_configs:\n  - job_name: csta-router\n    metrics_path: /metrics\n    static_configs:\n      - targets: [\"{target}\"]\n"
        )
        .unwrap();
        let config_path = dir.path().join("prometheus.yml");
        fs::write(&config_path, &config).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", process::free_port())
            .parse()
            .unwrap();
        let log = dir.path().join("prometheus.log");
        let arg = |flag: &str, value: &Path| {
            let mut a = OsString::from(flag);
            a.push("=");
            a.push(value);
            a
        };
        let child = Command::new(binary)
            .arg(arg("--config.file", &config_path))
            .arg(arg("--storage.tsdb.path", &dir.path().join("data")))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        Prometheus {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait for `GET /-/ready`.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, _)) = http_get(self.addr, "/-/ready").await {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "prometheus exited ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within 20 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /api/v1/<path>`: the `data` of a successful answer, or why it failed.
    async fn api(&self, path: &str) -> Result<Value, String> {
        let (status, body) = http_get(self.addr, &format!("/api/v1/{path}")).await?;
        let reply: Value = serde_json::from_str(&body)
            .map_err(|e| format!("HTTP {status}, not JSON ({e}): {body}"))?;
        if status != 200 || reply["status"] != "success" {
            return Err(format!(
                "HTTP {status}, status {}: {} {}",
                reply["status"], reply["errorType"], reply["error"]
            ));
        }
        Ok(reply["data"].clone())
    }

    /// An instant query at the current time: its result as a list of `(labels, value)`.
    async fn query(&self, promql: &str) -> Result<Vec<(Value, String)>, String> {
        let data = self
            .api(&format!("query?query={}", percent_encode(promql)))
            .await?;
        let sample = |v: &Value| v[1].as_str().unwrap_or("?").to_owned();
        match data["resultType"].as_str() {
            Some("vector") => Ok(data["result"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| (s["metric"].clone(), sample(&s["value"])))
                .collect()),
            Some("scalar") => Ok(vec![(json!({}), sample(&data["result"]))]),
            other => Err(format!("unexpected result type {other:?}: {data}")),
        }
    }

    /// Wait until `promql` has a non-empty result.
    async fn wait_for(&self, promql: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self.query(promql).await.is_ok_and(|r| !r.is_empty()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no result for {promql} within {within:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encode everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            write!(out, "%{b:02X}").unwrap();
        }
    }
    out
}

/// `GET path`: the status and the body.
async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let r = http::get(addr, path, Duration::from_secs(5)).await?;
    Ok((r.status, r.text()))
}

// --- the dashboard ---------------------------------------------------------------------------

/// `expr` with Grafana's variables replaced as Grafana would for this `switch` value and a
/// dashboard showing the last 30 s at a 1 s interval.
fn substitute(expr: &str, switch: &str) -> String {
    let values = [
        ("__rate_interval", RATE_INTERVAL),
        ("__interval_ms", "1000"),
        ("__interval", "1s"),
        ("__range_s", "30"),
        ("__range", "30s"),
        ("switch", switch),
    ];
    observability::substitute(expr, &values)
}

/// A variable (`$name`, `${name}`) left after substitution.
fn leftover_variable(promql: &str) -> bool {
    promql.match_indices('$').any(|(i, _)| {
        promql[i + 1..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '{')
    })
}

/// `(metric, label)` of the `switch` variable's `label_values(metric, label)` query.
fn switch_variable_query(dashboard: &Value) -> (String, String) {
    let variable = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .find(|v| v["name"] == "switch")
        .expect("a `switch` template variable");
    let query = variable["query"]
        .as_str()
        .or_else(|| variable["query"]["query"].as_str())
        .or_else(|| variable["definition"].as_str())
        .expect("the switch variable's query");
    let inner = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| {
            panic!("switch variable: expected label_values(metric, label): {query}")
        });
    let (metric, label) = inner.rsplit_once(',').unwrap_or_else(|| {
        panic!("switch variable: expected label_values(metric, label): {query}")
    });
    (metric.trim().to_owned(), label.trim().to_owned())
}

// --- the rules -------------------------------------------------------------------------------

/// The rule files of `config/prometheus/rules/`, absolute, sorted.
fn rule_files() -> Vec<PathBuf> {
    yaml_files(&repo("config/prometheus/rules"))
}

/// The names after `- record:` and `- alert:` in the rule files.
fn rule_names(files: &[PathBuf]) -> (Vec<String>, Vec<String>) {
    let (mut records, mut alerts) = (Vec::new(), Vec::new());
    for file in files {
        for line in fs::read_to_string(file).unwrap().lines() {
            let line = line.trim();
            let name = |rest: &str| rest.trim().trim_matches(['"', '\'']).to_owned();
            if let Some(rest) = line.strip_prefix("- record:") {
                records.push(name(rest));
            } else if let Some(rest) = line.strip_prefix("- alert:") {
                alerts.push(name(rest));
            }
        }
    }
    (records, alerts)
}

/// Whether a recording rule keeps the `switch` label: its level (the part of
/// `level:metric:operations` before the first colon) names the labels kept.
fn per_switch(record: &str) -> bool {
    record
        .split(':')
        .next()
        .is_some_and(|level| level.split('_').any(|l| l == "switch"))
}

/// Whether a query or a recording rule's name uses a metric that only a cluster node exports.
fn uses_cluster_metrics(text: &str) -> bool {
    csta_router::metrics::CLUSTER_METRICS
        .iter()
        .any(|m| text.contains(m.trim_end_matches("_total")))
}

/// What is wrong with the result of a query on cluster metrics from a router without
/// `[cluster]`: anything at all.
fn cluster_result_problem(result: &[(Value, String)]) -> Option<String> {
    (!result.is_empty())
        .then(|| format!("a router without [cluster] exports cluster series: {result:?}"))
}

/// What is wrong with a query result: empty, or a NaN/infinite value.
fn result_problem(result: &[(Value, String)]) -> Option<String> {
    if result.is_empty() {
        return Some("empty result".into());
    }
    let bad: Vec<String> = result
        .iter()
        .filter(|(_, v)| !v.parse::<f64>().is_ok_and(f64::is_finite))
        .map(|(labels, v)| format!("{labels} = {v}"))
        .collect();
    (!bad.is_empty()).then(|| format!("non-finite values: {}", bad.join("; ")))
}

// --- the traffic -----------------------------------------------------------------------------

static NEXT_REF: AtomicU64 = AtomicU64::new(1_000_000);

/// Send a request with a fresh `referenceId` and return its reply, skipping the events that
/// arrive in between (hot-desk and account-code events, link events of either switch).
async fn call(c: &mut Client, mut request: Value) -> Value {
    let id = NEXT_REF.fetch_add(1, Ordering::Relaxed);
    request["referenceId"] = json!(id);
    c.send(&request).await;
    loop {
        let m = c.recv().await;
        if m["referenceId"] == json!(id) {
            return m;
        }
    }
}

/// A client that has sent `RequestOpen`.
async fn open(url: &str, application: &str) -> Client {
    let mut c = Client::connect(url).await;
    let reply = call(
        &mut c,
        json!({"message": "RequestOpen", "protocolVersion": 1, "application": application}),
    )
    .await;
    assert_eq!(reply["message"], "EventServerConnected", "{reply}");
    c
}

async fn register(c: &mut Client, dn: &str) {
    let reply = call(
        c,
        json!({"message": "RequestRegisterAddress", "thisDn": dn}),
    )
    .await;
    assert_eq!(
        reply["message"], "EventRegistered",
        "register {dn}: {reply}"
    );
}

async fn unregister(c: &mut Client, dn: &str) {
    let reply = call(
        c,
        json!({"message": "RequestUnregisterAddress", "thisDn": dn}),
    )
    .await;
    assert_eq!(
        reply["message"], "EventUnregistered",
        "unregister {dn}: {reply}"
    );
}

/// Wait until the router has seen the switch's events of a new call at `dn` (the account code
/// applies to the device's most recent active call).
async fn wait_for_call(c: &mut Client, dn: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let info = call(c, json!({"message": "RequestQueryAddress", "thisDn": dn})).await;
        if info["calls"]
            .as_array()
            .is_some_and(|calls| !calls.is_empty())
        {
            return;
        }
        assert!(Instant::now() < deadline, "no active call at {dn}: {info}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Read whatever has arrived for a client that only listens.
async fn drain(c: &mut Client) {
    while c.next(Duration::from_millis(1)).await.is_some() {}
}

/// Outcomes of one switch's private-service requests: "<operation> <ok|code>" → count.
type Outcomes = BTreeMap<String, u32>;

/// A private service on `dn`; the outcome is counted.
async fn private(c: &mut Client, out: &mut Outcomes, op: &str, dn: &str, id: u32, ext: Value) {
    let reply = call(
        c,
        json!({"message": "RequestPrivateService", "thisDn": dn, "privateMsgId": id, "extensions": ext}),
    )
    .await;
    let result = match reply["message"].as_str() {
        Some("EventPrivateInfo") => "ok".to_owned(),
        Some("EventError") => reply["errorCode"].to_string(),
        _ => panic!("{op} on {dn}: unexpected reply {reply}"),
    };
    *out.entry(format!("{op} {result}")).or_default() += 1;
}

/// A few seconds of traffic on one switch: guests from `guest0`, hosts from `host0`.
///
/// Client A (a desktop) does the work; client B (a supervisor) has every host registered and
/// receives their events; client C comes, registers and leaves (a "closed" disconnect). Each
/// round uses a fresh guest, so it starts a monitor (MonitorStart) and stops it (MonitorStop),
/// associates (ok, then 42), sets an account code on a call (AssociateData), cancels (ok, then
/// 43), and lets the phone hot-desk (events only). Once per switch: a late answer (57, then the
/// answer after the timeout), a decode error, a failover to the second link, and client C.
async fn drive(
    url: String,
    sim: SimControl,
    switch: &'static str,
    guest0: u32,
    host0: u32,
) -> Outcomes {
    let mut out = Outcomes::new();
    let mut a = open(&url, "desktop").await;
    let mut b = open(&url, "supervisor").await;
    for r in 0..ROUNDS {
        register(&mut b, &(host0 + r).to_string()).await;
    }
    for r in 0..ROUNDS {
        let (g, h) = ((guest0 + r).to_string(), (host0 + r).to_string());
        let other_host = (host0 + (r + 1) % ROUNDS).to_string();
        register(&mut a, &g).await;
        if r == 1 {
            // A late answer: the switch answers after request-timeout (300 ms): 57, and the
            // answer is counted as late when it comes.
            sim.post_ok("/faults/delay", json!({"ms": 450})).await;
            private(&mut a, &mut out, "cancel", &g, 2, json!({})).await;
            sim.post_ok("/faults/delay", json!({"ms": 0})).await;
        }
        private(&mut a, &mut out, "associate", &g, 1, json!({"HOST_DN": h})).await;
        // The guest is seated already: the switch refuses (42).
        private(
            &mut a,
            &mut out,
            "associate",
            &g,
            1,
            json!({"HOST_DN": other_host}),
        )
        .await;
        let call_reply = sim.post_ok("/calls", json!({"from": g, "to": h})).await;
        let call_id = call_reply["callId"].as_str().unwrap().to_owned();
        wait_for_call(&mut a, &g).await;
        private(
            &mut a,
            &mut out,
            "accode",
            &g,
            501,
            json!({"AccountCode": format!("{}", 1000 + r)}),
        )
        .await;
        sim.post_ok(&format!("/calls/{call_id}/clear"), json!({}))
            .await;
        private(&mut a, &mut out, "cancel", &g, 2, json!({})).await;
        // No association any more: the switch refuses (43).
        private(&mut a, &mut out, "cancel", &g, 2, json!({})).await;
        // Hot-desking from the phone: events only.
        sim.post_ok("/hotdesk", json!({"guest": g, "host": h}))
            .await;
        sim.post_ok("/hotdesk/cancel", json!({"guest": g})).await;
        if r % 3 == 0 {
            sim.post_ok("/burst", json!({"guest": g, "host": h, "count": 5}))
                .await;
        }
        match r {
            2 => {
                // A frame with a valid header and broken XML: a decode error.
                sim.post_ok("/faults/garbage", json!({"kind": "xml"})).await;
            }
            3 => {
                // Failover: link 0 goes down, link 1 (standby) takes over; link 0 comes back
                // as the standby (a reconnect).
                sim.post_ok("/faults/link", json!({"link": 0, "up": false}))
                    .await;
                loop {
                    let m = a.recv().await;
                    if m["message"] == "EventLinkConnected" && m["switch"] == switch {
                        break;
                    }
                }
                sim.post_ok("/faults/link", json!({"link": 0, "up": true}))
                    .await;
            }
            4 => {
                let mut c = open(&url, "visitor").await;
                register(&mut c, &(guest0 + 50).to_string()).await;
                c.ws.close(None).await.unwrap();
            }
            _ => {}
        }
        unregister(&mut a, &g).await;
        drain(&mut b).await;
        tokio::time::sleep(ROUND_GAP).await;
    }
    drain(&mut a).await;
    drain(&mut b).await;
    out
}

// --- the test --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_queries_and_rules_hold_on_a_live_prometheus() {
    let started = Instant::now();
    let prometheus_bin = tool("prometheus", "PROMETHEUS");
    let promtool = tool("promtool", "PROMTOOL");
    let dashboard = dashboard();
    let queries = all_queries(&dashboard);
    assert!(!queries.is_empty(), "the dashboard has no queries");
    let files = rule_files();
    let (records, alerts) = rule_names(&files);
    assert!(!records.is_empty(), "no recording rules in {files:?}");
    let mut failures: Vec<String> = Vec::new();

    // Every substituted query, for each switch and for "All", checked by promtool as recording
    // rules of one file.
    let selections: Vec<&str> = SWITCHES.iter().copied().chain([".*"]).collect();
    let mut substituted: Vec<(String, &str, String)> = Vec::new(); // (where, switch, promql)
    for switch in &selections {
        for (at, expr) in &queries {
            let promql = substitute(expr, switch);
            if leftover_variable(&promql) {
                failures.push(format!(
                    "{at} ($switch={switch}): unknown variable left in {promql}"
                ));
            }
            substituted.push((at.clone(), switch, promql));
        }
    }
    let distinct: BTreeSet<&str> = substituted.iter().map(|(_, _, q)| q.as_str()).collect();
    let check_dir = process::files_in("csta-router-prometheus-live-promtool-", &[]);
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut index = String::new();
    for (n, promql) in distinct.iter().enumerate() {
        let quoted = serde_json::to_string(promql).unwrap();
        write!(
            rules,
            "      - record: dashboard_query_{n}\n        expr: {quoted}\n"
        )
        .unwrap();
        writeln!(index, "  dashboard_query_{n}: {promql}").unwrap();
    }
    let rules_path = check_dir.path().join("dashboard_queries.yml");
    fs::write(&rules_path, &rules).unwrap();
    let checked = Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(&rules_path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    if !checked.status.success() || !output.contains(&format!("{} rules found", distinct.len())) {
        failures.push(format!(
            "promtool check rules rejects dashboard queries:\n{output}\nqueries:\n{index}"
        ));
    }

    // The router, then Prometheus scraping it and evaluating the repository's rules.
    let router = RouterProcess::start("prometheus-live", &config());
    router.wait_connected(&SWITCHES).await;
    let mut prom = Prometheus::start(&prometheus_bin, router.metrics, &files);
    prom.wait_ready().await;
    // A first scrape before the traffic: rates and changes() start from the idle state. This
    // takes about 5 s: Prometheus hands new targets to its scrape manager on a 5 s tick
    // (not configurable in 2.42), so there is no point in starting it any earlier.
    prom.wait_for("up{job=\"csta-router\"} == 1", Duration::from_secs(20))
        .await;
    let traffic_started = Instant::now();

    let url = router.url();
    let sims = &router.controls;
    let (out1, out2) = tokio::join!(
        drive(url.clone(), sims[0], "sw1", 5001, 4001),
        drive(url.clone(), sims[1], "sw2", 7001, 6001),
    );
    let traffic = traffic_started.elapsed();
    // The script did what it meant to (else the checks below would prove less).
    for (switch, out) in [("sw1", &out1), ("sw2", &out2)] {
        for wanted in [
            "associate ok",
            "associate 42",
            "cancel ok",
            "cancel 43",
            "cancel 57",
            "accode ok",
        ] {
            if !out.contains_key(wanted) {
                failures.push(format!(
                    "traffic on {switch}: no \"{wanted}\" outcome (outcomes: {out:?})"
                ));
            }
        }
    }
    tokio::time::sleep(SETTLE).await;

    // 1. The switch variable lists the configured switches.
    let (metric, label) = switch_variable_query(&dashboard);
    match prom
        .api(&format!(
            "label/{label}/values?match[]={}",
            percent_encode(&metric)
        ))
        .await
    {
        Ok(values) => {
            let values: Vec<&str> = values
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if values != SWITCHES {
                failures.push(format!(
                    "variable switch = label_values({metric}, {label}): {values:?}, expected {SWITCHES:?}"
                ));
            }
        }
        Err(e) => failures.push(format!(
            "variable switch = label_values({metric}, {label}): {e}"
        )),
    }

    // 2. Every dashboard query, for each switch and for "All".
    for (at, switch, promql) in &substituted {
        let problem = match prom.query(promql).await {
            Err(e) => Some(e),
            Ok(result) if uses_cluster_metrics(promql) => cluster_result_problem(&result),
            Ok(result) => result_problem(&result).or_else(|| {
                // With `switch` in its labels, the result is the selected switch's only
                // (errors not tied to a switch are shown as "(none)" or "").
                let switches: BTreeSet<&str> = result
                    .iter()
                    .filter_map(|(labels, _)| labels["switch"].as_str())
                    .filter(|s| !s.is_empty() && *s != "(none)")
                    .collect();
                let expected: BTreeSet<&str> = if *switch == ".*" {
                    SWITCHES.into_iter().collect()
                } else {
                    BTreeSet::from([*switch])
                };
                let has_switch_label = result.iter().any(|(l, _)| l.get("switch").is_some());
                (has_switch_label && switches != expected)
                    .then(|| format!("series for switches {switches:?}, expected {expected:?}"))
            }),
        };
        if let Some(problem) = problem {
            failures.push(format!("{at} ($switch={switch}): {problem}\n    {promql}"));
        }
    }

    // 3. The rules: all loaded and healthy, and every recording rule has a finite result per
    // switch. Their windows are 5m; with ~10 s of data rate() and histogram_quantile() evaluate
    // over what exists, and the traffic exercised every series they aggregate (every request
    // type, both hot-desk operations, errors and successes), so none has an excuse to be empty
    // or NaN here: the error and failure ratios are NaN only on a switch without any
    // private-service request in 5m, and the traffic has some on both.
    match prom.api("rules").await {
        Ok(data) => {
            let mut loaded = (Vec::new(), Vec::new());
            for group in data["groups"].as_array().into_iter().flatten() {
                for rule in group["rules"].as_array().into_iter().flatten() {
                    let name = rule["name"].as_str().unwrap_or("?").to_owned();
                    if rule["health"] != "ok" {
                        failures.push(format!(
                            "rule {name} (group {}): health {}, last error {}",
                            group["name"], rule["health"], rule["lastError"]
                        ));
                    }
                    match rule["type"].as_str() {
                        Some("recording") => loaded.0.push(name),
                        _ => loaded.1.push(name),
                    }
                }
            }
            if loaded != (records.clone(), alerts.clone()) {
                failures.push(format!(
                    "prometheus loaded recording rules {:?} and alerts {:?}; the files have {records:?} and {alerts:?}",
                    loaded.0, loaded.1
                ));
            }
        }
        Err(e) => failures.push(format!("GET /api/v1/rules: {e}")),
    }
    for record in &records {
        let checks: Vec<(String, String)> = if per_switch(record) {
            SWITCHES
                .iter()
                .map(|s| (format!("{record}{{switch=\"{s}\"}}"), format!("switch {s}")))
                .collect()
        } else {
            vec![(record.clone(), "all".to_owned())]
        };
        for (promql, scope) in checks {
            let problem = match prom.query(&promql).await {
                Err(e) => Some(e),
                Ok(result) if uses_cluster_metrics(record) => cluster_result_problem(&result),
                Ok(result) => result_problem(&result),
            };
            if let Some(problem) = problem {
                failures.push(format!("recording rule {record} ({scope}): {problem}"));
            }
        }
    }

    // 4. Alerts that follow from the traffic: decode errors on both switches (no `for`, so
    // firing at once); the router is up and scraped, and each switch kept an active link across
    // the failover (a scrape may catch the instant between the two links: pending at most).
    match prom.api("alerts").await {
        Ok(data) => {
            let active: Vec<(String, String, String)> = data["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| {
                    let get = |v: &Value| v.as_str().unwrap_or("").to_owned();
                    (
                        get(&a["labels"]["alertname"]),
                        get(&a["labels"]["switch"]),
                        get(&a["state"]),
                    )
                })
                .collect();
            for switch in SWITCHES {
                let firing = active.iter().any(|(name, s, state)| {
                    name == "CstaRouterCstaDecodeErrors" && s == switch && state == "firing"
                });
                if !firing {
                    failures.push(format!(
                        "alert CstaRouterCstaDecodeErrors is not firing for {switch} after a decode error (active: {active:?})"
                    ));
                }
            }
            for (name, switch, state) in &active {
                if state == "firing"
                    && [
                        "CstaRouterTargetDown",
                        "CstaRouterTargetMissing",
                        "CstaRouterSwitchNoActiveLink",
                        "CstaRouterSwitchWithoutOwner",
                        "CstaRouterSwitchOwnedTwice",
                        "CstaRouterNodeWithoutNats",
                        "CstaRouterClusterConfigMismatch",
                        "CstaRouterFlowGapsUnrepaired",
                        "CstaRouterResumeGaps",
                        "CstaRouterResumesRefused",
                    ]
                    .contains(&name.as_str())
                {
                    failures.push(format!("alert {name} is firing (switch {switch:?})"));
                }
            }
        }
        Err(e) => failures.push(format!("GET /api/v1/alerts: {e}")),
    }

    let checked_at = started.elapsed();
    assert!(
        failures.is_empty(),
        "{} check(s) failed ({} dashboard queries x {} selections, {} recording rules; traffic {traffic:?}, {checked_at:?} in all):\n\n{}\n\nsw1 outcomes: {out1:?}\nsw2 outcomes: {out2:?}",
        failures.len(),
        queries.len(),
        selections.len(),
        records.len(),
        failures.join("\n\n")
    );
    drop(prom);
    router.stop();
    eprintln!(
        "{} dashboard queries x {} selections and {} recording rules checked on a live Prometheus in {:?} (traffic {traffic:?})",
        queries.len(),
        selections.len(),
        records.len(),
        started.elapsed()
    );
}
