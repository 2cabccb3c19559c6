//! Per-registry TLS: extra trusted roots (a private CA), a client certificate, or no
//! verification at all for a registry the operator says to trust blindly.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::{DistributionError, Result};

/// How to speak TLS to one registry; the default is the public web roots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of extra roots trusted for this registry (on top of the public roots).
    pub ca_file: Option<PathBuf>,
    /// PEM files of a client certificate chain and its private key.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Accept any server certificate (never for a registry reached over a network you do not
    /// control).
    pub insecure_skip_verify: bool,
}

impl TlsOptions {
    /// Whether these are the defaults (ureq's own TLS set-up serves them).
    pub fn is_default(&self) -> bool {
        *self == TlsOptions::default()
    }

    /// Check the files now (berthd does this at start, so a typo is an error there, not at the
    /// first pull).
    pub fn check(&self) -> Result<()> {
        self.client_config().map(drop)
    }

    /// The rustls configuration these options describe.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("TLS set-up: {e}")))?;
        let builder = if self.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        } else {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            if let Some(ca) = &self.ca_file {
                let certs = read_certs(ca)?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(invalid(format!(
                        "ca_file {}: no usable certificate in it",
                        ca.display()
                    )));
                }
            }
            builder.with_root_certificates(roots)
        };
        let config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = read_certs(cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| invalid(format!("client_key {}: {e}", key.display())))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| invalid(format!("client certificate {}: {e}", cert.display())))?
            }
        };
        Ok(Arc::new(config))
    }
}

fn invalid(message: String) -> DistributionError {
    DistributionError::Invalid(message)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(invalid(format!(
            "{}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

/// `insecure_skip_verify`: any certificate passes; signatures are still checked so the
/// handshake itself is sound.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
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
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
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
mod tests {
    use super::*;

    #[test]
    fn defaults_build_and_bad_files_are_named() {
        assert!(TlsOptions::default().client_config().is_ok());
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let err = TlsOptions {
            ca_file: Some(missing.clone()),
            ..Default::default()
        }
        .check()
        .unwrap_err()
        .to_string();
        assert!(err.contains("nope.pem"), "{err}");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let err = TlsOptions {
            ca_file: Some(garbage),
            ..Default::default()
        }
        .check()
        .unwrap_err()
        .to_string();
        assert!(err.contains("garbage.pem"), "{err}");
        assert!(TlsOptions {
            insecure_skip_verify: true,
            ..Default::default()
        }
        .check()
        .is_ok());
    }
}
