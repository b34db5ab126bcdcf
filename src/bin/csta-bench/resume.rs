//! `resume`: how long a desktop that lost its connection waits for what it missed.
//!
//! For each of `--rounds` rounds: a desktop opens a session on the first router (the first
//! node with `--cluster`), registers a guest of `sw1` and loses its connection (dropped, no
//! close frame); the phone then makes `--events` hot-desk events, which a watcher on the same
//! router sees; the desktop reconnects (to the second node with `--cluster 2` or more, else to
//! the same router) with `resume` and reads the replay. The times are from sending the
//! `RequestOpen` to the first replayed event (`resume_first_ms`) and to the last
//! (`resume_all_ms`); every event must come once, in `eventSeq` order. With `--dns N` the
//! desktop is a monitoring application: it registers N guests of `sw1` in monitor mode (the
//! events are on the first), and the resume takes all N registrations along.

use super::spawn::Environment;
use super::stats::{median, Latency, Summary};
use super::ws::{quote, WsClient};
use super::{control_post, BenchError, Outcome, Settings};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// How long each step may take.
const STEP: Duration = Duration::from_secs(30);

/// Run the scenario and fill in the summary.
pub async fn run(s: &Settings, env: &Environment, mut summary: Summary) -> Outcome {
    let home = env.router()?;
    let away = env
        .router_urls
        .get(1)
        .cloned()
        .unwrap_or_else(|| home.clone());
    let control = env.controls(1, "resume")?[0];
    let host = s.plan.host_dn(0, 0);
    let monitored: Vec<String> = (0..s.args.dns.max(1))
        .map(|i| s.plan.guest_dn(0, i))
        .collect();
    let events = s.args.events.max(2) / 2 * 2;
    let started = Instant::now();
    let mut latency = Latency::new();
    let (mut firsts, mut alls) = (Vec::new(), Vec::new());
    for round in 0..s.args.rounds {
        if round > 0 {
            // A session replays nothing published before it opened (less a clock margin):
            // the previous round's events stay out of this one's.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let (first, all) = one_round(&home, &away, control, (&monitored, &host), events).await?;
        eprintln!(
            "resume {}: first replayed event after {first:.1} ms, all {events} after {all:.1} ms",
            round + 1
        );
        latency.record(Duration::from_secs_f64(all / 1000.0));
        firsts.push(first);
        alls.push(all);
    }
    summary.set("clients", 2);
    summary.set("registrations", monitored.len());
    summary.set("events", events);
    summary.set("resumed_on_another_node", home != away);
    summary.set_measure(alls.len() as u64, started.elapsed(), &latency);
    summary.set_f("resume_first_ms", median(&firsts));
    summary.set_f("resume_all_ms", median(&alls));
    summary.set(
        "resume_first_ms_all",
        firsts
            .iter()
            .map(|t| (t * 10.0).round() / 10.0)
            .collect::<Vec<f64>>(),
    );
    Ok(summary)
}

/// One round: the times to the first replayed event and to the last, in milliseconds.
async fn one_round(
    home: &str,
    away: &str,
    control: std::net::SocketAddr,
    (monitored, host): (&[String], &str),
    events: usize,
) -> Result<(f64, f64), BenchError> {
    let guest = monitored.first().map_or("", String::as_str);
    let register = format!(
        r#""message":"RequestRegisterAddress","thisDn":{}"#,
        quote(guest)
    );
    let mut watcher = WsClient::connect(home, "csta-bench-watcher").await?;
    expect(&watcher.call(&register, STEP).await?, "EventRegistered")?;
    let (mut desk, reply) = WsClient::connect_with(home, "csta-bench-desk", "").await?;
    let id = reply["sessionId"].as_str().unwrap_or_default().to_owned();
    if monitored.len() == 1 {
        expect(&desk.call(&register, STEP).await?, "EventRegistered")?;
    } else {
        let progress = super::stats::Progress::default();
        desk.register_all(monitored, "monitor", 256, &progress)
            .await?;
    }
    drop(desk);
    control_post(
        control,
        "/burst",
        &json!({"guest": guest, "host": host, "count": events / 2}),
    )
    .await?;
    let seen = read_events(&mut watcher, guest, events, |_| {}).await?;
    let resume = format!(r#","resume":{{"sessionId":{}}}"#, quote(&id));
    let sent = Instant::now();
    let (mut desk, reply) = WsClient::connect_with(away, "csta-bench-desk", &resume).await?;
    if reply["resumed"] != true || reply["replayed"] != json!(events) {
        return Err(BenchError::Setup(format!(
            "the resume did not replay the {events} events: {reply}"
        )));
    }
    let mut first = None;
    let replayed = read_events(&mut desk, guest, events, |_| {
        first.get_or_insert_with(|| sent.elapsed());
    })
    .await?;
    let all = sent.elapsed();
    if replayed != seen {
        return Err(BenchError::Setup(
            "the replay differs from what the watcher saw (missing, duplicated or out of order)"
                .into(),
        ));
    }
    desk.close().await;
    watcher.close().await;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok((ms(first.unwrap_or(all)), ms(all)))
}

/// Read `n` events of `dn` (skipping anything else): their `eventSeq`s, calling `each` as each
/// comes.
async fn read_events(
    c: &mut WsClient,
    dn: &str,
    n: usize,
    mut each: impl FnMut(u64),
) -> Result<Vec<u64>, BenchError> {
    let mut seqs = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + STEP;
    while seqs.len() < n {
        let text = tokio::time::timeout_at(deadline, c.recv())
            .await
            .map_err(|_| {
                BenchError::Setup(format!("{} of {n} events within {STEP:?}", seqs.len()))
            })??;
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        if v["monitoredDn"] == dn {
            let seq = v["eventSeq"].as_u64().unwrap_or(0);
            each(seq);
            seqs.push(seq);
        }
    }
    Ok(seqs)
}

fn expect(reply: &Value, message: &str) -> Result<(), BenchError> {
    if reply["message"] == message {
        Ok(())
    } else {
        Err(BenchError::Setup(format!(
            "expected {message}, got {reply}"
        )))
    }
}
