#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! What an operator meets: the binaries' configuration checks and messages, their logs, and
//! the simulator's control API and link queues, all on the real `csta-router` and `pbx-sim`
//! binaries (or the simulator in process where only its HTTP side matters).

mod common;
use common::{process, procfs, sim_control};

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use csta_router::csta::{encode_frame, CstaCodec, Dialect, InvokeId, Message};
use csta_router::dnplan::DnPlan;
use csta_router::sim::{SimConfig, Simulator};
use futures_util::SinkExt;
use process::{files, wait_exit, RouterProcess, SimProcess, PBX_SIM, ROUTER};
use serde_json::{json, Value};
use sim_control::SimControl;
use tokio_util::codec::FramedWrite;

/// A switch on a closed loopback port: enough for a configuration that is only checked.
const ONE_SWITCH: &str =
    "[[switch]]\nname = \"pbx\"\ndns = [\"5000-5999\"]\n[[switch.link]]\naddress = \"127.0.0.1:9\"\n";

/// Two embedded simulated switches and every listener on a free port: a router that starts
/// and runs cleanly anywhere.
fn simulated(extra: &str) -> String {
    process::two_switches("", "", extra, 1)
}

/// Run a binary to completion (killed, and the test failed, after `limit`): status, stdout,
/// stderr. `RUST_LOG` is removed unless given in `env`, so the built-in default applies.
fn run(
    bin: &str,
    args: &[&str],
    cwd: &Path,
    env: &[(&str, &str)],
    limit: Duration,
) -> (ExitStatus, String, String) {
    let out = tempfile::tempdir().unwrap();
    let (o, e) = (out.path().join("stdout"), out.path().join("stderr"));
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let status = wait_exit(&mut child, limit);
    let stdout = std::fs::read_to_string(&o).unwrap();
    let stderr = std::fs::read_to_string(&e).unwrap();
    let Some(status) = status else {
        panic!(
            "{bin} {args:?} was still running after {limit:?} (killed):\nstdout: {stdout}\nstderr: {stderr}"
        );
    };
    assert!(
        !stderr.contains("panicked at"),
        "{bin} {args:?} panicked:\n{stderr}"
    );
    (status, stdout, stderr)
}

/// `csta-router --check-config FILE` in `dir`: exit code, stdout, stderr.
fn check(dir: &Path, file: &str) -> (i32, String, String) {
    let (status, out, err) = run(
        ROUTER,
        &["--check-config", file],
        dir,
        &[],
        Duration::from_secs(10),
    );
    (status.code().unwrap_or(-1), out, err)
}

#[test]
fn check_config_validates_and_says_what_is_wrong_in_plain_words() {
    let dir = files(&[
        ("good.toml", ONE_SWITCH),
        (
            "backoff.toml",
            &format!("[options]\nreconnect-min = \"20s\"\nreconnect-max = \"10s\"\n{ONE_SWITCH}"),
        ),
        ("kpl.toml", &format!("[options]\nkpl-tolerance = 0\n{ONE_SWITCH}")),
        ("clients.toml", &format!("[server]\nmax-clients = 0\n{ONE_SWITCH}")),
        (
            "address.toml",
            &format!("[server]\nclient-listen = \"localhost:7700\"\n{ONE_SWITCH}"),
        ),
        (
            "link-address.toml",
            "[[switch]]\nname = \"pbx\"\ndns = [\"5000\"]\n[[switch.link]]\naddress = \"pbx1:3000\"\n",
        ),
        ("number.toml", &format!("[server]\nmax-clients = \"lots\"\n{ONE_SWITCH}")),
        ("negative.toml", &format!("[options]\nkpl-tolerance = -1\n{ONE_SWITCH}")),
        ("week.toml", &format!("[options]\ncall-cleanup-idle = \"168h\"\n{ONE_SWITCH}")),
        (
            "token.toml",
            &format!("[[application]]\nname = \"desks\"\ntoken = \"7-chars\"\n{ONE_SWITCH}"),
        ),
    ]);
    let d = dir.path();

    // A valid file: exit 0, one line naming it.
    let (code, out, err) = check(d, "good.toml");
    assert_eq!(code, 0, "{out}{err}");
    let canonical = std::fs::canonicalize(d.join("good.toml")).unwrap();
    assert_eq!(
        out.trim(),
        format!(
            "csta-router: configuration OK: file {}",
            canonical.display()
        ),
        "{err}"
    );
    // The longest call-cleanup-idle is accepted.
    let (code, _, err) = check(d, "week.toml");
    assert_eq!(code, 0, "{err}");
    // Without FILE (and no config/csta-router.toml here): the embedded default, valid.
    let (status, out, err) = run(ROUTER, &["--check-config"], d, &[], Duration::from_secs(10));
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains("configuration OK: embedded default (no config/csta-router.toml in"),
        "{out}"
    );

    for (file, key, says) in [
        (
            "backoff.toml",
            "options.reconnect-min",
            "longer than reconnect-max",
        ),
        ("kpl.toml", "options.kpl-tolerance", "at least 1"),
        ("clients.toml", "server.max-clients", "at least 1"),
        (
            "address.toml",
            "client-listen",
            "write an IP address and a port, e.g. \"127.0.0.1:7700\"",
        ),
        (
            "link-address.toml",
            "address",
            "write an IP address and a port",
        ),
        ("number.toml", "max-clients", "expected a whole number"),
        ("negative.toml", "kpl-tolerance", "expected a whole number"),
        (
            "token.toml",
            "application[0].token",
            "at least 8 characters",
        ),
    ] {
        let (code, out, err) = check(d, file);
        assert_eq!(code, 1, "{file} must be refused with exit 1:\n{out}{err}");
        assert!(
            err.contains(file) && err.contains(key) && err.contains(says),
            "{file}: the error must name the file, `{key}` and say {says:?}:\n{err}"
        );
        for rust in ["usize", "u32", "u64", "invalid socket address syntax"] {
            assert!(
                !err.contains(rust),
                "{file}: a Rust type name in the error:\n{err}"
            );
        }
        assert!(
            out.is_empty(),
            "{file}: nothing on stdout when refused: {out}"
        );
    }
}

#[test]
fn absurd_durations_are_refused_at_start_naming_the_key_and_the_file() {
    let dir = files(&[
        (
            "timeout.toml",
            &format!("[options]\nrequest-timeout = \"18446744073709551615s\"\n{ONE_SWITCH}"),
        ),
        (
            "ping.toml",
            &format!("[server]\nclient-ping-interval = \"25h\"\n{ONE_SWITCH}"),
        ),
        (
            "idle.toml",
            &format!("[options]\ncall-cleanup-idle = \"169h\"\n{ONE_SWITCH}"),
        ),
        (
            "huge.toml",
            &format!("[options]\nkpl-interval = \"99999999999999999999999ms\"\n{ONE_SWITCH}"),
        ),
    ]);
    for (file, key, limit) in [
        ("timeout.toml", "options.request-timeout", "24h"),
        ("ping.toml", "server.client-ping-interval", "24h"),
        ("idle.toml", "options.call-cleanup-idle", "168h (7 days)"),
        ("huge.toml", "kpl-interval", "too long"),
    ] {
        // A real start, not --check-config: the router must refuse before starting anything.
        let (status, _, err) = run(
            ROUTER,
            &["--config", file],
            dir.path(),
            &[],
            Duration::from_secs(5),
        );
        assert_eq!(status.code(), Some(2), "{file}:\n{err}");
        assert!(
            err.contains(file) && err.contains(key) && err.contains(limit),
            "{file}: must name the file, `{key}` and the limit {limit:?}:\n{err}"
        );
    }
}

#[test]
fn tokens_never_appear_in_configuration_errors() {
    const SECRET: &str = "s3cr3t-T0ken-value-4242";
    let app = |body: &str| format!("[[application]]\nname = \"desks\"\n{body}\n{ONE_SWITCH}");
    let dir = files(&[
        // A syntax error on the token line: the parser quotes the line.
        ("unterminated.toml", &app(&format!("token = \"{SECRET}"))),
        // A misspelt key in an application table: the parser quotes that line too.
        ("misspelt.toml", &app(&format!("tokne = \"{SECRET}\""))),
        // A token of the wrong type: the parser quotes the value.
        ("number.toml", &app("token = 1234567890123456789")),
        // An inline table on one line.
        (
            "inline.toml",
            &format!(
                "application = [{{ name = \"desks\", token = \"{SECRET}\", access = \"none\" }}]\n{ONE_SWITCH}"
            ),
        ),
    ]);
    for file in [
        "unterminated.toml",
        "misspelt.toml",
        "number.toml",
        "inline.toml",
    ] {
        let (status, out, err) = run(
            ROUTER,
            &["--config", file],
            dir.path(),
            &[],
            Duration::from_secs(5),
        );
        assert_eq!(status.code(), Some(2), "{file} must be refused:\n{err}");
        assert!(
            err.contains(file),
            "{file}: the error names the file:\n{err}"
        );
        for secret in [SECRET, "1234567890123456789"] {
            assert!(
                !err.contains(secret) && !out.contains(secret),
                "{file}: the token is printed:\n{err}"
            );
        }
    }
}

#[test]
fn logs_are_plain_or_json_quiet_for_other_crates_and_a_clean_stop_warns_nothing() {
    // Default filter, stderr to a file (not a terminal).
    let router = RouterProcess::start_with(
        Some(&simulated(
            "[[application]]\nname = \"desks\"\ntoken = \"short-token1\"\n",
        )),
        &[],
        &[],
    );
    router.wait_log("switch operational", 2);
    let log = router.stop();
    assert!(
        !log.contains('\u{1b}'),
        "ANSI colours in a log file:\n{log}"
    );
    let first = log.lines().next().unwrap_or_default();
    assert!(
        first.contains("configuration: file ") && first.contains("router.toml"),
        "the first line says which configuration was loaded: {first}"
    );
    // Other crates (actix-server logs INFO lines at start and stop) stay at WARN.
    assert!(
        !log.contains("actix_server"),
        "other crates log INFO by default:\n{log}"
    );
    // A short token is a warning naming the application, never the token.
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("\"desks\"")
            && l.contains("application[0].token")
            && l.contains("fewer than 16 characters")),
        "no short-token warning:\n{log}"
    );
    assert!(!log.contains("short-token1"), "the token is logged:\n{log}");
    // A clean stop: nothing at WARN or above from the stop on.
    let (_, stop) = log
        .split_once("shutting down")
        .unwrap_or_else(|| panic!("no shutdown line:\n{log}"));
    assert!(
        !stop.contains("WARN") && !stop.contains("ERROR"),
        "warnings during a clean stop:\n{stop}"
    );

    // JSON lines, and RUST_LOG wins over the default.
    let router = RouterProcess::start_with(
        Some(&simulated("")),
        &["--log-format", "json"],
        &[("RUST_LOG", "info")],
    );
    router.wait_log("switch operational", 2);
    let log = router.stop();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines
        .iter()
        .all(|l| l["level"].is_string() && l["fields"]["message"].is_string()));
    assert!(lines[0]["fields"]["message"]
        .as_str()
        .unwrap()
        .starts_with("configuration: file "));
    assert!(
        lines.iter().any(|l| l["target"] == "actix_server::builder"),
        "RUST_LOG=info shows other crates' INFO lines"
    );
}

#[test]
fn pbx_sim_refuses_a_bad_dn_plan_and_explains_itself() {
    let cwd = std::env::temp_dir();
    let (status, _, err) = run(
        PBX_SIM,
        &["--dns", "abc", "--link", "127.0.0.1:0"],
        &cwd,
        &[],
        Duration::from_secs(5),
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("\"abc\" is not a DN"), "{err}");
    let (status, _, err) = run(
        PBX_SIM,
        &["--dns", "4000", "--link", "pbx:3000"],
        &cwd,
        &[],
        Duration::from_secs(5),
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("write an IP address and a port"), "{err}");
    let (status, help, _) = run(PBX_SIM, &["--help"], &cwd, &[], Duration::from_secs(5));
    assert!(status.success());
    for needle in [
        "simulated PBX",
        "CSTA",
        "Control API",
        "Content-Type: application/json",
        "README",
        "/burst",
        "{\"links\":[",
        "\"control\":",
        "SIGTERM",
    ] {
        assert!(
            help.contains(needle),
            "--help does not mention {needle:?}:\n{help}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_api_refuses_posts_that_are_not_json() {
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let sim = Simulator::start(SimConfig {
        name: "sw1".to_owned(),
        dns: DnPlan::parse(&["4000-4999", "5000-5999"]).unwrap(),
        links: vec![local],
        control: Some(local),
        dialect: Dialect::default(),
    })
    .await
    .unwrap();
    let ctl = SimControl {
        addr: sim.control_addr().unwrap(),
    };
    let body = r#"{"guest":"5002","host":"4002"}"#;
    // What a web page can send cross-site without a preflight, and a request with no type.
    for content_type in [
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let (status, reply) = ctl.post_as("/hotdesk", content_type, body).await;
        assert_eq!(status, 415, "{content_type:?}: {reply}");
        assert!(
            reply["error"]
                .as_str()
                .unwrap()
                .contains("Content-Type: application/json"),
            "{reply}"
        );
        let (status, _) = ctl
            .post_as("/faults/stall", content_type, r#"{"on":true}"#)
            .await;
        assert_eq!(status, 415);
    }
    // Nothing changed.
    let state = ctl.state().await;
    assert_eq!(state["associations"], json!([]), "{state}");
    assert_eq!(state["faults"]["stall"], false, "{state}");
    // JSON, with or without parameters, is served.
    let (status, reply) = ctl
        .post_as("/hotdesk", Some("application/json; charset=utf-8"), body)
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        ctl.state().await["associations"],
        json!([{"guest": "5002", "host": "4002"}])
    );
    sim.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_that_does_not_read_is_dropped_and_a_burst_cannot_grow_the_switch() {
    let mut sim = SimProcess::start(
        &[
            "--dns",
            "4000-5999",
            "--link",
            "127.0.0.1:0",
            "--control",
            "127.0.0.1:0",
        ],
        Stdio::piped(),
    );
    let link: SocketAddr = sim.link().parse().unwrap();
    let ctl = sim.control();
    let peak_rss_mib = |pid: u32| procfs::memory_mib(pid).unwrap().1;
    let before = peak_rss_mib(sim.child.0.id());

    // A CTI client that starts two monitors and then never reads again.
    let stream = tokio::net::TcpStream::connect(link).await.unwrap();
    let mut out = FramedWrite::new(stream, CstaCodec);
    for (invoke, device) in [(1, "5001"), (2, "4001")] {
        let msg = Message::MonitorStart {
            device: device.into(),
        };
        out.send(encode_frame(InvokeId::new(invoke).unwrap(), &msg, &Dialect::default()).unwrap())
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while ctl.state().await["monitors"].as_array().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "the monitors were not started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // 100,000 rounds: 200,000 hot-desk events on two monitors, 400,000 frames (well over
    // 100 MiB if queued without bound).
    let started = Instant::now();
    let burst = tokio::spawn(async move {
        ctl.post_within(
            "/burst",
            json!({"guest": "5001", "host": "4001", "count": 100_000}),
            Duration::from_secs(60),
        )
        .await
    });
    let (status, reply) = burst.await.unwrap();
    let took = started.elapsed();
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["hotdeskEvents"], 200_000);
    let peak = peak_rss_mib(sim.child.0.id());
    let state = ctl.state().await;
    let _ = sim.child.0.kill();
    let _ = sim.child.0.wait();
    let mut stderr = String::new();
    use std::io::Read;
    sim.child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    println!("burst took {took:?}; peak RSS {before:.0} MiB before, {peak:.0} MiB after");
    assert!(
        peak < before + 64.0,
        "the simulator grew from {before:.0} MiB to {peak:.0} MiB for a link that does not read"
    );
    assert_eq!(
        state["links"][0]["connections"], 0,
        "the link that does not read is still connected: {state}"
    );
    assert!(state["monitors"].as_array().unwrap().is_empty(), "{state}");
    assert!(stderr.contains("dropping a link connection"), "{stderr}");
    assert!(!stderr.contains("panicked at"), "{stderr}");
}
