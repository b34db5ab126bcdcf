//! csta-router library.
pub mod csta;
pub mod dnplan;
pub mod link;
pub mod sim;
