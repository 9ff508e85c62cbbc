//! The bench's TLS: rustls with ring, the system's CAs (or a CA file), and `--insecure` for
//! self-signed certificates.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use super::http::{ClientSettings, HttpVersion};

/// The CAs: `--cacert`'s, else the system's.
fn load_roots(cacert: Option<&Path>) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match cacert {
        Some(p) => {
            for c in CertificateDer::pem_file_iter(p)
                .map_err(|e| format!("--cacert {}: {e}", p.display()))?
            {
                let c = c.map_err(|e| format!("--cacert {}: {e}", p.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("--cacert {}: {e}", p.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("--cacert {}: no certificate in it", p.display()));
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
        }
    }
    Ok(roots)
}

/// `--insecure`: any certificate is accepted, signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
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

/// The TLS client config of `s`: the system's CAs or `--cacert`, or none checked with
/// `--insecure`; ALPN for the HTTP version.
pub(super) fn tls_config(s: &ClientSettings) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(load_roots(s.cacert.as_deref())?)
        .with_no_client_auth();
    if s.insecure {
        cfg.dangerous()
            .set_certificate_verifier(Arc::new(AnyCertificate(provider)));
    }
    cfg.alpn_protocols = match s.version {
        HttpVersion::Http1 => vec![b"http/1.1".to_vec()],
        HttpVersion::Http2 => vec![b"h2".to_vec()],
    };
    Ok(cfg)
}
