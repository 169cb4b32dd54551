//! Image references, checked by Docker's grammar so that a typo is refused with its line instead
//! of failing on every node at container creation:
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [ domain "/" ] component ( "/" component )*
//! domain     := host [ ":" port ]      host: DNS labels joined by ".", or "[" IPv6 "]"
//! component  := [a-z0-9]+ ( separator [a-z0-9]+ )*     separator: "." | "_" | "__" | "-"+
//! tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest     := "sha256:" 64 hex | "sha384:" 96 hex | "sha512:" 128 hex   (lower case)
//! ```
//!
//! As in Docker, the first component is a registry host only if it contains `.` or `:`, is
//! `localhost`, or has upper-case letters (so `Foo/bar` is host `Foo`, and `Foo/Bar` is refused
//! for its upper-case repository).

/// Longest name (without tag and digest), as Docker allows.
const MAX_NAME_LEN: usize = 255;
/// Longest tag.
const MAX_TAG_LEN: usize = 128;

/// Checks `reference`; the error says what is wrong, quoting the reference.
pub(crate) fn check(reference: &str) -> Result<(), String> {
    let bad = |why: String| format!("invalid image reference {reference:?}: {why}");
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (reference, None),
    };
    if let Some(d) = digest {
        check_digest(d).map_err(bad)?;
    }
    // A colon after the last slash starts the tag; one before it is a registry port.
    let (name, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if let Some(t) = tag {
        check_tag(t).map_err(bad)?;
    }
    check_name(name).map_err(bad)
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("no repository name".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("name longer than {MAX_NAME_LEN} characters"));
    }
    let path = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            check_domain(first)?;
            rest
        }
        _ => name,
    };
    if path.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("repository name {path:?} must be lower case"));
    }
    path.split('/').try_for_each(check_component)
}

/// One path component: lower-case letters and digits, separated by `.`, `_`, `__` or dashes.
fn check_component(component: &str) -> Result<(), String> {
    let bad = || Err(format!("invalid repository path component {component:?}"));
    let bytes = component.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !bytes.first().is_some_and(alnum) || !bytes.last().is_some_and(alnum) {
        return bad();
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(&bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(&bytes[i]) {
            i += 1;
        }
        let ok = match &component[start..i] {
            "." | "_" | "__" => true,
            sep => sep.bytes().all(|b| b == b'-'),
        };
        if !ok {
            return bad();
        }
    }
    Ok(())
}

/// `host[:port]`: DNS labels (letters, digits, inner dashes) joined by dots, or `[IPv6]`.
fn check_domain(domain: &str) -> Result<(), String> {
    let bad = || Err(format!("invalid registry host {domain:?}"));
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return bad();
        };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return bad();
        }
        match after {
            "" => ("", None),
            p => match p.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return bad(),
            },
        }
    } else {
        match domain.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain, None),
        }
    };
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            && b.first().is_some_and(u8::is_ascii_alphanumeric)
            && b.last().is_some_and(u8::is_ascii_alphanumeric)
    };
    if !domain.starts_with('[') && !host.split('.').all(label_ok) {
        return bad();
    }
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return bad();
        }
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<(), String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    if bytes.is_empty() {
        return Err("empty tag after ':'".into());
    }
    if tag.len() > MAX_TAG_LEN {
        return Err(format!("tag longer than {MAX_TAG_LEN} characters"));
    }
    if !word(bytes[0]) || !bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-') {
        return Err(format!(
            "invalid tag {tag:?} (letters, digits, '_', '.' and '-', not starting with '.' or '-')"
        ));
    }
    Ok(())
}

fn check_digest(digest: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "invalid digest {digest:?} (expected sha256: and 64 lower-case hex digits)"
        ))
    };
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return bad();
    };
    let len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return bad(),
    };
    let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    if hex.len() != len || !hex.bytes().all(lower_hex) {
        return bad();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_accepts_these() {
        let digest = format!("sha256:{}", "a".repeat(64));
        for good in [
            "nginx",
            "nginx:1.27",
            "nginx:latest",
            "library/nginx:1.27-alpine",
            "registry.local/shop/web:1.4.2",
            "localhost/app",
            "localhost:5000/app:v1",
            "registry.example.com:443/team/app_api:2.0",
            "127.0.0.1:5000/a/b",
            "[::1]:5000/app",
            "Registry.Example.com/app",
            "my-org/my--app",
            "my_org/app__x.y",
            "app:V1_rc.2-x",
            &format!("nginx@{digest}"),
            &format!("nginx:1.27@{digest}"),
            "shoal-demo:v1",
        ] {
            assert_eq!(check(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn docker_refuses_these() {
        for (bad, why) in [
            ("NGINX:Latest!!", "invalid tag"),
            ("NGINX", "lower case"),
            ("nginx:", "empty tag"),
            ("Foo/Bar", "lower case"),
            ("nginx:-x", "invalid tag"),
            ("nginx@sha256:abc", "digest"),
            ("nginx@md5:0123", "digest"),
            (&format!("nginx@sha256:{}", "A".repeat(64)), "digest"),
            ("my.-app", "component"),
            ("-app", "component"),
            ("app-", "component"),
            ("a___b", "component"),
            ("a//b", "component"),
            ("/app", "component"),
            (":1.0", "no repository"),
            ("host_x.com/app", "registry host"),
            ("host:port/app", "registry host"),
            ("[zz]:5000/app", "registry host"),
            (&format!("app:{}", "t".repeat(129)), "longer than 128"),
            (&format!("{}:1", "a".repeat(256)), "longer than 255"),
        ] {
            let e = check(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
