//! Whether the nodes agree on the switches: every node announces its switch list and DN plans
//! with its presence, and each node compares the others' with its own. A switch defined
//! differently on another live node (or on one side only) is named in a warning and in
//! `csta_router_cluster_config_mismatch`, until the nodes agree again.

use super::Node;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::PoisonError;
use tracing::{info, warn};

/// This node's switch definitions and the other live nodes'.
#[derive(Debug, Default)]
pub(super) struct Definitions {
    /// Name → DN plan as written, on this node.
    own: BTreeMap<String, String>,
    /// The same for each other live node, by node name.
    peers: BTreeMap<String, BTreeMap<String, String>>,
    /// The switches found defined differently, as last reported.
    differing: BTreeSet<String>,
}

impl Definitions {
    /// This node's definitions, before it has heard of another node.
    pub(super) fn new(own: BTreeMap<String, String>) -> Definitions {
        Definitions {
            own,
            ..Definitions::default()
        }
    }

    /// How `switch` differs between this node and another live node: (node, why), or `None`.
    fn difference(&self, switch: &str) -> Option<(String, String)> {
        let here = self.own.get(switch);
        self.peers.iter().find_map(|(node, theirs)| {
            let why = match (here, theirs.get(switch)) {
                (Some(a), Some(b)) if a != b => {
                    format!("DNs [{b}] there, [{a}] here")
                }
                (Some(_), None) => "not defined there".to_owned(),
                (None, Some(_)) => "defined there only".to_owned(),
                _ => return None,
            };
            Some((node.clone(), why))
        })
    }
}

impl Node {
    /// Node `name` announced its switches (`Some`), or left (`None`): compare again.
    pub(super) fn compare_definitions(
        &self,
        name: &str,
        switches: Option<BTreeMap<String, String>>,
    ) {
        if name == self.name() {
            return;
        }
        let mut d = self
            .definitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match switches {
            Some(s) => {
                if d.peers.get(name) == Some(&s) {
                    return;
                }
                d.peers.insert(name.to_owned(), s);
            }
            None => {
                if d.peers.remove(name).is_none() {
                    return;
                }
            }
        }
        compare(&mut d);
    }

    /// A reload changed this node's switches (names and DN plans): announce them with the next
    /// presence renewal, and compare again with the other nodes'.
    pub fn reload_definitions(&self, own: BTreeMap<String, String>) {
        self.presence.set_switches(own.clone());
        let mut d = self
            .definitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if d.own == own {
            return;
        }
        d.own = own;
        compare(&mut d);
    }
}

/// Compare this node's definitions with the other live nodes': a warning for each switch that
/// starts to differ, a line when it agrees again, and the mismatch gauge of each.
fn compare(d: &mut Definitions) {
    let all: BTreeSet<String> = d
        .own
        .keys()
        .chain(d.peers.values().flat_map(|m| m.keys()))
        .cloned()
        .collect();
    let mut differing = BTreeSet::new();
    for switch in all.iter().chain(d.differing.iter()) {
        match d.difference(switch) {
            Some((node, why)) => {
                if !d.differing.contains(switch) {
                    warn!(%switch, other_node = %node, "switch {switch} is defined differently on node {node} ({why}): every node of a cluster must load the same switch list and DN plan");
                }
                crate::metrics::set_config_mismatch(switch, true);
                differing.insert(switch.clone());
            }
            None => {
                if d.differing.contains(switch) {
                    info!(%switch, "switch {switch} is defined alike on every live node again");
                }
                crate::metrics::set_config_mismatch(switch, false);
            }
        }
    }
    d.differing = differing;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_switch_differs_by_its_dns_or_by_being_on_one_side_only() {
        let mut d = Definitions {
            own: map(&[("sw1", "4000-4999"), ("sw2", "6000-6999")]),
            ..Definitions::default()
        };
        d.peers.insert(
            "b".into(),
            map(&[("sw1", "4000-4899"), ("sw3", "8000-8999")]),
        );
        assert_eq!(
            d.difference("sw1"),
            Some(("b".into(), "DNs [4000-4899] there, [4000-4999] here".into()))
        );
        assert_eq!(
            d.difference("sw2"),
            Some(("b".into(), "not defined there".into()))
        );
        assert_eq!(
            d.difference("sw3"),
            Some(("b".into(), "defined there only".into()))
        );
        d.peers.insert("b".into(), d.own.clone());
        assert_eq!(d.difference("sw1"), None);
        assert_eq!(d.difference("sw3"), None);
    }
}
