#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! A node's NATS connection secured (README, "Securing the NATS connection"), on real
//! processes: a `nats-server` requiring a token, a user and password, TLS from a test CA made
//! at test time, or operator-mode JWTs (a `.creds` file); `pbx-sim` as the switch; router
//! nodes as `csta-router` processes.
//!
//! With the right credentials a node joins: it owns the switch, `/readyz` answers 200 and a
//! client's request is answered through the switch. With wrong ones it does not join, keeps
//! retrying, and its log says which `[cluster]` key to check. No secret (token, password,
//! seed — right or wrong) ever appears in a log line (of either node, even at the debug level
//! with the NATS client's trace), in `/metrics` or in `/readyz`.

mod common;
use common::nats::NatsServer;
use common::nats_auth::{quoted, server_config, NatsOperator, NatsPki, PendingNode};
use common::process::{self, RouterProcess, SimProcess, ROUTER};
use common::router::Client;

use serde_json::json;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How long a node with wrong credentials is watched retrying: three attempts.
const RETRIES_WITHIN: Duration = Duration::from_secs(20);

/// The log filter of every node here: everything the router logs at debug, and the NATS
/// client's own trace (which covers the CONNECT it sends).
const VERBOSE: &str = "debug,async_nats=trace";

/// A node that joins, logging at [`VERBOSE`].
fn joined(config: &str) -> RouterProcess {
    RouterProcess::start_with(Some(config), &[], &[("RUST_LOG", VERBOSE)])
}

/// One test at a time: each starts several processes.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The switch of every test: sw1, DNs 4000-4999, a `pbx-sim` process.
fn switch() -> SimProcess {
    SimProcess::sw1()
}

/// Node `node`'s configuration: NATS at `url` with the `[cluster]` lines `auth`, and sw1.
fn node_config(node: &str, url: &str, auth: &str, sim: &SimProcess) -> String {
    format!(
        "[server]\nclient-listen = \"127.0.0.1:0\"\nmetrics-listen = \"127.0.0.1:0\"\n\n[options]\nrequest-timeout = \"2s\"\n\n[cluster]\nname = \"secure\"\nnode = \"{node}\"\nnats = [\"{url}\"]\nlease-ttl = \"2s\"\n{auth}\n\n[[switch]]\nname = \"sw1\"\ndns = [\"4000-4999\"]\n[[switch.link]]\naddress = \"{}\"\npriority = 1\n",
        sim.link()
    )
}

/// Node `node` joined: it owns sw1 (the only node), `/readyz` answers 200 with its link up,
/// and a client's registration is answered by the switch.
async fn assert_serves(node: &RouterProcess, name: &str) {
    node.wait_connected(&["sw1"]).await;
    let (status, body) = node.http_get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("switch sw1 owner {name} (this node)")),
        "{body}"
    );
    let mut client = Client::open(&node.url(), None, 1).await;
    client.register("4001").await;
    let reply = client
        .request(json!({"message": "RequestQueryAddress", "thisDn": "4001"}))
        .await;
    assert!(
        reply["message"].as_str().unwrap().starts_with("Event") && reply["message"] != "EventError",
        "{reply}"
    );
}

/// None of `secrets` in any line the nodes logged, nor in the joined nodes' `/metrics` and
/// `/readyz`; no node panicked. Every node logged verbosely ([`VERBOSE`]): the logs hold the
/// CONNECT messages they sent (with the credentials redacted).
async fn assert_never_shown(secrets: &[&str], joined: &[&RouterProcess], pending: &[&PendingNode]) {
    let mut texts: Vec<(String, String)> = Vec::new();
    for (i, node) in joined.iter().enumerate() {
        let log = node.log();
        assert!(log.contains("write operation: CONNECT"), "{log}");
        texts.push((format!("joined node {i}'s log"), log));
        for path in ["/metrics", "/readyz"] {
            let (_, body) = node.http_get(path).await;
            texts.push((format!("joined node {i}'s {path}"), body));
        }
    }
    for (i, node) in pending.iter().enumerate() {
        let log = node.log();
        assert!(log.contains("write operation: CONNECT"), "{log}");
        texts.push((format!("pending node {i}'s log"), log));
    }
    for (what, text) in &texts {
        assert!(!text.contains("panicked at"), "{what}:\n{text}");
        for secret in secrets {
            let shown: Vec<&str> = text.lines().filter(|l| l.contains(secret)).collect();
            assert!(shown.is_empty(), "{what} shows a secret: {shown:?}");
        }
    }
}

/// The lines of a node that cannot join: at least three attempts, each saying it retries,
/// with all of `words`.
fn retries(node: &mut PendingNode, words: &[&str]) -> Vec<String> {
    let mut all = vec!["cannot join the cluster yet, retrying"];
    all.extend_from_slice(words);
    let lines = node.wait_lines(&all, 3, RETRIES_WITHIN);
    assert!(node.running(), "it gave up:\n{}", node.log());
    lines
}

#[test]
fn a_node_with_the_token_joins_and_one_with_a_wrong_token_says_so_without_showing_either() {
    let _serial = one_at_a_time();
    process::runtime().block_on(async {
        let token = "s3cret-token-of-the-cluster-0042";
        let wrong = "an-outdated-token-of-last-year-77";
        let nats = NatsServer::start_with(true, &["--auth", token]);
        let sim = switch();
        let auth = |t: &str| format!("nats-token = \"{t}\"");
        let a = joined(&node_config("a", &nats.url(), &auth(token), &sim));
        assert_serves(&a, "a").await;

        let mut b = PendingNode::start(
            "node-b",
            &node_config("b", &nats.url(), &auth(wrong), &sim),
            VERBOSE,
        );
        let lines = retries(&mut b, &["refused this node's credentials", "nats-token"]);
        assert!(
            lines[0].contains(&nats.url()) && lines[0].contains("authorization violation"),
            "{lines:?}"
        );
        // Neither the token it sent nor the one it should have is anywhere.
        assert_never_shown(&[token, wrong], &[&a], &[&b]).await;
        // The node without a token at all is told the same.
        let mut c = PendingNode::start("node-c", &node_config("c", &nats.url(), "", &sim), VERBOSE);
        retries(&mut c, &["refused", "nats-token"]);
        assert_never_shown(&[token, wrong], &[&a], &[&b, &c]).await;
        assert_serves(&a, "a").await;
        a.stop();
    });
}

#[test]
fn a_node_with_the_password_joins_and_one_with_a_wrong_password_says_so_without_showing_either() {
    let _serial = one_at_a_time();
    process::runtime().block_on(async {
        let password = "pa55-word-of-the-routers-0099";
        let wrong = "not-the-pa55-word-31337";
        let nats = NatsServer::start_with(true, &["--user", "router", "--pass", password]);
        let sim = switch();
        let auth = |p: &str| format!("nats-user = \"router\"\nnats-password = \"{p}\"");
        let a = joined(&node_config("a", &nats.url(), &auth(password), &sim));
        assert_serves(&a, "a").await;

        let mut b = PendingNode::start(
            "node-b",
            &node_config("b", &nats.url(), &auth(wrong), &sim),
            VERBOSE,
        );
        retries(
            &mut b,
            &[
                "refused this node's credentials",
                "nats-user",
                "nats-password",
            ],
        );
        assert_never_shown(&[password, wrong], &[&a], &[&b]).await;
        a.stop();
    });
}

#[test]
fn a_node_trusting_the_servers_ca_joins_over_tls_and_one_trusting_another_names_the_certificate() {
    let _serial = one_at_a_time();
    process::runtime().block_on(async {
        let pki = NatsPki::new();
        let store = tempfile::tempdir().unwrap();
        let (_conf_dir, conf) = server_config(&format!(
            "tls {{\n  cert_file: {}\n  key_file: {}\n}}\njetstream {{\n  store_dir: {}\n}}\n",
            quoted(&pki.path("server.pem")),
            quoted(&pki.path("server.key")),
            quoted(store.path())
        ));
        let nats = NatsServer::start_with(false, &["-c", conf.to_str().unwrap()]);
        let url = format!("tls://127.0.0.1:{}", nats.port());
        let sim = switch();
        let ca = |file: &str| format!("nats-tls-ca = {}", quoted(&pki.path(file)));
        let a = joined(&node_config("a", &url, &ca("ca-a.pem"), &sim));
        assert_serves(&a, "a").await;
        assert!(a.log().contains("joined the cluster's NATS"), "{}", a.log());

        // Trusting another CA, or only the system's: the certificate is named, and the key.
        let mut b = PendingNode::start(
            "node-b",
            &node_config("b", &url, &ca("ca-b.pem"), &sim),
            "info",
        );
        let lines = retries(&mut b, &["certificate", "nats-tls-ca"]);
        assert!(
            lines[0].contains(&url) && lines[0].contains("not trusted"),
            "{lines:?}"
        );
        let mut c = PendingNode::start("node-c", &node_config("c", &url, "", &sim), "info");
        retries(&mut c, &["certificate", "nats-tls-ca"]);

        // A plain nats:// URL to the TLS server with the CA: upgraded to TLS, and joins.
        let plain = format!("nats://127.0.0.1:{}", nats.port());
        a.stop();
        let d = joined(&node_config("d", &plain, &ca("ca-a.pem"), &sim));
        assert_serves(&d, "d").await;
        d.stop();
    });
}

#[test]
fn a_node_with_a_creds_file_joins_an_operator_mode_server_and_an_unknown_user_is_refused() {
    let _serial = one_at_a_time();
    process::runtime().block_on(async {
        let operator = NatsOperator::new();
        let store = tempfile::tempdir().unwrap();
        let (_conf_dir, conf) = server_config(&format!(
            "{}jetstream {{\n  store_dir: {}\n}}\n",
            operator.server_lines(),
            quoted(store.path())
        ));
        let nats = NatsServer::start_with(false, &["-c", conf.to_str().unwrap()]);
        let sim = switch();
        let creds = |path: &Path| format!("nats-creds = {}", quoted(path));
        let a = joined(&node_config(
            "a",
            &nats.url(),
            &creds(&operator.creds_file()),
            &sim,
        ));
        assert_serves(&a, "a").await;

        // A user of another operator (its account unknown to this server).
        let stranger = NatsOperator::new();
        let mut b = PendingNode::start(
            "node-b",
            &node_config("b", &nats.url(), &creds(&stranger.creds_file()), &sim),
            VERBOSE,
        );
        retries(&mut b, &["refused this node's credentials", "nats-creds"]);
        // Neither user's seed is anywhere; nor a password or token the server never wanted.
        let (seed, other_seed) = (operator.user_seed(), stranger.user_seed());
        assert_never_shown(&[&seed, &other_seed], &[&a], &[&b]).await;
        a.stop();
    });
}

#[test]
fn a_creds_file_that_is_missing_or_malformed_stops_the_start_naming_the_key_and_the_file() {
    let _serial = one_at_a_time();
    let sim = switch();
    let operator = NatsOperator::new();
    let dir = tempfile::tempdir().unwrap();
    let seed = operator.user_seed();
    let cases = [
        ("missing.creds", None, "cannot read"),
        ("empty.creds", Some(String::new()), "no user JWT"),
        (
            "seed-only.creds",
            Some(format!(
                "-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
            )),
            "no user JWT",
        ),
        (
            "jwt-only.creds",
            Some(
                std::fs::read_to_string(operator.creds_file())
                    .unwrap()
                    .replace(&seed, ""),
            ),
            "no NKEY seed",
        ),
    ];
    for (name, text, words) in cases {
        let path = dir.path().join(name);
        if let Some(text) = &text {
            std::fs::write(&path, text).unwrap();
        }
        let config = node_config(
            "a",
            "nats://127.0.0.1:4222",
            &format!("nats-creds = {}", quoted(&path)),
            &sim,
        );
        let scratch = process::files(&[("router.toml", &config)]);
        let log = scratch.path().join("router.log");
        let mut child = Command::new(ROUTER)
            .arg("--config")
            .arg(scratch.path().join("router.toml"))
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        // A start that went on would retry NATS for ever: killed after 10 s.
        let status = process::wait_exit(&mut child, Duration::from_secs(10));
        let stderr = std::fs::read_to_string(&log).unwrap();
        assert!(
            status.is_some_and(|s| !s.success()),
            "{name}: the start did not stop ({status:?}):\n{stderr}"
        );
        assert!(
            stderr.contains("cluster.nats-creds")
                && stderr.contains(&path.display().to_string())
                && stderr.contains("router.toml")
                && stderr.contains(words),
            "{name}:\n{stderr}"
        );
        assert!(
            !stderr.contains(&seed),
            "{name}: the seed is shown:\n{stderr}"
        );
        assert!(!stderr.contains("panicked at"), "{stderr}");
    }
}
