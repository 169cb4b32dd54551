//! `shoal-loadgen`: HTTP load for the testnet scenarios, counting every request that fails.
//!
//! Two modes, which can run at once:
//!
//! - **new connections** at a fixed rate: each request opens a new TCP connection, sends one
//!   `GET` with `Connection: close` and reads the whole answer. Requests start on a timer (the
//!   `i`-th at `start + i / rate`), each in a task of its own, so a slow request never delays the
//!   next one and the rate holds however long answers take;
//! - **keep-alive clients**: each client keeps one connection and sends requests back to back on
//!   it, opening a new connection when the server closes the old one between requests (after an
//!   answer that said `Connection: close`, or while idle). A connection that dies with a request
//!   in flight fails that request.
//!
//! A request fails on a connect error, a timeout (connect to last byte of the body), a connection
//! closed or reset before the full answer, or a status that is not 2xx. Targets (`http://IP:PORT/
//! path`) are used in turn.

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{client::conn::http1, Request};
use hyper_util::rt::TokioIo;
use tokio::{io::AsyncWriteExt, net::TcpStream, sync::watch, task::JoinSet};

/// Failures described one by one on stderr, per mode; the rest are only counted.
const DETAILED_FAILURES: u64 = 50;
/// A keep-alive client whose connect failed waits this long before the next attempt, so that a
/// target that refuses does not turn the client into a busy loop.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);

/// Where requests go: one `http://HOST:PORT/PATH` URL, resolved once.
#[derive(Clone, Debug)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// The address connected to.
    pub addr: SocketAddr,
    /// The `Host` header (the URL's authority).
    pub host: String,
    /// The request target (path and query), `/` when the URL has none.
    pub path: String,
}

impl Target {
    /// Parses and resolves `url`: `http://` only, port 80 when absent.
    pub async fn parse(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(format!("{url}: no host"));
        }
        // `[v6]` and `[v6]:port` as well as `host` and `host:port`.
        let has_port = match authority.rfind(']') {
            Some(end) => authority[end..].contains(':'),
            None => authority.contains(':'),
        };
        let with_port = if has_port {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addr = tokio::net::lookup_host(&with_port)
            .await
            .map_err(|e| format!("{url}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url}: no address"))?;
        Ok(Target {
            url: url.to_string(),
            addr,
            host: authority.to_string(),
            path: path.to_string(),
        })
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Targets, used in turn.
    pub targets: Vec<Target>,
    /// New-connection requests per second (0: the mode is off).
    pub new_conn_rate: f64,
    /// Keep-alive clients (0: the mode is off).
    pub keepalive_clients: usize,
    /// How long to send requests (requests in flight at the end are still awaited and counted).
    pub duration: Duration,
    /// Longest a request may take, connect to last byte.
    pub timeout: Duration,
    /// Where to write one line per second and mode, if anywhere.
    pub timeline: Option<PathBuf>,
    /// Stop sending early once this file exists.
    pub stop_file: Option<PathBuf>,
    /// Describe the first failures of each mode on stderr.
    pub log_failures: bool,
}

/// A load mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    /// A new connection per request, at a fixed rate.
    NewConn,
    /// Requests back to back on kept connections.
    KeepAlive,
}

impl Mode {
    /// The name printed in summaries and timelines.
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::NewConn => "new-conn",
            Mode::KeepAlive => "keepalive",
        }
    }
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The TCP connection could not be made.
    Connect,
    /// No full answer within the timeout.
    Timeout,
    /// The connection closed or was reset before the full answer.
    Closed,
    /// The answer's status was not 2xx.
    Status,
}

impl Failure {
    fn as_str(&self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Timeout => "timeout",
            Failure::Closed => "closed",
            Failure::Status => "status",
        }
    }
}

/// The outcome of a mode, as printed at the end.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// `new-conn` or `keepalive`.
    pub mode: &'static str,
    /// Requests attempted (every one ends ok or failed).
    pub sent: u64,
    /// Answered with a 2xx and a full body.
    pub ok: u64,
    /// Failed, for any reason.
    pub failed: u64,
    /// Failed to connect.
    pub connect: u64,
    /// Timed out.
    pub timeout: u64,
    /// Connection closed before the full answer.
    pub closed: u64,
    /// Status not 2xx.
    pub status: u64,
    /// Requests per second over the time the mode sent.
    pub rate: f64,
    /// Latency of the successful requests: median, 99th percentile, largest (ms).
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
    /// See `p50_ms`.
    pub max_ms: f64,
    /// Connections opened (for the keep-alive mode, reconnects included).
    pub connections: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mode={} sent={} ok={} failed={} rate={:.1}/s p50_ms={:.2} p99_ms={:.2} max_ms={:.2} \
             connections={} errors=connect:{},timeout:{},closed:{},status:{}",
            self.mode,
            self.sent,
            self.ok,
            self.failed,
            self.rate,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.connections,
            self.connect,
            self.timeout,
            self.closed,
            self.status
        )
    }
}

/// Counts per second (Unix time), by the second a request ended in.
#[derive(Clone, Copy, Debug, Default)]
struct Second {
    sent: u64,
    failed: u64,
    by_kind: [u64; 4],
}

#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    ok: u64,
    by_kind: [u64; 4],
    latencies_us: Vec<u64>,
    seconds: BTreeMap<u64, Second>,
    described: u64,
}

/// One mode's counters, shared by its tasks.
struct ModeStats {
    mode: Mode,
    tally: Mutex<Tally>,
    connections: AtomicU64,
    log_failures: bool,
}

fn kind_index(f: Failure) -> usize {
    match f {
        Failure::Connect => 0,
        Failure::Timeout => 1,
        Failure::Closed => 2,
        Failure::Status => 3,
    }
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

impl ModeStats {
    fn new(mode: Mode, log_failures: bool) -> Self {
        ModeStats {
            mode,
            tally: Mutex::new(Tally::default()),
            connections: AtomicU64::new(0),
            log_failures,
        }
    }

    fn record(&self, target: &Target, outcome: Result<Duration, (Failure, String)>) {
        let now = unix_now();
        let mut t = self.tally.lock().expect("tally poisoned");
        t.sent += 1;
        let second = t.seconds.entry(now.as_secs()).or_default();
        second.sent += 1;
        match outcome {
            Ok(latency) => {
                t.ok += 1;
                t.latencies_us.push(latency.as_micros() as u64);
            }
            Err((failure, detail)) => {
                second.failed += 1;
                second.by_kind[kind_index(failure)] += 1;
                t.by_kind[kind_index(failure)] += 1;
                t.described += 1;
                if self.log_failures && t.described <= DETAILED_FAILURES {
                    eprintln!(
                        "shoal-loadgen: failed at {}.{:03} mode={} target={} error={}: {}",
                        now.as_secs(),
                        now.subsec_millis(),
                        self.mode.as_str(),
                        target.url,
                        failure.as_str(),
                        detail
                    );
                }
            }
        }
    }

    /// Removes and returns the seconds before `before` (Unix seconds), all of them if None.
    fn take_seconds(&self, before: Option<u64>) -> Vec<(u64, Second)> {
        let mut t = self.tally.lock().expect("tally poisoned");
        let keep = match before {
            Some(b) => t.seconds.split_off(&b),
            None => BTreeMap::new(),
        };
        std::mem::replace(&mut t.seconds, keep)
            .into_iter()
            .collect()
    }

    fn summary(&self, elapsed: Duration) -> Summary {
        let mut t = self.tally.lock().expect("tally poisoned");
        if self.log_failures && t.described > DETAILED_FAILURES {
            eprintln!(
                "shoal-loadgen: mode={}: {} more failures not described",
                self.mode.as_str(),
                t.described - DETAILED_FAILURES
            );
        }
        t.latencies_us.sort_unstable();
        let pct = |p: f64| -> f64 {
            let l = &t.latencies_us;
            if l.is_empty() {
                return 0.0;
            }
            let i = ((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1;
            l[i] as f64 / 1000.0
        };
        let failed: u64 = t.by_kind.iter().sum();
        Summary {
            mode: self.mode.as_str(),
            sent: t.sent,
            ok: t.ok,
            failed,
            connect: t.by_kind[0],
            timeout: t.by_kind[1],
            closed: t.by_kind[2],
            status: t.by_kind[3],
            rate: t.sent as f64 / elapsed.as_secs_f64().max(1e-9),
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            max_ms: t.latencies_us.last().map_or(0.0, |m| *m as f64 / 1000.0),
            connections: self.connections.load(Ordering::Relaxed),
        }
    }
}

fn timeline_lines(mode: Mode, seconds: &[(u64, Second)]) -> String {
    let mut out = String::new();
    for (s, c) in seconds {
        out.push_str(&format!("{s} {} {} {}", mode.as_str(), c.sent, c.failed));
        if c.failed > 0 {
            out.push_str(&format!(
                " errors=connect:{},timeout:{},closed:{},status:{}",
                c.by_kind[0], c.by_kind[1], c.by_kind[2], c.by_kind[3]
            ));
        }
        out.push('\n');
    }
    out
}

/// Builds the request for `target`.
fn request(target: &Target, close: bool) -> Request<Empty<Bytes>> {
    let mut r = Request::get(target.path.as_str())
        .header("host", target.host.as_str())
        .header("user-agent", "shoal-loadgen");
    if close {
        r = r.header("connection", "close");
    }
    r.body(Empty::new()).expect("a valid request")
}

/// Sends `request` on `sender` and reads the whole answer. Errors are `closed` or `status`.
async fn exchange(
    sender: &mut http1::SendRequest<Empty<Bytes>>,
    request: Request<Empty<Bytes>>,
) -> Result<(), (Failure, String)> {
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| (Failure::Closed, e.to_string()))?;
    let status = response.status();
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| (Failure::Closed, format!("reading the body: {e}")))?;
    if status.is_success() {
        Ok(())
    } else {
        Err((Failure::Status, status.to_string()))
    }
}

/// Opens a connection to `target`: the TCP connect and the client handshake, with the driver of
/// the connection spawned.
async fn connect(target: &Target) -> Result<http1::SendRequest<Empty<Bytes>>, (Failure, String)> {
    let stream = TcpStream::connect(target.addr)
        .await
        .map_err(|e| (Failure::Connect, e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| (Failure::Connect, format!("handshake: {e}")))?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One request on a new connection, with `Connection: close`.
async fn new_conn_request(target: &Target, timeout: Duration) -> Result<(), (Failure, String)> {
    let attempt = async {
        let mut sender = connect(target).await?;
        exchange(&mut sender, request(target, true)).await
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err((Failure::Timeout, format!("no full answer in {timeout:?}"))),
    }
}

/// The new-connection mode: requests on a timer until `stop`, then waits for those in flight.
async fn new_conn_mode(
    targets: Arc<Vec<Target>>,
    rate: f64,
    timeout: Duration,
    stats: Arc<ModeStats>,
    mut stop: watch::Receiver<bool>,
) -> Duration {
    let start = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    let mut next: u64 = 0;
    let due = |i: u64| start + Duration::from_secs_f64(i as f64 / rate);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(due(next)) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
        // The timer wakes at most once a millisecond and the runtime may be late: start every
        // request that is due, so the rate holds on average.
        let now = tokio::time::Instant::now();
        while due(next) <= now {
            let target = targets[(next as usize) % targets.len()].clone();
            let stats = stats.clone();
            tasks.spawn(async move {
                stats.connections.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                let outcome = new_conn_request(&target, timeout)
                    .await
                    .map(|()| t.elapsed());
                stats.record(&target, outcome);
            });
            next += 1;
        }
        while tasks.try_join_next().is_some() {}
    }
    let elapsed = start.elapsed();
    while tasks.join_next().await.is_some() {}
    elapsed
}

/// One keep-alive client, on `targets[first]` and then the next ones in turn on each reconnect.
async fn keepalive_client(
    targets: Arc<Vec<Target>>,
    first: usize,
    timeout: Duration,
    stats: Arc<ModeStats>,
    stop: watch::Receiver<bool>,
) {
    let mut turn = first;
    while !*stop.borrow() {
        let target = targets[turn % targets.len()].clone();
        turn += 1;
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let t = Instant::now();
        let mut sender = match tokio::time::timeout(timeout, connect(&target)).await {
            Ok(Ok(sender)) => sender,
            Ok(Err(e)) => {
                stats.record(&target, Err(e));
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
            Err(_) => {
                let detail = format!("no connection in {timeout:?}");
                stats.record(&target, Err((Failure::Timeout, detail)));
                continue;
            }
        };
        let mut first_on_connection = Some(t);
        while !*stop.borrow() {
            // Closed while idle (the server hung up between requests, or said `Connection:
            // close` in its last answer): no request was lost, open a new connection.
            if sender.ready().await.is_err() {
                break;
            }
            // The first request of a connection counts the connect in its latency, as a client
            // that must connect first would see it.
            let t = first_on_connection.take().unwrap_or_else(Instant::now);
            let attempt = exchange(&mut sender, request(&target, false));
            let outcome = match tokio::time::timeout(timeout, attempt).await {
                Ok(r) => r.map(|()| t.elapsed()),
                Err(_) => Err((Failure::Timeout, format!("no full answer in {timeout:?}"))),
            };
            let broken = matches!(outcome, Err((Failure::Closed | Failure::Timeout, _)));
            stats.record(&target, outcome);
            if broken {
                break;
            }
        }
    }
}

/// Writes the timeline once a second (the seconds that have ended), and the rest at the end.
async fn timeline_writer(
    path: PathBuf,
    modes: Vec<Arc<ModeStats>>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<tokio::fs::File> {
    let mut file = tokio::fs::File::create(&path).await?;
    file.write_all(
        b"# second(unix) mode sent failed [errors=...], by the second requests ended in\n",
    )
    .await?;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return Ok(file);
        }
        let current = unix_now().as_secs();
        for m in &modes {
            let lines = timeline_lines(m.mode, &m.take_seconds(Some(current)));
            file.write_all(lines.as_bytes()).await?;
        }
        file.flush().await?;
    }
}

/// Runs the load and returns a summary per mode that ran (new connections first).
pub async fn run(config: Config) -> Result<Vec<Summary>, String> {
    if config.targets.is_empty() {
        return Err("no target".into());
    }
    if config.new_conn_rate <= 0.0 && config.keepalive_clients == 0 {
        return Err("nothing to do: give --new-conn-rate and/or --keepalive-clients".into());
    }
    let targets = Arc::new(config.targets.clone());
    let (stop_tx, stop_rx) = watch::channel(false);

    // The end: the duration, or the stop file.
    let ender = {
        let stop_tx = stop_tx.clone();
        let stop_file = config.stop_file.clone();
        let duration = config.duration;
        tokio::spawn(async move {
            let end = tokio::time::Instant::now() + duration;
            loop {
                if tokio::time::Instant::now() >= end {
                    break;
                }
                if stop_file.as_ref().is_some_and(|p| p.exists()) {
                    break;
                }
                let wait = end
                    .saturating_duration_since(tokio::time::Instant::now())
                    .min(Duration::from_millis(100));
                tokio::time::sleep(wait).await;
            }
            let _ = stop_tx.send(true);
        })
    };

    let mut modes = Vec::new();
    let mut runs: JoinSet<(Mode, Duration)> = JoinSet::new();
    if config.new_conn_rate > 0.0 {
        let stats = Arc::new(ModeStats::new(Mode::NewConn, config.log_failures));
        modes.push(stats.clone());
        let (targets, stop, timeout, rate) = (
            targets.clone(),
            stop_rx.clone(),
            config.timeout,
            config.new_conn_rate,
        );
        runs.spawn(async move {
            let elapsed = new_conn_mode(targets, rate, timeout, stats, stop).await;
            (Mode::NewConn, elapsed)
        });
    }
    if config.keepalive_clients > 0 {
        let stats = Arc::new(ModeStats::new(Mode::KeepAlive, config.log_failures));
        modes.push(stats.clone());
        let (targets, stop, timeout, clients) = (
            targets.clone(),
            stop_rx.clone(),
            config.timeout,
            config.keepalive_clients,
        );
        runs.spawn(async move {
            let start = Instant::now();
            let mut set = JoinSet::new();
            for i in 0..clients {
                set.spawn(keepalive_client(
                    targets.clone(),
                    i,
                    timeout,
                    stats.clone(),
                    stop.clone(),
                ));
            }
            let mut stop = stop;
            let _ = stop.wait_for(|s| *s).await;
            let elapsed = start.elapsed();
            while set.join_next().await.is_some() {}
            (Mode::KeepAlive, elapsed)
        });
    }
    let writer = config.timeline.clone().map(|path| {
        let modes = modes.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move { (path.clone(), timeline_writer(path, modes, stop).await) })
    });

    let mut elapsed = BTreeMap::new();
    while let Some(done) = runs.join_next().await {
        let (mode, took) = done.map_err(|e| format!("a load task failed: {e}"))?;
        elapsed.insert(mode, took);
    }
    ender.abort();
    if let Some(writer) = writer {
        let (path, file) = writer
            .await
            .map_err(|e| format!("the timeline writer failed: {e}"))?;
        let mut file = file.map_err(|e| format!("{}: {e}", path.display()))?;
        for m in &modes {
            let lines = timeline_lines(m.mode, &m.take_seconds(None));
            file.write_all(lines.as_bytes())
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        file.flush()
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(modes
        .iter()
        .map(|m| m.summary(elapsed.get(&m.mode).copied().unwrap_or_default()))
        .collect())
}
