//! The wire format: bincode (serde) with a size limit on every decode, behind one pair of functions,
//! plus the UDP envelope that frames every gossip packet.
//!
//! Every decode of untrusted bytes goes through [`decode`], which bounds allocation by the
//! configured limit and never panics, whatever the input.

use serde::{de::DeserializeOwned, Serialize};

/// Largest message accepted on any stream (API socket, QUIC). Membership state for 1,000 nodes with
/// full metadata is about 400 KiB; desired state later is bounded separately.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Largest gossip datagram we send or accept. Stays under a 1,500-byte Ethernet MTU after IP/UDP
/// headers and the envelope, so gossip never relies on IP fragmentation.
pub const MAX_DATAGRAM_BYTES: usize = 1_400;

/// Why bytes could not be turned into a value, or a value into bytes.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The bytes do not decode as the expected type (garbage, truncation, or a limit was hit).
    #[error("malformed message: {0}")]
    Decode(String),
    /// A value could not be encoded (it is larger than the limit).
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// The packet does not start with shoal's magic bytes.
    #[error("not a shoal packet")]
    BadMagic,
    /// The packet is from a protocol version this build does not speak.
    #[error("unsupported wire version {0} (this agent speaks {WIRE_VERSION})")]
    Version(u8),
    /// The packet kind byte is unknown.
    #[error("unknown packet kind {0}")]
    Kind(u8),
    /// The packet is larger than [`MAX_DATAGRAM_BYTES`] or a message exceeds its limit.
    #[error("message of {0} bytes exceeds the limit")]
    TooLarge(usize),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_MESSAGE_BYTES>()
}

/// Encodes `value` with shoal's wire configuration.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| WireError::Encode(e.to_string()))
}

/// Decodes a whole buffer into `T`; trailing bytes are an error (they would mean a framing bug or
/// a tampered message).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    let (value, used) = decode_prefix(bytes)?;
    if used != bytes.len() {
        return Err(WireError::Decode(format!(
            "{} trailing bytes",
            bytes.len() - used
        )));
    }
    Ok(value)
}

/// Decodes a `T` from the start of `bytes`, returning it and how many bytes it used.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), WireError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge(bytes.len()));
    }
    bincode::serde::decode_from_slice(bytes, config()).map_err(|e| WireError::Decode(e.to_string()))
}

/// First bytes of every shoal datagram: lets a node drop stray traffic cheaply.
pub const MAGIC: [u8; 2] = *b"SH";
/// Version of the datagram layout and of every message inside it. Bumped on incompatible change.
pub const WIRE_VERSION: u8 = 2;

/// What a gossip datagram carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PacketKind {
    /// A SWIM message produced by foca.
    Swim = 1,
    /// A node saying goodbye: lets peers show it `left` instead of `down`.
    Leave = 2,
    /// "You are suspected", sent straight to the suspect so it refutes at once.
    Suspect = 3,
}

/// Frames `body` as a datagram of `kind`. The envelope is where authenticated encryption slots in
/// (design §7): the header stays the associated data, the body becomes the sealed payload.
pub fn seal(kind: PacketKind, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&MAGIC);
    out.push(WIRE_VERSION);
    out.push(kind as u8);
    out.extend_from_slice(body);
    out
}

/// Checks a datagram's envelope and returns its kind and body.
pub fn open(packet: &[u8]) -> Result<(PacketKind, &[u8]), WireError> {
    if packet.len() > MAX_DATAGRAM_BYTES + 4 {
        return Err(WireError::TooLarge(packet.len()));
    }
    if packet.len() < 4 || packet[..2] != MAGIC {
        return Err(WireError::BadMagic);
    }
    if packet[2] != WIRE_VERSION {
        return Err(WireError::Version(packet[2]));
    }
    let kind = match packet[3] {
        1 => PacketKind::Swim,
        2 => PacketKind::Leave,
        3 => PacketKind::Suspect,
        other => return Err(WireError::Kind(other)),
    };
    Ok((kind, &packet[4..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips() {
        let packet = seal(PacketKind::Leave, b"hello");
        let (kind, body) = open(&packet).unwrap();
        assert_eq!(kind, PacketKind::Leave);
        assert_eq!(body, b"hello");
    }

    #[test]
    fn envelope_rejects_garbage() {
        assert!(matches!(open(b""), Err(WireError::BadMagic)));
        assert!(matches!(open(b"XX\x01\x01"), Err(WireError::BadMagic)));
        assert!(matches!(open(b"SH\x09\x01"), Err(WireError::Version(9))));
        assert!(matches!(
            open(&[b'S', b'H', WIRE_VERSION, 0x63]),
            Err(WireError::Kind(0x63))
        ));
        assert!(matches!(
            open(&vec![0u8; 10_000]),
            Err(WireError::TooLarge(10_000))
        ));
    }

    #[test]
    fn decode_bounds_allocation() {
        // A length prefix claiming 2^60 elements must fail fast, not allocate.
        let evil = [0xFFu8, 0, 0, 0, 0, 0, 0, 0x10, 0];
        assert!(decode::<Vec<u64>>(&evil).is_err());
        assert!(decode::<String>(&[0xFC, 0xFF, 0xFF, 0xFF, 0xFF]).is_err());
    }

    #[test]
    fn decode_rejects_trailing_bytes() {
        let mut bytes = encode(&7u32).unwrap();
        bytes.push(0);
        assert!(decode::<u32>(&bytes).is_err());
    }
}
