//! CLI writes to the desired state. A change is applied to this node's replica first, then made
//! durable (the shell writes the snapshot and says so), then spread: pushed to a few live peers
//! over QUIC, and piggybacked on gossip when it is small. The CLI is answered once the snapshot
//! is on disk and every push has been acknowledged or has failed, so "done" means durable here
//! and, in the usual case, already on several peers.

use std::collections::BTreeMap;

use rand::seq::IndexedRandom;
use tracing::info;

use super::{Node, Pending, RequestId};
use crate::{
    api::{ChangeReceipt, PeerRequest, Response},
    desired::{
        hlc::Hlc,
        state::{DesiredError, DesiredState, ServiceView},
    },
    replica::{Outgoing, PUSH_FANOUT},
};

/// What became of a change applied with [`Node::change`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeOutcome {
    /// It wrote something.
    Changed,
    /// It was valid but changed nothing (a re-deploy of an unchanged file).
    Unchanged,
    /// It was refused; nothing changed.
    Refused(DesiredError),
}

/// A change waiting to be durable and acknowledged before the CLI is answered.
struct Waiting {
    reply: Option<RequestId>,
    /// The snapshot that must be on disk.
    persist_seq: u64,
    durable: Option<Result<(), String>>,
    /// Pushes not answered yet.
    outstanding: usize,
    acked: usize,
    receipt: ChangeReceipt,
}

/// The changes in flight, by a number of their own.
#[derive(Default)]
pub(super) struct Changes {
    next: u64,
    waiting: BTreeMap<u64, Waiting>,
}

impl Node {
    /// Applies `op` with a fresh timestamp, persists and spreads the result, and answers `reply`
    /// (if any) once the change is durable and the pushes are answered. `describe` turns the
    /// services before and after into the lines the CLI prints.
    pub(super) fn apply_change(
        &mut self,
        reply: Option<RequestId>,
        now_ms: u64,
        op: impl FnOnce(&mut DesiredState, Hlc) -> Result<DesiredState, DesiredError>,
        describe: impl FnOnce(&[ServiceView], &[ServiceView]) -> Vec<String>,
    ) -> ChangeOutcome {
        let services_before = self.replica.services().to_vec();
        self.commit_change(reply, now_ms, op, move |after| {
            describe(&services_before, after)
        })
    }

    /// A change the node makes on its own (an address claim, a key retired): nobody waits
    /// for a description of it, so the services are not copied to describe it (at tens of
    /// thousands of services that copy would dwarf the change).
    pub(super) fn apply_own_change(
        &mut self,
        now_ms: u64,
        op: impl FnOnce(&mut DesiredState, Hlc) -> Result<DesiredState, DesiredError>,
    ) -> ChangeOutcome {
        self.commit_change(None, now_ms, op, |_| Vec::new())
    }

    fn commit_change(
        &mut self,
        reply: Option<RequestId>,
        now_ms: u64,
        op: impl FnOnce(&mut DesiredState, Hlc) -> Result<DesiredState, DesiredError>,
        describe: impl FnOnce(&[ServiceView]) -> Vec<String>,
    ) -> ChangeOutcome {
        let before = self.replica.digest();
        let outgoing = match self.replica.change(now_ms, op) {
            Ok(outgoing) => outgoing,
            Err(e) => {
                if let Some(id) = reply {
                    self.effects
                        .api_replies
                        .push((id, Response::Error(e.to_string())));
                }
                return ChangeOutcome::Refused(e);
            }
        };
        let changed = self.replica.digest() != before;
        let actions = describe(self.replica.services());
        for action in &actions {
            info!(action = %action, changed, "desired state change");
        }
        let live = self.live_peers();
        let receipt = ChangeReceipt {
            actions,
            changed,
            peers_acked: 0,
            peers_live: live.len(),
        };
        if !changed {
            if let Some(id) = reply {
                self.effects
                    .api_replies
                    .push((id, Response::Changed(receipt)));
            }
            return ChangeOutcome::Unchanged;
        }
        self.changes.next += 1;
        let change = self.changes.next;
        let (persist_seq, pushed) = self.spread(outgoing, Some(change), now_ms);
        self.changes.waiting.insert(
            change,
            Waiting {
                reply,
                persist_seq,
                durable: None,
                outstanding: pushed,
                acked: 0,
                receipt,
            },
        );
        ChangeOutcome::Changed
    }

    /// Spreads a change this node wrote: persists the state, gossips the delta when it is small
    /// and pushes it to a few live peers (their answers count for `change`, if any). Returns the
    /// snapshot's sequence number and how many peers were pushed to.
    pub(super) fn spread(
        &mut self,
        outgoing: Outgoing,
        change: Option<u64>,
        now_ms: u64,
    ) -> (u64, usize) {
        self.reconcile_due = true;
        // This snapshot supersedes any dirty one.
        self.desired_dirty = false;
        let persist_seq = self.persist_desired();
        if let Some(gossip) = &outgoing.gossip {
            self.membership.broadcast(gossip, now_ms);
        }
        let live = self.live_peers();
        let targets: Vec<_> = live.sample(&mut self.rng, PUSH_FANOUT).cloned().collect();
        let pushed = targets.len();
        for to in targets {
            let request = PeerRequest::Desired(Box::new(outgoing.delta.clone()));
            let pending = change.map_or(Pending::Fire, Pending::Change);
            self.call(to, request, pending);
        }
        (persist_seq, pushed)
    }

    /// A push of change `change` was answered (`acked`) or failed.
    pub(super) fn change_acked(&mut self, change: u64, acked: bool) {
        if let Some(w) = self.changes.waiting.get_mut(&change) {
            w.outstanding = w.outstanding.saturating_sub(1);
            w.acked += usize::from(acked);
        }
        self.answer_finished_changes();
    }

    /// Snapshots up to `seq` were written (or failed).
    pub(super) fn change_persisted(&mut self, seq: u64, result: Result<(), String>) {
        for w in self.changes.waiting.values_mut() {
            if w.persist_seq <= seq && w.durable.is_none() {
                w.durable = Some(result.clone());
            }
        }
        self.answer_finished_changes();
    }

    fn answer_finished_changes(&mut self) {
        let done: Vec<u64> = self
            .changes
            .waiting
            .iter()
            .filter(|(_, w)| w.durable.is_some() && w.outstanding == 0)
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            let Some(w) = self.changes.waiting.remove(&id) else {
                continue;
            };
            let Some(reply) = w.reply else { continue };
            let response = match w.durable {
                Some(Ok(())) => Response::Changed(ChangeReceipt {
                    peers_acked: w.acked,
                    ..w.receipt
                }),
                Some(Err(e)) => Response::Error(format!("change not durable: {e}")),
                None => unreachable!("filtered on durable"),
            };
            self.effects.api_replies.push((reply, response));
        }
    }
}

/// Applies `op` to every item on a scratch copy, and keeps the result only if all succeed, so a
/// `service scale a=1 nope=2` changes nothing.
pub(super) fn all_or_nothing<T>(
    state: &mut DesiredState,
    items: Vec<T>,
    mut op: impl FnMut(&mut DesiredState, T) -> Result<DesiredState, DesiredError>,
) -> Result<DesiredState, DesiredError> {
    let mut scratch = state.clone();
    let mut delta = DesiredState::default();
    for item in items {
        delta.merge_delta(op(&mut scratch, item)?);
    }
    *state = scratch;
    Ok(delta)
}

/// What a change did to services, one line each, in Docker's words.
pub(super) fn service_actions(before: &[ServiceView], after: &[ServiceView]) -> Vec<String> {
    let mut actions = Vec::new();
    for new in after {
        match before.iter().find(|old| old.name == new.name) {
            None => actions.push(format!("Creating service {}", new.name)),
            Some(old) if old.replicas != new.replicas && old.version == new.version => {
                actions.push(format!("{} scaled to {}", new.name, new.replicas))
            }
            Some(old) if old != new => actions.push(format!("Updating service {}", new.name)),
            Some(_) => {}
        }
    }
    for old in before {
        if !after.iter().any(|new| new.name == old.name) {
            actions.push(format!("Removing service {}", old.name));
        }
    }
    actions
}
