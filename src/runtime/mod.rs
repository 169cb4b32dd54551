//! Container engines: the vocabulary and the trait live in the core
//! ([`shoal_core::runtime`]); the Docker implementation lives here, with the IO.

pub use shoal_core::runtime::*;

pub mod docker;
