//! The container options a stack file carries into the replicas (user, stop grace period,
//! capabilities, ulimits, logging...), `env_file` and relative bind sources resolved against the
//! stack file's directory, and Traefik router labels refused or warned with their line.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

#[path = "common/compose.rs"]
mod helpers;

use helpers::{fails_at, files, parse};
use shoal::compose::{parse_stack_in, ComposeError, FileContext, StackFile};
use shoal_core::desired::spec::{LoggingSpec, MountKind, Ulimit};

const OPTIONS: &str = r#"
services:
  web:
    image: shoal-demo:v1
    user: "1000:1000"
    working_dir: /srv
    hostname: web-host
    stop_signal: SIGINT
    stop_grace_period: 1m30s
    init: true
    tty: "true"
    read_only: true
    cap_add: [NET_ADMIN, SYS_TIME]
    cap_drop: [MKNOD]
    sysctls:
      net.core.somaxconn: 1024
    ulimits:
      nproc: 65535
      nofile:
        soft: 20000
        hard: 40000
    logging:
      driver: json-file
      options:
        max-size: 10m
    dns: 10.0.0.53
    dns_search: [example.com]
    extra_hosts:
      - "db:10.0.0.2"
      - "v6=::1"
    healthcheck:
      start_interval: 2s
"#;

#[test]
fn container_options_are_carried() {
    let stack = parse(OPTIONS).unwrap();
    assert!(stack.warnings.is_empty(), "{:?}", stack.warnings);
    let s = &stack.services[0].spec;
    assert_eq!(s.user.as_deref(), Some("1000:1000"));
    assert_eq!(s.working_dir.as_deref(), Some("/srv"));
    assert_eq!(s.hostname.as_deref(), Some("web-host"));
    assert_eq!(s.stop_signal.as_deref(), Some("SIGINT"));
    assert_eq!(s.stop_grace_ms, Some(90_000));
    assert_eq!(s.init, Some(true));
    assert!(s.tty && s.read_only);
    assert_eq!(s.cap_add, ["NET_ADMIN", "SYS_TIME"]);
    assert_eq!(s.cap_drop, ["MKNOD"]);
    assert_eq!(s.sysctls["net.core.somaxconn"], "1024");
    assert_eq!(
        s.ulimits,
        [
            Ulimit {
                name: "nofile".into(),
                soft: 20000,
                hard: 40000
            },
            Ulimit {
                name: "nproc".into(),
                soft: 65535,
                hard: 65535
            },
        ]
    );
    assert_eq!(
        s.logging,
        Some(LoggingSpec {
            driver: "json-file".into(),
            options: [("max-size".to_string(), "10m".to_string())].into(),
        })
    );
    assert_eq!(s.dns, ["10.0.0.53"]);
    assert_eq!(s.dns_search, ["example.com"]);
    assert_eq!(s.extra_hosts, ["db:10.0.0.2", "v6:::1"]);
    assert_eq!(
        s.healthcheck.as_ref().unwrap().start_interval_ms,
        Some(2000)
    );
}

#[test]
fn bad_options_fail_at_their_line() {
    let svc = |rest: &str| format!("services:\n  web:\n    image: a\n{rest}");
    fails_at(
        &svc("    working_dir: srv\n"),
        4,
        &["working_dir", "absolute"],
    );
    fails_at(
        &svc("    stop_grace_period: soon\n"),
        4,
        &["stop_grace_period"],
    );
    fails_at(&svc("    hostname: a_b\n"), 4, &["hostname", "host name"]);
    fails_at(
        &svc("    hostname: \"{{.Node.Hostname}}\"\n"),
        4,
        &["templates"],
    );
    fails_at(&svc("    dns: [not-an-ip]\n"), 4, &["dns", "IP address"]);
    fails_at(&svc("    extra_hosts: [\"db\"]\n"), 4, &["HOST:IP"]);
    fails_at(&svc("    extra_hosts: [\"db:nope\"]\n"), 4, &["IP address"]);
    fails_at(
        &svc("    ulimits:\n      nofiles: 5\n"),
        5,
        &["ulimits.nofiles", "unknown ulimit"],
    );
    fails_at(
        &svc("    ulimits:\n      nofile: {soft: 10, hard: 5}\n"),
        5,
        &["above the hard limit"],
    );
    fails_at(
        &svc("    logging:\n      drivr: x\n"),
        5,
        &["did you mean `driver`"],
    );
    fails_at(&svc("    cap_add: [\"NET ADMIN\"]\n"), 4, &["capability"]);
    fails_at(&svc("    user: \"\"\n"), 4, &["user"]);
    fails_at(&svc("    env_file: a.env\n"), 4, &["env_file", "directory"]);
}

/// A stack file in a temporary directory, parsed as the CLI parses it.
fn parse_in(dir: &Path, text: &str, env: &[(&str, &str)]) -> Result<StackFile, ComposeError> {
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let home = PathBuf::from("/home/op");
    let context = FileContext {
        base_dir: Some(dir),
        home: Some(&home),
        read: &read,
    };
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    parse_stack_in("shop", &files(&[("stack.yml", text)]), &env, &context)
}

#[test]
fn env_files_merge_under_environment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("conf")).unwrap();
    std::fs::write(
        dir.path().join("conf/a.env"),
        "# comment\nA=from-a\nB=from-a\n\n  C=spaced = kept\nFROM_SHELL\nUNSET_IN_SHELL\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("b.env"), "B=from-b\nD=d\n").unwrap();
    let text = r#"
services:
  web:
    image: a
    env_file: [conf/a.env, b.env, {path: missing.env, required: false}]
    environment:
      D: from-environment
"#;
    let stack = parse_in(dir.path(), text, &[("FROM_SHELL", "shell")]).unwrap();
    let env = &stack.services[0].spec.env;
    assert_eq!(env["A"], "from-a");
    assert_eq!(env["B"], "from-b", "a later file wins");
    assert_eq!(env["C"], "spaced = kept");
    assert_eq!(
        env["D"], "from-environment",
        "environment wins over env files"
    );
    assert_eq!(env["FROM_SHELL"], "shell");
    assert!(!env.contains_key("UNSET_IN_SHELL"));
    assert_eq!(stack.warnings.len(), 1, "{:?}", stack.warnings);
    assert!(stack.warnings[0].contains("missing.env"));

    let missing = parse_in(
        dir.path(),
        "services:\n  web:\n    image: a\n    env_file: nope.env\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        missing.starts_with("stack.yml:4:") && missing.contains("nope.env"),
        "{missing}"
    );
}

#[test]
fn relative_bind_sources_follow_the_stack_file() {
    let dir = Path::new("/srv/stacks/shop");
    let text = r#"
services:
  web:
    image: a
    volumes:
      - ./data:/data
      - ../shared:/shared:ro
      - ~/cache:/cache
      - /abs:/abs
      - named:/named
      - type: bind
        source: conf
        target: /conf
volumes:
  named:
"#;
    let stack = parse_in(dir, text, &[]).unwrap();
    let sources: Vec<(&str, MountKind)> = stack.services[0]
        .spec
        .mounts
        .iter()
        .map(|m| (m.source.as_str(), m.kind))
        .collect();
    assert_eq!(
        sources,
        [
            ("/srv/stacks/shop/data", MountKind::Bind),
            ("/srv/stacks/shared", MountKind::Bind),
            ("/home/op/cache", MountKind::Bind),
            ("/abs", MountKind::Bind),
            ("shop_named", MountKind::Volume),
            ("/srv/stacks/shop/conf", MountKind::Bind),
        ]
    );
}

#[test]
fn traefik_router_labels_are_checked_at_their_line() {
    let text = |labels: &str| {
        format!("services:\n  web:\n    image: a\n    ports: [\"8080\"]\n    deploy:\n      labels:\n{labels}")
    };
    fails_at(
        &text("        traefik.http.routers.web.middlewares: auth\n"),
        6,
        &["traefik.http.routers.web.middlewares", "middlewares"],
    );
    fails_at(
        &text("        traefik.http.routers.web.rule: \"Host(`a`) &\"\n"),
        6,
        &["traefik.http.routers.web.rule", "&&"],
    );
    let stack = parse(&text(
        "        traefik.http.routers.web.rule: \"PathPrefix(`/`)\"\n        traefik.docker.network: front\n",
    ))
    .unwrap();
    assert_eq!(stack.warnings.len(), 1, "{:?}", stack.warnings);
    assert!(
        stack.warnings[0].contains("traefik.docker.network"),
        "{:?}",
        stack.warnings
    );
}
