//! The node's switches: those it started with, then those reloads added (never fewer: a
//! switch a reload removed stays, marked, so that indexes held by running tasks stay valid).

use super::tasks::journal_calls;
use super::{Node, Seen, SwitchNode};
use crate::cluster::keys::Subjects;
use crate::cluster::owner::Hooks;
use crate::cluster::proxy::{Proxy, ProxyParts};
use crate::cluster::writer::RecordsWriter;
use crate::cluster::Cluster;
use crate::metrics::ClusterMetrics;
use crate::router::state::AppendOnly;
use crate::router::{ClusterHooks, Shared, SwitchCtx};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

/// The node's switches, in the same append-only list as the router's.
pub(super) type SwitchList = AppendOnly<SwitchNode>;

impl SwitchNode {
    /// A switch of this node, not owned: its proxy serves it from another node until this
    /// node takes it, and its hooks tell the cluster what its shard does while it is owned.
    pub(super) fn start(
        ctx: &Arc<SwitchCtx>,
        shared: &Arc<Shared>,
        cluster: &Cluster,
        node_id: &Arc<str>,
        subjects: &Subjects,
        writer: &RecordsWriter,
    ) -> SwitchNode {
        let metrics = ClusterMetrics::new(&ctx.name);
        let proxy = Proxy::start(ProxyParts {
            switch: ctx.clone(),
            shared: shared.clone(),
            node_id: node_id.clone(),
            metrics: metrics.clone(),
            client: cluster.client().clone(),
            events: cluster.events().clone(),
            subjects: subjects.clone(),
            records: writer.clone(),
        });
        let hooks = Arc::new(Hooks::new(node_id.clone(), writer.clone(), proxy.clone()));
        let as_hooks: Arc<dyn ClusterHooks> = hooks.clone();
        let _ = ctx.cluster.set(as_hooks);
        ctx.owned_here.store(false, Ordering::Release);
        journal_calls(ctx, writer, shared.config().options.call_grace.0);
        metrics.set_owned(false);
        SwitchNode {
            ctx: ctx.clone(),
            proxy,
            hooks,
            metrics,
            seen: Mutex::new(Seen::default()),
            held: AtomicBool::new(false),
            hand_over: tokio::sync::Notify::new(),
            removed: AtomicBool::new(false),
        }
    }
}

impl Node {
    /// A switch a reload added to this node's file (its links started unowned): from now on
    /// this node contends for its lease like for those it started with, and serves it from
    /// its owner meanwhile. Call before the switch is visible to the clients.
    pub fn add_switch(self: &Arc<Self>, ctx: &Arc<SwitchCtx>) {
        let s = SwitchNode::start(
            ctx,
            &self.shared,
            &self.cluster,
            &self.node_id,
            &self.subjects,
            &self.writer,
        );
        if self.switches.push(s).is_none() {
            warn!(switch = %ctx.name, "the node has no room for one more switch");
            return;
        }
        info!(node = %self.node_name, switch = %ctx.name, "switch added: this node contends for its lease");
        // The lease as it is now (the watch told of it before the switch was known here).
        let node = Arc::downgrade(self);
        let name = ctx.name.clone();
        tokio::spawn(async move {
            let Some(node) = node.upgrade() else { return };
            match node.leases.current(&name).await {
                Ok(owner) => node.on_lease(&name, owner),
                Err(e) => warn!(switch = %name, "the added switch's lease could not be read: {e}"),
            }
        });
    }
}
