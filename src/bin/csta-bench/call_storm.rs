//! `call-storm`: hot-desk requests on a switch's DNs while one DN of the switch takes a storm
//! of calls.
//!
//! A queue or hunt-group DN can take tens of thousands of calls, and a switch may never report
//! some of them cleared; the router tracks every call of a monitored DN (for connIds and the
//! default call of account codes) on the thread that also serves the switch's other DNs. This
//! scenario measures what the storm costs the other DNs:
//!
//! - the storm DN is `sw1`'s called device `2199999`, registered by a client of its own; the
//!   simulator of `sw1` makes `--calls` answered calls to it from `1199999`
//!   (`POST /calls/burst`, `--batch` calls per request, default 1,000), as fast as it can or
//!   at `--call-rate` calls per second, and never clears them (Delivered and Established on
//!   the DN's monitor for each);
//! - meanwhile C clients (`--clients`) hot-desk the items `0..N` (`--dns`, numbered as in
//!   login-storm, guests and hosts registered by the client that owns them): associate, then
//!   cancel, one request at a time per client, from the start of the storm until it is over
//!   and every client has done at least `--rounds` cycles.
//!
//! The storm is over for the router when it has read every event of it: the storm client then
//! sends a hot-desk cancel on the storm DN, whose answer comes on the link behind the storm's
//! events (its error reply, 43, marks the end; a 57 is retried). `ops`, the latencies and
//! `errors` are the items' hot-desk requests (a 57 TIMEOUT is an error); `calls`, `storm_s`
//! (the simulator making the calls) and `absorbed_s` (the router done with them), both from
//! the start, describe the storm. With `--switches 1` every item shares the storm's switch.

use super::plan::{Pair, Plan};
use super::spawn::Environment;
use super::stats::{self, Progress, Summary, WorkerResult};
use super::ws::{describe, quote, WsClient};
use super::{control_post, share_client, start_workers, BenchError, Outcome, Settings, StartGate};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Calls per `POST /calls/burst` unless `--batch` says otherwise.
const DEFAULT_BATCH: usize = 1000;

/// How long after the storm the router may take to read the last of its events.
const ABSORB_LIMIT: Duration = Duration::from_secs(300);

/// The storm's called device (on `sw1`): the last local index, which no item uses.
pub fn storm_dn(plan: &Plan) -> String {
    plan.host_dn(0, plan.per_switch() - 1)
}

/// The storm's calling device (on `sw1`).
pub fn caller_dn(plan: &Plan) -> String {
    plan.guest_dn(0, plan.per_switch() - 1)
}

/// Run the scenario and fill in the summary.
pub async fn run(s: &Settings, env: &Environment, mut summary: Summary) -> Outcome {
    let a = &s.args;
    if a.direct {
        return Err(BenchError::Setup(
            "call-storm measures the router; it has no --direct mode".into(),
        ));
    }
    let control = env
        .sims
        .first()
        .and_then(|sim| sim.control)
        .ok_or_else(|| {
            BenchError::Setup("call-storm needs sw1's simulator control API address".into())
        })?;
    let url = env.router()?;
    let urls = (0..a.clients)
        .map(|i| env.router_for(i))
        .collect::<Result<Vec<_>, _>>()?;
    let (progress, _display) = stats::progress("call-storm", &env.window);
    let setup_started = Instant::now();
    let mut storm_client = WsClient::connect(&url, "csta-bench-storm").await?;
    storm_client
        .register_all(&[storm_dn(&s.plan)], "share", 1, &progress)
        .await?;
    let storming = Arc::new(AtomicBool::new(true));
    let started = start_workers(a.clients, &progress, |i, gate| {
        let pairs = s.plan.pairs_of(a.dns, a.clients, i);
        client(
            i,
            urls[i].clone(),
            pairs,
            s.clone(),
            storming.clone(),
            progress.clone(),
            gate,
        )
    })
    .await?;
    let start = started.start;
    let calls = a.calls;
    let batch = a.batch.unwrap_or(DEFAULT_BATCH).max(1) as u64;
    let drain = Duration::from_secs_f64(a.drain.max(1.0));
    let mut storm_s = 0.0;
    let storm = async {
        tokio::time::sleep_until(start.into()).await;
        let mut made = 0u64;
        while made < calls {
            if let Some(rate) = a.call_rate {
                // Batch k is due when k batches' worth of calls fit in the rate.
                let due = start + Duration::from_secs_f64(made as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
            }
            let n = batch.min(calls - made);
            let body = json!({"from": caller_dn(&s.plan), "to": storm_dn(&s.plan), "count": n});
            control_post(control, "/calls/burst", &body).await?;
            made += n;
        }
        storm_s = start.elapsed().as_secs_f64();
        // A request on the storm DN: its answer follows the storm's events on the link.
        let marker = format!(
            r#""message":"RequestPrivateService","thisDn":{},"privateMsgId":2,"extensions":{{}}"#,
            quote(&storm_dn(&s.plan))
        );
        // A router far behind may time the marker out (57) or not answer within --drain:
        // ask again, for at most ABSORB_LIMIT.
        let asked = Instant::now();
        loop {
            match storm_client.call(&marker, drain).await {
                Ok(reply) if reply["errorCode"] != 57 => break,
                Ok(_) | Err(_) if asked.elapsed() < ABSORB_LIMIT => {}
                Ok(reply) => return Err(format!("the router still times requests on the storm DN out {} s after the storm: {reply}", ABSORB_LIMIT.as_secs())),
                Err(e) => return Err(format!("{e} ({} s after the storm)", ABSORB_LIMIT.as_secs())),
            }
        }
        Ok::<_, String>(made)
    };
    let storm_result = storm.await;
    let absorbed_s = start.elapsed().as_secs_f64();
    storming.store(false, Ordering::Relaxed);
    let results = started.results().await?;
    storm_client.close().await;
    let made = storm_result.map_err(BenchError::Setup)?;
    let total: WorkerResult = results.into_iter().collect();
    summary.set("clients", a.clients);
    summary.set("items", a.dns);
    summary.set_workers(&total, start);
    summary.set("calls", made);
    if let Some(rate) = a.call_rate {
        summary.set_f("call_rate", rate);
    }
    summary.set_f("storm_s", storm_s);
    summary.set_f("absorbed_s", absorbed_s);
    summary.set_f("calls_per_s", made as f64 / absorbed_s.max(1e-9));
    summary.set_setup_time(setup_started, start);
    Ok(summary)
}

async fn client(
    index: usize,
    url: String,
    pairs: Vec<Pair>,
    s: Settings,
    storming: Arc<AtomicBool>,
    progress: Arc<Progress>,
    mut gate: StartGate,
) -> WorkerResult {
    let mut out = WorkerResult::default();
    let dns: Vec<String> = pairs
        .iter()
        .flat_map(|p| [p.guest.clone(), p.host.clone()])
        .collect();
    let setup = share_client(&s, &url, index, &dns, &progress).await;
    let Some((mut c, _)) = gate.check(&format!("client {index}"), setup).await else {
        return out;
    };
    if gate.ready(Ok(())).await.is_none() || pairs.is_empty() {
        return out;
    }
    let within = Duration::from_secs_f64(s.args.drain.max(1.0));
    let mut cycles = 0usize;
    'run: while storming.load(Ordering::Relaxed) || cycles < s.args.rounds {
        for p in &pairs {
            for (msg_id, extensions) in [
                (1, format!(r#"{{"HOST_DN":{}}}"#, quote(&p.host))),
                (2, "{}".to_owned()),
            ] {
                let fields = format!(
                    r#""message":"RequestPrivateService","thisDn":{},"privateMsgId":{msg_id},"extensions":{extensions}"#,
                    quote(&p.guest)
                );
                let sent = Instant::now();
                match c.call(&fields, within).await {
                    Ok(v) if v["message"] == "EventPrivateInfo" => {
                        out.succeeded(&progress, sent);
                    }
                    Ok(v) => {
                        out.latency.record(sent.elapsed());
                        out.error(&progress, || {
                            format!(
                                "client {index}: service {msg_id} on {}: {}",
                                p.guest,
                                describe(&v.to_string())
                            )
                        });
                        if msg_id == 1 {
                            // No association to cancel: on to the next pair.
                            break;
                        }
                    }
                    Err(e) => {
                        out.error(&progress, || format!("client {index}: {e}"));
                        break 'run;
                    }
                }
            }
        }
        cycles += 1;
    }
    c.close().await;
    out
}
