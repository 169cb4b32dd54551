//! Messages between agents over QUIC.
//!
//! Anti-entropy is two exchanges, the second only when something differs: [`PeerRequest::Sync`]
//! carries three digests (membership, desired state, report versions); the answer carries, for
//! each digest that differs, what the requester needs to find the difference (the membership
//! itself, the desired state's bucket digests, the report versions). The requester then sends
//! a [`Repair`] with what the peer lacks and gets back what it lacks. Between nodes that agree a
//! round costs about a hundred bytes each way.

use serde::{Deserialize, Serialize};

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    desired::state::{BucketDigest, DesiredState},
    identity::{NodeId, NodeIdentity},
    observed::NodeReport,
};

/// Report versions by node: (generation, sequence).
pub type Versions = BTreeMap<NodeId, (u64, u64)>;

/// What one node asks another over QUIC.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Anti-entropy, first half: digests of what the requester holds.
    Sync {
        /// Of its membership, leaving out both parties' own records (zero when the requester
        /// does not know whom it asks: a seed).
        members_digest: [u8; 32],
        /// Root digest of its desired state.
        desired_digest: [u8; 32],
        /// Of the versions of the node reports it holds.
        observed_digest: [u8; 32],
    },
    /// The sender's own new report (refused if it carries another node's), pushed to a few
    /// peers, who pass it on ([`PeerRequest::Relayed`]).
    Reports {
        /// Its report.
        reports: Vec<NodeReport>,
        /// The nodes it was sent to: those passing it on skip them.
        told: Vec<NodeId>,
    },
    /// Desired state to merge: a delta just written, or the cluster's secrets passed on.
    Desired(Box<DesiredState>),
    /// Reports of other nodes passed on while they are news to the sender.
    Relayed {
        /// The reports.
        reports: Vec<NodeReport>,
        /// The nodes already sent them (as far as the sender knows), the origin included.
        told: Vec<NodeId>,
    },
    /// Anti-entropy, second half: what differs.
    Repair(Box<Repair>),
}

/// The second half of an anti-entropy round, sent once the requester knows what differs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Repair {
    /// The requester's membership, when it still differs from the peer's after merging it.
    pub members: Option<Vec<foca::Member<NodeIdentity>>>,
    /// The desired-state buckets that differ...
    pub buckets: BTreeSet<u16>,
    /// ...and the requester's entries in them.
    pub desired: DesiredState,
    /// Reports the peer lacks.
    pub reports: Vec<NodeReport>,
    /// The requester's report versions, when they differ (the peer answers what is newer).
    pub observed: Option<Versions>,
}

/// A node's answer over QUIC.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerResponse {
    /// Answer to [`PeerRequest::Sync`]: for each digest that differs, the means to find out how.
    Sync {
        /// The answering node's id (a joiner asking a seed does not know it).
        node: NodeId,
        /// The answering node's membership, when the digests differ.
        members: Option<Vec<foca::Member<NodeIdentity>>>,
        /// Its membership digest, leaving out both parties.
        members_digest: [u8; 32],
        /// Its desired state's bucket digests, when the roots differ.
        buckets: Option<Vec<BucketDigest>>,
        /// Its report versions, when they differ.
        observed: Option<Versions>,
    },
    /// Answer to [`PeerRequest::Repair`], after merging it: the peer's entries in the
    /// buckets asked about, and its reports newer than the requester's.
    Repair {
        /// Entries of the buckets that differed.
        desired: Box<DesiredState>,
        /// Reports the requester lacks.
        reports: Vec<NodeReport>,
    },
    /// The request was applied.
    Ack,
    /// The request failed; the text says why.
    Error(String),
}
