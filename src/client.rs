//! The client outbox: how the router reaches a connected client without ever waiting for it.
//!
//! Every client has a bounded queue of messages ([`Queued`]) that its session task writes to
//! the WebSocket. Whoever has something for the client (the router shard fanning out an event,
//! an extension actor answering a request, the session itself) pushes onto that queue through
//! the client's [`ClientHandle`], and never waits: when the queue is full the client is too
//! slow, its session is told to close it with 4008, and nobody else is slowed down. The
//! [`Hub`] knows every open client, for the messages that go to all of them (link events).
//!
//! An `EventError` is counted (`csta_router_errors_total`) here, where it is queued for its
//! client, not where its JSON is written.
//!
//! In a cluster, a client of another node that registered a DN of a switch owned here is a
//! remote client: its handle queues to that node ([`RemoteNode`]) instead of to a socket, and an
//! event goes once to each interested node, which hands it to its own clients.

use crate::config::Access;
use crate::protocol::{self, ProtocolError, SharedText};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A new client id, unique in the process (connections here and sessions of other nodes
/// alike).
pub fn next_client_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// One message queued for a client.
#[derive(Debug, Clone)]
pub struct Queued {
    /// The serialized message (shared with the other recipients of the same event).
    pub text: SharedText,
    /// Whether this answers one of the client's requests (frees a place in its in-flight limit).
    pub reply: bool,
}

/// How the router reaches a client. Cheap to clone (one reference count); pushing never waits.
#[derive(Debug, Clone)]
pub struct ClientHandle(Arc<ClientInner>);

/// The parts of a client handle.
#[derive(Debug)]
pub struct ClientInner {
    /// Unique per connection (per remote session, for a remote client) for the life of the
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
    /// A client connected here: its bounded queue, the signal that it is too slow, and the
    /// signal that it must reconnect (1013).
    Local {
        tx: mpsc::Sender<Queued>,
        slow: CancellationToken,
        again: CancellationToken,
    },
    /// A session of another cluster node.
    Remote {
        node: Arc<dyn RemoteNode>,
        session: Arc<str>,
    },
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

/// A client's outbox as its session sees it: the queue to write from, the signal that the
/// client is too slow (a push found the queue full), and the signal that it must reconnect
/// (closed with 1013: something it should have received could not be delivered).
#[derive(Debug)]
pub struct Outbox {
    /// The queued messages.
    pub rx: mpsc::Receiver<Queued>,
    /// Cancelled when the queue overflowed.
    pub slow: CancellationToken,
    /// Cancelled when the client must reconnect.
    pub again: CancellationToken,
}

impl ClientInner {
    /// A client's outbox of `capacity` messages: the inner handle (application and access
    /// are set at `RequestOpen`), the queue its session writes from, and the signal that the
    /// client is too slow (cancelled when a push finds the queue full).
    pub fn outbox(id: u64, capacity: usize) -> (ClientInner, Outbox) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let (slow, again) = (CancellationToken::new(), CancellationToken::new());
        let inner = ClientInner {
            id,
            application: Arc::from(""),
            access: Access::Control,
            sink: Sink::Local {
                tx,
                slow: slow.clone(),
                again: again.clone(),
            },
        };
        (inner, Outbox { rx, slow, again })
    }

    /// Queue a message; `false` if the client is gone or too slow (it is then being closed).
    pub fn push(&self, text: SharedText, reply: bool) -> bool {
        match &self.sink {
            Sink::Local { tx, slow, .. } => match tx.try_send(Queued { text, reply }) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    slow.cancel();
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            },
            Sink::Remote { node, session } => node.to_session(session, text, reply),
        }
    }

    /// The node and session of a remote client (`None` for a client connected here).
    pub fn remote_session(&self) -> Option<(&Arc<dyn RemoteNode>, &Arc<str>)> {
        match &self.sink {
            Sink::Remote { node, session } => Some((node, session)),
            Sink::Local { .. } => None,
        }
    }

    /// The node of a remote client (`None` for a client connected here).
    pub fn remote_node(&self) -> Option<&Arc<dyn RemoteNode>> {
        match &self.sink {
            Sink::Remote { node, .. } => Some(node),
            Sink::Local { .. } => None,
        }
    }

    /// Close the client with 1013 ("try again later"): something it should have received
    /// could not be delivered, and it must reconnect (and resume) to learn of it.
    pub fn close_to_reconnect(&self) {
        if let Sink::Local { again, .. } = &self.sink {
            again.cancel();
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

    /// Whether the client is still there.
    pub fn is_open(&self) -> bool {
        match &self.sink {
            Sink::Local { tx, slow, again } => {
                !tx.is_closed() && !slow.is_cancelled() && !again.is_cancelled()
            }
            Sink::Remote { node, .. } => node.is_open(),
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

    #[test]
    fn a_full_outbox_marks_the_client_slow_and_never_blocks() {
        let (inner, Outbox { mut rx, slow, .. }) = ClientInner::outbox(1, 2);
        let client = ClientHandle::new(inner);
        assert!(client.push("a".into(), false));
        assert!(client.reply("b".into()));
        assert!(!slow.is_cancelled());
        assert!(!client.push("c".into(), false), "the third does not fit");
        assert!(slow.is_cancelled() && !client.is_open());
        let first = rx.try_recv().unwrap();
        assert_eq!((&*first.text, first.reply), ("a", false));
        assert!(rx.try_recv().unwrap().reply);
        drop(rx);
        assert!(!client.push("d".into(), false), "gone");
    }

    #[test]
    fn the_hub_broadcasts_to_every_open_client() {
        let hub = Hub::default();
        let (a, Outbox { rx: mut ra, .. }) = ClientInner::outbox(1, 4);
        let (b, Outbox { rx: mut rb, .. }) = ClientInner::outbox(2, 4);
        hub.add(ClientHandle::new(a));
        hub.add(ClientHandle::new(b));
        hub.broadcast("x".into());
        hub.remove(1);
        hub.broadcast("y".into());
        assert_eq!(hub.len(), 1);
        assert_eq!(&*ra.try_recv().unwrap().text, "x");
        assert!(ra.try_recv().is_err());
        assert_eq!(&*rb.try_recv().unwrap().text, "x");
        assert_eq!(&*rb.try_recv().unwrap().text, "y");
    }
}
