//! `csta-router [--config FILE]`: the router.
//!
//! Without `--config` it reads `config/csta-router.toml`, or the identical embedded default when
//! that file is not there, which starts two embedded simulated switches.

use clap::Parser;
use csta_router::config::{Config, EMBEDDED_DEFAULT};
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc: the router allocates many small, short-lived buffers on several threads (frames,
/// XML trees, JSON); glibc's allocator spent about 7% of the router's CPU in
/// consolidation and free-list work under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// CTI middleware between CSTA Phase III switches and WebSocket clients.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML). Default: config/csta-router.toml, else the embedded default.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let default = PathBuf::from("config/csta-router.toml");
    let config = match &args.config {
        Some(path) => Config::load(path),
        None if default.exists() => Config::load(&default),
        None => Config::parse(EMBEDDED_DEFAULT, "the embedded default configuration"),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("csta-router: {e}");
            return ExitCode::from(2);
        }
    };
    match csta_router::server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("csta-router: {e}");
            ExitCode::FAILURE
        }
    }
}
