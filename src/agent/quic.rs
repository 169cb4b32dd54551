//! Node-to-node and remote-CLI QUIC: one endpoint per node (server and client), mutual TLS under
//! the cluster CA, one bidirectional stream per request.
//!
//! Every accepted connection is authorized before anything is read from it
//! ([`ClusterTrust::authorize`]): a member on the peer protocol (its node id read from its
//! certificate), a CLI bundle's holder on the CLI protocol, or a joiner on the join protocol,
//! who may send one join request and nothing else. Outgoing calls to members reuse one cached
//! connection per peer, and require the certificate of that very node. The number of calls and
//! of served streams in flight is bounded, so a burst of news, or a peer flooding requests,
//! costs a bounded amount of memory and tasks.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use rustls::pki_types::CertificateDer;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::{debug, Instrument};

use super::{
    framing,
    shell::Command,
    tls::{
        ca::{node_server_name, TlsIdentity},
        cluster::{quic_client_config, quic_server_config, ClusterTrust, Peer},
        SERVER_NAME,
    },
};
use shoal_core::{
    api::{PeerRequest, PeerResponse, Request, Response},
    identity::{NodeId, NodeIdentity},
    node::{Call, Input},
    trust::{JoinRequest, JoinResponse},
};

/// How long a peer request may take end to end; a dead peer must not hold a call for long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Calls to peers in flight at once; beyond it a call fails at once (the node's anti-entropy
/// repairs whatever a dropped push would have carried).
pub const MAX_CALLS_IN_FLIGHT: usize = 64;
/// Peer streams served at once.
pub const MAX_SERVED_STREAMS: usize = 256;

/// Both ends' transport settings: an idle connection closes after 30 s (a cached connection to
/// a peer in use stays open; one to a peer that went away is dropped).
fn transport() -> anyhow::Result<Arc<quinn::TransportConfig>> {
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(Duration::from_secs(30).try_into()?));
    Ok(Arc::new(transport))
}

/// Binds the node's QUIC endpoint, serving the peer, CLI and join protocols as `identity`.
pub fn bind(
    addr: SocketAddr,
    trust: &ClusterTrust,
    identity: &TlsIdentity,
) -> anyhow::Result<quinn::Endpoint> {
    let mut server = quic_server_config(trust.server_config(identity)?)?;
    server.transport_config(transport()?);
    Ok(quinn::Endpoint::server(server, addr)?)
}

/// Members' connections this node accepted, by node id, so that a removed node's are closed at
/// once rather than when they idle out.
#[derive(Clone, Default)]
pub struct Accepted(Arc<Mutex<HashMap<NodeId, Vec<quinn::Connection>>>>);

impl Accepted {
    fn add(&self, node: NodeId, connection: quinn::Connection) {
        if let Ok(mut all) = self.0.lock() {
            let list = all.entry(node).or_default();
            list.retain(|c| c.close_reason().is_none());
            list.push(connection);
        }
    }

    /// Closes every connection of `node`.
    pub fn close(&self, node: NodeId) {
        if let Ok(mut all) = self.0.lock() {
            for c in all.remove(&node).unwrap_or_default() {
                c.close(1u32.into(), b"removed from the cluster");
            }
        }
    }
}

fn alpn_and_certs(
    connection: &quinn::Connection,
) -> (Option<Vec<u8>>, Option<Vec<CertificateDer<'static>>>) {
    let alpn = connection
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol);
    let certs = connection
        .peer_identity()
        .and_then(|i| i.downcast::<Vec<CertificateDer<'static>>>().ok())
        .map(|b| *b);
    (alpn, certs)
}

/// Serves members', CLI clients' and joiners' requests until the endpoint closes.
pub async fn serve(
    endpoint: quinn::Endpoint,
    trust: ClusterTrust,
    accepted: Accepted,
    commands: mpsc::Sender<Command>,
) {
    let streams = Arc::new(Semaphore::new(MAX_SERVED_STREAMS));
    while let Some(incoming) = endpoint.accept().await {
        let commands = commands.clone();
        let streams = streams.clone();
        let trust = trust.clone();
        let accepted = accepted.clone();
        tokio::spawn(
            async move {
                let connection = match incoming.await {
                    Ok(c) => c,
                    Err(e) => {
                        debug!(error = %e, "QUIC handshake refused or failed");
                        return;
                    }
                };
                let (alpn, certs) = alpn_and_certs(&connection);
                let peer = match trust.authorize(alpn.as_deref(), certs.as_deref()) {
                    Ok(peer) => peer,
                    Err(e) => {
                        debug!(remote = %connection.remote_address(), error = %e,
                            "QUIC connection refused");
                        connection.close(1u32.into(), e.to_string().as_bytes());
                        return;
                    }
                };
                if let Peer::Node(id) = &peer {
                    accepted.add(*id, connection.clone());
                }
                if let Peer::Joiner = peer {
                    if let Ok((send, recv)) = connection.accept_bi().await {
                        if let Err(e) = answer_join(send, recv, &commands).await {
                            debug!(error = %e, "join request failed");
                        }
                    }
                    return;
                }
                while let Ok((send, recv)) = connection.accept_bi().await {
                    let Ok(permit) = streams.clone().try_acquire_owned() else {
                        debug!("too many streams in flight; refusing one");
                        continue;
                    };
                    let commands = commands.clone();
                    let peer = peer.clone();
                    tokio::spawn(
                        async move {
                            let result = match peer {
                                Peer::Node(from) => answer_peer(send, recv, from, &commands).await,
                                _ => answer_cli(send, recv, &commands).await,
                            };
                            if let Err(e) = result {
                                debug!(error = %e, "stream failed");
                            }
                            drop(permit);
                        }
                        .in_current_span(),
                    );
                }
            }
            .in_current_span(),
        );
    }
}

async fn read_timed<T: serde::de::DeserializeOwned>(
    recv: &mut quinn::RecvStream,
) -> anyhow::Result<Result<Option<T>, shoal_core::api::FrameError>> {
    tokio::time::timeout(REQUEST_TIMEOUT, framing::read::<T, _>(recv))
        .await
        .map_err(|_| anyhow::anyhow!("no request within {REQUEST_TIMEOUT:?}"))
}

async fn finish(mut send: quinn::SendStream) -> anyhow::Result<()> {
    send.finish()?;
    // Let the other side read the answer before the stream is dropped.
    let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
    Ok(())
}

async fn answer_peer(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    from: NodeId,
    commands: &mpsc::Sender<Command>,
) -> anyhow::Result<()> {
    let response = match read_timed::<PeerRequest>(&mut recv).await? {
        Ok(Some(request)) => {
            let (reply, answer) = oneshot::channel();
            let command = Command::Peer {
                from,
                request,
                reply,
            };
            commands.send(command).await?;
            answer.await?
        }
        Ok(None) => return Ok(()),
        Err(e) => PeerResponse::Error(e.to_string()),
    };
    framing::write(&mut send, response).await?;
    finish(send).await
}

/// A remote CLI's request: the same requests, answered the same way, as the local socket's.
async fn answer_cli(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    commands: &mpsc::Sender<Command>,
) -> anyhow::Result<()> {
    let response = match read_timed::<Request>(&mut recv).await? {
        Ok(Some(request)) => {
            let (reply, answer) = oneshot::channel();
            commands.send(Command::Api { request, reply }).await?;
            answer
                .await
                .unwrap_or_else(|_| Response::Error("agent is shutting down".into()))
        }
        Ok(None) => return Ok(()),
        Err(e) => Response::Error(e.to_string()),
    };
    framing::write(&mut send, response).await?;
    finish(send).await
}

async fn answer_join(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    commands: &mpsc::Sender<Command>,
) -> anyhow::Result<()> {
    let Ok(Some(request)) = read_timed::<JoinRequest>(&mut recv).await? else {
        return Ok(());
    };
    let (reply, answer) = oneshot::channel();
    commands.send(Command::Join { request, reply }).await?;
    let response: JoinResponse = answer.await?;
    framing::write(&mut send, response).await?;
    finish(send).await
}

/// The node's calls to peers: a connection cache and a bound on calls in flight.
#[derive(Clone)]
pub struct Peers {
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    /// By peer and process generation: a restarted peer is a new connection, not a stale one
    /// whose packets the new process drops.
    connections: Arc<Mutex<HashMap<(NodeId, u64), quinn::Connection>>>,
    in_flight: Arc<Semaphore>,
}

impl Peers {
    /// Calls go out through `endpoint`, authenticated as `identity`, to members of `trust`.
    pub fn new(
        endpoint: quinn::Endpoint,
        trust: &ClusterTrust,
        identity: &TlsIdentity,
    ) -> anyhow::Result<Self> {
        let mut config = quic_client_config(trust.peer_client_config(identity)?)?;
        config.transport_config(transport()?);
        Ok(Peers {
            endpoint,
            config,
            connections: Arc::default(),
            in_flight: Arc::new(Semaphore::new(MAX_CALLS_IN_FLIGHT)),
        })
    }

    /// Makes `call` in the background; its result comes back to the node as [`Input::Reply`].
    pub fn call(&self, call: Call, commands: mpsc::Sender<Command>) {
        let Call { id, to, request } = call;
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            let failed = Input::Reply {
                call: id,
                result: Err(format!("more than {MAX_CALLS_IN_FLIGHT} calls in flight")),
            };
            // Never block the node loop on its own queue.
            let _ = commands.try_send(Command::Input(failed));
            return;
        };
        let peers = self.clone();
        let span = tracing::debug_span!("call", peer = %to.id.short());
        tokio::spawn(
            async move {
                let result = peers
                    .request(&to, request)
                    .await
                    .map_err(|e| format!("{e:#}"));
                drop(permit);
                let _ = commands
                    .send(Command::Input(Input::Reply { call: id, result }))
                    .await;
            }
            .instrument(span),
        );
    }

    /// Drops the cached connections to `node` (it was removed from the cluster).
    pub fn forget(&self, node: NodeId) {
        if let Ok(mut cache) = self.connections.lock() {
            cache.retain(|(id, _), c| {
                if *id == node {
                    c.close(1u32.into(), b"removed from the cluster");
                }
                *id != node
            });
        }
    }

    /// One request and its answer, over the cached connection to the peer (made if needed).
    async fn request(
        &self,
        peer: &NodeIdentity,
        request: PeerRequest,
    ) -> anyhow::Result<PeerResponse> {
        let addr = peer.meta.quic_addr;
        let exchange = async {
            let connection = self.connection(peer).await?;
            let result = async {
                let (mut send, mut recv) = connection.open_bi().await?;
                framing::write(&mut send, request).await?;
                send.finish()?;
                framing::read::<PeerResponse, _>(&mut recv)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("peer closed the stream without answering"))
            }
            .await;
            if result.is_err() {
                self.forget_connection(peer, &connection);
            }
            if peer.id == NodeId::UNKNOWN {
                connection.close(0u32.into(), b"done");
            }
            result
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow::anyhow!("peer {addr} did not answer within {REQUEST_TIMEOUT:?}"))?
    }

    async fn connection(&self, peer: &NodeIdentity) -> anyhow::Result<quinn::Connection> {
        if peer.id == NodeId::UNKNOWN {
            // A seed whose id is not known yet: any member of the cluster will do. Not cached,
            // as nothing identifies it yet.
            let connection = self
                .endpoint
                .connect_with(self.config.clone(), peer.meta.quic_addr, SERVER_NAME)?
                .await?;
            return Ok(connection);
        }
        let key = (peer.id, peer.generation);
        let cached = self
            .connections
            .lock()
            .ok()
            .and_then(|c| c.get(&key).cloned())
            .filter(|c| c.close_reason().is_none());
        if let Some(connection) = cached {
            return Ok(connection);
        }
        // The server must hold the certificate of this very node, not just any member's.
        let name = node_server_name(peer.id);
        let connection = self
            .endpoint
            .connect_with(self.config.clone(), peer.meta.quic_addr, &name)?
            .await?;
        if let Ok(mut cache) = self.connections.lock() {
            // Closed connections (peers that went away) and older generations of this peer go.
            cache.retain(|(id, _), c| c.close_reason().is_none() && *id != peer.id);
            cache.insert(key, connection.clone());
        }
        Ok(connection)
    }

    fn forget_connection(&self, peer: &NodeIdentity, connection: &quinn::Connection) {
        if let Ok(mut cache) = self.connections.lock() {
            let key = (peer.id, peer.generation);
            if cache
                .get(&key)
                .is_some_and(|c| c.stable_id() == connection.stable_id())
            {
                cache.remove(&key);
            }
        }
    }
}
