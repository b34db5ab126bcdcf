#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! TLS on both sides of the router, with certificates generated at test time (rcgen) into a
//! temporary directory:
//!
//! - the client endpoint with `tls-cert`/`tls-key`: a wss client trusting the test CA opens,
//!   registers and hot-desks; a plain ws:// client and a wss client trusting another CA fail;
//! - CSTA links with `tls = true`: to an embedded simulator (certificate checked against the
//!   link's IP) and to the `pbx-sim` binary (`--tls-cert`, checked against
//!   `tls-server-name`), both trusted through `tls-ca`: links up, hot-desk round trips;
//! - a switch whose certificate comes from a CA the router does not trust: the link never
//!   comes up (SwitchStatusQuery, `csta_router_link_up`, `EventServerConnected`), the log says
//!   it is a certificate problem and names `tls-ca`, a private service gets 54;
//! - `tls-insecure-skip-verify`: the same switch is reached, with a warning;
//! - configuration errors name the key and the file.

mod common;
use common::{config, log_capture, process, router, sim_control};

use csta_router::config::Config;
use csta_router::link::{LinkState, SwitchStatusQuery};
use csta_router::server::{start, Running};
use log_capture::{log_buffer, log_lines_with};
use process::SimProcess;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use router::{assert_no_panic, wait_links_up, watch_panics, Client};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::Connector;

// ----- certificates --------------------------------------------------------------------------

/// Two unrelated CAs, A and B, and a server certificate from A valid for `localhost` and
/// `127.0.0.1`, all written as PEM files into a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = |name: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(
                rcgen::DnType::CommonName,
                format!("csta-router test CA {name}"),
            );
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
        };
        let (ca_a, ca_b) = (ca("A"), ca("B"));
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "switch");
        let server = params.signed_by(&key, &ca_a).unwrap();
        let pki = Pki { dir };
        std::fs::write(pki.path("ca-a.pem"), ca_a.pem()).unwrap();
        std::fs::write(pki.path("ca-b.pem"), ca_b.pem()).unwrap();
        std::fs::write(pki.path("server.pem"), server.pem()).unwrap();
        std::fs::write(pki.path("server.key"), key.serialize_pem()).unwrap();
        // Another key, matching no certificate here.
        std::fs::write(
            pki.path("other.key"),
            KeyPair::generate().unwrap().serialize_pem(),
        )
        .unwrap();
        std::fs::write(pki.path("garbage.pem"), "this is not PEM\n").unwrap();
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A path as a TOML string.
    fn toml(&self, name: &str) -> String {
        toml_str(&self.path(name))
    }

    /// A client configuration trusting only the CA in `ca` (built here, independently of the
    /// router's TLS helpers).
    fn client(&self, ca: &str) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(self.path(ca)).unwrap();
        use rustls::pki_types::pem::PemObject;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

fn toml_str(p: &Path) -> String {
    toml::Value::String(p.display().to_string()).to_string()
}

// ----- router helpers ------------------------------------------------------------------------

/// The `[options]` of every configuration here: quick timeouts and reconnects.
const OPTIONS: &str = "request-timeout = \"800ms\"\nkpl-interval = \"0s\"\nreconnect-min = \"20ms\"\nreconnect-max = \"200ms\"";

/// The keys of an embedded simulator serving TLS with the test server certificate, and of its
/// switch trusting the CA in `ca` (none: `extra` says how the certificate is checked).
fn simulator_tls(pki: &Pki, ca: Option<&str>, extra: &str) -> String {
    let ca = ca
        .map(|c| format!("tls-ca = {}\n", pki.toml(c)))
        .unwrap_or_default();
    format!(
        "tls = true\n{ca}{extra}simulator-tls-cert = {}\nsimulator-tls-key = {}",
        pki.toml("server.pem"),
        pki.toml("server.key")
    )
}

async fn start_router(text: &str) -> Running {
    watch_panics();
    log_buffer();
    start(Config::parse(text, "tls-test.toml").unwrap())
        .await
        .unwrap()
}

/// Hot-desk `guest` to `host` and cancel, checking the replies and the events on both
/// monitors.
async fn hot_desk_round_trip(c: &mut Client, guest: &str, host: &str) {
    c.register(guest).await;
    c.register(host).await;
    let reply = c
        .request(
            json!({"message": "RequestPrivateService", "thisDn": guest, "privateMsgId": 1,
                        "extensions": {"HOST_DN": host}}),
        )
        .await;
    assert_eq!(reply["message"], "EventPrivateInfo", "{reply}");
    assert_eq!(reply["otherDn"], host, "{reply}");
    for _ in 0..2 {
        let ev = c.recv().await;
        assert_eq!(ev["message"], "EventPrivateInfo", "{ev}");
        assert_eq!(ev["privateMsgId"], 1, "{ev}");
        assert_eq!(
            (&ev["thisDn"], &ev["otherDn"]),
            (&json!(guest), &json!(host))
        );
    }
    let reply = c
        .request(json!({"message": "RequestPrivateService", "thisDn": guest, "privateMsgId": 2}))
        .await;
    assert_eq!(reply["message"], "EventPrivateInfo", "{reply}");
    for _ in 0..2 {
        let ev = c.recv().await;
        assert_eq!(ev["privateMsgId"], 2, "{ev}");
    }
}

async fn wss_connect(
    url: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        url,
        None,
        false,
        Some(Connector::Rustls(config)),
    );
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok((ws, _))) => Ok(Client { ws }),
        Ok(Err(e)) => Err(e),
        Err(_) => panic!("{url}: no answer within 5 s"),
    }
}

// ----- pbx-sim binary ------------------------------------------------------------------------

/// The `pbx-sim` binary with `--tls-cert`/`--tls-key`.
fn tls_sim(pki: &Pki) -> SimProcess {
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let args = [
        "--name",
        "swp",
        "--dns",
        "6000-6999",
        "--link",
        "127.0.0.1:0",
    ];
    let tls = [
        "--tls-cert".as_ref(),
        cert.as_os_str(),
        "--tls-key".as_ref(),
        key.as_os_str(),
    ];
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).chain(tls).collect();
    SimProcess::start(&args, Stdio::inherit())
}

// ----- tests ---------------------------------------------------------------------------------

#[actix_rt::test]
async fn wss_client_endpoint_opens_registers_and_hot_desks_and_plain_ws_fails() {
    let t0 = Instant::now();
    let pki = Pki::new();
    let server = format!(
        "tls-cert = {}\ntls-key = {}",
        pki.toml("server.pem"),
        pki.toml("server.key")
    );
    let text = config::head(&server, OPTIONS)
        + &config::simulated("swc", &["4000-4999", "5000-5999"], "", 1);
    let running = start_router(&text).await;
    wait_links_up(&running).await;
    let port = running.client_addr.port();

    // A client trusting the test CA, by name and by IP address.
    for host in ["localhost", "127.0.0.1"] {
        let url = format!("wss://{host}:{port}/v1");
        let mut c = wss_connect(&url, pki.client("ca-a.pem")).await.unwrap();
        let reply = c.open_session(None, 1).await;
        assert_eq!(reply["switches"][0]["linkState"], "connected", "{reply}");
        let (guest, host_dn) = if host == "localhost" {
            ("5001", "4001")
        } else {
            ("5002", "4002")
        };
        hot_desk_round_trip(&mut c, guest, host_dn).await;
        c.expect_nothing().await;
    }

    // Plain ws:// on the wss endpoint: the TLS listener sees no ClientHello and drops it.
    let plain = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/v1")),
    )
    .await
    .expect("a plain ws:// attempt must fail, not hang");
    assert!(plain.is_err(), "a plain ws:// connection was accepted");

    // A client that does not trust the router's CA refuses the endpoint.
    let wrong_ca = wss_connect(
        &format!("wss://localhost:{port}/v1"),
        pki.client("ca-b.pem"),
    )
    .await;
    match wrong_ca {
        Err(e) => assert!(
            e.to_string().to_lowercase().contains("certificate"),
            "unexpected error: {e}"
        ),
        Ok(_) => panic!("a client trusting another CA connected"),
    }

    // The endpoint still serves after the failed attempts.
    let mut c = wss_connect(
        &format!("wss://localhost:{port}/v1"),
        pki.client("ca-a.pem"),
    )
    .await
    .unwrap();
    c.open_session(None, 1).await;
    running.stop().await;
    assert_no_panic();
    eprintln!("wss test took {:?}", t0.elapsed());
}

#[actix_rt::test]
async fn switch_links_over_tls_to_the_embedded_simulator_and_to_pbx_sim() {
    let t0 = Instant::now();
    let pki = Pki::new();
    let sim = tls_sim(&pki);
    // The embedded simulator's certificate is checked against the link's IP (the default);
    // the pbx-sim binary's (--tls-cert) against tls-server-name.
    let pbx_sim = format!(
        "tls = true\ntls-ca = {}\ntls-server-name = \"localhost\"",
        pki.toml("ca-a.pem")
    );
    let text = config::head("", OPTIONS)
        + &config::simulated(
            "swt",
            &["4000-4999", "5000-5999"],
            &simulator_tls(&pki, Some("ca-a.pem"), ""),
            1,
        )
        + &config::switch("swp", &["6000-6999"], &pbx_sim, &[&sim.link()]);
    let running = start_router(&text).await;
    wait_links_up(&running).await;
    let control = sim_control::SimControl {
        addr: running.simulators[0].control_addr().unwrap(),
    };
    let state = control.state().await;
    assert_eq!(state["links"][0]["connections"], 1, "{state}");

    let mut c = Client::connect(&format!("ws://{}/v1", running.client_addr)).await;
    let reply = c.open_session(None, 2).await;
    assert_eq!(
        reply["switches"],
        json!([
            {"name": "swt", "linkState": "connected", "simulated": true},
            {"name": "swp", "linkState": "connected", "simulated": false}
        ]),
        "{reply}"
    );
    hot_desk_round_trip(&mut c, "5001", "4001").await;
    hot_desk_round_trip(&mut c, "6001", "6002").await;
    // A hot-desk from the phone reaches the client over the TLS link too.
    control
        .post_ok("/hotdesk", json!({"guest": "5001", "host": "4001"}))
        .await;
    for _ in 0..2 {
        let ev = c.recv().await;
        assert_eq!(
            (&ev["message"], &ev["privateMsgId"], &ev["switch"]),
            (&json!("EventPrivateInfo"), &json!(1), &json!("swt")),
            "{ev}"
        );
    }
    // A dropped TLS connection is reconnected (over TLS) like any other.
    control.post_ok("/faults/drop", json!({})).await;
    let ev = c.recv().await;
    assert_eq!(ev["message"], "EventLinkDisconnected", "{ev}");
    let ev = c.recv().await;
    assert_eq!(ev["message"], "EventLinkConnected", "{ev}");
    let reply = c
        .request(json!({"message": "RequestPrivateService", "thisDn": "5001", "privateMsgId": 2}))
        .await;
    assert_eq!(reply["message"], "EventPrivateInfo", "{reply}");
    let refused: Vec<String> = log_lines_with("certificate problem")
        .into_iter()
        .filter(|l| l.contains("swt") || l.contains("swp"))
        .collect();
    assert!(
        refused.is_empty(),
        "a trusted switch was refused: {refused:?}"
    );
    running.stop().await;
    drop(sim);
    assert_no_panic();
    eprintln!("TLS links test took {:?}", t0.elapsed());
}

#[actix_rt::test]
async fn a_switch_certificate_from_an_unknown_ca_is_refused() {
    let t0 = Instant::now();
    let pki = Pki::new();
    // The simulator's certificate is from CA A; the router trusts CA B only.
    let text = config::head("", OPTIONS)
        + &config::simulated(
            "swu",
            &["4000-4999", "5000-5999"],
            &simulator_tls(&pki, Some("ca-b.pem"), ""),
            1,
        );
    let running = start_router(&text).await;
    // Long enough for several attempts (reconnect-max is 200 ms).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let sw = running.shared.switches.get(0).unwrap();
    assert!(!sw.link_up.load(Ordering::Relaxed), "the link came up");
    let status = sw
        .handle
        .get()
        .unwrap()
        .addr
        .send(SwitchStatusQuery)
        .await
        .unwrap();
    assert_eq!(status.active, None, "{status:?}");
    assert_eq!(status.links, vec![LinkState::Down], "{status:?}");
    let metrics = csta_router::metrics::render(&running.shared.gauges());
    let up: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("csta_router_link_up{") && l.contains("switch=\"swu\""))
        .collect();
    assert!(
        !up.is_empty() && up.iter().all(|l| l.ends_with(" 0")),
        "{up:?}"
    );
    // The simulator never got a CSTA connection: every handshake was refused.
    let control = sim_control::SimControl {
        addr: running.simulators[0].control_addr().unwrap(),
    };
    let state = control.state().await;
    assert_eq!(state["links"][0]["connections"], 0, "{state}");
    // The log says what to fix, at warn level, more than once (each attempt).
    let lines: Vec<String> = log_lines_with("certificate problem")
        .into_iter()
        .filter(|l| l.contains("swu"))
        .collect();
    assert!(lines.len() >= 2, "{lines:?}");
    assert!(
        lines[0].contains("WARN") && lines[0].contains("tls-ca") && lines[0].contains("CA"),
        "{lines:?}"
    );

    let mut c = Client::connect(&format!("ws://{}/v1", running.client_addr)).await;
    let reply = c
        .request(json!({"message": "RequestOpen", "protocolVersion": 1, "application": "tls-test"}))
        .await;
    assert_eq!(reply["switches"][0]["linkState"], "disconnected", "{reply}");
    let ev = c.recv().await;
    assert_eq!(ev["message"], "EventLinkDisconnected", "{ev}");
    c.register("5001").await;
    let reply = c
        .request(
            json!({"message": "RequestPrivateService", "thisDn": "5001", "privateMsgId": 1,
                        "extensions": {"HOST_DN": "4001"}}),
        )
        .await;
    assert_eq!(
        (&reply["message"], &reply["errorCode"]),
        (&json!("EventError"), &json!(54)),
        "{reply}"
    );
    running.stop().await;
    assert_no_panic();
    eprintln!("unknown CA test took {:?}", t0.elapsed());
}

#[actix_rt::test]
async fn insecure_skip_verify_reaches_the_switch_with_a_warning() {
    let pki = Pki::new();
    let insecure = "tls-insecure-skip-verify = true\ntls-server-name = \"not-the-name.example\"\n";
    let text = config::head("", OPTIONS)
        + &config::switch(
            "swi",
            &["4000-4999"],
            &format!("simulated = true\n{}", simulator_tls(&pki, None, insecure)),
            &["127.0.0.1:0"],
        );
    let running = start_router(&text).await;
    wait_links_up(&running).await;
    let lines: Vec<String> = log_lines_with("WITHOUT certificate verification")
        .into_iter()
        .filter(|l| l.contains("swi"))
        .collect();
    assert!(!lines.is_empty(), "no warning about the unverified link");
    running.stop().await;
    assert_no_panic();
}

#[test]
fn tls_configuration_errors_name_the_key_and_the_file() {
    let pki = Pki::new();
    let switch = |extra: &str| {
        format!(
            "[[switch]]\nname = \"a\"\ndns = [\"5000-5999\"]\n{extra}\n[[switch.link]]\naddress = \"127.0.0.1:1\"\n"
        )
    };
    let err = |text: String| Config::parse(&text, "bad.toml").unwrap_err().to_string();
    let check = |text: String, key: &str, also: &[&str]| {
        let e = err(text);
        assert!(
            e.contains("bad.toml") && e.contains(&format!("`{key}`")),
            "{e}"
        );
        for a in also {
            assert!(e.contains(a), "{e} should mention {a}");
        }
    };
    let missing = toml_str(&pki.path("missing.pem"));
    let server = |cert: &str, key: &str| {
        format!(
            "[server]\ntls-cert = {}\ntls-key = {}\n{}",
            pki.toml(cert),
            pki.toml(key),
            switch("")
        )
    };
    // Both or neither.
    check(
        format!(
            "[server]\ntls-cert = {}\n{}",
            pki.toml("server.pem"),
            switch("")
        ),
        "server.tls-key",
        &["both"],
    );
    // Missing file, garbage, a key where the certificate should be, a key of another cert.
    check(
        format!(
            "[server]\ntls-cert = {missing}\ntls-key = {}\n{}",
            pki.toml("server.key"),
            switch("")
        ),
        "server.tls-cert",
        &["missing.pem"],
    );
    check(
        server("garbage.pem", "server.key"),
        "server.tls-cert",
        &["garbage.pem", "no certificate"],
    );
    check(
        server("server.pem", "server.pem"),
        "server.tls-key",
        &["server.pem", "no private key"],
    );
    check(
        server("server.pem", "other.key"),
        "server.tls-key",
        &["other.key"],
    );
    // Switch side.
    check(
        switch(&format!("tls = true\ntls-ca = {}", pki.toml("garbage.pem"))),
        "switch[0].tls-ca",
        &["garbage.pem"],
    );
    check(
        switch(&format!("tls = true\ntls-ca = {missing}")),
        "switch[0].tls-ca",
        &["missing.pem"],
    );
    check(
        switch(&format!("tls-ca = {}", pki.toml("ca-a.pem"))),
        "switch[0].tls-ca",
        &["tls = true"],
    );
    check(
        switch("tls = true\ntls-server-name = \"not a name\""),
        "switch[0].tls-server-name",
        &[],
    );
    check(
        switch(&format!(
            "tls = true\ntls-insecure-skip-verify = true\ntls-ca = {}",
            pki.toml("ca-a.pem")
        )),
        "switch[0].tls-insecure-skip-verify",
        &[],
    );
    check(
        switch("simulated = true\ntls = true"),
        "switch[0].simulator-tls-cert",
        &[],
    );
    check(
        switch(&format!(
            "simulated = true\ntls = true\nsimulator-tls-cert = {}\nsimulator-tls-key = {}",
            pki.toml("server.pem"),
            pki.toml("garbage.pem")
        )),
        "switch[0].simulator-tls-key",
        &["garbage.pem"],
    );
    check(
        switch(&format!(
            "tls = true\nsimulator-tls-cert = {}\nsimulator-tls-key = {}",
            pki.toml("server.pem"),
            pki.toml("server.key")
        )),
        "switch[0].simulator-tls-cert",
        &["not simulated"],
    );
    // And a good one loads.
    let ok = Config::parse(
        &format!(
            "[server]\ntls-cert = {}\ntls-key = {}\n{}",
            pki.toml("server.pem"),
            pki.toml("server.key"),
            switch(&format!(
                "simulated = true\ntls = true\ntls-ca = {}\nsimulator-tls-cert = {}\nsimulator-tls-key = {}",
                pki.toml("ca-a.pem"),
                pki.toml("server.pem"),
                pki.toml("server.key")
            ))
        ),
        "good.toml",
    )
    .unwrap();
    assert!(ok.server.tls_config.is_some());
    assert!(ok.switch[0].link_tls.is_some() && ok.switch[0].simulator_tls.is_some());
    assert!(ok.switch_configs()[0].settings.tls.is_some());
}
