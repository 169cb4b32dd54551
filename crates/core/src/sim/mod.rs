//! A deterministic discrete-event simulator: many nodes' cores in one thread, a virtual clock, and
//! a network that can lose, delay and partition datagrams. A seed replays a run exactly.
//!
//! It drives the same [`Membership`] state machine the agent runs; only the IO is simulated, and it
//! is simulated at the datagram boundary (above any real transport), as design §8 asks.

use std::{
    cmp::Reverse,
    collections::{BTreeSet, BinaryHeap, HashMap},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use rand::{rngs::StdRng, RngExt, SeedableRng};

mod replication;
mod workload;

use crate::{
    desired::state::DesiredState,
    identity::{NodeId, NodeIdentity, NodeMeta},
    join::JoinPlan,
    membership::{Effects, MemberEvent, Membership, NodeStatus, NodeView, Settings, Timer},
    observed::NodeReport,
    replica::Replica,
};

/// Knobs of one simulated run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seed for everything random: node ids, foca's choices, latency and loss.
    pub seed: u64,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// One-way latency is uniform in this range (ms).
    pub latency_ms: (u64, u64),
    /// Failure-detector settings of every node.
    pub settings: Settings,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            loss: 0.0,
            latency_ms: (1, 5),
            settings: Settings::default(),
        }
    }
}

enum Event {
    Deliver {
        to: usize,
        data: Vec<u8>,
    },
    Timer {
        node: usize,
        epoch: u64,
        timer: Timer,
    },
    /// Anti-entropy round of `node` (the agent does it over QUIC; here it is a direct exchange).
    Sync {
        node: usize,
        epoch: u64,
        repeat: bool,
    },
    /// Next step of `node`'s join retry schedule.
    Join {
        node: usize,
        epoch: u64,
    },
    /// A desired-state push over the simulated QUIC link.
    Push {
        to: usize,
        state: Box<DesiredState>,
    },
    /// A reconciliation round of `node`.
    Reconcile {
        node: usize,
        epoch: u64,
        repeat: bool,
    },
    /// A fake container passes its healthcheck.
    Healthy {
        node: usize,
        container: String,
    },
    /// A node's report pushed to a peer.
    Report {
        to: usize,
        report: Box<NodeReport>,
    },
}

struct SimNode {
    addr: SocketAddr,
    id: NodeId,
    generation: u64,
    /// Bumped on every crash so that timers of a dead process never fire in its successor.
    epoch: u64,
    /// Peers remembered across restarts, as the agent keeps them in its data dir.
    known: Vec<SocketAddr>,
    membership: Option<Membership<StdRng>>,
    join: Option<JoinPlan>,
    /// Desired state, kept across crashes as the data dir keeps it.
    replica: Replica,
    /// Containers, reconciler and observed state.
    workload: workload::Workload,
}

/// Counters a test or benchmark can report.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Datagrams handed to the network.
    pub packets_sent: u64,
    /// Bytes handed to the network.
    pub bytes_sent: u64,
    /// Datagrams dropped by loss or partition.
    pub packets_dropped: u64,
    /// Inputs a node rejected (malformed, stale); expected to stay small.
    pub rejected: u64,
    /// Anti-entropy rounds that found two nodes' desired states different.
    pub desired_repairs: u64,
    /// Containers stopped and removed by reconcilers.
    pub containers_removed: u64,
}

/// The simulated cluster.
pub struct Sim {
    config: SimConfig,
    now_ms: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: HashMap<usize, Event>,
    next_event: usize,
    nodes: Vec<SimNode>,
    by_addr: HashMap<SocketAddr, usize>,
    /// Partition group of each node; datagrams cross only within a group.
    groups: Vec<u32>,
    rng: StdRng,
    /// Source of fake container ids.
    next_container: u64,
    /// Running totals.
    pub report: Report,
}

impl Sim {
    /// A cluster of `n` nodes, none started yet.
    pub fn new(n: usize, config: SimConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let mut nodes = Vec::with_capacity(n);
        let mut by_addr = HashMap::with_capacity(n);
        for i in 0..n {
            let addr = sim_addr(i);
            by_addr.insert(addr, i);
            let id = NodeId(rng.random::<u128>() | 1);
            nodes.push(SimNode {
                addr,
                id,
                replica: Replica::new(id, DesiredState::default(), 0),
                workload: workload::Workload::default(),
                generation: 0,
                epoch: 0,
                known: Vec::new(),
                membership: None,
                join: None,
            });
        }
        Sim {
            config,
            now_ms: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            next_event: 0,
            nodes,
            by_addr,
            groups: vec![0; n],
            rng,
            next_container: 0,
            report: Report::default(),
        }
    }

    /// Virtual time now, in ms.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Number of node slots.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the simulation has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The address of node `i`.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].addr
    }

    /// Whether node `i` is running.
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].membership.is_some()
    }

    /// Starts node `i` (a new process, next generation) and has it join through `seeds`, plus any
    /// peers it remembers from a previous life.
    pub fn start(&mut self, i: usize, seeds: &[usize]) {
        assert!(self.nodes[i].membership.is_none(), "node {i} already runs");
        let node = &mut self.nodes[i];
        node.generation += 1;
        node.epoch += 1;
        let identity = NodeIdentity {
            addr: node.addr,
            id: node.id,
            generation: node.generation,
            meta: Arc::new(NodeMeta {
                name: format!("n{i:04}"),
                labels: Default::default(),
                os: "linux".into(),
                arch: "x86_64".into(),
                agent_version: env!("CARGO_PKG_VERSION").into(),
                quic_addr: node.addr,
                cert_sha256: [0; 32],
                runs_containers: true,
            }),
        };
        let rng = StdRng::seed_from_u64(self.rng.random());
        let mut membership = Membership::new(identity, self.config.settings.clone(), rng);
        let mut targets: Vec<SocketAddr> = seeds.iter().map(|&s| self.nodes[s].addr).collect();
        targets.extend(self.nodes[i].known.iter().copied());
        targets.sort();
        targets.dedup();
        targets.retain(|&t| t != self.nodes[i].addr);
        self.nodes[i].join = Some(JoinPlan::new(targets, false, Duration::from_secs(10)));
        let effects = membership.take_effects();
        self.nodes[i].membership = Some(membership);
        self.apply(i, effects);
        let epoch = self.nodes[i].epoch;
        self.schedule(self.now_ms, Event::Join { node: i, epoch });
        self.nodes[i].workload.seq = 0;
        let first = self.rng.random_range(0..workload::RECONCILE_PERIOD_MS);
        self.schedule(
            self.now_ms + first,
            Event::Reconcile {
                node: i,
                epoch,
                repeat: true,
            },
        );
        let first = self
            .rng
            .random_range(0..self.config.settings.sync_period.as_millis() as u64);
        self.schedule(
            self.now_ms + first,
            Event::Sync {
                node: i,
                epoch,
                repeat: true,
            },
        );
    }

    /// Kills node `i` without a goodbye, as a power cut would: the host goes down with its
    /// containers, which come back exited, as Docker keeps them.
    pub fn crash(&mut self, i: usize) {
        self.crash_agent(i);
        let now = self.now_ms;
        let w = &mut self.nodes[i].workload;
        for c in &mut w.containers {
            if !matches!(c.status, crate::runtime::ContainerStatus::Exited { .. }) {
                c.status = crate::runtime::ContainerStatus::Exited {
                    code: 137,
                    finished_ms: now,
                    error: Some("node crashed".into()),
                };
                c.health = crate::observed::Health::None;
            }
        }
    }

    /// Kills node `i`'s agent alone, as `kill -9` would: its containers run on, and the agent
    /// forgets everything but its data dir.
    pub fn crash_agent(&mut self, i: usize) {
        if let Some(m) = self.nodes[i].membership.take() {
            self.nodes[i].known = m.known_addrs();
        }
        let w = &mut self.nodes[i].workload;
        w.reconciler = Default::default();
        w.last_published = None;
    }

    /// Stops node `i` gracefully: it tells its peers it leaves.
    pub fn stop(&mut self, i: usize) {
        if let Some(m) = self.nodes[i].membership.as_mut() {
            if m.leave(self.now_ms).is_err() {
                self.report.rejected += 1;
            }
            let effects = m.take_effects();
            self.apply(i, effects);
        }
        self.crash(i);
    }

    /// Splits the cluster: nodes in different groups cannot exchange datagrams. Nodes not listed
    /// stay in group 0.
    pub fn partition(&mut self, groups: &[&[usize]]) {
        self.groups.iter_mut().for_each(|g| *g = 0);
        for (g, members) in groups.iter().enumerate() {
            for &i in members.iter() {
                self.groups[i] = g as u32 + 1;
            }
        }
    }

    /// Ends every partition.
    pub fn heal(&mut self) {
        self.groups.iter_mut().for_each(|g| *g = 0);
    }

    /// Advances virtual time by `ms`, processing every event due.
    pub fn run_for(&mut self, ms: u64) {
        let until = self.now_ms + ms;
        while let Some(&Reverse((at, _, _))) = self.queue.peek() {
            if at > until {
                break;
            }
            self.step();
        }
        self.now_ms = until;
    }

    /// Runs until `done` holds (checked every `check_every_ms`) or `max_ms` pass; returns the
    /// virtual time it took.
    pub fn run_until(
        &mut self,
        max_ms: u64,
        check_every_ms: u64,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Option<u64> {
        let start = self.now_ms;
        loop {
            if done(self) {
                return Some(self.now_ms - start);
            }
            if self.now_ms - start >= max_ms {
                return None;
            }
            self.run_for(check_every_ms);
        }
    }

    /// Node `i`'s view of the cluster (empty if it is not running).
    pub fn view(&self, i: usize) -> Vec<NodeView> {
        self.nodes[i]
            .membership
            .as_ref()
            .map(|m| m.nodes())
            .unwrap_or_default()
    }

    /// Whether every running node sees exactly the running nodes as ready and every other node
    /// it knows of as `other` (down or left).
    pub fn converged(&self, other: NodeStatus) -> bool {
        let running: BTreeSet<NodeId> = self
            .nodes
            .iter()
            .filter(|n| n.membership.is_some())
            .map(|n| n.id)
            .collect();
        self.nodes
            .iter()
            .filter_map(|n| n.membership.as_ref())
            .all(|m| {
                let views = m.nodes();
                let ready: BTreeSet<NodeId> = views
                    .iter()
                    .filter(|v| v.status == NodeStatus::Ready)
                    .map(|v| v.identity.id)
                    .collect();
                ready == running
                    && views
                        .iter()
                        .filter(|v| !running.contains(&v.identity.id))
                        .all(|v| v.status == other)
            })
    }

    /// Whether every running node sees node `target` with `status` (or does not know it at all,
    /// when `status` is down or left and it never met it).
    pub fn all_see(&self, target: usize, status: NodeStatus) -> bool {
        let id = self.nodes[target].id;
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| *i != target && n.membership.is_some())
            .all(|(_, n)| {
                n.membership
                    .as_ref()
                    .expect("filtered")
                    .nodes()
                    .iter()
                    .find(|v| v.identity.id == id)
                    .map(|v| v.status == status)
                    .unwrap_or(false)
            })
    }

    fn schedule(&mut self, at: u64, event: Event) {
        let key = self.next_event;
        self.next_event += 1;
        self.events.insert(key, event);
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, key)));
    }

    fn apply(&mut self, from: usize, effects: Effects) {
        let epoch = self.nodes[from].epoch;
        for payload in &effects.broadcasts {
            let now = self.now_ms;
            if self.nodes[from]
                .replica
                .receive_gossip(payload, now)
                .is_err()
            {
                self.report.rejected += 1;
            }
        }
        // Like the agent: a full exchange as soon as a node is connected.
        if effects.events.contains(&MemberEvent::Connected) {
            let node = from;
            self.schedule(
                self.now_ms,
                Event::Sync {
                    node,
                    epoch,
                    repeat: false,
                },
            );
        }
        for (after, timer) in effects.timers {
            let at = self.now_ms + after.as_millis() as u64;
            self.schedule(
                at,
                Event::Timer {
                    node: from,
                    epoch,
                    timer,
                },
            );
        }
        for (addr, data) in effects.packets {
            self.report.packets_sent += 1;
            self.report.bytes_sent += data.len() as u64;
            let Some(&to) = self.by_addr.get(&addr) else {
                self.report.packets_dropped += 1;
                continue;
            };
            let lost = self.config.loss > 0.0 && self.rng.random_bool(self.config.loss);
            if lost || self.groups[from] != self.groups[to] {
                self.report.packets_dropped += 1;
                continue;
            }
            let (lo, hi) = self.config.latency_ms;
            let at = self.now_ms + self.rng.random_range(lo..=hi);
            self.schedule(at, Event::Deliver { to, data });
        }
    }

    fn step(&mut self) {
        let Some(Reverse((at, _, key))) = self.queue.pop() else {
            return;
        };
        self.now_ms = at;
        let event = self.events.remove(&key).expect("scheduled event exists");
        let (node, result) = match event {
            Event::Deliver { to, data } => {
                let now = self.now_ms;
                // A datagram to a node that is not running is lost, as on a real network.
                let Some(m) = self.nodes[to].membership.as_mut() else {
                    return;
                };
                (to, m.handle_packet(&data, now))
            }
            Event::Timer { node, epoch, timer } => {
                let now = self.now_ms;
                if self.nodes[node].epoch != epoch {
                    return;
                }
                let Some(m) = self.nodes[node].membership.as_mut() else {
                    return;
                };
                (node, m.handle_timer(timer, now))
            }
            Event::Sync {
                node,
                epoch,
                repeat,
            } => {
                if self.nodes[node].epoch != epoch || self.nodes[node].membership.is_none() {
                    return;
                }
                if repeat {
                    let next = self.now_ms + self.config.settings.sync_period.as_millis() as u64;
                    self.schedule(
                        next,
                        Event::Sync {
                            node,
                            epoch,
                            repeat,
                        },
                    );
                }
                self.sync(node);
                return;
            }
            Event::Join { node, epoch } => {
                if self.nodes[node].epoch != epoch {
                    return;
                }
                self.join_step(node);
                return;
            }
            Event::Reconcile {
                node,
                epoch,
                repeat,
            } => {
                if self.nodes[node].epoch != epoch || self.nodes[node].membership.is_none() {
                    return;
                }
                if repeat {
                    let next = self.now_ms + workload::RECONCILE_PERIOD_MS;
                    self.schedule(
                        next,
                        Event::Reconcile {
                            node,
                            epoch,
                            repeat,
                        },
                    );
                }
                self.reconcile(node);
                return;
            }
            Event::Healthy { node, container } => {
                // Docker runs healthchecks whether or not the agent is up; a container of a
                // crashed host has exited and stays unhealthy.
                self.container_healthy(node, &container);
                // The engine's health event wakes the agent, which re-lists and reconciles.
                self.wake_for_engine_event(node);
                return;
            }
            Event::Report { to, report } => {
                self.receive_report(to, *report);
                return;
            }
            Event::Push { to, state } => {
                if self.nodes[to].membership.is_some() {
                    let now = self.now_ms;
                    self.nodes[to].replica.merge(*state, now);
                }
                return;
            }
        };
        if result.is_err() {
            self.report.rejected += 1;
        }
        let effects = self.nodes[node]
            .membership
            .as_mut()
            .expect("handled above")
            .take_effects();
        self.apply(node, effects);
    }
}

/// A synthetic, never-routed address for simulated node `i`.
fn sim_addr(i: usize) -> SocketAddr {
    // Loopback-shaped so that nothing could ever route it off the machine; no socket is opened.
    SocketAddr::from(([127, 1 + (i >> 16) as u8, (i >> 8) as u8, i as u8], 7946))
}
