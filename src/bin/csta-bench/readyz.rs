//! Reading a cluster node's `/readyz`: which node owns each switch. Shared with the tests
//! (`tests/common`), so that the bench and the tests read the page one way.

use std::collections::BTreeMap;

/// The `switch NAME owner NODE` lines of `/readyz` (`none`, or `NODE (this node)`): switch →
/// owner (`None` when no node owns it).
pub fn parse_owners(body: &str) -> BTreeMap<String, Option<String>> {
    body.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("switch ")?;
            let (switch, owner) = rest.split_once(" owner ")?;
            let owner = owner.trim_end_matches(" (this node)");
            Some((
                switch.to_owned(),
                (owner != "none").then(|| owner.to_owned()),
            ))
        })
        .collect()
}
