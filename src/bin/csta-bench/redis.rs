//! `redis-fanout`: the yardstick for `fanout`. A `redis-server` (running, `--redis`, or started
//! by the bench, `--spawn`) publishes messages of the size of one of the router's events to M
//! subscribers on one channel; the subscribers are as light as the bench's own WebSocket
//! clients (they read with the same buffer size, parse each message as JSON and check its
//! order, nothing more). Deliveries per second are comparable with `fanout`'s, and so is
//! redis-server's own CPU per delivery (`cpu_redis_us_per_delivery`: its utime + stime from
//! `/proc` over the measured window, from the first publish to the last delivery) with the
//! router's (`cpu_router_us_per_delivery`).
//!
//! ```text
//! csta-bench fanout --spawn --switches 4 --dns 4000 --monitors 100 --rounds 5 --payload-file ev.json
//! csta-bench redis-fanout --spawn --monitors 100 --dns 4000 --rounds 5 --payload-file ev.json
//! ```
//! publishes 2 × D × R messages (what `fanout` delivers to each client) from one pipelined
//! publisher, with at most `--window` messages outstanding per subscriber, as `fanout` does.
//! With `--payload-file` each message is the bytes of a real router event (written by a
//! `fanout` run), its `eventSeq` replaced by the message's number with as many digits (more
//! only when the numbers need them); without, a synthetic `EventPrivateInfo` of the same
//! fields.

use super::spawn::ChildGuard;
use super::stats::Summary;
use super::{procfs, ws, Args, BenchError};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The synthetic message: like one `EventPrivateInfo` of the router (same fields and size,
/// about 190 bytes), its `eventSeq` first.
const SYNTHETIC: &str = r#"{"eventSeq":0,"message":"EventPrivateInfo","monitoredDn":"1100000","otherDn":"2100000","privateMsgId":1,"switch":"sw1","thisDn":"1100000","time":"2026-11-25T05:49:19.123Z"}"#;
const CHANNEL: &str = "csta-bench";
/// The key whose number each message replaces.
const SEQ_KEY: &[u8] = br#""eventSeq":"#;

fn setup(e: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(format!("redis-fanout: {e}"))
}

/// The messages published: an event's bytes around its `eventSeq` number.
#[derive(Debug)]
struct Payload {
    head: Vec<u8>,
    tail: Vec<u8>,
    /// The number of the first message (then one more per message).
    first: u64,
    /// Whether the bytes are a real router event's.
    real: bool,
}

impl Payload {
    /// From `--payload-file`, or the synthetic message.
    fn new(file: Option<&std::path::Path>) -> Result<Payload, BenchError> {
        let (bytes, real) = match file {
            Some(path) => (
                std::fs::read(path).map_err(|e| {
                    BenchError::Setup(format!("--payload-file {}: {e}", path.display()))
                })?,
                true,
            ),
            None => (SYNTHETIC.as_bytes().to_vec(), false),
        };
        let at = find(&bytes, SEQ_KEY).ok_or_else(|| {
            BenchError::Setup("--payload-file: the file is not an event with an eventSeq".into())
        })? + SEQ_KEY.len();
        let digits = bytes[at..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let first = if real {
            10u64.pow(u32::try_from(digits.clamp(1, 18) - 1).unwrap_or(0))
        } else {
            0
        };
        Ok(Payload {
            head: bytes[..at].to_vec(),
            tail: bytes[at + digits..].to_vec(),
            first,
            real,
        })
    }

    /// Append message `k` to `out`.
    fn write(&self, k: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.head);
        out.extend_from_slice((self.first + k).to_string().as_bytes());
        out.extend_from_slice(&self.tail);
    }

    /// The length of message `k`.
    fn len(&self, k: u64) -> usize {
        let mut v = Vec::new();
        self.write(k, &mut v);
        v.len()
    }
}

/// The redis-server of the run: its address, its process ID when known, and the process when
/// the bench started it (`--spawn`: default configuration, no persistence, a free loopback
/// port).
async fn server(args: &Args) -> Result<(SocketAddr, Option<u32>, Option<ChildGuard>), BenchError> {
    if !args.spawn {
        let addr = args.redis.ok_or_else(|| {
            setup("give --redis HOST:PORT (and --redis-pid PID) of a running redis-server, or --spawn")
        })?;
        return Ok((addr, args.redis_pid, None));
    }
    if args.redis.is_some() || args.redis_pid.is_some() {
        return Err(setup(
            "--spawn starts a redis-server: give --redis and --redis-pid without it",
        ));
    }
    let port = super::spawn::free_port().map_err(setup)?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| setup(format!("--spawn needs redis-server on the PATH: {e}")))?;
    let mut guard = ChildGuard::new("redis-server".into(), child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_err() {
        if let Some(status) = guard.try_wait() {
            return Err(setup(format!("redis-server exited ({status})")));
        }
        if Instant::now() > deadline {
            return Err(setup("redis-server did not listen within 10 s"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = guard.pid();
    Ok((addr, Some(pid), Some(guard)))
}

/// Run the comparison.
pub async fn run(args: &Args) -> Result<Summary, BenchError> {
    let (addr, pid, _server) = server(args).await?;
    let payload = Arc::new(Payload::new(args.payload_file.as_deref())?);
    let subscribers = args.monitors.max(1);
    let messages = (2 * args.dns.max(1) * args.rounds.max(1)) as u64;
    let counts: Arc<Vec<AtomicU64>> =
        Arc::new((0..subscribers).map(|_| AtomicU64::new(0)).collect());
    let disorder = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..subscribers {
        let s = subscribe(addr).await?;
        let (counts, disorder) = (counts.clone(), disorder.clone());
        let first = payload.first;
        tasks.push(tokio::spawn(async move {
            subscriber(s, i, (first, messages), counts, disorder).await;
        }));
    }
    let mut publisher = TcpStream::connect(addr).await.map_err(setup)?;
    publisher.set_nodelay(true).map_err(setup)?;
    let cpu = || pid.and_then(|p| procfs::cpu_seconds(&p.to_string()));
    let cpu_start = cpu();
    let started = Instant::now();
    publish(
        &mut publisher,
        &payload,
        messages,
        args.window.max(1),
        &counts,
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs_f64(args.drain);
    while counts.iter().any(|c| c.load(Ordering::Relaxed) < messages) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    let cpu_end = cpu();
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
    summary.set("monitors", subscribers as u64);
    summary.set("ops", delivered);
    summary.losses = expected.saturating_sub(delivered);
    summary.errors = disorder.load(Ordering::Relaxed);
    summary.set("errors", summary.errors);
    summary.set("losses", summary.losses);
    summary.set("expected", expected);
    summary.set("deliveries", delivered);
    summary.set(
        "payload",
        if payload.real {
            "router event"
        } else {
            "synthetic"
        },
    );
    summary.set("payload_bytes", payload.len(0) as u64);
    summary.set("payload_bytes_last", payload.len(messages - 1) as u64);
    let rate = delivered as f64 / elapsed.as_secs_f64().max(1e-9);
    summary.set_f("ops_per_s", rate);
    summary.set_f("deliveries_per_s", rate);
    summary.set_f("duration_s", elapsed.as_secs_f64());
    for key in ["p50_ms", "p99_ms", "p999_ms"] {
        summary.set(key, serde_json::Value::Null);
    }
    summary.set("redis_pid", pid);
    match (cpu_start, cpu_end) {
        (Some(a), Some(b)) if delivered > 0 => {
            summary.set_f("cpu_redis_s", b - a);
            summary.set_f(
                "cpu_redis_us_per_delivery",
                (b - a) * 1e6 / delivered as f64,
            );
        }
        _ => summary.set("cpu_redis_us_per_delivery", serde_json::Value::Null),
    }
    Ok(summary)
}

/// Publish `messages` messages in pipelined batches, keeping at most `window` outstanding for
/// the slowest subscriber.
async fn publish(
    publisher: &mut TcpStream,
    payload: &Payload,
    messages: u64,
    window: u64,
    counts: &[AtomicU64],
) -> Result<(), BenchError> {
    let mut sent = 0u64;
    let mut batch = Vec::with_capacity(64 * 1024);
    let mut body = Vec::with_capacity(1024);
    let mut replies = vec![0u8; 64 * 1024];
    while sent < messages {
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
            body.clear();
            payload.write(sent + k, &mut body);
            batch.extend_from_slice(
                format!(
                    "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{CHANNEL}\r\n${}\r\n",
                    CHANNEL.len(),
                    body.len()
                )
                .as_bytes(),
            );
            batch.extend_from_slice(&body);
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
    Ok(())
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
    (first, messages): (u64, u64),
    counts: Arc<Vec<AtomicU64>>,
    disorder: Arc<AtomicU64>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(256 * 1024);
    let mut chunk = vec![0u8; ws::READ_BUFFER];
    let marker = b"$7\r\nmessage\r\n";
    let mut expected_seq = first;
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
