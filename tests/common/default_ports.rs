//! The embedded default configuration listens on fixed ports (the client and metrics
//! listeners, each simulator's link and control API; read here from the configuration itself):
//! tests that start the binary on it take this lock first, so that two of them (in one test
//! binary or in two processes) never run at the same time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use csta_router::config::{Config, EMBEDDED_DEFAULT};
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// The embedded default configuration, parsed.
pub fn config() -> Config {
    Config::parse(EMBEDDED_DEFAULT, "embedded default").unwrap()
}

/// Every port the embedded default configuration listens on.
pub fn ports() -> Vec<u16> {
    let c = config();
    let mut ports = vec![
        c.server.client_listen.port(),
        c.server.metrics_listen.port(),
    ];
    for s in &c.switch {
        ports.extend(s.link.iter().map(|l| l.address.port()));
        ports.extend(s.simulator_control.map(|a| a.port()));
    }
    ports
}

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
    for port in ports() {
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
