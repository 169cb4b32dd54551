//! Admission to a cluster: join tokens, the joiner's proof, and the messages of the join
//! exchange (design §7). Pure: the certificates themselves are made and checked in the agent
//! (`agent::tls`), which owns the X.509 and TLS code.
//!
//! # The exchange
//!
//! 1. The operator runs `cluster join --token T SEED:PORT`. The joiner parses `T`
//!    ([`token::JoinToken`]), generates its key pair and a certificate signing request (CSR)
//!    for it, and dials the seed on the join ALPN with a TLS client config that accepts only a
//!    server whose certificate chains to a CA with the token's digest.
//! 2. It sends a [`JoinRequest`]: its node id, the CSR, and [`token::join_proof`].
//! 3. The member calls [`check_join`] with its CA digest, the secrets it accepts and what it
//!    knows of the id, then (if admitted) signs a node certificate for the CSR's key and answers
//!    [`JoinResponse::Granted`] with everything a member holds: its certificate, the CA
//!    certificate and key (any member can admit), the gossip keyring and the token secret.
//! 4. The joiner writes all of it to its data dir (`trust/`) and starts as a member; a restart
//!    needs no token.

pub mod token;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{identity::NodeId, seal::Keyring};
use token::{verify_join_proof, CaDigest, JoinProof, JoinSecret};

/// Revoked node ids and certificate serials. Grow-only, so merging two sets is their union and
/// every node converges on the same set whatever order revocations arrive in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationSet {
    /// Nodes removed from the cluster: all their certificates, present and future.
    pub nodes: BTreeSet<NodeId>,
    /// Single certificates (client bundles, or one certificate of a node), by DER serial.
    pub serials: BTreeSet<Vec<u8>>,
}

impl RevocationSet {
    /// Adds everything `other` revokes.
    pub fn merge(&mut self, other: &RevocationSet) {
        self.nodes.extend(other.nodes.iter().copied());
        self.serials.extend(other.serials.iter().cloned());
    }

    /// What [`check_join`] should be told about `id`, as far as revocation goes.
    pub fn is_node_revoked(&self, id: NodeId) -> bool {
        self.nodes.contains(&id)
    }
}

/// Largest certificate signing request accepted: a P-256 CSR is about 250 bytes; the bound keeps
/// an unauthenticated joiner from making a member hash megabytes.
pub const MAX_CSR_BYTES: usize = 4_096;

/// What a joiner sends on the join ALPN, the only thing an unauthenticated client may send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The id the joiner will have (random, from its data dir).
    pub node: NodeId,
    /// DER PKCS#10 request for the joiner's public key, signed with its private key.
    pub csr_der: Vec<u8>,
    /// [`token::join_proof`] of `node` and `csr_der`.
    pub proof: JoinProof,
}

/// Secret bytes (a private key) that are wiped on drop and never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes(pub Vec<u8>);

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBytes({} bytes)", self.0.len())
    }
}

/// Everything a new member needs, sent by the member that admitted it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinGrant {
    /// The joiner's node certificate (DER), for the key in its CSR.
    pub node_cert_der: Vec<u8>,
    /// The cluster CA's certificate (DER); its digest is the token's.
    pub ca_cert_der: Vec<u8>,
    /// The CA's PKCS#8 private key: every member can admit, so every member signs.
    pub ca_key_der: SecretBytes,
    /// The gossip keyring.
    pub keyring: Keyring,
    /// The current join secret, so the new member can admit others.
    pub token_secret: JoinSecret,
}

/// Why a member refused a joiner. Deliberately coarse towards the joiner: a wrong secret and a
/// proof for another cluster look the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum JoinRefusal {
    /// The proof does not verify under any secret this member accepts.
    #[error("the join token is not valid for this cluster")]
    BadProof,
    /// This node id was removed from the cluster; it must start afresh with a new id.
    #[error("node {0} was removed from the cluster")]
    Revoked(NodeId),
    /// Another member already has this id.
    #[error("node id {0} is already a member")]
    Taken(NodeId),
    /// The request is malformed (reserved id, oversized or unreadable CSR).
    #[error("malformed join request: {0}")]
    Malformed(String),
}

/// A member's answer to a [`JoinRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JoinResponse {
    /// Admitted.
    Granted(Box<JoinGrant>),
    /// Refused, with the reason.
    Refused(JoinRefusal),
}

/// What the admitting member knows of the id a joiner claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdStatus {
    /// Never seen, or left for good: free to take.
    Free,
    /// A current member (alive or suspect): a joiner claiming it would impersonate it.
    Member,
    /// Removed by an operator: its certificates are revoked and it may not come back.
    Revoked,
}

/// Decides whether to admit a joiner, before any certificate is signed.
///
/// `secrets`: the join secrets this member accepts (the current one, and the previous one
/// during a token rotation). The proof is checked first and the id afterwards, so a client
/// without the secret learns nothing about which ids exist.
pub fn check_join(
    request: &JoinRequest,
    ca: &CaDigest,
    secrets: &[JoinSecret],
    id_status: impl Fn(NodeId) -> IdStatus,
) -> Result<(), JoinRefusal> {
    if request.csr_der.len() > MAX_CSR_BYTES {
        return Err(JoinRefusal::Malformed(format!(
            "certificate request of {} bytes (limit {MAX_CSR_BYTES})",
            request.csr_der.len()
        )));
    }
    // Every secret is tried even after a match, so timing does not tell which one matched.
    let valid = secrets.iter().fold(false, |ok, secret| {
        verify_join_proof(secret, ca, request.node, &request.csr_der, &request.proof) | ok
    });
    if !valid {
        return Err(JoinRefusal::BadProof);
    }
    if request.node == NodeId::UNKNOWN {
        return Err(JoinRefusal::Malformed("node id 0 is reserved".into()));
    }
    match id_status(request.node) {
        IdStatus::Free => Ok(()),
        IdStatus::Member => Err(JoinRefusal::Taken(request.node)),
        IdStatus::Revoked => Err(JoinRefusal::Revoked(request.node)),
    }
}

/// The joiner's check of a grant before it stores anything: the CA it was given must be the
/// one its token names (the TLS handshake pinned the same digest; this keeps a confused or
/// compromised member from handing over another CA).
pub fn grant_matches_token(grant: &JoinGrant, token: &token::JoinToken) -> bool {
    CaDigest::of_certificate(&grant.ca_cert_der) == token.ca
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::GossipKey;
    use token::{join_proof, JoinToken};

    fn setup() -> (JoinToken, JoinRequest) {
        let token = JoinToken::new(CaDigest([9; 32]), [4; 16]);
        let csr = b"csr".to_vec();
        let request = JoinRequest {
            node: NodeId(5),
            proof: join_proof(&token, NodeId(5), &csr),
            csr_der: csr,
        };
        (token, request)
    }

    #[test]
    fn admits_a_holder_of_the_secret() {
        let (token, request) = setup();
        let secrets = [JoinSecret([1; 16]), token.secret.clone()];
        assert_eq!(
            check_join(&request, &token.ca, &secrets, |_| IdStatus::Free),
            Ok(())
        );
    }

    #[test]
    fn refuses_wrong_secret_cluster_or_id() {
        let (token, request) = setup();
        let secrets = [token.secret.clone()];
        let free = |_| IdStatus::Free;
        assert_eq!(
            check_join(&request, &token.ca, &[JoinSecret([1; 16])], free),
            Err(JoinRefusal::BadProof)
        );
        assert_eq!(
            check_join(&request, &CaDigest([8; 32]), &secrets, free),
            Err(JoinRefusal::BadProof)
        );
        assert_eq!(
            check_join(&request, &token.ca, &[], free),
            Err(JoinRefusal::BadProof)
        );
        assert_eq!(
            check_join(&request, &token.ca, &secrets, |_| IdStatus::Member),
            Err(JoinRefusal::Taken(NodeId(5)))
        );
        assert_eq!(
            check_join(&request, &token.ca, &secrets, |_| IdStatus::Revoked),
            Err(JoinRefusal::Revoked(NodeId(5)))
        );
        // Without the secret, a taken id still reads as a bad proof.
        assert_eq!(
            check_join(&request, &token.ca, &[JoinSecret([1; 16])], |_| {
                IdStatus::Member
            }),
            Err(JoinRefusal::BadProof)
        );
        let mut big = request.clone();
        big.csr_der = vec![0; MAX_CSR_BYTES + 1];
        assert!(matches!(
            check_join(&big, &token.ca, &secrets, free),
            Err(JoinRefusal::Malformed(_))
        ));
        let zero = JoinRequest {
            node: NodeId::UNKNOWN,
            proof: join_proof(&token, NodeId::UNKNOWN, b"csr"),
            csr_der: b"csr".to_vec(),
        };
        assert!(matches!(
            check_join(&zero, &token.ca, &secrets, free),
            Err(JoinRefusal::Malformed(_))
        ));
    }

    #[test]
    fn revocations_merge_as_a_union() {
        let mut a = RevocationSet::default();
        a.nodes.insert(NodeId(1));
        let mut b = RevocationSet::default();
        b.nodes.insert(NodeId(2));
        b.serials.insert(vec![9]);
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, ba);
        assert!(ab.is_node_revoked(NodeId(1)) && ab.is_node_revoked(NodeId(2)));
        let before = ab.clone();
        ab.merge(&a);
        assert_eq!(ab, before);
    }

    #[test]
    fn messages_round_trip_and_hide_secrets() {
        let (token, request) = setup();
        let bytes = crate::wire::encode(&request).unwrap();
        assert_eq!(crate::wire::decode::<JoinRequest>(&bytes).unwrap(), request);
        let grant = JoinResponse::Granted(Box::new(JoinGrant {
            node_cert_der: vec![1, 2],
            ca_cert_der: vec![3],
            ca_key_der: SecretBytes(vec![0x42; 40]),
            keyring: Keyring::new(1, GossipKey([0x42; 32])),
            token_secret: token.secret.clone(),
        }));
        let bytes = crate::wire::encode(&grant).unwrap();
        assert_eq!(crate::wire::decode::<JoinResponse>(&bytes).unwrap(), grant);
        let JoinResponse::Granted(g) = &grant else {
            unreachable!()
        };
        assert!(!grant_matches_token(g, &token), "CA [3] is not the token's");
        let ours = JoinToken::new(CaDigest::of_certificate(&[3]), [4; 16]);
        assert!(grant_matches_token(g, &ours));
        let shown = format!("{grant:?}");
        assert!(!shown.contains("66"), "Debug prints key bytes: {shown}");
    }
}
