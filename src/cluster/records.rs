//! What a new owner rebuilds a switch from: the client sessions' registrations and the
//! calls' connIds, kept in NATS rather than in any node's memory.
//!
//! - `CRR_<C>_REGS`: one key per registration, `<switch>.<dn>.<node id>.<session>` → JSON
//!   `{"mode":"share"|"monitor","app":"<name>"}`. The owner reference-counts a DN's monitor
//!   over these sessions; a new owner lists the switch's keys and starts a monitor for every
//!   DN that has one.
//! - `CRR_<C>_CALLS`: `<switch>.<call id>` → connId (16 hex), written off the hot path, so a
//!   call that outlives a failover keeps its connId.
//!
//! Neither bucket has a `max_age` (a registration lasts as long as its session). A record is
//! removed with a purge whose marker expires after [`MARKER_TTL`], so the buckets do not keep
//! one marker per session that ever existed. Every call has its own timeout
//! ([`KV_TIMEOUT`]).

use super::{keys, latest_values, latest_values_within, within, ClusterError, KV_TIMEOUT};
use crate::protocol::RegisterMode;
use crate::router::calls::ConnId;
use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long the marker of a removed record stays: long enough for every watcher to see the
/// removal, short enough that markers do not pile up.
pub const MARKER_TTL: Duration = Duration::from_secs(600);

/// One client session's registration of a DN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The switch that owns the DN.
    pub switch: String,
    /// The DN.
    pub dn: String,
    /// The node the client is connected to.
    pub node_id: String,
    /// The client's session on that node.
    pub session: String,
    /// Its register mode.
    pub mode: RegisterMode,
    /// Registered with `callEvents: true`.
    pub call_events: bool,
    /// Its application (`RequestOpen`'s `application`).
    pub app: String,
}

/// The value of a registration.
#[derive(Serialize, Deserialize)]
struct RegValue {
    mode: String,
    app: String,
    /// Written only when true: records of registrations without call events stay as they were.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    call_events: bool,
}

/// Registrations and connIds.
#[derive(Clone)]
pub struct Records {
    regs: kv::Store,
    calls: kv::Store,
}

impl Records {
    /// The records in these buckets.
    pub fn new(regs: kv::Store, calls: kv::Store) -> Records {
        Records { regs, calls }
    }

    /// Record a registration (or change its mode or application).
    pub async fn put(
        &self,
        switch: &str,
        dn: &str,
        node_id: &str,
        session: &str,
        mode: RegisterMode,
        app: &str,
    ) -> Result<(), ClusterError> {
        self.put_with_calls(switch, dn, node_id, session, (mode, false), app)
            .await
    }

    /// Record a registration with its `callEvents`.
    pub async fn put_with_calls(
        &self,
        switch: &str,
        dn: &str,
        node_id: &str,
        session: &str,
        (mode, call_events): (RegisterMode, bool),
        app: &str,
    ) -> Result<(), ClusterError> {
        let key = keys::registration_key(switch, dn, node_id, session);
        let value = RegValue {
            mode: mode.as_str().to_owned(),
            app: app.to_owned(),
            call_events,
        };
        let value = serde_json::to_vec(&value).unwrap_or_default();
        put(&self.regs, key, value.into(), || {
            format!("recording the registration of {dn} on switch {switch:?}")
        })
        .await
    }

    /// Remove a registration.
    pub async fn delete(
        &self,
        switch: &str,
        dn: &str,
        node_id: &str,
        session: &str,
    ) -> Result<(), ClusterError> {
        let key = keys::registration_key(switch, dn, node_id, session);
        remove(&self.regs, key, || {
            format!("removing the registration of {dn} on switch {switch:?}")
        })
        .await
    }

    /// Every registration on a switch.
    pub async fn list(&self, switch: &str) -> Result<Vec<Registration>, ClusterError> {
        self.registrations(&format!("{}.>", keys::encode(switch)))
            .await
    }

    /// Every registration of the sessions of a node.
    pub async fn list_node(&self, node_id: &str) -> Result<Vec<Registration>, ClusterError> {
        self.registrations(&format!("*.*.{}.*", keys::encode(node_id)))
            .await
    }

    /// The registrations of one session of a node (a monitoring session may have 100,000:
    /// read within [`SESSION_LIST_TIMEOUT`]).
    pub async fn list_session(
        &self,
        node_id: &str,
        session: &str,
    ) -> Result<Vec<Registration>, ClusterError> {
        let filter = format!("*.*.{}.{}", keys::encode(node_id), keys::encode(session));
        let values = latest_values_within(&self.regs, &filter, SESSION_LIST_TIMEOUT).await?;
        values_to_registrations(values)
    }

    /// Remove every registration of one session (it ended, or lingered out): how many.
    pub async fn delete_session(
        &self,
        node_id: &str,
        session: &str,
    ) -> Result<usize, ClusterError> {
        let filter = format!("*.*.{}.{}", keys::encode(node_id), keys::encode(session));
        let found = latest_values(&self.regs, &filter).await?;
        for (key, _) in &found {
            remove(&self.regs, key.clone(), || {
                format!("removing the registrations of session {session:?}")
            })
            .await?;
        }
        Ok(found.len())
    }

    async fn registrations(&self, filter: &str) -> Result<Vec<Registration>, ClusterError> {
        values_to_registrations(latest_values(&self.regs, filter).await?)
    }

    /// Record a call's connId.
    pub async fn put_call(
        &self,
        switch: &str,
        call_id: &str,
        conn_id: ConnId,
    ) -> Result<(), ClusterError> {
        let key = keys::call_key(switch, call_id);
        put(&self.calls, key, conn_id.to_string().into(), || {
            format!("recording the connId of call {call_id:?} on switch {switch:?}")
        })
        .await
    }

    /// Forget a call's connId.
    pub async fn delete_call(&self, switch: &str, call_id: &str) -> Result<(), ClusterError> {
        let key = keys::call_key(switch, call_id);
        remove(&self.calls, key, || {
            format!("removing the connId of call {call_id:?} on switch {switch:?}")
        })
        .await
    }

    /// The connIds of a switch's calls: (call id, connId).
    pub async fn list_calls(&self, switch: &str) -> Result<Vec<(String, ConnId)>, ClusterError> {
        let filter = format!("{}.>", keys::encode(switch));
        let mut out = Vec::new();
        for (key, value) in latest_values(&self.calls, &filter).await? {
            let Some((_, call_id)) = keys::parse_call_key(&key) else {
                continue;
            };
            let text = std::str::from_utf8(&value).unwrap_or("");
            let conn_id = ConnId::parse(text).ok_or_else(|| ClusterError::Corrupt {
                what: format!("connId of call {call_id:?}"),
                reason: format!("{text:?} is not 16 hex digits"),
            })?;
            out.push((call_id, conn_id));
        }
        Ok(out)
    }
}

/// Write a value, within [`KV_TIMEOUT`].
async fn put(
    store: &kv::Store,
    key: String,
    value: bytes::Bytes,
    what: impl Fn() -> String,
) -> Result<(), ClusterError> {
    within(KV_TIMEOUT, &what, async {
        store
            .put(key, value)
            .await
            .map(|_| ())
            .map_err(|e| ClusterError::nats(what(), e))
    })
    .await
}

/// Remove a key, within [`KV_TIMEOUT`]: a purge whose marker expires after [`MARKER_TTL`]
/// when the bucket allows per-message TTLs, a plain purge otherwise.
async fn remove(
    store: &kv::Store,
    key: String,
    what: impl Fn() -> String,
) -> Result<(), ClusterError> {
    let ttl = store.stream.cached_info().config.allow_message_ttl;
    within(KV_TIMEOUT, &what, async {
        let purged = if ttl {
            store.purge_with_ttl(&key, MARKER_TTL).await
        } else {
            store.purge(&key).await
        };
        purged.map_err(|e| ClusterError::nats(what(), e))
    })
    .await
}

/// How long listing one session's registrations may take.
pub const SESSION_LIST_TIMEOUT: Duration = Duration::from_secs(30);

/// The registrations of listed (key, value) pairs.
fn values_to_registrations(
    values: Vec<(String, bytes::Bytes)>,
) -> Result<Vec<Registration>, ClusterError> {
    let mut out = Vec::new();
    for (key, value) in values {
        let Some((switch, dn, node_id, session)) = keys::parse_registration_key(&key) else {
            continue;
        };
        let value: RegValue =
            serde_json::from_slice(&value).map_err(|e| ClusterError::Corrupt {
                what: format!("registration {key}"),
                reason: e.to_string(),
            })?;
        let mode = match value.mode.as_str() {
            "share" => RegisterMode::Share,
            "monitor" => RegisterMode::Monitor,
            other => {
                return Err(ClusterError::Corrupt {
                    what: format!("registration {key}"),
                    reason: format!("mode {other:?}"),
                })
            }
        };
        out.push(Registration {
            switch,
            dn,
            node_id,
            session,
            mode,
            call_events: value.call_events,
            app: value.app,
        });
    }
    Ok(out)
}
