//! The node's background work: watching the leases and the nodes, the periodic tick, the
//! presence renewals, the NATS connection, the event-number blocks, the connId journal and the
//! linger of a departed node's sessions.

use super::*;

impl Node {
    /// The registrations of the sessions of node `id`, gone from the cluster, are released
    /// `session-linger` from now (on the switches this node owns then) unless the node is
    /// back.
    pub(super) fn expire_sessions_of(self: &Arc<Self>, id: String) {
        if !self
            .expiring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone())
        {
            return;
        }
        let linger = self.shared.config.server.session_linger.0;
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(linger).await;
            let Some(node) = me.upgrade() else { return };
            node.expiring
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
            let back = node
                .live
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
                .any(|v| *v == id);
            if back {
                return;
            }
            let regs = match node.records.list_node(&id).await {
                Ok(regs) => regs,
                Err(e) => {
                    warn!(node_id = %id, "the registrations of a node gone from the cluster were not read; they stay until it is seen gone again: {e}");
                    return;
                }
            };
            let node_id: Arc<str> = Arc::from(id.as_str());
            let mut released = 0usize;
            for reg in regs {
                let Some(s) = node.switch(&reg.switch) else {
                    continue;
                };
                let (Some(owned), Some(shard)) = (s.hooks.owned(), s.ctx.shard.get()) else {
                    continue;
                };
                let session: Arc<str> = Arc::from(reg.session.as_str());
                let client = owned.client(
                    &node_id,
                    &session,
                    &Arc::from(reg.app.as_str()),
                    node.access_of(&reg.app),
                );
                shard.requests.do_send(ToDn {
                    dn: Arc::from(reg.dn.as_str()),
                    op: DnOp::Unregister {
                        client,
                        reference_id: None,
                    },
                });
                owned.forget_session(&node_id, &session);
                released += 1;
            }
            if released > 0 {
                info!(node_id = %id, registrations = released, "the registrations of a node gone from the cluster lingered out and were released");
            }
        });
    }
}

/// The switch's event numbers for one ownership: `block`, and the next block reserved in the
/// background once half of one is used.
pub(super) fn numbers(
    switch: &Arc<str>,
    block: std::ops::Range<u64>,
    blocks: SeqBlocks,
) -> Arc<Sequence> {
    let slot: Arc<OnceLock<Weak<Sequence>>> = Arc::new(OnceLock::new());
    let runtime = tokio::runtime::Handle::current();
    let on_low = {
        let slot = slot.clone();
        let switch = switch.clone();
        Box::new(move || {
            let slot = slot.clone();
            let switch = switch.clone();
            let blocks = blocks.clone();
            runtime.spawn(async move {
                match blocks.reserve(&switch).await {
                    Ok(next) => {
                        if let Some(seq) = slot.get().and_then(Weak::upgrade) {
                            seq.add_block(next);
                        }
                    }
                    Err(e) => {
                        warn!(switch = %switch, "the next block of event numbers was not reserved: {e}")
                    }
                }
            });
        }) as Box<dyn Fn() + Send + Sync>
    };
    let seq = Sequence::block(block, on_low);
    let _ = slot.set(Arc::downgrade(&seq));
    seq
}

/// Record the switch's connIds in the cluster as calls come and go.
pub(super) fn journal_calls(ctx: &SwitchCtx, writer: &RecordsWriter, grace: Duration) {
    let writer = writer.clone();
    let switch = ctx.name.clone();
    ctx.calls.set_journal(Box::new(move |note| match note {
        CallNote::Started(call_id, conn_id) => writer.put_call(&switch, &call_id, conn_id),
        CallNote::Cleared(call_id, conn_id) => {
            writer.delete_call(&switch, &call_id, conn_id, grace)
        }
        CallNote::Gone(call_id, conn_id) => {
            writer.delete_call(&switch, &call_id, conn_id, Duration::ZERO)
        }
    }));
}

pub(super) async fn watch_leases(
    node: Weak<Node>,
    mut leases: futures_util::stream::BoxStream<
        'static,
        Result<(String, Option<Owner>), ClusterError>,
    >,
) {
    while let Some(item) = leases.next().await {
        let Some(node) = node.upgrade() else { break };
        match item {
            Ok((switch, owner)) => node.on_lease(&switch, owner),
            Err(e) => warn!("the watch of the switch leases failed: {e}"),
        }
    }
}

pub(super) async fn watch_nodes(
    node: Weak<Node>,
    mut nodes: futures_util::stream::BoxStream<
        'static,
        Result<(String, Option<crate::cluster::lease::NodeInfo>), ClusterError>,
    >,
) {
    while let Some(item) = nodes.next().await {
        let Some(node) = node.upgrade() else { break };
        match item {
            Ok((name, info)) => node.on_node(name, info),
            Err(e) => warn!("the watch of the cluster's nodes failed: {e}"),
        }
    }
}

pub(super) async fn tick(node: Weak<Node>) {
    let mut every = tokio::time::interval(Duration::from_millis(200));
    loop {
        every.tick().await;
        let Some(node) = node.upgrade() else { break };
        node.on_tick();
    }
}

pub(super) async fn renew_presence(node: Weak<Node>) {
    let Some(interval) = node.upgrade().map(|n| n.presence.renew_interval()) else {
        return;
    };
    let mut every = tokio::time::interval(interval);
    every.tick().await;
    loop {
        every.tick().await;
        let Some(node) = node.upgrade() else { break };
        if node.stopping.load(Ordering::Acquire) {
            break;
        }
        if let Err(e) = node.presence.renew().await {
            warn!("this node's presence was not renewed: {e}");
        }
    }
}

/// Follow the NATS connection: the metric, and readiness (lost for longer than `lease-ttl`:
/// not ready).
pub(super) async fn watch_nats(node: Weak<Node>) {
    let Some((mut state, ttl)) = node
        .upgrade()
        .map(|n| (n.cluster.nats_state(), n.cluster.lease_ttl()))
    else {
        return;
    };
    loop {
        let now = *state.borrow_and_update();
        crate::metrics::set_nats_connected(now.connected);
        let Some(n) = node.upgrade() else { break };
        let ready = now.connected || now.since.elapsed() <= ttl;
        if n.ready.swap(ready, Ordering::Relaxed) != ready {
            if ready {
                info!("NATS is back: this node serves again");
            } else {
                warn!("NATS unreachable for longer than lease-ttl: this node is not ready, and its clients are closed with 1013 to reconnect to another node");
                n.shared.hub.close_all_to_reconnect();
            }
        }
        drop(n);
        let wait = if now.connected {
            Duration::from_secs(3600)
        } else {
            Duration::from_millis(200)
        };
        let _ = tokio::time::timeout(wait, state.changed()).await;
    }
}
