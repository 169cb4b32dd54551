//! The envelope of every file shoal persists: magic, file kind, format version, body.
//!
//! A data dir outlives the binary that wrote it: an agent upgraded, downgraded or pointed at the
//! wrong directory must say so plainly instead of misreading bytes. Every file therefore starts
//! with an 8-byte header (integers big-endian):
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 4 | [`FILE_MAGIC`] `"SHLF"` |
//! | 4 | 2 | [`FileKind`] |
//! | 6 | 2 | format version of that kind |
//! | 8 | n | body: bincode ([`crate::wire`]) for shoal's structures, JSON for the small files an
//! operator may want to read, DER for certificates and keys |
//!
//! Each kind has its own version ([`FileKind::current_version`]), bumped when its body changes
//! incompatibly. Reading a newer version is refused with an error naming both versions; reading
//! an older one goes through a migration (none exist yet). Files written before this envelope
//! existed (a raw bincode `desired.bin`, plain JSON `node.json`) have no magic and are read as
//! the legacy format by [`decode_or_legacy`], which tells the caller to rewrite them.

use serde::{de::DeserializeOwned, Serialize};

use crate::{desired::state::DesiredState, wire};

/// First bytes of every persisted file.
pub const FILE_MAGIC: [u8; 4] = *b"SHLF";
/// Size of the envelope's header.
pub const FILE_HEADER_BYTES: usize = 8;

/// What a file holds. The numbers are persisted: never reuse or renumber one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum FileKind {
    /// `desired.bin`: the node's replica of the desired state (bincode).
    DesiredState = 1,
    /// `node.json`: the node's id and last boot generation (JSON).
    NodeState = 2,
    /// `peers.json`: gossip addresses remembered for the next start (JSON).
    Peers = 3,
    /// `trust/ca.crt`: the cluster CA's certificate (DER).
    CaCert = 4,
    /// `trust/ca.key`: the cluster CA's private key (PKCS#8 DER).
    CaKey = 5,
    /// `trust/node.crt`: this node's certificate (DER).
    NodeCert = 6,
    /// `trust/node.key`: this node's private key (PKCS#8 DER).
    NodeKey = 7,
    /// `trust/keyring`: the gossip keyring (bincode of [`crate::seal::Keyring`]).
    Keyring = 8,
    /// `trust/token`: the current join secret (bincode of
    /// [`crate::trust::token::JoinSecret`]).
    JoinSecret = 9,
    /// `trust/revoked`: revoked node ids and certificate serials (bincode).
    Revocations = 10,
}

impl FileKind {
    const ALL: [FileKind; 10] = [
        FileKind::DesiredState,
        FileKind::NodeState,
        FileKind::Peers,
        FileKind::CaCert,
        FileKind::CaKey,
        FileKind::NodeCert,
        FileKind::NodeKey,
        FileKind::Keyring,
        FileKind::JoinSecret,
        FileKind::Revocations,
    ];

    /// The format version this build writes, and the newest it reads.
    pub fn current_version(self) -> u16 {
        // One version per kind: bump only the kind whose body changed, and add the migration
        // from the old version to `migrate` below.
        match self {
            // 2: container options (P7), networks, node address slots, service network
            // attachments (P6), the cluster entry (trust); 1 is migrated.
            FileKind::DesiredState => 2,
            FileKind::NodeState
            | FileKind::Peers
            | FileKind::CaCert
            | FileKind::CaKey
            | FileKind::NodeCert
            | FileKind::NodeKey
            | FileKind::Keyring
            | FileKind::JoinSecret
            | FileKind::Revocations => 1,
        }
    }

    /// A name for messages.
    pub fn name(self) -> &'static str {
        match self {
            FileKind::DesiredState => "desired-state",
            FileKind::NodeState => "node-state",
            FileKind::Peers => "peers",
            FileKind::CaCert => "CA certificate",
            FileKind::CaKey => "CA key",
            FileKind::NodeCert => "node certificate",
            FileKind::NodeKey => "node key",
            FileKind::Keyring => "gossip keyring",
            FileKind::JoinSecret => "join secret",
            FileKind::Revocations => "revocations",
        }
    }

    fn from_u16(n: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|k| *k as u16 == n)
    }
}

/// Why a persisted file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The file does not start with [`FILE_MAGIC`] (and the kind has no legacy format).
    #[error("not a shoal {} file (no SHLF header)", .0.name())]
    BadMagic(FileKind),
    /// Shorter than the header.
    #[error("{} file is truncated", .0.name())]
    Truncated(FileKind),
    /// A file of another kind was found where this one was expected.
    #[error("expected a {} file, found kind {found}", .expected.name())]
    Kind {
        /// The kind asked for.
        expected: FileKind,
        /// The kind number in the file.
        found: u16,
    },
    /// Written by a build that uses another format version.
    #[error(
        "{} file has format version {found}, this build reads version {supported}{hint}",
        .kind.name(),
        hint = if *.found > *.supported { " (written by a newer shoal: upgrade this agent)" } else { "" }
    )]
    Version {
        /// The file's kind.
        kind: FileKind,
        /// The version in the file.
        found: u16,
        /// The version this build reads and writes.
        supported: u16,
    },
    /// The body does not decode.
    #[error("{} file body: {source}", .kind.name())]
    Body {
        /// The file's kind.
        kind: FileKind,
        /// What went wrong.
        source: wire::WireError,
    },
}

/// Frames `body` as a file of `kind` at its current version.
pub fn encode_bytes(kind: FileKind, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FILE_HEADER_BYTES + body.len());
    out.extend_from_slice(&FILE_MAGIC);
    out.extend_from_slice(&(kind as u16).to_be_bytes());
    out.extend_from_slice(&kind.current_version().to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Encodes `value` with the wire codec (bincode) as a file of `kind`.
pub fn encode_file<T: Serialize>(kind: FileKind, value: &T) -> Result<Vec<u8>, FormatError> {
    let body = wire::encode(value).map_err(|source| FormatError::Body { kind, source })?;
    Ok(encode_bytes(kind, &body))
}

/// Checks the header of a file of `kind` and returns its body.
pub fn decode_bytes(kind: FileKind, bytes: &[u8]) -> Result<&[u8], FormatError> {
    let (version, body) = decode_versioned(kind, bytes, kind.current_version())?;
    debug_assert_eq!(version, kind.current_version());
    Ok(body)
}

/// Checks the header of a file of `kind` whose version is from `oldest` to the current one
/// (older versions go through a migration), and returns the version and the body.
fn decode_versioned(
    kind: FileKind,
    bytes: &[u8],
    oldest: u16,
) -> Result<(u16, &[u8]), FormatError> {
    if bytes.len() < FILE_HEADER_BYTES {
        return Err(if bytes.starts_with(&FILE_MAGIC[..bytes.len().min(4)]) {
            FormatError::Truncated(kind)
        } else {
            FormatError::BadMagic(kind)
        });
    }
    if bytes[..4] != FILE_MAGIC {
        return Err(FormatError::BadMagic(kind));
    }
    let found_kind = u16::from_be_bytes([bytes[4], bytes[5]]);
    if FileKind::from_u16(found_kind) != Some(kind) {
        return Err(FormatError::Kind {
            expected: kind,
            found: found_kind,
        });
    }
    let version = u16::from_be_bytes([bytes[6], bytes[7]]);
    if version < oldest || version > kind.current_version() {
        return Err(FormatError::Version {
            kind,
            found: version,
            supported: kind.current_version(),
        });
    }
    Ok((version, &bytes[FILE_HEADER_BYTES..]))
}

/// Decodes a bincode file of `kind`.
pub fn decode_file<T: DeserializeOwned>(kind: FileKind, bytes: &[u8]) -> Result<T, FormatError> {
    let body = decode_bytes(kind, bytes)?;
    wire::decode(body).map_err(|source| FormatError::Body { kind, source })
}

/// A value read from a file, and whether it was in a legacy format (the caller should rewrite
/// the file in the current one).
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded<T> {
    /// The value.
    pub value: T,
    /// The file had no envelope and was read by the legacy decoder.
    pub legacy: bool,
}

/// Reads a file that may predate the envelope: with [`FILE_MAGIC`], by `current` on the body;
/// without, by `legacy` on the whole file.
pub fn decode_or_legacy<T>(
    kind: FileKind,
    bytes: &[u8],
    current: impl FnOnce(&[u8]) -> Result<T, wire::WireError>,
    legacy: impl FnOnce(&[u8]) -> Result<T, wire::WireError>,
) -> Result<Decoded<T>, FormatError> {
    if bytes.starts_with(&FILE_MAGIC) {
        let body = decode_bytes(kind, bytes)?;
        let value = current(body).map_err(|source| FormatError::Body { kind, source })?;
        return Ok(Decoded {
            value,
            legacy: false,
        });
    }
    let value = legacy(bytes).map_err(|source| FormatError::Body { kind, source })?;
    Ok(Decoded {
        value,
        legacy: true,
    })
}

/// Encodes the desired state as `desired.bin`.
pub fn encode_desired(state: &DesiredState) -> Result<Vec<u8>, FormatError> {
    encode_file(FileKind::DesiredState, state)
}

/// Reads `desired.bin`, including the unversioned raw-bincode files written before the envelope
/// and those of format version 1. When `legacy` is set (either kind of old file), the caller
/// should write the state back with [`encode_desired`].
pub fn decode_desired(bytes: &[u8]) -> Result<Decoded<DesiredState>, FormatError> {
    let kind = FileKind::DesiredState;
    if bytes.starts_with(&FILE_MAGIC) {
        let (version, body) = decode_versioned(kind, bytes, 1)?;
        let decode = match version {
            1 => DesiredState::decode_v1,
            _ => wire::decode::<DesiredState>,
        };
        let value = decode(body).map_err(|source| FormatError::Body { kind, source })?;
        return Ok(Decoded {
            value,
            legacy: version < kind.current_version(),
        });
    }
    decode_or_legacy(
        kind,
        bytes,
        wire::decode::<DesiredState>,
        DesiredState::decode_legacy,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_header_layout() {
        let bytes = encode_file(FileKind::Peers, &vec![1u32, 2]).unwrap();
        assert_eq!(&bytes[..4], b"SHLF");
        assert_eq!(&bytes[4..6], &3u16.to_be_bytes());
        assert_eq!(&bytes[6..8], &1u16.to_be_bytes());
        assert_eq!(
            decode_file::<Vec<u32>>(FileKind::Peers, &bytes).unwrap(),
            vec![1, 2]
        );
    }

    #[test]
    fn refuses_other_versions_naming_both() {
        let mut bytes = encode_bytes(FileKind::Keyring, b"body");
        bytes[6..8].copy_from_slice(&7u16.to_be_bytes());
        let err = decode_bytes(FileKind::Keyring, &bytes).unwrap_err();
        assert!(matches!(
            err,
            FormatError::Version {
                found: 7,
                supported: 1,
                ..
            }
        ));
        let text = err.to_string();
        assert!(
            text.contains("version 7") && text.contains("version 1"),
            "{text}"
        );
        assert!(text.contains("newer shoal"), "{text}");
    }

    #[test]
    fn refuses_wrong_kind_magic_and_truncation() {
        let bytes = encode_bytes(FileKind::CaCert, b"der");
        assert!(matches!(
            decode_bytes(FileKind::CaKey, &bytes),
            Err(FormatError::Kind {
                expected: FileKind::CaKey,
                found: 4
            })
        ));
        assert!(matches!(
            decode_bytes(FileKind::CaCert, b"{\"id\":1}"),
            Err(FormatError::BadMagic(_))
        ));
        assert!(matches!(
            decode_bytes(FileKind::CaCert, b"SHL"),
            Err(FormatError::Truncated(_))
        ));
        assert!(matches!(
            decode_bytes(FileKind::CaCert, b""),
            Err(FormatError::Truncated(_))
        ));
        let mut unknown = bytes.clone();
        unknown[4..6].copy_from_slice(&999u16.to_be_bytes());
        assert!(matches!(
            decode_bytes(FileKind::CaCert, &unknown),
            Err(FormatError::Kind { found: 999, .. })
        ));
    }

    #[test]
    fn kinds_are_distinct_and_named() {
        let mut numbers: Vec<u16> = FileKind::ALL.iter().map(|k| *k as u16).collect();
        numbers.sort();
        numbers.dedup();
        assert_eq!(numbers.len(), FileKind::ALL.len());
        for kind in FileKind::ALL {
            assert_eq!(FileKind::from_u16(kind as u16), Some(kind));
            assert!(kind.current_version() >= 1);
        }
    }

    #[test]
    fn legacy_desired_state_migrates() {
        // What an agent of the release before the envelope wrote: raw bincode of its layout.
        let legacy = include_bytes!("../../../tests/fixtures/wire/legacy_desired_v0.bin");
        let read = decode_desired(legacy).unwrap();
        assert!(read.legacy);
        assert_eq!(read.value.services().len(), 2, "its services are kept");
        let current = encode_desired(&read.value).unwrap();
        let again = decode_desired(&current).unwrap();
        assert!(!again.legacy);
        // Format version 1 (before networks) migrates too, and says so.
        let mut v1 = encode_bytes(FileKind::DesiredState, &[0u8, 0]);
        v1[6..8].copy_from_slice(&1u16.to_be_bytes());
        let read = decode_desired(&v1).unwrap();
        assert!(read.legacy);
        assert_eq!(read.value, DesiredState::default());
        // A future version is refused, not read as legacy.
        let mut future = current.clone();
        future[6..8].copy_from_slice(&3u16.to_be_bytes());
        assert!(matches!(
            decode_desired(&future),
            Err(FormatError::Version { found: 3, .. })
        ));
        assert!(decode_desired(b"garbage").is_err());
    }

    proptest! {
        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_desired(&bytes);
            let _ = decode_file::<Vec<u8>>(FileKind::Keyring, &bytes);
        }
    }
}
