//! The measured window's cost: the routers' (and the NATS server's) CPU time, sampled from
//! `/proc` once every set-up reply has arrived, just before the first measured request is due,
//! and again after the last reply and the last expected event; and, in a cluster, each node's
//! request counters scraped at the same two moments, for the forwarded share.
//!
//! Why a window and not the whole run: set-up (registrations, MonitorStarts) and the clients
//! leaving (one MonitorStop per DN) cost the router as much as the measured operations, so CPU
//! per operation over the whole run would say little about an operation. The summary's
//! `cpu_router_us_per_op` is the window's router CPU divided by the operations answered in it.

use super::http;
use super::procfs;
use super::stats::Summary;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

/// Forwarded requests per node (counted once, on the node that received them).
const FORWARDED: &str = "csta_router_forwarded_requests_total";
/// Private-service requests per node (counted by the switch's owner).
const PRIVATE_SERVICES: &str = "csta_router_private_service_requests_total";
/// How long one scrape of a node's `/metrics` may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// One router process whose cost is reported.
#[derive(Debug, Clone)]
pub struct Watched {
    /// Its process ID.
    pub pid: u32,
    /// Its metrics listener, scraped in a cluster (`None`: not scraped).
    pub metrics: Option<SocketAddr>,
}

/// The processes the window watches: the routers (one, or a cluster's nodes) and the NATS
/// server.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// The routers, in node order.
    pub routers: Vec<Watched>,
    /// The NATS server's process (the real server, not a wrapper that started it).
    pub nats: Option<u32>,
}

/// What was read at one end of the window.
#[derive(Debug, Clone)]
struct Sample {
    /// CPU seconds of each router.
    routers: Vec<Option<f64>>,
    /// CPU seconds of the NATS server.
    nats: Option<f64>,
    /// Forwarded and private-service requests counted by each node so far.
    counters: Vec<Option<(f64, f64)>>,
}

/// The two samples of a run's measured window.
#[derive(Debug, Default)]
pub struct Window {
    probe: Probe,
    start: Mutex<Option<Sample>>,
    end: Mutex<Option<Sample>>,
}

impl Window {
    /// A window over these processes.
    pub fn new(probe: Probe) -> Window {
        Window {
            probe,
            ..Window::default()
        }
    }

    /// Whether there is anything to watch.
    fn watches(&self) -> bool {
        !self.probe.routers.is_empty()
    }

    /// Open the window: counters first (a scrape costs the routers a little), then CPU.
    pub async fn mark_start(&self) {
        if !self.watches() {
            return;
        }
        let counters = self.scrape().await;
        let (routers, nats) = self.cpu();
        if let Ok(mut start) = self.start.lock() {
            *start = Some(Sample {
                routers,
                nats,
                counters,
            });
        }
    }

    /// Close the window (only the first call counts): CPU first, then counters.
    pub async fn mark_end(&self) {
        if !self.watches() || self.end.lock().map_or(true, |e| e.is_some()) {
            return;
        }
        let (routers, nats) = self.cpu();
        let counters = self.scrape().await;
        if let Ok(mut end) = self.end.lock() {
            end.get_or_insert(Sample {
                routers,
                nats,
                counters,
            });
        }
    }

    /// The router CPU seconds used before the window opened, from `cpu_before` (each router's
    /// CPU when the scenario began) to the start sample: the set-up's cost.
    pub fn setup_cpu(&self, cpu_before: &[Option<f64>]) -> Option<f64> {
        let start = self.start.lock().ok()?.clone()?;
        let mut total = 0.0;
        for (b, s) in cpu_before.iter().zip(&start.routers) {
            total += s.as_ref()? - b.as_ref()?;
        }
        Some(total)
    }

    /// Each router's CPU seconds now.
    pub fn cpu_now(&self) -> Vec<Option<f64>> {
        self.cpu().0
    }

    fn cpu(&self) -> (Vec<Option<f64>>, Option<f64>) {
        let routers = self
            .probe
            .routers
            .iter()
            .map(|r| procfs::cpu_seconds(&r.pid.to_string()))
            .collect();
        let nats = self
            .probe
            .nats
            .and_then(|p| procfs::cpu_seconds(&p.to_string()));
        (routers, nats)
    }

    async fn scrape(&self) -> Vec<Option<(f64, f64)>> {
        let mut out = Vec::with_capacity(self.probe.routers.len());
        for r in &self.probe.routers {
            out.push(match r.metrics {
                Some(addr) => counters(addr).await,
                None => None,
            });
        }
        out
    }

    /// Add the window's keys to `summary`, `ops` being the operations answered in it:
    /// `cpu_router_us_per_op`; in a cluster also each node's share (`..._per_node`),
    /// `cpu_nats_us_per_op` and the forwarded share. Nothing when the window was not opened
    /// and closed (a scenario without a measured phase), or without `/proc`.
    pub fn report(&self, summary: &mut Summary, ops: u64, cluster: bool) {
        let (Some(start), Some(end)) = (
            self.start.lock().ok().and_then(|s| s.clone()),
            self.end.lock().ok().and_then(|e| e.clone()),
        ) else {
            return;
        };
        if ops == 0 {
            return;
        }
        let per_op = |secs: f64| secs * 1e6 / ops as f64;
        let used: Option<Vec<f64>> = start
            .routers
            .iter()
            .zip(&end.routers)
            .map(|(s, e)| Some(e.as_ref()? - s.as_ref()?))
            .collect();
        let Some(used) = used else {
            return;
        };
        summary.set_f("cpu_router_window_s", used.iter().sum());
        summary.set_f("cpu_router_us_per_op", per_op(used.iter().sum()));
        if !cluster {
            return;
        }
        let per_node: Vec<f64> = used
            .iter()
            .map(|u| (per_op(*u) * 1000.0).round() / 1000.0)
            .collect();
        summary.set("cpu_router_us_per_op_per_node", per_node);
        if let (Some(s), Some(e)) = (start.nats, end.nats) {
            summary.set_f("cpu_nats_s", e - s);
            summary.set_f("cpu_nats_us_per_op", per_op(e - s));
        }
        let deltas: Option<Vec<(f64, f64)>> = start
            .counters
            .iter()
            .zip(&end.counters)
            .map(|(s, e)| {
                let (s, e) = (s.as_ref()?, e.as_ref()?);
                Some((e.0 - s.0, e.1 - s.1))
            })
            .collect();
        if let Some(deltas) = deltas {
            let forwarded: f64 = deltas.iter().map(|d| d.0).sum();
            let private: f64 = deltas.iter().map(|d| d.1).sum();
            summary.set("forwarded_requests", forwarded as u64);
            summary.set("private_service_requests", private as u64);
            if private > 0.0 {
                summary.set_f("forwarded_share", forwarded / private);
            }
        }
    }
}

/// A node's forwarded and private-service request counters (every label summed).
async fn counters(addr: SocketAddr) -> Option<(f64, f64)> {
    let r = http::get(addr, "/metrics", SCRAPE_TIMEOUT).await.ok()?;
    if r.status != 200 {
        return None;
    }
    let text = r.text();
    Some((sum_of(&text, FORWARDED), sum_of(&text, PRIVATE_SERVICES)))
}

/// The sum of every series of the metric `name` in a Prometheus text exposition.
pub fn sum_of(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            // `name{labels} value` or `name value`, not a longer name with this prefix.
            let value = if rest.starts_with('{') {
                rest.rsplit_once('}')?.1
            } else if rest.starts_with(' ') {
                rest
            } else {
                return None;
            };
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

/// The cluster figures of a summary as a few lines for a person (stderr): throughput, router
/// CPU per operation summed and per node, NATS's, the forwarded share.
pub fn describe(summary: &Summary) -> String {
    let f = |key: &str| summary.get(key).map_or("-".to_owned(), |v| v.to_string());
    let per_node = summary
        .get("cpu_router_us_per_op_per_node")
        .and_then(serde_json::Value::as_array)
        .map(|a| {
            a.iter()
                .enumerate()
                .map(|(i, v)| format!("n{} {v}", i + 1))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|| "-".to_owned());
    format!(
        "cluster of {} node(s): {} ops in {} s, {} ops/s, p50 {} ms, p99 {} ms\n  router CPU per op: {} µs summed ({per_node})\n  NATS CPU per op: {} µs\n  forwarded share: {} ({} of {} private-service requests)\n  switches owned: {}\n",
        f("cluster_nodes"),
        f("ops"),
        f("duration_s"),
        f("ops_per_s"),
        f("p50_ms"),
        f("p99_ms"),
        f("cpu_router_us_per_op"),
        f("cpu_nats_us_per_op"),
        f("forwarded_share"),
        f("forwarded_requests"),
        f("private_service_requests"),
        f("owners"),
    )
}
