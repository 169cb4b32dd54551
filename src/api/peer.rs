//! Messages between agents over QUIC.

use serde::{Deserialize, Serialize};

use crate::core::{desired::state::DesiredState, identity::NodeIdentity};

/// What one node asks another over QUIC.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Push-pull anti-entropy: my whole membership and the digest of my desired state.
    Sync {
        /// Full membership state.
        members: Vec<foca::Member<NodeIdentity>>,
        /// Digest of the desired state.
        desired_digest: [u8; 32],
    },
    /// Desired state to merge: a delta just written, or a full state after a digest mismatch.
    Desired(Box<DesiredState>),
}

/// A node's answer over QUIC.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerResponse {
    /// Answer to [`PeerRequest::Sync`].
    Sync {
        /// The answering node's full membership state.
        members: Vec<foca::Member<NodeIdentity>>,
        /// Digest of its desired state (after merging nothing: the requester sends its state
        /// separately when they differ).
        desired_digest: [u8; 32],
        /// Its full desired state, when the digests differ.
        desired: Option<Box<DesiredState>>,
    },
    /// The request was applied.
    Ack,
    /// The request failed; the text says why.
    Error(String),
}
