//! The node's event loop: one task owns the pure [`Node`], feeds it every input (datagrams,
//! timers, requests, replies, container listings, "written" notices) and carries out the effects
//! it returns. It decides nothing; the simulator drives the same `Node` the same way.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::{
    net::UdpSocket,
    sync::{mpsc, oneshot, watch},
    time::Instant,
};
use tracing::{debug, info, warn};

use super::{
    datadir::{DataDir, NodeState},
    engine::Engine,
    network::Networks,
    persist::Persister,
    quic::{Accepted, Peers},
    tls::ca::CLIENT_VALIDITY,
    trust::Trust,
};
use shoal_core::{
    api::{PeerRequest, PeerResponse, Request, Response},
    identity::NodeId,
    node::{Admission, Effects, Input, Node, NodeError, RequestId, Timer},
    routing::routes::RoutingTable,
    trust::{
        check_join, token::JoinSecret, JoinGrant, JoinRefusal, JoinRequest, JoinResponse,
        RevocationSet,
    },
};

/// What the other tasks hand to the loop.
pub enum Command {
    /// A CLI request from the local socket.
    Api {
        /// The request.
        request: Request,
        /// Where the answer goes.
        reply: oneshot::Sender<Response>,
    },
    /// A member's request over QUIC.
    Peer {
        /// Who asks (the node id in its certificate).
        from: NodeId,
        /// The request.
        request: PeerRequest,
        /// Where the answer goes.
        reply: oneshot::Sender<PeerResponse>,
    },
    /// A joiner's request to be admitted.
    Join {
        /// The request: node id, signing request, proof of the token's secret.
        request: JoinRequest,
        /// Where the answer goes.
        reply: oneshot::Sender<JoinResponse>,
    },
    /// Anything else for the node: replies to its calls, listings, persistence results.
    Input(Input),
}

/// Wall-clock time as the node counts it.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where the loop's effects go.
pub struct Outlets {
    /// The gossip socket.
    pub socket: Arc<UdpSocket>,
    /// Calls to peers.
    pub peers: Peers,
    /// The container engine, if this node runs containers.
    pub engine: Option<Engine>,
    /// Writes the desired state.
    pub persister: Persister,
    /// Where the node id and peers are kept.
    pub data: DataDir,
    /// This node's id, for the data dir's record of it.
    pub node_id: NodeId,
    /// The cluster's CA and what this node holds of the trust (to admit joiners and issue
    /// client bundles).
    pub trust: Arc<Trust>,
    /// Members' accepted connections (closed when a node is removed).
    pub accepted: Accepted,
    /// The DNS server and the kernel's routes and rules of the service networks.
    pub networks: Networks,
    /// The ingress routing table.
    pub routes: watch::Sender<Arc<RoutingTable>>,
    /// For replies to the node's calls.
    pub commands: mpsc::Sender<Command>,
}

/// Runs `node` until `shutdown` resolves (then it leaves gracefully) or it stops on its own.
pub async fn run(
    mut node: Node,
    first: Effects,
    outlets: Outlets,
    mut datagrams: mpsc::Receiver<Vec<u8>>,
    mut commands: mpsc::Receiver<Command>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    tokio::pin!(shutdown);
    let mut shell = Shell {
        outlets,
        timers: BTreeMap::new(),
        timer_seq: 0,
        next_request: 0,
        api_waiting: HashMap::new(),
        peer_waiting: HashMap::new(),
        join_waiting: HashMap::new(),
    };
    shell.carry_out(first).await?;
    loop {
        let next_timer = shell.timers.keys().next().map(|(at, _)| *at);
        let input = tokio::select! {
            _ = &mut shutdown => break,
            Some(bytes) = datagrams.recv() => Input::Datagram(bytes),
            Some(command) = commands.recv() => match shell.admit(command) {
                Some(input) => input,
                None => continue,
            },
            _ = tokio::time::sleep_until(next_timer.unwrap_or_else(far)), if next_timer.is_some() => {
                let Some(entry) = shell.timers.first_entry() else { continue };
                Input::Timer(entry.remove())
            }
        };
        let effects = node.handle(input, now_ms());
        shell.carry_out(effects).await?;
    }
    let effects = node.handle(Input::Leave, now_ms());
    shell.carry_out(effects).await?;
    Ok(())
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

struct Shell {
    outlets: Outlets,
    timers: BTreeMap<(Instant, u64), Timer>,
    timer_seq: u64,
    next_request: RequestId,
    api_waiting: HashMap<RequestId, oneshot::Sender<Response>>,
    peer_waiting: HashMap<RequestId, oneshot::Sender<PeerResponse>>,
    join_waiting: HashMap<RequestId, (JoinRequest, oneshot::Sender<JoinResponse>)>,
}

impl Shell {
    /// Turns a command into the node's input, keeping the reply channel until the answer; or
    /// answers it here when it needs the CA's key, which the pure node does not hold.
    fn admit(&mut self, command: Command) -> Option<Input> {
        self.next_request += 1;
        let id = self.next_request;
        Some(match command {
            Command::Api {
                request: Request::ClusterClientBundle { name },
                reply,
            } => {
                let _ = reply.send(self.client_bundle(&name));
                return None;
            }
            Command::Api { request, reply } => {
                self.api_waiting.insert(id, reply);
                Input::Api {
                    id,
                    request,
                    entropy: rand::random(),
                }
            }
            Command::Peer {
                from,
                request,
                reply,
            } => {
                self.peer_waiting.insert(id, reply);
                Input::Peer { id, from, request }
            }
            Command::Join { request, reply } => {
                let node = request.node;
                self.join_waiting.insert(id, (request, reply));
                Input::Admit { id, node }
            }
            Command::Input(input) => input,
        })
    }

    fn client_bundle(&self, name: &str) -> Response {
        let issued =
            self.outlets
                .trust
                .ca
                .issue_client(name, std::time::SystemTime::now(), CLIENT_VALIDITY);
        match issued {
            Ok(bundle) => {
                info!(client = %name, "issued a client bundle");
                Response::Bundle(bundle.to_pem())
            }
            Err(e) => Response::Error(format!("cannot issue a client bundle: {e}")),
        }
    }

    /// Decides a join request with what the node knows of the id, and signs the certificate.
    fn answer_join(&mut self, id: RequestId, admission: Admission) {
        let Some((request, reply)) = self.join_waiting.remove(&id) else {
            return;
        };
        let trust = &self.outlets.trust;
        let secrets: Vec<JoinSecret> = admission.secret.into_iter().collect();
        let response =
            match check_join(&request, &trust.ca.digest(), &secrets, |_| admission.status) {
                Err(refusal) => {
                    warn!(node = %request.node.short(), %refusal, "join refused");
                    JoinResponse::Refused(refusal)
                }
                Ok(()) => match trust.ca.issue_node(
                    request.node,
                    &request.csr_der,
                    std::time::SystemTime::now(),
                ) {
                    Ok(cert) => {
                        info!(node = %request.node.short(), "admitted a new node");
                        JoinResponse::Granted(Box::new(JoinGrant {
                            node_cert_der: cert.to_vec(),
                            ca_cert_der: trust.material.ca_cert_der.clone(),
                            ca_key_der: trust.material.ca_key_der.clone(),
                            keyring: admission.keyring,
                            token_secret: secrets
                                .into_iter()
                                .next()
                                .unwrap_or_else(|| trust.material.token_secret.clone()),
                        }))
                    }
                    Err(e) => JoinResponse::Refused(JoinRefusal::Malformed(e.to_string())),
                },
            };
        let _ = reply.send(response);
    }

    async fn carry_out(&mut self, effects: Effects) -> Result<(), NodeError> {
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
            admissions,
            removed,
            network,
            stopped,
        } = effects;
        let o = &self.outlets;
        for (addr, bytes) in datagrams {
            if let Err(e) = o.socket.send_to(&bytes, addr).await {
                debug!(peer = %addr, error = %e, "send failed");
            }
        }
        let now = Instant::now();
        for (after, timer) in timers {
            self.timer_seq += 1;
            self.timers.insert((now + after, self.timer_seq), timer);
        }
        for call in calls {
            o.peers.call(call, o.commands.clone());
        }
        for (id, response) in peer_replies {
            if let Some(reply) = self.peer_waiting.remove(&id) {
                let _ = reply.send(response);
            }
        }
        for (id, response) in api_replies {
            if let Some(reply) = self.api_waiting.remove(&id) {
                let _ = reply.send(response);
            }
        }
        // Before the actions: their creates may need these networks on the engine.
        if let Some(network) = network {
            if let Some(engine) = &o.engine {
                engine.set_networks(network.local.clone());
            }
            o.networks.set(network);
        }
        if !actions.is_empty() {
            match &o.engine {
                Some(engine) => engine.execute(actions),
                None => warn!("actions for a node without a container engine dropped"),
            }
        }
        if let Some(persist) = persist {
            o.persister.write(persist);
        }
        if let Some(peers) = peers {
            save_peers(o.data.clone(), peers);
        }
        if let Some(generation) = generation {
            let state = NodeState {
                id: o.node_id,
                generation,
            };
            if let Err(e) = o.data.save_state(&state) {
                warn!(error = %e, "could not persist the new generation");
            }
        }
        if let Some(removed) = removed {
            let set = RevocationSet {
                nodes: removed.clone(),
                serials: Default::default(),
            };
            o.trust.cluster.revocations().merge(&set);
            if let Err(e) = o
                .data
                .save_revocations(&o.trust.cluster.revocations().snapshot())
            {
                warn!(error = %e, "could not persist the revocations");
            }
            for node in removed {
                o.peers.forget(node);
                o.accepted.close(node);
            }
        }
        if let Some(table) = routes {
            o.routes.send_replace(table);
        }
        for (id, admission) in admissions {
            self.answer_join(id, admission);
        }
        match stopped {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

fn save_peers(data: DataDir, peers: Vec<SocketAddr>) {
    tokio::task::spawn_blocking(move || {
        if let Err(e) = data.save_peers(&peers) {
            warn!(error = %e, "could not persist peers");
        }
    });
}
