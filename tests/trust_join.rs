//! The whole admission path with the trust building blocks, over real QUIC on 127.0.0.1: a
//! founder creates the cluster; a joiner with only the token text dials it on the join ALPN,
//! proves the secret, receives its certificate, the CA, the keyring and the secret, stores them
//! in its data dir, reloads them as after a restart (no token), and then talks to the founder
//! as a member on the peer ALPN and by sealed gossip. Also: a wrong token is refused, and a
//! client without a certificate gets nothing on the peer ALPN.
//!
//! This is the sequence the node wires in (see docs/security.md); the test keeps the pieces
//! honest until it does.

use std::{net::SocketAddr, sync::Arc, time::SystemTime};

use rustls::pki_types::CertificateDer;
use shoal::agent::{
    datadir::{DataDir, TrustMaterial},
    tls::{
        ca::{generate_key, node_csr, ClusterCa, TlsIdentity},
        cluster::{
            join_client_config, peer_node_id, quic_client_config, quic_server_config, ClusterTrust,
            Peer, Revocations, ALPN_PEER,
        },
        SERVER_NAME,
    },
};
use shoal_core::{
    identity::NodeId,
    seal::{self, GossipKey, Keyring, ReplayGuard, Sealer},
    trust::{
        check_join,
        token::{join_proof, JoinSecret, JoinToken},
        IdStatus, JoinGrant, JoinRequest, JoinResponse, SecretBytes,
    },
    wire,
};

/// What the founder's `cluster init` makes.
struct Founder {
    ca: ClusterCa,
    trust: ClusterTrust,
    identity: TlsIdentity,
    keyring: Keyring,
    secret: JoinSecret,
}

fn init() -> Founder {
    let now = SystemTime::now();
    let ca = ClusterCa::generate("e2e", now).unwrap();
    let key = generate_key().unwrap();
    let cert = ca.issue_node_for_key(NodeId(1), &key, now).unwrap();
    Founder {
        trust: ClusterTrust::new(ca.cert_der(), Revocations::default()).unwrap(),
        identity: TlsIdentity::new(&cert, ca.cert_der(), &key.serialize_der()),
        keyring: Keyring::new(1, GossipKey(rand::random())),
        secret: JoinSecret(rand::random()),
        ca,
    }
}

fn alpn_and_certs(
    conn: &quinn::Connection,
) -> (Option<Vec<u8>>, Option<Vec<CertificateDer<'static>>>) {
    let alpn = conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol);
    let certs = conn
        .peer_identity()
        .and_then(|i| i.downcast::<Vec<CertificateDer<'static>>>().ok())
        .map(|b| *b);
    (alpn, certs)
}

/// The founder's QUIC server: authorizes each connection, then serves one request per stream:
/// a join request from a joiner, an echo of the peer's id to a member.
async fn serve(founder: Arc<Founder>) -> SocketAddr {
    let config =
        quic_server_config(founder.trust.server_config(&founder.identity).unwrap()).unwrap();
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let founder = founder.clone();
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                let (alpn, certs) = alpn_and_certs(&conn);
                let peer = match founder.trust.authorize(alpn.as_deref(), certs.as_deref()) {
                    Ok(peer) => peer,
                    Err(e) => {
                        conn.close(1u32.into(), e.to_string().as_bytes());
                        return;
                    }
                };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let answer = match &peer {
                        Peer::Joiner => {
                            let bytes = recv.read_to_end(8 * 1024).await.unwrap();
                            let request: JoinRequest = wire::decode(&bytes).unwrap();
                            admit(&founder, &request)
                        }
                        Peer::Node(id) => wire::encode(id).unwrap(),
                        Peer::Cli(_) => b"cli".to_vec(),
                    };
                    send.write_all(&answer).await.unwrap();
                    send.finish().unwrap();
                }
            });
        }
    });
    addr
}

fn admit(founder: &Founder, request: &JoinRequest) -> Vec<u8> {
    let response = match check_join(
        request,
        &founder.ca.digest(),
        std::slice::from_ref(&founder.secret),
        |_| IdStatus::Free,
    ) {
        Err(refusal) => JoinResponse::Refused(refusal),
        Ok(()) => JoinResponse::Granted(Box::new(JoinGrant {
            node_cert_der: founder
                .ca
                .issue_node(request.node, &request.csr_der, SystemTime::now())
                .unwrap()
                .to_vec(),
            ca_cert_der: founder.ca.cert_der().to_vec(),
            ca_key_der: SecretBytes(founder.ca.key_der()),
            keyring: founder.keyring.clone(),
            token_secret: founder.secret.clone(),
        })),
    };
    wire::encode(&response).unwrap()
}

async fn ask(
    config: rustls::ClientConfig,
    addr: SocketAddr,
    body: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap())?;
    endpoint.set_default_client_config(quic_client_config(config)?);
    let conn = endpoint.connect(addr, SERVER_NAME)?.await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(body).await?;
    send.finish()?;
    Ok(recv.read_to_end(1 << 20).await?)
}

#[tokio::test]
async fn a_joiner_with_the_token_becomes_a_member() {
    let founder = Arc::new(init());
    let token_text = JoinToken {
        ca: founder.ca.digest(),
        secret: founder.secret.clone(),
    }
    .reveal();
    let addr = serve(founder.clone()).await;

    // The joiner knows only the token text and the seed's address.
    let token: JoinToken = token_text.parse().unwrap();
    let id = NodeId(0x10_0000_0000_0000_0000_0000_0000_0002);
    let key = generate_key().unwrap();
    let csr = node_csr(&key, id).unwrap();
    let request = JoinRequest {
        node: id,
        proof: join_proof(&token, id, &csr),
        csr_der: csr,
    };
    let answer = ask(
        join_client_config(token.ca).unwrap(),
        addr,
        &wire::encode(&request).unwrap(),
    )
    .await
    .unwrap();
    let JoinResponse::Granted(grant) = wire::decode::<JoinResponse>(&answer).unwrap() else {
        panic!("refused");
    };
    // The joiner checks the CA it was given is the one its token names.
    assert!(shoal_core::trust::grant_matches_token(&grant, &token));

    // Stored, then reloaded as after a restart: no token needed any more.
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path()).unwrap();
    data.save_trust(&TrustMaterial {
        ca_cert_der: grant.ca_cert_der.clone(),
        ca_key_der: grant.ca_key_der.clone(),
        node_cert_der: grant.node_cert_der.clone(),
        node_key_der: SecretBytes(key.serialize_der()),
        keyring: grant.keyring.clone(),
        token_secret: grant.token_secret.clone(),
    })
    .unwrap();
    let trust = DataDir::open(dir.path())
        .unwrap()
        .load_trust()
        .unwrap()
        .unwrap();

    // As a member, on the peer ALPN: the founder sees the joiner's id.
    let identity = TlsIdentity::new(
        &trust.node_cert_der,
        &trust.ca_cert_der,
        &trust.node_key_der.0,
    );
    let cluster = ClusterTrust::new(&trust.ca_cert_der, Revocations::default()).unwrap();
    let echoed = ask(
        cluster.peer_client_config(&identity).unwrap(),
        addr,
        b"hello",
    )
    .await
    .unwrap();
    assert_eq!(wire::decode::<NodeId>(&echoed).unwrap(), id);
    assert_eq!(peer_node_id(&identity.chain).unwrap(), id);

    // The new member can admit others: it holds the CA key and the secret.
    let again = ClusterCa::from_der(&trust.ca_cert_der, &trust.ca_key_der.0).unwrap();
    assert_eq!(again.digest(), token.ca);
    assert!(trust.token_secret == founder.secret);

    // And its gossip opens at the founder.
    let mut sealer = Sealer::new(id.0, 1);
    let packet = sealer
        .seal(
            &trust.keyring,
            &wire::seal(wire::PacketKind::Swim, b"ping"),
            rand::random(),
        )
        .unwrap();
    let mut guard = ReplayGuard::default();
    let opened = seal::open_checked(&founder.keyring, &mut guard, &packet).unwrap();
    assert_eq!(opened.header.sender, id.0);
    assert_eq!(
        seal::open_checked(&founder.keyring, &mut guard, &packet),
        Err(seal::OpenError::Replay)
    );
}

#[tokio::test]
async fn a_wrong_secret_is_refused_and_certless_peers_get_nothing() {
    let founder = Arc::new(init());
    let addr = serve(founder.clone()).await;

    // Right CA, wrong secret: the TLS side succeeds, the proof does not.
    let token = JoinToken::new(founder.ca.digest(), [0; 16]);
    let key = generate_key().unwrap();
    let csr = node_csr(&key, NodeId(5)).unwrap();
    let request = JoinRequest {
        node: NodeId(5),
        proof: join_proof(&token, NodeId(5), &csr),
        csr_der: csr,
    };
    let answer = ask(
        join_client_config(token.ca).unwrap(),
        addr,
        &wire::encode(&request).unwrap(),
    )
    .await
    .unwrap();
    assert!(matches!(
        wire::decode::<JoinResponse>(&answer).unwrap(),
        JoinResponse::Refused(shoal_core::trust::JoinRefusal::BadProof)
    ));

    // No certificate, peer ALPN: the connection is closed before any answer.
    let mut sneaky = join_client_config(founder.ca.digest()).unwrap();
    sneaky.alpn_protocols = vec![ALPN_PEER.to_vec()];
    assert!(ask(sneaky, addr, b"give me the desired state")
        .await
        .is_err());

    // A token of another cluster: the joiner refuses the founder at the handshake.
    let other = ClusterCa::generate("other", SystemTime::now()).unwrap();
    assert!(ask(join_client_config(other.digest()).unwrap(), addr, b"x")
        .await
        .is_err());
}
