//! One raw service to a `ServiceDef`: names, image, command, environment, labels, ports,
//! healthcheck and networks here; `deploy` in `deploy.rs`, volumes in `mounts.rs`.

use std::collections::{BTreeMap, BTreeSet};

use shoal_core::desired::spec::{
    HealthcheckSpec, NetworkAttachment, PortSpec, Protocol, PublishMode, ServiceDef, ServiceSpec,
};

use super::error::{Failure, KeyPath, Warning};
use super::model::{
    Lenient, ListOrEntries, RawHealthcheck, RawPort, RawPortLong, RawService, Scalar, StringOrList,
};
use super::{deploy, image, mounts, options, ports, units, words, Declared};

/// Expanded ports allowed in one stack: `1-65535` twice is legitimate, a file full of such ranges
/// is not.
const MAX_PORTS: usize = 200_000;

/// What every service conversion needs besides its own section.
pub(crate) struct Ctx<'a> {
    /// Stack name, the prefix of service, network and volume names.
    pub(crate) stack: &'a str,
    /// For `environment` entries without a value.
    pub(crate) env: &'a BTreeMap<String, String>,
    /// Top-level networks by key.
    pub(crate) networks: &'a BTreeMap<String, Declared>,
    /// Top-level volumes by key.
    pub(crate) volumes: &'a BTreeMap<String, Declared>,
    /// Where warnings go.
    pub(crate) warnings: &'a mut Vec<Warning>,
    /// Ports that may still be expanded from ranges.
    pub(crate) ports_left: usize,
    /// Published ports of the services converted so far, and which service has each.
    pub(crate) published: BTreeMap<(Protocol, u16), String>,
    /// The stack file's surroundings: its directory, the home directory, a file reader.
    pub(crate) files: &'a options::FileContext<'a>,
}

impl<'a> Ctx<'a> {
    /// A context with the full port allowance.
    pub(crate) fn new(
        stack: &'a str,
        env: &'a BTreeMap<String, String>,
        networks: &'a BTreeMap<String, Declared>,
        volumes: &'a BTreeMap<String, Declared>,
        warnings: &'a mut Vec<Warning>,
        files: &'a options::FileContext<'a>,
    ) -> Self {
        Ctx {
            stack,
            env,
            networks,
            volumes,
            warnings,
            ports_left: MAX_PORTS,
            published: BTreeMap::new(),
            files,
        }
    }
}

/// Checks a stack, service, network or volume name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    match bytes.next() {
        None => Err("must not be empty".to_string()),
        Some(b) if !b.is_ascii_alphanumeric() => {
            Err("must start with a letter or digit".to_string())
        }
        _ if bytes.any(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))) => {
            Err("may only contain letters, digits, '_', '.' and '-'".to_string())
        }
        _ => Ok(()),
    }
}

/// A service name as Docker takes it (a DNS label: letters, digits, `-` and `_`, starting and
/// ending with a letter or digit); the desired state refuses others, but without a line.
fn check_service_name(name: &str) -> Result<(), String> {
    let b = name.as_bytes();
    let alnum = |c: &u8| c.is_ascii_alphanumeric();
    if b.is_empty() {
        Err("must not be empty".into())
    } else if !b.iter().all(|c| alnum(c) || *c == b'-' || *c == b'_') {
        Err("use only letters, digits, '-' and '_' (the name becomes a DNS label)".into())
    } else if !b.first().is_some_and(alnum) || !b.last().is_some_and(alnum) {
        Err("must start and end with a letter or digit".into())
    } else {
        Ok(())
    }
}

/// Converts `services.NAME` (at `path`).
pub(crate) fn service(
    ctx: &mut Ctx<'_>,
    path: &KeyPath,
    name: &str,
    mut raw: RawService,
) -> Result<ServiceDef, Failure> {
    let raw_options = options::RawOptions::take(&mut raw);
    check_service_name(name)
        .map_err(|e| Failure::at(path, format!("invalid service name {name:?}: {e}")))?;
    let full = format!("{}_{name}", ctx.stack);
    // Service names become DNS labels on the nodes.
    if full.len() > 63 {
        return Err(Failure::at(
            path,
            format!("service name {full:?} is longer than 63 characters"),
        ));
    }
    let image = match raw.image.as_deref() {
        Some(image) if !image.is_empty() => {
            image::check(image).map_err(|e| Failure::at(&path.key("image"), e))?;
            image
        }
        _ => {
            return Err(Failure::at(
                &path.key("image"),
                "missing: every service needs an image (shoal does not build images)",
            ))
        }
    };
    let mut spec = ServiceSpec {
        image: image.to_string(),
        ..ServiceSpec::default()
    };
    spec.command = words_of(raw.command, &path.key("command"))?;
    spec.entrypoint = words_of(raw.entrypoint, &path.key("entrypoint"))?;
    if let Some(env) = raw.environment {
        spec.env = environment(ctx, &path.key("environment"), env)?;
    }
    if let Some(labels) = raw.labels {
        spec.container_labels = labels_of(&path.key("labels"), labels)?;
    }
    if let Some(list) = raw.ports {
        spec.ports = ports_of(ctx, name, &path.key("ports"), list)?;
    }
    if let Some(h) = raw.healthcheck {
        spec.healthcheck = Some(healthcheck(&path.key("healthcheck"), h)?);
    }
    if let Some(nets) = raw.networks {
        spec.attachments = networks(ctx, &path.key("networks"), nets)?;
        spec.networks = spec.attachments.iter().map(|a| a.network.clone()).collect();
    }
    if let Some(list) = raw.volumes {
        let vpath = path.key("volumes");
        for (i, m) in list.into_iter().enumerate() {
            let mount = mounts::mount(ctx, &vpath.index(i), m)?;
            spec.mounts.push(mount);
        }
        mounts::check_duplicates(&vpath, &spec.mounts)?;
    }
    options::apply(ctx, path, raw_options, &mut spec)?;
    let replicas = deploy::apply(
        &path.key("deploy"),
        raw.deploy.unwrap_or_default(),
        &mut spec,
    )?;
    // Traefik routers: a label shoal cannot honour fails here with its line, one it ignores
    // is a warning.
    let labels_at = path.key("deploy").key("labels");
    let routing = shoal_core::routing::routers::from_labels(&full, &spec.labels, &spec.ports)
        .map_err(|e| Failure::at(&labels_at, e))?;
    for (label, why) in routing.warnings {
        ctx.warnings.push(Warning::at(
            &labels_at.key(&label),
            format!("label {label}: {why}"),
        ));
    }
    Ok(ServiceDef {
        name: full,
        stack: ctx.stack.to_string(),
        replicas,
        spec,
    })
}

fn words_of(value: Option<StringOrList>, path: &KeyPath) -> Result<Option<Vec<String>>, Failure> {
    match value {
        None => Ok(None),
        Some(StringOrList::String(s)) => {
            words::split(&s).map(Some).map_err(|e| Failure::at(path, e))
        }
        Some(StringOrList::List(items)) => Ok(Some(items.into_iter().map(|s| s.0).collect())),
    }
}

/// `KEY=VALUE` list items or mapping entries; a key without value is taken from the caller's
/// environment, as `docker stack deploy` does, or dropped with a warning.
fn environment(
    ctx: &mut Ctx<'_>,
    path: &KeyPath,
    raw: ListOrEntries<Scalar>,
) -> Result<BTreeMap<String, String>, Failure> {
    let mut out = BTreeMap::new();
    for (key, value, at) in pairs(path, raw)? {
        let value = match value {
            Some(v) => v,
            None => match ctx.env.get(&key) {
                Some(v) => v.clone(),
                None => {
                    ctx.warnings.push(Warning::at(
                        &at,
                        format!("{key} has no value and is not set in the environment, dropped"),
                    ));
                    continue;
                }
            },
        };
        out.insert(key, value);
    }
    Ok(out)
}

/// Labels: a key without value is an empty label, as in Docker.
fn labels_of(
    path: &KeyPath,
    raw: ListOrEntries<Scalar>,
) -> Result<BTreeMap<String, String>, Failure> {
    Ok(pairs(path, raw)?
        .into_iter()
        .map(|(k, v, _)| (k, v.unwrap_or_default()))
        .collect())
}

/// The (key, value, path of the entry) of either form, keys checked; later entries win.
pub(crate) fn pairs(
    path: &KeyPath,
    raw: ListOrEntries<Scalar>,
) -> Result<Vec<(String, Option<String>, KeyPath)>, Failure> {
    let entries: Vec<_> = match raw {
        ListOrEntries::List(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, Scalar(s))| {
                let (k, v) = match s.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (s, None),
                };
                (k, v, path.index(i))
            })
            .collect(),
        ListOrEntries::Map(entries) => entries
            .into_iter()
            .map(|(k, v)| {
                let at = path.key(&k);
                (k, v.map(|Scalar(s)| s), at)
            })
            .collect(),
    };
    for (key, _, at) in &entries {
        if key.is_empty() || key.contains('=') || key.contains(char::is_whitespace) {
            return Err(Failure::at(at, format!("invalid name {key:?}")));
        }
    }
    Ok(entries)
}

fn ports_of(
    ctx: &mut Ctx<'_>,
    service: &str,
    path: &KeyPath,
    list: Vec<RawPort>,
) -> Result<Vec<PortSpec>, Failure> {
    let mut out = Vec::new();
    let mut published = BTreeSet::new();
    for (i, raw) in list.into_iter().enumerate() {
        let at = path.index(i);
        let expanded = match raw {
            RawPort::Short(s) => {
                let short = ports::parse_short(&s).map_err(|e| Failure::at(&at, e))?;
                for note in short.notes {
                    ctx.warnings.push(Warning::at(&at, note));
                }
                short.ports
            }
            RawPort::Long(long) => vec![long_port(ctx, &at, long)?],
        };
        ctx.ports_left = ctx
            .ports_left
            .checked_sub(expanded.len())
            .ok_or_else(|| Failure::at(&at, format!("more than {MAX_PORTS} ports in the stack")))?;
        for p in &expanded {
            if let Some(n) = p.published {
                let proto = p.protocol;
                if !published.insert((n, proto)) {
                    return Err(Failure::at(
                        &at,
                        format!("port {n}/{proto} is published twice"),
                    ));
                }
                // The desired state refuses this too, but only here is the line known.
                if let Some(other) = ctx.published.insert((proto, n), service.to_string()) {
                    return Err(Failure::at(
                        &at,
                        format!(
                            "port {n}/{proto} is already published by service {other:?} of this \
                             stack; a published port belongs to one service"
                        ),
                    ));
                }
            }
        }
        out.extend(expanded);
    }
    Ok(out)
}

fn long_port(ctx: &mut Ctx<'_>, path: &KeyPath, raw: RawPortLong) -> Result<PortSpec, Failure> {
    if let Some(ip) = raw.host_ip {
        let at = path.key("host_ip");
        if ip.parse::<std::net::IpAddr>().is_err() {
            return Err(Failure::at(&at, format!("{ip:?} is not an IP address")));
        }
        ctx.warnings.push(Warning::at(
            &at,
            format!(
                "host IP {ip} ignored, as Swarm ignores it: the ingress of every node publishes \
                 the port on the address it listens on"
            ),
        ));
    }
    let target = match raw.target {
        Some(Lenient(t)) => u16::try_from(t).ok().filter(|t| *t != 0).ok_or_else(|| {
            Failure::at(
                &path.key("target"),
                format!("port {t} is out of range 1-65535"),
            )
        })?,
        None => {
            return Err(Failure::at(
                &path.key("target"),
                "missing: the container port",
            ))
        }
    };
    let published = match raw.published {
        Some(Scalar(p)) => {
            Some(ports::parse_port(&p).map_err(|e| Failure::at(&path.key("published"), e))?)
        }
        None => None,
    };
    Ok(PortSpec {
        target,
        published,
        protocol: raw.protocol.unwrap_or_default(),
        mode: raw.mode.unwrap_or(PublishMode::Ingress),
    })
}

fn healthcheck(path: &KeyPath, raw: RawHealthcheck) -> Result<HealthcheckSpec, Failure> {
    let duration = |value: Option<Scalar>, key: &str| {
        value
            .map(|Scalar(s)| units::duration_ms(&s).map_err(|e| Failure::at(&path.key(key), e)))
            .transpose()
    };
    let mut spec = HealthcheckSpec {
        test: None,
        interval_ms: duration(raw.interval, "interval")?,
        timeout_ms: duration(raw.timeout, "timeout")?,
        retries: raw.retries.map(|Lenient(n)| n),
        start_period_ms: duration(raw.start_period, "start_period")?,
        disable: raw.disable.is_some_and(|Lenient(b)| b),
        start_interval_ms: duration(raw.start_interval, "start_interval")?,
    };
    let test_path = path.key("test");
    let test = match raw.test {
        None => None,
        Some(StringOrList::String(s)) if s.trim().is_empty() => {
            return Err(Failure::at(&test_path, "empty test"))
        }
        Some(StringOrList::String(s)) => Some(vec!["CMD-SHELL".to_string(), s]),
        Some(StringOrList::List(items)) => {
            let items: Vec<String> = items.into_iter().map(|s| s.0).collect();
            match items.first().map(String::as_str) {
                Some("NONE") if items.len() == 1 => Some(items),
                Some("CMD") if items.len() >= 2 => Some(items),
                Some("CMD-SHELL") if items.len() == 2 => Some(items),
                _ => {
                    return Err(Failure::at(
                        &test_path,
                        "expected [\"CMD\", program, args...], [\"CMD-SHELL\", command] or \
                         [\"NONE\"]",
                    ))
                }
            }
        }
    };
    let none = || Some(vec!["NONE".to_string()]);
    match test {
        Some(t) if t[0] == "NONE" => {
            spec.disable = true;
            spec.test = Some(t);
        }
        Some(_) if spec.disable => {
            return Err(Failure::at(
                &path.key("disable"),
                "disable: true conflicts with the test given",
            ))
        }
        Some(t) => spec.test = Some(t),
        None if spec.disable => spec.test = none(),
        None => {}
    }
    Ok(spec)
}

/// The service's networks in file order (the first is where its DNS server is), with their
/// aliases; both list and mapping forms.
fn networks(
    ctx: &mut Ctx<'_>,
    path: &KeyPath,
    raw: ListOrEntries<super::model::RawServiceNetwork>,
) -> Result<Vec<NetworkAttachment>, Failure> {
    let entries: Vec<(String, KeyPath, Vec<Scalar>)> = match raw {
        ListOrEntries::List(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, Scalar(s))| (s, path.index(i), Vec::new()))
            .collect(),
        ListOrEntries::Map(entries) => entries
            .into_iter()
            .map(|(k, v)| {
                let at = path.key(&k);
                let aliases = v.and_then(|v| v.aliases).unwrap_or_default();
                (k, at, aliases)
            })
            .collect(),
    };
    let mut out: Vec<NetworkAttachment> = Vec::new();
    for (name, at, aliases) in entries {
        let resolved = match ctx.networks.get(&name) {
            Some(d) => d.name.clone(),
            // Swarm creates STACK_default without a declaration.
            None if name == "default" => format!("{}_default", ctx.stack),
            None => {
                return Err(Failure::at(
                    &at,
                    format!(
                        "network {name:?} is not declared in the top-level networks{}",
                        declared_hint(ctx.networks)
                    ),
                ))
            }
        };
        let mut names: Vec<String> = Vec::new();
        for (i, Scalar(alias)) in aliases.into_iter().enumerate() {
            if !is_dns_name(&alias) {
                return Err(Failure::at(
                    &at.key("aliases").index(i),
                    format!(
                        "alias {alias:?} is not a DNS name (letters, digits, '-' and '_', in \
                         dot-separated labels)"
                    ),
                ));
            }
            if !names.contains(&alias) {
                names.push(alias);
            }
        }
        match out.iter_mut().find(|a| a.network == resolved) {
            Some(a) => {
                for n in names {
                    if !a.aliases.contains(&n) {
                        a.aliases.push(n);
                    }
                }
            }
            None => out.push(NetworkAttachment {
                network: resolved,
                aliases: names,
            }),
        }
    }
    Ok(out)
}

/// ` (declared: a, b)`, or nothing when none is.
fn declared_hint(networks: &BTreeMap<String, Declared>) -> String {
    if networks.is_empty() {
        String::new()
    } else {
        let keys: Vec<&str> = networks.keys().map(String::as_str).collect();
        format!(" (declared: {})", keys.join(", "))
    }
}

fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        })
}
