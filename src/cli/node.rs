//! `shoal node ...`: the cluster's nodes as the local agent sees them.

use std::path::Path;

use anyhow::bail;
use clap::Subcommand;

use super::{
    client,
    output::{self, Listing, Row},
    service::ListArgs,
};
use shoal_core::{
    api::{find_node, NodeInfo, Request, Response},
    desired::spec::Availability,
};

/// `shoal node` verbs.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List the nodes of the cluster.
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        list: ListArgs,
    },
    /// Remove nodes from the cluster's listing (a node that is up needs `--force`).
    #[command(alias = "remove")]
    Rm {
        /// Node ids, unique id prefixes, or names.
        #[arg(required = true)]
        nodes: Vec<String>,
        /// Remove a node even if it is up.
        #[arg(short = 'f', long)]
        force: bool,
    },
    /// Change a node's availability or labels.
    Update {
        /// Node id, unique id prefix, or name.
        node: String,
        /// `active` runs replicas, `pause` takes no new ones, `drain` hands all of them off.
        #[arg(long, value_enum)]
        availability: Option<AvailabilityArg>,
        /// Set a node label KEY=VALUE (for `node.labels.KEY` constraints); repeatable.
        #[arg(long = "label-add", value_name = "KEY=VALUE", value_parser = super::parse_key_value)]
        label_add: Vec<(String, String)>,
        /// Remove a node label; repeatable.
        #[arg(long = "label-rm", value_name = "KEY")]
        label_rm: Vec<String>,
    },
    /// List the tasks on a node (default: the node you ask).
    Ps {
        /// Node id, unique id prefix, or name.
        node: Option<String>,
        #[command(flatten)]
        ps: super::ps::PsArgs,
    },
    /// Show nodes in detail (JSON, or text with `--pretty`).
    Inspect {
        /// Node ids, unique id prefixes, or names (`self`: the node answering).
        #[arg(required = true)]
        nodes: Vec<String>,
        /// Text for people instead of JSON.
        #[arg(long)]
        pretty: bool,
        /// `json` (one object per line), `table` (text) or a Go template over the JSON object.
        #[arg(long)]
        format: Option<String>,
    },
}

/// `--availability` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum AvailabilityArg {
    /// Runs replicas.
    Active,
    /// Keeps its replicas, gets no new ones.
    Pause,
    /// Hands every replica off.
    Drain,
}

impl From<AvailabilityArg> for Availability {
    fn from(a: AvailabilityArg) -> Self {
        match a {
            AvailabilityArg::Active => Availability::Active,
            AvailabilityArg::Pause => Availability::Pause,
            AvailabilityArg::Drain => Availability::Drain,
        }
    }
}

/// Runs a `node` verb against the agent of `data_dir`.
pub fn run(data_dir: &Path, command: NodeCommand) -> anyhow::Result<()> {
    match command {
        NodeCommand::Ls { list } => print_nodes(fetch(data_dir)?, &list)?,
        NodeCommand::Rm { nodes, force } => {
            let mut failed = Vec::new();
            for node in nodes {
                let request = Request::NodeRemove {
                    node: node.clone(),
                    force,
                };
                match client::call(data_dir, request) {
                    Ok(Response::Changed(_)) => println!("{node}"),
                    Ok(other) => failed.push(format!("{node}: unexpected answer {other:?}")),
                    Err(e) => failed.push(format!("{e:#}")),
                }
            }
            super::service::each_failed(failed)?;
        }
        NodeCommand::Inspect {
            nodes: queries,
            pretty: as_text,
            format,
        } => {
            let nodes = fetch(data_dir)?;
            let mut failed = Vec::new();
            let mut found = Vec::new();
            for q in &queries {
                match find_node(&nodes, q) {
                    Ok(n) => found.push(n),
                    Err(e) => failed.push(e),
                }
            }
            match (as_text, format.as_deref()) {
                (true, _) | (_, Some("table")) => {
                    for n in &found {
                        print!("{}", pretty(n));
                    }
                }
                (false, None) => println!("{}", serde_json::to_string_pretty(&found)?),
                (false, Some("json")) => {
                    for n in &found {
                        println!("{}", serde_json::to_string_pretty(n)?);
                    }
                }
                (false, Some(template)) => {
                    let t = output::Template::parse(template).map_err(anyhow::Error::msg)?;
                    for n in &found {
                        let v = serde_json::to_value(n)?;
                        println!("{}", t.render(&v).map_err(anyhow::Error::msg)?);
                    }
                }
            }
            super::service::each_failed(failed)?;
        }
        NodeCommand::Ps { node, ps } => {
            let Response::Tasks(tasks) = client::call(data_dir, Request::NodePs { node })? else {
                bail!("unexpected answer from the agent");
            };
            ps.print(tasks)?;
        }
        NodeCommand::Update {
            node,
            availability,
            label_add,
            label_rm,
        } => {
            if availability.is_none() && label_add.is_empty() && label_rm.is_empty() {
                bail!("nothing to update: give --availability, --label-add or --label-rm");
            }
            let request = Request::NodeUpdate {
                node,
                availability: availability.map(Into::into),
                label_add,
                label_rm,
            };
            super::print_receipt(client::call(data_dir, request)?)?;
        }
    }
    Ok(())
}

fn fetch(data_dir: &Path) -> anyhow::Result<Vec<NodeInfo>> {
    match client::call(data_dir, Request::NodeList)? {
        Response::Nodes(nodes) => Ok(nodes),
        other => bail!("unexpected answer from the agent: {other:?}"),
    }
}

fn labels(node: &NodeInfo) -> String {
    node.labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn print_nodes(nodes: Vec<NodeInfo>, list: &ListArgs) -> anyhow::Result<()> {
    let filters = output::parse_filters(
        &list.filters,
        &[
            "id",
            "name",
            "label",
            "node.label",
            "role",
            "membership",
            "availability",
        ],
    )
    .map_err(anyhow::Error::msg)?;
    let nodes: Vec<NodeInfo> = nodes
        .into_iter()
        .filter(|n| {
            output::passes(&filters, |k, v| match k {
                "id" => n.id.starts_with(v),
                "name" => n.name == v,
                "label" => output::label_matches(&n.engine_labels, v),
                "node.label" => output::label_matches(&n.node_labels, v),
                // Every shoal node is a manager and a worker, and accepted once it is listed.
                "role" => v == "manager" || v == "worker",
                "membership" => v == "accepted",
                "availability" => n.availability.as_str() == v,
                _ => false,
            })
        })
        .collect();
    let rows = nodes
        .iter()
        .map(|n| {
            let mut row = Row::new();
            // Docker marks the node you are talking to with a star after its id.
            let id = output::short_id(&n.id, list.no_trunc);
            row.insert(
                "ID".into(),
                format!("{id}{}", if n.is_self { " *" } else { "" }).into(),
            );
            row.insert("Hostname".into(), n.name.clone().into());
            row.insert("Status".into(), n.status.as_str().into());
            row.insert("Availability".into(), n.availability.as_str().into());
            row.insert("Address".into(), n.addr.to_string().into());
            row.insert("EngineVersion".into(), n.agent_version.clone().into());
            row.insert("Labels".into(), labels(n).into());
            row.insert("Self".into(), n.is_self.into());
            row
        })
        .collect::<Vec<Row>>();
    // `-q` prints bare ids.
    let mut quiet_rows = rows.clone();
    for (row, n) in quiet_rows.iter_mut().zip(&nodes) {
        row.insert("ID".into(), output::short_id(&n.id, list.no_trunc).into());
    }
    let listing = Listing {
        rows: if list.quiet { quiet_rows } else { rows },
        columns: &[
            ("ID", "ID"),
            ("HOSTNAME", "Hostname"),
            ("STATUS", "Status"),
            ("AVAILABILITY", "Availability"),
            ("ADDRESS", "Address"),
            ("ENGINE VERSION", "EngineVersion"),
        ],
        json: serde_json::to_value(&nodes)?,
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

fn pretty(node: &NodeInfo) -> String {
    format!(
        "ID:             {}\nName:           {}\nStatus:         {}\nAvailability:   {}\n\
         Address:        {}\nQUIC address:   {}\nLabels:         {}\nPlatform:       {}/{}\n\
         Agent version:  {}\nGeneration:     {}\n",
        node.id,
        node.name,
        node.status.as_str(),
        node.availability.as_str(),
        node.addr,
        node.quic_addr,
        labels(node),
        node.os,
        node.arch,
        node.agent_version,
        node.generation,
    )
}
