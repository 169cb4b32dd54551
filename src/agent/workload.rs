//! The agent's side of claiming and healing: it lists this node's containers, runs the reconciler
//! over the current desired, membership and observed state, hands the actions to an executor task
//! that talks to the container engine, and publishes this node's report.
//!
//! The node loop owns everything here; the executor and the engine watcher only move data.

use std::{collections::HashSet, sync::Arc, time::Duration};

use tokio::sync::mpsc;
use tracing::{debug, info, warn, Instrument};

use super::node::{now_ms, Command};
use crate::runtime::{docker::Docker, Action, ContainerRuntime, LocalContainer, TaskSpec};
use shoal_core::{
    identity::NodeId,
    membership::NodeView,
    observed::{NodeReport, ObservedState},
    reconcile::plan::{node_facts, Inputs, Plan, Reconciler},
    replica::Replica,
};

/// How long a replica gets to stop gracefully before it is killed.
pub const STOP_TIMEOUT_S: u64 = 10;
/// Re-list (and inspect) every container at least this often. Engine events and the watcher's
/// cheap safety poll already wake a re-list on any change of state or health, so this only
/// bounds how stale details the poll cannot see (ports, exit codes) can get; every 2 s it cost
/// 5 % of a core with 100 replicas.
const RELIST_PERIOD: Duration = Duration::from_secs(30);

/// What the executor reports back to the node loop.
pub enum Outcome {
    /// A create failed; the container does not exist.
    CreateFailed {
        /// The task that failed.
        task: Box<TaskSpec>,
        /// The engine's message.
        error: String,
    },
    /// The engine's containers of this node, freshly listed.
    Listed(Vec<LocalContainer>),
    /// Listing failed (engine down).
    ListFailed(String),
}

/// This node's replicas and the bookkeeping around them.
pub struct Workload {
    /// Restart bookkeeping and history.
    pub reconciler: Reconciler,
    /// Last listing of this node's containers; None until the first listing (or without an engine).
    pub containers: Option<Vec<LocalContainer>>,
    /// Every node's latest report.
    pub observed: ObservedState,
    /// Sequence number of this node's last report.
    pub seq: u64,
    /// This node's last published report.
    pub published: Option<NodeReport>,
    /// Containers being removed, so a slow stop is not asked for twice.
    pub removing: HashSet<String>,
    /// Where actions go; None when the node runs no containers (`--runtime none`).
    pub executor: Option<mpsc::UnboundedSender<Vec<Action>>>,
    /// Why the engine is unusable, if it is.
    pub engine_error: Option<String>,
}

impl Workload {
    /// A workload without an engine: the node takes part in membership and desired state but
    /// owns no replicas (placement must skip it: see `runs_containers`).
    pub fn disabled() -> Self {
        Workload {
            reconciler: Reconciler::default(),
            containers: None,
            observed: ObservedState::default(),
            seq: 0,
            published: None,
            removing: HashSet::new(),
            executor: None,
            engine_error: Some("this agent runs no containers (--runtime none)".into()),
        }
    }

    /// Starts the executor and the engine watcher for node `me` on Docker.
    pub fn docker(me: NodeId, docker: Docker, outcomes: mpsc::Sender<Command>) -> Self {
        let docker = Arc::new(docker);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(execute(me, docker.clone(), rx, outcomes.clone()).in_current_span());
        tokio::spawn(watch(me, docker, outcomes).in_current_span());
        Workload {
            executor: Some(tx),
            engine_error: None,
            ..Workload::disabled()
        }
    }

    /// Runs one reconciliation round and sends its actions to the executor. Returns the new report
    /// to publish, if it changed.
    pub fn reconcile(
        &mut self,
        me: NodeId,
        generation: u64,
        views: &[NodeView],
        desired: &Replica,
    ) -> (Option<NodeReport>, Option<u64>) {
        let Some(containers) = &self.containers else {
            return (None, None);
        };
        let facts = node_facts(views, desired.state());
        let plan: Plan = self.reconciler.plan(&Inputs {
            me,
            now_ms: now_ms(),
            services: desired.services(),
            nodes: &facts,
            observed: &self.observed,
            local: containers,
        });
        let actions: Vec<Action> = plan
            .actions
            .into_iter()
            .filter(|a| match a {
                Action::Remove { container, .. } => self.removing.insert(container.clone()),
                Action::Create(_) => true,
            })
            .collect();
        if !actions.is_empty() {
            for a in &actions {
                match a {
                    Action::Create(t) => {
                        info!(service = %t.service, slot = %t.slot, task = %t.task_id, action = "create", "starting replica")
                    }
                    Action::Remove { container, reason } => {
                        info!(container = %short(container), action = "remove", %reason, "stopping replica")
                    }
                }
            }
            if let Some(tx) = &self.executor {
                let _ = tx.send(actions);
            }
        }
        let changed = self
            .published
            .as_ref()
            .is_none_or(|r| r.tasks != plan.tasks || r.history != plan.history);
        let report = changed.then(|| {
            self.seq += 1;
            let report = NodeReport {
                node: me,
                generation,
                seq: self.seq,
                tasks: plan.tasks,
                history: plan.history,
            };
            self.observed.merge(report.clone());
            self.published = Some(report.clone());
            report
        });
        (report, plan.wake_at_ms)
    }

    /// Takes in a fresh listing; drops finished removals from the in-progress set.
    pub fn listed(&mut self, containers: Vec<LocalContainer>) {
        let ids: HashSet<&str> = containers.iter().map(|c| c.id.as_str()).collect();
        self.removing.retain(|id| ids.contains(id.as_str()));
        self.containers = Some(containers);
        self.engine_error = None;
    }

    /// A create failed: the reconciler backs off before trying again.
    pub fn create_failed(&mut self, task: &TaskSpec, error: String) {
        warn!(service = %task.service, slot = %task.slot, task = %task.task_id, %error, "replica failed to start");
        self.reconciler
            .create_failed(&task.service, &task.slot, error, now_ms(), &task.spec);
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Engine calls that change containers (create and start, stop and remove) in flight at once. A
/// deploy of a hundred replicas then reaches the engine as a steady stream rather than one burst
/// that a busy engine answers with timeouts.
const ENGINE_CONCURRENCY: usize = 8;

/// Carries out actions: removals first (so stop-first updates really stop first), then creates,
/// each group a few at a time.
async fn execute(
    me: NodeId,
    docker: Arc<Docker>,
    mut rx: mpsc::UnboundedReceiver<Vec<Action>>,
    outcomes: mpsc::Sender<Command>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(ENGINE_CONCURRENCY));
    while let Some(actions) = rx.recv().await {
        let (removes, creates): (Vec<_>, Vec<_>) = actions
            .into_iter()
            .partition(|a| matches!(a, Action::Remove { .. }));
        let mut set = tokio::task::JoinSet::new();
        for action in removes {
            if let Action::Remove { container, .. } = action {
                let docker = docker.clone();
                let permits = permits.clone();
                set.spawn(async move {
                    let _permit = permits.acquire().await;
                    if let Err(e) = docker.remove(&container, STOP_TIMEOUT_S).await {
                        warn!(container = %short(&container), error = %e, "could not remove container");
                    }
                }.in_current_span());
            }
        }
        while set.join_next().await.is_some() {}
        for action in creates {
            if let Action::Create(task) = action {
                let docker = docker.clone();
                let outcomes = outcomes.clone();
                let permits = permits.clone();
                set.spawn(async move {
                    let _permit = permits.acquire().await;
                    match docker.create(me, &task).await {
                        Ok(id) => debug!(container = %short(&id), service = %task.service, slot = %task.slot, "replica started"),
                        Err(e) => {
                            let _ = outcomes
                                .send(Command::Workload(Outcome::CreateFailed { task, error: e.0 }))
                                .await;
                        }
                    }
                }.in_current_span());
            }
        }
        while set.join_next().await.is_some() {}
        relist(me, &docker, &outcomes).await;
    }
}

async fn relist(me: NodeId, docker: &Docker, outcomes: &mpsc::Sender<Command>) {
    let outcome = match docker.list(me).await {
        Ok(list) => Outcome::Listed(list),
        Err(e) => Outcome::ListFailed(e.0),
    };
    let _ = outcomes.send(Command::Workload(outcome)).await;
}

/// Re-lists on every engine event about this node's containers, and periodically.
async fn watch(me: NodeId, docker: Arc<Docker>, outcomes: mpsc::Sender<Command>) {
    let (wake_tx, mut wake_rx) = mpsc::channel(64);
    let watcher = docker.clone();
    tokio::spawn(async move { watcher.watch(me, wake_tx).await }.in_current_span());
    loop {
        relist(me, &docker, &outcomes).await;
        tokio::select! {
            _ = tokio::time::sleep(RELIST_PERIOD) => {}
            Some(()) = wake_rx.recv() => {
                // Let a burst of events settle into one listing.
                tokio::time::sleep(Duration::from_millis(30)).await;
                while wake_rx.try_recv().is_ok() {}
            }
        }
        if outcomes.is_closed() {
            return;
        }
    }
}
