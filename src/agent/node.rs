//! The node loop: one task owns the [`Membership`] state machine and feeds it datagrams, timers,
//! API requests and anti-entropy results, then carries out what it returns.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rand::rngs::StdRng;
use tokio::{
    net::UdpSocket,
    sync::{mpsc, oneshot, watch},
    time::Instant,
};
use tracing::{debug, info, warn, Instrument};

use super::{
    datadir::{DataDir, NodeState},
    quic,
    tls::{NodeCert, TrustedSet},
};
use super::{
    persist::Persister,
    workload::{Outcome, Workload},
};
use shoal_core::{
    api::{PeerRequest, PeerResponse, Request, Response},
    desired::state::DesiredState,
    identity::{NodeId, NodeIdentity},
    join::{JoinPlan, JoinStep},
    membership::{Effects, MemberEvent, Membership, NodeStatus, Timer},
    observed::NodeReport,
    replica::Replica,
    routing::routes::{routing_table, RoutingTable},
    wire,
};

/// What other tasks ask of the node loop.
pub enum Command {
    /// A CLI request from the local socket.
    Api {
        /// The request.
        request: Request,
        /// Where the answer goes.
        reply: oneshot::Sender<Response>,
    },
    /// A peer's request over QUIC.
    Peer {
        /// The request.
        request: PeerRequest,
        /// Where the answer goes.
        reply: oneshot::Sender<PeerResponse>,
    },
    /// News from the container engine or the executor.
    Workload(Outcome),
    /// A peer's answer to an anti-entropy round we started.
    SyncAnswer {
        /// The peer, to send our desired state to if it lacks some.
        peer: NodeIdentity,
        /// Its membership.
        members: Vec<foca::Member<NodeIdentity>>,
        /// Digest of its desired state.
        desired_digest: [u8; 32],
        /// Its desired state, when our digests differed.
        desired: Option<Box<DesiredState>>,
        /// Reports it has that are newer than ours.
        reports: Vec<NodeReport>,
        /// Versions of the reports it holds, to send back what it lacks.
        observed: BTreeMap<NodeId, (u64, u64)>,
    },
}

/// Reconcile at least this often, even when nothing seems to change.
const RECONCILE_PERIOD: Duration = Duration::from_secs(1);
/// Never reconcile more often than this: a burst of news becomes one round.
const RECONCILE_MIN_GAP: Duration = Duration::from_millis(50);

/// Why the node loop stopped on its own.
#[derive(Debug, thiserror::Error)]
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

/// Everything the node loop needs, built by [`super::run`].
pub struct Node {
    pub(super) membership: Membership<StdRng>,
    pub(super) socket: Arc<UdpSocket>,
    pub(super) endpoint: quinn::Endpoint,
    pub(super) cert: Arc<NodeCert>,
    pub(super) trusted: TrustedSet,
    pub(super) data: DataDir,
    pub(super) state: NodeState,
    pub(super) commands_tx: mpsc::Sender<Command>,
    pub(super) sync_period: Duration,
    pub(super) replica: Replica,
    pub(super) persister: Persister,
    /// Remote merges changed the desired state since it was last written.
    pub(super) desired_dirty: bool,
    /// Replicas of this node and every node's reports.
    pub(super) workload: Workload,
    /// Something the reconciler looks at changed.
    pub(super) reconcile_due: bool,
    /// The node has joined (or given up joining) and synced once: its view is worth acting on.
    pub(super) settled: bool,
    /// The ingress routing table, for the ingress listeners.
    pub(super) routes: watch::Sender<Arc<RoutingTable>>,
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Node {
    /// Runs until `shutdown` resolves (then leaves gracefully) or the join fails.
    pub async fn run(
        mut self,
        mut packets: mpsc::Receiver<Vec<u8>>,
        mut commands: mpsc::Receiver<Command>,
        mut join: JoinPlan,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), NodeError> {
        tokio::pin!(shutdown);
        let mut timers: BTreeMap<(Instant, u64), Timer> = BTreeMap::new();
        let mut timer_seq = 0u64;
        let mut next_join = Some(Instant::now());
        let mut sync_tick = tokio::time::interval(self.sync_period);
        sync_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut peers_dirty = false;
        let mut persist_tick = tokio::time::interval(Duration::from_secs(1));
        let mut reconcile_tick = tokio::time::interval(RECONCILE_PERIOD);
        reconcile_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reconcile_at: Option<Instant> = None;
        let mut settle_tick = tokio::time::interval(Duration::from_millis(300));
        let mut last_reconcile = Instant::now();

        loop {
            let next_timer = timers.keys().next().map(|(at, _)| *at);
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                _ = &mut shutdown => break,
                Some(packet) = packets.recv() => {
                    if let Err(e) = self.membership.handle_packet(&packet, now_ms()) {
                        // Garbage, a stale identity or a packet for a previous generation: drop it.
                        debug!(error = %e, "dropped datagram");
                    }
                }
                Some(command) = commands.recv() => self.on_command(command),
                _ = tokio::time::sleep_until(next_timer.unwrap_or(far)), if next_timer.is_some() => {
                    let now = Instant::now();
                    while let Some(entry) = timers.first_entry() {
                        if entry.key().0 > now {
                            break;
                        }
                        let timer = entry.remove();
                        if let Err(e) = self.membership.handle_timer(timer, now_ms()) {
                            debug!(error = %e, "timer failed");
                        }
                    }
                }
                _ = tokio::time::sleep_until(next_join.unwrap_or(far)), if next_join.is_some() => {
                    next_join = None;
                    let was_alone = join.is_alone();
                    match join.poll(now_ms(), self.membership.is_connected()) {
                        JoinStep::Announce(targets, next) => {
                            if join.is_alone() && !was_alone {
                                self.settled = true;
                                self.reconcile_due = true;
                                warn!(?targets, "no remembered peer answered; running alone and retrying every {:?}", next);
                            }
                            for target in targets {
                                if let Err(e) = self.membership.join(target, now_ms()) {
                                    debug!(%target, error = %e, "announce failed");
                                }
                            }
                            next_join = Some(Instant::now() + next);
                        }
                        JoinStep::Done => {}
                        JoinStep::Failed { targets, waited } => {
                            return Err(NodeError::JoinFailed { targets, waited });
                        }
                    }
                }
                _ = sync_tick.tick() => self.start_sync(),
                // Until the first exchange succeeds (a peer may not trust our certificate for a
                // moment after we join), retry it quickly: reconciling waits for it.
                _ = settle_tick.tick(), if !self.settled && self.membership.is_connected() => {
                    self.start_sync();
                }
                _ = reconcile_tick.tick() => self.reconcile_due = true,
                _ = tokio::time::sleep_until(reconcile_at.unwrap_or(far)), if reconcile_at.is_some() => {
                    reconcile_at = None;
                    last_reconcile = Instant::now();
                    if let Some(wake) = self.reconcile() {
                        reconcile_at = Some(wake);
                    }
                }
                _ = persist_tick.tick(), if peers_dirty || self.desired_dirty => {
                    if self.desired_dirty {
                        self.desired_dirty = false;
                        match wire::encode(self.replica.state()) {
                            Ok(bytes) => self.persister.write_later(bytes),
                            Err(e) => warn!(error = %e, "cannot encode the desired state"),
                        }
                    }
                    peers_dirty = false;
                    let data = self.data.clone();
                    let peers = self.membership.known_addrs();
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = data.save_peers(&peers) {
                            warn!(error = %e, "could not persist peers");
                        }
                    });
                }
            }

            let effects = self.membership.take_effects();
            if !effects.events.is_empty() {
                peers_dirty = true;
                self.reconcile_due = true;
            }
            if self.reconcile_due {
                self.reconcile_due = false;
                // At most one round per RECONCILE_MIN_GAP: a burst of news is one round.
                let at = (last_reconcile + RECONCILE_MIN_GAP).max(Instant::now());
                reconcile_at = Some(reconcile_at.map_or(at, |t| t.min(at)));
            }
            if effects.events.contains(&MemberEvent::Connected) {
                // A full exchange right away, so we do not wait for gossip to fill our view.
                self.start_sync();
            }
            self.carry_out(effects, &mut timers, &mut timer_seq).await;
        }

        info!("leaving the cluster");
        if let Err(e) = self.membership.leave(now_ms()) {
            warn!(error = %e, "leave failed");
        }
        let effects = self.membership.take_effects();
        self.carry_out(effects, &mut timers, &mut timer_seq).await;
        self.endpoint.close(0u32.into(), b"leaving");
        Ok(())
    }

    async fn carry_out(
        &mut self,
        effects: Effects,
        timers: &mut BTreeMap<(Instant, u64), Timer>,
        timer_seq: &mut u64,
    ) {
        let Effects {
            packets,
            timers: new_timers,
            events,
            broadcasts,
        } = effects;
        for payload in broadcasts {
            match self.replica.receive_gossip(&payload, now_ms()) {
                Ok(changed) => {
                    self.desired_dirty |= changed;
                    self.reconcile_due |= changed;
                }
                Err(e) => debug!(error = %e, "dropped gossip item"),
            }
        }
        for (addr, data) in packets {
            if let Err(e) = self.socket.send_to(&data, addr).await {
                debug!(peer = %addr, error = %e, "send failed");
            }
        }
        let now = Instant::now();
        for (after, timer) in new_timers {
            *timer_seq += 1;
            timers.insert((now + after, *timer_seq), timer);
        }
        if events.is_empty() {
            return;
        }
        for event in events {
            self.log_event(event);
        }
        let fingerprints = self
            .membership
            .nodes()
            .into_iter()
            .filter(|v| v.status != NodeStatus::Left)
            .map(|v| v.identity.meta.cert_sha256);
        if let Ok(mut trusted) = self.trusted.write() {
            trusted.clear();
            trusted.extend(fingerprints);
        }
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
                warn!(generation = identity.generation, "the cluster declared this node down while it was alive; rejoined as a new generation");
                self.state.generation = identity.generation;
                if let Err(e) = self.data.save_state(&self.state) {
                    warn!(error = %e, "could not persist the new generation");
                }
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Api { request, reply } => self.handle_api(request, reply),
            Command::Peer { request, reply } => {
                let response = match request {
                    PeerRequest::Sync {
                        members,
                        desired_digest,
                        observed,
                    } => {
                        let ours = self.membership.state();
                        if let Err(e) = self.membership.apply_state(members, now_ms()) {
                            debug!(error = %e, "peer's membership state partly rejected");
                        }
                        let digest = self.replica.digest();
                        PeerResponse::Sync {
                            members: ours,
                            desired_digest: digest,
                            desired: (digest != desired_digest)
                                .then(|| Box::new(self.replica.state().clone())),
                            reports: self.workload.observed.newer_than(&observed),
                            observed: self.workload.observed.versions(),
                        }
                    }
                    PeerRequest::Desired(state) => {
                        let changed = self.replica.merge(*state, now_ms());
                        self.desired_dirty |= changed;
                        self.reconcile_due |= changed;
                        PeerResponse::Ack
                    }
                    PeerRequest::Reports(reports) => {
                        self.merge_reports(reports);
                        PeerResponse::Ack
                    }
                };
                let _ = reply.send(response);
            }
            Command::Workload(outcome) => match outcome {
                Outcome::Listed(containers) => {
                    self.workload.listed(containers);
                    self.reconcile_due = true;
                }
                Outcome::ListFailed(e) => {
                    if self.workload.engine_error.as_deref() != Some(e.as_str()) {
                        warn!(error = %e, "cannot list containers; replicas are not reconciled");
                    }
                    self.workload.engine_error = Some(e);
                }
                Outcome::CreateFailed { task, error } => {
                    self.workload.create_failed(&task, error);
                    self.reconcile_due = true;
                }
            },
            Command::SyncAnswer {
                peer,
                members,
                desired_digest,
                desired,
                reports,
                observed,
            } => {
                self.merge_reports(reports);
                if !self.settled {
                    info!("synced with a peer; reconciling replicas");
                    self.settled = true;
                    self.reconcile_due = true;
                }
                let theirs_lack = self.workload.observed.newer_than(&observed);
                if !theirs_lack.is_empty() {
                    self.push(vec![peer.clone()], PeerRequest::Reports(theirs_lack));
                }
                if let Err(e) = self.membership.apply_state(members, now_ms()) {
                    debug!(error = %e, "peer's membership state partly rejected");
                }
                if let Some(state) = desired {
                    let changed = self.replica.merge(*state, now_ms());
                    self.desired_dirty |= changed;
                    self.reconcile_due |= changed;
                }
                if self.replica.digest() != desired_digest {
                    // The peer lacks something we have: send it our whole state.
                    let state = Box::new(self.replica.state().clone());
                    self.push(vec![peer], PeerRequest::Desired(state));
                }
            }
        }
    }

    fn merge_reports(&mut self, reports: Vec<NodeReport>) {
        let me = self.membership.identity().id;
        for report in reports {
            // Our own report comes only from us; an echo of an older one changes nothing.
            if report.node != me && self.workload.observed.merge(report) {
                self.reconcile_due = true;
            }
        }
    }

    /// One reconciliation round: actions go to the executor, a changed report to every live
    /// peer. Returns when the reconciler wants to be woken (a restart delay ending).
    fn reconcile(&mut self) -> Option<Instant> {
        self.publish_routes();
        if !self.settled {
            // Right after start the view may hold only this node: acting on it would start every
            // slot here. Wait for the join and one full exchange with a peer.
            return None;
        }
        let me = self.membership.identity().clone();
        let views = self.membership.nodes();
        let (report, wake_ms) =
            self.workload
                .reconcile(me.id, me.generation, &views, &self.replica);
        if let Some(report) = report {
            let peers = self.live_peers();
            self.push(peers, PeerRequest::Reports(vec![report]));
        }
        wake_ms.map(|at| Instant::now() + Duration::from_millis(at.saturating_sub(now_ms())))
    }

    /// Recomputes the ingress routing table and hands it to the listeners if it changed.
    fn publish_routes(&mut self) {
        let views = self.membership.nodes();
        let table = routing_table(self.replica.services(), &self.workload.observed, &views);
        self.routes.send_if_modified(|current| {
            if **current == table {
                return false;
            }
            for c in table
                .conflicts
                .iter()
                .filter(|c| !current.conflicts.contains(c))
            {
                warn!(port = c.port, protocol = ?c.protocol, service = %c.loser,
                    published_by = %c.winner,
                    "ingress: port already published by another service; not routed");
            }
            debug!(
                tcp = table.routes.len(),
                udp = table.udp.len(),
                "ingress: routing table changed"
            );
            *current = Arc::new(table);
            true
        });
    }

    /// Sends `request` to each of `peers` in the background; the receiver yields how many
    /// acknowledged it.
    pub(super) fn push(
        &self,
        peers: Vec<NodeIdentity>,
        request: PeerRequest,
    ) -> oneshot::Receiver<usize> {
        let (done, acked) = oneshot::channel();
        let endpoint = self.endpoint.clone();
        let cert = self.cert.clone();
        tokio::spawn(
            async move {
                let mut calls = tokio::task::JoinSet::new();
                for peer in peers {
                    let request = request.clone();
                    let endpoint = endpoint.clone();
                    let cert = cert.clone();
                    calls.spawn(async move {
                        let meta = &peer.meta;
                        let result =
                            quic::call(&endpoint, &cert, meta.quic_addr, meta.cert_sha256, request)
                                .await;
                        match result {
                            Ok(PeerResponse::Ack) => true,
                            Ok(other) => {
                                debug!(peer = %peer.id.short(), answer = ?other, "push refused");
                                false
                            }
                            Err(e) => {
                                debug!(peer = %peer.id.short(), error = %e, "push failed");
                                false
                            }
                        }
                    }.in_current_span());
                }
                let mut acks = 0;
                while let Some(result) = calls.join_next().await {
                    acks += usize::from(result.unwrap_or(false));
                }
                let _ = done.send(acks);
            }
            .in_current_span(),
        );
        acked
    }

    /// Starts one push-pull membership exchange with a random live peer, in the background.
    fn start_sync(&mut self) {
        let Some(peer) = self.membership.sync_peer(&mut rand::rng()) else {
            return;
        };
        let endpoint = self.endpoint.clone();
        let cert = self.cert.clone();
        let commands = self.commands_tx.clone();
        let request = PeerRequest::Sync {
            members: self.membership.state(),
            desired_digest: self.replica.digest(),
            observed: self.workload.observed.versions(),
        };
        let meta = peer.meta.clone();
        let peer_id = peer.id.short();
        tokio::spawn(
            async move {
                match quic::call(&endpoint, &cert, meta.quic_addr, meta.cert_sha256, request).await
                {
                    Ok(PeerResponse::Sync {
                        members,
                        desired_digest,
                        desired,
                        reports,
                        observed,
                    }) => {
                        debug!(
                            members = members.len(),
                            desired_differs = desired.is_some(),
                            "synced"
                        );
                        let answer = Command::SyncAnswer {
                            peer,
                            members,
                            desired_digest,
                            desired,
                            reports,
                            observed,
                        };
                        let _ = commands.send(answer).await;
                    }
                    Ok(PeerResponse::Ack) => debug!("peer answered sync with a bare ack"),
                    Ok(PeerResponse::Error(e)) => debug!(error = %e, "peer refused sync"),
                    Err(e) => debug!(error = %e, "sync failed"),
                }
            }
            .instrument(tracing::debug_span!("sync", peer = %peer_id)),
        );
    }
}
