//! Helpers of the CSTA codec's tests: the reference reader and the corpus of hand-written
//! documents the differential tests decode with both readers.
#![allow(dead_code)]

pub mod corpus;
pub mod tree;
