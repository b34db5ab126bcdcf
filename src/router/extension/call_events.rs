//! Call events for desktops (README, "Call events"): what each CSTA call event on a DN's
//! monitor means for the DN's own connection, as one client event for the clients registered
//! with `callEvents: true`.
//!
//! The rules, a plain function (`client_event`) of the CSTA event, the DN and the call's state
//! at the DN before it:
//! - only events about the DN's own connection make a client event: another party's
//!   connection clearing, holding or retrieving makes none, and once the DN's call is
//!   established a Delivered or Established at another device makes none either;
//! - CallCleared releases every device still holding the call;
//! - at a transfer the transferring device's call is released and every staying device gets
//!   `EventPartyChanged` with the state it had; a transfer that gives the staying devices a new
//!   call ID (`transferredConnections`) moves the call in their lists to the new ID, with a
//!   new connId, and the event names the old one (`previousConnId`).
//!
//! Each event is serialized once and the same bytes queued to every such client; a DN none of
//! whose clients asked for call events costs only the call-list bookkeeping it always had.

use super::events::{call_rule, CallRule};
use super::Extension;
use crate::csta::{CallEvent, CallEventKind};
use crate::protocol::{CallEventName, CallEventOut, CallState};
use std::time::Instant;

/// What the other party of the DN's call becomes with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Other<'a> {
    /// As it was.
    Keep,
    /// This device (as the switch names it).
    Set(&'a str),
}

/// The client event a CSTA event makes at a DN: which, the call's state after it, the other
/// party.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seen<'a> {
    /// The client event.
    pub(super) name: CallEventName,
    /// `callState` after the event.
    pub(super) state: CallState,
    /// The other party after it.
    pub(super) other: Other<'a>,
}

fn seen(name: CallEventName, state: CallState, other: Other<'_>) -> Option<Seen<'_>> {
    Some(Seen { name, state, other })
}

/// The client event `ev` makes at the DN (`here` tells whether a device the switch names is
/// the DN), given the call's state at the DN before it (`None`: the DN does not hold the call).
/// `None`: no client event. The table of the module docs and of the README.
pub(super) fn client_event<'a>(
    ev: &'a CallEvent,
    here: impl Fn(Option<&str>) -> bool,
    before: Option<CallState>,
) -> Option<Seen<'a>> {
    use CallEventName as N;
    let at_this_device = here(ev.device.as_deref()) || here(ev.connection.device_id.as_deref());
    let device = || ev.device.as_deref().map_or(Other::Keep, Other::Set);
    let other_device = || ev.other_device.as_deref().map_or(Other::Keep, Other::Set);
    // Before the DN's call is answered: a device dialling, or the far end ringing.
    let setting_up = matches!(
        before,
        None | Some(CallState::Initiated | CallState::Dialing)
    );
    match ev.kind {
        CallEventKind::ServiceInitiated if at_this_device => {
            seen(N::OffHook, CallState::Initiated, Other::Keep)
        }
        CallEventKind::Originated if at_this_device => {
            seen(N::Dialing, CallState::Dialing, other_device())
        }
        CallEventKind::Delivered if at_this_device => {
            seen(N::Ringing, CallState::Ringing, other_device())
        }
        CallEventKind::Delivered if setting_up => seen(N::Dialing, CallState::Dialing, device()),
        CallEventKind::Established if at_this_device => {
            seen(N::Established, CallState::Established, other_device())
        }
        CallEventKind::Established if setting_up => {
            seen(N::Established, CallState::Established, device())
        }
        CallEventKind::Held if at_this_device => seen(N::Held, CallState::Held, Other::Keep),
        CallEventKind::Retrieved if at_this_device => {
            seen(N::Retrieved, CallState::Established, Other::Keep)
        }
        CallEventKind::ConnectionCleared | CallEventKind::Transferred
            if at_this_device && before.is_some() =>
        {
            seen(N::Released, CallState::Released, Other::Keep)
        }
        CallEventKind::CallCleared if before.is_some() => {
            seen(N::Released, CallState::Released, Other::Keep)
        }
        CallEventKind::Transferred => {
            let state = before?;
            let other = match ev.other_device.as_deref() {
                Some(to) if !here(Some(to)) => Other::Set(to),
                _ => Other::Keep,
            };
            seen(N::PartyChanged, state, other)
        }
        CallEventKind::Diverted if at_this_device && before.is_some() => {
            seen(N::Diverted, CallState::Released, other_device())
        }
        _ => None,
    }
}

impl Extension {
    /// Whether a device the switch names is this DN (devices come normalized: the DN when the
    /// plan has it, else the undecorated number).
    pub(super) fn is_here(&self, device: Option<&str>) -> bool {
        device == Some(&*self.dn)
    }

    /// The other party as clients see it: the device as normalized (the DN when the plan has
    /// it, else the number without decoration).
    fn other_dn(&self, device: &str) -> Option<Box<str>> {
        Some(Box::from(device))
    }

    /// A call event from the DN's monitor: the DN's call list, then the client event.
    pub(super) fn on_call_event(&mut self, seq: u64, ev: &CallEvent) {
        let Some(call_id) = ev.connection.call_id.as_deref() else {
            return;
        };
        if ev.kind == CallEventKind::Transferred && self.moved_by_transfer(seq, ev) {
            return;
        }
        let held = self
            .more()
            .state
            .calls
            .as_ref()
            .and_then(|list| list.get(call_id));
        let seen = client_event(ev, |d| self.is_here(d), held.map(|c| c.state));
        // What a call leaving the list takes with it (copied only then).
        let before = held.map(|c| {
            let leaving = seen.is_some_and(|s| s.state == CallState::Released);
            (c.conn_id, leaving.then(|| c.other.clone()).flatten())
        });
        self.apply_call_rule(ev, call_id);
        if ev.kind == CallEventKind::Transferred && self.is_here(ev.device.as_deref()) {
            // The transferring device's other call of the transfer (the consultation, named
            // among the changed connections) leaves its list too.
            for change in &ev.changes {
                if let Some(old) = change.old.as_ref().and_then(|c| c.call_id.as_deref()) {
                    if old != call_id {
                        self.drop_call(old);
                    }
                }
            }
        }
        let Some(seen) = seen else {
            return;
        };
        let other = match seen.other {
            Other::Set(raw) => self.other_dn(raw),
            Other::Keep => None,
        };
        let (conn_id, other) = match self.calls_mut().and_then(|list| list.get_mut(call_id)) {
            Some(call) => {
                call.state = seen.state;
                if other.is_some() {
                    call.other = other;
                }
                (call.conn_id, call.other.clone())
            }
            None => match before {
                Some((conn_id, kept)) => (conn_id, other.or(kept)),
                None => return,
            },
        };
        self.send_call_event(seq, ev, seen.name, seen.state, conn_id, None, other);
    }

    /// The call list's rule for `ev` (see [`call_rule`]).
    fn apply_call_rule(&mut self, ev: &CallEvent, call_id: &str) {
        match call_rule(ev, |d| self.is_here(d)) {
            CallRule::Hold { activate } => {
                self.touch_call(call_id, activate);
            }
            CallRule::Touch => {
                if let Some(call) = self
                    .calls_mut()
                    .and_then(|list| list.touch(call_id, false, Instant::now()))
                {
                    let conn_id = call.conn_id;
                    self.env.switch.calls.touch(call_id, conn_id);
                }
            }
            CallRule::Drop => self.drop_call(call_id),
        }
    }

    /// A transfer that gives this DN's call a new call ID (`transferredConnections`): the call
    /// moves to the new ID in the DN's list, with the new ID's connId (shared by every staying
    /// device), and the DN's clients get `EventPartyChanged` naming the old connId. Whether it
    /// did.
    fn moved_by_transfer(&mut self, seq: u64, ev: &CallEvent) -> bool {
        if self.is_here(ev.device.as_deref()) {
            return false;
        }
        let Some(list) = self.more().state.calls.as_ref() else {
            return false;
        };
        // The change of this device's connection; else one of a call the device holds that
        // names no device.
        let moves = ev.changes.iter().filter_map(|c| {
            let (old, new) = (c.old.as_ref()?, c.new.as_ref()?);
            let (old_id, new_id) = (old.call_id.as_deref()?, new.call_id.as_deref()?);
            (old_id != new_id && list.get(old_id).is_some()).then_some((old, new, old_id, new_id))
        });
        let mut chosen = None;
        for (old, new, old_id, new_id) in moves {
            if self.is_here(old.device_id.as_deref()) || self.is_here(new.device_id.as_deref()) {
                chosen = Some((old_id, new_id));
                break;
            }
            if chosen.is_none() && old.device_id.is_none() && new.device_id.is_none() {
                chosen = Some((old_id, new_id));
            }
        }
        let Some((old_id, new_id)) = chosen else {
            return false;
        };
        let Some(list) = self.more.as_mut().and_then(|m| m.state.calls.as_mut()) else {
            return false;
        };
        let Some(old) = list.remove(old_id) else {
            return false;
        };
        self.env
            .switch
            .calls
            .release(&old.call_id, old.conn_id, &self.dn);
        let active = self
            .more()
            .state
            .calls
            .as_ref()
            .and_then(|l| l.most_recent())
            .is_none()
            || old.state == CallState::Established;
        let conn_id = self.touch_call(new_id, active);
        let other = match ev.other_device.as_deref() {
            Some(to) if !self.is_here(Some(to)) => self.other_dn(to).or(old.other),
            _ => old.other,
        };
        if let Some(call) = self.calls_mut().and_then(|list| list.get_mut(new_id)) {
            call.state = old.state;
            call.other = other.clone();
        }
        self.send_call_event(
            seq,
            ev,
            CallEventName::PartyChanged,
            old.state,
            conn_id,
            Some(old.conn_id),
            other,
        );
        true
    }

    /// Count a call event and queue it, serialized once, to the DN's clients registered with
    /// `callEvents` (none: nothing is built).
    #[allow(clippy::too_many_arguments)]
    fn send_call_event(
        &mut self,
        seq: u64,
        ev: &CallEvent,
        name: CallEventName,
        state: CallState,
        conn_id: crate::router::calls::ConnId,
        previous: Option<crate::router::calls::ConnId>,
        other: Option<Box<str>>,
    ) {
        if !self.subs.wants_call_events() {
            return;
        }
        self.env.switch.metrics.call_event(name);
        let (conn_id, previous) = (conn_id.to_string(), previous.map(|p| p.to_string()));
        let text = crate::protocol::call_event(&CallEventOut {
            name,
            dn: &self.dn,
            switch: &self.env.switch.name,
            seq,
            conn_id: &conn_id,
            previous_conn_id: previous.as_deref(),
            other_dn: other.as_deref(),
            call_state: state,
            cause: ev.cause.as_deref(),
        });
        let to = self.subs.call_event_clients();
        self.emit(to, text, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csta::Connection;
    use CallEventKind as K;
    use CallEventName as N;
    use CallState as S;

    fn ev(kind: CallEventKind, conn_device: &str, device: &str, other: &str) -> CallEvent {
        CallEvent {
            kind,
            cross_ref: None,
            connection: Connection::new("C1", conn_device),
            device: Some(device.to_owned()).filter(|d| !d.is_empty()),
            other_device: Some(other.to_owned()).filter(|d| !d.is_empty()),
            cause: None,
            changes: Vec::new(),
        }
    }

    fn at_5001(d: Option<&str>) -> bool {
        d == Some("5001")
    }

    fn name_state(e: &CallEvent, before: Option<CallState>) -> Option<(N, S)> {
        client_event(e, at_5001, before).map(|s| (s.name, s.state))
    }

    #[test]
    fn each_row_of_the_table() {
        let rows = [
            (
                ev(K::ServiceInitiated, "5001", "5001", ""),
                None,
                Some((N::OffHook, S::Initiated)),
            ),
            (
                ev(K::Originated, "5001", "5001", "4001"),
                Some(S::Initiated),
                Some((N::Dialing, S::Dialing)),
            ),
            (
                ev(K::Delivered, "4001", "4001", "5001"),
                Some(S::Dialing),
                Some((N::Dialing, S::Dialing)),
            ),
            (
                ev(K::Delivered, "5001", "5001", "4001"),
                None,
                Some((N::Ringing, S::Ringing)),
            ),
            (
                ev(K::Established, "5001", "5001", "4001"),
                Some(S::Ringing),
                Some((N::Established, S::Established)),
            ),
            (
                ev(K::Established, "4001", "4001", "5001"),
                Some(S::Dialing),
                Some((N::Established, S::Established)),
            ),
            (
                ev(K::Held, "5001", "5001", ""),
                Some(S::Established),
                Some((N::Held, S::Held)),
            ),
            (
                ev(K::Retrieved, "5001", "5001", ""),
                Some(S::Held),
                Some((N::Retrieved, S::Established)),
            ),
            (
                ev(K::Transferred, "5001", "5001", "5002"),
                Some(S::Established),
                Some((N::Released, S::Released)),
            ),
            (
                ev(K::Transferred, "4001", "4001", "5002"),
                Some(S::Held),
                Some((N::PartyChanged, S::Held)),
            ),
            (
                ev(K::Diverted, "5001", "5001", "5002"),
                Some(S::Ringing),
                Some((N::Diverted, S::Released)),
            ),
            (
                ev(K::ConnectionCleared, "5001", "5001", ""),
                Some(S::Established),
                Some((N::Released, S::Released)),
            ),
            (
                ev(K::CallCleared, "", "", ""),
                Some(S::Held),
                Some((N::Released, S::Released)),
            ),
        ];
        for (e, before, want) in rows {
            assert_eq!(
                name_state(&e, before),
                want,
                "{:?} before {before:?}",
                e.kind
            );
        }
    }

    #[test]
    fn another_party_s_connection_makes_no_event() {
        let none = [
            (
                ev(K::ConnectionCleared, "4001", "4001", ""),
                Some(S::Established),
            ),
            (ev(K::Held, "4001", "4001", ""), Some(S::Established)),
            (ev(K::Retrieved, "4001", "4001", ""), Some(S::Established)),
            (
                ev(K::Delivered, "5002", "5002", "4001"),
                Some(S::Established),
            ),
            (ev(K::Established, "5002", "5002", "4001"), Some(S::Held)),
            (ev(K::Diverted, "4001", "4001", "5002"), Some(S::Dialing)),
            (ev(K::ServiceInitiated, "4001", "4001", ""), None),
            // Nothing to release or change where the DN never held the call.
            (ev(K::CallCleared, "", "", ""), None),
            (ev(K::ConnectionCleared, "5001", "5001", ""), None),
            (ev(K::Transferred, "4001", "4001", "5001"), None),
        ];
        for (e, before) in none {
            assert_eq!(
                name_state(&e, before),
                None,
                "{:?} before {before:?}",
                e.kind
            );
        }
    }

    #[test]
    fn the_other_party_is_the_device_across_the_call() {
        fn other(e: &CallEvent, before: Option<CallState>) -> Option<Other<'_>> {
            client_event(e, at_5001, before).map(|s| s.other)
        }
        assert_eq!(
            other(&ev(K::Delivered, "5001", "5001", "4001"), None),
            Some(Other::Set("4001"))
        );
        assert_eq!(
            other(&ev(K::Delivered, "4001", "4001", "5001"), Some(S::Dialing)),
            Some(Other::Set("4001"))
        );
        assert_eq!(
            other(&ev(K::Held, "5001", "5001", ""), Some(S::Established)),
            Some(Other::Keep)
        );
        assert_eq!(
            other(
                &ev(K::Transferred, "4002", "4002", "5001"),
                Some(S::Established)
            ),
            Some(Other::Keep),
            "transferred to this device: the other party is not named"
        );
        assert_eq!(
            other(
                &ev(K::Transferred, "4002", "4002", "5003"),
                Some(S::Established)
            ),
            Some(Other::Set("5003"))
        );
    }
}
