//! # csta-router
//!
//! CTI middleware for contact centres: CSTA Phase III XML (ECMA-323) links to PBXes on one side,
//! WebSocket + JSON client applications on the other, and the private services and events of a
//! CSTA T-Server in between (hot-desking: services and events 1 and 2; account codes: 501).
//!
//! ## Architecture
//!
//! ```text
//!  client apps ──ws──► session task ──► Router (one per switch) ──► Extension (one per DN)
//!                         ▲                   ▲                        │ requests, one at a time
//!                         │ bounded queue     │ events and answers     ▼
//!                         └───────────────── Extension ◄── Switch ◄── LinkActor ◄──TCP── PBX
//! ```
//!
//! - [`csta`]: the codec: 8-byte framing, tolerant XML reading, strict writing, dialects.
//! - [`link`]: one [`link::LinkActor`] per PBX link (handshake, invoke IDs, timeouts,
//!   keep-alive, reconnect) and one [`link::Switch`] per switch (active link, failover,
//!   monitors). The only place that knows which link serves a switch.
//! - [`router`]: one [`router::Router`] shard per switch maps a DN to its extension actor and
//!   hands it requests and events; the switch of a DN comes from the immutable DN plans.
//! - [`extension`]: one [`extension::Extension`] actor per DN in use holds its state
//!   (subscribers, hot-desk association, calls, account code), sends its requests to the switch
//!   one at a time, serializes each event once and queues the same bytes to every subscriber.
//! - [`session`]: one task per WebSocket client, with a bounded outbound queue; a client that
//!   cannot keep up is closed with 4008 and never slows anyone else.
//! - [`protocol`]: the client protocol's JSON messages and error codes; [`errors`] maps switch
//!   failures to them; [`calls`] gives calls their connIds.
//! - [`sim`]: the PBX simulator, a real CSTA peer over TCP (embedded or `pbx-sim`).
//! - [`config`]: the TOML configuration; [`server`]: process wiring; [`logging`]: the
//!   binaries' log output; [`audit`]: the audit line of every private-service request.
//!
//! Threads: client sessions run on actix-web workers (one per core); the CSTA side runs on a
//! pool of Arbiters (one per core). Each switch's router shard and its extension actors share
//! one pool thread, which keeps one client's replies and events of a switch in order, and the
//! switch's active link usually runs there too. Switches are spread over the pool: adding
//! switches spreads the load without adding threads.

pub mod audit;
pub mod calls;
pub mod config;
pub mod csta;
pub mod dnplan;
pub mod errors;
pub mod extension;
pub mod link;
pub mod logging;
pub mod metrics;
pub mod protocol;
pub mod router;
pub mod server;
pub mod session;
pub mod sim;
pub mod tls;
