//! One node's copy of the desired state and the rules for spreading it, shared by the agent and
//! the simulator.
//!
//! A change is applied locally first (and made durable by the caller), then spread three ways:
//! - pushed over QUIC to a few live peers at once (the CLI waits for their acknowledgement);
//! - piggybacked on SWIM gossip when the delta is small, so it reaches everyone epidemically;
//! - repaired by anti-entropy: every sync round compares state digests with one random peer and,
//!   when they differ, the digests of the state's buckets, and the two exchange the entries of
//!   the buckets that differ, so a node that was down or partitioned catches up.
//!
//! Merging is a CRDT join, so the order, duplication or loss of any of these messages never
//! changes the outcome, only how soon it is reached.

use std::{
    cell::{OnceCell, RefCell},
    collections::BTreeSet,
};

use serde::{Deserialize, Serialize};

use super::{
    broadcast::MAX_BROADCAST_BYTES,
    desired::{
        hlc::{Clock, Hlc},
        state::{AutoWrite, BucketDigest, Buckets, DesiredError, DesiredState, ServiceView},
    },
    identity::NodeId,
    wire::{self, WireError},
};

/// How many live peers a local change is pushed to directly.
pub const PUSH_FANOUT: usize = 4;

/// Version of the gossip item layout below.
const GOSSIP_VERSION: u8 = 1;

/// What rides in a SWIM custom broadcast.
#[derive(Debug, Serialize, Deserialize)]
enum GossipItem {
    /// A desired-state delta.
    Desired(DesiredState),
}

/// A change ready to be spread.
#[derive(Debug)]
pub struct Outgoing {
    /// The registers written, to push to peers.
    pub delta: DesiredState,
    /// The delta as a gossip payload, when it is small enough to ride on SWIM messages.
    pub gossip: Option<Vec<u8>>,
}

/// A node's desired state and clock.
#[derive(Debug)]
pub struct Replica {
    state: DesiredState,
    clock: Clock,
    /// The services, computed on first use after a change (every reconcile round asks).
    services: OnceCell<Vec<ServiceView>>,
    /// The bucket digests every anti-entropy round compares, kept up to date bucket by bucket:
    /// a change refreshes only the buckets it touched, so a round costs the same with 10 or
    /// 50,000 services.
    buckets: RefCell<BucketCache>,
}

#[derive(Debug, Default)]
struct BucketCache {
    /// `None` until first asked for, and after a change of unknown extent.
    buckets: Option<Buckets>,
    /// Buckets changed since `buckets` was computed.
    stale: BTreeSet<u16>,
}

impl Replica {
    /// Starts from `state` (loaded from the data dir, or empty).
    pub fn new(node: NodeId, state: DesiredState, now_ms: u64) -> Self {
        let mut clock = Clock::new(node);
        if let Some(max) = state.max_hlc() {
            clock.observe(&max, now_ms);
        }
        Replica {
            state,
            clock,
            services: OnceCell::new(),
            buckets: RefCell::default(),
        }
    }

    /// The current desired state.
    pub fn state(&self) -> &DesiredState {
        &self.state
    }

    /// Applies a local operation with a fresh timestamp.
    pub fn change(
        &mut self,
        now_ms: u64,
        op: impl FnOnce(&mut DesiredState, Hlc) -> Result<DesiredState, DesiredError>,
    ) -> Result<Outgoing, DesiredError> {
        let hlc = self.clock.tick(now_ms);
        self.services = OnceCell::new();
        let delta = match op(&mut self.state, hlc) {
            Ok(delta) => delta,
            Err(e) => {
                // Even a failing op may have written before it failed.
                self.buckets = RefCell::default();
                return Err(e);
            }
        };
        self.touched(&delta);
        let gossip = encode_gossip(&delta).filter(|bytes| bytes.len() <= MAX_BROADCAST_BYTES);
        Ok(Outgoing { delta, gossip })
    }

    /// Applies an automatic rollout write (`Plan::auto_writes`, see
    /// `DesiredState::apply_auto`): it carries its own stamp, derived from the version it is
    /// about, so the clock does not tick; it only observes the stamp, so that later commands on
    /// this node order after it. `None` when there is nothing to spread (the write was already
    /// held, or is about a version no longer current).
    pub fn apply_auto(
        &mut self,
        write: &AutoWrite,
        now_ms: u64,
    ) -> Result<Option<Outgoing>, DesiredError> {
        let delta = self.state.apply_auto(write)?;
        if delta.is_empty() {
            return Ok(None);
        }
        self.services = OnceCell::new();
        self.touched(&delta);
        if let Some(max) = delta.max_hlc() {
            self.clock.observe(&max, now_ms);
        }
        let gossip = encode_gossip(&delta).filter(|bytes| bytes.len() <= MAX_BROADCAST_BYTES);
        Ok(Some(Outgoing { delta, gossip }))
    }

    /// Merges state from a peer; true if anything changed. Service entries that break the
    /// rules of a local write are left out (see `DesiredState::without_invalid`).
    pub fn merge(&mut self, other: DesiredState, now_ms: u64) -> bool {
        let (other, refused) = other.without_invalid();
        // One line a merge, however many entries a broken peer sent.
        if let Some(first) = refused.first() {
            tracing::warn!(refused = refused.len(), first = %first, "refused a peer's service entries");
        }
        if let Some(max) = other.max_hlc() {
            self.clock.observe(&max, now_ms);
        }
        let touched = other.touched_buckets();
        let changed = self.state.merge_delta(other);
        if changed {
            self.services = OnceCell::new();
            self.buckets.get_mut().stale.extend(touched);
        }
        changed
    }

    /// Merges a gossip payload; true if anything changed.
    pub fn receive_gossip(&mut self, payload: &[u8], now_ms: u64) -> Result<bool, WireError> {
        match payload.split_first() {
            Some((&GOSSIP_VERSION, body)) => {
                let GossipItem::Desired(delta) = wire::decode(body)?;
                // Never taken from gossip, whatever a sender put there.
                Ok(self.merge(delta.without_cluster_entry(), now_ms))
            }
            Some((&other, _)) => Err(WireError::Version(other)),
            None => Err(WireError::Decode("empty gossip item".into())),
        }
    }

    /// Digest of the state, compared in anti-entropy rounds (the buckets' root).
    pub fn digest(&self) -> [u8; 32] {
        self.with_buckets(|b| b.root)
    }

    /// The digests of the state's buckets, compared when the roots differ.
    pub fn bucket_digests(&self) -> Vec<BucketDigest> {
        self.with_buckets(|b| b.digests.clone())
    }

    /// The buckets whose digests differ from a peer's.
    pub fn differing(&self, theirs: &[BucketDigest]) -> BTreeSet<u16> {
        self.with_buckets(|b| b.differing(theirs))
    }

    fn touched(&mut self, delta: &DesiredState) {
        self.buckets.get_mut().stale.extend(delta.touched_buckets());
    }

    fn with_buckets<T>(&self, f: impl FnOnce(&Buckets) -> T) -> T {
        let mut cache = self.buckets.borrow_mut();
        let BucketCache { buckets, stale } = &mut *cache;
        match buckets {
            None => *buckets = Some(self.state.buckets()),
            Some(b) if !stale.is_empty() => b.update(self.state.bucket_digests(stale)),
            Some(_) => {}
        }
        stale.clear();
        f(buckets.as_ref().expect("just computed"))
    }

    /// The live services, as [`DesiredState::services`] gives them.
    pub fn services(&self) -> &[ServiceView] {
        self.services.get_or_init(|| self.state.services())
    }
}

/// The gossip item of a delta, unless it carries the cluster's secrets or revocations (those
/// travel over authenticated QUIC only: see `desired::state::cluster`).
fn encode_gossip(delta: &DesiredState) -> Option<Vec<u8>> {
    if delta.has_cluster_entry() {
        return None;
    }
    let body = wire::encode(&GossipItem::Desired(delta.clone())).ok()?;
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(GOSSIP_VERSION);
    out.extend_from_slice(&body);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{
        spec::{ServiceDef, ServiceSpec},
        state::{AutoOutcome, ServiceUpdate, UpdateState},
    };

    #[test]
    fn the_kept_buckets_match_a_full_recompute_after_every_kind_of_write() {
        let def = |name: &str| ServiceDef {
            name: format!("web_{name}"),
            stack: "web".into(),
            replicas: 2,
            spec: ServiceSpec {
                image: "api:1".into(),
                ..ServiceSpec::default()
            },
        };
        let mut a = Replica::new(NodeId(1), DesiredState::default(), 1_000);
        let mut b = Replica::new(NodeId(2), DesiredState::default(), 1_000);
        let check = |r: &Replica| assert_eq!(r.digest(), r.state().buckets().root);
        check(&a);
        let out = a
            .change(1_000, |s, hlc| {
                s.deploy_stack("web", vec![def("a"), def("b"), def("c")], hlc)
            })
            .unwrap();
        check(&a);
        b.change(1_100, |s, hlc| {
            s.deploy_stack(
                "db",
                vec![ServiceDef {
                    stack: "db".into(),
                    name: "db_pg".into(),
                    ..def("x")
                }],
                hlc,
            )
        })
        .unwrap();
        b.merge(out.delta, 1_200);
        check(&b);
        // A failing op may have written before failing: everything is recomputed.
        assert!(a
            .change(1_300, |s, hlc| s.scale("web_nope", 3, hlc))
            .is_err());
        check(&a);
        a.change(1_400, |s, hlc| s.remove_stack("web", hlc))
            .unwrap();
        check(&a);
        b.merge(a.state().clone(), 1_500);
        check(&b);
        a.merge(b.state().clone(), 1_500);
        check(&a);
        assert_eq!(a.digest(), b.digest());
    }

    #[test]
    fn an_automatic_write_spreads_once_and_later_commands_order_after_it() {
        let def = ServiceDef {
            name: "web_api".into(),
            stack: "web".into(),
            replicas: 2,
            spec: ServiceSpec {
                image: "api:1".into(),
                ..ServiceSpec::default()
            },
        };
        let mut a = Replica::new(NodeId(1), DesiredState::default(), 1_000);
        let out = a
            .change(1_000, |s, hlc| s.deploy_stack("web", vec![def], hlc))
            .unwrap();
        let update = ServiceUpdate {
            image: Some("api:2".into()),
            ..ServiceUpdate::default()
        };
        let out2 = a
            .change(2_000, |s, hlc| s.update_service("web_api", update, hlc))
            .unwrap();
        let mut b = Replica::new(NodeId(2), DesiredState::default(), 2_000);
        b.merge(out.delta, 2_000);
        b.merge(out2.delta, 2_000);
        let version = a.services()[0].version;
        let pause = AutoWrite {
            service: "web_api".into(),
            version,
            outcome: AutoOutcome::Paused {
                message: "update paused".into(),
            },
        };
        let from_a = a.apply_auto(&pause, 2_000).unwrap().expect("a change");
        assert!(from_a.gossip.is_some(), "small enough to gossip");
        b.apply_auto(&pause, 2_000)
            .unwrap()
            .expect("a change here too");
        assert!(!b.merge(from_a.delta, 2_000), "identical writes");
        assert_eq!(a.digest(), b.digest());
        assert!(a.apply_auto(&pause, 2_000).unwrap().is_none());
        assert_eq!(
            a.services()[0].rollout().unwrap().state,
            UpdateState::Paused
        );
        // A command on the same node, its wall clock unchanged, comes after the pause.
        let force = ServiceUpdate {
            force: true,
            ..ServiceUpdate::default()
        };
        a.change(2_000, |s, hlc| s.update_service("web_api", force, hlc))
            .unwrap();
        assert_eq!(
            a.services()[0].rollout().unwrap().state,
            UpdateState::Updating
        );
    }
}
