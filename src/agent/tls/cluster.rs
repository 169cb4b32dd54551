//! TLS configurations under the cluster CA: mutual TLS between members, the join-time client
//! of a node that has no certificate yet, the remote CLI, and the rule that says which kind of
//! client may do what on which ALPN.
//!
//! # One server, three ALPNs
//!
//! A node's QUIC endpoint serves one rustls [`ServerConfig`](rustls::ServerConfig)
//! ([`ClusterTrust::server_config`]) offering three protocols:
//!
//! | ALPN | who | client certificate |
//! |---|---|---|
//! | [`ALPN_PEER`] | members: anti-entropy, reports, desired-state pushes | a node certificate |
//! | [`ALPN_CLI`] | the remote CLI | a client bundle's, or a node's |
//! | [`ALPN_JOIN`] | a joiner with a token and no certificate | none (ignored if sent) |
//!
//! TLS asks for the client certificate before the application sees the negotiated ALPN, and
//! quinn takes one rustls config per endpoint, so the handshake cannot require a certificate on
//! two ALPNs and not on the third. The server therefore *offers* client authentication: any
//! certificate sent is checked in full during the handshake (chain to the cluster CA, validity,
//! revocation, a readable role), and a client that sends none completes the handshake. The node
//! must then call [`ClusterTrust::authorize`] on every accepted connection, before it reads a
//! single byte from it; that is where a connection without a certificate is closed unless it
//! negotiated [`ALPN_JOIN`], and where a CLI bundle is refused on [`ALPN_PEER`]. On the join
//! ALPN the node reads one bounded `JoinRequest` and nothing else.
//!
//! Session resumption is off on both sides: a resumed TLS 1.3 session skips certificate
//! verification, which would let a certificate revoked since the first connection back in.

use std::sync::{Arc, RwLock};

use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        Resumption, WebPkiServerVerifier,
    },
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::{
        danger::{ClientCertVerified, ClientCertVerifier},
        NoServerSessionStorage, WebPkiClientVerifier,
    },
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};
use shoal_core::{
    identity::NodeId,
    trust::{token::CaDigest, RevocationSet},
};

use super::{
    ca::{cert_info, CertInfo, ClientBundle, Role, TlsIdentity},
    provider, TlsError,
};

/// ALPN of member-to-member streams. Requires a node certificate.
pub const ALPN_PEER: &[u8] = b"shoal-peer/1";
/// ALPN of the remote CLI. Requires a client bundle's certificate or a node's.
pub const ALPN_CLI: &[u8] = b"shoal-cli/1";
/// ALPN of the join exchange, the only one open to clients without a certificate.
pub const ALPN_JOIN: &[u8] = b"shoal-join/1";

/// The revoked node ids and certificate serials, shared by every verifier of a node and
/// updatable while it runs (cloning shares the set).
///
/// A revocation takes effect for every handshake that starts after it; connections already
/// open are the node's to close (it knows which peer each belongs to from
/// [`ClusterTrust::authorize`]).
#[derive(Clone, Default, Debug)]
pub struct Revocations(Arc<RwLock<RevocationSet>>);

impl Revocations {
    /// A shared set starting from `set` (loaded from the data dir).
    pub fn new(set: RevocationSet) -> Self {
        Revocations(Arc::new(RwLock::new(set)))
    }

    /// Revokes every certificate of node `id`, present and future.
    pub fn revoke_node(&self, id: NodeId) {
        self.write(|set| {
            set.nodes.insert(id);
        });
    }

    /// Revokes one certificate by serial (a client bundle, or one node certificate).
    pub fn revoke_serial(&self, serial: Vec<u8>) {
        self.write(|set| {
            set.serials.insert(serial);
        });
    }

    /// Merges revocations learnt from a peer (the set only grows).
    pub fn merge(&self, other: &RevocationSet) {
        self.write(|set| set.merge(other));
    }

    /// Whether a certificate with this role and serial is revoked.
    pub fn is_revoked(&self, info: &CertInfo) -> bool {
        // A poisoned lock means a writer panicked mid-update: fail closed.
        let Ok(set) = self.0.read() else { return true };
        set.serials.contains(&info.serial)
            || matches!(info.role, Role::Node(id) if set.nodes.contains(&id))
    }

    /// A copy of the set, to persist.
    pub fn snapshot(&self) -> RevocationSet {
        self.0.read().map(|s| s.clone()).unwrap_or_default()
    }

    fn write(&self, f: impl FnOnce(&mut RevocationSet)) {
        let mut guard = match self.0.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard);
    }
}

/// Who is at the other end of an accepted connection, and so what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A member, on the peer ALPN.
    Node(NodeId),
    /// A CLI user on the CLI ALPN: a client bundle's holder, or a member running the CLI.
    Cli(Role),
    /// A client on the join ALPN: may send one join request and nothing else.
    Joiner,
}

/// Why an accepted connection must be closed at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// No ALPN was negotiated (a client that offered none).
    #[error("no application protocol negotiated")]
    NoAlpn,
    /// An ALPN this build does not serve.
    #[error("unknown application protocol")]
    UnknownAlpn,
    /// The peer or CLI ALPN without a client certificate.
    #[error("a client certificate is required on this protocol")]
    NoCertificate,
    /// A certificate of the wrong role for the ALPN (a CLI bundle on the peer ALPN).
    #[error("a {role} certificate may not use this protocol")]
    WrongRole {
        /// The role presented.
        role: &'static str,
    },
    /// Revoked since the handshake (or resumption slipped through).
    #[error("the certificate is revoked")]
    Revoked,
    /// The certificate could not be read.
    #[error("bad certificate: {0}")]
    Certificate(String),
}

/// The cluster's trust anchor and revocations: builds every configuration a member needs.
#[derive(Clone)]
pub struct ClusterTrust {
    roots: Arc<RootCertStore>,
    revocations: Revocations,
    provider: Arc<CryptoProvider>,
}

impl ClusterTrust {
    /// Trust in the CA with this DER certificate, refusing what `revocations` lists.
    pub fn new(ca_cert_der: &[u8], revocations: Revocations) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(ca_cert_der.to_vec()))?;
        Ok(ClusterTrust {
            roots: Arc::new(roots),
            revocations,
            provider: provider(),
        })
    }

    /// The shared revocation set (revoke through it at runtime).
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// A node's server configuration: presents `node`'s chain, offers client authentication
    /// under the cluster CA, serves the peer, CLI and join ALPNs. Every accepted connection
    /// must go through [`authorize`](Self::authorize).
    pub fn server_config(&self, node: &TlsIdentity) -> Result<rustls::ServerConfig, TlsError> {
        let inner =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), self.provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Certificate(e.to_string()))?;
        let verifier = Arc::new(ClusterClientVerifier {
            inner,
            revocations: self.revocations.clone(),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(node.chain.clone(), node.key())?;
        config.alpn_protocols = vec![ALPN_PEER.to_vec(), ALPN_CLI.to_vec(), ALPN_JOIN.to_vec()];
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(config)
    }

    /// A node's client configuration for dialling members on the peer ALPN. Dial with
    /// [`super::ca::node_server_name`]`(id)` to require that very node, or with
    /// [`super::SERVER_NAME`] to accept any member (a seed whose id is not known yet).
    pub fn peer_client_config(&self, node: &TlsIdentity) -> Result<rustls::ClientConfig, TlsError> {
        let verifier = self.server_verifier()?;
        let mut config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(node.chain.clone(), node.key())?;
        config.alpn_protocols = vec![ALPN_PEER.to_vec()];
        config.resumption = Resumption::disabled();
        Ok(config)
    }

    fn server_verifier(&self) -> Result<Arc<ClusterServerVerifier>, TlsError> {
        let inner =
            WebPkiServerVerifier::builder_with_provider(self.roots.clone(), self.provider.clone())
                .build()
                .map_err(|e| TlsError::Certificate(e.to_string()))?;
        Ok(Arc::new(ClusterServerVerifier {
            inner,
            revocations: self.revocations.clone(),
        }))
    }

    /// Decides what an accepted connection may do, from its negotiated ALPN and the client's
    /// certificate chain (as rustls/quinn report them: `peer_certificates()` /
    /// `peer_identity()`). Call it before reading anything; close the connection on error.
    ///
    /// The chain was verified during the handshake; this reads the leaf's role and checks
    /// revocation again, for revocations made since.
    pub fn authorize(
        &self,
        alpn: Option<&[u8]>,
        peer_certs: Option<&[CertificateDer<'_>]>,
    ) -> Result<Peer, AccessError> {
        let alpn = alpn.ok_or(AccessError::NoAlpn)?;
        if alpn == ALPN_JOIN {
            // Whatever the client sent, it gets the joiner's rights and no more.
            return Ok(Peer::Joiner);
        }
        if alpn != ALPN_PEER && alpn != ALPN_CLI {
            return Err(AccessError::UnknownAlpn);
        }
        let leaf = peer_certs
            .and_then(|c| c.first())
            .ok_or(AccessError::NoCertificate)?;
        let info = cert_info(leaf).map_err(|e| AccessError::Certificate(e.to_string()))?;
        if self.revocations.is_revoked(&info) {
            return Err(AccessError::Revoked);
        }
        match (alpn == ALPN_PEER, info.role) {
            (true, Role::Node(id)) => Ok(Peer::Node(id)),
            (true, Role::Client(_)) => Err(AccessError::WrongRole { role: "client" }),
            (false, role) => Ok(Peer::Cli(role)),
        }
    }
}

/// The node id in a verified peer's certificate (the client side reads the server's from
/// `peer_certificates()` after the handshake).
pub fn peer_node_id(peer_certs: &[CertificateDer<'_>]) -> Result<NodeId, TlsError> {
    let leaf = peer_certs
        .first()
        .ok_or_else(|| TlsError::Certificate("no peer certificate".into()))?;
    match cert_info(leaf)?.role {
        Role::Node(id) => Ok(id),
        Role::Client(_) => Err(TlsError::Certificate("peer is not a node".into())),
    }
}

/// The remote CLI's configuration: presents the bundle's client certificate on the CLI ALPN
/// and accepts only a node of the bundle's CA. Dial with [`super::SERVER_NAME`] or
/// [`super::ca::node_server_name`].
pub fn cli_client_config(bundle: &ClientBundle) -> Result<rustls::ClientConfig, TlsError> {
    let trust = ClusterTrust::new(&bundle.ca_cert, Revocations::default())?;
    let identity = bundle.identity();
    let mut config = rustls::ClientConfig::builder_with_provider(trust.provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(trust.server_verifier()?)
        .with_client_auth_cert(identity.chain.clone(), identity.key())?;
    config.alpn_protocols = vec![ALPN_CLI.to_vec()];
    config.resumption = Resumption::disabled();
    Ok(config)
}

/// A joiner's configuration: no client certificate, the join ALPN, and a server accepted only
/// if its chain ends in a CA whose SHA-256 is the token's `ca` digest (the CA is pinned, not the
/// member, so any member can admit). Dial with [`super::SERVER_NAME`].
pub fn join_client_config(ca: CaDigest) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(PinnedCaVerifier {
        ca,
        provider: provider.clone(),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_JOIN.to_vec()];
    config.resumption = Resumption::disabled();
    Ok(config)
}

/// The CA certificate in a server's chain whose digest is `ca`: after a join handshake, the
/// joiner takes the CA from here (or checks the one in the grant against the same digest).
pub fn pinned_ca<'a>(
    chain: &'a [CertificateDer<'a>],
    ca: &CaDigest,
) -> Option<&'a CertificateDer<'a>> {
    chain.iter().find(|c| CaDigest::of_certificate(c) == *ca)
}

/// A quinn server configuration from a rustls one.
pub fn quic_server_config(config: rustls::ServerConfig) -> Result<quinn::ServerConfig, TlsError> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(config)
        .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
    Ok(quinn::ServerConfig::with_crypto(Arc::new(crypto)))
}

/// A quinn client configuration from a rustls one.
pub fn quic_client_config(config: rustls::ClientConfig) -> Result<quinn::ClientConfig, TlsError> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(config)
        .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
    Ok(quinn::ClientConfig::new(Arc::new(crypto)))
}

/// Reads the role of a certificate webpki accepted, and refuses revoked ones.
fn check_accepted(
    leaf: &CertificateDer<'_>,
    revocations: &Revocations,
) -> Result<CertInfo, rustls::Error> {
    let info = cert_info(leaf).map_err(|_| {
        rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
    })?;
    if revocations.is_revoked(&info) {
        return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
    }
    Ok(info)
}

/// webpki's client verification (chain to the CA, validity, client-auth usage), then the role
/// and revocation checks.
#[derive(Debug)]
struct ClusterClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revocations: Revocations,
}

impl ClientCertVerifier for ClusterClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // Required per ALPN by `ClusterTrust::authorize`; see the module docs.
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        check_accepted(end_entity, &self.revocations)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// webpki's server verification (chain, validity, server-auth usage, the dialled name), then:
/// the server must be a node, and not revoked.
#[derive(Debug)]
struct ClusterServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    revocations: Revocations,
}

impl ServerCertVerifier for ClusterServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        match check_accepted(end_entity, &self.revocations)?.role {
            Role::Node(_) => Ok(verified),
            Role::Client(_) => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The joiner's verifier: finds the CA with the token's digest among the certificates the
/// server sent, and verifies the server's chain against that CA alone, with webpki.
#[derive(Debug)]
struct PinnedCaVerifier {
    ca: CaDigest,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = pinned_ca(intermediates, &self.ca).ok_or(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ))?;
        let trust = ClusterTrust::new(ca, Revocations::default())
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        trust
            .server_verifier()
            .map_err(|e| rustls::Error::General(e.to_string()))?
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
