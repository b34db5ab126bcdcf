//! `csta-bench`: the load generator of csta-router (README, section "Benchmark"). See
//! [`csta_router::bench`] and `csta-bench --help`.

use clap::Parser;
use csta_router::bench::{main_with, Args};
use std::process::ExitCode;

fn main() -> ExitCode {
    main_with(Args::parse())
}
