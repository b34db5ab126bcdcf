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
