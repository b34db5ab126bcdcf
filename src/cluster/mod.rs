//! The cluster (placeholder while its parts are assembled).

pub mod flow;
