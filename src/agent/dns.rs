//! The node's DNS server for its replicas: listens on the gateway address of each of the node's
//! service networks (UDP and TCP, port 53), answers service names from the pure resolver
//! (`shoal_core::net::dns`) over the latest [`NetView`], and forwards every other name to the
//! host's resolvers.
//!
//! Replicas reach it through the engine: a container on a user-defined network asks the
//! engine's embedded DNS (127.0.0.11), which answers container names itself and forwards the rest
//! to the container's `dns` server, the gateway of its first network
//! (`runtime::docker::convert::create_body`). The engine forwards from inside the container's
//! network namespace, so the question arrives from the replica's own address, which tells the
//! resolver which networks the asker is on.
//!
//! The message codec is `hickory-proto`'s; the loops are ours (one task per listening socket).

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, ResponseCode},
    rr::{rdata::A, RData, Record, RecordType},
};
use shoal_core::net::{
    dns::{resolve, Answer, QueryType},
    services::NetView,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    task::JoinHandle,
};

/// The port replicas ask on.
pub const DNS_PORT: u16 = 53;
/// How long one upstream resolver may take before the next is tried.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest answer over UDP to a question without EDNS (RFC 1035).
const CLASSIC_UDP: usize = 512;
/// Longest a TCP client may take to send its question.
const TCP_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The server: the view to answer from, the upstream resolvers, and the sockets it listens on.
/// Cheap to clone (clones share everything).
#[derive(Clone)]
pub struct DnsServer {
    inner: Arc<Inner>,
}

struct Inner {
    view: RwLock<Arc<NetView>>,
    upstreams: RwLock<Vec<SocketAddr>>,
    listeners: Mutex<BTreeMap<SocketAddr, Vec<JoinHandle<()>>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(listeners) = self.listeners.get_mut() {
            for task in listeners.values().flatten() {
                task.abort();
            }
        }
    }
}

impl DnsServer {
    /// A server that forwards what it cannot answer to `upstreams` (see [`host_resolvers`]).
    pub fn new(upstreams: Vec<SocketAddr>) -> Self {
        DnsServer {
            inner: Arc::new(Inner {
                view: RwLock::new(Arc::new(NetView::default())),
                upstreams: RwLock::new(upstreams),
                listeners: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// Answers from `view` from now on (the agent builds it with `NetView::build` whenever the
    /// desired state, the reports or membership change).
    pub fn set_view(&self, view: Arc<NetView>) {
        *self.inner.view.write().expect("view lock poisoned") = view;
    }

    /// Forwards to `upstreams` from now on.
    pub fn set_upstreams(&self, upstreams: Vec<SocketAddr>) {
        *self
            .inner
            .upstreams
            .write()
            .expect("upstreams lock poisoned") = upstreams;
    }

    /// Listens on exactly `addrs` (UDP and TCP on each): starts the missing ones, stops the
    /// others. Returns the addresses that could not be bound, with why (a bridge whose address
    /// is not up yet: try again on the next call).
    pub async fn listen_on(&self, addrs: &[SocketAddr]) -> Vec<(SocketAddr, std::io::Error)> {
        let mut failed = Vec::new();
        let missing: Vec<SocketAddr> = {
            let mut listeners = self
                .inner
                .listeners
                .lock()
                .expect("listeners lock poisoned");
            listeners.retain(|addr, tasks| {
                let keep = addrs.contains(addr) && tasks.iter().all(|t| !t.is_finished());
                if !keep {
                    tasks.iter().for_each(JoinHandle::abort);
                }
                keep
            });
            addrs
                .iter()
                .filter(|a| !listeners.contains_key(a))
                .copied()
                .collect()
        };
        for addr in missing {
            match self.bind(addr).await {
                Ok((bound, tasks)) => {
                    tracing::info!(%bound, "dns: listening");
                    self.inner
                        .listeners
                        .lock()
                        .expect("listeners lock poisoned")
                        .insert(addr, tasks);
                }
                Err(e) => failed.push((addr, e)),
            }
        }
        failed
    }

    /// The addresses listened on (as asked for: port 0 stays 0 here; see the bound address in
    /// the log).
    pub fn listening(&self) -> Vec<SocketAddr> {
        self.inner
            .listeners
            .lock()
            .expect("listeners lock poisoned")
            .keys()
            .copied()
            .collect()
    }

    /// Binds UDP then TCP on `addr` (TCP on the port UDP got, when `addr` asks for any port)
    /// and starts their loops.
    pub async fn bind(
        &self,
        addr: SocketAddr,
    ) -> std::io::Result<(SocketAddr, Vec<JoinHandle<()>>)> {
        let udp = UdpSocket::bind(addr).await?;
        let bound = udp.local_addr()?;
        let tcp = TcpListener::bind(bound).await?;
        let udp_task = tokio::spawn(self.clone().serve_udp(Arc::new(udp)));
        let tcp_task = tokio::spawn(self.clone().serve_tcp(tcp));
        Ok((bound, vec![udp_task, tcp_task]))
    }

    async fn serve_udp(self, socket: Arc<UdpSocket>) {
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, from) = match socket.recv_from(&mut buf).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "dns: udp receive");
                    continue;
                }
            };
            let query = buf[..n].to_vec();
            let (server, socket) = (self.clone(), socket.clone());
            // Each question in its own task: a slow upstream must not hold up the others.
            tokio::spawn(async move {
                if let Some(answer) = server.answer(from.ip(), &query, true).await {
                    let _ = socket.send_to(&answer, from).await;
                }
            });
        }
    }

    async fn serve_tcp(self, listener: TcpListener) {
        loop {
            let Ok((stream, from)) = listener.accept().await else {
                continue;
            };
            let server = self.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(
                    TCP_READ_TIMEOUT * 6,
                    server.serve_stream(stream, from.ip()),
                )
                .await;
            });
        }
    }

    async fn serve_stream(&self, mut stream: TcpStream, from: IpAddr) {
        loop {
            let mut len = [0u8; 2];
            let read = tokio::time::timeout(TCP_READ_TIMEOUT, stream.read_exact(&mut len)).await;
            if !matches!(read, Ok(Ok(_))) {
                return;
            }
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if stream.read_exact(&mut query).await.is_err() {
                return;
            }
            let Some(answer) = self.answer(from, &query, false).await else {
                return;
            };
            let Ok(len) = u16::try_from(answer.len()) else {
                return;
            };
            if stream.write_all(&len.to_be_bytes()).await.is_err()
                || stream.write_all(&answer).await.is_err()
            {
                return;
            }
        }
    }

    /// The answer to the DNS message `query` from `asker`, encoded; `None` when nothing should
    /// be sent back (not a DNS question at all). `udp`: the answer is cut to what the asker can
    /// take over UDP, with the truncation flag set so it asks again over TCP.
    pub async fn answer(&self, asker: IpAddr, query: &[u8], udp: bool) -> Option<Vec<u8>> {
        let request = match Message::from_vec(query) {
            Ok(m) => m,
            Err(_) => {
                // A header at least: say it is malformed; less than that: ignore it.
                let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
                return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
                    .to_vec()
                    .ok();
            }
        };
        if request.metadata.message_type != MessageType::Query {
            return None;
        }
        let [question] = &request.queries[..] else {
            return self.reply(&request, ResponseCode::FormErr, Vec::new(), udp);
        };
        if request.metadata.op_code != OpCode::Query {
            return self.reply(&request, ResponseCode::NotImp, Vec::new(), udp);
        }
        let qtype = match question.query_type() {
            RecordType::A => QueryType::A,
            _ => QueryType::Other,
        };
        let name = question.name().to_ascii();
        let view = self.inner.view.read().expect("view lock poisoned").clone();
        match resolve(&view, asker, &name, qtype) {
            Answer::Addresses(ips) => {
                let records = ips
                    .into_iter()
                    // TTL 0: replicas come and go; every lookup asks again.
                    .map(|ip| Record::from_rdata(question.name().clone(), 0, RData::A(A(ip))))
                    .collect();
                self.reply(&request, ResponseCode::NoError, records, udp)
            }
            Answer::NoData => self.reply(&request, ResponseCode::NoError, Vec::new(), udp),
            Answer::NxDomain => self.reply(&request, ResponseCode::NXDomain, Vec::new(), udp),
            Answer::Forward => match self.forward(query).await {
                Some(answer) => Some(answer),
                None => self.reply(&request, ResponseCode::ServFail, Vec::new(), udp),
            },
        }
    }

    fn reply(
        &self,
        request: &Message,
        code: ResponseCode,
        answers: Vec<Record>,
        udp: bool,
    ) -> Option<Vec<u8>> {
        let mut m = Message::response(request.metadata.id, request.metadata.op_code);
        m.metadata.recursion_desired = request.metadata.recursion_desired;
        m.metadata.recursion_available = true;
        m.metadata.authoritative = code != ResponseCode::ServFail;
        m.metadata.response_code = code;
        m.add_queries(request.queries.iter().cloned());
        let limit = match (&request.edns, udp) {
            (_, false) => usize::from(u16::MAX),
            (Some(edns), true) => usize::from(edns.max_payload()).max(CLASSIC_UDP),
            (None, true) => CLASSIC_UDP,
        };
        let mut answers = answers;
        loop {
            m.answers = answers.clone();
            let bytes = m.to_vec().ok()?;
            if bytes.len() <= limit || answers.is_empty() {
                return Some(bytes);
            }
            m.metadata.truncation = true;
            answers.truncate(answers.len() / 2);
        }
    }

    /// Asks the upstream resolvers in turn (over UDP); their answer, or `None` if none gave
    /// one.
    async fn forward(&self, query: &[u8]) -> Option<Vec<u8>> {
        let upstreams = self
            .inner
            .upstreams
            .read()
            .expect("upstreams lock poisoned")
            .clone();
        for upstream in upstreams {
            let bind: SocketAddr = match upstream {
                SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("literal"),
                SocketAddr::V6(_) => "[::]:0".parse().expect("literal"),
            };
            let Ok(socket) = UdpSocket::bind(bind).await else {
                continue;
            };
            if socket.connect(upstream).await.is_err() || socket.send(query).await.is_err() {
                continue;
            }
            let mut buf = vec![0u8; 4096];
            match tokio::time::timeout(UPSTREAM_TIMEOUT, socket.recv(&mut buf)).await {
                Ok(Ok(n)) => return Some(buf[..n].to_vec()),
                _ => tracing::debug!(%upstream, "dns: upstream did not answer"),
            }
        }
        None
    }
}

/// The host's resolvers from the text of `/etc/resolv.conf`: every `nameserver`, except the
/// loopback ones (a local stub such as systemd-resolved's 127.0.0.53 or Docker's 127.0.0.11 is
/// not reachable from where the forwarded question would come from, and may loop back).
pub fn host_resolvers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            // A zone index (`fe80::1%eth0`) is not taken.
            let ip: IpAddr = words.next()?.parse().ok()?;
            (!ip.is_loopback()).then_some(SocketAddr::new(ip, DNS_PORT))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf() {
        let text = "# generated\nsearch example.com\nnameserver 127.0.0.53\nnameserver 10.0.0.2\n\
                    nameserver ::1\nnameserver 2001:db8::53\noptions ndots:1\n";
        assert_eq!(
            host_resolvers(text),
            [
                "10.0.0.2:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::53]:53".parse().unwrap()
            ]
        );
    }
}
