//! The client outbox: how the router reaches a connected client without ever waiting for it.
//!
//! Every client has a bounded queue of messages ([`outbox`]) that its connection writes to
//! the WebSocket. Whoever has something for the client (the router shard fanning out an event,
//! an extension actor answering a request, the session itself) pushes onto that queue through
//! the client's [`ClientHandle`], and never waits: when the queue is full the client is too
//! slow, its connection is closed with 4008, and nobody else is slowed down. A session
//! outlives its connection for `session-linger`: its handle, its registrations and its last
//! events stay, so a new connection can resume it ([`ClientInner::resume`]). The
//! [`Hub`] knows every open client, for the messages that go to all of them (link events).
//!
//! An `EventError` is counted (`csta_router_errors_total`) here, where it is queued for its
//! client, not where its JSON is written.
//!
//! In a cluster, a client of another node that registered a DN of a switch owned here is a
//! remote client: its handle queues to that node ([`RemoteNode`]) instead of to a socket, and an
//! event goes once to each interested node, which hands it to its own clients.

pub mod outbox;

use crate::config::Access;
use crate::protocol::{self, ProtocolError, SharedText};
pub use outbox::{Entry, Kind, Replay};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A new client id, unique in the process (connections here and sessions of other nodes
/// alike).
pub fn next_client_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// How the router reaches a client. Cheap to clone (one reference count); pushing never waits.
///
/// A client connected here is a session: its handle stays the same across the connections
/// that resume it, so its registrations (held by the extension actors as handles) outlive a
/// connection for `session-linger`.
#[derive(Debug, Clone)]
pub struct ClientHandle(Arc<ClientInner>);

/// The parts of a client handle.
#[derive(Debug)]
pub struct ClientInner {
    /// Unique per session (per remote session, for a remote client) for the life of the
    /// process.
    pub id: u64,
    /// The application, as audited: the configured application whose token the client gave,
    /// or (with no `[[application]]` configured) the validated name from `RequestOpen`.
    pub application: Arc<str>,
    /// What the application may do.
    pub access: Access,
    sink: Sink,
}

/// Where a client's messages go.
#[derive(Debug)]
enum Sink {
    /// A session of this node: its outbox, and the connection attached to it, if any.
    Local(LocalSink),
    /// A session of another cluster node.
    Remote {
        node: Arc<dyn RemoteNode>,
        session: Arc<str>,
    },
}

/// One WebSocket connection of a session, as those who push to the session reach it: the
/// writer's wake-up, and the signals that end the connection.
#[derive(Debug, Default)]
pub struct Connection {
    /// Woken when the queue gets its first message.
    pub wake: Notify,
    /// Cancelled when the queue overflowed (4008).
    pub slow: CancellationToken,
    /// Cancelled when the client must reconnect (1013): something it should have received
    /// could not be delivered.
    pub again: CancellationToken,
    /// Cancelled when another connection resumed the session (4009).
    pub taken: CancellationToken,
    /// Cancelled when the connection writes nothing more but its close frame: a connection
    /// that took its session over waits for it before replaying.
    pub gone: CancellationToken,
}

/// A local session's outbox and its connection, under one lock: a push, a take and a resume
/// each see the queue and the connection together, so nothing falls between a connection
/// going and the next one resuming.
#[derive(Debug)]
struct LocalSink {
    state: Mutex<SinkState>,
    /// The session is over (closed, or its linger expired): the router drops it.
    ended: AtomicBool,
}

#[derive(Debug)]
struct SinkState {
    outbox: outbox::Outbox,
    conn: Option<Arc<Connection>>,
}

impl LocalSink {
    fn lock(&self) -> MutexGuard<'_, SinkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Another node of the cluster, as the owner of a switch reaches it: everything for that node
/// goes through one ordered flow, so its clients get replies and events in frame order.
pub trait RemoteNode: Send + Sync + std::fmt::Debug {
    /// The node's id.
    fn node_id(&self) -> &str;
    /// Queue a message for one session of the node (a reply when `reply`); `false` when the
    /// flow cannot take it.
    fn to_session(&self, session: &str, text: SharedText, reply: bool) -> bool;
    /// Queue an event of `dn` (switch sequence `seq`) to the node, once for all its sessions
    /// registered on the DN.
    fn event(&self, dn: &str, seq: u64, text: SharedText) -> bool;
    /// Whether the node is still there to take messages.
    fn is_open(&self) -> bool;
}

impl std::ops::Deref for ClientHandle {
    type Target = ClientInner;

    fn deref(&self) -> &ClientInner {
        &self.0
    }
}

impl ClientHandle {
    /// The handle of a client that has opened its session.
    pub fn new(inner: ClientInner) -> ClientHandle {
        ClientHandle(Arc::new(inner))
    }

    /// The handle of session `session` of another cluster node (`id` stable per session).
    pub fn remote(
        id: u64,
        application: Arc<str>,
        access: Access,
        node: Arc<dyn RemoteNode>,
        session: Arc<str>,
    ) -> ClientHandle {
        ClientHandle(Arc::new(ClientInner {
            id,
            application,
            access,
            sink: Sink::Remote { node, session },
        }))
    }
}

impl ClientInner {
    /// A session of this node with `conn` attached: at most `queue` messages waiting for the
    /// connection, and its last `retain` events kept for a resume (0: none). Application and
    /// access are set at `RequestOpen`.
    pub fn local(id: u64, queue: usize, retain: usize, conn: Arc<Connection>) -> ClientInner {
        ClientInner {
            id,
            application: Arc::from(""),
            access: Access::Control,
            sink: Sink::Local(LocalSink {
                state: Mutex::new(SinkState {
                    outbox: outbox::Outbox::new(queue, retain),
                    conn: Some(conn),
                }),
                ended: AtomicBool::new(false),
            }),
        }
    }

    /// Queue a message; `false` if no connection took it (the session lingers, or the client
    /// is too slow and is being closed).
    pub fn push(&self, text: SharedText, reply: bool) -> bool {
        let kind = if reply { Kind::Reply } else { Kind::Notice };
        self.push_kind(text, kind)
    }

    /// Queue an event of switch number `switch` with its `eventSeq`: kept for a resume.
    pub fn event(&self, switch: usize, seq: u64, text: SharedText) -> bool {
        match u16::try_from(switch) {
            Ok(switch) => self.push_kind(text, Kind::Event { switch, seq }),
            Err(_) => self.push_kind(text, Kind::Notice),
        }
    }

    /// Queue the `EventUnregistered` of a registration the router dropped: a lingering
    /// session gets it when it resumes.
    pub fn dropped(&self, text: SharedText) -> bool {
        self.push_kind(text, Kind::Dropped)
    }

    fn push_kind(&self, text: SharedText, kind: Kind) -> bool {
        match &self.sink {
            Sink::Local(sink) => {
                let mut st = sink.lock();
                match st.outbox.push(Entry { text, kind }) {
                    outbox::Pushed::Queued { wake } => {
                        if let (true, Some(c)) = (wake, &st.conn) {
                            c.wake.notify_one();
                        }
                        true
                    }
                    outbox::Pushed::Slow => {
                        if let Some(c) = st.conn.take() {
                            c.slow.cancel();
                        }
                        false
                    }
                    outbox::Pushed::Kept | outbox::Pushed::Discarded => false,
                }
            }
            Sink::Remote { node, session } => {
                node.to_session(session, text, matches!(kind, Kind::Reply))
            }
        }
    }

    /// The node and session of a remote client (`None` for a client connected here).
    pub fn remote_session(&self) -> Option<(&Arc<dyn RemoteNode>, &Arc<str>)> {
        match &self.sink {
            Sink::Remote { node, session } => Some((node, session)),
            Sink::Local(_) => None,
        }
    }

    /// The node of a remote client (`None` for a client connected here).
    pub fn remote_node(&self) -> Option<&Arc<dyn RemoteNode>> {
        match &self.sink {
            Sink::Remote { node, .. } => Some(node),
            Sink::Local(_) => None,
        }
    }

    /// Close the client with 1013 ("try again later"): something it should have received
    /// could not be delivered, and it must reconnect (and resume) to learn of it.
    pub fn close_to_reconnect(&self) {
        if let Sink::Local(sink) = &self.sink {
            if let Some(c) = &sink.lock().conn {
                c.again.cancel();
            }
        }
    }

    /// Queue a reply to one of the client's requests.
    pub fn reply(&self, text: SharedText) -> bool {
        self.push(text, true)
    }

    /// Queue an `EventError` reply, counted.
    pub fn reply_error(
        &self,
        e: &ProtocolError,
        switch: Option<&str>,
        extensions: Option<&Map<String, Value>>,
    ) -> bool {
        self.reply(error_text(e, switch, extensions))
    }

    /// Queue a reply the session makes itself (not to a request it forwarded, so it does not
    /// free a place in the in-flight limit).
    pub fn answer(&self, text: SharedText) -> bool {
        self.push(text, false)
    }

    /// Queue an `EventError` the session makes itself, counted.
    pub fn answer_error(&self, e: &ProtocolError, switch: Option<&str>) -> bool {
        self.answer(error_text(e, switch, None))
    }

    /// Whether the client is still there: a lingering session is (its registrations stand
    /// and its events are kept); one that ended is not.
    pub fn is_open(&self) -> bool {
        match &self.sink {
            Sink::Local(sink) => !sink.ended.load(Ordering::Acquire),
            Sink::Remote { node, .. } => node.is_open(),
        }
    }

    /// The connection `conn` takes up to `max` waiting messages into `out`; `false` when it is
    /// no longer attached (it was too slow, or another connection resumed the session).
    pub fn take(&self, conn: &Arc<Connection>, max: usize, out: &mut Vec<Entry>) -> bool {
        let Sink::Local(sink) = &self.sink else {
            return false;
        };
        let mut st = sink.lock();
        if !st.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            return false;
        }
        st.outbox.take(max, out);
        if st.outbox.waiting() > 0 {
            // More than one burst waits: the writer comes back for it without a push.
            conn.wake.notify_one();
        }
        true
    }

    /// The connection `conn` went: the session keeps its events for a resume. `false` when it
    /// was no longer attached.
    pub fn detach(&self, conn: &Arc<Connection>) -> bool {
        let Sink::Local(sink) = &self.sink else {
            return false;
        };
        let mut st = sink.lock();
        if !st.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            return false;
        }
        st.conn = None;
        st.outbox.detach();
        true
    }

    /// Connection `conn` resumes the session: the connection attached before, if any, is
    /// told it was taken over (4009) and detached; `opening` makes the messages that come
    /// first (it is given the replay's plan); then the kept events above `last`, then live
    /// ones. Returns the plan and the connection taken over, if any.
    pub fn resume(
        &self,
        conn: Arc<Connection>,
        last: impl Fn(u16) -> u64,
        opening: impl FnOnce(&Replay) -> Vec<SharedText>,
    ) -> (Replay, Option<Arc<Connection>>) {
        let Sink::Local(sink) = &self.sink else {
            return (Replay::default(), None);
        };
        let mut st = sink.lock();
        let taken = st.conn.take();
        if let Some(old) = &taken {
            old.taken.cancel();
            st.outbox.detach();
        }
        let plan = st.outbox.plan(&last);
        let first = opening(&plan);
        st.outbox.resume(&last, first);
        conn.wake.notify_one();
        st.conn = Some(conn);
        (plan, taken)
    }

    /// The session is over: nothing is kept, and the router drops it.
    pub fn end(&self) {
        if let Sink::Local(sink) = &self.sink {
            sink.ended.store(true, Ordering::Release);
            let mut st = sink.lock();
            st.conn = None;
            st.outbox = outbox::Outbox::new(1, 0);
            st.outbox.detach();
        }
    }

    /// How many events the session keeps (a local one; 0 for a remote one).
    pub fn kept(&self) -> usize {
        match &self.sink {
            Sink::Local(sink) => sink.lock().outbox.kept(),
            Sink::Remote { .. } => 0,
        }
    }
}

/// The `EventError` for `e`, counted as sent (`csta_router_errors_total`): for errors queued
/// through another path than [`ClientInner::reply_error`] (the ordered fan-out of a switch).
pub fn error_text(
    e: &ProtocolError,
    switch: Option<&str>,
    extensions: Option<&Map<String, Value>>,
) -> SharedText {
    crate::metrics::error_sent(switch, e.code);
    protocol::event_error(e, switch, extensions)
}

/// Every open client, for the messages that go to all clients (link events).
#[derive(Default)]
pub struct Hub {
    clients: Mutex<HashMap<u64, ClientHandle>>,
}

impl Hub {
    fn all(&self) -> Vec<ClientHandle> {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Send one message to every open client.
    pub fn broadcast(&self, text: SharedText) {
        for c in self.all() {
            c.push(text.clone(), false);
        }
    }

    /// Close every client with 1013 (a clustered node that lost NATS: they reconnect to
    /// another node).
    pub fn close_all_to_reconnect(&self) {
        for c in self.all() {
            c.close_to_reconnect();
        }
    }

    /// How many clients are open.
    pub fn len(&self) -> usize {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no client is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A client opened its session: it gets link events from now on.
    pub fn add(&self, c: ClientHandle) {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(c.id, c);
    }

    /// The open client with this id.
    pub fn get(&self, id: u64) -> Option<ClientHandle> {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    /// A client's session ended.
    pub fn remove(&self, id: u64) {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn local(id: u64, queue: usize) -> (ClientHandle, Arc<Connection>) {
        let conn = Arc::new(Connection::default());
        let inner = ClientInner::local(id, queue, queue, conn.clone());
        (ClientHandle::new(inner), conn)
    }

    fn taken(c: &ClientHandle, conn: &Arc<Connection>) -> Vec<(String, Kind)> {
        let mut out = Vec::new();
        c.take(conn, usize::MAX, &mut out);
        out.into_iter()
            .map(|e| (e.text.to_string(), e.kind))
            .collect()
    }

    #[test]
    fn a_full_outbox_marks_the_connection_slow_and_never_blocks() {
        let (client, conn) = local(1, 2);
        assert!(client.push("a".into(), false));
        assert!(client.reply("b".into()));
        assert!(!conn.slow.is_cancelled());
        assert!(!client.event(0, 1, "c".into()), "the third does not fit");
        assert!(conn.slow.is_cancelled());
        assert!(client.is_open(), "the session lingers, keeping its events");
        assert!(
            taken(&client, &conn).is_empty(),
            "the connection is detached"
        );
        assert_eq!(client.kept(), 1);
        client.end();
        assert!(!client.is_open());
        assert!(!client.push("d".into(), false), "gone");
    }

    #[test]
    fn a_resume_takes_the_session_over_from_the_older_connection() {
        let (client, old) = local(1, 8);
        client.event(0, 1, "e1".into());
        client.event(0, 2, "e2".into());
        assert_eq!(taken(&client, &old).len(), 2);
        let new = Arc::new(Connection::default());
        let (plan, was_taken) = client.resume(
            new.clone(),
            |_| 1,
            |p| vec![format!("open {}", p.replayed).into()],
        );
        assert!(was_taken.is_some_and(|c| Arc::ptr_eq(&c, &old)) && old.taken.is_cancelled());
        assert_eq!(plan.replayed, 1);
        assert!(!client.detach(&old), "the older one is no longer attached");
        client.event(0, 3, "e3".into());
        let got: Vec<String> = taken(&client, &new).into_iter().map(|(t, _)| t).collect();
        assert_eq!(got, ["open 1", "e2", "e3"]);
    }

    #[test]
    fn the_hub_broadcasts_to_every_open_client() {
        let hub = Hub::default();
        let (a, ca) = local(1, 4);
        let (b, cb) = local(2, 4);
        hub.add(a.clone());
        hub.add(b.clone());
        hub.broadcast("x".into());
        hub.remove(1);
        hub.broadcast("y".into());
        assert_eq!(hub.len(), 1);
        assert_eq!(taken(&a, &ca), [("x".to_owned(), Kind::Notice)]);
        let got: Vec<String> = taken(&b, &cb).into_iter().map(|(t, _)| t).collect();
        assert_eq!(got, ["x", "y"]);
    }
}
