#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The README's Python reconnect example ("Reconnecting with resume (Python)"), run as written
//! with `python3` and the `websockets` package against the router binary: it follows a guest
//! DN through a TCP proxy the test controls; the phone hot-desks, the test cuts the connection,
//! the phone cancels while the script is away, and the script resumes its session and gets the
//! cancellation replayed: each hot-desk event exactly once, in `eventSeq` order. A second,
//! longer absence outlasts what the session keeps (`client-queue`): the script resumes with a
//! `resumeGap`, warns, queries its DN again and gets the last events kept. SIGTERM then closes
//! the session (`RequestClose`), which ends it at once.

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
/// The router's `client-queue`: the events a lingering session keeps.
const QUEUE: usize = 64;
/// Rounds of 16 hot-desk events during the second absence: more than [`QUEUE`].
const ROUNDS: usize = 5;

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

/// The script's output lines as they come: `(stderr?, line)`; every line so far is kept.
/// The two pipes are read apart, so lines of one come in their order but not in order with
/// the other's: each pipe has its own place in `seen` up to which lines were waited past.
struct Output {
    rx: mpsc::UnboundedReceiver<(bool, String)>,
    seen: Vec<(bool, String)>,
    /// Per pipe (stdout, stderr): the index in `seen` after the last line waited for.
    past: [usize; 2],
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
            past: [0, 0],
        }
    }

    /// The next line of one pipe (stderr if `on_stderr`, else stdout) after the last one
    /// waited for there, that is JSON and satisfies `wanted`, within 20 s.
    async fn wait(
        &mut self,
        on_stderr: bool,
        what: &str,
        wanted: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let pipe = usize::from(on_stderr);
        let mut i = self.past[pipe];
        loop {
            while i < self.seen.len() {
                let (is_err, line) = &self.seen[i];
                i += 1;
                if *is_err != on_stderr {
                    continue;
                }
                if let Some(v) = serde_json::from_str(line).ok().filter(|v| wanted(v)) {
                    self.past[pipe] = i;
                    return v;
                }
            }
            let next = tokio::time::timeout_at(deadline, self.rx.recv()).await;
            let Ok(Some(line)) = next else {
                panic!(
                    "the script printed no {what} within 20 s; it printed:\n{}",
                    self.dump()
                );
            };
            self.seen.push(line);
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

/// The hot-desk events the script printed so far.
fn hotdesk_events(out: &Output) -> Vec<Value> {
    out.stdout()
        .into_iter()
        .filter(|v| v["message"] == "EventPrivateInfo")
        .collect()
}

/// After the first absence: each hot-desk event exactly once, in `eventSeq` order.
fn check_first_absence(out: &Output) {
    let hotdesk = hotdesk_events(out);
    let ids: Vec<&Value> = hotdesk.iter().map(|v| &v["privateMsgId"]).collect();
    assert_eq!(ids, [&json!(1), &json!(2)], "{}", out.dump());
    for v in &hotdesk {
        assert_eq!((&v["thisDn"], &v["otherDn"]), (&json!(GUEST), &json!(HOST)));
    }
}

/// At the end: every hot-desk event printed once, `eventSeq` strictly increasing; the close
/// answered; one open, then two resumes.
fn check_printed(out: &Output) {
    let seqs: Vec<u64> = hotdesk_events(out)
        .iter()
        .map(|v| v["eventSeq"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "eventSeq not strictly increasing: {seqs:?}"
    );
    assert!(
        out.stdout().iter().any(|v| v["message"] == "EventClosed"),
        "no EventClosed:\n{}",
        out.dump()
    );
    let opens = out
        .seen
        .iter()
        .filter(|(is_err, l)| *is_err && l.contains("\"resumed\""))
        .count();
    assert_eq!(opens, 3, "one open and two resumes:\n{}", out.dump());
}

/// A second absence, long enough for more events than `client-queue` keeps: the script
/// resumes with a gap, is told so, warns and queries its DN again; it gets the last
/// [`QUEUE`] events, the same the witness got, in order. The witness then closes its session.
async fn absence_with_a_gap(
    r: &RouterProcess,
    proxy: &Proxy,
    out: &mut Output,
    witness: &mut Client,
) {
    let sim = r.controls[0];
    proxy.down();
    out.wait(true, "disconnection", |v| v.get("disconnected").is_some())
        .await;
    wait_metric(r, "csta_router_sessions_lingering", 1.0).await;
    // More events than the session keeps, in rounds the witness reads before the next (its
    // queue is as short).
    let mut seqs = Vec::new();
    for _ in 0..ROUNDS {
        let burst = sim
            .post_ok("/burst", json!({"guest": GUEST, "host": HOST, "count": 8}))
            .await;
        assert_eq!(burst["hotdeskEvents"], 16, "{burst}");
        for _ in 0..16 {
            seqs.push(witness.recv().await["eventSeq"].as_u64().unwrap());
        }
    }
    proxy.up();
    let resumed = out.wait(true, "resume", |v| v["resumed"] == true).await;
    assert_eq!(resumed, json!({"resumed": true, "replayed": QUEUE}));
    let warning = out
        .wait(true, "gap warning", |v| v.get("warning").is_some())
        .await;
    assert!(
        warning["warning"].as_str().unwrap().contains("sw1"),
        "{warning}"
    );
    let info = out
        .wait(false, "EventAddressInfo", |v| {
            v["message"] == "EventAddressInfo"
        })
        .await;
    assert_eq!(
        (&info["thisDn"], &info["hotDesk"]),
        (&json!(GUEST), &Value::Null),
        "{info}"
    );
    let replayed: Vec<u64> = hotdesk_events(out)[2..]
        .iter()
        .map(|v| v["eventSeq"].as_u64().unwrap())
        .collect();
    assert_eq!(replayed, seqs[seqs.len() - QUEUE..], "{}", out.dump());
    assert_eq!(
        metric(r, "csta_router_session_resumes_total{result=\"gap\"}").await,
        1.0
    );
    let closed = witness.request(json!({"message": "RequestClose"})).await;
    assert_eq!(closed["message"], "EventClosed", "{closed}");
}

#[test]
fn the_readme_python_example_resumes_and_misses_nothing() {
    python_with_websockets();
    let dir = process::files(&[("follow.py", &readme_script())]);
    let text = config::head(
        &format!(
            "session-linger = \"30s\"\nclient-ping-interval = \"10s\"\nclient-queue = {QUEUE}"
        ),
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

        check_first_absence(&out);
        absence_with_a_gap(&r, &proxy, &mut out, &mut witness).await;

        // Ctrl-C: RequestClose, EventClosed, close 1000, and the script exits; the session
        // ends at once.
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
        wait_metric(&r, "csta_router_clients_connected", 0.0).await;
        wait_metric(&r, "csta_router_registered_dns{switch=\"sw1\"}", 0.0).await;

        check_printed(&out);
    });
    r.stop();
}
