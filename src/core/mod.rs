//! The pure core: node identity, the wire format and SWIM membership. No tokio, no sockets, no
//! clocks, no Docker; every input is an argument and every effect a return value, so the
//! simulator can run a thousand nodes deterministically in one thread.

pub mod broadcast;
pub mod codec;
pub mod desired;
pub mod identity;
pub mod join;
pub mod membership;
pub mod observed;
pub mod replica;
pub mod wire;
