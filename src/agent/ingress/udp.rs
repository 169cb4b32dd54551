//! UDP: each client address gets a session, bound to one ready replica, that lasts while
//! datagrams flow either way. A datagram from a new client opens a socket connected to the next
//! replica in turn; the replica's answers go back to the client from the published port. A session
//! ends after [`IDLE`] without a datagram from the client, when its replica leaves the route (the
//! next datagram opens a new session elsewhere), or when the replica's host refuses (an ICMP port
//! unreachable: the replica is held out like a refused TCP connection).

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tokio::net::UdpSocket;
use tracing::{debug, Instrument};

use super::{PortKey, Shared};
use shoal_core::{desired::spec::Protocol, routing::routes::Backend};

/// A session with no datagram from its client for this long ends (Linux conntrack keeps an
/// unanswered UDP flow for 30 s).
pub const IDLE: Duration = Duration::from_secs(30);
/// At most this many sessions per port; datagrams of further new clients are dropped.
pub const MAX_SESSIONS: usize = 10_000;
/// How often a session checks that its replica is still in the route.
const RECHECK: Duration = Duration::from_secs(1);
/// Largest datagram carried.
const MAX_DATAGRAM: usize = 65_535;

/// One client's session.
struct Session {
    upstream: Arc<UdpSocket>,
    backend: Backend,
    /// Milliseconds since `epoch` of the client's last datagram.
    last_seen: Arc<AtomicU64>,
    checked: Instant,
}

type Sessions = Arc<Mutex<HashMap<SocketAddr, Session>>>;

/// Serves one published UDP port until the task is aborted (the port is no longer published).
pub(super) async fn serve(socket: UdpSocket, port: u16, shared: Arc<Shared>) {
    let key: PortKey = (Protocol::Udp, port);
    let socket = Arc::new(socket);
    let sessions: Sessions = Arc::default();
    let epoch = Instant::now();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, client) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            // ICMP errors about earlier replies to clients surface here: not ours to act on.
            Err(e) => {
                debug!(error = %e, "ingress: udp receive failed");
                continue;
            }
        };
        let now_ms = epoch.elapsed().as_millis() as u64;
        let upstream = match current(&sessions, client, key, &shared) {
            Some(upstream) => upstream,
            None => {
                let Some((upstream, session)) = open(&shared, key, client).await else {
                    continue;
                };
                let mut all = sessions.lock().expect("sessions poisoned");
                if all.len() >= MAX_SESSIONS {
                    debug!(%client, "ingress: too many udp sessions; dropping the datagram");
                    continue;
                }
                tokio::spawn(
                    replies(
                        socket.clone(),
                        client,
                        session.upstream.clone(),
                        session.backend.clone(),
                        session.last_seen.clone(),
                        epoch,
                        (sessions.clone(), key, shared.clone()),
                    )
                    .in_current_span(),
                );
                all.insert(client, session);
                upstream
            }
        };
        if let Some(s) = sessions.lock().expect("sessions poisoned").get(&client) {
            s.last_seen.store(now_ms, Ordering::Relaxed);
        }
        if let Err(e) = upstream.send(&buf[..len]).await {
            debug!(%client, error = %e, "ingress: udp send to the replica failed");
        }
    }
}

/// The session of `client`, if it has one whose replica is still in the route.
fn current(
    sessions: &Sessions,
    client: SocketAddr,
    key: PortKey,
    shared: &Shared,
) -> Option<Arc<UdpSocket>> {
    let mut all = sessions.lock().expect("sessions poisoned");
    let session = all.get_mut(&client)?;
    if session.checked.elapsed() >= RECHECK {
        let still = shared.route(key).is_some_and(|r| {
            r.backends
                .iter()
                .any(|b| b.task_id == session.backend.task_id)
        });
        if !still {
            // Its replica is gone from the route: the next datagram opens a new session.
            all.remove(&client);
            return None;
        }
        session.checked = Instant::now();
    }
    Some(session.upstream.clone())
}

/// A new session for `client`: a socket connected to the next ready replica.
async fn open(
    shared: &Shared,
    key: PortKey,
    client: SocketAddr,
) -> Option<(Arc<UdpSocket>, Session)> {
    let route = shared.route(key)?;
    let Some((backend, _)) = shared.pick(key, &route, None, &[]) else {
        debug!(%client, service = %route.service, "ingress: no ready replica; dropping the datagram");
        return None;
    };
    let local: IpAddr = match backend.addr {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = match UdpSocket::bind((local, 0)).await {
        Ok(socket) => socket,
        Err(e) => {
            debug!(error = %e, "ingress: cannot open a udp socket");
            return None;
        }
    };
    if let Err(e) = socket.connect(backend.addr).await {
        shared.failed(key, &backend.task_id, backend.addr, &e);
        return None;
    }
    let upstream = Arc::new(socket);
    let session = Session {
        upstream: upstream.clone(),
        backend,
        last_seen: Arc::new(AtomicU64::new(0)),
        checked: Instant::now(),
    };
    Some((upstream, session))
}

/// Carries the replica's datagrams back to `client` until the session ends.
async fn replies(
    published: Arc<UdpSocket>,
    client: SocketAddr,
    upstream: Arc<UdpSocket>,
    backend: Backend,
    last_seen: Arc<AtomicU64>,
    epoch: Instant,
    (sessions, key, shared): (Sessions, PortKey, Arc<Shared>),
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match tokio::time::timeout(IDLE, upstream.recv(&mut buf)).await {
            Ok(Ok(len)) => {
                shared.succeeded(key, &backend.task_id);
                if let Err(e) = published.send_to(&buf[..len], client).await {
                    debug!(%client, error = %e, "ingress: udp reply to the client failed");
                }
            }
            Ok(Err(e)) => {
                // ICMP port unreachable from the replica's host: it is not listening any more.
                shared.failed(key, &backend.task_id, backend.addr, &e);
                break;
            }
            Err(_) => {
                let idle_ms = (epoch.elapsed().as_millis() as u64)
                    .saturating_sub(last_seen.load(Ordering::Relaxed));
                if idle_ms >= IDLE.as_millis() as u64 {
                    break;
                }
            }
        }
    }
    let mut all = sessions.lock().expect("sessions poisoned");
    // Only this session's entry: the client may have a newer one already.
    if all
        .get(&client)
        .is_some_and(|s| Arc::ptr_eq(&s.upstream, &upstream))
    {
        all.remove(&client);
    }
}
