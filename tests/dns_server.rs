//! The node's DNS server in process, over real UDP and TCP sockets on 127.0.0.1: service names
//! answered from the view, the rest forwarded to an upstream (a fake one here), truncation over
//! UDP. The view is made by hand so that 127.0.0.0/8 is a shoal network: the test's own address
//! is then a replica's.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{rdata::A, Name, RData, Record, RecordType},
};
use shoal::agent::dns::DnsServer;
use shoal_core::{
    desired::spec::EndpointMode,
    net::services::{Membership, NetView, ServiceNet},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// `app_web` (vip 127.9.255.5, two ready replicas) on `lo`, the asker's network; `app_db`
/// (dnsrr, 200 ready replicas) on `lo` too; `other_x` on another network.
fn view() -> NetView {
    let service =
        |name: &str, short: &str, mode, net: &str, vip: &str, ready: Vec<Ipv4Addr>| ServiceNet {
            name: name.into(),
            short: short.into(),
            mode,
            networks: BTreeMap::from([(
                net.to_string(),
                Membership {
                    aliases: if short == "web" {
                        vec!["www".into()]
                    } else {
                        vec![]
                    },
                    vip: Some(ip(vip)),
                    ready,
                },
            )]),
        };
    let many: Vec<Ipv4Addr> = (0..200u32)
        .map(|i| Ipv4Addr::from(0x7f05_0000 + i))
        .collect();
    let mut v = NetView::default();
    v.ranges.insert("lo".into(), "127.0.0.0/8".parse().unwrap());
    v.ranges
        .insert("far".into(), "10.250.0.0/16".parse().unwrap());
    for s in [
        service(
            "app_web",
            "web",
            EndpointMode::Vip,
            "lo",
            "127.9.255.5",
            vec![ip("127.9.0.2"), ip("127.9.1.2")],
        ),
        service(
            "app_db",
            "db",
            EndpointMode::Dnsrr,
            "lo",
            "127.9.255.6",
            many,
        ),
        service(
            "other_x",
            "x",
            EndpointMode::Vip,
            "far",
            "10.250.255.9",
            vec![],
        ),
    ] {
        v.services.insert(s.name.clone(), s);
    }
    v
}

/// An upstream that answers every A question with 192.0.2.77.
async fn fake_upstream() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let q = Message::from_vec(&buf[..n]).unwrap();
            let mut r = Message::response(q.metadata.id, OpCode::Query);
            r.add_queries(q.queries.clone());
            let name = q.queries[0].name().clone();
            r.add_answer(Record::from_rdata(name, 60, RData::A(A(ip("192.0.2.77")))));
            let _ = socket.send_to(&r.to_vec().unwrap(), from).await;
        }
    });
    addr
}

async fn server() -> SocketAddr {
    let server = DnsServer::new(vec![fake_upstream().await]);
    server.set_view(Arc::new(view()));
    let (bound, _tasks) = server.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    // The tasks hold clones of the server: it lives as long as they run.
    bound
}

fn question(name: &str, qtype: RecordType, id: u16) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    let mut q = Query::new();
    q.set_name(Name::from_ascii(name).unwrap());
    q.set_query_type(qtype);
    m.add_query(q);
    m.to_vec().unwrap()
}

async fn ask_udp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(server).await.unwrap();
    socket.send(&question(name, qtype, 4242)).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(m.metadata.id, 4242);
    m
}

fn addresses(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match r.data {
            RData::A(A(ip)) => Some(ip),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn service_names_over_udp() {
    let server = server().await;
    let m = ask_udp(server, "web", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addresses(&m), [ip("127.9.255.5")]);
    assert!(m.answers.iter().all(|r| r.ttl == 0));
    let m = ask_udp(server, "app_web.", RecordType::A).await;
    assert_eq!(addresses(&m), [ip("127.9.255.5")]);
    let m = ask_udp(server, "tasks.www", RecordType::A).await;
    assert_eq!(addresses(&m), [ip("127.9.0.2"), ip("127.9.1.2")]);
    let m = ask_udp(server, "web", RecordType::AAAA).await;
    assert_eq!(
        (m.metadata.response_code, m.answers.len()),
        (ResponseCode::NoError, 0)
    );
    let m = ask_udp(server, "other_x", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn other_names_are_forwarded() {
    let server = server().await;
    let m = ask_udp(server, "example.com", RecordType::A).await;
    assert_eq!(addresses(&m), [ip("192.0.2.77")]);

    // Without an upstream: SERVFAIL, at once.
    let lonely = DnsServer::new(vec![]);
    let (bound, _t) = lonely.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let m = ask_udp(bound, "example.com", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn large_answers_are_truncated_over_udp_and_whole_over_tcp() {
    let server = server().await;
    let m = ask_udp(server, "db", RecordType::A).await;
    assert!(m.metadata.truncation);
    assert!(!m.answers.is_empty() && m.answers.len() < 200);

    let mut tcp = TcpStream::connect(server).await.unwrap();
    let q = question("db", RecordType::A, 7);
    tcp.write_all(&(q.len() as u16).to_be_bytes())
        .await
        .unwrap();
    tcp.write_all(&q).await.unwrap();
    let mut len = [0u8; 2];
    tcp.read_exact(&mut len).await.unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len).into()];
    tcp.read_exact(&mut buf).await.unwrap();
    let m = Message::from_vec(&buf).unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!(addresses(&m).len(), 200);
}

#[tokio::test]
async fn garbage_gets_formerr_or_nothing() {
    let server = DnsServer::new(vec![]);
    let asker = "127.0.0.1".parse().unwrap();
    assert_eq!(server.answer(asker, &[1], true).await, None);
    let answer = server
        .answer(asker, &[0xab, 0xcd, 0xff, 0xff, 9], true)
        .await
        .unwrap();
    let m = Message::from_vec(&answer).unwrap();
    assert_eq!(
        (m.metadata.id, m.metadata.response_code),
        (0xabcd, ResponseCode::FormErr)
    );
}

#[tokio::test]
async fn listen_on_reconciles_its_sockets() {
    let server = DnsServer::new(vec![]);
    let a: SocketAddr = "127.0.0.1:0".parse().unwrap();
    assert!(server.listen_on(&[a]).await.is_empty());
    assert_eq!(server.listening(), [a]);
    assert!(server.listen_on(&[]).await.is_empty());
    assert!(server.listening().is_empty());
    // An address this host does not have cannot be bound: reported, not fatal.
    let failed = server.listen_on(&["192.0.2.254:0".parse().unwrap()]).await;
    assert_eq!(failed.len(), 1);
}
