//! A cluster under test on real processes: a `nats-server` with JetStream, `pbx-sim` processes
//! as the switches, and router nodes as separate `csta-router` processes, killed (SIGKILL),
//! paused (SIGSTOP), stopped (SIGTERM) and started again for real; and what the cluster's tests
//! ask of it (owners as `/readyz` shows them, monitors on a simulator, messages awaited).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use super::nats::NatsServer;
use super::process::{self, RouterProcess, SimProcess};
use super::router::Client;
use super::sim_control::SimControl;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The lease of every test cluster.
pub const LEASE_TTL: Duration = Duration::from_secs(2);

/// One test at a time: each starts several processes, and failover times depend on the CPU.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A switch of a test: its name, DN ranges and simulator.
pub struct Pbx {
    pub name: String,
    pub dns: Vec<String>,
    pub sim: SimProcess,
}

impl Pbx {
    pub fn control(&self) -> SimControl {
        self.sim.control()
    }
}

/// A cluster under test: NATS, the switches, the nodes (`None` once killed).
pub struct Bed {
    pub nats: NatsServer,
    pub pbxes: Vec<Pbx>,
    pub nodes: Vec<Option<RouterProcess>>,
    pub names: Vec<String>,
    pub server_extra: String,
    /// Lines added to every node's `[cluster]` section.
    pub cluster_extra: String,
    pub lease_ttl: Duration,
}

impl Bed {
    /// `switches` switches (sw1 owns 4000-4999, sw2 6000-6999, ...) and `nodes` nodes named
    /// a, b, c, ..., all started.
    pub fn start(switches: usize, nodes: usize) -> Bed {
        Bed::start_with(switches, nodes, "session-linger = \"1s\"")
    }

    pub fn start_with(switches: usize, nodes: usize, server_extra: &str) -> Bed {
        Bed::start_ttl(switches, nodes, server_extra, LEASE_TTL)
    }

    pub fn start_ttl(
        switches: usize,
        nodes: usize,
        server_extra: &str,
        lease_ttl: Duration,
    ) -> Bed {
        Bed::start_full(switches, nodes, server_extra, "", lease_ttl)
    }

    /// `switches` switches and `nodes` nodes, with lines added to `[server]` and `[cluster]`.
    pub fn start_full(
        switches: usize,
        nodes: usize,
        server_extra: &str,
        cluster_extra: &str,
        lease_ttl: Duration,
    ) -> Bed {
        let nats = NatsServer::start();
        let pbxes = (0..switches)
            .map(|i| {
                let name = format!("sw{}", i + 1);
                let range = format!("{}-{}", 4000 + 2000 * i, 4999 + 2000 * i);
                let sim = SimProcess::start(
                    &[
                        "--name",
                        &name,
                        "--dns",
                        &range,
                        "--link",
                        "127.0.0.1:0",
                        "--control",
                        "127.0.0.1:0",
                    ],
                    Stdio::null(),
                );
                Pbx {
                    name,
                    dns: vec![range],
                    sim,
                }
            })
            .collect();
        let mut bed = Bed {
            nats,
            pbxes,
            nodes: Vec::new(),
            names: (0..nodes)
                .map(|i| char::from(b'a' + i as u8).to_string())
                .collect(),
            server_extra: server_extra.to_owned(),
            cluster_extra: cluster_extra.to_owned(),
            lease_ttl: LEASE_TTL,
        };
        bed.lease_ttl = lease_ttl;
        for i in 0..nodes {
            let node = bed.launch(i);
            bed.nodes.push(Some(node));
        }
        for i in 0..nodes {
            bed.wait_joined(i);
        }
        bed
    }

    /// Wait until node `i` has joined the cluster (it prints its addresses before: until it
    /// has joined it refuses clients with 503).
    pub fn wait_joined(&self, i: usize) {
        self.nodes[i].as_ref().unwrap().wait_joined();
    }

    /// Node `i`'s configuration.
    pub fn config(&self, i: usize) -> String {
        let mut text = format!(
            "[server]\nclient-listen = \"127.0.0.1:0\"\nmetrics-listen = \"127.0.0.1:0\"\n{}\n\n[options]\nrequest-timeout = \"2s\"\n\n[cluster]\nname = \"test\"\nnode = \"{}\"\nnats = [\"{}\"]\nlease-ttl = \"{}s\"\n{}\n\n",
            self.server_extra,
            self.names[i],
            self.nats.url(),
            self.lease_ttl.as_secs(),
            self.cluster_extra
        );
        for p in &self.pbxes {
            let dns: Vec<String> = p.dns.iter().map(|d| format!("\"{d}\"")).collect();
            text.push_str(&format!(
                "[[switch]]\nname = \"{}\"\ndns = [{}]\n[[switch.link]]\naddress = \"{}\"\npriority = 1\n\n",
                p.name,
                dns.join(", "),
                p.sim.link()
            ));
        }
        text
    }

    /// Start one more node, `name`, and return its index.
    pub fn add_node(&mut self, name: &str) -> usize {
        self.names.push(name.to_owned());
        let i = self.names.len() - 1;
        let node = self.launch(i);
        self.nodes.push(Some(node));
        self.wait_joined(i);
        i
    }

    /// Start node `i` again (after it was killed or stopped).
    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {} still runs", self.names[i]);
        self.nodes[i] = Some(self.launch(i));
        self.wait_joined(i);
    }

    pub fn launch(&self, i: usize) -> RouterProcess {
        RouterProcess::start(&format!("node-{}", self.names[i]), &self.config(i))
    }

    pub fn node(&self, name: &str) -> &RouterProcess {
        let i = self.index(name);
        self.nodes[i].as_ref().unwrap()
    }

    pub fn index(&self, name: &str) -> usize {
        self.names.iter().position(|n| n == name).unwrap()
    }

    pub fn live(&self) -> impl Iterator<Item = (&str, &RouterProcess)> {
        self.names
            .iter()
            .zip(&self.nodes)
            .filter_map(|(n, p)| Some((n.as_str(), p.as_ref()?)))
    }

    /// Each switch's owner as `name`'s `/readyz` says (`None`: no owner).
    pub async fn owners_seen_by(&self, name: &str) -> BTreeMap<String, Option<String>> {
        // A node may be starting or stopping: no owners seen then.
        match self.node(name).try_http_get("/readyz").await {
            Ok((_, body)) => parse_owners(&body),
            Err(_) => BTreeMap::new(),
        }
    }

    /// Wait until every live node reports the same owner, a live node, for every switch:
    /// switch → owner.
    pub async fn settled(&self, within: Duration) -> BTreeMap<String, String> {
        let deadline = Instant::now() + within;
        loop {
            let mut views = Vec::new();
            for (name, _) in self.live() {
                views.push(self.owners_seen_by(name).await);
            }
            let live: Vec<&str> = self.live().map(|(n, _)| n).collect();
            let first = views[0].clone();
            let agreed = views.iter().all(|v| *v == first)
                && first.len() == self.pbxes.len()
                && first
                    .values()
                    .all(|o| o.as_deref().is_some_and(|o| live.contains(&o)));
            if agreed {
                return first.into_iter().map(|(s, o)| (s, o.unwrap())).collect();
            }
            assert!(
                Instant::now() < deadline,
                "the nodes do not agree on live owners within {within:?}: {views:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// For a bed of one switch: wait until the nodes agree on its owner and see its link up;
    /// the owner, another node and the switch's simulator.
    pub async fn one_switch_ready(&self) -> (String, String, SimControl) {
        let owners = self.settled(LEASE_TTL * 3 + Duration::from_secs(5)).await;
        let owner = owners["sw1"].clone();
        let other = self.other_than(&owner);
        self.link_up_everywhere("sw1").await;
        (owner, other, self.pbx("sw1").control())
    }

    /// Wait until every live node says `switch`'s link is connected.
    pub async fn link_up_everywhere(&self, switch: &str) {
        for (_, node) in self.live() {
            node.wait_connected(&[switch]).await;
        }
    }

    /// A node other than `owner`.
    pub fn other_than(&self, owner: &str) -> String {
        self.live()
            .map(|(n, _)| n.to_owned())
            .find(|n| n != owner)
            .unwrap()
    }

    /// A client on node `name`, opened (the link events of every switch read).
    pub async fn client(&self, name: &str) -> Client {
        Client::open(&self.node(name).url(), None, self.pbxes.len()).await
    }

    pub fn pbx(&self, name: &str) -> &Pbx {
        self.pbxes.iter().find(|p| p.name == name).unwrap()
    }

    /// Kill node `name` with SIGKILL.
    pub fn kill(&mut self, name: &str) {
        let i = self.index(name);
        let mut node = self.nodes[i].take().unwrap();
        let _ = node.child.kill();
        let _ = node.child.wait();
        assert_no_panic(&node.log(), name);
    }

    /// Stop every node (SIGTERM): none may panic or fail.
    pub fn stop(&mut self) {
        for (i, node) in self.nodes.iter_mut().enumerate() {
            if let Some(node) = node.take() {
                let log = node.stop();
                assert_no_panic(&log, &self.names[i]);
            }
        }
    }
}

impl Drop for Bed {
    /// A failing test shows what every node logged.
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (name, node) in self.live() {
                eprintln!("===== node {name} =====\n{}", node.log());
            }
        }
    }
}

pub fn assert_no_panic(log: &str, name: &str) {
    assert!(!log.contains("panicked at"), "node {name} panicked:\n{log}");
}

pub use super::readyz::parse_owners;

/// The simulator's open CSTA connections.
pub async fn connections(sim: &SimControl) -> u64 {
    sim.state().await["links"][0]["connections"]
        .as_u64()
        .unwrap()
}

/// Wait until the simulator has (exactly) `n` monitors on `dn`.
pub async fn monitors_on(sim: &SimControl, dn: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = sim.state().await;
        let count = state["monitors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["device"] == dn || m == &&json!(dn) || m["dn"] == dn)
            .count();
        if count == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{n} monitor(s) expected on {dn}: {state}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Read `c`'s messages until one matches `want` (returned, with those before it); fails after
/// `within`, naming `what`.
pub async fn until(
    c: &mut Client,
    within: Duration,
    what: &str,
    want: impl Fn(&Value) -> bool,
) -> (Value, Vec<Value>) {
    let deadline = Instant::now() + within;
    let mut before = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(m) = c.next(left).await else {
            panic!("no {what} within {within:?}; got {before:?}");
        };
        if want(&m) {
            return (m, before);
        }
        before.push(m);
    }
}

/// Whether `m` is `EventLinkConnected` of `switch`.
pub fn link_connected(m: &Value, switch: &str) -> bool {
    m["message"] == "EventLinkConnected" && m["switch"] == switch
}

/// Send signal `sig` (STOP, CONT) to a process.
pub fn signal(child: &std::process::Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig}");
}

pub fn runtime() -> tokio::runtime::Runtime {
    process::runtime()
}
