//! How a request reaches a switch: [`SwitchRoute`], the one interface between the layers
//! above and whoever owns the switch's links.
//!
//! Here the owner is this process and the implementation is
//! [`SwitchHandle`](super::SwitchHandle): a routed request goes straight to the active link
//! actor, monitor starts and stops to the switch actor (which restores monitors on failover).
//! A deployment in which another node owns the links implements the same trait by
//! forwarding; the callers do not change.

use super::actor::RoutedRequest;
use super::LinkError;
use futures_util::future::BoxFuture;
use std::sync::Arc;

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

/// How a monitor start went ([`SwitchRoute::start_monitor`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MonitorOutcome {
    /// The switch accepted the MonitorStart.
    Started,
    /// No operational link now: the monitor will be started when one comes up.
    Pending,
}
