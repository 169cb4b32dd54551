//! Keeps the line between the pure core and the IO shell from eroding (design §8; foca's own
//! structure). The core is a crate of its own whose manifest has no tokio, quinn, bollard or
//! hyper, so the compiler refuses their use there; this test checks the manifest keeps it that
//! way, and that no core file reads a clock or touches the file system or a socket.

use std::path::Path;

fn check_dir(dir: &Path, offenders: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            check_dir(&path, offenders);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.trim_start();
                if code.starts_with("//") {
                    continue;
                }
                let crate_use = ["tokio", "quinn", "bollard"].iter().any(|c| {
                    code.contains(&format!("{c}::")) || code.contains(&format!("use {c}"))
                });
                let io_call = ["SystemTime::now", "Instant::now", "UdpSocket", "std::fs::"]
                    .iter()
                    .any(|call| code.contains(call));
                if crate_use || io_call {
                    offenders.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
    }
}

#[test]
fn pure_core_does_no_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/core");
    let mut offenders = Vec::new();
    check_dir(&root.join("src"), &mut offenders);
    assert!(
        offenders.is_empty(),
        "the pure core must not do IO or read clocks:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn core_manifest_has_no_io_crates() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/core/Cargo.toml");
    let text = std::fs::read_to_string(manifest).unwrap();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        for io in ["tokio", "quinn", "bollard", "hyper", "rustls"] {
            assert!(
                !line.trim_start().starts_with(io),
                "crates/core/Cargo.toml depends on {io}: the core must stay free of IO"
            );
        }
    }
}
