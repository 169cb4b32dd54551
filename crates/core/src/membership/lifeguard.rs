//! Lifeguard's ideas on top of foca's SWIM, so that the failure detector is calm under packet
//! loss and still fast on a crash.
//!
//! - **Local health**: a node that others suspect is more likely the one with the bad network.
//!   Its health score rises (up to [`MAX_LOCAL_HEALTH`]) and stretches its suspicion timeouts, so
//!   it does not declare healthy peers down; answered probes bring it back down. (A probe of ours
//!   that fails says as much about the target as about us, and every live node fails its probes
//!   of a crashed one, so it does not count: that would slow down every crash detection.)
//! - **Buddy notices**: when this node starts suspecting a member, it tells that member directly
//!   (and again every [`NOTICE_INTERVAL`] while the suspicion lasts). A live member refutes at
//!   once and answers the notifier directly, instead of waiting for the rumour to reach it and
//!   its refutation to spread back. A crashed member cannot answer, so crash detection does not
//!   slow down, and the base suspicion timeout can be short.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use crate::identity::{NodeId, NodeIdentity};

/// Highest local-health score; timeouts stretch by up to `1 + MAX_LOCAL_HEALTH` times.
pub const MAX_LOCAL_HEALTH: u32 = 4;
/// How often a suspected member is told so while the suspicion lasts.
pub const NOTICE_INTERVAL: Duration = Duration::from_millis(300);
/// Most notices sent per suspicion: enough to cover the longest stretched timeout.
const MAX_NOTICES: u8 = 25;

/// "You are suspected": sent directly to the suspect by a node that suspects it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SuspectNotice {
    /// Who suspects: the suspect answers here.
    pub from: NodeIdentity,
    /// Who is suspected.
    pub suspect: NodeIdentity,
    /// At which incarnation.
    pub incarnation: u16,
}

struct Suspicion {
    identity: NodeIdentity,
    incarnation: u16,
    since_ms: u64,
    notices: u8,
}

/// Local health and the suspicions this node holds.
#[derive(Default)]
pub struct Lifeguard {
    health: u32,
    suspicions: BTreeMap<NodeId, Suspicion>,
}

impl Lifeguard {
    /// The local-health score, 0 (healthy) to [`MAX_LOCAL_HEALTH`].
    pub fn health(&self) -> u32 {
        self.health
    }

    /// A probe of ours was answered.
    pub fn probe_answered(&mut self) {
        self.health = self.health.saturating_sub(1);
    }

    /// Someone suspected this node: its own network is in doubt.
    pub fn was_suspected(&mut self) {
        self.health = (self.health + 1).min(MAX_LOCAL_HEALTH);
    }

    /// This node starts (or goes on) suspecting `identity` at `incarnation`. True when the
    /// suspicion is new, and the suspect should be told.
    pub fn suspect(&mut self, identity: &NodeIdentity, incarnation: u16, now_ms: u64) -> bool {
        match self.suspicions.get(&identity.id) {
            Some(s) if s.identity == *identity && s.incarnation == incarnation => false,
            _ => {
                self.suspicions.insert(
                    identity.id,
                    Suspicion {
                        identity: identity.clone(),
                        incarnation,
                        since_ms: now_ms,
                        notices: 1,
                    },
                );
                true
            }
        }
    }

    /// Whether to tell the suspect `id` again; returns who and at which incarnation.
    pub fn remind(&mut self, id: NodeId) -> Option<(NodeIdentity, u16)> {
        let s = self.suspicions.get_mut(&id)?;
        if s.notices >= MAX_NOTICES {
            return None;
        }
        s.notices += 1;
        Some((s.identity.clone(), s.incarnation))
    }

    /// How much longer the suspicion of `id` must last before it may be declared down, given
    /// the base timeout: the base, stretched by local health, counted from when it began.
    pub fn wait_more(&self, id: NodeId, base: Duration, now_ms: u64) -> Option<Duration> {
        let s = self.suspicions.get(&id)?;
        let needed = base.as_millis() as u64 * (1 + u64::from(self.health));
        let waited = now_ms.saturating_sub(s.since_ms);
        (waited < needed).then(|| Duration::from_millis(needed - waited))
    }

    /// Keeps only the suspicions `still` confirms (the member is still suspect at that
    /// incarnation).
    pub fn retain(&mut self, mut still: impl FnMut(&NodeIdentity, u16) -> bool) {
        self.suspicions
            .retain(|_, s| still(&s.identity, s.incarnation));
    }

    /// Whether any suspicion is held.
    pub fn is_suspecting(&self) -> bool {
        !self.suspicions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ident(id: u128) -> NodeIdentity {
        let addr = "127.0.0.1:1".parse().unwrap();
        NodeIdentity {
            addr,
            id: NodeId(id),
            generation: 1,
            meta: Arc::new(crate::identity::NodeMeta::unknown(addr)),
        }
    }

    #[test]
    fn poor_local_health_stretches_suspicion() {
        let mut l = Lifeguard::default();
        let base = Duration::from_millis(1_000);
        assert!(l.suspect(&ident(2), 0, 0));
        assert!(
            !l.suspect(&ident(2), 0, 500),
            "the same suspicion is not new"
        );
        assert_eq!(
            l.wait_more(NodeId(2), base, 400),
            Some(Duration::from_millis(600))
        );
        assert_eq!(l.wait_more(NodeId(2), base, 1_000), None);
        l.was_suspected();
        l.was_suspected();
        assert_eq!(l.health(), 2);
        assert_eq!(
            l.wait_more(NodeId(2), base, 1_000),
            Some(Duration::from_millis(2_000))
        );
        for _ in 0..10 {
            l.was_suspected();
        }
        assert_eq!(l.health(), MAX_LOCAL_HEALTH);
        for _ in 0..10 {
            l.probe_answered();
        }
        assert_eq!(l.health(), 0);
    }

    #[test]
    fn reminders_are_bounded_and_end_with_the_suspicion() {
        let mut l = Lifeguard::default();
        l.suspect(&ident(2), 3, 0);
        let reminders = std::iter::from_fn(|| l.remind(NodeId(2))).count();
        assert_eq!(reminders, usize::from(MAX_NOTICES) - 1);
        l.retain(|_, _| false);
        assert!(!l.is_suspecting());
        assert!(l.remind(NodeId(2)).is_none());
    }
}
