//! The task table shared by `service ps`, `stack ps` and `node ps`.

use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;

use super::output::{self, Format, Listing, Row};
use shoal_core::api::TaskInfo;

/// Flags every `ps` verb takes.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// `table`, `json`, a Go template (`{{.Name}} {{.Node}}`) or `table TEMPLATE`.
    #[arg(long, value_parser = Format::parse, default_value = "table")]
    pub format: Format,
    /// Filter, as Docker's: `desired-state=running|shutdown|accepted`, `node=NAME`,
    /// `name=SERVICE[.SLOT]`, `id=PREFIX`; repeatable.
    #[arg(short = 'f', long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
    /// Only display task IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Do not truncate output.
    #[arg(long)]
    pub no_trunc: bool,
}

impl PsArgs {
    /// Applies the filters; an unknown filter key is an error.
    pub fn select(&self, tasks: Vec<TaskInfo>) -> anyhow::Result<Vec<TaskInfo>> {
        let filters =
            output::parse_filters(&self.filters, &["desired-state", "node", "name", "id"])
                .map_err(anyhow::Error::msg)?;
        Ok(tasks
            .into_iter()
            .filter(|t| {
                output::passes(&filters, |key, value| match key {
                    // Docker's `accepted` is a task not yet running: shoal's pending slots.
                    "desired-state" if value == "accepted" => t.state == "pending",
                    "desired-state" => t.desired_state == value,
                    "node" => t.node == value,
                    "name" => t.name == value || t.service == value,
                    "id" => t.id.starts_with(value),
                    _ => false,
                })
            })
            .collect())
    }

    /// Prints `tasks` as the flags ask.
    pub fn print(&self, tasks: Vec<TaskInfo>) -> anyhow::Result<()> {
        let tasks = self.select(tasks)?;
        let now = now_ms();
        let rows = tasks.iter().map(|t| row(t, now, self.no_trunc)).collect();
        let listing = Listing {
            rows,
            columns: &[
                ("ID", "ID"),
                ("NAME", "Name"),
                ("IMAGE", "Image"),
                ("NODE", "Node"),
                ("DESIRED STATE", "DesiredState"),
                ("CURRENT STATE", "CurrentState"),
                ("ERROR", "Error"),
                ("PORTS", "Ports"),
            ],
            json: serde_json::to_value(&tasks)?,
            id_field: "ID",
        };
        print!(
            "{}",
            listing
                .render(&self.format, self.quiet)
                .map_err(anyhow::Error::msg)?
        );
        Ok(())
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `5s ago`, `3m ago`, `2h ago`; empty when the time is unknown.
fn ago(since_ms: u64, now_ms: u64) -> String {
    if since_ms == 0 {
        return String::new();
    }
    let secs = now_ms.saturating_sub(since_ms) / 1000;
    match secs {
        0..=59 => format!(" {secs}s ago"),
        60..=3599 => format!(" {}m ago", secs / 60),
        3600..=172_799 => format!(" {}h ago", secs / 3600),
        _ => format!(" {}d ago", secs / 86_400),
    }
}

fn row(t: &TaskInfo, now: u64, no_trunc: bool) -> Row {
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
    let mut row = Row::new();
    row.insert("ID".into(), output::short_id(&t.id, no_trunc).into());
    row.insert("Name".into(), name.into());
    row.insert("Image".into(), t.image.clone().into());
    row.insert("Node".into(), t.node.clone().into());
    row.insert("DesiredState".into(), t.desired_state.clone().into());
    row.insert(
        "CurrentState".into(),
        format!("{state}{}", ago(t.since_ms, now)).into(),
    );
    row.insert("Error".into(), output::trunc(&t.error, 60, no_trunc).into());
    row.insert("Ports".into(), t.endpoint.join(", ").into());
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_count_up_from_since() {
        assert_eq!(ago(0, 5_000), "");
        assert_eq!(ago(1_000, 1_500), " 0s ago");
        assert_eq!(ago(1_000, 43_000), " 42s ago");
        assert_eq!(ago(1, 3_700_001), " 1h ago");
    }
}
