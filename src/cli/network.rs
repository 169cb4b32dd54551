//! `shoal network ...`: the cluster's service networks, as `docker network` manages Swarm's
//! overlay networks. Any node answers; creations and removals spread like every other change.

use std::path::Path;

use anyhow::bail;
use clap::Subcommand;
use serde_json::{json, Map, Value};

use super::{
    client,
    flags::parse_label,
    output::{self, Listing, Row},
    service::{each_failed, ListArgs},
};
use shoal_core::{
    api::{network_id, NetworkDetail, NetworkInfo, Request, Response},
    desired::spec::{NetworkDef, NetworkSpec, OVERLAY_DRIVER},
    net::{layout::NODE_SUBNET_LEN, Ipv4Net},
};

/// Every shoal network spans the cluster, as Swarm's overlay networks do.
const SCOPE: &str = "swarm";

/// The label Docker's `stack deploy` puts on a stack's networks; shown on stack-owned networks
/// so that scripts filtering on it keep working.
const STACK_LABEL: &str = "com.docker.stack.namespace";

/// `shoal network` verbs.
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network that services on any node can join.
    Create {
        /// Only `overlay`: shoal's networks span the cluster.
        #[arg(short = 'd', long, default_value = OVERLAY_DRIVER)]
        driver: String,
        /// Its range, e.g. `10.50.0.0/16` (a /8 to a /22); default: a free /16 of 10.240.0.0/12.
        #[arg(long, value_name = "CIDR", value_parser = parse_subnet)]
        subnet: Option<Ipv4Net>,
        /// Let standalone containers join (recorded; shoal attaches services only).
        #[arg(long)]
        attachable: bool,
        /// Keep its traffic inside it: nothing in from or out to other networks and hosts.
        #[arg(long)]
        internal: bool,
        /// Network label, `KEY=VALUE`; repeatable.
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Network name.
        name: String,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        list: ListArgs,
    },
    /// Show networks in detail: Docker's JSON, with the services, replicas and nodes on them.
    Inspect {
        /// Network names, ids or unique id prefixes.
        #[arg(required = true)]
        networks: Vec<String>,
        /// `json` (one object per line) or a Go template over the object
        /// (`'{{.Driver}} {{json .IPAM.Config}}'`).
        #[arg(short = 'f', long)]
        format: Option<String>,
        /// Accepted for Docker's sake: the services and peers are always shown.
        #[arg(short = 'v', long)]
        verbose: bool,
    },
    /// Remove networks that no service uses.
    #[command(alias = "remove")]
    Rm {
        /// Network names, ids or unique id prefixes.
        #[arg(required = true)]
        networks: Vec<String>,
    },
}

/// `--subnet`: parsed here so that a typo is named before anything is sent.
fn parse_subnet(text: &str) -> Result<Ipv4Net, String> {
    text.parse::<Ipv4Net>().map_err(|e| e.to_string())
}

/// Runs a `network` verb against the agent of `data_dir`.
pub fn run(data_dir: &Path, command: NetworkCommand) -> anyhow::Result<()> {
    match command {
        NetworkCommand::Create {
            driver,
            subnet,
            attachable,
            internal,
            labels,
            name,
        } => {
            let def = NetworkDef {
                name: name.clone(),
                external: false,
                spec: NetworkSpec {
                    driver,
                    attachable,
                    internal,
                    labels: labels.into_iter().collect(),
                    subnet,
                    stack: None,
                },
            };
            let response = client::call(data_dir, Request::NetworkCreate { def })?;
            let Response::Changed(receipt) = response else {
                bail!("unexpected answer from the agent: {response:?}");
            };
            // Docker prints the new network's id.
            println!("{}", network_id(&name));
            super::receipt_notes(&receipt);
            Ok(())
        }
        NetworkCommand::Ls { list } => print_networks(fetch(data_dir)?, &list),
        NetworkCommand::Inspect {
            networks,
            format,
            verbose: _,
        } => {
            let mut objects = Vec::new();
            let mut failed = Vec::new();
            for network in networks {
                match client::call(data_dir, Request::NetworkInspect { network }) {
                    Ok(Response::Network(detail)) => objects.push(docker_object(&detail)),
                    Ok(other) => bail!("unexpected answer from the agent: {other:?}"),
                    Err(e) => failed.push(format!("{e:#}")),
                }
            }
            print!(
                "{}",
                output::render_inspected(&objects, format.as_deref())
                    .map_err(anyhow::Error::msg)?
            );
            each_failed(failed)
        }
        NetworkCommand::Rm { networks } => {
            let mut failed = Vec::new();
            for network in networks {
                let request = Request::NetworkRemove {
                    network: network.clone(),
                };
                match client::call(data_dir, request) {
                    // Docker prints each network removed, as it was named.
                    Ok(Response::Changed(_)) => println!("{network}"),
                    Ok(other) => failed.push(format!("{network}: unexpected answer {other:?}")),
                    Err(e) => failed.push(format!("{e:#}")),
                }
            }
            each_failed(failed)
        }
    }
}

fn fetch(data_dir: &Path) -> anyhow::Result<Vec<NetworkInfo>> {
    match client::call(data_dir, Request::NetworkList)? {
        Response::Networks(networks) => Ok(networks),
        other => bail!("unexpected answer from the agent: {other:?}"),
    }
}

/// The labels Docker would show: the network's own, plus the stack label on a stack's.
fn docker_labels(info: &NetworkInfo) -> Map<String, Value> {
    let mut labels: Map<String, Value> = info
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.clone())))
        .collect();
    if !info.stack.is_empty() {
        labels.insert(STACK_LABEL.into(), info.stack.clone().into());
    }
    labels
}

fn print_networks(networks: Vec<NetworkInfo>, list: &ListArgs) -> anyhow::Result<()> {
    let filters = output::parse_filters(
        &list.filters,
        &["driver", "id", "label", "name", "scope", "type", "dangling"],
    )
    .map_err(anyhow::Error::msg)?;
    let networks: Vec<NetworkInfo> = networks
        .into_iter()
        .filter(|n| {
            output::passes(&filters, |k, v| match k {
                "driver" => n.driver == v,
                "id" => n.id.starts_with(v),
                "label" => {
                    let labels = docker_labels(n)
                        .into_iter()
                        .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
                        .collect();
                    output::label_matches(&labels, v)
                }
                // Docker matches a part of the name.
                "name" => n.name.contains(v),
                "scope" => v == SCOPE,
                // Every shoal network is user-defined.
                "type" => v == "custom",
                // Docker's "unused": no service attached.
                "dangling" => (v == "true" || v == "1") == n.services.is_empty(),
                _ => false,
            })
        })
        .collect();
    let rows = networks
        .iter()
        .map(|n| {
            let labels = docker_labels(n)
                .into_iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",");
            let mut row = Row::new();
            row.insert("ID".into(), output::short_id(&n.id, list.no_trunc).into());
            row.insert("Name".into(), n.name.clone().into());
            row.insert("Driver".into(), n.driver.clone().into());
            row.insert("Scope".into(), SCOPE.into());
            row.insert("IPv6".into(), false.into());
            row.insert("Internal".into(), n.internal.into());
            row.insert("Labels".into(), labels.into());
            row.insert("CreatedAt".into(), rfc3339(n.created_ms).into());
            row.insert("Subnet".into(), n.subnet.clone().into());
            row.insert("Stack".into(), n.stack.clone().into());
            row.insert("Services".into(), n.services.len().into());
            row
        })
        .collect();
    let listing = Listing {
        rows,
        columns: &[
            ("NETWORK ID", "ID"),
            ("NAME", "Name"),
            ("DRIVER", "Driver"),
            ("SCOPE", "Scope"),
        ],
        json: serde_json::to_value(&networks)?,
        id_field: "ID",
    };
    print!(
        "{}",
        listing
            .render(&list.format, list.quiet)
            .map_err(anyhow::Error::msg)?
    );
    Ok(())
}

/// `network inspect`'s object: Docker's fields and names (so that `--format` templates written
/// for Docker work), filled from what shoal knows. Unlike Docker's, `Containers` lists the
/// replicas of every node, and `Services` and `Peers` (Docker's `--verbose`) are always there;
/// each peer also has its slot, subnet and gateway, which is how shoal splits the range.
fn docker_object(detail: &NetworkDetail) -> Value {
    let info = &detail.info;
    let mut containers = Map::new();
    let mut services = Map::new();
    for s in &detail.attached {
        let mut tasks = Vec::new();
        for t in &s.tasks {
            let key = if t.container_id.is_empty() {
                t.task_id.clone()
            } else {
                t.container_id.clone()
            };
            let (v4, v6) = match t.address {
                std::net::IpAddr::V4(a) => (format!("{a}/{NODE_SUBNET_LEN}"), String::new()),
                std::net::IpAddr::V6(a) => (String::new(), a.to_string()),
            };
            containers.insert(
                key,
                json!({
                    "Name": t.name,
                    "EndpointID": "",
                    "MacAddress": "",
                    "IPv4Address": v4,
                    "IPv6Address": v6,
                    "Node": t.node,
                }),
            );
            tasks.push(json!({
                "Name": t.name,
                "EndpointID": "",
                "EndpointIP": t.address.to_string(),
                "Info": {
                    "Host IP": t.node_addr.map(|a| a.to_string()).unwrap_or_default(),
                },
                "Node": t.node,
                "State": t.state,
            }));
        }
        services.insert(
            s.name.clone(),
            json!({
                "VIP": s.vip.map(|v| v.to_string()).unwrap_or_default(),
                "Ports": [],
                "EndpointMode": s.endpoint_mode,
                "Aliases": s.aliases,
                "Tasks": tasks,
            }),
        );
    }
    let peers: Vec<Value> = detail
        .peers
        .iter()
        .map(|p| {
            json!({
                "Name": p.name,
                "IP": p.addr.map(|a| a.to_string()).unwrap_or_default(),
                "ID": p.id,
                "Slot": p.slot,
                "Subnet": p.subnet,
                "Gateway": p.gateway.map(|g| g.to_string()).unwrap_or_default(),
            })
        })
        .collect();
    let config: Vec<Value> = if info.subnet.is_empty() {
        Vec::new()
    } else {
        vec![json!({ "Subnet": info.subnet })]
    };
    json!({
        "Name": info.name,
        "Id": info.id,
        "Created": rfc3339(info.created_ms),
        "Scope": SCOPE,
        "Driver": info.driver,
        "EnableIPv6": false,
        "IPAM": {
            "Driver": "default",
            "Options": null,
            "Config": config,
        },
        "Internal": info.internal,
        "Attachable": info.attachable,
        "Ingress": false,
        "ConfigFrom": { "Network": "" },
        "ConfigOnly": false,
        "Containers": containers,
        "Options": {},
        "Labels": docker_labels(info),
        "Services": services,
        "Peers": peers,
        "Problems": detail.problems,
    })
}

/// Milliseconds since the epoch as RFC 3339 in UTC, the way Docker's JSON writes times.
fn rfc3339(ms: u64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return String::new();
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use shoal_core::api::{NetworkPeer, NetworkService, NetworkTask};

    fn detail() -> NetworkDetail {
        NetworkDetail {
            info: NetworkInfo {
                id: network_id("app_front"),
                name: "app_front".into(),
                driver: "overlay".into(),
                subnet: "10.243.0.0/16".into(),
                explicit_subnet: false,
                internal: false,
                attachable: true,
                labels: BTreeMap::from([("team".into(), "a".into())]),
                stack: "app".into(),
                created_ms: 1_700_000_000_123,
                services: vec!["app_web".into()],
            },
            attached: vec![NetworkService {
                name: "app_web".into(),
                vip: Some("10.243.255.1".parse().unwrap()),
                endpoint_mode: "vip".into(),
                aliases: vec!["www".into()],
                tasks: vec![NetworkTask {
                    name: "app_web.1".into(),
                    task_id: "t1".into(),
                    container_id: "c0ffee".into(),
                    address: "10.243.1.2".parse().unwrap(),
                    node: "n2".into(),
                    node_addr: Some("127.0.0.2".parse().unwrap()),
                    state: "running".into(),
                }],
            }],
            peers: vec![NetworkPeer {
                id: "0123".into(),
                name: "n2".into(),
                addr: Some("127.0.0.2".parse().unwrap()),
                slot: 1,
                subnet: "10.243.1.0/24".into(),
                gateway: Some("10.243.1.1".parse().unwrap()),
            }],
            problems: vec![],
        }
    }

    #[test]
    fn inspect_has_dockers_shape() {
        let o = docker_object(&detail());
        assert_eq!(o["Name"], "app_front");
        assert_eq!(o["Id"], network_id("app_front"));
        assert_eq!(o["Driver"], "overlay");
        assert_eq!(o["Scope"], "swarm");
        assert_eq!(o["Created"], "2023-11-14T22:13:20.123Z");
        assert_eq!(o["IPAM"]["Config"][0]["Subnet"], "10.243.0.0/16");
        assert_eq!(o["Labels"]["team"], "a");
        assert_eq!(o["Labels"][STACK_LABEL], "app");
        assert_eq!(o["Attachable"], true);
        assert_eq!(o["Containers"]["c0ffee"]["IPv4Address"], "10.243.1.2/24");
        assert_eq!(o["Services"]["app_web"]["VIP"], "10.243.255.1");
        assert_eq!(
            o["Services"]["app_web"]["Tasks"][0]["Info"]["Host IP"],
            "127.0.0.2"
        );
        assert_eq!(o["Peers"][0]["Name"], "n2");
        assert_eq!(o["Peers"][0]["Subnet"], "10.243.1.0/24");
        let t = output::Template::parse("{{.Name}} {{.Driver}} {{.Scope}}").unwrap();
        assert_eq!(t.render(&o).unwrap(), "app_front overlay swarm");
    }

    #[test]
    fn subnets_are_checked_before_sending() {
        assert!(parse_subnet("10.50.0.0/16").is_ok());
        let err = parse_subnet("10.50.0.1/16").unwrap_err();
        assert!(err.contains("10.50.0.1/16"), "{err}");
        assert!(parse_subnet("nonsense").unwrap_err().contains("nonsense"));
    }
}
