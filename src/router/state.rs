//! The process state every actor and session reads without asking an actor: the
//! configuration, each switch's context, and the open clients.
//!
//! A DN's switch is found from the immutable DN plans here; the rest of a switch's context is
//! either set once at start (its link layer, its shard's inbox) or kept by the one actor that
//! changes it and read by everyone (link state, associations, call table).

use super::calls::CallTable;
use super::messages::{Delivery, ForgetCall, Retiring, ToDn};
use crate::client::Hub;
use crate::config::Config;
use crate::dnplan::DnPlan;
use crate::link::SwitchHandle;
use crate::protocol::SwitchView;
use crate::services::Service;
use actix::Recipient;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// How sessions and extension actors reach a switch's router shard: one recipient per message
/// it takes. Why recipients and not the shard's address: the extension actors and the
/// sessions then depend on the messages only, not on the shard that creates the actors.
pub struct ShardInbox {
    /// Client requests about a DN (and requests bounced back by a retiring actor).
    pub requests: Recipient<ToDn>,
    /// What an extension actor made of an event or answer, for ordered delivery.
    pub deliveries: Recipient<Delivery>,
    /// An extension actor that has nothing left to do.
    pub retiring: Recipient<Retiring>,
    /// A call evicted from the switch's table, to be forgotten by a DN's actor.
    pub forget: Recipient<ForgetCall>,
}

/// Everything about one switch that sessions and actors read without asking an actor.
pub struct SwitchCtx {
    /// Position in the configuration.
    pub index: usize,
    /// The switch's name.
    pub name: Arc<str>,
    /// Its DN plan.
    pub plan: DnPlan,
    /// Whether it is an embedded simulator.
    pub simulated: bool,
    /// The link layer (set once at start, before any client can connect).
    pub handle: OnceLock<SwitchHandle>,
    /// Whether the switch has an operational, announced link.
    pub link_up: AtomicBool,
    /// The active link's index (meaningful while `link_up`).
    pub active_link: AtomicUsize,
    /// Call IDs in use and their connIds.
    pub calls: CallTable,
    /// The switch's router shard (set once at start).
    pub shard: OnceLock<ShardInbox>,
    /// Extension actors alive (kept by the shard; read for the gauge and by tests).
    pub extensions: AtomicUsize,
    /// Metric handles.
    pub metrics: crate::metrics::SwitchMetrics,
    /// Hot-desk associations last reported by the switch (guest → host), for the gauge.
    pub associations: Mutex<HashMap<String, String>>,
}

impl SwitchCtx {
    /// A switch's context before its link layer and shard are started.
    pub fn new(index: usize, name: Arc<str>, plan: DnPlan, simulated: bool) -> SwitchCtx {
        SwitchCtx {
            index,
            metrics: crate::metrics::SwitchMetrics::new(&name),
            name,
            plan,
            simulated,
            handle: OnceLock::new(),
            link_up: AtomicBool::new(false),
            active_link: AtomicUsize::new(0),
            calls: CallTable::default(),
            shard: OnceLock::new(),
            extensions: AtomicUsize::new(0),
            associations: Mutex::new(HashMap::new()),
        }
    }

    /// How many associations are known.
    pub fn associations_len(&self) -> usize {
        self.associations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Note an association reported by the switch (`None`: the guest's ended).
    pub fn note_association(&self, guest: &str, host: Option<&str>) {
        let mut map = self
            .associations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match host {
            Some(h) => {
                map.insert(guest.to_owned(), h.to_owned());
            }
            None => {
                map.remove(guest);
            }
        }
    }

    /// Forget every association (the link was lost: the switch is the authority).
    pub fn forget_associations(&self) {
        self.associations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Whether the switch has an operational, announced link.
    pub fn is_up(&self) -> bool {
        self.link_up.load(Ordering::Relaxed)
    }

    /// The switch as clients see it.
    pub fn view(&self) -> SwitchView<'_> {
        SwitchView {
            name: &self.name,
            link_up: self.is_up(),
            active_link: self.active_link.load(Ordering::Relaxed),
            simulated: self.simulated,
        }
    }

    /// How many extension actors the shard has.
    pub fn extension_count(&self) -> usize {
        self.extensions.load(Ordering::Relaxed)
    }
}

/// Configuration and switches, shared read-only by every actor and session.
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// The switches, in configuration order.
    pub switches: Vec<Arc<SwitchCtx>>,
    /// Every open client session.
    pub hub: Hub,
}

impl Shared {
    /// The switch owning a DN.
    pub fn switch_of(&self, dn: &str) -> Option<&Arc<SwitchCtx>> {
        self.switches.iter().find(|s| s.plan.contains(dn))
    }

    /// The private services offered, for `EventServerConnected`.
    pub fn private_services(&self) -> Vec<u32> {
        Service::offered(self.config.options.accode_privateservice)
    }

    /// Every switch as clients see it.
    pub fn views(&self) -> Vec<SwitchView<'_>> {
        self.switches.iter().map(|s| s.view()).collect()
    }

    /// The scrape-time gauges of `/metrics`: open clients, and per switch its calls tracked,
    /// associations known and extension actors.
    pub fn gauges(&self) -> crate::metrics::Gauges<'_> {
        crate::metrics::Gauges {
            clients: self.hub.len(),
            switches: self
                .switches
                .iter()
                .map(|s| crate::metrics::SwitchGauges {
                    metrics: &s.metrics,
                    active_calls: s.calls.len(),
                    associations: s.associations_len(),
                    extension_actors: s.extension_count(),
                })
                .collect(),
        }
    }
}
