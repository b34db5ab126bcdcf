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
pub use outbox::{Entry, Kind, ReadBack, Replay};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::mpsc;
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
/// signals that end the connection.
#[derive(Debug, Default)]
pub struct Connection {
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

/// A session's queue: written without a lock while a connection is attached (the hot path of
/// fan-out), and a lock for everything else (see [`outbox`]).
#[derive(Debug)]
struct LocalSink {
    /// The session's queue, the same for its whole life (`client-queue` messages).
    tx: mpsc::Sender<Entry>,
    /// A connection is attached and reading the queue.
    attached: AtomicBool,
    /// The session is over (closed, or its linger expired): the router drops it.
    ended: AtomicBool,
    parked: Mutex<Parked>,
}

/// What a session holds apart from its queue's sending side.
#[derive(Debug)]
struct Parked {
    /// The queue's receiving side while no connection holds it.
    rx: Option<mpsc::Receiver<Entry>>,
    /// What the session keeps for a resume (boxed: the hot path never touches it).
    outbox: Box<outbox::Outbox>,
    /// The attached connection's signals.
    conn: Option<Arc<Connection>>,
    /// Replies that came while no connection was attached (not kept).
    replies_away: usize,
    /// Messages pushed after the queue overflowed, until the connection let go of the queue:
    /// they come after everything in it (at most as many as the session keeps).
    overflow: std::collections::VecDeque<Entry>,
}

impl LocalSink {
    fn lock(&self) -> MutexGuard<'_, Parked> {
        self.parked.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Parked {
    /// Keep what waits in the parked queue, then `entry`; `true` if `entry` was kept.
    fn keep_after_queue(&mut self, entry: Entry) -> bool {
        if let Some(rx) = self.rx.as_mut() {
            while let Ok(queued) = rx.try_recv() {
                self.outbox.keep(queued);
            }
        }
        self.outbox.keep(entry)
    }
}

/// How a connection resumes a session.
#[derive(Debug)]
pub enum Resumed {
    /// The session's queue, and what to write before anything from it: the opening messages,
    /// the dropped registrations' notices, the replayed events.
    Attached {
        /// The queue's receiving side.
        rx: mpsc::Receiver<Entry>,
        /// Written first.
        first: Vec<Entry>,
        /// What was replayed.
        plan: Replay,
    },
    /// Another connection holds the queue: it was told to let go (4009; given here the
    /// first time); try again shortly.
    Busy(Option<Arc<Connection>>),
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
    /// A session of this node with its first connection `conn` attached: the handle
    /// (application and access are set at `RequestOpen`), and the queue's receiving side for
    /// the connection. At most `queue` messages wait for the connection; the last `retain`
    /// events are kept for a resume (0: none).
    pub fn local(
        id: u64,
        queue: usize,
        retain: usize,
        conn: Arc<Connection>,
    ) -> (ClientInner, mpsc::Receiver<Entry>) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let inner = ClientInner {
            id,
            application: Arc::from(""),
            access: Access::Control,
            sink: Sink::Local(LocalSink {
                tx,
                attached: AtomicBool::new(true),
                ended: AtomicBool::new(false),
                parked: Mutex::new(Parked {
                    rx: None,
                    outbox: Box::new(outbox::Outbox::new(retain)),
                    replies_away: 0,
                    conn: Some(conn),
                    overflow: std::collections::VecDeque::new(),
                }),
            }),
        };
        (inner, rx)
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
        let sink = match &self.sink {
            Sink::Local(sink) => sink,
            Sink::Remote { node, session } => {
                return node.to_session(session, text, matches!(kind, Kind::Reply))
            }
        };
        let entry = Entry { text, kind };
        if sink.attached.load(Ordering::Acquire) {
            // The hot path: no lock.
            let entry = match sink.tx.try_send(entry) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Full(entry))
                | Err(mpsc::error::TrySendError::Closed(entry)) => entry,
            };
            // Too slow: the connection is closed with 4008; this and what follows is kept
            // after what the queue holds.
            let mut parked = sink.lock();
            if sink.attached.swap(false, Ordering::AcqRel) {
                if let Some(c) = &parked.conn {
                    c.slow.cancel();
                }
            }
            return park(&mut parked, entry);
        }
        let mut parked = sink.lock();
        if sink.attached.load(Ordering::Acquire) {
            // A connection was attached meanwhile (a resume): it takes it.
            drop(parked);
            return sink.tx.try_send(entry).is_ok();
        }
        park(&mut parked, entry);
        false
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

    /// The connection took `batch` from the queue to write it: its events are kept (one lock
    /// for the batch).
    pub fn taken(&self, batch: &[Entry]) {
        let Sink::Local(sink) = &self.sink else {
            return;
        };
        if !batch.iter().any(|e| matches!(e.kind, Kind::Event { .. })) {
            return;
        }
        let mut parked = sink.lock();
        for e in batch {
            if let Kind::Event { switch, seq } = e.kind {
                parked.outbox.keep_event(switch, seq, e.text.clone());
            }
        }
    }

    /// The connection `conn` went, giving the queue back: the session keeps what it had not
    /// written (`unwritten`, taken from the queue or given at a resume, then what the queue
    /// holds). `false` when it was no longer attached (another connection took the session).
    pub fn detach(
        &self,
        conn: &Arc<Connection>,
        unwritten: Vec<Entry>,
        mut rx: mpsc::Receiver<Entry>,
    ) -> bool {
        let Sink::Local(sink) = &self.sink else {
            return false;
        };
        let mut parked = sink.lock();
        let ours = parked.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn));
        if ours {
            parked.conn = None;
        }
        sink.attached.store(false, Ordering::Release);
        for entry in unwritten {
            parked.outbox.keep(entry);
        }
        while let Ok(entry) = rx.try_recv() {
            parked.outbox.keep(entry);
        }
        for entry in std::mem::take(&mut parked.overflow) {
            parked.outbox.keep(entry);
        }
        parked.rx = Some(rx);
        ours
    }

    /// Connection `conn` resumes the session. When another connection holds the queue it is
    /// told to let go (4009) and [`Resumed::Busy`] says to try again shortly. Else `opening`
    /// makes the messages that come first (it is given the replay's plan); then come the
    /// dropped registrations' notices and the kept events above `last`, then live ones.
    pub fn resume(
        &self,
        conn: &Arc<Connection>,
        last: impl Fn(u16) -> u64,
        opening: impl FnOnce(&Replay) -> Vec<SharedText>,
    ) -> Resumed {
        let Sink::Local(sink) = &self.sink else {
            return Resumed::Busy(None);
        };
        let mut parked = sink.lock();
        let Some(mut rx) = parked.rx.take() else {
            let older = parked.conn.take();
            if let Some(old) = &older {
                old.taken.cancel();
            }
            sink.attached.store(false, Ordering::Release);
            return Resumed::Busy(older);
        };
        while let Ok(entry) = rx.try_recv() {
            parked.outbox.keep(entry);
        }
        let plan = parked.outbox.plan(&last);
        let mut first: Vec<Entry> = opening(&plan)
            .into_iter()
            .map(|text| Entry {
                text,
                kind: Kind::Notice,
            })
            .collect();
        first.extend(parked.outbox.resume(&last));
        parked.conn = Some(conn.clone());
        sink.attached.store(true, Ordering::Release);
        Resumed::Attached { rx, first, plan }
    }

    /// The session is over: nothing is kept, and the router drops it.
    pub fn end(&self) {
        if let Sink::Local(sink) = &self.sink {
            sink.ended.store(true, Ordering::Release);
            sink.attached.store(false, Ordering::Release);
            let mut parked = sink.lock();
            parked.conn = None;
            parked.rx = None;
            parked.overflow = std::collections::VecDeque::new();
            *parked.outbox = outbox::Outbox::new(0);
        }
    }

    /// How many replies came while no connection was attached (a session being resumed from
    /// another node registers its DNs before a connection takes it).
    pub fn replies_away(&self) -> usize {
        match &self.sink {
            Sink::Local(sink) => sink.lock().replies_away,
            Sink::Remote { .. } => 0,
        }
    }

    /// Add events of switch number `switch` read back from the cluster's event stream, and
    /// notices to send just before some of them (`None`: it could not be read, a gap), to
    /// those kept, in `eventSeq` order, each once.
    pub fn merge_kept(&self, switch: u16, events: Option<ReadBack>) {
        if let Sink::Local(sink) = &self.sink {
            let mut parked = sink.lock();
            match events {
                Some(read) => parked.outbox.merge(switch, read),
                None => parked.outbox.evicted(switch, u64::MAX),
            }
        }
    }

    /// What a resume with `last` (a switch's `lastEventSeq`) would replay now.
    pub fn plan(&self, last: impl Fn(u16) -> u64) -> Replay {
        match &self.sink {
            Sink::Local(sink) => sink.lock().outbox.plan(last),
            Sink::Remote { .. } => Replay::default(),
        }
    }

    /// Keep up to `factor` times as many events until the next resume (a session resumed
    /// from another node, whose replay is read back from the event stream).
    pub fn widen_kept(&self, factor: usize) {
        if let Sink::Local(sink) = &self.sink {
            sink.lock().outbox.widen(factor);
        }
    }

    /// The session was resumed on another node: the connection attached here, if any, is
    /// closed with 4009.
    pub fn take_away(&self) {
        if let Sink::Local(sink) = &self.sink {
            if let Some(c) = &sink.lock().conn {
                c.taken.cancel();
            }
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

/// Keep `entry` for a session whose connection is gone or going: after what its queue holds
/// when the queue is parked, else (the connection still holds it) in the overflow that
/// follows it. `false`: nobody took it now.
fn park(parked: &mut Parked, entry: Entry) -> bool {
    if entry.kind == Kind::Reply {
        parked.replies_away += 1;
    }
    if parked.rx.is_some() {
        parked.keep_after_queue(entry);
        return false;
    }
    if !matches!(entry.kind, Kind::Event { .. } | Kind::Dropped) {
        return false;
    }
    if parked.overflow.len() >= parked.outbox.retain().max(1) {
        // More than the session keeps: the oldest would go anyway.
        if let Some(Entry {
            kind: Kind::Event { switch, seq },
            ..
        }) = parked.overflow.pop_front()
        {
            parked.outbox.evicted(switch, seq);
        }
    }
    parked.overflow.push_back(entry);
    false
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
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ClientHandle>> {
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Change what clients are told of the links (`change`: a switch's link state) and send
    /// every open client the message it returns, in one step as far as [`Hub::join`] is
    /// concerned: a client opening meanwhile reads the state either before the change (and
    /// gets the message) or after it (and does not), so it never misses a change nor hears
    /// one twice. Link changes are rare: the clients are sent to with the lock held.
    pub fn announce(&self, change: impl FnOnce() -> Option<SharedText>) {
        let clients = self.lock();
        if let Some(text) = change() {
            for c in clients.values() {
                c.push(text.clone(), false);
            }
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
        self.lock().len()
    }

    /// Whether no client is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A client opened its session: `first` runs (it reads the link states the client is
    /// told first), then the client gets link events, with no [`Hub::announce`] in between.
    pub fn join<R>(&self, c: ClientHandle, first: impl FnOnce() -> R) -> R {
        let mut clients = self.lock();
        let r = first();
        clients.insert(c.id, c);
        r
    }

    /// The open client with this id.
    pub fn get(&self, id: u64) -> Option<ClientHandle> {
        self.lock().get(&id).cloned()
    }

    /// A client's session ended.
    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn local(id: u64, queue: usize) -> (ClientHandle, Arc<Connection>, mpsc::Receiver<Entry>) {
        let conn = Arc::new(Connection::default());
        let (inner, rx) = ClientInner::local(id, queue, queue, conn.clone());
        (ClientHandle::new(inner), conn, rx)
    }

    /// What the connection writes now (kept as it takes it).
    fn taken(c: &ClientHandle, rx: &mut mpsc::Receiver<Entry>) -> Vec<String> {
        let mut batch = Vec::new();
        while let Ok(e) = rx.try_recv() {
            batch.push(e);
        }
        c.taken(&batch);
        batch.into_iter().map(|e| e.text.to_string()).collect()
    }

    #[test]
    fn a_full_queue_marks_the_connection_slow_and_keeps_what_follows() {
        let (client, conn, rx) = local(1, 2);
        assert!(client.push("a".into(), false));
        assert!(client.event(0, 1, "e1".into()));
        assert!(!conn.slow.is_cancelled());
        assert!(!client.event(0, 2, "e2".into()), "the third does not fit");
        assert!(conn.slow.is_cancelled());
        assert!(client.is_open(), "the session lingers, keeping its events");
        assert!(!client.reply("r".into()), "a reply is not kept");
        assert!(client.detach(&conn, Vec::new(), rx));
        assert_eq!(client.kept(), 2, "e1 from the queue, then e2");
        client.end();
        assert!(!client.is_open());
        assert!(!client.push("d".into(), false), "gone");
    }

    #[test]
    fn a_resume_takes_the_session_over_from_the_older_connection() {
        let (client, old, mut rx) = local(1, 8);
        client.event(0, 1, "e1".into());
        client.event(0, 2, "e2".into());
        assert_eq!(taken(&client, &mut rx), ["e1", "e2"]);
        client.event(0, 3, "e3".into());
        let new = Arc::new(Connection::default());
        let opening = |p: &Replay| vec![format!("open {}", p.replayed).into()];
        assert!(matches!(
            client.resume(&new, |_| 1, opening),
            Resumed::Busy(Some(_))
        ));
        assert!(old.taken.is_cancelled());
        // Pushed while the old connection lets go: after what its queue holds.
        client.event(0, 4, "e4".into());
        assert!(
            !client.detach(&old, Vec::new(), rx),
            "no longer its session"
        );
        let (mut rx, first, plan) = match client.resume(&new, |_| 1, opening) {
            Resumed::Attached { rx, first, plan } => (rx, first, plan),
            Resumed::Busy(_) => return assert!(new.taken.is_cancelled(), "the queue is free"),
        };
        assert_eq!(plan.replayed, 3);
        let first: Vec<String> = first.into_iter().map(|e| e.text.to_string()).collect();
        assert_eq!(first, ["open 3", "e2", "e3", "e4"]);
        client.event(0, 5, "e5".into());
        assert_eq!(taken(&client, &mut rx), ["e5"]);
    }

    #[test]
    fn the_hub_broadcasts_to_every_open_client() {
        let hub = Hub::default();
        let (a, _, mut ra) = local(1, 4);
        let (b, _, mut rb) = local(2, 4);
        hub.join(a.clone(), || ());
        hub.join(b.clone(), || ());
        hub.announce(|| Some("x".into()));
        hub.remove(1);
        hub.announce(|| Some("y".into()));
        hub.announce(|| None);
        assert_eq!(hub.len(), 1);
        assert_eq!(taken(&a, &mut ra), ["x"]);
        assert_eq!(taken(&b, &mut rb), ["x", "y"]);
    }

    /// Clients join while another thread flips a link's state: each hears the state it read
    /// on joining, then every later change once, so what it is told alternates.
    #[test]
    fn a_client_joining_during_link_changes_misses_none_and_hears_none_twice() {
        use std::sync::atomic::AtomicBool;
        let hub = Arc::new(Hub::default());
        let up = Arc::new(AtomicBool::new(false));
        let flipper = {
            let (hub, up) = (hub.clone(), up.clone());
            std::thread::spawn(move || {
                for _ in 0..20_000 {
                    hub.announce(|| {
                        let now = !up.load(Ordering::Relaxed);
                        up.store(now, Ordering::Relaxed);
                        Some(if now { "up" } else { "down" }.into())
                    });
                }
            })
        };
        let mut clients = Vec::new();
        for id in 0..200 {
            let (c, _, rx) = local(id, 30_000);
            let first = hub.join(c.clone(), || up.load(Ordering::Relaxed));
            clients.push((c, rx, first));
            std::thread::yield_now();
        }
        flipper.join().unwrap();
        for (c, mut rx, first) in clients {
            let mut state = first;
            for told in taken(&c, &mut rx) {
                assert_eq!(told == "up", !state, "client {} heard {told} twice", c.id);
                state = !state;
            }
            assert_eq!(
                state,
                up.load(Ordering::Relaxed),
                "client {} missed a change",
                c.id
            );
        }
    }
}
