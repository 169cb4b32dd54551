//! Starts the real `shoal-demo` binary on free ports and checks every endpoint over HTTP.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, ExitStatus, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_shoal-demo");
/// The version the binary reports by default (the tests also run with `--features v2`).
const VERSION: &str = if cfg!(feature = "v2") { "2" } else { "1" };

/// A running `shoal-demo`, killed when dropped.
struct Demo {
    child: Child,
    port: u16,
}

impl Demo {
    /// Starts the binary with `env` on a port the system picks (`PORT=0`), learnt from the line
    /// it logs once it listens.
    fn start(env: &[(&str, &str)]) -> Demo {
        let mut command = Command::new(BIN);
        command
            .env_remove("VERSION")
            .env_remove("BROKEN")
            .env_remove("REPLICA_ID")
            .env("PORT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("starting shoal-demo");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).expect("reading its log");
        let port = line
            .split_once("listening on ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|address| address.parse::<SocketAddr>().ok())
            .unwrap_or_else(|| panic!("shoal-demo did not start: {line:?}"))
            .port();
        // Keep reading, so that its later log lines do not fail on a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Demo { child, port }
    }

    /// Sends a request and returns the status, the head and the body.
    fn request(&self, method: &str, path: &str, body: &str) -> Answer {
        request(self.port, method, path, body)
    }

    /// Waits for the process to end, at most `limit`.
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for shoal-demo") {
                return status;
            }
            assert!(Instant::now() < deadline, "shoal-demo did not exit");
            sleep(Duration::from_millis(10));
        }
    }

    /// Runs `shoal-demo healthcheck` against this instance.
    fn healthcheck(&self) -> bool {
        healthcheck(self.port)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Answer {
    status: u16,
    head: String,
    body: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("finding a free port")
        .port()
}

fn request(port: u16, method: &str, path: &str, body: &str) -> Answer {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connecting");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap_or_else(|e| panic!("sending {method} {path} to port {port}: {e}"));
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .unwrap_or_else(|e| panic!("reading the answer to {method} {path} on port {port}: {e}"));
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn healthcheck(port: u16) -> bool {
    Command::new(BIN)
        .arg("healthcheck")
        .env("PORT", port.to_string())
        .stderr(Stdio::null())
        .status()
        .expect("running the health check")
        .success()
}

fn header<'a>(answer: &'a Answer, name: &str) -> Option<&'a str> {
    answer.head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// The hidden token in a sign-up form.
fn token_of(form: &str) -> String {
    let marker = "name=\"token\" value=\"";
    let start = form.find(marker).expect("a token field") + marker.len();
    let end = start + form[start..].find('"').unwrap();
    form[start..end].to_string()
}

#[test]
fn root_reports_replica_and_version() {
    let demo = Demo::start(&[("REPLICA_ID", "web-1")]);
    for _ in 0..3 {
        let answer = demo.request("GET", "/", "");
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, format!("web-1 {VERSION}\n"));
        assert!(header(&answer, "content-type")
            .unwrap()
            .starts_with("text/plain"));
    }
    assert_eq!(demo.request("GET", "/nowhere", "").status, 404);
    assert_eq!(demo.request("DELETE", "/", "").status, 405);

    let demo = Demo::start(&[("REPLICA_ID", "web-2"), ("VERSION", "7")]);
    assert_eq!(demo.request("GET", "/", "").body, "web-2 7\n");
}

#[test]
fn replica_id_defaults_to_the_host_name() {
    let demo = Demo::start(&[]);
    let answer = demo.request("GET", "/", "");
    let (id, version) = answer.body.trim_end().split_once(' ').unwrap();
    assert!(!id.is_empty());
    assert_eq!(version, VERSION);
}

#[test]
fn health_can_be_switched_off_and_on() {
    if cfg!(feature = "broken") {
        return; // Never healthy: `broken_is_never_healthy` covers it.
    }
    let demo = Demo::start(&[]);
    let answer = demo.request("GET", "/health", "");
    assert_eq!((answer.status, answer.body.trim()), (200, "ok"));
    assert!(demo.healthcheck());

    assert_eq!(demo.request("POST", "/admin/unhealthy", "").status, 200);
    assert_eq!(demo.request("GET", "/health", "").status, 503);
    assert!(!demo.healthcheck());
    // The rest goes on working.
    assert_eq!(demo.request("GET", "/", "").status, 200);

    assert_eq!(demo.request("POST", "/admin/healthy", "").status, 200);
    assert_eq!(demo.request("GET", "/health", "").status, 200);
    assert!(demo.healthcheck());
    assert_eq!(demo.request("GET", "/admin/healthy", "").status, 405);
}

#[test]
fn healthcheck_fails_with_no_server() {
    assert!(!healthcheck(free_port()));
}

#[test]
fn broken_is_never_healthy() {
    let demo = Demo::start(&[("BROKEN", "1")]);
    assert_eq!(demo.request("GET", "/health", "").status, 503);
    demo.request("POST", "/admin/healthy", "");
    assert_eq!(demo.request("GET", "/health", "").status, 503);
    assert!(!demo.healthcheck());
    assert_eq!(demo.request("GET", "/", "").status, 200);
}

#[test]
fn a_token_works_only_on_the_replica_that_issued_it() {
    let one = Demo::start(&[("REPLICA_ID", "one")]);
    let two = Demo::start(&[("REPLICA_ID", "two")]);

    let form = one.request("GET", "/signup", "");
    assert_eq!(form.status, 200);
    assert!(header(&form, "content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(header(&form, "set-cookie")
        .unwrap()
        .starts_with("demo_session="));
    assert!(form.body.contains("<input type=\"hidden\" name=\"token\""));
    let token = token_of(&form.body);

    let body = format!("token={token}&email=a%40example.org");
    let accepted = one.request("POST", "/signup", &body);
    assert_eq!(accepted.status, 200);
    assert_eq!(accepted.body, "one signed up a@example.org\n");

    let rejected = two.request("POST", "/signup", &body);
    assert_eq!(rejected.status, 400);
    assert!(rejected.body.starts_with("two:"));

    // A token of `two` works on `two` only.
    let token_two = token_of(&two.request("GET", "/signup", "").body);
    assert_ne!(token, token_two);
    let body_two = format!("email=b%40example.org&token={token_two}");
    assert_eq!(two.request("POST", "/signup", &body_two).status, 200);
    assert_eq!(one.request("POST", "/signup", &body_two).status, 400);

    // No token, or a made-up one.
    assert_eq!(one.request("POST", "/signup", "email=x").status, 400);
    assert_eq!(
        one.request("POST", "/signup", "token=00.00&email=x").status,
        400
    );
}

#[test]
fn admin_exit_answers_then_dies_with_a_failure() {
    let mut demo = Demo::start(&[]);
    let answer = demo.request("POST", "/admin/exit", "");
    assert_eq!(answer.status, 200);
    let status = demo.wait_exit(Duration::from_secs(5));
    assert!(!status.success(), "{status}");
}

#[test]
fn sigterm_and_sigint_end_it_at_once_with_success() {
    for signal in ["-TERM", "-INT"] {
        let mut demo = Demo::start(&[]);
        let started = Instant::now();
        let killed = Command::new("kill")
            .args([signal, &demo.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(killed.success());
        let status = demo.wait_exit(Duration::from_secs(2));
        assert!(status.success(), "{signal}: {status}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}

/// Reads one answer from a kept connection (the body by its `Content-Length`).
fn read_answer(stream: &mut TcpStream) -> Answer {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream
            .read_exact(&mut byte)
            .expect("reading an answer's head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().trim_end().to_string();
    let mut answer = Answer {
        status: head.split_whitespace().nth(1).unwrap().parse().unwrap(),
        head,
        body: String::new(),
    };
    let length: usize = header(&answer, "content-length").unwrap().parse().unwrap();
    let mut body = vec![0u8; length];
    stream
        .read_exact(&mut body)
        .expect("reading an answer's body");
    answer.body = String::from_utf8(body).unwrap();
    answer
}

/// A kept connection to `port` with one request answered on it.
fn kept_connection(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connecting");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let answer = read_answer(&mut stream);
    assert_eq!(answer.status, 200);
    assert_eq!(header(&answer, "connection"), None, "{}", answer.head);
    stream
}

fn sigterm(demo: &Demo) {
    let killed = Command::new("kill")
        .args(["-TERM", &demo.child.id().to_string()])
        .status()
        .expect("running kill");
    assert!(killed.success());
    // It stops listening as it starts to shut down.
    let deadline = Instant::now() + Duration::from_secs(2);
    while TcpStream::connect(("127.0.0.1", demo.port)).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        sleep(Duration::from_millis(5));
    }
}

#[test]
fn sigterm_closes_a_kept_connection_after_its_next_answer() {
    // What a rolling update does to a replica that a client keeps a connection to (through the
    // layer-4 ingress): the client's next request is answered, with `Connection: close`, and it
    // goes on with a new connection elsewhere; none is dropped.
    let mut demo = Demo::start(&[]);
    let mut stream = kept_connection(demo.port);
    let started = Instant::now();
    sigterm(&demo);
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let answer = read_answer(&mut stream);
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.body,
        format!("{} {VERSION}\n", answer.body.split(' ').next().unwrap())
    );
    assert_eq!(
        header(&answer, "connection"),
        Some("close"),
        "{}",
        answer.head
    );
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .expect("the connection ends cleanly");
    assert!(rest.is_empty());
    // Its last connection gone, it exits without waiting out the grace for idle ones.
    let status = demo.wait_exit(Duration::from_secs(1));
    assert!(status.success(), "{status}");
    assert!(started.elapsed() < Duration::from_millis(1500));
}

#[test]
fn sigterm_closes_idle_kept_connections_after_a_grace() {
    let mut demo = Demo::start(&[]);
    let mut stream = kept_connection(demo.port);
    let started = Instant::now();
    sigterm(&demo);
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).expect("closed, not reset");
    assert!(rest.is_empty());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "closed after {waited:?}"
    );
    let status = demo.wait_exit(Duration::from_secs(3));
    assert!(status.success(), "{status}");
}
