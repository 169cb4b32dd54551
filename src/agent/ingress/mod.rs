//! Ingress, the IO part: every node listens on every published port and forwards each connection
//! to a ready replica anywhere in the cluster. The node loop publishes the routing table
//! ([`shoal_core::routing::routes`]) on a watch channel; this module keeps one listener per published
//! port in step with it and hands each accepted connection to [`tcp`] (layer 4) or, for a sticky
//! service, to [`http`] (which reads and sets the cookie); UDP ports go to [`udp`] (sessions per
//! client address).
//!
//! HTTP routers (Traefik's `traefik.http.routers.*` labels) are served on this node's entry
//! points (`shoal agent --entrypoint web=:80`): a listener on an entry point's port opens once
//! some router serves there, and [`http`] picks the router for each request.
//!
//! A listener that cannot bind (the port is taken on this host) is retried every
//! [`REBIND_PERIOD`] and logged once per failure cause; the rest of the ingress goes on.

mod http;
mod tcp;
mod udp;

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpSocket, TcpStream, UdpSocket},
    sync::watch,
    task::JoinHandle,
};
use tracing::{debug, info, info_span, warn, Instrument};

use super::shell::now_ms;
use shoal_core::{
    desired::spec::Protocol,
    routing::{
        balance::Balancer,
        routes::{Backend, Route, RouterRoute, RoutingTable},
        sticky::CookieKeys,
    },
};

/// How long connecting to a replica may take before the next one is tried. Replicas sit on the
/// same LAN; a longer wait means the node is gone (and SWIM will say so shortly).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a port that could not be bound is tried again.
pub const REBIND_PERIOD: Duration = Duration::from_secs(5);
/// Connections the kernel completes and holds for a listener until its accept loop takes them
/// (capped by `net.core.somaxconn`, 4096 by default since Linux 5.4). tokio's `TcpListener::bind`
/// asks for 128, as the standard library does: a node taking 500 new connections a second fills
/// that whenever its accept loop falls a quarter second behind (a busy machine, a burst of
/// clients), and the kernel then drops new SYNs, which clients send again only after 1 s.
/// `testnet/load` saw it: 664 listen-queue overflows on the two nodes it loaded, and requests
/// taking 1.04-1.12 s during updates.
pub const LISTEN_BACKLOG: u32 = 4096;

/// What every connection handler shares: the current table, each port's balancer, and this
/// node's entry points for HTTP routers.
pub(crate) struct Shared {
    table: watch::Receiver<Arc<RoutingTable>>,
    balancers: Mutex<HashMap<BalanceKey, Balancer>>,
    /// Entry point names by port (`--entrypoint web=:80`).
    entrypoints: BTreeMap<u16, String>,
}

/// A published port: its protocol and number.
pub(crate) type PortKey = (Protocol, u16);

/// Whose rotation a pick belongs to: a published port's, or (behind HTTP routers) a service's,
/// shared by every router that leads to it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum BalanceKey {
    /// A published port.
    Port(PortKey),
    /// A service reached through routers.
    Routed(String),
}

impl From<PortKey> for BalanceKey {
    fn from(port: PortKey) -> Self {
        BalanceKey::Port(port)
    }
}

impl std::fmt::Display for BalanceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BalanceKey::Port((protocol, port)) => write!(f, "{port}/{protocol}"),
            BalanceKey::Routed(service) => write!(f, "routers of {service}"),
        }
    }
}

/// An entry point for HTTP routers, as Traefik's static configuration names one
/// (`--entrypoint web=:80`, `--entrypoint admin=127.0.0.1:8081`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryPoint {
    /// Its name, which routers' `entrypoints` labels refer to.
    pub name: String,
    /// The address to bind; None: the ingress address.
    pub ip: Option<IpAddr>,
    /// The port.
    pub port: u16,
}

impl EntryPoint {
    /// Parses `NAME=:PORT` or `NAME=IP:PORT`.
    pub fn parse(text: &str) -> Result<EntryPoint, String> {
        let (name, addr) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?}: expected NAME=:PORT"))?;
        let valid_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_name {
            return Err(format!("{text:?}: {name:?} is not an entry point name"));
        }
        let (ip, port) = match addr.rsplit_once(':') {
            Some(("", port)) => (None, port),
            Some((ip, port)) => {
                let ip = ip.trim_start_matches('[').trim_end_matches(']');
                let ip = ip
                    .parse::<IpAddr>()
                    .map_err(|_| format!("{text:?}: {ip:?} is not an IP address"))?;
                (Some(ip), port)
            }
            None => return Err(format!("{text:?}: expected NAME=:PORT")),
        };
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{text:?}: {port:?} is not a port"))?;
        Ok(EntryPoint {
            name: name.to_string(),
            ip,
            port,
        })
    }

    /// Traefik's usual entry point, and shoal's default: `web=:80`.
    pub fn default_web() -> EntryPoint {
        EntryPoint {
            name: "web".into(),
            ip: None,
            port: 80,
        }
    }
}

/// A TCP listener on `addr` with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as tokio's own bind).
pub fn listen_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The routes of one protocol in `table`.
fn routes_of(table: &RoutingTable, protocol: Protocol) -> &BTreeMap<u16, Route> {
    match protocol {
        Protocol::Tcp => &table.routes,
        Protocol::Udp => &table.udp,
    }
}

impl Shared {
    /// The route of `port` now (None once the port is no longer published).
    fn route(&self, port: PortKey) -> Option<Route> {
        routes_of(&self.table.borrow(), port.0)
            .get(&port.1)
            .cloned()
    }

    /// The routers serving on the entry point of `port` (none if no entry point has the port),
    /// in the order they are tried.
    fn routers(&self, port: u16) -> Vec<RouterRoute> {
        let Some(name) = self.entrypoints.get(&port) else {
            return Vec::new();
        };
        self.table.borrow().routers_on(name).cloned().collect()
    }

    /// Picks a backend for a new connection, request or UDP session in `key`'s rotation.
    fn pick(
        &self,
        key: impl Into<BalanceKey>,
        route: &Route,
        sticky: Option<&str>,
        tried: &[String],
    ) -> Option<(Backend, bool)> {
        let mut balancers = self.balancers.lock().expect("balancers poisoned");
        let balancer = balancers.entry(key.into()).or_default();
        balancer
            .pick(&route.backends, sticky, tried, now_ms())
            .map(|p| (p.backend.clone(), p.sticky_hit))
    }

    /// `task_id` at `addr` refused a connection (or a UDP port): leave it out for a while.
    fn failed(
        &self,
        key: impl Into<BalanceKey>,
        task_id: &str,
        addr: SocketAddr,
        why: &std::io::Error,
    ) {
        let key = key.into();
        warn!(%key, task = %task_id, backend = %addr,
            error = %why, "ingress: replica refused; leaving it out for a while");
        let mut balancers = self.balancers.lock().expect("balancers poisoned");
        balancers.entry(key).or_default().failed(task_id, now_ms());
    }

    fn succeeded(&self, key: impl Into<BalanceKey>, task_id: &str) {
        let mut balancers = self.balancers.lock().expect("balancers poisoned");
        if let Some(b) = balancers.get_mut(&key.into()) {
            b.succeeded(task_id);
        }
    }

    /// Connects to replica `task_id` at `addr`, noting whether it accepted for the balancer's
    /// passive health. The replica need not be in the table: a sticky cookie can lead a lagging
    /// node to one it has not heard of yet.
    async fn dial(
        &self,
        key: impl Into<BalanceKey>,
        task_id: &str,
        addr: SocketAddr,
    ) -> Option<TcpStream> {
        let key = key.into();
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr));
        let error = match attempt.await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                self.succeeded(key, task_id);
                return Some(stream);
            }
            Ok(Err(e)) => e,
            Err(_) => std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
        };
        self.failed(key, task_id, addr, &error);
        None
    }

    /// Runs `f` on the current sticky-cookie keys (without copying them out of the table).
    fn with_cookie_keys<R>(&self, f: impl FnOnce(&CookieKeys) -> R) -> R {
        f(&self.table.borrow().cookie_keys)
    }

    /// Connects to a ready replica of `route`, trying the others when one refuses. Returns the
    /// stream and the backend; None when no replica could be reached.
    async fn connect(&self, port: PortKey, route: &Route) -> Option<(TcpStream, Backend)> {
        let mut tried = Vec::new();
        while let Some((backend, _)) = self.pick(port, route, None, &tried) {
            if let Some(stream) = self.dial(port, &backend.task_id, backend.addr).await {
                return Some((stream, backend));
            }
            tried.push(backend.task_id);
        }
        None
    }
}

/// Keeps a listener on `bind_ip` for every port of the table until the channel closes.
pub async fn run(bind_ip: IpAddr, table: watch::Receiver<Arc<RoutingTable>>) {
    run_with(bind_ip, table, Vec::new()).await
}

/// [`run`], and a listener on each entry point that some HTTP router serves on. A published port
/// wins over an entry point of the same number: it is in the desired state every node agrees on.
pub async fn run_with(
    bind_ip: IpAddr,
    mut table: watch::Receiver<Arc<RoutingTable>>,
    entrypoints: Vec<EntryPoint>,
) {
    let shared = Arc::new(Shared {
        table: table.clone(),
        balancers: Mutex::new(HashMap::new()),
        entrypoints: entrypoints
            .iter()
            .map(|e| (e.port, e.name.clone()))
            .collect(),
    });
    let entry_ip: BTreeMap<u16, IpAddr> = entrypoints
        .iter()
        .map(|e| (e.port, e.ip.unwrap_or(bind_ip)))
        .collect();
    // Entry points shadowed by a published port, logged once each.
    let mut shadowed: BTreeMap<u16, String> = BTreeMap::new();
    let mut listening: BTreeMap<PortKey, JoinHandle<()>> = BTreeMap::new();
    // Ports that failed to bind, with the error last logged (to log each cause once).
    let mut unbound: BTreeMap<PortKey, String> = BTreeMap::new();
    let mut rebind = tokio::time::interval(REBIND_PERIOD);
    rebind.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let current = table.borrow_and_update().clone();
        // Entry points some router serves on, unless a published port has the number.
        let mut routed: BTreeMap<u16, String> = BTreeMap::new();
        for e in &entrypoints {
            if current.routers_on(&e.name).next().is_none() {
                continue;
            }
            if let Some(route) = current.routes.get(&e.port) {
                if shadowed.get(&e.port) != Some(&route.service) {
                    warn!(port = e.port, entrypoint = %e.name, service = %route.service,
                        "ingress: entry point's port is published by a service; its routers are not served here");
                    shadowed.insert(e.port, route.service.clone());
                }
                continue;
            }
            routed.insert(e.port, e.name.clone());
        }
        let published = |key: &PortKey| {
            routes_of(&current, key.0).contains_key(&key.1)
                || (key.0 == Protocol::Tcp && routed.contains_key(&key.1))
        };
        listening.retain(|key, task| {
            let keep = published(key);
            if !keep {
                // Connections already accepted carry on; only new ones stop.
                task.abort();
                info!(port = key.1, protocol = ?key.0, "ingress: port no longer published; stopped listening");
            }
            keep
        });
        unbound.retain(|key, _| published(key));
        {
            let mut balancers = shared.balancers.lock().expect("balancers poisoned");
            balancers.retain(|key, b| match key {
                BalanceKey::Port(port) => match routes_of(&current, port.0).get(&port.1) {
                    Some(route) => {
                        b.retain(&route.backends);
                        true
                    }
                    None => false,
                },
                BalanceKey::Routed(service) => {
                    match current.routers.iter().find(|r| &r.route.service == service) {
                        Some(r) => {
                            b.retain(&r.route.backends);
                            true
                        }
                        None => false,
                    }
                }
            });
        }
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            for (port, route) in routes_of(&current, protocol) {
                let key = (protocol, *port);
                if listening.contains_key(&key) {
                    continue;
                }
                let addr = SocketAddr::new(bind_ip, *port);
                let span = info_span!("ingress", port, service = %route.service);
                let started = match protocol {
                    Protocol::Tcp => listen_tcp(addr).map(|listener| {
                        let task = accept(listener, *port, shared.clone());
                        tokio::spawn(task.instrument(span))
                    }),
                    Protocol::Udp => UdpSocket::bind(addr).await.map(|socket| {
                        let task = udp::serve(socket, *port, shared.clone());
                        tokio::spawn(task.instrument(span))
                    }),
                };
                match started {
                    Ok(task) => {
                        info!(port, protocol = ?protocol, service = %route.service,
                            sticky = route.sticky.is_some(), "ingress: listening on {addr}");
                        unbound.remove(&key);
                        listening.insert(key, task);
                    }
                    Err(e) => {
                        let why = e.to_string();
                        if unbound.get(&key) != Some(&why) {
                            warn!(port, protocol = ?protocol, service = %route.service, error = %why,
                                "ingress: cannot listen on {addr}; retrying every {REBIND_PERIOD:?}");
                            unbound.insert(key, why);
                        }
                    }
                }
            }
        }
        for (port, name) in &routed {
            let key = (Protocol::Tcp, *port);
            if listening.contains_key(&key) {
                continue;
            }
            let addr = SocketAddr::new(entry_ip[port], *port);
            let span = info_span!("ingress", port, entrypoint = %name);
            match listen_tcp(addr) {
                Ok(listener) => {
                    let task = accept(listener, *port, shared.clone());
                    info!(port, entrypoint = %name, "ingress: HTTP routers listening on {addr}");
                    unbound.remove(&key);
                    listening.insert(key, tokio::spawn(task.instrument(span)));
                }
                Err(e) => {
                    let why = e.to_string();
                    if unbound.get(&key) != Some(&why) {
                        warn!(port, entrypoint = %name, error = %why,
                            "ingress: cannot listen on {addr}; retrying every {REBIND_PERIOD:?}");
                        unbound.insert(key, why);
                    }
                }
            }
        }
        tokio::select! {
            changed = table.changed() => if changed.is_err() { break },
            _ = rebind.tick(), if !unbound.is_empty() => {}
        }
    }
    for (_, task) in listening {
        task.abort();
    }
}

/// Accepts connections on one published port for as long as it stays published.
async fn accept(listener: TcpListener, port: u16, shared: Arc<Shared>) {
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                warn!(error = %e, "ingress: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = client.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(
            async move {
                match shared.route((Protocol::Tcp, port)) {
                    Some(route) if route.sticky.is_some() => {
                        http::serve(client, peer, port, shared).await;
                    }
                    Some(route) => tcp::forward(client, port, &route, &shared).await,
                    // An entry point: HTTP, each request routed by the routers' rules.
                    None if shared.entrypoints.contains_key(&port) => {
                        http::serve(client, peer, port, shared).await;
                    }
                    None => {}
                }
            }
            .in_current_span(),
        );
        debug!(%peer, "ingress: accepted");
    }
}
