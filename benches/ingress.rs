//! Ingress proxy benchmark, on loopback with no Docker: two small HTTP backends, the ingress of
//! one node in front of them (the same `agent::ingress::run` an agent runs), and clients that each
//! keep a connection open and send requests one after another. Prints requests per second and
//! latency percentiles for the backends directly, through the layer-4 proxy and through the
//! sticky (HTTP) proxy, and the rate of new connections through the layer-4 proxy.
//!
//! `cargo bench --bench ingress` (5 s per case); under `cargo test --benches` it runs each case
//! for a moment as a smoke test. The clients, the proxy and the backends share the machine's
//! cores, so the figures compare the paths rather than measure a network.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{server::conn::http1, service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;
use shoal_core::{
    identity::NodeId,
    routing::{
        routes::{Backend, Route, RoutingTable},
        sticky::StickyCookie,
    },
};
use tokio::net::{TcpListener, TcpStream};

const HOST: [u8; 4] = [127, 0, 6, 1];
const CLIENTS: usize = 16;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let per_case = if full {
        Duration::from_secs(5)
    } else {
        Duration::from_millis(200)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(per_case));
}

async fn run(per_case: Duration) {
    let mut backends = Vec::new();
    for i in 0..2 {
        let addr = backend(format!("replica-{i}\n")).await;
        backends.push(Backend {
            task_id: format!("task{i}"),
            node: NodeId(i + 1),
            addr,
        });
    }
    let l4_port = free_port();
    let sticky_port = free_port();
    let route = |sticky| Route {
        service: "bench_web".into(),
        target: 8080,
        sticky,
        backends: backends.clone(),
        not_ready: Default::default(),
    };
    let table = RoutingTable {
        routes: BTreeMap::from([
            (l4_port, route(None)),
            (
                sticky_port,
                route(Some(StickyCookie::named("shoal_bench_web"))),
            ),
        ]),
        ..RoutingTable::default()
    };
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(table));
    tokio::spawn(shoal::agent::ingress::run(IpAddr::from(HOST), rx));
    let l4 = SocketAddr::from((HOST, l4_port));
    let sticky = SocketAddr::from((HOST, sticky_port));
    wait_listening(l4).await;
    wait_listening(sticky).await;

    println!("ingress bench: {CLIENTS} keep-alive clients, {per_case:?} per case");
    println!(
        "{:<34} {:>10} {:>9} {:>9} {:>9}",
        "path", "req/s", "p50 µs", "p99 µs", "max µs"
    );
    report(
        "backend directly",
        keep_alive(backends[0].addr, None, per_case).await,
    );
    report("ingress, layer 4", keep_alive(l4, None, per_case).await);
    let cookie = "shoal_bench_web=task1";
    report(
        "ingress, sticky HTTP (cookie hit)",
        keep_alive(sticky, Some(cookie), per_case).await,
    );
    report(
        "ingress, layer 4, new connection",
        new_connections(l4, per_case).await,
    );
}

fn report(name: &str, (count, mut latencies, elapsed): (usize, Vec<Duration>, Duration)) {
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0, |d| d.as_micros())
    };
    println!(
        "{name:<34} {:>10.0} {:>9} {:>9} {:>9}",
        count as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        latencies.last().map_or(0, |d| d.as_micros())
    );
}

/// A keep-alive HTTP/1.1 server that answers every request with `body`.
async fn backend(body: String) -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::from((HOST, 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let body = Bytes::from(body);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                    let body = body.clone();
                    async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// `CLIENTS` connections, each sending requests back to back for `period`.
async fn keep_alive(
    addr: SocketAddr,
    cookie: Option<&'static str>,
    period: Duration,
) -> (usize, Vec<Duration>, Duration) {
    let start = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut latencies = Vec::new();
            while start.elapsed() < period {
                let mut request = Request::get("/").header("host", "bench");
                if let Some(c) = cookie {
                    request = request.header("cookie", c);
                }
                let request = request.body(Empty::<Bytes>::new()).unwrap();
                let t = Instant::now();
                sender.ready().await.unwrap();
                let response = sender.send_request(request).await.unwrap();
                assert!(response.status().is_success());
                response.into_body().collect().await.unwrap();
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    gather(clients, start).await
}

/// `CLIENTS` loops, each opening a connection, sending one request and closing, for `period`.
async fn new_connections(addr: SocketAddr, period: Duration) -> (usize, Vec<Duration>, Duration) {
    let start = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while start.elapsed() < period {
                let t = Instant::now();
                let stream = TcpStream::connect(addr).await.unwrap();
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .unwrap();
                tokio::spawn(conn);
                let request = Request::get("/")
                    .header("host", "bench")
                    .header("connection", "close")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let response = sender.send_request(request).await.unwrap();
                response.into_body().collect().await.unwrap();
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    gather(clients, start).await
}

/// Every client's latencies, their count, and the time since `start`.
async fn gather(
    clients: Vec<tokio::task::JoinHandle<Vec<Duration>>>,
    start: Instant,
) -> (usize, Vec<Duration>, Duration) {
    let mut all = Vec::new();
    for c in clients {
        all.extend(c.await.unwrap());
    }
    (all.len(), all, start.elapsed())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(SocketAddr::from((HOST, 0)))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_listening(addr: SocketAddr) {
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the ingress never listened on {addr}");
}
