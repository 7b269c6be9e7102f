//! TLS for every connection pgsched makes: the scheduler's database, the leadership and LISTEN
//! connections, the Timeout loop, and the pools of named Connections. It turns the
//! [`TlsSettings`] of a connection string into a rustls connector with libpq's meaning of each
//! `sslmode`, so a URL that works with psql works here:
//!
//! | sslmode | certificate check |
//! | --- | --- |
//! | `disable` | no TLS |
//! | `allow`, `prefer` | TLS when offered, certificate not checked |
//! | `require` | TLS or nothing; checked against the CA like `verify-ca` when a root file is given or `~/.postgresql/root.crt` exists |
//! | `verify-ca` | signed by a trusted CA |
//! | `verify-full` | signed by a trusted CA and issued for the host name |
//!
//! rustls with ring, the crypto ureq already builds, so no C toolchain is needed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, WebPkiServerVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::pgurl::{ConnString, RootCert, SslMode, TlsSettings};

/// The connector every connection is made with.
pub type Tls = MakeRustlsConnect;

/// Why TLS could not be set up; each names the file or setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file is unreadable, not valid PEM, or holds a certificate rustls
    /// cannot use.
    #[error("cannot read {what} {}: {source}", .path.display())]
    Read {
        /// The connection-string key that names the file: `sslrootcert`, `sslcert`, `sslkey`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O, PEM or certificate error.
        source: ReadError,
    },
    /// A file was read but holds nothing of what it should.
    #[error("{what} {} holds no {expected}", .path.display())]
    Empty {
        /// The connection-string key that names the file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What it should hold, e.g. `PEM certificate`.
        expected: &'static str,
    },
    /// A verifying `sslmode` with no `sslrootcert` and no `~/.postgresql/root.crt`.
    #[error(
        "sslmode={mode} checks the server's certificate, but no CA is given: set sslrootcert to \
         a PEM file of the CA, or sslrootcert=system for the system's trust store (with \
         verify-full), or use sslmode=require to encrypt without checking"
    )]
    NoRoots {
        /// `verify-ca` or `verify-full`.
        mode: &'static str,
    },
    /// `sslrootcert=system`, but no certificate could be loaded from the OS; holds why.
    #[error("the system trust store has no certificates: {0}")]
    SystemRoots(String),
    /// rustls refused the configuration (e.g. a key that does not match `sslcert`).
    #[error("TLS setup: {context}{source}")]
    Rustls {
        /// What was being set up, as a prefix of the message (`sslcert/sslkey: `), or empty.
        context: &'static str,
        /// rustls's reason.
        source: rustls::Error,
    },
    /// rustls could not build the certificate verifier of `verify-full` from the roots.
    #[error("TLS setup: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
}

/// Why a certificate or key file could not be used ([`TlsError::Read`]).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file is unreadable or not valid PEM.
    #[error(transparent)]
    Pem(#[from] rustls::pki_types::pem::Error),
    /// The certificate was read but rustls refused it.
    #[error(transparent)]
    Certificate(#[from] rustls::Error),
}

impl TlsError {
    fn rustls(source: rustls::Error) -> TlsError {
        TlsError::Rustls {
            context: "",
            source,
        }
    }
}

/// libpq's default root file, used when `sslrootcert` is not given.
fn default_root_file() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let path = Path::new(&home).join(".postgresql/root.crt");
    path.is_file().then_some(path)
}

/// Builds the connector for `settings`, reading the certificate files it names.
pub fn connector(settings: &TlsSettings) -> Result<Tls, TlsError> {
    build(settings, default_root_file)
}

fn build(
    settings: &TlsSettings,
    default_root: impl FnOnce() -> Option<PathBuf>,
) -> Result<Tls, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::rustls)?;
    // TLS is never used with disable or over Unix sockets: then no file is read, so a URL
    // whose certificates live elsewhere still connects over the socket. prefer and allow never
    // check the certificate (as in libpq), so they read no CA either.
    let used = settings.mode != SslMode::Disable && !settings.unix_only;
    let checks = used
        && matches!(
            settings.mode,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        );
    let roots = match &settings.root_cert {
        _ if !checks => None,
        Some(RootCert::System) => Some(system_roots()?),
        Some(RootCert::File(path)) => Some(roots_from_file(path)?),
        None => default_root()
            .map(|path| roots_from_file(&path))
            .transpose()?,
    };
    let verifier: Arc<dyn ServerCertVerifier> = match (settings.mode, roots) {
        (SslMode::VerifyFull, Some(roots)) => webpki(roots, &provider)?,
        (mode, None) if checks && mode.verifies() => {
            return Err(TlsError::NoRoots {
                mode: mode.as_str(),
            })
        }
        // verify-ca, and require given a CA: the chain; prefer, allow, require without a CA,
        // and connections that never use TLS: nothing.
        (_, roots) => Arc::new(NameNotChecked {
            roots: roots.map(Arc::new),
            provider: provider.clone(),
        }),
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match settings.client_cert.as_ref().filter(|_| used) {
        Some((cert, key)) => {
            let chain = certificates(cert, "sslcert")?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Read {
                what: "sslkey",
                path: key.clone(),
                source: e.into(),
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|source| TlsError::Rustls {
                    context: "sslcert/sslkey: ",
                    source,
                })?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(finish(config))
}

/// PostgreSQL 17 servers require the `postgresql` ALPN protocol for direct TLS
/// (`sslnegotiation=direct`); older servers ignore it. libpq 17 always sends it.
fn finish(mut config: ClientConfig) -> Tls {
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    MakeRustlsConnect::new(config)
}

/// Why a connection string cannot be used. Neither variant shows the URL or a password.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// It does not parse, or a key's value is not one libpq accepts.
    #[error(transparent)]
    Url(#[from] crate::pgurl::UrlError),
    /// Its TLS settings or files cannot be used. Boxed: a rustls error is large, and this
    /// travels inside the errors of every loop that connects.
    #[error(transparent)]
    Tls(Box<TlsError>),
}

impl From<TlsError> for TargetError {
    fn from(e: TlsError) -> TargetError {
        TargetError::Tls(Box::new(e))
    }
}

/// Parses `url` and builds its connector: what every connection of pgsched starts from.
pub fn target(url: &str) -> Result<(tokio_postgres::Config, Tls), TargetError> {
    let ConnString { config, tls } = crate::pgurl::parse(url)?;
    let tls = connector(&tls)?;
    Ok((config, tls))
}

fn webpki(
    roots: RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(TlsError::from)
}

fn certificates(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_error = |e: rustls::pki_types::pem::Error| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source: e.into(),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_error)?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_path_buf(),
            expected: "PEM certificate",
        });
    }
    Ok(certs)
}

fn roots_from_file(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path, "sslrootcert")? {
        roots.add(cert).map_err(|e| TlsError::Read {
            what: "sslrootcert",
            path: path.to_path_buf(),
            source: e.into(),
        })?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".into(), std::string::ToString::to_string);
        return Err(TlsError::SystemRoots(why));
    }
    Ok(roots)
}

/// The verifier of every mode but `verify-full`, which is webpki's own. With roots
/// (`verify-ca`, and `require` given a CA) the chain must lead to one of them, but the name in the
/// certificate is not compared with the host; without (`prefer`, `allow`, `require` without a
/// CA) any certificate is taken, as libpq does. The handshake signatures are checked either
/// way, so the peer holds the key of the certificate it sent.
#[derive(Debug)]
struct NameNotChecked {
    roots: Option<Arc<RootCertStore>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NameNotChecked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = ParsedCertificate::try_from(end_entity)?;
            verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> TlsSettings {
        crate::pgurl::parse(url).unwrap().tls
    }

    /// Without `~/.postgresql/root.crt`, whatever the developer's machine has.
    fn connector(settings: &TlsSettings) -> Result<Tls, TlsError> {
        build(settings, || None)
    }

    #[test]
    fn verifying_modes_without_a_ca_say_what_to_set() {
        for mode in ["verify-ca", "verify-full"] {
            let e = connector(&settings(&format!("postgres://h/d?sslmode={mode}")))
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("sslrootcert") && e.contains(mode), "{e}");
        }
        for mode in ["disable", "allow", "prefer", "require"] {
            assert!(connector(&settings(&format!("postgres://h/d?sslmode={mode}"))).is_ok());
        }
    }

    #[test]
    fn no_file_is_read_where_tls_is_never_used() {
        let missing =
            "sslrootcert=/nonexistent/ca.pem sslcert=/nonexistent/c.pem sslkey=/nonexistent/k.pem";
        for url in [
            format!("host=/var/run/postgresql sslmode=verify-full {missing}"),
            format!("host=db sslmode=disable {missing}"),
            // prefer never checks, so it reads no CA (the client certificate it would send).
            "host=db sslmode=prefer sslrootcert=/nonexistent/ca.pem".to_string(),
        ] {
            assert!(connector(&settings(&url)).is_ok(), "{url}");
        }
        let e = connector(&settings(&format!("host=db sslmode=require {missing}")))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn unreadable_and_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = connector(&settings(&format!(
            "postgres://h/d?sslmode=verify-full&sslrootcert={}",
            missing.display()
        )))
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.contains("sslrootcert") && e.contains("missing.pem"),
            "{e}"
        );

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = connector(&settings(&format!(
            "postgres://h/d?sslmode=verify-ca&sslrootcert={}",
            empty.display()
        )))
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("holds no PEM certificate"), "{e}");
    }
}
