//! Golden fixtures of every byte format shoal sends or keeps: one sample of each message is
//! encoded and compared with the file committed under `tests/fixtures/wire/`.
//!
//! A struct that gains, loses or reorders a field changes its bincode encoding, and an agent of
//! the previous build then misreads it. This test turns that into a failure that says what to
//! do: bump the version of the format that changed (`wire::WIRE_VERSION` for datagrams,
//! `api::API_VERSION` for framed messages, `seal::SEAL_VERSION` for the sealed layout,
//! `FileKind::current_version` for a persisted file), and regenerate the fixtures:
//!
//! ```text
//! SHOAL_BLESS_FIXTURES=1 cargo test --test wire_fixtures
//! ```
//!
//! After merging branches that both touched a message, bless again once the merge compiles.
//! A new field in a sample's struct also needs a value below (the compiler points here).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use shoal_core::{
    api::{
        self, ChangeReceipt, NetworkDetail, NetworkInfo, NetworkPeer, NetworkService, NetworkTask,
        PeerRequest, PeerResponse, Repair, Request, Response,
    },
    desired::{
        hlc::Hlc,
        spec::{NetworkDef, NetworkSpec, Protocol, ServiceDef, ServiceSpec},
        state::DesiredState,
    },
    format::{self, FileKind},
    identity::{NodeId, NodeIdentity, NodeMeta},
    observed::{Endpoint, Health, NodeReport, SlotKey, TaskReport, TaskState},
    seal::{self, GossipKey, Keyring},
    trust::{
        token::{join_proof, CaDigest, JoinToken},
        JoinGrant, JoinRequest, JoinResponse, SecretBytes,
    },
    wire,
};

const BLESS: &str = "SHOAL_BLESS_FIXTURES";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wire")
}

fn addr() -> SocketAddr {
    "10.0.0.1:7946".parse().unwrap()
}

fn hlc() -> Hlc {
    Hlc {
        wall_ms: 1_700_000_000_000,
        counter: 3,
        node: NodeId(1),
    }
}

fn service() -> ServiceDef {
    let mut spec = ServiceSpec {
        image: "shoal-demo:1".into(),
        command: Some(vec!["serve".into()]),
        ..ServiceSpec::default()
    };
    spec.env.insert("MODE".into(), "demo".into());
    spec.labels.insert("shoal.sticky".into(), "true".into());
    ServiceDef {
        name: "web_app".into(),
        stack: "web".into(),
        replicas: 3,
        spec,
    }
}

fn desired() -> DesiredState {
    let mut state = DesiredState::default();
    state
        .deploy_stack("web", vec![service()], hlc())
        .expect("a valid stack");
    state.admit_node(NodeId(1), hlc()).expect("a free slot");
    state
}

fn task() -> TaskReport {
    TaskReport {
        service: "web_app".into(),
        slot: SlotKey::Replica(1),
        task_id: "t0ask1".into(),
        version: hlc(),
        image: "shoal-demo:1".into(),
        force: 0,
        container_id: Some("c0ffee".into()),
        state: TaskState::Running,
        health: Health::Healthy,
        desired_running: true,
        error: None,
        endpoints: vec![Endpoint {
            port: 8080,
            protocol: Protocol::Tcp,
            addr: "10.0.0.1:30001".parse().unwrap(),
        }],
        since_ms: 1_700_000_000_500,
        started_ms: Some(1_700_000_000_700),
        addresses: vec![("web_default".into(), "10.240.0.2".parse().unwrap())],
    }
}

fn network_info() -> NetworkInfo {
    NetworkInfo {
        id: api::network_id("web_default"),
        name: "web_default".into(),
        driver: "overlay".into(),
        subnet: "10.243.0.0/16".into(),
        explicit_subnet: false,
        internal: false,
        attachable: true,
        labels: BTreeMap::from([("team".into(), "a".into())]),
        stack: "web".into(),
        created_ms: 1_700_000_000_000,
        services: vec!["web_app".into()],
    }
}

fn network_detail() -> NetworkDetail {
    NetworkDetail {
        info: network_info(),
        attached: vec![NetworkService {
            name: "web_app".into(),
            vip: Some("10.243.255.1".parse().unwrap()),
            endpoint_mode: "vip".into(),
            aliases: vec!["www".into()],
            tasks: vec![NetworkTask {
                name: "web_app.1".into(),
                task_id: "t0ask1".into(),
                container_id: "c0ffee".into(),
                address: "10.243.0.2".parse().unwrap(),
                node: "n1".into(),
                node_addr: Some(addr().ip()),
                state: "running".into(),
            }],
        }],
        peers: vec![NetworkPeer {
            id: NodeId(1).to_string(),
            name: "n1".into(),
            addr: Some(addr().ip()),
            slot: 0,
            subnet: "10.243.0.0/24".into(),
            gateway: Some("10.243.0.1".parse().unwrap()),
        }],
        problems: vec![],
    }
}

fn report() -> NodeReport {
    NodeReport {
        node: NodeId(1),
        generation: 7,
        seq: 42,
        tasks: vec![task()],
        history: vec![],
        gossip_keys: vec![],
    }
}

fn member() -> foca::Member<NodeIdentity> {
    foca::Member::alive(NodeIdentity {
        addr: addr(),
        id: NodeId(1),
        generation: 7,
        meta: Arc::new(NodeMeta::unknown(addr())),
    })
}

fn keyring() -> Keyring {
    Keyring::new(1, GossipKey([0x42; 32]))
}

fn token() -> JoinToken {
    JoinToken::new(CaDigest([0x24; 32]), [0x11; 16])
}

/// Every sample: its fixture name and its bytes.
fn samples() -> Vec<(&'static str, Vec<u8>)> {
    let swim = wire::seal(wire::PacketKind::Swim, b"foca packet bytes");
    let observed = BTreeMap::from([(NodeId(1), (7u64, 42u64))]);
    let csr = b"DER certificate signing request".to_vec();
    vec![
        ("datagram_swim", swim.clone()),
        (
            "datagram_leave",
            wire::seal(wire::PacketKind::Leave, &wire::encode(&NodeId(1)).unwrap()),
        ),
        (
            "datagram_sealed",
            seal::seal(&keyring(), 1, 7, 9, [0x5a; seal::NONCE_BYTES], &swim).unwrap(),
        ),
        (
            "peer_request_sync",
            api::frame(PeerRequest::Sync {
                members_digest: [5; 32],
                desired_digest: [7; 32],
                observed_digest: [9; 32],
            })
            .unwrap(),
        ),
        (
            "peer_request_reports",
            api::frame(PeerRequest::Reports {
                reports: vec![report()],
                told: vec![NodeId(2)],
            })
            .unwrap(),
        ),
        (
            "peer_request_desired",
            api::frame(PeerRequest::Desired(Box::new(desired()))).unwrap(),
        ),
        (
            "peer_request_repair",
            api::frame(PeerRequest::Repair(Box::new(Repair {
                members: Some(vec![member()]),
                buckets: [3u16, 200].into(),
                desired: desired(),
                reports: vec![report()],
                observed: Some(observed.clone()),
            })))
            .unwrap(),
        ),
        (
            "peer_response_sync",
            api::frame(PeerResponse::Sync {
                node: NodeId(1),
                members: Some(vec![member()]),
                members_digest: [5; 32],
                buckets: Some(desired().buckets().digests),
                observed: Some(observed),
            })
            .unwrap(),
        ),
        (
            "peer_response_repair",
            api::frame(PeerResponse::Repair {
                desired: Box::new(desired()),
                reports: vec![report()],
            })
            .unwrap(),
        ),
        (
            "request_stack_deploy",
            api::frame(Request::StackDeploy {
                stack: "web".into(),
                services: vec![service()],
                prune: true,
                networks: vec![],
            })
            .unwrap(),
        ),
        (
            "response_changed",
            api::frame(Response::Changed(ChangeReceipt {
                actions: vec!["Creating service web_app".into()],
                changed: true,
                peers_acked: 2,
                peers_live: 3,
            }))
            .unwrap(),
        ),
        (
            "request_network_create",
            api::frame(Request::NetworkCreate {
                def: NetworkDef {
                    name: "shared".into(),
                    external: false,
                    spec: NetworkSpec {
                        driver: "overlay".into(),
                        attachable: true,
                        internal: false,
                        labels: BTreeMap::from([("team".into(), "a".into())]),
                        subnet: Some("10.50.0.0/16".parse().unwrap()),
                        stack: None,
                    },
                },
            })
            .unwrap(),
        ),
        (
            "request_network_remove",
            api::frame(Request::NetworkRemove {
                network: "shared".into(),
            })
            .unwrap(),
        ),
        (
            "response_networks",
            api::frame(Response::Networks(vec![network_info()])).unwrap(),
        ),
        (
            "response_network",
            api::frame(Response::Network(Box::new(network_detail()))).unwrap(),
        ),
        ("desired_state", wire::encode(&desired()).unwrap()),
        ("node_report", wire::encode(&report()).unwrap()),
        (
            "join_request",
            wire::encode(&JoinRequest {
                node: NodeId(2),
                proof: join_proof(&token(), NodeId(2), &csr),
                csr_der: csr,
            })
            .unwrap(),
        ),
        (
            "join_response_granted",
            wire::encode(&JoinResponse::Granted(Box::new(JoinGrant {
                node_cert_der: b"node cert".to_vec(),
                ca_cert_der: b"ca cert".to_vec(),
                ca_key_der: SecretBytes(b"ca key".to_vec()),
                keyring: keyring(),
                token_secret: token().secret,
            })))
            .unwrap(),
        ),
        ("file_desired", format::encode_desired(&desired()).unwrap()),
        (
            "file_keyring",
            format::encode_file(FileKind::Keyring, &keyring()).unwrap(),
        ),
    ]
}

fn versions() -> String {
    format!(
        "wire::WIRE_VERSION={} api::API_VERSION={} seal::SEAL_VERSION={} \
         FileKind::DesiredState={} FileKind::Keyring={}",
        wire::WIRE_VERSION,
        api::API_VERSION,
        seal::SEAL_VERSION,
        FileKind::DesiredState.current_version(),
        FileKind::Keyring.current_version()
    )
}

#[test]
fn encodings_match_the_committed_fixtures() {
    let dir = fixture_dir();
    let bless = std::env::var(BLESS).is_ok_and(|v| v == "1");
    if bless {
        std::fs::create_dir_all(&dir).unwrap();
    }
    let mut problems = Vec::new();
    for (name, bytes) in samples() {
        let path = dir.join(format!("{name}.bin"));
        if bless {
            std::fs::write(&path, &bytes).unwrap();
            continue;
        }
        match std::fs::read(&path) {
            Err(_) => problems.push(format!("{name}: no fixture at {}", path.display())),
            Ok(committed) if committed != bytes => {
                let first = committed
                    .iter()
                    .zip(&bytes)
                    .position(|(a, b)| a != b)
                    .unwrap_or(committed.len().min(bytes.len()));
                problems.push(format!(
                    "{name}: encoding changed ({} bytes committed, {} now, first difference at \
                     byte {first})",
                    committed.len(),
                    bytes.len()
                ));
            }
            Ok(_) => {}
        }
    }
    assert!(
        problems.is_empty(),
        "\n{}\n\nA message or file format changed. Agents of the previous build will misread it.\n\
         1. If old peers or data dirs cannot read the new bytes, bump the version of that format \
         (now: {}).\n2. Regenerate the fixtures and commit them:\n   \
         {BLESS}=1 cargo test --test wire_fixtures\n",
        problems.join("\n"),
        versions()
    );
}

/// Unwraps a decode of a committed fixture, saying what a failure means.
fn must<T, E: std::fmt::Debug>(name: &str, result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| {
        panic!(
            "the committed fixture {name}.bin no longer decodes ({e:?}): this build cannot read \
             what the previous one wrote. Bump the version of that format (now: {}) so the \
             mismatch is reported as such, then regenerate the fixtures: {BLESS}=1 cargo test \
             --test wire_fixtures",
            versions()
        )
    })
}

#[test]
fn committed_fixtures_still_decode() {
    // Catches the other direction: bytes a previous build wrote that this one cannot read.
    if std::env::var(BLESS).is_ok_and(|v| v == "1") {
        return;
    }
    let read = |name: &str| std::fs::read(fixture_dir().join(format!("{name}.bin"))).unwrap();
    let frame = |name: &str| read(name)[4..].to_vec();
    let swim = read("datagram_swim");
    let (kind, body) = must("datagram_swim", wire::open(&swim));
    assert_eq!(
        (kind, body),
        (wire::PacketKind::Swim, &b"foca packet bytes"[..])
    );
    let opened = must(
        "datagram_sealed",
        seal::open(&keyring(), &read("datagram_sealed")),
    );
    assert_eq!(opened.header.counter, 9);
    for name in [
        "peer_request_sync",
        "peer_request_reports",
        "peer_request_desired",
    ] {
        must(name, api::unframe::<PeerRequest>(&frame(name)));
    }
    must(
        "peer_response_sync",
        api::unframe::<PeerResponse>(&frame("peer_response_sync")),
    );
    must(
        "request_stack_deploy",
        api::unframe::<Request>(&frame("request_stack_deploy")),
    );
    must(
        "response_changed",
        api::unframe::<Response>(&frame("response_changed")),
    );
    for name in ["request_network_create", "request_network_remove"] {
        must(name, api::unframe::<Request>(&frame(name)));
    }
    let Response::Networks(networks) = must(
        "response_networks",
        api::unframe::<Response>(&frame("response_networks")),
    ) else {
        panic!("response_networks.bin is not a Networks answer");
    };
    assert_eq!(networks, [network_info()]);
    let Response::Network(detail) = must(
        "response_network",
        api::unframe::<Response>(&frame("response_network")),
    ) else {
        panic!("response_network.bin is not a Network answer");
    };
    assert_eq!(*detail, network_detail());
    let state = must(
        "desired_state",
        wire::decode::<DesiredState>(&read("desired_state")),
    );
    assert_eq!(state, desired());
    let node_report = must(
        "node_report",
        wire::decode::<NodeReport>(&read("node_report")),
    );
    assert_eq!(node_report, report());
    must(
        "join_request",
        wire::decode::<JoinRequest>(&read("join_request")),
    );
    must(
        "join_response_granted",
        wire::decode::<JoinResponse>(&read("join_response_granted")),
    );
    let file = must(
        "file_desired",
        format::decode_desired(&read("file_desired")),
    );
    assert!(!file.legacy);
    // A desired.bin written by the release before the envelope (an agent of commit 45a1901
    // with one stack deployed): it migrates, its services intact.
    let legacy = must(
        "legacy_desired_v0",
        format::decode_desired(&read("legacy_desired_v0")),
    );
    assert!(legacy.legacy);
    let names: Vec<String> = legacy
        .value
        .services()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["demo_api", "demo_web"]);
    let web = legacy.value.service("demo_web").unwrap();
    assert_eq!(
        (web.replicas, web.spec.image.as_str()),
        (3, "shoal-demo:v1")
    );
    assert!(web.update_status.is_none());
    // A desired.bin of format version 1 (before the container options and `node rm`): it
    // migrates, its services intact.
    let v1 = must(
        "legacy_desired_v1",
        format::decode_desired(&read("legacy_desired_v1")),
    );
    assert!(v1.legacy);
    assert_eq!(v1.value.services().len(), 1);
    let app = v1.value.service("web_app").unwrap();
    assert_eq!(app.spec, service().spec);
    assert_eq!(app.replicas, 3);
    must(
        "file_keyring",
        format::decode_file::<Keyring>(FileKind::Keyring, &read("file_keyring")),
    );
}

#[test]
fn samples_encode_deterministically() {
    // A fixture is only useful if the same value always encodes the same way.
    assert_eq!(samples(), samples());
}
