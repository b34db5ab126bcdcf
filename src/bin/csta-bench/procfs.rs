//! What `/proc` tells of a process: CPU time used and resident memory, for the benchmark's
//! summary (`cpu_*_s`, `router_rss_mib`) and for the tests that measure the router's cost.
//! `None` where there is no `/proc` (or no such process).
//!
//! The tests include this file with `#[path]`.

/// CPU time (user + system) a process has used so far, in seconds, from `/proc` where there
/// is one (`"self"` for this process).
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14,
    // stime 15; in clock ticks of 1/100 s on Linux.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// The resident memory of a process in MiB (current and peak), from `/proc` where there is one.
pub fn memory_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {
            std::hint::black_box(spin.elapsed());
        }
        assert!(cpu_seconds("self").unwrap() > 0.0);
        let (rss, peak) = memory_mib(std::process::id()).unwrap();
        assert!(rss > 0.0 && peak >= rss, "{rss} {peak}");
        assert_eq!(cpu_seconds("no-such-process"), None);
    }
}
