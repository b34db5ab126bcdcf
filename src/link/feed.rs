//! The way from a switch's links into its router shard, and the one place that numbers what
//! goes there.
//!
//! Every CSTA event and every answer to a routed request leaves the link layer through
//! [`ShardFeed::deliver`], which stamps it with the switch's next sequence number (`eventSeq`
//! for clients). The shard hands events and answers to the extension actors and puts their
//! results back in this order, so a reply reaches its client before the event it caused and
//! the events of a switch arrive in the order its frames were read, whichever link read them.
//! The sequence is per switch, shared by its links, and strictly increasing for the life of
//! the process.

use super::session::Delivery;
use super::{QueueSlot, SwitchEvent};
use actix::Recipient;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A switch's feed into its router shard, cloned into each of its links.
#[derive(Clone)]
pub(super) struct ShardFeed {
    switch: Arc<str>,
    seq: Arc<AtomicU64>,
    shard: Recipient<SwitchEvent>,
}

impl ShardFeed {
    /// The feed of `switch` into `shard`, numbering from 1.
    pub(super) fn new(switch: Arc<str>, shard: Recipient<SwitchEvent>) -> ShardFeed {
        ShardFeed {
            switch,
            seq: Arc::new(AtomicU64::new(0)),
            shard,
        }
    }

    /// Number `delivery` (for `dn`) and send it to the shard; `slot` is the place in the link
    /// queue of the frame that carried it (none when the link made the answer itself).
    pub(super) fn deliver(&self, dn: Arc<str>, delivery: Delivery, slot: QueueSlot) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
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
    }
}
