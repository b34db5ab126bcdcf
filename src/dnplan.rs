//! DN plans: which directory numbers a switch owns (`"5001"`, `"5000-5999"`).
//!
//! Both the router (to route a DN to its switch) and the simulator (to know its devices) read
//! DN plans in this one form, so a configuration means the same to both.

use std::fmt;

/// One entry of a DN plan: a single number or an inclusive range of numbers of equal width.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnEntry {
    /// One DN, compared as a string (so it may hold non-digits, e.g. `"*55"`).
    Single(String),
    /// An inclusive numeric range; a DN matches when it has `width` digits and lies within.
    Range {
        /// First DN of the range.
        low: u64,
        /// Last DN of the range.
        high: u64,
        /// Number of digits of every DN in the range (`"0100-0199"` has width 4).
        width: usize,
    },
}

/// Why a DN plan entry cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{entry:?} is not a DN or a range of DNs such as \"5000-5999\": {why}")]
pub struct DnPlanError {
    /// The entry as written.
    pub entry: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl DnEntry {
    /// Parse `"5001"` or `"5000-5999"`.
    pub fn parse(text: &str) -> Result<DnEntry, DnPlanError> {
        let err = |why| DnPlanError {
            entry: text.to_owned(),
            why,
        };
        let t = text.trim();
        if t.is_empty() {
            return Err(err("it is empty"));
        }
        match t.split_once('-') {
            None => {
                if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(err("it contains spaces or control characters"));
                }
                Ok(DnEntry::Single(t.to_owned()))
            }
            Some((a, b)) => {
                let (a, b) = (a.trim(), b.trim());
                if a.is_empty() || b.is_empty() || a.len() != b.len() {
                    return Err(err("both ends of a range need the same number of digits"));
                }
                if a.len() > 18
                    || !a.bytes().all(|c| c.is_ascii_digit())
                    || !b.bytes().all(|c| c.is_ascii_digit())
                {
                    return Err(err(
                        "the ends of a range must be numbers of at most 18 digits",
                    ));
                }
                let low: u64 = a
                    .parse()
                    .map_err(|_| err("the range start is not a number"))?;
                let high: u64 = b
                    .parse()
                    .map_err(|_| err("the range end is not a number"))?;
                if low > high {
                    return Err(err("the range starts after it ends"));
                }
                Ok(DnEntry::Range {
                    low,
                    high,
                    width: a.len(),
                })
            }
        }
    }

    /// Whether the DN belongs to this entry.
    pub fn contains(&self, dn: &str) -> bool {
        match self {
            DnEntry::Single(s) => s == dn,
            DnEntry::Range { low, high, width } => {
                dn.len() == *width
                    && dn.bytes().all(|c| c.is_ascii_digit())
                    && dn.parse::<u64>().is_ok_and(|n| n >= *low && n <= *high)
            }
        }
    }

    /// Whether two entries have a DN in common.
    pub fn overlaps(&self, other: &DnEntry) -> bool {
        match (self, other) {
            (DnEntry::Single(a), b) => b.contains(a),
            (a, DnEntry::Single(b)) => a.contains(b),
            (
                DnEntry::Range {
                    low: l1,
                    high: h1,
                    width: w1,
                },
                DnEntry::Range {
                    low: l2,
                    high: h2,
                    width: w2,
                },
            ) => w1 == w2 && l1 <= h2 && l2 <= h1,
        }
    }

    /// How many DNs the entry holds.
    pub fn len(&self) -> u64 {
        match self {
            DnEntry::Single(_) => 1,
            DnEntry::Range { low, high, .. } => high - low + 1,
        }
    }

    /// Always false: an entry holds at least one DN. (For clippy's `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The DNs of the entry, in order.
    pub fn iter(&self) -> impl Iterator<Item = String> + '_ {
        let (single, range) = match self {
            DnEntry::Single(s) => (Some(s.clone()), None),
            DnEntry::Range { low, high, width } => (None, Some((*low..=*high, *width))),
        };
        single.into_iter().chain(
            range
                .into_iter()
                .flat_map(|(r, w)| r.map(move |n| format!("{n:0w$}"))),
        )
    }
}

impl fmt::Display for DnEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnEntry::Single(s) => f.write_str(s),
            DnEntry::Range { low, high, width } => write!(f, "{low:0width$}-{high:0width$}"),
        }
    }
}

/// A switch's DN plan: a list of entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnPlan {
    /// The entries, as configured.
    pub entries: Vec<DnEntry>,
}

impl DnPlan {
    /// Parse a list of entries.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<DnPlan, DnPlanError> {
        Ok(DnPlan {
            entries: entries
                .iter()
                .map(|e| DnEntry::parse(e.as_ref()))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether the DN is in the plan.
    pub fn contains(&self, dn: &str) -> bool {
        self.entries.iter().any(|e| e.contains(dn))
    }

    /// The first pair of entries the two plans share a DN in, if any.
    pub fn overlap<'a>(&'a self, other: &'a DnPlan) -> Option<(&'a DnEntry, &'a DnEntry)> {
        self.entries
            .iter()
            .flat_map(|a| other.entries.iter().map(move |b| (a, b)))
            .find(|(a, b)| a.overlaps(b))
    }

    /// Every DN of the plan, entry by entry.
    pub fn iter(&self) -> impl Iterator<Item = String> + '_ {
        self.entries.iter().flat_map(DnEntry::iter)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_singles() {
        let plan = DnPlan::parse(&["4000-4999", "0100-0199", "*55"]).unwrap();
        assert!(plan.contains("4000") && plan.contains("4999") && !plan.contains("5000"));
        assert!(plan.contains("0150") && !plan.contains("150"));
        assert!(plan.contains("*55"));
        assert!(!plan.contains("40000"));
        assert_eq!(plan.entries[1].iter().next().unwrap(), "0100");
        assert_eq!(plan.entries[1].len(), 100);
    }

    #[test]
    fn bad_entries() {
        for bad in ["", "50-4", "5-10", "a-b", "4 1"] {
            assert!(DnEntry::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn overlaps() {
        let a = DnPlan::parse(&["4000-4999"]).unwrap();
        let b = DnPlan::parse(&["5000-5999", "4500"]).unwrap();
        let c = DnPlan::parse(&["5000-5999"]).unwrap();
        assert!(a.overlap(&b).is_some());
        assert!(a.overlap(&c).is_none());
        assert!(DnEntry::parse("4999-5001")
            .unwrap()
            .overlaps(&DnEntry::parse("5000-5999").unwrap()));
    }
}
