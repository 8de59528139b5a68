//! libpq's `sslmode` on rustls (spec §4). tokio-postgres only decides whether to
//! encrypt (disable, prefer, require); which certificate checks happen is decided
//! here, by the verifier each mode gets. Which mode and roots a URL asks for is
//! db/options.rs's business.

use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`, with libpq's meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, without checking the certificate (libpq's default).
    Prefer,
    /// TLS or fail; the certificate is not checked.
    Require,
    /// TLS, and the certificate chains to a trusted root; the host name is not checked.
    VerifyCa,
    /// TLS, a trusted chain, and a certificate issued for the host we dialled.
    VerifyFull,
}

impl SslMode {
    /// Parses libpq's spelling. `allow` (plain first, TLS as fallback) is taken as `prefer`,
    /// which tries TLS first: never weaker than what was asked.
    pub fn parse(text: &str) -> Result<SslMode, String> {
        match text {
            "disable" => Ok(SslMode::Disable),
            "allow" | "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            other => Err(format!(
                "sslmode '{other}' is not one of disable, prefer, require, verify-ca, verify-full"
            )),
        }
    }

    /// What tokio-postgres must do: whether TLS is skipped, tried, or required.
    pub fn transport(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Pg;
        match self {
            SslMode::Disable => Pg::Disable,
            SslMode::Prefer => Pg::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Pg::Require,
        }
    }

    fn verifies_chain(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        })
    }
}

/// The roots a verifying mode trusts: `sslrootcert`.
#[derive(Clone, Debug, PartialEq)]
pub enum Roots {
    /// None given: the Mozilla roots compiled into the binary (a scratch image has no
    /// CA bundle).
    Default,
    /// `sslrootcert=system`: the same compiled-in roots, asked for by name.
    System,
    /// `sslrootcert=<file>`: the certificates in a PEM file.
    File(String),
}

/// The TLS versions a connection may use (`ssl_min_protocol_version`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TlsVersions {
    /// TLS 1.2 or 1.3: rustls's floor, above libpq's default minimum.
    OneTwoAndUp,
    /// TLS 1.3 only.
    OneThreeOnly,
}

/// The TLS connector for `mode`, trusting `roots` when the mode verifies the chain.
pub fn connector(
    mode: SslMode,
    roots: &Roots,
    versions: TlsVersions,
) -> Result<MakeRustlsConnect, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = if mode.verifies_chain() {
        let roots = Arc::new(root_store(roots)?);
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|err| format!("sslrootcert: {err}"))?;
        match mode {
            SslMode::VerifyCa => Arc::new(ChainOnly(webpki)),
            _ => webpki,
        }
    } else {
        Arc::new(EncryptOnly(provider.clone()))
    };
    let builder = ClientConfig::builder_with_provider(provider);
    let builder = match versions {
        TlsVersions::OneTwoAndUp => builder.with_safe_default_protocol_versions(),
        TlsVersions::OneThreeOnly => builder.with_protocol_versions(&[&rustls::version::TLS13]),
    };
    let mut config = builder
        .map_err(|err| format!("TLS set-up: {err}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // PostgreSQL 17 checks ALPN when a client sends it; older servers ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(MakeRustlsConnect::new(config))
}

/// The certificates `roots` names (also what an https:// trace collector must chain to).
pub fn root_store(roots: &Roots) -> Result<RootCertStore, String> {
    let path = match roots {
        Roots::Default | Roots::System => {
            return Ok(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            });
        }
        Roots::File(path) => path,
    };
    let unreadable = |err: &dyn fmt::Display| format!("sslrootcert {path}: {err}");
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))? {
        let cert = cert.map_err(|e| unreadable(&e))?;
        store.add(cert).map_err(|e| unreadable(&e))?;
    }
    if store.is_empty() {
        return Err(unreadable(&"no certificate in file"));
    }
    Ok(store)
}

/// `prefer` and `require`: encrypt, check nothing about who answers (as libpq does).
/// The handshake signatures are still verified, so the session is sound.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
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
        verify_tls12_signature(
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
        verify_tls13_signature(
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

/// `verify-ca`: the full webpki check, except that a certificate for another host
/// name is accepted. webpki checks the name only after the chain, so a name error
/// means the chain was good.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_modes_still_require_tls_from_tokio_postgres() {
        use tokio_postgres::config::SslMode as Pg;
        assert_eq!(SslMode::parse("disable").unwrap().transport(), Pg::Disable);
        assert_eq!(SslMode::parse("prefer").unwrap().transport(), Pg::Prefer);
        assert_eq!(SslMode::parse("allow").unwrap().transport(), Pg::Prefer);
        for mode in ["require", "verify-ca", "verify-full"] {
            assert_eq!(
                SslMode::parse(mode).unwrap().transport(),
                Pg::Require,
                "{mode}"
            );
        }
    }

    #[test]
    fn unknown_sslmode_is_refused_with_the_choices() {
        let err = SslMode::parse("verify_full").unwrap_err();
        assert!(err.contains("verify-full"), "{err}");
    }

    #[test]
    fn compiled_in_roots_are_there() {
        assert!(root_store(&Roots::Default).unwrap().len() > 100);
    }

    #[test]
    fn unreadable_root_file_is_named() {
        let roots = Roots::File("/nonexistent/ca.pem".into());
        let err = connector(SslMode::VerifyFull, &roots, TlsVersions::OneTwoAndUp)
            .err()
            .unwrap();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
