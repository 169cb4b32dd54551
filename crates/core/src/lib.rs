//! # shoal-core
//!
//! The pure core of shoal: everything a node decides, with no IO. No tokio, no sockets, no
//! clocks, no Docker; every input is an argument and every effect a return value, so the
//! simulator runs a thousand nodes deterministically in one thread, and the agent is a thin shell
//! that carries bytes and calls in and out. This crate's manifest has no tokio, quinn, bollard or
//! hyper: the compiler keeps the line.
//!
//! # Layout
//!
//! - Membership: [`identity`] (who a node is), [`wire`] (the bounded decode path for every
//!   untrusted byte), [`codec`] and [`broadcast`] (foca's glue), [`membership`] (SWIM as a state
//!   machine), [`join`] (the join retry schedule).
//! - State: [`desired`] (the CRDT of stacks, services and node settings), [`replica`] (one
//!   node's copy of it and how it spreads), [`observed`] (what each node runs).
//! - Decisions: [`reconcile`] (placement, pacing, the per-node plan), [`routing`] (which
//!   replicas a published port leads to, sticky cookies), [`net`] (service networks: address
//!   allocation, routes and firewall rules, service DNS), [`runtime`] (the vocabulary of
//!   containers and the trait an engine implements).
//! - [`node`]: the whole node as one state machine, `handle(input, now) -> effects`, over all
//!   of the above; the agent and the simulator both drive it.
//! - [`api`]: the messages between the CLI and agents and between agents.
//! - Trust: [`seal`] (authenticated encryption and replay protection of gossip datagrams),
//!   [`trust`] (join tokens, the joiner's proof and the join messages), [`format`] (the
//!   versioned envelope of every persisted file).
//! - [`sim`]: the deterministic discrete-event simulator.

#![forbid(unsafe_code)]

pub mod api;
pub mod broadcast;
pub mod codec;
pub mod desired;
pub mod format;
pub mod identity;
pub mod join;
pub mod membership;
pub mod net;
pub mod node;
pub mod observed;
pub mod reconcile;
pub mod replica;
pub mod routing;
pub mod runtime;
pub mod seal;
pub mod sim;
pub mod trust;
pub mod wire;
