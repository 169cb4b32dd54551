//! Traefik's HTTP routers, read from a service's `deploy.labels`, so stack files written for
//! Traefik route the same way through shoal's ingress.
//!
//! ```text
//! traefik.http.routers.api.rule=Host(`example.com`) && PathPrefix(`/api/`)
//! traefik.http.routers.api.entrypoints=web
//! traefik.http.routers.api.priority=10
//! traefik.http.routers.api.service=api
//! traefik.http.services.api.loadbalancer.server.port=8080
//! ```
//!
//! A router serves on the entry points it names (`shoal agent --entrypoint web=:80`), or on all
//! of them when it names none, as in Traefik. Among the routers that match a request, the one
//! with the highest priority wins; a router's default priority is the length of its rule
//! (Traefik's default), so `PathPrefix(`/api/`)` beats `PathPrefix(`/`)`. Equal priorities are
//! ordered by router name, then service name, the same on every node.
//!
//! Labels shoal cannot honour are never dropped silently: those whose absence would change what
//! a client gets (middlewares on a router, TLS, TCP and UDP routers, a server scheme other than
//! http) are refused; the rest are returned as warnings naming the label.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::rule::{self, HttpFacts, Rule};
use super::sticky;
use crate::desired::spec::PortSpec;

/// One router of a service.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RouterSpec {
    /// The router's name (`X` in `traefik.http.routers.X.rule`).
    pub name: String,
    /// The rule, parsed.
    pub rule: Rule,
    /// Higher wins.
    pub priority: i64,
    /// Entry point names; empty: every entry point.
    pub entrypoints: Vec<String>,
    /// The container port its requests go to.
    pub port: u16,
}

impl RouterSpec {
    /// Whether it serves on entry point `name`.
    pub fn serves_on(&self, entrypoint: &str) -> bool {
        self.entrypoints.is_empty() || self.entrypoints.iter().any(|e| e == entrypoint)
    }
}

/// A service's routers and what shoal did not act on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelRouting {
    /// Routers, in name order.
    pub routers: Vec<RouterSpec>,
    /// `(label, why)` for labels accepted but not acted on.
    pub warnings: Vec<(String, String)>,
}

impl LabelRouting {
    /// The container ports routers lead to: each must be reachable from every node.
    pub fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.routers.iter().map(|r| r.port).collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }
}

/// Settings of one router, as the labels give them.
#[derive(Default)]
struct RawRouter {
    rule: Option<(String, String)>,
    priority: Option<(String, String)>,
    entrypoints: Vec<String>,
    service: Option<String>,
}

/// The routers of service `service` (its full name) from its labels; `ports` are its `ports:`
/// (a router with no `loadbalancer.server.port` uses the one container port, as Traefik uses the
/// one exposed port). An error names the label.
pub fn from_labels(
    service: &str,
    labels: &BTreeMap<String, String>,
    ports: &[PortSpec],
) -> Result<LabelRouting, String> {
    let mut out = LabelRouting::default();
    if let Some((key, value)) = labels
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("traefik.enable"))
    {
        if !sticky::parse_bool(value).map_err(|e| format!("label {key}: {e}"))? {
            return Ok(out);
        }
    }
    let mut routers: BTreeMap<String, RawRouter> = BTreeMap::new();
    // Traefik service name → (label, container port).
    let mut services: BTreeMap<String, Option<(String, u16)>> = BTreeMap::new();
    let warn = |out: &mut LabelRouting, key: &str, why: &str| {
        out.warnings.push((key.to_string(), why.to_string()));
    };
    for (key, value) in labels {
        let lower = key.to_ascii_lowercase();
        let Some(rest) = lower.strip_prefix("traefik.") else {
            continue;
        };
        let refuse = |why: &str| Err(format!("label {key}: {why}"));
        if rest == "enable" {
            continue;
        }
        if let Some(r) = rest.strip_prefix("http.routers.") {
            // The router's name keeps its case; the option after it is case-insensitive.
            let name_len = r.find('.').unwrap_or(r.len());
            let name = key["traefik.http.routers.".len()..][..name_len].to_string();
            let option = r[name_len..].trim_start_matches('.');
            let router = routers.entry(name).or_default();
            match option {
                "rule" => router.rule = Some((key.clone(), value.clone())),
                "priority" => router.priority = Some((key.clone(), value.clone())),
                "entrypoints" => {
                    router.entrypoints = value
                        .split(',')
                        .map(str::trim)
                        .filter(|e| !e.is_empty())
                        .map(str::to_string)
                        .collect();
                }
                "service" => {
                    let name = value.trim();
                    // `api@docker` or `api@swarm`: the provider suffix names where Traefik found
                    // the service; here it is always this service's labels.
                    let name = name.split_once('@').map_or(name, |(n, p)| match p {
                        "docker" | "swarm" => n,
                        _ => name,
                    });
                    if name.contains('@') {
                        return refuse(&format!(
                            "service {name:?} belongs to another Traefik provider; a router \
                             leads to a service defined on the same shoal service's labels"
                        ));
                    }
                    router.service = Some(name.to_string());
                }
                "middlewares" => {
                    return refuse(
                        "middlewares are not supported by shoal (a router that skips them \
                         could serve what they guard)",
                    )
                }
                "tls" => {
                    if sticky::parse_bool(value).map_err(|e| format!("label {key}: {e}"))? {
                        return refuse(
                            "shoal's ingress does not terminate TLS; put a TLS terminator in \
                             front of the nodes and route plain HTTP",
                        );
                    }
                }
                o if o.starts_with("tls.") => {
                    return refuse("shoal's ingress does not terminate TLS")
                }
                o if o == "observability" || o.starts_with("observability.") => {
                    warn(&mut out, key, "not supported by shoal, ignored")
                }
                "rulesyntax" => warn(&mut out, key, "shoal reads v2 and v3 rules alike, ignored"),
                _ => return refuse("unknown router option"),
            }
        } else if let Some(s) = rest.strip_prefix("http.services.") {
            let name_len = s.find('.').unwrap_or(s.len());
            let name = key["traefik.http.services.".len()..][..name_len].to_string();
            let option = s[name_len..].trim_start_matches('.');
            let entry = services.entry(name).or_default();
            match option {
                "loadbalancer.server.port" => {
                    let port = value
                        .trim()
                        .parse::<u16>()
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or_else(|| format!("label {key}: {value:?} is not a port (1-65535)"))?;
                    *entry = Some((key.clone(), port));
                }
                "loadbalancer.server.scheme" => {
                    if !value.trim().eq_ignore_ascii_case("http") {
                        return refuse("shoal's ingress reaches replicas over plain http only");
                    }
                }
                "loadbalancer.passhostheader" => {
                    if !sticky::parse_bool(value).map_err(|e| format!("label {key}: {e}"))? {
                        warn(
                            &mut out,
                            key,
                            "shoal always passes the Host header on, ignored",
                        );
                    }
                }
                o if o.starts_with("loadbalancer.sticky") => {}
                o if o.starts_with("loadbalancer.healthcheck") => warn(
                    &mut out,
                    key,
                    "ignored: replicas get traffic once their container healthcheck passes",
                ),
                o if o.starts_with("loadbalancer.responseforwarding")
                    || o.starts_with("loadbalancer.serverstransport") =>
                {
                    warn(&mut out, key, "not supported by shoal, ignored")
                }
                _ => return refuse("unknown service option"),
            }
        } else if rest.starts_with("http.middlewares.") {
            warn(
                &mut out,
                key,
                "middlewares are not supported by shoal; defining one is harmless, a router that \
                 uses one is refused",
            );
        } else if rest.starts_with("tcp.") || rest.starts_with("udp.") {
            return refuse(
                "TCP and UDP routers are not supported by shoal; publish the port with `ports:` \
                 (every node serves it)",
            );
        } else if rest.starts_with("backend.loadbalancer.stick") {
            // Traefik v1 stickiness: `sticky::from_labels` reads it.
        } else if rest.starts_with("docker.") || rest.starts_with("swarm.") {
            warn(&mut out, key, "Traefik provider setting, ignored by shoal");
        } else {
            warn(
                &mut out,
                key,
                "not acted on by shoal (it routes with traefik.http.routers labels)",
            );
        }
    }

    // Each router's target port.
    let single_port = || -> Option<u16> {
        let mut targets: Vec<u16> = ports.iter().map(|p| p.target).collect();
        targets.sort_unstable();
        targets.dedup();
        match targets[..] {
            [one] => Some(one),
            _ => None,
        }
    };
    for (name, raw) in routers {
        let router_key = |option: &str| format!("traefik.http.routers.{name}.{option}");
        let (rule_text, parsed) = match &raw.rule {
            Some((key, text)) => (
                text.clone(),
                rule::parse(text).map_err(|e| format!("label {key}: {e}"))?,
            ),
            None => {
                // Traefik's default rule: the service's name as a host.
                let host = service.replace('_', "-");
                let text = format!("Host(`{host}`)");
                let parsed = rule::parse(&text).map_err(|e| format!("router {name}: {e}"))?;
                (text, parsed)
            }
        };
        let priority = match &raw.priority {
            Some((key, text)) => text
                .trim()
                .parse::<i64>()
                .map_err(|_| format!("label {key}: {text:?} is not an integer"))?,
            None => 0,
        };
        // 0 (or none) means Traefik's default: the rule's length.
        let priority = if priority == 0 {
            rule_text.chars().count() as i64
        } else {
            priority
        };
        let target = match &raw.service {
            Some(s) => match services.get(s) {
                Some(Some((_, port))) => Some(*port),
                Some(None) => None,
                None => {
                    return Err(format!(
                        "label {}: service {s:?} is not defined on this service's labels \
                         (traefik.http.services.{s}.loadbalancer.server.port)",
                        router_key("service")
                    ))
                }
            },
            None => match services.len() {
                0 => None,
                1 => services.values().next().cloned().flatten().map(|(_, p)| p),
                _ => {
                    return Err(format!(
                        "router {name}: several Traefik services are defined ({}); name one \
                         with {}",
                        services.keys().cloned().collect::<Vec<_>>().join(", "),
                        router_key("service")
                    ))
                }
            },
        };
        let port = target.or_else(single_port).ok_or_else(|| {
            format!(
                "router {name}: no container port to route to: set \
                 traefik.http.services.NAME.loadbalancer.server.port (the service has {} \
                 ports, so shoal cannot pick one)",
                ports.len()
            )
        })?;
        out.routers.push(RouterSpec {
            name,
            rule: parsed,
            priority,
            entrypoints: raw.entrypoints,
            port,
        });
    }
    Ok(out)
}

/// Whether the labels define any router (cheap check, for the ingress's port bindings).
pub fn has_routers(labels: &BTreeMap<String, String>) -> bool {
    labels
        .keys()
        .any(|k| k.to_ascii_lowercase().starts_with("traefik.http.routers."))
}

/// The router that takes a request among `candidates` (already in priority order: see
/// [`order`]): the first whose rule matches.
pub fn select<'a, T>(
    candidates: &'a [T],
    spec: impl Fn(&T) -> &RouterSpec,
    req: &dyn HttpFacts,
) -> Option<&'a T> {
    candidates.iter().find(|c| spec(c).rule.matches(req))
}

/// Sort key putting routers in the order they are tried: priority, highest first, then router
/// name and service name.
pub fn order(spec: &RouterSpec, service: &str) -> (std::cmp::Reverse<i64>, String, String) {
    (
        std::cmp::Reverse(spec.priority),
        spec.name.clone(),
        service.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::spec::{Protocol, PublishMode};

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn port(target: u16) -> PortSpec {
        PortSpec {
            target,
            published: None,
            protocol: Protocol::Tcp,
            mode: PublishMode::Ingress,
        }
    }

    #[test]
    fn a_router_with_its_service_port() {
        let r = from_labels(
            "app_api",
            &labels(&[
                ("traefik.enable", "true"),
                ("traefik.http.routers.api.rule", "PathPrefix(`/api/`)"),
                ("traefik.http.routers.api.entrypoints", "web, websecure"),
                ("traefik.http.routers.api.service", "api-svc@docker"),
                (
                    "traefik.http.services.api-svc.loadbalancer.server.port",
                    "8080",
                ),
                (
                    "traefik.http.services.api-svc.loadBalancer.sticky.cookie",
                    "true",
                ),
            ]),
            &[],
        )
        .unwrap();
        assert_eq!(r.routers.len(), 1);
        let api = &r.routers[0];
        assert_eq!(api.name, "api");
        assert_eq!(api.port, 8080);
        assert_eq!(api.priority, "PathPrefix(`/api/`)".len() as i64);
        assert_eq!(api.entrypoints, ["web", "websecure"]);
        assert!(api.serves_on("web") && !api.serves_on("admin"));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert_eq!(r.ports(), [8080]);
    }

    #[test]
    fn defaults_follow_traefik() {
        // No service label: the one container port; no rule: Host(service name); no entry
        // points: all of them; explicit priority kept.
        let r = from_labels(
            "app_web",
            &labels(&[("traefik.http.routers.w.priority", "5")]),
            &[port(80)],
        )
        .unwrap();
        let w = &r.routers[0];
        assert_eq!(w.port, 80);
        assert_eq!(w.rule, Rule::Host(vec!["app-web".into()]));
        assert_eq!(w.priority, 5);
        assert!(w.serves_on("anything"));
        // One Traefik service defined: routers without `service` use it.
        let r = from_labels(
            "s",
            &labels(&[
                ("traefik.http.routers.a.rule", "Path(`/`)"),
                ("traefik.http.services.x.loadbalancer.server.port", "9000"),
            ]),
            &[port(80), port(81)],
        )
        .unwrap();
        assert_eq!(r.routers[0].port, 9000);
    }

    #[test]
    fn disabled_services_have_no_routers() {
        let r = from_labels(
            "s",
            &labels(&[
                ("traefik.enable", "false"),
                ("traefik.http.routers.a.rule", "Path(`/`)"),
                ("traefik.http.routers.a.middlewares", "auth"),
            ]),
            &[port(80)],
        )
        .unwrap();
        assert!(r.routers.is_empty());
        assert!(from_labels("s", &labels(&[("traefik.enable", "maybe")]), &[]).is_err());
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_or_warned_by_label() {
        let refused =
            |pairs: &[(&str, &str)]| from_labels("s", &labels(pairs), &[port(80)]).unwrap_err();
        let e = refused(&[("traefik.http.routers.a.middlewares", "auth")]);
        assert!(e.contains("traefik.http.routers.a.middlewares") && e.contains("middlewares"));
        assert!(refused(&[("traefik.http.routers.a.tls", "true")]).contains("TLS"));
        assert!(refused(&[("traefik.http.routers.a.tls.certresolver", "le")]).contains("TLS"));
        assert!(refused(&[("traefik.tcp.routers.db.rule", "HostSNI(`*`)")]).contains("TCP"));
        assert!(refused(&[("traefik.http.routers.a.rule", "Host(`a`) &")]).contains("rule"));
        assert!(refused(&[("traefik.http.routers.a.bogus", "1")]).contains("unknown router"));
        assert!(refused(&[(
            "traefik.http.services.x.loadbalancer.server.scheme",
            "https"
        )])
        .contains("plain http"));
        assert!(
            refused(&[("traefik.http.services.x.loadbalancer.server.port", "http")])
                .contains("not a port")
        );
        let e = refused(&[
            ("traefik.http.routers.a.rule", "Path(`/`)"),
            ("traefik.http.routers.a.service", "nope"),
        ]);
        assert!(
            e.contains("traefik.http.routers.a.service") && e.contains("nope"),
            "{e}"
        );
        let e = from_labels(
            "s",
            &labels(&[("traefik.http.routers.a.rule", "Path(`/`)")]),
            &[port(80), port(81)],
        )
        .unwrap_err();
        assert!(e.contains("server.port"), "{e}");

        let r = from_labels(
            "s",
            &labels(&[
                ("traefik.http.routers.a.rule", "Path(`/`)"),
                ("traefik.http.routers.a.tls", "false"),
                ("traefik.http.middlewares.strip.stripprefix.prefixes", "/a"),
                ("traefik.docker.network", "front"),
                (
                    "traefik.http.services.x.loadbalancer.healthcheck.path",
                    "/h",
                ),
                ("traefik.frontend.rule", "Host:a"),
            ]),
            &[port(80)],
        )
        .unwrap();
        let warned: Vec<&str> = r.warnings.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            warned,
            [
                "traefik.docker.network",
                "traefik.frontend.rule",
                "traefik.http.middlewares.strip.stripprefix.prefixes",
                "traefik.http.services.x.loadbalancer.healthcheck.path",
            ]
        );
    }
}
