//! Harness for end-to-end tests: the real router (its `server::start`, the same code the binary
//! runs) with two embedded simulated switches on ephemeral loopback ports, real WebSocket
//! clients, and the simulators' HTTP control API to act as phones and faulty switches.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use super::config;
use super::sim_control::SimControl;
use csta_router::config::Config;
use csta_router::server::{start, Running};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Once;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

static PANICKED: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();

/// Record any panic of product code anywhere in the process (an actor thread, a spawned task),
/// so that a test fails when the router or the simulator panicked even if the panic was caught
/// and the test's own assertions passed. Panics raised by test code (failed assertions, in
/// `tests/`) are left to the test harness.
pub fn watch_panics() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_tests = info
                .location()
                .is_some_and(|l| l.file().starts_with("tests/") || l.file().contains("/tests/"));
            if !in_tests {
                PANICKED.store(true, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

/// Fail if anything panicked so far.
pub fn assert_no_panic() {
    assert!(
        !PANICKED.load(Ordering::SeqCst),
        "the router or the simulator panicked at some point (see \"panicked at\" in the output)"
    );
}

/// The second dialect, applied to both switches and their simulators.
pub const SECOND_DIALECT: &str = r#"
csta-namespace = "http://www.ecma-international.org/standards/ecma-323/csta/ed6"
hotdesk-namespace = "urn:example:hotdesk"
escape-root = "EscapeService"
private-data = "extensions"
accode-encoding = "hex"
"#;

/// Whether `CSTA_DIALECT=second` asks for the whole suite in the second dialect.
pub fn dialect_from_env() -> &'static str {
    match std::env::var("CSTA_DIALECT").as_deref() {
        Ok("second") => SECOND_DIALECT,
        _ => "",
    }
}

/// A test configuration: two simulated switches, everything on port 0, fast timers.
pub fn config_text(extra_options: &str, dialect: &str) -> String {
    let options = format!(
        "request-timeout = \"800ms\"\nkpl-interval = \"0s\"\nreconnect-min = \"20ms\"\nreconnect-max = \"200ms\"\n{extra_options}"
    );
    config::head("client-ping-interval = \"10s\"", &options)
        + &config::two_simulated(dialect, [1, 1])
}

/// A running router with its simulators.
pub struct Router {
    /// The router.
    pub running: Running,
    /// Control API of sw1's simulator.
    pub sw1: SimControl,
    /// Control API of sw2's simulator.
    pub sw2: SimControl,
}

impl Router {
    /// Start with the default test configuration (in the dialect `CSTA_DIALECT` asks for).
    pub async fn start() -> Router {
        Router::with(&config_text("", dialect_from_env())).await
    }

    /// Start with a configuration text.
    pub async fn with(text: &str) -> Router {
        watch_panics();
        let config = Config::parse(text, "test configuration").unwrap();
        let running = start(config).await.unwrap();
        let sw1 = SimControl {
            addr: running.simulators[0].control_addr().unwrap(),
        };
        let sw2 = SimControl {
            addr: running.simulators[1].control_addr().unwrap(),
        };
        let r = Router { running, sw1, sw2 };
        r.wait_links_up().await;
        r
    }

    /// Wait until every switch has announced its link.
    pub async fn wait_links_up(&self) {
        wait_links_up(&self.running).await;
    }

    /// The WebSocket URL.
    pub fn url(&self) -> String {
        format!("ws://{}/v1", self.running.client_addr)
    }

    /// A connected client that has sent `RequestOpen` and read `EventServerConnected` and the
    /// link events.
    pub async fn client(&self) -> Client {
        Client::open(&self.url(), None, self.running.shared.switches.len()).await
    }

    /// A client whose socket has a tiny receive buffer (so that not reading fills up
    /// quickly), opened as application `slow`: the client and the `EventServerConnected` reply
    /// (the two switches' link events read).
    pub async fn tiny_buffer_client(&self) -> (Client, Value) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(self.running.client_addr).await.unwrap();
        let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
        let (ws, _) = tokio_tungstenite::client_async(self.url(), stream)
            .await
            .unwrap();
        let mut c = Client { ws };
        let reply = c
            .request(json!({"message": "RequestOpen", "protocolVersion": 1, "application": "slow"}))
            .await;
        assert_eq!(reply["message"], "EventServerConnected", "{reply}");
        c.recv().await;
        c.recv().await;
        (c, reply)
    }

    /// Stop the router and check nothing panicked.
    pub async fn stop(self) {
        self.running.stop().await;
        assert_no_panic();
    }
}

/// Wait (5 s at most) until every switch of a router started in process has its link up.
pub async fn wait_links_up(running: &Running) {
    for _ in 0..500 {
        if running
            .shared
            .switches
            .iter()
            .all(|s| s.link_up.load(Ordering::Relaxed))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the switches' links did not come up");
}

static NEXT_REF: AtomicU64 = AtomicU64::new(1);

/// A WebSocket client speaking the client protocol.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    /// Connect (no RequestOpen yet).
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Client { ws }
    }

    /// Connect, send `RequestOpen` (with `token` if given), and read `EventServerConnected`
    /// and the link event of each of the `switches`.
    pub async fn open(url: &str, token: Option<&str>, switches: usize) -> Client {
        let mut c = Client::connect(url).await;
        c.open_session(token, switches).await;
        c
    }

    /// Send `RequestOpen` (with `token` if given) on this connection, check the
    /// `EventServerConnected` reply and read the link event of each of the `switches`: the reply.
    pub async fn open_session(&mut self, token: Option<&str>, switches: usize) -> Value {
        let mut open =
            json!({"message": "RequestOpen", "protocolVersion": 1, "application": "test"});
        if let Some(t) = token {
            open["token"] = json!(t);
        }
        self.opened(open, switches).await
    }

    /// Connect to `url` and open as `application` (with `resume` when given): the client and
    /// the `EventServerConnected` reply, the link event of each of the `switches` read.
    pub async fn open_as(
        url: &str,
        application: &str,
        resume: Option<Value>,
        switches: usize,
    ) -> (Client, Value) {
        let mut c = Client::connect(url).await;
        let mut open =
            json!({"message": "RequestOpen", "protocolVersion": 1, "application": application});
        if let Some(r) = resume {
            open["resume"] = r;
        }
        let reply = c.opened(open, switches).await;
        (c, reply)
    }

    /// Send `open` (a `RequestOpen`), check the `EventServerConnected` reply and read the link
    /// event of each of the `switches`: the reply.
    async fn opened(&mut self, open: Value, switches: usize) -> Value {
        let reply = self.request(open).await;
        assert_eq!(reply["message"], "EventServerConnected", "{reply}");
        for _ in 0..switches {
            let ev = self.recv().await;
            assert!(
                ev["message"].as_str().unwrap().starts_with("EventLink"),
                "{ev}"
            );
        }
        reply
    }

    /// Send a JSON value as a text frame.
    pub async fn send(&mut self, v: &Value) {
        self.ws.send(Ws::text(v.to_string())).await.unwrap();
    }

    /// Send raw text.
    pub async fn send_text(&mut self, t: &str) {
        self.ws.send(Ws::text(t.to_owned())).await.unwrap();
    }

    /// The next JSON message (pings answered by the library), within 5 s.
    pub async fn recv(&mut self) -> Value {
        match self.next(Duration::from_secs(5)).await {
            Some(v) => v,
            None => panic!("no message within 5 s"),
        }
    }

    /// The next JSON message within `within`, or `None`.
    pub async fn next(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) => panic!("the connection closed"),
                Ok(Some(Err(e))) => panic!("WebSocket error: {e}"),
                Ok(Some(Ok(Ws::Text(t)))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    check_time(&v);
                    return Some(v);
                }
                Ok(Some(Ok(Ws::Close(c)))) => panic!("closed by the router: {c:?}"),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// The next reply (a message with a `referenceId`; events are skipped) and its
    /// `referenceId`, before `deadline`; fails with `what` when none comes.
    pub async fn next_reply(
        &mut self,
        deadline: std::time::Instant,
        what: impl FnOnce() -> String,
    ) -> (u64, Value) {
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Some(m) = self.next(left).await else {
                panic!("{}", what());
            };
            if let Some(r) = m.get("referenceId").and_then(Value::as_u64) {
                return (r, m);
            }
        }
    }

    /// Assert nothing arrives within 200 ms.
    pub async fn expect_nothing(&mut self) {
        if let Some(v) = self.next(Duration::from_millis(200)).await {
            panic!("unexpected message {v}");
        }
    }

    /// Send a request with a fresh referenceId and return the reply (the next message).
    pub async fn request(&mut self, mut v: Value) -> Value {
        let id = NEXT_REF.fetch_add(1, Ordering::Relaxed);
        v["referenceId"] = json!(id);
        self.send(&v).await;
        let reply = self.recv().await;
        assert_eq!(reply["referenceId"], json!(id), "reply to {v}: {reply}");
        reply
    }

    /// Register a DN (share mode) and check `EventRegistered`.
    pub async fn register(&mut self, dn: &str) -> Value {
        let r = self
            .request(json!({"message": "RequestRegisterAddress", "thisDn": dn}))
            .await;
        assert_eq!(r["message"], "EventRegistered", "{r}");
        r
    }

    /// Read until the connection ends (messages before are skipped): the code of the close
    /// frame, or `None` when the connection was dropped without one (end of stream or an
    /// I/O error such as a reset). Within 10 s.
    pub async fn ended(&mut self) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("the connection did not end within 10 s"),
                Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(Ws::Close(Some(frame))))) => return Some(u16::from(frame.code)),
                Ok(Some(Ok(Ws::Close(None)))) => return Some(u16::from(CloseCode::Status)),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Wait for the close frame and return its code.
    pub async fn closed(&mut self) -> u16 {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), self.ws.next()).await {
                Err(_) => panic!("not closed within 5 s"),
                Ok(None) => panic!("connection ended without a close frame"),
                Ok(Some(Ok(Ws::Close(Some(frame))))) => return u16::from(frame.code),
                Ok(Some(Ok(Ws::Close(None)))) => return u16::from(CloseCode::Status),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => panic!("WebSocket error before the close frame: {e}"),
            }
        }
    }
}

/// Poll `check` every 10 ms until it holds; fail after 5 s naming `what`.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every message from the router carries `time`: RFC 3339, UTC, milliseconds.
pub fn check_time(v: &Value) {
    let t = v["time"]
        .as_str()
        .unwrap_or_else(|| panic!("no time in {v}"));
    assert!(
        t.len() == 24 && t.ends_with('Z') && t.as_bytes()[10] == b'T' && t.as_bytes()[19] == b'.',
        "time {t:?} is not RFC 3339 UTC with milliseconds"
    );
}

/// The message without its `time` (checked on receipt), for events with `eventSeq` replaced
/// by `"<seq>"` after checking it is a positive integer, and with `sessionId` replaced by
/// `"<session>"` after checking it is 32 hex digits.
pub fn normalized(v: &Value) -> Value {
    let mut v = v.clone();
    let obj = v.as_object_mut().unwrap();
    obj.remove("time");
    if let Some(id) = obj.get("sessionId") {
        let id = id.as_str().unwrap_or_default();
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "sessionId {id:?} is not 128 bits in hex"
        );
        obj.insert("sessionId".into(), json!("<session>"));
    }
    if let Some(seq) = obj.get("eventSeq") {
        assert!(seq.as_u64().is_some_and(|s| s > 0), "eventSeq {seq}");
        obj.insert("eventSeq".into(), json!("<seq>"));
    }
    v
}
