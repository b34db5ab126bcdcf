//! `pbx-sim`: the switch simulator as a standalone process.
//!
//! Once every address is bound it prints one JSON line on stdout,
//! `{"links":["127.0.0.1:P",...],"control":"127.0.0.1:P"}`, so that a script or test started with
//! port 0 learns where to connect. Logs go to stderr (`RUST_LOG`). SIGTERM or ctrl-c stops it
//! with exit status 0. With `--tls-cert` and `--tls-key` every link speaks CSTA over TLS, like
//! a switch configured for it (the control API stays plain HTTP).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use csta_router::csta::{AccodeEncoding, Dialect, EscapeRoot, PrivateDataPosition};
use csta_router::dnplan::DnPlan;
use csta_router::logging::LogFormat;
use csta_router::sim::{SimConfig, Simulator, Vendor};

/// A simulated PBX speaking CSTA Phase III XML (ECMA-323) over TCP, with an HTTP control API.
///
/// It knows the devices of its DN plan (--dns), keeps hot-desk associations, monitors, calls
/// and account codes, and greets every new CSTA link with SystemStatus "enabled". Point a
/// router's [[switch.link]] address at a --link address.
///
/// Control API (JSON over HTTP on --control; every POST needs "Content-Type:
/// application/json"): GET /state; POST /calls, /calls/ID/ACTION (answer, hold, retrieve,
/// transfer, divert, clear, account-code), /hotdesk, /hotdesk/cancel, /burst, /faults/FAULT
/// (stall, delay, reject, drop, link, garbage, status, clear). Every endpoint is described in
/// the README, section "pbx-sim: the switch simulator".
///
/// Once every address is bound it prints one JSON line on stdout, e.g.
/// {"links":["127.0.0.1:10501"],"control":"127.0.0.1:10580"} (port 0 picks a free port; the
/// line gives the real ones). Logs go to stderr (RUST_LOG; default
/// "warn,csta_router=info,pbx_sim=info"). SIGTERM or Ctrl-C stops it with exit status 0.
#[derive(Parser, Debug)]
#[command(name = "pbx-sim", version, about, long_about)]
struct Args {
    /// The switch's name.
    #[arg(long, default_value = "sw1")]
    name: String,
    /// A DN or range of DNs the switch owns, e.g. 4000-4999 or 5001 (repeat for more). A DN
    /// is dial-pad characters: digits, optionally with '*', '#' or '+'.
    #[arg(long = "dns", required = true, value_name = "DNS", value_parser = parse_dns)]
    dns: Vec<String>,
    /// An address to listen on for CSTA links (repeat for more links; port 0: any free port).
    #[arg(long = "link", required = true, value_name = "ADDR", value_parser = parse_addr)]
    links: Vec<SocketAddr>,
    /// The address of the HTTP control API (port 0: any free port).
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    control: Option<SocketAddr>,
    /// The CSTA namespace written on every message.
    #[arg(long, value_name = "NS")]
    csta_namespace: Option<String>,
    /// The namespace of the hot-desking private payload.
    #[arg(long, value_name = "NS")]
    hotdesk_namespace: Option<String>,
    /// The escape root element: Escape or EscapeService.
    #[arg(long, default_value = "Escape", value_parser = parse_escape_root)]
    escape_root: EscapeRoot,
    /// Where privateData sits in escapes and private events: root or extensions.
    #[arg(long, default_value = "root", value_parser = parse_private_data)]
    private_data: PrivateDataPosition,
    /// How account codes are written: text or hex.
    #[arg(long, default_value = "text", value_parser = parse_accode)]
    accode_encoding: AccodeEncoding,
    /// Log lines as text (coloured on a terminal only) or JSON (one object per line).
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "text")]
    log_format: LogFormat,
    /// Serve CSTA over TLS on every link with this PEM certificate chain (needs --tls-key).
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Behave like a switch of this make: osv, avaya, zultys or generic (namespace, device
    /// forms, cross-references, ECMA-354 application sessions, greeting; README "pbx-sim").
    #[arg(long, default_value = "generic", value_name = "VENDOR")]
    vendor: Vendor,
}

/// One `--dns` value: a range of numbers (checked by the DN plan) or one DN made of dial-pad
/// characters, so that a typo such as `--dns abc` is refused instead of giving a switch with
/// one device named "abc".
fn parse_dns(s: &str) -> Result<String, String> {
    let dial_pad = |t: &str| {
        !t.is_empty()
            && t.chars().any(|c| c.is_ascii_digit())
            && t.chars().all(|c| c.is_ascii_digit() || "*#+".contains(c))
    };
    if !s.contains('-') && !dial_pad(s.trim()) {
        return Err(format!(
            "{s:?} is not a DN: a DN is digits (optionally with '*', '#' or '+'), a range is two numbers of the same width such as 4000-4999"
        ));
    }
    DnPlan::parse(&[s.to_owned()])
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

/// An IP address and port, with an error that says so.
fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        format!("{s:?} is not an address: write an IP address and a port, e.g. 127.0.0.1:10501")
    })
}

fn parse_escape_root(s: &str) -> Result<EscapeRoot, String> {
    match s {
        "Escape" => Ok(EscapeRoot::Escape),
        "EscapeService" => Ok(EscapeRoot::EscapeService),
        _ => Err("expected Escape or EscapeService".to_owned()),
    }
}

fn parse_private_data(s: &str) -> Result<PrivateDataPosition, String> {
    match s {
        "root" => Ok(PrivateDataPosition::Root),
        "extensions" => Ok(PrivateDataPosition::Extensions),
        _ => Err("expected root or extensions".to_owned()),
    }
}

fn parse_accode(s: &str) -> Result<AccodeEncoding, String> {
    match s {
        "text" => Ok(AccodeEncoding::Text),
        "hex" => Ok(AccodeEncoding::Hex),
        _ => Err("expected text or hex".to_owned()),
    }
}

#[actix_web::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    csta_router::logging::init(args.log_format, "pbx_sim=info");

    let dns = match DnPlan::parse(&args.dns) {
        Ok(dns) => dns,
        Err(e) => {
            eprintln!("pbx-sim: --dns {e}");
            return ExitCode::from(2);
        }
    };
    let mut dialect = Dialect::default();
    if let Some(ns) = args.csta_namespace {
        dialect.csta_namespace = ns;
    }
    if let Some(ns) = args.hotdesk_namespace {
        dialect.hotdesk_namespace = ns;
    }
    dialect.escape_root = args.escape_root;
    dialect.private_data = args.private_data;
    dialect.accode_encoding = args.accode_encoding;

    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => match csta_router::tls::server_config(cert, key) {
            Ok(tls) => Some(tls),
            Err(e) => {
                eprintln!("pbx-sim: --tls-cert/--tls-key: {e}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };

    let sim = match Simulator::start_vendor(
        SimConfig {
            name: args.name,
            dns,
            links: args.links,
            control: args.control,
            dialect,
        },
        args.vendor,
        tls,
    )
    .await
    {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("pbx-sim: {e}");
            return ExitCode::FAILURE;
        }
    };

    // Installed before the line below: whoever reads the line may send SIGTERM at once.
    let signals = match Signals::install() {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("pbx-sim: cannot wait for signals: {e}");
            sim.shutdown();
            return ExitCode::FAILURE;
        }
    };
    // Written by hand to keep the documented key order ("links" first).
    let links: Vec<String> = sim.link_addrs().iter().map(ToString::to_string).collect();
    let control = sim.control_addr().map(|a| a.to_string());
    let line = format!(
        "{{\"links\":{},\"control\":{}}}",
        serde_json::Value::from(links),
        serde_json::Value::from(control)
    );
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        tracing::warn!("cannot write the address line to stdout: {e}");
    }
    drop(out);

    signals.wait().await;
    tracing::info!("signal received, stopping");
    sim.shutdown();
    ExitCode::SUCCESS
}

/// SIGTERM and Ctrl-C, listened for from the moment they are installed.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?,
        })
    }

    async fn wait(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = self.term.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
