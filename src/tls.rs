//! TLS (rustls, `ring` provider) for the client endpoint (wss) and for CSTA links.
//!
//! Switches often offer CSTA over TLS, and a CTI layer carries who is logged in where: the
//! switch's certificate is therefore verified by default (against `tls-ca`, else the webpki
//! roots), and a certificate from an unknown CA, or for another name, is refused. Everything
//! here is shared by the configuration (which loads every file at start, so a bad file stops
//! the router at once), the link actor (client side), the WebSocket endpoint and the
//! simulator (server side).

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpStream;

/// Why a TLS file or setting was refused. Every message names the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not PEM, or holds nothing of the kind wanted.
    #[error("{file}: {message}")]
    Pem {
        /// The file (or `"<memory>"`).
        file: String,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the material (a key that does not match its certificate, a CA
    /// certificate it cannot use, no usable protocol version).
    #[error("{context}: {source}")]
    Rustls {
        /// What was being built, naming the files.
        context: String,
        /// rustls's reason.
        source: rustls::Error,
    },
    /// Not a DNS name or an IP address.
    #[error("{name:?} is neither a DNS name nor an IP address")]
    ServerName {
        /// The name given.
        name: String,
    },
}

/// The crypto provider used everywhere: `ring` (no C toolchain or cmake needed, unlike
/// aws-lc-rs), chosen explicitly so that no process-wide default has to be installed.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        file: path.display().to_string(),
        source,
    })
}

/// Every certificate in a PEM text (`origin` names it in errors); at least one is required.
pub fn parse_certs(pem: &[u8], origin: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            file: origin.to_owned(),
            message: format!("not a valid PEM file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            file: origin.to_owned(),
            message: "no certificate in it (expected -----BEGIN CERTIFICATE-----)".into(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM text (`origin` names it in errors).
pub fn parse_key(pem: &[u8], origin: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Pem {
        file: origin.to_owned(),
        message: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no private key in it (expected -----BEGIN PRIVATE KEY----- or an RSA/EC key)"
                    .into()
            }
            e => format!("not a valid PEM file: {e}"),
        },
    })
}

/// Every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_certs(&read_file(path)?, &path.display().to_string())
}

/// The private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    parse_key(&read_file(path)?, &path.display().to_string())
}

/// A server configuration (the wss endpoint, the simulator's links) from a certificate chain
/// and its private key, both PEM texts; `origin` names them in errors.
pub fn server_config_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    origin: (&str, &str),
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = parse_certs(cert_pem, origin.0)?;
    let key = parse_key(key_pem, origin.1)?;
    let context = || format!("certificate {} with private key {}", origin.0, origin.1);
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            context: context(),
            source,
        })?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|source| TlsError::Rustls {
            context: context(),
            source,
        })?;
    Ok(Arc::new(config))
}

/// A server configuration from a certificate chain file and a private key file (PEM).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_from_pem(
        &read_file(cert)?,
        &read_file(key)?,
        (&cert.display().to_string(), &key.display().to_string()),
    )
}

/// Which certificates a link trusts.
#[derive(Debug, Clone, Copy)]
pub enum Trust<'a> {
    /// The CAs of this PEM bundle only (`tls-ca`).
    CaFile(&'a Path),
    /// The webpki roots (the Mozilla set, compiled in): the default.
    WebpkiRoots,
    /// Anything (`tls-insecure-skip-verify`): the link is encrypted but not authenticated.
    Insecure,
}

/// A client configuration for CSTA links.
pub fn client_config(trust: Trust<'_>) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            context: "TLS client configuration".into(),
            source,
        })?;
    let config = match trust {
        Trust::CaFile(path) => {
            let mut roots = RootCertStore::empty();
            for cert in load_certs(path)? {
                roots.add(cert).map_err(|source| TlsError::Rustls {
                    context: format!("CA certificate in {}", path.display()),
                    source,
                })?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::WebpkiRoots => {
            let roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A DNS name or an IP address, as the switch's certificate must name it.
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_owned()).map_err(|_| TlsError::ServerName {
        name: name.to_owned(),
    })
}

/// TLS on the CSTA links of one switch (`tls = true`).
#[derive(Debug, Clone)]
pub struct LinkTls {
    /// The client configuration (trust anchors or no verification).
    pub config: Arc<ClientConfig>,
    /// The name the certificate must carry (`tls-server-name`); `None`: each link's IP.
    pub server_name: Option<ServerName<'static>>,
    /// The certificate is not verified (`tls-insecure-skip-verify`); logged on every connect.
    pub insecure: bool,
}

impl LinkTls {
    /// The name checked for a link at `address`.
    pub fn name_for(&self, address: SocketAddr) -> ServerName<'static> {
        self.server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(address.ip().into()))
    }

    /// The TLS handshake over an established TCP connection to `address`.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        address: SocketAddr,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(self.name_for(address), tcp)
            .await
    }
}

/// A sentence saying why a TLS handshake with a switch failed and what to check, telling a
/// certificate problem (unknown CA, wrong name, expired) from a peer that does not speak TLS.
pub fn explain_handshake_error(e: &std::io::Error, switch: &str) -> String {
    use rustls::CertificateError as C;
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return format!("TLS handshake failed: {e} (does the switch speak TLS on this port? check `tls` of switch {switch})");
    };
    match tls {
        rustls::Error::InvalidCertificate(cert) => {
            let (what, key) = match cert {
                C::UnknownIssuer => (
                    "the switch's certificate is issued by a CA the router does not trust",
                    "tls-ca",
                ),
                C::NotValidForName | C::NotValidForNameContext { .. } => (
                    "the switch's certificate is not valid for the name the router expects",
                    "tls-server-name",
                ),
                C::Expired | C::ExpiredContext { .. } => {
                    ("the switch's certificate has expired", "tls-ca")
                }
                C::NotValidYet | C::NotValidYetContext { .. } => (
                    "the switch's certificate is not valid yet (check the clocks)",
                    "tls-ca",
                ),
                _ => ("the switch's certificate was refused", "tls-ca"),
            };
            format!("certificate problem: {what} ({tls}); check `{key}` of switch {switch}")
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => format!(
            "TLS handshake failed: {tls} (does the switch speak TLS on this port? check `tls` of switch {switch})"
        ),
        other => format!("TLS handshake failed: {other} (check the TLS settings of switch {switch})"),
    }
}

/// `tls-insecure-skip-verify`: accepts any certificate, still checks the handshake signatures
/// (so the connection is at least encrypted to whoever holds the presented key).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pem_errors_name_the_origin() {
        let e = parse_certs(b"hello", "a.pem").unwrap_err().to_string();
        assert!(e.contains("a.pem") && e.contains("no certificate"), "{e}");
        let e = parse_key(b"", "k.pem").unwrap_err().to_string();
        assert!(e.contains("k.pem") && e.contains("no private key"), "{e}");
        let e = load_certs(Path::new("/nonexistent/ca.pem"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn server_names() {
        assert!(matches!(
            server_name("10.0.0.1").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("pbx.example").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(server_name("not a name").is_err());
    }

    #[test]
    fn default_roots_and_insecure_build() {
        client_config(Trust::WebpkiRoots).unwrap();
        client_config(Trust::Insecure).unwrap();
    }
}
