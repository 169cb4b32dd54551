//! The messages of the local API (CLI to agent) and of node-to-node QUIC streams.
//!
//! Every message travels as `u32 big-endian length | bincode body` and starts with the protocol
//! version, so an old CLI talking to a new agent gets a clear error instead of garbage.

pub mod local;
pub mod network;
pub mod peer;

pub use local::*;
pub use network::*;
pub use peer::*;

use serde::{Deserialize, Serialize};

use crate::wire;

/// Version of the API messages below; bumped on incompatible change.
pub const API_VERSION: u16 = 4;

/// A request with its protocol version.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// [`API_VERSION`] of the sender.
    pub version: u16,
    /// The message.
    pub body: T,
}

impl<T> Envelope<T> {
    /// Wraps `body` with this build's version.
    pub fn new(body: T) -> Self {
        Envelope {
            version: API_VERSION,
            body,
        }
    }
}

/// Why a framed message could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The frame is larger than [`wire::MAX_MESSAGE_BYTES`].
    #[error("frame of {0} bytes exceeds the {max} byte limit", max = wire::MAX_MESSAGE_BYTES)]
    TooLarge(usize),
    /// The body does not decode.
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    /// The peer speaks another API version.
    #[error("peer speaks API version {0}, this build speaks {API_VERSION}")]
    Version(u16),
}

/// Encodes `body` as one length-prefixed frame.
pub fn frame<T: Serialize>(body: T) -> Result<Vec<u8>, FrameError> {
    let bytes = wire::encode(&Envelope::new(body))?;
    if bytes.len() > wire::MAX_MESSAGE_BYTES {
        return Err(FrameError::TooLarge(bytes.len()));
    }
    let mut out = Vec::with_capacity(4 + bytes.len());
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&bytes);
    Ok(out)
}

/// Decodes a frame body (without its length prefix), checking the version.
pub fn unframe<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, FrameError> {
    // Peek at the version first so a newer peer's message yields a version error, not a decode one.
    let (version, _) = wire::decode_prefix::<u16>(bytes)?;
    if version != API_VERSION {
        return Err(FrameError::Version(version));
    }
    let envelope: Envelope<T> = wire::decode(bytes)?;
    Ok(envelope.body)
}

/// Checks a length prefix before anything is allocated for the body.
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > wire::MAX_MESSAGE_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}
