//! A light WebSocket client of the router's client protocol v1: connect and open, send text
//! frames (written in batches), read text frames, and a zero-copy reading of the fields the
//! benchmark checks.

use super::stats::Progress;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Message as WsMessage, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The WebSocket stream type.
pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The fields of a router message that the benchmark looks at, borrowed from the frame's text.
/// Fields it does not name are skipped.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Incoming<'a> {
    /// `message`.
    pub message: &'a str,
    /// `referenceId` (replies only).
    pub reference_id: Option<u64>,
    /// `privateMsgId`.
    pub private_msg_id: Option<u64>,
    /// `thisDn`.
    pub this_dn: Option<&'a str>,
    /// `otherDn`.
    pub other_dn: Option<&'a str>,
    /// `monitoredDn` (events only).
    pub monitored_dn: Option<&'a str>,
    /// `switch`.
    pub switch: Option<&'a str>,
    /// `connId`.
    pub conn_id: Option<&'a str>,
    /// `eventSeq` (events only).
    pub event_seq: Option<u64>,
    /// `callState` (call events only).
    pub call_state: Option<&'a str>,
    /// `errorCode` (`EventError`).
    pub error_code: Option<u64>,
}

/// Read the checked fields of a message; `None` when it is not JSON of the expected shape (for
/// instance a string with escapes where the benchmark expects a plain DN).
pub fn parse(text: &str) -> Option<Incoming<'_>> {
    serde_json::from_str(text).ok()
}

/// A short description of a message that was not what was expected.
pub fn describe(text: &str) -> String {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::String(text.to_owned()));
    let mut s = v.to_string();
    if s.len() > 300 {
        let mut cut = 300;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// JSON string literal of a value (quotes and escapes included).
pub fn quote(s: &str) -> String {
    Value::from(s).to_string()
}

/// One client connection.
#[derive(Debug)]
pub struct WsClient {
    /// The stream.
    pub ws: WsStream,
    next_ref: u64,
}

/// The bench clients' WebSocket settings. tungstenite zero-fills its whole read buffer
/// (128 KiB by default) before every read, which took a fifth of the bench's CPU with messages of
/// a few hundred bytes; 16 KiB still reads many events per call.
fn client_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
}

/// How many bytes a bench client reads from its socket at most per call (`redis-fanout`'s
/// subscribers read with the same).
pub const READ_BUFFER: usize = 16 * 1024;

impl WsClient {
    /// Connect, send `RequestOpen` and check the `EventServerConnected` reply.
    pub async fn connect(url: &str, application: &str) -> Result<WsClient, String> {
        Ok(WsClient::connect_with(url, application, "").await?.0)
    }

    /// Connect and send `RequestOpen` with `extra` fields (e.g. `,"resume":{...}`): the client
    /// and the `EventServerConnected` reply.
    pub async fn connect_with(
        url: &str,
        application: &str,
        extra: &str,
    ) -> Result<(WsClient, Value), String> {
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async_with_config(url, Some(client_config()), true),
        )
        .await
        .map_err(|_| format!("cannot connect to {url}: no answer within 10 s"))?
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
        let mut client = WsClient { ws, next_ref: 1 };
        let open = format!(
            r#""message":"RequestOpen","protocolVersion":1,"application":{}{extra}"#,
            quote(application)
        );
        let reply = client.call(&open, Duration::from_secs(10)).await?;
        if reply["message"] != "EventServerConnected" {
            return Err(format!(
                "the router answered RequestOpen with {}",
                describe(&reply.to_string())
            ));
        }
        Ok((client, reply))
    }

    /// A fresh `referenceId`.
    pub fn next_ref(&mut self) -> u64 {
        let r = self.next_ref;
        self.next_ref += 1;
        r
    }

    /// Queue a text frame (written by [`WsClient::flush`] or when the buffer fills).
    pub async fn feed(&mut self, text: String) -> Result<(), String> {
        self.ws
            .feed(WsMessage::text(text))
            .await
            .map_err(|e| format!("cannot send to the router: {e}"))
    }

    /// Write what is queued.
    pub async fn flush(&mut self) -> Result<(), String> {
        self.ws
            .flush()
            .await
            .map_err(|e| format!("cannot send to the router: {e}"))
    }

    /// The next text frame. Pings are answered by the library; a close or the end of the
    /// stream is an error naming the close code.
    pub async fn recv(&mut self) -> Result<Utf8Bytes, String> {
        loop {
            match self.ws.next().await {
                None => return Err("the router closed the connection".to_owned()),
                Some(Err(e)) => return Err(format!("connection to the router failed: {e}")),
                Some(Ok(WsMessage::Text(t))) => return Ok(t),
                Some(Ok(WsMessage::Close(Some(f)))) => {
                    return Err(format!(
                        "the router closed the connection with {} ({})",
                        u16::from(f.code),
                        f.reason
                    ))
                }
                Some(Ok(WsMessage::Close(None))) => {
                    return Err("the router closed the connection".to_owned())
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Send a request (its fields without braces and without `referenceId`) and wait for the
    /// reply that carries its `referenceId`, skipping events.
    pub async fn call(&mut self, fields: &str, within: Duration) -> Result<Value, String> {
        let id = self.next_ref();
        self.feed(format!("{{{fields},\"referenceId\":{id}}}"))
            .await?;
        self.flush().await?;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let text = tokio::time::timeout_at(deadline, self.recv())
                .await
                .map_err(|_| {
                    format!("no reply to {{{fields}}} within {} s", within.as_secs_f64())
                })??;
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| format!("the router sent a frame that is not JSON ({e})"))?;
            if v["referenceId"] == id {
                return Ok(v);
            }
        }
    }

    /// End the session and close the connection politely (errors ignored): `RequestClose`
    /// first, so the router releases the registrations at once instead of keeping the session
    /// for `session-linger`.
    pub async fn close(&mut self) {
        let id = self.next_ref();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            if self
                .feed(format!(
                    "{{\"message\":\"RequestClose\",\"referenceId\":{id}}}"
                ))
                .await
                .is_ok()
            {
                let _ = self.flush().await;
            }
            let _ = self.ws.close(None).await;
        })
        .await;
    }

    /// Register `dns` in `mode` ("share" or "monitor") with at most `window` registrations in
    /// flight; every reply must be `EventRegistered` for its DN. `EventPrivateInfo` events
    /// arriving meanwhile are counted and returned.
    pub async fn register_all(
        &mut self,
        dns: &[String],
        mode: &str,
        window: usize,
        progress: &Progress,
    ) -> Result<u64, String> {
        self.register_all_with(dns, (mode, false), window, progress)
            .await
    }

    /// [`WsClient::register_all`], with `callEvents` as given.
    pub async fn register_all_with(
        &mut self,
        dns: &[String],
        (mode, call_events): (&str, bool),
        window: usize,
        progress: &Progress,
    ) -> Result<u64, String> {
        let window = window.max(1);
        let first = self.next_ref;
        let mut sent = 0usize;
        let mut done = 0usize;
        let mut events = 0u64;
        while done < dns.len() {
            while sent < dns.len() && sent - done < window {
                let id = self.next_ref();
                self.feed(format!(
                    r#"{{"message":"RequestRegisterAddress","referenceId":{id},"thisDn":{},"registerMode":"{mode}","callEvents":{call_events}}}"#,
                    quote(&dns[sent])
                ))
                .await?;
                sent += 1;
            }
            self.flush().await?;
            let text = tokio::time::timeout(Duration::from_secs(30), self.recv())
                .await
                .map_err(|_| "no reply to a registration within 30 s".to_owned())??;
            let m = parse(&text).unwrap_or_default();
            let Some(r) = m.reference_id else {
                if m.message == "EventPrivateInfo" {
                    events += 1;
                }
                continue;
            };
            let index = r
                .checked_sub(first)
                .and_then(|i| usize::try_from(i).ok())
                .filter(|i| *i < sent);
            let ok = index.is_some_and(|i| {
                m.message == "EventRegistered" && m.this_dn == Some(dns[i].as_str())
            });
            if !ok {
                return Err(format!(
                    "registering DNs in {mode} mode: unexpected reply {}",
                    describe(&text)
                ));
            }
            done += 1;
            progress.setup.fetch_add(1, Ordering::Relaxed);
        }
        Ok(events)
    }
}
