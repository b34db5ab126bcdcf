//! Properties of resumable sessions: whatever the interleaving of phone events, reads,
//! disconnects, slow consumers and resumes, a client never gets an event twice, never out of
//! `eventSeq` order, and never misses one without the resume saying so (`resumeGap`).
//!
//! First against the session's queue and outbox alone (no sockets, no clock: a few thousand
//! cases),
//! then against a router in this process over loopback WebSockets (100 cases).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::router;

use csta_router::client::{ClientHandle, ClientInner, Connection, Entry, Kind, Replay, Resumed};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use router::{Client, Router};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const CASES: u32 = 4096;

/// What happens next.
#[derive(Debug, Clone)]
enum Op {
    /// The switch reports an event on switch `0` or `1`.
    Event(u16),
    /// The client reads up to this many messages.
    Read(usize),
    /// The connection drops.
    Drop,
    /// A new connection resumes with what the client has read.
    Resume,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u16..2).prop_map(Op::Event),
        3 => (1usize..8).prop_map(Op::Read),
        1 => Just(Op::Drop),
        1 => Just(Op::Resume),
    ]
}

/// The client as the protocol lets it see things: what it read, per switch.
#[derive(Default)]
struct Desktop {
    last: [u64; 2],
    /// Switches whose next event may skip numbers: the last resume said so.
    gap_announced: [bool; 2],
    read: usize,
}

impl Desktop {
    /// An event the client reads: never twice, never out of order, and a jump only where a gap
    /// was announced.
    fn got(&mut self, switch: u16, seq: u64) {
        let w = usize::from(switch);
        assert!(
            seq > self.last[w],
            "switch {switch}: {seq} after {}",
            self.last[w]
        );
        if seq != self.last[w] + 1 {
            assert!(
                self.gap_announced[w],
                "switch {switch}: {} to {seq} without a gap announced",
                self.last[w]
            );
            self.gap_announced[w] = false;
        }
        self.last[w] = seq;
        self.read += 1;
    }
}

/// A connection of the model: its signals and, while it holds it, the session's queue.
struct Conn {
    signals: Arc<Connection>,
    rx: Option<mpsc::Receiver<Entry>>,
}

/// The connection writes what it took: the client reads it.
fn deliver(client: &ClientHandle, batch: Vec<Entry>, desk: &mut Desktop) {
    client.taken(&batch);
    for e in batch {
        if let Kind::Event { switch, seq } = e.kind {
            desk.got(switch, seq);
        }
    }
}

/// A new connection resumes with what the client read: the older one lets go of the queue
/// when told to, then the new one writes what comes first.
fn resume(client: &ClientHandle, conn: &mut Conn, desk: &mut Desktop) -> Vec<u16> {
    let last = desk.last;
    let new = Arc::new(Connection::default());
    let opening = |_: &Replay| vec!["open".into()];
    let mut resumed = client.resume(&new, |s| last[usize::from(s)], opening);
    if let Resumed::Busy(_) = resumed {
        assert!(conn.signals.taken.is_cancelled());
        let rx = conn.rx.take().unwrap();
        assert!(!client.detach(&conn.signals, Vec::new(), rx));
        resumed = client.resume(&new, |s| last[usize::from(s)], opening);
    }
    let Resumed::Attached { rx, first, plan } = resumed else {
        panic!("the queue was given back");
    };
    for s in &plan.gap {
        desk.gap_announced[usize::from(*s)] = true;
    }
    assert_eq!(&*first[0].text, "open");
    deliver(client, first, desk);
    *conn = Conn {
        signals: new,
        rx: Some(rx),
    };
    plan.gap
}

fn run(ops: &[Op], queue: usize, retain: usize) {
    let signals = Arc::new(Connection::default());
    let (inner, rx) = ClientInner::local(1, queue, retain, signals.clone());
    let client = ClientHandle::new(inner);
    let mut conn = Conn {
        signals,
        rx: Some(rx),
    };
    let mut next_seq = [0u64; 2];
    let mut desk = Desktop::default();
    let mut last_pushed = None;
    for op in ops {
        match op {
            Op::Event(switch) => {
                let w = usize::from(*switch);
                next_seq[w] += 1;
                last_pushed = Some((*switch, next_seq[w]));
                let text = format!("{switch}:{}", next_seq[w]).into();
                client.event(w, next_seq[w], text);
            }
            Op::Read(n) => {
                if let Some(rx) = conn.rx.as_mut() {
                    let batch: Vec<Entry> =
                        std::iter::from_fn(|| rx.try_recv().ok()).take(*n).collect();
                    deliver(&client, batch, &mut desk);
                }
            }
            Op::Drop => {
                if let Some(rx) = conn.rx.take() {
                    assert!(client.detach(&conn.signals, Vec::new(), rx));
                }
            }
            Op::Resume => {
                resume(&client, &mut conn, &mut desk);
            }
        }
        // A connection found too slow is closed: it lets go of the queue.
        if conn.signals.slow.is_cancelled() {
            if let Some(rx) = conn.rx.take() {
                client.detach(&conn.signals, Vec::new(), rx);
            }
        }
    }
    // Finally the client resumes and reads everything: it then has every event of each switch
    // unless a gap was announced.
    let final_gap = resume(&client, &mut conn, &mut desk);
    if let Some(rx) = conn.rx.as_mut() {
        let batch: Vec<Entry> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        deliver(&client, batch, &mut desk);
    }
    for (w, (read, pushed)) in desk.last.iter().zip(next_seq).enumerate() {
        assert!(
            *read == pushed || final_gap.contains(&u16::try_from(w).unwrap()),
            "switch {w}: read up to {read} of {pushed} at the end, no gap said"
        );
    }
    if let Some((switch, seq)) = last_pushed {
        assert_eq!(
            desk.last[usize::from(switch)],
            seq,
            "the last event is always kept"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Never a duplicate, never out of order, never a silent gap, and the last events are
    /// always there for a final resume.
    #[test]
    fn interleavings_of_events_reads_drops_and_resumes(
        ops in proptest::collection::vec(op(), 0..120),
        queue in 1usize..12,
        retain in 1usize..24,
    ) {
        run(&ops, queue, retain);
    }
}

/// The same properties against the router over loopback: 100 random cases, one session and
/// one DN each, with drops and resumes between phone events.
#[actix_rt::test]
async fn interleavings_against_the_router() {
    let r = Router::start().await;
    let mut watcher = r.client().await;
    for case in 0u64..100 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(case);
        let dn = format!("{}", 5200 + case);
        watcher.register(&dn).await;
        let (c, reply) = open(&r, None).await;
        let id = reply["sessionId"].as_str().unwrap().to_owned();
        let mut c = Some(c);
        if let Some(c) = c.as_mut() {
            c.register(&dn).await;
        }
        let mut last = 0u64;
        let mut all = Vec::new();
        for _ in 0..rng.random_range(3..9) {
            match (rng.random_range(0..4), c.as_mut()) {
                (0 | 1, _) => {
                    let count = rng.random_range(1..4u64);
                    r.sw1
                        .post_ok(
                            "/burst",
                            json!({"guest": dn, "host": format!("{}", 4200 + case), "count": count}),
                        )
                        .await;
                    for _ in 0..2 * count {
                        all.push(seq_of(&watcher.recv().await));
                    }
                }
                (2, Some(client)) => {
                    // Read some of what is there, then maybe drop the connection.
                    for _ in 0..rng.random_range(0..4) {
                        match client.next(Duration::from_millis(20)).await {
                            Some(ev) => last = checked(last, seq_of(&ev), &all),
                            None => break,
                        }
                    }
                    if rng.random_bool(0.6) {
                        c = None;
                    }
                }
                (_, None) => {
                    let resume = json!({"sessionId": id, "lastEventSeq": {"sw1": last}});
                    let (next, reply) = open(&r, Some(resume)).await;
                    assert_eq!(reply["resumed"], true, "{reply}");
                    assert!(reply.get("resumeGap").is_none(), "{reply}");
                    c = Some(next);
                }
                _ => {}
            }
        }
        let mut c = match c {
            Some(c) => c,
            None => {
                let resume = json!({"sessionId": id, "lastEventSeq": {"sw1": last}});
                open(&r, Some(resume)).await.0
            }
        };
        // Everything left, in order, once: the client ends with every event of its DN.
        while last < all.last().copied().unwrap_or(0) {
            let ev = c.recv().await;
            last = checked(last, seq_of(&ev), &all);
        }
        c.expect_nothing().await;
        let closed = c.request(json!({"message": "RequestClose"})).await;
        assert_eq!(closed["message"], "EventClosed");
    }
    r.stop().await;
}

async fn open(r: &Router, resume: Option<Value>) -> (Client, Value) {
    Client::open_as(&r.url(), "props", resume, 2).await
}

fn seq_of(ev: &Value) -> u64 {
    assert_eq!(ev["message"], "EventPrivateInfo", "{ev}");
    ev["eventSeq"].as_u64().unwrap()
}

/// The client got event `seq` after `last`: the next one the switch reported for its DN.
fn checked(last: u64, seq: u64, all: &[u64]) -> u64 {
    let expected = all.iter().copied().find(|s| *s > last);
    assert_eq!(
        Some(seq),
        expected,
        "after {last}: every event once, in order"
    );
    seq
}
