//! Call events: the CSTA events that tell what happens to calls at a monitored device, read
//! for the router's call lists and the desktops' call events (README, "The CSTA link").

use super::xml::{XmlOut, XmlWriter};

/// A connection: a call at a device. Both parts are opaque strings chosen by the switch and
/// both are optional in the schema.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Connection {
    /// The switch's call ID.
    pub call_id: Option<String>,
    /// The device of this connection.
    pub device_id: Option<String>,
}

impl Connection {
    /// A connection with both parts present.
    pub fn new(call_id: impl Into<String>, device_id: impl Into<String>) -> Connection {
        Connection {
            call_id: Some(call_id.into()),
            device_id: Some(device_id.into()),
        }
    }

    pub(super) fn write<O: XmlOut + ?Sized>(&self, w: &mut XmlWriter<'_, O>, name: &str) {
        w.open(name);
        w.opt_leaf("callID", self.call_id.as_deref());
        w.opt_leaf("deviceID", self.device_id.as_deref());
        w.close(name);
    }
}

/// The kinds of call event that maintain a device's list of active calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallEventKind {
    /// `ServiceInitiatedEvent`: `initiatedConnection`, `initiatingDevice`.
    ServiceInitiated,
    /// `OriginatedEvent`: `originatedConnection`, `callingDevice`, `calledDevice`.
    Originated,
    /// `DeliveredEvent`: `connection`, `alertingDevice`, `callingDevice`.
    Delivered,
    /// `EstablishedEvent`: `establishedConnection`, `answeringDevice`, `callingDevice`.
    Established,
    /// `ConnectionClearedEvent`: `droppedConnection`, `releasingDevice`.
    ConnectionCleared,
    /// `CallClearedEvent`: `clearedCall`.
    CallCleared,
    /// `HeldEvent`: `heldConnection`, `holdingDevice`.
    Held,
    /// `RetrievedEvent`: `retrievedConnection`, `retrievingDevice`.
    Retrieved,
    /// `TransferedEvent` (ECMA-323's spelling): `primaryOldCall`, `transferringDevice`,
    /// `transferredToDevice`.
    Transferred,
    /// `DivertedEvent`: `connection`, `divertingDevice`, `newDestination`.
    Diverted,
}

impl CallEventKind {
    /// Every kind, for tests and metrics.
    pub const ALL: [CallEventKind; 10] = [
        CallEventKind::ServiceInitiated,
        CallEventKind::Originated,
        CallEventKind::Delivered,
        CallEventKind::Established,
        CallEventKind::ConnectionCleared,
        CallEventKind::CallCleared,
        CallEventKind::Held,
        CallEventKind::Retrieved,
        CallEventKind::Transferred,
        CallEventKind::Diverted,
    ];

    /// (root, connection element, subject device element, other device element, cause)
    pub(super) fn layout(
        self,
    ) -> (
        &'static str,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
        &'static str,
    ) {
        use CallEventKind::*;
        match self {
            ServiceInitiated => (
                "ServiceInitiatedEvent",
                "initiatedConnection",
                Some("initiatingDevice"),
                None,
                "newCall",
            ),
            Originated => (
                "OriginatedEvent",
                "originatedConnection",
                Some("callingDevice"),
                Some("calledDevice"),
                "newCall",
            ),
            Delivered => (
                "DeliveredEvent",
                "connection",
                Some("alertingDevice"),
                Some("callingDevice"),
                "newCall",
            ),
            Established => (
                "EstablishedEvent",
                "establishedConnection",
                Some("answeringDevice"),
                Some("callingDevice"),
                "newCall",
            ),
            ConnectionCleared => (
                "ConnectionClearedEvent",
                "droppedConnection",
                Some("releasingDevice"),
                None,
                "normalClearing",
            ),
            CallCleared => (
                "CallClearedEvent",
                "clearedCall",
                None,
                None,
                "normalClearing",
            ),
            Held => (
                "HeldEvent",
                "heldConnection",
                Some("holdingDevice"),
                None,
                "normal",
            ),
            Retrieved => (
                "RetrievedEvent",
                "retrievedConnection",
                Some("retrievingDevice"),
                None,
                "normal",
            ),
            Transferred => (
                "TransferedEvent",
                "primaryOldCall",
                Some("transferringDevice"),
                Some("transferredToDevice"),
                "transfer",
            ),
            Diverted => (
                "DivertedEvent",
                "connection",
                Some("divertingDevice"),
                Some("newDestination"),
                "redirected",
            ),
        }
    }

    /// The root element name of this event.
    pub fn root(self) -> &'static str {
        self.layout().0
    }

    /// The usual ECMA-323 `cause` of this kind (`newCall`, `normalClearing`, …): what a
    /// writer that has no better cause to give (our simulator) puts in the event.
    pub fn default_cause(self) -> &'static str {
        self.layout().4
    }

    pub(super) fn from_root(root: &str) -> Option<CallEventKind> {
        // "TransferredEvent" is read too: some switches correct ECMA's spelling.
        if root == "TransferredEvent" {
            return Some(CallEventKind::Transferred);
        }
        CallEventKind::ALL.into_iter().find(|k| k.root() == root)
    }
}

/// A call event (see [`CallEventKind`] for the elements of each kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEvent {
    /// Which event.
    pub kind: CallEventKind,
    /// The monitor it was sent on.
    pub cross_ref: Option<String>,
    /// The connection the event is about.
    pub connection: Connection,
    /// The subject device (initiating, calling, alerting, answering, releasing, holding,
    /// retrieving, transferring or diverting device).
    pub device: Option<String>,
    /// The other device (called, calling, transferred-to device or new destination).
    pub other_device: Option<String>,
    /// The CSTA `cause`, as written (None when absent): desktops show why a call changed.
    pub cause: Option<String>,
    /// `TransferedEvent` only: the connections whose call ID changed, from
    /// `transferredConnections/connectionListItem/{newConnection,oldConnection}` (empty when
    /// the switch sent none), so that a staying party's call can follow its new call ID.
    pub changes: Vec<ConnectionChange>,
}

/// One `connectionListItem` of a transfer: a party's connection before and after, either of
/// which a switch may leave out (OpenScape Voice sends only `newConnection`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectionChange {
    /// `oldConnection`: the party's connection in the call that ended.
    pub old: Option<Connection>,
    /// `newConnection`: the party's connection in the call it is now in.
    pub new: Option<Connection>,
}

/// A call event, laid out as its kind says.
pub(super) fn encode_call<O: XmlOut + ?Sized>(c: &CallEvent, ns: &str, out: &mut O) {
    let (root, conn, dev, other, _) = c.kind.layout();
    let mut w = XmlWriter::new(out, root, ns);
    w.opt_leaf("monitorCrossRefID", c.cross_ref.as_deref());
    c.connection.write(&mut w, conn);
    for (name, value) in [(dev, &c.device), (other, &c.other_device)] {
        if let (Some(name), Some(value)) = (name, value) {
            w.open(name).leaf("deviceIdentifier", value).close(name);
        }
    }
    if c.kind == CallEventKind::Transferred && !c.changes.is_empty() {
        w.open("transferredConnections");
        for change in &c.changes {
            w.open("connectionListItem");
            if let Some(new) = &change.new {
                new.write(&mut w, "newConnection");
            }
            if let Some(old) = &change.old {
                old.write(&mut w, "oldConnection");
            }
            w.close("connectionListItem");
        }
        w.close("transferredConnections");
    }
    w.opt_leaf("cause", c.cause.as_deref());
    w.finish(root)
}
