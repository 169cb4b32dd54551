//! `shoal-demo`: the workload of shoal's tests and walk-through, playing the part of the web app in
//! Docker Swarm's high-availability tutorial.
//!
//! It listens on `0.0.0.0:$PORT` (8080 by default) and serves:
//!
//! | request                | answer                                                            |
//! |------------------------|-------------------------------------------------------------------|
//! | `GET /`                | `<replica-id> <version>\n`, the same for every request            |
//! | `GET /health`          | 200 `ok`, or 503 while switched off (always 503 when broken)      |
//! | `POST /admin/unhealthy`| switches `/health` off                                            |
//! | `POST /admin/healthy`  | switches it back on                                               |
//! | `POST /admin/exit`     | answers, then the process exits with status 1 (dies from inside)  |
//! | `GET /signup`          | a form with an anti-forgery token only this process accepts       |
//! | `POST /signup`         | 200 if the form's `token` is one this process issued, else 400    |
//!
//! The replica id is `$REPLICA_ID`, else the host name (`/etc/hostname`, `$HOSTNAME`); the version
//! is `$VERSION`, else the compiled-in default: `1`, or `2` with the cargo feature `v2`. `BROKEN=1`
//! or the feature `broken` makes `/health` never healthy. SIGTERM and SIGINT end it with status 0,
//! gracefully: it stops accepting, answers every request still coming on a kept connection with
//! `Connection: close` (the client then opens a new connection, which the orchestrator's ingress
//! sends to another replica), and exits once no connection is left, at once when none is open.
//! Connections still idle after [`SHUTDOWN_IDLE_GRACE`] are closed; a request in flight is always
//! answered first.
//!
//! `shoal-demo healthcheck` asks `http://127.0.0.1:$PORT/health` and exits 0 on a 200, else 1: an
//! image built `FROM scratch` has no curl, so its `HEALTHCHECK` runs the binary itself. For the
//! same reason `shoal-demo resolve NAME` and `shoal-demo get URL [COUNT [INTERVAL_MS]]` look at
//! the service network from inside a replica (see `client.rs`).

#![forbid(unsafe_code)]

mod client;
mod token;

use std::{
    convert::Infallible,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    body::Incoming,
    header::{CONNECTION, CONTENT_TYPE, SET_COOKIE},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, signal::unix::Signal, sync::watch, task::JoinSet};

use token::TokenKey;

/// The version reported when `$VERSION` is not set.
const DEFAULT_VERSION: &str = if cfg!(feature = "v2") { "2" } else { "1" };
/// The port listened on when `$PORT` is not set.
const DEFAULT_PORT: u16 = 8080;
/// The largest request body read (a sign-up form is tiny).
const MAX_BODY: usize = 16 * 1024;
/// How long `/admin/exit` leaves for its answer to go out before the process ends.
const EXIT_DELAY: Duration = Duration::from_millis(100);
/// How long the health check waits to connect and for the answer.
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// After SIGTERM, how long a kept connection may stay open waiting for its next request. Closing an
/// idle connection races with a request the client may be sending on it at that moment (which
/// then fails), while an answer that says `Connection: close` ends it cleanly: so active clients
/// get that answer first, and only connections idle this long are closed.
const SHUTDOWN_IDLE_GRACE: Duration = Duration::from_secs(2);
/// The longest a shutdown takes, requests in flight included: below Docker's 10 s before SIGKILL.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(8);

const USAGE: &str = "usage: shoal-demo [healthcheck | resolve NAME | get URL [COUNT [INTERVAL_MS]]]
  (no argument)  serve on 0.0.0.0:$PORT (default 8080)
  healthcheck    exit 0 if http://127.0.0.1:$PORT/health answers 200, else 1
  resolve NAME   print the IPv4 addresses NAME resolves to (from inside a replica)
  get URL        GET http://URL COUNT times (default 1), INTERVAL_MS apart; a line each, then
                 a summary with latencies; exit 1 if any failed
environment: PORT, REPLICA_ID, VERSION, BROKEN=1";

fn main() -> ExitCode {
    let port = match port() {
        Ok(port) => port,
        Err(message) => {
            eprintln!("shoal-demo: {message}");
            return ExitCode::from(2);
        }
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => serve(port),
        ["healthcheck" | "--healthcheck"] => healthcheck(port),
        ["resolve", name] => match client::resolve(name) {
            Ok(addrs) => {
                for a in addrs {
                    println!("{a}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("shoal-demo resolve {name}: {e}");
                ExitCode::FAILURE
            }
        },
        ["get", url, ref rest @ ..] if rest.len() <= 2 => {
            let count = rest.first().and_then(|c| c.parse().ok()).unwrap_or(1);
            let interval = rest.get(1).and_then(|i| i.parse().ok()).unwrap_or(0);
            if client::get(url, count, Duration::from_millis(interval)) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        ["-h" | "--help" | "help"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// `$PORT`, or the default.
fn port() -> Result<u16, String> {
    match std::env::var("PORT") {
        Ok(port) => port
            .trim()
            .parse()
            .map_err(|_| format!("PORT={port:?} is not a port number")),
        Err(_) => Ok(DEFAULT_PORT),
    }
}

/// A set, non-empty environment variable.
fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|value| value.trim().to_string())
        .filter(|value| !value.is_empty())
}

/// `$REPLICA_ID`, else the host name.
fn replica_id() -> String {
    env_nonempty("REPLICA_ID")
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|name| name.trim().to_string())
                .filter(|name| !name.is_empty())
        })
        .or_else(|| env_nonempty("HOSTNAME"))
        .unwrap_or_else(|| "unknown".to_string())
}

/// The state every request shares.
struct App {
    /// The first line of `GET /`.
    identity: String,
    replica_id: String,
    /// Whether `/health` answers 200 (unless `broken`).
    healthy: AtomicBool,
    /// A release that is never healthy.
    broken: bool,
    /// Set by SIGTERM or SIGINT: every answer closes its connection.
    stopping: AtomicBool,
    tokens: TokenKey,
}

/// Runs the server until SIGTERM or SIGINT.
fn serve(port: u16) -> ExitCode {
    let replica_id = replica_id();
    let version = env_nonempty("VERSION").unwrap_or_else(|| DEFAULT_VERSION.to_string());
    let broken = cfg!(feature = "broken")
        || env_nonempty("BROKEN").is_some_and(|value| value != "0" && value != "false");
    let app = Arc::new(App {
        identity: format!("{replica_id} {version}\n"),
        replica_id,
        healthy: AtomicBool::new(true),
        broken,
        stopping: AtomicBool::new(false),
        tokens: TokenKey::random(),
    });
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("shoal-demo: starting the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        // Handle the signals before saying we listen, so that none is missed in between.
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(term), Ok(int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            eprintln!("shoal-demo: cannot install signal handlers");
            return ExitCode::FAILURE;
        };
        let address = SocketAddr::from(([0, 0, 0, 0], port));
        let listener = match TcpListener::bind(address).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("shoal-demo: listening on {address}: {error}");
                return ExitCode::FAILURE;
            }
        };
        // With PORT=0 the system picks the port: tell which (the tests read this line).
        let address = listener.local_addr().unwrap_or(address);
        eprintln!(
            "shoal-demo: {} listening on {address}{}",
            app.identity.trim_end(),
            if app.broken {
                " (broken: never healthy)"
            } else {
                ""
            }
        );
        let mut connections = JoinSet::new();
        let (close_idle, close_idle_rx) = watch::channel(false);
        // The listener goes with the accept loop when the signal comes: no new connection.
        let signal = tokio::select! {
            () = accept_loop(listener, app.clone(), &mut connections, close_idle_rx) => {
                return ExitCode::FAILURE;
            }
            signal = shutdown_signal(term, int) => signal,
        };
        app.stopping.store(true, Ordering::SeqCst);
        eprintln!(
            "shoal-demo: {signal}, exiting once its {} connection(s) are closed",
            connections.len()
        );
        let drained = async { while connections.join_next().await.is_some() {} };
        let idle_closed = async {
            tokio::time::sleep(SHUTDOWN_IDLE_GRACE).await;
            let _ = close_idle.send(true);
            std::future::pending::<()>().await
        };
        let _ = tokio::time::timeout(SHUTDOWN_LIMIT, async {
            tokio::select! {
                () = drained => {}
                () = idle_closed => {}
            }
        })
        .await;
        ExitCode::SUCCESS
    })
}

/// Serves every connection `listener` accepts, each in a task of `connections`; once
/// `close_idle` turns true, connections close after the request in flight (idle ones at once).
async fn accept_loop(
    listener: TcpListener,
    app: Arc<App>,
    connections: &mut JoinSet<()>,
    close_idle: watch::Receiver<bool>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Running out of file descriptors, say: wait a little rather than spin.
                eprintln!("shoal-demo: accept: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let app = app.clone();
        let mut close_idle = close_idle.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let app = app.clone();
                async move {
                    let mut response = handle(&app, request).await;
                    if app.stopping.load(Ordering::SeqCst) {
                        // hyper closes the connection once this answer is out.
                        response
                            .headers_mut()
                            .insert(CONNECTION, "close".parse().expect("a valid header"));
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            // Clients that hang up early are not worth a log line.
            tokio::select! {
                _ = connection.as_mut() => {}
                () = async { let _ = close_idle.wait_for(|close| *close).await; } => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
}

/// Resolves with the name of the first SIGTERM or SIGINT.
async fn shutdown_signal(mut term: Signal, mut int: Signal) -> &'static str {
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// Answers one request.
async fn handle(app: &App, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    match (request.uri().path(), method) {
        ("/", Method::GET | Method::HEAD) => text(StatusCode::OK, app.identity.clone()),
        ("/health", Method::GET | Method::HEAD) => {
            if !app.broken && app.healthy.load(Ordering::SeqCst) {
                text(StatusCode::OK, "ok\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n")
            }
        }
        ("/admin/healthy", Method::POST) => {
            app.healthy.store(true, Ordering::SeqCst);
            text(StatusCode::OK, "healthy\n")
        }
        ("/admin/unhealthy", Method::POST) => {
            app.healthy.store(false, Ordering::SeqCst);
            text(StatusCode::OK, "unhealthy\n")
        }
        ("/admin/exit", Method::POST) => {
            eprintln!("shoal-demo: asked to exit, exiting with status 1");
            tokio::spawn(async {
                tokio::time::sleep(EXIT_DELAY).await;
                std::process::exit(1);
            });
            let mut response = text(StatusCode::OK, "exiting\n");
            response
                .headers_mut()
                .insert(CONNECTION, "close".parse().expect("a valid header"));
            response
        }
        ("/signup", Method::GET) => signup_form(app),
        ("/signup", Method::POST) => signup(app, request).await,
        ("/" | "/health" | "/signup", _)
        | ("/admin/healthy" | "/admin/unhealthy" | "/admin/exit", _) => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// The sign-up form, with a fresh token and a session cookie.
fn signup_form(app: &App) -> Response<Full<Bytes>> {
    let token = app.tokens.issue();
    let replica = html_escape(app.identity.trim_end());
    let body = format!(
        "<!doctype html>
<html><head><title>Sign up</title></head><body>
<h1>Sign up</h1>
<p>Served by {replica}</p>
<form method=\"post\" action=\"/signup\">
<input type=\"hidden\" name=\"token\" value=\"{token}\">
<label>E-mail <input type=\"email\" name=\"email\"></label>
<button type=\"submit\">Sign up</button>
</form>
</body></html>
"
    );
    let session = hex::encode(token::random_bytes::<16>());
    let mut response = Response::new(Full::new(Bytes::from(body)));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        "text/html; charset=utf-8".parse().expect("a valid header"),
    );
    headers.insert(
        SET_COOKIE,
        format!("demo_session={session}; Path=/; HttpOnly; SameSite=Lax")
            .parse()
            .expect("a valid header"),
    );
    response
}

/// Accepts a sign-up whose token this process issued.
async fn signup(app: &App, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return text(StatusCode::BAD_REQUEST, "unreadable or too large form\n"),
    };
    let mut token = None;
    let mut email = String::new();
    for (key, value) in form_urlencoded::parse(&body) {
        match &*key {
            "token" => token = Some(value.into_owned()),
            "email" => email = value.into_owned(),
            _ => {}
        }
    }
    match token {
        Some(token) if app.tokens.verify(&token) => text(
            StatusCode::OK,
            format!("{} signed up {}\n", app.replica_id, email.trim()),
        ),
        _ => text(
            StatusCode::BAD_REQUEST,
            format!(
                "{}: the anti-forgery token is missing or was not issued by this replica\n",
                app.replica_id
            ),
        ),
    }
}

/// A `text/plain` answer.
fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        "text/plain; charset=utf-8".parse().expect("a valid header"),
    );
    response
}

/// `text` with the characters HTML gives a meaning escaped.
fn html_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// `shoal-demo healthcheck`: 0 if `/health` on this host's port answers 200, else 1.
fn healthcheck(port: u16) -> ExitCode {
    match health_status(port) {
        Ok(200) => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("shoal-demo healthcheck: /health answered {status}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("shoal-demo healthcheck: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The status code of `GET http://127.0.0.1:PORT/health`, with a plain HTTP/1.0 exchange.
fn health_status(port: u16) -> std::io::Result<u16> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, HEALTHCHECK_TIMEOUT)?;
    stream.set_read_timeout(Some(HEALTHCHECK_TIMEOUT))?;
    stream.set_write_timeout(Some(HEALTHCHECK_TIMEOUT))?;
    stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut head = Vec::new();
    stream.take(1024).read_to_end(&mut head)?;
    let head = String::from_utf8_lossy(&head);
    head.split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {head:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escape_escapes_markup() {
        assert_eq!(
            html_escape(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(html_escape("web-1 2"), "web-1 2");
    }

    #[test]
    fn default_version_follows_the_feature() {
        assert_eq!(
            DEFAULT_VERSION,
            if cfg!(feature = "v2") { "2" } else { "1" }
        );
    }
}
