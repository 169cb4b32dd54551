//! Writes the desired state to the data dir, in order, off the node loop.
//!
//! One task owns the file so that snapshots land in the order they were taken; a burst of remote
//! merges coalesces into one write. The node hears back which snapshot is durable
//! ([`Input::Persisted`]), and answers a CLI change only once its snapshot is.

use std::path::PathBuf;

use tokio::sync::mpsc;

use super::{datadir::write_atomic, shell::Command};
use shoal_core::node::{Input, Persist};

/// Handle to the persister task.
#[derive(Clone)]
pub struct Persister {
    tx: mpsc::UnboundedSender<Persist>,
}

impl Persister {
    /// Starts the task writing to `path`; results go back to the node through `commands`.
    pub fn start(path: PathBuf, commands: mpsc::Sender<Command>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(path, rx, commands));
        Persister { tx }
    }

    /// Queues a snapshot.
    pub fn write(&self, snapshot: Persist) {
        let _ = self.tx.send(snapshot);
    }
}

async fn run(
    path: PathBuf,
    mut rx: mpsc::UnboundedReceiver<Persist>,
    commands: mpsc::Sender<Command>,
) {
    while let Some(first) = rx.recv().await {
        // Only the newest queued snapshot matters: it holds everything the older ones did.
        let mut latest = first;
        while let Ok(next) = rx.try_recv() {
            latest = next;
        }
        let target = path.clone();
        let bytes = latest.desired;
        let result = tokio::task::spawn_blocking(move || write_atomic(&target, &bytes, true))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| format!("writing {}: {e}", path.display())));
        let done = Input::Persisted {
            seq: latest.seq,
            result,
        };
        if commands.send(Command::Input(done)).await.is_err() {
            return;
        }
    }
}
