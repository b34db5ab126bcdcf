//! `csta-router [--config FILE] [--log-format text|json] [--check-config [FILE]]`: the router.
//!
//! Without `--config` it reads `config/csta-router.toml` (relative to the working directory),
//! or the identical embedded default when that file is not there, which starts two embedded
//! simulated switches; which one it loaded is the first line it logs. `--check-config` only
//! reads and checks a configuration (exit 0, or 1 with the error), for deployment scripts.

use clap::Parser;
use csta_router::config::{Config, ConfigError, EMBEDDED_DEFAULT};
use csta_router::logging::LogFormat;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// mimalloc: the router allocates many small, short-lived buffers on several threads (frames,
/// XML trees, JSON); glibc's allocator spent about 7% of the router's CPU in
/// consolidation and free-list work under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Where the default configuration file is looked for, relative to the working directory.
const DEFAULT_CONFIG: &str = "config/csta-router.toml";

/// CTI middleware between CSTA Phase III switches and WebSocket clients.
///
/// Logs go to stderr (RUST_LOG selects them; default "warn,csta_router=info,audit=info,csta_wire=info");
/// once listening, one JSON line on stdout gives the bound addresses:
/// {"clients":"IP:PORT","metrics":"IP:PORT","simulators":[{"name","links","control"}]}.
/// SIGTERM or Ctrl-C stops it cleanly (clients closed with 1001, exit 0).
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// Configuration file (TOML). Default: config/csta-router.toml in the working directory,
    /// else the embedded default (two simulated switches).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Only check the configuration (FILE, else the one the router would load) and exit:
    /// 0 with one "OK" line on stdout, or 1 with the error on stderr.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    check_config: Option<Option<PathBuf>>,
    /// Log lines as text (coloured on a terminal only) or JSON (one object per line, for log
    /// shippers).
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "text")]
    log_format: LogFormat,
}

/// Which configuration to read: the file named, the default file, or the embedded default.
enum Source {
    File(PathBuf),
    Embedded,
}

impl Source {
    fn choose(explicit: Option<&Path>) -> Source {
        match explicit {
            Some(path) => Source::File(path.to_owned()),
            None if Path::new(DEFAULT_CONFIG).exists() => Source::File(DEFAULT_CONFIG.into()),
            None => Source::Embedded,
        }
    }

    /// How the source is named in logs and in the `--check-config` line.
    fn describe(&self) -> String {
        match self {
            Source::File(path) => {
                let shown = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
                format!("file {}", shown.display())
            }
            Source::Embedded => {
                let cwd = std::env::current_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_else(|_| "the working directory".into());
                format!("embedded default (no {DEFAULT_CONFIG} in {cwd})")
            }
        }
    }

    fn load(&self) -> Result<Config, ConfigError> {
        match self {
            Source::File(path) => Config::load(path),
            Source::Embedded => {
                Config::parse(EMBEDDED_DEFAULT, "the embedded default configuration")
            }
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    csta_router::logging::init(args.log_format, "");
    if let Some(file) = &args.check_config {
        let source = Source::choose(file.as_deref().or(args.config.as_deref()));
        return match source.load() {
            Ok(config) => {
                for warning in config.warnings() {
                    tracing::warn!("{warning}");
                }
                println!("csta-router: configuration OK: {}", source.describe());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("csta-router: {e}");
                ExitCode::from(1)
            }
        };
    }
    let source = Source::choose(args.config.as_deref());
    let config = match source.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("csta-router: {e}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        "configuration: {}",
        source.describe()
    );
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let file = match &source {
        Source::File(path) => Some(path.clone()),
        Source::Embedded => None,
    };
    match csta_router::server::run(config, file) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("csta-router: {e}");
            ExitCode::FAILURE
        }
    }
}
