//! Who a node is: its stable id, the generation of the current process, and the metadata every
//! member learns about it through gossip.
//!
//! The metadata rides inside the SWIM identity rather than in separate broadcasts: it changes only
//! when the agent restarts (which bumps the generation anyway), and carrying it in the identity means
//! any node that knows a member also knows its name, labels and QUIC address, with no second
//! dissemination channel to keep consistent. Operator-set labels and availability are desired
//! state and live in the CRDT store instead.

use std::{collections::BTreeMap, fmt, net::SocketAddr, str::FromStr, sync::Arc};

use serde::{Deserialize, Serialize};

/// A node's stable identifier: random at first start, kept in the data dir forever after.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u128);

impl NodeId {
    /// The id of a seed we have not heard from yet (we know only its address).
    pub const UNKNOWN: NodeId = NodeId(0);

    /// The 12-hex-digit prefix shown in tables, as Docker shortens its ids.
    pub fn short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(12);
        s
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.short())
    }
}

impl FromStr for NodeId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 {
            return Err(format!("node id {s:?} is not 32 hex digits"));
        }
        u128::from_str_radix(s, 16)
            .map(NodeId)
            .map_err(|e| format!("node id {s:?}: {e}"))
    }
}

/// Facts about a node that every member should know, fixed for the life of one agent process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMeta {
    /// Human name (`--name`, default the host name); unique names are the operator's business.
    pub name: String,
    /// Engine labels given at start (`--label`), usable in placement constraints.
    pub labels: BTreeMap<String, String>,
    /// `std::env::consts::OS` of the agent, for `node.platform.os` constraints.
    pub os: String,
    /// `std::env::consts::ARCH` of the agent, for `node.platform.arch` constraints.
    pub arch: String,
    /// Version of the shoal agent, to spot mixed-version clusters.
    pub agent_version: String,
    /// Where this node's QUIC endpoint listens (anti-entropy, remote API).
    pub quic_addr: SocketAddr,
    /// SHA-256 of the node's TLS certificate: peers pin it when they dial `quic_addr`.
    pub cert_sha256: [u8; 32],
    /// Whether the node runs replicas (an agent started with `--runtime none` only takes part in
    /// membership and desired state; placement skips it).
    pub runs_containers: bool,
}

/// Limits that keep an identity small enough to share a datagram with several membership updates.
pub const MAX_NAME_LEN: usize = 64;
/// See [`MAX_NAME_LEN`].
pub const MAX_LABELS: usize = 16;
/// See [`MAX_NAME_LEN`]; applies to a label's key and value together.
pub const MAX_LABEL_LEN: usize = 96;

impl NodeMeta {
    /// Metadata of a seed known only by address, used to address the first announce.
    pub fn unknown(addr: SocketAddr) -> Self {
        NodeMeta {
            name: String::new(),
            labels: BTreeMap::new(),
            os: String::new(),
            arch: String::new(),
            agent_version: String::new(),
            quic_addr: addr,
            cert_sha256: [0; 32],
            runs_containers: false,
        }
    }

    /// Checks the size limits, naming the first one broken.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || self.name.len() > MAX_NAME_LEN {
            return Err(format!(
                "node name must be 1 to {MAX_NAME_LEN} bytes, got {:?}",
                self.name
            ));
        }
        if self.labels.len() > MAX_LABELS {
            return Err(format!("at most {MAX_LABELS} node labels are allowed"));
        }
        for (k, v) in &self.labels {
            if k.is_empty() || k.len() + v.len() > MAX_LABEL_LEN {
                return Err(format!(
                    "label {k:?}: key must be non-empty and key+value at most {MAX_LABEL_LEN} bytes"
                ));
            }
        }
        Ok(())
    }
}

/// The SWIM identity of one agent process.
///
/// foca identifies members by gossip address ([`foca::Identity::Addr`]): a joining node knows only
/// its seed's address, and foca accepts an announce addressed to any identity at that address. Two
/// identities at one address are resolved by generation, so a restarted agent (same id, higher
/// generation) replaces its previous self at once instead of waiting out the suspicion timeout.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// UDP address peers send gossip to.
    pub addr: SocketAddr,
    /// Stable node id.
    pub id: NodeId,
    /// Grows with every start of the agent (and every self-renewal after a false "down").
    pub generation: u64,
    /// Shared so that cloning an identity, which foca does often, stays cheap.
    pub meta: Arc<NodeMeta>,
}

impl NodeIdentity {
    /// An identity for a seed we know only by address.
    pub fn seed(addr: SocketAddr) -> Self {
        NodeIdentity {
            addr,
            id: NodeId::UNKNOWN,
            generation: 0,
            meta: Arc::new(NodeMeta::unknown(addr)),
        }
    }

    /// A seed to reach over QUIC, whose node id is not known yet: by convention its QUIC port is
    /// its gossip port + 1 (as every agent binds it), and any member's certificate will do.
    pub fn seed_quic(addr: SocketAddr) -> Self {
        let quic = SocketAddr::new(addr.ip(), addr.port().wrapping_add(1));
        NodeIdentity {
            addr,
            id: NodeId::UNKNOWN,
            generation: 0,
            meta: Arc::new(NodeMeta::unknown(quic)),
        }
    }
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}@{}#{}", self.id, self.addr, self.generation)
    }
}

impl foca::Identity for NodeIdentity {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        // Declared down while alive (a pause, a partition): come back as a newer generation.
        Some(NodeIdentity {
            generation: self.generation.wrapping_add(1).max(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        // Ties (two nodes started in the same millisecond at one address) break on id so every
        // member picks the same winner.
        (self.generation, self.id) > (adversary.generation, adversary.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    fn ident(id: u128, generation: u64) -> NodeIdentity {
        let addr: SocketAddr = "127.0.0.1:7946".parse().unwrap();
        NodeIdentity {
            addr,
            id: NodeId(id),
            generation,
            meta: Arc::new(NodeMeta::unknown(addr)),
        }
    }

    #[test]
    fn newer_generation_wins_its_address() {
        assert!(ident(1, 5).win_addr_conflict(&ident(1, 4)));
        assert!(!ident(1, 4).win_addr_conflict(&ident(1, 5)));
        assert!(ident(2, 4).win_addr_conflict(&ident(1, 4)));
    }

    #[test]
    fn renewal_bumps_generation() {
        assert_eq!(ident(1, 4).renew().unwrap().generation, 5);
    }

    #[test]
    fn node_id_round_trips_through_text() {
        let id = NodeId(0x1234_5678_9abc_def0_1122_3344_5566_7788);
        assert_eq!(id.to_string().parse::<NodeId>().unwrap(), id);
        assert_eq!(id.short(), "123456789abc");
        assert!("xyz".parse::<NodeId>().is_err());
    }
}
