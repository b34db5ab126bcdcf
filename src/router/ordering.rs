//! The ordering stage of a switch's router shard: clients get what the switch's frames caused
//! in the order the frames were read, however the DNs' actors are scheduled.
//!
//! Every event or answer handed to an extension actor carries the switch's sequence number
//! (`eventSeq`, stamped once by the link that read the frame); the shard announces it here
//! ([`Reorder::expect`]) before handing it out, the actor's [`FanOut`](super::messages::FanOut)s come back for it
//! ([`Reorder::fill`]), and they leave ([`Reorder::pop_ready`]) strictly in sequence order. This
//! is the one entry point into ordered delivery: a source of events other than a local link (a
//! remote owner of the switch) feeds the same two calls with its sequence number and the fan-out
//! of its bytes to the local clients of the DN.
//!
//! Each announced number holds a token (`T`: the frame's place in the link's queue) that is
//! given back with its delivery, so the link does not read further ahead than the shard has
//! delivered. What comes back (`P`) is the actor's fan-out.

use std::collections::VecDeque;

/// The reorder buffer (see the [module docs](self)).
#[derive(Debug)]
pub struct Reorder<P, T> {
    /// Announced numbers in the order they were announced (increasing, except when two links
    /// of a switch both deliver during a failover), what came back for each, and its token.
    slots: VecDeque<(u64, Option<P>, T)>,
}

impl<P, T> Default for Reorder<P, T> {
    fn default() -> Self {
        Reorder {
            slots: VecDeque::new(),
        }
    }
}

impl<P, T> Reorder<P, T> {
    /// Event or answer `seq` went to an extension actor: its delivery waits for those before.
    pub fn expect(&mut self, seq: u64, token: T) {
        self.slots.push_back((seq, None, token));
    }

    /// What the actor made of `seq`. A number never announced is ignored.
    pub fn fill(&mut self, seq: u64, out: P) {
        // Slots are in increasing `seq` order (sorted) except when two links of the switch both
        // delivered during a failover: search by halves, then from the front.
        let at = match self.slots.binary_search_by_key(&seq, |(s, _, _)| *s) {
            Ok(i) => Some(i),
            Err(_) => self.slots.iter().position(|(s, _, _)| *s == seq),
        };
        if let Some(slot) = at.and_then(|i| self.slots.get_mut(i)) {
            slot.1 = Some(out);
        }
    }

    /// The next delivery whose turn has come (its number, what came back, its token), if any.
    pub fn pop_ready(&mut self) -> Option<(u64, P, T)> {
        if !matches!(self.slots.front(), Some((_, Some(_), _))) {
            return None;
        }
        match self.slots.pop_front() {
            Some((seq, Some(out), token)) => Some((seq, out, token)),
            _ => None,
        }
    }

    /// How many announced numbers wait for their delivery or their turn.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(text: &'static str) -> String {
        text.to_owned()
    }

    fn texts(r: &mut Reorder<String, u64>) -> Vec<(String, u64)> {
        std::iter::from_fn(|| r.pop_ready())
            .map(|(_, o, token)| (o, token))
            .collect()
    }

    #[test]
    fn deliveries_leave_in_sequence_order_whatever_order_they_come_back_in() {
        let mut r = Reorder::default();
        for seq in [3, 5, 8] {
            r.expect(seq, seq * 10);
        }
        r.fill(8, out("eight"));
        r.fill(5, out("five"));
        assert!(texts(&mut r).is_empty(), "3 is not back yet");
        r.fill(3, out("three"));
        assert_eq!(
            texts(&mut r),
            [
                ("three".to_owned(), 30),
                ("five".to_owned(), 50),
                ("eight".to_owned(), 80)
            ]
        );
        assert!(r.is_empty());
    }

    #[test]
    fn two_links_interleaving_during_a_failover_keep_their_announced_order() {
        let mut r = Reorder::default();
        // The old link's last frames were stamped after the new link's first ones.
        for seq in [10, 11, 7, 12] {
            r.expect(seq, seq);
        }
        r.fill(7, out("7"));
        r.fill(12, out("12"));
        r.fill(11, out("11"));
        assert!(texts(&mut r).is_empty());
        r.fill(10, out("10"));
        let order: Vec<u64> = texts(&mut r).into_iter().map(|(_, t)| t).collect();
        assert_eq!(order, [10, 11, 7, 12], "announced order, not numeric order");
        r.fill(99, out("never announced"));
        assert!(r.pop_ready().is_none() && r.is_empty());
    }
}
