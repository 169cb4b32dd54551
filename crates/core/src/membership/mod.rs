//! SWIM membership as a pure state machine: foca plus the bookkeeping shoal needs on top of it
//! (the `left` status, members foca has forgotten, settings that follow the cluster size) and
//! Lifeguard's local health and suspicion notices ([`lifeguard`]).
//!
//! Nothing here reads a clock or touches a socket. Callers feed in datagrams, fired timers and the
//! current time, and carry out the [`Effects`] that come back; the agent does so with tokio, the
//! simulator with a virtual clock and network.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    num::{NonZeroU32, NonZeroUsize},
    time::Duration,
};

pub mod lifeguard;
pub mod sealing;

use foca::{AccumulatingRuntime, Codec, Foca, Member, Message, OwnedNotification, State};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    broadcast::{Broadcasts, Inbox, MAX_BROADCAST_BYTES},
    codec::SwimCodec,
    identity::{NodeId, NodeIdentity},
    seal::Keyring,
    wire::{self, PacketKind, WireError},
};
use lifeguard::{Lifeguard, SuspectNotice, NOTICE_INTERVAL};
use sealing::{GossipSeal, Refusals};

/// A timer, handed to the caller to fire later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Timer {
    /// One of foca's.
    Swim(foca::Timer<NodeIdentity>),
    /// Tell a suspect again that it is suspected.
    Remind(NodeId),
}

/// How a node looks to the member that is asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Answers probes.
    Ready,
    /// Missed a probe; declared down unless it refutes within the suspicion timeout.
    Suspect,
    /// Declared down by the failure detector (crash, partition, long pause).
    Down,
    /// Said goodbye before stopping.
    Left,
}

impl NodeStatus {
    /// The lower-case word the CLI and JSON use.
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeStatus::Ready => "ready",
            NodeStatus::Suspect => "suspect",
            NodeStatus::Down => "down",
            NodeStatus::Left => "left",
        }
    }
}

/// One member as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// The member's latest known identity (with its metadata).
    pub identity: NodeIdentity,
    /// Its status as this node's failure detector sees it.
    pub status: NodeStatus,
    /// When (caller's clock, ms) the status last changed.
    pub since_ms: u64,
    /// Whether this is the node answering.
    pub is_self: bool,
}

/// Something worth a log line or a reaction in the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberEvent {
    /// A member became reachable (joined, restarted, or came back from a partition).
    Up(NodeIdentity),
    /// A member was declared down.
    Down(NodeIdentity),
    /// A member said goodbye.
    Left(NodeIdentity),
    /// This node now has at least one live peer.
    Connected,
    /// This node lost its last live peer.
    Disconnected,
    /// The cluster declared this node down while it was alive; it rejoined as a new generation,
    /// which the caller should persist.
    Renewed(NodeIdentity),
}

/// What the caller must carry out after feeding an input.
#[derive(Debug, Default)]
pub struct Effects {
    /// Datagrams to send, already framed.
    pub packets: Vec<(SocketAddr, Vec<u8>)>,
    /// Timers to fire after the given delay.
    pub timers: Vec<(Duration, Timer)>,
    /// What changed.
    pub events: Vec<MemberEvent>,
    /// Payloads peers broadcast (see [`Membership::broadcast`]) that this node had not seen.
    pub broadcasts: Vec<Vec<u8>>,
}

/// Why an input was rejected. Rejected inputs leave the membership unchanged.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// The datagram's envelope or body did not decode.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// foca rejected the message (malformed, from ourselves, or addressed to an old identity).
    #[error("swim: {0}")]
    Swim(#[from] foca::Error),
    /// The datagram was not sealed with the cluster's keys, was altered, or is a replay.
    #[error("gossip refused: {0}")]
    Sealed(#[from] crate::seal::OpenError),
    /// A datagram from a node removed from the cluster.
    #[error("datagram from removed node {0}")]
    Removed(NodeId),
    /// A sealed datagram whose message speaks for another node than the one that sealed it.
    #[error("datagram sealed by {sealer} speaks for {claims}")]
    Impostor {
        /// Who sealed it.
        sealer: NodeId,
        /// Who the message inside claims to be.
        claims: NodeId,
    },
}

/// The goodbye a node sends to its peers when it stops gracefully.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LeaveNotice {
    id: NodeId,
    generation: u64,
}

/// Failure-detector settings. Probe timings are fixed for a process's life (foca cannot change
/// them); the rest follows the cluster size, as memberlist and Lifeguard do.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often each node probes one member.
    pub probe_period: Duration,
    /// How long a direct probe waits for its ack before asking others to probe indirectly.
    pub probe_rtt: Duration,
    /// Suspicion lasts `max(1, log10(n)) * multiplier * probe_period`, stretched by up to five
    /// times on a node whose own network looks unhealthy (see [`lifeguard`]). Short, because a
    /// live suspect is told directly and refutes at once.
    pub suspicion_multiplier: f64,
    /// How often to piggyback pending updates on a gossip message to a few members.
    pub gossip_period: Duration,
    /// How often to re-announce to members believed down: this is what merges the two sides of a
    /// healed partition.
    pub announce_to_down_period: Duration,
    /// How often a node does a full push-pull exchange of membership state with one random peer.
    /// Gossip spreads each update a bounded number of times; this catches whatever it missed.
    pub sync_period: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            probe_period: Duration::from_millis(500),
            probe_rtt: Duration::from_millis(200),
            suspicion_multiplier: 3.0,
            gossip_period: Duration::from_millis(200),
            announce_to_down_period: Duration::from_secs(2),
            sync_period: Duration::from_secs(5),
        }
    }
}

impl Settings {
    /// foca's configuration for a cluster of `size` live members.
    pub fn foca_config(&self, size: usize) -> foca::Config {
        let n = NonZeroU32::new(size.clamp(1, u32::MAX as usize) as u32).expect("clamped >= 1");
        let mut config = foca::Config::new_lan(n);
        config.probe_period = self.probe_period;
        config.probe_rtt = self.probe_rtt;
        config.suspect_to_down_after = self.suspicion_timeout(size);
        // Sealing adds its header and tag: foca's packets leave room for them.
        config.max_packet_size =
            NonZeroUsize::new(crate::seal::MAX_FOCA_PACKET).expect("constant is non-zero");
        config.periodic_gossip = Some(foca::PeriodicParams {
            frequency: self.gossip_period,
            num_members: NonZeroUsize::new(3).expect("constant"),
        });
        config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: self.announce_to_down_period,
            num_members: NonZeroUsize::new(2).expect("constant"),
        });
        // Down members are remembered (and re-announced to) for a day: a partition that heals
        // within that time merges by itself.
        config.remove_down_after = Some(Duration::from_secs(24 * 3600));
        config
    }

    /// How long a suspect has to refute before it is declared down, for a cluster of `size`.
    pub fn suspicion_timeout(&self, size: usize) -> Duration {
        let factor = (size.max(1) as f64).log10().max(1.0);
        self.probe_period
            .mul_f64(factor * self.suspicion_multiplier)
    }
}

/// Cluster sizes at which the settings are recomputed; between them nothing changes, so a
/// flapping member does not churn the configuration.
fn size_bucket(n: usize) -> usize {
    match n {
        0..=10 => 10,
        11..=32 => 32,
        33..=100 => 100,
        101..=320 => 320,
        321..=1000 => 1000,
        _ => 10_000,
    }
}

struct Record {
    identity: NodeIdentity,
    status: NodeStatus,
    since_ms: u64,
}

/// One node's view of the cluster.
pub struct Membership<R: RngExt> {
    foca: Foca<NodeIdentity, SwimCodec, R, Broadcasts>,
    runtime: AccumulatingRuntime<NodeIdentity>,
    settings: Settings,
    bucket: usize,
    /// Last known identity and status of every member ever seen, so that members foca has
    /// forgotten still show as down or left, as `docker node ls` keeps them.
    records: BTreeMap<NodeId, Record>,
    /// Generations that said goodbye: their "down" is really "left".
    left: BTreeSet<(NodeId, u64)>,
    /// New broadcast payloads from peers, filled by foca's handler.
    inbox: Inbox,
    lifeguard: Lifeguard,
    gossip: GossipSeal,
    /// Nodes removed from the cluster: nothing from them is accepted, nothing about them kept.
    removed: BTreeSet<NodeId>,
    leaving: bool,
    effects: Effects,
}

impl<R: RngExt> Membership<R> {
    /// A node that is not part of any cluster yet, sealing its gossip with `keyring`.
    pub fn new(identity: NodeIdentity, settings: Settings, rng: R, keyring: Keyring) -> Self {
        let bucket = size_bucket(1);
        let gossip = GossipSeal::new(keyring, identity.id, identity.generation);
        let inbox = Inbox::default();
        let foca = Foca::with_custom_broadcast(
            identity,
            settings.foca_config(bucket),
            rng,
            SwimCodec,
            Broadcasts::new(inbox.clone()),
        );
        Membership {
            foca,
            runtime: AccumulatingRuntime::new(),
            settings,
            bucket,
            records: BTreeMap::new(),
            inbox,
            lifeguard: Lifeguard::default(),
            gossip,
            removed: BTreeSet::new(),
            left: BTreeSet::new(),
            leaving: false,
            effects: Effects::default(),
        }
    }

    /// This node's current identity.
    pub fn identity(&self) -> &NodeIdentity {
        self.foca.identity()
    }

    /// Whether this node sees at least one live peer.
    pub fn is_connected(&self) -> bool {
        self.foca.num_members() > 0
    }

    /// Number of live peers (not counting this node).
    pub fn num_peers(&self) -> usize {
        self.foca.num_members()
    }

    /// Asks the node at `seed` to let us in. Safe to repeat; the answer arrives as datagrams.
    pub fn join(&mut self, seed: SocketAddr, now_ms: u64) -> Result<(), MembershipError> {
        // A known member at that address gets its real identity so foca accepts our message as
        // addressed to it; otherwise a placeholder, which foca accepts for announces.
        let dst = self
            .records
            .values()
            .find(|r| r.identity.addr == seed)
            .map(|r| r.identity.clone())
            .unwrap_or_else(|| NodeIdentity::seed(seed));
        self.foca.announce(dst, &mut self.runtime)?;
        self.collect(now_ms);
        Ok(())
    }

    /// Handles one datagram from the network: refused unless sealed with the cluster's keys,
    /// fresh, and speaking for the node that sealed it.
    pub fn handle_packet(&mut self, packet: &[u8], now_ms: u64) -> Result<(), MembershipError> {
        let (sender, plain) = self.gossip.open(packet)?;
        if self.removed.contains(&sender) {
            self.gossip.refuse("removed");
            return Err(MembershipError::Removed(sender));
        }
        let (kind, body) = wire::open(&plain)?;
        let result = self
            .check_sender(sender, kind, body)
            .and_then(|()| match kind {
                PacketKind::Swim => self
                    .foca
                    .handle_data(body, &mut self.runtime)
                    .map_err(MembershipError::from),
                PacketKind::Leave => self.handle_leave(body, now_ms),
                PacketKind::Suspect => self.handle_notice(body),
            });
        if let Err(MembershipError::Impostor { .. }) = &result {
            self.gossip.refuse("impostor");
        }
        self.collect(now_ms);
        result
    }

    /// The node a message speaks for must be the node that sealed it: a member cannot forge
    /// another's goodbye, suspicion notice or SWIM messages.
    fn check_sender(
        &self,
        sealer: NodeId,
        kind: PacketKind,
        body: &[u8],
    ) -> Result<(), MembershipError> {
        let claims = match kind {
            PacketKind::Swim => {
                let header = SwimCodec
                    .decode_header(body)
                    .map_err(|e| WireError::Decode(e.to_string()))?;
                header.src.id
            }
            PacketKind::Leave => wire::decode::<LeaveNotice>(body)?.id,
            PacketKind::Suspect => wire::decode::<SuspectNotice>(body)?.from.id,
        };
        if claims == sealer {
            Ok(())
        } else {
            Err(MembershipError::Impostor { sealer, claims })
        }
    }

    /// Removes node `id` from the cluster for good: it is declared down, forgotten (no longer
    /// listed), and nothing it sends is accepted any more.
    pub fn remove(&mut self, id: NodeId, now_ms: u64) {
        if !self.removed.insert(id) {
            return;
        }
        self.records.remove(&id);
        self.gossip.forget(id);
        let known: Vec<NodeIdentity> = self
            .foca
            .iter_membership_state()
            .filter(|m| m.id().id == id && m.state() != State::Down)
            .map(|m| m.id().clone())
            .collect();
        for identity in known {
            let _ = self.foca.apply_many(
                std::iter::once(Member::down(identity)),
                true,
                &mut self.runtime,
            );
        }
        self.collect(now_ms);
        self.records.remove(&id);
    }

    /// Gossip datagrams refused so far, by reason.
    pub fn refused(&self) -> &Refusals {
        self.gossip.refused()
    }

    /// The keyring gossip is sealed and opened with.
    pub fn keyring(&self) -> &Keyring {
        self.gossip.keyring()
    }

    /// Replaces the keyring (a key rotation reached this node).
    pub fn set_keyring(&mut self, keyring: Keyring) {
        self.gossip.set_keyring(keyring);
    }

    /// Seals a plain datagram for `to` into the effects; a datagram that cannot be sealed is
    /// dropped (and logged), never sent in the clear.
    fn send(&mut self, to: SocketAddr, kind: PacketKind, body: &[u8]) {
        match self.gossip.seal(&wire::seal(kind, body)) {
            Ok(packet) => self.effects.packets.push((to, packet)),
            Err(e) => tracing::warn!(error = %e, "datagram not sent"),
        }
    }

    fn handle_leave(&mut self, body: &[u8], now_ms: u64) -> Result<(), MembershipError> {
        let notice: LeaveNotice = wire::decode(body)?;
        let key = (notice.id, notice.generation);
        if self.left.contains(&key) {
            return Ok(());
        }
        // Only the generation we know can leave: a stale goodbye must not take down a restart.
        let active = self
            .foca
            .iter_members()
            .map(|m| m.id())
            .find(|id| id.id == notice.id && id.generation == notice.generation)
            .cloned();
        let recorded = self
            .records
            .get(&notice.id)
            .filter(|r| r.identity.generation == notice.generation)
            .map(|r| (r.identity.clone(), r.status));
        if let Some(identity) = active {
            self.left.insert(key);
            // foca reports the member down, which `on_notification` turns into `left`.
            self.foca.apply_many(
                std::iter::once(Member::down(identity)),
                true,
                &mut self.runtime,
            )?;
        } else if let Some((identity, NodeStatus::Down)) = recorded {
            // foca's own gossip of the departure arrived first.
            self.left.insert(key);
            self.set_status(identity.clone(), NodeStatus::Left, now_ms);
            self.effects.events.push(MemberEvent::Left(identity));
        }
        Ok(())
    }

    /// A member suspects us: refute now (foca bumps our incarnation), and answer the notifier
    /// directly so that it does not wait for the refutation to spread.
    fn handle_notice(&mut self, body: &[u8]) -> Result<(), MembershipError> {
        let notice: SuspectNotice = wire::decode(body)?;
        if notice.suspect != *self.identity() || self.leaving {
            // About a previous life of ours, or someone else: nothing to refute.
            return Ok(());
        }
        self.lifeguard.was_suspected();
        let me = self.identity().clone();
        self.foca.apply_many(
            std::iter::once(Member::new(me, notice.incarnation, State::Suspect)),
            true,
            &mut self.runtime,
        )?;
        // Any message carries our new incarnation; an announce is one foca sends on request.
        self.foca.announce(notice.from, &mut self.runtime)?;
        Ok(())
    }

    /// Fires a timer that an earlier [`Effects`] asked for.
    pub fn handle_timer(&mut self, timer: Timer, now_ms: u64) -> Result<(), MembershipError> {
        let result = match timer {
            Timer::Swim(foca::Timer::ChangeSuspectToDown {
                member_id,
                incarnation,
                token,
            }) => {
                let base = self.settings.suspicion_timeout(self.bucket);
                match self.lifeguard.wait_more(member_id.id, base, now_ms) {
                    // Not yet: this node's own health says it may be the one cut off.
                    Some(more) => {
                        let timer = foca::Timer::ChangeSuspectToDown {
                            member_id,
                            incarnation,
                            token,
                        };
                        self.effects.timers.push((more, Timer::Swim(timer)));
                        Ok(())
                    }
                    None => self.foca.handle_timer(
                        foca::Timer::ChangeSuspectToDown {
                            member_id,
                            incarnation,
                            token,
                        },
                        &mut self.runtime,
                    ),
                }
            }
            Timer::Swim(timer) => self.foca.handle_timer(timer, &mut self.runtime),
            Timer::Remind(id) => {
                if let Some((suspect, incarnation)) = self.lifeguard.remind(id) {
                    self.send_notice(suspect, incarnation);
                }
                Ok(())
            }
        };
        self.collect(now_ms);
        result.map_err(MembershipError::from)
    }

    fn send_notice(&mut self, suspect: NodeIdentity, incarnation: u16) {
        let notice = SuspectNotice {
            from: self.identity().clone(),
            suspect: suspect.clone(),
            incarnation,
        };
        if let Ok(body) = wire::encode(&notice) {
            self.send(suspect.addr, PacketKind::Suspect, &body);
            self.effects
                .timers
                .push((NOTICE_INTERVAL, Timer::Remind(suspect.id)));
        }
    }

    /// This node's local-health score (0 is healthy).
    pub fn local_health(&self) -> u32 {
        self.lifeguard.health()
    }

    /// Merges a full membership state received from a peer (anti-entropy).
    pub fn apply_state(
        &mut self,
        members: Vec<Member<NodeIdentity>>,
        now_ms: u64,
    ) -> Result<(), MembershipError> {
        let result = self
            .foca
            .apply_many(members.into_iter(), true, &mut self.runtime);
        self.collect(now_ms);
        result.map_err(MembershipError::from)
    }

    /// The full membership state, for anti-entropy with a peer.
    pub fn state(&self) -> Vec<Member<NodeIdentity>> {
        self.foca.iter_membership_state().cloned().collect()
    }

    /// Digest of the membership state less the records of `left_out`: an anti-entropy round
    /// compares this, with both parties left out (each holds no record of itself, and they
    /// probe each other directly), and exchanges the states only when the digests differ.
    pub fn digest_without(&self, left_out: &[NodeId]) -> [u8; 32] {
        let mut records: Vec<Vec<u8>> = self
            .foca
            .iter_membership_state()
            .filter(|m| !left_out.contains(&m.id().id))
            .filter_map(|m| wire::encode(m).ok())
            .collect();
        // foca keeps members in no particular order.
        records.sort_unstable();
        let mut hasher = Sha256::new();
        for record in &records {
            hasher.update((record.len() as u32).to_be_bytes());
            hasher.update(record);
        }
        hasher.finalize().into()
    }

    /// Says goodbye: every live peer is told directly (so it shows us `left` at once), then foca
    /// gossips our departure. The node answers nothing afterwards.
    pub fn leave(&mut self, now_ms: u64) -> Result<(), MembershipError> {
        self.leaving = true;
        let me = self.identity().clone();
        let notice = wire::encode(&LeaveNotice {
            id: me.id,
            generation: me.generation,
        })?;
        let members: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        for addr in members {
            self.send(addr, PacketKind::Leave, &notice);
        }
        let result = self.foca.leave_cluster(&mut self.runtime);
        self.collect(now_ms);
        result.map_err(MembershipError::from)
    }

    /// Spreads `payload` to every member by piggybacking it on SWIM messages. Returns false (and
    /// sends nothing) when it is too large to ride along; the caller must use another channel.
    pub fn broadcast(&mut self, payload: &[u8], now_ms: u64) -> bool {
        if payload.is_empty() || payload.len() > MAX_BROADCAST_BYTES {
            return false;
        }
        let queued = self.foca.add_broadcast(payload).is_ok();
        // Start spreading now rather than at the next probe.
        if queued && self.foca.gossip(&mut self.runtime).is_ok() {
            self.collect(now_ms);
        }
        queued
    }

    /// Takes what the caller must do now.
    pub fn take_effects(&mut self) -> Effects {
        std::mem::take(&mut self.effects)
    }

    /// The status of `node` as recorded and since when (caller's clock, ms); None for a node
    /// never heard of. Suspicion, which foca does not notify, is not overlaid (see `nodes`).
    pub fn recorded_status(&self, node: NodeId) -> Option<(NodeStatus, u64)> {
        self.records.get(&node).map(|r| (r.status, r.since_ms))
    }

    /// Every member this node knows of, itself included, sorted by name then id.
    pub fn nodes(&self) -> Vec<NodeView> {
        let me = self.identity();
        let mut views: Vec<NodeView> = Vec::with_capacity(self.records.len() + 1);
        views.push(NodeView {
            identity: me.clone(),
            status: if self.leaving {
                NodeStatus::Left
            } else {
                NodeStatus::Ready
            },
            since_ms: 0,
            is_self: true,
        });
        // foca knows suspicion, which it does not notify; overlay it on the records.
        let suspects: BTreeSet<NodeId> = self
            .foca
            .iter_membership_state()
            .filter(|m| m.state() == State::Suspect)
            .map(|m| m.id().id)
            .collect();
        for record in self.records.values() {
            if record.identity.id == me.id {
                continue;
            }
            let status =
                if record.status == NodeStatus::Ready && suspects.contains(&record.identity.id) {
                    NodeStatus::Suspect
                } else {
                    record.status
                };
            views.push(NodeView {
                identity: record.identity.clone(),
                status,
                since_ms: record.since_ms,
                is_self: false,
            });
        }
        views.sort_by(|a, b| {
            (&a.identity.meta.name, a.identity.id).cmp(&(&b.identity.meta.name, b.identity.id))
        });
        views
    }

    /// Peers that are up and not suspected: whom pushes and relays go to. Cheaper than
    /// [`Membership::nodes`], which builds a view of every member ever seen.
    pub fn live_peers(&self) -> Vec<NodeIdentity> {
        self.foca
            .iter_members()
            .filter(|m| m.state() == State::Alive && !self.removed.contains(&m.id().id))
            .map(|m| m.id().clone())
            .collect()
    }

    /// A random live peer for the next anti-entropy round.
    pub fn sync_peer(&mut self, rng: &mut impl RngExt) -> Option<NodeIdentity> {
        let n = self.foca.num_members();
        if n == 0 {
            return None;
        }
        let pick = rng.random_range(0..n);
        self.foca.iter_members().nth(pick).map(|m| m.id().clone())
    }

    /// Addresses of members worth contacting when this node restarts: every member ever seen,
    /// departed ones included, since after a full-cluster restart they are the ones coming back.
    pub fn known_addrs(&self) -> Vec<SocketAddr> {
        let mut addrs: Vec<SocketAddr> = self
            .records
            .values()
            .filter(|r| r.identity.id != self.identity().id)
            .map(|r| r.identity.addr)
            .collect();
        addrs.sort();
        addrs.dedup();
        addrs
    }

    /// Turns what foca produced into [`Effects`] and updates the records.
    fn collect(&mut self, now_ms: u64) {
        while let Some((to, data)) = self.runtime.to_send() {
            self.send(to.addr, PacketKind::Swim, &data);
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            if let foca::Timer::ChangeSuspectToDown {
                member_id,
                incarnation,
                ..
            } = &timer
            {
                if self.lifeguard.suspect(member_id, *incarnation, now_ms) {
                    self.send_notice(member_id.clone(), *incarnation);
                }
            }
            self.effects.timers.push((after, Timer::Swim(timer)));
        }
        let mut renewed = false;
        while let Some(notification) = self.runtime.to_notify() {
            renewed |= matches!(notification, OwnedNotification::Rejoin(_));
            self.on_notification(notification, now_ms);
        }
        if renewed {
            self.announce_renewal(now_ms);
        }
        if self.lifeguard.is_suspecting() {
            let suspects: BTreeSet<(NodeId, u16)> = self
                .foca
                .iter_membership_state()
                .filter(|m| m.state() == State::Suspect)
                .map(|m| (m.id().id, m.incarnation()))
                .collect();
            self.lifeguard
                .retain(|id, incarnation| suspects.contains(&(id.id, incarnation)));
        }
        self.effects.broadcasts.extend(self.inbox.take());
        let bucket = size_bucket(self.foca.num_members() + 1);
        if bucket != self.bucket {
            // Only size-derived fields change, which foca always accepts.
            if self
                .foca
                .set_config(self.settings.foca_config(bucket))
                .is_ok()
            {
                self.bucket = bucket;
            }
        }
    }

    /// After foca renews this node's identity it waits, disconnected, for a message addressed
    /// to the new one; but peers still address the old one, and when a healed partition made
    /// every node renew at once, nobody would ever speak first. Announcing to a few members we
    /// knew as live (foca accepts an announce by address) gets their feeds, addressed to us.
    fn announce_renewal(&mut self, now_ms: u64) {
        const RENEWAL_ANNOUNCES: usize = 3;
        let me = self.foca.identity().id;
        // Ready records if there are any, else down ones (a partition that healed with
        // every node renewing at once leaves nothing but down records).
        let pick = |status| -> Vec<NodeIdentity> {
            self.records
                .values()
                .filter(|r| r.identity.id != me && r.status == status)
                .map(|r| r.identity.clone())
                .collect()
        };
        let mut known = pick(NodeStatus::Ready);
        if known.is_empty() {
            known = pick(NodeStatus::Down);
        }
        // The members after this one in id order: each renewed node asks different ones.
        let after = known.iter().position(|m| m.id > me).unwrap_or(0);
        known.rotate_left(after);
        known.truncate(RENEWAL_ANNOUNCES);
        for to in known {
            if let Err(e) = self.foca.announce(to, &mut self.runtime) {
                tracing::debug!(error = %e, "announce after renewal failed");
            }
        }
        self.collect(now_ms);
    }

    fn on_notification(&mut self, notification: OwnedNotification<NodeIdentity>, now_ms: u64) {
        match notification {
            OwnedNotification::MemberUp(identity) => {
                self.set_status(identity.clone(), NodeStatus::Ready, now_ms);
                self.effects.events.push(MemberEvent::Up(identity));
            }
            OwnedNotification::MemberDown(identity) => {
                let left = self.left.contains(&(identity.id, identity.generation));
                let status = if left {
                    NodeStatus::Left
                } else {
                    NodeStatus::Down
                };
                self.set_status(identity.clone(), status, now_ms);
                self.effects.events.push(if left {
                    MemberEvent::Left(identity)
                } else {
                    MemberEvent::Down(identity)
                });
            }
            OwnedNotification::Rename(_old, new) => {
                self.set_status(new.clone(), NodeStatus::Ready, now_ms);
                self.effects.events.push(MemberEvent::Up(new));
            }
            OwnedNotification::Active => self.effects.events.push(MemberEvent::Connected),
            OwnedNotification::Idle => self.effects.events.push(MemberEvent::Disconnected),
            OwnedNotification::Rejoin(identity) => {
                self.effects.events.push(MemberEvent::Renewed(identity))
            }
            OwnedNotification::Defunct => {}
            // A failed probe says as much about the target as about us; being suspected (see
            // `handle_notice`) says it about us.
            OwnedNotification::ProbeFailed(..) => {}
            OwnedNotification::DataReceived(header) => {
                if matches!(
                    header.message,
                    Message::Ack(_) | Message::ForwardedAck { .. }
                ) {
                    self.lifeguard.probe_answered();
                }
            }
            OwnedNotification::DataSent(_) => {}
        }
    }

    fn set_status(&mut self, identity: NodeIdentity, status: NodeStatus, now_ms: u64) {
        if identity.id == NodeId::UNKNOWN || self.removed.contains(&identity.id) {
            return;
        }
        match self.records.get_mut(&identity.id) {
            // News about an older generation (its "down" after a restart) changes nothing.
            Some(r) if r.identity.generation > identity.generation => {}
            Some(r) => {
                if r.status != status || r.identity.generation != identity.generation {
                    r.since_ms = now_ms;
                }
                r.status = status;
                r.identity = identity;
            }
            None => {
                self.records.insert(
                    identity.id,
                    Record {
                        identity,
                        status,
                        since_ms: now_ms,
                    },
                );
            }
        }
    }
}
