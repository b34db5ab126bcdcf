//! The forwarder of a switch served from another node: it publishes the clients' requests to
//! the owner in the order they were sent and handles the owner's answers (taken, not the owner,
//! nobody there, no answer in time) by the rules of the [parent module](super).

use super::{Outgoing, Proxy, ACK_TIMEOUT};
use crate::cluster::forward::Taken;
use crate::cluster::keys::Subjects;
use crate::protocol::ErrorCode;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::warn;

/// How a forwarded request fared.
enum Sent {
    Taken(Taken),
    /// Nobody listens on the owner's subject.
    NoResponders,
    /// No answer in time: it may have been taken.
    TimedOut,
}

/// A forwarded request sent, waiting for the owner's "taken" or "not the owner".
struct InFlight {
    out: Outgoing,
    /// The owner's epoch it was sent with.
    epoch: u64,
    sent: Instant,
    /// Sent a second time (to a newer owner): never a third.
    resent: bool,
}

/// The switch's forwarder: publishes the requests in the order the clients sent them (one
/// NATS connection keeps that order up to the owner, which takes them in the order received),
/// without waiting for one's answer before sending the next; the answers come back on one
/// inbox, each under its own token.
pub(super) async fn forwarder(
    proxy: Arc<Proxy>,
    client: async_nats::Client,
    subjects: Subjects,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) {
    let mut f = Forwarder {
        inbox: client.new_inbox(),
        proxy,
        client,
        subjects,
        pending: std::collections::BTreeMap::new(),
        next: 0,
    };
    let mut answers = match f.client.subscribe(format!("{}.*", f.inbox)).await {
        Ok(sub) => sub,
        Err(e) => {
            warn!(switch = %f.proxy.switch.name, "the forwarder's inbox could not be subscribed to; requests on the switch get 54: {e}");
            while let Some(out) = rx.recv().await {
                f.fail(out.key, format!("The request could not be sent to the node owning switch {} ({e}); retry in a few seconds.", f.proxy.switch.name));
            }
            return;
        }
    };
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            out = rx.recv() => {
                let Some(out) = out else { break };
                if out.key.is_some_and(|k| !f.proxy.lock().waiting.contains_key(&k)) {
                    // Answered meanwhile (the owner changed): never sent.
                    continue;
                }
                f.dispatch(out, false).await;
            }
            Some(msg) = answers.next() => {
                let token = msg.subject.rsplit('.').next().and_then(|t| t.parse::<u64>().ok());
                let Some(sent) = token.and_then(|t| f.pending.remove(&t)) else {
                    continue;
                };
                let outcome = if msg.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
                    Sent::NoResponders
                } else {
                    Sent::Taken(Taken::read(msg.headers.as_ref()))
                };
                f.settle(sent, outcome).await;
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let late: Vec<u64> = f
                    .pending
                    .iter()
                    .filter(|(_, s)| now.duration_since(s.sent) >= ACK_TIMEOUT)
                    .map(|(t, _)| *t)
                    .collect();
                for t in late {
                    if let Some(sent) = f.pending.remove(&t) {
                        f.settle(sent, Sent::TimedOut).await;
                    }
                }
            }
        }
    }
}

/// The forwarder's state (see [`forwarder`]).
struct Forwarder {
    proxy: Arc<Proxy>,
    client: async_nats::Client,
    subjects: Subjects,
    inbox: String,
    /// Requests sent and not yet answered, by token (in the order sent).
    pending: std::collections::BTreeMap<u64, InFlight>,
    next: u64,
}

impl Forwarder {
    /// Send a request to the owner known now (54 when there is none).
    async fn dispatch(&mut self, mut out: Outgoing, resent: bool) {
        let Some(owner) = self.proxy.owner() else {
            self.fail(out.key, format!("No router node serves switch {} at the moment (its owner is failing over); retry in a few seconds.", self.proxy.switch.name));
            return;
        };
        out.request.epoch = owner.epoch;
        self.next += 1;
        let token = self.next;
        let (headers, body) = out.request.encode();
        let published = self
            .client
            .publish_with_reply_and_headers(
                self.subjects.request(&owner.id),
                format!("{}.{token}", self.inbox),
                headers,
                body,
            )
            .await;
        match published {
            Ok(()) => {
                self.pending.insert(
                    token,
                    InFlight {
                        out,
                        epoch: owner.epoch,
                        sent: Instant::now(),
                        resent,
                    },
                );
            }
            Err(e) => self.fail(out.key, format!("The request could not be sent to the node owning switch {} ({e}); retry in a few seconds.", self.proxy.switch.name)),
        }
    }

    /// What the owner answered (or that it did not answer in time).
    async fn settle(&mut self, sent: InFlight, outcome: Sent) {
        match outcome {
            Sent::Taken(Taken::Ok) => {}
            Sent::TimedOut => {
                // Perhaps taken: never sent again; 57 if no reply comes in time.
                self.proxy.suspect(sent.epoch, false);
            }
            outcome @ (Sent::Taken(Taken::NotOwner) | Sent::NoResponders) => {
                if matches!(outcome, Sent::NoResponders) {
                    self.proxy.suspect(sent.epoch, true);
                }
                // Not taken: sent once more if a newer owner is known.
                let newer = self.proxy.owner().is_some_and(|o| o.epoch != sent.epoch);
                if !sent.resent && newer {
                    Box::pin(self.dispatch(sent.out, true)).await;
                    return;
                }
                self.fail(sent.out.key, format!("The node that owned switch {} no longer serves it and no other node does yet; retry in a few seconds.", self.proxy.switch.name));
            }
        }
    }

    fn fail(&self, key: Option<(u64, u64)>, message: String) {
        if let Some(k) = key {
            self.proxy.fail_waiting(k, ErrorCode::NoSwitch, message);
        }
    }
}
