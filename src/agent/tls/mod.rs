//! TLS for node-to-node QUIC and the remote CLI.
//!
//! Two trust models live here while the node is moved from one to the other:
//!
//! - The interim one, still used by the node loop (the functions in this file): each node has a
//!   self-signed certificate whose SHA-256 travels in its gossip identity, and both ends of a
//!   connection pin the other's certificate by that fingerprint.
//! - The cluster CA of design §7: [`ca`] creates the CA and issues node certificates (from a
//!   joiner's signing request) and CLI client bundles; [`cluster`] builds the rustls
//!   configurations (mutual TLS under the CA with runtime revocation, the join-time client that
//!   pins the CA by the token's digest, the CLI client) and decides what each accepted
//!   connection may do. docs/security.md describes the whole scheme.

use std::{
    collections::HashSet,
    path::Path,
    sync::{Arc, RwLock},
};

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider},
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
    DigitallySignedStruct, DistinguishedName, SignatureScheme,
};
use sha2::{Digest, Sha256};

pub mod ca;
pub mod cluster;
#[cfg(test)]
mod tests;

/// The name every node's certificate carries and every client asks for; identity is the pinned
/// fingerprint, not the name.
pub const SERVER_NAME: &str = "shoal-node";
/// ALPN protocol id of node-to-node streams, versioned with the API.
pub const ALPN: &[u8] = b"shoal/1";

/// A node's certificate and key.
pub struct NodeCert {
    /// DER certificate.
    pub cert: CertificateDer<'static>,
    /// PKCS#8 private key.
    pub key: PrivatePkcs8KeyDer<'static>,
    /// SHA-256 of `cert`.
    pub sha256: [u8; 32],
}

/// SHA-256 fingerprint of a DER certificate.
pub fn fingerprint(cert: &[u8]) -> [u8; 32] {
    Sha256::digest(cert).into()
}

/// Why TLS material could not be loaded or configured.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading or writing the key files failed.
    #[error("tls file {path}")]
    Io {
        /// The file concerned.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("generating certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls rejected the configuration.
    #[error("tls configuration: {0}")]
    Config(#[from] rustls::Error),
    /// A certificate, signing request or bundle is unusable.
    #[error("certificate: {0}")]
    Certificate(String),
}

impl NodeCert {
    /// Loads the node's certificate from `dir`, creating it on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self, TlsError> {
        let cert_path = dir.join("node.crt.der");
        let key_path = dir.join("node.key.der");
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| TlsError::Io { path, source }
        };
        if cert_path.exists() && key_path.exists() {
            let cert = std::fs::read(&cert_path).map_err(io(&cert_path))?;
            let key = std::fs::read(&key_path).map_err(io(&key_path))?;
            return Ok(Self::from_der(cert, key));
        }
        let generated = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])?;
        let cert = generated.cert.der().to_vec();
        let key = generated.signing_key.serialize_der();
        super::datadir::write_atomic(&key_path, &key, true).map_err(io(&key_path))?;
        super::datadir::write_atomic(&cert_path, &cert, false).map_err(io(&cert_path))?;
        Ok(Self::from_der(cert, key))
    }

    fn from_der(cert: Vec<u8>, key: Vec<u8>) -> Self {
        let sha256 = fingerprint(&cert);
        NodeCert {
            cert: CertificateDer::from(cert),
            key: PrivatePkcs8KeyDer::from(key),
            sha256,
        }
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

/// Fingerprints of the certificates this node accepts from clients: those of its known members.
pub type TrustedSet = Arc<RwLock<HashSet<[u8; 32]>>>;

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// QUIC server configuration: our certificate, and client certificates must be in `trusted`.
pub fn server_config(
    node: &NodeCert,
    trusted: TrustedSet,
) -> Result<quinn::ServerConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(PinnedClients {
        trusted,
        provider: provider.clone(),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![node.cert.clone()], node.key())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(config)
        .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
    Ok(quinn::ServerConfig::with_crypto(Arc::new(crypto)))
}

/// QUIC client configuration for dialing the peer whose certificate hashes to `expected`.
pub fn client_config(node: &NodeCert, expected: [u8; 32]) -> Result<quinn::ClientConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(PinnedServer {
        expected,
        provider: provider.clone(),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![node.cert.clone()], node.key())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(config)
        .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
    Ok(quinn::ClientConfig::new(Arc::new(crypto)))
}

/// The signature checks both verifiers leave to rustls: only the certificate check is ours.
fn schemes(provider: &CryptoProvider) -> Vec<SignatureScheme> {
    provider
        .signature_verification_algorithms
        .supported_schemes()
}

#[derive(Debug)]
struct PinnedServer {
    expected: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if fingerprint(end_entity) == self.expected {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "peer certificate does not match its gossiped fingerprint".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        schemes(&self.provider)
    }
}

#[derive(Debug)]
struct PinnedClients {
    trusted: TrustedSet,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for PinnedClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let known = self
            .trusted
            .read()
            .map(|set| set.contains(&fingerprint(end_entity)))
            .unwrap_or(false);
        if known {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "client certificate is not a known member's".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        schemes(&self.provider)
    }
}
