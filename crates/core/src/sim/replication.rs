//! Desired-state replication in the simulator: local changes, pushes over the simulated QUIC
//! link, and the anti-entropy round, mirroring what the agent does over real sockets.

use rand::{seq::IndexedRandom, RngExt};

use super::{Event, Sim};
use crate::{
    desired::{
        hlc::Hlc,
        state::{DesiredError, DesiredState},
    },
    join::JoinStep,
    membership::NodeStatus,
    replica::PUSH_FANOUT,
};

impl Sim {
    /// Applies a change on running node `i` as its CLI would: locally, then gossip and pushes to a
    /// few live peers. Returns whether anything changed.
    pub fn change(
        &mut self,
        i: usize,
        op: impl FnOnce(&mut DesiredState, Hlc) -> Result<DesiredState, DesiredError>,
    ) -> Result<bool, DesiredError> {
        let now = self.now_ms;
        let before = self.nodes[i].replica.digest();
        let outgoing = self.nodes[i].replica.change(now, op)?;
        if self.nodes[i].replica.digest() == before {
            return Ok(false);
        }
        let Some(m) = self.nodes[i].membership.as_mut() else {
            return Ok(true);
        };
        if let Some(gossip) = &outgoing.gossip {
            m.broadcast(gossip, now);
        }
        let effects = m.take_effects();
        let live: Vec<usize> = m
            .nodes()
            .iter()
            .filter(|v| !v.is_self && v.status == NodeStatus::Ready)
            .filter_map(|v| self.by_addr.get(&v.identity.addr).copied())
            .collect();
        self.apply(i, effects);
        let targets: Vec<usize> = live.sample(&mut self.rng, PUSH_FANOUT).copied().collect();
        for to in targets {
            let lost = self.config.loss > 0.0 && self.rng.random_bool(self.config.loss);
            if lost || self.groups[i] != self.groups[to] {
                continue;
            }
            let (lo, hi) = self.config.latency_ms;
            let at = now + self.rng.random_range(lo..=hi);
            let state = Box::new(outgoing.delta.clone());
            self.schedule(at, Event::Push { to, state });
        }
        Ok(true)
    }

    /// Node `i`'s desired state (kept even while it is down, like its data dir).
    pub fn desired(&self, i: usize) -> &DesiredState {
        self.nodes[i].replica.state()
    }

    /// Whether every running node holds the same desired state.
    pub fn desired_converged(&self) -> bool {
        let mut digests = self
            .nodes
            .iter()
            .filter(|n| n.membership.is_some())
            .map(|n| n.replica.digest());
        let Some(first) = digests.next() else {
            return true;
        };
        digests.all(|d| d == first)
    }

    pub(super) fn join_step(&mut self, node: usize) {
        let now = self.now_ms;
        let n = &mut self.nodes[node];
        let (Some(m), Some(plan)) = (n.membership.as_mut(), n.join.as_mut()) else {
            return;
        };
        match plan.poll(now, m.is_connected()) {
            JoinStep::Announce(targets, next) => {
                for target in targets {
                    if m.join(target, now).is_err() {
                        self.report.rejected += 1;
                    }
                }
                let effects = m.take_effects();
                let epoch = n.epoch;
                self.apply(node, effects);
                self.schedule(now + next.as_millis() as u64, Event::Join { node, epoch });
            }
            JoinStep::Done | JoinStep::Failed { .. } => n.join = None,
        }
    }

    /// One push-pull exchange between `node` and a random peer it believes alive, if the network
    /// lets a round trip through (one loss draw each way; partitions block it).
    pub(super) fn sync(&mut self, node: usize) {
        let now = self.now_ms;
        let Some(peer) = self.nodes[node]
            .membership
            .as_mut()
            .and_then(|m| m.sync_peer(&mut self.rng))
        else {
            return;
        };
        let Some(&other) = self.by_addr.get(&peer.addr) else {
            return;
        };
        let lost = self.config.loss > 0.0
            && (self.rng.random_bool(self.config.loss) || self.rng.random_bool(self.config.loss));
        if lost || self.groups[node] != self.groups[other] || self.nodes[other].membership.is_none()
        {
            return;
        }
        let ours = self.nodes[node]
            .membership
            .as_ref()
            .expect("checked")
            .state();
        let theirs = self.nodes[other]
            .membership
            .as_ref()
            .expect("checked")
            .state();
        for (target, state) in [(other, ours), (node, theirs)] {
            let m = self.nodes[target].membership.as_mut().expect("checked");
            if m.apply_state(state, now).is_err() {
                self.report.rejected += 1;
            }
            let effects = m.take_effects();
            self.apply(target, effects);
        }
        // Observed state: each side gets the reports it lacks.
        let theirs = self.nodes[other]
            .workload
            .observed
            .newer_than(&self.nodes[node].workload.observed.versions());
        let ours = self.nodes[node]
            .workload
            .observed
            .newer_than(&self.nodes[other].workload.observed.versions());
        for r in theirs {
            self.nodes[node].workload.observed.merge(r);
        }
        for r in ours {
            self.nodes[other].workload.observed.merge(r);
        }
        // Desired state: compare digests, exchange full states when they differ.
        if self.nodes[node].replica.digest() != self.nodes[other].replica.digest() {
            self.report.desired_repairs += 1;
            let ours = self.nodes[node].replica.state().clone();
            let theirs = self.nodes[other].replica.state().clone();
            self.nodes[other].replica.merge(ours, now);
            self.nodes[node].replica.merge(theirs, now);
        }
    }
}
