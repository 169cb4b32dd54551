//! The load generator against local hyper servers that misbehave on purpose: every failure the
//! server causes is counted, exactly, and nothing else is; plus the rate it reaches here.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{server::conn::http1, service::service_fn, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use shoal_loadgen::{run, Config, Summary, Target};
use tokio::net::TcpListener;

/// What the server does with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    /// 200 and keeps the connection.
    Answer,
    /// 200 with `Connection: close`: a clean end of a kept connection, not a failure.
    AnswerAndClose,
    /// Closes the connection without answering.
    Drop,
    /// 503.
    Unavailable,
    /// Never answers.
    Hang,
}

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    dropped: AtomicU64,
    unavailable: AtomicU64,
    hung: AtomicU64,
    closed_cleanly: AtomicU64,
}

/// A server that decides by each request's number (1, 2, ...), counting what it did.
async fn server(decide: fn(u64) -> Act) -> (SocketAddr, Arc<Counts>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let c = c.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                    let c = c.clone();
                    async move {
                        let n = c.requests.fetch_add(1, Ordering::SeqCst) + 1;
                        let body = || Full::new(Bytes::from_static(b"ok\n"));
                        match decide(n) {
                            Act::Answer => Ok(Response::new(body())),
                            Act::AnswerAndClose => {
                                c.closed_cleanly.fetch_add(1, Ordering::SeqCst);
                                let mut r = Response::new(body());
                                r.headers_mut()
                                    .insert("connection", "close".parse().unwrap());
                                Ok(r)
                            }
                            // A service error makes hyper close the connection unanswered.
                            Act::Drop => {
                                c.dropped.fetch_add(1, Ordering::SeqCst);
                                Err("dropped on purpose")
                            }
                            Act::Unavailable => {
                                c.unavailable.fetch_add(1, Ordering::SeqCst);
                                let mut r = Response::new(body());
                                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                                Ok(r)
                            }
                            Act::Hang => {
                                c.hung.fetch_add(1, Ordering::SeqCst);
                                std::future::pending::<()>().await;
                                unreachable!()
                            }
                        }
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, counts)
}

async fn config(addrs: &[SocketAddr]) -> Config {
    let mut targets = Vec::new();
    for a in addrs {
        targets.push(Target::parse(&format!("http://{a}/")).await.unwrap());
    }
    Config {
        targets,
        new_conn_rate: 0.0,
        keepalive_clients: 0,
        duration: Duration::from_secs(1),
        timeout: Duration::from_secs(5),
        timeline: None,
        stop_file: None,
        log_failures: false,
    }
}

fn misbehaving(n: u64) -> Act {
    if n % 5 == 0 {
        Act::Drop
    } else if n % 7 == 0 {
        Act::Unavailable
    } else if n % 3 == 0 {
        Act::AnswerAndClose
    } else {
        Act::Answer
    }
}

fn check_exact(s: &Summary, counts: &Counts) {
    let requests = counts.requests.load(Ordering::SeqCst);
    let dropped = counts.dropped.load(Ordering::SeqCst);
    let unavailable = counts.unavailable.load(Ordering::SeqCst);
    let hung = counts.hung.load(Ordering::SeqCst);
    assert!(requests > 20, "too few requests to tell: {s}");
    assert_eq!(s.sent, requests, "{s}");
    assert_eq!(s.closed, dropped, "{s}");
    assert_eq!(s.status, unavailable, "{s}");
    assert_eq!(s.timeout, hung, "{s}");
    assert_eq!(s.connect, 0, "{s}");
    assert_eq!(s.failed, dropped + unavailable + hung, "{s}");
    assert_eq!(s.ok, requests - dropped - unavailable - hung, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_count_every_failure_exactly() {
    let (addr, counts) = server(misbehaving).await;
    let mut c = config(&[addr]).await;
    c.new_conn_rate = 200.0;
    let s = run(c).await.unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].mode, "new-conn");
    // Paced by the timer: about 200 in the second, not as many as the machine can do.
    assert!((150..=250).contains(&s[0].sent), "{}", s[0]);
    assert_eq!(s[0].connections, s[0].sent, "{}", s[0]);
    check_exact(&s[0], &counts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_clients_count_in_flight_deaths_not_clean_closes() {
    let (addr, counts) = server(misbehaving).await;
    let (addr2, counts2) = server(misbehaving).await;
    let mut c = config(&[addr, addr2]).await;
    c.keepalive_clients = 4;
    c.duration = Duration::from_millis(500);
    let s = run(c).await.unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].mode, "keepalive");
    let both = Counts::default();
    for k in [&counts, &counts2] {
        both.requests
            .fetch_add(k.requests.load(Ordering::SeqCst), Ordering::SeqCst);
        both.dropped
            .fetch_add(k.dropped.load(Ordering::SeqCst), Ordering::SeqCst);
        both.unavailable
            .fetch_add(k.unavailable.load(Ordering::SeqCst), Ordering::SeqCst);
    }
    check_exact(&s[0], &both);
    // Both targets were used (clients start on different ones and move on at each reconnect).
    assert!(counts.requests.load(Ordering::SeqCst) > 0);
    assert!(counts2.requests.load(Ordering::SeqCst) > 0);
    // Connections were closed cleanly many times, and each one that closed (cleanly or not) was
    // replaced.
    assert!(counts.closed_cleanly.load(Ordering::SeqCst) > 10);
    assert!(s[0].connections > 10, "{}", s[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_modes_at_once_with_timeouts_and_a_timeline() {
    fn hangs_sometimes(n: u64) -> Act {
        if n % 11 == 0 {
            Act::Hang
        } else {
            misbehaving(n)
        }
    }
    let (addr, counts) = server(hangs_sometimes).await;
    let dir = std::env::temp_dir().join(format!("shoal-loadgen-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let timeline = dir.join("timeline");
    let mut c = config(&[addr]).await;
    c.new_conn_rate = 100.0;
    c.keepalive_clients = 2;
    c.timeout = Duration::from_millis(300);
    c.duration = Duration::from_millis(1500);
    c.timeline = Some(timeline.clone());
    let s = run(c).await.unwrap();
    assert_eq!(
        s.iter().map(|s| s.mode).collect::<Vec<_>>(),
        ["new-conn", "keepalive"]
    );
    let total = Summary {
        sent: s[0].sent + s[1].sent,
        ok: s[0].ok + s[1].ok,
        failed: s[0].failed + s[1].failed,
        closed: s[0].closed + s[1].closed,
        status: s[0].status + s[1].status,
        timeout: s[0].timeout + s[1].timeout,
        connect: s[0].connect + s[1].connect,
        ..Summary::default()
    };
    check_exact(&total, &counts);
    assert!(s[0].timeout > 0 && s[1].timeout > 0, "{} / {}", s[0], s[1]);

    // The timeline adds up to the summaries, mode by mode.
    let text = std::fs::read_to_string(&timeline).unwrap();
    for summary in &s {
        let (mut sent, mut failed) = (0, 0);
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols[1] == summary.mode {
                sent += cols[2].parse::<u64>().unwrap();
                failed += cols[3].parse::<u64>().unwrap();
            }
        }
        assert_eq!((sent, failed), (summary.sent, summary.failed), "{text}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_connect_failures() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut c = config(&[closed]).await;
    c.new_conn_rate = 100.0;
    c.keepalive_clients = 1;
    c.duration = Duration::from_millis(300);
    let s = run(c).await.unwrap();
    for s in &s {
        assert!(s.sent > 0, "{s}");
        assert_eq!((s.connect, s.failed, s.ok), (s.sent, s.sent, 0), "{s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_file_ends_the_load_early() {
    let (addr, _) = server(|_| Act::Answer).await;
    let dir = std::env::temp_dir().join(format!("shoal-loadgen-stop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stop = dir.join("stop");
    let mut c = config(&[addr]).await;
    c.new_conn_rate = 100.0;
    c.duration = Duration::from_secs(30);
    c.stop_file = Some(stop.clone());
    let started = std::time::Instant::now();
    let creator = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::fs::write(&stop, b"").unwrap();
    });
    let s = run(c).await.unwrap();
    creator.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(s[0].sent > 0 && s[0].failed == 0, "{}", s[0]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Not a timed assertion: how many new-connection requests a second this machine sustains
/// against a local hyper server (the scenarios need 1,000), printed for the record. Run with
/// `--nocapture` to see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connection_rate_on_this_machine() {
    let (addr, _) = server(|_| Act::Answer).await;
    for rate in [1000.0, 2000.0, 4000.0] {
        let mut c = config(&[addr]).await;
        c.new_conn_rate = rate;
        c.duration = Duration::from_secs(2);
        let s = run(c).await.unwrap();
        println!("asked {rate}/s for 2 s: {}", s[0]);
        assert_eq!(s[0].failed, 0, "{}", s[0]);
    }
}
