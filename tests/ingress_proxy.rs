//! The ingress proxies in one process, with no Docker: small HTTP backends on loopback, the
//! listeners an agent runs (`agent::ingress::run`) and a routing table set by hand, so each
//! behaviour can be provoked exactly: a dead backend, a table change, an upgrade.

use std::{
    collections::{BTreeMap, BTreeSet},
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;
use shoal_core::{
    identity::NodeId,
    routing::{
        routes::{Backend, Route, RoutingTable},
        sticky::{self, Claim, CookieKeys, StickyCookie},
    },
    seal::{GossipKey, Keyring},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

const HOST: [u8; 4] = [127, 0, 7, 1];

/// An HTTP backend that answers its `name`, and echoes bytes after an `Upgrade: echo` request.
async fn backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::from((HOST, 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(move |mut req: Request<Incoming>| async move {
                    if req.headers().get("upgrade").is_some_and(|v| v == "echo") {
                        let upgraded = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            let mut io = TokioIo::new(upgraded.await.unwrap());
                            let mut buf = [0u8; 64];
                            while let Ok(n) = io.read(&mut buf).await {
                                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        });
                        let mut r = Response::new(Full::new(Bytes::new()));
                        *r.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
                        r.headers_mut()
                            .insert("connection", "upgrade".parse().unwrap());
                        r.headers_mut().insert("upgrade", "echo".parse().unwrap());
                        return Ok::<_, Infallible>(r);
                    }
                    let forwarded = req
                        .headers()
                        .get("x-forwarded-for")
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default();
                    Ok(Response::new(Full::new(Bytes::from(format!(
                        "{name} {forwarded}"
                    )))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

fn backend_entry(task: &str, addr: SocketAddr) -> Backend {
    Backend {
        task_id: task.into(),
        node: NodeId(1),
        addr,
    }
}

fn table(port: u16, sticky: bool, backends: Vec<Backend>) -> Arc<RoutingTable> {
    Arc::new(RoutingTable {
        routes: BTreeMap::from([(
            port,
            Route {
                service: "t_web".into(),
                target: 8080,
                sticky: sticky.then(|| StickyCookie::named("shoal_t_web")),
                backends,
                not_ready: BTreeSet::new(),
            },
        )]),
        ..RoutingTable::default()
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(SocketAddr::from((HOST, 0)))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An address where nothing listens: a replica that died a moment ago.
fn dead_addr() -> SocketAddr {
    SocketAddr::from((HOST, free_port()))
}

/// Starts the ingress on `HOST` with `initial`; the sender changes the table.
async fn ingress(initial: Arc<RoutingTable>) -> watch::Sender<Arc<RoutingTable>> {
    let (tx, rx) = watch::channel(initial);
    tokio::spawn(shoal::agent::ingress::run(IpAddr::from(HOST), rx));
    tx
}

async fn wait_listening(addr: SocketAddr) {
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("nothing listens on {addr}");
}

/// A raw HTTP/1.1 exchange on a new connection; the answer's head and body.
async fn request(addr: SocketAddr, extra_headers: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra_headers}\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_string(), body.to_string())
}

fn set_cookie(head: &str) -> Option<String> {
    head.lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .map(|c| c.split(';').next().unwrap().to_string())
}

#[tokio::test]
async fn layer4_spreads_over_live_backends_and_steps_over_a_dead_one() {
    let (a, b) = (backend("a").await, backend("b").await);
    let port = free_port();
    let backends = vec![
        backend_entry("ta", a),
        backend_entry("tdead", dead_addr()),
        backend_entry("tb", b),
    ];
    let _tx = ingress(table(port, false, backends)).await;
    let addr = SocketAddr::from((HOST, port));
    wait_listening(addr).await;
    let mut seen = BTreeSet::new();
    for _ in 0..9 {
        let (head, body) = request(addr, "").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        seen.insert(body.split_whitespace().next().unwrap().to_string());
    }
    assert_eq!(seen, BTreeSet::from(["a".to_string(), "b".to_string()]));
}

#[tokio::test]
async fn sticky_sets_the_cookie_keeps_to_it_and_moves_when_the_replica_goes() {
    let (a, b) = (backend("a").await, backend("b").await);
    let port = free_port();
    let both = vec![backend_entry("ta", a), backend_entry("tb", b)];
    let tx = ingress(table(port, true, both)).await;
    let addr = SocketAddr::from((HOST, port));
    wait_listening(addr).await;

    let (head, body) = request(addr, "").await;
    let cookie = set_cookie(&head).expect("the first answer sets the cookie");
    let first = body.split_whitespace().next().unwrap().to_string();
    assert_eq!(cookie, format!("shoal_t_web=t{first}"));
    // The proxy says who the client is.
    let forwarded: IpAddr = body.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(forwarded.is_loopback(), "{body}");
    for _ in 0..6 {
        let (head, body) = request(addr, &format!("Cookie: other=1; {cookie}\r\n")).await;
        assert!(body.starts_with(&first), "{body}");
        assert!(set_cookie(&head).is_none(), "a hit sets no cookie: {head}");
    }

    // Its replica leaves the table: the same cookie now reaches the other, with a new cookie.
    let other = if first == "a" { ("tb", b) } else { ("ta", a) };
    tx.send(table(port, true, vec![backend_entry(other.0, other.1)]))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (head, body) = request(addr, &format!("Cookie: {cookie}\r\n")).await;
    assert!(!body.starts_with(&first), "{body}");
    assert_eq!(set_cookie(&head), Some(format!("shoal_t_web={}", other.0)));
}

#[tokio::test]
async fn a_sticky_replica_that_died_unreported_loses_its_clients_at_once() {
    let a = backend("a").await;
    let port = free_port();
    let backends = vec![backend_entry("tdead", dead_addr()), backend_entry("ta", a)];
    let _tx = ingress(table(port, true, backends)).await;
    let addr = SocketAddr::from((HOST, port));
    wait_listening(addr).await;
    let (head, body) = request(addr, "Cookie: shoal_t_web=tdead\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.starts_with('a'), "{body}");
    assert_eq!(set_cookie(&head).as_deref(), Some("shoal_t_web=ta"));
}

#[tokio::test]
async fn with_no_ready_replica_http_answers_503_and_layer4_closes() {
    let (sticky_port, l4_port) = (free_port(), free_port());
    let mut routes = (*table(sticky_port, true, vec![])).clone();
    routes.routes.extend(
        table(l4_port, false, vec![backend_entry("tdead", dead_addr())])
            .routes
            .clone(),
    );
    let _tx = ingress(Arc::new(routes)).await;
    let sticky = SocketAddr::from((HOST, sticky_port));
    wait_listening(sticky).await;
    let (head, body) = request(sticky, "").await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(body.contains("no replica of t_web is ready"), "{body}");
    // Layer 4 closes without a word (a reset, as the request is unread).
    let l4 = SocketAddr::from((HOST, l4_port));
    wait_listening(l4).await;
    let mut stream = TcpStream::connect(l4).await.unwrap();
    let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf))
        .await
        .expect("closed within 5 s");
    assert!(
        matches!(&read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{read:?} {buf:?}"
    );
}

#[tokio::test]
async fn an_upgrade_through_a_sticky_port_becomes_a_tunnel() {
    let a = backend("a").await;
    let port = free_port();
    let _tx = ingress(table(port, true, vec![backend_entry("ta", a)])).await;
    let addr = SocketAddr::from((HOST, port));
    wait_listening(addr).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: echo"),
        "{head}"
    );
    assert!(
        set_cookie(&head).is_some(),
        "the switch sets the cookie too: {head}"
    );
    for word in ["ping", "pong and more"] {
        stream.write_all(word.as_bytes()).await.unwrap();
        let mut back = vec![0u8; word.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
            .await
            .expect("the echo within 5 s")
            .unwrap();
        assert_eq!(back, word.as_bytes());
    }
}

#[tokio::test]
async fn a_port_stops_when_unpublished_and_listens_again_when_published() {
    let a = backend("a").await;
    let port = free_port();
    let tx = ingress(table(port, false, vec![backend_entry("ta", a)])).await;
    let addr = SocketAddr::from((HOST, port));
    wait_listening(addr).await;
    tx.send(Arc::new(RoutingTable::default())).unwrap();
    let mut closed = false;
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(closed, "still listening after the port left the table");
    tx.send(table(port, false, vec![backend_entry("ta", a)]))
        .unwrap();
    wait_listening(addr).await;
    let (_, body) = request(addr, "").await;
    assert!(body.starts_with('a'), "{body}");
}

/// A UDP backend that answers each datagram with `NAME:PAYLOAD`.
async fn udp_backend(name: &'static str) -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind(SocketAddr::from((HOST, 0)))
        .await
        .unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let reply = format!("{name}:{}", String::from_utf8_lossy(&buf[..n]));
            let _ = socket.send_to(reply.as_bytes(), from).await;
        }
    });
    addr
}

fn udp_table(port: u16, backends: Vec<Backend>) -> Arc<RoutingTable> {
    let mut table = (*table(port, false, vec![])).clone();
    let route = table.routes.remove(&port).unwrap();
    table.udp.insert(port, Route { backends, ..route });
    Arc::new(table)
}

/// Sends `payload` from `client` to `to` until an answer comes (the listener may still be
/// starting, a first datagram may meet a dead replica); the answer.
async fn udp_ask(client: &tokio::net::UdpSocket, to: SocketAddr, payload: &str) -> String {
    let mut buf = [0u8; 1500];
    for _ in 0..50 {
        client.send_to(payload.as_bytes(), to).await.unwrap();
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(100), client.recv_from(&mut buf)).await
        {
            return String::from_utf8_lossy(&buf[..n]).to_string();
        }
    }
    panic!("no answer from {to}");
}

#[tokio::test]
async fn udp_sessions_spread_stick_and_leave_a_dead_replica() {
    let (a, b) = (udp_backend("a").await, udp_backend("b").await);
    let port = free_port();
    let tx = ingress(udp_table(
        port,
        vec![backend_entry("ta", a), backend_entry("tb", b)],
    ))
    .await;
    let to = SocketAddr::from((HOST, port));
    let mut seen = BTreeSet::new();
    for _ in 0..4 {
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let first = udp_ask(&client, to, "hi").await;
        // A session stays with its replica.
        for k in 0..3 {
            let again = udp_ask(&client, to, &format!("more{k}")).await;
            assert_eq!(
                again.split(':').next(),
                first.split(':').next(),
                "{again} after {first}"
            );
        }
        assert!(first.ends_with(":hi"), "{first}");
        seen.insert(first.split(':').next().unwrap().to_string());
    }
    assert_eq!(seen, BTreeSet::from(["a".to_string(), "b".to_string()]));

    // A replica nobody listens for any more (its host answers port unreachable): new sessions
    // go to the live one.
    tx.send(udp_table(
        port,
        vec![backend_entry("tdead", dead_addr()), backend_entry("ta", a)],
    ))
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..3 {
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert_eq!(udp_ask(&client, to, "x").await, "a:x");
    }
}

/// A replica that reads each request's head and closes the connection without a byte of an
/// answer (it crashed, or dropped a kept connection as it stopped); counts the requests.
async fn closer() -> (SocketAddr, Arc<AtomicUsize>) {
    closer_after(b"").await
}

/// A replica that reads each request's head, writes `partial` and closes the connection.
async fn closer_after(partial: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind(SocketAddr::from((HOST, 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                let _ = stream.write_all(partial).await;
                // Dropped: closed with no (complete) answer.
            });
        }
    });
    (addr, seen)
}

/// An HTTP backend that answers `NAME METHOD BODY`.
async fn echo_backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::from((HOST, 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| async move {
                    let method = req.method().to_string();
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let text = format!("{name} {method} {}", String::from_utf8_lossy(&body));
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A raw HTTP/1.1 request with `method` and `body` on a new connection; status and body.
async fn send(addr: SocketAddr, method: &str, extra_headers: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n{extra_headers}\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

#[tokio::test]
async fn an_idempotent_request_dropped_unanswered_is_retried_once_on_another_replica() {
    let (dropper, dropped) = closer().await;
    let good = echo_backend("b").await;
    let port = free_port();
    // The dropper first: a port's rotation starts at its first backend.
    let backends = vec![backend_entry("tx", dropper), backend_entry("tb", good)];
    let _tx = ingress(table(port, true, backends)).await;
    let addr = SocketAddr::from((HOST, port));
    wait_listening(addr).await;

    // Every GET, and a PUT with its body, is answered by the good replica, whichever replica the
    // rotation sent it to first; the dropper saw some of them.
    for _ in 0..4 {
        assert_eq!(send(addr, "GET", "", "").await, (200, "b GET ".to_string()));
    }
    assert_eq!(
        send(addr, "PUT", "", "put-body").await,
        (200, "b PUT put-body".to_string())
    );
    let after_idempotent = dropped.load(Ordering::SeqCst);
    assert!(after_idempotent >= 2, "the dropper saw {after_idempotent}");

    // A POST is never sent twice: the one that meets the dropper gets 502.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let (status, body) = send(addr, "POST", "", "form=1").await;
        if status == 200 {
            assert_eq!(body, "b POST form=1");
        }
        statuses.push(status);
    }
    statuses.sort();
    assert_eq!(statuses, [200, 502]);
    assert_eq!(dropped.load(Ordering::SeqCst), after_idempotent + 1);
}

#[tokio::test]
async fn a_request_whose_answer_had_begun_is_not_retried() {
    let (half, seen) = closer_after(b"HTTP/1.1 20").await;
    let good = echo_backend("b").await;
    let port = free_port();
    let backends = vec![backend_entry("th", half), backend_entry("tb", good)];
    let _tx = ingress(table(port, true, backends)).await;
    let addr = SocketAddr::from((HOST, port));
    wait_listening(addr).await;
    // The first request of the port goes to its first backend.
    let (status, body) = send(addr, "GET", "", "").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_retry_happens_once_and_a_failed_retry_is_a_502() {
    let (one, seen_one) = closer().await;
    let (two, seen_two) = closer().await;
    let (three, seen_three) = closer().await;
    let port = free_port();
    let backends = vec![
        backend_entry("t1", one),
        backend_entry("t2", two),
        backend_entry("t3", three),
    ];
    // Retries are an HTTP matter: a sticky port.
    let _tx = ingress(table(port, true, backends)).await;
    let addr = SocketAddr::from((HOST, port));
    wait_listening(addr).await;
    let (status, body) = send(addr, "GET", "", "").await;
    assert_eq!(status, 502, "{body}");
    let total = [&seen_one, &seen_two, &seen_three]
        .iter()
        .map(|s| s.load(Ordering::SeqCst))
        .sum::<usize>();
    assert_eq!(total, 2, "sent to two replicas, not three");
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The cluster's cookie keys in these tests.
fn cookie_keys() -> CookieKeys {
    CookieKeys::from_keyring(&Keyring::new(1, GossipKey([7; 32])))
}

/// `table` with the cluster's cookie keys: cookies are signed.
fn signed_table(port: u16, backends: Vec<Backend>) -> Arc<RoutingTable> {
    let mut t = (*table(port, true, backends)).clone();
    t.cookie_keys = cookie_keys();
    Arc::new(t)
}

/// What a `shoal_t_web` cookie value says, checked with the cluster's keys.
fn claim(value: &str) -> Claim<'_> {
    sticky::read(value, &cookie_keys(), "t_web", 8080)
}

#[tokio::test]
async fn a_lagging_node_follows_a_signed_cookie_to_a_replica_it_has_not_heard_of() {
    let (a, z) = (backend("a").await, backend("z").await);
    let port = free_port();
    // This node's table lacks replica tz (its report has not arrived here yet).
    let _tx = ingress(signed_table(port, vec![backend_entry("ta", a)])).await;
    let addr = SocketAddr::from((HOST, port));
    wait_listening(addr).await;

    // The cookie another node issued for tz: the request reaches tz, and the cookie stays.
    let issued = sticky::sign(&cookie_keys(), "t_web", 8080, "tz", z, now_ms()).unwrap();
    for _ in 0..3 {
        let (head, body) = request(addr, &format!("Cookie: shoal_t_web={issued}\r\n")).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(body.starts_with('z'), "{body}");
        assert!(
            set_cookie(&head).is_none(),
            "the cookie is still right: {head}"
        );
    }

    // The cookie's replica is gone too: balanced, with a new signed cookie for the replica
    // that answered.
    let gone = sticky::sign(
        &cookie_keys(),
        "t_web",
        8080,
        "tgone",
        dead_addr(),
        now_ms(),
    );
    let (head, body) = request(addr, &format!("Cookie: shoal_t_web={}\r\n", gone.unwrap())).await;
    assert!(body.starts_with('a'), "{body}");
    let renewed = set_cookie(&head).expect("a new cookie");
    let value = renewed.strip_prefix("shoal_t_web=").unwrap();
    assert!(
        matches!(claim(value), Claim::Signed(pin) if pin.task_id == "ta" && pin.addr == a),
        "{renewed}"
    );
    // That cookie sticks, with no new cookie on a hit.
    let (head, body) = request(addr, &format!("Cookie: {renewed}\r\n")).await;
    assert!(body.starts_with('a'), "{body}");
    assert!(set_cookie(&head).is_none(), "{head}");
}

#[tokio::test]
async fn a_forged_or_tampered_cookie_is_not_followed() {
    let (a, z) = (backend("a").await, backend("z").await);
    let port = free_port();
    let _tx = ingress(signed_table(port, vec![backend_entry("ta", a)])).await;
    let addr = SocketAddr::from((HOST, port));
    wait_listening(addr).await;

    let genuine = sticky::sign(&cookie_keys(), "t_web", 8080, "ta", a, now_ms()).unwrap();
    // Same fields, another endpoint: the signature no longer matches.
    let tampered = genuine.replace(&a.to_string(), &z.to_string());
    assert_ne!(tampered, genuine);
    // Signed under a key the cluster does not hold, for an endpoint not in the table.
    let outsider = CookieKeys::from_keyring(&Keyring::new(1, GossipKey([66; 32])));
    let forged = sticky::sign(&outsider, "t_web", 8080, "tz", z, now_ms()).unwrap();
    // An unsigned (old-format) cookie naming a replica this node does not know.
    for bad in [tampered, forged, "tz".to_string()] {
        let (head, body) = request(addr, &format!("Cookie: shoal_t_web={bad}\r\n")).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(body.starts_with('a'), "{bad} led to {body}");
        let fresh = set_cookie(&head).expect("a fresh cookie");
        let value = fresh.strip_prefix("shoal_t_web=").unwrap();
        assert!(
            matches!(claim(value), Claim::Signed(pin) if pin.task_id == "ta"),
            "{fresh}"
        );
    }
    // An old-format cookie naming a replica it knows is ready is kept, and upgraded.
    let (head, body) = request(addr, "Cookie: shoal_t_web=ta\r\n").await;
    assert!(body.starts_with('a'), "{body}");
    let upgraded = set_cookie(&head).expect("re-signed");
    assert!(matches!(
        claim(upgraded.strip_prefix("shoal_t_web=").unwrap()),
        Claim::Signed(_)
    ));
}

#[tokio::test]
async fn a_listener_holds_a_burst_its_accept_loop_has_not_taken_yet() {
    // The kernel completes connections and queues them until they are accepted; past the queue's
    // size it drops new SYNs, and a client sends its SYN again only after 1 s. An ingress port
    // under load must hold a burst while the accept loop is busy (tokio's default holds 128).
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(4096);
    let burst = 600.min(somaxconn);
    let listener = shoal::agent::ingress::listen_tcp(SocketAddr::from((HOST, 0))).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..burst {
        clients.spawn(tokio::time::timeout(
            Duration::from_millis(800),
            TcpStream::connect(addr),
        ));
    }
    let mut connected = Vec::new();
    while let Some(done) = clients.join_next().await {
        if let Ok(Ok(stream)) = done.unwrap() {
            connected.push(stream);
        }
    }
    assert_eq!(
        connected.len(),
        burst,
        "connections completed, none accepted yet"
    );
    drop(listener);
}
