//! The cluster CA: its creation, the certificates it issues, and how a certificate says who
//! holds it.
//!
//! # Roles in a certificate
//!
//! Every certificate the CA issues names exactly one role in a URI subject alternative name,
//! which [`cert_info`] reads back (and refuses a certificate with none or several):
//!
//! | role | URI SAN | DNS SANs | extended key usage |
//! |---|---|---|---|
//! | node | `urn:shoal:node:<32 hex digits>` | `shoal-node`, `<32 hex>.node.shoal` | server and client auth |
//! | CLI client | `urn:shoal:client:<name>` | none | client auth only |
//!
//! The DNS names let rustls's own (webpki) name check do the server-side work: a node dialled
//! as [`node_server_name`]`(id)` must present that id's certificate, one dialled as
//! [`super::SERVER_NAME`] any node's. A client bundle has neither DNS name nor the server-auth
//! usage, so it can never act as a node's server side; [`super::cluster`] also refuses it on the
//! peer ALPN, so it cannot act as a node's client side either. A node certificate is accepted on
//! the CLI ALPN: a member can already write the desired state through the peer protocol, so
//! refusing it there would protect nothing, and it lets an operator run the CLI against another
//! node from any member.
//!
//! Keys are ECDSA P-256. A joiner keeps its private key: it sends a PKCS#10 request
//! ([`node_csr`]) and the CA signs a certificate for the request's public key with parameters
//! of its own choosing ([`ClusterCa::issue_node`] ignores everything else in the request).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{
    pem::PemObject, CertificateDer, CertificateSigningRequestDer, PrivateKeyDer, PrivatePkcs8KeyDer,
};
use shoal_core::{identity::NodeId, trust::token::CaDigest};
use x509_parser::{extensions::GeneralName, prelude::FromDer};

use super::TlsError;

/// Prefix of a node's role URI.
pub const NODE_URI_PREFIX: &str = "urn:shoal:node:";
/// Prefix of a CLI client's role URI.
pub const CLIENT_URI_PREFIX: &str = "urn:shoal:client:";
/// DNS suffix of a node's own server name.
pub const NODE_DNS_SUFFIX: &str = ".node.shoal";
/// How long the CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 86_400);
/// How long a node certificate is valid. Long, because nothing renews it yet (see
/// docs/security.md); revocation is how a node is shut out.
pub const NODE_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Default validity of a CLI client bundle.
pub const CLIENT_VALIDITY: Duration = Duration::from_secs(365 * 86_400);
/// Backdating of `not_before`, so a member whose clock is a little behind the issuer's accepts
/// a fresh certificate.
const CLOCK_SKEW: Duration = Duration::from_secs(3_600);
/// Longest client name in a bundle.
pub const MAX_CLIENT_NAME: usize = 64;

/// The server name under which node `id` is dialled when the caller knows whom it is calling.
pub fn node_server_name(id: NodeId) -> String {
    format!("{id}{NODE_DNS_SUFFIX}")
}

/// Who a certificate belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    /// A cluster member.
    Node(NodeId),
    /// A remote CLI user, by the name given to `client-bundle NAME`.
    Client(String),
}

/// What shoal reads from a certificate it accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The holder.
    pub role: Role,
    /// The certificate's serial number (big-endian bytes as encoded), for revocation.
    pub serial: Vec<u8>,
}

/// Reads the role and serial of a DER certificate. Does not check its signature: call it on
/// certificates a verifier has accepted, or on the CA's own output.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, TlsError> {
    let bad = |why: &str| TlsError::Certificate(why.to_string());
    let (rest, cert) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|e| bad(&format!("unreadable certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(bad("trailing bytes after the certificate"));
    }
    let sans = cert
        .subject_alternative_name()
        .map_err(|e| bad(&format!("unreadable subject alternative names: {e}")))?
        .map(|ext| ext.value.general_names.clone())
        .unwrap_or_default();
    let mut roles = sans.iter().filter_map(|name| match name {
        GeneralName::URI(uri) if uri.starts_with("urn:shoal:") => Some(*uri),
        _ => None,
    });
    let (Some(uri), None) = (roles.next(), roles.next()) else {
        return Err(bad("a shoal certificate names exactly one urn:shoal: role"));
    };
    let role = if let Some(hex) = uri.strip_prefix(NODE_URI_PREFIX) {
        Role::Node(
            hex.parse::<NodeId>()
                .map_err(|e| bad(&format!("node role: {e}")))?,
        )
    } else if let Some(name) = uri.strip_prefix(CLIENT_URI_PREFIX) {
        check_client_name(name)?;
        Role::Client(name.to_string())
    } else {
        return Err(bad("unknown urn:shoal: role"));
    };
    Ok(CertInfo {
        role,
        serial: cert.raw_serial().to_vec(),
    })
}

fn check_client_name(name: &str) -> Result<(), TlsError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_CLIENT_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(TlsError::Certificate(format!(
            "client name {name:?}: use 1 to {MAX_CLIENT_NAME} of A-Z a-z 0-9 . _ -"
        )))
    }
}

fn offset_time(at: SystemTime) -> Result<time::OffsetDateTime, TlsError> {
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map_err(|_| TlsError::Certificate("clock before 1970".into()))?
        .as_secs();
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .map_err(|e| TlsError::Certificate(format!("time out of range: {e}")))
}

fn validity(
    params: &mut CertificateParams,
    now: SystemTime,
    valid_for: Duration,
) -> Result<(), TlsError> {
    params.not_before = offset_time(now.checked_sub(CLOCK_SKEW).unwrap_or(now))?;
    params.not_after = offset_time(now + valid_for)?;
    Ok(())
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive and of fixed length: DER integers are signed, and a leading zero byte would be
    // stripped on the wire, making the serial read back differ from the one chosen.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

/// A fresh ECDSA P-256 key pair (for the CA, a node or a client).
pub fn generate_key() -> Result<KeyPair, TlsError> {
    Ok(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?)
}

/// Loads a PKCS#8 DER private key.
pub fn key_from_der(der: &[u8]) -> Result<KeyPair, TlsError> {
    let der = PrivatePkcs8KeyDer::from(der.to_vec());
    Ok(KeyPair::try_from(&der)?)
}

/// The certificate signing request a joiner sends: its public key, signed with its private key.
/// The CA reads only the key from it.
pub fn node_csr(key: &KeyPair, node: NodeId) -> Result<Vec<u8>, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, node.to_string());
    Ok(params.serialize_request(key)?.der().to_vec())
}

/// The cluster's certificate authority: its certificate and signing key.
pub struct ClusterCa {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("digest", &self.digest())
            .finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// Creates a new CA (`cluster init`). `cluster` names it in its subject, for operators.
    pub fn generate(cluster: &str, now: SystemTime) -> Result<Self, TlsError> {
        let key = generate_key()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "shoal");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("shoal cluster CA {cluster}"));
        // No intermediates: every member signs directly with the root.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        validity(&mut params, now, CA_VALIDITY)?;
        let cert = params.self_signed(&key)?.der().clone();
        Ok(ClusterCa {
            cert,
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its DER certificate and PKCS#8 DER key (from the data dir or a join grant).
    pub fn from_der(cert_der: &[u8], key_der: &[u8]) -> Result<Self, TlsError> {
        let key = key_from_der(key_der)?;
        let cert = CertificateDer::from(cert_der.to_vec());
        let issuer = Issuer::from_ca_cert_der(&cert, key)?;
        Ok(ClusterCa { cert, issuer })
    }

    /// The CA's DER certificate.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The CA's private key as PKCS#8 DER, to persist or hand to a new member.
    pub fn key_der(&self) -> Vec<u8> {
        self.issuer.key().serialize_der()
    }

    /// What join tokens carry.
    pub fn digest(&self) -> CaDigest {
        CaDigest::of_certificate(&self.cert)
    }

    /// Issues node `node`'s certificate for the public key in `csr_der` (after
    /// `shoal_core::trust::check_join` admitted the request). The request's signature is checked;
    /// its names, extensions and usages are ignored in favour of the node profile.
    pub fn issue_node(
        &self,
        node: NodeId,
        csr_der: &[u8],
        now: SystemTime,
    ) -> Result<CertificateDer<'static>, TlsError> {
        let csr = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(
            csr_der,
        ))?;
        let params = node_params(node, now)?;
        Ok(params
            .signed_by(&csr.public_key, &self.issuer)?
            .der()
            .clone())
    }

    /// Issues a node certificate for a key pair held locally (`cluster init`: the first node
    /// certifies itself).
    pub fn issue_node_for_key(
        &self,
        node: NodeId,
        key: &KeyPair,
        now: SystemTime,
    ) -> Result<CertificateDer<'static>, TlsError> {
        Ok(node_params(node, now)?
            .signed_by(key, &self.issuer)?
            .der()
            .clone())
    }

    /// Issues a CLI client bundle (`client-bundle NAME`): a fresh key and a client certificate
    /// for `name`, with the CA certificate the CLI pins.
    pub fn issue_client(
        &self,
        name: &str,
        now: SystemTime,
        valid_for: Duration,
    ) -> Result<ClientBundle, TlsError> {
        check_client_name(name)?;
        let key = generate_key()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, "shoal-client");
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names = vec![SanType::URI(
            format!("{CLIENT_URI_PREFIX}{name}").try_into()?,
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        validity(&mut params, now, valid_for)?;
        let cert = params.signed_by(&key, &self.issuer)?.der().clone();
        Ok(ClientBundle {
            ca_cert: self.cert.clone(),
            cert,
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }
}

fn node_params(node: NodeId, now: SystemTime) -> Result<CertificateParams, TlsError> {
    let mut params =
        CertificateParams::new(vec![super::SERVER_NAME.to_string(), node_server_name(node)])?;
    params
        .subject_alt_names
        .push(SanType::URI(format!("{NODE_URI_PREFIX}{node}").try_into()?));
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, "shoal-node");
    params
        .distinguished_name
        .push(DnType::CommonName, node.to_string());
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    validity(&mut params, now, NODE_VALIDITY)?;
    Ok(params)
}

/// What a TLS endpoint presents: its certificate chain (leaf, then the CA, so that a joiner
/// that knows only the CA's digest can find and pin it) and its private key.
pub struct TlsIdentity {
    /// Leaf first, CA second.
    pub chain: Vec<CertificateDer<'static>>,
    /// PKCS#8 private key of the leaf.
    pub key: PrivatePkcs8KeyDer<'static>,
}

impl TlsIdentity {
    /// A node's identity from its certificate, the CA certificate and its PKCS#8 DER key.
    pub fn new(cert: &[u8], ca_cert: &[u8], key_der: &[u8]) -> Self {
        TlsIdentity {
            chain: vec![
                CertificateDer::from(cert.to_vec()),
                CertificateDer::from(ca_cert.to_vec()),
            ],
            key: PrivatePkcs8KeyDer::from(key_der.to_vec()),
        }
    }

    pub(super) fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

/// A remote CLI's credentials: one PEM file holding the CA certificate (which the CLI pins), its
/// client certificate and its private key.
pub struct ClientBundle {
    /// The cluster CA certificate.
    pub ca_cert: CertificateDer<'static>,
    /// The client certificate.
    pub cert: CertificateDer<'static>,
    /// Its PKCS#8 private key.
    pub key: PrivatePkcs8KeyDer<'static>,
}

impl ClientBundle {
    /// The bundle as one PEM file: client certificate, CA certificate, private key. Write it
    /// with mode 0600: it is a credential.
    pub fn to_pem(&self) -> String {
        let block = |tag: &str, der: &[u8]| pem::encode(&pem::Pem::new(tag, der.to_vec()));
        format!(
            "{}{}{}",
            block("CERTIFICATE", &self.cert),
            block("CERTIFICATE", &self.ca_cert),
            block("PRIVATE KEY", self.key.secret_pkcs8_der()),
        )
    }

    /// Reads a bundle written by [`to_pem`](Self::to_pem): exactly one client certificate (the
    /// one that is not a CA's), the CA certificate, and a PKCS#8 key.
    pub fn from_pem(text: &str) -> Result<Self, TlsError> {
        let bad = |why: &str| TlsError::Certificate(format!("client bundle: {why}"));
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(text.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| bad(&e.to_string()))?;
        let key = PrivatePkcs8KeyDer::from_pem_slice(text.as_bytes())
            .map_err(|e| bad(&format!("private key: {e}")))?;
        let [cert, ca_cert] = <[CertificateDer<'static>; 2]>::try_from(certs)
            .map_err(|c| bad(&format!("{} certificates, expected 2", c.len())))?;
        match cert_info(&cert)?.role {
            Role::Client(_) => {}
            Role::Node(_) => return Err(bad("the first certificate is a node's")),
        }
        Ok(ClientBundle { ca_cert, cert, key })
    }

    /// The identity the CLI presents (client certificate, then the CA).
    pub fn identity(&self) -> TlsIdentity {
        TlsIdentity {
            chain: vec![self.cert.clone(), self.ca_cert.clone()],
            key: self.key.clone_key(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_certificate_carries_its_id_and_a_random_serial() {
        let now = SystemTime::now();
        let ca = ClusterCa::generate("test", now).unwrap();
        let key = generate_key().unwrap();
        let csr = node_csr(&key, NodeId(0xabc)).unwrap();
        let a = ca.issue_node(NodeId(0xabc), &csr, now).unwrap();
        let b = ca.issue_node(NodeId(0xabc), &csr, now).unwrap();
        let (ia, ib) = (cert_info(&a).unwrap(), cert_info(&b).unwrap());
        assert_eq!(ia.role, Role::Node(NodeId(0xabc)));
        assert_ne!(ia.serial, ib.serial);
        assert_eq!(ia.serial.len(), 16);
        // The certificate is for the joiner's key, which the CA never saw.
        let (_, parsed) = x509_parser::parse_x509_certificate(&a).unwrap();
        assert_eq!(
            parsed.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
    }

    #[test]
    fn a_csr_signed_by_another_key_is_refused() {
        let now = SystemTime::now();
        let ca = ClusterCa::generate("test", now).unwrap();
        let mut csr = node_csr(&generate_key().unwrap(), NodeId(1)).unwrap();
        let n = csr.len();
        csr[n - 3] ^= 1; // inside the signature
        assert!(ca.issue_node(NodeId(1), &csr, now).is_err());
        assert!(ca.issue_node(NodeId(1), b"not a csr", now).is_err());
    }

    #[test]
    fn ca_reloads_from_der_and_keeps_signing() {
        let now = SystemTime::now();
        let ca = ClusterCa::generate("test", now).unwrap();
        let again = ClusterCa::from_der(ca.cert_der(), &ca.key_der()).unwrap();
        assert_eq!(again.digest(), ca.digest());
        let key = generate_key().unwrap();
        let cert = again.issue_node_for_key(NodeId(2), &key, now).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert).unwrap();
        let (_, ca_parsed) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
        assert_eq!(parsed.issuer(), ca_parsed.subject());
        parsed
            .verify_signature(Some(ca_parsed.public_key()))
            .unwrap();
    }

    #[test]
    fn client_bundle_round_trips_through_pem() {
        let now = SystemTime::now();
        let ca = ClusterCa::generate("test", now).unwrap();
        let bundle = ca.issue_client("alice", now, CLIENT_VALIDITY).unwrap();
        let pem = bundle.to_pem();
        assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2);
        assert_eq!(pem.matches("BEGIN PRIVATE KEY").count(), 1);
        let back = ClientBundle::from_pem(&pem).unwrap();
        assert_eq!(back.cert, bundle.cert);
        assert_eq!(back.ca_cert, *ca.cert_der());
        assert_eq!(
            cert_info(&back.cert).unwrap().role,
            Role::Client("alice".into())
        );
        assert!(ca.issue_client("no spaces", now, CLIENT_VALIDITY).is_err());
        assert!(ca.issue_client("", now, CLIENT_VALIDITY).is_err());
        assert!(ClientBundle::from_pem("").is_err());
    }

    #[test]
    fn certificates_without_a_single_role_are_refused() {
        let key = generate_key().unwrap();
        let plain = CertificateParams::new(vec!["x".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert!(cert_info(plain.der()).is_err());
        let mut two = CertificateParams::new(Vec::<String>::new()).unwrap();
        two.subject_alt_names = vec![
            SanType::URI(
                format!("{NODE_URI_PREFIX}{}", NodeId(1))
                    .try_into()
                    .unwrap(),
            ),
            SanType::URI(format!("{CLIENT_URI_PREFIX}bob").try_into().unwrap()),
        ];
        assert!(cert_info(two.self_signed(&key).unwrap().der()).is_err());
        assert!(cert_info(b"garbage").is_err());
    }
}
