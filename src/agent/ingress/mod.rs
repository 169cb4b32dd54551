//! Ingress, the IO part: every node listens on every published port and forwards each connection
//! to a ready replica anywhere in the cluster. The node loop publishes the routing table
//! ([`shoal_core::routing::routes`]) on a watch channel; this module keeps one listener per published
//! port in step with it and hands each accepted connection to [`tcp`] (layer 4) or, for a sticky
//! service, to [`http`] (which reads and sets the cookie); UDP ports go to [`udp`] (sessions per
//! client address).
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
    net::{TcpListener, TcpStream, UdpSocket},
    sync::watch,
    task::JoinHandle,
};
use tracing::{debug, info, info_span, warn, Instrument};

use super::shell::now_ms;
use shoal_core::{
    desired::spec::Protocol,
    routing::{
        balance::Balancer,
        routes::{Backend, Route, RoutingTable},
    },
};

/// How long connecting to a replica may take before the next one is tried. Replicas sit on the
/// same LAN; a longer wait means the node is gone (and SWIM will say so shortly).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a port that could not be bound is tried again.
pub const REBIND_PERIOD: Duration = Duration::from_secs(5);

/// What every connection handler shares: the current table and each port's balancer.
pub(crate) struct Shared {
    table: watch::Receiver<Arc<RoutingTable>>,
    balancers: Mutex<HashMap<PortKey, Balancer>>,
}

/// A published port: its protocol and number.
pub(crate) type PortKey = (Protocol, u16);

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

    /// Picks a backend for a new connection, request or UDP session on `port`.
    fn pick(
        &self,
        port: PortKey,
        route: &Route,
        sticky: Option<&str>,
        tried: &[String],
    ) -> Option<(Backend, bool)> {
        let mut balancers = self.balancers.lock().expect("balancers poisoned");
        let balancer = balancers.entry(port).or_default();
        balancer
            .pick(&route.backends, sticky, tried, now_ms())
            .map(|p| (p.backend.clone(), p.sticky_hit))
    }

    fn failed(&self, port: PortKey, backend: &Backend, why: &std::io::Error) {
        warn!(port = port.1, protocol = ?port.0, task = %backend.task_id, backend = %backend.addr,
            error = %why, "ingress: replica refused; leaving it out for a while");
        let mut balancers = self.balancers.lock().expect("balancers poisoned");
        balancers
            .entry(port)
            .or_default()
            .failed(&backend.task_id, now_ms());
    }

    fn succeeded(&self, port: PortKey, backend: &Backend) {
        let mut balancers = self.balancers.lock().expect("balancers poisoned");
        if let Some(b) = balancers.get_mut(&port) {
            b.succeeded(&backend.task_id);
        }
    }

    /// Connects to `backend`, noting whether it accepted for the balancer's passive health.
    async fn dial(&self, port: PortKey, backend: &Backend) -> Option<TcpStream> {
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend.addr));
        let error = match attempt.await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                self.succeeded(port, backend);
                return Some(stream);
            }
            Ok(Err(e)) => e,
            Err(_) => std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
        };
        self.failed(port, backend, &error);
        None
    }

    /// Connects to a ready replica of `route`, trying the others when one refuses. Returns the
    /// stream and the backend; None when no replica could be reached.
    async fn connect(&self, port: PortKey, route: &Route) -> Option<(TcpStream, Backend)> {
        let mut tried = Vec::new();
        while let Some((backend, _)) = self.pick(port, route, None, &tried) {
            if let Some(stream) = self.dial(port, &backend).await {
                return Some((stream, backend));
            }
            tried.push(backend.task_id);
        }
        None
    }
}

/// Keeps a listener on `bind_ip` for every port of the table until the channel closes.
pub async fn run(bind_ip: IpAddr, mut table: watch::Receiver<Arc<RoutingTable>>) {
    let shared = Arc::new(Shared {
        table: table.clone(),
        balancers: Mutex::new(HashMap::new()),
    });
    let mut listening: BTreeMap<PortKey, JoinHandle<()>> = BTreeMap::new();
    // Ports that failed to bind, with the error last logged (to log each cause once).
    let mut unbound: BTreeMap<PortKey, String> = BTreeMap::new();
    let mut rebind = tokio::time::interval(REBIND_PERIOD);
    rebind.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let current = table.borrow_and_update().clone();
        let published = |key: &PortKey| routes_of(&current, key.0).contains_key(&key.1);
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
            balancers.retain(|key, b| match routes_of(&current, key.0).get(&key.1) {
                Some(route) => {
                    b.retain(&route.backends);
                    true
                }
                None => false,
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
                    Protocol::Tcp => TcpListener::bind(addr).await.map(|listener| {
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
                let Some(route) = shared.route((Protocol::Tcp, port)) else {
                    return;
                };
                if route.sticky.is_some() {
                    http::serve(client, peer, port, shared).await;
                } else {
                    tcp::forward(client, port, &route, &shared).await;
                }
            }
            .in_current_span(),
        );
        debug!(%peer, "ingress: accepted");
    }
}
