//! Stack files end to end through `shoal::compose::parse_stack`: a realistic stack checked field
//! by field, merging, anchors, interpolation, warnings, and many malformed files whose errors must
//! name the file, the line and the key.

use std::collections::BTreeMap;

#[path = "common/compose.rs"]
mod helpers;

use helpers::{env, fails_at, files, parse, parse_with};
use shoal::compose::{parse_stack, Declared, NetworkDef, StackFile};
use shoal_core::desired::spec::*;

const HA_STACK: &str = include_str!("fixtures/compose/ha-stack.yml");
const OVERRIDE: &str = include_str!("fixtures/compose/override.yml");

fn service<'a>(stack: &'a StackFile, name: &str) -> &'a ServiceDef {
    stack
        .services
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no service {name}"))
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    env(pairs)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn attached(network: &str, aliases: &[&str]) -> NetworkAttachment {
    NetworkAttachment {
        network: network.into(),
        aliases: strings(aliases),
    }
}

#[test]
fn ha_stack_every_field() {
    let stack = parse_with(HA_STACK, &[("LOG_LEVEL", "info")]).unwrap();
    let names: Vec<&str> = stack.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["shop_web", "shop_api", "shop_db"]);

    let web = service(&stack, "shop_web");
    assert_eq!(web.stack, "shop");
    assert_eq!(web.replicas, 2);
    let expected = ServiceSpec {
        image: "registry.local/shop/web:1.4.2".into(),
        command: Some(strings(&["nginx", "-g", "daemon off;"])),
        entrypoint: None,
        env: map(&[
            ("UPSTREAM", "api:8080"),
            ("LOG_LEVEL", "info"),
            ("WORKERS", "4"),
        ]),
        container_labels: map(&[("com.example.team", "storefront")]),
        labels: map(&[("traefik.backend.loadbalancer.stickiness", "true")]),
        mode: Mode::Replicated,
        ports: vec![
            PortSpec {
                target: 80,
                published: Some(8080),
                protocol: Protocol::Tcp,
                mode: PublishMode::Ingress,
            },
            PortSpec {
                target: 443,
                published: Some(8443),
                protocol: Protocol::Tcp,
                mode: PublishMode::Host,
            },
        ],
        healthcheck: Some(HealthcheckSpec {
            test: None,
            interval_ms: Some(30_000),
            timeout_ms: None,
            retries: Some(5),
            start_period_ms: Some(90_000),
            disable: false,
            start_interval_ms: None,
        }),
        placement: PlacementSpec {
            constraints: vec![
                Constraint {
                    key: ConstraintKey::NodeLabel("zone".into()),
                    op: ConstraintOp::Eq,
                    value: "a".into(),
                },
                Constraint {
                    key: ConstraintKey::NodeRole,
                    op: ConstraintOp::Eq,
                    value: "manager".into(),
                },
                Constraint {
                    key: ConstraintKey::PlatformOs,
                    op: ConstraintOp::Eq,
                    value: "linux".into(),
                },
            ],
            spread: strings(&["rack"]),
            max_replicas_per_node: Some(1),
        },
        update_config: UpdateConfig {
            parallelism: 1,
            delay_ms: 10_000,
            failure_action: FailureAction::Pause,
            monitor_ms: 5_000,
            max_failure_ratio_milli: 0,
            order: UpdateOrder::StartFirst,
        },
        rollback_config: UpdateConfig::default(),
        restart_policy: RestartPolicy {
            condition: RestartCondition::Any,
            delay_ms: 5_000,
            max_attempts: None,
            window_ms: 0,
        },
        resources: Resources {
            limits: ResourceAmounts {
                cpus_milli: Some(500),
                memory_bytes: Some(512 << 20),
            },
            reservations: ResourceAmounts {
                cpus_milli: Some(250),
                memory_bytes: Some(128 << 20),
            },
        },
        networks: strings(&["shop_front"]),
        mounts: vec![],
        attachments: vec![attached("shop_front", &[])],
        endpoint_mode: EndpointMode::Vip,
        ..ServiceSpec::default()
    };
    assert_eq!(web.spec, expected);

    let api = service(&stack, "shop_api");
    let expected = ServiceSpec {
        image: "registry.local/shop/api:2.0".into(),
        command: None,
        entrypoint: Some(strings(&[
            "/usr/local/bin/api",
            "--config",
            "/etc/api/config.yml",
        ])),
        env: map(&[
            ("DATABASE_URL", "postgres://db:5432/shop"),
            ("POOL_SIZE", "20"),
            ("DEBUG", "false"),
        ]),
        container_labels: BTreeMap::new(),
        labels: BTreeMap::new(),
        mode: Mode::Global,
        ports: vec![],
        healthcheck: Some(HealthcheckSpec {
            test: Some(strings(&[
                "CMD-SHELL",
                "curl -fsS http://localhost:8080/health || exit 1",
            ])),
            interval_ms: Some(10_000),
            timeout_ms: Some(2_000),
            retries: Some(3),
            start_period_ms: None,
            disable: false,
            start_interval_ms: None,
        }),
        placement: PlacementSpec {
            constraints: vec![Constraint {
                key: ConstraintKey::EngineLabel("ssd".into()),
                op: ConstraintOp::Ne,
                value: "false".into(),
            }],
            spread: vec![],
            max_replicas_per_node: None,
        },
        update_config: UpdateConfig {
            parallelism: 2,
            delay_ms: 0,
            failure_action: FailureAction::Rollback,
            monitor_ms: 30_000,
            max_failure_ratio_milli: 100,
            order: UpdateOrder::StopFirst,
        },
        rollback_config: UpdateConfig {
            parallelism: 0,
            ..UpdateConfig::default()
        },
        // From the `<<: *defaults` merge.
        restart_policy: RestartPolicy {
            condition: RestartCondition::OnFailure,
            delay_ms: 10_000,
            max_attempts: Some(3),
            window_ms: 120_000,
        },
        resources: Resources::default(),
        networks: strings(&["shop_front", "back"]),
        mounts: vec![
            MountSpec {
                source: "shop_api-cache".into(),
                target: "/var/cache/api".into(),
                kind: MountKind::Volume,
                read_only: false,
            },
            MountSpec {
                source: "./config".into(),
                target: "/etc/api".into(),
                kind: MountKind::Bind,
                read_only: true,
            },
            MountSpec {
                source: "".into(),
                target: "/tmp".into(),
                kind: MountKind::Tmpfs,
                read_only: false,
            },
        ],
        attachments: vec![attached("shop_front", &[]), attached("back", &[])],
        endpoint_mode: EndpointMode::Vip,
        ..ServiceSpec::default()
    };
    assert_eq!(api.spec, expected);

    let db = service(&stack, "shop_db");
    assert_eq!(db.replicas, 1);
    assert_eq!(db.spec.image, "postgres:16");
    assert_eq!(
        db.spec.healthcheck,
        Some(HealthcheckSpec {
            test: Some(strings(&["CMD", "pg_isready", "-U", "shop"])),
            ..HealthcheckSpec::default()
        })
    );
    assert_eq!(
        db.spec.mounts,
        [MountSpec {
            source: "shop-db-data".into(),
            target: "/var/lib/postgresql/data".into(),
            kind: MountKind::Volume,
            read_only: false,
        }]
    );
    assert_eq!(db.spec.networks, ["back"]);
    assert_eq!(db.spec.endpoint_mode, EndpointMode::Dnsrr);
    assert_eq!(
        db.spec.placement.constraints,
        [Constraint {
            key: ConstraintKey::NodeHostname,
            op: ConstraintOp::Eq,
            value: "db-1".into(),
        }]
    );
    assert_eq!(db.spec.update_config, UpdateConfig::default());
    assert_eq!(db.spec.restart_policy, RestartPolicy::default());

    let declared = |key: &str, name: &str, external: bool| Declared {
        key: key.into(),
        name: name.into(),
        external,
    };
    assert_eq!(
        stack.networks,
        [
            declared("front", "shop_front", false),
            declared("back", "back", true)
        ]
    );
    assert_eq!(
        stack.volumes,
        [
            declared("api-cache", "shop_api-cache", false),
            declared("db-data", "shop-db-data", false)
        ]
    );
    assert_eq!(
        stack.warnings,
        ["stack.yml:96:5: services.db.container_name: not supported by shoal, ignored",]
    );
    let net = |name: &str, external: bool| NetworkDef {
        name: name.into(),
        external,
        spec: NetworkSpec {
            driver: OVERLAY_DRIVER.into(),
            ..NetworkSpec::default()
        },
    };
    assert_eq!(
        stack.network_defs,
        [net("shop_front", false), net("back", true)]
    );
}

#[test]
fn unset_variables_without_value_warn_once() {
    let stack = parse(HA_STACK).unwrap();
    let web = service(&stack, "shop_web");
    assert!(!web.spec.env.contains_key("LOG_LEVEL"));
    let dropped: Vec<_> = stack
        .warnings
        .iter()
        .filter(|w| w.contains("LOG_LEVEL"))
        .collect();
    assert_eq!(
        dropped,
        ["stack.yml:15:5: services.web.environment.LOG_LEVEL: LOG_LEVEL has no value and is not set in the environment, dropped"]
    );

    let text = "services:\n  a:\n    image: x\n    command: run $TAG\n  b:\n    image: y\n    command: run ${TAG}\n";
    let stack = parse(text).unwrap();
    assert_eq!(stack.services[0].spec.command, Some(strings(&["run"])));
    assert_eq!(
        stack.warnings,
        ["stack.yml:4:5: services.a.command: variable TAG is not set, substituting an empty string"]
    );
    // An image tag from an unset variable is an invalid reference, as in Docker.
    fails_at(
        "services:\n  a:\n    image: x:$TAG\n",
        3,
        &["services.a.image", "empty tag"],
    );
}

#[test]
fn files_merge_in_order() {
    let list = files(&[("ha-stack.yml", HA_STACK), ("override.yml", OVERRIDE)]);
    let stack = parse_stack("shop", &list, &env(&[("TAG", "1.5.0")])).unwrap();
    let names: Vec<&str> = stack.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["shop_web", "shop_api", "shop_db", "shop_worker"]);
    let web = service(&stack, "shop_web");
    // Scalars overridden, maps merged key by key, lists replaced whole.
    assert_eq!(web.spec.image, "registry.local/shop/web:1.5.0-debug");
    assert_eq!(web.replicas, 4);
    assert_eq!(web.spec.env["WORKERS"], "8");
    assert_eq!(web.spec.env["UPSTREAM"], "api:8080");
    assert_eq!(web.spec.env["EXTRA"], "1");
    assert_eq!(
        web.spec.ports,
        [PortSpec {
            target: 80,
            published: Some(9080),
            protocol: Protocol::Tcp,
            mode: PublishMode::Ingress,
        }]
    );
    assert_eq!(web.spec.update_config.order, UpdateOrder::StartFirst);
    assert_eq!(web.spec.update_config.parallelism, 2);
    assert_eq!(web.spec.update_config.delay_ms, 10_000);
    assert_eq!(
        web.spec.labels["traefik.backend.loadbalancer.stickiness"],
        "true"
    );
    assert_eq!(web.spec.labels["tier"], "edge");
    assert_eq!(
        service(&stack, "shop_worker").spec.image,
        "registry.local/shop/worker:1.5.0"
    );
}

#[test]
fn anchors_and_merge_keys() {
    let text = "\
version: '3.8'
x-defaults: &defaults
  image: app:1
  environment: &env
    A: '1'
  deploy: &deploy
    replicas: 3
    restart_policy: {condition: none}
x-more: &more
  <<: *defaults
  labels: [from=more]
services:
  one:
    <<: *defaults
  two:
    <<: *more
    image: app:2
    environment:
      <<: *env
      B: '2'
    deploy:
      <<: *deploy
      replicas: 1
";
    let stack = parse(text).unwrap();
    assert!(stack.warnings.is_empty(), "{:?}", stack.warnings);
    let one = service(&stack, "shop_one");
    assert_eq!(one.spec.image, "app:1");
    assert_eq!(one.replicas, 3);
    assert_eq!(one.spec.restart_policy.condition, RestartCondition::None);
    let two = service(&stack, "shop_two");
    assert_eq!(two.spec.image, "app:2");
    assert_eq!(two.replicas, 1);
    assert_eq!(two.spec.env, map(&[("A", "1"), ("B", "2")]));
    assert_eq!(two.spec.container_labels, map(&[("from", "more")]));
    assert_eq!(two.spec.restart_policy.condition, RestartCondition::None);

    // An error in a value that came through `<<` points at the anchor's line.
    let text =
        "x-d: &d\n  deploy:\n    replicas: lots\nservices:\n  web:\n    image: x\n    <<: *d\n";
    fails_at(text, 3, &["services.web.deploy.replicas", "lots"]);
}

#[test]
fn interpolation() {
    let text = "\
services:
  web:
    image: ${IMAGE:-nginx}:${TAG?tag is required}
    command: echo $$HOME ${GREETING:+says-$GREETING}
    environment:
      NUMBER: 1.50
      FLAG: yes
      PORT: ${PORT}
    ports: ['${PORT}:80']
    deploy:
      replicas: ${REPLICAS}
      placement:
        constraints:
          - node.labels.zone == ${ZONE}
";
    let vars = [
        ("TAG", "1.27"),
        ("GREETING", "hi"),
        ("PORT", "8080"),
        ("REPLICAS", "3"),
        ("ZONE", "eu-1"),
    ];
    let stack = parse_with(text, &vars).unwrap();
    let web = &stack.services[0];
    assert_eq!(web.spec.image, "nginx:1.27");
    assert_eq!(
        web.spec.command,
        Some(strings(&["echo", "$HOME", "says-hi"]))
    );
    assert_eq!(web.spec.env["NUMBER"], "1.5");
    assert_eq!(web.spec.env["FLAG"], "yes");
    assert_eq!(web.spec.env["PORT"], "8080");
    assert_eq!(web.spec.ports[0].published, Some(8080));
    assert_eq!(web.replicas, 3);
    assert_eq!(web.spec.placement.constraints[0].value, "eu-1");

    // A value from the environment cannot change the YAML structure.
    let text = "services:\n  web:\n    image: nginx\n    environment:\n      X: ${X}\n";
    let stack = parse_with(text, &[("X", "a: b # c\n- d")]).unwrap();
    assert_eq!(stack.services[0].spec.env["X"], "a: b # c\n- d");
}

#[test]
fn warnings_name_each_ignored_key() {
    let text = "\
version: '3'
x-anything: {whatever: 1}
services:
  web:
    image: nginx
    build: .
    container_name: web
    depends_on: [db]
    logging: {driver: json-file}
    x-custom: ignored silently
    deploy:
      endpoint_mode: dnsrr
      resources:
        limits: {pids: 100}
  db:
    image: postgres
    build: ./db
configs:
  site: {file: ./site.conf}
secrets:
  key: {file: ./key}
";
    let stack = parse(text).unwrap();
    assert_eq!(
        stack.warnings,
        [
            "stack.yml:6:5: services.web.build: not supported by shoal, ignored",
            "stack.yml:7:5: services.web.container_name: not supported by shoal, ignored",
            "stack.yml:8:5: services.web.depends_on: not supported by shoal, ignored",
            "stack.yml:14:18: services.web.deploy.resources.limits.pids: not supported by shoal, ignored",
            "stack.yml:17:5: services.db.build: not supported by shoal, ignored",
            "stack.yml:18:1: configs: not supported by shoal, ignored",
            "stack.yml:20:1: secrets: not supported by shoal, ignored",
        ]
    );
}

#[test]
fn networks_with_settings_and_aliases() {
    let text = r#"
services:
  web:
    image: demo:1
    networks:
      front:
        aliases: [www, site.local]
        ipv4_address: 10.0.0.9
      default:
  job:
    image: demo:1
networks:
  front:
    driver: bridge
    attachable: true
    internal: "true"
    labels: [team=web]
    ipam:
      config:
        - subnet: 10.30.0.0/16
"#;
    let stack = parse(text).unwrap();
    let web = service(&stack, "shop_web");
    assert_eq!(
        web.spec.attachments,
        [
            attached("shop_front", &["www", "site.local"]),
            attached("shop_default", &[])
        ]
    );
    assert_eq!(web.spec.networks, ["shop_front", "shop_default"]);
    // The deploy attaches a service without networks to STACK_default, not the file.
    assert!(service(&stack, "shop_job").spec.attachments.is_empty());
    let front = &stack.network_defs[0];
    assert_eq!(front.name, "shop_front");
    assert!(front.spec.attachable && front.spec.internal);
    assert_eq!(front.spec.driver, OVERLAY_DRIVER);
    assert_eq!(front.spec.subnet, Some("10.30.0.0/16".parse().unwrap()));
    assert_eq!(front.spec.labels, map(&[("team", "web")]));
    let warnings = stack.warnings.join("\n");
    assert!(warnings.contains("networks.front.driver"), "{warnings}");
    assert!(
        warnings.contains("services.web.networks.front.ipv4_address"),
        "{warnings}"
    );
}

#[test]
fn network_mistakes_are_refused_with_their_line() {
    let base = "services:\n  web:\n    image: demo:1\n";
    fails_at(
        &format!(
            "{base}    networks:\n      front:\n        aliases: [\"a b\"]\nnetworks:\n  front:\n"
        ),
        6,
        &["services.web.networks.front.aliases[0]", "not a DNS name"],
    );
    fails_at(
        &format!(
            "{base}networks:\n  front:\n    ipam:\n      config:\n        - subnet: 10.1.0.0/24\n"
        ),
        8,
        &["networks.front.ipam.config[0].subnet", "/8 to /22"],
    );
    fails_at(
        &format!(
            "{base}networks:\n  front:\n    ipam:\n      config:\n        - subnet: nonsense\n"
        ),
        8,
        &[
            "networks.front.ipam.config[0].subnet",
            "invalid IPv4 subnet",
        ],
    );
    fails_at(
        &format!("{base}    networks: [back]\nnetworks:\n  front:\n"),
        4,
        &["services.web.networks", "not declared", "declared: front"],
    );
}
