//! `--spawn`: start `pbx-sim` processes (one per switch) and a `csta-router` (or, with
//! `--cluster N`, a NATS server and N router nodes: [`super::cluster`]) on free loopback ports,
//! learn their addresses from the JSON line each prints on stdout, and kill them when the run
//! ends (normally, on error, or on ctrl-c).
//!
//! The binaries are looked up next to the running `csta-bench`. Their logs go to our stderr at
//! level `error` unless `RUST_LOG` says otherwise (a panic is always visible).

use super::cluster::Cluster;
use super::plan::Plan;
use super::window::{Probe, Watched, Window};
use super::ws::WsClient;
use super::BenchError;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a spawned program may take to print its address line.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the router may take to bring every switch link up.
const LINKS_TIMEOUT: Duration = Duration::from_secs(20);

/// A child process, killed (and reaped) when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    /// What it is, for messages.
    pub name: String,
    child: Child,
}

impl ChildGuard {
    /// Guard a started process.
    pub fn new(name: String, child: Child) -> ChildGuard {
        ChildGuard { name, child }
    }

    /// Its exit status if it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary file, removed when dropped.
#[derive(Debug)]
pub struct TempFile(pub PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One simulator the benchmark talks to.
#[derive(Debug, Clone)]
pub struct SimAddrs {
    /// Its CSTA link.
    pub link: SocketAddr,
    /// Its HTTP control API.
    pub control: Option<SocketAddr>,
}

/// Where everything is; owns the spawned processes.
#[derive(Debug, Default)]
pub struct Environment {
    /// The routers' WebSocket URLs (`ws://HOST:PORT/v1`), in router mode: one, or a
    /// cluster's nodes in order.
    pub router_urls: Vec<String>,
    /// The simulators, in switch order (`sw1` first), as far as known.
    pub sims: Vec<SimAddrs>,
    /// The router's process ID when we spawned it (for its memory and CPU figures).
    pub router_pid: Option<u32>,
    /// The simulators' process IDs when we spawned them.
    pub sim_pids: Vec<u32>,
    /// The spawned router's metrics listener (`/metrics`, `/admin/reload`).
    pub router_metrics: Option<SocketAddr>,
    /// With `--cluster`: the NATS server and the nodes.
    pub cluster: Option<Cluster>,
    /// The measured window's samples of the routers' (and NATS's) cost.
    pub window: Arc<Window>,
    children: Vec<ChildGuard>,
    config: Option<TempFile>,
}

impl Environment {
    /// The router's WebSocket URL, which a scenario through the router needs.
    pub fn router(&self) -> Result<String, BenchError> {
        self.router_urls
            .first()
            .cloned()
            .ok_or_else(|| BenchError::Setup("no router URL".into()))
    }

    /// The URL client `index` connects to: the clients are spread round-robin over a
    /// cluster's nodes.
    pub fn router_for(&self, index: usize) -> Result<String, BenchError> {
        match self.router_urls.len() {
            0 => self.router(),
            n => Ok(self.router_urls[index % n].clone()),
        }
    }

    /// The configuration file of the router the bench started (one router, no cluster).
    pub fn config_path(&self) -> Option<&std::path::Path> {
        self.config.as_ref().map(|f| f.0.as_path())
    }

    /// The router processes the bench started (one, or a cluster's running nodes).
    pub fn router_pids(&self) -> Vec<u32> {
        match &self.cluster {
            Some(c) => c.nodes.iter().filter_map(|n| n.pid()).collect(),
            None => self.router_pid.into_iter().collect(),
        }
    }

    /// The control API of each of the first `switches` simulators, which `scenario` needs.
    pub fn controls(&self, switches: usize, scenario: &str) -> Result<Vec<SocketAddr>, BenchError> {
        self.sims
            .iter()
            .take(switches)
            .map(|sim| sim.control)
            .collect::<Option<Vec<_>>>()
            .filter(|c| c.len() == switches)
            .ok_or_else(|| {
                BenchError::Setup(format!(
                    "{scenario} needs every simulator's control API address"
                ))
            })
    }

    /// Kill every spawned process now.
    pub fn shutdown(&mut self) {
        // Signal every process first, then reap them, so none has time to log the others
        // going away.
        if let Some(cluster) = &mut self.cluster {
            cluster.shutdown();
        }
        for c in &mut self.children {
            let _ = c.child.kill();
        }
        self.children.clear();
        self.cluster = None;
        self.config = None;
    }
}

/// The directory of the running executable, where the sibling binaries are.
fn sibling(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find where csta-bench runs from: {e}"))?;
    let dir = exe
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", exe.display()))?;
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        return Err(format!(
            "--spawn needs {name} next to csta-bench, but {} does not exist (build it: cargo build --release --bins)",
            path.display()
        ));
    }
    Ok(path)
}

/// A free loopback port for a server the bench starts (bound, read, released).
pub fn free_port() -> std::io::Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
}

/// Start a program, wait for the JSON line it prints once it listens, and keep draining its
/// stdout (so it never writes into a closed pipe).
pub async fn start_program(
    path: &Path,
    args: &[String],
    name: String,
) -> Result<(ChildGuard, serde_json::Value), String> {
    let mut cmd = Command::new(path);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "error");
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", path.display()))?;
    let stdout = child.stdout.take();
    let guard = ChildGuard { name, child };
    let Some(stdout) = stdout else {
        return Err(format!("{}: no stdout pipe", guard.name));
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<std::io::Result<String>>();
    std::thread::Builder::new()
        .name(format!("{}-stdout", guard.name))
        .spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let first = reader.read_line(&mut line).map(|_| line);
            let _ = tx.send(first);
            let _ = std::io::copy(&mut reader.take(u64::MAX), &mut std::io::sink());
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    let line = match tokio::time::timeout(START_TIMEOUT, rx).await {
        Err(_) => {
            return Err(format!(
                "{} printed no address line within {} s",
                guard.name,
                START_TIMEOUT.as_secs()
            ))
        }
        Ok(Err(_)) => return Err(format!("{}: its stdout reader stopped", guard.name)),
        Ok(Ok(Err(e))) => return Err(format!("cannot read {}'s stdout: {e}", guard.name)),
        Ok(Ok(Ok(line))) => line,
    };
    if line.trim().is_empty() {
        return Err(format!(
            "{} exited without printing its addresses (see its messages above)",
            guard.name
        ));
    }
    let value: serde_json::Value = serde_json::from_str(line.trim())
        .map_err(|e| format!("{} printed {line:?}, not JSON: {e}", guard.name))?;
    Ok((guard, value))
}

pub fn addr(v: &serde_json::Value, what: &str, who: &str) -> Result<SocketAddr, String> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{who} printed no usable {what} address: {v}"))
}

/// What `--spawn` starts besides the simulators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routers {
    /// None (`--direct`).
    Direct,
    /// One router.
    One,
    /// A NATS server and this many nodes with this lease.
    Cluster(usize, Duration),
}

/// Start `switches` simulators and the `routers` in front of them; wait until every router
/// has every link up.
pub async fn spawn(plan: Plan, routers: Routers) -> Result<Environment, String> {
    let mut env = Environment::default();
    let sim_bin = sibling("pbx-sim")?;
    let router_bin = match routers {
        Routers::Direct => None,
        _ => Some(sibling("csta-router")?),
    };
    for i in 0..plan.switches {
        let name = Plan::switch_name(i);
        let mut args = vec!["--name".to_owned(), name.clone()];
        for dns in plan.switch_dns(i) {
            args.push("--dns".to_owned());
            args.push(dns);
        }
        args.extend(
            ["--link", "127.0.0.1:0", "--control", "127.0.0.1:0"]
                .iter()
                .map(|s| (*s).to_owned()),
        );
        let who = format!("pbx-sim {name}");
        let (child, v) = start_program(&sim_bin, &args, who.clone()).await?;
        env.sim_pids.push(child.pid());
        env.children.push(child);
        let link = addr(&v["links"][0], "link", &who)?;
        let control = addr(&v["control"], "control", &who)?;
        env.sims.push(SimAddrs {
            link,
            control: Some(control),
        });
    }
    let Some(router_bin) = router_bin else {
        return Ok(env);
    };
    if let Routers::Cluster(nodes, lease_ttl) = routers {
        let cluster = Cluster::start(plan, &env.sims, nodes, lease_ttl, router_bin).await?;
        env.router_urls = cluster.nodes.iter().map(|n| n.url()).collect();
        env.window = Arc::new(Window::new(cluster.probe()));
        env.cluster = Some(cluster);
        return Ok(env);
    }
    let path = std::env::temp_dir().join(format!(
        "csta-bench-{}-{}.toml",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::write(&path, router_config(plan, &env.sims)).map_err(|e| {
        format!(
            "cannot write the router configuration {}: {e}",
            path.display()
        )
    })?;
    env.config = Some(TempFile(path.clone()));
    let args = vec!["--config".to_owned(), path.to_string_lossy().into_owned()];
    let (child, v) = start_program(&router_bin, &args, "csta-router".to_owned()).await?;
    env.router_pid = Some(child.pid());
    env.window = Arc::new(Window::new(Probe {
        routers: vec![Watched {
            pid: child.pid(),
            metrics: None,
        }],
        nats: None,
    }));
    env.children.push(child);
    let clients = addr(&v["clients"], "clients", "csta-router")?;
    env.router_metrics = Some(addr(&v["metrics"], "metrics", "csta-router")?);
    let url = format!("ws://{clients}/v1");
    wait_links_up(&url, plan.switches).await?;
    env.router_urls = vec![url];
    Ok(env)
}

/// The router configuration for the spawned simulators: shipped defaults except the listen
/// addresses (free ports) and the switches.
pub fn router_config(plan: Plan, sims: &[SimAddrs]) -> String {
    let mut text = String::from(
        "# written by csta-bench --spawn\n[server]\nclient-listen = \"127.0.0.1:0\"\nmetrics-listen = \"127.0.0.1:0\"\n",
    );
    push_switches(&mut text, plan, sims);
    text
}

/// The `[[switch]]` tables of the spawned simulators (one link each).
pub fn push_switches(text: &mut String, plan: Plan, sims: &[SimAddrs]) {
    for (i, sim) in sims.iter().enumerate() {
        let [guests, hosts] = plan.switch_dns(i);
        text.push_str(&format!(
            "\n[[switch]]\nname = \"{}\"\ndns = [\"{guests}\", \"{hosts}\"]\n\n[[switch.link]]\naddress = \"{}\"\n",
            Plan::switch_name(i),
            sim.link
        ));
    }
}

/// Poll the router (RequestQueryServer) until every switch's link is connected.
pub async fn wait_links_up(url: &str, switches: usize) -> Result<(), String> {
    let started = Instant::now();
    let mut client = WsClient::connect(url, "csta-bench-setup").await?;
    let mut last = String::new();
    while started.elapsed() < LINKS_TIMEOUT {
        let reply = client
            .call(r#""message":"RequestQueryServer""#, Duration::from_secs(5))
            .await?;
        let list = reply["switches"].as_array().cloned().unwrap_or_default();
        let up = list
            .iter()
            .filter(|s| s["linkState"] == "connected")
            .count();
        if list.len() < switches {
            return Err(format!(
                "the router at {url} has {} switch(es), the benchmark needs {switches}",
                list.len()
            ));
        }
        if up == list.len() {
            client.close().await;
            return Ok(());
        }
        last = serde_json::Value::from(list).to_string();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "the router's links did not all come up within {} s: {last}",
        LINKS_TIMEOUT.as_secs()
    ))
}
