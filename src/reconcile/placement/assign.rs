//! Matching slots to nodes under quotas: a greedy over all (slot, node) pairs in order of
//! rendezvous score, best first, taking a pair when the slot is still free and the node still has
//! room: below its base quota, or at it with a unit left in its extras pool.
//!
//! Why this greedy: its result depends only on the scores of the pairs, never on input order, and
//! a pair's score depends only on that slot and that node. When a node joins, the pairs between
//! the others keep their scores and their relative order; the newcomer takes the slots it ranks
//! highest (as plain rendezvous hashing would) and only quota changes ripple further, along short
//! chains of displaced slots. Processing slots in slot order instead would let one change at slot
//! 1 re-route every later slot.
//!
//! Evaluating every pair up front would cost R × N memory; instead each slot keeps its best few
//! nodes and a heap yields the globally best pending pair. A pair popped for a full node is
//! skipped; a node that is full stays full (counts only grow and pools only shrink), so skipping
//! it never changes the outcome.

use std::{cmp::Reverse, collections::BinaryHeap};

use super::hash::score;

/// How many candidate nodes a slot remembers before it has to rescan.
const TOP: usize = 8;

/// A candidate: (score, node position). Higher score first, then lower position.
type Cand = (u64, u32);

fn better(a: Cand, b: Cand) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
}

/// Room left on each node: what [`super::fill::Quotas`] allows minus what it has taken.
struct Room<'a> {
    base: &'a [u64],
    pool_of: &'a [Option<usize>],
    pools: Vec<u64>,
    taken: Vec<u64>,
}

impl Room<'_> {
    fn open(&self, node: usize) -> bool {
        self.taken[node] < self.base[node]
            || (self.taken[node] == self.base[node]
                && self.pool_of[node].is_some_and(|p| self.pools[p] > 0))
    }

    fn take(&mut self, node: usize) {
        if self.taken[node] >= self.base[node] {
            if let Some(p) = self.pool_of[node] {
                self.pools[p] -= 1;
            }
        }
        self.taken[node] += 1;
    }
}

/// Writes the best (up to) `TOP` open nodes for `slot` into `out`, best first; returns how many.
fn best_nodes(slot: u64, nodes: &[u64], room: &Room, out: &mut [Cand]) -> usize {
    let mut n = 0;
    for (pos, &key) in nodes.iter().enumerate() {
        if !room.open(pos) {
            continue;
        }
        let cand = (score(slot, key), pos as u32);
        if n == TOP && !better(cand, out[TOP - 1]) {
            continue;
        }
        // Insertion into a sorted array of at most TOP entries.
        let mut at = n.min(TOP - 1);
        while at > 0 && better(cand, out[at - 1]) {
            out[at] = out[at - 1];
            at -= 1;
        }
        out[at] = cand;
        n = (n + 1).min(TOP);
    }
    n
}

/// For each slot key in `slots`, the position in `nodes` (node keys) of its owner. `base`,
/// `pool_of` (same positions as `nodes`) and `pools` are the quotas; they are expected to add up
/// to `slots.len()`; a slot left without a node (only if they add up to less) is `None`.
pub(super) fn assign(
    slots: &[u64],
    nodes: &[u64],
    base: &[u64],
    pool_of: &[Option<usize>],
    pools: &[u64],
) -> Vec<Option<usize>> {
    let mut room = Room {
        base,
        pool_of,
        pools: pools.to_vec(),
        taken: vec![0; nodes.len()],
    };
    let mut owner = vec![None; slots.len()];
    let mut cands: Vec<Cand> = vec![(0, 0); slots.len() * TOP];
    let mut len = vec![0usize; slots.len()];
    let mut cursor = vec![0usize; slots.len()];
    let mut heap = BinaryHeap::with_capacity(slots.len());
    for (s, &key) in slots.iter().enumerate() {
        len[s] = best_nodes(key, nodes, &room, &mut cands[s * TOP..(s + 1) * TOP]);
        if len[s] > 0 {
            let (sc, pos) = cands[s * TOP];
            heap.push((sc, Reverse(s), Reverse(pos)));
        }
    }
    while let Some((_, Reverse(s), Reverse(pos))) = heap.pop() {
        let node = pos as usize;
        if room.open(node) {
            room.take(node);
            owner[s] = Some(node);
            continue;
        }
        cursor[s] += 1;
        if cursor[s] >= len[s] {
            // All remembered candidates filled up: rescan the nodes that still have room.
            len[s] = best_nodes(slots[s], nodes, &room, &mut cands[s * TOP..(s + 1) * TOP]);
            cursor[s] = 0;
            if len[s] == 0 {
                continue;
            }
        }
        let (sc, pos) = cands[s * TOP + cursor[s]];
        heap.push((sc, Reverse(s), Reverse(pos)));
    }
    owner
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition the heap implements: all pairs sorted, best first, taken greedily.
    fn reference(slots: &[u64], nodes: &[u64], q: &Q) -> Vec<Option<usize>> {
        let mut pairs: Vec<(u64, Reverse<usize>, Reverse<usize>)> = Vec::new();
        for (s, &sk) in slots.iter().enumerate() {
            for (n, &nk) in nodes.iter().enumerate() {
                pairs.push((score(sk, nk), Reverse(s), Reverse(n)));
            }
        }
        pairs.sort_unstable_by(|a, b| b.cmp(a));
        let (mut taken, mut pools) = (vec![0; nodes.len()], q.2.clone());
        let mut owner = vec![None; slots.len()];
        for (_, Reverse(s), Reverse(n)) in pairs {
            if owner[s].is_some() {
                continue;
            }
            if taken[n] < q.0[n] {
                taken[n] += 1;
                owner[s] = Some(n);
            } else if let Some(p) = q.1[n].filter(|&p| taken[n] == q.0[n] && pools[p] > 0) {
                pools[p] -= 1;
                taken[n] += 1;
                owner[s] = Some(n);
            }
        }
        owner
    }

    type Q = (Vec<u64>, Vec<Option<usize>>, Vec<u64>);

    fn run(slots: &[u64], nodes: &[u64], q: &Q) -> Vec<Option<usize>> {
        assign(slots, nodes, &q.0, &q.1, &q.2)
    }

    #[test]
    fn matches_the_sorted_greedy() {
        for case in 0..80u64 {
            let n = 1 + (case % 23) as usize;
            let r = (case * 7 % 97) as usize;
            let nodes: Vec<u64> = (0..n as u64).map(|i| i * 0x9e37 + case).collect();
            let slots: Vec<u64> = (0..r as u64).map(|i| i * 0x51 + case * 3).collect();
            let q: Q = if case % 2 == 0 {
                // Fixed quotas.
                let base = (0..n).map(|i| (r / n + usize::from(i < r % n)) as u64);
                (base.collect(), vec![None; n], vec![])
            } else {
                // Extras pooled over every node (one pool) or split in two pools.
                let split = if case % 4 == 1 { 1 } else { 2 };
                let pool_of = (0..n).map(|i| Some(i % split)).collect();
                let extra = (r % n) as u64;
                let pools = if split == 1 {
                    vec![extra]
                } else {
                    vec![extra - extra / 2, extra / 2]
                };
                (vec![(r / n) as u64; n], pool_of, pools)
            };
            assert_eq!(
                run(&slots, &nodes, &q),
                reference(&slots, &nodes, &q),
                "case {case}"
            );
        }
    }

    #[test]
    fn short_quotas_leave_slots_unowned() {
        let owner = run(
            &[1, 2, 3],
            &[10, 20],
            &(vec![1, 1], vec![None, None], vec![]),
        );
        assert_eq!(owner.iter().filter(|o| o.is_none()).count(), 1);
        assert_eq!(run(&[], &[], &(vec![], vec![], vec![])), Vec::new());
    }
}
