//! Link supervision under a switch that misbehaves without dropping the link, and what an
//! operator sees of it.
//!
//! - A switch that never answers one request type (a fake switch over TCP, written here):
//!   its unanswered requests used to keep every invoke ID reserved for ever. Now the link is
//!   reset and comes back, requests work again, the keep-alive is still sent while the IDs are
//!   used up, and the gauges of reserved IDs follow.
//! - A router that cannot keep up with its switch (events held by the receiver): the link
//!   reads no more than `link-queue` frames ahead, resumes when they are handled, counts no
//!   keep-alive miss while it is not reading, and request deadlines keep running.
//! - An unreachable switch, with the real binary at the default log level: one WARN naming the
//!   switch, link, address and reason, and no flood while it keeps retrying.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{config, http, log_capture, process, router, sim_control, switch};

use csta_router::csta::{encode_frame, Dialect, InvokeId, Message};
use csta_router::dnplan::DnPlan;
use csta_router::link::{
    LinkError, LinkSettings, LinkState, RoutedRequest, StartMonitor, SwitchEvent, SwitchHandle,
    SwitchRequest, SwitchStatusQuery,
};
use csta_router::sim::{SimConfig, Simulator};
use log_capture::{log_buffer, log_lines_with};
use process::RouterProcess;
use serde_json::json;
use sim_control::SimControl;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switch::{associate, link_down, link_up};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

// ----- shared helpers -------------------------------------------------------------------------

/// The process-wide Prometheus recorder (the router's own), for reading the link gauges.
fn metrics_text() -> String {
    csta_router::metrics::install(Duration::from_secs(1)).render()
}

/// The value of one series (`name{labels}` exactly as rendered, labels in any order).
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, ""));
        let all = labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        (n == name && all).then(|| value.parse().unwrap())
    })
}

/// Start switch `name` with one link to `address` in the default dialect, once the recorder
/// is installed (the link takes its metric handles when it starts).
fn start_switch(
    name: &str,
    address: std::net::SocketAddr,
    settings: LinkSettings,
) -> (SwitchHandle, mpsc::UnboundedReceiver<SwitchEvent>) {
    metrics_text();
    switch::start_switch(name, vec![address], Dialect::default(), settings)
}

fn associate_data() -> Message {
    Message::AssociateData {
        call: csta_router::csta::Connection::new("C1", "5001"),
        account_code: "42".into(),
    }
}

// ----- a switch that never answers Escape -------------------------------------------------------

/// What the fake switch saw.
#[derive(Debug, Default)]
struct FakeLog {
    connections: usize,
    /// Escapes received (never answered) on the current connection.
    escapes: usize,
    /// For each RequestSystemStatus: the connection it came on and the Escapes unanswered on
    /// that connection at that moment.
    status_requests: Vec<(usize, usize)>,
}

/// A switch that answers RequestSystemStatus, MonitorStart and AssociateData, and never
/// answers Escape.
async fn deaf_to_escape() -> (std::net::SocketAddr, Arc<Mutex<FakeLog>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(FakeLog::default()));
    let shared = log.clone();
    actix_rt::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = shared.clone();
            let conn = {
                let mut l = log.lock().unwrap();
                l.connections += 1;
                l.escapes = 0;
                l.connections
            };
            actix_rt::spawn(serve_deaf(stream, conn, log));
        }
    });
    (addr, log)
}

async fn serve_deaf(stream: tokio::net::TcpStream, conn: usize, log: Arc<Mutex<FakeLog>>) {
    let dialect = Dialect::default();
    let (read, mut write) = stream.into_split();
    let mut read = tokio::io::BufReader::new(read);
    loop {
        let mut header = [0u8; 8];
        if read.read_exact(&mut header).await.is_err() {
            return;
        }
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let mut body = vec![0u8; len - 8];
        if read.read_exact(&mut body).await.is_err() {
            return;
        }
        let id: u16 = std::str::from_utf8(&header[4..8]).unwrap().parse().unwrap();
        let id = InvokeId::new(id).unwrap();
        let answer = match Message::decode(&body, &dialect).unwrap() {
            Message::RequestSystemStatus => {
                let mut l = log.lock().unwrap();
                let escapes = l.escapes;
                l.status_requests.push((conn, escapes));
                Message::RequestSystemStatusResponse {
                    status: "normal".into(),
                }
            }
            Message::MonitorStart { device } => Message::MonitorStartResponse {
                cross_ref: format!("M{device}"),
            },
            Message::AssociateData { .. } => Message::AssociateDataResponse,
            Message::Escape(_) => {
                log.lock().unwrap().escapes += 1;
                continue;
            }
            _ => continue,
        };
        let frame = encode_frame(id, &answer, &dialect).unwrap();
        if write.write_all(&frame.to_bytes().unwrap()).await.is_err() {
            return;
        }
    }
}

fn deaf_settings(request_timeout: Duration, kpl_interval: Duration) -> LinkSettings {
    switch::settings(request_timeout, kpl_interval, 3)
}

/// Switch `name` linked to a new [`deaf_to_escape`] switch, once its link is up: the switch,
/// its events and what the fake switch saw.
async fn deaf_switch(
    name: &str,
    request_timeout: Duration,
    kpl_interval: Duration,
) -> (
    SwitchHandle,
    mpsc::UnboundedReceiver<SwitchEvent>,
    Arc<Mutex<FakeLog>>,
) {
    let (addr, fake) = deaf_to_escape().await;
    let settings = deaf_settings(request_timeout, kpl_interval);
    let (switch, mut events) = start_switch(name, addr, settings);
    link_up(&mut events).await;
    (switch, events, fake)
}

#[actix_rt::test]
async fn unanswered_requests_that_use_up_the_invoke_ids_reset_the_link() {
    log_buffer();
    let t0 = Instant::now();
    let timeout = Duration::from_millis(800);
    let (switch, mut events, fake) = deaf_switch("deaf", timeout, Duration::from_millis(100)).await;
    let stats = switch.link_stats[0].clone();

    // Ten thousand hot-desk requests the switch will never answer. Of the 9998 request invoke
    // IDs (SPEC section 5) one is kept for the keep-alive: the others are all an ordinary
    // request can hold.
    let ids = usize::from(InvokeId::LAST_REQUEST - InvokeId::FIRST_REQUEST + 1);
    let ordinary = ids - 1;
    let link = switch.active_link().unwrap();
    const SENT: u64 = 10_000;
    for tag in 0..SENT {
        link.do_send(RoutedRequest {
            message: associate("5001", "4001"),
            dn: "5001".into(),
            tag,
        });
    }
    // Each gets exactly one answer: 9,997 time out (the last ID is the keep-alive's), the
    // rest are refused at once.
    let mut answers: HashMap<u64, Result<Message, LinkError>> = HashMap::new();
    let mut max_expired = 0.0f64;
    let mut blocked = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut link_down = false;
    while !link_down {
        assert!(Instant::now() < deadline, "the link was never reset");
        while let Ok(ev) = events.try_recv() {
            match ev {
                SwitchEvent::Answer { tag, result, .. } => {
                    assert!(
                        answers.insert(tag, result).is_none(),
                        "request {tag} answered twice"
                    );
                }
                SwitchEvent::LinkDown { .. } => {
                    link_down = true;
                    break;
                }
                _ => {}
            }
        }
        let text = metrics_text();
        let expired = metric(
            &text,
            "csta_router_invoke_ids_reserved",
            &[("switch", "deaf"), ("state", "expired")],
        )
        .unwrap();
        max_expired = max_expired.max(expired);
        // While the IDs are used up, a request of a type the switch does answer is refused.
        if blocked.is_none() && fake.lock().unwrap().escapes >= ordinary && !link_down {
            blocked = Some(
                switch
                    .addr
                    .send(SwitchRequest(associate_data()))
                    .await
                    .unwrap(),
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        matches!(blocked, Some(Err(LinkError::Overload { .. }))),
        "while the IDs were used up: {blocked:?}"
    );
    assert_eq!(
        max_expired, ordinary as f64,
        "csta_router_invoke_ids_reserved{{state=\"expired\"}} at its peak"
    );
    // The link comes back, and requests work again.
    link_up(&mut events).await;
    assert_eq!(
        switch
            .addr
            .send(SwitchRequest(associate_data()))
            .await
            .unwrap()
            .unwrap(),
        Message::AssociateDataResponse
    );
    while let Ok(ev) = events.try_recv() {
        if let SwitchEvent::Answer { tag, result, .. } = ev {
            assert!(answers.insert(tag, result).is_none());
        }
    }
    assert_eq!(answers.len() as u64, SENT, "every request answered once");
    let timeouts = answers
        .values()
        .filter(|r| matches!(r, Err(LinkError::Timeout { .. })))
        .count();
    let refused = answers
        .values()
        .filter(|r| matches!(r, Err(LinkError::Overload { .. })))
        .count();
    assert_eq!((timeouts, refused), (ordinary, SENT as usize - ordinary));
    assert_eq!(stats.reconnects.load(Ordering::Relaxed), 1);
    assert_eq!(stats.invoke_ids_expired.load(Ordering::Relaxed), 0);
    let text = metrics_text();
    for state in csta_router::metrics::INVOKE_ID_STATES {
        assert_eq!(
            metric(
                &text,
                "csta_router_invoke_ids_reserved",
                &[("switch", "deaf"), ("state", state)]
            ),
            Some(0.0),
            "{state} after the reset"
        );
    }
    // The keep-alive went out while ordinary requests held every other ID.
    let log = fake.lock().unwrap();
    assert_eq!(log.connections, 2);
    assert!(
        log.status_requests
            .iter()
            .any(|&(conn, escapes)| conn == 1 && escapes == ordinary),
        "no keep-alive while the IDs were used up: {:?}",
        log.status_requests
    );
    drop(log);
    // The operator is told why, at WARN.
    let lines = log_lines_with("not answering some requests");
    assert!(
        lines.iter().any(|l| l.contains("WARN")
            && l.contains("deaf")
            && l.contains(&format!(
                "of {ids} invoke IDs are reserved, {ordinary} of them"
            ))),
        "{lines:?}"
    );
    eprintln!("invoke ID exhaustion test took {:?}", t0.elapsed());
}

#[actix_rt::test]
async fn one_request_unanswered_for_ten_timeouts_resets_the_link() {
    let timeout = Duration::from_millis(100);
    let (switch, mut events, fake) = deaf_switch("stuck", timeout, Duration::from_millis(50)).await;
    let sent = Instant::now();
    let r = switch
        .addr
        .send(SwitchRequest(associate("5001", "4001")))
        .await
        .unwrap();
    assert!(matches!(r, Err(LinkError::Timeout { .. })), "{r:?}");
    // The switch answers everything else (keep-alives included): one ID expired for 10 ×
    // request-timeout is enough to reset the link.
    link_down(&mut events).await;
    assert!(
        sent.elapsed() >= timeout * 10,
        "reset after {:?}, before 10 × request-timeout",
        sent.elapsed()
    );
    link_up(&mut events).await;
    let stats = &switch.link_stats[0];
    assert_eq!(stats.keepalive_misses.load(Ordering::Relaxed), 0);
    assert_eq!(stats.invoke_ids_expired.load(Ordering::Relaxed), 0);
    assert_eq!(fake.lock().unwrap().connections, 2);
}

// ----- a router that cannot keep up -------------------------------------------------------------

#[actix_rt::test]
async fn the_link_reads_no_more_than_link_queue_frames_ahead_of_the_router() {
    let t0 = Instant::now();
    let sim = Simulator::start(SimConfig {
        name: "slow".into(),
        dns: DnPlan::parse(&["4000-4999", "5000-5999"]).unwrap(),
        links: vec!["127.0.0.1:0".parse().unwrap()],
        control: Some("127.0.0.1:0".parse().unwrap()),
        dialect: Dialect::default(),
    })
    .await
    .unwrap();
    let control = SimControl {
        addr: sim.control_addr().unwrap(),
    };
    const QUEUE: usize = 64;
    let request_timeout = Duration::from_millis(100);
    let (switch, mut events) = start_switch(
        "slow",
        sim.link_addrs()[0],
        LinkSettings {
            link_queue: QUEUE,
            kpl_interval: Duration::from_millis(50),
            kpl_tolerance: 2,
            ..deaf_settings(request_timeout, Duration::ZERO)
        },
    );
    link_up(&mut events).await;
    switch
        .addr
        .send(StartMonitor("5001".into()))
        .await
        .unwrap()
        .unwrap();
    let stats = switch.link_stats[0].clone();

    // 1,000 events on the monitor of 5001, and the receiver holds every one it gets.
    const EVENTS: usize = 1000;
    let burst = actix_rt::spawn(async move {
        control
            .post_ok(
                "/burst",
                json!({"guest": "5001", "host": "4001", "count": EVENTS / 2}),
            )
            .await
    });
    let mut held = Vec::new();
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(50), events.recv()).await {
            held.push(ev);
        }
    }
    let csta = |evs: &[SwitchEvent]| {
        evs.iter()
            .filter(|e| matches!(e, SwitchEvent::Csta { .. }))
            .count()
    };
    assert_eq!(
        csta(&held),
        QUEUE,
        "events read while the first {QUEUE} were not handled"
    );
    let text = metrics_text();
    assert_eq!(
        metric(
            &text,
            "csta_router_link_queue_frames",
            &[("switch", "slow")]
        ),
        Some(QUEUE as f64)
    );
    assert!(stats.read_pauses.load(Ordering::Relaxed) >= 1);
    // Paused for 1.5 s with a keep-alive due every 50 ms: no miss counted, the link is up.
    assert_eq!(
        stats.keepalive_misses.load(Ordering::Relaxed),
        0,
        "keep-alive misses counted while the link was not reading"
    );
    let status = switch.addr.send(SwitchStatusQuery).await.unwrap();
    assert_eq!(status.links, vec![LinkState::Up]);
    // Request deadlines keep running while the link is not reading.
    let t = Instant::now();
    let r = switch
        .addr
        .send(SwitchRequest(associate("5002", "4002")))
        .await
        .unwrap();
    assert!(matches!(r, Err(LinkError::Timeout { .. })), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(2));
    // Its answer waits unread in the socket: not the switch's fault, so no reset for an
    // invoke ID expired for 10 × request-timeout while the link is not reading.
    tokio::time::sleep(request_timeout * 13).await;
    while let Ok(ev) = events.try_recv() {
        held.push(ev);
    }
    assert_eq!(csta(&held), QUEUE, "still paused");
    assert_eq!(
        stats.invoke_ids_expired.load(Ordering::Relaxed),
        1,
        "the link was reset while it was not reading"
    );

    // Handle them: reading resumes and every event arrives, in order.
    let mut seqs: Vec<u64> = held
        .iter()
        .filter_map(|e| match e {
            SwitchEvent::Csta { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(20);
    while seqs.len() < EVENTS {
        assert!(
            Instant::now() < deadline,
            "only {} of {EVENTS} events after resuming",
            seqs.len()
        );
        if let Ok(Some(SwitchEvent::Csta { seq, .. })) =
            tokio::time::timeout(Duration::from_millis(100), events.recv()).await
        {
            seqs.push(seq);
        }
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "events out of order");
    burst.await.unwrap();
    // Everything handled: the queue is empty and the link healthy.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let frames = metric(
            &metrics_text(),
            "csta_router_link_queue_frames",
            &[("switch", "slow")],
        );
        if frames == Some(0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "link queue not empty: {frames:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = switch.addr.send(SwitchStatusQuery).await.unwrap();
    assert_eq!(status.links, vec![LinkState::Up]);
    assert_eq!(stats.reconnects.load(Ordering::Relaxed), 0);
    sim.shutdown();
    eprintln!("link queue test took {:?}", t0.elapsed());
}

/// Through the real router: with a link queue of 8, a burst of events reaches a client whole
/// and in order (each frame's place is given back once the router has delivered its event).
#[actix_rt::test]
async fn a_small_link_queue_still_delivers_every_event_through_the_router() {
    let r = router::Router::with(&router::config_text(
        "link-queue = 8",
        router::dialect_from_env(),
    ))
    .await;
    let mut c = r.client().await;
    c.register("5001").await;
    const ROUNDS: u64 = 300;
    r.sw1
        .post_ok(
            "/burst",
            json!({"guest": "5001", "host": "4001", "count": ROUNDS}),
        )
        .await;
    let mut last = 0;
    for i in 0..ROUNDS * 2 {
        let ev = c.recv().await;
        assert_eq!(ev["message"], "EventPrivateInfo", "{ev}");
        assert_eq!(ev["privateMsgId"], json!(1 + i % 2), "{ev}");
        let seq = ev["eventSeq"].as_u64().unwrap();
        assert!(seq > last, "out of order: {seq} after {last}");
        last = seq;
    }
    // The router gives the last place back just after queueing the last event.
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = csta_router::metrics::render(&r.running.shared.gauges());
        let frames = metric(&text, "csta_router_link_queue_frames", &[("switch", "sw1")]);
        if frames == Some(0.0) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "link queue not empty: {frames:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        metric(
            &text,
            "csta_router_link_read_pauses_total",
            &[("switch", "sw1")]
        )
        .unwrap()
            >= 1.0,
        "the link never had to wait for the router"
    );
    r.stop().await;
}

// ----- an unreachable switch, at the default log level ------------------------------------------

/// Remove terminal colour sequences (ESC [ ... m) from a log.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn an_unreachable_switch_is_reported_at_warn_once_not_at_every_attempt() {
    let closed = format!("127.0.0.1:{}", process::free_port());
    let config = config::head("", "reconnect-min = \"10ms\"\nreconnect-max = \"100ms\"")
        + &config::switch("pbx-east", &["5000-5999"], "", &[&closed]);
    let router = RouterProcess::start_with(Some(&config), &[], &[]);
    // About thirty attempts (back-off 10 ms doubling up to 100 ms).
    std::thread::sleep(Duration::from_secs(3));
    let metrics = http::get_blocking(router.metrics, "/metrics", Duration::from_secs(5))
        .unwrap()
        .text();
    let log = strip_ansi(&router.stop());
    let about_the_link: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("pbx-east") && l.contains("CSTA link"))
        .collect();
    assert_eq!(
        about_the_link.len(),
        1,
        "one line about the link in 3 s of retries, not one per attempt:\n{log}"
    );
    let warn = about_the_link[0];
    for needle in [
        "WARN",
        "switch=pbx-east",
        "link=0",
        &format!("address={closed}"),
        "refused",
        "next attempt in",
    ] {
        assert!(warn.contains(needle), "{needle:?} missing from {warn:?}");
    }
    // The link gauges exist from the start.
    for (name, labels) in [
        (
            "csta_router_invoke_ids_reserved",
            &[("switch", "pbx-east"), ("state", "in_flight")][..],
        ),
        (
            "csta_router_invoke_ids_reserved",
            &[("switch", "pbx-east"), ("state", "expired")][..],
        ),
        (
            "csta_router_link_queue_frames",
            &[("switch", "pbx-east")][..],
        ),
        (
            "csta_router_link_read_pauses_total",
            &[("switch", "pbx-east")][..],
        ),
    ] {
        assert_eq!(
            metric(&metrics, name, labels),
            Some(0.0),
            "{name} {labels:?}"
        );
    }
}
