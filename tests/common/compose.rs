//! Stack-file parsing helpers shared by the compose tests (`#[path]`-included by each).
#![allow(dead_code)]

use std::collections::BTreeMap;

use shoal::compose::{parse_stack, ComposeError, StackFile};

pub fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect()
}

pub fn parse_with(text: &str, vars: &[(&str, &str)]) -> Result<StackFile, ComposeError> {
    parse_stack("shop", &files(&[("stack.yml", text)]), &env(vars))
}

pub fn parse(text: &str) -> Result<StackFile, ComposeError> {
    parse_with(text, &[])
}

/// Asserts that parsing fails with a message starting `stack.yml:LINE:` and containing every
/// needle; returns the message.
#[track_caller]
pub fn fails_at(text: &str, line: usize, needles: &[&str]) -> String {
    let message = match parse(text) {
        Ok(s) => panic!("expected an error, got {s:#?}"),
        Err(e) => e.to_string(),
    };
    let prefix = format!("stack.yml:{line}:");
    assert!(
        message.starts_with(&prefix),
        "expected {prefix:?} at the start of: {message}"
    );
    for needle in needles {
        assert!(
            message.contains(needle),
            "expected {needle:?} in: {message}"
        );
    }
    message
}
