//! The unit tests of [`super::procfs`], beside it rather than in it: the tests under `tests/`
//! include `procfs.rs` and need not run these again.
#![allow(clippy::unwrap_used)]

use super::procfs::*;

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
