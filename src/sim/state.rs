//! The simulated switch's state: connections, monitors, hot-desk associations, calls and fault
//! modes, and the rules that change them.
//!
//! Everything here is synchronous and runs under the switch's one mutex, for a short while and
//! never across an `.await`. Outgoing frames are pushed, still under the lock, into each
//! connection's queue, so every connection sees the switch's changes in the order they
//! happened (a response before the events it caused). A queue holds at most
//! [`CONN_QUEUE_BYTES`]: a connection whose peer lets it fill is dropped, as a switch drops a
//! CTI link that does not read (bursts from the control API wait for room instead).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::csta::{
    encode_frame, CallEvent, CallEventKind, Connection, ConnectionChange, CstaError, Dialect,
    HotDeskAction, HotDeskEvent, HotDeskRequest, HotDeskState, InvokeId, Message,
};
use crate::dnplan::DnPlan;

use super::session::Sessions;
use super::vendor::Vendor;

/// The connection identifier inside one simulator.
pub(crate) type ConnId = u64;

/// What a connection's writer task sends.
#[derive(Debug)]
pub(crate) enum Out {
    /// A well-formed frame.
    Frame(crate::csta::Frame),
    /// Raw bytes (garbage on purpose).
    Raw(Bytes),
}

impl Out {
    /// The bytes this item puts on the wire (frame header included).
    pub(crate) fn size(&self) -> usize {
        match self {
            Out::Frame(frame) => frame.body.len() + 8,
            Out::Raw(bytes) => bytes.len(),
        }
    }
}

/// The most bytes queued towards one link connection. The simulator runs inside the router's
/// own process (embedded switches): a link that stops reading must not grow its memory
/// without bound. 32 MiB is tens of thousands of events, far more than a reading peer ever
/// lets pile up.
pub(crate) const CONN_QUEUE_BYTES: usize = 32 << 20;

/// The sending side of one connection's queue, counting the bytes queued (the writer task
/// subtracts what it takes).
#[derive(Debug, Clone)]
pub(crate) struct ConnTx {
    tx: UnboundedSender<Out>,
    queued: Arc<AtomicUsize>,
}

/// Why an item was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueFull {
    /// The connection has closed.
    Closed,
    /// [`CONN_QUEUE_BYTES`] would be exceeded: the peer is not reading.
    Overflow,
}

impl ConnTx {
    /// A sender and the counter its writer decrements.
    pub(crate) fn new(tx: UnboundedSender<Out>) -> (ConnTx, Arc<AtomicUsize>) {
        let queued = Arc::new(AtomicUsize::new(0));
        (
            ConnTx {
                tx,
                queued: queued.clone(),
            },
            queued,
        )
    }

    /// Queue one item unless the queue is full.
    pub(crate) fn send(&self, out: Out) -> Result<(), QueueFull> {
        let size = out.size();
        if self.queued.load(Ordering::Relaxed) + size > CONN_QUEUE_BYTES {
            return Err(QueueFull::Overflow);
        }
        self.queued.fetch_add(size, Ordering::Relaxed);
        self.tx.send(out).map_err(|_| {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            QueueFull::Closed
        })
    }

    /// The bytes queued and not yet taken by the writer.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

/// The error categories a `CSTAErrorCode` may name (and so the reject fault may use).
pub(crate) use crate::csta::message::ERROR_CATEGORIES;

/// A refusal by the simulated switch: the CSTA error it answers on a link, and a sentence for
/// the control API.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub(crate) struct SimError {
    /// The CSTA error (`CSTAErrorCode`) this refusal is on the wire.
    pub csta: CstaError,
    /// What a person reads in the control API's reply.
    pub message: String,
    /// The HTTP status of the control API's reply.
    pub status: u16,
    /// Whether the control API's reply names the CSTA error (not for malformed bodies).
    pub from_switch: bool,
}

impl SimError {
    fn new(category: &str, value: &str, status: u16, message: impl Into<String>) -> SimError {
        SimError {
            csta: CstaError::new(category, value),
            message: message.into(),
            status,
            from_switch: true,
        }
    }

    /// A control API request that is wrong in itself (not a refusal by the switch).
    pub(crate) fn http(status: u16, message: impl Into<String>) -> SimError {
        SimError {
            from_switch: false,
            ..SimError::new("operation", "generic", status, message)
        }
    }

    fn unknown_device(device: &str) -> SimError {
        SimError::new(
            "operation",
            "invalidDeviceID",
            404,
            format!("device {device:?} is not in this switch's DN plan"),
        )
    }

    fn unknown_call(call_id: &str) -> SimError {
        SimError::new(
            "operation",
            "invalidCallID",
            404,
            format!("there is no active call {call_id:?}"),
        )
    }

    fn not_a_party(call_id: &str, device: &str) -> SimError {
        SimError::new(
            "operation",
            "invalidConnectionID",
            404,
            format!("device {device:?} is not a party of call {call_id:?}"),
        )
    }

    fn state(message: impl Into<String>) -> SimError {
        SimError::new("stateIncompatibility", "invalidObjectState", 409, message)
    }

    /// A request the control API cannot act on because the body is wrong.
    pub(crate) fn bad_request(message: impl Into<String>) -> SimError {
        SimError::http(400, message)
    }
}

/// One open link connection.
struct ConnEntry {
    link: usize,
    tx: ConnTx,
    cancel: CancellationToken,
}

/// One device monitor, owned by the connection that started it.
struct Monitor {
    /// Creation order (the number in the cross-ref).
    seq: u64,
    device: String,
    conn: ConnId,
    link: usize,
}

/// The state of a device's connection to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartyState {
    Alerting,
    Connected,
    Held,
}

impl PartyState {
    fn name(self) -> &'static str {
        match self {
            PartyState::Alerting => "alerting",
            PartyState::Connected => "connected",
            PartyState::Held => "held",
        }
    }
}

struct Party {
    device: String,
    state: PartyState,
}

struct Call {
    /// Creation order, so that `GET /state` lists calls oldest first.
    seq: u64,
    parties: Vec<Party>,
    /// The device that made the call.
    calling: String,
    account_code: Option<String>,
}

impl Call {
    fn devices(&self) -> Vec<String> {
        self.parties.iter().map(|p| p.device.clone()).collect()
    }

    fn party(&self, device: &str) -> Option<usize> {
        self.parties.iter().position(|p| p.device == device)
    }

    /// The device on the other end of the call from `device`, for `callingDevice`.
    fn other_party(&self, device: &str) -> String {
        self.parties
            .iter()
            .find(|p| p.device != device)
            .map(|p| p.device.clone())
            .unwrap_or_else(|| self.calling.clone())
    }
}

/// One CSTA link (listening address) of the switch.
struct LinkInfo {
    address: SocketAddr,
    up: bool,
    requests: u64,
}

/// The answer-delay fault.
enum DelayFault {
    Off,
    Fixed(u64),
    Random {
        min: u64,
        max: u64,
        seed: u64,
        rng: Box<StdRng>,
    },
}

/// The reject fault: the next `remaining` matching requests are refused with `error`.
struct RejectFault {
    remaining: u64,
    error: CstaError,
    request: Option<String>,
}

/// Switch-wide fault modes, set by the control API.
struct Faults {
    stall: bool,
    delay: DelayFault,
    reject: Option<RejectFault>,
    status: String,
}

impl Default for Faults {
    fn default() -> Faults {
        Faults {
            stall: false,
            delay: DelayFault::Off,
            reject: None,
            status: "normal".to_owned(),
        }
    }
}

/// What to do with a request that was just read.
pub(crate) enum Decision {
    /// Stall: read it and never answer.
    Drop,
    /// Answer it after `delay`, refused with `reject` if set.
    Answer {
        delay: Duration,
        reject: Option<CstaError>,
    },
}

/// Which garbage to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Garbage {
    /// Bytes that are not a frame header.
    Frame,
    /// A valid header and broken XML.
    Xml,
    /// A header announcing more bytes than follow.
    Truncated,
}

impl Garbage {
    fn bytes(self) -> Bytes {
        match self {
            Garbage::Frame => Bytes::from_static(b"GARBAGE!GARBAGE!"),
            Garbage::Xml => {
                let body: &[u8] = b"<PrivateEvent><unclosed>";
                let mut out = Vec::with_capacity(8 + body.len());
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&((8 + body.len()) as u16).to_be_bytes());
                out.extend_from_slice(b"9999");
                out.extend_from_slice(body);
                Bytes::from(out)
            }
            Garbage::Truncated => {
                let mut out = Vec::with_capacity(28);
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&200u16.to_be_bytes());
                out.extend_from_slice(b"9999");
                out.extend_from_slice(b"<PrivateEvent xmlns=");
                Bytes::from(out)
            }
        }
    }
}

/// The whole state of one simulated switch, shared by all its links and the control API.
pub(crate) struct SwitchState {
    name: String,
    dns: DnPlan,
    dialect: Dialect,
    /// guest → host.
    associations: BTreeMap<String, String>,
    /// host → guest.
    hosts: BTreeMap<String, String>,
    /// cross-ref → monitor; cross-refs are `M<n>`, kept in creation order by `monitor_order`.
    monitors: HashMap<String, Monitor>,
    monitor_order: BTreeMap<u64, String>,
    /// device → the `seq` of its monitors, so an event finds its monitors without a scan.
    by_device: HashMap<String, BTreeSet<u64>>,
    next_monitor: u64,
    calls: HashMap<String, Call>,
    next_call: u64,
    call_seq: u64,
    conns: HashMap<ConnId, ConnEntry>,
    next_conn: ConnId,
    links: Vec<LinkInfo>,
    decode_errors: u64,
    /// MonitorStops naming a cross-reference this connection does not have: a client that
    /// stops a monitor it never started (or twice), or a stop that overtook its start.
    unknown_monitor_stops: u64,
    /// Requests read on a connection while a newer connection of the same link was open (a
    /// router node acting on the switch after another took it over).
    stale_requests: u64,
    faults: Faults,
    closed: bool,
    /// The preset: how devices, cross-references and greetings are written.
    vendor: Vendor,
    /// ECMA-354 application sessions, per connection.
    pub(crate) sessions: Sessions,
    /// Connections that sent `SystemRegister`: they get `SystemStatus` on a status change.
    registered: BTreeSet<ConnId>,
}

impl SwitchState {
    /// A fresh switch with no connections, monitors, associations or calls.
    pub(crate) fn new(
        name: String,
        dns: DnPlan,
        dialect: Dialect,
        links: &[SocketAddr],
        vendor: Vendor,
    ) -> SwitchState {
        SwitchState {
            vendor,
            sessions: Sessions::new(
                vendor.serves_sessions(),
                vendor.requires_session(),
                vendor.session_cap(),
            ),
            registered: BTreeSet::new(),
            name,
            dns,
            dialect,
            associations: BTreeMap::new(),
            hosts: BTreeMap::new(),
            monitors: HashMap::new(),
            monitor_order: BTreeMap::new(),
            by_device: HashMap::new(),
            next_monitor: 0,
            calls: HashMap::new(),
            next_call: 0,
            call_seq: 0,
            conns: HashMap::new(),
            next_conn: 0,
            links: links
                .iter()
                .map(|&address| LinkInfo {
                    address,
                    up: true,
                    requests: 0,
                })
                .collect(),
            decode_errors: 0,
            unknown_monitor_stops: 0,
            stale_requests: 0,
            faults: Faults::default(),
            closed: false,
        }
    }

    // ----- connections -------------------------------------------------------------------

    /// Whether a connection is still open.
    pub(crate) fn has_conn(&self, id: ConnId) -> bool {
        self.conns.contains_key(&id)
    }

    /// Register a new connection on a link and queue the switch's greeting. `None` when the link
    /// is down or the switch is shutting down: the caller then closes the socket.
    pub(crate) fn add_conn(
        &mut self,
        link: usize,
        tx: ConnTx,
        cancel: CancellationToken,
    ) -> Option<ConnId> {
        if self.closed || !self.links.get(link).is_some_and(|l| l.up) {
            return None;
        }
        self.next_conn += 1;
        let id = self.next_conn;
        self.conns.insert(id, ConnEntry { link, tx, cancel });
        if let Some(status) = self.vendor.greeting() {
            let status = Some(status.to_owned());
            self.send(id, InvokeId::ZERO, &Message::SystemStatus { status });
        }
        Some(id)
    }

    /// Forget a closed connection and the monitors it owned.
    pub(crate) fn remove_conn(&mut self, id: ConnId) {
        self.conns.remove(&id);
        self.sessions.remove_conn(id);
        self.registered.remove(&id);
        let gone: Vec<String> = self
            .monitors
            .iter()
            .filter(|(_, m)| m.conn == id)
            .map(|(x, _)| x.clone())
            .collect();
        for x in gone {
            self.remove_monitor(&x);
        }
    }

    fn remove_monitor(&mut self, cross_ref: &str) -> Option<Monitor> {
        let m = self.monitors.remove(cross_ref)?;
        self.monitor_order.remove(&m.seq);
        if let Some(seqs) = self.by_device.get_mut(&m.device) {
            seqs.remove(&m.seq);
            if seqs.is_empty() {
                self.by_device.remove(&m.device);
            }
        }
        Some(m)
    }

    /// Mark the switch closed: no new connections are registered.
    pub(crate) fn close(&mut self) {
        self.closed = true;
        for c in self.conns.values() {
            c.cancel.cancel();
        }
    }

    /// Close every connection of one link (or of all links); returns how many.
    pub(crate) fn drop_connections(&mut self, link: Option<usize>) -> Result<usize, SimError> {
        if let Some(l) = link {
            self.check_link(l)?;
        }
        let mut n = 0;
        for c in self.conns.values() {
            if link.is_none_or(|l| l == c.link) {
                c.cancel.cancel();
                n += 1;
            }
        }
        Ok(n)
    }

    /// Take a link down (closing its connections and refusing new ones) or up again.
    pub(crate) fn set_link(&mut self, link: usize, up: bool) -> Result<(), SimError> {
        self.check_link(link)?;
        if let Some(l) = self.links.get_mut(link) {
            l.up = up;
        }
        if !up {
            self.drop_connections(Some(link))?;
        }
        Ok(())
    }

    fn check_link(&self, link: usize) -> Result<(), SimError> {
        if link < self.links.len() {
            Ok(())
        } else {
            Err(SimError::http(
                404,
                format!(
                    "there is no link {link}: this switch has links 0 to {}",
                    self.links.len().saturating_sub(1)
                ),
            ))
        }
    }

    /// Send garbage on every connection of one link (or all links); returns how many.
    pub(crate) fn garbage(
        &mut self,
        kind: Garbage,
        link: Option<usize>,
    ) -> Result<usize, SimError> {
        if let Some(l) = link {
            self.check_link(l)?;
        }
        let bytes = kind.bytes();
        let mut n = 0;
        for (&id, c) in &self.conns {
            if link.is_none_or(|l| l == c.link) {
                self.queue(id, c, Out::Raw(bytes.clone()));
                n += 1;
            }
        }
        Ok(n)
    }

    /// How full each open connection's queue is (bytes), with the token that drops it: what
    /// a burst paces itself on.
    pub(crate) fn queue_levels(&self) -> Vec<(ConnId, usize, CancellationToken)> {
        self.conns
            .iter()
            .map(|(&id, c)| (id, c.tx.queued(), c.cancel.clone()))
            .collect()
    }

    /// Queue one item on a connection; a connection whose queue is full is dropped (its peer
    /// is not reading), as a switch drops a CTI link that does not read.
    fn queue(&self, id: ConnId, c: &ConnEntry, out: Out) {
        if let Err(QueueFull::Overflow) = c.tx.send(out) {
            if !c.cancel.is_cancelled() {
                tracing::warn!(
                    switch = %self.name,
                    link = c.link,
                    conn = id,
                    "dropping a link connection that does not read: {} bytes are queued towards it",
                    c.tx.queued()
                );
                c.cancel.cancel();
            }
        }
    }

    // ----- sending -----------------------------------------------------------------------

    /// Queue one message on one connection (silently nothing if it has closed).
    fn send(&self, conn: ConnId, invoke: InvokeId, msg: &Message) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let encoded = if self.vendor == Vendor::Generic {
            encode_frame(invoke, msg, &self.dialect)
        } else {
            let xml = msg.encode(&self.dialect);
            let xml = self.vendor.shape(xml, invoke == InvokeId::EVENT);
            Ok(crate::csta::Frame::new(invoke, xml))
        };
        match encoded {
            Ok(frame) => {
                tracing::trace!(switch = %self.name, conn, invoke = %invoke, message = msg.name(), "sending");
                self.queue(conn, c, Out::Frame(frame));
            }
            Err(e) => tracing::warn!(switch = %self.name, "cannot send {}: {e}", msg.name()),
        }
    }

    /// Answer a request on one connection (nothing if it has closed).
    pub(crate) fn reply(&self, conn: ConnId, invoke: InvokeId, msg: &Message) {
        self.send(conn, invoke, msg);
    }

    /// Send an event to every monitor of the given devices, each copy carrying the cross-ref of
    /// the monitor it is sent on.
    fn notify(&self, devices: &[String], make: impl Fn(String) -> Message) {
        // Oldest monitor first, each monitor once even if its device is listed twice.
        let mut seqs = BTreeSet::new();
        for d in devices {
            if let Some(s) = self.by_device.get(d) {
                seqs.extend(s.iter().copied());
            }
        }
        for seq in seqs {
            let Some(x) = self.monitor_order.get(&seq) else {
                continue;
            };
            if let Some(m) = self.monitors.get(x) {
                self.send(m.conn, InvokeId::EVENT, &make(x.clone()));
            }
        }
    }

    fn notify_call(
        &self,
        devices: &[String],
        kind: CallEventKind,
        connection: Connection,
        device: Option<&str>,
        other: Option<&str>,
    ) {
        let v = self.vendor;
        let connection = Connection {
            call_id: connection.call_id,
            device_id: connection.device_id.map(|d| v.connection_device(&d)),
        };
        self.notify(devices, |x| {
            Message::Call(CallEvent {
                kind,
                cross_ref: Some(x),
                connection: connection.clone(),
                device: device.map(|d| v.device(d)),
                other_device: other.map(|d| v.device(d)),
                cause: Some(kind.default_cause().to_owned()),
                changes: Vec::new(),
            })
        });
    }

    // ----- requests from a link ----------------------------------------------------------

    /// Count a request read on a link and decide, from the fault modes, what to do with it.
    pub(crate) fn receive(&mut self, link: usize, conn: ConnId, name: &str) -> Decision {
        if let Some(l) = self.links.get_mut(link) {
            l.requests += 1;
        }
        if self
            .conns
            .iter()
            .any(|(id, c)| c.link == link && *id > conn)
        {
            // A request on a connection after a newer one opened on the same link: a router
            // that should have let go of the switch still acts on it.
            self.stale_requests += 1;
        }
        if self.faults.stall {
            return Decision::Drop;
        }
        let mut reject = None;
        if let Some(r) = &mut self.faults.reject {
            if r.request.as_deref().is_none_or(|q| q == name) {
                r.remaining = r.remaining.saturating_sub(1);
                reject = Some(r.error.clone());
            }
            if r.remaining == 0 {
                self.faults.reject = None;
            }
        }
        let ms = match &mut self.faults.delay {
            DelayFault::Off => 0,
            DelayFault::Fixed(ms) => *ms,
            DelayFault::Random { min, max, rng, .. } => rng.random_range(*min..=*max),
        };
        Decision::Answer {
            delay: Duration::from_millis(ms),
            reject,
        }
    }

    /// Count a frame whose XML could not be read.
    pub(crate) fn count_decode_error(&mut self) {
        self.decode_errors += 1;
    }

    /// Process a request and answer it (and send the events it causes).
    pub(crate) fn answer(
        &mut self,
        conn: ConnId,
        invoke: InvokeId,
        msg: Message,
        reject: Option<CstaError>,
    ) {
        if let Some(e) = reject {
            self.send(conn, invoke, &Message::Error(e));
            return;
        }
        let result = match msg {
            Message::RequestSystemStatus => Ok(Message::RequestSystemStatusResponse {
                status: self.faults.status.clone(),
            }),
            Message::MonitorStart { device } => {
                self.monitor_start(conn, &self.vendor.read_device(&device))
            }
            Message::SystemRegister(crate::csta::SystemRegister::Request) => {
                self.registered.insert(conn);
                Ok(Message::SystemRegister(
                    crate::csta::SystemRegister::Response {
                        register_id: Some(format!("{conn}ss")),
                    },
                ))
            }
            Message::MonitorStop { cross_ref } => self.monitor_stop(conn, &cross_ref),
            Message::Escape(req) => match self.hotdesk(&self.read_request(req)) {
                Ok(event) => {
                    self.send(conn, invoke, &Message::EscapeResponse);
                    self.emit_hotdesk(&event);
                    return;
                }
                Err(e) => Err(e),
            },
            Message::AssociateData { call, account_code } => {
                let call_id = call.call_id.unwrap_or_default();
                let device = self.vendor.read_device(&call.device_id.unwrap_or_default());
                match self.set_account_code(&call_id, &device, &account_code) {
                    Ok(()) => {
                        self.send(conn, invoke, &Message::AssociateDataResponse);
                        self.emit_account_code(&call_id, &device, &account_code);
                        return;
                    }
                    Err(e) => Err(e),
                }
            }
            other => Err(SimError::new(
                "unspecified",
                "generic",
                400,
                format!("{} is not a request this switch serves", other.name()),
            )),
        };
        match result {
            Ok(response) => self.send(conn, invoke, &response),
            Err(e) => {
                tracing::debug!(switch = %self.name, "refusing request {invoke}: {e}");
                self.send(conn, invoke, &Message::Error(e.csta));
            }
        }
    }

    fn monitor_start(&mut self, conn: ConnId, device: &str) -> Result<Message, SimError> {
        if !self.dns.contains(device) {
            return Err(SimError::unknown_device(device));
        }
        let Some(link) = self.conns.get(&conn).map(|c| c.link) else {
            // The connection closed while the request was delayed: nobody to monitor for.
            return Err(SimError::bad_request("the connection has closed"));
        };
        self.next_monitor += 1;
        let seq = self.next_monitor;
        let cross_ref = self.vendor.cross_ref(seq);
        self.monitors.insert(
            cross_ref.clone(),
            Monitor {
                seq,
                device: device.to_owned(),
                conn,
                link,
            },
        );
        self.monitor_order.insert(seq, cross_ref.clone());
        self.by_device
            .entry(device.to_owned())
            .or_default()
            .insert(seq);
        Ok(Message::MonitorStartResponse { cross_ref })
    }

    fn monitor_stop(&mut self, conn: ConnId, cross_ref: &str) -> Result<Message, SimError> {
        if self.monitors.get(cross_ref).is_none_or(|m| m.conn != conn) {
            self.unknown_monitor_stops += 1;
            return Err(SimError::new(
                "operation",
                "invalidCrossRefID",
                404,
                format!("there is no monitor {cross_ref:?} on this connection"),
            ));
        }
        self.remove_monitor(cross_ref);
        Ok(Message::MonitorStopResponse)
    }

    // ----- hot-desking -------------------------------------------------------------------

    /// A hot-desk request with its devices read as this switch reads them (`N<…>` forms).
    fn read_request(&self, req: HotDeskRequest) -> HotDeskRequest {
        let v = self.vendor;
        HotDeskRequest {
            guest: v.read_device(&req.guest),
            action: match req.action {
                HotDeskAction::Associate { host } => HotDeskAction::Associate {
                    host: v.read_device(&host),
                },
                HotDeskAction::Cancel => HotDeskAction::Cancel,
            },
        }
    }

    /// Apply a hot-desk request (from a link or from the phone); returns the event to send.
    pub(crate) fn hotdesk(&mut self, req: &HotDeskRequest) -> Result<HotDeskEvent, SimError> {
        let guest = req.guest.as_str();
        if !self.dns.contains(guest) {
            return Err(SimError::unknown_device(guest));
        }
        match &req.action {
            HotDeskAction::Associate { host } => {
                if !self.dns.contains(host) {
                    return Err(SimError::unknown_device(host));
                }
                if host == guest {
                    return Err(SimError::state(format!(
                        "device {guest:?} cannot be its own host"
                    )));
                }
                if let Some(h) = self.associations.get(guest) {
                    return Err(SimError::state(format!(
                        "guest {guest:?} is already associated with host {h:?}"
                    )));
                }
                if let Some(g) = self.hosts.get(host) {
                    return Err(SimError::state(format!(
                        "host {host:?} already has guest {g:?}"
                    )));
                }
                self.associations.insert(guest.to_owned(), host.clone());
                self.hosts.insert(host.clone(), guest.to_owned());
                Ok(HotDeskEvent {
                    state: HotDeskState::Established,
                    guest: guest.to_owned(),
                    host: Some(host.clone()),
                })
            }
            HotDeskAction::Cancel => {
                let Some(host) = self.associations.remove(guest) else {
                    return Err(SimError::state(format!(
                        "guest {guest:?} is not associated with any host"
                    )));
                };
                self.hosts.remove(&host);
                Ok(HotDeskEvent {
                    state: HotDeskState::Cancelled,
                    guest: guest.to_owned(),
                    host: Some(host),
                })
            }
        }
    }

    /// Send a hot-desk event on every monitor of the guest and of the host.
    pub(crate) fn emit_hotdesk(&self, event: &HotDeskEvent) {
        let mut devices = vec![event.guest.clone()];
        devices.extend(event.host.iter().cloned());
        let v = self.vendor;
        let event = HotDeskEvent {
            state: event.state,
            guest: v.private_device(&event.guest),
            host: event.host.as_deref().map(|h| v.private_device(h)),
        };
        self.notify(&devices, |x| Message::PrivateEvent {
            cross_ref: Some(x),
            event: event.clone(),
        });
    }

    // ----- calls -------------------------------------------------------------------------

    fn check_device(&self, device: &str) -> Result<(), SimError> {
        if self.dns.contains(device) {
            Ok(())
        } else {
            Err(SimError::unknown_device(device))
        }
    }

    fn call(&self, call_id: &str) -> Result<&Call, SimError> {
        self.calls
            .get(call_id)
            .ok_or_else(|| SimError::unknown_call(call_id))
    }

    fn call_mut(&mut self, call_id: &str) -> Result<&mut Call, SimError> {
        self.calls
            .get_mut(call_id)
            .ok_or_else(|| SimError::unknown_call(call_id))
    }

    /// Make a call from `from` to `to` (as if dialled on the phone); returns its call ID.
    pub(crate) fn call_new(
        &mut self,
        from: &str,
        to: &str,
        call_id: Option<String>,
        answer: bool,
    ) -> Result<String, SimError> {
        self.check_device(from)?;
        self.check_device(to)?;
        if from == to {
            return Err(SimError::new(
                "operation",
                "invalidCalledDevice",
                400,
                format!("device {from:?} cannot call itself"),
            ));
        }
        let id = self.fresh_call_id(call_id)?;
        self.call_seq += 1;
        self.calls.insert(
            id.clone(),
            Call {
                seq: self.call_seq,
                parties: vec![Party {
                    device: from.to_owned(),
                    state: PartyState::Connected,
                }],
                calling: from.to_owned(),
                account_code: None,
            },
        );
        let at_from = Connection::new(&id, from);
        let only_from = vec![from.to_owned()];
        self.notify_call(
            &only_from,
            CallEventKind::ServiceInitiated,
            at_from.clone(),
            Some(from),
            None,
        );
        self.notify_call(
            &only_from,
            CallEventKind::Originated,
            at_from,
            Some(from),
            Some(to),
        );
        self.join(&id, to, from, answer)?;
        Ok(id)
    }

    /// The call ID asked for (when not in use), else a new one.
    fn fresh_call_id(&mut self, call_id: Option<String>) -> Result<String, SimError> {
        Ok(match call_id {
            Some(id) if id.is_empty() => {
                return Err(SimError::bad_request("callId must not be empty"))
            }
            Some(id) if self.calls.contains_key(&id) => {
                return Err(SimError::state(format!("call {id:?} is already active")))
            }
            Some(id) => id,
            None => loop {
                self.next_call += 1;
                let id = format!("C{}", self.next_call);
                if !self.calls.contains_key(&id) {
                    break id;
                }
            },
        })
    }

    /// `count` answered calls from `from` to `to`, each with a fresh call ID and none cleared
    /// (a call storm for load tests): the same events as `count` calls made one by one.
    /// Returns the call IDs of the first and the last.
    pub(crate) fn call_burst(
        &mut self,
        from: &str,
        to: &str,
        count: u64,
    ) -> Result<(String, String), SimError> {
        let mut first = None;
        let mut last = String::new();
        for _ in 0..count {
            last = self.call_new(from, to, None, true)?;
            if first.is_none() {
                first = Some(last.clone());
            }
        }
        Ok((first.unwrap_or_default(), last))
    }

    /// Add `device` to a call: Delivered (and Established when answered) at it.
    fn join(
        &mut self,
        call_id: &str,
        device: &str,
        calling: &str,
        answer: bool,
    ) -> Result<(), SimError> {
        let call = self.call_mut(call_id)?;
        call.parties.push(Party {
            device: device.to_owned(),
            state: if answer {
                PartyState::Connected
            } else {
                PartyState::Alerting
            },
        });
        let devices = call.devices();
        let conn = Connection::new(call_id, device);
        self.notify_call(
            &devices,
            CallEventKind::Delivered,
            conn.clone(),
            Some(device),
            Some(calling),
        );
        if answer {
            self.notify_call(
                &devices,
                CallEventKind::Established,
                conn,
                Some(device),
                Some(calling),
            );
        }
        Ok(())
    }

    /// Answer a ringing party (the given device, or the first ringing one).
    pub(crate) fn call_answer(
        &mut self,
        call_id: &str,
        device: Option<&str>,
    ) -> Result<(), SimError> {
        let call = self.call_mut(call_id)?;
        let index = match device {
            Some(d) => {
                let i = call
                    .party(d)
                    .ok_or_else(|| SimError::not_a_party(call_id, d))?;
                if call.parties[i].state != PartyState::Alerting {
                    return Err(SimError::state(format!(
                        "device {d:?} is not ringing on call {call_id:?}"
                    )));
                }
                i
            }
            None => call
                .parties
                .iter()
                .position(|p| p.state == PartyState::Alerting)
                .ok_or_else(|| {
                    SimError::state(format!("no party of call {call_id:?} is ringing"))
                })?,
        };
        call.parties[index].state = PartyState::Connected;
        let device = call.parties[index].device.clone();
        let calling = call.other_party(&device);
        let devices = call.devices();
        self.notify_call(
            &devices,
            CallEventKind::Established,
            Connection::new(call_id, &device),
            Some(&device),
            Some(&calling),
        );
        Ok(())
    }

    /// Put a party on hold (`hold`) or take it off hold.
    pub(crate) fn call_hold(
        &mut self,
        call_id: &str,
        device: &str,
        hold: bool,
    ) -> Result<(), SimError> {
        let call = self.call_mut(call_id)?;
        let i = call
            .party(device)
            .ok_or_else(|| SimError::not_a_party(call_id, device))?;
        let (from, to, kind) = if hold {
            (PartyState::Connected, PartyState::Held, CallEventKind::Held)
        } else {
            (
                PartyState::Held,
                PartyState::Connected,
                CallEventKind::Retrieved,
            )
        };
        if call.parties[i].state != from {
            return Err(SimError::state(format!(
                "device {device:?} is {} on call {call_id:?}, not {}",
                call.parties[i].state.name(),
                from.name()
            )));
        }
        call.parties[i].state = to;
        let devices = call.devices();
        self.notify_call(
            &devices,
            kind,
            Connection::new(call_id, device),
            Some(device),
            None,
        );
        Ok(())
    }

    /// Checks shared by transfer and divert; returns the index of `from` in the call.
    fn check_move(&self, call_id: &str, from: &str, to: &str) -> Result<usize, SimError> {
        let call = self.call(call_id)?;
        let i = call
            .party(from)
            .ok_or_else(|| SimError::not_a_party(call_id, from))?;
        self.check_device(to)?;
        if call.party(to).is_some() {
            return Err(SimError::state(format!(
                "device {to:?} is already a party of call {call_id:?}"
            )));
        }
        Ok(i)
    }

    /// Single-step transfer: `from` leaves the call and `to` joins it (same call ID).
    pub(crate) fn call_transfer(
        &mut self,
        call_id: &str,
        from: &str,
        to: &str,
    ) -> Result<(), SimError> {
        self.call_move(call_id, from, to, CallEventKind::Transferred, true)
    }

    /// Single-step transfer in which the staying parties get a new call ID (`new_id`, or one
    /// the switch picks), as OpenScape Voice reports it: a TransferedEvent naming the old call
    /// (`primaryOldCall`) with each staying party's old and new connection
    /// (`transferredConnections`), then Delivered and Established at `to` under the new ID.
    /// Returns the new call ID.
    pub(crate) fn call_transfer_new_id(
        &mut self,
        call_id: &str,
        from: &str,
        to: &str,
        new_id: Option<String>,
    ) -> Result<String, SimError> {
        let i = self.check_move(call_id, from, to)?;
        let new_id = self.fresh_call_id(new_id)?;
        let mut call = self
            .calls
            .remove(call_id)
            .ok_or_else(|| SimError::unknown_call(call_id))?;
        call.parties.remove(i);
        let staying = call.devices();
        let calling = call.other_party(to);
        let changes: Vec<ConnectionChange> = staying
            .iter()
            .map(|d| ConnectionChange {
                old: Some(Connection::new(call_id, d)),
                new: Some(Connection::new(&new_id, d)),
            })
            .collect();
        let mut recipients = staying;
        recipients.push(from.to_owned());
        recipients.push(to.to_owned());
        let connection = Connection::new(call_id, from);
        self.notify(&recipients, |x| {
            Message::Call(CallEvent {
                kind: CallEventKind::Transferred,
                cross_ref: Some(x),
                connection: connection.clone(),
                device: Some(from.to_owned()),
                other_device: Some(to.to_owned()),
                cause: Some(CallEventKind::Transferred.default_cause().to_owned()),
                changes: changes.clone(),
            })
        });
        self.calls.insert(new_id.clone(), call);
        self.join(&new_id, to, &calling, true)?;
        Ok(new_id)
    }

    /// Diversion: the call leaves `from` (ringing, typically) for `to`, where it rings.
    pub(crate) fn call_divert(
        &mut self,
        call_id: &str,
        from: &str,
        to: &str,
    ) -> Result<(), SimError> {
        self.call_move(call_id, from, to, CallEventKind::Diverted, false)
    }

    /// The call leaves `from` for `to`: `kind` (transfer or diversion) is reported to the
    /// parties, `from` and `to`, then `to` joins (answering at once when `answered`).
    fn call_move(
        &mut self,
        call_id: &str,
        from: &str,
        to: &str,
        kind: CallEventKind,
        answered: bool,
    ) -> Result<(), SimError> {
        let i = self.check_move(call_id, from, to)?;
        let call = self.call_mut(call_id)?;
        call.parties.remove(i);
        let mut recipients = call.devices();
        let calling = call.other_party(to);
        recipients.push(from.to_owned());
        recipients.push(to.to_owned());
        self.notify_call(
            &recipients,
            kind,
            Connection::new(call_id, from),
            Some(from),
            Some(to),
        );
        self.join(call_id, to, &calling, answered)
    }

    /// Hang up one party (the call ends when fewer than two remain), or clear the whole call.
    pub(crate) fn call_clear(
        &mut self,
        call_id: &str,
        device: Option<&str>,
    ) -> Result<(), SimError> {
        let call = self.call(call_id)?;
        let all = call.devices();
        let mut present = all.clone();
        if let Some(d) = device {
            if call.party(d).is_none() {
                return Err(SimError::not_a_party(call_id, d));
            }
            self.notify_call(
                &present,
                CallEventKind::ConnectionCleared,
                Connection::new(call_id, d),
                Some(d),
                None,
            );
            present.retain(|p| p != d);
            if present.len() >= 2 {
                if let Ok(call) = self.call_mut(call_id) {
                    call.parties.retain(|p| p.device != d);
                }
                return Ok(());
            }
        }
        while let Some(p) = present.first().cloned() {
            self.notify_call(
                &present,
                CallEventKind::ConnectionCleared,
                Connection::new(call_id, &p),
                Some(&p),
                None,
            );
            present.remove(0);
        }
        self.notify_call(
            &all,
            CallEventKind::CallCleared,
            Connection {
                call_id: Some(call_id.to_owned()),
                device_id: None,
            },
            None,
            None,
        );
        self.calls.remove(call_id);
        Ok(())
    }

    /// Set an account code on a call at a device (from a link or from the phone).
    pub(crate) fn set_account_code(
        &mut self,
        call_id: &str,
        device: &str,
        code: &str,
    ) -> Result<(), SimError> {
        let call = self.call_mut(call_id)?;
        if call.party(device).is_none() {
            return Err(SimError::not_a_party(call_id, device));
        }
        if code.is_empty() {
            return Err(SimError::new(
                "operation",
                "invalidAccountCode",
                400,
                "the account code is empty",
            ));
        }
        call.account_code = Some(code.to_owned());
        Ok(())
    }

    /// Report an account code on the monitors of every device of the call.
    pub(crate) fn emit_account_code(&self, call_id: &str, device: &str, code: &str) {
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        let devices = call.devices();
        let v = self.vendor;
        self.notify(&devices, |x| Message::CallInformation {
            cross_ref: Some(x),
            connection: Connection::new(call_id, v.connection_device(device)),
            device: Some(v.device(device)),
            account_code: Some(code.to_owned()),
        });
    }

    // ----- faults ------------------------------------------------------------------------

    /// Turn the stall fault on or off.
    pub(crate) fn set_stall(&mut self, on: bool) {
        self.faults.stall = on;
    }

    /// Set a fixed delay (0 disables it).
    pub(crate) fn set_delay_fixed(&mut self, ms: u64) {
        self.faults.delay = if ms == 0 {
            DelayFault::Off
        } else {
            DelayFault::Fixed(ms)
        };
    }

    /// Set a random delay in `[min, max]` ms drawn from a seeded generator.
    pub(crate) fn set_delay_random(&mut self, min: u64, max: u64, seed: u64) {
        self.faults.delay = DelayFault::Random {
            min,
            max,
            seed,
            rng: Box::new(StdRng::seed_from_u64(seed)),
        };
    }

    /// Refuse the next `count` (matching) requests with `error`; 0 disables.
    pub(crate) fn set_reject(&mut self, count: u64, error: CstaError, request: Option<String>) {
        self.faults.reject = (count > 0).then_some(RejectFault {
            remaining: count,
            error,
            request,
        });
    }

    /// Set the status answered to `RequestSystemStatus`.
    pub(crate) fn set_status(&mut self, status: String) {
        // A connection registered for status reports (SystemRegister) hears of the change.
        for &conn in &self.registered {
            let report = Message::SystemStatus {
                status: Some(status.clone()),
            };
            self.send(conn, InvokeId::ZERO, &report);
        }
        self.faults.status = status;
    }

    /// Send `SystemStatus` (with `status`, or self-closing without) on every connection;
    /// returns how many.
    pub(crate) fn tell_status(&self, status: Option<String>) -> usize {
        let report = Message::SystemStatus { status };
        for &conn in self.conns.keys() {
            self.send(conn, InvokeId::ZERO, &report);
        }
        self.conns.len()
    }

    /// Reset every fault: links up, no stall, delay or reject, status `normal`.
    pub(crate) fn clear_faults(&mut self) {
        self.faults = Faults::default();
        for l in &mut self.links {
            l.up = true;
        }
    }

    // ----- reporting ---------------------------------------------------------------------

    /// The fault modes as JSON.
    pub(crate) fn faults_json(&self) -> Value {
        let f = &self.faults;
        let delay = match &f.delay {
            DelayFault::Off => Value::Null,
            DelayFault::Fixed(ms) => json!({ "ms": ms }),
            DelayFault::Random { min, max, seed, .. } => {
                json!({ "minMs": min, "maxMs": max, "seed": seed })
            }
        };
        let reject = f.reject.as_ref().map(|r| {
            json!({
                "remaining": r.remaining,
                "category": r.error.category,
                "value": r.error.value,
                "request": r.request,
            })
        });
        let down: Vec<usize> = self
            .links
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.up)
            .map(|(i, _)| i)
            .collect();
        json!({
            "stall": f.stall,
            "delay": delay,
            "reject": reject,
            "status": f.status,
            "linksDown": down,
        })
    }

    /// The whole state as JSON, for `GET /state`.
    pub(crate) fn state_json(&self) -> Value {
        let associations: Vec<Value> = self
            .associations
            .iter()
            .map(|(g, h)| json!({ "guest": g, "host": h }))
            .collect();
        let monitors: Vec<Value> = self
            .monitor_order
            .values()
            .filter_map(|x| self.monitors.get(x).map(|m| (x, m)))
            .map(|(x, m)| json!({ "crossRef": x, "device": m.device, "link": m.link }))
            .collect();
        let mut calls: Vec<(&String, &Call)> = self.calls.iter().collect();
        calls.sort_by_key(|(_, c)| c.seq);
        let calls: Vec<Value> = calls
            .into_iter()
            .map(|(id, c)| {
                json!({
                    "callId": id,
                    "devices": c.devices(),
                    "states": c.parties.iter().map(|p| p.state.name()).collect::<Vec<_>>(),
                    "accountCode": c.account_code,
                })
            })
            .collect();
        let links: Vec<Value> = self
            .links
            .iter()
            .enumerate()
            .map(|(i, l)| {
                json!({
                    "address": l.address.to_string(),
                    "up": l.up,
                    "connections": self.conns.values().filter(|c| c.link == i).count(),
                    "requests": l.requests,
                })
            })
            .collect();
        json!({
            "name": self.name,
            "associations": associations,
            "monitors": monitors,
            "calls": calls,
            "links": links,
            "decodeErrors": self.decode_errors,
            "unknownMonitorStops": self.unknown_monitor_stops,
            "staleRequests": self.stale_requests,
            "faults": self.faults_json(),
            "vendor": self.vendor.name(),
            "sessions": self.sessions.json(),
        })
    }

    /// The call's JSON, as returned by the call endpoints.
    pub(crate) fn call_json(&self, call_id: &str) -> Value {
        match self.calls.get(call_id) {
            Some(c) => json!({
                "callId": call_id,
                "devices": c.devices(),
                "accountCode": c.account_code,
            }),
            None => json!({ "callId": call_id, "devices": [], "cleared": true }),
        }
    }
}
