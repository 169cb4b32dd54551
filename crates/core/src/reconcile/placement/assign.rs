//! Matching slots to nodes under fixed quotas: a greedy over all (slot, node) pairs in order of
//! rendezvous score, best first, taking a pair when the slot is still free and the node still has
//! quota left.
//!
//! Why this greedy: its result depends only on the scores of the pairs, never on input order, and
//! a pair's score depends only on that slot and that node. When a node joins, the pairs between
//! the others keep their scores and their relative order; the newcomer takes the slots it ranks
//! highest (as plain rendezvous hashing would) and only quota changes ripple further, along chains
//! of displaced slots (about 0.8 extra moves per unavoidable one, measured). Processing slots in
//! slot order instead would let one change at slot 1 re-route every later slot.
//!
//! Evaluating every pair up front would cost R × N memory; instead each slot keeps its best few
//! nodes and a heap yields the globally best pending pair. A pair popped for a full node is
//! skipped; a node that is full stays full, so skipping it never changes the outcome.

use std::{cmp::Reverse, collections::BinaryHeap};

use super::hash::score;

/// How many candidate nodes a slot remembers before it has to rescan.
const TOP: usize = 8;

/// A candidate: (score, node position). Higher score first, then lower position.
type Cand = (u64, u32);

fn better(a: Cand, b: Cand) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
}

/// Writes the best (up to) `TOP` nodes with quota left for `slot` into `out`, best first;
/// returns how many.
fn best_nodes(slot: u64, nodes: &[u64], left: &[u64], out: &mut [Cand]) -> usize {
    let mut n = 0;
    for (pos, &key) in nodes.iter().enumerate() {
        if left[pos] == 0 {
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

/// For each slot key in `slots`, the position in `nodes` (node keys) of its owner, given how
/// many slots each node takes (`quotas`, same positions as `nodes`). The quotas are expected to
/// add up to `slots.len()`; a slot left without a node (only if they add up to less) is `None`.
pub(super) fn assign(slots: &[u64], nodes: &[u64], quotas: &[u64]) -> Vec<Option<usize>> {
    let mut left = quotas.to_vec();
    let mut owner = vec![None; slots.len()];
    let mut cands: Vec<Cand> = vec![(0, 0); slots.len() * TOP];
    let mut len = vec![0usize; slots.len()];
    let mut cursor = vec![0usize; slots.len()];
    let mut heap = BinaryHeap::with_capacity(slots.len());
    for (s, &key) in slots.iter().enumerate() {
        len[s] = best_nodes(key, nodes, &left, &mut cands[s * TOP..(s + 1) * TOP]);
        if len[s] > 0 {
            let (sc, pos) = cands[s * TOP];
            heap.push((sc, Reverse(s), Reverse(pos)));
        }
    }
    while let Some((_, Reverse(s), Reverse(pos))) = heap.pop() {
        let node = pos as usize;
        if left[node] > 0 {
            left[node] -= 1;
            owner[s] = Some(node);
            continue;
        }
        cursor[s] += 1;
        if cursor[s] >= len[s] {
            // All remembered candidates filled up: rescan the nodes that still have room.
            len[s] = best_nodes(slots[s], nodes, &left, &mut cands[s * TOP..(s + 1) * TOP]);
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
    fn reference(slots: &[u64], nodes: &[u64], quotas: &[u64]) -> Vec<Option<usize>> {
        let mut pairs: Vec<(u64, Reverse<usize>, Reverse<usize>)> = Vec::new();
        for (s, &sk) in slots.iter().enumerate() {
            for (n, &nk) in nodes.iter().enumerate() {
                pairs.push((score(sk, nk), Reverse(s), Reverse(n)));
            }
        }
        pairs.sort_unstable_by(|a, b| b.cmp(a));
        let mut left = quotas.to_vec();
        let mut owner = vec![None; slots.len()];
        for (_, Reverse(s), Reverse(n)) in pairs {
            if owner[s].is_none() && left[n] > 0 {
                owner[s] = Some(n);
                left[n] -= 1;
            }
        }
        owner
    }

    #[test]
    fn matches_the_sorted_greedy() {
        for case in 0..80u64 {
            let n = 1 + (case % 23) as usize;
            let r = (case * 7 % 97) as usize;
            let nodes: Vec<u64> = (0..n as u64).map(|i| i * 0x9e37 + case).collect();
            let slots: Vec<u64> = (0..r as u64).map(|i| i * 0x51 + case * 3).collect();
            // Balanced quotas, or everything on a few nodes (many rescans).
            let quotas: Vec<u64> = if case % 2 == 0 {
                (0..n)
                    .map(|i| (r / n + usize::from(i < r % n)) as u64)
                    .collect()
            } else {
                (0..n)
                    .map(|i| if i % 5 == 0 { r as u64 } else { 0 })
                    .collect()
            };
            let expected = reference(&slots, &nodes, &quotas);
            assert_eq!(assign(&slots, &nodes, &quotas), expected, "case {case}");
        }
    }

    #[test]
    fn short_quotas_leave_slots_unowned() {
        let owner = assign(&[1, 2, 3], &[10, 20], &[1, 1]);
        assert_eq!(owner.iter().filter(|o| o.is_none()).count(), 1);
        assert_eq!(assign(&[], &[], &[]), Vec::new());
    }
}
