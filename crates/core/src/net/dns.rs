//! The service DNS, as a pure function: what a container asking for a name gets.
//!
//! A container asks its node's DNS server (through the engine's embedded DNS, which forwards
//! every name it does not know). The answer depends on which networks the asker is on, found
//! from its address ([`NetView::networks_of`]): a service answers only on its own networks.
//!
//! The engine's embedded DNS never forwards a name of one label (`api`): it answers it from its
//! own records or not at all. So replicas get [`SEARCH_DOMAIN`] as their first search domain
//! (with `ndots:1`, so that resolvers try it first for such a name), and `api.shoal.internal`
//! reaches this server, which answers it as `api`.
//!
//! | name | answer |
//! |---|---|
//! | `STACK_SERVICE`, `SERVICE` (its stack's short name), an alias on that network | the service's virtual address there (`endpoint_mode: vip`), or its ready replicas' addresses (`dnsrr`) |
//! | `tasks.` followed by any of those | every ready replica's address on that network |
//! | a service's name, but on no network of the asker's | NXDOMAIN (not asked upstream: the name is the cluster's) |
//! | any of those followed by `.shoal.internal` | the same |
//! | anything else under `shoal.internal` | NXDOMAIN |
//! | anything else | forwarded to the host's resolvers |
//!
//! Names compare without case and without a trailing dot. Several services answering to one
//! name on the asker's networks (the same short name in two stacks sharing a network) give the
//! union of their addresses. A service name asked for another type than A (AAAA, MX...) gets an
//! empty answer (the name exists), so that resolvers do not look further; answers have TTL 0,
//! since replicas come and go.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr},
};

use super::services::NetView;
use crate::desired::spec::EndpointMode;

/// The cluster's search domain: `NAME.shoal.internal` is `NAME` (`.internal` is reserved for
/// private use, so no public name is shadowed).
pub const SEARCH_DOMAIN: &str = "shoal.internal";

/// The record type asked for, as far as the resolver cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryType {
    /// IPv4 addresses.
    A,
    /// Anything else.
    Other,
}

/// What to answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A records, in this order.
    Addresses(Vec<Ipv4Addr>),
    /// The name is a service's, but there is nothing of that type (or no ready replica): an
    /// empty NOERROR answer.
    NoData,
    /// A service's name the asker may not see: NXDOMAIN.
    NxDomain,
    /// Not a service's name: ask the host's resolvers.
    Forward,
}

/// Answers `name` of type `qtype` for the container at `asker`.
pub fn resolve(view: &NetView, asker: IpAddr, name: &str, qtype: QueryType) -> Answer {
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    // Under the cluster's domain the answer is ours alone: nothing is asked upstream.
    let (ours, lower) = match lower.strip_suffix(SEARCH_DOMAIN) {
        Some("") => return Answer::NxDomain,
        Some(rest) if rest.ends_with('.') => (true, rest.trim_end_matches('.').to_string()),
        _ => (false, lower),
    };
    let (tasks, wanted) = match lower.strip_prefix("tasks.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    if wanted.is_empty() {
        return if ours {
            Answer::NxDomain
        } else {
            Answer::Forward
        };
    }
    let visible = match asker {
        IpAddr::V4(ip) => view.networks_of(ip),
        IpAddr::V6(_) => BTreeSet::new(),
    };
    let mut exists = false;
    let mut seen = false;
    let mut addresses: BTreeSet<Ipv4Addr> = BTreeSet::new();
    for service in view.services.values() {
        for (network, m) in &service.networks {
            let named = wanted == service.name.to_ascii_lowercase()
                || wanted == service.short.to_ascii_lowercase()
                || m.aliases.iter().any(|a| a.eq_ignore_ascii_case(wanted));
            if !named {
                continue;
            }
            exists = true;
            if !visible.contains(network.as_str()) {
                continue;
            }
            seen = true;
            if tasks || service.mode == EndpointMode::Dnsrr {
                addresses.extend(&m.ready);
            } else if let Some(vip) = m.vip {
                addresses.insert(vip);
            }
        }
    }
    match (seen, exists) {
        (true, _) if qtype == QueryType::A && !addresses.is_empty() => {
            Answer::Addresses(addresses.into_iter().collect())
        }
        (true, _) => Answer::NoData,
        (false, true) => Answer::NxDomain,
        (false, false) if ours => Answer::NxDomain,
        (false, false) => Answer::Forward,
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::{
        identity::NodeId,
        net::fixture::*,
        observed::{Health, TaskState},
    };

    #[test]
    fn names_aliases_and_tasks_on_the_askers_networks() {
        let w = world(|_, _| {});
        let web = addr(&w, "app_front", 10, 2);
        let a = |name: &str| resolve(&w.view, web, name, QueryType::A);
        let front_api = vip(&w, "app_front", "app_api");
        assert_eq!(a("app_api"), Answer::Addresses(vec![front_api]));
        assert_eq!(a("api"), Answer::Addresses(vec![front_api]));
        assert_eq!(
            a("API."),
            Answer::Addresses(vec![front_api]),
            "case and dot"
        );
        assert_eq!(
            a("www"),
            Answer::Addresses(vec![vip(&w, "app_front", "app_web")])
        );
        // Only the healthy web replica is a task.
        let Answer::Addresses(tasks) = a("tasks.web") else {
            panic!()
        };
        assert_eq!(tasks.len(), 1);
        // db is on back only; web is not.
        assert_eq!(a("db"), Answer::NxDomain);
        assert_eq!(a("database"), Answer::NxDomain);
        assert_eq!(a("other_web"), Answer::NxDomain);
        assert_eq!(a("example.com"), Answer::Forward);
        assert_eq!(
            resolve(&w.view, web, "api", QueryType::Other),
            Answer::NoData
        );
    }

    /// `NAME.shoal.internal` is how a one-label name reaches this server through the engine's
    /// DNS; under that domain nothing is forwarded.
    #[test]
    fn the_search_domain_answers_as_the_bare_name() {
        let w = world(|_, _| {});
        let web = addr(&w, "app_front", 10, 2);
        let a = |name: &str| resolve(&w.view, web, name, QueryType::A);
        let front_api = vip(&w, "app_front", "app_api");
        assert_eq!(a("api.shoal.internal"), Answer::Addresses(vec![front_api]));
        assert_eq!(a("API.Shoal.Internal."), Answer::Addresses(vec![front_api]));
        assert_eq!(a("tasks.web.shoal.internal"), a("tasks.web"));
        assert_eq!(a("db.shoal.internal"), Answer::NxDomain);
        assert_eq!(a("nothing.shoal.internal"), Answer::NxDomain);
        assert_eq!(a("tasks.shoal.internal"), Answer::NxDomain);
        assert_eq!(a("shoal.internal"), Answer::NxDomain);
        // Only the whole label: `xshoal.internal` is someone else's.
        assert_eq!(a("api.xshoal.internal"), Answer::Forward);
    }

    #[test]
    fn a_replica_on_two_networks_sees_both_whichever_address_it_asks_from() {
        let w = world(|_, _| {});
        let api_front = addr(&w, "app_front", 10, 3);
        let both = resolve(&w.view, api_front, "db", QueryType::A);
        let Answer::Addresses(db) = both else {
            panic!("{both:?}")
        };
        // dnsrr: the ready replicas' own addresses, on back.
        assert_eq!(db.len(), 2);
        assert!(db
            .iter()
            .all(|ip| w.state.layout().networks["app_back"].range.contains(*ip)));
        assert_eq!(
            resolve(&w.view, api_front, "database", QueryType::A),
            Answer::Addresses(db.clone())
        );
        // An alias is only on its own network: `www` is web's on front, api is on front too.
        assert!(matches!(
            resolve(&w.view, api_front, "www", QueryType::A),
            Answer::Addresses(_)
        ));
    }

    #[test]
    fn short_names_are_the_stacks_own_and_unknown_askers_see_nothing() {
        let w = world(|_, _| {});
        let other = addr(&w, "other_default", 20, 2);
        assert_eq!(
            resolve(&w.view, other, "web", QueryType::A),
            Answer::Addresses(vec![vip(&w, "other_default", "other_web")])
        );
        assert_eq!(
            resolve(&w.view, other, "app_web", QueryType::A),
            Answer::NxDomain
        );
        let host: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            resolve(&w.view, host, "app_web", QueryType::A),
            Answer::NxDomain
        );
        assert_eq!(
            resolve(&w.view, host, "example.com", QueryType::A),
            Answer::Forward
        );
    }

    #[test]
    fn a_new_replica_not_yet_reported_asks_from_its_subnet() {
        let w = world(|_, _| {});
        let fresh = addr(&w, "app_back", 20, 200);
        assert!(matches!(
            resolve(&w.view, fresh, "db", QueryType::A),
            Answer::Addresses(_)
        ));
        assert_eq!(
            resolve(&w.view, fresh, "web", QueryType::A),
            Answer::NxDomain
        );
    }

    #[test]
    fn unready_and_stopping_replicas_are_left_out() {
        let w = world(|s, tasks| {
            let l = s.layout();
            let ip = l
                .node_subnet("app_back", NodeId(20))
                .unwrap()
                .nth(9)
                .unwrap();
            let mut stopping = task(
                "app_db",
                3,
                TaskState::Running,
                Health::Healthy,
                &[("app_back", ip)],
            );
            stopping.desired_running = false;
            tasks.push((20, stopping));
            for (_, t) in tasks
                .iter_mut()
                .filter(|(n, t)| *n == 10 && t.service == "app_db")
            {
                t.health = Health::Unhealthy;
            }
        });
        let api = addr(&w, "app_back", 10, 2);
        assert_eq!(
            resolve(&w.view, api, "tasks.db", QueryType::A),
            Answer::Addresses(vec![match addr(&w, "app_back", 20, 2) {
                IpAddr::V4(v4) => v4,
                _ => unreachable!(),
            }])
        );
    }
}
