//! Node-to-node QUIC: one endpoint per node (server and client), mutual TLS pinned by the
//! fingerprints gossiped in identities, one bidirectional stream per request.
//!
//! Outgoing calls reuse one cached connection per peer (a handshake costs far more than a
//! stream), and the number of calls and of served streams in flight is bounded, so a burst of
//! news, or a peer flooding requests, costs a bounded amount of memory and tasks.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::{debug, Instrument};

use super::{
    framing,
    shell::Command,
    tls::{self, NodeCert, TrustedSet},
};
use shoal_core::{
    api::{PeerRequest, PeerResponse},
    identity::{NodeId, NodeIdentity},
    node::{Call, Input},
};

/// How long a peer request may take end to end; a dead peer must not hold a call for long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Calls to peers in flight at once; beyond it a call fails at once (the node's anti-entropy
/// repairs whatever a dropped push would have carried).
pub const MAX_CALLS_IN_FLIGHT: usize = 64;
/// Peer streams served at once.
pub const MAX_SERVED_STREAMS: usize = 256;

/// Binds the node's QUIC endpoint.
pub fn bind(
    addr: SocketAddr,
    cert: &NodeCert,
    trusted: TrustedSet,
) -> anyhow::Result<quinn::Endpoint> {
    let mut server = tls::server_config(cert, trusted)?;
    server.transport_config(transport()?);
    Ok(quinn::Endpoint::server(server, addr)?)
}

/// Both ends' transport settings: an idle connection closes after 10 s, and a cached connection
/// to a live peer is kept open between calls by keep-alives.
fn transport() -> anyhow::Result<Arc<quinn::TransportConfig>> {
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(Duration::from_secs(10).try_into()?));
    transport.keep_alive_interval(Some(Duration::from_secs(4)));
    Ok(Arc::new(transport))
}

/// Serves peers' requests until the endpoint closes.
pub async fn serve(endpoint: quinn::Endpoint, commands: mpsc::Sender<Command>) {
    let streams = Arc::new(Semaphore::new(MAX_SERVED_STREAMS));
    while let Some(incoming) = endpoint.accept().await {
        let commands = commands.clone();
        let streams = streams.clone();
        tokio::spawn(
            async move {
                let result = async {
                    let connection = incoming.await?;
                    while let Ok((send, recv)) = connection.accept_bi().await {
                        let Ok(permit) = streams.clone().try_acquire_owned() else {
                            debug!("too many peer streams in flight; refusing one");
                            continue;
                        };
                        let commands = commands.clone();
                        tokio::spawn(
                            async move {
                                if let Err(e) = answer(send, recv, commands).await {
                                    debug!(error = %e, "peer stream failed");
                                }
                                drop(permit);
                            }
                            .in_current_span(),
                        );
                    }
                    anyhow::Ok(())
                }
                .await;
                if let Err(e) = result {
                    debug!(error = %e, "peer connection refused or failed");
                }
            }
            .in_current_span(),
        );
    }
}

async fn answer(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    commands: mpsc::Sender<Command>,
) -> anyhow::Result<()> {
    let read = tokio::time::timeout(REQUEST_TIMEOUT, framing::read::<PeerRequest, _>(&mut recv))
        .await
        .map_err(|_| anyhow::anyhow!("the peer sent no request within {REQUEST_TIMEOUT:?}"))?;
    let response = match read {
        Ok(Some(request)) => {
            let (reply, answer) = oneshot::channel();
            commands.send(Command::Peer { request, reply }).await?;
            answer.await?
        }
        Ok(None) => return Ok(()),
        Err(e) => PeerResponse::Error(e.to_string()),
    };
    framing::write(&mut send, response).await?;
    send.finish()?;
    // Let the peer read the answer before the stream is dropped.
    let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
    Ok(())
}

/// The node's calls to peers: a connection cache and a bound on calls in flight.
#[derive(Clone)]
pub struct Peers {
    endpoint: quinn::Endpoint,
    cert: Arc<NodeCert>,
    /// By peer and process generation: a restarted peer is a new connection, not a stale one whose
    /// packets the new process drops.
    connections: Arc<Mutex<HashMap<(NodeId, u64), quinn::Connection>>>,
    in_flight: Arc<Semaphore>,
}

impl Peers {
    /// Calls go out through `endpoint`, authenticated as `cert`.
    pub fn new(endpoint: quinn::Endpoint, cert: Arc<NodeCert>) -> Self {
        Peers {
            endpoint,
            cert,
            connections: Arc::default(),
            in_flight: Arc::new(Semaphore::new(MAX_CALLS_IN_FLIGHT)),
        }
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
                self.forget(peer, &connection);
            }
            result
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow::anyhow!("peer {addr} did not answer within {REQUEST_TIMEOUT:?}"))?
    }

    async fn connection(&self, peer: &NodeIdentity) -> anyhow::Result<quinn::Connection> {
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
        let mut config = tls::client_config(&self.cert, peer.meta.cert_sha256)?;
        config.transport_config(transport()?);
        let connection = self
            .endpoint
            .connect_with(config, peer.meta.quic_addr, tls::SERVER_NAME)?
            .await?;
        if let Ok(mut cache) = self.connections.lock() {
            // Closed connections (peers that went away) and older generations of this peer go.
            cache.retain(|(id, _), c| c.close_reason().is_none() && *id != peer.id);
            cache.insert(key, connection.clone());
        }
        Ok(connection)
    }

    fn forget(&self, peer: &NodeIdentity, connection: &quinn::Connection) {
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
