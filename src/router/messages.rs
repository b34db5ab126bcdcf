//! The messages between the sessions, a switch's router shard and its extension actors.
//!
//! ```text
//!  session ──ToDn──► shard ──ExtensionOp──► extension
//!                      │ ──CstaEvent / Answer / LinkChange / MonitorLost / SweepCalls ──►
//!                      ◄──Delivery / Retiring / ToDn (bounced) / ForgetCall──
//! ```
//!
//! They live apart from both actors so that neither names the other: the shard creates the
//! extension actors, and an extension actor reaches its shard through the switch's
//! [`ShardInbox`](super::state::ShardInbox).

use super::calls::ConnId;
use crate::client::ClientHandle;
use crate::csta::Message;
use crate::link::LinkError;
use crate::protocol::{RegisterMode, SharedText};
use actix::Message as ActixMessage;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A request about one DN, from a client session (or bounced back by an extension actor that
/// was retiring when it arrived, for re-dispatch).
#[derive(Debug, ActixMessage)]
#[rtype(result = "()")]
pub struct ToDn {
    /// The DN.
    pub dn: Arc<str>,
    /// What is asked.
    pub op: DnOp,
}

/// What a client asks about a DN.
#[derive(Debug, Clone)]
pub enum DnOp {
    /// `RequestRegisterAddress`.
    Register {
        /// The client.
        client: ClientHandle,
        /// Its `referenceId`.
        reference_id: u64,
        /// The mode.
        mode: RegisterMode,
        /// `callEvents`: the client gets the DN's call events.
        call_events: bool,
    },
    /// `RequestUnregisterAddress`, or (without a reference) the client left.
    Unregister {
        /// The client.
        client: ClientHandle,
        /// Its `referenceId`; `None` when the client disconnected (no reply).
        reference_id: Option<u64>,
    },
    /// `RequestPrivateService`.
    PrivateService {
        /// The client.
        client: ClientHandle,
        /// Its `referenceId`.
        reference_id: u64,
        /// `privateMsgId`.
        msg_id: u64,
        /// `connId`.
        conn_id: Option<String>,
        /// `extensions`.
        extensions: BTreeMap<String, String>,
    },
    /// A registration a new owner of the switch restores (from the cluster's records): like
    /// `Register`, without a reply.
    Restore {
        /// The client (here or on another node).
        client: ClientHandle,
        /// The mode.
        mode: RegisterMode,
        /// `callEvents`, as registered.
        call_events: bool,
    },
    /// `RequestQueryAddress`.
    QueryAddress {
        /// The client.
        client: ClientHandle,
        /// Its `referenceId`.
        reference_id: u64,
    },
}

/// A client request, handed by the shard to the DN's extension actor.
#[derive(Debug, ActixMessage)]
#[rtype(result = "()")]
pub struct ExtensionOp(pub DnOp);

/// A CSTA event from the DN's monitor.
#[derive(Debug, ActixMessage)]
#[rtype(result = "()")]
pub struct CstaEvent {
    /// The switch-wide event sequence number.
    pub seq: u64,
    /// The event.
    pub message: Arc<Message>,
}

/// The switch's answer to the DN's request `tag`.
#[derive(Debug, ActixMessage)]
#[rtype(result = "()")]
pub struct Answer {
    /// The answer's position in the switch's stream (for ordered delivery).
    pub seq: u64,
    /// The request's tag.
    pub tag: u64,
    /// The answer.
    pub result: Result<Message, LinkError>,
}

/// A reload replaced the switch's DN plan: the shard ends the registrations of the DNs that
/// left it; answered, with how many DNs it ended, once their actors have stopped their
/// monitors.
#[derive(Debug, ActixMessage)]
#[rtype(result = "usize")]
pub struct Replanned;

/// What a client registered on `dn` of `switch` is told when a reload removed the DN from every
/// plan: `EventUnregistered` without `referenceId`, `errorCode` 59.
pub fn left_plan_notice(dn: &str, switch: &str) -> SharedText {
    crate::protocol::monitor_lost(
        dn,
        switch,
        crate::protocol::ErrorCode::NotConfigured,
        &format!(
            "{dn} was removed from the DN plan by a configuration reload, so it is no longer registered."
        ),
    )
}

/// A reload removed the DN from every plan: its clients get `EventUnregistered` (59), its
/// monitor is stopped and the actor retires.
#[derive(Debug, ActixMessage)]
#[rtype(result = "()")]
pub struct LeftPlan;

/// The switch's link went down or came back (with monitors restored).
#[derive(Debug, ActixMessage)]
#[rtype(result = "()")]
pub struct LinkChange {
    /// Whether the switch is operational now.
    pub up: bool,
}

/// The switch refused to restore the DN's monitor on a new link.
#[derive(Debug, ActixMessage)]
#[rtype(result = "()")]
pub struct MonitorLost {
    /// Why.
    pub error: LinkError,
}

/// Drop calls idle longer than `call-cleanup-idle` (sent periodically by the shard, so that a
/// hundred thousand extension actors do not each keep a timer).
#[derive(Debug, ActixMessage)]
#[rtype(result = "()")]
pub struct SweepCalls;

/// An extension actor has nothing left to do and asks to be forgotten.
#[derive(Debug, ActixMessage)]
#[rtype(result = "()")]
pub struct Retiring {
    /// Its DN.
    pub dn: Arc<str>,
    /// Its instance (the shard's number for it).
    pub id: u32,
}

/// The switch is no longer owned here (a cluster node lost or gave up its lease): the actor
/// lets go of everything without touching the switch (its links are closed) and stops.
#[derive(Debug, ActixMessage)]
#[rtype(result = "()")]
pub struct Disowned;

/// The shard has forgotten the actor; everything it forwarded has arrived.
#[derive(Debug, ActixMessage)]
#[rtype(result = "()")]
pub struct RetireAck;

/// Forget a call the switch's table evicted (over `max-calls-per-switch`); sent through the
/// shard by the device whose new call pushed it out.
#[derive(Debug, ActixMessage)]
#[rtype(result = "()")]
pub struct ForgetCall {
    /// The DN whose list holds the call.
    pub dn: Arc<str>,
    /// The switch's call ID.
    pub call_id: Arc<str>,
    /// Its connId (a newer call reusing the call ID is left alone).
    pub conn_id: ConnId,
}

/// What an extension actor made of an event or answer: messages for clients, to be queued in
/// the order of `seq` (the shard's ordering stage).
#[derive(Debug, ActixMessage)]
#[rtype(result = "()")]
pub struct Delivery {
    /// The event's or answer's position in the switch's stream.
    pub seq: u64,
    /// The DN whose actor made it.
    pub dn: Arc<str>,
    /// The messages, each with its recipients.
    pub out: Vec<FanOut>,
}

/// One serialized message and the clients that get it: the unit of fan-out.
#[derive(Debug)]
pub struct FanOut {
    /// The serialized message, shared by all its recipients.
    pub text: SharedText,
    /// Who gets it.
    pub to: Vec<ClientHandle>,
    /// Whether it answers a request (of its single recipient).
    pub reply: bool,
}
