//! `account-codes`: calls on N devices, account codes entered on the phones and set by clients.
//!
//! Item `k` is a call from calling device `1<i>…` to called device `2<i>…` (see
//! [`super::plan`]). Client `c` of C owns a contiguous share of the items and registers their
//! calling devices in share mode. Then, for each of its devices, with at most `--in-flight`
//! devices at work at once:
//!
//! 1. the call is made on the simulator (`POST /calls {"from","to"}`);
//! 2. an account code is entered on the phone (`POST /calls/{id}/account-code`): the client
//!    must receive `EventPrivateInfo` 501 for the device with that code and a 16-hex-digit
//!    `connId`;
//! 3. `--rounds` times, the client sets a new code (private service 501 with that `connId`):
//!    the reply must be `EventPrivateInfo` 501 with the same `connId` (measured), followed by
//!    the event reporting the new code;
//! 4. the call is cleared.
//!
//! `ops` counts the checked 501 requests; an expected event that does not come within
//! `--drain` seconds is a loss.

use super::plan::Pair;
use super::spawn::Environment;
use super::stats::{self, Latency, Progress, Summary, WorkerResult};
use super::ws::{self, quote};
use super::{control_post, run_workers, share_client, BenchError, Outcome, Settings, StartGate};
use futures_util::stream::{SplitSink, SplitStream, StreamExt};
use futures_util::SinkExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Barrier};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The extension key of the account code (the router's shipped `accode-name`).
const ACCODE: &str = "AccountCode";

/// A client whose replies and events are routed by a reader task: replies by `referenceId`,
/// events 501 by `thisDn`.
struct Rpc {
    out: mpsc::UnboundedSender<String>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Value>>>,
    next: AtomicU64,
}

impl Rpc {
    async fn call(&self, fields: &str, within: Duration) -> Result<Value, String> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, tx);
        self.out
            .send(format!("{{{fields},\"referenceId\":{id}}}"))
            .map_err(|_| "the connection to the router is closed".to_owned())?;
        match tokio::time::timeout(within, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err("the connection to the router closed".to_owned()),
            Err(_) => {
                self.pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
                Err(format!("no reply within {} s", within.as_secs_f64()))
            }
        }
    }
}

async fn write_loop(
    mut sink: SplitSink<ws::WsStream, WsMessage>,
    mut rx: mpsc::UnboundedReceiver<String>,
) {
    while let Some(first) = rx.recv().await {
        if sink.feed(WsMessage::text(first)).await.is_err() {
            return;
        }
        while let Ok(more) = rx.try_recv() {
            if sink.feed(WsMessage::text(more)).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

/// Read the router's messages until the connection ends (why it ended): replies to their
/// waiters by `referenceId`, events 501 to their device by `thisDn`, and lost links noted.
async fn read_loop(
    mut stream: SplitStream<ws::WsStream>,
    rpc: Arc<Rpc>,
    event_tx: HashMap<String, mpsc::UnboundedSender<Value>>,
    link_errors: Arc<Mutex<Vec<String>>>,
) -> String {
    let why = loop {
        let text = match stream.next().await {
            None => break "the router closed the connection".to_owned(),
            Some(Err(e)) => break format!("connection to the router failed: {e}"),
            Some(Ok(WsMessage::Text(t))) => t,
            Some(Ok(WsMessage::Close(f))) => {
                break format!("the router closed the connection: {f:?}")
            }
            Some(Ok(_)) => continue,
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if let Some(r) = v["referenceId"].as_u64() {
            let waiter = rpc
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&r);
            if let Some(w) = waiter {
                let _ = w.send(v);
            }
        } else if v["message"] == "EventPrivateInfo" && v["privateMsgId"] == 501 {
            if let Some(tx) = v["thisDn"].as_str().and_then(|d| event_tx.get(d)) {
                let _ = tx.send(v);
            }
        } else if v["message"] == "EventLinkDisconnected" {
            link_errors
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(format!("link lost: {v}"));
        }
    };
    rpc.pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
    why
}

/// Run the scenario and fill in the summary.
pub async fn run(s: &Settings, env: &Environment, mut summary: Summary) -> Outcome {
    let a = &s.args;
    if a.direct {
        return Err(BenchError::Setup(
            "account-codes has no --direct mode yet; the login-storm scenario has one".into(),
        ));
    }
    let controls = Arc::new(env.controls(s.plan.switches, "account-codes")?);
    let urls = (0..a.clients)
        .map(|i| env.router_for(i))
        .collect::<Result<Vec<_>, _>>()?;
    let (progress, _display) = stats::progress("account-codes", &env.window);
    let setup_started = Instant::now();
    let done = Arc::new(Barrier::new(a.clients));
    let (start, results) = run_workers(a.clients, &progress, |i, gate| {
        let pairs = s.plan.pairs_of(a.dns, a.clients, i);
        client(
            i,
            urls[i].clone(),
            pairs,
            s.clone(),
            controls.clone(),
            progress.clone(),
            gate,
            done.clone(),
        )
    })
    .await?;
    let mut total = WorkerResult::default();
    let mut losses = 0u64;
    let mut phone_latency = Latency::new();
    for (w, lost, phone) in results {
        total.merge(w);
        losses += lost;
        phone_latency.merge(&phone);
    }
    summary.set("clients", a.clients);
    summary.set("in_flight", a.clients * a.in_flight);
    summary.set("devices", a.dns);
    summary.set("rounds", a.rounds);
    summary.set_workers(&total, start);
    summary.losses = losses;
    summary.set("events", total.events);
    summary.set("losses", losses);
    summary.set("phone_codes", phone_latency.len());
    summary.set_f("phone_p99_ms", phone_latency.quantile_ms(0.99));
    summary.set_setup_time(setup_started, start);
    Ok(summary)
}

/// What one device's work yielded.
#[derive(Default)]
struct DeviceOutcome {
    /// The 501 requests checked, their latencies and the events received (errors are in
    /// `errors`, for the client to count).
    w: WorkerResult,
    phone: Latency,
    losses: u64,
    errors: Vec<String>,
    /// Descriptions of losses (counted in `losses`, not as errors).
    lost: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
async fn client(
    index: usize,
    url: String,
    pairs: Vec<Pair>,
    s: Settings,
    controls: Arc<Vec<SocketAddr>>,
    progress: Arc<Progress>,
    mut gate: StartGate,
    done: Arc<Barrier>,
) -> (WorkerResult, u64, Latency) {
    let mut out = WorkerResult::default();
    let devices: Vec<String> = pairs.iter().map(|p| p.guest.clone()).collect();
    let setup = share_client(&s, &url, index, &devices, &progress).await;
    let Some((c, _)) = gate.check(&format!("client {index}"), setup).await else {
        return (out, 0, Latency::new());
    };
    // Split the connection: a writer task, a reader task routing replies and events.
    let (sink, stream) = c.ws.split();
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    tokio::spawn(write_loop(sink, out_rx));
    let rpc = Arc::new(Rpc {
        out: out_tx,
        pending: Mutex::new(HashMap::new()),
        next: AtomicU64::new(1_000_000_000),
    });
    let mut event_rx = HashMap::new();
    let mut event_tx = HashMap::new();
    for p in &pairs {
        let (tx, rx) = mpsc::unbounded_channel::<Value>();
        event_tx.insert(p.guest.clone(), tx);
        event_rx.insert(p.guest.clone(), rx);
    }
    let link_errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = tokio::spawn(read_loop(
        stream,
        rpc.clone(),
        event_tx,
        link_errors.clone(),
    ));
    if gate.ready(Ok(())).await.is_none() {
        reader.abort();
        return (out, 0, Latency::new());
    }
    let a = &s.args;
    let drain = Duration::from_secs_f64(a.drain);
    let mut work = Vec::with_capacity(pairs.len());
    for p in &pairs {
        let rpc = rpc.clone();
        let progress = progress.clone();
        let k = p.local * s.plan.switches + p.switch;
        let (Some(rx), Some(control)) =
            (event_rx.remove(&p.guest), controls.get(p.switch).copied())
        else {
            continue;
        };
        work.push(device(
            p.clone(),
            k,
            rx,
            control,
            rpc,
            a.rounds,
            drain,
            progress,
        ));
    }
    let outcomes: Vec<DeviceOutcome> = futures_util::stream::iter(work)
        .buffer_unordered(a.in_flight)
        .collect()
        .await;
    let mut losses = 0u64;
    let mut phone = Latency::new();
    for o in outcomes {
        out.merge(o.w);
        phone.merge(&o.phone);
        losses += o.losses;
        for e in o.errors {
            out.error(&progress, || format!("client {index}: {e}"));
        }
        for l in o.lost {
            if out.samples.len() < 5 {
                out.samples.push(format!("client {index}: {l}"));
            }
        }
    }
    for e in link_errors
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain(..)
    {
        out.error(&progress, || format!("client {index}: {e}"));
    }
    super::leave_together(&done, &progress).await;
    reader.abort();
    (out, losses, phone)
}

/// The checks on an `EventPrivateInfo` 501 event or reply.
fn check_501(
    v: &Value,
    dn: &str,
    code: Option<&str>,
    conn: Option<&str>,
) -> Result<String, String> {
    let conn_id = v["connId"].as_str().unwrap_or_default();
    let ok = v["message"] == "EventPrivateInfo"
        && v["privateMsgId"] == 501
        && v["thisDn"] == dn
        && conn_id.len() == 16
        && conn_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && conn.is_none_or(|c| c == conn_id)
        && code.is_none_or(|c| v["extensions"][ACCODE] == c);
    if ok {
        Ok(conn_id.to_owned())
    } else {
        Err(ws::describe(&v.to_string()))
    }
}

#[allow(clippy::too_many_arguments)]
async fn device(
    p: Pair,
    k: usize,
    mut events: mpsc::UnboundedReceiver<Value>,
    control: SocketAddr,
    rpc: Arc<Rpc>,
    rounds: usize,
    drain: Duration,
    progress: Arc<Progress>,
) -> DeviceOutcome {
    let mut o = DeviceOutcome::default();
    let dn = p.guest.as_str();
    let call = match control_post(control, "/calls", &json!({"from": dn, "to": p.host})).await {
        Ok(v) => v["callId"].as_str().unwrap_or_default().to_owned(),
        Err(e) => {
            o.errors.push(e);
            return o;
        }
    };
    let phone_code = format!("{k:07}");
    let entered = Instant::now();
    if let Err(e) = control_post(
        control,
        &format!("/calls/{call}/account-code"),
        &json!({"device": dn, "code": phone_code}),
    )
    .await
    {
        o.errors.push(e);
        return o;
    }
    let conn_id = match tokio::time::timeout(drain, events.recv()).await {
        Ok(Some(v)) => match check_501(&v, dn, Some(&phone_code), None) {
            Ok(c) => {
                o.w.events += 1;
                o.phone.record(entered.elapsed());
                c
            }
            Err(e) => {
                o.errors
                    .push(format!("code {phone_code} entered on {dn}: event {e}"));
                return o;
            }
        },
        _ => {
            o.losses += 1;
            o.lost.push(format!(
                "code {phone_code} entered on {dn}: no event 501 within {} s",
                drain.as_secs_f64()
            ));
            return o;
        }
    };
    for r in 0..rounds {
        let code = format!("{k:07}{r:03}");
        let due = Instant::now();
        let fields = format!(
            r#""message":"RequestPrivateService","thisDn":{},"privateMsgId":501,"connId":{},"extensions":{{"{ACCODE}":{}}}"#,
            quote(dn),
            quote(&conn_id),
            quote(&code)
        );
        match rpc.call(&fields, drain).await {
            Ok(v) => match check_501(&v, dn, None, Some(&conn_id)) {
                Ok(_) => {
                    o.w.succeeded(&progress, due);
                }
                Err(e) => {
                    o.errors.push(format!("set code {code} on {dn}: reply {e}"));
                    continue;
                }
            },
            Err(e) => {
                o.errors.push(format!("set code {code} on {dn}: {e}"));
                return o;
            }
        }
        match tokio::time::timeout(drain, events.recv()).await {
            Ok(Some(v)) => match check_501(&v, dn, Some(&code), Some(&conn_id)) {
                Ok(_) => o.w.events += 1,
                Err(e) => o.errors.push(format!("set code {code} on {dn}: event {e}")),
            },
            _ => {
                o.losses += 1;
                o.lost.push(format!(
                    "set code {code} on {dn}: no event 501 within {} s",
                    drain.as_secs_f64()
                ));
            }
        }
    }
    if let Err(e) = control_post(control, &format!("/calls/{call}/clear"), &json!({})).await {
        o.errors.push(e);
    }
    o
}
