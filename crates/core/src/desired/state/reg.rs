//! Register primitives: how two stamped values merge, and how an operation writes one.

use std::{
    cmp::Ordering,
    collections::{btree_map::Entry, BTreeMap},
};

use crdts::LWWReg;
use serde::Serialize;

use super::MergeConflict;
use crate::{desired::hlc::Hlc, wire};

/// A last-writer-wins register stamped with an HLC.
pub(super) type Reg<V> = LWWReg<V, Hlc>;

/// Keyed registers (env vars, labels); `None` records a removal, so it can win over an older set.
pub(super) type RegMap = BTreeMap<String, Reg<Option<String>>>;

/// Whether `new` replaces `old`. Equal stamps with different values only arise from a misused
/// clock (a stamp issued twice); comparing encodings then still gives every replica the same
/// answer, where `LWWReg::merge` would keep whichever value arrived first.
fn beats<V: PartialEq + Serialize>(new: &Reg<V>, old: &Reg<V>) -> bool {
    match new.marker.cmp(&old.marker) {
        Ordering::Greater => true,
        Ordering::Less => false,
        Ordering::Equal => {
            new.val != old.val
                && wire::encode(&new.val).unwrap_or_default()
                    > wire::encode(&old.val).unwrap_or_default()
        }
    }
}

pub(super) fn merge_reg<V: PartialEq + Serialize>(
    mine: &mut Option<Reg<V>>,
    theirs: Option<Reg<V>>,
) -> bool {
    match (mine.as_mut(), theirs) {
        (_, None) => false,
        (None, Some(t)) => {
            *mine = Some(t);
            true
        }
        (Some(m), Some(t)) if beats(&t, m) => {
            *m = t;
            true
        }
        _ => false,
    }
}

/// Joins keyed registers (env vars and labels, and the networks' keyed claims).
pub(super) fn merge_map<K: Ord, V: PartialEq + Serialize>(
    mine: &mut BTreeMap<K, Reg<V>>,
    theirs: BTreeMap<K, Reg<V>>,
) -> bool {
    let mut changed = false;
    for (key, t) in theirs {
        match mine.entry(key) {
            Entry::Vacant(slot) => {
                slot.insert(t);
                changed = true;
            }
            Entry::Occupied(mut slot) => {
                if beats(&t, slot.get()) {
                    slot.insert(t);
                    changed = true;
                }
            }
        }
    }
    changed
}

pub(super) fn check_reg<V: PartialEq>(
    what: &str,
    mine: Option<&Reg<V>>,
    theirs: Option<&Reg<V>>,
) -> Result<(), MergeConflict> {
    match (mine, theirs) {
        (Some(m), Some(t)) if m.validate_update(&t.val, &t.marker).is_err() => Err(MergeConflict {
            register: what.to_string(),
            marker: m.marker,
        }),
        _ => Ok(()),
    }
}

pub(super) fn check_map<K: Ord + std::fmt::Display, V: PartialEq>(
    what: &str,
    mine: &BTreeMap<K, Reg<V>>,
    theirs: &BTreeMap<K, Reg<V>>,
) -> Result<(), MergeConflict> {
    for (key, t) in theirs {
        check_reg(&format!("{what}.{key}"), mine.get(key), Some(t))?;
    }
    Ok(())
}

/// The stamp a write carries: the operation's own, unless the register already holds a stamp at
/// least as large (a far-future stamp the clock refused to observe, or a reused stamp). The write
/// then takes the successor of what it overwrites, so an operation always takes effect on the
/// node that ran it.
fn stamp<V>(current: Option<&Reg<V>>, at: Hlc) -> Hlc {
    match current {
        Some(r) if r.marker >= at => r.marker.successor(at.node),
        _ => at,
    }
}

pub(super) fn marker<V>(r: &Option<Reg<V>>) -> Option<Hlc> {
    r.as_ref().map(|r| r.marker)
}

pub(super) fn map_marker<K, V>(m: &BTreeMap<K, Reg<V>>) -> Option<Hlc> {
    m.values().map(|r| r.marker).max()
}

pub(super) fn value<V: Clone + Default>(r: &Option<Reg<V>>) -> V {
    r.as_ref().map(|r| r.val.clone()).unwrap_or_default()
}

pub(super) fn map_value(m: &RegMap) -> BTreeMap<String, String> {
    m.iter()
        .filter_map(|(k, r)| r.val.clone().map(|v| (k.clone(), v)))
        .collect()
}

/// Writes `val` into `delta` if it differs from `current` (a never-written register reads as the
/// default), or unconditionally with `always`.
pub(super) fn put<V: PartialEq + Default>(
    delta: &mut Option<Reg<V>>,
    current: &Option<Reg<V>>,
    val: V,
    always: bool,
    at: Hlc,
) {
    let same = match current {
        Some(r) => r.val == val,
        None => val == V::default(),
    };
    if always || !same {
        let marker = stamp(current.as_ref(), at);
        *delta = Some(Reg { val, marker });
    }
}

/// Writes into `delta` the registers that turn `current` into `want`: keys set or changed, and
/// `None` for keys `current` has that `want` lacks. With `always`, every key of `want` is written.
pub(super) fn put_map(
    delta: &mut RegMap,
    current: &RegMap,
    want: &BTreeMap<String, String>,
    always: bool,
    at: Hlc,
) {
    for (key, val) in want {
        let cur = current.get(key);
        if always || cur.and_then(|r| r.val.as_ref()) != Some(val) {
            let marker = stamp(cur, at);
            delta.insert(
                key.clone(),
                Reg {
                    val: Some(val.clone()),
                    marker,
                },
            );
        }
    }
    for (key, cur) in current {
        if cur.val.is_some() && !want.contains_key(key) {
            let marker = stamp(Some(cur), at);
            delta.insert(key.clone(), Reg { val: None, marker });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::NodeId;

    fn at(wall_ms: u64, node: u128) -> Hlc {
        Hlc {
            wall_ms,
            counter: 0,
            node: NodeId(node),
        }
    }

    #[test]
    fn later_stamp_wins_in_either_order() {
        let old = Some(Reg {
            val: 1u64,
            marker: at(1, 1),
        });
        let new = Some(Reg {
            val: 2u64,
            marker: at(2, 1),
        });
        let mut a = old.clone();
        assert!(merge_reg(&mut a, new.clone()));
        let mut b = new.clone();
        assert!(!merge_reg(&mut b, old));
        assert_eq!(a, b);
    }

    #[test]
    fn equal_stamps_resolve_the_same_everywhere() {
        let x = Some(Reg {
            val: 3u64,
            marker: at(1, 1),
        });
        let y = Some(Reg {
            val: 5u64,
            marker: at(1, 1),
        });
        let mut a = x.clone();
        merge_reg(&mut a, y.clone());
        let mut b = y;
        merge_reg(&mut b, x.clone());
        assert_eq!(a, b);
        assert!(check_reg("r", x.as_ref(), b.as_ref()).is_err());
    }

    #[test]
    fn a_write_over_a_future_stamp_still_wins() {
        let future = Some(Reg {
            val: 1u64,
            marker: at(1_000, 9),
        });
        let mut delta = None;
        put(&mut delta, &future, 2, false, at(5, 1));
        let written = delta.clone().unwrap();
        assert!(written.marker > at(1_000, 9));
        assert_eq!(written.marker.node, NodeId(1));
        let mut merged = future;
        assert!(merge_reg(&mut merged, delta));
        assert_eq!(merged.unwrap().val, 2);
    }

    #[test]
    fn put_map_writes_changes_and_removals_only() {
        let mut cur = RegMap::new();
        let mut delta = RegMap::new();
        let want: BTreeMap<_, _> = [("A", "1"), ("B", "2")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        put_map(&mut delta, &cur, &want, false, at(1, 1));
        assert_eq!(delta.len(), 2);
        merge_map(&mut cur, delta);
        let want: BTreeMap<_, _> = [("A".to_string(), "1".to_string())].into();
        let mut delta = RegMap::new();
        put_map(&mut delta, &cur, &want, false, at(2, 1));
        assert_eq!(delta.keys().collect::<Vec<_>>(), ["B"]);
        assert_eq!(delta["B"].val, None);
    }
}
