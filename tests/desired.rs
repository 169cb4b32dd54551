//! Property tests of the desired-state CRDT: random operations on 2 to 5 replicas, deltas
//! delivered in random order, duplicated or never, full-state merges in between; then convergence,
//! the merge laws, and that merging old states brings nothing back.

use proptest::prelude::*;
use shoal_core::{
    desired::{
        hlc::{Clock, Hlc},
        spec::{Availability, Mode, ServiceDef, ServiceSpec},
        state::{DesiredState, ServiceUpdate},
    },
    identity::NodeId,
};

const STACKS: [&str; 2] = ["web", "db"];
const SERVICES: [&str; 3] = ["a", "b", "c"];

/// One step of a run. Indices are taken modulo the number of replicas / deltas.
#[derive(Clone, Debug)]
enum Step {
    Deploy {
        at: usize,
        stack: usize,
        /// (service, replicas, image, env value of `K`, global)
        services: Vec<(usize, u64, u8, Option<u8>, bool)>,
    },
    RemoveStack {
        at: usize,
        stack: usize,
    },
    RemoveService {
        at: usize,
        stack: usize,
        svc: usize,
    },
    Scale {
        at: usize,
        stack: usize,
        svc: usize,
        replicas: u64,
    },
    Update {
        at: usize,
        stack: usize,
        svc: usize,
        image: Option<u8>,
        env: Option<(u8, Option<u8>)>,
        label: Option<u8>,
        force: bool,
    },
    Node {
        at: usize,
        node: u8,
        availability: Option<u8>,
        label: Option<(u8, Option<u8>)>,
    },
    /// Moves a replica's wall clock, backwards too.
    Time {
        at: usize,
        delta_ms: i64,
    },
    Deliver {
        delta: usize,
        to: usize,
    },
    FullMerge {
        from: usize,
        to: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let idx = || 0usize..8;
    let small = || 0u8..3;
    let svc_def = (
        0usize..3,
        0u64..6,
        small(),
        proptest::option::of(small()),
        proptest::bool::weighted(0.1),
    );
    let opt = || proptest::option::of(small());
    let edit = move || proptest::option::of((small(), opt()));
    let target = || (idx(), 0usize..2, 0usize..3);
    prop_oneof![
        3 => (idx(), 0usize..2, proptest::collection::vec(svc_def, 1..4))
            .prop_map(|(at, stack, services)| Step::Deploy { at, stack, services }),
        1 => (idx(), 0usize..2).prop_map(|(at, stack)| Step::RemoveStack { at, stack }),
        1 => target().prop_map(|(at, stack, svc)| Step::RemoveService { at, stack, svc }),
        2 => (target(), 0u64..6).prop_map(|((at, stack, svc), replicas)| {
            Step::Scale { at, stack, svc, replicas }
        }),
        2 => (target(), opt(), edit(), opt(), proptest::bool::weighted(0.2))
            .prop_map(|((at, stack, svc), image, env, label, force)| {
                Step::Update { at, stack, svc, image, env, label, force }
            }),
        1 => (idx(), small(), opt(), edit()).prop_map(|(at, node, availability, label)| {
            Step::Node { at, node, availability, label }
        }),
        2 => (idx(), -2_000i64..3_000).prop_map(|(at, delta_ms)| Step::Time { at, delta_ms }),
        5 => (0usize..64, idx()).prop_map(|(delta, to)| Step::Deliver { delta, to }),
        1 => (idx(), idx()).prop_map(|(from, to)| Step::FullMerge { from, to }),
    ]
}

struct Replica {
    state: DesiredState,
    clock: Clock,
    now_ms: u64,
}

impl Replica {
    fn merge(&mut self, other: DesiredState) {
        if let Some(max) = other.max_hlc() {
            self.clock.observe(&max, self.now_ms);
        }
        self.state.merge_delta(other);
    }
}

/// What a run leaves behind: the replicas, every delta produced, and every state seen.
struct Run {
    replicas: Vec<Replica>,
    deltas: Vec<DesiredState>,
    snapshots: Vec<DesiredState>,
}

fn name(stack: usize, svc: usize) -> String {
    format!("{}_{}", STACKS[stack], SERVICES[svc])
}

fn run(node_ids: &[u128], skews: &[u64], steps: &[Step]) -> Run {
    let mut replicas: Vec<Replica> = node_ids
        .iter()
        .zip(skews)
        .map(|(id, skew)| Replica {
            state: DesiredState::default(),
            clock: Clock::new(NodeId(*id)),
            now_ms: 1_000_000 + skew,
        })
        .collect();
    let n = replicas.len();
    let mut deltas: Vec<DesiredState> = Vec::new();
    let mut snapshots = Vec::new();
    for step in steps {
        let (at, result) = match step.clone() {
            Step::Deliver { delta, to } => {
                if !deltas.is_empty() {
                    let d = deltas[delta % deltas.len()].clone();
                    replicas[to % n].merge(d);
                }
                continue;
            }
            Step::FullMerge { from, to } => {
                let s = replicas[from % n].state.clone();
                replicas[to % n].merge(s);
                continue;
            }
            Step::Time { at, delta_ms } => {
                let r = &mut replicas[at % n];
                r.now_ms = r.now_ms.saturating_add_signed(delta_ms);
                continue;
            }
            Step::Deploy {
                at,
                stack,
                services,
            } => {
                let defs = services
                    .into_iter()
                    .map(|(svc, replicas, image, env, global)| ServiceDef {
                        name: name(stack, svc),
                        stack: STACKS[stack].into(),
                        replicas,
                        spec: ServiceSpec {
                            image: format!("img:{image}"),
                            env: env
                                .map(|v| ("K".to_string(), v.to_string()))
                                .into_iter()
                                .collect(),
                            mode: if global {
                                Mode::Global
                            } else {
                                Mode::Replicated
                            },
                            ..ServiceSpec::default()
                        },
                    })
                    .collect();
                (
                    at,
                    op(&mut replicas[at % n], |s, h| {
                        s.deploy_stack(STACKS[stack], defs, h)
                    }),
                )
            }
            Step::RemoveStack { at, stack } => (
                at,
                op(&mut replicas[at % n], |s, h| {
                    s.remove_stack(STACKS[stack], h)
                }),
            ),
            Step::RemoveService { at, stack, svc } => (
                at,
                op(&mut replicas[at % n], |s, h| {
                    s.remove_service(&name(stack, svc), h)
                }),
            ),
            Step::Scale {
                at,
                stack,
                svc,
                replicas: count,
            } => (
                at,
                op(&mut replicas[at % n], |s, h| {
                    s.scale(&name(stack, svc), count, h)
                }),
            ),
            Step::Update {
                at,
                stack,
                svc,
                image,
                env,
                label,
                force,
            } => {
                let mut u = ServiceUpdate {
                    image: image.map(|i| format!("img:{i}")),
                    force,
                    ..Default::default()
                };
                match env {
                    Some((k, Some(v))) => u.env_add.push((format!("E{k}"), v.to_string())),
                    Some((k, None)) => u.env_rm.push(format!("E{k}")),
                    None => {}
                }
                if let Some(l) = label {
                    u.label_add.push(("l".into(), l.to_string()));
                }
                (
                    at,
                    op(&mut replicas[at % n], |s, h| {
                        s.update_service(&name(stack, svc), u, h)
                    }),
                )
            }
            Step::Node {
                at,
                node,
                availability,
                label,
            } => {
                let availability = availability.map(|a| {
                    [
                        Availability::Active,
                        Availability::Pause,
                        Availability::Drain,
                    ][a as usize]
                });
                let (add, rm) = match label {
                    Some((k, Some(v))) => (vec![(format!("k{k}"), v.to_string())], vec![]),
                    Some((k, None)) => (vec![], vec![format!("k{k}")]),
                    None => (vec![], vec![]),
                };
                let id = NodeId(node as u128 + 100);
                (
                    at,
                    op(&mut replicas[at % n], |s, h| {
                        s.update_node(id, availability, add, rm, h)
                    }),
                )
            }
        };
        if let Some(delta) = result {
            deltas.push(delta);
        }
        snapshots.push(replicas[at % n].state.clone());
    }
    Run {
        replicas,
        deltas,
        snapshots,
    }
}

/// Runs one operation as a node does: tick, apply; on error the state must be untouched.
fn op(
    r: &mut Replica,
    f: impl FnOnce(
        &mut DesiredState,
        Hlc,
    ) -> Result<DesiredState, shoal_core::desired::state::DesiredError>,
) -> Option<DesiredState> {
    let before = r.state.clone();
    let hlc = r.clock.tick(r.now_ms);
    match f(&mut r.state, hlc) {
        Ok(delta) => {
            let mut replay = before;
            replay.merge_delta(delta.clone());
            assert_eq!(
                replay, r.state,
                "the delta is exactly what the operation changed"
            );
            Some(delta)
        }
        Err(_) => {
            assert_eq!(before, r.state, "a refused operation changes nothing");
            None
        }
    }
}

fn joined(a: &DesiredState, b: &DesiredState) -> DesiredState {
    let mut j = a.clone();
    j.merge_delta(b.clone());
    j
}

fn setup() -> impl Strategy<Value = (Vec<u128>, Vec<u64>, Vec<Step>)> {
    (2usize..=5).prop_flat_map(|n| {
        (
            Just((1..=n as u128).collect::<Vec<_>>()),
            proptest::collection::vec(0u64..5_000, n),
            proptest::collection::vec(step(), 1..60),
        )
    })
}

proptest! {
    /// After a final anti-entropy round every replica holds the same state and digest, equal to
    /// the join of every delta ever produced (so no write was lost or invented), and merging any
    /// state seen along the way changes nothing: nothing removed comes back.
    #[test]
    fn replicas_converge((ids, skews, steps) in setup()) {
        let Run { mut replicas, deltas, snapshots } = run(&ids, &skews, &steps);
        let n = replicas.len();
        for i in 1..n {
            let s = replicas[i].state.clone();
            replicas[0].merge(s);
        }
        for i in 1..n {
            let s = replicas[0].state.clone();
            replicas[i].merge(s);
        }
        let mut expected = DesiredState::default();
        for d in deltas.into_iter().rev() {
            expected.merge_delta(d);
        }
        for r in &replicas {
            prop_assert_eq!(&r.state, &expected);
            prop_assert_eq!(r.state.digest(), expected.digest());
        }
        let live: Vec<_> = expected.services().into_iter().map(|s| s.name).collect();
        for old in snapshots {
            let mut s = expected.clone();
            prop_assert!(!s.merge_delta(old));
            let after: Vec<_> = s.services().into_iter().map(|s| s.name).collect();
            prop_assert_eq!(&after, &live);
        }
        let stacked: usize = expected.stacks().iter().map(|s| s.services).sum();
        prop_assert_eq!(stacked, live.len());
    }

    /// Merge is commutative, associative and idempotent, also when replicas share a node id and
    /// so can stamp the same register twice with different values.
    #[test]
    fn merge_laws(
        (ids, skews, steps) in setup(),
        shared in proptest::bool::weighted(0.3),
    ) {
        // Shared ids and clocks make equal stamps on different values likely.
        let (ids, skews): (Vec<u128>, Vec<u64>) = if shared {
            (ids.iter().map(|i| i % 2 + 1).collect(), vec![0; skews.len()])
        } else {
            (ids, skews)
        };
        let Run { replicas, .. } = run(&ids, &skews, &steps);
        let s: Vec<&DesiredState> = replicas.iter().map(|r| &r.state).collect();
        let (a, b, c) = (s[0], s[1], s[s.len() - 1]);
        prop_assert_eq!(joined(a, b), joined(b, a));
        prop_assert_eq!(joined(a, b).digest(), joined(b, a).digest());
        prop_assert_eq!(joined(&joined(a, b), c), joined(a, &joined(b, c)));
        prop_assert_eq!(&joined(a, a), a);
        let ab = joined(a, b);
        prop_assert_eq!(joined(&ab, b), ab.clone());
    }

    /// A removed stack stays removed on a replica however many older states of any replica it
    /// merges afterwards, delayed deltas included.
    #[test]
    fn tombstones_hold((ids, skews, steps) in setup()) {
        let Run { replicas, snapshots, deltas } = run(&ids, &skews, &steps);
        let mut a = replicas.into_iter().next().unwrap();
        // `a` learns everything first: a remove only covers the services its node knows of.
        for old in snapshots.iter().chain(&deltas) {
            a.merge(old.clone());
        }
        let hlc = a.clock.tick(a.now_ms);
        let mut removed = Vec::new();
        for stack in STACKS {
            if a.state.remove_stack(stack, hlc).is_ok() {
                removed.push(stack);
            }
        }
        for old in snapshots.into_iter().chain(deltas).rev() {
            a.state.merge_delta(old);
            for stack in &removed {
                prop_assert!(a.state.stacks().iter().all(|s| s.name != *stack));
            }
        }
    }
}
