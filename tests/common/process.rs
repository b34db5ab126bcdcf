//! Run the `csta-router` binary on a configuration, learn its addresses from the JSON line it
//! prints, scrape its metrics, and make sure it never panicked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running router process.
pub struct RouterProcess {
    pub child: Child,
    pub clients: SocketAddr,
    pub metrics: SocketAddr,
    /// Control API address of each embedded simulator, in configuration order.
    pub controls: Vec<SocketAddr>,
    dir: std::path::PathBuf,
}

impl RouterProcess {
    /// Start the router binary on this configuration text.
    pub fn start(name: &str, config: &str) -> RouterProcess {
        Self::start_limited(name, config, None)
    }

    /// Start the router binary on this configuration text, with its limit on open file
    /// descriptors (soft and hard) set to `nofile` when given (`ulimit -n` in a shell that
    /// then execs the router, so the process id is the router's).
    pub fn start_limited(name: &str, config: &str, nofile: Option<u32>) -> RouterProcess {
        let dir = std::env::temp_dir().join(format!("csta-router-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("router.toml");
        std::fs::write(&path, config).unwrap();
        let binary = env!("CARGO_BIN_EXE_csta-router");
        let mut command = match nofile {
            None => Command::new(binary),
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(binary);
                c
            }
        };
        let mut child = command
            .arg("--config")
            .arg(&path)
            .env(
                "RUST_LOG",
                std::env::var("ROUTER_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("router.log")).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("router did not start ({e}): {line:?}"));
        let controls = ready["simulators"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["control"].as_str().unwrap().parse().unwrap())
            .collect();
        RouterProcess {
            clients: ready["clients"].as_str().unwrap().parse().unwrap(),
            metrics: ready["metrics"].as_str().unwrap().parse().unwrap(),
            controls,
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

    /// Everything the router logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("router.log")).unwrap_or_default()
    }

    /// The WebSocket URL.
    pub fn url(&self) -> String {
        format!("ws://{}/v1", self.clients)
    }

    /// `GET path` on the metrics listener: status and body.
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.metrics).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        let text = String::from_utf8(buf).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_owned()
        };
        (status, body)
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

    /// Stop with SIGTERM; return the exit status and everything it logged. Fails on a panic.
    pub fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the router did not exit within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = self.log();
        assert!(
            !stderr.contains("panicked at"),
            "the router panicked:\n{stderr}"
        );
        assert!(status.success(), "exit status {status:?}:\n{stderr}");
        let _ = std::fs::remove_dir_all(&self.dir);
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

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n..];
        rest = rest.strip_prefix("\r\n").unwrap_or(rest);
    }
    out
}

/// A configuration with two simulated switches on ephemeral ports: sw1 (4000-5999, one link)
/// and sw2 (6000-7999, `sw2_links` links by priority). `server` and `options` are added to
/// their sections; `extra` (e.g. `[[application]]` tables) goes between.
pub fn two_switches(server: &str, options: &str, extra: &str, sw2_links: u32) -> String {
    let mut text = format!(
        "[server]\nclient-listen = \"127.0.0.1:0\"\nmetrics-listen = \"127.0.0.1:0\"\n{server}\n\n[options]\n{options}\n\n{extra}\n"
    );
    for (name, dns, links) in [
        ("sw1", "[\"4000-4999\", \"5000-5999\"]", 1),
        ("sw2", "[\"6000-6999\", \"7000-7999\"]", sw2_links),
    ] {
        text.push_str(&format!(
            "[[switch]]\nname = \"{name}\"\ndns = {dns}\nsimulated = true\nsimulator-control = \"127.0.0.1:0\"\n"
        ));
        for priority in 1..=links {
            text.push_str(&format!(
                "[[switch.link]]\naddress = \"127.0.0.1:0\"\npriority = {priority}\n"
            ));
        }
    }
    text
}

/// The runtime binary tests drive their clients on (two workers, like the machine's cores).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
