//! The link layer.
