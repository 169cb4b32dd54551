//! Traefik HTTP routers through the ingress in one process, with no Docker: backends on loopback
//! that answer their name, routers made from real labels, and an entry point as `shoal agent
//! --entrypoint web=:PORT` gives it.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;
use shoal::agent::ingress::EntryPoint;
use shoal_core::{
    identity::NodeId,
    routing::{
        routers,
        routes::{Backend, Route, RouterRoute, RoutingTable},
        sticky,
    },
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

const HOST: [u8; 4] = [127, 0, 7, 2];

/// An HTTP backend that answers `NAME PATH`.
async fn backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::from((HOST, 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| async move {
                    let body = format!("{name} {}", req.uri().path());
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(SocketAddr::from((HOST, 0)))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The routers of service `name` from `labels`, leading to `backends` (task id, address).
fn routed(
    name: &str,
    labels: &[(&str, &str)],
    backends: Vec<(&str, SocketAddr)>,
) -> Vec<RouterRoute> {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let routing = routers::from_labels(name, &labels, &[]).expect("valid router labels");
    let cookie = sticky::from_labels(name, &labels).unwrap();
    routing
        .routers
        .into_iter()
        .map(|router| RouterRoute {
            route: Route {
                service: name.into(),
                target: router.port,
                sticky: cookie.clone(),
                backends: backends
                    .iter()
                    .map(|(task, addr)| Backend {
                        task_id: task.to_string(),
                        node: NodeId(1),
                        addr: *addr,
                    })
                    .collect(),
                not_ready: Default::default(),
            },
            router,
        })
        .collect()
}

fn table(mut routes: Vec<RouterRoute>) -> Arc<RoutingTable> {
    routes.sort_by_key(|r| routers::order(&r.router, &r.route.service));
    Arc::new(RoutingTable {
        routers: routes,
        ..RoutingTable::default()
    })
}

async fn ingress(
    initial: Arc<RoutingTable>,
    entrypoints: Vec<EntryPoint>,
) -> watch::Sender<Arc<RoutingTable>> {
    let (tx, rx) = watch::channel(initial);
    tokio::spawn(shoal::agent::ingress::run_with(
        IpAddr::from(HOST),
        rx,
        entrypoints,
    ));
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

/// `GET path` with `headers`; the answer's head and body.
async fn get(addr: SocketAddr, host: &str, path: &str, headers: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{headers}\r\n");
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

fn entry(name: &str, port: u16) -> EntryPoint {
    EntryPoint::parse(&format!("{name}=:{port}")).unwrap()
}

#[tokio::test]
async fn path_prefixes_on_one_entry_point_reach_their_services() {
    let (app, api, web) = (
        backend("app").await,
        backend("api").await,
        backend("web").await,
    );
    let port = free_port();
    let mut routes = routed(
        "s_app",
        &[
            ("traefik.http.routers.app.rule", "PathPrefix(`/app/`)"),
            ("traefik.http.routers.app.entrypoints", "web"),
            ("traefik.http.services.app.loadbalancer.server.port", "8080"),
        ],
        vec![("tapp", app)],
    );
    routes.extend(routed(
        "s_api",
        &[
            ("traefik.http.routers.api.rule", "PathPrefix(`/api/`)"),
            ("traefik.http.services.api.loadbalancer.server.port", "8080"),
        ],
        vec![("tapi", api)],
    ));
    routes.extend(routed(
        "s_web",
        &[
            ("traefik.http.routers.web.rule", "PathPrefix(`/`)"),
            ("traefik.http.services.web.loadbalancer.server.port", "8080"),
        ],
        vec![("tweb", web)],
    ));
    // A router on another entry point is not served here.
    routes.extend(routed(
        "s_admin",
        &[
            ("traefik.http.routers.admin.rule", "PathPrefix(`/admin/`)"),
            ("traefik.http.routers.admin.entrypoints", "admin"),
            (
                "traefik.http.services.admin.loadbalancer.server.port",
                "9000",
            ),
        ],
        vec![("tadmin", app)],
    ));
    let _tx = ingress(table(routes), vec![entry("web", port)]).await;
    let addr = SocketAddr::from((HOST, port));
    wait_listening(addr).await;
    for (path, service) in [
        ("/app/page", "app"),
        ("/api/users", "api"),
        ("/", "web"),
        ("/apple", "web"),
        ("/admin/x", "web"),
    ] {
        let (head, body) = get(addr, "example.com", path, "").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
        assert_eq!(body, format!("{service} {path}"), "{path}");
    }
}

#[tokio::test]
async fn hosts_priorities_and_no_match() {
    let (a, b) = (backend("a").await, backend("b").await);
    let port = free_port();
    let mut routes = routed(
        "s_a",
        &[
            ("traefik.http.routers.a.rule", "Host(`a.test`)"),
            ("traefik.http.services.a.loadbalancer.server.port", "80"),
        ],
        vec![("ta", a)],
    );
    // Longer rule, so tried first by default; an explicit low priority puts it last.
    routes.extend(routed(
        "s_b",
        &[
            (
                "traefik.http.routers.b.rule",
                "Host(`a.test`) || Host(`b.test`)",
            ),
            ("traefik.http.routers.b.priority", "1"),
            ("traefik.http.services.b.loadbalancer.server.port", "80"),
        ],
        vec![("tb", b)],
    ));
    let _tx = ingress(table(routes), vec![entry("web", port)]).await;
    let addr = SocketAddr::from((HOST, port));
    wait_listening(addr).await;
    assert_eq!(get(addr, "A.test:8080", "/", "").await.1, "a /");
    assert_eq!(get(addr, "b.test", "/x", "").await.1, "b /x");
    let (head, body) = get(addr, "c.test", "/", "").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert_eq!(body, "404 page not found\n");
}

#[tokio::test]
async fn sticky_sessions_work_behind_a_router() {
    let (a, b) = (backend("a").await, backend("b").await);
    let port = free_port();
    let routes = routed(
        "s_api",
        &[
            ("traefik.http.routers.api.rule", "PathPrefix(`/api/`)"),
            ("traefik.http.services.api.loadbalancer.server.port", "8080"),
            (
                "traefik.http.services.api.loadbalancer.sticky.cookie",
                "true",
            ),
            (
                "traefik.http.services.api.loadbalancer.sticky.cookie.name",
                "pin",
            ),
        ],
        vec![("ta", a), ("tb", b)],
    );
    let _tx = ingress(table(routes), vec![entry("web", port)]).await;
    let addr = SocketAddr::from((HOST, port));
    wait_listening(addr).await;
    let (head, body) = get(addr, "x", "/api/form", "").await;
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .map(|c| c.split(';').next().unwrap().to_string())
        .expect("the first answer sets the cookie");
    let first = body.split_whitespace().next().unwrap().to_string();
    assert_eq!(cookie, format!("pin=t{first}"));
    for _ in 0..6 {
        let (_, body) = get(addr, "x", "/api/post", &format!("Cookie: {cookie}\r\n")).await;
        assert!(body.starts_with(&first), "{body}");
    }
    // Without the cookie, requests go round both replicas.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let (_, body) = get(addr, "x", "/api/", "").await;
        seen.insert(body.split_whitespace().next().unwrap().to_string());
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[tokio::test]
async fn an_entry_point_listens_only_while_a_router_serves_there() {
    let a = backend("a").await;
    let port = free_port();
    let tx = ingress(table(vec![]), vec![entry("web", port)]).await;
    let addr = SocketAddr::from((HOST, port));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(TcpStream::connect(addr).await.is_err(), "no router yet");
    let routes = routed(
        "s_a",
        &[
            ("traefik.http.routers.a.rule", "PathPrefix(`/`)"),
            ("traefik.http.services.a.loadbalancer.server.port", "80"),
        ],
        vec![("ta", a)],
    );
    tx.send(table(routes)).unwrap();
    wait_listening(addr).await;
    assert_eq!(get(addr, "x", "/", "").await.1, "a /");
}

#[test]
fn entry_point_flags() {
    assert_eq!(
        EntryPoint::parse("web=:80").unwrap(),
        EntryPoint {
            name: "web".into(),
            ip: None,
            port: 80
        }
    );
    let admin = EntryPoint::parse("admin=127.0.0.1:8081").unwrap();
    assert_eq!(admin.ip, Some(IpAddr::from([127, 0, 0, 1])));
    for bad in [
        "web",
        "web=80",
        "=:80",
        "web=:0",
        "web=:http",
        "we b=:80",
        "w=nope:80",
    ] {
        assert!(EntryPoint::parse(bad).is_err(), "{bad}");
    }
}
