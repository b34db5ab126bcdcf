//! # csta-router
//!
//! CTI middleware for contact centres: CSTA Phase III XML (ECMA-323) links to PBXes on one side,
//! WebSocket + JSON client applications on the other, and the private services and events of a
//! CSTA T-Server in between (hot-desking: services and events 1 and 2; account codes: 501).
//!
//! ## Architecture
//!
//! ```text
//!  requests:  client ──ws──► session ──ToDn──► router shard ──► extension ──► active link ──TCP──► PBX
//!             (one task       (one per switch)   (one actor per DN:
//!              per client)                        one request at a time)
//!
//!  events:    PBX ──TCP──► link ──► router shard ──► extension ──► router shard ──► client outboxes ──► sessions
//!                                   (hands out       (interprets,   (ordering stage:  (bounded; a full one
//!                                    in frame order)  serializes     frame order)      closes its client, 4008)
//!                                                     once)
//! ```
//!
//! Why events make a U-turn through the shard: a switch's extension actors interpret their
//! DNs' events independently, but one client registered on several DNs of a switch must get
//! replies and events in the order the switch's frames were read; the shard handed them out in
//! that order and puts what comes back in that order again ([`router::ordering`]). The link
//! reads no further ahead of the shard than `link-queue` frames.
//!
//! - [`csta`]: the codec: 8-byte framing, tolerant XML reading, strict writing, dialects.
//! - [`protocol`]: the client protocol's JSON: requests read, one constructor per message
//!   written, error and close codes. A codec without side effects.
//! - [`services`]: the private-service catalogue (1, 2, 501); [`audit`]: the audit line of
//!   every private-service request.
//! - [`metrics`]: Prometheus handles, and the exposition from counts.
//! - [`link`]: one link actor per PBX link around a CSTA session without IO (handshake, invoke
//!   IDs, timeouts, keep-alive), and one switch actor per switch (active link, failover,
//!   monitors); [`errors`]: how a switch's failures become client error codes.
//! - [`config`]: the TOML configuration; [`logging`]: the binaries' log output.
//! - [`client`]: the client's queue that everyone pushes to and nobody waits on, and what a
//!   session keeps for a resume ([`client::outbox`]).
//! - [`router`]: process state, one shard per switch (DN → extension actor, ordering stage),
//!   the extension actors (subscriptions and monitor, request pipeline, event meaning), calls.
//! - [`cluster`]: several routers as one through NATS JetStream: switch leases and the
//!   owner's fence, node presence, eventSeq blocks, registrations, connIds and client
//!   sessions in NATS.
//! - [`session`]: one task per WebSocket connection, and the sessions that outlive their
//!   connections for `session-linger` and are resumed by later ones ([`session::registry`];
//!   in a cluster, on any node); [`server`]: process wiring.
//! - [`console`]: the operator's web console (`/console`, one page in the binary) and
//!   `/status`.
//! - [`sim`]: the PBX simulator, a real CSTA peer over TCP (embedded or `pbx-sim`), beside
//!   the stack: it uses only [`csta`], [`tls`] and [`dnplan`], and only [`server`] uses it.
//!
//! ## Layers
//!
//! Lowest first; a module imports only modules of its own layer or below, and no two modules
//! import each other at any depth (`tests/architecture.rs` checks both in `.ci/run`):
//!
//! 1. `csta`, `tls`, `dnplan`
//! 2. `protocol`
//! 3. `services`, `audit`
//! 4. `metrics`
//! 5. `link`
//! 6. `errors`
//! 7. `config`, `logging`
//! 8. `client`
//! 9. `router`
//! 10. `cluster`
//! 11. `session`, `console`
//! 12. `server`, `reload`
//!
//! Threads: client sessions run on actix-web workers (one per core); the CSTA side runs on a
//! pool of Arbiters (one per core). Each switch's router shard and its extension actors share
//! one pool thread, which keeps one client's replies and events of a switch in order, and the
//! switch's active link usually runs there too. Switches are spread over the pool: adding
//! switches spreads the load without adding threads.

pub mod audit;
pub mod client;
pub mod cluster;
pub mod config;
pub mod console;
pub mod csta;
pub mod dnplan;
pub mod errors;
pub mod link;
pub mod logging;
pub mod metrics;
pub mod protocol;
pub mod reload;
pub mod router;
pub mod server;
pub mod services;
pub mod session;
pub mod sim;
pub mod tls;
