//! A headless Chromium driven through its DevTools protocol: one WebSocket (tokio-tungstenite)
//! to the browser, one page attached in flat mode, commands answered by id, events kept for the
//! test to read. The browser runs in its own process group, killed (with its child processes)
//! when the [`Browser`] is dropped, so a failed test leaves no browser behind. A machine
//! without `chromium` fails the test naming the Debian package.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Mutex as AsyncMutex};
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Sink = SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Ws>;
type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// How long a DevTools command may take.
const COMMAND_LIMIT: Duration = Duration::from_secs(10);

/// The browser process group, killed when dropped.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let pgid = self.0.id();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A headless Chromium with one page.
pub struct Browser {
    sink: AsyncMutex<Sink>,
    waiting: Waiting,
    events: Arc<Mutex<Vec<Value>>>,
    next: AtomicU64,
    session: String,
    reader: tokio::task::JoinHandle<()>,
    // Dropped after the connection: the process group, then its profile directory.
    group: Group,
    profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Browser {
    /// Start `chromium` headless (window `width`×`height`) and attach to a new blank page.
    pub async fn start(width: u32, height: u32) -> Browser {
        let profile = tempfile::Builder::new()
            .prefix("csta-router-chromium-")
            .tempdir()
            .unwrap();
        let log = std::fs::File::create(profile.path().join("chromium.log")).unwrap();
        let spawned = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                &format!("--user-data-dir={}", profile.path().display()),
                "--remote-debugging-port=0",
                &format!("--window-size={width},{height}"),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) => panic!(
                "cannot start chromium ({e}): the browser test needs the Debian package `chromium` (apt-get install chromium)"
            ),
        };
        let group = Group(child);
        let endpoint = devtools_endpoint(profile.path());
        let (ws, _) = tokio_tungstenite::connect_async(endpoint.as_str())
            .await
            .unwrap_or_else(|e| panic!("cannot reach chromium's DevTools at {endpoint}: {e}"));
        let (sink, mut stream) = ws.split();
        let waiting: Waiting = Arc::default();
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let (w, ev) = (waiting.clone(), events.clone());
        let reader = tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                let Ws::Text(text) = frame else { continue };
                let Ok(msg) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                match msg["id"].as_u64() {
                    Some(id) => {
                        if let Some(tx) = w.lock().unwrap().remove(&id) {
                            let _ = tx.send(msg);
                        }
                    }
                    None => ev.lock().unwrap().push(msg),
                }
            }
        });
        let mut browser = Browser {
            sink: AsyncMutex::new(sink),
            waiting,
            events,
            next: AtomicU64::new(1),
            session: String::new(),
            reader,
            group,
            profile,
        };
        let target = browser
            .send(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target_id = target["targetId"].as_str().unwrap().to_owned();
        let attached = browser
            .send(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        browser
    }

    /// Send a command (to the page's session, or to the browser with `None`): its result.
    async fn send(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap().insert(id, tx);
        self.sink
            .lock()
            .await
            .send(Ws::text(msg.to_string()))
            .await
            .unwrap();
        let reply = tokio::time::timeout(COMMAND_LIMIT, rx)
            .await
            .unwrap_or_else(|_| panic!("chromium did not answer {method} within 10 s"))
            .unwrap();
        assert!(reply["error"].is_null(), "{method} failed: {reply}");
        reply["result"].clone()
    }

    /// A command to the page.
    pub async fn call(&self, method: &str, params: Value) -> Value {
        self.send(Some(&self.session.clone()), method, params).await
    }

    /// Load `url` in the page and wait until its document has loaded (within 10 s).
    pub async fn navigate(&self, url: &str) {
        self.call("Page.enable", json!({})).await;
        let reply = self.call("Page.navigate", json!({"url": url})).await;
        assert!(reply["errorText"].is_null(), "navigating to {url}: {reply}");
        let deadline = Instant::now() + COMMAND_LIMIT;
        while self.eval("document.readyState").await != "complete" {
            assert!(Instant::now() < deadline, "{url} did not load within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Evaluate a JavaScript expression in the page (promises awaited): its value.
    pub async fn eval(&self, expression: &str) -> Value {
        let reply = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(
            reply["exceptionDetails"].is_null(),
            "{expression} threw: {reply}"
        );
        reply["result"]["value"].clone()
    }

    /// The rendered text (`innerText`) of the first element matching a CSS selector (empty
    /// when there is none).
    pub async fn text(&self, selector: &str) -> String {
        let selector = serde_json::to_string(selector).unwrap();
        let value = self
            .eval(&format!(
                "(document.querySelector({selector}) || {{innerText: ''}}).innerText"
            ))
            .await;
        value.as_str().unwrap_or_default().to_owned()
    }

    /// Set an input's value as typing would, firing its `input` and `change` events.
    pub async fn fill(&self, selector: &str, value: &str) {
        let (selector, value) = (
            serde_json::to_string(selector).unwrap(),
            serde_json::to_string(value).unwrap(),
        );
        self.eval(&format!(
            "(() => {{ const el = document.querySelector({selector}); el.focus(); el.value = {value}; \
             el.dispatchEvent(new Event('input', {{bubbles: true}})); \
             el.dispatchEvent(new Event('change', {{bubbles: true}})); return true; }})()"
        ))
        .await;
    }

    /// Click the first element matching a CSS selector.
    pub async fn click(&self, selector: &str) {
        let selector = serde_json::to_string(selector).unwrap();
        self.eval(&format!("document.querySelector({selector}).click()"))
            .await;
    }

    /// The parameters of every event of `method` received so far.
    pub fn events(&self, method: &str) -> Vec<Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["method"] == method)
            .map(|e| e["params"].clone())
            .collect()
    }

    /// A PNG screenshot of the page, written to `path` (its folder created).
    pub async fn screenshot(&self, path: &Path) {
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64_decode(shot["data"].as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

/// The browser's DevTools WebSocket URL, from `DevToolsActivePort` in its profile (port, then
/// path), within 20 s of its start.
fn devtools_endpoint(profile: &Path) -> String {
    let file = profile.join("DevToolsActivePort");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            let mut lines = text.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                return format!("ws://127.0.0.1:{port}{path}");
            }
        }
        assert!(
            Instant::now() < deadline,
            "chromium wrote no DevToolsActivePort within 20 s:\n{}",
            std::fs::read_to_string(profile.join("chromium.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Standard base64 (the screenshot's encoding) to bytes.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = text.bytes().filter(|&c| c != b'=' && c != b'\n').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}
