//! What the tests of a secured NATS connection need beyond a plain `nats-server`:
//!
//! - [`NatsPki`]: a test CA (and an unrelated second one) made at test time with rcgen, and a
//!   server certificate from the first for `127.0.0.1`, as PEM files;
//! - [`NatsOperator`]: NATS's decentralised authentication (operator mode) made at test time:
//!   operator, system account, an account with JetStream and a user, their JWTs signed with
//!   their issuers' nkeys, the server configuration that trusts them (a memory resolver
//!   preloaded with the accounts) and the user's `.creds` file;
//! - [`server_config`]: a `nats-server` configuration file of a test (TLS, JetStream, ...);
//! - [`PendingNode`]: a router process that may never join its cluster (wrong credentials,
//!   an untrusted certificate), so that never prints its ready line: its log is watched
//!   instead.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use super::process::{files_in, ROUTER};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Two unrelated CAs (`ca-a.pem`, `ca-b.pem`) and a server certificate from A valid for
/// `127.0.0.1` and `localhost` (`server.pem`, `server.key`), in a temporary directory.
pub struct NatsPki {
    dir: tempfile::TempDir,
}

impl NatsPki {
    /// Make the CAs and the certificate.
    pub fn new() -> NatsPki {
        let dir = tempfile::Builder::new()
            .prefix("csta-router-nats-pki-")
            .tempdir()
            .unwrap();
        let ca = |name: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(
                rcgen::DnType::CommonName,
                format!("csta-router NATS test CA {name}"),
            );
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
        };
        let (ca_a, ca_b) = (ca("A"), ca("B"));
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "nats-server");
        let server = params.signed_by(&key, &ca_a).unwrap();
        let pki = NatsPki { dir };
        std::fs::write(pki.path("ca-a.pem"), ca_a.pem()).unwrap();
        std::fs::write(pki.path("ca-b.pem"), ca_b.pem()).unwrap();
        std::fs::write(pki.path("server.pem"), server.pem()).unwrap();
        std::fs::write(pki.path("server.key"), key.serialize_pem()).unwrap();
        pki
    }

    /// A file of the set.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Default for NatsPki {
    fn default() -> Self {
        NatsPki::new()
    }
}

/// A `nats-server` configuration file holding `text`, in a new temporary directory (kept as
/// long as the returned handle).
pub fn server_config(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = files_in("csta-router-nats-conf-", &[("nats.conf", text)]);
    let path = dir.path().join("nats.conf");
    (dir, path)
}

/// A path as a quoted string in a `nats-server` configuration or a TOML file.
pub fn quoted(path: &Path) -> String {
    serde_json::to_string(&path.display().to_string()).unwrap()
}

/// An operator, its system account, one account with JetStream and one user of it, each with
/// its nkey and JWT.
pub struct NatsOperator {
    operator: nkeys::KeyPair,
    system: nkeys::KeyPair,
    account: nkeys::KeyPair,
    user: nkeys::KeyPair,
    dir: tempfile::TempDir,
}

impl NatsOperator {
    /// New keys for each.
    pub fn new() -> NatsOperator {
        NatsOperator {
            operator: nkeys::KeyPair::new_operator(),
            system: nkeys::KeyPair::new_account(),
            account: nkeys::KeyPair::new_account(),
            user: nkeys::KeyPair::new_user(),
            dir: tempfile::Builder::new()
                .prefix("csta-router-nats-operator-")
                .tempdir()
                .unwrap(),
        }
    }

    /// The user's nkey seed (the secret of its `.creds` file).
    pub fn user_seed(&self) -> String {
        self.user.seed().unwrap()
    }

    /// The lines of a `nats-server` configuration trusting the operator: the operator's JWT
    /// (in a file), the system account, and a memory resolver preloaded with both accounts.
    pub fn server_lines(&self) -> String {
        let operator = jwt(
            &self.operator,
            &self.operator.public_key(),
            "test-operator",
            serde_json::json!({
                "type": "operator",
                "version": 2,
                "system_account": self.system.public_key(),
            }),
        );
        let operator_file = self.dir.path().join("operator.jwt");
        std::fs::write(&operator_file, &operator).unwrap();
        let system = self.account_jwt(&self.system, "SYS", false);
        let account = self.account_jwt(&self.account, "ROUTERS", true);
        format!(
            "operator: {}\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n  {}: {:?}\n  {}: {:?}\n}}\n",
            quoted(&operator_file),
            self.system.public_key(),
            self.system.public_key(),
            system,
            self.account.public_key(),
            account
        )
    }

    fn account_jwt(&self, account: &nkeys::KeyPair, name: &str, jetstream: bool) -> String {
        let mut limits = serde_json::json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
        });
        if jetstream {
            for key in ["mem_storage", "disk_storage", "streams", "consumer"] {
                limits[key] = serde_json::json!(-1);
            }
        }
        jwt(
            &self.operator,
            &account.public_key(),
            name,
            serde_json::json!({
                "type": "account",
                "version": 2,
                "limits": limits,
                "default_permissions": {"pub": {}, "sub": {}},
            }),
        )
    }

    /// The user's `.creds` file (its JWT, signed by the account, and its seed), written in the
    /// operator's directory: its path.
    pub fn creds_file(&self) -> PathBuf {
        let user = jwt(
            &self.account,
            &self.user.public_key(),
            "router",
            serde_json::json!({
                "type": "user",
                "version": 2,
                "pub": {}, "sub": {},
                "subs": -1, "data": -1, "payload": -1,
            }),
        );
        let text = format!(
            "-----BEGIN NATS USER JWT-----\n{user}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\
             NKEYs are sensitive and should be treated as secrets.\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n",
            self.user_seed()
        );
        let path = self.dir.path().join("router.creds");
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Default for NatsOperator {
    fn default() -> Self {
        NatsOperator::new()
    }
}

/// A NATS JWT: header and claims (`nats` holding `nats`) as base64url JSON, signed by
/// `issuer`'s nkey (ed25519).
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "jti": format!("{:X}{:X}", rand::random::<u64>(), rand::random::<u64>()),
        "iat": iat,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let header = base64url(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = base64url(claims.to_string().as_bytes());
    let signed = format!("{header}.{body}");
    let signature = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", base64url(&signature))
}

/// Base64 with the URL alphabet and no padding, as JWTs are written.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// A router process that has not (yet) joined its cluster: started on a configuration, its
/// log (stderr) in a file, killed when dropped.
pub struct PendingNode {
    child: Child,
    dir: tempfile::TempDir,
}

impl PendingNode {
    /// Start the router on `config` with `RUST_LOG` = `log_filter`.
    pub fn start(name: &str, config: &str, log_filter: &str) -> PendingNode {
        let dir = files_in(&format!("csta-router-{name}-"), &[("router.toml", config)]);
        let child = Command::new(ROUTER)
            .arg("--config")
            .arg(dir.path().join("router.toml"))
            .env("RUST_LOG", log_filter)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("router.log")).unwrap())
            .spawn()
            .unwrap();
        PendingNode { child, dir }
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("router.log")).unwrap_or_default()
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Wait (up to `limit`) until `count` lines of its log hold every one of `words`: those
    /// lines. Fails naming the words, with the log, when they do not come or the process
    /// exits first.
    pub fn wait_lines(&mut self, words: &[&str], count: usize, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        loop {
            let log = self.log();
            let lines: Vec<String> = log
                .lines()
                .filter(|l| words.iter().all(|w| l.contains(w)))
                .map(str::to_owned)
                .collect();
            if lines.len() >= count {
                return lines;
            }
            assert!(
                self.running(),
                "the node exited before logging {count} line(s) with {words:?}:\n{log}"
            );
            assert!(
                Instant::now() < deadline,
                "no {count} line(s) with {words:?} within {limit:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PendingNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
