//! The checks of `[cluster]` (README, "Cluster"): names that NATS subjects and buckets can
//! carry, reachable-looking NATS URLs without credentials in them, timers and replicas within
//! what the lease and JetStream accept, and no embedded simulator (each node would start its
//! own copy of the "same" switch).

use super::sections::ClusterConfig;
use super::{Bad, Config};
use std::time::Duration;

/// The shortest `lease-ttl`: a lease renewed every third of it over a network, with the
/// fence's margin (at least 250 ms) taken off, needs about a second to be of any use.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(1);

/// The most JetStream replicas a stream may have.
pub const MAX_REPLICAS: usize = 5;

impl Config {
    /// Check `[cluster]` when present, and fill in the node name from the host name when it
    /// is not set.
    pub(super) fn check_cluster(&mut self) -> Result<(), Bad> {
        let Some(cluster) = self.cluster.as_mut() else {
            return Ok(());
        };
        if let Some(i) = self.switch.iter().position(|sw| sw.simulated) {
            return Err((
                format!("switch[{i}].simulated"),
                format!(
                    "simulated = true is refused with [cluster]: clustered nodes talk to real switches or to pbx-sim processes (each node would otherwise start its own copy of switch {:?}); remove simulated = true, or the [cluster] section",
                    self.switch[i].name
                ),
            ));
        }
        check_names(cluster)?;
        check_nats(cluster)?;
        check_values(cluster)
    }
}

/// Whether a name can be part of a NATS subject, bucket and stream name as it is.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The host name as a node name: `/etc/hostname`, else `$HOSTNAME`, with every character
/// other than `[A-Za-z0-9_-]` (the dots of a full name) written as `-`. `None` when neither
/// names a host.
pub fn host_node_name() -> Option<String> {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().map(|h| h.trim().to_owned()))
        .filter(|h| !h.is_empty())?;
    Some(
        host.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect(),
    )
}

fn check_names(cluster: &mut ClusterConfig) -> Result<(), Bad> {
    let plain = "use only A-Z, a-z, 0-9, _ and -";
    if cluster.name.is_empty() {
        return Err((
            "cluster.name".into(),
            format!("must be set: the cluster's name prefixes every NATS subject, bucket and stream it uses ({plain})"),
        ));
    }
    if !is_plain_name(&cluster.name) {
        return Err((
            "cluster.name".into(),
            format!(
                "{:?} cannot be part of NATS subject and bucket names: {plain}",
                cluster.name
            ),
        ));
    }
    match &cluster.node {
        Some(node) if !is_plain_name(node) => Err((
            "cluster.node".into(),
            format!("{node:?} cannot be part of NATS subjects: {plain}"),
        )),
        Some(_) => Ok(()),
        None => {
            cluster.node = Some(host_node_name().ok_or_else(|| {
                (
                    "cluster.node".to_owned(),
                    "not set, and no host name was found (/etc/hostname, $HOSTNAME) to use instead: set node = \"a-name-unique-in-the-cluster\"".to_owned(),
                )
            })?);
            Ok(())
        }
    }
}

fn check_nats(cluster: &ClusterConfig) -> Result<(), Bad> {
    if cluster.nats.is_empty() {
        return Err((
            "cluster.nats".into(),
            "at least one NATS URL is needed, e.g. nats = [\"nats://127.0.0.1:4222\"]".into(),
        ));
    }
    for (i, url) in cluster.nats.iter().enumerate() {
        let key = format!("cluster.nats[{i}]");
        // Not echoed: it would print the password it holds.
        if url.contains('@') {
            return Err((key, "holds credentials (user:password@host): URLs are logged; put them in nats-user and nats-password, or nats-token".into()));
        }
        let lower = url.trim().to_ascii_lowercase();
        let scheme = lower.starts_with("nats://") || lower.starts_with("tls://");
        if !scheme || url.trim().parse::<async_nats::ServerAddr>().is_err() {
            return Err((
                key,
                format!("{url:?} is not a NATS URL: write nats://host:port (or tls://host:port)"),
            ));
        }
    }
    if cluster.nats_password.is_some() && cluster.nats_user.is_none() {
        return Err((
            "cluster.nats-password".into(),
            "is set without nats-user: a NATS password goes with a user".into(),
        ));
    }
    let empty = [
        (
            "cluster.nats-token",
            cluster.nats_token.as_ref().map(|s| s.expose().is_empty()),
        ),
        (
            "cluster.nats-password",
            cluster
                .nats_password
                .as_ref()
                .map(|s| s.expose().is_empty()),
        ),
        (
            "cluster.nats-user",
            cluster.nats_user.as_ref().map(|s| s.is_empty()),
        ),
    ];
    if let Some((key, _)) = empty.iter().find(|(_, e)| *e == Some(true)) {
        return Err((
            (*key).into(),
            "must not be empty (remove the key instead)".into(),
        ));
    }
    if let Some(path) = &cluster.nats_creds {
        check_creds(path).map_err(|e| ("cluster.nats-creds".to_owned(), e))?;
    }
    if let Some(path) = &cluster.nats_tls_ca {
        crate::tls::client_config(crate::tls::Trust::CaFile(path))
            .map_err(|e| ("cluster.nats-tls-ca".to_owned(), e.to_string()))?;
    }
    Ok(())
}

/// A NATS credentials file (`nats-creds`) holds a user JWT and a user nkey seed, each between
/// its `-----BEGIN ...-----` and `------END ...------` lines, as `nsc` and `nats` write it.
/// Checked at start so that a wrong file stops the start naming it, rather than the node
/// retrying for ever; nothing of the file is echoed (the seed is a secret).
fn check_creds(path: &std::path::Path) -> Result<(), String> {
    let file = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {file}: {e}"))?;
    let block = |begin: &str| {
        text.lines()
            .skip_while(|l| !(l.starts_with("---") && l.contains(begin)))
            .nth(1)
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("---"))
    };
    let looks = "a NATS credentials file (.creds, as nsc or the nats tool writes it) holds a user JWT and a user nkey seed";
    match block("BEGIN NATS USER JWT") {
        Some(jwt) if jwt.starts_with("eyJ") => {}
        _ => {
            return Err(format!(
                "{file} holds no user JWT (no -----BEGIN NATS USER JWT----- block): {looks}"
            ))
        }
    }
    match block("BEGIN USER NKEY SEED") {
        Some(seed) if seed.starts_with("SU") => Ok(()),
        _ => Err(format!("{file} holds no NKEY seed of a user (no -----BEGIN USER NKEY SEED----- block with an SU... seed): {looks}")),
    }
}

fn check_values(cluster: &ClusterConfig) -> Result<(), Bad> {
    if cluster.lease_ttl.0 < MIN_LEASE_TTL {
        return Err((
            "cluster.lease-ttl".into(),
            format!(
                "{} is shorter than 1s: the lease is renewed every third of it over the network, and the owner stops acting on its switches max(250ms, lease-ttl/5) before it ends",
                humantime::format_duration(cluster.lease_ttl.0)
            ),
        ));
    }
    if cluster.replay_window.0.is_zero() {
        return Err((
            "cluster.replay-window".into(),
            "must be more than 0 (JetStream would read 0 as \"keep every event for ever\")".into(),
        ));
    }
    if !(1..=MAX_REPLICAS).contains(&cluster.replicas) {
        return Err((
            "cluster.replicas".into(),
            format!("{} is not 1 to {MAX_REPLICAS}: JetStream keeps 1 to {MAX_REPLICAS} copies (3 on a 3-server NATS cluster)", cluster.replicas),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::{Config, Rebalance};
    use std::time::Duration;

    const SWITCH: &str =
        "[[switch]]\nname = \"a\"\ndns = [\"5000-5999\"]\n[[switch.link]]\naddress = \"127.0.0.1:1\"\n";

    fn with_cluster(lines: &str) -> Result<Config, String> {
        Config::parse(&format!("{SWITCH}\n[cluster]\n{lines}\n"), "node.toml")
            .map_err(|e| e.to_string())
    }

    fn refused(lines: &str, key: &str, words: &str) {
        let e = with_cluster(lines).unwrap_err();
        assert!(
            e.contains("node.toml") && e.contains(key) && e.contains(words),
            "{lines}: {e}"
        );
    }

    const OK: &str = "name = \"cc-north\"\nnode = \"a\"\nnats = [\"nats://127.0.0.1:4222\"]";

    #[test]
    fn defaults() {
        let c = with_cluster(OK).unwrap();
        let cluster = c.cluster.unwrap();
        assert_eq!(cluster.lease_ttl.0, Duration::from_secs(3));
        assert_eq!(cluster.replicas, 1);
        assert_eq!(cluster.replay_window.0, Duration::from_secs(300));
        assert_eq!(cluster.rebalance, Rebalance::Auto);
        assert_eq!(c.server.session_linger.0, Duration::from_secs(60));
        let alone = Config::parse(SWITCH, "x.toml").unwrap();
        assert!(alone.cluster.is_none());
    }

    #[test]
    fn every_key_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let (creds, ca) = (dir.path().join("r.creds"), dir.path().join("ca.pem"));
        std::fs::write(&creds, CREDS).unwrap();
        std::fs::write(&ca, a_ca_certificate()).unwrap();
        let c = with_cluster(&format!(
            "{OK}\nlease-ttl = \"2s\"\nreplicas = 3\nreplay-window = \"10m\"\nrebalance = \"off\"\nnats-user = \"router\"\nnats-password = \"pw-123456\"\nnats-creds = {:?}\nnats-tls-ca = {:?}",
            creds.display().to_string(),
            ca.display().to_string()
        ))
        .unwrap();
        let cluster = c.cluster.unwrap();
        assert_eq!(cluster.lease_ttl.0, Duration::from_secs(2));
        assert_eq!((cluster.replicas, cluster.rebalance), (3, Rebalance::Off));
        assert_eq!(cluster.nats_password.unwrap().expose(), "pw-123456");
        assert_eq!(cluster.nats_creds.unwrap(), creds);
    }

    /// A credentials file of the shape `nsc` writes (the JWT and the seed made up).
    const CREDS: &str = "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.c2ln\n------END NATS USER JWT------\n\n************************* IMPORTANT *************************\nNKEY Seed printed below can be used to sign and prove identity.\n\n-----BEGIN USER NKEY SEED-----\nSUAMADEUPSEEDTHATISNOTREALBUTLOOKSLIKEONE0000000000000000\n------END USER NKEY SEED------\n";

    fn a_ca_certificate() -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn a_creds_file_and_a_ca_file_are_checked_without_echoing_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let seed = "SUAMADEUPSEEDTHATISNOTREALBUTLOOKSLIKEONE0000000000000000";
        for (name, text, words) in [
            ("empty.creds", String::new(), "no user JWT"),
            (
                "seed.creds",
                CREDS.lines().skip(5).collect::<Vec<_>>().join("\n"),
                "no user JWT",
            ),
            ("jwt.creds", CREDS.replace(seed, ""), "no NKEY seed"),
            ("token.creds", format!("{seed}\n"), "no user JWT"),
        ] {
            let path = file(name, &text);
            let e = with_cluster(&format!("{OK}\nnats-creds = {path:?}")).unwrap_err();
            assert!(
                e.contains("node.toml")
                    && e.contains("cluster.nats-creds")
                    && e.contains(&path)
                    && e.contains(words),
                "{name}: {e}"
            );
            assert!(!e.contains(seed), "{e}");
        }
        for (name, text, words) in [
            (
                "garbage.pem",
                "not a certificate\n".to_owned(),
                "no certificate",
            ),
            ("creds.pem", CREDS.to_owned(), "not a valid PEM file"),
        ] {
            let path = file(name, &text);
            let e = with_cluster(&format!("{OK}\nnats-tls-ca = {path:?}")).unwrap_err();
            assert!(
                e.contains("cluster.nats-tls-ca") && e.contains(&path) && e.contains(words),
                "{name}: {e}"
            );
            assert!(!e.contains(seed), "{e}");
        }
        let ca = file("ca.pem", &a_ca_certificate());
        assert!(with_cluster(&format!("{OK}\nnats-tls-ca = {ca:?}")).is_ok());
    }

    #[test]
    fn the_node_defaults_to_the_host_name() {
        let Some(host) = super::host_node_name() else {
            // Nothing to default to: the configuration is refused naming the key.
            refused(
                "name = \"c\"\nnats = [\"nats://127.0.0.1:4222\"]",
                "cluster.node",
                "host name",
            );
            return;
        };
        let c = with_cluster("name = \"c\"\nnats = [\"nats://127.0.0.1:4222\"]").unwrap();
        assert_eq!(c.cluster.unwrap().node.unwrap(), host);
        assert!(super::is_plain_name(&host), "{host}");
    }

    #[test]
    fn names_must_fit_in_subjects() {
        refused(
            "nats = [\"nats://127.0.0.1:4222\"]",
            "cluster.name",
            "must be set",
        );
        refused(
            "name = \"cc.north\"\nnats = [\"nats://127.0.0.1:4222\"]",
            "cluster.name",
            "A-Z",
        );
        refused(
            "name = \"c\"\nnode = \"a b\"\nnats = [\"nats://127.0.0.1:4222\"]",
            "cluster.node",
            "A-Z",
        );
    }

    #[test]
    fn nats_urls_are_checked() {
        refused("name = \"c\"\nnode = \"a\"", "cluster.nats", "at least one");
        refused(
            "name = \"c\"\nnode = \"a\"\nnats = [\"http://127.0.0.1:4222\"]",
            "cluster.nats[0]",
            "not a NATS URL",
        );
        refused(
            "name = \"c\"\nnode = \"a\"\nnats = [\"nats://127.0.0.1:4222\", \"127.0.0.1:4223\"]",
            "cluster.nats[1]",
            "not a NATS URL",
        );
        assert!(with_cluster(
            "name = \"c\"\nnode = \"a\"\nnats = [\"nats://n1:4222\", \"tls://n2:4222\"]"
        )
        .is_ok());
    }

    #[test]
    fn limits() {
        refused(
            &format!("{OK}\nlease-ttl = \"500ms\""),
            "cluster.lease-ttl",
            "shorter than 1s",
        );
        refused(
            &format!("{OK}\nlease-ttl = \"25h\""),
            "cluster.lease-ttl",
            "longer than",
        );
        refused(
            &format!("{OK}\nreplay-window = \"0s\""),
            "cluster.replay-window",
            "more than 0",
        );
        refused(
            &format!("{OK}\nreplay-window = \"2d\""),
            "cluster.replay-window",
            "longer than",
        );
        refused(&format!("{OK}\nreplicas = 0"), "cluster.replicas", "1 to 5");
        refused(&format!("{OK}\nreplicas = 6"), "cluster.replicas", "1 to 5");
        refused(
            &format!("{OK}\nrebalance = \"sometimes\""),
            "rebalance",
            "sometimes",
        );
        refused(&format!("{OK}\nbogus = 1"), "bogus", "unknown field");
        let e = Config::parse(
            &format!("[server]\nsession-linger = \"8d\"\n{SWITCH}"),
            "x.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("server.session-linger") && e.contains("7 days"),
            "{e}"
        );
        let c = Config::parse(
            &format!("[server]\nsession-linger = \"7d\"\n{SWITCH}"),
            "x.toml",
        );
        assert_eq!(
            c.unwrap().server.session_linger.0,
            Duration::from_secs(7 * 86400)
        );
    }

    #[test]
    fn an_embedded_simulator_is_refused() {
        let text = format!(
            "[[switch]]\nname = \"sim\"\ndns = [\"6000\"]\nsimulated = true\n[[switch.link]]\naddress = \"127.0.0.1:2\"\n{SWITCH}\n[cluster]\n{OK}\n"
        );
        let e = Config::parse(&text, "node.toml").unwrap_err().to_string();
        assert!(
            e.contains("node.toml")
                && e.contains("switch[0].simulated")
                && e.contains("[cluster]")
                && e.contains("pbx-sim"),
            "{e}"
        );
    }

    #[test]
    fn credentials_are_never_printed() {
        let secret = "very-secret-pw-42";
        refused(
            &format!("{OK}\nnats-password = \"{secret}\""),
            "cluster.nats-password",
            "nats-user",
        );
        let e = with_cluster(&format!("{OK}\nnats-password = \"{secret}\"")).unwrap_err();
        assert!(!e.contains(secret), "{e}");
        // A URL with credentials: refused without being echoed.
        let e = with_cluster(&format!(
            "name = \"c\"\nnode = \"a\"\nnats = [\"nats://router:{secret}@127.0.0.1:4222\"]"
        ))
        .unwrap_err();
        assert!(e.contains("cluster.nats[0]") && !e.contains(secret), "{e}");
        // Parser errors on the lines that hold them.
        for line in [
            format!("nats-token = \"{secret}\" x"),
            format!("nats-password = \"{secret}"),
            format!("nats-pasword = \"{secret}\""),
            format!("nats-tokn = \"{secret}\""),
        ] {
            let e = with_cluster(&format!("{OK}\nnats-user = \"u\"\n{line}")).unwrap_err();
            assert!(
                e.contains("node.toml") && !e.contains(secret),
                "{line}: {e}"
            );
        }
        let c = with_cluster(&format!(
            "{OK}\nnats-token = \"{secret}\"\nnats-user = \"u\"\nnats-password = \"{secret}\""
        ))
        .unwrap();
        let printed = format!("{c:?}");
        assert!(printed.contains("<redacted>") && !printed.contains(secret));
        let cluster = c.cluster.unwrap();
        assert_eq!(
            cluster.nats_token.as_ref().unwrap().to_string(),
            "<redacted>"
        );
        assert_eq!(cluster.nats_token.unwrap().expose(), secret);
    }

    #[test]
    fn empty_credentials_and_missing_files() {
        refused(
            &format!("{OK}\nnats-token = \"\""),
            "cluster.nats-token",
            "not be empty",
        );
        refused(
            &format!("{OK}\nnats-creds = \"/nonexistent/router.creds\""),
            "cluster.nats-creds",
            "/nonexistent/router.creds",
        );
        refused(
            &format!("{OK}\nnats-tls-ca = \"/nonexistent/ca.pem\""),
            "cluster.nats-tls-ca",
            "cannot read",
        );
    }
}
