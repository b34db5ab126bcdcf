#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The operator-facing observability assets (SPEC sections 7 and 10), checked without a router:
//!
//! - `config/prometheus/`: the scrape configuration, the recording and alerting rules and their
//!   `promtool test rules` unit tests;
//! - `grafana/`: the dashboard (data-source variable, `switch` variable, units, queries that
//!   are valid PromQL once Grafana's variables are substituted) and the provisioning files.
//!
//! These tests need `promtool`, from Debian's `prometheus` package (`bash .ci/run` installs it
//! when it is missing). Without it they fail; `PROMTOOL=/path/to/promtool` picks another one.

mod common;
use common::observability::{
    self, all_panels, all_queries, dashboard, promtool, promtool_ok, read, repo, yaml_files,
};
use common::spec;

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::PathBuf;

/// The scrape job the alerts (`up{job=...}`) expect.
const JOB: &str = "csta-router";

/// Every metric the router exports: SPEC section 7's, the router's own additions, a cluster
/// node's (SPEC section 10) and the resumable sessions' (SPEC section 11). Each is shown on the
/// dashboard.
fn metrics() -> Vec<&'static str> {
    use csta_router::metrics::*;
    let own = [
        CSTA_EVENTS_RECEIVED,
        INVOKE_IDS_RESERVED,
        LINK_QUEUE_FRAMES,
        LINK_READ_PAUSES,
        CALLS_EVICTED,
        CONFIG_RELOADS,
        CONFIG_GENERATION,
        CONFIG_LAST_RELOAD_OK,
    ];
    spec::METRICS
        .into_iter()
        .chain(own)
        .chain(CLUSTER_METRICS)
        .chain(spec::SESSION_METRICS)
        .collect()
}

/// The metrics that have no `switch` label (every other query filters on `$switch`).
const NOT_PER_SWITCH: [&str; 10] = [
    "csta_router_clients_connected",
    "csta_router_client_disconnects_total",
    spec::SESSION_METRICS[0],
    spec::SESSION_METRICS[1],
    spec::SESSION_METRICS[2],
    csta_router::metrics::CLUSTER_NODES,
    csta_router::metrics::NATS_CONNECTED,
    csta_router::metrics::CONFIG_RELOADS,
    csta_router::metrics::CONFIG_GENERATION,
    csta_router::metrics::CONFIG_LAST_RELOAD_OK,
];

/// The alerts an operator needs at least (SPEC section 7: link health, error rates, latency,
/// slow consumers; section 10: a switch without an owner, a node without NATS; section 11:
/// desktops that resumed but missed events, resumes of other applications' sessions).
const REQUIRED_ALERTS: [&str; 11] = [
    "CstaRouterTargetDown",
    "CstaRouterTargetMissing",
    "CstaRouterSwitchNoActiveLink",
    "CstaRouterPrivateServiceErrorsHigh",
    "CstaRouterAssociationLatencyHigh",
    "CstaRouterSlowConsumerDisconnects",
    "CstaRouterSwitchWithoutOwner",
    "CstaRouterNodeWithoutNats",
    "CstaRouterResumeGaps",
    "CstaRouterResumesRefused",
    "CstaRouterConfigReloadRejected",
];

fn prometheus_dir() -> PathBuf {
    repo("config/prometheus")
}

// ---------------------------------------------------------------------------------------------
// Prometheus: configuration, rules, rule unit tests
// ---------------------------------------------------------------------------------------------

#[test]
fn prometheus_config_is_valid_and_loads_every_rule_file() {
    let config = prometheus_dir().join("prometheus.yml");
    // Also loads and checks the rule files, resolved relative to the configuration.
    let args = [
        OsStr::new("check"),
        OsStr::new("config"),
        config.as_os_str(),
    ];
    let out = promtool_ok(&args, "");

    let text = read(&config);
    for rules in yaml_files(&prometheus_dir().join("rules")) {
        let name = rules.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            text.contains(&format!("rules/{name}")),
            "prometheus.yml does not load rules/{name}"
        );
        assert!(out.contains(&name), "promtool did not check {name}:\n{out}");
    }
    assert!(
        text.contains(&format!("job_name: {JOB}")),
        "prometheus.yml has no scrape job {JOB:?} (the alerts use up{{job=\"{JOB}\"}})"
    );
    assert!(
        text.contains("127.0.0.1:9464"),
        "prometheus.yml does not scrape the default metrics-listen address"
    );
}

#[test]
fn rule_files_are_valid() {
    let files = yaml_files(&prometheus_dir().join("rules"));
    let names: Vec<_> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&"recording.yml".to_owned()), "{names:?}");
    assert!(names.contains(&"alerts.yml".to_owned()), "{names:?}");

    let mut args: Vec<OsString> = vec!["check".into(), "rules".into()];
    args.extend(files.iter().map(|p| p.clone().into_os_string()));
    promtool_ok(&args, "");
}

#[test]
fn rule_unit_tests_pass() {
    let files = yaml_files(&prometheus_dir().join("tests"));
    let mut args: Vec<OsString> = vec!["test".into(), "rules".into()];
    args.extend(files.iter().map(|p| p.clone().into_os_string()));
    promtool_ok(&args, "");
}

/// The value of a `key: value` line (trimmed, quotes removed), if `line` is one.
fn yaml_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line
        .trim_start()
        .strip_prefix("- ")
        .unwrap_or(line.trim_start());
    let value = rest.strip_prefix(key)?.strip_prefix(':')?;
    Some(value.trim().trim_matches(|c| c == '"' || c == '\''))
}

#[test]
fn every_alert_has_severity_actionable_annotations_and_unit_tests() {
    let alerts_text = read(&prometheus_dir().join("rules").join("alerts.yml"));

    // Split alerts.yml into one block of lines per alert.
    let mut alerts: Vec<(String, Vec<&str>)> = Vec::new();
    for line in alerts_text.lines() {
        if let Some(name) = yaml_value(line, "alert") {
            alerts.push((name.to_owned(), Vec::new()));
        } else if yaml_value(line, "record").is_some() || yaml_value(line, "name").is_some() {
            alerts.push((String::new(), Vec::new()));
        } else if let Some((_, block)) = alerts.last_mut() {
            block.push(line);
        }
    }
    alerts.retain(|(name, _)| !name.is_empty());
    let names: BTreeSet<&str> = alerts.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names.len(),
        alerts.len(),
        "duplicate alert names: {names:?}"
    );
    for required in REQUIRED_ALERTS {
        assert!(names.contains(required), "alert {required} is missing");
    }

    for (name, block) in &alerts {
        let severity = block.iter().find_map(|l| yaml_value(l, "severity"));
        assert!(
            matches!(severity, Some("critical" | "warning" | "info")),
            "{name}: severity label critical, warning or info expected, got {severity:?}"
        );
        for key in ["summary", "description"] {
            let start = block
                .iter()
                .position(|l| yaml_value(l, key).is_some())
                .unwrap_or_else(|| panic!("{name}: no {key} annotation"));
            // The annotation's text: its line and the more-indented lines after it.
            let indent = block[start].len() - block[start].trim_start().len();
            let mut text = yaml_value(block[start], key).unwrap().to_owned();
            for l in &block[start + 1..] {
                if l.trim().is_empty() || l.len() - l.trim_start().len() <= indent {
                    break;
                }
                text.push(' ');
                text.push_str(l.trim());
            }
            let text = text.trim_start_matches(">-").trim_start_matches('|').trim();
            let minimum = if key == "summary" { 15 } else { 150 };
            assert!(
                text.len() >= minimum,
                "{name}: the {key} is too short to act on: {text:?}"
            );
        }
    }

    // Every alert is tested both ways: some evaluation expects it to fire, another expects
    // silence.
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for file in yaml_files(&prometheus_dir().join("tests")) {
        let mut current: Option<String> = None;
        for line in read(&file).lines() {
            if let Some(name) = yaml_value(line, "alertname") {
                current = Some(name.to_owned());
            } else if let Some(value) = yaml_value(line, "exp_alerts") {
                let name = current.clone().unwrap_or_default();
                if value == "[]" {
                    quiet.insert(name);
                } else {
                    fires.insert(name);
                }
            }
        }
    }
    for name in &names {
        assert!(fires.contains(*name), "no unit test expects {name} to fire");
        assert!(
            quiet.contains(*name),
            "no unit test expects {name} to stay quiet"
        );
    }
    for tested in fires.iter().chain(&quiet) {
        assert!(
            names.contains(tested.as_str()),
            "the unit tests name an unknown alert {tested:?}"
        );
    }

    assert!(
        alerts_text.contains(&format!("up{{job=\"{JOB}\"}}")),
        "the target alerts must select job {JOB:?}, the scrape job of prometheus.yml"
    );
}

/// The cluster's alerts are about several nodes at once: each is unit-tested firing on a
/// metric that three nodes (three `instance`s) report — for a switch's alert, three nodes'
/// series of the switch that fires — so that a rule looking at one node's series alone, or
/// summing over the wrong labels, is caught.
#[test]
fn cluster_alerts_are_tested_over_three_nodes() {
    let text = read(&prometheus_dir().join("tests").join("alerts_test.yml"));
    // One block of lines per test group.
    let mut groups: Vec<Vec<&str>> = Vec::new();
    for line in text.lines() {
        if line.starts_with("  - name:") {
            groups.push(Vec::new());
        }
        if let Some(group) = groups.last_mut() {
            group.push(line);
        }
    }
    for (alert, metric) in [
        ("CstaRouterSwitchWithoutOwner", "csta_router_switch_owned{"),
        ("CstaRouterSwitchOwnedTwice", "csta_router_switch_owned{"),
        ("CstaRouterNodeWithoutNats", "csta_router_nats_connected{"),
    ] {
        let tested_on_three = groups.iter().any(|group| {
            // The switches it is expected to fire for ("" for a node's alert).
            let mut current = None;
            let mut firing = false;
            let mut switches = BTreeSet::new();
            for l in group {
                if let Some(name) = yaml_value(l, "alertname") {
                    current = Some(name);
                    firing = false;
                } else if let Some(value) = yaml_value(l, "exp_alerts") {
                    firing = current == Some(alert) && value != "[]";
                    if firing && !metric.contains("switch") {
                        switches.insert(String::new());
                    }
                } else if let Some(switch) = yaml_value(l, "switch").filter(|_| firing) {
                    switches.insert(format!("switch=\"{switch}\""));
                }
            }
            switches.iter().any(|switch| {
                let instances: BTreeSet<&str> = group
                    .iter()
                    .filter(|l| l.contains(metric) && l.contains(switch.as_str()))
                    .filter_map(|l| l.split("instance=\"").nth(1)?.split('"').next())
                    .collect();
                instances.len() >= 3
            })
        });
        assert!(
            tested_on_three,
            "no unit test of alerts_test.yml expects {alert} to fire on {metric}...}} series of three nodes"
        );
    }
}

#[test]
fn recording_rules_are_named_level_metric_operations() {
    let text = read(&prometheus_dir().join("rules").join("recording.yml"));
    let records: Vec<&str> = text
        .lines()
        .filter_map(|l| yaml_value(l, "record"))
        .collect();
    assert!(!records.is_empty(), "recording.yml records nothing");
    let unique: BTreeSet<_> = records.iter().collect();
    assert_eq!(
        unique.len(),
        records.len(),
        "duplicate records: {records:?}"
    );
    for record in records {
        let parts: Vec<&str> = record.split(':').collect();
        assert!(
            parts.len() == 3 && parts.iter().all(|p| !p.is_empty()),
            "{record}: expected level:metric:operations"
        );
        assert!(
            parts[1].starts_with("csta_router_") && !parts[1].ends_with("_total"),
            "{record}: the metric part is the csta_router_ metric without _total"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Grafana: dashboard and provisioning
// ---------------------------------------------------------------------------------------------

/// The data source every panel, target, variable and annotation must use.
fn datasource_variable() -> Value {
    json!({"type": "prometheus", "uid": "${datasource}"})
}

/// Every `"datasource"` value anywhere in the JSON, with where it was found.
fn all_datasources<'a>(value: &'a Value, at: String, out: &mut Vec<(String, &'a Value)>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if key == "datasource" {
                    out.push((at.clone(), v));
                }
                all_datasources(v, format!("{at}.{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                all_datasources(v, format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn variable<'a>(dashboard: &'a Value, name: &str) -> &'a Value {
    dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no template variable {name:?}"))
}

#[test]
fn dashboard_has_fixed_uid_variables_units_and_only_the_datasource_variable() {
    let dashboard = dashboard();
    assert_eq!(
        dashboard["uid"], "csta-router",
        "the dashboard uid is fixed"
    );
    assert!(
        dashboard["title"].as_str().is_some_and(|t| !t.is_empty()),
        "the dashboard has a title"
    );
    assert!(
        dashboard["id"].is_null(),
        "a provisioned dashboard carries no database id"
    );

    let ds = variable(&dashboard, "datasource");
    assert_eq!(ds["type"], "datasource", "{ds}");
    assert_eq!(ds["query"], "prometheus", "{ds}");

    let switch = variable(&dashboard, "switch");
    assert_eq!(switch["type"], "query", "{switch}");
    let query = switch["query"]
        .as_str()
        .or_else(|| switch["query"]["query"].as_str());
    assert_eq!(
        query,
        Some("label_values(csta_router_link_up, switch)"),
        "{switch}"
    );
    assert_eq!(switch["multi"], true, "{switch}");
    assert_eq!(switch["includeAll"], true, "{switch}");

    // No hard-coded data source anywhere: panels, targets, variables, annotations.
    let mut found = Vec::new();
    all_datasources(&dashboard, String::from("$"), &mut found);
    assert!(!found.is_empty());
    for (at, value) in &found {
        assert_eq!(
            *value,
            &datasource_variable(),
            "{at}: data source other than the ${{datasource}} variable"
        );
    }

    let panels = all_panels(&dashboard);
    let mut ids = BTreeSet::new();
    let mut data_panels = 0;
    for panel in &panels {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "a panel without a title: {panel}");
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("{title}: no id"));
        assert!(ids.insert(id), "{title}: duplicate panel id {id}");
        for key in ["x", "y", "w", "h"] {
            assert!(
                panel["gridPos"][key].is_u64(),
                "{title}: gridPos.{key} missing"
            );
        }
        if panel["type"] == "row" {
            continue;
        }
        data_panels += 1;
        assert_eq!(
            panel["datasource"],
            datasource_variable(),
            "{title}: panel data source"
        );
        let unit = panel["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .unwrap_or_default();
        assert!(
            !unit.is_empty(),
            "{title}: no unit (fieldConfig.defaults.unit)"
        );
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        assert!(!targets.is_empty(), "{title}: no query");
        let mut ref_ids = BTreeSet::new();
        for target in targets {
            assert_eq!(
                target["datasource"],
                datasource_variable(),
                "{title}: target data source"
            );
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(!expr.trim().is_empty(), "{title}: a target without expr");
            let ref_id = target["refId"].as_str().unwrap_or_default();
            assert!(
                !ref_id.is_empty() && ref_ids.insert(ref_id),
                "{title}: missing or duplicate refId {ref_id:?}"
            );
        }
    }
    assert!(data_panels >= 12, "only {data_panels} panels with data");

    let queries = all_queries(&dashboard);
    let metrics = metrics();
    for metric in &metrics {
        assert!(
            queries.iter().any(|(_, q)| q.contains(metric)),
            "no panel shows {metric}"
        );
    }
    for (at, expr) in &queries {
        assert!(!expr.contains("datasource"), "{at}: {expr}");
        let per_switch = metrics
            .iter()
            .filter(|m| !NOT_PER_SWITCH.contains(m))
            .any(|m| expr.contains(m));
        assert!(
            !per_switch || expr.contains("$switch"),
            "{at}: per-switch query without the $switch filter: {expr}"
        );
        // Rate windows follow the time range and the scrape interval.
        for (i, _) in expr.match_indices('[') {
            assert!(
                expr[i..].starts_with("[$__rate_interval]") || at.starts_with("annotation"),
                "{at}: range other than [$__rate_interval]: {expr}"
            );
        }
    }
}

/// The cluster metrics exist only on nodes with `[cluster]`: their panels are together in one
/// row of their own (so a single router's dashboard has no empty panels among the others), and
/// no other panel uses them.
#[test]
fn cluster_metrics_are_shown_in_the_cluster_row_only() {
    use csta_router::metrics::CLUSTER_METRICS;
    let dashboard = dashboard();
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut row = String::new();
    let mut in_cluster_row = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default();
        if panel["type"] == "row" {
            row = title.to_owned();
            assert!(
                panel["panels"].as_array().is_none_or(Vec::is_empty),
                "row {title:?}: a collapsed row hides its panels from this check"
            );
            continue;
        }
        let cluster = panel["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["expr"].as_str())
            .any(|e| CLUSTER_METRICS.iter().any(|m| e.contains(m)));
        let row_is_cluster = row.starts_with("Cluster");
        assert_eq!(
            cluster, row_is_cluster,
            "panel {title:?} in row {row:?}: cluster metrics belong in the Cluster row, and only they"
        );
        if cluster {
            in_cluster_row.push(title);
        }
    }
    for metric in CLUSTER_METRICS {
        assert!(
            panels
                .iter()
                .flat_map(|p| p["targets"].as_array().into_iter().flatten())
                .any(|t| t["expr"].as_str().is_some_and(|e| e.contains(metric))),
            "{metric} is on no panel of the Cluster row ({in_cluster_row:?})"
        );
    }
}

/// The resumable sessions' metrics (SPEC section 11) are about clients: their panels are in the
/// Clients row, next to connections and disconnects, where an operator looks after a wave of
/// reconnections; and the disconnects panel explains every `reason` the router exports.
#[test]
fn session_metrics_and_every_disconnect_reason_are_in_the_clients_row() {
    use csta_router::protocol::CloseCause;
    let dashboard = dashboard();
    let mut row = String::new();
    let mut shown = BTreeSet::new();
    let mut disconnects = None;
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or_default();
        if panel["type"] == "row" {
            row = title.to_owned();
            continue;
        }
        let exprs: Vec<&str> = panel["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["expr"].as_str())
            .collect();
        for metric in spec::SESSION_METRICS {
            if exprs.iter().any(|e| e.contains(metric)) {
                assert_eq!(
                    row, "Clients",
                    "panel {title:?} shows {metric} outside the Clients row"
                );
                shown.insert(metric);
            }
        }
        if exprs
            .iter()
            .any(|e| e.contains("csta_router_client_disconnects_total"))
        {
            disconnects = Some(panel["description"].as_str().unwrap_or_default());
        }
    }
    assert_eq!(
        shown.len(),
        spec::SESSION_METRICS.len(),
        "session metrics on the dashboard: {shown:?}"
    );
    let description = disconnects.expect("no panel shows client disconnects");
    for cause in CloseCause::ALL {
        assert!(
            description.contains(cause.label()),
            "the disconnects panel does not explain reason {:?}: {description}",
            cause.label()
        );
    }
}

/// `expr` with Grafana's variables replaced as Grafana would for one selected value (of a
/// dashboard showing the last 3 hours).
fn substitute(expr: &str, switch: &str) -> String {
    let values = [
        ("__rate_interval", "1m"),
        ("__interval_ms", "15000"),
        ("__interval", "15s"),
        ("__range", "3h"),
        ("switch", switch),
    ];
    observability::substitute(expr, &values)
}

#[test]
fn dashboard_queries_are_valid_promql_once_variables_are_substituted() {
    let queries = all_queries(&dashboard());
    assert!(!queries.is_empty());

    // One concrete switch, and the "All" value (allValue ".*").
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut index = Vec::new();
    for switch in ["sw1", ".*"] {
        for (at, expr) in &queries {
            let promql = substitute(expr, switch);
            let leftover = promql.match_indices('$').any(|(i, _)| {
                promql[i + 1..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '{')
            });
            assert!(!leftover, "{at}: unknown variable left in {promql}");
            let n = index.len();
            // A JSON string is a valid YAML double-quoted scalar.
            let quoted = serde_json::to_string(&promql).unwrap();
            rules.push_str(&format!(
                "      - record: dash_query_{n}\n        expr: {quoted}\n"
            ));
            index.push(format!("dash_query_{n}: {at}: {promql}"));
        }
    }

    let dir = tempfile::Builder::new()
        .prefix("csta-router-dashboard-queries-")
        .tempdir()
        .unwrap();
    let file = dir.path().join("dashboard_queries.yml");
    fs::write(&file, &rules).unwrap();
    let (ok, out) = promtool(
        &[OsStr::new("check"), OsStr::new("rules"), file.as_os_str()],
        "",
    );
    assert!(
        ok,
        "promtool rejects dashboard queries:\n{out}\nqueries:\n{}",
        index.join("\n")
    );
    assert!(
        out.contains(&format!("{} rules found", index.len())),
        "promtool did not check every query:\n{out}"
    );
}

#[test]
fn provisioning_files_point_at_prometheus_and_the_dashboards_folder() {
    let provisioning = repo("grafana/provisioning");

    let datasource = read(&provisioning.join("datasources").join("prometheus.yaml"));
    assert!(datasource.contains("apiVersion: 1"), "{datasource}");
    assert!(datasource.contains("type: prometheus"), "{datasource}");
    assert!(
        datasource.contains("url: ${PROMETHEUS_URL}"),
        "the data source URL comes from the environment:\n{datasource}"
    );
    // Grafana derives $__rate_interval from the scrape interval it is told about.
    let config = read(&prometheus_dir().join("prometheus.yml"));
    let scrape = config
        .lines()
        .find_map(|l| yaml_value(l, "scrape_interval"))
        .expect("prometheus.yml sets scrape_interval");
    assert!(
        datasource.contains(&format!("timeInterval: {scrape}")),
        "the data source's timeInterval should be the scrape interval {scrape}:\n{datasource}"
    );

    let dashboards = read(&provisioning.join("dashboards").join("csta-router.yaml"));
    assert!(dashboards.contains("apiVersion: 1"), "{dashboards}");
    assert!(dashboards.contains("type: file"), "{dashboards}");
    assert!(
        dashboards
            .lines()
            .any(|l| yaml_value(l, "path").is_some_and(|p| !p.is_empty())),
        "the dashboard provider has no path:\n{dashboards}"
    );
}
