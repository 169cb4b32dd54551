//! The short port syntax (`"8080:80"`, `"80"`, `"9090-9091:8080-8081/udp"`) and port numbers.

use shoal_core::desired::spec::{PortSpec, Protocol, PublishMode};

/// Parses one short-syntax entry into one port per number of its range (ingress mode).
///
/// A host IP (`"127.0.0.1:8080:80"`) is an error rather than a warning: Swarm's ingress publishes
/// on every interface, so silently dropping the IP would expose a port its author meant to keep
/// local.
pub(crate) fn parse_short(text: &str) -> Result<Vec<PortSpec>, String> {
    let bad = |why: &str| format!("invalid port {text:?}: {why}");
    let (ports, protocol) = match text.rsplit_once('/') {
        Some((ports, proto)) => (ports, parse_protocol(proto).map_err(|e| bad(&e))?),
        None => (text, Protocol::Tcp),
    };
    let parts: Vec<&str> = ports.split(':').collect();
    let (published, target) = match parts.as_slice() {
        [target] => (None, *target),
        [published, target] => (Some(*published), *target),
        _ => {
            return Err(bad(
                "a host IP is not supported (ingress publishes on every interface); \
                 use PUBLISHED:TARGET",
            ))
        }
    };
    let targets = parse_range(target).map_err(|e| bad(&e))?;
    let published = match published {
        None => None,
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
    Ok((0..=count)
        .map(|i| PortSpec {
            target: targets.0 + i,
            published: published.map(|p| p.0 + i),
            protocol,
            mode: PublishMode::Ingress,
        })
        .collect())
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

    #[test]
    fn short_syntax() {
        assert_eq!(
            parse_short("8080:80"),
            Ok(vec![one(80, Some(8080), Protocol::Tcp)])
        );
        assert_eq!(parse_short("80"), Ok(vec![one(80, None, Protocol::Tcp)]));
        assert_eq!(
            parse_short("8080:80/udp"),
            Ok(vec![one(80, Some(8080), Protocol::Udp)])
        );
        assert_eq!(
            parse_short("9090-9091:8080-8081"),
            Ok(vec![
                one(8080, Some(9090), Protocol::Tcp),
                one(8081, Some(9091), Protocol::Tcp)
            ])
        );
        assert_eq!(
            parse_short("3000-3002"),
            Ok(vec![
                one(3000, None, Protocol::Tcp),
                one(3001, None, Protocol::Tcp),
                one(3002, None, Protocol::Tcp)
            ])
        );
        assert_eq!(parse_short("1-65535").map(|v| v.len()), Ok(65535));
    }

    #[test]
    fn short_syntax_errors() {
        for (text, needle) in [
            ("127.0.0.1:8080:80", "host IP"),
            ("[::1]:8080:80", "host IP"),
            ("8080:80/sctp", "unsupported protocol"),
            ("8080:http", "not a port number"),
            ("0:80", "out of range"),
            ("70000:80", "out of range"),
            ("9090-9092:8080-8081", "same length"),
            ("9090-9091:80", "same length"),
            ("9091-9090:80-81", "ends before"),
            ("", "not a port number"),
            (":80", "not a port number"),
            ("80:", "not a port number"),
            ("-:80", "not a port number"),
        ] {
            let e = parse_short(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
