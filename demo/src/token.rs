//! Anti-forgery tokens that only the process that issued them accepts.
//!
//! A token is `NONCE.MAC`: a random 16-byte nonce and its HMAC-SHA256 under a key drawn at random
//! when the process starts, both in hex. Checking one needs no stored state, and another process
//! (another replica) has another key, so it rejects every token it did not issue: what makes a
//! load balancer without sticky sessions visible, as with the anti-forgery token of the Swarm
//! tutorial's web app.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of random nonce in each token.
const NONCE_LEN: usize = 16;
/// Tells these MACs apart from any other use of the key.
const DOMAIN: &[u8] = b"shoal-demo anti-forgery token\0";

/// The per-process secret that issues and checks tokens.
pub struct TokenKey {
    key: [u8; 32],
}

impl TokenKey {
    /// A key drawn from the operating system's random source.
    pub fn random() -> Self {
        Self::from_bytes(random_bytes())
    }

    /// A key with the given bytes (tests use fixed keys).
    pub fn from_bytes(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// A new token with a fresh random nonce.
    pub fn issue(&self) -> String {
        self.issue_with_nonce(&random_bytes())
    }

    /// The token for `nonce`.
    fn issue_with_nonce(&self, nonce: &[u8; NONCE_LEN]) -> String {
        let mac = self.mac(nonce).finalize().into_bytes();
        format!("{}.{}", hex::encode(nonce), hex::encode(mac))
    }

    /// Whether `token` was issued with this key. Malformed tokens are simply not valid.
    pub fn verify(&self, token: &str) -> bool {
        let Some((nonce, mac)) = token.split_once('.') else {
            return false;
        };
        let (Ok(nonce), Ok(mac)) = (hex::decode(nonce), hex::decode(mac)) else {
            return false;
        };
        nonce.len() == NONCE_LEN && self.mac(&nonce).verify_slice(&mac).is_ok()
    }

    fn mac(&self, nonce: &[u8]) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(DOMAIN);
        mac.update(nonce);
        mac
    }
}

/// `N` bytes from the operating system's random source.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    getrandom::fill(&mut bytes).expect("reading the operating system's random source");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_accepts_the_tokens_it_issued() {
        let key = TokenKey::random();
        for _ in 0..10 {
            assert!(key.verify(&key.issue()));
        }
    }

    #[test]
    fn tokens_differ_each_time() {
        let key = TokenKey::random();
        assert_ne!(key.issue(), key.issue());
    }

    #[test]
    fn another_key_rejects_them() {
        let one = TokenKey::from_bytes([1; 32]);
        let two = TokenKey::from_bytes([2; 32]);
        let token = one.issue_with_nonce(&[7; NONCE_LEN]);
        assert!(one.verify(&token));
        assert!(!two.verify(&token));
        assert!(!two.verify(&one.issue()));
    }

    #[test]
    fn tokens_are_deterministic_for_a_key_and_nonce() {
        let key = TokenKey::from_bytes([3; 32]);
        let token = key.issue_with_nonce(&[9; NONCE_LEN]);
        assert_eq!(token, key.issue_with_nonce(&[9; NONCE_LEN]));
        let (nonce, mac) = token.split_once('.').unwrap();
        assert_eq!(nonce, "09".repeat(NONCE_LEN));
        assert_eq!(mac.len(), 64);
    }

    #[test]
    fn tampered_or_malformed_tokens_are_rejected() {
        let key = TokenKey::from_bytes([4; 32]);
        let token = key.issue_with_nonce(&[5; NONCE_LEN]);
        let (nonce, mac) = token.split_once('.').unwrap();

        // Another nonce with the same MAC.
        let other_nonce = "06".repeat(NONCE_LEN);
        assert!(!key.verify(&format!("{other_nonce}.{mac}")));
        // A MAC with one digit changed.
        let mut bad_mac = mac.to_string();
        let last = if bad_mac.ends_with('0') { "1" } else { "0" };
        bad_mac.replace_range(63.., last);
        assert!(!key.verify(&format!("{nonce}.{bad_mac}")));
        // A truncated MAC, a short nonce, no separator, not hex, empty.
        assert!(!key.verify(&format!("{nonce}.{}", &mac[..32])));
        assert!(!key.verify(&format!("{}.{mac}", &nonce[..30])));
        assert!(!key.verify(&format!("{nonce}{mac}")));
        assert!(!key.verify(&format!("{nonce}.{}", "zz".repeat(32))));
        assert!(!key.verify(""));
        assert!(!key.verify("."));
    }
}
