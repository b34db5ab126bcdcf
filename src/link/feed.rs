//! The way from a switch's links into its router shard, and the one place that numbers what
//! goes there.
//!
//! Every CSTA event and every answer to a routed request leaves the link layer through
//! [`ShardFeed::deliver`], which stamps it with the switch's next sequence number (`eventSeq`
//! for clients). The shard hands events and answers to the extension actors and puts their
//! results back in this order, so a reply reaches its client before the event it caused and
//! the events of a switch arrive in the order its frames were read, whichever link read them.
//! The sequence is per switch, shared by its links, and strictly increasing for the life of
//! the process (of the cluster, when the numbers come in blocks reserved by each owner).
//!
//! Nothing goes to the shard once the switch's [`Fence`] is closed: a node whose ownership of
//! the switch lapsed must not hand anyone what its links still read.

use super::ownership::{Fence, Sequence};
use super::session::Delivery;
use super::{QueueSlot, SwitchEvent};
use actix::Recipient;
use std::sync::Arc;
use tracing::warn;

/// A switch's feed into its router shard, cloned into each of its links.
#[derive(Clone)]
pub(super) struct ShardFeed {
    switch: Arc<str>,
    seq: Arc<Sequence>,
    fence: Fence,
    shard: Recipient<SwitchEvent>,
}

impl ShardFeed {
    /// The feed of `switch` into `shard`, numbering from `seq` while `fence` is open.
    pub(super) fn new(
        switch: Arc<str>,
        shard: Recipient<SwitchEvent>,
        seq: Arc<Sequence>,
        fence: Fence,
    ) -> ShardFeed {
        ShardFeed {
            switch,
            seq,
            fence,
            shard,
        }
    }

    /// The numbers and the fence of a new ownership of the switch.
    pub(super) fn own(&mut self, seq: Arc<Sequence>, fence: Fence) {
        self.seq = seq;
        self.fence = fence;
    }

    /// Whether the switch may still be acted on.
    pub(super) fn may_act(&self) -> bool {
        self.fence.check()
    }

    /// Number `delivery` (for `dn`) and send it to the shard; `slot` is the place in the link
    /// queue of the frame that carried it (none when the link made the answer itself).
    /// `false` when nothing may be delivered any more (the fence closed, or the event numbers
    /// are used up): the link must close.
    pub(super) fn deliver(&self, dn: Arc<str>, delivery: Delivery, slot: QueueSlot) -> bool {
        if !self.fence.check() {
            return false;
        }
        let Some(seq) = self.seq.next() else {
            warn!(switch = %self.switch, "no event numbers left (the next block was not reserved in time); closing the switch's link");
            return false;
        };
        let switch = self.switch.clone();
        self.shard.do_send(match delivery {
            Delivery::Event(message) => SwitchEvent::Csta {
                switch,
                seq,
                dn,
                message: Arc::new(message),
                slot,
            },
            Delivery::Answer { tag, result } => SwitchEvent::Answer {
                switch,
                dn,
                tag,
                seq,
                result,
                slot,
            },
        });
        true
    }
}
