#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The README's Python reconnect example ("Reconnecting with resume (Python)"), run as written
//! with `python3` and the `websockets` package against the router binary: it follows a guest
//! DN through a TCP proxy the test controls; the phone hot-desks, the test cuts the connection,
//! the phone cancels while the script is away, and the script resumes its session and gets the
//! cancellation replayed: each hot-desk event exactly once, in `eventSeq` order. SIGTERM then
//! closes the session (`RequestClose`), which ends it at once.

mod common;
use common::{config, process, router};

use process::{Killed, RouterProcess};
use router::Client;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const HEADING: &str = "### Reconnecting with resume (Python)";
const GUEST: &str = "5002";
const HOST: &str = "4002";

/// The body of the first ```python block after the README's heading.
fn readme_script() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let at = readme
        .find(&format!("\n{HEADING}\n"))
        .unwrap_or_else(|| panic!("README has no heading {HEADING:?}"));
    let rest = &readme[at..];
    let start = rest
        .find("\n```python\n")
        .unwrap_or_else(|| panic!("no ```python block after {HEADING:?}"))
        + "\n```python\n".len();
    let len = rest[start..]
        .find("\n```\n")
        .expect("the python block is not closed");
    rest[start..start + len + 1].to_owned()
}

/// A TCP proxy to the router whose connections the test can cut, and which, while down,
/// closes every connection it accepts at once (a network that is not there).
struct Proxy {
    addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(to: std::net::SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (up2, links2) = (up.clone(), links.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                links2.lock().unwrap().push(tokio::spawn(async move {
                    let mut outbound = TcpStream::connect(to).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }));
            }
        });
        Proxy {
            addr,
            up,
            links,
            accept,
        }
    }

    /// Cut every connection (both sides just closed: no close frame) and refuse new ones.
    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.down();
    }
}

/// The script's output lines as they come: `(stderr?, line)`; every line so far is kept for
/// the failure messages.
struct Output {
    rx: mpsc::UnboundedReceiver<(bool, String)>,
    seen: Vec<(bool, String)>,
}

impl Output {
    fn capture(child: &mut std::process::Child) -> Output {
        let (tx, rx) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        for (is_err, pipe) in [
            (false, Box::new(stdout) as Box<dyn std::io::Read + Send>),
            (true, Box::new(stderr)),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((is_err, line)).is_err() {
                        break;
                    }
                }
            });
        }
        Output {
            rx,
            seen: Vec::new(),
        }
    }

    /// The next line (on stderr if `on_stderr`, else stdout) that is JSON and satisfies
    /// `wanted`, within 20 s.
    async fn wait(
        &mut self,
        on_stderr: bool,
        what: &str,
        wanted: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let next = tokio::time::timeout_at(deadline, self.rx.recv()).await;
            let Ok(Some((is_err, line))) = next else {
                panic!(
                    "the script printed no {what} within 20 s; it printed:\n{}",
                    self.dump()
                );
            };
            self.seen.push((is_err, line.clone()));
            if is_err != on_stderr {
                continue;
            }
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if wanted(&v) {
                    return v;
                }
            }
        }
    }

    /// Every line until both pipes closed (the script exited), within 10 s.
    async fn rest(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Ok(Some(line)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            self.seen.push(line);
        }
    }

    fn stdout(&self) -> Vec<Value> {
        self.seen
            .iter()
            .filter(|(is_err, _)| !is_err)
            .map(|(_, l)| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("stdout line not JSON ({e}): {l}"))
            })
            .collect()
    }

    fn dump(&self) -> String {
        let lines: Vec<String> = self
            .seen
            .iter()
            .map(|(is_err, l)| format!("{} {l}", if *is_err { "err:" } else { "out:" }))
            .collect();
        lines.join("\n")
    }
}

fn python_with_websockets() {
    let probe = Command::new("python3")
        .args(["-c", "import websockets; print(websockets.__version__)"])
        .output()
        .unwrap_or_else(|e| panic!("python3 is needed for the README's Python example: {e}"));
    assert!(
        probe.status.success(),
        "the README's Python example needs the websockets package (pip install websockets): {}",
        String::from_utf8_lossy(&probe.stderr)
    );
}

/// A metric's value (0 when it has no series yet).
async fn metric(r: &RouterProcess, series: &str) -> f64 {
    let (_, m) = r.scrape().await;
    m.get(&process::normalize_series(series))
        .copied()
        .unwrap_or(0.0)
}

/// Poll until `series` has `value`, within 10 s.
async fn wait_metric(r: &RouterProcess, series: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = metric(r, series).await;
        if now == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {now}, not {value}, after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn private_info(msg_id: u64) -> impl Fn(&Value) -> bool {
    move |v| {
        v["message"] == "EventPrivateInfo"
            && v["privateMsgId"] == msg_id
            && v.get("referenceId").is_none()
    }
}

#[test]
fn the_readme_python_example_resumes_and_misses_nothing() {
    python_with_websockets();
    let dir = process::files(&[("follow.py", &readme_script())]);
    let text = config::head(
        "session-linger = \"30s\"\nclient-ping-interval = \"10s\"",
        "kpl-interval = \"0s\"",
    ) + &config::simulated("sw1", &["4000-5999"], "", 1);
    let r = RouterProcess::start("python-resume", &text);
    let sim = r.controls[0];
    let rt = process::runtime();
    rt.block_on(async {
        r.wait_connected(&["sw1"]).await;
        let proxy = Proxy::start(r.clients).await;
        // A node that is down first, then the proxied router: the script moves on in turn.
        let dead = process::free_port();
        let urls = format!("ws://127.0.0.1:{dead}/v1,ws://{}/v1", proxy.addr);
        let mut child = Command::new("python3")
            .arg(dir.path().join("follow.py"))
            .args([&urls, GUEST])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = Output::capture(&mut child);
        let mut child = Killed(child);

        // Opened (a new session) and registered.
        let opened = out.wait(true, "open", |v| v.get("resumed").is_some()).await;
        assert_eq!(opened, json!({"resumed": false, "replayed": 0}));
        out.wait(false, "EventRegistered", |v| {
            v["message"] == "EventRegistered" && v["thisDn"] == GUEST
        })
        .await;
        // A witness on the same DN, straight to the router: once it has an event, the
        // router has handed the same event to the script's session.
        let mut witness = Client::open(&r.url(), None, 1).await;
        witness.register(GUEST).await;

        sim.post_ok("/hotdesk", json!({"guest": GUEST, "host": HOST}))
            .await;
        let established = out.wait(false, "hot-desk event", private_info(1)).await;
        assert_eq!(witness.recv().await["eventSeq"], established["eventSeq"]);

        // The network goes: the router keeps the session; the phone cancels meanwhile.
        proxy.down();
        out.wait(true, "disconnection", |v| v.get("disconnected").is_some())
            .await;
        wait_metric(&r, "csta_router_sessions_lingering", 1.0).await;
        sim.post_ok("/hotdesk/cancel", json!({"guest": GUEST}))
            .await;
        let cancelled = witness.recv().await;
        assert_eq!(cancelled["privateMsgId"], 2, "{cancelled}");

        // The network is back: the script resumes and gets the cancellation replayed.
        proxy.up();
        let resumed = out.wait(true, "resume", |v| v["resumed"] == true).await;
        assert_eq!(resumed, json!({"resumed": true, "replayed": 1}));
        let replayed = out.wait(false, "replayed event", private_info(2)).await;
        assert_eq!(replayed["eventSeq"], cancelled["eventSeq"]);
        wait_metric(&r, "csta_router_sessions_lingering", 0.0).await;
        assert_eq!(
            metric(&r, "csta_router_session_resumes_total{result=\"resumed\"}").await,
            1.0
        );
        assert_eq!(metric(&r, "csta_router_events_replayed_total").await, 1.0);

        // Ctrl-C: RequestClose, EventClosed, close 1000, and the script exits; the session
        // ends at once (only the witness's registration is left).
        process::sigterm(&child.0);
        let status = process::wait_exit(&mut child.0, Duration::from_secs(10));
        out.rest().await;
        assert!(
            status.is_some_and(|s| s.success()),
            "the script did not exit cleanly ({status:?}):\n{}",
            out.dump()
        );
        assert_eq!(
            metric(&r, "csta_router_sessions_lingering").await,
            0.0,
            "a closed session lingers"
        );
        wait_metric(&r, "csta_router_clients_connected", 1.0).await; // the witness

        // Each hot-desk event exactly once, in eventSeq order, and the close answered.
        let printed = out.stdout();
        let hotdesk: Vec<&Value> = printed
            .iter()
            .filter(|v| v["message"] == "EventPrivateInfo")
            .collect();
        let ids: Vec<&Value> = hotdesk.iter().map(|v| &v["privateMsgId"]).collect();
        assert_eq!(ids, [&json!(1), &json!(2)], "{}", out.dump());
        let seqs: Vec<u64> = hotdesk
            .iter()
            .map(|v| v["eventSeq"].as_u64().unwrap())
            .collect();
        assert!(seqs[0] < seqs[1], "eventSeq not increasing: {seqs:?}");
        for v in &hotdesk {
            assert_eq!((&v["thisDn"], &v["otherDn"]), (&json!(GUEST), &json!(HOST)));
        }
        assert!(
            printed.iter().any(|v| v["message"] == "EventClosed"),
            "no EventClosed:\n{}",
            out.dump()
        );
        let opens = out
            .seen
            .iter()
            .filter(|(is_err, l)| *is_err && l.contains("\"resumed\""))
            .count();
        assert_eq!(opens, 2, "one open and one resume:\n{}", out.dump());
    });
    r.stop();
}
