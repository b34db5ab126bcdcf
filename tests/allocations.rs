#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Allocations on the hot-desk request path, counted by a counting global allocator.
//!
//! The router runs in this process (`server::start`, the code the binary runs); its switch is
//! a `pbx-sim` process, so the simulator's allocations are not counted, and the test's
//! WebSocket client runs on a thread of its own that is not counted either. One client
//! registers a guest and a host DN, then, in steady state, sends hot-desk requests one at a
//! time (associate, then cancel) and reads each reply and the two hot-desk events. Everything
//! the router allocates for that on any of its threads is counted: the request read from the
//! WebSocket and parsed, handed to the DN's actor, written as CSTA on the link, the switch's
//! answer and its two events read, the reply and the events written as JSON, queued to the
//! client and written on the WebSocket.
//!
//! The figure asserted is the one measured, with one allocation of slack, so that any new
//! allocation on the path fails the test. What the figure is made of is said at
//! [`PER_REQUEST`].

mod common;
use common::{config, process, router};

use csta_router::config::Config;
use csta_router::server::start;
use futures_util::{SinkExt, StreamExt};
use process::SimProcess;
use router::{assert_no_panic, wait_links_up, watch_panics};
use serde_json::Value;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message as Ws;

/// Counts every allocation (and reallocation: a buffer that grows allocates) made by a thread
/// not marked with [`NOT_COUNTED`].
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the test client's thread: what it allocates is not the router's.
    static NOT_COUNTED: Cell<bool> = const { Cell::new(false) };
}

thread_local! {
    /// Set while a stack is being taken: its own allocations are not the router's.
    static IN_TRACE: Cell<bool> = const { Cell::new(false) };
}

/// Set while the stack of every counted allocation is taken (`ALLOC_TRACE`).
static TRACING: AtomicBool = AtomicBool::new(false);

/// The stacks taken.
static TRACES: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn count() {
    if !NOT_COUNTED.with(Cell::get) && !IN_TRACE.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        if TRACING.load(Ordering::Relaxed) {
            IN_TRACE.with(|c| c.set(true));
            let bt = std::backtrace::Backtrace::force_capture().to_string();
            if let Ok(mut traces) = TRACES.lock() {
                traces.push(bt);
            }
            IN_TRACE.with(|c| c.set(false));
        }
    }
}

// SAFETY: every call is passed on to the system allocator unchanged; counting neither
// allocates nor unwinds (taking a stack for `ALLOC_TRACE` allocates, with counting and
// tracing turned off on its thread meanwhile).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations per hot-desk request as measured: the integer average over [`MEASURED_PAIRS`]
/// associate + cancel pairs in steady state, each request with its reply and its two events
/// (a pair takes 170; the five rounds of a run give 85 each). Where they are, per request, as
/// `ALLOC_TRACE` shows them:
///
/// - about 30: the CSTA text, reading the switch's answer and its two events (the streaming
///   reader's name stack and the messages' own strings; 70 with the element tree it
///   replaced) and writing the request (a slice of the link's reused buffer);
/// - 28: the router shard and the DN's extension actor: actix mailbox envelopes (two
///   allocations per message), the events' DNs and the fan-out lists;
/// - 8: the link handing the answer and the two events to the shard (two per actix message)
///   and the events' `Arc`s;
/// - 6: the JSON of the reply and of the two events, each its bytes and the shared header of
///   the `Bytes` every recipient clones;
/// - 5: actix-ws, reading the client's frame (2) and framing each message it writes (3);
/// - 3: the request read (its DN, the `extensions` of an associate);
/// - 2: the request handed to the shard (an actix message);
/// - the rest: the association the switch reported noted on an associate (its two DNs), the
///   service's device names.
///
/// A change that adds an allocation anywhere on the path makes the measured average exceed
/// this by more than the one allowed, and the test fails: measure again, and lower this
/// figure when a change removes some.
const PER_REQUEST: u64 = 85;

/// The fewest allocations a request can take: the reply and the two events are three
/// messages, each in bytes of its own. A count below it means the counter is not counting.
const AT_LEAST: u64 = 3;

/// Pairs sent before counting: every buffer and table on the path has reached its size.
const WARM_UP_PAIRS: u64 = 200;

/// Pairs counted.
const MEASURED_PAIRS: u64 = 1000;

const GUEST: &str = "4001";
const HOST: &str = "4002";

/// The test's WebSocket client, on its own thread (not counted).
struct Client {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_ref: u64,
}

impl Client {
    async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("nothing from the router within 10 s")
                .expect("the connection ended")
                .unwrap();
            if let Ws::Text(t) = msg {
                return serde_json::from_str(&t).unwrap();
            }
        }
    }

    async fn request(&mut self, text: String) -> Value {
        self.ws.send(Ws::Text(text.into())).await.unwrap();
        self.recv().await
    }

    fn reference(&mut self) -> u64 {
        self.next_ref += 1;
        self.next_ref
    }

    /// One hot-desk request (associate or cancel): its reply and the two events, checked.
    async fn hot_desk(&mut self, associate: bool) {
        let id = self.reference();
        let text = if associate {
            format!(
                r#"{{"message":"RequestPrivateService","referenceId":{id},"thisDn":"{GUEST}","privateMsgId":1,"extensions":{{"HOST_DN":"{HOST}"}}}}"#
            )
        } else {
            format!(
                r#"{{"message":"RequestPrivateService","referenceId":{id},"thisDn":"{GUEST}","privateMsgId":2}}"#
            )
        };
        let reply = self.request(text).await;
        assert_eq!(reply["message"], "EventPrivateInfo", "{reply}");
        assert_eq!(reply["referenceId"], id, "{reply}");
        let msg_id = if associate { 1 } else { 2 };
        for _ in 0..2 {
            let ev = self.recv().await;
            assert_eq!(ev["message"], "EventPrivateInfo", "{ev}");
            assert_eq!(ev["privateMsgId"], msg_id, "{ev}");
        }
    }

    async fn pairs(&mut self, n: u64) {
        for _ in 0..n {
            self.hot_desk(true).await;
            self.hot_desk(false).await;
        }
    }
}

/// Open a client, register the guest and the host, warm up, then count the router's
/// allocations over `rounds` measurements: the allocations per request of each.
async fn client(url: String, rounds: usize) -> Vec<u64> {
    NOT_COUNTED.with(|c| c.set(true));
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut c = Client { ws, next_ref: 0 };
    let id = c.reference();
    let open = c
        .request(format!(
            r#"{{"message":"RequestOpen","referenceId":{id},"protocolVersion":1,"application":"alloc"}}"#
        ))
        .await;
    assert_eq!(open["message"], "EventServerConnected", "{open}");
    // The link event of the switch.
    c.recv().await;
    for dn in [GUEST, HOST] {
        let id = c.reference();
        let r = c
            .request(format!(
                r#"{{"message":"RequestRegisterAddress","referenceId":{id},"thisDn":"{dn}"}}"#
            ))
            .await;
        assert_eq!(r["message"], "EventRegistered", "{r}");
    }
    c.pairs(WARM_UP_PAIRS).await;
    let mut per_request = Vec::new();
    // `ALLOC_TRACE=FILE`: where the allocations come from, the stack of each allocation of
    // one pair written to FILE (separated by `=====` lines).
    if let Some(file) = std::env::var_os("ALLOC_TRACE") {
        TRACING.store(true, Ordering::SeqCst);
        c.pairs(1).await;
        TRACING.store(false, Ordering::SeqCst);
        let traces = std::mem::take(&mut *TRACES.lock().unwrap());
        let mut out = String::new();
        for t in traces {
            out.push_str("=====\n");
            out.push_str(&t);
        }
        std::fs::write(file, out).unwrap();
    }
    for _ in 0..rounds {
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        c.pairs(MEASURED_PAIRS).await;
        let after = ALLOCATIONS.load(Ordering::SeqCst);
        per_request.push((after - before) / (2 * MEASURED_PAIRS));
    }
    per_request
}

#[actix_rt::test]
async fn a_hot_desk_request_takes_a_fixed_number_of_allocations() {
    watch_panics();
    let sim = SimProcess::sw1();
    // No timers that would allocate during the measurement: no keep-alive on the link, no
    // client pings.
    let text = config::head(
        "client-ping-interval = \"1h\"",
        "request-timeout = \"5s\"\nkpl-interval = \"0s\"",
    ) + &config::switch("sw1", &["4000-4999"], "", &[&sim.link()]);
    let running = start(Config::parse(&text, "allocations test").unwrap())
        .await
        .unwrap();
    wait_links_up(&running).await;
    let url = format!("ws://{}/v1", running.client_addr);

    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _ = tx.send(rt.block_on(client(url, 5)));
    });
    let per_request = rx.await.expect("the client thread failed");
    thread.join().unwrap();
    running.stop().await;
    assert_no_panic();

    eprintln!("allocations per hot-desk request, each round: {per_request:?}");
    let least = *per_request.iter().min().unwrap();
    let most = *per_request.iter().max().unwrap();
    assert!(
        least >= AT_LEAST,
        "{per_request:?} allocations per request: the counter is not counting"
    );
    assert!(
        most <= PER_REQUEST + 1,
        "{per_request:?} allocations per hot-desk request, {PER_REQUEST} measured before: \
         something on the path allocates more (see PER_REQUEST)"
    );
}
