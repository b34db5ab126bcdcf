//! The process state every actor and session reads without asking an actor: the
//! configuration, each switch's context, and the open clients.
//!
//! A DN's switch is found from the immutable DN plans here; the rest of a switch's context is
//! either set once at start (its link layer, its shard's inbox) or kept by the one actor that
//! changes it and read by everyone (link state, associations, call table).

use super::calls::CallTable;
use super::messages::{Delivery, Disowned, ForgetCall, Replanned, Retiring, ToDn};
use crate::client::{ClientHandle, Hub};
use crate::config::Config;
use crate::csta::DeviceNaming;
use crate::dnplan::DnPlan;
use crate::link::SwitchHandle;
use crate::protocol::{RegisterMode, SharedText, SwitchView};
use crate::services::Service;
use actix::Recipient;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

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
    /// The switch is no longer owned here (cluster): drop every DN's state.
    pub disown: Recipient<Disowned>,
    /// A reload replaced the plan: end the registrations of the DNs that left it.
    pub replan: Recipient<Replanned>,
}

/// Everything about one switch that sessions and actors read without asking an actor.
pub struct SwitchCtx {
    /// Position in the configuration.
    pub index: usize,
    /// The switch's name.
    pub name: Arc<str>,
    /// Its DN plan, replaced by a reload (read through [`SwitchCtx::plan`]).
    plan: RwLock<Arc<DnPlan>>,
    /// How the switch names devices (`device-id-form`, `dn-prefix`, `dn-suffix`): requests
    /// are written so, and DNs found so in its events; replaced by a reload (read through
    /// [`SwitchCtx::naming`]).
    naming: RwLock<Arc<DeviceNaming>>,
    /// Whether it is an embedded simulator.
    pub simulated: bool,
    /// The link layer (set once at start, before any client can connect).
    pub handle: OnceLock<SwitchHandle>,
    /// Whether the switch has an operational, announced link.
    pub link_up: AtomicBool,
    /// The active link's index (meaningful while `link_up`).
    pub active_link: AtomicUsize,
    /// When `link_up` last changed, in milliseconds since the Unix epoch (0: not since the
    /// start), so that an operator (`GET /status`, the console) sees how long a switch has
    /// been down or up.
    pub link_changed_ms: AtomicU64,
    /// DNs with at least one client registered: `GET /status` reads it, and `/metrics` exports
    /// it as the `csta_router_registered_dns` gauge when scraped.
    pub registered: AtomicUsize,
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
    /// Whether this process owns the switch (always, without a cluster): requests then go to
    /// the shard here, else to the cluster's way to the owner ([`SwitchCtx::remote`]).
    pub owned_here: AtomicBool,
    /// In a cluster: where requests for the switch go while another node owns it.
    pub remote: OnceLock<Recipient<ToDn>>,
    /// In a cluster: what the shard tells the other nodes (set once at start).
    pub cluster: OnceLock<Arc<dyn ClusterHooks>>,
    /// In a cluster: the `reason` of the next link event of the switch (why this node's links
    /// open or close: `failover`, `fenced`, `shutdown`...), set by whoever changes ownership.
    pub link_reason: Mutex<Option<&'static str>>,
    /// In a cluster: the name of the node that owns the switch, as this node knows it.
    pub owner: Mutex<Option<Arc<str>>>,
    /// A reload is restarting the switch's links with new settings: its next link events say
    /// `reason: "reconfigured"` (until the link is up again).
    pub reconfiguring: AtomicBool,
    /// A reload removed the switch: its plan is empty, its links closed, and clients no
    /// longer see it (its place in [`Shared::switches`] stays, so that the other switches
    /// keep theirs).
    removed: AtomicBool,
}

/// What a switch's shard tells the rest of a cluster (implemented by the cluster, which the
/// router does not know).
pub trait ClusterHooks: Send + Sync {
    /// An event of the switch was delivered here (called once per event): keep it for the
    /// other nodes' gap repair and for replay.
    fn event(&self, dn: &str, seq: u64, text: &SharedText);
    /// The switch's link state changed on this node, its owner: tell the other nodes, so that
    /// their clients get the link event too.
    fn link_changed(&self, up: bool, link: usize, reason: Option<&'static str>);
    /// A client (here or of another node) is registered on `dn` from now on: record it, so
    /// that a new owner can restore it.
    fn registered(
        &self,
        dn: &Arc<str>,
        client: &ClientHandle,
        mode: RegisterMode,
        call_events: bool,
    );
    /// A client unregistered `dn` (or left): remove its record.
    fn unregistered(&self, dn: &Arc<str>, client: &ClientHandle);
}

impl SwitchCtx {
    /// A switch's context before its link layer and shard are started.
    pub fn new(index: usize, name: Arc<str>, plan: DnPlan, simulated: bool) -> SwitchCtx {
        SwitchCtx {
            index,
            metrics: crate::metrics::SwitchMetrics::new(&name),
            name,
            plan: RwLock::new(Arc::new(plan)),
            naming: RwLock::new(Arc::new(DeviceNaming::default())),
            simulated,
            handle: OnceLock::new(),
            link_up: AtomicBool::new(false),
            active_link: AtomicUsize::new(0),
            link_changed_ms: AtomicU64::new(0),
            registered: AtomicUsize::new(0),
            calls: CallTable::default(),
            shard: OnceLock::new(),
            extensions: AtomicUsize::new(0),
            associations: Mutex::new(HashMap::new()),
            owned_here: AtomicBool::new(true),
            remote: OnceLock::new(),
            cluster: OnceLock::new(),
            link_reason: Mutex::new(None),
            owner: Mutex::new(None),
            removed: AtomicBool::new(false),
            reconfiguring: AtomicBool::new(false),
        }
    }

    /// The context with the switch's device naming (default: bare DNs).
    pub fn with_naming(self, naming: DeviceNaming) -> SwitchCtx {
        self.set_naming(naming);
        self
    }

    /// How the switch names devices now.
    pub fn naming(&self) -> Arc<DeviceNaming> {
        self.naming
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replace the device naming (a reload that restarts the links with a new form).
    pub fn set_naming(&self, naming: DeviceNaming) {
        *self.naming.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(naming);
    }

    /// The switch's DN plan as it is now (a reload may replace it).
    pub fn plan(&self) -> Arc<DnPlan> {
        self.plan
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether the DN is in the switch's plan now.
    pub fn owns(&self, dn: &str) -> bool {
        self.plan
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(dn)
    }

    /// Replace the plan (a reload): DNs that left it are unregistered by the reload.
    pub fn set_plan(&self, plan: DnPlan) {
        *self.plan.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(plan);
    }

    /// Whether a reload removed the switch: its plan is empty, its links are closed, and
    /// clients no longer see it.
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// A reload removes the switch: clients no longer see it, and its link events are no
    /// longer broadcast (the reload tells every client once, with `reason: "removed"`).
    pub fn set_removed(&self) {
        self.removed.store(true, Ordering::Release);
    }

    /// Whether requests for the switch are served here (see [`SwitchCtx::owned_here`]).
    pub fn is_owned_here(&self) -> bool {
        self.owned_here.load(Ordering::Acquire)
    }

    /// Where a request about one of the switch's DNs goes: the shard here while this process
    /// owns the switch, the cluster's way to the owner otherwise (`None` during start-up).
    pub fn requests(&self) -> Option<&Recipient<ToDn>> {
        if self.is_owned_here() {
            self.shard.get().map(|s| &s.requests)
        } else {
            self.remote.get()
        }
    }

    /// Take the reason of the next link event (see [`SwitchCtx::link_reason`]).
    pub fn take_link_reason(&self) -> Option<&'static str> {
        self.link_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
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

    /// Set whether the switch has an operational link, noting the time when that changes.
    pub fn set_link_up(&self, up: bool) {
        if self.link_up.swap(up, Ordering::Relaxed) != up {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            self.link_changed_ms.store(now, Ordering::Relaxed);
        }
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
            owner: self.cluster.get().map(|_| {
                self.owner
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
            }),
        }
    }

    /// How many extension actors the shard has.
    pub fn extension_count(&self) -> usize {
        self.extensions.load(Ordering::Relaxed)
    }
}

/// The most switches a router runs, those a reload adds included.
pub const MAX_SWITCHES: usize = 1024;

/// A list that only grows, read without a lock: each place is set once and never moves, so an
/// index taken by a reader stays valid while a writer appends. Why: a reload adds switches
/// while sessions, actors and the cluster's tasks read the list by index (a switch removed
/// keeps its place, see [`SwitchCtx::is_removed`]); room for [`MAX_SWITCHES`] is made at start.
pub struct AppendOnly<T> {
    slots: Box<[OnceLock<T>]>,
    len: AtomicUsize,
    adding: Mutex<()>,
}

/// The iterator of [`AppendOnly::iter`].
pub type AppendIter<'a, T> =
    std::iter::FilterMap<std::slice::Iter<'a, OnceLock<T>>, fn(&OnceLock<T>) -> Option<&T>>;

impl<T> AppendOnly<T> {
    /// The list of `items`, with room for [`MAX_SWITCHES`] in all.
    pub fn new(items: Vec<T>) -> AppendOnly<T> {
        let slots: Box<[OnceLock<T>]> = (0..MAX_SWITCHES.max(items.len()))
            .map(|_| OnceLock::new())
            .collect();
        let len = items.len();
        for (slot, item) in slots.iter().zip(items) {
            let _ = slot.set(item);
        }
        AppendOnly {
            slots,
            len: AtomicUsize::new(len),
            adding: Mutex::new(()),
        }
    }

    /// How many items there are.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The item at `index`.
    pub fn get(&self, index: usize) -> Option<&T> {
        if index >= self.len() {
            return None;
        }
        self.slots.get(index)?.get()
    }

    /// Every item, in order.
    pub fn iter(&self) -> AppendIter<'_, T> {
        let present: fn(&OnceLock<T>) -> Option<&T> = OnceLock::get;
        self.slots
            .get(..self.len())
            .unwrap_or_default()
            .iter()
            .filter_map(present)
    }

    /// The index the next item pushed takes.
    pub fn next_index(&self) -> usize {
        self.len()
    }

    /// Append an item: its index, `None` when there is no room.
    pub fn push(&self, item: T) -> Option<usize> {
        let _adding = self.adding.lock().unwrap_or_else(PoisonError::into_inner);
        let index = self.len();
        self.slots.get(index)?.set(item).ok()?;
        self.len.store(index + 1, Ordering::Release);
        Some(index)
    }
}

impl<'a, T> IntoIterator for &'a AppendOnly<T> {
    type Item = &'a T;
    type IntoIter = AppendIter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// The switches: those of the configuration in its order, then those reloads added; a
/// switch's index stays what clients' event numbering uses.
pub type Switches = AppendOnly<Arc<SwitchCtx>>;

/// Configuration and switches, shared by every actor and session.
pub struct Shared {
    /// The configuration, replaced whole by a reload (read through [`Shared::config`]):
    /// readers take the current one, so a connection or request sees one configuration.
    config: RwLock<Arc<Config>>,
    /// The switches, in configuration order, then those reloads added.
    pub switches: Switches,
    /// Every open client session.
    pub hub: Hub,
}

impl Shared {
    /// The shared state of a configuration, its switches and no client yet.
    pub fn new(config: Config, switches: Vec<Arc<SwitchCtx>>) -> Shared {
        Shared {
            config: RwLock::new(Arc::new(config)),
            switches: Switches::new(switches),
            hub: Hub::default(),
        }
    }

    /// The configuration now (a reload replaces it; what a reader took stays consistent).
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replace the configuration (a reload, once its changes are applied to the switches).
    pub fn set_config(&self, config: Arc<Config>) {
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = config;
    }

    /// The switch owning a DN.
    pub fn switch_of(&self, dn: &str) -> Option<&Arc<SwitchCtx>> {
        self.switches.iter().find(|s| s.owns(dn))
    }

    /// The private services offered, for `EventServerConnected`.
    pub fn private_services(&self) -> Vec<u32> {
        Service::offered(self.config().options.accode_privateservice)
    }

    /// Every switch as clients see it (not those a reload removed).
    pub fn views(&self) -> Vec<SwitchView<'_>> {
        self.live_switches().map(|s| s.view()).collect()
    }

    /// The switches clients see: those of the configuration, not those a reload removed.
    pub fn live_switches(&self) -> impl Iterator<Item = &Arc<SwitchCtx>> {
        self.switches.iter().filter(|s| !s.is_removed())
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
                    registered_dns: s.registered.load(Ordering::Relaxed),
                })
                .collect(),
        }
    }
}
