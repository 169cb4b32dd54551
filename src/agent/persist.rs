//! Writes the desired state to the data dir, in order, off the node loop.
//!
//! One task owns the file so that snapshots land in the order they were taken; a burst of remote
//! merges coalesces into one write. A local change waits for its own snapshot to be fsynced before
//! the CLI is told it is done.

use std::path::PathBuf;

use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::datadir::write_atomic;

/// A snapshot to write, and who waits for it to be durable.
pub struct Snapshot {
    /// The encoded state.
    pub bytes: Vec<u8>,
    /// Told once the bytes are on disk (or why not).
    pub durable: Option<oneshot::Sender<Result<(), String>>>,
}

/// Handle to the persister task.
#[derive(Clone)]
pub struct Persister {
    tx: mpsc::UnboundedSender<Snapshot>,
}

impl Persister {
    /// Starts the task writing to `path`.
    pub fn start(path: PathBuf) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(path, rx));
        Persister { tx }
    }

    /// Queues a snapshot; the returned receiver resolves once it is durable.
    pub fn write(&self, bytes: Vec<u8>) -> oneshot::Receiver<Result<(), String>> {
        let (durable, done) = oneshot::channel();
        let _ = self.tx.send(Snapshot {
            bytes,
            durable: Some(durable),
        });
        done
    }

    /// Queues a snapshot nobody waits for.
    pub fn write_later(&self, bytes: Vec<u8>) {
        let _ = self.tx.send(Snapshot {
            bytes,
            durable: None,
        });
    }
}

async fn run(path: PathBuf, mut rx: mpsc::UnboundedReceiver<Snapshot>) {
    while let Some(first) = rx.recv().await {
        // Only the newest queued snapshot matters; everyone queued so far waits for it.
        let mut latest = first.bytes;
        let mut waiting: Vec<_> = first.durable.into_iter().collect();
        while let Ok(next) = rx.try_recv() {
            latest = next.bytes;
            waiting.extend(next.durable);
        }
        let target = path.clone();
        let result = tokio::task::spawn_blocking(move || write_atomic(&target, &latest, true))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| format!("writing {}: {e}", path.display())));
        if let Err(e) = &result {
            warn!(error = %e, "could not persist the desired state");
        }
        for w in waiting {
            let _ = w.send(result.clone());
        }
    }
}
