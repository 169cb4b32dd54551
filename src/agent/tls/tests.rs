//! Real rustls handshakes between the configurations of [`super::cluster`], driven in memory.

use std::{sync::Arc, time::SystemTime};

use rustls::{pki_types::ServerName, ClientConnection, ServerConnection};
use shoal_core::{identity::NodeId, trust::token::CaDigest};

use super::{
    ca::{generate_key, node_csr, node_server_name, ClusterCa, Role, TlsIdentity, CLIENT_VALIDITY},
    cluster::*,
    SERVER_NAME,
};

struct Cluster {
    ca: ClusterCa,
    trust: ClusterTrust,
}

impl Cluster {
    fn new() -> Self {
        let ca = ClusterCa::generate("test", SystemTime::now()).unwrap();
        let trust = ClusterTrust::new(ca.cert_der(), Revocations::default()).unwrap();
        Cluster { ca, trust }
    }

    /// A member as a joiner becomes one: its own key, a CSR, a certificate from the CA.
    fn node(&self, id: u128) -> TlsIdentity {
        let key = generate_key().unwrap();
        let csr = node_csr(&key, NodeId(id)).unwrap();
        let cert = self
            .ca
            .issue_node(NodeId(id), &csr, SystemTime::now())
            .unwrap();
        TlsIdentity::new(&cert, self.ca.cert_der(), &key.serialize_der())
    }
}

struct Done {
    client: ClientConnection,
    server: ServerConnection,
}

/// Runs a handshake to completion, or returns the first error either side raised.
fn handshake(
    client: rustls::ClientConfig,
    server: rustls::ServerConfig,
    name: &str,
) -> Result<Done, rustls::Error> {
    let name = ServerName::try_from(name.to_string()).unwrap();
    let mut c = ClientConnection::new(Arc::new(client), name)?;
    let mut s = ServerConnection::new(Arc::new(server))?;
    for _ in 0..20 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
            s.process_new_packets()?;
        }
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
            c.process_new_packets()?;
        }
        if !c.is_handshaking() && !s.is_handshaking() && !c.wants_write() && !s.wants_write() {
            return Ok(Done {
                client: c,
                server: s,
            });
        }
    }
    panic!("handshake did not finish");
}

fn authorize(trust: &ClusterTrust, done: &Done) -> Result<Peer, AccessError> {
    trust.authorize(done.server.alpn_protocol(), done.server.peer_certificates())
}

fn is_cert_error(e: &rustls::Error) -> bool {
    matches!(e, rustls::Error::InvalidCertificate(_))
}

#[test]
fn members_authenticate_each_other_and_read_node_ids() {
    let cluster = Cluster::new();
    let (a, b) = (cluster.node(0xa), cluster.node(0xb));
    let done = handshake(
        cluster.trust.peer_client_config(&a).unwrap(),
        cluster.trust.server_config(&b).unwrap(),
        &node_server_name(NodeId(0xb)),
    )
    .unwrap();
    assert_eq!(done.server.alpn_protocol(), Some(ALPN_PEER));
    assert_eq!(
        authorize(&cluster.trust, &done),
        Ok(Peer::Node(NodeId(0xa)))
    );
    let server_id = peer_node_id(done.client.peer_certificates().unwrap()).unwrap();
    assert_eq!(server_id, NodeId(0xb));
    // The generic name reaches any member (a seed whose id is unknown).
    handshake(
        cluster.trust.peer_client_config(&a).unwrap(),
        cluster.trust.server_config(&b).unwrap(),
        SERVER_NAME,
    )
    .unwrap();
}

#[test]
fn dialling_a_node_by_id_refuses_another_member() {
    let cluster = Cluster::new();
    let (a, b) = (cluster.node(0xa), cluster.node(0xb));
    let err = handshake(
        cluster.trust.peer_client_config(&a).unwrap(),
        cluster.trust.server_config(&b).unwrap(),
        &node_server_name(NodeId(0xc)),
    )
    .err()
    .expect("wrong node accepted");
    assert!(is_cert_error(&err), "{err:?}");
}

#[test]
fn certificates_of_another_cluster_are_refused_both_ways() {
    let ours = Cluster::new();
    let theirs = Cluster::new();
    let (a, stranger) = (ours.node(0xa), theirs.node(0xe));
    // Their node dials us: our server refuses its certificate.
    let err = handshake(
        theirs.trust.peer_client_config(&stranger).unwrap(),
        ours.trust.server_config(&a).unwrap(),
        SERVER_NAME,
    )
    .err()
    .expect("foreign client accepted");
    assert!(is_cert_error(&err), "{err:?}");
    // We dial their node: our client refuses its certificate.
    let err = handshake(
        ours.trust.peer_client_config(&a).unwrap(),
        theirs.trust.server_config(&stranger).unwrap(),
        SERVER_NAME,
    )
    .err()
    .expect("foreign server accepted");
    assert!(is_cert_error(&err), "{err:?}");
}

#[test]
fn revoked_certificates_are_refused_after_revocation() {
    let cluster = Cluster::new();
    let (a, b) = (cluster.node(0xa), cluster.node(0xb));
    let server = cluster.trust.server_config(&b).unwrap();
    let client = cluster.trust.peer_client_config(&a).unwrap();
    let done = handshake(client.clone(), server.clone(), SERVER_NAME).unwrap();
    assert_eq!(
        authorize(&cluster.trust, &done),
        Ok(Peer::Node(NodeId(0xa)))
    );
    // Revoked at runtime, through the shared set: the same configs now refuse it.
    cluster.trust.revocations().revoke_node(NodeId(0xa));
    let err = handshake(client.clone(), server.clone(), SERVER_NAME)
        .err()
        .expect("revoked client accepted");
    assert_eq!(
        err,
        rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)
    );
    // And a connection made before the revocation is refused when authorized again.
    assert_eq!(authorize(&cluster.trust, &done), Err(AccessError::Revoked));
    // Revoking a server's certificate by serial: clients refuse it.
    let serial = super::ca::cert_info(&b.chain[0]).unwrap().serial;
    cluster.trust.revocations().revoke_serial(serial);
    let c = cluster.node(0xc);
    let err = handshake(
        cluster.trust.peer_client_config(&c).unwrap(),
        server,
        SERVER_NAME,
    )
    .err()
    .expect("revoked server accepted");
    assert_eq!(
        err,
        rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)
    );
    assert_eq!(cluster.trust.revocations().snapshot().nodes.len(), 1);
}

#[test]
fn a_joiner_accepts_a_member_of_its_tokens_cluster_only() {
    let ours = Cluster::new();
    let theirs = Cluster::new();
    let member = ours.node(0xa);
    let token_ca = ours.ca.digest();
    let done = handshake(
        join_client_config(token_ca).unwrap(),
        ours.trust.server_config(&member).unwrap(),
        SERVER_NAME,
    )
    .unwrap();
    assert_eq!(authorize(&ours.trust, &done), Ok(Peer::Joiner));
    // The joiner learns the CA certificate itself from the chain, by the token's digest.
    let chain = done.client.peer_certificates().unwrap();
    assert_eq!(pinned_ca(chain, &token_ca).unwrap(), ours.ca.cert_der());
    // A token of another cluster: the joiner refuses our member.
    let err = handshake(
        join_client_config(theirs.ca.digest()).unwrap(),
        ours.trust.server_config(&member).unwrap(),
        SERVER_NAME,
    )
    .err()
    .expect("joiner accepted a server of another cluster");
    assert!(is_cert_error(&err), "{err:?}");
    // A made-up digest: refused too.
    assert!(handshake(
        join_client_config(CaDigest([0; 32])).unwrap(),
        ours.trust.server_config(&member).unwrap(),
        SERVER_NAME,
    )
    .is_err());
}

#[test]
fn a_server_whose_chain_merely_contains_the_ca_is_refused_by_a_joiner() {
    // An impostor sends the real CA certificate (public) next to a leaf it signed itself.
    let ours = Cluster::new();
    let impostor_ca = ClusterCa::generate("impostor", SystemTime::now()).unwrap();
    let key = generate_key().unwrap();
    let leaf = impostor_ca
        .issue_node_for_key(NodeId(0xbad), &key, SystemTime::now())
        .unwrap();
    let forged = TlsIdentity::new(&leaf, ours.ca.cert_der(), &key.serialize_der());
    let impostor_trust = ClusterTrust::new(impostor_ca.cert_der(), Revocations::default()).unwrap();
    let err = handshake(
        join_client_config(ours.ca.digest()).unwrap(),
        impostor_trust.server_config(&forged).unwrap(),
        SERVER_NAME,
    )
    .err()
    .expect("impostor accepted");
    assert!(is_cert_error(&err), "{err:?}");
}

#[test]
fn without_a_certificate_only_the_join_alpn_is_open() {
    let cluster = Cluster::new();
    let member = cluster.node(0xa);
    let server = cluster.trust.server_config(&member).unwrap();
    for alpn in [ALPN_PEER, ALPN_CLI] {
        // A client with no certificate that asks for the peer or CLI protocol: TLS completes
        // (client auth is offered, not required), and authorize closes it.
        let mut client = join_client_config(cluster.ca.digest()).unwrap();
        client.alpn_protocols = vec![alpn.to_vec()];
        let done = handshake(client, server.clone(), SERVER_NAME).unwrap();
        assert_eq!(done.server.alpn_protocol(), Some(alpn));
        assert_eq!(
            authorize(&cluster.trust, &done),
            Err(AccessError::NoCertificate)
        );
    }
    let mut client = join_client_config(cluster.ca.digest()).unwrap();
    client.alpn_protocols = vec![b"h3".to_vec()];
    assert!(handshake(client, server.clone(), SERVER_NAME).is_err());
    assert_eq!(
        cluster.trust.authorize(None, None),
        Err(AccessError::NoAlpn)
    );
    assert_eq!(
        cluster.trust.authorize(Some(b"other"), None),
        Err(AccessError::UnknownAlpn)
    );
}

#[test]
fn a_cli_bundle_is_a_cli_and_never_a_node() {
    let cluster = Cluster::new();
    let member = cluster.node(0xa);
    let bundle = cluster
        .ca
        .issue_client("alice", SystemTime::now(), CLIENT_VALIDITY)
        .unwrap();
    let server = cluster.trust.server_config(&member).unwrap();
    let done = handshake(
        cli_client_config(&bundle).unwrap(),
        server.clone(),
        SERVER_NAME,
    )
    .unwrap();
    assert_eq!(
        authorize(&cluster.trust, &done),
        Ok(Peer::Cli(Role::Client("alice".into())))
    );
    // The bundle on the peer ALPN: refused.
    let mut as_peer = cli_client_config(&bundle).unwrap();
    as_peer.alpn_protocols = vec![ALPN_PEER.to_vec()];
    let done = handshake(as_peer, server.clone(), SERVER_NAME).unwrap();
    assert_eq!(
        authorize(&cluster.trust, &done),
        Err(AccessError::WrongRole { role: "client" })
    );
    // The bundle as a server: members refuse it (no server usage, no node name).
    let bundle_identity = bundle.identity();
    let fake_server = cluster.trust.server_config(&bundle_identity).unwrap();
    let err = handshake(
        cluster.trust.peer_client_config(&member).unwrap(),
        fake_server,
        SERVER_NAME,
    )
    .err()
    .expect("a client bundle served as a node");
    assert!(is_cert_error(&err), "{err:?}");
    // A member may run the CLI with its node certificate.
    let mut node_cli = cluster
        .trust
        .peer_client_config(&cluster.node(0xb))
        .unwrap();
    node_cli.alpn_protocols = vec![ALPN_CLI.to_vec()];
    let done = handshake(node_cli, server.clone(), SERVER_NAME).unwrap();
    assert_eq!(
        authorize(&cluster.trust, &done),
        Ok(Peer::Cli(Role::Node(NodeId(0xb))))
    );
    // A revoked bundle (by serial) is refused at the handshake.
    let serial = super::ca::cert_info(&bundle.cert).unwrap().serial;
    cluster.trust.revocations().revoke_serial(serial);
    assert!(handshake(cli_client_config(&bundle).unwrap(), server, SERVER_NAME).is_err());
}

#[test]
fn configs_convert_to_quinn() {
    let cluster = Cluster::new();
    let node = cluster.node(1);
    quic_server_config(cluster.trust.server_config(&node).unwrap()).unwrap();
    quic_client_config(cluster.trust.peer_client_config(&node).unwrap()).unwrap();
    quic_client_config(join_client_config(cluster.ca.digest()).unwrap()).unwrap();
}
