//! When to (re)announce to seeds: the join's retry schedule as a pure state machine, shared by the
//! agent and the simulator so that both retry the same way.

use std::{net::SocketAddr, time::Duration};

/// First retry delay; doubles per attempt up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest delay between attempts while the join is still being tried.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Delay between attempts once an optional join timed out and the node carries on alone.
pub const ALONE_RETRY: Duration = Duration::from_secs(10);

/// What the caller should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinStep {
    /// Announce to these addresses, then poll again after the delay.
    Announce(Vec<SocketAddr>, Duration),
    /// Connected: nothing more to do.
    Done,
    /// Required seeds never answered: the agent should exit with an error.
    Failed {
        /// Who was tried.
        targets: Vec<SocketAddr>,
        /// For how long.
        waited: Duration,
    },
}

/// A join in progress.
#[derive(Debug, Clone)]
pub struct JoinPlan {
    targets: Vec<SocketAddr>,
    required: bool,
    timeout: Duration,
    started_ms: Option<u64>,
    attempts: u32,
    alone: bool,
}

impl JoinPlan {
    /// `targets` are the `--join` seeds plus remembered peers; `required` when seeds were given
    /// explicitly, so that failing to reach any is an error rather than a quiet start alone.
    pub fn new(targets: Vec<SocketAddr>, required: bool, timeout: Duration) -> Self {
        JoinPlan {
            targets,
            required,
            timeout,
            started_ms: None,
            attempts: 0,
            alone: false,
        }
    }

    /// The addresses it tries; empty for the first node of a new cluster.
    pub fn targets(&self) -> &[SocketAddr] {
        &self.targets
    }

    /// Whether the node gave up waiting and runs alone (still retrying slowly).
    pub fn is_alone(&self) -> bool {
        self.alone
    }

    /// Decides the next step given whether the node is connected to any peer.
    pub fn poll(&mut self, now_ms: u64, connected: bool) -> JoinStep {
        if connected || self.targets.is_empty() {
            return JoinStep::Done;
        }
        let started = *self.started_ms.get_or_insert(now_ms);
        let waited = Duration::from_millis(now_ms.saturating_sub(started));
        if waited >= self.timeout && !self.alone {
            if self.required {
                return JoinStep::Failed {
                    targets: self.targets.clone(),
                    waited,
                };
            }
            self.alone = true;
        }
        self.attempts += 1;
        let delay = if self.alone {
            ALONE_RETRY
        } else {
            FIRST_BACKOFF
                .saturating_mul(1 << self.attempts.min(8).saturating_sub(1))
                .min(MAX_BACKOFF)
        };
        JoinStep::Announce(self.targets.clone(), delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:7946".parse().unwrap()
    }

    #[test]
    fn backs_off_then_fails_when_required() {
        let mut plan = JoinPlan::new(vec![addr()], true, Duration::from_secs(5));
        let mut now = 0;
        let mut delays = vec![];
        loop {
            match plan.poll(now, false) {
                JoinStep::Announce(_, d) => {
                    delays.push(d.as_millis() as u64);
                    now += d.as_millis() as u64;
                }
                JoinStep::Failed { waited, .. } => {
                    assert!(waited >= Duration::from_secs(5));
                    break;
                }
                JoinStep::Done => panic!("cannot be done"),
            }
        }
        assert_eq!(&delays[..4], &[250, 500, 1000, 2000]);
    }

    #[test]
    fn optional_join_carries_on_alone() {
        let mut plan = JoinPlan::new(vec![addr()], false, Duration::from_secs(1));
        plan.poll(0, false);
        assert_eq!(
            plan.poll(2_000, false),
            JoinStep::Announce(vec![addr()], ALONE_RETRY)
        );
        assert!(plan.is_alone());
        assert_eq!(plan.poll(12_000, true), JoinStep::Done);
    }

    #[test]
    fn nothing_to_join_is_done() {
        assert_eq!(
            JoinPlan::new(vec![], true, Duration::from_secs(1)).poll(0, false),
            JoinStep::Done
        );
    }
}
