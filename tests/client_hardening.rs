//! What a client can do to the router binary, and what the router does about it: connections
//! that never open (under a small descriptor limit), a client that stops reading while its
//! queue has room, forged audit lines, pages from foreign web origins, token guessing, and the
//! ends of connections (close frames answered, abrupt drops).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{process, router};

use csta_router::protocol::MAX_APPLICATION_LEN;
use futures_util::{SinkExt, StreamExt};
use process::RouterProcess;
use router::Client;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as Ws;

/// `csta_router_client_disconnects_total{reason}`.
async fn disconnects(r: &RouterProcess, reason: &str) -> f64 {
    let (_, m) = r.scrape().await;
    m[&format!("csta_router_client_disconnects_total{{reason=\"{reason}\"}}")]
}

/// Poll `check` every 20 ms until it holds; fail after `limit`.
async fn eventually(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out ({limit:?}) waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A WebSocket client on a TCP socket prepared by `socket` (bound to a source address, a
/// small receive buffer...), not yet opened. The handshake carries `origin` if given.
async fn connect_from(
    r: &RouterProcess,
    socket: TcpSocket,
    origin: Option<&str>,
) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
    let stream = socket.connect(r.clients).await.unwrap();
    let mut request = r.url().into_client_request().unwrap();
    if let Some(o) = origin {
        request.headers_mut().insert("Origin", o.parse().unwrap());
    }
    let (ws, _) =
        tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await?;
    Ok(Client { ws })
}

fn socket_from(source: &str) -> TcpSocket {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse().unwrap(), 0))
        .unwrap();
    socket
}

fn open_request(application: &str, token: Option<&str>) -> Value {
    let mut open =
        json!({"message": "RequestOpen", "protocolVersion": 1, "application": application});
    if let Some(t) = token {
        open["token"] = json!(t);
    }
    open
}

/// Open on an existing connection: `EventServerConnected`, then one link event per switch.
async fn open_on(c: &mut Client, application: &str, token: Option<&str>) {
    let reply = c.request(open_request(application, token)).await;
    assert_eq!(reply["message"], "EventServerConnected", "{reply}");
    for _ in 0..2 {
        c.recv().await;
    }
}

/// The router's log without ANSI colour sequences.
fn plain_log(r: &RouterProcess) -> String {
    let raw = r.log();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// A router that lets 400 connections in and never hears a `RequestOpen` from them, under a
/// limit of 256 descriptors, keeps serving `/metrics`, `/readyz` and new clients.
///
/// Why these settings: `max-clients = 100` (the router then holds at most 100 WebSocket
/// connections and some room, about 120 descriptors, next to about 60 of its own on a 2-core
/// machine: within 256 while the test holds 400 sockets), and `open-timeout = "300ms"` (the
/// idle ones lose their place quickly, so the 400 are worked through in a few seconds and a
/// new client gets in). `max-http-connections = 64` keeps scrapes bounded and, with the rest,
/// makes the configured worst case exceed 256, which the router must warn about at start.
/// The 400 sockets send the upgrade request and then nothing, and never read.
#[test]
fn idle_connections_cannot_starve_metrics_readyz_or_new_clients() {
    let config = process::two_switches(
        "max-clients = 100\nopen-timeout = \"300ms\"\nmax-http-connections = 64",
        "kpl-interval = \"0s\"",
        "",
        1,
    );
    let r = RouterProcess::start_limited("idle-connections", &config, Some(256));
    let rt = process::runtime();
    rt.block_on(async {
        r.wait_connected(&["sw1", "sw2"]).await;
        let request = format!(
            "GET /v1 HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            r.clients
        );
        let mut idle = Vec::new();
        for _ in 0..400 {
            let mut s = TcpStream::connect(r.clients).await.unwrap();
            s.write_all(request.as_bytes()).await.unwrap();
            idle.push(s);
        }
        // While the 400 are held: the health endpoints answer at once.
        for path in ["/readyz", "/metrics", "/healthz"] {
            let started = Instant::now();
            let (status, body) = tokio::time::timeout(Duration::from_secs(5), r.http_get(path))
                .await
                .unwrap_or_else(|_| panic!("{path} not served within 5 s of 400 idle connections"));
            assert_eq!(status, 200, "{path}: {body}");
            println!("{path} served in {:?}", started.elapsed());
        }
        // The router holds only what max-clients allows: well within its limit.
        let fds = r.fd_count();
        println!("router descriptors with 400 idle connections: {fds}");
        assert!(fds < 240, "{fds} descriptors open");
        // A new client is served: told to try again later (1013) while the idle connections
        // hold every place, then opened once open-timeout has freed them.
        let started = Instant::now();
        let mut refused = 0;
        let mut c = loop {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no new client served within 30 s ({refused} refused)"
            );
            let mut c = tokio::time::timeout(Duration::from_secs(30), Client::connect(&r.url()))
                .await
                .expect("a new connection not accepted within 30 s");
            let mut open = open_request("latecomer", None);
            open["referenceId"] = json!(1);
            c.send(&open).await;
            match tokio::time::timeout(Duration::from_secs(5), c.ws.next()).await {
                Ok(Some(Ok(Ws::Text(t)))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    assert_eq!(v["message"], "EventServerConnected", "{v}");
                    for _ in 0..2 {
                        c.recv().await;
                    }
                    break c;
                }
                Ok(Some(Ok(Ws::Close(Some(f))))) => {
                    assert_eq!(u16::from(f.code), 1013, "{f:?}");
                    refused += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => panic!("unexpected answer to a new client: {other:?}"),
            }
        };
        println!(
            "new client served after {:?} ({refused} times told to try again later)",
            started.elapsed()
        );
        let q = c.request(json!({"message": "RequestQueryServer"})).await;
        assert_eq!(q["message"], "EventServerInfo");
        drop(idle);
        assert!(disconnects(&r, "open_timeout").await >= 100.0);
        // A WebSocket client that never sends RequestOpen is closed with 1008 after
        // open-timeout.
        let before = disconnects(&r, "open_timeout").await;
        let mut mute = Client::connect(&r.url()).await;
        let connected = Instant::now();
        assert_eq!(mute.closed().await, 1008);
        assert!(connected.elapsed() >= Duration::from_millis(250));
        assert_eq!(disconnects(&r, "open_timeout").await, before + 1.0);
        // The configured worst case exceeds the limit: the router said so at start.
        let log = plain_log(&r);
        let warning = log
            .lines()
            .find(|l| l.contains("WARN") && l.contains("file descriptors"))
            .unwrap_or_else(|| panic!("no descriptor warning at start:\n{log}"));
        assert!(
            warning.contains("only 256")
                && warning.contains("LimitNOFILE")
                && warning.contains("max-clients 100"),
            "{warning}"
        );
    });
    r.stop();
}

/// A client registered on a DN stops reading while the switch sends events; its queue is
/// large enough never to fill, so only the blocked write shows it is not reading. It is
/// closed as a slow consumer within a bound, counted, its monitor released; its TCP
/// connection really goes away (the client sees the connection reset, the router's
/// descriptors come back down). A second one that starts reading again when it is declared
/// slow gets the 4008 close frame.
#[test]
fn a_client_that_stops_reading_with_room_in_its_queue_is_a_slow_consumer() {
    let config = process::two_switches(
        "client-queue = 1000000\nclient-ping-interval = \"200ms\"\nclient-ping-tolerance = 2\nsession-linger = \"0s\"",
        "kpl-interval = \"0s\"",
        "",
        1,
    );
    let r = RouterProcess::start("stops-reading", &config);
    let sw1 = r.controls[0];
    let rt = process::runtime();
    rt.block_on(async {
        r.wait_connected(&["sw1", "sw2"]).await;
        let monitors = async || sw1.state().await["monitors"].as_array().unwrap().len();
        let baseline = r.fd_count();

        for (dn, host, resumes) in [("5041", "4041", false), ("5042", "4042", true)] {
            let before = disconnects(&r, "slow_consumer").await;
            let socket = TcpSocket::new_v4().unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            let mut slow = connect_from(&r, socket, None).await.unwrap();
            open_on(&mut slow, "slow", None).await;
            slow.register(dn).await;
            assert_eq!(monitors().await, 1);
            // The client reads nothing from now on; the events are more than every buffer
            // between the router and it, and far less than its queue. It still sends: a
            // heartbeat of unsolicited pongs, so it never misses a ping; it only stopped
            // reading.
            let started = Instant::now();
            let heartbeat = async {
                while slow.ws.send(Ws::Pong(Vec::new().into())).await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(40)).await;
                }
                std::future::pending::<()>().await;
            };
            let burst = async {
                let rounds = rounds_to_block();
                let burst = sw1
                    .post_ok(
                        "/burst",
                        json!({"guest": dn, "host": host, "count": rounds}),
                    )
                    .await;
                assert_eq!(burst["hotdeskEvents"], 2 * rounds);
                eventually("a slow consumer", Duration::from_secs(10), async || {
                    disconnects(&r, "slow_consumer").await == before + 1.0
                })
                .await;
            };
            tokio::select! {
                _ = heartbeat => {}
                _ = burst => {}
            }
            println!(
                "{dn}: slow consumer declared {:?} after the burst began",
                started.elapsed()
            );
            if resumes {
                // It reads again within the second the close frame is offered: it gets it.
                let reading = Instant::now();
                assert_eq!(slow.ended().await, Some(4008));
                println!(
                    "{dn}: read up to the close frame in {:?}",
                    reading.elapsed()
                );
            } else {
                // It never reads: its connection is dropped after that second. What reached
                // its socket is still there, then the connection ends without a close frame.
                let port = local_port(&slow);
                assert!(router_holds(&r, port), "{dn}: the router already let go");
                eventually(
                    "the router to let go of the connection",
                    Duration::from_secs(10),
                    async || !router_holds(&r, port),
                )
                .await;
                println!(
                    "{dn}: connection dropped {:?} after the burst began; router descriptors {} (baseline {baseline})",
                    started.elapsed(),
                    r.fd_count(),
                );
                assert_eq!(slow.ended().await, None);
            }
            // Its registration is released.
            eventually("its monitor stopped", Duration::from_secs(10), async || {
                monitors().await == 0
            })
            .await;
        }
        eventually(
            "descriptors back to the baseline",
            Duration::from_secs(10),
            async || r.fd_count() <= baseline,
        )
        .await;
        // The router serves as before.
        let mut next = Client::open(&r.url(), None, 2).await;
        next.register("5041").await;
        assert_eq!(monitors().await, 1);
    });
    r.stop();
}

/// The client's local port.
fn local_port(c: &Client) -> u16 {
    match c.ws.get_ref() {
        tokio_tungstenite::MaybeTlsStream::Plain(t) => t.local_addr().unwrap().port(),
        _ => panic!("plain TCP expected"),
    }
}

/// Whether the router process holds a TCP socket connected to the client's local `port`
/// (its descriptors' socket inodes, looked up in its `/proc/<pid>/net/tcp`).
fn router_holds(r: &RouterProcess, port: u16) -> bool {
    let pid = r.child.id();
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap();
    let peer = format!(":{port:04X}");
    table.lines().skip(1).any(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        cols.len() > 9 && cols[2].ends_with(&peer) && inodes.contains(cols[9])
    })
}

/// Hot-desk rounds (two events of about 160 bytes each) that overflow every buffer between
/// the router and a client that does not read: the kernel's send buffer, autotuned up to the
/// largest `tcp_wmem` allows, and 2 MiB more.
fn rounds_to_block() -> u64 {
    let wmem_max: u64 = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20);
    (wmem_max + (2 << 20)) / 320
}

const TOKEN: &str = "desktops-token-0123456789";

/// The router binary with one application token configured (`desktops`, control access) and
/// `server` added to `[server]`.
fn start_with_token(name: &str, server: &str) -> RouterProcess {
    let config = process::two_switches(
        server,
        "kpl-interval = \"0s\"",
        &format!("[[application]]\nname = \"desktops\"\ntoken = \"{TOKEN}\"\n"),
        1,
    );
    RouterProcess::start(name, &config)
}

/// A client cannot write a line into the log that looks like an audit line (an application
/// name with a newline is refused with 53 and 1008 before anything logs it; a name made of
/// `key=value` words is logged quoted, as one field); audit lines name the configured
/// application the token matched, not the name the client claimed; a success and a refusal
/// by the router have the same shape.
#[test]
fn audit_lines_cannot_be_forged_and_name_the_matched_application() {
    let r = start_with_token("audit", "");
    let rt = process::runtime();
    rt.block_on(async {
        r.wait_connected(&["sw1", "sw2"]).await;
        let forged = "2031-01-01T00:00:00.000000Z  INFO audit: private service application=desktops dn=5001 service=hotdesk_initiate result=ok ms=1 FORGED";
        let mut forger = Client::connect(&r.url()).await;
        let reply = forger
            .request(open_request(&format!("x\n{forged}"), Some("wrong-token-000000")))
            .await;
        assert_eq!(reply["errorCode"], 53, "{reply}");
        assert_eq!(forger.closed().await, 1008);
        let mut too_long = Client::connect(&r.url()).await;
        let reply = too_long
            .request(open_request(&"a".repeat(MAX_APPLICATION_LEN + 1), Some(TOKEN)))
            .await;
        assert_eq!(reply["errorCode"], 53, "{reply}");
        assert_eq!(too_long.closed().await, 1008);
        let mut liar = Client::connect(&r.url()).await;
        liar.send(&json!({"message": "RequestOpen", "referenceId": 1, "protocolVersion": 1,
            "application": "desktops dn=5001 service=hotdesk_initiate result=ok ms=1",
            "token": "wrong-token-000000"}))
            .await;
        assert_eq!(liar.closed().await, 1008);

        // The client calls itself "test"; its token is the desktops application's.
        let mut desk = Client::open(&r.url(), Some(TOKEN), 2).await;
        desk.register("5001").await;
        desk.register("4001").await;
        let ps = |msg_id: u64, extensions: Value| {
            json!({"message": "RequestPrivateService", "thisDn": "5001", "privateMsgId": msg_id, "extensions": extensions})
        };
        let reply = desk.request(ps(1, json!({"HOST_DN": "4001"}))).await;
        assert_eq!(reply["message"], "EventPrivateInfo", "{reply}");
        desk.recv().await;
        desk.recv().await;
        let reply = desk.request(ps(1, json!({}))).await;
        assert_eq!(reply["errorCode"], 53, "{reply}");
        let reply = desk.request(ps(7, json!({}))).await;
        assert_eq!(reply["errorCode"], 51, "{reply}");
        let reply = desk.request(ps(2, json!({}))).await;
        assert_eq!(reply["message"], "EventPrivateInfo", "{reply}");
        assert_eq!(disconnects(&r, "protocol_error").await, 2.0);

        let log = plain_log(&r);
        // No line starts with the forged text: the newline never reached the log.
        assert!(
            !log.lines().any(|l| l.starts_with("2031-01-01")),
            "a forged line in the log:\n{log}"
        );
        // Four audit lines, one shape: successes and refusals by the router alike, under the
        // configured name the token matched.
        let audit: Vec<&str> = log.lines().filter(|l| l.contains(" audit: ")).collect();
        assert_eq!(audit.len(), 4, "{audit:#?}");
        let fields = |line: &str| -> Vec<(String, String)> {
            line.split(" audit: private service ")
                .nth(1)
                .unwrap_or_else(|| panic!("not an audit line of the expected shape: {line}"))
                .split(' ')
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("{line}"));
                    (k.to_owned(), v.to_owned())
                })
                .collect()
        };
        let expected = [
            ("hotdesk_initiate", "ok"),
            ("hotdesk_initiate", "53"),
            ("private_7", "51"),
            ("hotdesk_cancel", "ok"),
        ];
        for (line, (service, result)) in audit.iter().zip(expected) {
            let f = fields(line);
            let keys: Vec<&str> = f.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(keys, ["application", "dn", "service", "result", "ms"], "{line}");
            assert_eq!(f[0].1, "desktops", "{line}");
            assert_eq!(f[1].1, "5001", "{line}");
            assert_eq!((f[2].1.as_str(), f[3].1.as_str()), (service, result), "{line}");
            assert!(f[4].1.parse::<u64>().is_ok(), "{line}");
        }
        // The wrong-token client's claimed name is logged quoted, as one field.
        assert!(
            log.contains(
                "application=\"desktops dn=5001 service=hotdesk_initiate result=ok ms=1\""
            ),
            "{log}"
        );
    });
    r.stop();
}

/// A page from a web site that is not in `allowed-origins` cannot open the endpoint from a
/// browser (403 before the upgrade); the listed origin can (any case), and so can clients
/// that send no `Origin` (everything but browsers).
#[test]
fn upgrades_from_origins_not_allowed_are_refused_with_403() {
    let r = start_with_token(
        "origins",
        "allowed-origins = [\"https://desk.example.com\"]",
    );
    let rt = process::runtime();
    rt.block_on(async {
        r.wait_connected(&["sw1", "sw2"]).await;
        for origin in ["https://evil.example", "http://desk.example.com", "null"] {
            match connect_from(&r, TcpSocket::new_v4().unwrap(), Some(origin)).await {
                Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                    assert_eq!(response.status(), 403, "{origin}")
                }
                Err(other) => panic!("{origin}: expected HTTP 403, got {other}"),
                Ok(_) => panic!("{origin}: the upgrade was accepted"),
            }
        }
        let mut page = connect_from(
            &r,
            TcpSocket::new_v4().unwrap(),
            Some("https://Desk.Example.com"),
        )
        .await
        .unwrap();
        open_on(&mut page, "web-desk", Some(TOKEN)).await;
        let mut desktop = Client::open(&r.url(), Some(TOKEN), 2).await;
        desktop.register("5001").await;
        // Refused upgrades never became clients.
        assert_eq!(disconnects(&r, "protocol_error").await, 0.0);
    });
    r.stop();
}

/// Guessing tokens: each wrong token is answered after a second; the twelfth connection of an
/// address with eleven failures within the minute is refused with 1013; another address
/// (127.0.0.2, also loopback) is not affected, nor is 127.0.0.1.
#[test]
fn token_guessing_is_slowed_down_and_locked_out_per_address() {
    let r = start_with_token("guessing", "");
    let rt = process::runtime();
    rt.block_on(async {
        r.wait_connected(&["sw1", "sw2"]).await;
        let guesses = (0..11).map(|_| {
            let r = &r;
            async move {
                let mut c = connect_from(r, socket_from("127.0.0.3"), None)
                    .await
                    .unwrap();
                c.send(
                    &json!({"message": "RequestOpen", "referenceId": 1, "protocolVersion": 1,
                    "application": "guess", "token": "guessed-token-0000"}),
                )
                .await;
                let sent = Instant::now();
                let code = c.closed().await;
                (code, sent.elapsed())
            }
        });
        for (code, elapsed) in futures_util::future::join_all(guesses).await {
            assert_eq!(code, 1008);
            assert!(
                elapsed >= Duration::from_secs(1),
                "a wrong token answered after {elapsed:?}"
            );
        }
        let mut twelfth = connect_from(&r, socket_from("127.0.0.3"), None)
            .await
            .unwrap();
        let code = match tokio::time::timeout(Duration::from_secs(5), twelfth.ws.next()).await {
            Ok(Some(Ok(Ws::Close(Some(f))))) => u16::from(f.code),
            other => panic!("the twelfth connection was not closed: {other:?}"),
        };
        assert_eq!(code, 1013, "the twelfth connection within the minute");
        let mut other = connect_from(&r, socket_from("127.0.0.2"), None)
            .await
            .unwrap();
        open_on(&mut other, "elsewhere", Some(TOKEN)).await;
        let mut local = Client::open(&r.url(), Some(TOKEN), 2).await;
        local.register("5001").await;
        assert_eq!(disconnects(&r, "auth").await, 12.0);
        let log = plain_log(&r);
        assert!(
            log.lines()
                .any(|l| l.contains("WARN") && l.contains("failed authentications from 127.0.0.3")),
            "{log}"
        );
    });
    r.stop();
}

/// The ends of connections: a client's close frame is answered with its own code (not the
/// 1006 of a connection that just ends); a client that drops its connection without one
/// counts as `closed`, not as a protocol error.
#[test]
fn close_frames_are_answered_and_abrupt_drops_count_as_closed() {
    let r = start_with_token("connection-ends", "");
    let rt = process::runtime();
    rt.block_on(async {
        r.wait_connected(&["sw1", "sw2"]).await;
        let mut polite = Client::open(&r.url(), Some(TOKEN), 2).await;
        polite.register("5001").await;
        polite
            .ws
            .send(Ws::Close(Some(CloseFrame {
                code: CloseCode::from(4321),
                reason: "bye".into(),
            })))
            .await
            .unwrap();
        assert_eq!(polite.ended().await, Some(4321));
        let mut abrupt = Client::open(&r.url(), Some(TOKEN), 2).await;
        abrupt.register("5002").await;
        drop(abrupt);
        eventually("both counted", Duration::from_secs(5), async || {
            disconnects(&r, "closed").await == 2.0
        })
        .await;
        assert_eq!(disconnects(&r, "protocol_error").await, 0.0);
    });
    r.stop();
}
