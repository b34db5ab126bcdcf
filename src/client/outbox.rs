//! What a session keeps for a resume, as a state machine without IO and without a clock
//! (README, "Resumable sessions").
//!
//! A session's messages travel to its connection through a bounded channel (the client's
//! queue, `client-queue` messages), written without a lock on the hot path. What the session
//! keeps is here, in an [`Outbox`] that whoever holds the session's queue fills:
//! - the connection's writer, for each event it takes (sent, or swallowed by a dying socket);
//! - the connection going, for what it had not taken;
//! - while no connection is attached (the session lingers), every push.
//!
//! Kept are the last `retain` events (messages with an `eventSeq`), as the same shared bytes
//! as their other recipients; the oldest goes first, and the switch it came from is
//! remembered as having a gap above what the client may have read. Replies and notices are
//! not kept (a resume sends fresh link events; replies to requests in flight when the
//! connection died are not replayed), but an `EventUnregistered` for a registration the
//! router dropped is, until the resume.

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

/// The plan of a resume: how many events it replays and the switches with a gap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    /// Events to be sent again.
    pub replayed: usize,
    /// Switch indices some of whose events above the client's `lastEventSeq` are no longer
    /// kept.
    pub gap: Vec<u16>,
}

/// Events read back for a session (the cluster's event stream), and notices to send just
/// before some of them, each with the `eventSeq` it goes with; and whether they are all there
/// are above the client's `lastEventSeq` (`false`: some may be missing, a gap).
pub type ReadBack = (Vec<(u64, SharedText)>, Vec<(u64, SharedText)>, bool);

/// The most notices of dropped registrations kept while a session lingers.
const MAX_DROPPED: usize = 4096;

/// What a session keeps (see the [module docs](self)).
#[derive(Debug, Default)]
pub struct Outbox {
    /// Kept events, oldest first.
    kept: Kept,
    /// Notices of registrations dropped while no connection was attached.
    dropped: Vec<SharedText>,
    /// Notices to send just before a kept event (its switch and `eventSeq`): the link events
    /// of a failover that happened between two replayed events.
    before: Vec<(u16, u64, SharedText)>,
    /// Per switch index: the highest `eventSeq` no longer kept (0: none).
    evicted: Vec<u64>,
    /// The most events kept.
    retain: usize,
    /// The most events kept outside a widened resume ([`Outbox::widen`]).
    normal: usize,
}

impl Outbox {
    /// An outbox keeping the last `retain` events (0 when sessions do not linger).
    pub fn new(retain: usize) -> Outbox {
        Outbox {
            retain,
            normal: retain,
            ..Outbox::default()
        }
    }

    /// How many events are kept.
    pub fn kept(&self) -> usize {
        self.kept.len()
    }

    /// An event was sent (or queued for a connection that went): keep it.
    pub fn keep_event(&mut self, switch: u16, seq: u64, text: SharedText) {
        if self.retain == 0 {
            self.note_evicted(switch, seq);
            return;
        }
        self.kept.push_back((switch, seq, text));
        while self.kept.len() > self.retain {
            if let Some((switch, seq, _)) = self.kept.pop_front() {
                self.note_evicted(switch, seq);
            }
        }
    }

    /// A message no connection will take (it went, or none is attached): an event or a
    /// dropped registration's notice is kept; `true` if it was.
    pub fn keep(&mut self, entry: Entry) -> bool {
        match entry.kind {
            Kind::Event { switch, seq } => {
                self.keep_event(switch, seq, entry.text);
                self.retain > 0
            }
            Kind::Dropped if self.dropped.len() < MAX_DROPPED => {
                self.dropped.push(entry.text);
                true
            }
            Kind::Dropped | Kind::Reply | Kind::Notice => false,
        }
    }

    /// What a resume with `last` (a switch's `lastEventSeq`) would replay.
    pub fn plan(&self, last: impl Fn(u16) -> u64) -> Replay {
        let replayed = self
            .kept
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

    /// A new connection resumes the session: the notices of dropped registrations, then the
    /// kept events above `last`, in the order they were first queued, to be sent before
    /// anything else. Events at or below `last` are forgotten (the client has them); those
    /// sent again are kept again as the connection takes them.
    pub fn resume(&mut self, last: impl Fn(u16) -> u64) -> Vec<Entry> {
        let mut out: Vec<Entry> = self
            .dropped
            .drain(..)
            .map(|text| Entry {
                text,
                kind: Kind::Notice,
            })
            .collect();
        self.retain = self.normal;
        let before = std::mem::take(&mut self.before);
        for (switch, seq, text) in self.kept.take_all() {
            if seq > last(switch) {
                out.extend(
                    before
                        .iter()
                        .filter(|(s, n, _)| (*s, *n) == (switch, seq))
                        .map(|(_, _, text)| Entry {
                            text: text.clone(),
                            kind: Kind::Notice,
                        }),
                );
                out.push(Entry {
                    text,
                    kind: Kind::Event { switch, seq },
                });
            }
        }
        out
    }

    /// Events of `switch` read back from elsewhere (the cluster's event stream): kept with
    /// those already kept, in `eventSeq` order per switch, each once; `notices` go just before
    /// the event whose `eventSeq` they name.
    ///
    /// `covered`: the events read back are all there are above the client's `lastEventSeq`
    /// (what was forgotten before is found again); else some may be missing: a gap.
    pub fn merge(&mut self, switch: u16, (events, notices, covered): ReadBack) {
        if covered {
            if let Some(e) = self.evicted.get_mut(usize::from(switch)) {
                *e = 0;
            }
        } else {
            self.note_evicted(switch, u64::MAX);
        }
        self.before
            .extend(notices.into_iter().map(|(seq, text)| (switch, seq, text)));
        let mut all: Vec<KeptEvent> = self.kept.take_all().collect();
        all.extend(events.into_iter().map(|(seq, text)| (switch, seq, text)));
        all.sort_by_key(|(switch, seq, _)| (*switch, *seq));
        all.dedup_by_key(|(switch, seq, _)| (*switch, *seq));
        for (switch, seq, text) in all {
            self.keep_event(switch, seq, text);
        }
    }

    /// Keep up to `factor` times as many events until the next resume.
    pub fn widen(&mut self, factor: usize) {
        self.retain = self.normal.saturating_mul(factor);
    }

    /// How many events it keeps at most.
    pub fn retain(&self) -> usize {
        self.retain
    }

    /// Event `seq` of `switch` is not kept: a resume above an earlier `eventSeq` has a gap.
    pub fn evicted(&mut self, switch: u16, seq: u64) {
        self.note_evicted(switch, seq);
    }

    fn note_evicted(&mut self, switch: u16, seq: u64) {
        let i = usize::from(switch);
        if self.evicted.len() <= i {
            self.evicted.resize(i + 1, 0);
        }
        if let Some(e) = self.evicted.get_mut(i) {
            *e = (*e).max(seq);
        }
    }
}

/// One kept event: its switch, its `eventSeq`, its bytes.
type KeptEvent = (u16, u64, SharedText);

/// The kept events, oldest first, in chunks: growing never moves what is kept (one
/// contiguous buffer of up to `client-queue` events would be copied and faulted in anew at
/// each doubling, for every session, which showed in fan-out profiles), and a session that
/// keeps few events holds a small first chunk only.
#[derive(Debug, Default)]
struct Kept {
    chunks: VecDeque<VecDeque<KeptEvent>>,
    len: usize,
    /// The last chunk emptied, reused for the next one.
    spare: Option<VecDeque<KeptEvent>>,
}

/// The largest chunk: 256 events (12 KiB).
const CHUNK: usize = 256;

impl Kept {
    fn len(&self) -> usize {
        self.len
    }

    fn push_back(&mut self, event: KeptEvent) {
        let full = self.chunks.back().is_none_or(|c| c.len() == c.capacity());
        if full {
            // Chunks grow 8, 32, 128, 256, 256, ...
            let size = self
                .chunks
                .back()
                .map_or(8, |c| (c.capacity() * 4).min(CHUNK));
            let chunk = match self.spare.take() {
                Some(spare) if spare.capacity() >= size => spare,
                _ => VecDeque::with_capacity(size),
            };
            self.chunks.push_back(chunk);
        }
        if let Some(last) = self.chunks.back_mut() {
            last.push_back(event);
            self.len += 1;
        }
    }

    fn pop_front(&mut self) -> Option<KeptEvent> {
        let first = self.chunks.front_mut()?;
        let event = first.pop_front();
        if first.is_empty() {
            self.spare = self.chunks.pop_front();
        }
        if event.is_some() {
            self.len -= 1;
        }
        event
    }

    fn iter(&self) -> impl Iterator<Item = &KeptEvent> {
        self.chunks.iter().flatten()
    }

    /// Every kept event, oldest first; none is kept after.
    fn take_all(&mut self) -> impl Iterator<Item = KeptEvent> {
        self.len = 0;
        std::mem::take(&mut self.chunks).into_iter().flatten()
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

    fn texts(entries: Vec<Entry>) -> Vec<String> {
        entries.into_iter().map(|e| e.text.to_string()).collect()
    }

    #[test]
    fn a_resume_gives_the_dropped_notices_then_the_events_above_the_last_seq() {
        let mut o = Outbox::new(16);
        for seq in 1..=3 {
            o.keep(event(0, seq));
            o.keep(event(1, seq * 10));
        }
        assert!(!o.keep(Entry {
            text: "link down".into(),
            kind: Kind::Notice
        }));
        assert!(o.keep(Entry {
            text: "unregistered".into(),
            kind: Kind::Dropped
        }));
        let last = |s: u16| if s == 0 { 2 } else { 10 };
        assert_eq!(
            o.plan(last),
            Replay {
                replayed: 3,
                gap: vec![]
            }
        );
        assert_eq!(
            texts(o.resume(last)),
            ["unregistered", "e1.20", "e0.3", "e1.30"]
        );
        assert_eq!(o.kept(), 0);
    }

    #[test]
    fn evicted_events_above_the_last_seq_are_a_gap_of_their_switch() {
        let mut o = Outbox::new(3);
        for seq in 1..=4 {
            o.keep(event(0, seq));
        }
        o.keep(event(2, 7));
        assert_eq!(o.kept(), 3);
        // e0.1 and e0.2 are gone: a client that read e0.1 misses e0.2.
        assert_eq!(o.plan(|_| 1).gap, [0]);
        assert_eq!(
            o.plan(|s| if s == 0 { 2 } else { 0 }).gap,
            Vec::<u16>::new()
        );
        assert_eq!(texts(o.resume(|_| 1)), ["e0.3", "e0.4", "e2.7"]);
    }

    #[test]
    fn without_retention_nothing_is_kept_and_every_event_is_a_gap() {
        let mut o = Outbox::new(0);
        assert!(!o.keep(event(0, 1)));
        assert_eq!(o.kept(), 0);
        assert_eq!(o.plan(|_| 0).gap, [0]);
        assert!(o.resume(|_| 0).is_empty());
    }

    #[test]
    fn events_read_back_merge_once_in_order_with_their_notices_before_them() {
        let mut o = Outbox::new(16);
        // Live events kept while the replay was read: 5 and 6; the replay holds 3 to 5.
        o.keep(event(0, 5));
        o.keep(event(0, 6));
        let back = |seq: u64| (seq, SharedText::from(format!("e0.{seq}")));
        o.merge(
            0,
            (
                vec![back(3), back(4), back(5)],
                vec![(4, "down".into()), (4, "up".into())],
                true,
            ),
        );
        assert_eq!(
            texts(o.resume(|_| 2)),
            ["e0.3", "down", "up", "e0.4", "e0.5", "e0.6"]
        );
    }

    #[test]
    fn kept_events_grow_in_chunks_and_keep_their_order() {
        let mut o = Outbox::new(1000);
        for seq in 1..=1500 {
            o.keep(event(0, seq));
        }
        assert_eq!(o.kept(), 1000);
        let seqs: Vec<u64> = o
            .resume(|_| 0)
            .iter()
            .map(|e| match e.kind {
                Kind::Event { seq, .. } => seq,
                _ => 0,
            })
            .collect();
        assert_eq!(seqs, (501..=1500).collect::<Vec<u64>>());
    }
}
