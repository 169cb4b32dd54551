//! Peers' requests and anti-entropy. Every `sync_period` a node exchanges its whole membership,
//! the digest of its desired state and the versions of the reports it holds with one random
//! live peer; each side then gets what it lacks. Gossip spreads news fast but a bounded number of
//! times; this is what makes a node that was away, or on the other side of a partition, catch up.

use std::collections::BTreeMap;

use rand::seq::IndexedRandom;
use tracing::{debug, info};

use super::{Node, Pending};
use crate::{
    api::{PeerRequest, PeerResponse},
    desired::state::DesiredState,
    identity::{NodeId, NodeIdentity},
    observed::NodeReport,
    replica::PUSH_FANOUT,
};

/// A peer's answer to this node's sync request.
pub(super) struct SyncAnswer {
    pub members: Vec<foca::Member<NodeIdentity>>,
    pub desired_digest: [u8; 32],
    pub desired: Option<Box<DesiredState>>,
    pub reports: Vec<NodeReport>,
    pub observed: BTreeMap<NodeId, (u64, u64)>,
}

impl Node {
    /// Answers a peer's request.
    pub(super) fn answer_peer(
        &mut self,
        from: NodeId,
        request: PeerRequest,
        now_ms: u64,
    ) -> PeerResponse {
        // The shell's TLS refuses a removed node's certificate; the node refuses it too.
        if self.replica.state().removed_nodes().contains(&from) {
            return PeerResponse::Error(format!(
                "node {} was removed from the cluster",
                from.short()
            ));
        }
        match request {
            PeerRequest::Sync {
                members,
                desired_digest,
                observed,
            } => {
                let ours = self.membership.state();
                if let Err(e) = self.membership.apply_state(members, now_ms) {
                    debug!(error = %e, "peer's membership state partly rejected");
                }
                let digest = self.replica.digest();
                PeerResponse::Sync {
                    members: ours,
                    desired_digest: digest,
                    desired: (digest != desired_digest)
                        .then(|| Box::new(self.replica.state().clone())),
                    reports: self.workload.observed.newer_than(&observed),
                    observed: self.workload.observed.versions(),
                }
            }
            PeerRequest::Desired(state) => {
                self.merge_desired(*state, now_ms);
                self.refresh_keyring(now_ms);
                PeerResponse::Ack
            }
            // A node pushes only its own report.
            PeerRequest::Reports(reports) => match reports.iter().find(|r| r.node != from) {
                Some(other) => PeerResponse::Error(format!(
                    "node {} pushed a report about node {}; reports of others are relayed \
                     by anti-entropy only",
                    from.short(),
                    other.node.short()
                )),
                None => {
                    self.merge_reports(reports);
                    PeerResponse::Ack
                }
            },
            PeerRequest::Relayed(reports) => {
                self.merge_reports(reports);
                PeerResponse::Ack
            }
        }
    }

    /// Starts one push-pull exchange with a random live peer.
    pub(super) fn start_sync(&mut self) {
        let Some(peer) = self.membership.sync_peer(&mut self.rng) else {
            return;
        };
        let request = self.sync_request();
        self.call(peer.clone(), request, Pending::Sync(peer));
    }

    /// What an anti-entropy round sends: this node's membership, the digest of its desired
    /// state and the versions of the reports it holds.
    pub(super) fn sync_request(&self) -> PeerRequest {
        PeerRequest::Sync {
            members: self.membership.state(),
            desired_digest: self.replica.digest(),
            observed: self.workload.observed.versions(),
        }
    }

    pub(super) fn on_sync_answer(&mut self, peer: NodeIdentity, answer: SyncAnswer, now_ms: u64) {
        debug!(
            peer = %peer.id.short(),
            members = answer.members.len(),
            desired_differs = answer.desired.is_some(),
            "synced"
        );
        self.merge_reports(answer.reports);
        if !self.settled {
            info!("synced with a peer; reconciling replicas");
            self.settled = true;
            self.reconcile_due = true;
        }
        let they_lack = self.workload.observed.newer_than(&answer.observed);
        if !they_lack.is_empty() {
            self.call(peer.clone(), PeerRequest::Relayed(they_lack), Pending::Fire);
        }
        if let Err(e) = self.membership.apply_state(answer.members, now_ms) {
            debug!(error = %e, "peer's membership state partly rejected");
        }
        if let Some(state) = answer.desired {
            self.merge_desired(*state, now_ms);
        }
        // New keys must be in use before the next datagram.
        self.refresh_keyring(now_ms);
        if self.replica.digest() != answer.desired_digest {
            // The peer lacks something we have: send it our whole state.
            let state = Box::new(self.replica.state().clone());
            self.call(peer, PeerRequest::Desired(state), Pending::Fire);
        }
    }

    fn merge_desired(&mut self, state: DesiredState, now_ms: u64) {
        let cluster_before = self.replica.state().cluster_part();
        let changed = self.replica.merge(state, now_ms);
        self.desired_dirty |= changed;
        self.reconcile_due |= changed;
        if changed {
            // The cluster's secrets never ride on gossip: news of them is passed on over QUIC
            // to a few peers, who pass it on in turn while it is news to them.
            let cluster = self.replica.state().cluster_part();
            if cluster != cluster_before {
                let live = self.live_peers();
                let targets: Vec<_> = live.sample(&mut self.rng, PUSH_FANOUT).cloned().collect();
                for to in targets {
                    let request = PeerRequest::Desired(Box::new(cluster.clone()));
                    self.call(to, request, Pending::Fire);
                }
            }
        }
    }

    pub(super) fn merge_reports(&mut self, reports: Vec<NodeReport>) {
        let me = self.membership.identity().id;
        for report in reports {
            // Our own report comes only from us; an echo of an older one changes nothing.
            if report.node != me && self.workload.observed.merge(report) {
                self.reconcile_due = true;
            }
        }
    }
}
