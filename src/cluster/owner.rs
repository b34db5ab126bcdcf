//! The owner's side of the cluster for the switches it holds: the other nodes' clients as the
//! router sees them ([`NodeFlow`], a [`RemoteNode`]), the forwarded requests it takes, and
//! everything it publishes (flows, the event stream, link changes), always behind the
//! switch's [`Fence`].
//!
//! Publishing never waits: messages go through a bounded queue to one publisher task
//! ([`Publisher`]); a message the queue cannot take is dropped, and since its flow number was
//! used, the node it was for sees the hole and repairs it from the stream (or has its clients
//! reconnect). The link never waits for NATS.

use super::flow::{header, FlowCounter, FlowMessage, Kind};
use super::forward::{Forwarded, Op};
use super::keys::Subjects;
use super::proxy::Proxy;
use super::writer::RecordsWriter;
use crate::client::{ClientHandle, RemoteNode};
use crate::link::Fence;
use crate::protocol::{RegisterMode, SharedText};
use crate::router::messages::ToDn;
use crate::router::{ClusterHooks, SwitchCtx};
use async_nats::HeaderMap;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Messages the publisher may hold before it drops (a drop in a flow is a hole its receiver
/// repairs).
pub const PUBLISH_QUEUE: usize = 65_536;

/// One message to publish.
#[derive(Debug)]
pub struct Publish {
    /// Its subject.
    pub subject: String,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub payload: Bytes,
    /// To the event stream (JetStream) rather than core NATS.
    pub stream: bool,
    /// A flow's records ([`FlowMessage::encode`]): joined with the records queued next for
    /// the same subject into one NATS message.
    pub flow: bool,
    /// Published only while this fence is open (`None`: always; an answer that nothing was
    /// done needs no fence).
    pub fence: Option<Fence>,
}

/// The way to the publisher task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Publisher {
    tx: mpsc::Sender<Publish>,
    /// Messages dropped because the queue was full, and those already reported in the log.
    dropped: Arc<(AtomicU64, AtomicU64)>,
}

impl Publisher {
    /// Start the publisher task on the current runtime.
    pub fn start(
        client: async_nats::Client,
        jetstream: async_nats::jetstream::Context,
    ) -> Publisher {
        let (tx, mut rx) = mpsc::channel::<Publish>(PUBLISH_QUEUE);
        tokio::spawn(async move {
            let mut next = None;
            loop {
                let p = match next.take() {
                    Some(p) => p,
                    None => match rx.recv().await {
                        Some(p) => p,
                        None => break,
                    },
                };
                if p.fence.as_ref().is_some_and(|f| !f.check()) {
                    continue;
                }
                let p = if p.flow {
                    join_flow(p, &mut rx, &mut next)
                } else {
                    p
                };
                let sent = if p.stream {
                    // The stream's acknowledgement is not awaited: the flow carries the event
                    // live, the stream is for repairs and replays.
                    jetstream
                        .publish_with_headers(p.subject, p.headers, p.payload)
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string())
                } else {
                    client
                        .publish_with_headers(p.subject, p.headers, p.payload)
                        .await
                        .map_err(|e| e.to_string())
                };
                if let Err(e) = sent {
                    debug!("a cluster message was not published: {e}");
                }
            }
        });
        let dropped: Arc<(AtomicU64, AtomicU64)> = Arc::default();
        let weak = Arc::downgrade(&dropped);
        // At most one line a second: a full queue may drop thousands of messages a second.
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            while let Some(d) = weak.upgrade() {
                let (all, told) = (d.0.load(Ordering::Relaxed), d.1.load(Ordering::Relaxed));
                if all > told {
                    d.1.store(all, Ordering::Relaxed);
                    warn!(dropped = all - told, "the queue of messages to NATS was full ({PUBLISH_QUEUE}): messages were dropped, and the nodes they were for see a gap (NATS or this node is too slow for the load)");
                }
                drop(d);
                every.tick().await;
            }
        });
        Publisher { tx, dropped }
    }

    /// Queue a message; `false` when the queue is full (the message is dropped and counted).
    pub fn send(&self, p: Publish) -> bool {
        let sent = self.tx.try_send(p).is_ok();
        if !sent {
            self.dropped.0.fetch_add(1, Ordering::Relaxed);
        }
        sent
    }
}

/// The most bytes of flow records joined in one NATS message (NATS's own limit is 1 MiB).
const FLOW_BATCH: usize = 64 * 1024;

/// `first` (flow records) and the flow records queued right after it for the same subject,
/// as one message; the first other message met is left in `next`.
fn join_flow(
    first: Publish,
    rx: &mut mpsc::Receiver<Publish>,
    next: &mut Option<Publish>,
) -> Publish {
    let mut payload: Option<Vec<u8>> = None;
    while payload.as_ref().map_or(first.payload.len(), Vec::len) < FLOW_BATCH {
        let Ok(q) = rx.try_recv() else { break };
        if !q.flow || q.subject != first.subject {
            *next = Some(q);
            break;
        }
        if q.fence.as_ref().is_some_and(|f| !f.check()) {
            continue;
        }
        payload
            .get_or_insert_with(|| first.payload.to_vec())
            .extend_from_slice(&q.payload);
    }
    match payload {
        Some(p) => Publish {
            payload: Bytes::from(p),
            ..first
        },
        None => first,
    }
}

/// A link-state message of a switch's owner, as the other nodes read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkMessage {
    /// The switch.
    pub switch: String,
    /// The owner's epoch.
    pub epoch: u64,
    /// Whether the switch's link is up.
    pub up: bool,
    /// The active link.
    pub link: usize,
    /// Why it changed (a change only).
    pub reason: Option<String>,
    /// The periodic state rather than a change.
    pub state: bool,
}

impl LinkMessage {
    /// Read a link-state message from its headers.
    pub fn read(h: &HeaderMap) -> Option<LinkMessage> {
        let get = |k: &str| h.get(k).map(|v| v.as_str());
        Some(LinkMessage {
            switch: get(header::SWITCH)?.to_owned(),
            epoch: get(header::EPOCH)?.parse().ok()?,
            up: get(header::UP)? == "1",
            link: get(header::LINK)?.parse().ok()?,
            reason: get(header::REASON).map(str::to_owned),
            state: get(header::STATE).is_some(),
        })
    }
}

/// Another node as the owner of one switch reaches it: one ordered flow.
#[derive(Debug)]
pub struct NodeFlow {
    node_id: Arc<str>,
    switch: Arc<str>,
    epoch: u64,
    subject: String,
    counter: Mutex<FlowCounter>,
    publisher: Publisher,
    fence: Fence,
}

impl NodeFlow {
    /// Number and queue a message. Both under the counter's lock: numbered here but queued
    /// after another thread's later number (or its heartbeat saying where the flow stands),
    /// it would reach the receiver as a gap.
    fn send(&self, kind: Kind, text: SharedText) -> bool {
        let mut counter = self.counter.lock().unwrap_or_else(PoisonError::into_inner);
        let m = counter.next(&self.switch, self.epoch, kind, text);
        self.publish(m)
    }

    fn publish(&self, m: FlowMessage) -> bool {
        self.publisher.send(Publish {
            subject: self.subject.clone(),
            headers: HeaderMap::new(),
            payload: Bytes::from(m.encode()),
            stream: false,
            flow: true,
            fence: Some(self.fence.clone()),
        })
    }

    /// Send where the flow stands (so that a loss at its end is seen).
    pub fn heartbeat(&self) {
        let counter = self.counter.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = counter.heartbeat(&self.switch, self.epoch) {
            self.publish(m);
        }
    }
}

impl RemoteNode for NodeFlow {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn to_session(&self, session: &str, text: SharedText, reply: bool) -> bool {
        let kind = Kind::Session {
            session: Arc::from(session),
            reply,
        };
        self.send(kind, text)
    }

    fn event(&self, dn: &str, seq: u64, text: SharedText) -> bool {
        self.send(
            Kind::Event {
                dn: Arc::from(dn),
                seq,
            },
            text,
        )
    }

    /// Always: the sessions of a node that left the cluster (or paused) stay until they
    /// linger out (`session-linger`), like those of any disconnected client.
    fn is_open(&self) -> bool {
        true
    }
}

/// A client session of another node: (node id, session).
type SessionKey = (Arc<str>, Arc<str>);

/// A switch this node owns: its ownership (epoch, fence), the flows to the other nodes and the
/// handles of their clients' sessions.
pub struct Owned {
    /// The switch.
    pub switch: Arc<SwitchCtx>,
    /// The lease's epoch.
    pub epoch: u64,
    /// Open while the lease is renewed in time.
    pub fence: Fence,
    publisher: Publisher,
    subjects: Subjects,
    /// The switch's subject in the event stream (one string for every event).
    event_subject: String,
    flows: Mutex<HashMap<Arc<str>, Arc<NodeFlow>>>,
    clients: Mutex<HashMap<SessionKey, ClientHandle>>,
    /// Set when a planned hand-over begins: forwarded requests are refused from then on
    /// (their forwarder answers 54), while those already taken finish.
    closing: std::sync::atomic::AtomicBool,
}

impl Owned {
    /// The ownership of `switch` with `epoch`.
    pub fn new(
        switch: Arc<SwitchCtx>,
        epoch: u64,
        fence: Fence,
        publisher: Publisher,
        subjects: Subjects,
    ) -> Owned {
        Owned {
            event_subject: subjects.event(&switch.name),
            switch,
            epoch,
            fence,
            publisher,
            subjects,
            flows: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
            closing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A planned hand-over begins: take no more forwarded requests.
    pub fn close_to_requests(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// The flow to `node`.
    pub fn flow(&self, node: &Arc<str>) -> Arc<NodeFlow> {
        self.flows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(node.clone())
            .or_insert_with(|| {
                Arc::new(NodeFlow {
                    node_id: node.clone(),
                    switch: self.switch.name.clone(),
                    epoch: self.epoch,
                    subject: self.subjects.flow(node),
                    counter: Mutex::new(FlowCounter::default()),
                    publisher: self.publisher.clone(),
                    fence: self.fence.clone(),
                })
            })
            .clone()
    }

    /// The handle of session `session` of `node` (the same for every request of the session,
    /// so that the DN's actor knows it as one client).
    pub fn client(
        &self,
        node: &Arc<str>,
        session: &Arc<str>,
        application: &Arc<str>,
        access: crate::config::Access,
    ) -> ClientHandle {
        let flow = self.flow(node);
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((node.clone(), session.clone()))
            .or_insert_with(|| {
                ClientHandle::remote(
                    crate::client::next_client_id(),
                    application.clone(),
                    access,
                    flow,
                    session.clone(),
                )
            })
            .clone()
    }

    /// Forget a session's handle (it ended).
    pub fn forget_session(&self, node: &Arc<str>, session: &Arc<str>) {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(node.clone(), session.clone()));
    }

    /// Every flow's heartbeat.
    pub fn heartbeats(&self) {
        let flows: Vec<Arc<NodeFlow>> = self
            .flows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for f in flows {
            f.heartbeat();
        }
    }

    /// The links' state now, for the other nodes (sent every second, so that a node that
    /// missed a change catches up).
    pub fn link_state(&self, up: bool, link: usize) {
        let (subject, headers) = self.link_message(up, link, None, true);
        self.publisher.send(Publish {
            subject,
            headers,
            payload: Bytes::new(),
            stream: false,
            flow: false,
            fence: Some(self.fence.clone()),
        });
    }

    /// The subject and headers of a link-state message: a change (with its reason), or the
    /// periodic `state`.
    pub fn link_message(
        &self,
        up: bool,
        link: usize,
        reason: Option<&str>,
        state: bool,
    ) -> (String, HeaderMap) {
        let mut h = HeaderMap::new();
        h.insert(header::SWITCH, &*self.switch.name);
        h.insert(header::EPOCH, self.epoch.to_string());
        h.insert(header::UP, if up { "1" } else { "0" });
        h.insert(header::LINK, link.to_string());
        if let Some(reason) = reason {
            h.insert(header::REASON, reason);
        }
        if state {
            h.insert(header::STATE, "1");
        }
        (self.subjects.link(), h)
    }

    /// Take a forwarded request: `false` when it is not for this ownership (another epoch),
    /// the lease has lapsed or a hand-over has begun — then nothing was done.
    pub fn take(&self, f: Forwarded) -> bool {
        if f.epoch != self.epoch
            || !self.fence.check()
            || self.closing.load(std::sync::atomic::Ordering::Acquire)
        {
            return false;
        }
        let Some(shard) = self.switch.shard.get() else {
            return false;
        };
        let client = self.client(&f.node, &f.session, &f.application, f.access);
        if matches!(f.op, Op::Unregister { reference_id: None }) {
            self.forget_session(&f.node, &f.session);
        }
        let op = f.op.into_dn_op(client);
        shard.requests.do_send(ToDn { dn: f.dn, op });
        true
    }
}

impl Owned {
    /// An event delivered here: into the event stream.
    pub fn event(&self, dn: &str, seq: u64, text: &SharedText) {
        let mut h = HeaderMap::new();
        h.insert(header::SEQ, seq.to_string());
        h.insert(header::DN, dn);
        h.insert(header::EPOCH, self.epoch.to_string());
        self.publisher.send(Publish {
            subject: format!("{}.{}", self.event_subject, super::keys::encode(dn)),
            headers: h,
            payload: text.clone().into_bytes(),
            stream: true,
            flow: false,
            fence: Some(self.fence.clone()),
        });
    }

    /// The link state changed: tell the other nodes.
    pub fn link_changed(&self, up: bool, link: usize, reason: Option<&'static str>) {
        let (subject, headers) = self.link_message(up, link, reason, false);
        self.publisher.send(Publish {
            subject,
            headers,
            payload: Bytes::new(),
            stream: false,
            flow: false,
            // A link that went down is news even after the fence closed; an up link is not.
            fence: up.then(|| self.fence.clone()),
        });
    }
}

/// What a switch's shard tells the cluster, whoever owns the switch at the moment: installed
/// once per switch at start, it passes on to the ownership of the moment ([`Owned`]) and
/// records the registrations a new owner restores.
pub struct Hooks {
    switch: Arc<str>,
    node_id: Arc<str>,
    records: RecordsWriter,
    proxy: Arc<Proxy>,
    owned: RwLock<Option<Arc<Owned>>>,
}

impl Hooks {
    /// The hooks of `proxy`'s switch on node `node_id`.
    pub fn new(node_id: Arc<str>, records: RecordsWriter, proxy: Arc<Proxy>) -> Hooks {
        Hooks {
            switch: proxy.switch.name.clone(),
            node_id,
            records,
            proxy,
            owned: RwLock::new(None),
        }
    }

    /// The ownership of the moment (`None`: the switch is not owned here).
    pub fn owned(&self) -> Option<Arc<Owned>> {
        self.owned
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Set (or end) the ownership of the moment.
    pub fn set_owned(&self, owned: Option<Arc<Owned>>) {
        *self.owned.write().unwrap_or_else(PoisonError::into_inner) = owned;
    }

    /// The record key of a client: its node and session.
    fn session_of(&self, client: &ClientHandle) -> (Arc<str>, Arc<str>) {
        match client.remote_session() {
            Some((node, session)) => (Arc::from(node.node_id()), session.clone()),
            None => (self.node_id.clone(), Arc::from(client.id.to_string())),
        }
    }
}

impl ClusterHooks for Hooks {
    fn event(&self, dn: &str, seq: u64, text: &SharedText) {
        if let Some(o) = self.owned() {
            o.event(dn, seq, text);
        }
    }

    fn link_changed(&self, up: bool, link: usize, reason: Option<&'static str>) {
        if let Some(o) = self.owned() {
            o.link_changed(up, link, reason);
        }
    }

    fn registered(
        &self,
        dn: &Arc<str>,
        client: &ClientHandle,
        mode: RegisterMode,
        call_events: bool,
    ) {
        if self.owned().is_none() {
            return;
        }
        if client.remote_session().is_none() {
            self.proxy.local_registered(dn, client, call_events);
        }
        let (node, session) = self.session_of(client);
        self.records.put(
            &self.switch,
            dn,
            &node,
            &session,
            (mode, call_events),
            &client.application,
        );
    }

    fn unregistered(&self, dn: &Arc<str>, client: &ClientHandle) {
        if self.owned().is_none() {
            return;
        }
        if client.remote_session().is_none() {
            self.proxy.local_unregistered(dn, client);
        }
        let (node, session) = self.session_of(client);
        self.records.delete(&self.switch, dn, &node, &session);
    }
}
