//! # shoal
//!
//! A masterless container orchestrator. Every node runs the same agent; there is no manager, no
//! leader and no quorum. Membership is SWIM gossip (foca); desired state is CRDTs merged on every
//! node; each node computes the same deterministic placement and runs what it owns.
//!
//! # Layout
//!
//! - [`core`]: pure node logic — identities, the wire format, SWIM membership. No IO.
//! - [`sim`]: a deterministic discrete-event simulator that runs many cores in one thread over a
//!   virtual clock and a lossy, partitionable network.
//! - [`ingress`]: the routing table of published ports, backend choice and sticky cookies.
//! - [`api`]: the messages the CLI and agents exchange (versioned, size-limited).
//! - [`agent`]: the tokio shell that feeds the core from real sockets and timers: UDP gossip,
//!   QUIC between nodes, the local API socket, the data dir.
//! - [`cli`]: the `shoal` command line, one module per verb group.
//!
//! The rule that keeps this testable: `core` (and later `reconcile`) never imports tokio, quinn
//! or bollard; a test enforces it.

#![forbid(unsafe_code)]

pub mod agent;
pub mod api;
pub mod cli;
pub mod compose;
pub mod core;
pub mod ingress;
pub mod reconcile;
pub mod runtime;
pub mod sim;
