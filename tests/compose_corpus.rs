//! The stack-file corpus in `tests/fixtures/compose/{refused,accepted}`: each file says in its
//! leading comments what parsing it must give.
//!
//! - `refused/NAME.yml` starts with `# error: LINE:COL: MESSAGE`: parsing must fail with exactly
//!   `NAME.yml:LINE:COL: MESSAGE`.
//! - `accepted/NAME.yml` must parse; its `# warning: LINE:COL: MESSAGE` lines, if any, are exactly
//!   the warnings, in order (`NAME.yml:` in front of each).
//!
//! Files are parsed as stack `shop` with an empty environment, as `stack deploy` would with
//! nothing exported.

use std::{collections::BTreeMap, fs, path::Path};

use shoal::compose::parse_stack;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/compose");

fn corpus(sub: &str) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = fs::read_dir(Path::new(DIR).join(sub))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read_to_string(&p).unwrap())
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {sub}");
    files
}

/// The values of `# KEY: ...` comment lines, prefixed with the file name.
fn expected(name: &str, text: &str, key: &str) -> Vec<String> {
    let tag = format!("# {key}: ");
    text.lines()
        .filter_map(|l| l.strip_prefix(&tag))
        .map(|rest| format!("{name}:{rest}"))
        .collect()
}

fn parse(name: &str, text: &str) -> Result<shoal::compose::StackFile, String> {
    let files = vec![(name.to_string(), text.to_string())];
    parse_stack("shop", &files, &BTreeMap::new()).map_err(|e| e.to_string())
}

#[test]
fn refused_files_fail_at_their_line() {
    let mut wrong = Vec::new();
    for (name, text) in corpus("refused") {
        let want = expected(&name, &text, "error");
        assert_eq!(want.len(), 1, "{name}: needs exactly one `# error:` line");
        match parse(&name, &text) {
            Ok(_) => wrong.push(format!("{name}: accepted")),
            Err(e) if e != want[0] => {
                wrong.push(format!("{name}:\n  got  {e}\n  want {}", want[0]))
            }
            Err(_) => {}
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[test]
fn accepted_files_parse_with_their_warnings() {
    let mut wrong = Vec::new();
    for (name, text) in corpus("accepted") {
        let want = expected(&name, &text, "warning");
        match parse(&name, &text) {
            Err(e) => wrong.push(format!("{name}: refused: {e}")),
            Ok(stack) if stack.warnings != want => wrong.push(format!(
                "{name}:\n  got  {:#?}\n  want {want:#?}",
                stack.warnings
            )),
            Ok(_) => {}
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}
