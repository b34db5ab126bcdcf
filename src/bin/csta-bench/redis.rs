//! `redis-fanout`: the yardstick for `fanout`. A running `redis-server` publishes messages of
//! the size of one of the router's events to M subscribers on one channel; the subscribers are
//! as light as the bench's own WebSocket clients (they count messages and check their order,
//! nothing more). Deliveries per second are comparable with `fanout`'s.
//!
//! ```text
//! redis-server --port 6390 --save '' --appendonly no &
//! csta-bench redis-fanout --redis 127.0.0.1:6390 --monitors 100 --dns 10000 --rounds 1
//! ```
//! publishes 2 × D × R messages (what `fanout` delivers to each client), with at most
//! `--window` messages outstanding per subscriber, as `fanout` does.

use super::stats::Summary;
use super::{Args, BenchError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A message like one `EventPrivateInfo` of the router (same fields and size, about 190
/// bytes), so that subscribers parse the same JSON the bench's WebSocket clients parse.
fn event_like(seq: u64) -> Vec<u8> {
    format!(
        r#"{{"eventSeq":{seq},"message":"EventPrivateInfo","monitoredDn":"1100000","otherDn":"2100000","privateMsgId":1,"switch":"sw1","thisDn":"1100000","time":"2026-11-25T05:49:19.123Z"}}"#
    )
    .into_bytes()
}
const CHANNEL: &str = "csta-bench";

fn setup(e: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(format!("redis-fanout: {e}"))
}

/// Run the comparison against the redis-server at `--redis`.
pub async fn run(args: &Args) -> Result<Summary, BenchError> {
    let addr = args
        .redis
        .ok_or_else(|| setup("give --redis HOST:PORT of a running redis-server"))?;
    let subscribers = args.monitors.max(1);
    let messages = (2 * args.dns.max(1) * args.rounds.max(1)) as u64;
    let window = args.window.max(1);
    let counts: Arc<Vec<AtomicU64>> =
        Arc::new((0..subscribers).map(|_| AtomicU64::new(0)).collect());
    let disorder = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..subscribers {
        let s = subscribe(addr).await?;
        let (counts, disorder) = (counts.clone(), disorder.clone());
        tasks.push(tokio::spawn(async move {
            subscriber(s, i, messages, counts, disorder).await;
        }));
    }
    let mut publisher = TcpStream::connect(addr).await.map_err(setup)?;
    publisher.set_nodelay(true).map_err(setup)?;
    let started = Instant::now();
    let mut sent = 0u64;
    let mut batch = Vec::with_capacity(64 * 1024);
    let mut replies = vec![0u8; 64 * 1024];
    while sent < messages {
        // Keep at most `window` messages outstanding for the slowest subscriber.
        let slowest = counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0);
        if sent >= slowest + window {
            tokio::time::sleep(Duration::from_micros(200)).await;
            continue;
        }
        let n = (slowest + window - sent).min(messages - sent).min(256);
        batch.clear();
        for k in 0..n {
            let payload = event_like(sent + k);
            batch.extend_from_slice(
                format!(
                    "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{CHANNEL}\r\n${}\r\n",
                    CHANNEL.len(),
                    payload.len()
                )
                .as_bytes(),
            );
            batch.extend_from_slice(&payload);
            batch.extend_from_slice(b"\r\n");
        }
        publisher.write_all(&batch).await.map_err(setup)?;
        // One `:N\r\n` reply per PUBLISH.
        let mut got = 0;
        while got < n {
            let r = publisher.read(&mut replies).await.map_err(setup)?;
            if r == 0 {
                return Err(setup("redis closed the publisher connection"));
            }
            got += replies[..r].iter().filter(|b| **b == b':').count() as u64;
        }
        sent += n;
    }
    let deadline = Instant::now() + Duration::from_secs_f64(args.drain);
    while counts.iter().any(|c| c.load(Ordering::Relaxed) < messages) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    for t in &tasks {
        t.abort();
    }
    let delivered: u64 = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    let expected = messages * subscribers as u64;
    let mut summary = Summary::default();
    summary.set("scenario", "redis-fanout");
    summary.set("mode", "redis");
    summary.set("switches", 0);
    summary.set("clients", subscribers as u64);
    summary.set("ops", delivered);
    summary.losses = expected.saturating_sub(delivered);
    summary.errors = disorder.load(Ordering::Relaxed);
    summary.set("errors", summary.errors);
    summary.set("losses", summary.losses);
    summary.set("expected", expected);
    summary.set("payload_bytes", event_like(messages).len() as u64);
    let rate = delivered as f64 / elapsed.as_secs_f64().max(1e-9);
    summary.set_f("ops_per_s", rate);
    summary.set_f("deliveries_per_s", rate);
    summary.set_f("duration_s", elapsed.as_secs_f64());
    for key in ["p50_ms", "p99_ms", "p999_ms"] {
        summary.set(key, serde_json::Value::Null);
    }
    Ok(summary)
}

/// A connection to the redis-server at `addr` subscribed to the channel.
async fn subscribe(addr: std::net::SocketAddr) -> Result<TcpStream, BenchError> {
    let mut s = TcpStream::connect(addr).await.map_err(setup)?;
    s.set_nodelay(true).map_err(setup)?;
    let cmd = format!(
        "*2\r\n$9\r\nSUBSCRIBE\r\n${}\r\n{CHANNEL}\r\n",
        CHANNEL.len()
    );
    s.write_all(cmd.as_bytes()).await.map_err(setup)?;
    // The subscription confirmation: `*3 $9 subscribe $ch :1`.
    let mut confirm = vec![0u8; 256];
    let n = s.read(&mut confirm).await.map_err(setup)?;
    if !confirm[..n].windows(9).any(|w| w == b"subscribe") {
        return Err(setup("redis did not confirm the subscription"));
    }
    Ok(s)
}

/// Count `message` pushes, parse each payload as JSON (as the bench's WebSocket clients
/// parse each event) and check its `eventSeq`.
async fn subscriber(
    mut s: TcpStream,
    index: usize,
    messages: u64,
    counts: Arc<Vec<AtomicU64>>,
    disorder: Arc<AtomicU64>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(256 * 1024);
    let mut chunk = vec![0u8; 128 * 1024];
    let marker = b"$7\r\nmessage\r\n";
    let mut expected_seq = 0u64;
    let mut count = 0u64;
    while count < messages {
        let n = match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        // Each push: *3 $7 message $<len> <channel> $<len> <payload>
        while let Some(pos) = find(&buf[at..], marker) {
            let start = at + pos + marker.len();
            let Some((_channel, after)) = bulk(&buf, start) else {
                break;
            };
            let Some((payload, end)) = bulk(&buf, after) else {
                break;
            };
            // The same reading as the WebSocket subscribers' (`ws::parse`).
            let seq = std::str::from_utf8(payload)
                .ok()
                .and_then(super::ws::parse)
                .and_then(|m| m.event_seq);
            if seq != Some(expected_seq) {
                disorder.fetch_add(1, Ordering::Relaxed);
            }
            expected_seq += 1;
            count += 1;
            at = end;
        }
        buf.drain(..at);
        if let Some(c) = counts.get(index) {
            c.store(count, Ordering::Relaxed);
        }
    }
}

/// A RESP bulk string `$<n>\r\n<bytes>\r\n` at `at`: its bytes and where the next item starts.
fn bulk(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    if rest.first() != Some(&b'$') {
        return None;
    }
    let line_end = find(rest, b"\r\n")?;
    let n: usize = std::str::from_utf8(&rest[1..line_end]).ok()?.parse().ok()?;
    let body = at + line_end + 2;
    let end = body + n + 2;
    if buf.len() < end {
        return None;
    }
    Some((&buf[body..body + n], end))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
