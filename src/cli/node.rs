//! `shoal node ...`: the cluster's nodes as the local agent sees them.

use std::path::Path;

use anyhow::bail;
use clap::Subcommand;
use comfy_table::{presets::NOTHING, Table};

use super::{client, Format};
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
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
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
    /// Show one node in detail.
    Inspect {
        /// Node id, unique id prefix, or name.
        node: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
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
        NodeCommand::Ls { format } => {
            let nodes = fetch(data_dir)?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&nodes)?),
                Format::Table => println!("{}", table(&nodes)),
            }
        }
        NodeCommand::Inspect { node, format } => {
            let nodes = fetch(data_dir)?;
            let found = find_node(&nodes, &node).map_err(anyhow::Error::msg)?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(found)?),
                Format::Table => print!("{}", pretty(found)),
            }
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

fn table(nodes: &[NodeInfo]) -> Table {
    let mut table = Table::new();
    table.load_preset(NOTHING);
    table.set_header(["ID", "NAME", "STATUS", "AVAILABILITY", "ADDRESS", "LABELS"]);
    for node in nodes {
        // Docker marks the node you are talking to with a star after its id.
        let id = format!("{}{}", &node.id[..12], if node.is_self { " *" } else { "" });
        table.add_row([
            id,
            node.name.clone(),
            node.status.as_str().to_string(),
            node.availability.as_str().to_string(),
            node.addr.to_string(),
            labels(node),
        ]);
    }
    table
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
