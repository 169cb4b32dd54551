//! Peers' requests, anti-entropy and the spreading of reports.
//!
//! Every `sync_period` a node sends one random live peer three digests: of its membership, of
//! its desired state and of the versions of the reports it holds. Where a digest differs, the
//! answer carries the means to find out how (see `crate::api::peer`), and a second exchange
//! carries what each side lacks: the membership, the entries of the desired state's buckets that
//! differ, the missing reports. Gossip spreads news fast but a bounded number of times; this is
//! what makes a node that was away, or on the other side of a partition, catch up, and between
//! nodes that agree it costs a hundred bytes or so each way.
//!
//! A node's report (what runs on it) changes with every container start, stop and health
//! change, and every node routes by every report, so reports travel on their own: the node
//! pushes a new report to a few live peers, and each node that finds it new passes it on to a
//! few more that were not told yet. The cost to a node is bounded by the fan-out, not by the
//! size of the cluster, and news reaches everyone in about log(n) hops.

use rand::seq::IndexedRandom;
use tracing::{debug, info};

use super::{Node, Pending};
use crate::{
    api::{PeerRequest, PeerResponse, Repair, Versions},
    desired::state::{BucketDigest, DesiredState},
    identity::{NodeId, NodeIdentity},
    observed::NodeReport,
    replica::PUSH_FANOUT,
};

/// A peer's answer to this node's sync request.
pub(super) struct SyncAnswer {
    pub node: NodeId,
    pub members: Option<Vec<foca::Member<NodeIdentity>>>,
    pub members_digest: [u8; 32],
    pub buckets: Option<Vec<BucketDigest>>,
    pub observed: Option<Versions>,
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
                members_digest,
                desired_digest,
                observed_digest,
            } => {
                let me = self.me();
                let ours = self.membership.digest_without(&[me, from]);
                let desired = self.replica.digest();
                let observed = &self.workload.observed;
                PeerResponse::Sync {
                    node: me,
                    members: (ours != members_digest).then(|| self.membership.state()),
                    members_digest: ours,
                    buckets: (desired != desired_digest).then(|| self.replica.bucket_digests()),
                    observed: (observed.versions_digest() != observed_digest)
                        .then(|| observed.versions()),
                }
            }
            PeerRequest::Repair(repair) => {
                let Repair {
                    members,
                    buckets,
                    desired,
                    reports,
                    observed,
                } = *repair;
                if let Some(members) = members {
                    if let Err(e) = self.membership.apply_state(members, now_ms) {
                        debug!(error = %e, "peer's membership state partly rejected");
                    }
                }
                // This node's side of the differing buckets as it was before the merge: after
                // it, they would also hold the requester's own entries, sent back for nothing.
                let ours = self.replica.state().in_buckets(&buckets);
                self.merge_desired(desired, now_ms);
                // New keys must be in use before the next datagram.
                self.refresh_keyring(now_ms);
                self.merge_reports(reports, now_ms);
                PeerResponse::Repair {
                    desired: Box::new(ours),
                    reports: observed
                        .map(|versions| self.workload.observed.newer_than(&versions))
                        .unwrap_or_default(),
                }
            }
            PeerRequest::Desired(state) => {
                self.merge_desired(*state, now_ms);
                self.refresh_keyring(now_ms);
                PeerResponse::Ack
            }
            // A node pushes only its own report.
            PeerRequest::Reports { reports, told } => {
                match reports.iter().find(|r| r.node != from) {
                    Some(other) => PeerResponse::Error(format!(
                        "node {} pushed a report about node {}; reports of others are relayed",
                        from.short(),
                        other.node.short()
                    )),
                    None => {
                        let news = self.merge_reports(reports, now_ms);
                        self.pass_on(news, told, from);
                        PeerResponse::Ack
                    }
                }
            }
            PeerRequest::Relayed { reports, told } => {
                let news = self.merge_reports(reports, now_ms);
                self.pass_on(news, told, from);
                PeerResponse::Ack
            }
        }
    }

    /// Starts one anti-entropy round with a random live peer.
    pub(super) fn start_sync(&mut self) {
        let Some(peer) = self.membership.sync_peer(&mut self.rng) else {
            return;
        };
        let request = self.sync_request(Some(peer.id));
        self.call(peer.clone(), request, Pending::Sync(peer));
    }

    /// What an anti-entropy round starts with: this node's digests. `peer` is whom it asks,
    /// when known: the membership digest leaves both out; a seed gets a digest that never
    /// matches, so that a joiner always gets the membership.
    pub(super) fn sync_request(&self, peer: Option<NodeId>) -> PeerRequest {
        PeerRequest::Sync {
            members_digest: match peer {
                Some(peer) => self.membership.digest_without(&[self.me(), peer]),
                None => [0; 32],
            },
            desired_digest: self.replica.digest(),
            observed_digest: self.workload.observed.versions_digest(),
        }
    }

    pub(super) fn on_sync_answer(&mut self, peer: NodeIdentity, answer: SyncAnswer, now_ms: u64) {
        debug!(
            peer = %answer.node.short(),
            members = answer.members.as_ref().map(Vec::len),
            desired_differs = answer.buckets.is_some(),
            reports_differ = answer.observed.is_some(),
            "synced"
        );
        if let Some(members) = answer.members {
            if let Err(e) = self.membership.apply_state(members, now_ms) {
                debug!(error = %e, "peer's membership state partly rejected");
            }
        }
        let mut repair = Repair::default();
        if self.membership.digest_without(&[self.me(), answer.node]) != answer.members_digest {
            repair.members = Some(self.membership.state());
        }
        if let Some(theirs) = answer.buckets {
            let differing = self.replica.differing(&theirs);
            repair.desired = self.replica.state().in_buckets(&differing);
            repair.buckets = differing;
        }
        if let Some(theirs) = answer.observed {
            repair.reports = self.workload.observed.newer_than(&theirs);
            repair.observed = Some(self.workload.observed.versions());
        }
        let agreed = repair.members.is_none()
            && repair.buckets.is_empty()
            && repair.reports.is_empty()
            && repair.observed.is_none();
        if agreed {
            self.settle();
        } else {
            self.call(peer, PeerRequest::Repair(Box::new(repair)), Pending::Repair);
        }
    }

    /// The peer's side of a repair: its entries of the buckets that differed, and the reports
    /// this node lacked.
    pub(super) fn on_repair_answer(
        &mut self,
        desired: DesiredState,
        reports: Vec<NodeReport>,
        now_ms: u64,
    ) {
        self.merge_desired(desired, now_ms);
        self.refresh_keyring(now_ms);
        self.merge_reports(reports, now_ms);
        self.settle();
    }

    /// The first completed anti-entropy round: the node's view is now worth acting on.
    fn settle(&mut self) {
        if !self.settled {
            info!("synced with a peer; reconciling replicas");
            self.settled = true;
            self.reconcile_due = true;
        }
    }

    pub(super) fn merge_desired(&mut self, state: DesiredState, now_ms: u64) {
        if state.is_empty() {
            return;
        }
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

    /// Merges reports; returns those that were news.
    pub(super) fn merge_reports(
        &mut self,
        reports: Vec<NodeReport>,
        now_ms: u64,
    ) -> Vec<NodeReport> {
        let me = self.me();
        let mut news = Vec::new();
        for report in reports {
            // Our own report comes only from us; an echo of an older one changes nothing. A
            // departed node's is not taken back once pruned (see `prune_reports`).
            if report.node != me
                && !self.report_is_stale(report.node, now_ms)
                && self.workload.observed.merge(report.clone())
            {
                self.reconcile_due = true;
                news.push(report);
            }
        }
        news
    }

    /// Sends `reports` to up to [`PUSH_FANOUT`] live peers not in `told` (nor their subjects),
    /// telling them whom else it was sent to. Called by the report's node with its new report,
    /// and by every node that receives one as news.
    pub(super) fn pass_on(
        &mut self,
        reports: Vec<NodeReport>,
        mut told: Vec<NodeId>,
        from: NodeId,
    ) {
        if reports.is_empty() {
            return;
        }
        let me = self.me();
        told.extend([me, from]);
        told.extend(reports.iter().map(|r| r.node));
        let untold: Vec<NodeIdentity> = self
            .live_peers()
            .into_iter()
            .filter(|p| !told.contains(&p.id))
            .collect();
        let targets: Vec<NodeIdentity> =
            untold.sample(&mut self.rng, PUSH_FANOUT).cloned().collect();
        if targets.is_empty() {
            return;
        }
        told.extend(targets.iter().map(|p| p.id));
        told.sort_unstable();
        told.dedup();
        let own = reports.iter().all(|r| r.node == me);
        for to in targets {
            let request = if own {
                PeerRequest::Reports {
                    reports: reports.clone(),
                    told: told.clone(),
                }
            } else {
                PeerRequest::Relayed {
                    reports: reports.clone(),
                    told: told.clone(),
                }
            };
            self.call(to, request, Pending::Fire);
        }
    }
}
