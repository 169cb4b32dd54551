//! The container engine's side of the node: an executor that carries out the node's actions
//! (removals first, so stop-first really stops first, then creates, a few at a time) and a
//! watcher that re-lists this node's containers on every engine event and periodically. Both only
//! move data: what to do is the node's decision.

use std::{sync::Arc, time::Duration};

use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{debug, warn, Instrument};

use super::shell::Command;
use crate::runtime::{
    docker::{Docker, NetworkError},
    Action, ContainerRuntime,
};
use shoal_core::{
    identity::NodeId, net::LocalNetwork, node::Input, runtime::DEFAULT_STOP_TIMEOUT_S,
};

/// Re-list (and inspect) every container at least this often. Engine events and the watcher's
/// cheap safety poll already wake a re-list on any change of state or health, so this only
/// bounds how stale details the poll cannot see (ports, exit codes) can get; every 2 s it cost
/// 5 % of a core with 100 replicas.
const RELIST_PERIOD: Duration = Duration::from_secs(30);
/// Engine calls that change containers (create and start, stop and remove) in flight at once. A
/// deploy of a hundred replicas then reaches the engine as a steady stream rather than one burst
/// that a busy engine answers with timeouts.
const ENGINE_CONCURRENCY: usize = 8;

/// Handle to the executor.
pub struct Engine {
    actions: mpsc::UnboundedSender<Vec<Action>>,
    networks: watch::Sender<Vec<LocalNetwork>>,
}

impl Engine {
    /// Starts the executor and the watcher for node `me` on Docker; listings, failures and
    /// create errors go to the node loop through `commands`.
    pub fn start(me: NodeId, docker: Docker, commands: mpsc::Sender<Command>) -> Self {
        let docker = Arc::new(docker);
        let (tx, rx) = mpsc::unbounded_channel();
        let (networks, networks_rx) = watch::channel(Vec::new());
        tokio::spawn(
            execute(me, docker.clone(), rx, networks_rx, commands.clone()).in_current_span(),
        );
        tokio::spawn(watch_engine(me, docker, commands).in_current_span());
        Engine {
            actions: tx,
            networks,
        }
    }

    /// Queues one round's actions.
    pub fn execute(&self, actions: Vec<Action>) {
        let _ = self.actions.send(actions);
    }

    /// The networks this node's engine must hold: made (or fixed) before the next creates.
    pub fn set_networks(&self, networks: Vec<LocalNetwork>) {
        self.networks.send_replace(networks);
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

async fn execute(
    me: NodeId,
    docker: Arc<Docker>,
    mut rx: mpsc::UnboundedReceiver<Vec<Action>>,
    mut networks: watch::Receiver<Vec<LocalNetwork>>,
    commands: mpsc::Sender<Command>,
) {
    let permits = Arc::new(Semaphore::new(ENGINE_CONCURRENCY));
    loop {
        let actions = tokio::select! {
            actions = rx.recv() => match actions {
                Some(actions) => actions,
                None => return,
            },
            changed = networks.changed() => {
                if changed.is_err() {
                    return;
                }
                Vec::new()
            }
        };
        if networks.has_changed().unwrap_or(false) || actions.is_empty() {
            let want = networks.borrow_and_update().clone();
            ensure_networks(me, &docker, &want).await;
        }
        if actions.is_empty() {
            continue;
        }
        let (removes, creates): (Vec<_>, Vec<_>) = actions
            .into_iter()
            .partition(|a| matches!(a, Action::Remove { .. }));
        let mut set = tokio::task::JoinSet::new();
        for action in removes {
            if let Action::Remove {
                container,
                stop_timeout_s,
                ..
            } = action
            {
                let docker = docker.clone();
                let permits = permits.clone();
                set.spawn(
                    async move {
                        let _permit = permits.acquire().await;
                        if let Err(e) = docker.remove(&container, stop_timeout_s).await {
                            warn!(container = %short(&container), error = %e,
                                "could not remove container");
                        }
                    }
                    .in_current_span(),
                );
            }
        }
        while set.join_next().await.is_some() {}
        for action in creates {
            if let Action::Create(task) = action {
                let docker = docker.clone();
                let commands = commands.clone();
                let permits = permits.clone();
                set.spawn(
                    async move {
                        let _permit = permits.acquire().await;
                        match docker.create(me, &task).await {
                            Ok(id) => debug!(container = %short(&id), service = %task.service,
                                slot = %task.slot, "replica started"),
                            Err(e) => {
                                let failed = Input::CreateFailed { task, error: e.0 };
                                let _ = commands.send(Command::Input(failed)).await;
                            }
                        }
                    }
                    .in_current_span(),
                );
            }
        }
        while set.join_next().await.is_some() {}
        relist(me, &docker, &commands).await;
    }
}

/// Brings the engine's networks to `want`. A bridge whose subnet moved (claims made apart in a
/// partition) cannot be renumbered while containers use it: those are removed (the node's
/// reconciler replaces them, on the renumbered network) and it is tried again.
async fn ensure_networks(me: NodeId, docker: &Docker, want: &[LocalNetwork]) {
    for problem in docker.reconcile_networks(me, want).await {
        match problem {
            NetworkError::InUse { ref containers, .. } => {
                warn!(error = %problem, "networks: replacing the replicas of a renumbered network");
                for container in containers {
                    let _ = docker.remove(container, DEFAULT_STOP_TIMEOUT_S).await;
                }
            }
            other => warn!(error = %other, "networks: the engine could not make one"),
        }
    }
    for problem in docker.reconcile_networks(me, want).await {
        warn!(error = %problem, "networks: the engine could not make one");
    }
}

async fn relist(me: NodeId, docker: &Docker, commands: &mpsc::Sender<Command>) {
    let input = match docker.list(me).await {
        Ok(list) => Input::Listed(list),
        Err(e) => Input::ListFailed(e.0),
    };
    let _ = commands.send(Command::Input(input)).await;
}

/// Re-lists on every engine event about this node's containers, and periodically.
async fn watch_engine(me: NodeId, docker: Arc<Docker>, commands: mpsc::Sender<Command>) {
    let (wake_tx, mut wake_rx) = mpsc::channel(64);
    let watcher = docker.clone();
    tokio::spawn(async move { watcher.watch(me, wake_tx).await }.in_current_span());
    loop {
        relist(me, &docker, &commands).await;
        tokio::select! {
            _ = tokio::time::sleep(RELIST_PERIOD) => {}
            Some(()) = wake_rx.recv() => {
                // Let a burst of events settle into one listing.
                tokio::time::sleep(Duration::from_millis(30)).await;
                while wake_rx.try_recv().is_ok() {}
            }
        }
        if commands.is_closed() {
            return;
        }
    }
}
