//! How an agent gets its cluster's trust before it starts: loaded from the data dir (a restart
//! needs no token), made anew for the first node of a new cluster, or obtained by joining with a
//! token (design §7; docs/security.md).
//!
//! The join: the agent generates its key pair and a signing request, dials a seed's QUIC port on
//! the join protocol with a TLS client that accepts only a server whose chain ends in the CA
//! the token names, and sends its node id, the request and a proof of the token's secret. The
//! member that admits it answers with the node's certificate, the CA (certificate and key), the
//! gossip keyring and the join secret, which the agent writes to `trust/` before it starts.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tracing::{info, warn};

use super::{
    datadir::{DataDir, TrustMaterial},
    framing,
    tls::{
        ca::{generate_key, node_csr, ClusterCa, TlsIdentity},
        cluster::{join_client_config, quic_client_config, ClusterTrust, Revocations},
        SERVER_NAME,
    },
    AgentError,
};
use shoal_core::{
    identity::NodeId,
    seal::{GossipKey, Keyring},
    trust::{
        grant_matches_token,
        token::{join_proof, JoinSecret, JoinToken},
        JoinRequest, JoinResponse, SecretBytes,
    },
};

/// What a member holds, ready to use.
pub struct Trust {
    /// The files of `trust/`.
    pub material: TrustMaterial,
    /// The CA, to sign joiners' certificates and client bundles.
    pub ca: Arc<ClusterCa>,
    /// Verifies peers and CLI clients under the CA, refusing what is revoked.
    pub cluster: ClusterTrust,
    /// This node's certificate chain and key.
    pub identity: Arc<TlsIdentity>,
    /// For the first node of a new cluster: the gossip key and join secret to write into the
    /// desired state.
    pub init: Option<(GossipKey, JoinSecret)>,
}

/// How the agent was asked to start, as far as trust goes.
pub struct Start<'a> {
    /// This node's id.
    pub id: NodeId,
    /// The join token (`--token`, `SHOAL_TOKEN`).
    pub token: Option<&'a str>,
    /// The `--join` seeds (gossip addresses; QUIC is on the next port).
    pub seeds: &'a [SocketAddr],
    /// Whether the data dir remembers peers (it was part of a cluster before).
    pub has_peers: bool,
    /// How long to keep trying the seeds.
    pub timeout: Duration,
}

/// Loads, creates or obtains this node's trust.
pub async fn establish(data: &DataDir, start: Start<'_>) -> Result<Trust, AgentError> {
    let data_err = |e: &dyn std::fmt::Display| AgentError::Trust(format!("{e}"));
    if let Some(material) = data.load_trust().map_err(|e| data_err(&e))? {
        if start.token.is_some() {
            info!("this node is already a member; the join token is not needed and was ignored");
        }
        return ready(data, material, None);
    }
    let material = match start.token {
        Some(token) => {
            let token: JoinToken = token
                .parse()
                .map_err(|e| AgentError::Trust(format!("the join token is malformed: {e}")))?;
            if start.seeds.is_empty() {
                return Err(AgentError::Trust(
                    "a join token was given but no --join seed to present it to".into(),
                ));
            }
            join(start.id, &token, start.seeds, start.timeout).await?
        }
        None if !start.seeds.is_empty() || start.has_peers => {
            return Err(AgentError::Trust(
                "this node is not a member of the cluster yet: joining needs the cluster's \
                 token, which `shoal cluster join-token` prints on any member. Start it with \
                 --token TOKEN (or SHOAL_TOKEN)"
                    .into(),
            ))
        }
        None => return found(data, start.id),
    };
    data.save_trust(&material)
        .map_err(|e| data_err(&format!("saving the trust material: {e}")))?;
    info!("joined: certificate, CA and keys written to the data dir; restarts need no token");
    ready(data, material, None)
}

/// The first node of a new cluster: its CA, gossip key, join secret and certificate.
fn found(data: &DataDir, id: NodeId) -> Result<Trust, AgentError> {
    let tls = |e: super::tls::TlsError| AgentError::Trust(e.to_string());
    let now = std::time::SystemTime::now();
    let ca = ClusterCa::generate("shoal", now).map_err(tls)?;
    let key = generate_key().map_err(tls)?;
    let cert = ca.issue_node_for_key(id, &key, now).map_err(tls)?;
    let gossip_key = GossipKey(rand::random());
    let secret = JoinSecret(rand::random());
    let material = TrustMaterial {
        ca_cert_der: ca.cert_der().to_vec(),
        ca_key_der: SecretBytes(ca.key_der()),
        node_cert_der: cert.to_vec(),
        node_key_der: SecretBytes(key.serialize_der()),
        keyring: Keyring::new(1, gossip_key.clone()),
        token_secret: secret.clone(),
    };
    data.save_trust(&material)
        .map_err(|e| AgentError::Trust(format!("saving the new cluster's trust: {e}")))?;
    let token = JoinToken {
        ca: ca.digest(),
        secret: secret.clone(),
    };
    info!(token = %token.reveal(), "new cluster: its CA, gossip key and join token were created; \
        other nodes join with `shoal agent --join THIS_ADDRESS --token TOKEN`");
    ready(data, material, Some((gossip_key, secret)))
}

fn ready(
    data: &DataDir,
    material: TrustMaterial,
    init: Option<(GossipKey, JoinSecret)>,
) -> Result<Trust, AgentError> {
    let tls = |e: super::tls::TlsError| AgentError::Trust(e.to_string());
    let ca = ClusterCa::from_der(&material.ca_cert_der, &material.ca_key_der.0).map_err(tls)?;
    let revoked = data
        .load_revocations()
        .map_err(|e| AgentError::Trust(e.to_string()))?;
    let cluster =
        ClusterTrust::new(&material.ca_cert_der, Revocations::new(revoked)).map_err(tls)?;
    let identity = TlsIdentity::new(
        &material.node_cert_der,
        &material.ca_cert_der,
        &material.node_key_der.0,
    );
    Ok(Trust {
        material,
        ca: Arc::new(ca),
        cluster,
        identity: Arc::new(identity),
        init,
    })
}

/// Presents the token to the seeds until one admits this node or the time runs out.
async fn join(
    id: NodeId,
    token: &JoinToken,
    seeds: &[SocketAddr],
    timeout: Duration,
) -> Result<TrustMaterial, AgentError> {
    let tls = |e: super::tls::TlsError| AgentError::Trust(e.to_string());
    let key = generate_key().map_err(tls)?;
    let csr = node_csr(&key, id).map_err(tls)?;
    let request = JoinRequest {
        node: id,
        proof: join_proof(token, id, &csr),
        csr_der: csr,
    };
    let config = quic_client_config(join_client_config(token.ca).map_err(tls)?).map_err(tls)?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::from("no seed answered");
    loop {
        for seed in seeds {
            let quic = SocketAddr::new(seed.ip(), seed.port().wrapping_add(1));
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let wait = left.clamp(Duration::from_millis(500), Duration::from_secs(5));
            match ask(config.clone(), quic, &request, wait).await {
                Ok(JoinResponse::Granted(grant)) => {
                    if !grant_matches_token(&grant, token) {
                        return Err(AgentError::Trust(format!(
                            "{seed} answered with a CA other than the one the token names"
                        )));
                    }
                    return Ok(TrustMaterial {
                        ca_cert_der: grant.ca_cert_der.clone(),
                        ca_key_der: grant.ca_key_der.clone(),
                        node_cert_der: grant.node_cert_der.clone(),
                        node_key_der: SecretBytes(key.serialize_der()),
                        keyring: grant.keyring.clone(),
                        token_secret: grant.token_secret.clone(),
                    });
                }
                // A refusal is final: retrying with the same token changes nothing.
                Ok(JoinResponse::Refused(why)) => {
                    return Err(AgentError::Trust(format!(
                        "{seed} refused to admit this node: {why}"
                    )))
                }
                Err(e) => {
                    warn!(%seed, error = %e, "join attempt failed");
                    last = format!("{seed}: {e}");
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(AgentError::Trust(format!(
                "could not join the cluster within {timeout:?}: {last}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn ask(
    config: quinn::ClientConfig,
    addr: SocketAddr,
    request: &JoinRequest,
    wait: Duration,
) -> anyhow::Result<JoinResponse> {
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let endpoint = quinn::Endpoint::client(bind)?;
    let exchange = async {
        let connection = endpoint.connect_with(config, addr, SERVER_NAME)?.await?;
        let (mut send, mut recv) = connection.open_bi().await?;
        framing::write(&mut send, request.clone()).await?;
        send.finish()?;
        let answer = framing::read::<JoinResponse, _>(&mut recv)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the seed closed the stream without answering"))?;
        connection.close(0u32.into(), b"joined");
        anyhow::Ok(answer)
    };
    let answer = tokio::time::timeout(wait, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {wait:?}"))??;
    endpoint.wait_idle().await;
    Ok(answer)
}
