//! Join tokens and the proof a joiner gives that it holds one.
//!
//! # Token
//!
//! `SWMTKN-1-<CA digest>-<secret>`, the shape of Docker Swarm's tokens: the digest is the SHA-256
//! of the cluster CA's DER certificate in base 36, zero-padded to 50 characters; the secret is
//! 128 random bits in base 36, zero-padded to 25 characters; both lowercase. The digest lets a
//! joiner recognise the cluster's CA before it trusts anything a member says (it pins the CA,
//! not a member's leaf certificate, so any member can admit it); the secret is what makes it
//! welcome.
//!
//! # Proof
//!
//! The joiner does **not** send the secret. It sends
//! `HMAC-SHA-256(secret, "shoal-join-proof/1" ‖ CA digest ‖ node id ‖ len ‖ CSR)`, where the
//! CSR is the DER certificate signing request carrying its public key (signed with the matching
//! private key, so the admitter also learns that the joiner holds that key). It sends it over a
//! TLS connection on which it has already checked that the member's certificate chains to the CA
//! whose digest the token carries. Why a MAC rather than the secret itself, given that every
//! member holds the secret anyway (any member can admit):
//!
//! - A proof is bound to one node id and one key pair. Whoever sees it (a member's debug log, a
//!   TLS-terminating middlebox an operator added, a member that is later compromised and
//!   replays what it received) can only ask again for a certificate for that same id and key,
//!   which is useless without the joiner's private key; the secret would let them enrol any
//!   key of their choosing for as long as the token is valid.
//! - If the joiner's CA check were ever wrong (a bug, an operator who pasted the token of
//!   another cluster into a script that skipped it), an impostor that answers the join learns
//!   a 256-bit MAC of a 128-bit random secret, not the secret: it cannot join the real cluster
//!   with it, and brute-forcing 128 bits offline is out of reach.
//! - The CA digest is inside the MAC, so a proof made for one cluster is worthless in another
//!   even if two clusters were ever given the same secret.
//!
//! The proof carries no server challenge: replaying it yields a certificate for a key only the
//! joiner holds, for a node id the admitter checks against its revocations, so freshness would
//! add a round trip and nothing else.

use std::{fmt, str::FromStr};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::identity::NodeId;

/// The token's first field, as Swarm's.
pub const TOKEN_PREFIX: &str = "SWMTKN";
/// The token format version this build reads and writes.
pub const TOKEN_VERSION: u32 = 1;
/// Bytes of randomness in a join secret.
pub const SECRET_BYTES: usize = 16;
/// Characters of the base-36 CA digest (36^50 > 2^256).
pub const DIGEST_CHARS: usize = 50;
/// Characters of the base-36 secret (36^25 > 2^128).
pub const SECRET_CHARS: usize = 25;
/// Domain separation for the join proof's MAC input.
const PROOF_CONTEXT: &[u8] = b"shoal-join-proof/1";

/// SHA-256 of the cluster CA's DER certificate: what a token pins.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CaDigest(pub [u8; 32]);

impl CaDigest {
    /// The digest of a DER certificate.
    pub fn of_certificate(der: &[u8]) -> Self {
        CaDigest(Sha256::digest(der).into())
    }
}

impl fmt::Debug for CaDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaDigest({})", hex::encode(&self.0[..8]))
    }
}

/// The token's secret. Compared in constant time, wiped on drop, never printed.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct JoinSecret(pub [u8; SECRET_BYTES]);

impl JoinSecret {
    /// Constant-time equality: a timing side channel must not reveal how much of a guess was
    /// right.
    pub fn ct_eq(&self, other: &JoinSecret) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl PartialEq for JoinSecret {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other)
    }
}

impl Eq for JoinSecret {}

impl fmt::Debug for JoinSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JoinSecret(..)")
    }
}

/// A parsed join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The CA the joiner must find at the other end.
    pub ca: CaDigest,
    /// What proves the joiner was invited.
    pub secret: JoinSecret,
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

/// Why a string is not a join token. The messages never echo the secret part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// It does not start with `SWMTKN-`.
    #[error("not a join token: it must start with {TOKEN_PREFIX}-")]
    Prefix,
    /// A token version this build does not read.
    #[error(
        "join token version {0:?} is not supported (this build reads version {TOKEN_VERSION})"
    )]
    Version(String),
    /// Not four dash-separated fields.
    #[error("a join token has 4 dash-separated fields, this one has {0}")]
    Fields(usize),
    /// A field has the wrong length.
    #[error("the {field} of a join token has {expected} characters, this one has {found}")]
    Length {
        /// Which field.
        field: &'static str,
        /// Its required length.
        expected: usize,
        /// The length found.
        found: usize,
    },
    /// A field holds a character outside `0-9a-z`.
    #[error("the {field} of a join token may hold only 0-9 and a-z; found {found:?} at position {position}")]
    Character {
        /// Which field.
        field: &'static str,
        /// The offending character (for the digest) or `'?'` (for the secret, so the message
        /// leaks nothing of it).
        found: char,
        /// Its 0-based position in the field.
        position: usize,
    },
    /// The base-36 number is larger than the field's bytes can hold.
    #[error("the {0} of a join token is out of range")]
    Range(&'static str),
}

impl JoinToken {
    /// A token for the CA with this digest and a secret of fresh random bytes from the caller's
    /// CSPRNG.
    pub fn new(ca: CaDigest, secret: [u8; SECRET_BYTES]) -> Self {
        JoinToken {
            ca,
            secret: JoinSecret(secret),
        }
    }

    /// The token's text, to hand to the operator. (Not `Display`, so that formatting a struct
    /// that holds a token never prints the secret by accident.)
    pub fn reveal(&self) -> String {
        format!(
            "{TOKEN_PREFIX}-{TOKEN_VERSION}-{}-{}",
            base36_encode(&self.ca.0, DIGEST_CHARS),
            base36_encode(&self.secret.0, SECRET_CHARS)
        )
    }

    /// Whether `other`'s secret is this token's, in constant time.
    pub fn secret_matches(&self, other: &JoinSecret) -> bool {
        self.secret.ct_eq(other)
    }
}

impl FromStr for JoinToken {
    type Err = TokenError;

    fn from_str(text: &str) -> Result<Self, TokenError> {
        let text = text.trim();
        let fields: Vec<&str> = text.split('-').collect();
        if fields[0] != TOKEN_PREFIX {
            return Err(TokenError::Prefix);
        }
        if fields.len() < 2 {
            return Err(TokenError::Fields(fields.len()));
        }
        if fields[1] != TOKEN_VERSION.to_string() {
            // Echo at most a few characters: the version field is not secret, but a mangled
            // token could have the secret there.
            return Err(TokenError::Version(fields[1].chars().take(8).collect()));
        }
        if fields.len() != 4 {
            return Err(TokenError::Fields(fields.len()));
        }
        let mut ca = [0u8; 32];
        base36_decode(fields[2], "CA digest", DIGEST_CHARS, &mut ca, false)?;
        let mut secret = [0u8; SECRET_BYTES];
        base36_decode(fields[3], "secret", SECRET_CHARS, &mut secret, true)?;
        Ok(JoinToken::new(CaDigest(ca), secret))
    }
}

/// Base 36 (`0-9a-z`) of a big-endian number, left-padded with zeros to `width` characters.
fn base36_encode(bytes: &[u8], width: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut number = bytes.to_vec();
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        // Long division of the whole number by 36; the remainder is the next digit.
        let mut remainder = 0u32;
        for byte in number.iter_mut() {
            let acc = (remainder << 8) | u32::from(*byte);
            *byte = (acc / 36) as u8;
            remainder = acc % 36;
        }
        *slot = DIGITS[remainder as usize];
    }
    debug_assert!(number.iter().all(|b| *b == 0), "width too small");
    String::from_utf8(out).expect("ASCII digits")
}

/// Parses a fixed-width base-36 field into `out` (big-endian), refusing anything else.
fn base36_decode(
    text: &str,
    field: &'static str,
    width: usize,
    out: &mut [u8],
    secret: bool,
) -> Result<(), TokenError> {
    let found = text.chars().count();
    if found != width {
        return Err(TokenError::Length {
            field,
            expected: width,
            found,
        });
    }
    for (position, ch) in text.chars().enumerate() {
        let digit = match ch {
            '0'..='9' => ch as u32 - '0' as u32,
            'a'..='z' => ch as u32 - 'a' as u32 + 10,
            _ => {
                return Err(TokenError::Character {
                    field,
                    found: if secret { '?' } else { ch },
                    position,
                })
            }
        };
        // out = out * 36 + digit, with the carry out of the top byte meaning overflow.
        let mut carry = digit;
        for byte in out.iter_mut().rev() {
            let acc = u32::from(*byte) * 36 + carry;
            *byte = acc as u8;
            carry = acc >> 8;
        }
        if carry != 0 {
            return Err(TokenError::Range(field));
        }
    }
    Ok(())
}

/// A joiner's proof that it holds the token's secret, bound to its id and key request.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinProof(pub [u8; 32]);

impl fmt::Debug for JoinProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinProof({}..)", hex::encode(&self.0[..4]))
    }
}

fn proof_mac(secret: &JoinSecret, ca: &CaDigest, node: NodeId, csr: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&secret.0).expect("HMAC takes any key");
    mac.update(PROOF_CONTEXT);
    mac.update(&ca.0);
    mac.update(&node.0.to_be_bytes());
    // The length makes the encoding unambiguous should anything ever follow the CSR.
    mac.update(&(csr.len() as u64).to_be_bytes());
    mac.update(csr);
    mac
}

/// What the joiner sends: the MAC of its node id and DER certificate signing request under the
/// token's secret (see the module docs for why not the secret itself).
pub fn join_proof(token: &JoinToken, node: NodeId, csr: &[u8]) -> JoinProof {
    JoinProof(
        proof_mac(&token.secret, &token.ca, node, csr)
            .finalize()
            .into_bytes()
            .into(),
    )
}

/// Checks a joiner's proof against a secret this member accepts, in constant time.
///
/// `ca` is this cluster's CA digest and `csr` the request exactly as received. A member that
/// accepts several secrets (during a token rotation) calls this once per secret.
pub fn verify_join_proof(
    secret: &JoinSecret,
    ca: &CaDigest,
    node: NodeId,
    csr: &[u8],
    proof: &JoinProof,
) -> bool {
    proof_mac(secret, ca, node, csr)
        .verify_slice(&proof.0)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn token() -> JoinToken {
        JoinToken::new(CaDigest::of_certificate(b"a CA"), [0x11; SECRET_BYTES])
    }

    #[test]
    fn token_round_trips_and_has_swarms_shape() {
        let t = token();
        let text = t.reveal();
        let fields: Vec<_> = text.split('-').collect();
        assert_eq!(fields[0], "SWMTKN");
        assert_eq!(fields[1], "1");
        assert_eq!(fields[2].len(), 50);
        assert_eq!(fields[3].len(), 25);
        assert_eq!(text.parse::<JoinToken>().unwrap(), t);
        assert_eq!(format!("  {text}\n").parse::<JoinToken>().unwrap(), t);
        assert!(
            !format!("{t:?}").contains(fields[3]),
            "Debug leaks the secret"
        );
    }

    #[test]
    fn base36_edges() {
        assert_eq!(base36_encode(&[0; 16], 25), "0".repeat(25));
        assert_eq!(base36_encode(&[0, 35], 3), "00z");
        assert_eq!(base36_encode(&[0, 36], 3), "010");
        let max = base36_encode(&[0xff; 32], 50);
        let mut back = [0u8; 32];
        base36_decode(&max, "x", 50, &mut back, false).unwrap();
        assert_eq!(back, [0xff; 32]);
        // One more than 2^128 - 1 does not fit the secret.
        let mut out = [0u8; 16];
        assert_eq!(
            base36_decode(&"z".repeat(25), "secret", 25, &mut out, true),
            Err(TokenError::Range("secret"))
        );
    }

    #[test]
    fn parse_errors_are_specific() {
        let good = token().reveal();
        let fields: Vec<_> = good.split('-').collect();
        let (digest, secret) = (fields[2], fields[3]);
        let parse = |s: &str| s.parse::<JoinToken>().unwrap_err();
        assert_eq!(parse("hello"), TokenError::Prefix);
        assert_eq!(
            parse(&format!("SWMTKM-1-{digest}-{secret}")),
            TokenError::Prefix
        );
        assert_eq!(
            parse(&format!("SWMTKN-2-{digest}-{secret}")),
            TokenError::Version("2".into())
        );
        assert_eq!(parse(&format!("SWMTKN-1-{digest}")), TokenError::Fields(3));
        assert_eq!(
            parse(&format!("SWMTKN-1-{digest}-{secret}-x")),
            TokenError::Fields(5)
        );
        assert_eq!(
            parse(&format!("SWMTKN-1-{}-{secret}", &digest[1..])),
            TokenError::Length {
                field: "CA digest",
                expected: 50,
                found: 49
            }
        );
        assert_eq!(
            parse(&format!("SWMTKN-1-{digest}-{secret}0")),
            TokenError::Length {
                field: "secret",
                expected: 25,
                found: 26
            }
        );
        let upper = format!("SWMTKN-1-{digest}-{}", secret.to_uppercase());
        if secret.chars().any(|c| c.is_ascii_lowercase()) {
            assert!(matches!(
                parse(&upper),
                TokenError::Character {
                    field: "secret",
                    found: '?',
                    ..
                }
            ));
        }
        let mut bad_digest = digest.to_string();
        bad_digest.replace_range(3..4, "_");
        assert_eq!(
            parse(&format!("SWMTKN-1-{bad_digest}-{secret}")),
            TokenError::Character {
                field: "CA digest",
                found: '_',
                position: 3
            }
        );
        // Error texts never contain the secret.
        for e in [
            parse(&format!("SWMTKN-1-{digest}-{secret}0")),
            parse(&upper),
        ] {
            assert!(!e.to_string().contains(secret));
        }
    }

    #[test]
    fn secrets_compare_in_constant_time_and_by_value() {
        let a = JoinSecret([1; 16]);
        let mut b = [1; 16];
        assert!(a.ct_eq(&JoinSecret(b)));
        b[15] = 2;
        assert!(!a.ct_eq(&JoinSecret(b)));
        assert!(token().secret_matches(&JoinSecret([0x11; 16])));
    }

    #[test]
    fn proof_binds_secret_cluster_node_and_key() {
        let t = token();
        let csr = b"a certificate signing request".to_vec();
        let proof = join_proof(&t, NodeId(7), &csr);
        assert!(verify_join_proof(&t.secret, &t.ca, NodeId(7), &csr, &proof));
        // Another secret, cluster, node or key request: refused.
        assert!(!verify_join_proof(
            &JoinSecret([0x12; 16]),
            &t.ca,
            NodeId(7),
            &csr,
            &proof
        ));
        let other_ca = CaDigest::of_certificate(b"another CA");
        assert!(!verify_join_proof(
            &t.secret,
            &other_ca,
            NodeId(7),
            &csr,
            &proof
        ));
        assert!(!verify_join_proof(
            &t.secret,
            &t.ca,
            NodeId(8),
            &csr,
            &proof
        ));
        let mut other_csr = csr.clone();
        other_csr.push(0);
        assert!(!verify_join_proof(
            &t.secret,
            &t.ca,
            NodeId(7),
            &other_csr,
            &proof
        ));
        let mut forged = proof;
        forged.0[0] ^= 1;
        assert!(!verify_join_proof(
            &t.secret,
            &t.ca,
            NodeId(7),
            &csr,
            &forged
        ));
    }

    proptest! {
        #[test]
        fn any_token_round_trips(ca: [u8; 32], secret: [u8; 16]) {
            let t = JoinToken::new(CaDigest(ca), secret);
            prop_assert_eq!(t.reveal().parse::<JoinToken>().unwrap(), t);
        }

        #[test]
        fn parsing_never_panics(s in "\\PC{0,120}") {
            let _ = s.parse::<JoinToken>();
        }

        #[test]
        fn near_misses_are_refused(secret: [u8; 16], pos in 0usize..25, ch in "[0-9a-z]") {
            let t = JoinToken::new(CaDigest([3; 32]), secret);
            let text = t.reveal();
            let start = text.len() - 25 + pos;
            let mut changed = text.clone();
            changed.replace_range(start..start + 1, &ch);
            match changed.parse::<JoinToken>() {
                Ok(other) => prop_assert_eq!(other == t, changed == text),
                Err(e) => prop_assert_eq!(e, TokenError::Range("secret")),
            }
        }
    }
}
