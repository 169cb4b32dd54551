//! The short port syntax (`"8080:80"`, `"80"`, `"9090-9091:8080-8081/udp"`) and port numbers.

use shoal_core::desired::spec::{PortSpec, Protocol, PublishMode};

/// One short-syntax entry: its ports (one per number of its range, ingress mode), and notes for
/// what was accepted but ignored.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Short {
    /// The ports.
    pub(crate) ports: Vec<PortSpec>,
    /// Warnings: a host IP dropped, an empty published port.
    pub(crate) notes: Vec<String>,
}

/// Parses one short-syntax entry, `[[IP:]PUBLISHED:]TARGET[/PROTOCOL]` with ranges.
///
/// A host IP (`"127.0.0.1:8080:80"`) is dropped with a warning, as Swarm does: a service port is
/// published by the ingress of every node, not on one address. An empty published port
/// (`":80"`, typically `"${PORT}:80"` with PORT unset) is accepted as Docker accepts it, as a
/// port that is not published.
pub(crate) fn parse_short(text: &str) -> Result<Short, String> {
    let bad = |why: &str| format!("invalid port {text:?}: {why}");
    let (ports, protocol) = match text.rsplit_once('/') {
        Some((ports, proto)) => (ports, parse_protocol(proto).map_err(|e| bad(&e))?),
        None => (text, Protocol::Tcp),
    };
    let mut notes = Vec::new();
    // From the right: the target, then the published port; anything before is a host IP, which
    // may itself hold colons (IPv6, bracketed or not).
    let (rest, target) = match ports.rsplit_once(':') {
        Some((rest, target)) => (Some(rest), target),
        None => (None, ports),
    };
    let (ip, published) = match rest.map(|r| r.rsplit_once(':').unwrap_or(("", r))) {
        None => (None, None),
        Some(("", published)) => (None, Some(published)),
        Some((ip, published)) => (Some(ip), Some(published)),
    };
    if let Some(ip) = ip {
        let bare = ip.trim_start_matches('[').trim_end_matches(']');
        if bare.parse::<std::net::IpAddr>().is_err() {
            return Err(bad(&format!("{ip:?} is not an IP address")));
        }
        notes.push(format!(
            "host IP {ip} ignored, as Swarm ignores it: the ingress of every node publishes the \
             port on the address it listens on"
        ));
    }
    let targets = parse_range(target).map_err(|e| bad(&e))?;
    let published = match published {
        None => None,
        Some("") => {
            notes.push(format!(
                "no published port before the target in {text:?} (an unset variable?): the \
                 container port is not published"
            ));
            None
        }
        Some(p) => Some(parse_range(p).map_err(|e| bad(&e))?),
    };
    let count = targets.1 - targets.0;
    if let Some(p) = published {
        if p.1 - p.0 != count {
            return Err(bad(
                "the published and target ranges must have the same length",
            ));
        }
    }
    let ports = (0..=count)
        .map(|i| PortSpec {
            target: targets.0 + i,
            published: published.map(|p| p.0 + i),
            protocol,
            mode: PublishMode::Ingress,
        })
        .collect();
    Ok(Short { ports, notes })
}

/// `tcp` or `udp`.
pub(crate) fn parse_protocol(text: &str) -> Result<Protocol, String> {
    match text {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        other => Err(format!(
            "unsupported protocol {other:?} (expected tcp or udp)"
        )),
    }
}

/// `8080` or `8080-8081`, as an inclusive (first, last) pair.
pub(crate) fn parse_range(text: &str) -> Result<(u16, u16), String> {
    match text.split_once('-') {
        None => {
            let p = parse_port(text)?;
            Ok((p, p))
        }
        Some((a, b)) => {
            let (a, b) = (parse_port(a)?, parse_port(b)?);
            if b < a {
                return Err(format!("range {text:?} ends before it starts"));
            }
            Ok((a, b))
        }
    }
}

/// A port number, 1 to 65535.
pub(crate) fn parse_port(text: &str) -> Result<u16, String> {
    let t = text.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{text:?} is not a port number"));
    }
    match t.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("port {t} is out of range 1-65535")),
        Ok(p) => Ok(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(target: u16, published: Option<u16>, protocol: Protocol) -> PortSpec {
        PortSpec {
            target,
            published,
            protocol,
            mode: PublishMode::Ingress,
        }
    }

    fn ports(text: &str) -> Result<Vec<PortSpec>, String> {
        parse_short(text).map(|s| s.ports)
    }

    #[test]
    fn short_syntax() {
        assert_eq!(
            ports("8080:80"),
            Ok(vec![one(80, Some(8080), Protocol::Tcp)])
        );
        assert_eq!(ports("80"), Ok(vec![one(80, None, Protocol::Tcp)]));
        assert_eq!(
            ports("8080:80/udp"),
            Ok(vec![one(80, Some(8080), Protocol::Udp)])
        );
        assert_eq!(
            ports("9090-9091:8080-8081"),
            Ok(vec![
                one(8080, Some(9090), Protocol::Tcp),
                one(8081, Some(9091), Protocol::Tcp)
            ])
        );
        assert_eq!(
            ports("3000-3002"),
            Ok(vec![
                one(3000, None, Protocol::Tcp),
                one(3001, None, Protocol::Tcp),
                one(3002, None, Protocol::Tcp)
            ])
        );
        assert_eq!(ports("1-65535").map(|v| v.len()), Ok(65535));
        assert!(parse_short("8080:80").unwrap().notes.is_empty());
    }

    #[test]
    fn host_ip_and_empty_published_are_notes() {
        for text in [
            "127.0.0.1:8080:80",
            "[::1]:8080:80",
            "::1:8080:80",
            "0.0.0.0:8080:80",
        ] {
            let s = parse_short(text).unwrap();
            assert_eq!(s.ports, [one(80, Some(8080), Protocol::Tcp)], "{text}");
            assert!(s.notes[0].contains("host IP"), "{text}: {:?}", s.notes);
        }
        let s = parse_short(":80").unwrap();
        assert_eq!(s.ports, [one(80, None, Protocol::Tcp)]);
        assert!(s.notes[0].contains("not published"), "{:?}", s.notes);
        let s = parse_short("127.0.0.1::80/udp").unwrap();
        assert_eq!(s.ports, [one(80, None, Protocol::Udp)]);
        assert_eq!(s.notes.len(), 2);
    }

    #[test]
    fn short_syntax_errors() {
        for (text, needle) in [
            ("localhost:8080:80", "not an IP address"),
            ("1.2.3:8080:80", "not an IP address"),
            ("8080:80/sctp", "unsupported protocol"),
            ("8080:http", "not a port number"),
            ("0:80", "out of range"),
            ("70000:80", "out of range"),
            ("9090-9092:8080-8081", "same length"),
            ("9090-9091:80", "same length"),
            ("9091-9090:80-81", "ends before"),
            ("", "not a port number"),
            ("80:", "not a port number"),
            ("-:80", "not a port number"),
        ] {
            let e = parse_short(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
