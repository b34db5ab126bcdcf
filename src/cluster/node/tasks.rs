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
        let linger = self.shared.config().server.session_linger.0;
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
            match node.sessions.delete_node(&id).await {
                Ok(n) if n > 0 => {
                    info!(node_id = %id, sessions = n, "the client sessions of a node gone from the cluster lingered out")
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(node_id = %id, "the client sessions of a node gone from the cluster were not removed: {e}")
                }
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

/// Follow the leases: each change to the node. The watch is made again when it ends or
/// fails, and when the buckets were created again (a new bucket starts its sequence over, which
/// a watch resuming where it was would skip).
pub(super) async fn watch_leases(
    node: Weak<Node>,
    leases: futures_util::stream::BoxStream<'static, Result<(String, Option<Owner>), ClusterError>>,
) {
    let Some((mut recreated, ttl)) = node
        .upgrade()
        .map(|n| (n.cluster.recreated(), n.cluster.lease_ttl()))
    else {
        return;
    };
    // Owners renew every lease-ttl/3: a watch silent for longer has stalled.
    let stall = ttl / 3 + LEASE_WATCH_SLACK;
    let mut leases = Some(leases);
    loop {
        let Some(mut watch) = leases.take() else {
            let Some(n) = node.upgrade() else { break };
            match n.leases.watch().await {
                Ok(w) => leases = Some(w),
                Err(e) => {
                    warn!("the watch of the switch leases could not be made again: {e}");
                    drop(n);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            continue;
        };
        loop {
            tokio::select! {
                item = tokio::time::timeout(stall, watch.next()) => {
                    let Ok(item) = item else {
                        // Silent for longer than a renewal takes while a switch is owned: the
                        // watch's consumer was lost with a NATS server. Made anew.
                        let Some(n) = node.upgrade() else { return };
                        if n.any_owner_seen() {
                            info!("the watch of the switch leases is silent while switches are owned: making it again");
                            break;
                        }
                        continue;
                    };
                    let Some(item) = item else { break };
                    let Some(n) = node.upgrade() else { return };
                    match item {
                        Ok((switch, owner)) => n.on_lease(&switch, owner),
                        Err(e) => warn!("the watch of the switch leases failed: {e}"),
                    }
                }
                changed = recreated.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
            }
        }
    }
}

/// How much longer than a renewal period the lease watch may be silent, while switches are
/// owned, before it is taken as stalled.
const LEASE_WATCH_SLACK: Duration = Duration::from_millis(300);

/// How long a lease found expired on this node's clock waits for the lease to be read
/// before it is checked again.
const VERIFY_WAIT: Duration = Duration::from_secs(1);

impl Node {
    /// A lease not seen renewed for `lease-ttl` on this node's clock: read it before taking it
    /// as expired, since the watch may have missed renewals (its consumer lost with a NATS
    /// server). Expired when the read shows no newer entry, or fails.
    pub(super) fn verify_expired(self: &Arc<Self>, switch: &Arc<str>) {
        let Some(s) = self.switch(switch) else { return };
        let ttl = self.cluster.lease_ttl();
        let seen = {
            let mut seen = s.seen.lock().unwrap_or_else(PoisonError::into_inner);
            // Checked again after the read, or VERIFY_WAIT from now.
            let wait = VERIFY_WAIT.min(ttl / 2);
            if let Some(at) = Instant::now().checked_sub(ttl.saturating_sub(wait)) {
                seen.at = Some(at);
            }
            seen.owner.clone()
        };
        let Some(seen) = seen else { return };
        let node = self.clone();
        let switch = switch.clone();
        tokio::spawn(async move {
            match node.leases.current(&switch).await {
                Ok(Some(now)) if now.revision > seen.revision => node.on_lease(&switch, Some(now)),
                _ => node.on_lease(&switch, None),
            }
        });
    }

    /// Why the node is not ready, for `/readyz`: NATS unreachable, or JetStream not answering
    /// while core NATS works.
    pub fn not_ready_reason(&self) -> &'static str {
        if self.ready.load(Ordering::Relaxed) {
            "JetStream unavailable"
        } else {
            "NATS unreachable"
        }
    }

    /// Whether any switch is owned, as this node last saw.
    fn any_owner_seen(&self) -> bool {
        self.switches.iter().any(|s| {
            s.seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .owner
                .is_some()
        })
    }
}

/// Follow the nodes' presence, made again as the leases' watch is.
pub(super) async fn watch_nodes(
    node: Weak<Node>,
    nodes: futures_util::stream::BoxStream<
        'static,
        Result<(String, Option<crate::cluster::lease::NodeInfo>), ClusterError>,
    >,
) {
    let Some(mut recreated) = node.upgrade().map(|n| n.cluster.recreated()) else {
        return;
    };
    let mut nodes = Some(nodes);
    loop {
        let Some(mut watch) = nodes.take() else {
            let Some(n) = node.upgrade() else { break };
            match n.presence.watch().await {
                Ok(w) => nodes = Some(w),
                Err(e) => {
                    warn!("the watch of the cluster's nodes could not be made again: {e}");
                    drop(n);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            continue;
        };
        loop {
            tokio::select! {
                item = watch.next() => {
                    let Some(item) = item else { break };
                    let Some(n) = node.upgrade() else { return };
                    match item {
                        Ok((name, info)) => n.on_node(name, info),
                        Err(e) => warn!("the watch of the cluster's nodes failed: {e}"),
                    }
                }
                changed = recreated.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
            }
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

/// How often the node writes its presence, at most: its writes are also the probe of
/// JetStream's health.
const PROBE: Duration = Duration::from_secs(1);

/// How often the node checks that the buckets and the stream are still the ones it bound
/// (besides after every reconnection to NATS).
const STORES_CHECK: Duration = Duration::from_secs(5);

/// Renew this node's presence (every `lease-ttl`/3, at most every second), which is also the
/// probe of JetStream: all writes failing for `lease-ttl` make the node not ready. After a
/// reconnection, and every few seconds, check that the buckets and the stream are the ones
/// the node bound; when they were created again, put back what the node holds.
pub(super) async fn renew_presence(node: Weak<Node>) {
    let Some((interval, cluster)) = node
        .upgrade()
        .map(|n| (n.presence.renew_interval().min(PROBE), n.cluster.clone()))
    else {
        return;
    };
    let nats = cluster.nats_state();
    let mut connects = nats.borrow().connects;
    let mut checked = Instant::now();
    let mut available = true;
    let mut every = tokio::time::interval(interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        let Some(node) = node.upgrade() else { break };
        if node.stopping.load(Ordering::Acquire) {
            break;
        }
        let sent = Instant::now();
        match node.presence.renew().await {
            Ok(()) => cluster.jetstream_answered(sent),
            Err(e @ ClusterError::NameInUse { .. }) => {
                warn!("this node's presence was not renewed: {e}")
            }
            Err(e) => cluster.jetstream_failed(&e),
        }
        let state = *nats.borrow();
        if state.connected && (state.connects != connects || checked.elapsed() >= STORES_CHECK) {
            connects = state.connects;
            checked = Instant::now();
            match cluster.check_stores().await {
                Ok(crate::cluster::health::StoresCheck::Same) => {}
                Ok(crate::cluster::health::StoresCheck::Recreated) => node.put_back().await,
                Err(e) => cluster.jetstream_failed(&e),
            }
        }
        let now = cluster.jetstream_available();
        if now != available {
            available = now;
            if now {
                info!("JetStream answers again: this node is ready and takes switches again");
            } else if state.connected {
                warn!(
                    "JetStream unavailable for longer than lease-ttl ({}) while core NATS works: this node is not ready and takes no switch until JetStream answers again (last error: {})",
                    humantime::format_duration(cluster.lease_ttl()),
                    cluster.jetstream_error()
                );
            } else {
                warn!("JetStream unavailable: NATS is unreachable");
            }
        }
    }
}

impl Node {
    /// The buckets were created again (the NATS store was lost): put back this node's
    /// presence, the registrations and connIds it wrote, and the event numbers it reserved.
    async fn put_back(&self) {
        warn!("the cluster's buckets were created again: this node puts back its presence, the registrations and connIds it holds and its event numbers");
        if let Err(e) = self.presence.renew().await {
            warn!("this node's presence was not put back: {e}");
        }
        self.writer.replay();
        if let Err(e) = self.seq.restore().await {
            warn!("the event numbers were not put back: {e}");
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

/// The `/readyz` line on JetStream: whether it answers, and the lease in force.
pub(super) fn jetstream_line(cluster: &Cluster) -> String {
    format!(
        "jetstream {} lease-ttl {}\n",
        if cluster.jetstream_available() {
            "available"
        } else {
            "unavailable"
        },
        humantime::format_duration(cluster.lease_ttl())
    )
}
