//! Choosing the replica for a new connection or request: round robin over the ready ones; a
//! sticky request to its own replica while that one is ready; and passive health: a replica that
//! refused a connection gets none for [`FAILURE_HOLD_MS`], or until it serves one again.

use std::collections::BTreeMap;

use super::routes::Backend;

/// How long a backend that failed a connection is left out. Its node's report normally says why
/// (the container exited, the node went down) well before this ends.
pub const FAILURE_HOLD_MS: u64 = 10_000;

/// The replica chosen, and whether it was the one the request's sticky cookie named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pick<'a> {
    /// Where to send it.
    pub backend: &'a Backend,
    /// The cookie named this backend: no need to set it again.
    pub sticky_hit: bool,
}

/// Round-robin position and recent failures of one published port.
#[derive(Clone, Debug, Default)]
pub struct Balancer {
    next: usize,
    /// Task id → until when (ms) it is left out.
    held: BTreeMap<String, u64>,
}

impl Balancer {
    /// Picks a backend among `backends`, skipping those already `tried` for this connection.
    /// `sticky` is the task id the client's cookie names. When every untried backend is held for
    /// a recent failure, one of them is tried all the same: a refused connection is no worse than
    /// none at all, and the failure may have been a blip.
    pub fn pick<'a>(
        &mut self,
        backends: &'a [Backend],
        sticky: Option<&str>,
        tried: &[String],
        now_ms: u64,
    ) -> Option<Pick<'a>> {
        let held = |b: &Backend| {
            self.held
                .get(&b.task_id)
                .is_some_and(|until| *until > now_ms)
        };
        let untried: Vec<&Backend> = backends
            .iter()
            .filter(|b| !tried.contains(&b.task_id))
            .collect();
        if let Some(id) = sticky {
            if let Some(b) = untried.iter().find(|b| b.task_id == id && !held(b)) {
                return Some(Pick {
                    backend: b,
                    sticky_hit: true,
                });
            }
        }
        let fresh: Vec<&Backend> = untried.iter().copied().filter(|b| !held(b)).collect();
        let pool = if fresh.is_empty() { untried } else { fresh };
        if pool.is_empty() {
            return None;
        }
        let backend = pool[self.next % pool.len()];
        self.next = self.next.wrapping_add(1);
        Some(Pick {
            backend,
            sticky_hit: false,
        })
    }

    /// `task_id` refused or dropped a connection: leave it out for a while.
    pub fn failed(&mut self, task_id: &str, now_ms: u64) {
        self.held
            .insert(task_id.to_string(), now_ms.saturating_add(FAILURE_HOLD_MS));
    }

    /// `task_id` accepted a connection: it is fine again.
    pub fn succeeded(&mut self, task_id: &str) {
        if !self.held.is_empty() {
            self.held.remove(task_id);
        }
    }

    /// Drops what is known of backends no longer in the route, so the map stays small.
    pub fn retain(&mut self, backends: &[Backend]) {
        self.held
            .retain(|id, _| backends.iter().any(|b| &b.task_id == id));
    }

    /// Whether `task_id` is left out at `now_ms`.
    pub fn is_held(&self, task_id: &str, now_ms: u64) -> bool {
        self.held.get(task_id).is_some_and(|until| *until > now_ms)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::identity::NodeId;

    fn backends(n: u8) -> Vec<Backend> {
        (1..=n)
            .map(|i| Backend {
                task_id: format!("t{i}"),
                node: NodeId(i as u128),
                addr: SocketAddr::from(([10, 0, 0, i], 30000)),
            })
            .collect()
    }

    fn ids(b: &mut Balancer, backends: &[Backend], n: usize, now: u64) -> Vec<String> {
        (0..n)
            .map(|_| {
                b.pick(backends, None, &[], now)
                    .unwrap()
                    .backend
                    .task_id
                    .clone()
            })
            .collect()
    }

    #[test]
    fn round_robin_spreads_evenly() {
        let all = backends(3);
        let mut b = Balancer::default();
        assert_eq!(
            ids(&mut b, &all, 6, 0),
            ["t1", "t2", "t3", "t1", "t2", "t3"]
        );
    }

    #[test]
    fn a_sticky_request_goes_to_its_replica_while_it_is_there() {
        let all = backends(3);
        let mut b = Balancer::default();
        for _ in 0..5 {
            let p = b.pick(&all, Some("t2"), &[], 0).unwrap();
            assert_eq!((p.backend.task_id.as_str(), p.sticky_hit), ("t2", true));
        }
        let gone = b.pick(&all, Some("t9"), &[], 0).unwrap();
        assert!(!gone.sticky_hit, "an unknown replica means a new cookie");
    }

    #[test]
    fn a_failed_backend_is_left_out_until_the_hold_ends_or_it_serves() {
        let all = backends(2);
        let mut b = Balancer::default();
        b.failed("t1", 1_000);
        assert_eq!(ids(&mut b, &all, 3, 1_001), ["t2", "t2", "t2"]);
        // Sticky clients of the failed replica move too.
        let p = b.pick(&all, Some("t1"), &[], 1_001).unwrap();
        assert_eq!((p.backend.task_id.as_str(), p.sticky_hit), ("t2", false));
        let after = ids(&mut b, &all, 2, 1_000 + FAILURE_HOLD_MS);
        assert!(after.contains(&"t1".to_string()), "{after:?}");
        b.failed("t1", 50_000);
        b.succeeded("t1");
        assert!(!b.is_held("t1", 50_001));
    }

    #[test]
    fn when_every_backend_failed_one_is_tried_anyway() {
        let all = backends(2);
        let mut b = Balancer::default();
        b.failed("t1", 0);
        b.failed("t2", 0);
        assert!(b.pick(&all, None, &[], 1).is_some());
    }

    #[test]
    fn retries_skip_what_was_tried_and_end() {
        let all = backends(2);
        let mut b = Balancer::default();
        let first = b.pick(&all, None, &[], 0).unwrap().backend.task_id.clone();
        let second = b
            .pick(&all, None, std::slice::from_ref(&first), 0)
            .unwrap()
            .backend
            .task_id
            .clone();
        assert_ne!(first, second);
        assert!(b.pick(&all, None, &[first, second], 0).is_none());
        assert!(b.pick(&[], None, &[], 0).is_none());
    }

    #[test]
    fn retain_forgets_backends_that_left() {
        let all = backends(2);
        let mut b = Balancer::default();
        b.failed("t1", 0);
        b.retain(&all[1..]);
        assert!(!b.is_held("t1", 1));
    }
}
