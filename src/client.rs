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

use crate::config::Access;
use crate::protocol::{self, ProtocolError, SharedText};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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
    /// Unique per connection for the life of the process.
    pub id: u64,
    /// The application, as audited: the configured application whose token the client gave,
    /// or (with no `[[application]]` configured) the validated name from `RequestOpen`.
    pub application: Arc<str>,
    /// What the application may do.
    pub access: Access,
    tx: mpsc::Sender<Queued>,
    slow: CancellationToken,
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
}

impl ClientInner {
    /// A client's outbox of `capacity` messages: the inner handle (application and access
    /// are set at `RequestOpen`), the queue its session writes from, and the signal that the
    /// client is too slow (cancelled when a push finds the queue full).
    pub fn outbox(
        id: u64,
        capacity: usize,
    ) -> (ClientInner, mpsc::Receiver<Queued>, CancellationToken) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let slow = CancellationToken::new();
        let inner = ClientInner {
            id,
            application: Arc::from(""),
            access: Access::Control,
            tx,
            slow: slow.clone(),
        };
        (inner, rx, slow)
    }

    /// Queue a message; `false` if the client is gone or too slow (it is then being closed).
    pub fn push(&self, text: SharedText, reply: bool) -> bool {
        match self.tx.try_send(Queued { text, reply }) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.slow.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
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
        !self.tx.is_closed() && !self.slow.is_cancelled()
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
    /// Send one message to every open client.
    pub fn broadcast(&self, text: SharedText) {
        let clients: Vec<ClientHandle> = self
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for c in clients {
            c.push(text.clone(), false);
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
        let (inner, mut rx, slow) = ClientInner::outbox(1, 2);
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
        let (a, mut ra, _) = ClientInner::outbox(1, 4);
        let (b, mut rb, _) = ClientInner::outbox(2, 4);
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
