//! # shoal
//!
//! A masterless container orchestrator. Every node runs the same agent; there is no manager, no
//! leader and no quorum. Membership is SWIM gossip (foca); desired state is CRDTs merged on every
//! node; each node computes the same deterministic placement and runs what it owns.
//!
//! # Layout
//!
//! - `shoal-core` (`crates/core`): the pure core, a crate of its own so the compiler keeps IO
//!   out of it: membership, desired and observed state, placement, reconciliation, routing
//!   decisions, the API messages and the deterministic simulator.
//! - [`agent`]: the tokio shell that feeds the core from real sockets and timers: UDP gossip,
//!   QUIC between nodes, the local API socket, the data dir, the ingress proxies.
//! - [`runtime`]: the Docker implementation of the core's container runtime trait.
//! - [`compose`]: stack files (compose v3) to service definitions, with precise errors.
//! - [`cli`]: the `shoal` command line, one module per verb group.

#![forbid(unsafe_code)]

pub mod agent;
pub mod cli;
pub mod compose;
pub mod runtime;
