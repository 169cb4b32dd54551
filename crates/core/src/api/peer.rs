//! Messages between agents over QUIC.

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::{
    desired::state::DesiredState,
    identity::{NodeId, NodeIdentity},
    observed::NodeReport,
};

/// What one node asks another over QUIC.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Push-pull anti-entropy: my whole membership and the digest of my desired state.
    Sync {
        /// Full membership state.
        members: Vec<foca::Member<NodeIdentity>>,
        /// Digest of the desired state.
        desired_digest: [u8; 32],
        /// Versions of the node reports held.
        observed: BTreeMap<NodeId, (u64, u64)>,
    },
    /// The sender's own new report (refused if it carries another node's).
    Reports(Vec<NodeReport>),
    /// Desired state to merge: a delta just written, or a full state after a digest mismatch.
    Desired(Box<DesiredState>),
    /// Reports of other nodes the receiver lacked, found by an anti-entropy round.
    Relayed(Vec<NodeReport>),
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
        /// Its reports that are newer than the requester's.
        reports: Vec<NodeReport>,
        /// Versions of the reports it holds.
        observed: BTreeMap<NodeId, (u64, u64)>,
    },
    /// The request was applied.
    Ack,
    /// The request failed; the text says why.
    Error(String),
}
