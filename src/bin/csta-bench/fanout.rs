//! `fanout`: hot-desk events from the switches to M monitoring clients, each registered (monitor
//! mode) on all D DNs.
//!
//! The D DNs are D/2 guest/host pairs spread over the switches (see [`super::plan`]). Once every
//! client has registered every DN, one generator per switch asks its simulator for bursts of
//! events (`POST /burst {"guest","host","pairs","count":1}`: associate then cancel on each of
//! `pairs` consecutive pairs), for `--rounds` rounds over all the switch's pairs. Each pair and
//! round yields 4 events per client (associate and cancel, each on the guest's and on the host's
//! monitor). The generators keep at most `--window` events per client outstanding (generated
//! but not yet received by the slowest client), below the router's client queue, so what is
//! measured is the delivery rate the router sustains without shedding clients.
//!
//! Each client checks, per switch and monitored DN, that `eventSeq` strictly increases, that
//! the events alternate established (1) / cancelled (2), and at the end that it received exactly
//! `2 × rounds` events per DN: a shortfall counts as losses, an excess as errors. Latency is from
//! the moment a burst was due to each delivery of its events.
//!
//! With `--call-events` the clients register with `callEvents: true` and each pair's round also
//! has a call from the guest to the host, answered and cleared by the switch
//! (`POST /burst {"calls": true}`): 8 more events per pair and round for each client (the
//! guest's off hook, dialing twice, established and released; the host's ringing, established
//! and released), counted and checked (`eventSeq` order per DN, exact numbers) like the
//! hot-desk events.

use super::plan::Plan;
use super::spawn::Environment;
use super::stats::{self, Phase, Progress, Summary, WorkerResult};
use super::ws::{self, WsClient};
use super::{control_post, setup_window, start_workers, BenchError, Outcome, Settings, StartGate};
use serde_json::json;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Barrier};

/// The layout of the run, shared by the generators and the clients.
#[derive(Debug)]
struct Layout {
    plan: Plan,
    switches: usize,
    /// Pairs per switch.
    pairs_on: Vec<usize>,
    /// Pairs per burst.
    batch: usize,
    /// The most bursts per switch and round.
    batches: usize,
    /// The rounds generated in any case (`--rounds`); with `--duration` more may follow.
    rounds: usize,
    /// The rounds whose bursts' due moments are kept (a ring of slots with `--duration`).
    ring: usize,
    switch_names: Vec<String>,
    /// `--call-events`: each pair's round also makes a call.
    calls: bool,
}

/// Call events per round at a pair's guest (the caller) and host (the called device).
const GUEST_CALL_EVENTS: u64 = 5;
const HOST_CALL_EVENTS: u64 = 3;

impl Layout {
    /// The layout of a run: D/2 pairs over the switches, in bursts of `--batch` pairs (by
    /// default what `--window` allows per switch).
    fn new(s: &Settings) -> Result<Layout, BenchError> {
        let (a, plan) = (&s.args, s.plan);
        let pairs_on: Vec<usize> = (0..plan.switches)
            .map(|i| plan.items_on(i, a.dns / 2))
            .collect();
        let most = pairs_on.iter().copied().max().unwrap_or(1).max(1);
        let per_pair = per_pair(a.call_events);
        let fit = usize::try_from(a.window / per_pair)
            .unwrap_or(usize::MAX)
            .max(1);
        let batch = match a.batch {
            Some(b) if b == 0 || b > fit => {
                return Err(BenchError::Setup(format!(
                    "--batch must be 1 to {fit}: each pair yields {per_pair} events per client and a burst must fit in --window {}",
                    a.window
                )))
            }
            Some(b) => b,
            None => (fit / plan.switches).clamp(1, most),
        }
        .min(most);
        // A client is at most `--window` events behind the newest burst, so at most this many
        // rounds: the due moments of older ones are no longer needed.
        let per_round = per_pair * (a.dns / 2).max(1) as u64;
        let ring = match a.duration {
            None => a.rounds,
            Some(_) => usize::try_from(a.window / per_round).unwrap_or(usize::MAX) + 3,
        };
        Ok(Layout {
            plan,
            switches: plan.switches,
            pairs_on,
            batch,
            batches: most.div_ceil(batch),
            rounds: a.rounds,
            ring,
            switch_names: (0..plan.switches).map(Plan::switch_name).collect(),
            calls: a.call_events,
        })
    }

    fn slot(&self, round: usize, switch: usize, batch: usize) -> usize {
        ((round % self.ring.max(1)) * self.switches + switch) * self.batches + batch
    }
}

/// Events per pair and round for each client: 4 hot-desk events, and 8 call events with
/// `--call-events`.
fn per_pair(calls: bool) -> u64 {
    if calls {
        4 + GUEST_CALL_EVENTS + HOST_CALL_EVENTS
    } else {
        4
    }
}

/// State shared between the generators, the clients and the coordinator.
#[derive(Debug)]
struct Shared {
    layout: Layout,
    /// When each burst was due, in nanoseconds since `epoch` (0: not yet).
    due: Vec<AtomicU64>,
    epoch: Instant,
    /// Events per client generated so far (reserved before each burst).
    expected: AtomicU64,
    /// Events each client has received.
    received: Vec<AtomicU64>,
    /// Clients whose connection ended.
    dead: Vec<AtomicBool>,
    /// Set when the generators must stop.
    abort: AtomicBool,
    /// The rounds begun so far (every switch's generator takes part in each).
    rounds_begun: AtomicUsize,
    /// Set once a round was refused (`--rounds` done and `--duration` over).
    rounds_closed: AtomicBool,
    /// Taken to decide whether a new round begins.
    round_lock: std::sync::Mutex<()>,
}

impl Shared {
    /// The state of a run with this layout and `monitors` clients, before it starts.
    fn new(layout: Layout, monitors: usize) -> Shared {
        let slots = layout.ring * layout.switches * layout.batches;
        Shared {
            layout,
            due: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
            expected: AtomicU64::new(0),
            received: (0..monitors).map(|_| AtomicU64::new(0)).collect(),
            dead: (0..monitors).map(|_| AtomicBool::new(false)).collect(),
            abort: AtomicBool::new(false),
            rounds_begun: AtomicUsize::new(0),
            rounds_closed: AtomicBool::new(false),
            round_lock: std::sync::Mutex::new(()),
        }
    }

    /// Whether `round` (0-based) is generated: the first switch to reach it decides for all,
    /// from `--rounds` and, with `--duration`, whether `until` has passed.
    fn may_begin(&self, round: usize, until: Option<Instant>) -> bool {
        let Ok(_guard) = self.round_lock.lock() else {
            return false;
        };
        if round < self.rounds_begun.load(Ordering::Acquire) {
            return true;
        }
        if self.rounds_closed.load(Ordering::Acquire) {
            return false;
        }
        let go = round < self.layout.rounds || until.is_some_and(|u| Instant::now() < u);
        if go {
            self.rounds_begun.store(round + 1, Ordering::Release);
        } else {
            self.rounds_closed.store(true, Ordering::Release);
        }
        go
    }

    /// The rounds begun so far (all of them once the generators are done).
    fn rounds(&self) -> usize {
        self.rounds_begun.load(Ordering::Acquire)
    }

    /// Wait until every connected client has received every event generated, or nothing has
    /// moved for `drain`.
    async fn wait_delivered(&self, drain: Duration) {
        let total = self.expected.load(Ordering::Relaxed);
        let mut last_seen = (u64::MAX, Instant::now());
        while self.slowest().is_some_and(|n| n < total) {
            let sum: u64 = self
                .received
                .iter()
                .map(|r| r.load(Ordering::Relaxed))
                .sum();
            if sum != last_seen.0 {
                last_seen = (sum, Instant::now());
            } else if last_seen.1.elapsed() >= drain {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The fewest events received by a client still connected; `None` when none is.
    fn slowest(&self) -> Option<u64> {
        self.received
            .iter()
            .zip(&self.dead)
            .filter(|(_, d)| !d.load(Ordering::Relaxed))
            .map(|(r, _)| r.load(Ordering::Acquire))
            .min()
    }
}

/// What one monitoring client saw: deliveries are its operations (`ops`, latency from the
/// moment each burst was due), the last one its `finished`.
#[derive(Debug, Default)]
struct ClientResult {
    w: WorkerResult,
    losses: u64,
    out_of_order: u64,
    /// The first client's last event (the payload of `redis-fanout`).
    payload: Option<String>,
}

impl ClientResult {
    fn error(&mut self, progress: &Progress, what: impl FnOnce() -> String) {
        self.w.error(progress, what);
    }

    /// The track of the DN an event (`what`) names; an error when the client did not register it.
    fn track<'t>(
        &mut self,
        tracks: &'t mut HashMap<u64, Track, BuildHasherDefault<DnHasher>>,
        m: &ws::Incoming<'_>,
        what: &str,
        text: &str,
        index: usize,
        progress: &Progress,
    ) -> Option<&'t mut Track> {
        let t = m
            .monitored_dn
            .and_then(|d| d.parse::<u64>().ok())
            .and_then(|d| tracks.get_mut(&d));
        if t.is_none() {
            self.error(progress, || {
                format!(
                    "monitor {index}: {what} for a DN not registered: {}",
                    ws::describe(text)
                )
            });
        }
        t
    }

    /// An event out of order: counted, and the first five described.
    fn disorder(&mut self, progress: &Progress, sample: impl FnOnce() -> String) {
        self.out_of_order += 1;
        progress.error();
        self.w.sample(sample);
    }

    /// The latency of an event of `round` on `t`'s DN, read `now`: from the moment the burst
    /// it belongs to was due (nothing when that moment is not known yet).
    fn record_latency(&mut self, shared: &Shared, round: usize, t: &Track, now: Instant) {
        if let Some(due) = shared
            .due
            .get(shared.layout.slot(round, t.switch, t.batch))
            .map(|d| d.load(Ordering::Acquire))
            .filter(|d| *d > 0)
        {
            self.w
                .latency
                .record(now.saturating_duration_since(shared.epoch + Duration::from_nanos(due)));
        }
    }

    /// Check one message a monitoring client read: an event of one of its DNs (`tracks`) in
    /// order (per DN: eventSeq increasing, established and cancelled in turn, from the DN's
    /// switch), its latency from the moment its burst was due. When it is such an event, the
    /// moment it was counted.
    fn on_message(
        &mut self,
        text: &str,
        tracks: &mut HashMap<u64, Track, BuildHasherDefault<DnHasher>>,
        shared: &Shared,
        index: usize,
        progress: &Progress,
    ) -> Option<Instant> {
        let per_dn = 2 * shared.rounds() as u64;
        let Some(m) = ws::parse(text) else {
            self.error(progress, || {
                format!("monitor {index}: unreadable message {}", ws::describe(text))
            });
            return None;
        };
        if m.call_state.is_some() && shared.layout.calls && m.reference_id.is_none() {
            return self.on_call_event(text, &m, tracks, shared, index, progress);
        }
        if m.message != "EventPrivateInfo" || m.reference_id.is_some() {
            if m.message == "EventLinkDisconnected" {
                self.error(progress, || {
                    format!("monitor {index}: link lost: {}", ws::describe(text))
                });
            }
            return None;
        }
        let now = Instant::now();
        let t = self.track(tracks, &m, "event", text, index, progress)?;
        let layout = &shared.layout;
        let seq = m.event_seq.unwrap_or(0);
        let kind_ok = m.private_msg_id == Some(if t.count % 2 == 0 { 1 } else { 2 });
        let switch_ok = m.switch == layout.switch_names.get(t.switch).map(String::as_str);
        if seq <= t.last_seq || !kind_ok || !switch_ok {
            let (last, nth) = (t.last_seq, t.count + 1);
            self.disorder(progress, || {
                format!(
                    "monitor {index}: out of order after eventSeq {last} (event {nth} of its DN): {}",
                    ws::describe(text)
                )
            });
        }
        let round = usize::try_from(t.count / 2).unwrap_or(usize::MAX);
        self.record_latency(shared, round, t, now);
        t.last_seq = t.last_seq.max(seq);
        t.count += 1;
        if t.count > per_dn {
            self.error(progress, || {
                format!(
                    "monitor {index}: more than {per_dn} events for {}",
                    m.monitored_dn.unwrap_or_default()
                )
            });
        }
        Some(now)
    }

    /// Check a call event (`--call-events`): of one of the client's DNs, in `eventSeq` order
    /// with the DN's other events, no more than the DN's calls make; its latency from the
    /// moment the burst of the round it belongs to was due. The moment it was counted.
    fn on_call_event(
        &mut self,
        text: &str,
        m: &ws::Incoming<'_>,
        tracks: &mut HashMap<u64, Track, BuildHasherDefault<DnHasher>>,
        shared: &Shared,
        index: usize,
        progress: &Progress,
    ) -> Option<Instant> {
        let now = Instant::now();
        let t = self.track(tracks, m, "call event", text, index, progress)?;
        let seq = m.event_seq.unwrap_or(0);
        if seq <= t.last_seq {
            let last = t.last_seq;
            self.disorder(progress, || {
                format!(
                    "monitor {index}: call event out of order after eventSeq {last}: {}",
                    ws::describe(text)
                )
            });
        }
        // The call of a round comes after the round's cancel.
        let round = usize::try_from(t.count.saturating_sub(1) / 2).unwrap_or(usize::MAX);
        self.record_latency(shared, round, t, now);
        t.last_seq = t.last_seq.max(seq);
        t.calls += 1;
        if t.calls > t.calls_per_round * shared.rounds() as u64 {
            self.error(progress, || {
                format!(
                    "monitor {index}: more call events than its calls make: {}",
                    ws::describe(text)
                )
            });
        }
        Some(now)
    }
}

/// Per (switch, DN) bookkeeping of one client.
#[derive(Debug, Clone, Copy)]
struct Track {
    switch: usize,
    batch: usize,
    count: u64,
    last_seq: u64,
    /// Call events received.
    calls: u64,
    /// Call events per round expected (0 without `--call-events`).
    calls_per_round: u64,
}

/// Run the scenario and fill in the summary.
pub async fn run(s: &Settings, env: &Environment, mut summary: Summary) -> Outcome {
    let a = &s.args;
    let plan = s.plan;
    let pairs = a.dns / 2;
    let layout = Layout::new(s)?;
    let batch = layout.batch;
    let controls = env.controls(plan.switches, "fanout")?;
    let urls = (0..a.monitors)
        .map(|i| env.router_for(i))
        .collect::<Result<Vec<_>, _>>()?;
    let shared = Arc::new(Shared::new(layout, a.monitors));
    let dns = Arc::new(tracked_dns(s, batch));
    // With --duration the rounds are not known in advance: the clients go on until stopped.
    let per_round = per_pair(a.call_events) * pairs as u64;
    let per_client = match a.duration {
        None => per_round * a.rounds as u64,
        Some(_) => u64::MAX,
    };
    let (progress, _display) = stats::progress("fanout", &env.window);
    let setup_started = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let done = Arc::new(Barrier::new(a.monitors));
    let started = start_workers(a.monitors, &progress, |i, gate| {
        monitor_client(
            i,
            urls[i].clone(),
            dns.clone(),
            shared.clone(),
            per_client,
            progress.clone(),
            gate,
            stop_rx.clone(),
            done.clone(),
        )
    })
    .await?;
    let start = started.start;
    tokio::time::sleep_until(start.into()).await;
    let until = a.duration.map(|d| start + d);
    let (bursts, setup_errors) = generate_all(&controls, &shared, a.window, until).await;
    progress.set_phase(Phase::Drain);
    shared
        .wait_delivered(Duration::from_secs_f64(a.drain))
        .await;
    let _ = stop_tx.send(true);
    let results = started.results().await?;
    if let Some(e) = setup_errors.first() {
        return Err(BenchError::Setup(format!("generating events failed: {e}")));
    }
    let mut total = WorkerResult::default();
    let (mut losses, mut out_of_order) = (0u64, 0u64);
    let mut payload = None;
    for r in results {
        payload = payload.or(r.payload);
        total.merge(r.w);
        losses += r.losses;
        out_of_order += r.out_of_order;
    }
    // An event out of order is an error too.
    total.errors += out_of_order;
    summary.set("clients", a.monitors);
    summary.set("monitors", a.monitors);
    summary.set("dns", pairs * 2);
    let rounds = shared.rounds();
    summary.set("rounds", rounds);
    if let Some(d) = a.duration {
        summary.set_f("target_duration_s", d.as_secs_f64());
    }
    summary.set("window", a.window);
    summary.set("batch", batch);
    summary.set("call_events", a.call_events);
    summary.set("bursts", bursts);
    summary.losses = losses;
    summary.set_workers(&total, start);
    summary.set("deliveries", total.ops);
    summary.set("expected", per_round * rounds as u64 * a.monitors as u64);
    summary.set("losses", losses);
    summary.set("out_of_order", out_of_order);
    summary.set_f("deliveries_per_s", summary.get_f("ops_per_s"));
    summary.set_setup_time(setup_started, start);
    if let Some(path) = &a.payload_file {
        let text = payload.ok_or_else(|| {
            BenchError::Setup("--payload-file: no event was received to write".into())
        })?;
        std::fs::write(path, text.as_bytes())
            .map_err(|e| BenchError::Setup(format!("--payload-file {}: {e}", path.display())))?;
        summary.set("payload_bytes", text.len());
    }
    Ok(summary)
}

/// Every DN of the run with its switch and burst (bursts of `batch` pairs), and the call
/// events each round gives it with `--call-events`.
fn tracked_dns(s: &Settings, batch: usize) -> Vec<(String, Track)> {
    let (a, plan) = (&s.args, s.plan);
    let pairs = a.dns / 2;
    let mut dns: Vec<(String, Track)> = Vec::with_capacity(pairs * 2);
    for k in 0..pairs {
        let p = plan.pair(k);
        let t = Track {
            switch: p.switch,
            batch: p.local / batch,
            count: 0,
            last_seq: 0,
            calls: 0,
            calls_per_round: 0,
        };
        let calls = |n: u64| Track {
            calls_per_round: if a.call_events { n } else { 0 },
            ..t
        };
        dns.push((p.guest, calls(GUEST_CALL_EVENTS)));
        dns.push((p.host, calls(HOST_CALL_EVENTS)));
    }
    dns
}

/// Run one generator per switch to its end: the bursts sent, and the generators' errors (the
/// first one stops the others).
async fn generate_all(
    controls: &[SocketAddr],
    shared: &Arc<Shared>,
    window: u64,
    until: Option<Instant>,
) -> (u64, Vec<String>) {
    let mut generators = tokio::task::JoinSet::new();
    for (i, control) in controls.iter().copied().enumerate() {
        generators.spawn(generate(i, control, shared.clone(), window, until));
    }
    let mut bursts = 0u64;
    let mut errors = Vec::new();
    while let Some(r) = generators.join_next().await {
        match r {
            Ok(Ok(n)) => bursts += n,
            Ok(Err(e)) => {
                shared.abort.store(true, Ordering::Relaxed);
                errors.push(e);
            }
            Err(e) => errors.push(format!("a generator failed: {e}")),
        }
    }
    (bursts, errors)
}

/// Generate the bursts of one switch; returns how many were sent.
async fn generate(
    switch: usize,
    control: SocketAddr,
    shared: Arc<Shared>,
    window: u64,
    until: Option<Instant>,
) -> Result<u64, String> {
    let layout = &shared.layout;
    let pairs = layout.pairs_on.get(switch).copied().unwrap_or(0);
    let mut sent = 0u64;
    let mut next_round = 0;
    while shared.may_begin(next_round, until) {
        let round = next_round;
        next_round += 1;
        let mut first = 0usize;
        let mut batch = 0usize;
        while first < pairs {
            let len = layout.batch.min(pairs - first);
            let events = per_pair(layout.calls) * len as u64;
            let target = shared.expected.fetch_add(events, Ordering::AcqRel) + events;
            // Wait for room in the window.
            loop {
                if shared.abort.load(Ordering::Relaxed) {
                    return Ok(sent);
                }
                match shared.slowest() {
                    None => return Ok(sent),
                    Some(n) if n + window >= target => break,
                    Some(_) => tokio::time::sleep(Duration::from_micros(500)).await,
                }
            }
            let due = shared.epoch.elapsed().as_nanos().max(1);
            if let Some(slot) = shared.due.get(layout.slot(round, switch, batch)) {
                slot.store(u64::try_from(due).unwrap_or(u64::MAX), Ordering::Release);
            }
            let body = json!({
                "guest": layout.plan.guest_dn(switch, first),
                "host": layout.plan.host_dn(switch, first),
                "pairs": len,
                "count": 1,
                "calls": layout.calls,
            });
            let reply = control_post(control, "/burst", &body).await?;
            let calls = if layout.calls { len } else { 0 };
            if reply["hotdeskEvents"] != json!(2 * len) || reply["calls"] != json!(calls) {
                return Err(format!(
                    "{}: POST /burst {body} answered {reply}",
                    Plan::switch_name(switch)
                ));
            }
            sent += 1;
            first += len;
            batch += 1;
        }
    }
    Ok(sent)
}

/// A hasher for DN numbers (integers the bench chose itself, so no flooding to fear).
#[derive(Default)]
struct DnHasher(u64);

impl Hasher for DnHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

/// One monitoring client: register every DN in monitor mode, then count and check events.
#[allow(clippy::too_many_arguments)]
async fn monitor_client(
    index: usize,
    url: String,
    dns: Arc<Vec<(String, Track)>>,
    shared: Arc<Shared>,
    expected_total: u64,
    progress: Arc<Progress>,
    mut gate: StartGate,
    mut stop: watch::Receiver<bool>,
    done: Arc<Barrier>,
) -> ClientResult {
    let mut out = ClientResult::default();
    let names: Vec<String> = dns.iter().map(|(d, _)| d.clone()).collect();
    let setup = async {
        let mut c = WsClient::connect(&url, &format!("csta-bench-monitor-{index}")).await?;
        // Every client registers the same DNs in the same order, so the router starts few
        // monitors at a time whatever the number of clients: a window of at least 16.
        let window = setup_window(shared.layout.switches, shared.received.len(), 128).max(16);
        let calls = shared.layout.calls;
        c.register_all_with(&names, ("monitor", calls), window, &progress)
            .await?;
        Ok::<_, String>(c)
    };
    let Some(mut c) = gate.check(&format!("monitor {index}"), setup.await).await else {
        return out;
    };
    drop(names);
    // Keyed by the DN's number (every bench DN is 7 digits) with a multiplicative hash: the
    // lookup runs once per delivery, and SipHash over the string showed in the profile.
    let mut tracks: HashMap<u64, Track, BuildHasherDefault<DnHasher>> = dns
        .iter()
        .filter_map(|(d, t)| Some((d.parse::<u64>().ok()?, *t)))
        .collect();
    drop(dns);
    if gate.ready(Ok(())).await.is_none() {
        return out;
    }
    let received = &shared.received[index];
    // The first client keeps its last event: a real event's bytes for `--payload-file`.
    let mut last = None;
    let mut count = 0u64;
    let mut failure = None;
    // Built once: creating it for every event costs more than the check itself.
    let stopped = stop.wait_for(|s| *s);
    tokio::pin!(stopped);
    while count < expected_total {
        let text = tokio::select! {
            biased;
            t = c.recv() => match t {
                Ok(t) => t,
                Err(e) => { failure = Some(e); break; }
            },
            _ = &mut stopped => break,
        };
        let Some(now) = out.on_message(&text, &mut tracks, &shared, index, &progress) else {
            continue;
        };
        if index == 0 {
            last = Some(text);
        }
        count += 1;
        out.w.ops += 1;
        out.w.finished = Some(now);
        received.store(count, Ordering::Release);
        // The shared progress counter is touched once every 64 events, not on each.
        if count.is_multiple_of(64) {
            progress.ops.fetch_add(64, Ordering::Relaxed);
        }
    }
    progress.ops.fetch_add(count % 64, Ordering::Relaxed);
    if let Some(e) = failure {
        shared.dead[index].store(true, Ordering::Relaxed);
        out.error(&progress, || format!("monitor {index}: {e}"));
    }
    out.payload = last.map(|t| t.as_str().to_owned());
    // Every round has begun by now (the generators are done before the clients are stopped).
    let rounds = shared.rounds() as u64;
    let per_dn = 2 * rounds;
    out.losses = tracks
        .values()
        .map(|t| {
            per_dn.saturating_sub(t.count) + (t.calls_per_round * rounds).saturating_sub(t.calls)
        })
        .sum();
    super::leave_together(&done, &progress).await;
    c.close().await;
    out
}
