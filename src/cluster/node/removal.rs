//! A switch that a reload removed from this node's file (README, "Live reload"): this node
//! stops contending for it at once; when it owns it, it gives it up once the reload has
//! unregistered its DNs and closed its links: the lease released (deleted) and every
//! registration left on the switch removed from NATS, so that nothing is restored from them.
//! Another node whose file still has the switch may take it (a rolling reload removes it
//! from the owner last).

use super::{GiveUp, Node, SwitchNode};
use crate::cluster::lease::Lease;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How long the reload waits for this node to give a removed switch up.
const GIVE_UP_WAIT: Duration = Duration::from_secs(5);

impl Node {
    /// A reload removes `switch` from this node's file: it is never taken again here. When
    /// another node owns it, this node's clients registered on its DNs get 59 now; when this
    /// node owns it, they get it from the switch's shard as its plan empties.
    pub fn forsake(&self, switch: &str) {
        let Some(s) = self.switch(switch) else {
            return;
        };
        s.removed.store(true, Ordering::Release);
        if !s.is_held_here() {
            s.proxy.removed();
        }
    }

    /// After the reload closed the links of `switch` (forsaken before): when this node owns
    /// it, give it up (its lease released, its registrations removed from NATS); returns once
    /// done (or after a few seconds).
    pub async fn release_removed(&self, switch: &str) {
        let Some(s) = self.switch(switch) else {
            return;
        };
        if s.held.load(Ordering::Acquire) {
            s.hand_over.notify_one();
            let deadline = Instant::now() + GIVE_UP_WAIT;
            while s.held.load(Ordering::Acquire) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        s.proxy.removed();
    }

    /// Switches this node may own (those its file has).
    pub(super) fn kept(&self) -> usize {
        self.switches
            .iter()
            .filter(|s| !s.removed.load(Ordering::Acquire))
            .count()
    }

    /// The end of an ownership given up because a reload removed the switch: every
    /// registration left on it removed from NATS, then the lease released.
    pub(super) async fn forget_removed(&self, s: &SwitchNode, lease: Lease) {
        let name = &s.ctx.name;
        match self.records.list(name).await {
            Ok(regs) => {
                let n = regs.len();
                for r in regs {
                    let (node, session) =
                        (Arc::from(r.node_id.as_str()), Arc::from(r.session.as_str()));
                    self.writer.delete(name, &r.dn, &node, &session);
                }
                info!(switch = %name, registrations = n, "the removed switch's registrations are removed from the cluster");
            }
            Err(e) => {
                warn!(switch = %name, "the removed switch's registrations could not be listed: {e}")
            }
        }
        info!(node = %self.node_name, switch = %name, why = "removed", "this node gives the switch up: a reload removed it");
        if let Err(e) = self.leases.release(lease).await {
            warn!(switch = %name, "the lease was not released (it expires by itself): {e}");
        }
    }
}

/// The link reason of an ownership that ended unplanned.
pub(super) fn removed_or_fenced(why: &GiveUp) -> &'static str {
    match why {
        GiveUp::Removed => "removed",
        _ => "fenced",
    }
}
