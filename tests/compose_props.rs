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

/// YAML fragments that change how the characters after them are read: quotes, comments, block
/// and plain scalars, indentation, flow indicators, aliases, tags, escapes, odd line breaks.
/// (No anchors: an alias to its own enclosing node recurses without any brackets, which
/// yaml_serde's recursion limit stops; that is not what this test is about.)
fn fragment() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "[",
        "]",
        "{",
        "}",
        ",",
        "\"",
        "'",
        "''",
        "\\\"",
        "\\",
        "#",
        " #",
        " ",
        "  ",
        "\t",
        "\n",
        "\r\n",
        "\r",
        "\u{2028}",
        "- ",
        "-",
        ": ",
        ":",
        "? ",
        "?",
        "a",
        "b c",
        "k: ",
        "|",
        "|-\n",
        ">",
        "*x",
        "!t ",
        "!!str ",
        "---\n",
        "...\n",
        "%YAML 1.1\n",
        "@",
        "`",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// The shape check must never let libyaml see nesting it would pay for: whatever comes before
    /// and after 130 open brackets (twice the shape limit, past yaml_serde's own limit of 128),
    /// the file is refused by the shape check (or libyaml stops at a syntax error first), never
    /// by yaml_serde's recursion limit, which would mean libyaml scanned the nesting.
    #[test]
    fn deep_nesting_never_reaches_the_yaml_parser(
        before in prop::collection::vec(fragment(), 0..24),
        between in prop::collection::vec(fragment(), 0..3),
        open in prop::sample::select(vec!["[", "{", "[ ", "{a: ", "[\n", "- ", "-\n ", "? "]),
        after in prop::collection::vec(fragment(), 0..8),
    ) {
        let mut text = before.concat();
        for i in 0..130 {
            text.push_str(open);
            if i % 7 == 3 {
                text.push_str(&between.concat());
            }
        }
        text.push_str(&after.concat());
        let files = vec![("stack.yml".to_string(), text.clone())];
        if let Err(e) = parse_stack("shop", &files, &BTreeMap::new()) {
            let e = e.to_string();
            prop_assert!(!e.contains("recursion limit"), "{e}\n{text:?}");
        }
    }
}
