//! `--direct`: a CSTA client of the simulators, the baseline without the router.
//!
//! One TCP connection per switch, like the router's link: the 8-byte framing of
//! [`csta_router::csta::CstaCodec`], `RequestSystemStatus` first, the switch's `SystemStatus` greeting
//! answered with `SystemStatusResponse`, invoke IDs 0001–9998 never reused while in flight, and
//! any number of requests pipelined. Events (invoke 9999) are counted, not decoded.

use bytes::{Bytes, BytesMut};
use csta_router::csta::{encode_frame, CstaCodec, Dialect, InvokeId, Message};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;

/// How long the switch has to answer one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

type Reply = Result<Message, String>;

#[derive(Default)]
struct Pending {
    next: u16,
    waiting: HashMap<u16, oneshot::Sender<Reply>>,
    failed: Option<String>,
}

impl Pending {
    fn fail_all(&mut self, why: String) {
        for (_, tx) in self.waiting.drain() {
            let _ = tx.send(Err(why.clone()));
        }
        self.failed = Some(why);
    }
}

/// One CSTA connection to a simulator.
pub struct CstaConn {
    /// What it connects to, for messages.
    pub name: String,
    tx: mpsc::UnboundedSender<Bytes>,
    pending: Arc<Mutex<Pending>>,
    dialect: Dialect,
    events: Arc<AtomicU64>,
}

impl std::fmt::Debug for CstaConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CstaConn")
            .field("name", &self.name)
            .finish()
    }
}

impl CstaConn {
    /// Connect and bring the link up (RequestSystemStatus answered `normal` or `enabled`).
    pub async fn connect(name: String, addr: SocketAddr) -> Result<Arc<CstaConn>, String> {
        let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .map_err(|_| format!("{name}: cannot connect to {addr}: no answer within 10 s"))?
            .map_err(|e| format!("{name}: cannot connect to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (read, mut write) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
        let pending = Arc::new(Mutex::new(Pending {
            next: InvokeId::FIRST_REQUEST,
            ..Pending::default()
        }));
        let events = Arc::new(AtomicU64::new(0));
        let dialect = Dialect::default();
        // Writer: everything queued so far goes out in one write.
        {
            let pending = pending.clone();
            let name = name.clone();
            tokio::spawn(async move {
                let mut buf = BytesMut::new();
                while let Some(first) = rx.recv().await {
                    buf.extend_from_slice(&first);
                    while let Ok(more) = rx.try_recv() {
                        buf.extend_from_slice(&more);
                        if buf.len() > 256 * 1024 {
                            break;
                        }
                    }
                    if let Err(e) = write.write_all(&buf).await {
                        lock(&pending).fail_all(format!("{name}: the CSTA link failed: {e}"));
                        break;
                    }
                    buf.clear();
                }
            });
        }
        // Reader: answers to their waiters, events counted, the switch's requests answered.
        {
            let pending = pending.clone();
            let events = events.clone();
            let tx = tx.clone();
            let dialect = dialect.clone();
            let name = name.clone();
            tokio::spawn(async move {
                let mut frames = FramedRead::new(read, CstaCodec);
                let why = loop {
                    let frame = match frames.next().await {
                        None => break format!("{name}: the simulator closed the CSTA link"),
                        Some(Err(e)) => break format!("{name}: {e}"),
                        Some(Ok(f)) => f,
                    };
                    if frame.invoke_id == InvokeId::EVENT {
                        events.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let reply = Message::decode(&frame.body, &dialect)
                        .map_err(|e| format!("{name}: unreadable answer: {e}"));
                    if let Ok(Message::SystemStatus { .. }) = reply {
                        if let Ok(f) =
                            encode_frame(frame.invoke_id, &Message::SystemStatusResponse, &dialect)
                                .and_then(|f| f.to_bytes())
                        {
                            let _ = tx.send(f);
                        }
                        continue;
                    }
                    let waiter = lock(&pending).waiting.remove(&frame.invoke_id.get());
                    if let Some(w) = waiter {
                        let _ = w.send(reply);
                    }
                };
                lock(&pending).fail_all(why);
            });
        }
        let conn = Arc::new(CstaConn {
            name: name.clone(),
            tx,
            pending,
            dialect,
            events,
        });
        match conn.request(&Message::RequestSystemStatus).await? {
            Message::RequestSystemStatusResponse { status }
                if status == "normal" || status == "enabled" =>
            {
                Ok(conn)
            }
            other => Err(format!(
                "{name}: the simulator answered RequestSystemStatus with {other:?}"
            )),
        }
    }

    /// Events (invoke 9999) received so far.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    /// Send a request and wait for its answer (a positive response or `CSTAErrorCode`, both as
    /// `Ok`); `Err` when the link fails or the switch does not answer in time.
    pub async fn request(&self, msg: &Message) -> Result<Message, String> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut p = lock(&self.pending);
            if let Some(why) = &p.failed {
                return Err(why.clone());
            }
            let span = InvokeId::LAST_REQUEST - InvokeId::FIRST_REQUEST + 1;
            if p.waiting.len() >= usize::from(span) {
                return Err(format!(
                    "{}: {span} requests already in flight on the link",
                    self.name
                ));
            }
            let mut id = p.next;
            while p.waiting.contains_key(&id) {
                id = if id >= InvokeId::LAST_REQUEST {
                    InvokeId::FIRST_REQUEST
                } else {
                    id + 1
                };
            }
            p.next = if id >= InvokeId::LAST_REQUEST {
                InvokeId::FIRST_REQUEST
            } else {
                id + 1
            };
            p.waiting.insert(id, tx);
            id
        };
        let frame = InvokeId::new(id)
            .ok_or_else(|| format!("invoke ID {id} out of range"))
            .and_then(|invoke| {
                encode_frame(invoke, msg, &self.dialect)
                    .and_then(|f| f.to_bytes())
                    .map_err(|e| e.to_string())
            });
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                lock(&self.pending).waiting.remove(&id);
                return Err(format!("{}: cannot encode {}: {e}", self.name, msg.name()));
            }
        };
        if self.tx.send(frame).is_err() {
            lock(&self.pending).waiting.remove(&id);
            return Err(format!("{}: the CSTA link is closed", self.name));
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(format!("{}: the CSTA link is closed", self.name)),
            Err(_) => {
                lock(&self.pending).waiting.remove(&id);
                Err(format!(
                    "{}: no answer to {} within {} s",
                    self.name,
                    msg.name(),
                    REQUEST_TIMEOUT.as_secs()
                ))
            }
        }
    }
}

fn lock(p: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    p.lock().unwrap_or_else(PoisonError::into_inner)
}
