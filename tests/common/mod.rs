//! The tests' shared code, one module per concept; a test file says `mod common;` and uses the
//! modules it needs. Three of them are the benchmark's own (`http`, `procfs`, `readyz`), so that
//! the tests and the bench speak HTTP, read `/proc` and read a node's `/readyz` one way.
//!
//! - [`http`]: the HTTP/1.1 client (status, headers, body);
//! - [`procfs`]: CPU time and memory of a process;
//! - [`readyz`]: a cluster node's `/readyz` (the owner of each switch);
//! - [`process`]: the binaries as processes (router, `pbx-sim`, `csta-bench`);
//! - [`config`]: router configurations (listeners on free ports, switch tables);
//! - [`router`]: the router in process, its WebSocket clients and test configuration;
//! - [`sim_control`]: the simulator's control API;
//! - [`switch`]: the link layer alone, against a simulator or a fake switch;
//! - [`log_capture`]: what the code under test logs;
//! - [`nats`]: real `nats-server` processes (JetStream, temporary store) for the cluster;
//! - [`bed`]: a cluster of router processes, switches and NATS, and what its tests ask of it;
//! - [`nats_auth`]: a secured NATS (test CA, operator and `.creds`) and nodes that never join;
//! - [`default_ports`]: the embedded default configuration's fixed ports, and their lock;
//! - [`observability`]: the dashboard, the Prometheus files and promtool;
//! - [`spec`]: names the product contract fixes, for the tests that check them;
//! - [`devtools`]: a headless Chromium driven through its DevTools protocol.
#![allow(dead_code)]

pub mod bed;
pub mod config;
pub mod default_ports;
pub mod devtools;
#[path = "../../src/bin/csta-bench/http.rs"]
pub mod http;
pub mod log_capture;
pub mod nats;
pub mod nats_auth;
pub mod observability;
pub mod process;
#[path = "../../src/bin/csta-bench/procfs.rs"]
pub mod procfs;
#[path = "../../src/bin/csta-bench/readyz.rs"]
pub mod readyz;
pub mod router;
pub mod sim_control;
pub mod spec;
pub mod switch;
