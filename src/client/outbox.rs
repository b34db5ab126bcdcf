//! A session's outbox as a state machine without IO and without a clock: the queue its
//! connection writes from, and the events it keeps for a resume (README, "Resumable
//! sessions").
//!
//! Everything for a session is pushed here, whether a connection is attached or not:
//! - with a connection, messages wait in the queue (`unsent`) until the connection takes them;
//!   more than `queue` waiting makes the client a slow consumer (4008), which detaches it;
//! - every event (a message with an `eventSeq`) is also kept, sent or not, as the same shared
//!   bytes, up to the last `retain` of them; the oldest goes first, and the switch it came
//!   from is remembered as having a gap above what the client may have read;
//! - without a connection (the session lingers) events are only kept, replies and notices are
//!   dropped (a resume sends fresh link events; replies to requests in flight when the
//!   connection died are not replayed), and an `EventUnregistered` for a registration dropped
//!   meanwhile is kept for the resume.
//!
//! A resume ([`Outbox::resume`]) puts, in one step, the opening messages, those notices and
//! the kept events above the client's `lastEventSeq` in the queue ahead of everything live:
//! no gap and no duplicate between replay and live events.

use crate::protocol::SharedText;
use std::collections::VecDeque;

/// What a queued message is, for what happens to it when the connection goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A reply to one of the client's requests (frees a place in its in-flight limit); not
    /// replayed.
    Reply,
    /// Anything else without an `eventSeq` (link events, errors the session answers itself);
    /// not replayed.
    Notice,
    /// An `EventUnregistered` for a registration the router dropped: kept while the session
    /// lingers, sent at the resume.
    Dropped,
    /// An event of switch number `switch` with its `eventSeq`: kept for a resume.
    Event {
        /// The switch's index in the configuration.
        switch: u16,
        /// Its `eventSeq`.
        seq: u64,
    },
}

/// One queued message.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The serialized message, shared with its other recipients.
    pub text: SharedText,
    /// What it is.
    pub kind: Kind,
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued for the connection; `wake` when the queue was empty (the writer may be asleep).
    Queued {
        /// Whether the writer must be woken.
        wake: bool,
    },
    /// The queue was full: the connection is detached (it must be closed with 4008); an event
    /// is kept for the resume.
    Slow,
    /// No connection: an event or a dropped registration's notice was kept for the resume.
    Kept,
    /// No connection, and nothing to keep.
    Discarded,
}

/// The plan of a resume: how many events it replays and the switches with a gap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    /// Events put in the queue to be sent again.
    pub replayed: usize,
    /// Switch indices some of whose events above the client's `lastEventSeq` are no longer
    /// kept.
    pub gap: Vec<u16>,
}

/// The most notices of dropped registrations kept while a session lingers.
const MAX_DROPPED: usize = 4096;

/// A session's queue and kept events (see the [module docs](self)).
#[derive(Debug)]
pub struct Outbox {
    /// Waiting for the connection, in order.
    unsent: VecDeque<Entry>,
    /// How many of `unsent` are events.
    unsent_events: usize,
    /// Events already taken by a connection (or left when it went), oldest first.
    sent: VecDeque<(u16, u64, SharedText)>,
    /// Notices of registrations dropped while no connection was attached.
    dropped: Vec<SharedText>,
    /// Per switch index: the highest `eventSeq` no longer kept (0: none).
    evicted: Vec<u64>,
    /// Whether a connection is attached.
    attached: bool,
    /// The most messages waiting for a connection.
    queue: usize,
    /// The most events kept.
    retain: usize,
}

impl Outbox {
    /// An outbox with a connection attached: at most `queue` messages waiting for it, and the
    /// last `retain` events kept (0 when sessions do not linger).
    pub fn new(queue: usize, retain: usize) -> Outbox {
        Outbox {
            unsent: VecDeque::new(),
            unsent_events: 0,
            sent: VecDeque::new(),
            dropped: Vec::new(),
            evicted: Vec::new(),
            attached: true,
            queue: queue.max(1),
            retain,
        }
    }

    /// Whether a connection is attached.
    pub fn attached(&self) -> bool {
        self.attached
    }

    /// How many messages wait for the connection.
    pub fn waiting(&self) -> usize {
        self.unsent.len()
    }

    /// How many events are kept (sent or waiting).
    pub fn kept(&self) -> usize {
        self.sent.len() + self.unsent_events
    }

    /// Push a message.
    pub fn push(&mut self, entry: Entry) -> Pushed {
        if !self.attached {
            return match entry.kind {
                Kind::Event { switch, seq } => {
                    self.sent.push_back((switch, seq, entry.text));
                    self.trim();
                    Pushed::Kept
                }
                Kind::Dropped if self.dropped.len() < MAX_DROPPED => {
                    self.dropped.push(entry.text);
                    Pushed::Kept
                }
                _ => Pushed::Discarded,
            };
        }
        if self.unsent.len() >= self.queue {
            self.detach();
            self.push(entry);
            return Pushed::Slow;
        }
        let wake = self.unsent.is_empty();
        if matches!(entry.kind, Kind::Event { .. }) {
            self.unsent_events += 1;
        }
        self.unsent.push_back(entry);
        self.trim();
        Pushed::Queued { wake }
    }

    /// The connection takes up to `max` waiting messages (appended to `out`); nothing when
    /// none is attached.
    pub fn take(&mut self, max: usize, out: &mut Vec<Entry>) {
        if !self.attached {
            return;
        }
        for _ in 0..max {
            let Some(entry) = self.unsent.pop_front() else {
                break;
            };
            if let Kind::Event { switch, seq } = entry.kind {
                self.unsent_events -= 1;
                if self.retain > 0 {
                    self.sent.push_back((switch, seq, entry.text.clone()));
                }
            }
            out.push(entry);
        }
        self.trim();
    }

    /// The connection went: what it had not taken is no longer its; its events stay kept.
    pub fn detach(&mut self) {
        self.attached = false;
        for entry in self.unsent.drain(..) {
            match entry.kind {
                Kind::Event { switch, seq } => self.sent.push_back((switch, seq, entry.text)),
                Kind::Dropped if self.dropped.len() < MAX_DROPPED => self.dropped.push(entry.text),
                Kind::Dropped | Kind::Reply | Kind::Notice => {}
            }
        }
        self.unsent_events = 0;
        self.trim();
    }

    /// What a resume with `last` (a switch's `lastEventSeq`) would replay, without changing
    /// anything.
    pub fn plan(&self, last: impl Fn(u16) -> u64) -> Replay {
        let replayed = self
            .sent
            .iter()
            .filter(|(switch, seq, _)| *seq > last(*switch))
            .count();
        let gap = (0..self.evicted.len())
            .filter_map(|i| {
                let switch = u16::try_from(i).ok()?;
                let evicted = self.evicted.get(i).copied().unwrap_or(0);
                (evicted > last(switch)).then_some(switch)
            })
            .collect();
        Replay { replayed, gap }
    }

    /// A new connection resumes the session (one still attached is detached first): `opening`
    /// (the reply and the link events) first, then the notices of dropped registrations, then
    /// the kept events above `last`, in the order they were first queued, then whatever comes
    /// next. Events at or below `last` are forgotten: the client has them.
    pub fn resume(&mut self, last: impl Fn(u16) -> u64, opening: Vec<SharedText>) -> Replay {
        // Whatever the connection attached until now had not taken is kept first (the oldest
        // may go), so the plan sees what is really kept.
        self.detach();
        let plan = self.plan(&last);
        self.attached = true;
        self.unsent.extend(opening.into_iter().map(|text| Entry {
            text,
            kind: Kind::Notice,
        }));
        self.unsent.extend(self.dropped.drain(..).map(|text| Entry {
            text,
            kind: Kind::Notice,
        }));
        for (switch, seq, text) in self.sent.drain(..) {
            if seq > last(switch) {
                self.unsent_events += 1;
                self.unsent.push_back(Entry {
                    text,
                    kind: Kind::Event { switch, seq },
                });
            }
        }
        plan
    }

    /// Forget the oldest kept events beyond `retain`, noting each one's switch as having a gap.
    fn trim(&mut self) {
        while self.sent.len() + self.unsent_events > self.retain {
            let Some((switch, seq, _)) = self.sent.pop_front() else {
                break;
            };
            let i = usize::from(switch);
            if self.evicted.len() <= i {
                self.evicted.resize(i + 1, 0);
            }
            if let Some(e) = self.evicted.get_mut(i) {
                *e = (*e).max(seq);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn event(switch: u16, seq: u64) -> Entry {
        Entry {
            text: format!("e{switch}.{seq}").into(),
            kind: Kind::Event { switch, seq },
        }
    }

    fn notice(text: &str) -> Entry {
        Entry {
            text: text.into(),
            kind: Kind::Notice,
        }
    }

    fn texts(o: &mut Outbox) -> Vec<String> {
        let mut out = Vec::new();
        o.take(usize::MAX, &mut out);
        out.into_iter().map(|e| e.text.to_string()).collect()
    }

    #[test]
    fn the_writer_is_woken_only_when_the_queue_was_empty() {
        let mut o = Outbox::new(4, 8);
        assert_eq!(o.push(event(0, 1)), Pushed::Queued { wake: true });
        assert_eq!(o.push(notice("n")), Pushed::Queued { wake: false });
        assert_eq!(texts(&mut o), ["e0.1", "n"]);
        assert_eq!(o.push(event(0, 2)), Pushed::Queued { wake: true });
    }

    #[test]
    fn a_full_queue_detaches_the_connection_and_keeps_the_event() {
        let mut o = Outbox::new(2, 8);
        o.push(event(0, 1));
        o.push(Entry {
            text: "reply".into(),
            kind: Kind::Reply,
        });
        assert_eq!(o.push(event(0, 2)), Pushed::Slow);
        assert!(!o.attached());
        assert!(texts(&mut o).is_empty(), "no connection takes anything");
        assert_eq!(o.kept(), 2);
        let plan = o.resume(|_| 0, vec!["open".into()]);
        assert_eq!(
            plan,
            Replay {
                replayed: 2,
                gap: vec![]
            }
        );
        assert_eq!(
            texts(&mut o),
            ["open", "e0.1", "e0.2"],
            "the reply is not replayed"
        );
    }

    #[test]
    fn a_resume_replays_above_the_last_seq_then_live_events_follow() {
        let mut o = Outbox::new(16, 16);
        for seq in 1..=3 {
            o.push(event(0, seq));
            o.push(event(1, seq * 10));
        }
        // The client read up to e0.2 and e1.10; the dying socket swallowed the rest.
        assert_eq!(texts(&mut o).len(), 6);
        o.detach();
        assert_eq!(o.push(event(0, 4)), Pushed::Kept);
        assert_eq!(o.push(notice("link down")), Pushed::Discarded);
        assert_eq!(
            o.push(Entry {
                text: "unregistered".into(),
                kind: Kind::Dropped
            }),
            Pushed::Kept
        );
        let last = |s: u16| if s == 0 { 2 } else { 10 };
        assert_eq!(o.plan(last).replayed, 4);
        let plan = o.resume(last, vec!["open".into(), "link".into()]);
        assert_eq!(plan.replayed, 4);
        o.push(event(1, 40));
        assert_eq!(
            texts(&mut o),
            [
                "open",
                "link",
                "unregistered",
                "e1.20",
                "e0.3",
                "e1.30",
                "e0.4",
                "e1.40"
            ]
        );
    }

    #[test]
    fn evicted_events_above_the_last_seq_are_a_gap_of_their_switch() {
        let mut o = Outbox::new(16, 3);
        for seq in 1..=4 {
            o.push(event(0, seq));
        }
        assert_eq!(o.kept(), 4, "events waiting to be sent are not dropped");
        assert_eq!(texts(&mut o).len(), 4);
        o.push(event(2, 7));
        assert_eq!(o.kept(), 3);
        o.detach();
        // e0.1 and e0.2 are gone: a client that read e0.1 misses e0.2.
        assert_eq!(o.plan(|_| 1).gap, [0]);
        assert_eq!(
            o.plan(|s| if s == 0 { 2 } else { 0 }).gap,
            Vec::<u16>::new()
        );
        let plan = o.resume(|_| 1, vec![]);
        assert_eq!(
            plan,
            Replay {
                replayed: 3,
                gap: vec![0]
            }
        );
        assert_eq!(texts(&mut o), ["e0.3", "e0.4", "e2.7"]);
    }

    #[test]
    fn without_retention_nothing_is_kept() {
        let mut o = Outbox::new(4, 0);
        o.push(event(0, 1));
        assert_eq!(texts(&mut o), ["e0.1"]);
        o.push(event(0, 2));
        o.detach();
        assert_eq!(o.kept(), 0);
        assert_eq!(o.resume(|_| 1, vec![]).gap, [0]);
    }
}
