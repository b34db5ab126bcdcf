#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Ten thousand sessions opened and abandoned against the router binary (SPEC §11: a session
//! whose connection goes without `RequestClose` lingers for `session-linger`, then ends): in
//! batches of 100 clients that open, register one DN and drop their TCP connection without a
//! close frame. The sessions really linger, and after the linger everything they held is back
//! at its baseline: lingering sessions, registered DNs, extension actors and the simulators'
//! monitors.
//!
//! Memory: the warm-up registers every DN once (an extension actor each) and lingers out a
//! batch, so that the allocator's arenas are warm; the first wave of 10,000 may then grow the
//! router's RSS by less than [`FIRST_WAVE_BOUND_MIB`] (what the peak of some 2,000 lingering
//! sessions used, which the allocator keeps for later ones), and a second wave of 10,000 by
//! less than [`RSS_BOUND_MIB`]: memory held per session (a leak) shows there, 10 MiB at
//! 1 KiB a session.
//!
//! Batches start at most every 100 ms, so that how many sessions linger at once (and so the
//! memory the allocator keeps after them) does not depend on the machine's speed.

mod common;
use common::{process, procfs, router};

use process::RouterProcess;
use router::Client;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const SESSIONS: usize = 10_000;
const BATCH: usize = 100;
/// DNs 4000-7999: sw1 owns 4000-5999, sw2 6000-7999.
const DNS: usize = 4000;
/// A batch starts at most this often: about 1,000 sessions a second, some 2,000 lingering.
const BATCH_EVERY: Duration = Duration::from_millis(100);
/// The growth of resident memory a wave of sessions may leave once the allocator is warm.
const RSS_BOUND_MIB: f64 = 10.0;
/// The growth the first wave may leave over the warm-up's: the lingering peak's own memory
/// that the allocator keeps.
const FIRST_WAVE_BOUND_MIB: f64 = 20.0;

fn config() -> String {
    process::two_switches(
        "session-linger = \"2s\"\nmax-clients = 20000\nclient-ping-interval = \"60s\"",
        "kpl-interval = \"0s\"",
        "",
        1,
    )
}

/// What the sessions hold, in the router and on the switches.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Levels {
    lingering: f64,
    registered_dns: f64,
    extension_actors: f64,
    monitors: usize,
}

/// The sum of a metric over its series (every switch).
fn sum(metrics: &HashMap<String, f64>, name: &str) -> f64 {
    metrics
        .iter()
        .filter(|(series, _)| series.as_str() == name || series.starts_with(&format!("{name}{{")))
        .map(|(_, v)| v)
        .sum()
}

async fn levels(r: &RouterProcess) -> Levels {
    let (_, m) = r.scrape().await;
    let mut monitors = 0;
    for sim in &r.controls {
        monitors += sim.state().await["monitors"].as_array().unwrap().len();
    }
    Levels {
        lingering: m["csta_router_sessions_lingering"],
        registered_dns: sum(&m, "csta_router_registered_dns"),
        extension_actors: sum(&m, "csta_router_extension_actors"),
        monitors,
    }
}

/// Poll until the levels are `baseline` again (within `within`): how long it took.
async fn back_to(r: &RouterProcess, baseline: Levels, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let now = levels(r).await;
        if now == baseline {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "not back to the baseline within {within:?}: {now:?}, baseline {baseline:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sessions `first..first + BATCH`, concurrently: each opens, registers its DN and is kept;
/// then all are dropped at once (no close frame: the TCP connections just close).
async fn batch(url: &str, first: usize) {
    let tasks: Vec<_> = (first..first + BATCH)
        .map(|i| {
            let url = url.to_owned();
            tokio::spawn(async move {
                let mut c = Client::open(&url, None, 2).await;
                c.register(&(4000 + i % DNS).to_string()).await;
                c
            })
        })
        .collect();
    let mut clients = Vec::with_capacity(BATCH);
    for t in tasks {
        clients.push(t.await.unwrap());
    }
    drop(clients);
}

fn rss_mib(r: &RouterProcess) -> (f64, f64) {
    procfs::memory_mib(r.child.id()).expect("the router's /proc status")
}

/// One wave of [`SESSIONS`] sessions, then their release: what it took and left.
struct Wave {
    took: Duration,
    most_lingering: f64,
    released: Duration,
    rss_after: f64,
    rss_peak: f64,
}

/// [`SESSIONS`] sessions in sequential batches, paced by [`BATCH_EVERY`]; then wait until the
/// levels are `baseline` again (within 10 s).
async fn wave(r: &RouterProcess, baseline: Levels) -> Wave {
    let url = r.url();
    let started = Instant::now();
    let mut most_lingering = 0.0f64;
    for b in 0..SESSIONS / BATCH {
        let due = started + BATCH_EVERY * u32::try_from(b).unwrap();
        tokio::time::sleep_until(due.into()).await;
        batch(&url, b * BATCH).await;
        let (_, m) = r.scrape().await;
        most_lingering = most_lingering.max(m["csta_router_sessions_lingering"]);
    }
    let took = started.elapsed();
    let released = back_to(r, baseline, Duration::from_secs(10)).await;
    let (rss_after, rss_peak) = rss_mib(r);
    Wave {
        took,
        most_lingering,
        released,
        rss_after,
        rss_peak,
    }
}

#[test]
fn ten_thousand_abandoned_sessions_linger_then_release_everything() {
    let r = RouterProcess::start("session-scale", &config());
    let rt = process::runtime();
    rt.block_on(async {
        r.wait_connected(&["sw1", "sw2"]).await;
        let start = levels(&r).await;
        assert_eq!(start.lingering, 0.0);

        // Warm-up, so that the allocator's arenas are warm: every DN registered once by one
        // client (an extension actor each, as the waves' sessions will have), and one batch
        // lingered out.
        let mut all = Client::open(&r.url(), None, 2).await;
        for dn in 4000..4000 + DNS {
            all.register(&dn.to_string()).await;
        }
        let closed = all
            .request(serde_json::json!({"message": "RequestClose"}))
            .await;
        assert_eq!(closed["message"], "EventClosed");
        batch(&r.url(), 0).await;
        let warm_up = back_to(&r, start, Duration::from_secs(10)).await;
        let baseline = levels(&r).await;
        let (rss_base, _) = rss_mib(&r);
        eprintln!(
            "warm-up batch released {warm_up:?} after its drop; baseline {baseline:?}, RSS \
             {rss_base:.1} MiB"
        );

        let waves = [
            (1, FIRST_WAVE_BOUND_MIB, "the warm-up"),
            (2, RSS_BOUND_MIB, "the first wave"),
        ];
        let mut rss_before = rss_base;
        for (n, bound, over) in waves {
            let w = wave(&r, baseline).await;
            let growth = w.rss_after - rss_before;
            eprintln!(
                "wave {n}: {SESSIONS} sessions opened, registered and abandoned in {:?} ({:.0} \
                 sessions/s), at most {} lingering at a batch's end; back to the baseline {:?} \
                 after the last batch; RSS {:.1} MiB (growth {growth:.1} over {over}, peak {:.1})",
                w.took,
                SESSIONS as f64 / w.took.as_secs_f64(),
                w.most_lingering,
                w.released,
                w.rss_after,
                w.rss_peak,
            );
            assert!(
                w.most_lingering > 0.0,
                "wave {n}: no session ever lingered after its connection dropped"
            );
            assert!(
                growth < bound,
                "wave {n}: the router's RSS grew {growth:.1} MiB over {over} (from \
                 {rss_before:.1} to {:.1}; at most {bound} allowed)",
                w.rss_after,
            );
            rss_before = w.rss_after;
        }
    });
    r.stop();
}
