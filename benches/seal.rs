//! Gossip sealing benchmark: nanoseconds per seal and per open (tag check, decrypt and replay
//! window) of a 1,200-byte datagram, the size of a full foca packet, and of a 200-byte one, the
//! size of an idle probe. `cargo bench --bench seal`; under `cargo test --benches` it runs a
//! few iterations as a smoke test.

#[path = "shared/seal_cost.rs"]
mod seal_cost;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let iterations: u64 = if full { 200_000 } else { 1_000 };
    for bytes in [1_200, 200] {
        let cost = seal_cost::measure(bytes, iterations);
        println!(
            "seal {bytes} B: {:.0} ns/packet | open+replay check: {:.0} ns/packet | \
             forged refused: {:.0} ns/packet | overhead {} B | {iterations} iterations",
            cost.seal_ns,
            cost.open_ns,
            cost.forged_ns,
            shoal_core::seal::SEAL_OVERHEAD
        );
    }
}
