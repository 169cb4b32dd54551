//! The whole node as one pure state machine: `handle(input, now) -> effects`, as foca is.
//!
//! Everything a shoal node decides happens here: membership, the desired-state replica and how
//! changes spread, anti-entropy, the reconcile rounds that claim and heal replicas, the reports
//! that tell the cluster what runs where, the ingress routing table and the answers to the CLI.
//! Inputs are datagrams, fired timers, peers' requests and the replies to this node's own calls,
//! container listings and failed creates, CLI requests and "written to disk" notices. Effects are
//! datagrams to send, timers to set, calls to make, replies to give, container actions, bytes to
//! persist and a new routing table.
//!
//! Two shells drive it: the agent (`src/agent/`, tokio, quinn, bollard) and the simulator
//! ([`crate::sim`], one thread, a virtual clock, a fake network and a fake container engine).
//! Neither holds any decision of its own, so what the simulator checks is what ships.
//!
//! # Layout
//! - this file: the state, the inputs and effects, timers and membership glue;
//! - [`changes`]: CLI writes to the desired state (applied, made durable, pushed, then answered);
//! - [`sync`]: peer requests and anti-entropy;
//! - [`workload`]: reconcile rounds, this node's report, the routing table;
//! - [`queries`]: read-only CLI answers (`node ls`, `service ps`, ...);
//! - [`network_verbs`]: `network create|ls|inspect|rm`.

mod changes;
mod network;
mod network_verbs;
mod queries;
mod sync;
mod trust;
mod workload;

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use rand::{rngs::StdRng, RngExt, SeedableRng};
use tracing::{debug, info, warn};

use crate::{
    api::{PeerRequest, PeerResponse, Request, Response},
    desired::state::DesiredState,
    identity::NodeIdentity,
    join::{JoinPlan, JoinStep},
    membership::{self, MemberEvent, Membership, MembershipError, NodeView, Settings},
    replica::Replica,
    routing::routes::RoutingTable,
    runtime::{Action, LocalContainer, TaskSpec},
    seal::{GossipKey, Keyring},
    trust::token::{CaDigest, JoinSecret},
};

pub use changes::ChangeOutcome;
pub use network::NetState;
pub use trust::{mark as key_mark, Admission, RETIRE_AFTER};
use workload::Workload;

/// How often every node reconciles, even when nothing seems to change.
pub const RECONCILE_PERIOD: Duration = Duration::from_secs(1);
/// Never reconcile more often than this: a burst of news becomes one round.
pub const RECONCILE_MIN_GAP: Duration = Duration::from_millis(50);
/// How often a dirty desired state and the known peers are written to the data dir.
pub const PERSIST_PERIOD: Duration = Duration::from_secs(1);
/// How long a node that is down or left keeps its last report on the others: long enough that
/// `service ps` shows what it ran through an outage, short enough that departed hosts do not
/// pile up. A node that returns reports afresh.
pub const REPORT_HORIZON: Duration = Duration::from_secs(3_600);
/// Until the first exchange with a peer succeeds (a peer may not trust a new node's certificate
/// for a moment after it joins), it is retried this often: reconciling waits for it.
pub const SETTLE_RETRY: Duration = Duration::from_millis(300);

/// Identifies a request the shell handed in (a CLI request or a peer's call), so that the reply
/// effect can be matched to whoever waits for it. Chosen by the shell.
pub type RequestId = u64;

/// Identifies a call this node makes to a peer; the shell answers it with [`Input::Reply`].
/// Chosen by the node.
pub type CallId = u64;

/// Something that happened, for the node to handle.
#[derive(Debug)]
pub enum Input {
    /// A gossip datagram arrived.
    Datagram(Vec<u8>),
    /// A timer the node asked for fired.
    Timer(Timer),
    /// A peer asks something (over QUIC). Answer: [`Effects::peer_replies`].
    Peer {
        /// The shell's handle for the reply.
        id: RequestId,
        /// Who asks: the node id in its certificate.
        from: crate::identity::NodeId,
        /// What the peer asks.
        request: PeerRequest,
    },
    /// The answer to one of this node's calls, or why there is none (unreachable, timed out).
    /// The shell delivers exactly one per call.
    Reply {
        /// The call.
        call: CallId,
        /// The peer's answer.
        result: Result<PeerResponse, String>,
    },
    /// A CLI request. Answer: [`Effects::api_replies`].
    Api {
        /// The shell's handle for the reply.
        id: RequestId,
        /// The request.
        request: Request,
        /// Fresh random bytes from the shell's CSPRNG, for requests that make a secret (a new
        /// gossip key, a new join secret): the core draws no randomness of its own for secrets.
        entropy: [u8; 32],
    },
    /// A joiner asks to be admitted as `node`. Answer: [`Effects::admissions`].
    Admit {
        /// The shell's handle for the answer.
        id: RequestId,
        /// The node id the joiner claims.
        node: crate::identity::NodeId,
    },
    /// The container engine's containers of this node, freshly listed.
    Listed(Vec<LocalContainer>),
    /// Listing failed: the engine is unreachable.
    ListFailed(String),
    /// A create failed; the container does not exist.
    CreateFailed {
        /// The task that failed.
        task: Box<TaskSpec>,
        /// The engine's message.
        error: String,
    },
    /// The desired-state snapshot with this sequence number (and every earlier one) was written,
    /// or why it was not.
    Persisted {
        /// [`Persist::seq`] of the snapshot.
        seq: u64,
        /// Whether it is durable.
        result: Result<(), String>,
    },
    /// Leave the cluster gracefully (the shell stops after carrying out the effects).
    Leave,
}

/// A timer the node asks the shell to fire later, with [`Input::Timer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Timer {
    /// One of foca's.
    Swim(membership::Timer),
    /// Next step of the join retry schedule.
    Join,
    /// A periodic anti-entropy round.
    Sync,
    /// Retry the first exchange until the node has settled.
    Settle,
    /// The periodic reconcile tick.
    ReconcileTick,
    /// A reconcile round due at this time (superseded timers are ignored).
    Reconcile {
        /// When it was due, ms.
        at_ms: u64,
    },
    /// Periodic persistence of a dirty desired state and of the known peers.
    Persist,
}

/// A call to a peer, for the shell to make (over QUIC) and answer with [`Input::Reply`].
#[derive(Clone, Debug)]
pub struct Call {
    /// The node's handle for the reply.
    pub id: CallId,
    /// Who to call.
    pub to: NodeIdentity,
    /// What to ask.
    pub request: PeerRequest,
}

/// Bytes to write to the data dir. The shell writes them in order (a later snapshot may replace
/// an earlier one that is still queued) and answers with [`Input::Persisted`].
#[derive(Clone, Debug)]
pub struct Persist {
    /// Grows with every snapshot.
    pub seq: u64,
    /// The encoded desired state.
    pub desired: Vec<u8>,
}

/// Why the node stopped on its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// No seed answered within the join timeout.
    #[error("could not join the cluster: none of {targets:?} answered within {waited:?}")]
    JoinFailed {
        /// Addresses tried.
        targets: Vec<SocketAddr>,
        /// How long we tried.
        waited: Duration,
    },
}

/// What the shell must carry out after an input.
#[derive(Debug, Default)]
pub struct Effects {
    /// Datagrams to send.
    pub datagrams: Vec<(SocketAddr, Vec<u8>)>,
    /// Timers to set, relative to now.
    pub timers: Vec<(Duration, Timer)>,
    /// Calls to peers.
    pub calls: Vec<Call>,
    /// Answers to peers' requests.
    pub peer_replies: Vec<(RequestId, PeerResponse)>,
    /// Answers to CLI requests.
    pub api_replies: Vec<(RequestId, Response)>,
    /// What to do to this node's containers.
    pub actions: Vec<Action>,
    /// A desired-state snapshot to write.
    pub persist: Option<Persist>,
    /// The peers to remember across restarts, when they changed.
    pub peers: Option<Vec<SocketAddr>>,
    /// This node's new generation, to persist (the cluster declared it down while alive).
    pub generation: Option<u64>,
    /// A new ingress routing table.
    pub routes: Option<Arc<RoutingTable>>,
    /// What the shell needs to decide join requests.
    pub admissions: Vec<(RequestId, Admission)>,
    /// The service networks, when they changed: the engine must hold `local` before replicas
    /// that use them are created; the DNS server answers from `view`; the kernel's routes and
    /// rules follow both.
    pub network: Option<NetState>,
    /// The nodes removed from the cluster, when that set changed: their certificates must be
    /// refused from now on.
    pub removed: Option<std::collections::BTreeSet<crate::identity::NodeId>>,
    /// The node stopped on its own; the shell should exit with this error.
    pub stopped: Option<NodeError>,
}

impl Effects {
    fn timer(&mut self, after: Duration, timer: Timer) {
        self.timers.push((after, timer));
    }
}

/// What a node refused, for metrics and tests: each count is an input dropped and logged at
/// debug level, with a summary at most every [`REFUSAL_LOG_PERIOD`], so that garbage cannot
/// flood the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Authentic datagrams that did not decode or that SWIM refused.
    pub datagrams_rejected: u64,
    /// Gossiped desired-state items that did not decode.
    pub gossip_rejected: u64,
    /// Datagrams refused before reaching membership, by reason (`unsealed`, `forged`,
    /// `replay`, `unknown_key`, `impostor`, ...).
    pub sealed_refused: BTreeMap<&'static str, u64>,
}

/// How often the refusals since the last summary are logged (at warn level).
pub const REFUSAL_LOG_PERIOD: Duration = Duration::from_secs(10);

/// How a node starts.
pub struct NodeConfig {
    /// Who this node is (id, generation, address, metadata).
    pub identity: NodeIdentity,
    /// Failure-detector settings.
    pub settings: Settings,
    /// Seeds and remembered peers to join through.
    pub join: JoinPlan,
    /// The desired state loaded from the data dir.
    pub desired: DesiredState,
    /// Why this node runs no containers, if it does not (`--runtime none`): it owns no slots.
    pub no_runtime: Option<String>,
    /// Seed of the node's own random choices (sync peers, push targets).
    pub seed: u64,
    /// The gossip keyring (from the data dir's trust material).
    pub keyring: Keyring,
    /// The digest of the cluster CA's certificate, for the join tokens this node prints.
    pub ca_digest: Option<CaDigest>,
    /// For the first node of a new cluster: its first gossip key and join secret, written into
    /// the desired state at start.
    pub init_trust: Option<(GossipKey, JoinSecret)>,
}

/// What a pending call was for.
enum Pending {
    /// An anti-entropy round with this peer.
    Sync(NodeIdentity),
    /// The second half of one.
    Repair,
    /// A push that is part of a CLI change.
    Change(u64),
    /// A push nobody waits for.
    Fire,
}

/// One shoal node.
pub struct Node {
    membership: Membership<StdRng>,
    settings: Settings,
    rng: StdRng,
    join: Option<JoinPlan>,
    replica: Replica,
    workload: Workload,
    /// Joined (or gave up joining) and synced once: its view is worth acting on. Right after a
    /// start the view may hold only this node, and acting on it would start every slot here.
    settled: bool,
    /// Remote merges changed the desired state since it was last written.
    desired_dirty: bool,
    /// Membership changed since the known peers were last written.
    peers_dirty: bool,
    /// When the known peers were last handed out to be written.
    peers_saved_ms: Option<u64>,
    /// Sequence number of the last desired-state snapshot handed out.
    persist_seq: u64,
    /// Something the reconciler looks at changed.
    reconcile_due: bool,
    /// When the next reconcile round is due, if one is scheduled.
    reconcile_at_ms: Option<u64>,
    last_reconcile_ms: u64,
    next_call: CallId,
    pending: HashMap<CallId, Pending>,
    changes: changes::Changes,
    stopped: bool,
    counters: Counters,
    /// When refusals were last logged, and their totals then.
    refusals_logged_ms: Option<u64>,
    refusals_at_log: BTreeMap<&'static str, u64>,
    /// Since when every live member holds the newest gossip key (see [`trust`]).
    retire_ready_ms: Option<u64>,
    ca_digest: Option<CaDigest>,
    /// The removed nodes last handed to the shell.
    removed: std::collections::BTreeSet<crate::identity::NodeId>,
    network: network::Networks,
    effects: Effects,
}

impl Node {
    /// A node that has not joined anything yet; the effects start its timers and its join.
    pub fn new(config: NodeConfig, now_ms: u64) -> (Self, Effects) {
        let NodeConfig {
            identity,
            settings,
            join,
            desired,
            no_runtime,
            seed,
            keyring,
            ca_digest,
            init_trust,
        } = config;
        let me = identity.id;
        let settled = join.targets().is_empty();
        let membership = Membership::new(
            identity,
            settings.clone(),
            StdRng::seed_from_u64(seed ^ 0x5eed),
            keyring,
        );
        let mut node = Node {
            membership,
            rng: StdRng::seed_from_u64(seed),
            join: Some(join),
            replica: Replica::new(me, desired, now_ms),
            workload: Workload::new(no_runtime),
            settled,
            desired_dirty: false,
            peers_dirty: false,
            peers_saved_ms: None,
            persist_seq: 0,
            reconcile_due: true,
            reconcile_at_ms: None,
            last_reconcile_ms: 0,
            next_call: 0,
            pending: HashMap::new(),
            changes: changes::Changes::default(),
            stopped: false,
            counters: Counters::default(),
            refusals_logged_ms: None,
            refusals_at_log: BTreeMap::new(),
            retire_ready_ms: None,
            ca_digest,
            removed: Default::default(),
            network: Default::default(),
            effects: Effects::default(),
            settings,
        };
        // Nodes started together must not all sync at the same instants.
        let sync_period = node.settings.sync_period.as_millis().max(1) as u64;
        let first_sync = Duration::from_millis(node.rng.random_range(0..sync_period));
        node.effects.timer(Duration::ZERO, Timer::Join);
        node.effects.timer(first_sync, Timer::Sync);
        node.effects.timer(SETTLE_RETRY, Timer::Settle);
        node.effects.timer(RECONCILE_PERIOD, Timer::ReconcileTick);
        node.effects.timer(PERSIST_PERIOD, Timer::Persist);
        if let Some((key, secret)) = init_trust {
            node.apply_own_change(now_ms, |s, hlc| Ok(s.init_trust(key, secret, hlc)));
        }
        node.after_input(now_ms);
        let effects = std::mem::take(&mut node.effects);
        (node, effects)
    }

    /// Handles one input and returns what the shell must do now.
    pub fn handle(&mut self, input: Input, now_ms: u64) -> Effects {
        if self.stopped {
            // A node that left answers nothing; its shell is about to stop.
            return Effects::default();
        }
        match input {
            Input::Datagram(bytes) => {
                match self.membership.handle_packet(&bytes, now_ms) {
                    Ok(()) => {}
                    // Not the cluster's, altered, replayed or speaking for another node.
                    Err(
                        MembershipError::Sealed(_)
                        | MembershipError::Impostor { .. }
                        | MembershipError::Removed(_),
                    ) => {
                        self.refusals_logged(now_ms);
                    }
                    // Authentic but stale or malformed: a previous generation, a bug.
                    Err(e) => {
                        self.counters.datagrams_rejected += 1;
                        debug!(error = %e, "dropped datagram");
                    }
                }
            }
            Input::Timer(timer) => self.on_timer(timer, now_ms),
            Input::Peer { id, from, request } => {
                let response = self.answer_peer(from, request, now_ms);
                self.effects.peer_replies.push((id, response));
            }
            Input::Reply { call, result } => self.on_reply(call, result, now_ms),
            Input::Api {
                id,
                request,
                entropy,
            } => self.answer_api(id, request, entropy, now_ms),
            Input::Admit { id, node } => self.admission(id, node),
            Input::Listed(containers) => {
                self.workload.listed(containers);
                self.reconcile_due = true;
            }
            Input::ListFailed(error) => self.workload.list_failed(error),
            Input::CreateFailed { task, error } => {
                self.workload.create_failed(&task, error, now_ms);
                self.reconcile_due = true;
            }
            Input::Persisted { seq, result } => self.on_persisted(seq, result),
            Input::Leave => {
                info!("leaving the cluster");
                if let Err(e) = self.membership.leave(now_ms) {
                    warn!(error = %e, "leave failed");
                }
                self.stopped = true;
            }
        }
        self.after_input(now_ms);
        std::mem::take(&mut self.effects)
    }

    /// Applies a desired-state change as a CLI write would (made durable, pushed to a few peers,
    /// gossiped), with no one waiting for the answer. For tests and the simulator, which write
    /// arbitrary operations.
    pub fn change(
        &mut self,
        now_ms: u64,
        op: impl FnOnce(
            &mut DesiredState,
            crate::desired::hlc::Hlc,
        ) -> Result<DesiredState, crate::desired::state::DesiredError>,
    ) -> (ChangeOutcome, Effects) {
        let outcome = self.apply_own_change(now_ms, op);
        self.after_input(now_ms);
        (outcome, std::mem::take(&mut self.effects))
    }

    /// This node's identity.
    pub fn identity(&self) -> &NodeIdentity {
        self.membership.identity()
    }

    /// Every member this node knows of, itself included.
    pub fn members(&self) -> Vec<NodeView> {
        self.membership.nodes()
    }

    /// Whether this node sees at least one live peer.
    pub fn is_connected(&self) -> bool {
        self.membership.is_connected()
    }

    /// Addresses worth contacting after a restart.
    pub fn known_addrs(&self) -> Vec<SocketAddr> {
        self.membership.known_addrs()
    }

    /// The desired state.
    pub fn desired(&self) -> &DesiredState {
        self.replica.state()
    }

    /// Digest of the desired state.
    pub fn desired_digest(&self) -> [u8; 32] {
        self.replica.digest()
    }

    /// Every node's latest report, as this node holds them.
    pub fn observed(&self) -> &crate::observed::ObservedState {
        &self.workload.observed
    }

    /// The failure detector's local-health score (0 is healthy; see
    /// [`crate::membership::lifeguard`]).
    pub fn local_health(&self) -> u32 {
        self.membership.local_health()
    }

    /// What the node refused so far.
    pub fn counters(&self) -> Counters {
        Counters {
            sealed_refused: self.membership.refused().clone(),
            ..self.counters.clone()
        }
    }

    /// Logs a summary of the datagrams refused since the last one, at most every
    /// [`REFUSAL_LOG_PERIOD`]: a flood of garbage costs one line per period.
    fn refusals_logged(&mut self, now_ms: u64) {
        let period = REFUSAL_LOG_PERIOD.as_millis() as u64;
        if self
            .refusals_logged_ms
            .is_some_and(|at| now_ms < at + period)
        {
            return;
        }
        let total: BTreeMap<&'static str, u64> = self.membership.refused().clone();
        let since: BTreeMap<&'static str, u64> = total
            .iter()
            .map(|(k, v)| (*k, v - self.refusals_at_log.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect();
        self.refusals_logged_ms = Some(now_ms);
        self.refusals_at_log = total;
        warn!(refused = ?since, "gossip datagrams refused (not sealed with this cluster's keys, \
            altered, replayed, or speaking for another node)");
    }

    /// Whether the node has synced once and acts on its view.
    pub fn is_settled(&self) -> bool {
        self.settled
    }

    fn on_timer(&mut self, timer: Timer, now_ms: u64) {
        match timer {
            Timer::Swim(t) => {
                if let Err(e) = self.membership.handle_timer(t, now_ms) {
                    debug!(error = %e, "timer failed");
                }
            }
            Timer::Join => self.join_step(now_ms),
            Timer::Sync => {
                self.effects.timer(self.settings.sync_period, Timer::Sync);
                self.start_sync();
            }
            Timer::Settle => {
                if !self.settled {
                    self.effects.timer(SETTLE_RETRY, Timer::Settle);
                    if self.membership.is_connected() {
                        self.start_sync();
                    }
                }
            }
            Timer::ReconcileTick => {
                self.effects.timer(RECONCILE_PERIOD, Timer::ReconcileTick);
                self.reconcile_due = true;
            }
            Timer::Reconcile { at_ms } => {
                if self.reconcile_at_ms == Some(at_ms) {
                    self.reconcile_at_ms = None;
                    self.last_reconcile_ms = now_ms;
                    if let Some(wake_ms) = self.reconcile(now_ms) {
                        self.schedule_reconcile(wake_ms.max(now_ms), now_ms);
                    }
                }
            }
            Timer::Persist => {
                self.effects.timer(PERSIST_PERIOD, Timer::Persist);
                if self.desired_dirty {
                    self.desired_dirty = false;
                    self.persist_desired();
                }
                if self.peers_dirty {
                    self.save_peers(now_ms);
                }
            }
        }
    }

    fn join_step(&mut self, now_ms: u64) {
        let connected = self.membership.is_connected();
        let Some(join) = self.join.as_mut() else {
            return;
        };
        let was_alone = join.is_alone();
        match join.poll(now_ms, connected) {
            JoinStep::Announce(targets, next) => {
                if join.is_alone() && !was_alone {
                    self.settled = true;
                    self.reconcile_due = true;
                    warn!(
                        ?targets,
                        "no remembered peer answered; running alone and retrying every {next:?}"
                    );
                }
                for target in targets {
                    if let Err(e) = self.membership.join(target, now_ms) {
                        debug!(%target, error = %e, "announce failed");
                    }
                    // And a full exchange over QUIC: it also works when gossip cannot, for a
                    // node that was away while the gossip key rotated (its datagrams are refused
                    // until it holds the new key, which travels over QUIC only).
                    let seed = NodeIdentity::seed_quic(target);
                    let request = self.sync_request(None);
                    self.call(seed.clone(), request, Pending::Sync(seed));
                }
                self.effects.timer(next, Timer::Join);
            }
            JoinStep::Done => self.join = None,
            JoinStep::Failed { targets, waited } => {
                self.join = None;
                self.stopped = true;
                self.effects.stopped = Some(NodeError::JoinFailed { targets, waited });
            }
        }
    }

    /// Asks for a reconcile round at `at_ms` unless one is due sooner.
    fn schedule_reconcile(&mut self, at_ms: u64, now_ms: u64) {
        if self.reconcile_at_ms.is_some_and(|t| t <= at_ms) {
            return;
        }
        self.reconcile_at_ms = Some(at_ms);
        self.effects.timer(
            Duration::from_millis(at_ms.saturating_sub(now_ms)),
            Timer::Reconcile { at_ms },
        );
    }

    fn call(&mut self, to: NodeIdentity, request: PeerRequest, pending: Pending) {
        self.next_call += 1;
        let id = self.next_call;
        self.pending.insert(id, pending);
        self.effects.calls.push(Call { id, to, request });
    }

    fn on_reply(&mut self, call: CallId, result: Result<PeerResponse, String>, now_ms: u64) {
        match self.pending.remove(&call) {
            Some(Pending::Sync(peer)) => match result {
                Ok(PeerResponse::Sync {
                    node,
                    members,
                    members_digest,
                    buckets,
                    observed,
                }) => self.on_sync_answer(
                    peer,
                    sync::SyncAnswer {
                        node,
                        members,
                        members_digest,
                        buckets,
                        observed,
                    },
                    now_ms,
                ),
                Ok(other) => debug!(answer = ?other, "peer answered sync with something else"),
                Err(e) => debug!(error = %e, "sync failed"),
            },
            Some(Pending::Repair) => match result {
                Ok(PeerResponse::Repair { desired, reports }) => {
                    self.on_repair_answer(*desired, reports, now_ms)
                }
                Ok(other) => debug!(answer = ?other, "peer answered repair with something else"),
                Err(e) => debug!(error = %e, "repair failed"),
            },
            Some(Pending::Change(change)) => {
                let acked = matches!(result, Ok(PeerResponse::Ack));
                if let Err(e) = &result {
                    debug!(error = %e, "push failed");
                }
                self.change_acked(change, acked);
            }
            Some(Pending::Fire) => {
                if let Err(e) = result {
                    debug!(error = %e, "push failed");
                }
            }
            None => debug!(call, "reply to an unknown call"),
        }
    }

    /// What every input ends with: collect membership's effects, note what they change, and
    /// schedule the reconcile round that news calls for.
    fn after_input(&mut self, now_ms: u64) {
        let membership::Effects {
            packets,
            timers,
            events,
            broadcasts,
        } = self.membership.take_effects();
        self.effects.datagrams.extend(packets);
        for (after, timer) in timers {
            self.effects.timer(after, Timer::Swim(timer));
        }
        for payload in broadcasts {
            match self.replica.receive_gossip(&payload, now_ms) {
                Ok(changed) => {
                    self.desired_dirty |= changed;
                    self.reconcile_due |= changed;
                }
                Err(e) => {
                    self.counters.gossip_rejected += 1;
                    debug!(error = %e, "dropped gossip item");
                }
            }
        }
        if !events.is_empty() {
            self.peers_dirty = true;
            // The first peers are written at once (an agent killed right after joining must
            // find them on restart), later changes at most once per persist period.
            if self
                .peers_saved_ms
                .is_none_or(|at| now_ms >= at + PERSIST_PERIOD.as_millis() as u64)
            {
                self.save_peers(now_ms);
            }
            self.reconcile_due = true;
            let connected = events.contains(&MemberEvent::Connected);
            for event in events {
                self.log_event(event);
            }
            if connected {
                // A full exchange right away, so the view does not wait for gossip to fill.
                self.start_sync();
            }
        }
        if self.reconcile_due && !self.stopped {
            self.reconcile_due = false;
            let at = (self.last_reconcile_ms + RECONCILE_MIN_GAP.as_millis() as u64).max(now_ms);
            self.schedule_reconcile(at, now_ms);
        }
    }

    fn save_peers(&mut self, now_ms: u64) {
        self.peers_dirty = false;
        self.peers_saved_ms = Some(now_ms);
        self.effects.peers = Some(self.membership.known_addrs());
    }

    fn log_event(&mut self, event: MemberEvent) {
        match event {
            MemberEvent::Up(peer) => info!(
                peer = %peer.id.short(), name = %peer.meta.name, addr = %peer.addr,
                generation = peer.generation, "member up"
            ),
            MemberEvent::Down(peer) => warn!(
                peer = %peer.id.short(), name = %peer.meta.name, addr = %peer.addr, "member down"
            ),
            MemberEvent::Left(peer) => info!(
                peer = %peer.id.short(), name = %peer.meta.name, addr = %peer.addr, "member left"
            ),
            MemberEvent::Connected => {
                info!(peers = self.membership.num_peers(), "joined the cluster")
            }
            MemberEvent::Disconnected => warn!("lost every peer; running alone"),
            MemberEvent::Renewed(identity) => {
                warn!(
                    generation = identity.generation,
                    "the cluster declared this node down while it was alive; \
                     rejoined as a new generation"
                );
                self.effects.generation = Some(identity.generation);
            }
        }
    }

    /// Live peers (ready, not suspect), this node excluded.
    fn live_peers(&self) -> Vec<NodeIdentity> {
        self.membership.live_peers()
    }

    fn persist_desired(&mut self) -> u64 {
        match crate::format::encode_desired(self.replica.state()) {
            Ok(bytes) => {
                self.persist_seq += 1;
                self.effects.persist = Some(Persist {
                    seq: self.persist_seq,
                    desired: bytes,
                });
            }
            Err(e) => warn!(error = %e, "cannot encode the desired state"),
        }
        self.persist_seq
    }

    fn on_persisted(&mut self, seq: u64, result: Result<(), String>) {
        if let Err(e) = &result {
            warn!(error = %e, "could not persist the desired state");
        }
        self.change_persisted(seq, result);
    }
}
