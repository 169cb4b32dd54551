//! Node-to-node QUIC: one endpoint per node (server and client), mutual TLS pinned by the
//! fingerprints gossiped in identities, one bidirectional stream per request.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, Instrument};

use super::{
    framing,
    node::Command,
    tls::{self, NodeCert, TrustedSet},
};
use shoal_core::api::{PeerRequest, PeerResponse};

/// How long a peer request may take end to end; a dead peer must not hold a task for long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Binds the node's QUIC endpoint.
pub fn bind(
    addr: SocketAddr,
    cert: &NodeCert,
    trusted: TrustedSet,
) -> anyhow::Result<quinn::Endpoint> {
    let mut server = tls::server_config(cert, trusted)?;
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(Duration::from_secs(10).try_into()?));
    server.transport_config(Arc::new(transport));
    Ok(quinn::Endpoint::server(server, addr)?)
}

/// Serves peers' requests until the endpoint closes.
pub async fn serve(endpoint: quinn::Endpoint, commands: mpsc::Sender<Command>) {
    while let Some(incoming) = endpoint.accept().await {
        let commands = commands.clone();
        tokio::spawn(
            async move {
                let result = async {
                    let connection = incoming.await?;
                    while let Ok((send, recv)) = connection.accept_bi().await {
                        let commands = commands.clone();
                        tokio::spawn(
                            async move {
                                if let Err(e) = answer(send, recv, commands).await {
                                    debug!(error = %e, "peer stream failed");
                                }
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
    let response = match framing::read::<PeerRequest, _>(&mut recv).await {
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

/// Sends one request to the peer at `addr`, whose certificate must hash to `fingerprint`.
pub async fn call(
    endpoint: &quinn::Endpoint,
    cert: &NodeCert,
    addr: SocketAddr,
    fingerprint: [u8; 32],
    request: PeerRequest,
) -> anyhow::Result<PeerResponse> {
    let config = tls::client_config(cert, fingerprint)?;
    let exchange = async {
        let connection = endpoint
            .connect_with(config, addr, tls::SERVER_NAME)?
            .await?;
        let (mut send, mut recv) = connection.open_bi().await?;
        framing::write(&mut send, request).await?;
        send.finish()?;
        let response = framing::read::<PeerResponse, _>(&mut recv)
            .await?
            .ok_or_else(|| anyhow::anyhow!("peer closed the stream without answering"))?;
        connection.close(0u32.into(), b"done");
        anyhow::Ok(response)
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("peer {addr} did not answer within {REQUEST_TIMEOUT:?}"))?
}
