//! The binaries as processes: `csta-router` on a configuration (its addresses learnt from the
//! JSON line it prints, its log in a file, its metrics scraped) and `pbx-sim`; stopping them
//! with SIGTERM and checking they never panicked. A process is killed when its handle is
//! dropped, so a failed test leaves none running.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use super::config;
use super::http;
use super::sim_control::SimControl;
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The router binary.
pub const ROUTER: &str = env!("CARGO_BIN_EXE_csta-router");
/// The simulator binary.
pub const PBX_SIM: &str = env!("CARGO_BIN_EXE_pbx-sim");

/// The benchmark binary.
pub const BENCH: &str = env!("CARGO_BIN_EXE_csta-bench");

/// Run `csta-bench` with these arguments (words split at spaces) to its end: its one-line
/// JSON summary and its stderr, after checking that it succeeded, printed exactly one line on
/// stdout and nothing panicked.
pub fn bench_summary(args: &str) -> (Value, String) {
    let out = Command::new(BENCH)
        .args(args.split_whitespace())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.contains("panicked at"),
        "something panicked during csta-bench {args}:\n{stderr}"
    );
    assert!(
        out.status.success(),
        "csta-bench {args} failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one summary line: {stdout}");
    let summary = serde_json::from_str(lines[0]).expect("the summary is JSON");
    (summary, stderr)
}

/// A free loopback port: bind port 0 and let it go (for a server a test starts on it).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A child process, killed and reaped when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The JSON line a binary prints on stdout once it listens (its addresses), as printed and
/// parsed. `what` names it in the failure, with `log` (where its messages went) when it
/// printed none; the child is killed then, so a failed start leaves no process behind.
pub fn ready_line(child: &mut Child, what: &str, log: impl FnOnce() -> String) -> (String, Value) {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    match serde_json::from_str(&line) {
        Ok(value) => (line.trim_end().to_owned(), value),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not start ({e}): {line:?}\n{}", log())
        }
    }
}

/// Wait for a child to exit: its status, or `None` (and the child killed) after `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Send SIGTERM (what systemd and a container runtime send to stop a service).
pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM {}", child.id());
}

/// A scratch directory holding these files (name, text).
pub fn files(entries: &[(&str, &str)]) -> tempfile::TempDir {
    files_in("csta-router-test-", entries)
}

/// [`files`] in a directory whose name starts with `prefix`.
pub fn files_in(prefix: &str, entries: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    for (name, text) in entries {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

/// A `pbx-sim` process (at log level warn), killed when dropped.
pub struct SimProcess {
    pub child: Killed,
    /// The line it printed (`links` and `control` addresses), parsed.
    pub ready: Value,
    /// The same line as printed.
    pub line: String,
}

impl SimProcess {
    /// A `pbx-sim` named sw1 with DNs 4000-4999 on a free loopback port, its stderr dropped.
    pub fn sw1() -> SimProcess {
        SimProcess::start(
            &[
                "--name",
                "sw1",
                "--dns",
                "4000-4999",
                "--link",
                "127.0.0.1:0",
            ],
            Stdio::null(),
        )
    }

    /// Start `pbx-sim` with these arguments, its stderr to `stderr`.
    pub fn start<S: AsRef<std::ffi::OsStr>>(args: &[S], stderr: Stdio) -> SimProcess {
        let mut child = Command::new(PBX_SIM)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let (line, ready) = ready_line(&mut child, "pbx-sim", String::new);
        SimProcess {
            child: Killed(child),
            ready,
            line,
        }
    }

    /// The address of its first CSTA link, as printed.
    pub fn link(&self) -> String {
        self.ready["links"][0].as_str().unwrap().to_owned()
    }

    /// Its control API (started with `--control`).
    pub fn control(&self) -> SimControl {
        SimControl {
            addr: self.ready["control"].as_str().unwrap().parse().unwrap(),
        }
    }

    /// SIGTERM, and its exit status (within 10 s).
    pub fn stop(mut self) -> Option<ExitStatus> {
        sigterm(&self.child.0);
        wait_exit(&mut self.child.0, Duration::from_secs(10))
    }
}

/// A running router process.
pub struct RouterProcess {
    pub child: Child,
    pub clients: SocketAddr,
    pub metrics: SocketAddr,
    /// The control API of each embedded simulator that has one, in configuration order.
    pub controls: Vec<SimControl>,
    /// The line it printed, parsed.
    pub ready: Value,
    /// The same line as printed.
    pub line: String,
    dir: tempfile::TempDir,
}

impl RouterProcess {
    /// Start the router binary on this configuration text (`RUST_LOG` from `ROUTER_LOG`, else
    /// `info`); `name` names its scratch directory.
    pub fn start(name: &str, config: &str) -> RouterProcess {
        Self::start_limited(name, config, None)
    }

    /// Start the router binary on this configuration text, with its limit on open file
    /// descriptors (soft and hard) set to `nofile` when given (`ulimit -n` in a shell that
    /// then execs the router, so the process id is the router's).
    pub fn start_limited(name: &str, config: &str, nofile: Option<u32>) -> RouterProcess {
        let mut command = match nofile {
            None => Command::new(ROUTER),
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(ROUTER);
                c
            }
        };
        let level = std::env::var("ROUTER_LOG").unwrap_or_else(|_| "info".into());
        command.env("RUST_LOG", level);
        Self::launch(command, name, Some(config), &[])
    }

    /// Start the router binary in a scratch directory, on `config` (`router.toml` there; with
    /// `None`, no file: the embedded default), with `args`, and `RUST_LOG` unset unless `env`
    /// sets it (so the built-in default level applies).
    pub fn start_with(config: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> RouterProcess {
        let mut command = Command::new(ROUTER);
        command.env_remove("RUST_LOG").envs(env.iter().copied());
        Self::launch(command, "router", config, args)
    }

    fn launch(
        mut command: Command,
        name: &str,
        config: Option<&str>,
        args: &[&str],
    ) -> RouterProcess {
        let config: Vec<(&str, &str)> = config.map(|c| ("router.toml", c)).into_iter().collect();
        let dir = files_in(&format!("csta-router-{name}-"), &config);
        if !config.is_empty() {
            command.arg("--config").arg(dir.path().join("router.toml"));
        }
        let log = dir.path().join("router.log");
        let mut child = command
            .args(args)
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let (line, ready) = ready_line(&mut child, "the router", || {
            std::fs::read_to_string(&log).unwrap_or_default()
        });
        let addr = |v: &Value| -> Option<SocketAddr> { v.as_str()?.parse().ok() };
        let controls: Option<Vec<SimControl>> = ready["simulators"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| !s["control"].is_null())
            .map(|s| {
                Some(SimControl {
                    addr: addr(&s["control"])?,
                })
            })
            .collect();
        let (Some(clients), Some(metrics), Some(controls)) =
            (addr(&ready["clients"]), addr(&ready["metrics"]), controls)
        else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the router printed no usable addresses: {line}");
        };
        RouterProcess {
            clients,
            metrics,
            controls,
            ready,
            line,
            child,
            dir,
        }
    }

    /// How many file descriptors the router process has open now.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .count()
    }

    /// The configuration file it was started on (`None` when started without one).
    pub fn config_file(&self) -> Option<std::path::PathBuf> {
        let file = self.dir.path().join("router.toml");
        file.exists().then_some(file)
    }

    /// Everything the router logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("router.log")).unwrap_or_default()
    }

    /// Wait until the log holds `needle` `count` times (within 10 s).
    pub fn wait_log(&self, needle: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.log().matches(needle).count() < count {
            assert!(
                Instant::now() < deadline,
                "no {count} × {needle:?} in:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The WebSocket URL.
    pub fn url(&self) -> String {
        format!("ws://{}/v1", self.clients)
    }

    /// Wait until a clustered router has joined its cluster (it prints its addresses before,
    /// and refuses clients with 503 until it has joined). From synchronous code or from a
    /// task of a multi-threaded runtime.
    pub fn wait_joined(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let get = || async { self.try_http_get("/readyz").await };
            let joined = match tokio::runtime::Handle::try_current() {
                Ok(h) => tokio::task::block_in_place(|| h.block_on(get())),
                Err(_) => runtime().block_on(get()),
            };
            if matches!(&joined, Ok((_, body)) if !body.contains("joining the cluster")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the router has not joined its cluster within 20 s: {joined:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `POST /admin/reload` on a router without `[[admin]]`: the answer (the test fails unless
    /// it is 200).
    pub async fn reload(&self) -> Value {
        let r = http::request(
            self.metrics,
            "POST",
            "/admin/reload",
            &[],
            b"",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        serde_json::from_str(&r.text()).unwrap()
    }

    /// `GET path` on the metrics listener: status and body, or why there is none.
    pub async fn try_http_get(&self, path: &str) -> Result<(u16, String), String> {
        http::get(self.metrics, path, Duration::from_secs(5))
            .await
            .map(|r| (r.status, r.text()))
            .map_err(|e| e.to_string())
    }

    /// `GET path` on the metrics listener: status and body.
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        let r = http::get(self.metrics, path, Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        (r.status, r.text())
    }

    /// Wait until /readyz reports every switch connected.
    pub async fn wait_connected(&self, switches: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = self.http_get("/readyz").await;
            if status == 200
                && switches
                    .iter()
                    .all(|s| body.contains(&format!("switch {s} link connected")))
            {
                return;
            }
            assert!(Instant::now() < deadline, "switches not connected: {body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Scrape /metrics into `series → value` (series as written, labels in exposition order).
    pub async fn scrape(&self) -> (String, HashMap<String, f64>) {
        let (status, body) = self.http_get("/metrics").await;
        assert_eq!(status, 200);
        let mut map = HashMap::new();
        for line in body.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            map.insert(normalize_series(series), value.parse().unwrap());
        }
        (body, map)
    }

    /// Stop with SIGTERM: [`RouterProcess::exited`].
    pub fn stop(self) -> String {
        sigterm(&self.child);
        self.exited()
    }

    /// Wait for the exit (asked for already): everything it logged. Fails on a panic, an exit
    /// status other than success, or no exit within 15 s.
    pub fn exited(mut self) -> String {
        let status = wait_exit(&mut self.child, Duration::from_secs(15));
        let stderr = self.log();
        assert!(
            !stderr.contains("panicked at"),
            "the router panicked:\n{stderr}"
        );
        let status = status.unwrap_or_else(|| panic!("no exit within 15 s of SIGTERM:\n{stderr}"));
        assert!(status.success(), "exit status {status:?}:\n{stderr}");
        stderr
    }
}

impl Drop for RouterProcess {
    /// A failed test must not leave the router running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `name{a="1",b="2"}` with labels sorted, so lookups do not depend on exposition order.
pub fn normalize_series(series: &str) -> String {
    match series.split_once('{') {
        None => series.to_owned(),
        Some((name, rest)) => {
            let inner = rest.trim_end_matches('}');
            let mut labels: Vec<&str> = split_labels(inner);
            labels.sort();
            format!("{name}{{{}}}", labels.join(","))
        }
    }
}

fn split_labels(inner: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let bytes = inner.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'"' if i == 0 || bytes[i - 1] != b'\\' => in_quotes = !in_quotes,
            b',' if !in_quotes => {
                out.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < inner.len() {
        out.push(&inner[start..]);
    }
    out
}

/// A configuration with two simulated switches on ephemeral ports: sw1 (4000-5999, one link)
/// and sw2 (6000-7999, `sw2_links` links by priority). `server` and `options` are added to
/// their sections; `extra` (e.g. `[[application]]` tables) goes between.
pub fn two_switches(server: &str, options: &str, extra: &str, sw2_links: usize) -> String {
    config::head(server, options) + extra + "\n" + &config::two_simulated("", [1, sw2_links])
}

/// The runtime binary tests drive their clients on (two workers, like the machine's cores).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
