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
        if self.network.digest != Some(digest) {
            self.network.digest = Some(digest);
            let me = self.me();
            if !self.network.admitted {
                // Once, and only once the node holds its peers' claims: an address slot of its
                // own in every network.
                let outcome = self.apply_change(
                    None,
                    now_ms,
                    move |s, hlc| s.admit_node(me, hlc),
                    |_, _| Vec::new(),
                );
                info!(?outcome, "networks: this node's address slot claimed");
                self.network.admitted = true;
            }
            // Claims made concurrently (a partition) may collide; the later ones move, the same
            // way on every node, and this pins them (it writes nothing when nothing moved).
            self.apply_change(
                None,
                now_ms,
                |s, hlc| s.settle_addresses(hlc),
                |_, _| Vec::new(),
            );
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

/// The node's bookkeeping of its networks.
#[derive(Default)]
pub(super) struct Networks {
    /// The desired-state digest the layout was computed from.
    digest: Option<[u8; 32]>,
    /// Whether this node's slot claim was written (by this process).
    admitted: bool,
    layout: Arc<Layout>,
    local: Vec<LocalNetwork>,
    /// What was last handed to the shell.
    state: NetState,
}
