//! Ingress, the pure part: which published port leads to which replicas ([`routes`]), how a
//! replica is chosen for a connection or request ([`balance`]), and sticky-session cookies
//! ([`sticky`]). The proxies that carry the bytes live in `agent::ingress`.

pub mod balance;
pub mod routes;
pub mod sticky;
