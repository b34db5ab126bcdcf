//! The DN numbering of the benchmark: which directory numbers each switch owns and which the
//! scenarios use.
//!
//! Switch `i` (1 to 9, named `sw<i>`) owns two ranges of 7-digit numbers:
//!
//! | range | role |
//! |---|---|
//! | `1<i>00000`–`1<i>99999` | guests (login-storm, fanout), calling devices (account-codes) |
//! | `2<i>00000`–`2<i>99999` | hosts (login-storm, fanout), called devices (account-codes) |
//!
//! Item `k` of a scenario (0-based: a guest/host pair, or a calling/called pair) lives on switch
//! `k % S + 1` at local index `k / S`, so consecutive items go round-robin over the switches and
//! each switch uses the first numbers of its ranges, consecutively. For example with 4 switches
//! item 0 is guest `1100000` and host `2100000` on `sw1`, item 5 is guest `1200001` and host
//! `2200001` on `sw2`. A switch holds at most 100,000 items.

/// The largest number of switches the numbering supports.
pub const MAX_SWITCHES: usize = 9;
/// How many items (guest/host pairs) one switch holds.
pub const PER_SWITCH: usize = 100_000;

/// The DN plan of a benchmark run with a given number of switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The number of switches, 1 to [`MAX_SWITCHES`].
    pub switches: usize,
}

/// One item of a scenario: a guest (or calling device) and its host (or called device).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// Index of the switch, 0-based (`sw1` is 0).
    pub switch: usize,
    /// Index of the pair within its switch, 0-based.
    pub local: usize,
    /// The guest or calling device.
    pub guest: String,
    /// The host or called device.
    pub host: String,
}

impl Plan {
    /// A plan for `switches` switches; an error naming the limit when out of range.
    pub fn new(switches: usize) -> Result<Plan, String> {
        if switches == 0 || switches > MAX_SWITCHES {
            return Err(format!(
                "--switches must be 1 to {MAX_SWITCHES} (the DN numbering gives each switch its own digit); got {switches}"
            ));
        }
        Ok(Plan { switches })
    }

    /// The most items (pairs) this plan holds.
    pub fn capacity(&self) -> usize {
        self.switches * PER_SWITCH
    }

    /// Check that `items` pairs fit.
    pub fn check_fits(&self, items: usize, what: &str) -> Result<(), String> {
        if items > self.capacity() {
            return Err(format!(
                "{items} {what} do not fit in {} switch(es): at most {} per switch",
                self.switches, PER_SWITCH
            ));
        }
        Ok(())
    }

    /// The name of switch `index` (0-based): `sw1`, `sw2`, ...
    pub fn switch_name(index: usize) -> String {
        format!("sw{}", index + 1)
    }

    /// The DN ranges switch `index` owns, as a DN plan (`["1100000-1199999", "2100000-2199999"]`).
    pub fn switch_dns(index: usize) -> [String; 2] {
        let d = index + 1;
        [
            format!("1{d}00000-1{d}99999"),
            format!("2{d}00000-2{d}99999"),
        ]
    }

    /// The guest (or calling device) at local index `local` of switch `index`.
    pub fn guest_dn(index: usize, local: usize) -> String {
        format!("1{}{local:05}", index + 1)
    }

    /// The host (or called device) at local index `local` of switch `index`.
    pub fn host_dn(index: usize, local: usize) -> String {
        format!("2{}{local:05}", index + 1)
    }

    /// Item `k` of a scenario.
    pub fn pair(&self, k: usize) -> Pair {
        let switch = k % self.switches;
        let local = k / self.switches;
        Pair {
            switch,
            local,
            guest: Plan::guest_dn(switch, local),
            host: Plan::host_dn(switch, local),
        }
    }

    /// How many of the first `items` items live on switch `index`.
    pub fn items_on(&self, index: usize, items: usize) -> usize {
        items / self.switches + usize::from(index < items % self.switches)
    }

    /// The switch (0-based) that owns a DN of this plan, if any.
    pub fn switch_of(&self, dn: &str) -> Option<usize> {
        let b = dn.as_bytes();
        if b.len() != 7 || !b.iter().all(u8::is_ascii_digit) || !(b[0] == b'1' || b[0] == b'2') {
            return None;
        }
        let i = usize::from(b[1] - b'0');
        (1..=self.switches).contains(&i).then(|| i - 1)
    }
}

/// The contiguous share `[from, to)` of `total` items that worker `index` of `workers` owns.
pub fn share(total: usize, workers: usize, index: usize) -> (usize, usize) {
    let workers = workers.max(1);
    (total * index / workers, total * (index + 1) / workers)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn numbering() {
        let p = Plan::new(4).unwrap();
        let a = p.pair(0);
        assert_eq!(
            (a.switch, a.guest.as_str(), a.host.as_str()),
            (0, "1100000", "2100000")
        );
        let b = p.pair(5);
        assert_eq!(
            (b.switch, b.guest.as_str(), b.host.as_str()),
            (1, "1200001", "2200001")
        );
        assert_eq!(p.switch_of("2400007"), Some(3));
        assert_eq!(p.switch_of("2500007"), None);
        assert_eq!(p.items_on(0, 10), 3);
        assert_eq!(p.items_on(3, 10), 2);
        assert_eq!(Plan::switch_dns(1)[0], "1200000-1299999");
        assert!(Plan::new(10).is_err());
        assert!(p.check_fits(400_001, "guests").is_err());
        assert_eq!(share(10, 3, 2), (6, 10));
    }
}
