//! The cluster (placeholder while its parts are assembled).

pub mod flow;
pub mod forward;
pub mod keys;
pub mod owner;
