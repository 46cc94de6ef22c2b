//! TLS and QUIC settings of the cluster endpoint.
//!
//! Two modes:
//! - **self-signed** (no `listener.vmqs.*` files): each node generates a certificate at start
//!   (rcgen) and peers do not verify certificates; the TLS session only provides encryption
//!   and the keying material the cookie MAC binds to (see `hello`). The handshake signature is
//!   still checked, so the peer holds the key of the certificate it shows.
//! - **cluster CA**: both sides present their certificate and verify the other's chain
//!   against the CA (client authentication too). The host name is not checked: membership of
//!   the cluster CA is what certificates prove here, the node's identity comes from the
//!   cookie-authenticated hello, and node certificates need not name every address a node is
//!   dialed on.
//!
//! Everything uses the ring provider explicitly: one crypto provider across quinn, rustls and
//! rcgen (docs/architecture.md "Dependencies").

use std::path::Path;
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::DigitallySignedStruct;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, RootCertStore, SignatureScheme};
use thiserror::Error;

use super::config::{ClusterTlsFiles, TransportConfig};

/// The TLS server name every node dials with; see the module doc for why it is not checked.
pub const SERVER_NAME: &str = "vmq-cluster";
/// ALPN protocol id, so nothing but a vmq-rs cluster node completes the TLS handshake.
pub const ALPN: &[u8] = b"vmq-cluster/1";

/// Why the endpoint's TLS settings could not be built.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{what} {path}: {reason}")]
    Pem {
        /// Which file (`cafile`, `certfile`, `keyfile`).
        what: &'static str,
        /// Its path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Generating the self-signed certificate failed.
    #[error("generating the cluster certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration (e.g. a key not matching the certificate).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The CA file yields no usable trust anchor.
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// quinn refused the rustls configuration (no TLS 1.3 initial cipher suite).
    #[error("QUIC TLS configuration: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// The idle timeout is out of QUIC's range.
    #[error("idle timeout out of range: {0}")]
    IdleTimeout(#[from] quinn::VarIntBoundsExceeded),
}

/// The endpoint's server and client settings.
pub struct EndpointConfigs {
    /// For accepting.
    pub server: quinn::ServerConfig,
    /// For dialing.
    pub client: quinn::ClientConfig,
}

/// Builds both sides' settings for `config`: certificates, verifiers and the QUIC transport
/// parameters (keep-alive, idle timeout, stream limits).
pub fn build(config: &TransportConfig) -> Result<EndpointConfigs, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions = &[&rustls::version::TLS13];
    let (mut server, mut client) = match &config.tls {
        None => {
            let (chain, key) = self_signed()?;
            let server = rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(versions)?
                .with_no_client_auth()
                .with_single_cert(chain, key)?;
            let client = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(versions)?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(CookieOnly(provider.clone())))
                .with_no_client_auth();
            (server, client)
        }
        Some(files) => {
            let (roots, chain, key) = load(files)?;
            let roots = Arc::new(roots);
            let client_verifier =
                WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
            let server = rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(versions)?
                .with_client_cert_verifier(client_verifier)
                .with_single_cert(chain.clone(), key.clone_key())?;
            let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone()).build()?;
            let client = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(versions)?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ClusterCa(server_verifier)))
                .with_client_auth_cert(chain, key)?;
            (server, client)
        }
    };
    server.alpn_protocols = vec![ALPN.to_vec()];
    client.alpn_protocols = vec![ALPN.to_vec()];

    let transport = Arc::new(transport_config(config)?);
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(server)?));
    server.transport_config(transport.clone());
    let mut client = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client)?));
    client.transport_config(transport);
    Ok(EndpointConfigs { server, client })
}

fn transport_config(config: &TransportConfig) -> Result<quinn::TransportConfig, TlsError> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(config.keep_alive));
    t.max_idle_timeout(Some(quinn::IdleTimeout::try_from(config.idle_timeout)?));
    t.initial_rtt(config.initial_rtt);
    // One bidirectional stream for the hello, one unidirectional stream per kind; a little
    // headroom so a peer replacing a stream is not stalled by credit.
    t.max_concurrent_bidi_streams(1u32.into());
    t.max_concurrent_uni_streams(8u32.into());
    Ok(t)
}

fn self_signed() -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])?;
    let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    Ok((vec![certified.cert.der().clone()], PrivateKeyDer::Pkcs8(key)))
}

type Loaded = (RootCertStore, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn load(files: &ClusterTlsFiles) -> Result<Loaded, TlsError> {
    let pem_err = |what: &'static str, path: &Path, reason: String| TlsError::Pem {
        what,
        path: path.display().to_string(),
        reason,
    };
    let roots = crate::pem::roots(&files.cafile).map_err(|e| pem_err("cafile", &files.cafile, e))?;
    let chain = crate::pem::certificates(&files.certfile).map_err(|e| pem_err("certfile", &files.certfile, e))?;
    let key =
        PrivateKeyDer::from_pem_file(&files.keyfile).map_err(|e| pem_err("keyfile", &files.keyfile, e.to_string()))?;
    Ok((roots, chain, key))
}

/// Self-signed mode: any certificate is accepted (the cookie MAC authenticates the peer), but
/// the handshake signature is verified with the presented key.
#[derive(Debug)]
struct CookieOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for CookieOnly {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Cluster CA mode: the chain must verify against the CA; only a name mismatch is forgiven
/// (see the module doc).
#[derive(Debug)]
struct ClusterCa(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ClusterCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain before the name, so a name error means the chain verified.
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
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
    use vmq_config::MetadataPlugin;
    use vmq_storage::metadata::NodeId;

    #[test]
    fn self_signed_mode_builds() {
        let config = TransportConfig::new(NodeId::new("a@h"), "c", MetadataPlugin::VmqSwc);
        assert!(build(&config).is_ok());
    }

    #[test]
    fn missing_pem_files_name_the_file() {
        let mut config = TransportConfig::new(NodeId::new("a@h"), "c", MetadataPlugin::VmqSwc);
        config.tls = Some(ClusterTlsFiles {
            cafile: "/nonexistent/ca.pem".into(),
            certfile: "/nonexistent/cert.pem".into(),
            keyfile: "/nonexistent/key.pem".into(),
        });
        let err = build(&config).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("cafile /nonexistent/ca.pem"), "{err}");
    }
}
