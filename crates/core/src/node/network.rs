//! Service networks, the node's part (design §10, docs/networking.md): it claims its address
//! slot once it holds its peers' state, pins addresses that concurrent creations moved, and
//! hands the shell what the engine and the kernel must hold: the networks this node must have
//! (with its subnet and gateway of each), and the view of services and replicas that the DNS
//! server answers from and that the routes, rules and virtual addresses are planned from.

use std::{net::IpAddr, sync::Arc};

use tracing::{debug, info};

use super::Node;
use crate::{
    identity::NodeId,
    membership::NodeStatus,
    net::{self, services::NetView, Layout, LocalNetwork},
};

/// What the shell's engine, DNS server and kernel plan need of the networks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetState {
    /// Every address of the cluster's networks.
    pub layout: Arc<Layout>,
    /// The networks this node must have on its engine, before it creates their replicas.
    pub local: Vec<LocalNetwork>,
    /// Services, their virtual addresses and their ready replicas' addresses.
    pub view: Arc<NetView>,
    /// The live peers (ready or suspect) and their addresses: the kernel routes their subnets.
    pub peers: Vec<(NodeId, IpAddr)>,
}

impl Node {
    /// Keeps the node's networks current; called every reconcile round.
    pub(super) fn refresh_network(&mut self, now_ms: u64) {
        if !self.settled {
            return;
        }
        let digest = self.replica.digest();
        let steward = self.is_address_steward();
        let became_steward = steward && !self.network.steward;
        self.network.steward = steward;
        if self.network.digest != Some(digest) || became_steward {
            self.network.digest = Some(digest);
            let me = self.me();
            if !self.network.admitted {
                // Once, and only once the node holds its peers' claims: an address slot of its
                // own in every network.
                let outcome = self.apply_own_change(now_ms, move |s, hlc| s.admit_node(me, hlc));
                info!(?outcome, "networks: this node's address slot claimed");
                self.network.admitted = true;
            }
            // Claims made concurrently (a partition) may collide; the later ones move, the same
            // way on every node, and the steward pins them (it writes nothing when nothing
            // moved). One writer, not all: were every node to pin, each would write the same
            // values under its own stamp, thousands of broadcast writes at a 50-node
            // bootstrap. And the pins go in one write: pinning one moved claim while another
            // is unpinned gives the pinned one a later stamp, which the layout then orders
            // after the other, and it moves again.
            if steward {
                self.apply_own_change(now_ms, |s, hlc| s.settle_addresses(hlc));
            }
            let layout = Arc::new(self.replica.state().layout());
            let local = net::local_networks(&layout, me);
            if local != self.network.state.local {
                debug!(networks = local.len(), "networks: this node's set changed");
            }
            self.network.layout = layout;
            self.network.local = local;
        }
        let views = self.membership.nodes();
        let view = NetView::build(
            self.replica.services(),
            &self.network.layout,
            &self.workload.observed,
            &views,
        );
        let me = self.me();
        let peers = views
            .iter()
            .filter(|v| v.identity.id != me)
            .filter(|v| matches!(v.status, NodeStatus::Ready | NodeStatus::Suspect))
            .map(|v| (v.identity.id, v.identity.addr.ip()))
            .collect();
        let state = NetState {
            layout: self.network.layout.clone(),
            local: self.network.local.clone(),
            view: Arc::new(view),
            peers,
        };
        if state != self.network.state {
            self.network.state = state.clone();
            self.effects.network = Some(state);
        }
    }
}

impl Node {
    /// Whether this node pins the address claims that collisions moved: the lowest id among
    /// the live nodes it sees. Views that differ for a moment make two stewards, which write
    /// the same values; a partition has one on each side, which is what settles each side.
    fn is_address_steward(&self) -> bool {
        let me = self.me();
        self.membership.live_peers().iter().all(|p| p.id > me)
    }
}

/// The node's bookkeeping of its networks.
#[derive(Default)]
pub(super) struct Networks {
    /// The desired-state digest the layout was computed from.
    digest: Option<[u8; 32]>,
    /// Whether this node's slot claim was written (by this process).
    admitted: bool,
    /// Whether this node pinned moved address claims when last refreshed.
    steward: bool,
    layout: Arc<Layout>,
    local: Vec<LocalNetwork>,
    /// What was last handed to the shell.
    state: NetState,
}
