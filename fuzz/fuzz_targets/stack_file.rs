//! Arbitrary bytes as a stack file: `parse_stack` must return, never panic or run away.
//! Run from the repository root with `cargo fuzz run stack_file` (see src/compose/mod.rs docs).
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    let env: BTreeMap<String, String> = [("TAG", "1.0"), ("EMPTY", "")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // Split on a marker line so the fuzzer also exercises multi-file merging.
    let files: Vec<(String, String)> = text
        .split("\n#--\n")
        .enumerate()
        .map(|(i, part)| (format!("f{i}.yml"), part.to_string()))
        .collect();
    let _ = shoal::compose::parse_stack("fuzz", &files, &env);
});
