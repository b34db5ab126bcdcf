//! The embedded default configuration listens on fixed ports (7700, 9464, 10401, 10402, 10481,
//! 10482): tests that start the binary on it take this lock first, so that two of them (in one
//! test binary or in two processes) never run at the same time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::net::TcpListener;
use std::time::{Duration, Instant};

/// The ports of the embedded default configuration.
pub const PORTS: [u16; 6] = [7700, 9464, 10401, 10402, 10481, 10482];

/// A loopback port used only as a lock between processes: the operating system lets one
/// socket listen on it at a time and frees it when its holder exits, however it exits.
const LOCK_PORT: u16 = 7699;

/// Hold the lock until the returned listener is dropped; then wait until the default ports are
/// free (a router of an earlier test may still be exiting).
pub fn lock() -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(300);
    let lock = loop {
        match TcpListener::bind(("127.0.0.1", LOCK_PORT)) {
            Ok(l) => break l,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "port {LOCK_PORT} (the lock of the default ports) stayed busy for 5 minutes: {e}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    for port in PORTS {
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(e) = TcpListener::bind(("127.0.0.1", port)) {
            assert!(
                Instant::now() < deadline,
                "port {port} of the default configuration is in use: {e}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    lock
}
