//! The ordered flow from a switch's owner to another node: the replies to that node's forwarded
//! requests and the events of its clients' DNs, in the order the owner read the frames.
//!
//! Each message is a record on the node's flow subject (several records queued together go in
//! one core NATS message); its fields say which switch, which ownership (`epoch`), its number
//! in the flow (contiguous per switch, node and
//! epoch, from 1), and two running counts that make any loss exactly measurable: how many
//! events the flow carried so far, and the `eventSeq` of the last one. Core NATS may drop
//! messages (a reconnect, a slow consumer) and the owner drops what its bounded queue cannot
//! take; the receiver sees the hole in the numbers ([`FlowReceiver`]), fetches the missing
//! events from the cluster's event stream, where the owner stored each event once, and when
//! something cannot be repaired (a lost reply, an event the stream lacks) has the clients
//! concerned reconnect (1013) rather than deliver past the hole.
//!
//! The receiver is a state machine without IO: the node's proxy feeds it messages and repair
//! results and carries out the steps it returns.

use crate::protocol::SharedText;
use std::sync::Arc;

/// Header names of the cluster's messages: events in the stream, link states (a flow's
/// messages carry their fields in their records, see [`FlowMessage::encode_into`]).
pub(super) mod header {
    pub const SWITCH: &str = "Crr-Switch";
    pub const EPOCH: &str = "Crr-Epoch";
    pub const DN: &str = "Crr-Dn";
    pub const SEQ: &str = "Crr-Seq";
    pub const UP: &str = "Crr-Up";
    pub const LINK: &str = "Crr-Link";
    pub const REASON: &str = "Crr-Reason";
    pub const STATE: &str = "Crr-State";
}

/// What a flow message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// An event of `dn` (switch sequence `seq`), for every client of the node registered on it.
    Event {
        /// The monitored DN.
        dn: Arc<str>,
        /// Its `eventSeq`.
        seq: u64,
    },
    /// A message for one session of the node: a reply to one of its requests when `reply`.
    Session {
        /// The session.
        session: Arc<str>,
        /// Whether it answers a request.
        reply: bool,
    },
    /// Where the flow stands (sent periodically, so that a loss at its end is seen too): its
    /// number is the last one sent, not a new one.
    Heartbeat,
}

/// One message of a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowMessage {
    /// The switch.
    pub switch: Arc<str>,
    /// The owner's epoch (its lease's revision at acquisition).
    pub epoch: u64,
    /// Its number in the flow (for a heartbeat: the last number sent).
    pub number: u64,
    /// Events the flow carried so far, this one included.
    pub events: u64,
    /// The `eventSeq` of the last event the flow carried before this message.
    pub prev: u64,
    /// What it carries.
    pub kind: Kind,
    /// The message's JSON (empty for a heartbeat).
    pub text: SharedText,
}

/// The first word of every record of a flow's NATS message (and its version).
const RECORD: &str = "CRR1";

impl FlowMessage {
    /// Append the message to a flow's NATS payload: one line of fields, then the JSON.
    ///
    /// `CRR1 <kind> <switch> <epoch> <number> <events> <prev> <a> <b> <length>\n<JSON>`, where
    /// `kind` is `E` (an event: `a` its DN, `b` its `eventSeq`), `S` (for one session: `a` the
    /// session, `b` 1 for a reply, else 0) or `H` (a heartbeat: `a` is `-`, `b` 0). Why not
    /// NATS headers: several messages of a flow often go in one NATS message (the publisher
    /// joins what is queued for one node), and a header map per message cost allocations on
    /// both sides of every forwarded request.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let (kind, a, b) = match &self.kind {
            Kind::Event { dn, seq } => ("E", &**dn, *seq),
            Kind::Session { session, reply } => ("S", &**session, u64::from(*reply)),
            Kind::Heartbeat => ("H", "-", 0),
        };
        let body = self.text.as_bytes();
        // Writing to a Vec cannot fail.
        let _ = writeln!(
            out,
            "{RECORD} {kind} {} {} {} {} {} {a} {b} {}",
            self.switch,
            self.epoch,
            self.number,
            self.events,
            self.prev,
            body.len()
        );
        out.extend_from_slice(body);
    }

    /// The message alone, as a flow's NATS payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.text.as_bytes().len());
        self.encode_into(&mut out);
        out
    }

    /// Every message of a flow's NATS payload, in order; `None` when any record is malformed
    /// (then nothing of it is used: the receiver sees a hole and repairs it).
    pub fn read_all(payload: &[u8]) -> Option<Vec<FlowMessage>> {
        let mut out = Vec::new();
        let mut rest = payload;
        while !rest.is_empty() {
            let nl = rest.iter().position(|b| *b == b'\n')?;
            let line = std::str::from_utf8(&rest[..nl]).ok()?;
            let f: Vec<&str> = line.split(' ').collect();
            let [record, kind, switch, epoch, number, events, prev, a, b, len] = f[..] else {
                return None;
            };
            if record != RECORD {
                return None;
            }
            let n = |v: &str| v.parse::<u64>().ok();
            let len = usize::try_from(n(len)?).ok()?;
            let body = rest.get(nl + 1..nl + 1 + len)?;
            rest = &rest[nl + 1 + len..];
            let kind = match kind {
                "E" => Kind::Event {
                    dn: Arc::from(a),
                    seq: n(b)?,
                },
                "S" => Kind::Session {
                    session: Arc::from(a),
                    reply: b == "1",
                },
                "H" => Kind::Heartbeat,
                _ => return None,
            };
            out.push(FlowMessage {
                switch: Arc::from(switch),
                epoch: n(epoch)?,
                number: n(number)?,
                events: n(events)?,
                prev: n(prev)?,
                kind,
                text: SharedText::try_from(body.to_vec()).ok()?,
            });
        }
        Some(out)
    }
}

/// The owner's side of one flow: its numbers and counts (kept by the switch's shard thread).
#[derive(Debug, Default)]
pub struct FlowCounter {
    number: u64,
    events: u64,
    prev: u64,
}

impl FlowCounter {
    /// Stamp the next message of the flow.
    pub fn next(
        &mut self,
        switch: &Arc<str>,
        epoch: u64,
        kind: Kind,
        text: SharedText,
    ) -> FlowMessage {
        self.number += 1;
        let prev = self.prev;
        if let Kind::Event { seq, .. } = &kind {
            self.events += 1;
            self.prev = *seq;
        }
        FlowMessage {
            switch: switch.clone(),
            epoch,
            number: self.number,
            events: self.events,
            prev,
            kind,
            text,
        }
    }

    /// Where the flow stands, as a heartbeat (`None` before its first message).
    pub fn heartbeat(&self, switch: &Arc<str>, epoch: u64) -> Option<FlowMessage> {
        (self.number > 0).then(|| FlowMessage {
            switch: switch.clone(),
            epoch,
            number: self.number,
            events: self.events,
            prev: self.prev,
            kind: Kind::Heartbeat,
            text: SharedText::from_static(""),
        })
    }
}

/// A hole in a flow, to be filled from the event stream: the events with `eventSeq` in
/// `after..=until` (of the node's DNs) that the flow carried, `events` of them, and `others`
/// messages that were not events (replies; they cannot be repaired).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hole {
    /// The last `eventSeq` delivered before the hole.
    pub after: u64,
    /// The last `eventSeq` the hole may contain.
    pub until: u64,
    /// How many events are missing.
    pub events: u64,
    /// How many other messages are missing.
    pub others: u64,
}

/// What the receiver asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Hand the message to its clients.
    Deliver(FlowMessage),
    /// Fetch the missing events from the stream and call [`FlowReceiver::repaired`]; messages
    /// received meanwhile are held back.
    Repair(Hole),
    /// Replies were lost in a hole: the clients with a request outstanding must reconnect.
    RepliesLost,
    /// Events were lost for good: every client of the node registered on the switch must
    /// reconnect.
    EventsLost,
}

/// A node's side of the flows of one switch (see the [module docs](self)).
#[derive(Debug, Default)]
pub struct FlowReceiver {
    epoch: u64,
    /// The next number expected.
    next: u64,
    /// Events received (delivered or repaired) so far in this epoch.
    events: u64,
    /// The `eventSeq` of the last event delivered.
    last_seq: u64,
    /// Set while a hole is being repaired: the hole and the messages held back.
    repairing: Option<(Hole, Vec<FlowMessage>)>,
}

impl FlowReceiver {
    /// The current epoch (0: none yet).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A new owner (or ownership) of the switch: start its flow afresh.
    pub fn new_epoch(&mut self, epoch: u64) {
        // eventSeq keeps increasing across owners: what was delivered stays delivered.
        *self = FlowReceiver {
            epoch,
            next: 1,
            last_seq: self.last_seq,
            ..FlowReceiver::default()
        };
    }

    /// A message of the flow arrived.
    pub fn on_message(&mut self, m: FlowMessage) -> Vec<Step> {
        if m.epoch < self.epoch {
            // An earlier owner's: nothing of it may reach a client now.
            return Vec::new();
        }
        if m.epoch > self.epoch {
            self.new_epoch(m.epoch);
        }
        if let Some((_, held)) = &mut self.repairing {
            held.push(m);
            return Vec::new();
        }
        self.accept(m)
    }

    fn accept(&mut self, m: FlowMessage) -> Vec<Step> {
        let is_event = matches!(m.kind, Kind::Event { .. });
        let first_missing = self.next;
        let last_missing = match m.kind {
            Kind::Heartbeat => m.number,
            _ => m.number.saturating_sub(1),
        };
        if last_missing >= first_missing {
            let missing = last_missing - first_missing + 1;
            let events_before = m.events.saturating_sub(u64::from(is_event));
            let events = events_before.saturating_sub(self.events).min(missing);
            let hole = Hole {
                after: self.last_seq,
                until: m.prev,
                events,
                others: missing - events,
            };
            let held = match m.kind {
                Kind::Heartbeat => Vec::new(),
                _ => vec![m],
            };
            self.next = last_missing + 1;
            self.repairing = Some((hole, held));
            return vec![Step::Repair(hole)];
        }
        if matches!(m.kind, Kind::Heartbeat) || m.number < self.next {
            // Up to date, or a message seen already.
            return Vec::new();
        }
        self.next = m.number + 1;
        if let Kind::Event { seq, .. } = m.kind {
            self.events += 1;
            if seq <= self.last_seq {
                return Vec::new();
            }
            self.last_seq = seq;
        }
        vec![Step::Deliver(m)]
    }

    /// The events found in the stream for the hole being repaired (the node's DNs only), in
    /// any order; `None` when the stream could not be read. Delivers them, says what could not
    /// be repaired, then the messages held back.
    pub fn repaired(&mut self, found: Option<Vec<FlowMessage>>) -> Vec<Step> {
        let Some((hole, held)) = self.repairing.take() else {
            return Vec::new();
        };
        let mut steps = Vec::new();
        let mut found = found.unwrap_or_default();
        found.retain(
            |m| matches!(m.kind, Kind::Event { seq, .. } if seq > hole.after && seq <= hole.until),
        );
        found.sort_by_key(|m| match m.kind {
            Kind::Event { seq, .. } => seq,
            _ => 0,
        });
        found.dedup_by_key(|m| match m.kind {
            Kind::Event { seq, .. } => seq,
            _ => 0,
        });
        let repaired = found.len() as u64;
        for m in found {
            if let Kind::Event { seq, .. } = m.kind {
                self.last_seq = self.last_seq.max(seq);
            }
            steps.push(Step::Deliver(m));
        }
        self.events += hole.events;
        self.last_seq = self.last_seq.max(hole.until);
        if hole.others > 0 {
            steps.push(Step::RepliesLost);
        }
        if repaired < hole.events {
            steps.push(Step::EventsLost);
        }
        for m in held {
            if self.repairing.is_some() {
                if let Some((_, more)) = &mut self.repairing {
                    more.push(m);
                }
                continue;
            }
            steps.extend(self.accept(m));
        }
        steps
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sw() -> Arc<str> {
        Arc::from("sw1")
    }

    /// The owner's side: a flow of events (seq) and replies (0), numbered as the owner does.
    fn flow(items: &[u64]) -> Vec<FlowMessage> {
        let mut c = FlowCounter::default();
        items
            .iter()
            .map(|&seq| {
                let kind = if seq == 0 {
                    Kind::Session {
                        session: Arc::from("s1"),
                        reply: true,
                    }
                } else {
                    Kind::Event {
                        dn: Arc::from("5001"),
                        seq,
                    }
                };
                c.next(&sw(), 7, kind, SharedText::from(format!("m{seq}")))
            })
            .collect()
    }

    fn delivered(steps: &[Step]) -> Vec<u64> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Deliver(m) => Some(match m.kind {
                    Kind::Event { seq, .. } => seq,
                    _ => 0,
                }),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn records_carry_every_field() {
        let f = flow(&[0, 42]);
        let mut batch = Vec::new();
        for m in &f {
            m.encode_into(&mut batch);
        }
        // Written out by hand from the format (not by the encoder).
        let want = b"CRR1 S sw1 7 1 0 0 s1 1 2\nm0CRR1 E sw1 7 2 1 0 5001 42 3\nm42";
        assert_eq!(batch, want.to_vec(), "{}", String::from_utf8_lossy(&batch));
        let back = FlowMessage::read_all(want).unwrap();
        assert_eq!(back, f);
        assert_eq!((back[1].number, back[1].events, back[1].prev), (2, 1, 0));
        let hb = FlowCounter::default();
        assert!(hb.heartbeat(&sw(), 7).is_none());
        let read = FlowMessage::read_all(b"CRR1 H sw1 7 9 4 40 - 0 0\n").unwrap();
        assert_eq!((read[0].number, read[0].events, read[0].prev), (9, 4, 40));
        assert_eq!(read[0].kind, Kind::Heartbeat);
        assert_eq!(FlowMessage::read_all(b"").unwrap(), Vec::new());
    }

    #[test]
    fn a_malformed_payload_is_refused_whole() {
        for bad in [
            &b"CRR1 E sw1 7 2 1 0 5001 42 9\nm42"[..],
            b"CRR2 E sw1 7 2 1 0 5001 42 3\nm42",
            b"CRR1 X sw1 7 2 1 0 5001 42 3\nm42",
            b"CRR1 E sw1 7 2 1 0 5001 x 3\nm42",
            b"CRR1 E sw1 7 2 1 0 5001 42\nm42",
            b"CRR1 S sw1 7 1 0 0 s1 1 2\nm0CRR1 E sw1",
            b"no line end",
        ] {
            assert!(
                FlowMessage::read_all(bad).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn an_unbroken_flow_is_delivered_in_order_and_duplicates_dropped() {
        let mut r = FlowReceiver::default();
        r.new_epoch(7);
        let f = flow(&[3, 0, 5, 9]);
        let mut steps = Vec::new();
        for m in &f {
            steps.extend(r.on_message(m.clone()));
        }
        steps.extend(r.on_message(f[1].clone()));
        assert_eq!(delivered(&steps), [3, 0, 5, 9]);
        let mut c = FlowCounter::default();
        for m in &f {
            let _ = c.next(&sw(), 7, m.kind.clone(), m.text.clone());
        }
        assert!(r.on_message(c.heartbeat(&sw(), 7).unwrap()).is_empty());
    }

    #[test]
    fn a_hole_of_events_is_repaired_from_the_stream_before_anything_later() {
        let mut r = FlowReceiver::default();
        r.new_epoch(7);
        let f = flow(&[3, 5, 8, 11]);
        assert_eq!(delivered(&r.on_message(f[0].clone())), [3]);
        // 5 and 8 are lost; 11 arrives: a hole of two events after 3, up to 8.
        let steps = r.on_message(f[3].clone());
        assert_eq!(
            steps,
            [Step::Repair(Hole {
                after: 3,
                until: 8,
                events: 2,
                others: 0
            })]
        );
        // Held back meanwhile.
        assert!(r.on_message(flow(&[3, 5, 8, 11, 12])[4].clone()).is_empty());
        let steps = r.repaired(Some(vec![f[2].clone(), f[1].clone()]));
        assert_eq!(delivered(&steps), [5, 8, 11, 12]);
        assert!(!steps
            .iter()
            .any(|s| matches!(s, Step::EventsLost | Step::RepliesLost)));
    }

    #[test]
    fn what_the_stream_lacks_and_lost_replies_are_reported() {
        let mut r = FlowReceiver::default();
        r.new_epoch(7);
        let f = flow(&[3, 0, 5, 8]);
        let _ = r.on_message(f[0].clone());
        // The reply and 5 are lost, 8 arrives; the stream has nothing.
        let steps = r.on_message(f[3].clone());
        assert_eq!(
            steps,
            [Step::Repair(Hole {
                after: 3,
                until: 5,
                events: 1,
                others: 1
            })]
        );
        let steps = r.repaired(Some(Vec::new()));
        assert!(steps.contains(&Step::RepliesLost));
        assert!(steps.contains(&Step::EventsLost));
        assert_eq!(delivered(&steps), [8], "then the flow goes on");
    }

    #[test]
    fn a_loss_at_the_end_is_seen_by_the_heartbeat() {
        let mut r = FlowReceiver::default();
        r.new_epoch(7);
        let f = flow(&[3, 5]);
        let _ = r.on_message(f[0].clone());
        let mut c = FlowCounter::default();
        for m in &f {
            let _ = c.next(&sw(), 7, m.kind.clone(), m.text.clone());
        }
        let steps = r.on_message(c.heartbeat(&sw(), 7).unwrap());
        assert_eq!(
            steps,
            [Step::Repair(Hole {
                after: 3,
                until: 5,
                events: 1,
                others: 0
            })]
        );
        assert_eq!(delivered(&r.repaired(Some(vec![f[1].clone()]))), [5]);
    }

    #[test]
    fn an_earlier_owner_s_messages_never_reach_a_client() {
        let mut r = FlowReceiver::default();
        r.new_epoch(9);
        assert!(
            r.on_message(flow(&[3])[0].clone()).is_empty(),
            "epoch 7 < 9"
        );
        // A newer epoch starts a new flow.
        let mut c = FlowCounter::default();
        let m = c.next(
            &sw(),
            10,
            Kind::Event {
                dn: Arc::from("5001"),
                seq: 100,
            },
            SharedText::from("x"),
        );
        assert_eq!(delivered(&r.on_message(m)), [100]);
        assert_eq!(r.epoch(), 10);
    }

    #[test]
    fn an_unreadable_stream_loses_the_hole_but_keeps_the_flow_going() {
        let mut r = FlowReceiver::default();
        r.new_epoch(7);
        let f = flow(&[3, 5, 8]);
        let _ = r.on_message(f[0].clone());
        let _ = r.on_message(f[2].clone());
        let steps = r.repaired(None);
        assert!(steps.contains(&Step::EventsLost));
        assert_eq!(delivered(&steps), [8]);
    }
}
