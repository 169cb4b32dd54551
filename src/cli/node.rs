//! `shoal node ...`: the cluster's nodes as the local agent sees them.

use std::path::Path;

use anyhow::bail;
use clap::Subcommand;
use comfy_table::{presets::NOTHING, Table};

use super::{client, Format};
use crate::api::{NodeInfo, Request, Response};

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
    /// Show one node in detail.
    Inspect {
        /// Node id, unique id prefix, or name.
        node: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

/// Runs a `node` verb against the agent of `data_dir`.
pub fn run(data_dir: &Path, command: NodeCommand) -> anyhow::Result<()> {
    let nodes = match client::call(data_dir, Request::NodeList)? {
        Response::Nodes(nodes) => nodes,
        other => bail!("unexpected answer from the agent: {other:?}"),
    };
    match command {
        NodeCommand::Ls { format } => match format {
            Format::Json => println!("{}", serde_json::to_string_pretty(&nodes)?),
            Format::Table => println!("{}", table(&nodes)),
        },
        NodeCommand::Inspect { node, format } => {
            let found = find(&nodes, &node)?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(found)?),
                Format::Table => print!("{}", pretty(found)),
            }
        }
    }
    Ok(())
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
            node.availability.clone(),
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
        node.availability,
        node.addr,
        node.quic_addr,
        labels(node),
        node.os,
        node.arch,
        node.agent_version,
        node.generation,
    )
}

/// Finds a node by full id, unique id prefix, or name.
pub fn find<'a>(nodes: &'a [NodeInfo], query: &str) -> anyhow::Result<&'a NodeInfo> {
    if let Some(node) = nodes.iter().find(|n| n.id == query) {
        return Ok(node);
    }
    let by_name: Vec<_> = nodes.iter().filter(|n| n.name == query).collect();
    if let [node] = by_name[..] {
        return Ok(node);
    }
    let by_prefix: Vec<_> = nodes.iter().filter(|n| n.id.starts_with(query)).collect();
    match (by_name.len(), &by_prefix[..]) {
        (0, [node]) if !query.is_empty() => Ok(node),
        (0, []) => bail!("no such node: {query}"),
        _ => bail!(
            "node {query:?} is ambiguous; it matches {}",
            by_name
                .iter()
                .chain(by_prefix.iter())
                .map(|n| format!("{} ({})", &n.id[..12], n.name))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
