//! Ingress, the pure part: which published port leads to which replicas ([`routes`]), how a
//! replica is chosen for a connection or request ([`balance`]), sticky-session cookies
//! ([`sticky`]), and Traefik's HTTP routers ([`routers`], their rules in [`rule`]). The proxies
//! that carry the bytes live in `agent::ingress`.

pub mod balance;
pub mod routers;
pub mod routes;
pub mod rule;
pub mod sticky;
