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
//!
//! `--numbering shipped` uses the DNs of the shipped configuration (`config/csta-router.toml`)
//! instead, so that the bench can drive a router started with it (`--router`): at most two
//! switches, `sw1` with guests `5000`–`5999` and hosts `4000`–`4999`, `sw2` with guests
//! `7000`–`7999` and hosts `6000`–`6999`; 1,000 items per switch.

/// The largest number of switches the numbering supports.
pub const MAX_SWITCHES: usize = 9;
/// How many items (guest/host pairs) one switch holds.
pub const PER_SWITCH: usize = 100_000;

/// How many items one switch of the shipped configuration holds.
pub const SHIPPED_PER_SWITCH: usize = 1000;

/// Which directory numbers the scenarios use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Numbering {
    /// The bench's own 7-digit numbering (up to 9 switches of 100,000 items).
    #[default]
    Bench,
    /// The DNs of the shipped configuration (2 switches of 1,000 items: sw1 guests 5000-5999,
    /// hosts 4000-4999; sw2 guests 7000-7999, hosts 6000-6999), to drive a router started on it.
    Shipped,
}

/// The DN plan of a benchmark run with a given number of switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The number of switches, 1 to [`MAX_SWITCHES`].
    pub switches: usize,
    /// Which numbers the switches own.
    pub numbering: Numbering,
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
        Ok(Plan {
            switches,
            numbering: Numbering::Bench,
        })
    }

    /// A plan with the given numbering; the shipped configuration has two switches.
    pub fn with_numbering(switches: usize, numbering: Numbering) -> Result<Plan, String> {
        let plan = Plan {
            numbering,
            ..Plan::new(switches)?
        };
        if numbering == Numbering::Shipped && switches > 2 {
            return Err(format!(
                "--numbering shipped has two switches (sw1 and sw2 of config/csta-router.toml); got --switches {switches}"
            ));
        }
        Ok(plan)
    }

    /// How many items one switch holds.
    pub fn per_switch(&self) -> usize {
        match self.numbering {
            Numbering::Bench => PER_SWITCH,
            Numbering::Shipped => SHIPPED_PER_SWITCH,
        }
    }

    /// The most items (pairs) this plan holds.
    pub fn capacity(&self) -> usize {
        self.switches * self.per_switch()
    }

    /// Check that `items` pairs fit.
    pub fn check_fits(&self, items: usize, what: &str) -> Result<(), String> {
        if items > self.capacity() {
            return Err(format!(
                "{items} {what} do not fit in {} switch(es): at most {} per switch",
                self.switches,
                self.per_switch()
            ));
        }
        Ok(())
    }

    /// The name of switch `index` (0-based): `sw1`, `sw2`, ...
    pub fn switch_name(index: usize) -> String {
        format!("sw{}", index + 1)
    }

    /// The DN ranges switch `index` owns, as a DN plan (`["1100000-1199999", "2100000-2199999"]`:
    /// guests, then hosts).
    pub fn switch_dns(&self, index: usize) -> [String; 2] {
        let d = index + 1;
        match self.numbering {
            Numbering::Bench => [
                format!("1{d}00000-1{d}99999"),
                format!("2{d}00000-2{d}99999"),
            ],
            Numbering::Shipped => {
                let base = 4000 + 2000 * index;
                [
                    format!("{}-{}", base + 1000, base + 1999),
                    format!("{}-{}", base, base + 999),
                ]
            }
        }
    }

    /// The guest (or calling device) at local index `local` of switch `index`.
    pub fn guest_dn(&self, index: usize, local: usize) -> String {
        match self.numbering {
            Numbering::Bench => format!("1{}{local:05}", index + 1),
            Numbering::Shipped => (5000 + 2000 * index + local).to_string(),
        }
    }

    /// The host (or called device) at local index `local` of switch `index`.
    pub fn host_dn(&self, index: usize, local: usize) -> String {
        match self.numbering {
            Numbering::Bench => format!("2{}{local:05}", index + 1),
            Numbering::Shipped => (4000 + 2000 * index + local).to_string(),
        }
    }

    /// Item `k` of a scenario.
    pub fn pair(&self, k: usize) -> Pair {
        let switch = k % self.switches;
        let local = k / self.switches;
        Pair {
            switch,
            local,
            guest: self.guest_dn(switch, local),
            host: self.host_dn(switch, local),
        }
    }

    /// The items `[from, to)` of [`share`]: the pairs of worker `index` of `workers`.
    pub fn pairs_of(&self, total: usize, workers: usize, index: usize) -> Vec<Pair> {
        let (from, to) = share(total, workers, index);
        (from..to).map(|k| self.pair(k)).collect()
    }

    /// How many of the first `items` items live on switch `index`.
    pub fn items_on(&self, index: usize, items: usize) -> usize {
        items / self.switches + usize::from(index < items % self.switches)
    }

    /// The switch (0-based) that owns a DN of this plan, if any.
    pub fn switch_of(&self, dn: &str) -> Option<usize> {
        let b = dn.as_bytes();
        if self.numbering == Numbering::Shipped {
            let n: usize = dn.parse().ok().filter(|_| b.len() == 4)?;
            let i = n.checked_sub(4000)? / 2000;
            return (i < self.switches).then_some(i);
        }
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
        assert_eq!(p.switch_dns(1)[0], "1200000-1299999");
        let shipped = Plan::with_numbering(2, Numbering::Shipped).unwrap();
        let c = shipped.pair(3);
        assert_eq!(
            (c.switch, c.guest.as_str(), c.host.as_str()),
            (1, "7001", "6001")
        );
        assert_eq!(shipped.switch_dns(0), ["5000-5999", "4000-4999"]);
        assert_eq!(shipped.switch_of("6999"), Some(1));
        assert_eq!(shipped.switch_of("8000"), None);
        assert!(shipped.check_fits(2001, "guests").is_err());
        assert!(Plan::with_numbering(3, Numbering::Shipped).is_err());
        assert!(Plan::new(10).is_err());
        assert!(p.check_fits(400_001, "guests").is_err());
        assert_eq!(share(10, 3, 2), (6, 10));
    }
}
