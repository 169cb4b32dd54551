//! The demo's client side, for tests that look from inside a replica: `resolve NAME` and
//! `get URL`. A `FROM scratch` image has no shell, no curl and no resolver library that a static
//! binary could load, so the binary asks the container's DNS server itself (the `nameserver` of
//! `/etc/resolv.conf`, with its `search` domains) and speaks plain HTTP/1.0.

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

/// How long a DNS answer, a connect or an HTTP answer may take.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The container's resolvers and search domains.
fn resolv_conf() -> (Vec<SocketAddr>, Vec<String>) {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut servers = Vec::new();
    let mut search = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) {
                    servers.push(SocketAddr::new(ip, 53));
                }
            }
            Some("search" | "domain") => search.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    (servers, search)
}

/// The IPv4 addresses `name` resolves to (an address literal is itself).
pub fn resolve(name: &str) -> Result<Vec<Ipv4Addr>, String> {
    if let Ok(ip) = name.parse::<Ipv4Addr>() {
        return Ok(vec![ip]);
    }
    let (servers, search) = resolv_conf();
    let server = servers.first().ok_or("no nameserver in /etc/resolv.conf")?;
    let mut names = vec![name.to_string()];
    if !name.contains('.') {
        names.extend(search.iter().map(|d| format!("{name}.{d}")));
    }
    let mut last = String::from("no answer");
    for candidate in names {
        match query_a(*server, &candidate) {
            Ok(addrs) if !addrs.is_empty() => return Ok(addrs),
            Ok(_) => last = format!("{candidate}: no address"),
            Err(e) => last = format!("{candidate}: {e}"),
        }
    }
    Err(last)
}

/// One A query over UDP.
fn query_a(server: SocketAddr, name: &str) -> Result<Vec<Ipv4Addr>, String> {
    let id: u16 = (Instant::now().elapsed().subsec_nanos() as u16) ^ 0x5a5a;
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, one question
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("bad name {name:?}"));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]); // root, type A, class IN
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let socket = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    socket.send_to(&q, server).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 1500];
    let (len, _) = socket
        .recv_from(&mut buf)
        .map_err(|e| format!("{server}: {e}"))?;
    parse_a(&buf[..len], id)
}

/// The A records of an answer.
fn parse_a(m: &[u8], id: u16) -> Result<Vec<Ipv4Addr>, String> {
    let short = || "short answer".to_string();
    if m.len() < 12 || u16::from_be_bytes([m[0], m[1]]) != id {
        return Err("not the answer to our query".into());
    }
    match m[3] & 0x0f {
        0 => {}
        3 => return Err("NXDOMAIN".into()),
        code => return Err(format!("rcode {code}")),
    }
    let questions = u16::from_be_bytes([m[4], m[5]]);
    let answers = u16::from_be_bytes([m[6], m[7]]);
    let mut at = 12;
    let skip_name = |mut at: usize| -> Option<usize> {
        loop {
            let len = *m.get(at)? as usize;
            if len == 0 {
                return Some(at + 1);
            }
            if len & 0xc0 == 0xc0 {
                return Some(at + 2);
            }
            at += 1 + len;
        }
    };
    for _ in 0..questions {
        at = skip_name(at).ok_or_else(short)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..answers {
        at = skip_name(at).ok_or_else(short)?;
        let head = m.get(at..at + 10).ok_or_else(short)?;
        let (kind, len) = (
            u16::from_be_bytes([head[0], head[1]]),
            u16::from_be_bytes([head[8], head[9]]) as usize,
        );
        let data = m.get(at + 10..at + 10 + len).ok_or_else(short)?;
        if kind == 1 && len == 4 {
            out.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + len;
    }
    Ok(out)
}

/// One `GET` of `http://HOST[:PORT]/PATH`: the status and the first line of the body.
fn get_once(url: &str) -> Result<(u16, String), String> {
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| "bad port")?),
        None => (authority, 80),
    };
    let addrs = resolve(host)?;
    let addr = SocketAddr::new(IpAddr::V4(addrs[0]), port);
    let mut stream =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("{addr}: {e}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    stream
        .take(64 * 1024)
        .read_to_end(&mut answer)
        .map_err(|e| format!("{addr}: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{addr}: not an HTTP answer"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.lines().next().unwrap_or_default().to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// `get URL [COUNT [INTERVAL_MS]]`: a request every interval; a line per request (`ok BODY` or
/// `fail WHY`), then `summary ok=N fail=M p50_ms=.. p99_ms=.. rate=../s`.
pub fn get(url: &str, count: u64, interval: Duration) -> bool {
    let started = Instant::now();
    let (mut ok, mut fail) = (0u64, 0u64);
    let mut latencies = Vec::new();
    for i in 0..count {
        let t = Instant::now();
        match get_once(url) {
            Ok((200, body)) => {
                ok += 1;
                latencies.push(t.elapsed());
                println!("ok {body}");
            }
            Ok((status, body)) => {
                fail += 1;
                println!("fail status {status} {body}");
            }
            Err(e) => {
                fail += 1;
                println!("fail {e}");
            }
        }
        if i + 1 < count && !interval.is_zero() {
            std::thread::sleep(interval.saturating_sub(t.elapsed()));
        }
    }
    latencies.sort();
    let pct = |p: usize| {
        latencies
            .get((latencies.len() * p / 100).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let rate = (ok + fail) as f64 / started.elapsed().as_secs_f64().max(1e-9);
    println!(
        "summary ok={ok} fail={fail} p50_ms={:.2} p99_ms={:.2} rate={rate:.0}/s",
        pct(50),
        pct(99)
    );
    fail == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_with_two_addresses_parses() {
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0];
        m.extend_from_slice(&[3, b'a', b'p', b'i', 0, 0, 1, 0, 1]);
        for last in [5u8, 6] {
            m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 10, 0, 0, last]);
        }
        assert_eq!(
            parse_a(&m, 0x1234).unwrap(),
            [Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(10, 0, 0, 6)]
        );
        m[3] = 0x83;
        assert_eq!(parse_a(&m, 0x1234).unwrap_err(), "NXDOMAIN");
        assert!(parse_a(&m, 0x9999).is_err());
    }
}
