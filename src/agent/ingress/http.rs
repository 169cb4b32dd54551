//! Layer 7, for sticky services and for entry points with HTTP routers: each HTTP/1.1 request is
//! routed on its own. On an entry point, the first router (by priority) whose rule matches the
//! request picks the service (`404` when none does). A request whose
//! cookie names a ready replica goes there; any other request goes to the next replica in turn and
//! its response sets the cookie, so the browser's later requests (a form's POST after its GET)
//! reach the replica that issued the page.
//!
//! Connections to replicas are kept per client connection and reused while the client sends to
//! the same replica, which a sticky client does. A protocol upgrade (WebSocket) is routed like any
//! request; once the replica answers `101 Switching Protocols`, the two connections are joined and
//! bytes flow both ways untouched.

use std::{collections::HashMap, convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::{
    body::Incoming,
    client::conn::http1::SendRequest,
    header::{self, HeaderMap, HeaderName, HeaderValue},
    server::conn::http1,
    service::service_fn,
    Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpStream, sync::Mutex};
use tracing::{debug, Instrument};

use super::{BalanceKey, Shared};
use shoal_core::desired::spec::Protocol;
use shoal_core::routing::{routers, routes::Backend, rule::HttpFacts};

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
/// Connections to replicas opened for one client connection, by replica address.
type Upstreams = Arc<Mutex<HashMap<SocketAddr, SendRequest<Incoming>>>>;

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
    let wanted: Option<String> = route.sticky.as_ref().and_then(|cookie| {
        request
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|h| cookie.find_in(h))
            .map(str::to_string)
    });
    let upgrade = upgrade_of(request.headers());
    prepare_request(request.headers_mut(), peer, upgrade.as_ref());
    // Taken before the request goes: it resolves once the client's side has switched protocols.
    let client_side = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));

    let mut tried = Vec::new();
    let (backend, sticky_hit, mut response) = loop {
        let Some((backend, sticky_hit)) =
            shared.pick(key.clone(), &route, wanted.as_deref(), &tried)
        else {
            let why = format!("no replica of {} is ready\n", route.service);
            return error(StatusCode::SERVICE_UNAVAILABLE, &why);
        };
        let cached = upstreams.lock().await.remove(&backend.addr);
        let from_cache = cached.is_some();
        let sender = match cached {
            Some(sender) => Some(sender),
            None => open(shared, &key, &backend).await,
        };
        let Some(mut sender) = sender else {
            tried.push(backend.task_id);
            continue;
        };
        if sender.ready().await.is_err() {
            // A kept connection the replica closed meanwhile: open a new one.
            if !from_cache {
                tried.push(backend.task_id);
            }
            continue;
        }
        match sender.try_send_request(request).await {
            Ok(response) => {
                // A switched connection is a tunnel now, not one to send requests on.
                if response.status() != StatusCode::SWITCHING_PROTOCOLS {
                    upstreams.lock().await.insert(backend.addr, sender);
                }
                break (backend, sticky_hit, response);
            }
            Err(mut e) => {
                let Some(unsent) = e.take_message() else {
                    // Part of the request went out: it cannot be sent again safely.
                    debug!(task = %backend.task_id, error = %e.error(), "ingress: replica failed the request");
                    let why = format!(
                        "replica {} failed the request: {}\n",
                        backend.task_id,
                        e.error()
                    );
                    return error(StatusCode::BAD_GATEWAY, &why);
                };
                // Nothing was sent (the connection was closed under us): try again elsewhere,
                // or on a new connection to the same replica if this one was an old one.
                request = unsent;
                if !from_cache {
                    tried.push(backend.task_id);
                }
            }
        }
    };
    let switched = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    match (switched, client_side, &upgrade) {
        (true, Some(client_side), Some(protocol)) => {
            let replica_side = hyper::upgrade::on(&mut response);
            tokio::spawn(
                tunnel(client_side, replica_side, backend.task_id.clone()).in_current_span(),
            );
            strip_hop_by_hop(response.headers_mut());
            keep_upgrade(response.headers_mut(), protocol);
        }
        (true, _, _) => {
            // A 101 nobody asked for cannot be carried on.
            let why = format!("replica {} switched protocols unasked\n", backend.task_id);
            return error(StatusCode::BAD_GATEWAY, &why);
        }
        (false, _, _) => strip_hop_by_hop(response.headers_mut()),
    }
    let mut response = response.map(|body| body.boxed());
    if let (Some(cookie), false) = (&route.sticky, sticky_hit) {
        if let Ok(value) = HeaderValue::from_str(&cookie.set_cookie(&backend.task_id)) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// A new HTTP/1.1 connection to `backend` (its driver runs in its own task).
async fn open(
    shared: &Shared,
    key: &BalanceKey,
    backend: &Backend,
) -> Option<SendRequest<Incoming>> {
    let stream = shared.dial(key.clone(), backend).await?;
    match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok((sender, connection)) => {
            tokio::spawn(
                async move {
                    if let Err(e) = connection.with_upgrades().await {
                        debug!(error = %e, "ingress: replica connection ended");
                    }
                }
                .in_current_span(),
            );
            Some(sender)
        }
        Err(e) => {
            debug!(task = %backend.task_id, error = %e, "ingress: HTTP handshake with a replica failed");
            None
        }
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

/// A plain-text answer of the proxy's own.
fn error(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(text.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
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
