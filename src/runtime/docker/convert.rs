//! Translation between shoal's task vocabulary and Docker's API types: the create body, labels,
//! inspect results, and the small parsers they need.

use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
};

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary,
    ContainerSummaryHealthStatusEnum, EndpointSettings, HealthConfig, HealthStatusEnum, HostConfig,
    HostConfigLogConfig, Mount, MountType, NetworkingConfig, PortBinding, ResourcesUlimits,
    RestartPolicy, RestartPolicyNameEnum,
};

use super::super::{labels, ContainerStatus, LocalContainer, TaskSpec};
use shoal_core::{
    desired::{
        hlc::Hlc,
        spec::{HealthcheckSpec, MountKind, PortSpec, Protocol, PublishMode, ServiceSpec},
    },
    identity::NodeId,
    net::dns::SEARCH_DOMAIN,
    observed::{Endpoint, Health, SlotKey},
    runtime,
};

/// The container to create for `task` on `node`. `networks` are the engine networks of its
/// service networks, in order, with their gateways: it is created on the first (the others are
/// connected before it starts, see `network::connect_rest`), and its DNS server is the first's
/// gateway, where the node's DNS server listens. Without networks it goes on the engine's
/// default bridge.
///
/// No aliases are given to the engine: its embedded DNS (which every container on a user-defined
/// network asks first) would answer them with this node's replicas alone. The node's own DNS
/// answers service names and aliases with the whole cluster's (`shoal_core::net::dns`), and the
/// engine forwards to it every name it does not know.
pub(super) fn create_body(
    node: NodeId,
    task: &TaskSpec,
    host: IpAddr,
    networks: &[(String, Option<std::net::Ipv4Addr>)],
) -> ContainerCreateBody {
    let spec = &task.spec;
    let slot = slot_label(&task.slot);

    let mut container_labels: HashMap<String, String> = spec
        .container_labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // shoal's own labels win over a user label of the same name.
    container_labels.extend([
        (labels::NODE.to_string(), node.to_string()),
        (labels::SERVICE.to_string(), task.service.clone()),
        (labels::SLOT.to_string(), slot.clone()),
        (labels::TASK.to_string(), task.task_id.clone()),
        (labels::VERSION.to_string(), version_label(&task.version)),
        (labels::FORCE.to_string(), task.force.to_string()),
    ]);

    let mut env: Vec<String> = spec
        .env
        .iter()
        .filter(|(k, _)| !k.starts_with("SHOAL_"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    env.extend([
        format!("SHOAL_TASK_ID={}", task.task_id),
        format!("SHOAL_SERVICE={}", task.service),
        format!("SHOAL_SLOT={slot}"),
    ]);

    let port_key = |p: &PortSpec| {
        let proto = match p.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        format!("{}/{proto}", p.target)
    };
    let exposed: BTreeSet<String> = spec.ports.iter().map(port_key).collect();
    // Ingress ports on an ephemeral port of the node's address, for the ingress of every node to
    // reach; host-mode ports on their published port, on every interface, as `docker run -p`.
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in &spec.ports {
        let Some(published) = p.published else {
            continue;
        };
        let binding = match p.mode {
            PublishMode::Ingress => PortBinding {
                host_ip: Some(host.to_string()),
                host_port: Some(String::new()),
            },
            PublishMode::Host => PortBinding {
                host_ip: None,
                host_port: Some(published.to_string()),
            },
        };
        bindings
            .entry(port_key(p))
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(binding);
    }

    let mounts: Vec<Mount> = spec
        .mounts
        .iter()
        .map(|m| Mount {
            target: Some(m.target.clone()),
            source: (!m.source.is_empty() && m.kind != MountKind::Tmpfs).then(|| m.source.clone()),
            typ: Some(match m.kind {
                MountKind::Volume => MountType::VOLUME,
                MountKind::Bind => MountType::BIND,
                MountKind::Tmpfs => MountType::TMPFS,
            }),
            read_only: Some(m.read_only),
            ..Default::default()
        })
        .collect();

    let limits = &spec.resources.limits;
    let host_config = HostConfig {
        // shoal replaces exited containers itself.
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        nano_cpus: limits
            .cpus_milli
            .map(|m| i64::try_from(m.saturating_mul(1_000_000)).unwrap_or(i64::MAX)),
        memory: limits
            .memory_bytes
            .map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
        mounts: (!mounts.is_empty()).then_some(mounts),
        port_bindings: (!bindings.is_empty()).then_some(bindings),
        network_mode: networks.first().map(|(name, _)| name.clone()),
        dns: networks
            .first()
            .and_then(|(_, gateway)| *gateway)
            .map(|gw| vec![gw.to_string()]),
        // The engine's DNS answers a one-label name (`api`) itself, never asking the node's:
        // resolvers try `api.shoal.internal` first instead, which it does forward (see
        // `shoal_core::net::dns`). `ndots:1` is also what makes the engine hold back the bare
        // name rather than forward it upstream.
        dns_search: (!networks.is_empty()).then(|| vec![SEARCH_DOMAIN.to_string()]),
        dns_options: (!networks.is_empty()).then(|| vec!["ndots:1".to_string()]),
        ..Default::default()
    };
    let networking_config = networks.first().map(|(name, _)| NetworkingConfig {
        endpoints_config: Some(HashMap::from([(name.clone(), EndpointSettings::default())])),
    });

    let mut body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: spec.command.clone(),
        entrypoint: spec.entrypoint.clone(),
        env: Some(env),
        labels: Some(container_labels),
        exposed_ports: (!exposed.is_empty()).then(|| exposed.into_iter().collect()),
        healthcheck: spec.healthcheck.as_ref().map(health_config),
        // Used by a plain `docker stop` and when the engine shuts down; shoal's own removals
        // pass the same figure themselves.
        stop_timeout: Some(stop_timeout_s(spec)),
        host_config: Some(host_config),
        networking_config,
        ..Default::default()
    };
    container_options(spec, &mut body);
    bind_router_ports(spec, host, &mut body);
    body
}

/// The stop timeout stored in a replica of `spec` (the engine's type).
fn stop_timeout_s(spec: &ServiceSpec) -> i64 {
    i64::try_from(runtime::stop_timeout_s(Some(spec))).unwrap_or(i64::MAX)
}

/// The container options of the spec (`user`, `stop_grace_period`, capabilities, ulimits...)
/// into the create body; fields the spec leaves unset stay the image's or the engine's.
fn container_options(spec: &ServiceSpec, body: &mut ContainerCreateBody) {
    body.user = spec.user.clone();
    body.working_dir = spec.working_dir.clone();
    body.hostname = spec.hostname.clone();
    // Unset: the image's STOPSIGNAL, else SIGTERM.
    body.stop_signal = spec.stop_signal.clone();

    if spec.tty {
        body.tty = Some(true);
    }
    let nonempty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    let host = body.host_config.get_or_insert_with(HostConfig::default);
    host.init = spec.init;
    if spec.read_only {
        host.readonly_rootfs = Some(true);
    }
    host.cap_add = nonempty(&spec.cap_add);
    host.cap_drop = nonempty(&spec.cap_drop);
    host.sysctls = (!spec.sysctls.is_empty()).then(|| {
        spec.sysctls
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    });
    host.ulimits = (!spec.ulimits.is_empty()).then(|| {
        spec.ulimits
            .iter()
            .map(|u| ResourcesUlimits {
                name: Some(u.name.clone()),
                soft: Some(u.soft),
                hard: Some(u.hard),
            })
            .collect()
    });
    host.log_config = spec.logging.as_ref().map(|l| HostConfigLogConfig {
        typ: (!l.driver.is_empty()).then(|| l.driver.clone()),
        config: (!l.options.is_empty()).then(|| {
            l.options
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
    });
    // The cluster's DNS server (the first network's gateway, set above) stays first: it answers
    // service names and forwards the rest; the service's own resolvers come after it.
    let mut dns = host.dns.take().unwrap_or_default();
    dns.extend(spec.dns.iter().cloned());
    host.dns = (!dns.is_empty()).then_some(dns);
    let mut search = host.dns_search.take().unwrap_or_default();
    search.extend(spec.dns_search.iter().cloned());
    host.dns_search = (!search.is_empty()).then_some(search);
    host.extra_hosts = nonempty(&spec.extra_hosts);
}

/// Binds the container ports that the service's Traefik routers lead to, as ingress ports are
/// bound (an ephemeral port of the node's address), so every node's ingress reaches them even
/// when no `ports:` entry publishes them.
fn bind_router_ports(spec: &ServiceSpec, host: IpAddr, body: &mut ContainerCreateBody) {
    if !shoal_core::routing::routers::has_routers(&spec.labels) {
        return;
    }
    let Ok(routing) = shoal_core::routing::routers::from_labels("", &spec.labels, &spec.ports)
    else {
        return;
    };
    let host_config = body.host_config.get_or_insert_with(HostConfig::default);
    for port in routing.ports() {
        let key = format!("{port}/tcp");
        let bindings = host_config
            .port_bindings
            .get_or_insert_with(HashMap::new)
            .entry(key.clone())
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new);
        let ingress_bound = bindings
            .iter()
            .any(|b| b.host_ip.as_deref() == Some(&host.to_string()));
        if !ingress_bound {
            bindings.push(PortBinding {
                host_ip: Some(host.to_string()),
                host_port: Some(String::new()),
            });
        }
        let exposed = body.exposed_ports.get_or_insert_with(Vec::new);
        if !exposed.contains(&key) {
            exposed.push(key);
        }
    }
}

/// Docker's healthcheck settings for a spec's override. Docker merges them field by field with the
/// image's: an empty test keeps the image's test, a zero duration or retry count the image's.
pub(super) fn health_config(hc: &HealthcheckSpec) -> HealthConfig {
    if hc.disable {
        return HealthConfig {
            test: Some(vec!["NONE".to_string()]),
            ..Default::default()
        };
    }
    let ns = |ms: Option<u64>| {
        ms.map(|ms| i64::try_from(ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX))
    };
    HealthConfig {
        test: hc.test.clone().filter(|t| !t.is_empty()),
        interval: ns(hc.interval_ms),
        timeout: ns(hc.timeout_ms),
        retries: hc.retries.map(|r| i64::try_from(r).unwrap_or(i64::MAX)),
        start_period: ns(hc.start_period_ms),
        start_interval: ns(hc.start_interval_ms),
    }
}

// --- list -----------------------------------------------------------------------------------------

/// What the runtime reports about one inspected container, or why its labels do not parse.
pub(super) fn to_local(
    id: &str,
    inspect: &ContainerInspectResponse,
    host: IpAddr,
) -> Result<LocalContainer, String> {
    let config = inspect.config.as_ref();
    let empty = HashMap::new();
    let container_labels = config.and_then(|c| c.labels.as_ref()).unwrap_or(&empty);
    let label = |key: &str| {
        container_labels
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("no label {key}"))
    };
    let service = label(labels::SERVICE)?.to_string();
    let slot = parse_slot(label(labels::SLOT)?)?;
    let task_id = label(labels::TASK)?.to_string();
    let version = parse_version(label(labels::VERSION)?)?;
    let force = label(labels::FORCE)?
        .parse::<u64>()
        .map_err(|e| format!("label {}: {e}", labels::FORCE))?;

    let state = inspect.state.as_ref();
    let status = match state.and_then(|s| s.status) {
        Some(
            ContainerStateStatusEnum::RUNNING
            | ContainerStateStatusEnum::PAUSED
            | ContainerStateStatusEnum::STOPPING,
        ) => ContainerStatus::Running,
        Some(
            ContainerStateStatusEnum::EXITED
            | ContainerStateStatusEnum::DEAD
            | ContainerStateStatusEnum::REMOVING,
        ) => {
            let state = state.expect("a status implies a state");
            let mut error = state.error.clone().filter(|e| !e.is_empty());
            if state.oom_killed == Some(true) {
                error = Some(match error {
                    Some(e) => format!("OOM killed: {e}"),
                    None => "OOM killed (out of memory)".to_string(),
                });
            }
            ContainerStatus::Exited {
                code: state.exit_code.unwrap_or(-1),
                finished_ms: state
                    .finished_at
                    .as_deref()
                    .and_then(parse_rfc3339_ms)
                    .unwrap_or(0),
                error,
            }
        }
        Some(
            ContainerStateStatusEnum::CREATED
            | ContainerStateStatusEnum::RESTARTING
            | ContainerStateStatusEnum::EMPTY,
        )
        | None => ContainerStatus::Created,
    };

    let health = match state.and_then(|s| s.health.as_ref()).and_then(|h| h.status) {
        Some(HealthStatusEnum::STARTING) => Health::Starting,
        Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
        Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
        Some(HealthStatusEnum::NONE | HealthStatusEnum::EMPTY) | None => Health::None,
    };

    let created_ms = inspect
        .created
        .as_deref()
        .and_then(parse_rfc3339_ms)
        .unwrap_or(0);

    let (endpoints, addresses) = if status == ContainerStatus::Running {
        (endpoints(inspect, host), addresses(inspect))
    } else {
        (Vec::new(), Vec::new())
    };

    let image = config.and_then(|c| c.image.clone()).unwrap_or_default();
    Ok(LocalContainer {
        id: id.to_string(),
        image,
        service,
        slot,
        task_id,
        version,
        force,
        status,
        health,
        created_ms,
        endpoints,
        addresses,
    })
}

/// The container's address on each shoal network it is attached to, by shoal network name.
pub(super) fn addresses(inspect: &ContainerInspectResponse) -> Vec<(String, IpAddr)> {
    let Some(networks) = inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
    else {
        return Vec::new();
    };
    let mut out: Vec<(String, IpAddr)> = networks
        .iter()
        .filter_map(|(name, endpoint)| {
            let network = super::network::shoal_network_of(name)?;
            let ip = endpoint.ip_address.as_deref()?.parse().ok()?;
            Some((network.to_string(), ip))
        })
        .collect();
    out.sort();
    out
}

/// Every published port of the container, as the host address (`host` when Docker bound it to
/// every interface) and host port it is reachable at. Sorted by port and protocol.
pub(super) fn endpoints(inspect: &ContainerInspectResponse, host: IpAddr) -> Vec<Endpoint> {
    let Some(ports) = inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.ports.as_ref())
    else {
        return Vec::new();
    };
    let mut out: Vec<Endpoint> = ports
        .iter()
        .filter_map(|(key, bindings)| {
            let (port, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
            let protocol = match protocol {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                _ => return None, // sctp: not published by shoal
            };
            let addr = bindings.iter().flatten().find_map(|b| {
                let port: u16 = b.host_port.as_deref()?.parse().ok()?;
                let ip = match b.host_ip.as_deref().map(str::parse::<IpAddr>) {
                    Some(Ok(ip)) if !ip.is_unspecified() => ip,
                    // Docker lists a binding to every interface twice (0.0.0.0 and ::).
                    Some(Ok(IpAddr::V6(_))) => return None,
                    _ => host,
                };
                Some(SocketAddr::new(ip, port))
            })?;
            Some(Endpoint {
                port: port.parse().ok()?,
                protocol,
                addr,
            })
        })
        .collect();
    out.sort();
    out
}

/// A list summary's health word (`none` when unknown).
pub(super) fn summary_health(s: &ContainerSummary) -> String {
    if let Some(status) = s.health.as_ref().and_then(|h| h.status) {
        if status != ContainerSummaryHealthStatusEnum::EMPTY {
            return status.to_string();
        }
    }
    // Engines before API 1.52 have the health only in the status text: "Up 3 s (healthy)".
    let text = s.status.as_deref().unwrap_or("");
    if text.contains("(healthy)") {
        "healthy"
    } else if text.contains("(unhealthy)") {
        "unhealthy"
    } else if text.contains("(health: starting)") {
        "starting"
    } else {
        "none"
    }
    .to_string()
}

// --- label text forms -----------------------------------------------------------------------------

/// The slot as a label: `3`, or the full node id of a global service's slot.
pub fn slot_label(slot: &SlotKey) -> String {
    match slot {
        SlotKey::Replica(n) => n.to_string(),
        SlotKey::Node(id) => id.to_string(),
    }
}

/// Parses [`slot_label`]'s form.
pub fn parse_slot(text: &str) -> Result<SlotKey, String> {
    if text.len() == 32 {
        return text
            .parse::<NodeId>()
            .map(SlotKey::Node)
            .map_err(|e| format!("slot: {e}"));
    }
    text.parse::<u64>()
        .map(SlotKey::Replica)
        .map_err(|_| format!("slot {text:?} is neither a number nor a node id"))
}

/// The spec version as a label: `WALL.COUNTER@NODE` with the full 32-hex-digit node id.
pub fn version_label(version: &Hlc) -> String {
    format!("{}.{}@{}", version.wall_ms, version.counter, version.node)
}

/// Parses [`version_label`]'s form.
pub fn parse_version(text: &str) -> Result<Hlc, String> {
    let bad = |why: &str| format!("version {text:?}: {why}");
    let (stamp, node) = text.split_once('@').ok_or_else(|| bad("no `@`"))?;
    let (wall, counter) = stamp.split_once('.').ok_or_else(|| bad("no `.`"))?;
    Ok(Hlc {
        wall_ms: wall.parse().map_err(|_| bad("bad wall time"))?,
        counter: counter.parse().map_err(|_| bad("bad counter"))?,
        node: node.parse().map_err(|e: String| bad(&e))?,
    })
}

/// Milliseconds since the epoch of an RFC 3339 time as Docker writes them
/// (`2026-11-03T10:20:30.123456789Z`, or with an offset). `None` for times before the epoch
/// (Docker's "never" is `0001-01-01T00:00:00Z`) or text that does not parse.
pub fn parse_rfc3339_ms(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(range)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &text[start..i.min(start + 3)];
        millis = digits.parse::<i64>().ok()? * 10i64.pow(3 - digits.len() as u32);
    }
    let offset_s = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let s = (num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?) * 60;
            if *sign == b'+' {
                s
            } else {
                -s
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_s;
    let ms = secs.checked_mul(1000)?.checked_add(millis)?;
    u64::try_from(ms).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(super) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01.5Z"), Some(1_500));
        assert_eq!(
            parse_rfc3339_ms("2024-02-29T12:34:56.789123456Z"),
            Some(1_709_210_096_789)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-02-29T13:34:56.789+01:00"),
            Some(1_709_210_096_789)
        );
        assert_eq!(parse_rfc3339_ms("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("2024-02-29 nonsense"), None);
        assert_eq!(parse_rfc3339_ms(""), None);
        assert_eq!(parse_rfc3339_ms("2024-13-01T00:00:00Z"), None);
    }

    #[test]
    fn labels_round_trip() {
        let node = NodeId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        for slot in [
            SlotKey::Replica(1),
            SlotKey::Replica(u64::MAX),
            SlotKey::Node(node),
        ] {
            assert_eq!(parse_slot(&slot_label(&slot)), Ok(slot));
        }
        assert!(parse_slot("x").is_err());
        assert!(parse_slot("").is_err());
        for version in [
            Hlc::ZERO,
            Hlc::MAX,
            Hlc {
                wall_ms: 1_700_000_000_000,
                counter: 7,
                node,
            },
        ] {
            assert_eq!(parse_version(&version_label(&version)), Ok(version));
        }
        // Hlc's Display shortens the node id: it is not a label form.
        let v = Hlc {
            wall_ms: 1,
            counter: 2,
            node,
        };
        assert!(parse_version(&v.to_string()).is_err());
        assert!(parse_version("1.2").is_err());
    }

    fn task(spec: shoal_core::desired::spec::ServiceSpec) -> TaskSpec {
        TaskSpec {
            service: "s_web".into(),
            slot: SlotKey::Replica(1),
            task_id: "t1".into(),
            version: Hlc::ZERO,
            force: 0,
            spec,
        }
    }

    #[test]
    fn every_container_option_reaches_the_create_body() {
        use shoal_core::desired::spec::{LoggingSpec, ServiceSpec, Ulimit};
        let spec = ServiceSpec {
            image: "img:1".into(),
            user: Some("1000:1000".into()),
            working_dir: Some("/app".into()),
            hostname: Some("web-1".into()),
            stop_signal: Some("SIGINT".into()),
            stop_grace_ms: Some(2_500),
            init: Some(true),
            tty: true,
            read_only: true,
            cap_add: vec!["NET_ADMIN".into()],
            cap_drop: vec!["MKNOD".into()],
            sysctls: [("net.core.somaxconn".to_string(), "1024".to_string())].into(),
            ulimits: vec![Ulimit {
                name: "nofile".into(),
                soft: 1024,
                hard: 2048,
            }],
            logging: Some(LoggingSpec {
                driver: "json-file".into(),
                options: [("max-size".to_string(), "10m".to_string())].into(),
            }),
            dns: vec!["10.0.0.53".into()],
            dns_search: vec!["example.com".into()],
            extra_hosts: vec!["db:10.0.0.2".into()],
            healthcheck: Some(HealthcheckSpec {
                start_interval_ms: Some(500),
                ..Default::default()
            }),
            ..Default::default()
        };
        let body = create_body(NodeId(1), &task(spec), "10.0.0.1".parse().unwrap(), &[]);
        assert_eq!(body.user.as_deref(), Some("1000:1000"));
        assert_eq!(body.working_dir.as_deref(), Some("/app"));
        assert_eq!(body.hostname.as_deref(), Some("web-1"));
        assert_eq!(body.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(body.stop_timeout, Some(3), "a grace period is rounded up");
        assert_eq!(body.tty, Some(true));
        assert_eq!(body.healthcheck.unwrap().start_interval, Some(500_000_000));
        let host = body.host_config.unwrap();
        assert_eq!(host.init, Some(true));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_add, Some(vec!["NET_ADMIN".to_string()]));
        assert_eq!(host.cap_drop, Some(vec!["MKNOD".to_string()]));
        assert_eq!(host.sysctls.unwrap()["net.core.somaxconn"], "1024");
        let u = &host.ulimits.unwrap()[0];
        assert_eq!(
            (u.name.as_deref(), u.soft, u.hard),
            (Some("nofile"), Some(1024), Some(2048))
        );
        let log = host.log_config.unwrap();
        assert_eq!(log.typ.as_deref(), Some("json-file"));
        assert_eq!(log.config.unwrap()["max-size"], "10m");
        assert_eq!(host.dns, Some(vec!["10.0.0.53".to_string()]));
        assert_eq!(host.dns_search, Some(vec!["example.com".to_string()]));
        assert_eq!(host.extra_hosts, Some(vec!["db:10.0.0.2".to_string()]));
    }

    /// On a service network the node's DNS server comes first and the cluster's search domain
    /// leads, so a one-label service name reaches the node's server (the engine's own DNS
    /// would answer it emptily); the service's own settings follow.
    #[test]
    fn a_replica_on_a_network_asks_the_cluster_dns_first() {
        let spec = shoal_core::desired::spec::ServiceSpec {
            image: "img:1".into(),
            dns: vec!["10.0.0.53".into()],
            dns_search: vec!["example.com".into()],
            ..Default::default()
        };
        let gateway = "10.253.1.1".parse().unwrap();
        let networks = [("net_back".to_string(), Some(gateway))];
        let body = create_body(
            NodeId(1),
            &task(spec),
            "10.0.0.1".parse().unwrap(),
            &networks,
        );
        let host = body.host_config.unwrap();
        assert_eq!(
            host.dns,
            Some(vec!["10.253.1.1".to_string(), "10.0.0.53".to_string()])
        );
        assert_eq!(
            host.dns_search,
            Some(vec![
                "shoal.internal".to_string(),
                "example.com".to_string()
            ])
        );
        assert_eq!(host.dns_options, Some(vec!["ndots:1".to_string()]));
        assert_eq!(host.network_mode.as_deref(), Some("net_back"));
    }

    #[test]
    fn unset_options_stay_the_image_s_and_the_engine_s() {
        let spec = shoal_core::desired::spec::ServiceSpec {
            image: "img:1".into(),
            ..Default::default()
        };
        let body = create_body(NodeId(1), &task(spec), "10.0.0.1".parse().unwrap(), &[]);
        assert_eq!(body.user, None);
        assert_eq!(body.working_dir, None);
        assert_eq!(body.stop_signal, None);
        assert_eq!(body.stop_timeout, Some(10));
        assert_eq!(body.tty, None);
        let host = body.host_config.unwrap();
        assert_eq!(host.init, None);
        assert_eq!(host.readonly_rootfs, None);
        assert_eq!(host.cap_add, None);
        assert_eq!(host.log_config, None);
        assert_eq!(host.port_bindings, None);
    }

    #[test]
    fn router_ports_are_bound_for_the_ingress() {
        let mut spec = shoal_core::desired::spec::ServiceSpec {
            image: "img:1".into(),
            ..Default::default()
        };
        spec.labels.insert(
            "traefik.http.routers.a.rule".into(),
            "PathPrefix(`/a`)".into(),
        );
        spec.labels.insert(
            "traefik.http.services.a.loadbalancer.server.port".into(),
            "8080".into(),
        );
        let body = create_body(NodeId(1), &task(spec), "10.0.0.1".parse().unwrap(), &[]);
        assert_eq!(body.exposed_ports, Some(vec!["8080/tcp".to_string()]));
        let bindings = body.host_config.unwrap().port_bindings.unwrap();
        let b = bindings["8080/tcp"].as_ref().unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].host_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(b[0].host_port.as_deref(), Some(""));
    }

    #[test]
    fn healthcheck_override() {
        let hc = HealthcheckSpec {
            interval_ms: Some(1_000),
            ..Default::default()
        };
        let c = health_config(&hc);
        assert_eq!(c.test, None);
        assert_eq!(c.interval, Some(1_000_000_000));
        assert_eq!(c.retries, None);
        let off = health_config(&HealthcheckSpec {
            disable: true,
            ..Default::default()
        });
        assert_eq!(off.test, Some(vec!["NONE".to_string()]));
    }
}
