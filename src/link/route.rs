//! How a request reaches a switch: [`SwitchRoute`], the one interface between the layers
//! above and whoever owns the switch's links.
//!
//! Here the owner is this process and the implementation is [`SwitchHandle`]: a routed request
//! goes straight to the active link actor, monitor starts and stops to the switch actor
//! (which restores monitors on failover). A deployment in which another node owns the links
//! implements the same trait by forwarding; the callers do not change.

use super::actor::RoutedRequest;
use super::switch::{MonitorOutcome, StartMonitor, StopMonitor, Switch};
use super::{LinkActor, LinkError, LinkStats};
use actix::Addr;
use futures_util::future::BoxFuture;
use std::sync::{Arc, Mutex, PoisonError};

/// The way to a switch, for the extension actors.
pub trait SwitchRoute {
    /// Send a private-service request. `Ok`: its answer (or failure) comes back exactly once
    /// as [`SwitchEvent::Answer`](super::SwitchEvent::Answer) with the request's DN and tag,
    /// in order with the switch's events. `Err`: nothing was sent (no operational link) and
    /// no answer will come.
    fn route(&self, request: RoutedRequest) -> Result<(), LinkError>;

    /// Start monitoring `dn`: now if a link is active, else as soon as one is
    /// ([`MonitorOutcome::Pending`]); events on it then come as
    /// [`SwitchEvent::Csta`](super::SwitchEvent::Csta).
    fn start_monitor(&self, dn: Arc<str>) -> BoxFuture<'static, Result<MonitorOutcome, LinkError>>;

    /// Stop monitoring `dn`.
    fn stop_monitor(&self, dn: Arc<str>);
}

/// A cheap, cloneable handle on a running switch of this process.
#[derive(Clone)]
pub struct SwitchHandle {
    /// The switch's name.
    pub name: Arc<str>,
    /// The switch actor.
    pub addr: Addr<Switch>,
    /// Counters of each link, in configuration order.
    pub link_stats: Vec<Arc<LinkStats>>,
    /// The active link, kept by the switch actor, so that the busiest path (a private
    /// service) goes straight to the link without a hop through the switch actor.
    pub(super) active: Arc<Mutex<Option<Addr<LinkActor>>>>,
}

impl SwitchHandle {
    /// The link that serves the switch now, if any.
    pub fn active_link(&self) -> Option<Addr<LinkActor>> {
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Requests the switch's links have sent and not yet seen answered or timed out.
    pub fn in_flight(&self) -> u64 {
        self.link_stats
            .iter()
            .map(|s| s.in_flight.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }
}

impl SwitchRoute for SwitchHandle {
    fn route(&self, request: RoutedRequest) -> Result<(), LinkError> {
        let Some(link) = self.active_link() else {
            return Err(LinkError::NoSwitch {
                switch: self.name.clone(),
            });
        };
        link.do_send(request);
        Ok(())
    }

    fn start_monitor(&self, dn: Arc<str>) -> BoxFuture<'static, Result<MonitorOutcome, LinkError>> {
        let (addr, switch) = (self.addr.clone(), self.name.clone());
        Box::pin(async move {
            addr.send(StartMonitor(dn))
                .await
                .unwrap_or(Err(LinkError::LinkLost { switch }))
        })
    }

    fn stop_monitor(&self, dn: Arc<str>) {
        self.addr.do_send(StopMonitor(dn));
    }
}
