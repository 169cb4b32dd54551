//! Malformed stack files through `shoal::compose::parse_stack`: every error must name the file,
//! the line (and column) and the key path or offending key, and hostile files must fail fast.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[path = "common/compose.rs"]
mod helpers;

use helpers::{fails_at, files, parse, parse_with};
use shoal::compose::{parse_stack, ComposeError};

#[test]
fn error_in_second_file_names_it() {
    let list = files(&[
        ("base.yml", "services:\n  web:\n    image: nginx\n"),
        (
            "prod.yml",
            "services:\n  web:\n    deploy:\n      replicas: many\n",
        ),
    ]);
    let e = parse_stack("shop", &list, &BTreeMap::new())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("prod.yml:4:7: services.web.deploy.replicas: "),
        "{e}"
    );

    let list = files(&[
        ("base.yml", "services:\n  web:\n    image: nginx\n"),
        ("prod.yml", "services:\n  web:\n    ports: [\"80:http\"]\n"),
    ]);
    let e = parse_stack("shop", &list, &BTreeMap::new())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("prod.yml:3:13: services.web.ports[0]: "),
        "{e}"
    );
}

#[test]
fn wrong_types() {
    let base = "services:\n  web:\n    image: nginx\n";
    fails_at(
        &format!("{base}    deploy:\n      replicas: three\n"),
        5,
        &[
            "stack.yml:5:7: services.web.deploy.replicas: invalid type: string \"three\"",
            "non-negative integer",
        ],
    );
    fails_at(
        &format!("{base}    deploy:\n      replicas: -1\n"),
        5,
        &["services.web.deploy.replicas", "-1"],
    );
    fails_at(
        &format!("{base}    ports: 8080\n"),
        4,
        &["services.web.ports", "invalid type"],
    );
    fails_at(
        &format!("{base}    environment: 3\n"),
        4,
        &["services.web.environment", "list or a mapping"],
    );
    fails_at(
        &format!("{base}    deploy:\n      mode: replicatedd\n"),
        5,
        &["services.web.deploy.mode", "replicatedd"],
    );
    fails_at(
        &format!("{base}    deploy:\n      update_config:\n        order: last\n"),
        6,
        &["services.web.deploy.update_config.order", "start-first"],
    );
    fails_at(
        "services:\n  web:\n    image: [nginx]\n",
        3,
        &["services.web.image", "invalid type: sequence"],
    );
    fails_at(
        "services: [web]\n",
        1,
        &["services", "invalid type: sequence"],
    );
    fails_at("- just\n- a list\n", 1, &["top level must be a mapping"]);
}

#[test]
fn bad_values() {
    let base = "services:\n  web:\n    image: nginx\n";
    fails_at(
        &format!("{base}    healthcheck:\n      interval: 10 parsecs\n"),
        5,
        &["services.web.healthcheck.interval", "parsecs"],
    );
    fails_at(
        &format!("{base}    deploy:\n      restart_policy:\n        delay: 5\n"),
        6,
        &["services.web.deploy.restart_policy.delay", "missing unit"],
    );
    fails_at(
        &format!(
            "{base}    deploy:\n      resources:\n        limits:\n          memory: 1 gallon\n"
        ),
        7,
        &["services.web.deploy.resources.limits.memory", "gallon"],
    );
    fails_at(
        &format!("{base}    deploy:\n      resources:\n        limits:\n          cpus: half\n"),
        7,
        &["services.web.deploy.resources.limits.cpus", "half"],
    );
    fails_at(
        &format!("{base}    ports:\n      - \"localhost:8080:80\"\n"),
        5,
        &["services.web.ports[0]", "not an IP address"],
    );
    fails_at(
        &format!("{base}    ports:\n      - target: 80\n        published: 99999\n"),
        6,
        &["services.web.ports[0].published", "out of range"],
    );
    fails_at(
        &format!("{base}    ports: ['80:80', '80:81']\n"),
        4,
        &["services.web.ports[1]", "published twice"],
    );
    fails_at(
        &format!("{base}    healthcheck:\n      test: [\"RUN\", \"x\"]\n"),
        5,
        &["services.web.healthcheck.test", "CMD"],
    );
    fails_at(
        &format!("{base}    command: echo 'unclosed\n"),
        4,
        &["services.web.command", "unclosed single quote"],
    );
    fails_at(
        &format!("{base}    networks: [nowhere]\n"),
        4,
        &["services.web.networks", "nowhere", "not declared"],
    );
    fails_at(
        &format!("{base}    volumes: ['data:/data']\n"),
        4,
        &["services.web.volumes[0]", "\"data\" is not declared"],
    );
    fails_at(
        &format!("{base}    volumes: ['data:relative']\nvolumes:\n  data:\n"),
        4,
        &["services.web.volumes[0]", "absolute path"],
    );
    fails_at(
        &format!("{base}    deploy:\n      mode: global\n      replicas: 2\n"),
        6,
        &["services.web.deploy.replicas", "global"],
    );
    fails_at(
        &format!("{base}    deploy:\n      update_config:\n        max_failure_ratio: 1.5\n"),
        6,
        &["max_failure_ratio", "more than 1"],
    );
    fails_at(
        &format!("{base}    deploy:\n      labels:\n        shoal.ingress.sticky: maybe\n"),
        5,
        &[
            "services.web.deploy.labels",
            "shoal.ingress.sticky",
            "boolean",
        ],
    );
}

#[test]
fn bad_constraints() {
    let with = |c: &str| {
        format!(
            "services:\n  web:\n    image: nginx\n    deploy:\n      placement:\n        constraints:\n          - node.role == manager\n          - {c}\n"
        )
    };
    fails_at(
        &with("node.labels.zone = a"),
        8,
        &[
            "services.web.deploy.placement.constraints[1]",
            "\"node.labels.zone = a\"",
            "KEY == VALUE",
        ],
    );
    fails_at(
        &with("foo == bar"),
        8,
        &["constraints[1]", "unknown key \"foo\""],
    );
    let text = "services:\n  web:\n    image: nginx\n    deploy:\n      placement:\n        preferences:\n          - spread: node.hostname\n";
    fails_at(
        text,
        7,
        &[
            "services.web.deploy.placement.preferences[0].spread",
            "node.labels.KEY",
        ],
    );
}

#[test]
fn structure_errors() {
    fails_at(
        "version: '3'\nservics:\n  web:\n    image: nginx\n",
        2,
        &["servics", "unknown top-level key"],
    );
    fails_at(
        "services:\n  web:\n    command: echo\n  db:\n    image: pg\n",
        2,
        &["services.web.image", "missing", "image"],
    );
    fails_at("services: {}\n", 1, &["services", "at least one service"]);
    fails_at("version: '3'\n", 1, &["services", "at least one service"]);
    fails_at("", 1, &["top level must be a mapping"]);
    fails_at(
        "services:\n  web!:\n    image: nginx\n",
        2,
        &["services.web!", "invalid service name"],
    );
    fails_at(
        "services:\n  web:\n    image: a\n  web:\n    image: b\n",
        4,
        &["duplicate key \"web\""],
    );
    fails_at(
        "services:\n  web:\n    image: !reset nginx\n",
        3,
        &["tags", "!reset"],
    );
    let e = parse_stack("bad name", &files(&[("s.yml", "x")]), &BTreeMap::new()).unwrap_err();
    assert!(matches!(e, ComposeError::StackName { .. }), "{e}");
    let e = parse_stack("shop", &[], &BTreeMap::new()).unwrap_err();
    assert_eq!(e, ComposeError::NoFiles);
}

#[test]
fn yaml_syntax_errors() {
    fails_at(
        "services:\n  web:\n    image: nginx\n   ports: ['80']\n",
        4,
        &["did not find expected key"],
    );
    // libyaml notices at the end of the file; the start of the quote is in the message.
    fails_at(
        "services:\n  web:\n    image: \"nginx\n    ports: ['80']\n",
        5,
        &["while scanning a quoted scalar at line 3 column 12"],
    );
    fails_at("services:\n  web:\n    image: nginx\n  - oops\n", 4, &[]);
    fails_at(
        "services:\n  web:\n    image: *undefined\n",
        3,
        &["unknown anchor"],
    );
    let e = parse("services: {}\n---\nservices: {}\n")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("stack.yml"), "{e}");
    assert!(e.contains("more than one document"), "{e}");
    let deep = format!(
        "services:\n  web:\n    image: nginx\n    labels: {}{}\n",
        "[".repeat(200),
        "]".repeat(200)
    );
    fails_at(
        &deep,
        4,
        &["stack.yml:4:74: nested more than 64 levels deep"],
    );
}

#[test]
fn required_variable() {
    let text = "services:\n  web:\n    image: nginx\n    environment:\n      DB: ${REQUIRED:?must be set}\n";
    fails_at(
        text,
        5,
        &[
            "services.web.environment.DB",
            "required variable REQUIRED is not set: must be set",
        ],
    );
    assert!(parse_with(text, &[("REQUIRED", "x")]).is_ok());
    fails_at(
        "services:\n  web:\n    image: \"cost: $5\"\n",
        3,
        &["services.web.image", "$$"],
    );
}

/// What the hostile-input tests allow: not a speed target (a loaded CI machine must not fail
/// them), a guard against expansion that would take minutes or exhaust memory. The errors
/// themselves show that the limits, not luck, stopped the parse.
const HANG: Duration = Duration::from_secs(20);

#[test]
fn huge_file_is_rejected_before_parsing() {
    let list = files(&[("stack.yml", &"#".repeat(50 * 1024 * 1024))]);
    let start = Instant::now();
    let e = parse_stack("shop", &list, &BTreeMap::new()).unwrap_err();
    assert!(start.elapsed() < HANG, "{:?}", start.elapsed());
    assert_eq!(
        e.to_string(),
        "stack.yml: file is 50.0 MiB; stack files are limited to 4 MiB"
    );
}

#[test]
fn billion_laughs_fails_fast() {
    let mut text = String::from("x-lol: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..12 {
        let items = vec![format!("*a{}", i - 1); 10].join(", ");
        text.push_str(&format!("x-lol{i}: &a{i} [{items}]\n"));
    }
    text.push_str("services:\n  web:\n    image: nginx\n    command: *a11\n");
    let start = Instant::now();
    let e = parse(&text).unwrap_err().to_string();
    assert!(start.elapsed() < HANG, "{:?}", start.elapsed());
    assert!(e.starts_with("stack.yml"), "{e}");
    assert!(e.contains("alias") || e.contains("repetition limit"), "{e}");

    // Few events, wide fan-out: yaml_serde's own limit would allow it, the node budget does not.
    let list: Vec<String> = (0..5000).map(|i| i.to_string()).collect();
    let mut text = format!(
        "x-a: &a [{}]\nservices:\n  web:\n    image: nginx\n    labels: [",
        list.join(",")
    );
    text.push_str(&vec!["*a"; 400].join(","));
    text.push_str("]\n");
    let start = Instant::now();
    let e = parse(&text).unwrap_err().to_string();
    assert!(start.elapsed() < HANG, "{:?}", start.elapsed());
    assert!(e.contains("alias bomb"), "{e}");
}

#[test]
fn nesting_is_limited_to_64_levels() {
    let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    // `x-deep:` is one level (the top-level mapping), so 63 brackets fit.
    let text = format!(
        "x-deep: {}\nservices:\n  web:\n    image: nginx\n",
        deep(63)
    );
    assert!(parse(&text).is_ok());
    for key in ["labels", "x-ext", "unknown_key"] {
        let text = format!(
            "services:\n  web:\n    image: nginx\n    {key}: {}\n",
            deep(120)
        );
        fails_at(&text, 4, &["nested more than 64 levels deep"]);
    }
}

/// The hostile shapes of the issue, each refused at its line well within the time a person
/// waits (the bound is loose for slow debug builds on a loaded machine; release takes
/// milliseconds).
#[test]
fn hostile_files_are_refused_fast() {
    let cases: Vec<(String, usize, &str)> = vec![
        (
            format!("services: {}", "[".repeat(100_000)),
            1,
            "levels deep",
        ),
        (
            format!("services:\n{}", "{\n".repeat(100_000)),
            65,
            "levels deep",
        ),
        (
            format!("services: {}", "{a: ".repeat(50_000)),
            1,
            "levels deep",
        ),
        (
            format!(
                "services:\n  web:\n    labels:\n{}",
                "      - - ".repeat(20_000)
            ),
            4,
            "levels deep",
        ),
        (format!("x: [{}]\n", "1,".repeat(1_000_000)), 1, "tokens"),
        (format!("x: [{}]\n", "*a,".repeat(1_000_000)), 1, "tokens"),
    ];
    for (text, line, needle) in cases {
        let start = Instant::now();
        let e = parse(&text).unwrap_err().to_string();
        let took = start.elapsed();
        assert!(took < Duration::from_secs(2), "{needle}: took {took:?}");
        assert!(e.starts_with(&format!("stack.yml:{line}:")), "{e}");
        assert!(e.contains(needle), "{e}");
    }
}

#[test]
fn unknown_key_in_an_override_file_names_that_file() {
    let list = files(&[
        ("base.yml", "services:\n  web:\n    image: nginx\n"),
        (
            "prod.yml",
            "services:\n  web:\n    deploy:\n      replcas: 3\n",
        ),
    ]);
    let e = parse_stack("shop", &list, &BTreeMap::new())
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "prod.yml:4:7: services.web.deploy.replcas: unknown key; did you mean `replicas`?"
    );
}
