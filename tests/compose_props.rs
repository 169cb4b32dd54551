//! `parse_stack` never panics: on arbitrary text, on YAML-ish noise, and on random mutations of a
//! real stack file (which reach much deeper into validation than noise does).

use std::collections::BTreeMap;

use proptest::prelude::*;
use shoal::compose::parse_stack;

const HA_STACK: &str = include_str!("fixtures/compose/ha-stack.yml");

fn run(text: String) {
    let env: BTreeMap<String, String> = [("TAG", "1"), ("LOG_LEVEL", "debug")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let files = vec![("stack.yml".to_string(), text)];
    match parse_stack("shop", &files, &env) {
        Ok(stack) => assert!(!stack.services.is_empty()),
        Err(e) => assert!(e.to_string().starts_with("stack.yml"), "{e}"),
    }
}

/// One edit of a file seen as characters or lines.
#[derive(Clone, Debug)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, text: String },
    Replace { at: usize, with: char },
    DuplicateLine { line: usize },
    SwapLines { a: usize, b: usize },
    Indent { line: usize, by: i8 },
    Truncate { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let noise = r##"[a-z0-9 :\-\[\]{}&*<>!$|'"#,.=?\n\t]{0,12}"##;
    prop_oneof![
        (any::<usize>(), 0usize..40).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), noise).prop_map(|(at, text)| Mutation::Insert { at, text }),
        (any::<usize>(), any::<char>()).prop_map(|(at, with)| Mutation::Replace { at, with }),
        any::<usize>().prop_map(|line| Mutation::DuplicateLine { line }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines { a, b }),
        (any::<usize>(), -4i8..4).prop_map(|(line, by)| Mutation::Indent { line, by }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn apply(text: &str, mutations: &[Mutation]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for m in mutations {
        let n = chars.len().max(1);
        match m {
            Mutation::Delete { at, len } => {
                let at = at % n;
                let end = (at + len).min(chars.len());
                chars.drain(at.min(end)..end);
            }
            Mutation::Insert { at, text } => {
                let at = at % (chars.len() + 1);
                chars.splice(at..at, text.chars());
            }
            Mutation::Replace { at, with } => {
                if !chars.is_empty() {
                    chars[at % n] = *with;
                }
            }
            Mutation::Truncate { at } => chars.truncate(at % n),
            Mutation::DuplicateLine { .. }
            | Mutation::SwapLines { .. }
            | Mutation::Indent { .. } => {
                let s: String = chars.iter().collect();
                let mut lines: Vec<String> = s.lines().map(str::to_string).collect();
                if lines.is_empty() {
                    continue;
                }
                let l = lines.len();
                match m {
                    Mutation::DuplicateLine { line } => {
                        let copy = lines[line % l].clone();
                        lines.insert(line % l, copy);
                    }
                    Mutation::SwapLines { a, b } => lines.swap(a % l, b % l),
                    Mutation::Indent { line, by } => {
                        let target = &mut lines[line % l];
                        if *by >= 0 {
                            target.insert_str(0, &" ".repeat(*by as usize));
                        } else {
                            let strip = target
                                .chars()
                                .take(by.unsigned_abs() as usize)
                                .take_while(|c| *c == ' ')
                                .count();
                            target.drain(..strip);
                        }
                    }
                    _ => {}
                }
                chars = (lines.join("\n") + "\n").chars().collect();
            }
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        run(text);
    }

    #[test]
    fn yaml_like_noise_never_panics(
        text in r##"(services:|  web:|    image: x|    deploy:|      replicas: |[a-z0-9 :\-\[\]{}&*<>!$|'"#,.=?\n]){0,60}"##
    ) {
        run(text);
    }

    #[test]
    fn mutated_stack_never_panics(mutations in prop::collection::vec(mutation(), 1..6)) {
        run(apply(HA_STACK, &mutations));
    }
}
