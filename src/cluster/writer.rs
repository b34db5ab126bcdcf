//! Writing the cluster's records off the hot path: registrations and connIds are queued here
//! by whoever learns of them (an extension actor, a session) and written to NATS by one task,
//! in the order they were queued, so a registration's removal never overtakes its creation.
//!
//! A write that fails is logged and not retried: the record is a new owner's starting point,
//! not the truth of the moment (a registration missing from it is one the client makes again
//! after the failover's link events; one too many is removed when its session lingers out).

use super::records::Records;
use crate::protocol::RegisterMode;
use crate::router::calls::ConnId;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::warn;

/// One write.
#[derive(Debug)]
enum Write {
    Put {
        switch: Arc<str>,
        dn: Arc<str>,
        node: Arc<str>,
        session: Arc<str>,
        mode: (RegisterMode, bool),
        app: Arc<str>,
    },
    Delete {
        switch: Arc<str>,
        dn: Arc<str>,
        node: Arc<str>,
        session: Arc<str>,
    },
    PutCall {
        switch: Arc<str>,
        call_id: Arc<str>,
        conn_id: ConnId,
    },
    /// Remove a call's connId after `after`, unless the call ID got another connId since.
    DeleteCall {
        switch: Arc<str>,
        call_id: Arc<str>,
        conn_id: ConnId,
        after: Duration,
    },
    /// Write again every registration and connId written and not removed since: the
    /// buckets were lost (a NATS server restarted on an empty store).
    Replay,
}

/// A registration's key in the writer's memory: switch, DN, node, session.
type RegKey = (Arc<str>, Arc<str>, Arc<str>, Arc<str>);

/// The way to the writer task. Cheap to clone; queuing never waits.
#[derive(Debug, Clone)]
pub struct RecordsWriter {
    tx: mpsc::UnboundedSender<Write>,
}

impl RecordsWriter {
    /// Start the writer task on the current runtime.
    pub fn start(records: Records) -> RecordsWriter {
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = RecordsWriter { tx };
        tokio::spawn(run(records, rx, writer.clone()));
        writer
    }

    fn send(&self, w: Write) {
        let _ = self.tx.send(w);
    }

    /// Record that `session` of `node` registered `dn` of `switch` (in `mode`, with
    /// `callEvents` or not).
    pub fn put(
        &self,
        switch: &Arc<str>,
        dn: &Arc<str>,
        node: &Arc<str>,
        session: &Arc<str>,
        mode: (RegisterMode, bool),
        app: &Arc<str>,
    ) {
        self.send(Write::Put {
            switch: switch.clone(),
            dn: dn.clone(),
            node: node.clone(),
            session: session.clone(),
            mode,
            app: app.clone(),
        });
    }

    /// Remove the record of a registration.
    pub fn delete(&self, switch: &Arc<str>, dn: &str, node: &Arc<str>, session: &Arc<str>) {
        self.send(Write::Delete {
            switch: switch.clone(),
            dn: Arc::from(dn),
            node: node.clone(),
            session: session.clone(),
        });
    }

    /// Write again every registration and connId this node wrote and did not remove since,
    /// after the buckets were created again.
    pub fn replay(&self) {
        self.send(Write::Replay);
    }

    /// Record a call's connId.
    pub fn put_call(&self, switch: &Arc<str>, call_id: &str, conn_id: ConnId) {
        self.send(Write::PutCall {
            switch: switch.clone(),
            call_id: Arc::from(call_id),
            conn_id,
        });
    }

    /// Remove a call's connId `after` from now (its `call-grace`), unless the call ID was
    /// recorded with another connId meanwhile.
    pub fn delete_call(&self, switch: &Arc<str>, call_id: &str, conn_id: ConnId, after: Duration) {
        self.send(Write::DeleteCall {
            switch: switch.clone(),
            call_id: Arc::from(call_id),
            conn_id,
            after,
        });
    }
}

async fn run(records: Records, mut rx: mpsc::UnboundedReceiver<Write>, me: RecordsWriter) {
    // The connId last recorded for each call, so that a late removal spares a newer call.
    let mut calls: HashMap<(Arc<str>, Arc<str>), ConnId> = HashMap::new();
    // The registrations written and not removed, to write again after a loss of the buckets.
    let mut regs: HashMap<RegKey, ((RegisterMode, bool), Arc<str>)> = HashMap::new();
    while let Some(w) = rx.recv().await {
        let done = match w {
            Write::Put {
                switch,
                dn,
                node,
                session,
                mode,
                app,
            } => {
                let done = records
                    .put_with_calls(&switch, &dn, &node, &session, mode, &app)
                    .await;
                regs.insert((switch, dn, node, session), (mode, app));
                done
            }
            Write::Delete {
                switch,
                dn,
                node,
                session,
            } => {
                let done = records.delete(&switch, &dn, &node, &session).await;
                regs.remove(&(switch, dn, node, session));
                done
            }
            Write::Replay => replay(&records, &regs, &calls).await,
            Write::PutCall {
                switch,
                call_id,
                conn_id,
            } => {
                calls.insert((switch.clone(), call_id.clone()), conn_id);
                records.put_call(&switch, &call_id, conn_id).await
            }
            Write::DeleteCall {
                switch,
                call_id,
                conn_id,
                after,
            } if !after.is_zero() => {
                let me = me.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    me.delete_call(&switch, &call_id, conn_id, Duration::ZERO);
                });
                Ok(())
            }
            Write::DeleteCall {
                switch,
                call_id,
                conn_id,
                ..
            } => {
                let key = (switch.clone(), call_id.clone());
                match calls.get(&key) {
                    Some(newer) if *newer != conn_id => Ok(()),
                    _ => {
                        calls.remove(&key);
                        records.delete_call(&switch, &call_id).await
                    }
                }
            }
        };
        if let Err(e) = done {
            warn!("a cluster record was not written: {e}");
        }
    }
}

/// Write every remembered registration and connId again: the first error, after trying all.
async fn replay(
    records: &Records,
    regs: &HashMap<RegKey, ((RegisterMode, bool), Arc<str>)>,
    calls: &HashMap<(Arc<str>, Arc<str>), ConnId>,
) -> Result<(), crate::cluster::ClusterError> {
    let mut first = Ok(());
    for ((switch, dn, node, session), (mode, app)) in regs {
        let done = records
            .put_with_calls(switch, dn, node, session, *mode, app)
            .await;
        if first.is_ok() {
            first = done;
        }
    }
    for ((switch, call_id), conn_id) in calls {
        let done = records.put_call(switch, call_id, *conn_id).await;
        if first.is_ok() {
            first = done;
        }
    }
    tracing::info!(
        registrations = regs.len(),
        calls = calls.len(),
        "the registrations and connIds this node holds were written again"
    );
    first
}
