//! A deterministic discrete-event simulator: many [`Node`]s in one thread, a virtual clock, a
//! network that loses, delays, duplicates, reorders and partitions, and a fake container engine
//! per host. A seed replays a run exactly.
//!
//! It drives the very `Node` the agent runs, through the same inputs and effects; only the IO is
//! simulated, at the message boundary (datagrams and peer calls), above any real transport, as
//! design §8 asks. What the shell does for a node (timers, calls with a timeout, the executor
//! that carries out container actions and re-lists, the data dir) is modelled here the way the
//! agent does it.

mod checks;
mod runtime;

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use rand::{rngs::StdRng, RngExt, SeedableRng};

pub use runtime::{now as poll_now, FakeImages, FakeRuntime};

use crate::{
    api::{Request, Response},
    desired::{
        hlc::Hlc,
        state::{DesiredError, DesiredState},
    },
    identity::{NodeId, NodeIdentity, NodeMeta},
    join::JoinPlan,
    membership::{NodeStatus, Settings},
    node::{CallId, ChangeOutcome, Effects, Input, Node, NodeConfig, RequestId},
    observed::Health,
    routing::routes::RoutingTable,
    runtime::{Action, ContainerRuntime},
    seal::{GossipKey, Keyring},
    trust::token::{CaDigest, JoinSecret},
};

/// Knobs of one simulated run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seed for everything random: node ids, foca's choices, latency and loss.
    pub seed: u64,
    /// Probability that a datagram (or one leg of a peer call) is lost.
    pub loss: f64,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// One-way latency is uniform in this range (ms); a wide range reorders datagrams.
    pub latency_ms: (u64, u64),
    /// Failure-detector settings of every node.
    pub settings: Settings,
    /// How long a new replica takes to pass its healthcheck.
    pub healthy_after_ms: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            loss: 0.0,
            duplicate: 0.0,
            latency_ms: (1, 5),
            settings: Settings::default(),
            healthy_after_ms: 300,
        }
    }
}

/// How long a peer call waits for its answer before the shell reports a failure (the agent's
/// QUIC request timeout).
pub const CALL_TIMEOUT_MS: u64 = 3_000;
/// From an action (or an engine event) to the executor's (or watcher's) fresh listing.
const ENGINE_LAG_MS: u64 = 30;
/// How long after they start crashing replicas exit.
const CRASH_AFTER_MS: u64 = 500;
/// How long a never-healthy replica stays starting before Docker calls it unhealthy.
const UNHEALTHY_AFTER_MS: u64 = 3_000;

enum Event {
    /// An input for the process of `node` that was running at `epoch` (None: whatever runs then,
    /// as for a datagram on the wire).
    Input {
        node: usize,
        epoch: Option<u64>,
        input: Input,
    },
    /// A peer call arriving at `to`.
    Request {
        to: usize,
        from: usize,
        from_epoch: u64,
        call: CallId,
        request: crate::api::PeerRequest,
    },
    /// A fake container's health changes (Docker runs healthchecks whether or not the agent is
    /// up), or it crashes.
    Container {
        node: usize,
        id: String,
        change: ContainerChange,
    },
}

#[derive(Clone, Copy)]
enum ContainerChange {
    Health(Health),
    Crash,
}

struct SimNode {
    addr: SocketAddr,
    id: NodeId,
    generation: u64,
    /// Bumped on every crash so that what was meant for a dead process never reaches its
    /// successor.
    epoch: u64,
    node: Option<Node>,
    /// The data dir: peers remembered and the desired state last written.
    known: Vec<SocketAddr>,
    desired_disk: DesiredState,
    /// The host's engine: it outlives agent crashes.
    runtime: FakeRuntime,
    /// Peers' calls this node is answering: the reply goes back to (caller, its epoch, call).
    inbound: HashMap<RequestId, (usize, u64, CallId)>,
    next_request: RequestId,
    /// The last routing table the node handed its ingress.
    routes: Arc<RoutingTable>,
    /// Answers to `ask`ed CLI requests, by request id.
    answers: HashMap<RequestId, Response>,
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
    /// Peer calls made.
    pub calls: u64,
    /// Peer calls that failed (lost, partitioned, peer down).
    pub calls_failed: u64,
    /// Bytes of peer calls' requests and replies, as framed on a QUIC stream (TLS and QUIC
    /// headers not counted).
    pub call_bytes: u64,
    /// Containers stopped and removed by reconcilers.
    pub containers_removed: u64,
    /// Containers created.
    pub containers_created: u64,
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
    /// The cluster's gossip keyring, as every node got it when it joined.
    keyring: Keyring,
    keyring_key: GossipKey,
    /// Datagrams recorded as a packet capture would (see [`Sim::capture`]): how many at most,
    /// and each with the node it was sent to.
    capture: Option<(usize, Captured)>,
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
            nodes.push(SimNode {
                addr,
                id: NodeId(rng.random::<u128>() | 1),
                generation: 0,
                epoch: 0,
                node: None,
                known: Vec::new(),
                desired_disk: DesiredState::default(),
                runtime: FakeRuntime::new(addr.ip()),
                inbound: HashMap::new(),
                next_request: 0,
                routes: Arc::default(),
                answers: HashMap::new(),
            });
        }
        let keyring_key = GossipKey(rng.random());
        let keyring = Keyring::new(1, keyring_key.clone());
        Sim {
            keyring,
            keyring_key,
            capture: None,
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
            report: Report::default(),
        }
    }

    /// A formed cluster of `n` nodes: node 0 founds it, every other joins through node 0, and
    /// it runs until every member sees every other and they hold the same desired state (the
    /// founder's trust included, which spreads over peer calls only). Panics, naming the seed,
    /// when that takes longer than 30 s of virtual time.
    pub fn formed(n: usize, config: SimConfig) -> Self {
        let seed = config.seed;
        let mut sim = Sim::new(n, config);
        sim.start(0, &[]);
        for i in 1..n {
            sim.start(i, &[0]);
        }
        assert!(
            sim.run_until(30_000, 50, |s| s.converged(NodeStatus::Down)
                && s.desired_converged())
                .is_some(),
            "seed {seed}: the cluster of {n} did not form within 30 s"
        );
        sim
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

    /// Id of node `i`.
    pub fn node_id(&self, i: usize) -> NodeId {
        self.nodes[i].id
    }

    /// Whether node `i`'s agent is running.
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].node.is_some()
    }

    /// Node `i`'s state machine, while its agent runs (for checks that look inside).
    pub fn node(&self, i: usize) -> Option<&Node> {
        self.nodes[i].node.as_ref()
    }

    /// Node `i`'s engine (its containers outlive agent crashes).
    pub fn runtime(&self, i: usize) -> &FakeRuntime {
        &self.nodes[i].runtime
    }

    /// Sets how every node's engine treats images (missing, never healthy, crashing).
    pub fn set_images(&mut self, images: FakeImages) {
        for n in &self.nodes {
            n.runtime.set_images(images.clone());
        }
    }

    /// Starts node `i` (a new process, next generation) and has it join through `seeds`, plus any
    /// peers it remembers from a previous life.
    pub fn start(&mut self, i: usize, seeds: &[usize]) {
        assert!(self.nodes[i].node.is_none(), "node {i} already runs");
        let mut targets: Vec<SocketAddr> = seeds.iter().map(|&s| self.nodes[s].addr).collect();
        let n = &mut self.nodes[i];
        n.generation += 1;
        n.epoch += 1;
        n.inbound.clear();
        let founds =
            targets.is_empty() && n.known.is_empty() && n.desired_disk.gossip_keys().is_empty();
        targets.extend(n.known.iter().copied());
        targets.sort();
        targets.dedup();
        targets.retain(|&t| t != n.addr);
        let identity = NodeIdentity {
            addr: n.addr,
            id: n.id,
            generation: n.generation,
            meta: Arc::new(NodeMeta {
                name: format!("n{i:04}"),
                labels: Default::default(),
                os: "linux".into(),
                arch: "x86_64".into(),
                agent_version: env!("CARGO_PKG_VERSION").into(),
                quic_addr: n.addr,
                cert_sha256: [0; 32],
                runs_containers: true,
            }),
        };
        let config = NodeConfig {
            identity,
            settings: self.config.settings.clone(),
            join: JoinPlan::new(targets, false, Duration::from_secs(10)),
            desired: n.desired_disk.clone(),
            no_runtime: None,
            seed: self.rng.random(),
            keyring: self.keyring.clone(),
            ca_digest: Some(CaDigest([7; 32])),
            // As the agent: only a node that founds a cluster (no seed, no peer remembered, no
            // trust written yet) writes the cluster's first trust.
            init_trust: founds.then(|| (self.keyring_key.clone(), JoinSecret([7; 16]))),
        };
        let (node, effects) = Node::new(config, self.now_ms);
        self.nodes[i].node = Some(node);
        self.apply(i, effects);
        // The engine watcher lists the containers as soon as the agent starts.
        self.schedule_listing(i, ENGINE_LAG_MS);
    }

    /// Kills node `i`'s host without a goodbye, as a power cut would: its containers come back
    /// exited, as Docker keeps them.
    pub fn crash(&mut self, i: usize) {
        self.crash_agent(i);
        self.nodes[i].runtime.set_now(self.now_ms);
        self.nodes[i].runtime.host_down();
    }

    /// Kills node `i`'s agent alone, as `kill -9` would: its containers run on, and the agent
    /// forgets everything but its data dir.
    pub fn crash_agent(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.node = None;
        n.epoch += 1;
        n.inbound.clear();
    }

    /// Stops node `i` gracefully (it tells its peers it leaves), with its host.
    pub fn stop(&mut self, i: usize) {
        self.input(i, Input::Leave);
        self.crash(i);
    }

    /// Splits the cluster: nodes in different groups cannot exchange datagrams or calls. Nodes
    /// not listed stay in group 0.
    pub fn partition(&mut self, groups: &[&[usize]]) {
        self.groups.iter_mut().for_each(|g| *g = 0);
        for (g, members) in groups.iter().enumerate() {
            for &i in members.iter() {
                self.groups[i] = g as u32 + 1;
            }
        }
    }

    /// Changes the probability that a datagram (or a leg of a call) is lost, from now on.
    pub fn set_loss(&mut self, loss: f64) {
        self.config.loss = loss;
    }

    /// Starts recording the datagrams put on the wire (up to `max`), as a capture on the
    /// network would; [`Sim::captured`] hands them over.
    pub fn capture(&mut self, max: usize) {
        self.capture = Some((max, Vec::new()));
    }

    /// The datagrams recorded since [`Sim::capture`], with the node each was sent to.
    pub fn captured(&mut self) -> Captured {
        self.capture
            .take()
            .map(|(_, packets)| packets)
            .unwrap_or_default()
    }

    /// The cluster's gossip keyring (for tests that seal packets of their own).
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Delivers `bytes` to node `i` as a datagram from anywhere (an attacker, a replay), after
    /// the usual latency.
    pub fn inject(&mut self, i: usize, bytes: Vec<u8>) {
        let at = self.now_ms + self.latency();
        let input = Input::Datagram(bytes);
        self.schedule(
            at,
            Event::Input {
                node: i,
                epoch: None,
                input,
            },
        );
    }

    /// Ends every partition.
    pub fn heal(&mut self) {
        self.groups.iter_mut().for_each(|g| *g = 0);
    }

    /// Applies a desired-state change on running node `i` as its CLI would: durable, pushed to a
    /// few live peers, gossiped. Returns whether anything changed.
    pub fn change(
        &mut self,
        i: usize,
        op: impl FnOnce(&mut DesiredState, Hlc) -> Result<DesiredState, DesiredError>,
    ) -> Result<bool, DesiredError> {
        let now = self.now_ms;
        let node = self.nodes[i].node.as_mut().expect("node runs");
        let (outcome, effects) = node.change(now, op);
        self.apply(i, effects);
        match outcome {
            ChangeOutcome::Changed => Ok(true),
            ChangeOutcome::Unchanged => Ok(false),
            ChangeOutcome::Refused(e) => Err(e),
        }
    }

    /// Hands a CLI request to running node `i`. Queries are answered at once; a change once it is
    /// durable and pushed: see [`Sim::answer`].
    pub fn ask(&mut self, i: usize, request: Request) -> RequestId {
        let n = &mut self.nodes[i];
        n.next_request += 1;
        let id = n.next_request;
        let entropy = self.rng.random();
        self.input(
            i,
            Input::Api {
                id,
                request,
                entropy,
            },
        );
        id
    }

    /// The answer to request `id` asked of node `i`, once there is one.
    pub fn answer(&mut self, i: usize, id: RequestId) -> Option<Response> {
        self.nodes[i].answers.remove(&id)
    }

    /// Asks node `i` and runs, 10 ms at a time, until it answers (changes answer once durable
    /// and their pushes are answered or timed out); None if it has not within `within_ms`.
    pub fn call(&mut self, i: usize, request: Request, within_ms: u64) -> Option<Response> {
        let id = self.ask(i, request);
        for _ in 0..within_ms.div_ceil(10) {
            if let Some(answer) = self.answer(i, id) {
                return Some(answer);
            }
            self.run_for(10);
        }
        self.answer(i, id)
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

    fn schedule(&mut self, at: u64, event: Event) {
        let key = self.next_event;
        self.next_event += 1;
        self.events.insert(key, event);
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, key)));
    }

    /// Schedules `input` for the process of node `i` running now.
    fn schedule_input(&mut self, i: usize, after_ms: u64, input: Input) {
        let epoch = Some(self.nodes[i].epoch);
        self.schedule(
            self.now_ms + after_ms,
            Event::Input {
                node: i,
                epoch,
                input,
            },
        );
    }

    fn schedule_listing(&mut self, i: usize, after_ms: u64) {
        let n = &self.nodes[i];
        n.runtime.set_now(self.now_ms);
        let input = match poll_now(n.runtime.list(n.id)) {
            Ok(list) => Input::Listed(list),
            Err(e) => Input::ListFailed(e.0),
        };
        self.schedule_input(i, after_ms, input);
    }

    /// Feeds node `i` one input now, if its agent runs.
    fn input(&mut self, i: usize, input: Input) {
        let now = self.now_ms;
        let id = self.nodes[i].id;
        let Some(node) = self.nodes[i].node.as_mut() else {
            return;
        };
        // As the agent's: every line a node logs names it.
        let span = tracing::info_span!("node", node = %id.short(), sim_ms = now);
        let effects = span.in_scope(|| node.handle(input, now));
        self.apply(i, effects);
    }

    /// Whether a message from `a` to `b` gets through now (loss and partitions).
    fn passes(&mut self, a: usize, b: usize) -> bool {
        let lost = self.config.loss > 0.0 && self.rng.random_bool(self.config.loss);
        !lost && self.groups[a] == self.groups[b]
    }

    fn latency(&mut self) -> u64 {
        let (lo, hi) = self.config.latency_ms;
        self.rng.random_range(lo..=hi)
    }

    /// Carries out node `from`'s effects, as the agent's shell would.
    fn apply(&mut self, from: usize, effects: Effects) {
        let Effects {
            datagrams,
            timers,
            calls,
            peer_replies,
            api_replies,
            actions,
            persist,
            peers,
            generation,
            routes,
            stopped,
            admissions: _,
            removed: _,
            network: _,
        } = effects;
        for (after, timer) in timers {
            self.schedule_input(from, after.as_millis() as u64, Input::Timer(timer));
        }
        for (addr, data) in datagrams {
            self.report.packets_sent += 1;
            self.report.bytes_sent += data.len() as u64;
            let Some(&to) = self.by_addr.get(&addr) else {
                self.report.packets_dropped += 1;
                continue;
            };
            if let Some((max, packets)) = &mut self.capture {
                if packets.len() < *max {
                    packets.push((to, data.clone()));
                }
            }
            if !self.passes(from, to) {
                self.report.packets_dropped += 1;
                continue;
            }
            let copies =
                if self.config.duplicate > 0.0 && self.rng.random_bool(self.config.duplicate) {
                    2
                } else {
                    1
                };
            for _ in 0..copies {
                let at = self.now_ms + self.latency();
                let input = Input::Datagram(data.clone());
                self.schedule(
                    at,
                    Event::Input {
                        node: to,
                        epoch: None,
                        input,
                    },
                );
            }
        }
        for call in calls {
            self.report.calls += 1;
            self.report.call_bytes += framed_len(&call.request);
            let to = self.by_addr.get(&call.to.addr).copied();
            match to {
                Some(to) if self.passes(from, to) => {
                    let at = self.now_ms + self.latency();
                    let from_epoch = self.nodes[from].epoch;
                    self.schedule(
                        at,
                        Event::Request {
                            to,
                            from,
                            from_epoch,
                            call: call.id,
                            request: call.request,
                        },
                    );
                }
                _ => self.fail_call(from, self.nodes[from].epoch, call.id),
            }
        }
        for (id, response) in peer_replies {
            let Some((caller, epoch, call)) = self.nodes[from].inbound.remove(&id) else {
                continue;
            };
            if self.passes(from, caller) {
                self.report.call_bytes += framed_len(&response);
                let at = self.now_ms + self.latency();
                let input = Input::Reply {
                    call,
                    result: Ok(response),
                };
                self.schedule(
                    at,
                    Event::Input {
                        node: caller,
                        epoch: Some(epoch),
                        input,
                    },
                );
            } else {
                self.fail_call(caller, epoch, call);
            }
        }
        for (id, response) in api_replies {
            self.nodes[from].answers.insert(id, response);
        }
        if !actions.is_empty() {
            self.execute(from, actions);
        }
        if let Some(persist) = persist {
            if let Ok(file) = crate::format::decode_desired(&persist.desired) {
                self.nodes[from].desired_disk = file.value;
            }
            let done = Input::Persisted {
                seq: persist.seq,
                result: Ok(()),
            };
            self.schedule_input(from, 1, done);
        }
        if let Some(peers) = peers {
            self.nodes[from].known = peers;
        }
        if let Some(generation) = generation {
            self.nodes[from].generation = generation;
        }
        if let Some(table) = routes {
            self.nodes[from].routes = table;
        }
        if stopped.is_some() {
            self.crash_agent(from);
        }
    }

    /// The shell's answer to a call that never got one: a failure after the timeout.
    fn fail_call(&mut self, caller: usize, epoch: u64, call: CallId) {
        self.report.calls_failed += 1;
        let input = Input::Reply {
            call,
            result: Err("peer did not answer".into()),
        };
        self.schedule(
            self.now_ms + CALL_TIMEOUT_MS,
            Event::Input {
                node: caller,
                epoch: Some(epoch),
                input,
            },
        );
    }

    /// The executor: carries out the actions on the node's engine, reports failed creates, and
    /// re-lists, as the agent's does; schedules the new containers' health.
    fn execute(&mut self, i: usize, actions: Vec<Action>) {
        let now = self.now_ms;
        let n = &self.nodes[i];
        n.runtime.set_now(now);
        let mut failed = Vec::new();
        for action in actions {
            match action {
                Action::Remove { container, .. } => {
                    if poll_now(n.runtime.remove(&container, 10)).is_ok() {
                        self.report.containers_removed += 1;
                    }
                }
                Action::Create(task) => match poll_now(n.runtime.create(n.id, &task)) {
                    Ok(_) => self.report.containers_created += 1,
                    Err(e) => failed.push(Input::CreateFailed { task, error: e.0 }),
                },
            }
        }
        let created: Vec<_> = n
            .runtime
            .take_created()
            .into_iter()
            .map(|(id, image)| (id, n.runtime.behaviour(&image)))
            .collect();
        for (id, (never_healthy, crashing)) in created {
            let (after, change) = if crashing {
                (CRASH_AFTER_MS, ContainerChange::Crash)
            } else if never_healthy {
                (
                    UNHEALTHY_AFTER_MS,
                    ContainerChange::Health(Health::Unhealthy),
                )
            } else {
                (
                    self.config.healthy_after_ms,
                    ContainerChange::Health(Health::Healthy),
                )
            };
            self.schedule(
                now + after,
                Event::Container {
                    node: i,
                    id,
                    change,
                },
            );
        }
        for input in failed {
            self.schedule_input(i, ENGINE_LAG_MS, input);
        }
        self.schedule_listing(i, ENGINE_LAG_MS);
    }

    fn step(&mut self) {
        let Some(Reverse((at, _, key))) = self.queue.pop() else {
            return;
        };
        self.now_ms = at;
        let event = self.events.remove(&key).expect("scheduled event exists");
        match event {
            Event::Input { node, epoch, input } => {
                if epoch.is_none_or(|e| e == self.nodes[node].epoch) {
                    self.input(node, input);
                }
            }
            Event::Request {
                to,
                from,
                from_epoch,
                call,
                request,
            } => {
                if self.nodes[to].node.is_none() {
                    // Nobody listens: the caller's shell times out.
                    self.fail_call(from, from_epoch, call);
                    return;
                }
                let n = &mut self.nodes[to];
                n.next_request += 1;
                let id = n.next_request;
                n.inbound.insert(id, (from, from_epoch, call));
                let from = self.nodes[from].id;
                self.input(to, Input::Peer { id, from, request });
            }
            Event::Container { node, id, change } => {
                let n = &self.nodes[node];
                n.runtime.set_now(self.now_ms);
                let changed = match change {
                    ContainerChange::Health(h) => n.runtime.set_health(&id, h),
                    ContainerChange::Crash => n.runtime.exit(&id, 1, None),
                };
                // The engine's event wakes the agent's watcher, which re-lists.
                if changed && self.nodes[node].node.is_some() {
                    self.schedule_listing(node, ENGINE_LAG_MS);
                }
            }
        }
    }

    /// Kills a random running container of node `i`, as `docker kill` or a crash would (the
    /// container is left exited). Returns whether there was one.
    pub fn kill_container(&mut self, i: usize) -> bool {
        let running: Vec<String> = self.nodes[i]
            .runtime
            .containers()
            .into_iter()
            .filter(|c| c.status == crate::runtime::ContainerStatus::Running)
            .map(|c| c.id)
            .collect();
        if running.is_empty() {
            return false;
        }
        let id = running[self.rng.random_range(0..running.len())].clone();
        self.nodes[i].runtime.set_now(self.now_ms);
        self.nodes[i].runtime.exit(&id, 137, None);
        if self.nodes[i].node.is_some() {
            self.schedule_listing(i, ENGINE_LAG_MS);
        }
        true
    }
}

/// Datagrams recorded on the wire, each with the node it was sent to.
pub type Captured = Vec<(usize, Vec<u8>)>;

/// A synthetic, never-routed address for simulated node `i`.
fn sim_addr(i: usize) -> SocketAddr {
    // Loopback-shaped so that nothing could ever route it off the machine; no socket is opened.
    SocketAddr::from(([127, 1 + (i >> 16) as u8, (i >> 8) as u8, i as u8], 7946))
}

/// Bytes of a message framed as the agents send it over QUIC.
fn framed_len<T: serde::Serialize>(message: &T) -> u64 {
    crate::api::frame(message).map_or(0, |bytes| bytes.len() as u64)
}
