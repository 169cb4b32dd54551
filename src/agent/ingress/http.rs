//! Layer 7, for sticky services and for entry points with HTTP routers: each HTTP/1.1 request is
//! routed on its own. On an entry point, the first router (by priority) whose rule matches the
//! request picks the service (`404` when none does). A request whose
//! cookie names a ready replica goes there; any other request goes to the next replica in turn and
//! its response sets the cookie, so the browser's later requests (a form's POST after its GET)
//! reach the replica that issued the page. The cookie is signed and carries the replica's
//! endpoint, so a node that has not heard of the replica yet still reaches it
//! ([`sticky::decide`] says when).
//!
//! A replica that refuses the connection is passed over for the next one. A request it accepted
//! and then dropped without a byte of an answer is sent once more, to another replica, when that
//! is safe: an idempotent method and a body held whole ([`balance::may_retry`]); otherwise the
//! client gets `502`.
//!
//! Connections to replicas are kept per client connection and reused while the client sends to
//! the same replica, which a sticky client does. A protocol upgrade (WebSocket) is routed like any
//! request; once the replica answers `101 Switching Protocols`, the two connections are joined and
//! bytes flow both ways untouched.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::{
    body::{Body as _, Incoming},
    client::conn::http1::SendRequest,
    header::{self, HeaderMap, HeaderName, HeaderValue},
    http::request::Parts,
    server::conn::http1,
    service::service_fn,
    Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::Mutex,
};
use tracing::{debug, Instrument};

use super::{BalanceKey, Shared};
use crate::agent::shell::now_ms;
use shoal_core::desired::spec::Protocol;
use shoal_core::routing::{
    balance, routers,
    rule::HttpFacts,
    sticky::{self, Decision},
};

/// What a router's rule looks at in a request.
struct Facts<'a>(&'a Request<Incoming>);

impl HttpFacts for Facts<'_> {
    fn host(&self) -> &str {
        self.0
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| self.0.uri().authority().map(|a| a.as_str()))
            .unwrap_or("")
    }

    fn path(&self) -> &str {
        self.0.uri().path()
    }

    fn method(&self) -> &str {
        self.0.method().as_str()
    }

    fn query(&self) -> &str {
        self.0.uri().query().unwrap_or("")
    }

    fn has_header(&self, name: &str, value: &str) -> bool {
        self.0
            .headers()
            .get_all(name)
            .iter()
            .any(|v| v.as_bytes() == value.as_bytes())
    }
}

type Body = BoxBody<Bytes, hyper::Error>;

/// A kept connection to a replica, and how many bytes have been read from it: a request that
/// failed with the count unchanged got no byte of an answer, which is what makes it safe to send
/// elsewhere (hyper's errors do not tell a connection closed before the answer from one closed
/// in the middle of its head).
struct Upstream {
    sender: SendRequest<Body>,
    read: Arc<AtomicU64>,
}

/// Connections to replicas opened for one client connection, by replica address.
type Upstreams = Arc<Mutex<HashMap<SocketAddr, Upstream>>>;

/// Where one attempt goes: a replica's task id and endpoint (from the table, or from a signed
/// cookie on a node that has not heard of the replica yet).
struct Target {
    task_id: String,
    addr: SocketAddr,
}

/// How long a client may take to send a request's headers (slow-loris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves one client connection until it closes.
pub(super) async fn serve(client: TcpStream, peer: SocketAddr, port: u16, shared: Arc<Shared>) {
    let upstreams: Upstreams = Arc::default();
    let service = service_fn(move |request| {
        let shared = shared.clone();
        let upstreams = upstreams.clone();
        async move { Ok::<_, Infallible>(route(request, peer, port, &shared, &upstreams).await) }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(client), service)
        .with_upgrades()
        .await;
    if let Err(e) = served {
        debug!(%peer, error = %e, "ingress: client connection ended");
    }
}

/// The request to forward: held whole, so it can be sent a second time, or streamed, once.
enum Outgoing {
    /// An idempotent request with a small body ([`balance::may_retry`]), read in full.
    Buffered { head: Parts, body: Bytes },
    /// Any other: its body goes to the replica as the client sends it. None while it is out.
    Streamed(Option<Request<Body>>),
}

impl Outgoing {
    /// Reads the body of a request that may be retried; streams the others.
    async fn new(request: Request<Incoming>) -> Result<Outgoing, hyper::Error> {
        let body_len = request.body().size_hint().exact();
        if !balance::may_retry(request.method().as_str(), body_len) {
            return Ok(Outgoing::Streamed(Some(request.map(|b| b.boxed()))));
        }
        let (head, body) = request.into_parts();
        // The length is known and within the bound (hyper holds the client to its
        // Content-Length), so this reads at most MAX_RETRY_BODY_BYTES.
        let body = body.collect().await?.to_bytes();
        Ok(Outgoing::Buffered { head, body })
    }

    /// The request for the next attempt; None when a streamed one is already spent.
    fn take(&mut self) -> Option<Request<Body>> {
        match self {
            Outgoing::Buffered { head, body } => {
                let mut request = Request::new(full(body.clone()));
                *request.method_mut() = head.method.clone();
                *request.uri_mut() = head.uri.clone();
                *request.version_mut() = head.version;
                *request.headers_mut() = head.headers.clone();
                Some(request)
            }
            Outgoing::Streamed(request) => request.take(),
        }
    }

    /// Hands back a request that never went out.
    fn unsent(&mut self, request: Request<Body>) {
        if let Outgoing::Streamed(slot) = self {
            *slot = Some(request);
        }
    }

    fn retryable(&self) -> bool {
        matches!(self, Outgoing::Buffered { .. })
    }
}

/// Forwards one request to the replica its cookie names, or to the next one in turn.
async fn route(
    mut request: Request<Incoming>,
    peer: SocketAddr,
    port: u16,
    shared: &Shared,
    upstreams: &Upstreams,
) -> Response<Body> {
    let (route, key) = match shared.route((Protocol::Tcp, port)) {
        Some(route) => (route, BalanceKey::Port((Protocol::Tcp, port))),
        None => {
            let routers = shared.routers(port);
            if routers.is_empty() {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "this port is no longer published\n",
                );
            }
            let facts = Facts(&request);
            match routers::select(&routers, |r| &r.router, &facts) {
                Some(r) => (r.route.clone(), BalanceKey::Routed(r.route.service.clone())),
                // Traefik's answer when no router matches.
                None => return error(StatusCode::NOT_FOUND, "404 page not found\n"),
            }
        }
    };
    let cookie: Option<String> = route.sticky.as_ref().and_then(|cookie| {
        request
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|h| cookie.find_in(h))
            .map(str::to_string)
    });
    let decision = match route.sticky {
        Some(_) => shared
            .with_cookie_keys(|keys| sticky::decide(cookie.as_deref(), keys, &route, now_ms())),
        None => Decision::Balance,
    };
    let (wanted, mut next, refresh) = match decision {
        Decision::Balance => (None, None, false),
        Decision::Replica { task_id, refresh } => (Some(task_id), None, refresh),
        Decision::Direct { task_id, addr } => {
            debug!(task = %task_id, %addr, "ingress: sticky cookie names a replica not in this node's table; going to its endpoint");
            let target = Target {
                task_id: task_id.to_string(),
                addr,
            };
            // The cookie stays right: no new one unless this fails.
            (None, Some((target, true)), false)
        }
    };
    let upgrade = upgrade_of(request.headers());
    prepare_request(request.headers_mut(), peer, upgrade.as_ref());
    // Taken before the request goes: it resolves once the client's side has switched protocols.
    let client_side = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
    let method = request.method().clone();
    let mut outgoing = match Outgoing::new(request).await {
        Ok(outgoing) => outgoing,
        Err(e) => {
            debug!(error = %e, "ingress: could not read the request's body");
            return error(StatusCode::BAD_REQUEST, "could not read the request body\n");
        }
    };

    let mut tried: Vec<String> = Vec::new();
    // Why the request that went out failed, once it has: it is retried at most once.
    let mut failed_once: Option<String> = None;
    let (target, sticky_hit, mut response) = loop {
        let (target, sticky_hit) = match next.take() {
            Some(next) => next,
            None => match shared.pick(key.clone(), &route, wanted, &tried) {
                Some((backend, hit)) => {
                    let target = Target {
                        task_id: backend.task_id,
                        addr: backend.addr,
                    };
                    (target, hit)
                }
                None => {
                    return match failed_once {
                        Some(why) => error(StatusCode::BAD_GATEWAY, &why),
                        None => {
                            let why = format!("no replica of {} is ready\n", route.service);
                            error(StatusCode::SERVICE_UNAVAILABLE, &why)
                        }
                    };
                }
            },
        };
        let cached = upstreams.lock().await.remove(&target.addr);
        let from_cache = cached.is_some();
        let upstream = match cached {
            Some(upstream) => Some(upstream),
            None => open(shared, &key, &target).await,
        };
        let Some(mut upstream) = upstream else {
            tried.push(target.task_id);
            continue;
        };
        if upstream.sender.ready().await.is_err() {
            // A kept connection the replica closed meanwhile: a new one to the same replica.
            if from_cache {
                next = Some((target, sticky_hit));
            } else {
                tried.push(target.task_id);
            }
            continue;
        }
        let Some(attempt) = outgoing.take() else {
            // Unreachable: a streamed request that went out is never tried again.
            return error(StatusCode::BAD_GATEWAY, "the request could not be sent\n");
        };
        let read_before = upstream.read.load(Ordering::Relaxed);
        match upstream.sender.try_send_request(attempt).await {
            Ok(response) => {
                // A switched connection is a tunnel now, not one to send requests on.
                if response.status() != StatusCode::SWITCHING_PROTOCOLS {
                    upstreams.lock().await.insert(target.addr, upstream);
                }
                break (target, sticky_hit, response);
            }
            Err(mut e) => {
                if let Some(unsent) = e.take_message() {
                    // Nothing was sent (the connection was closed under us): try again
                    // elsewhere, or on a new connection to the same replica if this one was
                    // an old one.
                    outgoing.unsent(unsent);
                    if from_cache {
                        next = Some((target, sticky_hit));
                    } else {
                        tried.push(target.task_id);
                    }
                    continue;
                }
                let answered = upstream.read.load(Ordering::Relaxed) != read_before;
                let why = format!(
                    "replica {} failed the request: {}\n",
                    target.task_id,
                    e.error()
                );
                if answered || !outgoing.retryable() || failed_once.is_some() {
                    // Part of the request went out and it may not be safe to repeat, or the
                    // replica began answering, or this was the second try.
                    debug!(task = %target.task_id, %method, answered, error = %e.error(),
                        "ingress: replica failed the request");
                    return error(StatusCode::BAD_GATEWAY, &why);
                }
                // Idempotent and held whole, and the replica closed without a byte of an
                // answer (it crashed, or closed a kept connection as it stopped): once more,
                // on another replica, never this one.
                debug!(task = %target.task_id, %method, error = %e.error(),
                    "ingress: replica closed before answering; retrying on another replica");
                tried.push(target.task_id);
                failed_once = Some(why);
            }
        }
    };
    let switched = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    match (switched, client_side, &upgrade) {
        (true, Some(client_side), Some(protocol)) => {
            let replica_side = hyper::upgrade::on(&mut response);
            tokio::spawn(
                tunnel(client_side, replica_side, target.task_id.clone()).in_current_span(),
            );
            strip_hop_by_hop(response.headers_mut());
            keep_upgrade(response.headers_mut(), protocol);
        }
        (true, _, _) => {
            // A 101 nobody asked for cannot be carried on.
            let why = format!("replica {} switched protocols unasked\n", target.task_id);
            return error(StatusCode::BAD_GATEWAY, &why);
        }
        (false, _, _) => strip_hop_by_hop(response.headers_mut()),
    }
    let mut response = response.map(|body| body.boxed());
    if let (Some(cookie), true) = (&route.sticky, !sticky_hit || refresh) {
        let value = shared.with_cookie_keys(|keys| {
            sticky::cookie_value(keys, &route, &target.task_id, target.addr, now_ms())
        });
        if let Ok(value) = HeaderValue::from_str(&cookie.set_cookie(&value)) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// A new HTTP/1.1 connection to `target` (its driver runs in its own task).
async fn open(shared: &Shared, key: &BalanceKey, target: &Target) -> Option<Upstream> {
    let stream = shared
        .dial(key.clone(), &target.task_id, target.addr)
        .await?;
    let read = Arc::new(AtomicU64::new(0));
    let counted = Counted {
        stream,
        read: read.clone(),
    };
    match hyper::client::conn::http1::handshake(TokioIo::new(counted)).await {
        Ok((sender, connection)) => {
            tokio::spawn(
                async move {
                    if let Err(e) = connection.with_upgrades().await {
                        debug!(error = %e, "ingress: replica connection ended");
                    }
                }
                .in_current_span(),
            );
            Some(Upstream { sender, read })
        }
        Err(e) => {
            debug!(task = %target.task_id, error = %e, "ingress: HTTP handshake with a replica failed");
            None
        }
    }
}

/// A connection to a replica that counts the bytes read from it (see [`Upstream`]).
struct Counted {
    stream: TcpStream,
    read: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let got = buf.filled().len() - before;
            this.read.fetch_add(got as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The protocol a request asks to switch to (`Connection: upgrade` with an `Upgrade` header).
fn upgrade_of(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Puts back the two headers an upgrade needs after the hop-by-hop ones were removed.
fn keep_upgrade(headers: &mut HeaderMap, protocol: &HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol.clone());
}

/// Joins the client's and the replica's switched connections until either side closes.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    replica: hyper::upgrade::OnUpgrade,
    task: String,
) {
    let (client, replica) = match tokio::try_join!(client, replica) {
        Ok(both) => both,
        Err(e) => {
            debug!(%task, error = %e, "ingress: upgrade did not complete");
            return;
        }
    };
    let (mut client, mut replica) = (TokioIo::new(client), TokioIo::new(replica));
    match tokio::io::copy_bidirectional(&mut client, &mut replica).await {
        Ok((up, down)) => debug!(%task, up, down, "ingress: upgraded connection done"),
        Err(e) => debug!(%task, error = %e, "ingress: upgraded connection ended"),
    }
}

/// Hop-by-hop headers out (but an upgrade's own), `X-Forwarded-For` and `X-Forwarded-Proto` in.
fn prepare_request(headers: &mut HeaderMap, peer: SocketAddr, upgrade: Option<&HeaderValue>) {
    strip_hop_by_hop(headers);
    if let Some(protocol) = upgrade {
        keep_upgrade(headers, protocol);
    }
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(before) => format!("{before}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), value);
    }
    headers
        .entry(HeaderName::from_static("x-forwarded-proto"))
        .or_insert(HeaderValue::from_static("http"));
}

/// Removes the headers that describe one connection rather than the message (RFC 9110 §7.6.1),
/// including those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// A body of bytes held in full.
fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// A plain-text answer of the proxy's own.
fn error(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from(text.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_forwarding_headers_come() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::COOKIE, HeaderValue::from_static("a=1"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.1.1.1"));
        assert!(
            upgrade_of(&h).is_none(),
            "an Upgrade header alone is no upgrade"
        );
        prepare_request(&mut h, SocketAddr::from(([10, 2, 2, 2], 5555)), None);
        for gone in ["connection", "x-private", "keep-alive", "upgrade"] {
            assert!(h.get(gone).is_none(), "{gone} still there");
        }
        assert_eq!(h["cookie"], "a=1");
        assert_eq!(h["x-forwarded-for"], "10.1.1.1, 10.2.2.2");
        assert_eq!(h["x-forwarded-proto"], "http");
    }

    #[test]
    fn an_upgrade_keeps_its_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        let protocol = upgrade_of(&h).expect("an upgrade");
        prepare_request(
            &mut h,
            SocketAddr::from(([10, 2, 2, 2], 5555)),
            Some(&protocol),
        );
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
    }
}
