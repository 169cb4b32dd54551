//! How many of the slots to place each node takes: balanced water-filling, level by level through
//! the spread preferences, then over the nodes of each group.
//!
//! Balance is decided here, before any slot is matched to a node, so the matching
//! ([`super::assign`]) only has to honour these quotas, and the "differ by at most one" property
//! holds by construction rather than by luck of the hashes.

use std::collections::BTreeMap;

use super::hash::{group_key, mix, score};

/// Something that receives a share: a spread group or a node.
pub(super) struct Bucket {
    /// Slots it already holds and keeps (on paused nodes, or of a service that opts out of
    /// rebalancing).
    pub load: u64,
    /// How many new slots it can take at most.
    pub cap: u64,
    /// How many of the slots being placed it runs now (sticky slots, see `Shape::held`).
    pub held: u64,
    /// Its key in the rendezvous ranking that breaks ties.
    pub key: u64,
}

/// How `add` new slots split over some buckets: everyone is raised to a common level (`base`),
/// and `leftover` units remain, fewer than the `candidates` (buckets at that level with room) that
/// could take one each. Final loads (`load` + share) are thus as even as caps allow.
pub(super) struct Level {
    /// Share of each bucket before the leftover.
    pub base: Vec<u64>,
    /// Units still to hand out, one each to distinct candidates.
    pub leftover: u64,
    /// Positions of the buckets that may take one leftover unit, in bucket order.
    pub candidates: Vec<usize>,
}

/// Water-fills `add` units into `buckets` (see [`Level`]); more than the buckets can take is cut
/// to what they can.
pub(super) fn level(buckets: &[Bucket], add: u64) -> Level {
    let room = buckets
        .iter()
        .map(|b| b.cap.min(add))
        .fold(0u64, u64::saturating_add);
    let add = add.min(room);
    let given = |level: u64| -> u64 {
        buckets
            .iter()
            .map(|b| b.cap.min(level.saturating_sub(b.load)))
            .fold(0u64, u64::saturating_add)
    };
    // The highest level whose fill does not exceed `add` (given(0) == 0, and at `hi` every
    // bucket would get at least min(cap, add), which is at least `add` in total).
    let max_load = buckets.iter().map(|b| b.load).max().unwrap_or(0);
    let (mut lo, mut hi) = (0u64, max_load.saturating_add(add));
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if given(mid) <= add {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let base: Vec<u64> = buckets
        .iter()
        .map(|b| b.cap.min(lo.saturating_sub(b.load)))
        .collect();
    let leftover = add - base.iter().sum::<u64>();
    let candidates = (0..buckets.len())
        .filter(|&i| base[i] < buckets[i].cap && buckets[i].load + base[i] == lo)
        .collect();
    Level {
        base,
        leftover,
        candidates,
    }
}

/// Which keys rank the candidates for leftover unit `j` of `leftover`.
pub(super) enum Tie<'a> {
    /// Unit `j` is ranked by slot `keys[keys.len() - leftover + j]`: the last slots to place.
    /// Scaling from R to R+1 then adds one unit, for the new slot, and leaves the earlier picks
    /// alone, so quotas only grow.
    Slots(&'a [u64]),
    /// Unit `j` is ranked by a key derived from `j` and this salt (inside a spread group, where
    /// no list of slots belongs to the group before matching). Picks are still nested: one more
    /// unit keeps the earlier picks.
    Salt(u64),
}

/// Hands the leftover units of `level` out one by one: unit `j` to a remaining candidate that
/// runs more of the slots than its base share (so that the unit saves a move), else to the one
/// that ranks highest for its key (see [`Tie`]); returns every bucket's share.
///
/// Giving the units to the buckets that hold the slots already is what makes placement move only
/// what it must: on a scale-up or a node loss every bucket's share stays at least what it runs
/// (the leftover grows by at least as many units as there are buckets above the base), and on a
/// join only the buckets above the new level give slots up.
pub(super) fn pick(level: Level, buckets: &[Bucket], tie: Tie) -> Vec<u64> {
    let Level {
        mut base,
        leftover,
        mut candidates,
    } = level;
    for j in 0..leftover {
        let key = match tie {
            Tie::Slots(keys) => usize::try_from(leftover - j)
                .ok()
                .and_then(|back| keys.len().checked_sub(back))
                .map_or(mix(j), |at| keys[at]),
            Tie::Salt(salt) => mix(salt ^ mix(j)),
        };
        let Some((pos, _)) = candidates.iter().enumerate().max_by_key(|&(pos, &i)| {
            (
                buckets[i].held > base[i],
                score(key, buckets[i].key),
                std::cmp::Reverse(pos),
            )
        }) else {
            break; // unreachable: there are more candidates than leftover units
        };
        base[candidates.remove(pos)] += 1;
    }
    base
}

/// What the quota computation needs to know about the nodes, indexed like the canonical node list.
pub(super) struct Shape<'a> {
    /// `spec.placement.spread`: node label names, outermost first.
    pub spread: &'a [String],
    /// Each node's operator labels.
    pub labels: Vec<&'a BTreeMap<String, String>>,
    /// New slots each node may take: 0 for paused nodes, the per-node cap for active ones.
    pub cap: Vec<u64>,
    /// Slots each node keeps from before (paused nodes; active ones too for a service that opts
    /// out of rebalancing).
    pub pinned: Vec<u64>,
    /// How many of the slots being placed each node runs now: it keeps them while its share
    /// allows, so shares lean towards them.
    pub held: Vec<u64>,
    /// Each node's rendezvous key.
    pub node_keys: Vec<u64>,
    /// Keys of the slots being placed, in slot order.
    pub tie: &'a [u64],
}

/// New slots per node (indexed like the node list) for `add` slots over `members` (the nodes that
/// satisfy the constraints and are not drained, in canonical order).
pub(super) fn quotas(shape: &Shape, members: &[usize], add: u64) -> Vec<u64> {
    let mut out = vec![0; shape.cap.len()];
    descend(shape, 0, 0, members, add, &mut out);
    out
}

fn descend(shape: &Shape, depth: usize, salt: u64, members: &[usize], add: u64, out: &mut [u64]) {
    let Some(label) = shape.spread.get(depth) else {
        // Innermost level: the nodes themselves. Paused nodes take nothing new (cap 0) and are
        // left out: balance is among the nodes that can still be given work, counting the slots
        // they keep (only a service that opts out of rebalancing keeps slots on active nodes).
        let active: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&i| shape.cap[i] > 0)
            .collect();
        let buckets: Vec<Bucket> = active
            .iter()
            .map(|&i| Bucket {
                load: shape.pinned[i],
                cap: shape.cap[i],
                held: shape.held[i],
                key: shape.node_keys[i],
            })
            .collect();
        let tie = tie(shape, depth, salt);
        for (&i, share) in active.iter().zip(pick(level(&buckets, add), &buckets, tie)) {
            out[i] = share;
        }
        return;
    };
    // Nodes without the label form a group of their own (`None` sorts first), as in Swarm.
    let mut groups: BTreeMap<Option<&str>, Vec<usize>> = BTreeMap::new();
    for &i in members {
        let value = shape.labels[i].get(label).map(String::as_str);
        groups.entry(value).or_default().push(i);
    }
    let buckets: Vec<Bucket> = groups
        .iter()
        .map(|(value, nodes)| Bucket {
            load: nodes.iter().map(|&i| shape.pinned[i]).sum(),
            cap: nodes
                .iter()
                .map(|&i| shape.cap[i])
                .fold(0u64, u64::saturating_add),
            held: nodes.iter().map(|&i| shape.held[i]).sum(),
            key: group_key(depth, *value) ^ salt,
        })
        .collect();
    let shares = pick(level(&buckets, add), &buckets, tie(shape, depth, salt));
    for ((bucket, nodes), share) in buckets.iter().zip(groups.values()).zip(shares) {
        descend(shape, depth + 1, mix(bucket.key), nodes, share, out);
    }
}

/// At the outermost level leftover units are tied to the slots being placed (see [`Tie::Slots`]);
/// deeper, inside a spread group, to the enclosing group.
fn tie<'a>(shape: &Shape<'a>, depth: usize, salt: u64) -> Tie<'a> {
    if depth == 0 {
        Tie::Slots(shape.tie)
    } else {
        Tie::Salt(salt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(load: u64, cap: u64, key: u64) -> Bucket {
        Bucket {
            load,
            cap,
            held: 0,
            key,
        }
    }

    fn fill(buckets: &[Bucket], add: u64) -> Vec<u64> {
        pick(level(buckets, add), buckets, Tie::Salt(7))
    }

    #[test]
    fn fills_evenly() {
        let buckets: Vec<Bucket> = (0..4).map(|k| b(0, u64::MAX, k)).collect();
        let l = level(&buckets, 10);
        assert_eq!(
            (l.base, l.leftover, l.candidates),
            (vec![2; 4], 2, vec![0, 1, 2, 3])
        );
        let shares = fill(&buckets, 10);
        assert_eq!(shares.iter().sum::<u64>(), 10);
        assert!(shares.iter().all(|&s| s == 2 || s == 3));
    }

    #[test]
    fn respects_loads_and_caps() {
        let buckets = vec![b(5, u64::MAX, 1), b(0, 2, 2), b(0, u64::MAX, 3)];
        // Levels: bucket 0 already holds 5; bucket 1 stops at 2; bucket 2 takes the rest.
        assert_eq!(fill(&buckets, 6), vec![0, 2, 4]);
        // Level 7 (2 + 2 + 7 = 11) and one unit left for bucket 0 or 2.
        let l = level(&buckets, 12);
        assert_eq!(
            (l.base, l.leftover, l.candidates),
            (vec![2, 2, 7], 1, vec![0, 2])
        );
        // More than the room: everyone full, the rest is left to the caller.
        let capped = vec![b(0, 1, 1), b(0, 2, 2)];
        assert_eq!(fill(&capped, 10), vec![1, 2]);
        assert_eq!(fill(&[], 3), Vec::<u64>::new());
    }

    #[test]
    fn one_more_slot_adds_one_unit_and_takes_none() {
        let buckets: Vec<Bucket> = (0..7).map(|k| b(0, u64::MAX, k * 977)).collect();
        let tie: Vec<u64> = (0..40).map(|s| s * 31 + 5).collect();
        for tied in [true, false] {
            let shares = |n: usize| {
                let t = if tied {
                    Tie::Slots(&tie[..n])
                } else {
                    Tie::Salt(3)
                };
                pick(level(&buckets, n as u64), &buckets, t)
            };
            for n in 0..39 {
                let (before, after) = (shares(n), shares(n + 1));
                let grew: Vec<_> = (0..7).filter(|&i| after[i] != before[i]).collect();
                assert_eq!(grew.len(), 1, "n={n}");
                assert_eq!(after[grew[0]], before[grew[0]] + 1);
            }
        }
    }
}
