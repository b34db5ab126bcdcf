//! The router: which switch owns a DN, which extension actor holds it, and the hand-off of
//! client requests and switch events to that actor.
//!
//! ```text
//!  requests:  session ──ToDn──► shard ──► extension ──RoutedRequest──► active link ──► PBX
//!  events:    PBX ──► link ──SwitchEvent──► shard ──► extension ──Delivery──► shard (ordering)
//!                                                                              └──► client outboxes
//! ```
//!
//! - [`state`]: the process state read without asking an actor (configuration, switch
//!   contexts, open clients).
//! - [`shard`]: one [`Router`] actor per switch: DN → extension actor, and the switch's
//!   ordering stage ([`ordering`]).
//! - [`extension`]: one actor per DN in use: its subscribers and monitor, its request
//!   pipeline, and what its events mean.
//! - [`calls`]: calls and their connIds, per DN and per switch.
//! - [`messages`]: what the sessions, the shard and the extension actors send each other.
//!
//! Why events make a U-turn through the shard: the extension actors of a switch interpret
//! their DNs' events concurrently with each other, but a client registered on several DNs of a
//! switch must get replies and events in the order the switch's frames were read; the shard,
//! which handed each one out in that order, puts what comes back in that order again.

pub mod calls;
pub mod extension;
pub mod messages;
pub mod ordering;
pub mod shard;
pub mod state;

pub use shard::Router;
pub use state::{ClusterHooks, ShardInbox, Shared, SwitchCtx};
