//! Reconciliation: the pure decisions every node takes from the same inputs (desired state,
//! membership, observed state), so that all nodes agree without a coordinator. Like `core`, this
//! module does no IO, reads no clock and uses no randomness: every input is an argument.

mod memo;
pub mod pacing;
pub mod placement;
pub mod plan;
pub mod rollout;
