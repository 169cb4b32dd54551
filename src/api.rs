//! The messages of the local API (CLI to agent) and of node-to-node QUIC streams.
//!
//! Every message travels as `u32 big-endian length | bincode body` and starts with the protocol
//! version, so an old CLI talking to a new agent gets a clear error instead of garbage.

use std::{collections::BTreeMap, net::SocketAddr};

use serde::{Deserialize, Serialize};

use crate::core::{
    identity::NodeIdentity,
    membership::{NodeStatus, NodeView},
    wire,
};

/// Version of the API messages below; bumped on incompatible change.
pub const API_VERSION: u16 = 1;

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

/// What the CLI can ask an agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Every node of the cluster as this agent sees it.
    NodeList,
}

/// An agent's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::NodeList`].
    Nodes(Vec<NodeInfo>),
    /// The request failed; the text says why.
    Error(String),
}

/// A node as `node ls` and `node inspect` show it. Field names are the JSON contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Full node id (32 hex digits).
    pub id: String,
    /// Node name.
    pub name: String,
    /// Gossip address.
    pub addr: SocketAddr,
    /// `ready`, `suspect`, `down` or `left`.
    pub status: NodeStatus,
    /// `active`, `pause` or `drain` (operator setting).
    pub availability: String,
    /// Engine labels.
    pub labels: BTreeMap<String, String>,
    /// Operating system of the agent.
    pub os: String,
    /// CPU architecture of the agent.
    pub arch: String,
    /// Version of the agent.
    pub agent_version: String,
    /// QUIC address.
    pub quic_addr: SocketAddr,
    /// Agent process generation (grows with every restart).
    pub generation: u64,
    /// Whether this is the node that answered.
    #[serde(rename = "self")]
    pub is_self: bool,
    /// Milliseconds since the Unix epoch when the status last changed, as the answering node saw it.
    pub status_since_ms: u64,
}

impl NodeInfo {
    /// Builds the API view of a membership record.
    pub fn from_view(view: &NodeView) -> Self {
        let NodeIdentity {
            addr,
            id,
            generation,
            meta,
        } = &view.identity;
        NodeInfo {
            id: id.to_string(),
            name: meta.name.clone(),
            addr: *addr,
            status: view.status,
            availability: "active".into(),
            labels: meta.labels.clone(),
            os: meta.os.clone(),
            arch: meta.arch.clone(),
            agent_version: meta.agent_version.clone(),
            quic_addr: meta.quic_addr,
            generation: *generation,
            is_self: view.is_self,
            status_since_ms: view.since_ms,
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

/// What one node asks another over QUIC.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Push-pull anti-entropy of membership: here is everything I know, send me what you know.
    SyncMembers(Vec<foca::Member<NodeIdentity>>),
}

/// A node's answer over QUIC.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerResponse {
    /// The answering node's full membership state.
    Members(Vec<foca::Member<NodeIdentity>>),
    /// The request failed; the text says why.
    Error(String),
}
