//! Hybrid logical clock: the version stamp of every desired-state write.
//!
//! An [`Hlc`] is `(wall_ms, counter, node)`, ordered lexicographically. The wall part keeps stamps
//! close to real time, so "later wins" means what an operator expects when clocks are roughly in
//! sync; the counter keeps a node's stamps strictly increasing when its wall clock stalls or goes
//! backwards; the node id makes every stamp unique cluster-wide, so two registers written at the
//! same instant by different nodes still have a total, agreed order.
//!
//! # The observe rule
//!
//! After merging remote data a node calls [`Clock::observe`] with the largest stamp it merged, so
//! its next write is ordered after everything it has seen (a write never loses to a value the
//! operator was looking at). The one exception: a remote stamp whose `wall_ms` is more than
//! [`MAX_FORWARD_MS`] ahead of the local wall clock (`remote.wall_ms > now_ms + MAX_FORWARD_MS`) is
//! ignored. Without that bound, one node whose clock says 2099 would drag every clock it gossips
//! with into 2099, and every write made anywhere afterwards would carry a 2099 stamp: the broken
//! node's mistake would become permanent and cluster-wide. With the bound, an honest node's clock
//! is never more than [`MAX_FORWARD_MS`] ahead of its own wall clock, however stamps are relayed.
//! The data carrying an ignored stamp is still merged (every replica must converge); the state
//! layer makes a later local write to such a register win anyway (see `state`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::identity::NodeId;

/// How far ahead of the local wall clock a remote stamp may be and still move the local clock.
/// An hour covers any plausible NTP skew and is short enough that a broken clock's writes stop
/// winning soon after it is fixed.
pub const MAX_FORWARD_MS: u64 = 60 * 60 * 1000;

/// A hybrid logical timestamp. Ordered by wall time, then counter, then node id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hlc {
    /// Milliseconds since the Unix epoch, as the issuing clock knew them (possibly advanced by
    /// stamps it observed).
    pub wall_ms: u64,
    /// Orders stamps that share `wall_ms`.
    pub counter: u32,
    /// The node that issued the stamp; breaks the remaining ties.
    pub node: NodeId,
}

impl Hlc {
    /// Below every stamp a clock issues.
    pub const ZERO: Hlc = Hlc {
        wall_ms: 0,
        counter: 0,
        node: NodeId(0),
    };

    /// Above every other stamp; [`Hlc::successor`] saturates here.
    pub const MAX: Hlc = Hlc {
        wall_ms: u64::MAX,
        counter: u32::MAX,
        node: NodeId(u128::MAX),
    };

    /// The next stamp after `self` issued by `node`: greater than `self` whatever the node ids,
    /// except that it saturates at [`Hlc::MAX`] (a wall clock in the year 584 million).
    pub fn successor(self, node: NodeId) -> Hlc {
        if let Some(counter) = self.counter.checked_add(1) {
            return Hlc {
                wall_ms: self.wall_ms,
                counter,
                node,
            };
        }
        // Four billion stamps in one millisecond only happen to a clock stuck far in the future;
        // stepping the wall part keeps the order strict.
        match self.wall_ms.checked_add(1) {
            Some(wall_ms) => Hlc {
                wall_ms,
                counter: 0,
                node,
            },
            None => Hlc::MAX,
        }
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{}", self.wall_ms, self.counter, self.node.short())
    }
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One node's clock. Issues strictly increasing stamps, each greater than anything observed.
#[derive(Clone, Debug)]
pub struct Clock {
    node: NodeId,
    last: Hlc,
}

impl Clock {
    /// A clock for `node` that has issued and seen nothing. After a restart, [`Clock::observe`]
    /// the persisted state's largest stamp before issuing any.
    pub fn new(node: NodeId) -> Self {
        Clock {
            node,
            last: Hlc { node, ..Hlc::ZERO },
        }
    }

    /// The node this clock stamps for.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The greatest stamp issued or accepted by [`Clock::observe`] so far.
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// A new stamp, strictly greater than every stamp issued or observed before, even if `now_ms`
    /// went backwards.
    pub fn tick(&mut self, now_ms: u64) -> Hlc {
        let next = if now_ms > self.last.wall_ms {
            Hlc {
                wall_ms: now_ms,
                counter: 0,
                node: self.node,
            }
        } else {
            self.last.successor(self.node)
        };
        self.last = next;
        next
    }

    /// Takes a remote stamp into account so later ticks order after it. Returns false, changing
    /// nothing, when `remote.wall_ms > now_ms + MAX_FORWARD_MS` (see the module docs for why).
    pub fn observe(&mut self, remote: &Hlc, now_ms: u64) -> bool {
        if remote.wall_ms > now_ms.saturating_add(MAX_FORWARD_MS) {
            return false;
        }
        self.last = self.last.max(*remote);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hlc(wall_ms: u64, counter: u32, node: u128) -> Hlc {
        Hlc {
            wall_ms,
            counter,
            node: NodeId(node),
        }
    }

    #[test]
    fn order_is_wall_then_counter_then_node() {
        assert!(hlc(2, 0, 1) > hlc(1, 9, 9));
        assert!(hlc(1, 2, 1) > hlc(1, 1, 9));
        assert!(hlc(1, 1, 2) > hlc(1, 1, 1));
        assert!(hlc(0, 0, 1) > Hlc::ZERO);
    }

    #[test]
    fn ticks_are_strictly_monotonic() {
        let mut clock = Clock::new(NodeId(1));
        let mut prev = clock.tick(100);
        assert_eq!(prev, hlc(100, 0, 1));
        for now in [100, 100, 101, 150, 150, 200] {
            let next = clock.tick(now);
            assert!(next > prev, "{next} after {prev}");
            prev = next;
        }
        assert_eq!(prev, hlc(200, 0, 1));
    }

    #[test]
    fn backwards_wall_clock_keeps_counting() {
        let mut clock = Clock::new(NodeId(1));
        let first = clock.tick(1_000);
        let second = clock.tick(10);
        let third = clock.tick(500);
        assert_eq!(second, hlc(1_000, 1, 1));
        assert_eq!(third, hlc(1_000, 2, 1));
        assert!(first < second && second < third);
        assert_eq!(clock.tick(1_001), hlc(1_001, 0, 1));
    }

    #[test]
    fn ties_break_on_node_id_and_observe_orders_after() {
        let mut a = Clock::new(NodeId(1));
        let mut b = Clock::new(NodeId(2));
        let ta = a.tick(50);
        let tb = b.tick(50);
        assert_ne!(ta, tb);
        assert!(tb > ta);
        // a saw b's stamp, so its next one is later although its wall clock did not move.
        assert!(a.observe(&tb, 50));
        let next = a.tick(50);
        assert!(next > tb);
        assert_eq!(next, hlc(50, 1, 1));
    }

    #[test]
    fn observing_older_stamps_changes_nothing() {
        let mut clock = Clock::new(NodeId(1));
        let t = clock.tick(1_000);
        assert!(clock.observe(&hlc(10, 5, 9), 1_000));
        assert_eq!(clock.last(), t);
    }

    #[test]
    fn far_future_remote_is_ignored() {
        let mut clock = Clock::new(NodeId(1));
        let now = 1_000_000;
        let broken = hlc(now + MAX_FORWARD_MS + 1, 0, 2);
        assert!(!clock.observe(&broken, now));
        assert_eq!(clock.tick(now), hlc(now, 0, 1));
        // Exactly at the bound is still accepted: the rule is a strict "more than".
        let edge = hlc(now + MAX_FORWARD_MS, 3, 2);
        assert!(clock.observe(&edge, now));
        assert_eq!(clock.tick(now), hlc(now + MAX_FORWARD_MS, 4, 1));
    }

    #[test]
    fn observe_near_u64_max_does_not_overflow() {
        let mut clock = Clock::new(NodeId(1));
        assert!(clock.observe(&hlc(u64::MAX, u32::MAX, 2), u64::MAX));
        assert_eq!(clock.tick(u64::MAX), Hlc::MAX);
        assert_eq!(clock.tick(u64::MAX), Hlc::MAX);
    }

    #[test]
    fn counter_overflow_steps_the_wall_part() {
        let s = hlc(7, u32::MAX, 3).successor(NodeId(1));
        assert_eq!(s, hlc(8, 0, 1));
        assert!(s > hlc(7, u32::MAX, 3));
    }
}
