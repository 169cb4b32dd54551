//! Desired state: what operators asked for (stacks, services, node settings), as CRDTs that every
//! node merges. Pure: no IO, no clock (callers pass timestamps in).

pub mod hlc;
pub mod spec;
pub mod state;
