//! Evening the spread of switches over the nodes, and moving a switch away from an owner that
//! cannot reach it.
//!
//! The decision is pure ([`spread`], [`Clock`]): every node computes it from the leases and
//! the live nodes it sees, and only the node that owns the most switches (the first by id
//! among equals) acts, handing one switch over at a time. Nothing moves while a switch has no
//! live owner (a failover is under way) nor while a switch handed over is still being taken.

use super::*;

/// Who holds a switch, as the spread sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Holder<'a> {
    /// Owned by the node with this id.
    Node(&'a str),
    /// Unowned after a planned hand-over (`reason: "rebalance"`): being taken.
    Moving,
    /// Unowned for another reason.
    Vacant,
}

/// What the spread calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Spread<'a> {
    /// Every live node owns floor(S/N) or ceil(S/N) switches.
    Even,
    /// A switch has no live owner: nothing moves during a failover.
    Failover,
    /// A switch handed over is being taken: wait for it.
    Moving,
    /// Uneven: `mover` (the node owning the most) should hand one switch over.
    Uneven {
        /// The node id that acts.
        mover: &'a str,
    },
}

/// The spread of `holders` over the `live` node ids.
pub(super) fn spread<'a>(holders: &[Holder<'a>], live: &[&'a str]) -> Spread<'a> {
    let mut counts: BTreeMap<&str, usize> = live.iter().map(|id| (*id, 0)).collect();
    let mut moving = false;
    for h in holders {
        match h {
            Holder::Node(id) => match counts.get_mut(id) {
                Some(c) => *c += 1,
                None => return Spread::Failover,
            },
            Holder::Moving => moving = true,
            Holder::Vacant => return Spread::Failover,
        }
    }
    if moving {
        return Spread::Moving;
    }
    let (Some(&max), Some(&min)) = (counts.values().max(), counts.values().min()) else {
        return Spread::Even;
    };
    if max - min <= 1 {
        return Spread::Even;
    }
    match counts.iter().find(|(_, c)| **c == max) {
        Some((mover, _)) => Spread::Uneven { mover },
        None => Spread::Even,
    }
}

/// How long the spread has been uneven, and when a switch may move.
#[derive(Debug)]
pub(super) struct Clock {
    after: Duration,
    since: Option<Instant>,
}

impl Clock {
    /// A clock that lets a switch move once the spread has been uneven for `after`.
    pub(super) fn new(after: Duration) -> Clock {
        Clock { after, since: None }
    }

    /// The spread seen at `now`: the node that should hand a switch over now, if any. An
    /// even spread or a failover starts the count again; a move under way does not (the
    /// next switch moves as soon as the previous one is taken).
    pub(super) fn observe<'a>(&mut self, spread: Spread<'a>, now: Instant) -> Option<&'a str> {
        match spread {
            Spread::Even | Spread::Failover => {
                self.since = None;
                None
            }
            Spread::Moving => None,
            Spread::Uneven { mover } => {
                let since = *self.since.get_or_insert(now);
                (now.duration_since(since) >= self.after).then_some(mover)
            }
        }
    }
}

impl Node {
    /// Periodic: hand a switch over when the spread calls for it and this node is the one to
    /// act, or when this node's links to a switch have all been down for `rebalance-after`.
    pub(super) fn rebalance(self: &Arc<Self>, now: Instant) {
        let after = self.rebalance_after();
        self.release_unreachable(now, after);
        if self.shared.config().cluster.as_ref().map(|c| c.rebalance)
            != Some(crate::config::Rebalance::Auto)
        {
            return;
        }
        let live = self.live_ids();
        let seen: Vec<(Option<String>, bool)> = self
            .switches
            .iter()
            .filter(|s| !s.removed.load(Ordering::Acquire))
            .map(|s| {
                let seen = s.seen.lock().unwrap_or_else(PoisonError::into_inner);
                (
                    seen.owner.as_ref().map(|o| o.id.clone()),
                    seen.handed_over == Some("rebalance"),
                )
            })
            .collect();
        let holders: Vec<Holder> = seen
            .iter()
            .map(|(owner, moving)| match (owner, moving) {
                (Some(id), _) => Holder::Node(id),
                (None, true) => Holder::Moving,
                (None, false) => Holder::Vacant,
            })
            .collect();
        let mut ids: Vec<&str> = live.iter().map(String::as_str).collect();
        if !ids.contains(&&*self.node_id) {
            ids.push(&self.node_id);
        }
        let spread = spread(&holders, &ids);
        let mover = self
            .spread_clock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(spread, now);
        if mover != Some(&*self.node_id) {
            return;
        }
        // One switch at a time: the one this node took last.
        let last_move = *self
            .last_move
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last_move.is_some_and(|t| now.duration_since(t) < SHARE_WAIT * 2) {
            return;
        }
        let last = (self.switches.iter().enumerate())
            .filter(|(_, s)| s.is_held_here())
            .last();
        if let Some((index, s)) = last {
            info!(node = %self.node_name, switch = %s.ctx.name, "the switches have been spread unevenly for {}: this node hands one over", humantime::format_duration(after));
            self.hand_over(index, now);
        }
    }

    /// Hand over every switch whose links have all been down for `after`, when another node
    /// may reach it (this node then leaves it to the others for a while).
    fn release_unreachable(self: &Arc<Self>, now: Instant, after: Duration) {
        let others = self
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .any(|id| *id != *self.node_id);
        for (index, s) in self.switches.iter().enumerate() {
            let mut seen = s.seen.lock().unwrap_or_else(PoisonError::into_inner);
            if !s.is_held_here() || s.ctx.is_up() {
                seen.links_down_since = None;
                continue;
            }
            let since = *seen.links_down_since.get_or_insert(now);
            if others && now.duration_since(since) >= after {
                seen.links_down_since = None;
                seen.avoid_until = Some(now + after);
                drop(seen);
                warn!(node = %self.node_name, switch = %s.ctx.name, "every link to the switch has been down for {}: this node hands it over to a node that may reach it", humantime::format_duration(after));
                self.hand_over(index, now);
            }
        }
    }

    /// Ask the task holding switch `index`'s lease to hand it over.
    fn hand_over(&self, index: usize, now: Instant) {
        let Some(s) = self.switches.get(index) else {
            return;
        };
        *self
            .last_move
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(now);
        s.hand_over.notify_one();
    }

    /// `[cluster] rebalance-after`.
    pub(super) fn rebalance_after(&self) -> Duration {
        self.shared
            .config()
            .cluster
            .as_ref()
            .map_or(Duration::from_secs(30), |c| c.rebalance_after.0)
    }

    /// The planned hand-over of switch `index` (its lease still held): no new requests (they
    /// get 54), those in flight finish (within `request-timeout`), then the links close with
    /// `reason: "rebalance"` and the lease is released by the caller.
    pub(super) async fn drain(&self, s: &SwitchNode, owned: &Arc<Owned>) {
        owned.close_to_requests();
        s.ctx.owned_here.store(false, Ordering::Release);
        s.proxy.not_owned_here();
        let limit = self.shared.config().options.request_timeout.0;
        let deadline = Instant::now() + limit;
        while s.ctx.handle.get().is_some_and(|h| h.in_flight() > 0) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The last answers still travel link → router → extension → client queue.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Holder::{Moving, Node as N, Vacant};

    #[test]
    fn an_even_spread_moves_nothing() {
        assert_eq!(
            spread(&[N("a"), N("b"), N("c")], &["a", "b", "c"]),
            Spread::Even
        );
        // 2 switches on 3 nodes: 1/1/0 is even.
        assert_eq!(spread(&[N("a"), N("b")], &["a", "b", "c"]), Spread::Even);
        assert_eq!(spread(&[N("a"), N("a"), N("b")], &["a", "b"]), Spread::Even);
        assert_eq!(spread(&[], &["a"]), Spread::Even);
    }

    #[test]
    fn the_node_owning_the_most_moves_first_by_id() {
        assert_eq!(
            spread(&[N("a"), N("a"), N("a")], &["a", "b"]),
            Spread::Uneven { mover: "a" }
        );
        assert_eq!(
            spread(&[N("b"), N("b"), N("a"), N("a")], &["a", "b", "c"]),
            Spread::Uneven { mover: "a" }
        );
        // A node that joined owns none.
        assert_eq!(
            spread(&[N("a"), N("a"), N("b"), N("b")], &["c", "a", "b"]),
            Spread::Uneven { mover: "a" }
        );
    }

    #[test]
    fn nothing_moves_during_a_failover_or_while_a_switch_is_being_taken() {
        assert_eq!(
            spread(&[N("a"), N("a"), Vacant], &["a", "b"]),
            Spread::Failover
        );
        // Owned by a node that is gone.
        assert_eq!(
            spread(&[N("a"), N("a"), N("x")], &["a", "b"]),
            Spread::Failover
        );
        assert_eq!(
            spread(&[N("a"), N("a"), Moving], &["a", "b"]),
            Spread::Moving
        );
    }

    #[test]
    fn a_switch_moves_once_the_spread_was_uneven_for_the_whole_delay() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let uneven = Spread::Uneven { mover: "a" };
        let mut clock = Clock::new(Duration::from_secs(30));
        assert_eq!(clock.observe(uneven, s(0)), None);
        assert_eq!(clock.observe(uneven, s(29)), None);
        assert_eq!(clock.observe(uneven, s(30)), Some("a"));
        // A move under way keeps the count: the next switch moves once it is taken.
        assert_eq!(clock.observe(Spread::Moving, s(31)), None);
        assert_eq!(clock.observe(uneven, s(32)), Some("a"));
        // Even, or a failover: counted again from the start.
        assert_eq!(clock.observe(Spread::Even, s(33)), None);
        assert_eq!(clock.observe(uneven, s(34)), None);
        assert_eq!(clock.observe(Spread::Failover, s(50)), None);
        assert_eq!(clock.observe(uneven, s(70)), None);
        assert_eq!(clock.observe(uneven, s(100)), Some("a"));
    }
}
