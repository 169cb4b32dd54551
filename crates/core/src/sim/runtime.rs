//! A container engine in memory, behind the same [`ContainerRuntime`] trait the agent's Docker
//! implementation provides: containers with endpoints, creates that fail, replicas that take a
//! while to become healthy or never do, containers that crash.
//!
//! Its methods are `async` because the trait's are; nothing in here ever waits, so the simulator
//! polls each call once ([`now`]).

use std::{
    cell::RefCell,
    collections::BTreeSet,
    future::Future,
    net::{IpAddr, SocketAddr},
    pin::pin,
    task::{Context, Poll, Waker},
};

use crate::{
    desired::spec::PublishMode,
    identity::NodeId,
    observed::{Endpoint, Health},
    runtime::{ContainerRuntime, ContainerStatus, LocalContainer, RuntimeError, TaskSpec},
};

/// Runs a future that never waits to completion (the fake runtime's calls).
pub fn now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a simulated runtime call waited"),
    }
}

/// How the fake engine treats images.
#[derive(Clone, Debug, Default)]
pub struct FakeImages {
    /// Images the engine does not have: creating from them fails, as Docker's "no such image".
    pub missing: BTreeSet<String>,
    /// Images whose replicas start but never pass their healthcheck.
    pub never_healthy: BTreeSet<String>,
    /// Images whose replicas exit with an error shortly after they start.
    pub crashing: BTreeSet<String>,
}

/// One node's engine.
pub struct FakeRuntime {
    ip: IpAddr,
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    now_ms: u64,
    containers: Vec<LocalContainer>,
    next_id: u64,
    next_port: u16,
    images: FakeImages,
    /// Containers created since the simulator last asked, for it to schedule their health.
    created: Vec<String>,
}

impl FakeRuntime {
    /// An engine on a host reached at `ip`.
    pub fn new(ip: IpAddr) -> Self {
        FakeRuntime {
            ip,
            state: RefCell::new(State {
                next_port: 30_000,
                ..State::default()
            }),
        }
    }

    /// Sets the engine's clock (creation and exit times).
    pub fn set_now(&self, now_ms: u64) {
        self.state.borrow_mut().now_ms = now_ms;
    }

    /// Sets how images behave.
    pub fn set_images(&self, images: FakeImages) {
        self.state.borrow_mut().images = images;
    }

    /// Containers created since the last call, with their images.
    pub fn take_created(&self) -> Vec<(String, String)> {
        let mut s = self.state.borrow_mut();
        let created = std::mem::take(&mut s.created);
        created
            .into_iter()
            .filter_map(|id| {
                s.containers
                    .iter()
                    .find(|c| c.id == id)
                    .map(|c| (id, c.image.clone()))
            })
            .collect()
    }

    /// How the engine treats `image`.
    pub fn behaviour(&self, image: &str) -> (bool, bool) {
        let s = self.state.borrow();
        (
            s.images.never_healthy.contains(image),
            s.images.crashing.contains(image),
        )
    }

    /// Every container, any node's (the engine is the host's).
    pub fn containers(&self) -> Vec<LocalContainer> {
        self.state.borrow().containers.clone()
    }

    /// Sets the health of a running container; false if it is not running (any more).
    pub fn set_health(&self, id: &str, health: Health) -> bool {
        let mut s = self.state.borrow_mut();
        match s
            .containers
            .iter_mut()
            .find(|c| c.id == id && c.status == ContainerStatus::Running)
        {
            Some(c) => {
                c.health = health;
                true
            }
            None => false,
        }
    }

    /// Makes a running container exit with `code`; false if it was not running.
    pub fn exit(&self, id: &str, code: i64, error: Option<String>) -> bool {
        let mut s = self.state.borrow_mut();
        let now = s.now_ms;
        match s
            .containers
            .iter_mut()
            .find(|c| c.id == id && c.status == ContainerStatus::Running)
        {
            Some(c) => {
                c.status = ContainerStatus::Exited {
                    code,
                    finished_ms: now,
                    error,
                };
                c.health = Health::None;
                c.endpoints.clear();
                true
            }
            None => false,
        }
    }

    /// The host went down: every container is left exited, as Docker keeps them.
    pub fn host_down(&self) {
        let ids: Vec<String> = self.containers().into_iter().map(|c| c.id).collect();
        for id in ids {
            self.exit(&id, 137, Some("node crashed".into()));
        }
    }
}

impl ContainerRuntime for FakeRuntime {
    async fn list(&self, node: NodeId) -> Result<Vec<LocalContainer>, RuntimeError> {
        let _ = node;
        Ok(self.containers())
    }

    async fn create(&self, _node: NodeId, task: &TaskSpec) -> Result<String, RuntimeError> {
        let mut s = self.state.borrow_mut();
        if s.images.missing.contains(&task.spec.image) {
            return Err(RuntimeError(format!(
                "no such image: {} (images must be on the node; shoal never pulls)",
                task.spec.image
            )));
        }
        s.next_id += 1;
        let id = format!("c{:x}-{}", s.next_id, task.task_id);
        let mut endpoints = Vec::new();
        for port in &task.spec.ports {
            if port.mode == PublishMode::Ingress {
                s.next_port = s.next_port.checked_add(1).unwrap_or(30_000);
                endpoints.push(Endpoint {
                    port: port.target,
                    protocol: port.protocol,
                    addr: SocketAddr::new(self.ip, s.next_port),
                });
            }
        }
        let container = LocalContainer {
            id: id.clone(),
            service: task.service.clone(),
            slot: task.slot,
            task_id: task.task_id.clone(),
            version: task.version,
            force: task.force,
            image: task.spec.image.clone(),
            status: ContainerStatus::Running,
            health: Health::Starting,
            created_ms: s.now_ms,
            endpoints,
            addresses: vec![],
        };
        s.containers.push(container);
        s.created.push(id.clone());
        Ok(id)
    }

    async fn remove(&self, container: &str, _stop_timeout_s: u64) -> Result<(), RuntimeError> {
        let mut s = self.state.borrow_mut();
        let before = s.containers.len();
        s.containers.retain(|c| c.id != container);
        if s.containers.len() == before {
            return Err(RuntimeError(format!("no such container: {container}")));
        }
        Ok(())
    }
}
