//! The router's memory per registered DN: every registered DN keeps its extension actor, so
//! the actor's size is most of it. Its task (actix's context around the actor, in a tokio task
//! rounded up to 128 bytes) fits in 512 bytes while the actor is at most 72 bytes; a field
//! added to the actor must go into its boxed, rarely used parts, or this fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use csta_router::router::extension::Extension;
use std::mem::size_of;

#[test]
fn the_extension_actor_is_at_most_72_bytes() {
    let actor = size_of::<Extension>();
    assert!(
        actor <= 72,
        "the extension actor is {actor} bytes; at most 72 keep its task within 512 bytes per registered DN"
    );
}

#[test]
fn the_extension_actor_with_its_context_leaves_room_for_the_task_header() {
    // A tokio task adds about 104 bytes (header, scheduler, id, stage tag, trailer) and rounds
    // up to 128: 408 bytes of future are what fits in 512.
    let future = size_of::<actix::dev::ContextFut<Extension, actix::Context<Extension>>>();
    assert!(
        future <= 408,
        "the extension actor's future is {future} bytes; its task no longer fits in 512 bytes"
    );
}
