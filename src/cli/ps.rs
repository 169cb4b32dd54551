//! The task table shared by `service ps`, `stack ps` and `node ps`.

use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use comfy_table::{presets::NOTHING, Table};

use super::Format;
use shoal_core::api::TaskInfo;

/// Flags every `ps` verb takes.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Filter, as Docker's: `desired-state=running|shutdown`, `node=NAME`, `name=SERVICE.SLOT`.
    #[arg(short = 'f', long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
}

impl PsArgs {
    /// Applies the filters; an unknown filter key is an error.
    pub fn select(&self, tasks: Vec<TaskInfo>) -> anyhow::Result<Vec<TaskInfo>> {
        let mut tasks = tasks;
        for filter in &self.filters {
            let Some((key, value)) = filter.split_once('=') else {
                anyhow::bail!("filter {filter:?} is not KEY=VALUE");
            };
            tasks.retain(|t| match key {
                "desired-state" => t.desired_state == value,
                "node" => t.node == value,
                "name" => t.name == value || t.service == value,
                "id" => t.id.starts_with(value),
                _ => true,
            });
            if !matches!(key, "desired-state" | "node" | "name" | "id") {
                anyhow::bail!("unknown filter {key:?}; use desired-state, node, name or id");
            }
        }
        Ok(tasks)
    }

    /// Prints `tasks` as the flags ask.
    pub fn print(&self, tasks: Vec<TaskInfo>) -> anyhow::Result<()> {
        let tasks = self.select(tasks)?;
        match self.format {
            Format::Json => println!("{}", serde_json::to_string_pretty(&tasks)?),
            Format::Table => println!("{}", table(&tasks)),
        }
        Ok(())
    }
}

fn ago(since_ms: u64) -> String {
    if since_ms == 0 {
        return String::new();
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let secs = now.saturating_sub(since_ms) / 1000;
    match secs {
        0..=59 => format!(" {secs}s ago"),
        60..=3599 => format!(" {}m ago", secs / 60),
        _ => format!(" {}h ago", secs / 3600),
    }
}

fn table(tasks: &[TaskInfo]) -> Table {
    let mut table = Table::new();
    table.load_preset(NOTHING);
    table.set_header([
        "ID",
        "NAME",
        "IMAGE",
        "NODE",
        "DESIRED STATE",
        "CURRENT STATE",
        "ERROR",
    ]);
    for t in tasks {
        // Docker shows replaced tasks under the current one of their slot.
        let name = if t.history {
            format!(" \\_ {}", t.name)
        } else {
            t.name.clone()
        };
        let mut state = t.state.clone();
        if t.health != "none" && t.state == "running" {
            state = format!("running ({})", t.health);
        }
        table.add_row([
            t.id.clone(),
            name,
            t.image.clone(),
            t.node.clone(),
            t.desired_state.clone(),
            format!("{state}{}", ago(t.since_ms)),
            t.error.clone(),
        ]);
    }
    table
}
