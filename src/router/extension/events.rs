//! What a DN's events mean: the hot-desk association last reported, the DN's active calls
//! and their connIds, and the private events clients get.
//!
//! The call rules of the client protocol (README, "Client protocol v1") are `call_rule`, a plain function of the event and the
//! DN; the DN's call list is a plain [`DeviceCalls`] shared with the switch's
//! [`CallTable`](crate::router::calls::CallTable) for connIds. The actor applies both.

use super::Extension;
use crate::csta::{CallEvent, CallEventKind, HotDeskEvent, HotDeskState, Message};
use crate::router::calls::{ConnId, DeviceCalls, Evicted};
use crate::router::messages::ForgetCall;
use crate::services::Service;
use std::sync::Arc;
use std::time::Instant;
use tracing::debug;

/// What the router knows of a DN from its events.
#[derive(Debug, Default)]
pub(super) struct DnState {
    /// The association last reported for the DN, as (guest, host).
    pub(super) hotdesk: Option<(String, String)>,
    /// Boxed: most DNs with requests have no call.
    pub(super) calls: Option<Box<DeviceCalls>>,
}

impl DnState {
    /// Nothing known.
    pub(super) const fn new() -> DnState {
        DnState {
            hotdesk: None,
            calls: None,
        }
    }

    /// The association as `(guest, host)` borrowed, for messages.
    pub(super) fn hotdesk(&self) -> Option<(&str, &str)> {
        self.hotdesk.as_ref().map(|(g, h)| (g.as_str(), h.as_str()))
    }

    /// The DN's calls as a client with call events sees them, oldest first.
    pub(super) fn call_views(&self) -> Vec<crate::protocol::CallView> {
        self.calls
            .iter()
            .flat_map(|list| list.iter())
            .map(|c| crate::protocol::CallView {
                conn_id: c.conn_id.to_string(),
                call_state: c.state,
                other_dn: c.other.as_deref().map(str::to_owned),
            })
            .collect()
    }

    /// The connIds of the DN's calls, oldest first.
    pub(super) fn conn_ids(&self) -> Vec<String> {
        self.calls
            .iter()
            .flat_map(|list| list.iter())
            .map(|c| c.conn_id.to_string())
            .collect()
    }
}

/// What a call event does to the call list of the DN whose monitor carried it (the client
/// protocol's "active calls of a device").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CallRule {
    /// Add the call if new; `activate`: it was just established or retrieved at this device
    /// (it becomes the "most recent active call").
    Hold {
        /// Whether the call becomes the device's most recent active one.
        activate: bool,
    },
    /// Only note activity on the call if the DN has it (another party dropped out).
    Touch,
    /// The call left the device.
    Drop,
}

/// The rule of the client protocol for `ev` on the monitor of a DN (`here`: whether a device
/// the switch names is the DN): added by ServiceInitiated,
/// Originated, Delivered and Established (and kept by Held and Retrieved); removed by
/// ConnectionCleared when the dropped connection is this device's, by CallCleared, and by a
/// transfer or diversion that takes the call away from this device. "Most recent" is the call
/// last established or retrieved at the device.
pub(super) fn call_rule(ev: &CallEvent, here: impl Fn(Option<&str>) -> bool) -> CallRule {
    let at_this_device = here(ev.device.as_deref()) || here(ev.connection.device_id.as_deref());
    match ev.kind {
        CallEventKind::ServiceInitiated
        | CallEventKind::Originated
        | CallEventKind::Delivered
        | CallEventKind::Held => CallRule::Hold { activate: false },
        CallEventKind::Established => CallRule::Hold { activate: true },
        CallEventKind::Retrieved => CallRule::Hold {
            activate: at_this_device,
        },
        CallEventKind::ConnectionCleared if here(ev.connection.device_id.as_deref()) => {
            CallRule::Drop
        }
        CallEventKind::ConnectionCleared => CallRule::Touch,
        CallEventKind::CallCleared => CallRule::Drop,
        CallEventKind::Transferred | CallEventKind::Diverted if at_this_device => CallRule::Drop,
        // The transferred-to device joins the call by its own events (Delivered, Established):
        // a transfer names only the call it came from.
        CallEventKind::Transferred => CallRule::Touch,
        CallEventKind::Diverted => CallRule::Hold { activate: false },
    }
}

impl Extension {
    /// An event from the DN's monitor: update what the router knows, and deliver the private
    /// events (through the ordering stage; see `ordered`).
    pub(super) fn on_event(&mut self, seq: u64, message: &Message) {
        match message {
            Message::PrivateEvent { event, .. } => {
                // Clients and the association table see DNs, whatever form the switch wrote.
                let event = HotDeskEvent {
                    state: event.state,
                    guest: self.dn_or_number(&event.guest),
                    host: event.host.as_deref().map(|h| self.dn_or_number(h)),
                };
                self.on_hotdesk_event(seq, &event)
            }
            Message::Call(call) => {
                // The rules compare devices with DNs, whatever form the switch wrote.
                let call = self
                    .env
                    .switch
                    .naming()
                    .normalize_call(call, |d| self.env.switch.owns(d));
                self.on_call_event(seq, &call)
            }
            Message::CallInformation {
                connection,
                device,
                account_code,
                ..
            } => {
                // The device by `device`, else `connection/deviceID`, in the switch's form.
                let naming = &self.env.switch.naming();
                let at = [device.as_deref(), connection.device_id.as_deref()]
                    .into_iter()
                    .flatten()
                    .find(|raw| naming.number(raw).is_some());
                if at
                    .and_then(|raw| naming.dn_in(raw, |d| d == &*self.dn))
                    .is_none()
                {
                    // Reported on every party's monitor; delivered from the named device's only.
                    return;
                }
                let Some(call_id) = connection.call_id.as_deref() else {
                    return;
                };
                let conn_id = self.touch_call(call_id, false);
                let Some(account_code) = account_code else {
                    // Call information without a code: a call event like any other.
                    return;
                };
                self.env
                    .switch
                    .metrics
                    .private_event(Service::SetAccountCode);
                let options = &self.env.shared.config().options;
                if options.accode_privateservice {
                    let text = crate::protocol::account_code_event(
                        &self.dn,
                        &self.env.switch.name,
                        seq,
                        &conn_id.to_string(),
                        &options.accode_name,
                        account_code,
                    );
                    self.deliver(text);
                }
            }
            _ => {}
        }
    }

    /// The DN a device of the switch names when the plan has it, else its number (or the
    /// value as written when it is no number at all).
    fn dn_or_number(&self, raw: &str) -> String {
        let switch = &self.env.switch;
        switch
            .naming()
            .other_dn(raw, |d| switch.owns(d))
            .unwrap_or_else(|| raw.to_owned())
    }

    fn on_hotdesk_event(&mut self, seq: u64, event: &HotDeskEvent) {
        let service = match event.state {
            HotDeskState::Established => {
                self.env
                    .switch
                    .note_association(&event.guest, event.host.as_deref());
                self.more_mut().state.hotdesk =
                    event.host.clone().map(|h| (event.guest.clone(), h));
                Service::HotdeskInitiate
            }
            HotDeskState::Cancelled => {
                self.env.switch.note_association(&event.guest, None);
                if let Some(more) = &mut self.more {
                    more.state.hotdesk = None;
                }
                Service::HotdeskCancel
            }
        };
        self.env.switch.metrics.private_event(service);
        self.hotdesk_known = true;
        let text = crate::protocol::hotdesk_event(
            &self.dn,
            &self.env.switch.name,
            seq,
            service.id(),
            &event.guest,
            event.host.as_deref(),
        );
        self.deliver(text);
    }

    /// Add the call if new (within `max-calls-per-dn` and `max-calls-per-switch`: the call idle
    /// the longest is evicted beyond them); mark it active if asked. Returns its connId.
    pub(super) fn touch_call(&mut self, call_id: &str, activated: bool) -> ConnId {
        let now = Instant::now();
        if let Some(call) = self
            .calls_mut()
            .and_then(|list| list.touch(call_id, activated, now))
        {
            let conn_id = call.conn_id;
            self.env.switch.calls.touch(call_id, conn_id);
            return conn_id;
        }
        let options = &self.env.shared.config().options;
        let (max_per_dn, max_per_switch) = (options.max_calls_per_dn, options.max_calls_per_switch);
        let call_id: Arc<str> = Arc::from(call_id);
        let hold = self
            .env
            .switch
            .calls
            .hold(&call_id, &self.dn, max_per_switch);
        let conn_id = hold.conn_id;
        self.forget_evicted(hold.evicted);
        let list = self.more_mut().state.calls.get_or_insert_with(Box::default);
        list.add(call_id, conn_id, activated, now);
        if list.len() > max_per_dn {
            if let Some(old) = list.pop_idlest() {
                debug!(dn = %self.dn, call = %old.call_id, "more than max-calls-per-dn active calls: the call idle the longest is forgotten");
                self.env
                    .switch
                    .calls
                    .release(&old.call_id, old.conn_id, &self.dn);
                self.env.switch.metrics.calls_evicted.increment(1);
            }
        }
        conn_id
    }

    /// Calls the switch's table evicted (over `max-calls-per-switch`): every device holding
    /// one forgets it, this one at once, the others through the shard.
    fn forget_evicted(&mut self, evicted: Vec<Evicted>) {
        for e in evicted {
            debug!(switch = %self.env.switch.name, call = %e.call_id, "more than max-calls-per-switch active calls: the call idle the longest is forgotten");
            self.env.switch.metrics.calls_evicted.increment(1);
            for dn in e.holders {
                if dn == self.dn {
                    self.forget_call(&e.call_id, e.conn_id);
                } else if let Some(shard) = self.env.switch.shard.get() {
                    shard.forget.do_send(ForgetCall {
                        dn,
                        call_id: e.call_id.clone(),
                        conn_id: e.conn_id,
                    });
                }
            }
        }
    }

    /// Forget a call the switch's table evicted (a newer call reusing its ID is left alone).
    pub(super) fn forget_call(&mut self, call_id: &str, conn_id: ConnId) {
        if let Some(list) = self.more.as_mut().and_then(|m| m.state.calls.as_mut()) {
            list.forget(call_id, conn_id);
            self.shrink_calls();
        }
    }

    /// Free the call list's memory once it is empty.
    fn shrink_calls(&mut self) {
        if self
            .more()
            .state
            .calls
            .as_ref()
            .is_some_and(|list| list.is_empty())
        {
            if let Some(more) = &mut self.more {
                more.state.calls = None;
            }
        }
    }

    pub(super) fn drop_call(&mut self, call_id: &str) {
        if let Some(c) = self.calls_mut().and_then(|list| list.remove(call_id)) {
            self.env
                .switch
                .calls
                .release(&c.call_id, c.conn_id, &self.dn);
            self.shrink_calls();
        }
    }

    /// Let go of every call (the link was lost, or the actor retires).
    pub(super) fn release_calls(&mut self) {
        if let Some(mut list) = self.more.as_mut().and_then(|m| m.state.calls.take()) {
            for c in list.drain() {
                self.env
                    .switch
                    .calls
                    .release(&c.call_id, c.conn_id, &self.dn);
            }
        }
    }

    /// Drop calls idle longer than `call-cleanup-idle`.
    pub(super) fn sweep_calls(&mut self) {
        let idle = self.env.shared.config().options.call_cleanup_idle.0;
        let now = Instant::now();
        while let Some(c) = self
            .calls_mut()
            .and_then(|list| list.pop_idle_longer_than(idle, now))
        {
            self.env
                .switch
                .calls
                .release(&c.call_id, c.conn_id, &self.dn);
        }
        self.shrink_calls();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csta::Connection;

    fn at(dn: &str) -> impl Fn(Option<&str>) -> bool + '_ {
        move |d| d == Some(dn)
    }

    fn ev(kind: CallEventKind, connection_device: &str, device: Option<&str>) -> CallEvent {
        CallEvent {
            kind,
            cross_ref: Some("M1".into()),
            connection: Connection::new("C1", connection_device),
            device: device.map(str::to_owned),
            other_device: None,
            cause: None,
            changes: vec![],
        }
    }

    #[test]
    fn the_four_events_add_a_call_and_established_makes_it_the_most_recent() {
        for kind in [
            CallEventKind::ServiceInitiated,
            CallEventKind::Originated,
            CallEventKind::Delivered,
        ] {
            assert_eq!(
                call_rule(&ev(kind, "5001", None), at("5001")),
                CallRule::Hold { activate: false },
                "{kind:?}"
            );
        }
        assert_eq!(
            call_rule(&ev(CallEventKind::Established, "4001", None), at("5001")),
            CallRule::Hold { activate: true },
            "established at any party's monitor"
        );
        assert_eq!(
            call_rule(&ev(CallEventKind::Held, "5001", None), at("5001")),
            CallRule::Hold { activate: false }
        );
    }

    #[test]
    fn retrieved_makes_the_call_most_recent_only_at_the_retrieving_device() {
        assert_eq!(
            call_rule(&ev(CallEventKind::Retrieved, "5001", None), at("5001")),
            CallRule::Hold { activate: true }
        );
        assert_eq!(
            call_rule(
                &ev(CallEventKind::Retrieved, "4001", Some("5001")),
                at("5001")
            ),
            CallRule::Hold { activate: true },
            "the retrieving device named by `device`"
        );
        assert_eq!(
            call_rule(&ev(CallEventKind::Retrieved, "4001", None), at("5001")),
            CallRule::Hold { activate: false }
        );
    }

    #[test]
    fn cleared_transferred_and_diverted_remove_the_call_from_the_device_it_leaves() {
        assert_eq!(
            call_rule(
                &ev(CallEventKind::ConnectionCleared, "5001", None),
                at("5001")
            ),
            CallRule::Drop,
            "this device's connection dropped"
        );
        assert_eq!(
            call_rule(
                &ev(CallEventKind::ConnectionCleared, "4001", None),
                at("5001")
            ),
            CallRule::Touch,
            "another party dropped: the call stays"
        );
        assert_eq!(
            call_rule(&ev(CallEventKind::CallCleared, "4001", None), at("5001")),
            CallRule::Drop
        );
        for kind in [CallEventKind::Transferred, CallEventKind::Diverted] {
            assert_eq!(
                call_rule(&ev(kind, "4001", Some("5001")), at("5001")),
                CallRule::Drop,
                "{kind:?} away from this device"
            );
            assert_eq!(
                call_rule(&ev(kind, "5001", None), at("5001")),
                CallRule::Drop,
                "{kind:?}: this device's connection left"
            );
        }
        assert_eq!(
            call_rule(
                &ev(CallEventKind::Diverted, "4001", Some("4002")),
                at("5001")
            ),
            CallRule::Hold { activate: false },
            "a diversion between other parties: the call stays here"
        );
        assert_eq!(
            call_rule(
                &ev(CallEventKind::Transferred, "4001", Some("4002")),
                at("5001")
            ),
            CallRule::Touch,
            "a transfer between other parties: the call stays where it was, and the \
             transferred-to device joins by its own events"
        );
    }
}
