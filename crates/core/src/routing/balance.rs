//! Choosing the replica for a new connection or request: round robin over the ready ones; a
//! sticky request to its own replica while that one is ready; and passive health: a replica that
//! refused a connection gets none for [`FAILURE_HOLD_MS`], or until it serves one again. And
//! which HTTP requests may be sent to a second replica after the first failed them
//! ([`may_retry`]).

use std::collections::BTreeMap;

use super::routes::Backend;

/// How long a backend that failed a connection is left out. Its node's report normally says why
/// (the container exited, the node went down) well before this ends.
pub const FAILURE_HOLD_MS: u64 = 10_000;

/// Request methods that RFC 9110 (§9.2.2) defines as idempotent: sending one twice has the effect
/// of sending it once, so a request of these that its replica dropped before answering may be
/// sent to another. CONNECT, POST and PATCH (and any other method) are not: a replica may have
/// acted on the request before it failed, and a second one would act again.
pub const IDEMPOTENT_METHODS: [&str; 6] = ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"];

/// Largest request body kept to be sent again. A body must be held whole before the first
/// attempt to be sent twice, so a request with a longer one (or one of unknown length, sent in
/// chunks) is streamed to its replica and never retried; 64 KiB covers forms and API calls while
/// bounding what a connection can make the proxy hold.
pub const MAX_RETRY_BODY_BYTES: u64 = 64 * 1024;

/// Whether a request with `method` and a body of `body_len` bytes (None: not known up front) may
/// be sent to a second replica when the first closed or broke the connection before any byte of
/// an answer: an idempotent method, and a body of known length of at most
/// [`MAX_RETRY_BODY_BYTES`] (a request without a body has length 0). Methods are
/// case-sensitive (RFC 9110 §9.1).
pub fn may_retry(method: &str, body_len: Option<u64>) -> bool {
    IDEMPOTENT_METHODS.contains(&method) && body_len.is_some_and(|n| n <= MAX_RETRY_BODY_BYTES)
}

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
    fn only_idempotent_requests_with_small_known_bodies_are_retried() {
        for method in IDEMPOTENT_METHODS {
            assert!(may_retry(method, Some(0)), "{method}");
            assert!(may_retry(method, Some(MAX_RETRY_BODY_BYTES)), "{method}");
            assert!(
                !may_retry(method, Some(MAX_RETRY_BODY_BYTES + 1)),
                "{method}"
            );
            assert!(
                !may_retry(method, None),
                "{method}: chunked, unknown length"
            );
        }
        for method in ["POST", "PATCH", "CONNECT", "PROPFIND", "get", ""] {
            assert!(!may_retry(method, Some(0)), "{method}");
        }
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
