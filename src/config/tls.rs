//! The configuration's TLS keys: checked, and every file they name loaded at start, so that a
//! missing or broken certificate stops the router at start rather than at the first
//! connection.

use super::sections::{ServerConfig, SwitchEntry};
use super::{Bad, Config};
use std::path::Path;
use std::sync::Arc;

impl Config {
    /// Check the TLS keys of the server and every switch, and load their files.
    pub(super) fn check_tls(&mut self) -> Result<(), Bad> {
        self.server.tls_config = server_tls(&self.server)?;
        for (i, sw) in self.switch.iter_mut().enumerate() {
            switch_tls(i, sw)?;
        }
        Ok(())
    }
}

/// `[server] tls-cert` and `tls-key`: both or neither.
fn server_tls(server: &ServerConfig) -> Result<Option<Arc<rustls::ServerConfig>>, Bad> {
    match (&server.tls_cert, &server.tls_key) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(bad(
            "server.tls-key".into(),
            "tls-cert is set, so tls-key must be too (both or neither)",
        )),
        (None, Some(_)) => Err(bad(
            "server.tls-cert".into(),
            "tls-key is set, so tls-cert must be too (both or neither)",
        )),
        (Some(cert), Some(key)) => load_server_tls(
            cert,
            key,
            ("server.tls-cert".into(), "server.tls-key".into()),
        )
        .map(Some),
    }
}

/// A switch's link TLS (`tls`, `tls-ca`, `tls-server-name`, `tls-insecure-skip-verify`), and its
/// embedded simulator's (`simulator-tls-*`).
fn switch_tls(i: usize, sw: &mut SwitchEntry) -> Result<(), Bad> {
    let key = |k: &str| format!("switch[{i}].{k}");
    if !sw.tls {
        let set = [
            ("tls-ca", sw.tls_ca.is_some()),
            ("tls-server-name", sw.tls_server_name.is_some()),
            ("tls-insecure-skip-verify", sw.tls_insecure_skip_verify),
            ("simulator-tls-cert", sw.simulator_tls_cert.is_some()),
            ("simulator-tls-key", sw.simulator_tls_key.is_some()),
        ];
        if let Some((k, _)) = set.iter().find(|(_, set)| *set) {
            return Err(bad(key(k), format!(
                "switch {:?} does not use TLS: set tls = true (or remove {k}); the link would run in clear text",
                sw.name
            )));
        }
        return Ok(());
    }
    let trust = match (&sw.tls_ca, sw.tls_insecure_skip_verify) {
        (Some(_), true) => {
            return Err(bad(
                key("tls-insecure-skip-verify"),
                "tls-ca is set too: either verify against tls-ca or skip verification",
            ))
        }
        (Some(ca), false) => crate::tls::Trust::CaFile(ca),
        (None, true) => crate::tls::Trust::Insecure,
        (None, false) => crate::tls::Trust::WebpkiRoots,
    };
    let config = crate::tls::client_config(trust).map_err(|e| bad(key("tls-ca"), e))?;
    let server_name = match &sw.tls_server_name {
        Some(name) => {
            Some(crate::tls::server_name(name).map_err(|e| bad(key("tls-server-name"), e))?)
        }
        None => None,
    };
    sw.link_tls = Some(crate::tls::LinkTls {
        config,
        server_name,
        insecure: sw.tls_insecure_skip_verify,
    });
    sw.simulator_tls = simulator_tls(i, sw)?;
    Ok(())
}

/// The embedded simulator's certificate: required with `simulated = true` and `tls = true`,
/// refused without `simulated`.
fn simulator_tls(i: usize, sw: &SwitchEntry) -> Result<Option<Arc<rustls::ServerConfig>>, Bad> {
    let key = |k: &str| format!("switch[{i}].{k}");
    if !sw.simulated {
        let stray = [
            ("simulator-tls-cert", sw.simulator_tls_cert.is_some()),
            ("simulator-tls-key", sw.simulator_tls_key.is_some()),
        ];
        if let Some((k, _)) = stray.iter().find(|(_, set)| *set) {
            return Err(bad(
                key(k),
                format!(
                "switch {:?} is not simulated (only simulated = true starts an embedded simulator)",
                sw.name
            ),
            ));
        }
        return Ok(None);
    }
    match (&sw.simulator_tls_cert, &sw.simulator_tls_key) {
        (Some(cert), Some(k)) => load_server_tls(
            cert,
            k,
            (key("simulator-tls-cert"), key("simulator-tls-key")),
        )
        .map(Some),
        (None, None) => Err(bad(key("simulator-tls-cert"), format!(
            "switch {:?} is simulated with tls = true: its embedded simulator needs a certificate (simulator-tls-cert and simulator-tls-key, PEM)",
            sw.name
        ))),
        (Some(_), None) => Err(bad(
            key("simulator-tls-key"),
            "simulator-tls-cert is set, so simulator-tls-key must be too",
        )),
        (None, Some(_)) => Err(bad(
            key("simulator-tls-cert"),
            "simulator-tls-key is set, so simulator-tls-cert must be too",
        )),
    }
}

fn bad(key: String, message: impl ToString) -> Bad {
    (key, message.to_string())
}

/// Load a certificate chain and its private key (PEM files) into a TLS server
/// configuration; an error names the key (`cert_key` or `key_key`) whose file is at fault.
fn load_server_tls(
    cert: &Path,
    key: &Path,
    (cert_key, key_key): (String, String),
) -> Result<Arc<rustls::ServerConfig>, Bad> {
    let read = |path: &Path, k: &String| {
        std::fs::read(path)
            .map_err(|e| bad(k.clone(), format!("cannot read {}: {e}", path.display())))
    };
    let (cert_pem, key_pem) = (read(cert, &cert_key)?, read(key, &key_key)?);
    let origin = (cert.display().to_string(), key.display().to_string());
    crate::tls::parse_certs(&cert_pem, &origin.0).map_err(|e| bad(cert_key, e))?;
    crate::tls::parse_key(&key_pem, &origin.1).map_err(|e| bad(key_key.clone(), e))?;
    // What is left is rustls refusing the pair, e.g. a key that is not the certificate's.
    crate::tls::server_config_from_pem(&cert_pem, &key_pem, (&origin.0, &origin.1))
        .map_err(|e| bad(key_key, e))
}
