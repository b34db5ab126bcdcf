//! The metrics of a cluster node (README, "Cluster"): live nodes, switch ownership and its
//! changes, NATS, requests forwarded to another node and gaps in the flows from the owners.
//!
//! None of them exists on a router without `[cluster]`: they are described like every other
//! metric, but a described metric is rendered only once it has a series, and series are made
//! only by [`init_cluster_labels`] and [`ClusterMetrics::new`], which the cluster calls when it
//! joins. So a single router's `/metrics` is what it was, and an alert on these metrics looks
//! only at clustered nodes.
//!
//! None has a `node` label: Prometheus's `instance` label tells the nodes apart, and every
//! node exports its own view (a switch's owner exports `csta_router_switch_owned` 1, the other
//! nodes 0).

use super::Kind;
use crate::protocol::ErrorCode;
use metrics::{Counter, Gauge, Histogram};
use std::sync::Arc;
use std::time::Duration;

/// Live nodes this node sees (its own presence included).
pub const CLUSTER_NODES: &str = "csta_router_cluster_nodes";
/// 1 on the node that owns the switch.
pub const SWITCH_OWNED: &str = "csta_router_switch_owned";
/// Switch ownership taken (or, `fenced`, given up), by reason.
pub const OWNERSHIP_CHANGES: &str = "csta_router_ownership_changes_total";
/// Client requests on a switch this node does not own, by result.
pub const FORWARDED_REQUESTS: &str = "csta_router_forwarded_requests_total";
/// Latency of forwarded requests as the client saw it.
pub const FORWARDED_REQUEST_SECONDS: &str = "csta_router_forwarded_request_seconds";
/// 1 while the node is connected to NATS.
pub const NATS_CONNECTED: &str = "csta_router_nats_connected";
/// Gaps in a flow from a switch's owner, by how they ended.
pub const FLOW_GAPS: &str = "csta_router_flow_gaps_total";
/// 1 for a switch whose definition differs between this node and another live node.
pub const CLUSTER_CONFIG_MISMATCH: &str = "csta_router_cluster_config_mismatch";

/// Every cluster metric: a router without `[cluster]` exports none of them.
pub const CLUSTER_METRICS: [&str; 8] = [
    CLUSTER_NODES,
    SWITCH_OWNED,
    OWNERSHIP_CHANGES,
    FORWARDED_REQUESTS,
    FORWARDED_REQUEST_SECONDS,
    NATS_CONNECTED,
    FLOW_GAPS,
    CLUSTER_CONFIG_MISMATCH,
];

/// The `result` values of [`FLOW_GAPS`]: the gap was filled from the event stream, or could
/// not be and the clients it concerned were closed with 1013.
pub const FLOW_GAP_RESULTS: [&str; 2] = ["repaired", "closed"];

/// Why a switch changed owner: the `reason` label of [`OWNERSHIP_CHANGES`]. Each change is
/// counted once in the cluster: by the node that takes the switch, except `Fenced`, counted by
/// the node that gives it up (its lease ran out before it could renew it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnershipReason {
    /// Taken while no node had owned it since the cluster started (or since the whole
    /// cluster was stopped).
    Start,
    /// Taken after its owner's lease expired: the owner died, paused or lost NATS.
    Failover,
    /// Taken in a planned hand-over that evens the spread of switches over the nodes.
    Rebalance,
    /// Given up: this node's lease aged past its fence deadline before a renew succeeded.
    Fenced,
    /// Taken after its owner handed it over because it was stopping (SIGTERM).
    Shutdown,
}

impl OwnershipReason {
    /// Every reason, exported at 0 so that `increase()` and alerts work before the first
    /// change.
    pub const ALL: [OwnershipReason; 5] = [
        OwnershipReason::Start,
        OwnershipReason::Failover,
        OwnershipReason::Rebalance,
        OwnershipReason::Fenced,
        OwnershipReason::Shutdown,
    ];

    /// The metrics label (also the word the ownership log line uses).
    pub fn label(self) -> &'static str {
        match self {
            OwnershipReason::Start => "start",
            OwnershipReason::Failover => "failover",
            OwnershipReason::Rebalance => "rebalance",
            OwnershipReason::Fenced => "fenced",
            OwnershipReason::Shutdown => "shutdown",
        }
    }
}

/// The cluster metrics' type and HELP text (merged with the other metrics' descriptions).
pub(super) const CLUSTER_DESCRIPTIONS: [(&str, Kind, &str); 8] = [
    (
        CLUSTER_NODES,
        Kind::Gauge,
        "Live router nodes of the cluster as this node sees them (their presence entries in NATS), itself included.",
    ),
    (
        SWITCH_OWNED,
        Kind::Gauge,
        "1 on the node that owns the switch (holds its lease and its CSTA links), 0 on the other nodes; max by (switch) over the nodes is 0 while no node owns it.",
    ),
    (
        OWNERSHIP_CHANGES,
        Kind::Counter,
        "Switch ownership changes, by switch and reason: start, failover, rebalance and shutdown are counted by the node that takes the switch, fenced by the node that gives it up because its lease could not be renewed in time.",
    ),
    (
        FORWARDED_REQUESTS,
        Kind::Counter,
        "Client requests (register, unregister, query address, private service) on a switch this node does not own, counted once on the node that received them, by switch and result: \"ok\" or the error code sent back (54 when no node owned the switch, 57 when the owner did not answer in time).",
    ),
    (
        FORWARDED_REQUEST_SECONDS,
        Kind::Histogram,
        "Latency of requests forwarded to the switch's owner, as the client saw it (request received to reply sent), by switch.",
    ),
    (
        NATS_CONNECTED,
        Kind::Gauge,
        "1 while this node is connected to NATS; a node without NATS for longer than lease-ttl is not ready and closes its clients with 1013.",
    ),
    (
        FLOW_GAPS,
        Kind::Counter,
        "Gaps in the ordered flow of events and replies from a switch's owner to this node, by switch and result: repaired (filled from the cluster's event stream before anything later was delivered) or closed (could not be filled: the clients concerned were closed with 1013).",
    ),
    (
        CLUSTER_CONFIG_MISMATCH,
        Kind::Gauge,
        "1 for a switch whose definition (DN plan, links) differs between this node and another live node, or that only one of them has; every node should load the same switch list.",
    ),
];

/// Export every cluster series whose labels are known in advance at 0: the node-wide gauges,
/// and for each switch its ownership, ownership changes by reason, forwarded requests by
/// result, the forwarded latency histogram, flow gaps by result and the configuration
/// mismatch. Call it once when the node joins a cluster, and never without `[cluster]`: a
/// router that is not clustered exports none of these metrics.
pub fn init_cluster_labels(switches: &[Arc<str>]) {
    set_cluster_nodes(0);
    set_nats_connected(false);
    for switch in switches {
        ClusterMetrics::new(switch).set_owned(false);
        set_config_mismatch(switch, false);
    }
}

/// Set the number of live nodes this node sees.
pub fn set_cluster_nodes(nodes: usize) {
    metrics::gauge!(CLUSTER_NODES).set(nodes as f64);
}

/// Set whether this node is connected to NATS.
pub fn set_nats_connected(connected: bool) {
    metrics::gauge!(NATS_CONNECTED).set(if connected { 1.0 } else { 0.0 });
}

/// Set whether `switch`'s definition differs from another live node's. Also for a switch that
/// only the other node has, so that the operator sees which one (the log says more).
pub fn set_config_mismatch(switch: &str, differs: bool) {
    metrics::gauge!(CLUSTER_CONFIG_MISMATCH, "switch" => switch.to_owned()).set(if differs {
        1.0
    } else {
        0.0
    });
}

/// Handles for one switch's cluster series, created once per switch when the node joins (a
/// registry lookup per forwarded request or per change would cost more than the count).
/// Creating it creates the series, at 0: never on a router without `[cluster]`.
#[derive(Debug, Clone)]
pub struct ClusterMetrics {
    /// 1 while this node owns the switch.
    owned: Gauge,
    /// Ownership changes, in the order of [`OwnershipReason::ALL`].
    ownership_changes: Vec<Counter>,
    /// Forwarded requests: "ok", then each of [`ErrorCode::ALL`].
    forwarded: Vec<Counter>,
    /// Forwarded latency.
    forwarded_seconds: Histogram,
    /// Flow gaps, in the order of [`FLOW_GAP_RESULTS`].
    flow_gaps: Vec<Counter>,
}

impl ClusterMetrics {
    /// Handles for `switch` (its series start at 0).
    pub fn new(switch: &Arc<str>) -> ClusterMetrics {
        let sw = switch.clone();
        ClusterMetrics {
            owned: metrics::gauge!(SWITCH_OWNED, "switch" => sw.clone()),
            ownership_changes: OwnershipReason::ALL
                .iter()
                .map(|r| metrics::counter!(OWNERSHIP_CHANGES, "switch" => sw.clone(), "reason" => r.label()))
                .collect(),
            forwarded: std::iter::once("ok".to_owned())
                .chain(ErrorCode::ALL.iter().map(|c| c.code().to_string()))
                .map(|result| metrics::counter!(FORWARDED_REQUESTS, "switch" => sw.clone(), "result" => result))
                .collect(),
            forwarded_seconds: metrics::histogram!(FORWARDED_REQUEST_SECONDS, "switch" => sw.clone()),
            flow_gaps: FLOW_GAP_RESULTS
                .iter()
                .map(|r| metrics::counter!(FLOW_GAPS, "switch" => sw.clone(), "result" => *r))
                .collect(),
        }
    }

    /// Set whether this node owns the switch now.
    pub fn set_owned(&self, owned: bool) {
        self.owned.set(if owned { 1.0 } else { 0.0 });
    }

    /// Count an ownership change (see [`OwnershipReason`] for which node counts which).
    pub fn ownership_change(&self, reason: OwnershipReason) {
        let at = OwnershipReason::ALL.iter().position(|r| *r == reason);
        if let Some(c) = at.and_then(|i| self.ownership_changes.get(i)) {
            c.increment(1);
        }
    }

    /// Count a request this node received on a switch it does not own, once, when its reply
    /// is sent to the client: `result` is the error code of that reply (`None`: a success),
    /// `elapsed` the time since the request was received.
    pub fn forwarded(&self, result: Option<ErrorCode>, elapsed: Duration) {
        let at = match result {
            None => Some(0),
            Some(code) => ErrorCode::ALL
                .iter()
                .position(|c| *c == code)
                .map(|i| i + 1),
        };
        if let Some(c) = at.and_then(|i| self.forwarded.get(i)) {
            c.increment(1);
        }
        self.forwarded_seconds.record(elapsed.as_secs_f64());
    }

    /// Count a gap in the switch's flow to this node: `repaired` when it was filled from the
    /// event stream, else its clients were closed with 1013.
    pub fn flow_gap(&self, repaired: bool) {
        let i = usize::from(!repaired);
        if let Some(c) = self.flow_gaps.get(i) {
            c.increment(1);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The exposition of a recorder of our own (not the process-wide one, which other tests
    /// share) after the metrics are described and `f` ran: series → value.
    fn render_with(f: impl FnOnce()) -> (String, BTreeMap<String, f64>) {
        let recorder = super::super::builder(Duration::from_secs(4))
            .unwrap()
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            super::super::describe();
            f();
        });
        let text = handle.render();
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').unwrap();
                (series.to_owned(), value.parse::<f64>().unwrap())
            })
            .collect();
        (text, series)
    }

    #[test]
    fn a_router_without_cluster_exports_no_cluster_metric() {
        let (text, _) = render_with(|| {
            super::super::init_labels(&[(Arc::from("sw1"), 2)]);
            let _ = super::super::SwitchMetrics::new(&Arc::from("sw1"));
        });
        assert!(text.contains("csta_router_link_up{"), "{text}");
        for name in CLUSTER_METRICS {
            assert!(
                !text.contains(name),
                "{name} exported without [cluster]:\n{text}"
            );
        }
    }

    #[test]
    fn joining_exports_every_known_label_value_at_zero() {
        let (text, series) = render_with(|| {
            init_cluster_labels(&[Arc::from("sw1"), Arc::from("sw2")]);
        });
        for name in CLUSTER_METRICS {
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "no HELP for {name}"
            );
        }
        let zero = |s: &str| {
            assert_eq!(series.get(s), Some(&0.0), "{s} not exported at 0:\n{text}");
        };
        zero(CLUSTER_NODES);
        zero(NATS_CONNECTED);
        for sw in ["sw1", "sw2"] {
            zero(&format!("{SWITCH_OWNED}{{switch=\"{sw}\"}}"));
            zero(&format!("{CLUSTER_CONFIG_MISMATCH}{{switch=\"{sw}\"}}"));
            for reason in OwnershipReason::ALL {
                let reason = reason.label();
                zero(&format!(
                    "{OWNERSHIP_CHANGES}{{switch=\"{sw}\",reason=\"{reason}\"}}"
                ));
            }
            let results = std::iter::once("ok".to_owned())
                .chain(ErrorCode::ALL.iter().map(|c| c.code().to_string()));
            for result in results {
                zero(&format!(
                    "{FORWARDED_REQUESTS}{{switch=\"{sw}\",result=\"{result}\"}}"
                ));
            }
            for result in FLOW_GAP_RESULTS {
                zero(&format!(
                    "{FLOW_GAPS}{{switch=\"{sw}\",result=\"{result}\"}}"
                ));
            }
            zero(&format!(
                "{FORWARDED_REQUEST_SECONDS}_count{{switch=\"{sw}\"}}"
            ));
            // The forwarder waits request-timeout + 1 s before it answers 57: the buckets
            // reach that far (the other histograms stop at the request timeout).
            zero(&format!(
                "{FORWARDED_REQUEST_SECONDS}_bucket{{switch=\"{sw}\",le=\"5\"}}"
            ));
            zero(&format!(
                "{FORWARDED_REQUEST_SECONDS}_bucket{{switch=\"{sw}\",le=\"0.001\"}}"
            ));
        }
        let labels_of = |name: &str| series.keys().filter(|k| k.starts_with(name)).count();
        // ok + 14 error codes, per switch.
        assert_eq!(labels_of(FORWARDED_REQUESTS), 2 * 15);
        assert_eq!(labels_of(OWNERSHIP_CHANGES), 2 * 5);
        assert!(
            text.contains(&format!("# TYPE {FORWARDED_REQUEST_SECONDS} histogram")),
            "{text}"
        );
    }

    #[test]
    fn the_handles_count_what_the_cluster_reports() {
        let (text, series) = render_with(|| {
            init_cluster_labels(&[Arc::from("sw1"), Arc::from("sw2")]);
            let sw1 = ClusterMetrics::new(&Arc::from("sw1"));
            sw1.set_owned(true);
            sw1.ownership_change(OwnershipReason::Failover);
            sw1.ownership_change(OwnershipReason::Failover);
            sw1.ownership_change(OwnershipReason::Fenced);
            sw1.forwarded(None, Duration::from_millis(3));
            sw1.forwarded(None, Duration::from_millis(30));
            sw1.forwarded(Some(ErrorCode::NoSwitch), Duration::from_micros(200));
            sw1.forwarded(Some(ErrorCode::Timeout), Duration::from_millis(5000));
            sw1.flow_gap(true);
            sw1.flow_gap(false);
            sw1.flow_gap(false);
            set_cluster_nodes(3);
            set_nats_connected(true);
            // A switch only another node has: named all the same.
            set_config_mismatch("sw9", true);
        });
        let get = |s: &str| *series.get(s).unwrap_or_else(|| panic!("no {s}:\n{text}"));
        assert_eq!(get("csta_router_switch_owned{switch=\"sw1\"}"), 1.0);
        assert_eq!(get("csta_router_switch_owned{switch=\"sw2\"}"), 0.0);
        let changes = |reason: &str| {
            get(&format!(
                "csta_router_ownership_changes_total{{switch=\"sw1\",reason=\"{reason}\"}}"
            ))
        };
        assert_eq!(changes("failover"), 2.0);
        assert_eq!(changes("fenced"), 1.0);
        assert_eq!(changes("start"), 0.0);
        let forwarded = |result: &str| {
            get(&format!(
                "csta_router_forwarded_requests_total{{switch=\"sw1\",result=\"{result}\"}}"
            ))
        };
        assert_eq!(forwarded("ok"), 2.0);
        assert_eq!(forwarded("54"), 1.0);
        assert_eq!(forwarded("57"), 1.0);
        assert_eq!(forwarded("41"), 0.0);
        let bucket = |le: &str| {
            get(&format!(
                "csta_router_forwarded_request_seconds_bucket{{switch=\"sw1\",le=\"{le}\"}}"
            ))
        };
        assert_eq!(bucket("0.001"), 1.0);
        assert_eq!(bucket("0.005"), 2.0);
        assert_eq!(bucket("4"), 3.0);
        assert_eq!(bucket("5"), 4.0);
        assert_eq!(
            get("csta_router_forwarded_request_seconds_count{switch=\"sw1\"}"),
            4.0
        );
        assert_eq!(
            get("csta_router_forwarded_request_seconds_count{switch=\"sw2\"}"),
            0.0
        );
        let gaps = |result: &str| {
            get(&format!(
                "csta_router_flow_gaps_total{{switch=\"sw1\",result=\"{result}\"}}"
            ))
        };
        assert_eq!(gaps("repaired"), 1.0);
        assert_eq!(gaps("closed"), 2.0);
        assert_eq!(get("csta_router_cluster_nodes"), 3.0);
        assert_eq!(get("csta_router_nats_connected"), 1.0);
        assert_eq!(
            get("csta_router_cluster_config_mismatch{switch=\"sw9\"}"),
            1.0
        );
        assert_eq!(
            get("csta_router_cluster_config_mismatch{switch=\"sw1\"}"),
            0.0
        );
    }

    #[test]
    fn ownership_reasons_are_the_five_labels_of_the_contract() {
        let labels: Vec<&str> = OwnershipReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(
            labels,
            ["start", "failover", "rebalance", "fenced", "shutdown"]
        );
    }
}
