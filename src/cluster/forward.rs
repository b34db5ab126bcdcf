//! A client's request about a DN of a switch another node owns, as it travels to that owner.
//!
//! The node the client is connected to sends it as a NATS request to the owner it knows
//! (`crr.<C>.req.<owner id>`), stamped with the owner's epoch. The owner answers at once,
//! before doing anything: `ok` (taken: the reply will come in the owner's flow to the node, in
//! frame order with the events) or `not-owner` (not taken: another owner, or the lease lapsed).
//! The sender re-sends at most once, only after "no responders" or `not-owner`, never after a
//! timeout: so each request reaches the switch at most once.

use crate::client::ClientHandle;
use crate::config::Access;
use crate::protocol::RegisterMode;
use crate::router::messages::DnOp;
use async_nats::HeaderMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

mod header {
    pub const SWITCH: &str = "Crr-Switch";
    pub const EPOCH: &str = "Crr-Epoch";
    pub const NODE: &str = "Crr-Node";
    pub const SESSION: &str = "Crr-Session";
    pub const APP: &str = "Crr-App";
    pub const ACCESS: &str = "Crr-Access";
    pub const DN: &str = "Crr-Dn";
    pub const RESULT: &str = "Crr-Result";
}

/// What is asked about the DN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Op {
    /// `RequestRegisterAddress`.
    Register {
        /// Its `referenceId`.
        reference_id: u64,
        /// `"share"` or `"monitor"`.
        mode: String,
        /// `callEvents` (absent: false).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        call_events: bool,
    },
    /// `RequestUnregisterAddress` (`None`: the client left; no reply).
    Unregister {
        /// Its `referenceId`.
        reference_id: Option<u64>,
    },
    /// `RequestQueryAddress`.
    Query {
        /// Its `referenceId`.
        reference_id: u64,
    },
    /// `RequestPrivateService`.
    Service {
        /// Its `referenceId`.
        reference_id: u64,
        /// `privateMsgId`.
        msg_id: u64,
        /// `connId`.
        conn_id: Option<String>,
        /// `extensions`.
        extensions: BTreeMap<String, String>,
    },
}

impl Op {
    /// The request's `referenceId`, when a reply is due.
    /// A client's operation on its way to another node: the client and what it asks
    /// (`None` for a restore, which only a new owner makes, in its own shard).
    pub fn from_dn_op(op: DnOp) -> Option<(ClientHandle, Op)> {
        Some(match op {
            DnOp::Register {
                client,
                reference_id,
                mode,
                call_events,
            } => (
                client,
                Op::Register {
                    reference_id,
                    mode: mode_name(mode),
                    call_events,
                },
            ),
            DnOp::Unregister {
                client,
                reference_id,
            } => (client, Op::Unregister { reference_id }),
            DnOp::QueryAddress {
                client,
                reference_id,
            } => (client, Op::Query { reference_id }),
            DnOp::PrivateService {
                client,
                reference_id,
                msg_id,
                conn_id,
                extensions,
            } => (
                client,
                Op::Service {
                    reference_id,
                    msg_id,
                    conn_id,
                    extensions,
                },
            ),
            DnOp::Restore { .. } => return None,
        })
    }

    /// The operation as a shard takes it, for `client` (the owner's handle of the session, or
    /// the client itself when the switch became owned here while it was on its way).
    pub fn into_dn_op(self, client: ClientHandle) -> DnOp {
        match self {
            Op::Register {
                reference_id,
                mode,
                call_events,
            } => DnOp::Register {
                client,
                reference_id,
                mode: mode_of(&mode),
                call_events,
            },
            Op::Unregister { reference_id } => DnOp::Unregister {
                client,
                reference_id,
            },
            Op::Query { reference_id } => DnOp::QueryAddress {
                client,
                reference_id,
            },
            Op::Service {
                reference_id,
                msg_id,
                conn_id,
                extensions,
            } => DnOp::PrivateService {
                client,
                reference_id,
                msg_id,
                conn_id,
                extensions,
            },
        }
    }

    pub fn reference_id(&self) -> Option<u64> {
        match self {
            Op::Register { reference_id, .. }
            | Op::Query { reference_id }
            | Op::Service { reference_id, .. } => Some(*reference_id),
            Op::Unregister { reference_id } => *reference_id,
        }
    }
}

/// The wire name of a register mode.
pub fn mode_name(mode: RegisterMode) -> String {
    mode.as_str().to_owned()
}

/// A register mode from its wire name.
pub fn mode_of(name: &str) -> RegisterMode {
    if name == "monitor" {
        RegisterMode::Monitor
    } else {
        RegisterMode::Share
    }
}

/// A forwarded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// The switch.
    pub switch: Arc<str>,
    /// The owner's epoch the sender knows.
    pub epoch: u64,
    /// The sender's node id.
    pub node: Arc<str>,
    /// The client's session on the sender.
    pub session: Arc<str>,
    /// The client's application (as audited).
    pub application: Arc<str>,
    /// What it may do.
    pub access: Access,
    /// The DN.
    pub dn: Arc<str>,
    /// What is asked.
    pub op: Op,
}

impl Forwarded {
    /// Headers and body of the NATS request.
    pub fn encode(&self) -> (HeaderMap, bytes::Bytes) {
        let mut h = HeaderMap::new();
        h.insert(header::SWITCH, &*self.switch);
        h.insert(header::EPOCH, self.epoch.to_string());
        h.insert(header::NODE, &*self.node);
        h.insert(header::SESSION, &*self.session);
        h.insert(header::APP, &*self.application);
        h.insert(
            header::ACCESS,
            match self.access {
                Access::Control => "control",
                Access::Monitor => "monitor",
            },
        );
        h.insert(header::DN, &*self.dn);
        let body = serde_json::to_vec(&self.op).unwrap_or_default();
        (h, bytes::Bytes::from(body))
    }

    /// Read a forwarded request; `None` when it is not one.
    pub fn decode(headers: &HeaderMap, body: &[u8]) -> Option<Forwarded> {
        let text = |name: &str| headers.get(name).map(|v| Arc::<str>::from(v.as_str()));
        Some(Forwarded {
            switch: text(header::SWITCH)?,
            epoch: headers.get(header::EPOCH)?.as_str().parse().ok()?,
            node: text(header::NODE)?,
            session: text(header::SESSION)?,
            application: text(header::APP)?,
            access: match headers.get(header::ACCESS)?.as_str() {
                "monitor" => Access::Monitor,
                _ => Access::Control,
            },
            dn: text(header::DN)?,
            op: serde_json::from_slice(body).ok()?,
        })
    }
}

/// The owner's immediate answer to a forwarded request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Taken: the reply comes in the flow.
    Ok,
    /// Not taken (not the owner of that epoch, or its lease lapsed): the switch never saw it.
    NotOwner,
}

impl Taken {
    /// The headers of the answer.
    pub fn headers(self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::RESULT,
            match self {
                Taken::Ok => "ok",
                Taken::NotOwner => "not-owner",
            },
        );
        h
    }

    /// Read an answer (anything but `ok` is "not taken").
    pub fn read(headers: Option<&HeaderMap>) -> Taken {
        match headers
            .and_then(|h| h.get(header::RESULT))
            .map(|v| v.as_str())
        {
            Some("ok") => Taken::Ok,
            _ => Taken::NotOwner,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_request_reads_back_as_sent() {
        let mut extensions = BTreeMap::new();
        extensions.insert("HOST_DN".to_owned(), "4001".to_owned());
        let f = Forwarded {
            switch: Arc::from("sw 1"),
            epoch: 42,
            node: Arc::from("b-00ff"),
            session: Arc::from("17"),
            application: Arc::from("desk"),
            access: Access::Monitor,
            dn: Arc::from("*55#"),
            op: Op::Service {
                reference_id: 7,
                msg_id: 1,
                conn_id: None,
                extensions,
            },
        };
        let (h, body) = f.encode();
        assert_eq!(Forwarded::decode(&h, &body), Some(f));
        assert_eq!(Taken::read(Some(&Taken::Ok.headers())), Taken::Ok);
        assert_eq!(
            Taken::read(Some(&Taken::NotOwner.headers())),
            Taken::NotOwner
        );
        assert_eq!(Taken::read(None), Taken::NotOwner);
        assert_eq!(Op::Unregister { reference_id: None }.reference_id(), None);
    }
}
