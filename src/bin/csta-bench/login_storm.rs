//! `login-storm`: N guests hot-desk onto N hosts across all switches, then cancel.
//!
//! Client `c` of C owns a contiguous share of the N items (so every client has guests on every
//! switch), registers its guests in share mode (setup, not measured), and once every client is
//! ready runs, for each round, private service 1 (associate guest with host) for all its guests,
//! then private service 2 (cancel) for all of them, with at most `--in-flight` requests in
//! flight. Every reply is checked: `EventPrivateInfo` with the request's `referenceId`, the same
//! `privateMsgId`, `thisDn` = the guest and `otherDn` = the host; anything else is an error.
//!
//! Every operation also makes the switch send one hot-desk event on the guest's monitor, which
//! the router delivers to the one client that registered the guest: the summary's `events`
//! counts them, `expected` is one per operation and `losses` the difference (each client
//! waits up to `--drain` after its last reply for the events still on their way).
//!
//! With `--direct` the same operations go to the simulators over CSTA (MonitorStart for each
//! guest at setup, then `Escape` associate/cancel), from C workers with the same window each, so
//! the same total number of requests is in flight; the answer must be `EscapeResponse`.

use super::direct::CstaConn;
use super::plan::{Pair, Plan};
use super::spawn::Environment;
use super::stats::{self, Progress, Summary, WorkerResult};
use super::ws::{self, quote, WsClient};
use super::{run_workers, setup_window, share_client, Outcome, Schedule, Settings, StartGate};
use csta_router::csta::{HotDeskAction, HotDeskRequest, Message};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

/// One operation: associate or cancel one guest.
#[derive(Debug, Clone, Copy)]
struct Op {
    pair: usize,
    associate: bool,
}

/// A worker's operations in order, and which may go when: due by the schedule, and fewer
/// than `--in-flight` of them awaiting their answers. A round is an associate for every pair,
/// then a cancel for every pair; there are `--rounds` rounds, and with `--duration` whole
/// rounds go on while the next operation falls due (with `--rate`) or comes (without) before
/// the duration has passed since the start.
struct Pacer {
    pairs: usize,
    /// The operations of `--rounds` rounds, sent in any case.
    least: usize,
    /// The end of `--duration`, when given.
    until: Option<Instant>,
    schedule: Schedule,
    window: usize,
    next: usize,
}

impl Pacer {
    fn new(s: &Settings, index: usize, pairs: usize, start: Instant) -> Pacer {
        let a = &s.args;
        Pacer {
            pairs,
            least: pairs * 2 * a.rounds,
            until: a.duration.map(|d| start + d),
            schedule: Schedule::new(start, a.rate, a.clients, index),
            window: a.in_flight,
            next: 0,
        }
    }

    /// Operation `j`: in its round, the associates of every pair, then the cancels.
    fn op(&self, j: usize) -> Op {
        let at = j % (2 * self.pairs).max(1);
        Op {
            pair: at % self.pairs.max(1),
            associate: at < self.pairs,
        }
    }

    /// Whether there is an operation still to send (`now` for `--duration` without a rate).
    fn more(&self, now: Instant) -> bool {
        if self.pairs == 0 {
            return false;
        }
        if self.next < self.least || !self.next.is_multiple_of(2 * self.pairs) {
            return true;
        }
        // A new round while the duration lasts.
        self.until
            .is_some_and(|until| self.schedule.due(self.next).unwrap_or(now) < until)
    }

    /// The next operation if it may go now with `in_flight` others unanswered, and when it was
    /// due.
    fn take(&mut self, in_flight: usize, now: Instant) -> Option<(Op, Instant)> {
        if in_flight >= self.window || !self.more(now) {
            return None;
        }
        let due = self.schedule.due(self.next);
        if due.is_some_and(|d| d > now) {
            return None;
        }
        let op = self.op(self.next);
        self.next += 1;
        Some((op, due.unwrap_or(now)))
    }

    /// When the next operation falls due, if the window lets it go then; `None` when it waits
    /// for an answer instead (or there is none).
    fn wake(&self, in_flight: usize, now: Instant) -> Option<Instant> {
        if in_flight < self.window && self.more(now) {
            self.schedule.due(self.next)
        } else {
            None
        }
    }

    /// How many operations were sent.
    fn sent(&self) -> usize {
        self.next
    }

    /// How many operations of the `--rounds` rounds are still to be sent.
    fn unsent(&self) -> usize {
        self.least.saturating_sub(self.next)
    }
}

/// Run the scenario and fill in the summary.
pub async fn run(s: &Settings, env: &Environment, mut summary: Summary) -> Outcome {
    let a = &s.args;
    let (progress, _display) = stats::progress("login-storm", &env.window);
    let setup_started = Instant::now();
    let (start, results) = if a.direct {
        let mut conns = Vec::new();
        for (i, sim) in env.sims.iter().enumerate().take(s.plan.switches) {
            conns.push(CstaConn::connect(Plan::switch_name(i), sim.link).await?);
        }
        let conns = Arc::new(conns);
        let r = run_workers(a.clients, &progress, |i, gate| {
            let pairs = s.plan.pairs_of(a.dns, a.clients, i);
            direct_worker(i, pairs, s.clone(), conns.clone(), progress.clone(), gate)
        })
        .await?;
        let events: u64 = conns.iter().map(|c| c.events()).sum();
        summary.set("csta_events", events);
        r
    } else {
        let urls = (0..a.clients)
            .map(|i| env.router_for(i))
            .collect::<Result<Vec<_>, _>>()?;
        let done = Arc::new(Barrier::new(a.clients));
        run_workers(a.clients, &progress, |i, gate| {
            let pairs = s.plan.pairs_of(a.dns, a.clients, i);
            router_client(
                i,
                urls[i].clone(),
                pairs,
                s.clone(),
                progress.clone(),
                gate,
                done.clone(),
            )
        })
        .await?
    };
    let total: WorkerResult = results.into_iter().collect();
    summary.set("clients", a.clients);
    summary.set("in_flight", a.clients * a.in_flight);
    summary.set("guests", a.dns);
    summary.set("rounds", a.rounds);
    if let Some(rate) = a.rate {
        summary.set_f("target_rate", rate);
    }
    if let Some(d) = a.duration {
        summary.set_f("target_duration_s", d.as_secs_f64());
    }
    // With --duration the clients go on for whole rounds: what they sent.
    summary.set("offered", total.offered);
    summary.set_workers(&total, start);
    summary.set_setup_time(setup_started, start);
    if !a.direct {
        // One event per operation, on the guest's monitor, to the client that registered it.
        let expected = total.offered;
        summary.set("events", total.events);
        summary.set("expected", expected);
        summary.set("losses", expected.saturating_sub(total.events));
    }
    Ok(summary)
}

fn request_text(id: u64, pair: &Pair, associate: bool) -> String {
    if associate {
        format!(
            r#"{{"message":"RequestPrivateService","referenceId":{id},"thisDn":{},"privateMsgId":1,"extensions":{{"HOST_DN":{}}}}}"#,
            quote(&pair.guest),
            quote(&pair.host)
        )
    } else {
        format!(
            r#"{{"message":"RequestPrivateService","referenceId":{id},"thisDn":{},"privateMsgId":2}}"#,
            quote(&pair.guest)
        )
    }
}

/// One WebSocket client of the router: a single task that sends what is due and reads replies.
async fn router_client(
    index: usize,
    url: String,
    pairs: Vec<Pair>,
    s: Settings,
    progress: Arc<Progress>,
    mut gate: StartGate,
    done: Arc<Barrier>,
) -> WorkerResult {
    let mut out = WorkerResult::default();
    let guests: Vec<String> = pairs.iter().map(|p| p.guest.clone()).collect();
    let setup = share_client(&s, &url, index, &guests, &progress).await;
    // Events seen while registering are not the measured operations' (there are none on a
    // quiet switch): only the events of the measured phase are counted.
    let Some((mut c, _setup_events)) = gate.check(&format!("client {index}"), setup).await else {
        return out;
    };
    let Some(start) = gate.ready(Ok(())).await else {
        return out;
    };
    let mut pacer = Pacer::new(&s, index, pairs.len(), start);
    let drain = Duration::from_secs_f64(s.args.drain);
    // referenceId → (operation, when it was due)
    let mut pending: HashMap<u64, (Op, Instant)> = HashMap::with_capacity(s.args.in_flight * 2);
    let mut failure: Option<String> = None;
    while pacer.more(Instant::now()) || !pending.is_empty() {
        let now = Instant::now();
        let mut fed = false;
        while let Some((op, due)) = pacer.take(pending.len(), now) {
            let id = c.next_ref();
            if let Err(e) = c
                .feed(request_text(id, &pairs[op.pair], op.associate))
                .await
            {
                failure = Some(e);
                break;
            }
            pending.insert(id, (op, due));
            fed = true;
        }
        if failure.is_some() {
            break;
        }
        if fed {
            if let Err(e) = c.flush().await {
                failure = Some(e);
                break;
            }
        }
        let wake = pacer.wake(pending.len(), now);
        // Silence is only a failure while replies are awaited.
        let patience = if pending.is_empty() {
            Duration::from_secs(86_400)
        } else {
            drain
        };
        let text = tokio::select! {
            t = tokio::time::timeout(patience, c.recv()) => match t {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => { failure = Some(e); break; }
                Err(_) => {
                    failure = Some(format!(
                        "no reply within {} s ({} requests in flight)",
                        drain.as_secs_f64(),
                        pending.len()
                    ));
                    break;
                }
            },
            _ = tokio::time::sleep_until(wake.unwrap_or(now).into()), if wake.is_some() => continue,
        };
        on_message(&mut out, &progress, index, &pairs, &mut pending, &text);
    }
    // The last operations' events may still be on their way: each operation makes exactly
    // one event for this client (on its guest's monitor), so wait for them, within the drain.
    out.offered = pacer.sent() as u64;
    if failure.is_none() {
        await_events(&mut c, &mut out, pacer.sent() as u64, drain).await;
    }
    if let Some(e) = failure {
        let lost = (pacer.unsent() + pending.len()) as u64;
        out.errors += lost.saturating_sub(1);
        out.error(&progress, || {
            format!("client {index}: {e}; {lost} request(s) unanswered or unsent")
        });
    }
    super::leave_together(&done, &progress).await;
    c.close().await;
    out
}

/// Count one message a router client read: an event, or the reply to one of its `pending`
/// requests, checked against the request's operation.
fn on_message(
    out: &mut WorkerResult,
    progress: &Progress,
    index: usize,
    pairs: &[Pair],
    pending: &mut HashMap<u64, (Op, Instant)>,
    text: &str,
) {
    let m = ws::parse(text).unwrap_or_default();
    let Some(r) = m.reference_id else {
        if m.message == "EventPrivateInfo" {
            out.events += 1;
        } else if m.message == "EventLinkDisconnected" {
            out.error(progress, || {
                format!("client {index}: link lost: {}", ws::describe(text))
            });
        }
        return;
    };
    let Some((op, due)) = pending.remove(&r) else {
        out.error(progress, || {
            format!(
                "client {index}: reply to no request of ours: {}",
                ws::describe(text)
            )
        });
        return;
    };
    let pair = &pairs[op.pair];
    let ok = m.message == "EventPrivateInfo"
        && m.private_msg_id == Some(if op.associate { 1 } else { 2 })
        && m.this_dn == Some(pair.guest.as_str())
        && m.other_dn == Some(pair.host.as_str());
    if ok {
        out.succeeded(progress, due);
    } else {
        out.error(progress, || {
            format!(
                "client {index}: {} {}→{}: {}",
                if op.associate { "associate" } else { "cancel" },
                pair.guest,
                pair.host,
                ws::describe(text)
            )
        });
    }
}

/// Wait (within `drain`) until the client has received `expected` hot-desk events in all.
async fn await_events(c: &mut WsClient, out: &mut WorkerResult, expected: u64, drain: Duration) {
    let deadline = tokio::time::Instant::now() + drain;
    while out.events < expected {
        match tokio::time::timeout_at(deadline, c.recv()).await {
            Ok(Ok(text)) => {
                let m = ws::parse(&text).unwrap_or_default();
                if m.reference_id.is_none() && m.message == "EventPrivateInfo" {
                    out.events += 1;
                }
            }
            Ok(Err(_)) | Err(_) => break,
        }
    }
}

/// Start a monitor on each guest over the direct links, at most `window` at a time.
async fn start_monitors(
    pairs: &[Pair],
    conns: &[Arc<CstaConn>],
    window: usize,
    progress: &Progress,
) -> Result<(), String> {
    let mut inflight = FuturesUnordered::new();
    let mut next = 0usize;
    while next < pairs.len() || !inflight.is_empty() {
        while next < pairs.len() && inflight.len() < window {
            let p = &pairs[next];
            let conn = conns
                .get(p.switch)
                .cloned()
                .ok_or_else(|| format!("no CSTA link for switch {}", p.switch + 1))?;
            let guest = p.guest.clone();
            inflight.push(async move {
                let r = conn
                    .request(&Message::MonitorStart {
                        device: guest.clone(),
                    })
                    .await;
                (guest, r)
            });
            next += 1;
        }
        if let Some((guest, r)) = inflight.next().await {
            match r {
                Ok(Message::MonitorStartResponse { .. }) => {
                    progress.setup.fetch_add(1, Ordering::Relaxed);
                }
                Ok(other) => return Err(format!("MonitorStart {guest}: answered {other:?}")),
                Err(e) => return Err(format!("MonitorStart {guest}: {e}")),
            }
        }
    }
    Ok(())
}

/// One direct worker: the same operations over the shared CSTA links.
async fn direct_worker(
    index: usize,
    pairs: Vec<Pair>,
    s: Settings,
    conns: Arc<Vec<Arc<CstaConn>>>,
    progress: Arc<Progress>,
    mut gate: StartGate,
) -> WorkerResult {
    let mut out = WorkerResult::default();
    // Setup: a monitor on each guest, as the router starts one when a client registers it.
    let window = setup_window(s.plan.switches, s.args.clients, 64);
    let setup = start_monitors(&pairs, &conns, window, &progress).await;
    if gate
        .check(&format!("worker {index}"), setup)
        .await
        .is_none()
    {
        return out;
    }
    let Some(start) = gate.ready(Ok(())).await else {
        return out;
    };
    let mut pacer = Pacer::new(&s, index, pairs.len(), start);
    let mut inflight = FuturesUnordered::new();
    while pacer.more(Instant::now()) || !inflight.is_empty() {
        let now = Instant::now();
        while let Some((op, due)) = pacer.take(inflight.len(), now) {
            let p = &pairs[op.pair];
            let Some(conn) = conns.get(p.switch).cloned() else {
                out.error(&progress, || {
                    format!("no CSTA link for switch {}", p.switch + 1)
                });
                continue;
            };
            let msg = Message::Escape(HotDeskRequest {
                guest: p.guest.clone(),
                action: if op.associate {
                    HotDeskAction::Associate {
                        host: p.host.clone(),
                    }
                } else {
                    HotDeskAction::Cancel
                },
            });
            inflight.push(async move {
                let r = conn.request(&msg).await;
                (op, due, r)
            });
        }
        let wake = pacer.wake(inflight.len(), now);
        tokio::select! {
            done = inflight.next(), if !inflight.is_empty() => {
                let Some((op, due, r)) = done else { continue };
                match r {
                    Ok(Message::EscapeResponse) => {
                        out.succeeded(&progress, due);
                    }
                    other => {
                        let p = &pairs[op.pair];
                        out.error(&progress, || format!(
                            "worker {index}: {} {}→{}: {other:?}",
                            if op.associate { "associate" } else { "cancel" },
                            p.guest, p.host
                        ));
                    }
                }
            }
            _ = tokio::time::sleep_until(wake.unwrap_or(now).into()), if wake.is_some() => {}
            else => {}
        }
    }
    out.offered = pacer.sent() as u64;
    out
}
