//! The desired-state CRDT's documented conflict rules, one scenario each: two nodes write
//! concurrently (neither has seen the other's write), then exchange deltas.

use proptest::prelude::*;
use shoal_core::{
    desired::{
        hlc::{Clock, Hlc, MAX_FORWARD_MS},
        spec::{Mode, ServiceDef, ServiceSpec},
        state::{DesiredState, ServiceUpdate},
    },
    identity::NodeId,
};

fn hlc(wall_ms: u64, node: u128) -> Hlc {
    Hlc {
        wall_ms,
        counter: 0,
        node: NodeId(node),
    }
}

fn def(stack: &str, svc: &str, replicas: u64, image: &str) -> ServiceDef {
    ServiceDef {
        name: format!("{stack}_{svc}"),
        stack: stack.into(),
        replicas,
        spec: ServiceSpec {
            image: image.into(),
            env: [("MODE".to_string(), "prod".to_string())].into(),
            ..ServiceSpec::default()
        },
    }
}

/// Two replicas that both hold `web` (api, worker) deployed at wall time 10.
fn pair() -> (DesiredState, DesiredState) {
    let mut a = DesiredState::default();
    let file = vec![
        def("web", "api", 2, "api:1"),
        def("web", "worker", 1, "w:1"),
    ];
    let delta = a.deploy_stack("web", file, hlc(10, 1)).unwrap();
    let mut b = DesiredState::default();
    b.merge_delta(delta);
    (a, b)
}

/// Delivers each side's deltas to the other, in both orders of arrival, and checks they agree.
fn exchange(a: &mut DesiredState, da: DesiredState, b: &mut DesiredState, db: DesiredState) {
    a.merge_delta(db);
    b.merge_delta(da);
    assert_eq!(a, b);
    assert_eq!(a.digest(), b.digest());
}

fn replicas(s: &DesiredState, name: &str) -> Option<u64> {
    s.service(name).map(|v| v.replicas)
}

proptest! {
    /// Concurrent scales of one service: the higher HLC's count everywhere.
    #[test]
    fn concurrent_scale_higher_hlc_wins(
        ta in 11u64..30,
        tb in 11u64..30,
        na in 1u128..4,
        nb in 4u128..8,
    ) {
        let (mut a, mut b) = pair();
        let (ha, hb) = (hlc(ta, na), hlc(tb, nb));
        let da = a.scale("web_api", 3, ha).unwrap();
        let db = b.scale("web_api", 5, hb).unwrap();
        exchange(&mut a, da, &mut b, db);
        prop_assert_eq!(replicas(&a, "web_api"), Some(if ha > hb { 3 } else { 5 }));
    }

    /// An image update on A and a scale on B touch different registers: both survive.
    #[test]
    fn image_update_and_scale_both_survive(ta in 11u64..30, tb in 11u64..30) {
        let (mut a, mut b) = pair();
        let update = ServiceUpdate { image: Some("api:2".into()), ..ServiceUpdate::default() };
        let da = a.update_service("web_api", update, hlc(ta, 1)).unwrap();
        let db = b.scale("web_api", 7, hlc(tb, 2)).unwrap();
        exchange(&mut a, da, &mut b, db);
        let view = a.service("web_api").unwrap();
        prop_assert_eq!(view.spec.image, "api:2");
        prop_assert_eq!(view.replicas, 7);
    }

    /// Re-deploying an unchanged file writes only `deleted = false`: a concurrent scale, earlier
    /// or later, survives, and the spec version does not move.
    #[test]
    fn unchanged_redeploy_keeps_a_concurrent_scale(ta in 11u64..30, tb in 11u64..30) {
        let (mut a, mut b) = pair();
        let version = a.service("web_api").unwrap().version;
        let file = vec![def("web", "api", 2, "api:1"), def("web", "worker", 1, "w:1")];
        let da = a.deploy_stack("web", file, hlc(ta, 1)).unwrap();
        prop_assert_eq!(a.service("web_api").unwrap().version, version);
        let db = b.scale("web_api", 4, hlc(tb, 2)).unwrap();
        exchange(&mut a, da, &mut b, db);
        prop_assert_eq!(replicas(&a, "web_api"), Some(4));
        prop_assert_eq!(a.service("web_api").unwrap().version, version);
    }

    /// `stack rm` against a re-deploy of the same stack: per service, the later HLC wins.
    #[test]
    fn stack_rm_against_redeploy_later_wins(ta in 11u64..30, tb in 11u64..30) {
        let (mut a, mut b) = pair();
        let da = a.remove_stack("web", hlc(ta, 1)).unwrap();
        let file = vec![def("web", "api", 2, "api:2")];
        let db = b.deploy_stack("web", file, hlc(tb, 2)).unwrap();
        exchange(&mut a, da, &mut b, db);
        let deploy_won = hlc(tb, 2) > hlc(ta, 1);
        prop_assert_eq!(a.service("web_api").is_some(), deploy_won);
        // The worker was only removed (by both sides): it is gone either way.
        prop_assert!(a.service("web_worker").is_none());
    }

    /// A scale or update concurrent with a remove never brings the service back.
    #[test]
    fn remove_beats_concurrent_scale(ta in 11u64..30, tb in 11u64..30) {
        let (mut a, mut b) = pair();
        let da = a.remove_service("web_api", hlc(ta, 1)).unwrap();
        let mut db = b.scale("web_api", 9, hlc(tb, 2)).unwrap();
        let update = ServiceUpdate { image: Some("api:9".into()), ..ServiceUpdate::default() };
        db.merge_delta(b.update_service("web_api", update, hlc(tb + 1, 2)).unwrap());
        exchange(&mut a, da, &mut b, db);
        prop_assert!(a.service("web_api").is_none());
        prop_assert!(a.service("web_worker").is_some());
    }
}

/// A partition: A removes `web` while B deploys `db`. Healed, both hold `db` and not `web`.
#[test]
fn partition_remove_one_stack_deploy_another() {
    let (mut a, mut b) = pair();
    let da = a.remove_stack("web", hlc(20, 1)).unwrap();
    let db = b
        .deploy_stack("db", vec![def("db", "pg", 1, "pg:16")], hlc(15, 2))
        .unwrap();
    exchange(&mut a, da, &mut b, db);
    let stacks: Vec<_> = a.stacks().into_iter().map(|s| s.name).collect();
    assert_eq!(stacks, ["db"]);
    assert_eq!(b.services().len(), 1);
    // And a node that slept through all of it, holding the old state, changes nothing.
    let (old, _) = pair();
    assert!(!a.merge_delta(old));
    assert_eq!(a.digest(), b.digest());
}

/// A re-deploy creates, updates only what differs, removes what the file lacks, and turns a
/// dropped env var into a "removed" register.
#[test]
fn deploy_creates_updates_and_removes() {
    let (mut a, _) = pair();
    let before = a.service("web_worker").unwrap();
    let mut api = def("web", "api", 3, "api:1");
    api.spec.env.clear();
    let file = vec![api, def("web", "cron", 1, "cron:1")];
    let delta = a.deploy_stack("web", file, hlc(20, 1)).unwrap();
    let names: Vec<_> = a.services().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["web_api", "web_cron"]);
    let view = a.service("web_api").unwrap();
    assert!(view.spec.env.is_empty());
    assert_eq!(view.replicas, 3);
    assert_eq!(
        view.version,
        hlc(20, 1),
        "dropping an env var is a spec change"
    );
    assert_eq!(view.updated, hlc(20, 1));
    assert!(a.service("web_worker").is_none());
    // A node that missed the first deploy gets the new services from the delta alone, but not
    // the worker, whose create it never saw.
    let mut c = DesiredState::default();
    c.merge_delta(delta);
    assert_eq!(c.services().len(), 2);
    assert!(c.service("web_api").unwrap().spec.env.is_empty());
    assert_ne!(before.version, hlc(20, 1));
}

/// Re-creating a removed service starts from the file: a scale made before the remove, on
/// another node, does not leak into the new service.
#[test]
fn recreate_after_remove_starts_from_the_file() {
    let (mut a, mut b) = pair();
    let db = b.scale("web_api", 8, hlc(11, 2)).unwrap();
    a.remove_service("web_api", hlc(12, 1)).unwrap();
    let da = a
        .deploy_stack("web", vec![def("web", "api", 2, "api:1")], hlc(13, 1))
        .unwrap();
    exchange(&mut a, da, &mut b, db);
    let view = a.service("web_api").unwrap();
    assert_eq!(view.replicas, 2);
    assert_eq!(
        view.version,
        hlc(13, 1),
        "a re-created service has a new version"
    );
}

/// A node whose clock is years ahead writes an image; the others refuse to follow its clock, yet
/// a later command on a sane node still takes effect (its write takes the successor stamp).
#[test]
fn far_future_writer_does_not_capture_the_cluster() {
    let now = 1_700_000_000_000;
    let (mut a, mut b) = pair();
    let mut clock_a = Clock::new(NodeId(1));
    let broken = now + 10 * 365 * 24 * 3_600_000;
    let update = ServiceUpdate {
        image: Some("api:evil".into()),
        ..ServiceUpdate::default()
    };
    let db = b.update_service("web_api", update, hlc(broken, 2)).unwrap();
    a.merge_delta(db.clone());
    assert!(!clock_a.observe(&db.max_hlc().unwrap(), now));
    let t = clock_a.tick(now);
    assert!(t.wall_ms < now + MAX_FORWARD_MS);
    let update = ServiceUpdate {
        image: Some("api:2".into()),
        ..ServiceUpdate::default()
    };
    let da = a.update_service("web_api", update, t).unwrap();
    // Other registers keep the honest stamp; only the poisoned one is written past it.
    let da2 = a.scale("web_api", 4, clock_a.tick(now)).unwrap();
    assert!(da2.max_hlc().unwrap().wall_ms < now + MAX_FORWARD_MS);
    b.merge_delta(da);
    b.merge_delta(da2);
    assert_eq!(a, b);
    assert_eq!(a.service("web_api").unwrap().spec.image, "api:2");
}

#[test]
fn update_service_edits_fields_and_versions() {
    let (mut a, _) = pair();
    let v0 = a.service("web_api").unwrap();
    // Replicas, deploy labels and update config do not make a new version.
    let quiet = ServiceUpdate {
        replicas: Some(4),
        label_add: vec![("traefik.enable".into(), "true".into())],
        update_config: Some(shoal_core::desired::spec::UpdateConfig {
            parallelism: 2,
            ..Default::default()
        }),
        ..ServiceUpdate::default()
    };
    a.update_service("web_api", quiet, hlc(20, 1)).unwrap();
    let v1 = a.service("web_api").unwrap();
    assert_eq!(v1.version, v0.version);
    assert_eq!(v1.updated, hlc(20, 1));
    assert_eq!(v1.spec.labels["traefik.enable"], "true");
    // Env and force do.
    let loud = ServiceUpdate {
        env_add: vec![("LOG".into(), "debug".into())],
        env_rm: vec!["MODE".into()],
        force: true,
        ..ServiceUpdate::default()
    };
    a.update_service("web_api", loud, hlc(21, 1)).unwrap();
    let v2 = a.service("web_api").unwrap();
    assert_eq!(v2.version, hlc(21, 1));
    assert_eq!(v2.force, 1);
    assert_eq!(v2.spec.env.keys().collect::<Vec<_>>(), ["LOG"]);
    // Force alone replaces the replicas.
    let force = ServiceUpdate {
        force: true,
        ..ServiceUpdate::default()
    };
    a.update_service("web_api", force, hlc(22, 1)).unwrap();
    let v3 = a.service("web_api").unwrap();
    assert_eq!((v3.version, v3.force), (hlc(22, 1), 2));
    // Asking for what is already there writes nothing.
    let same = ServiceUpdate {
        image: Some("api:1".into()),
        replicas: Some(4),
        ..ServiceUpdate::default()
    };
    assert!(a
        .update_service("web_api", same, hlc(23, 1))
        .unwrap()
        .is_empty());
}

#[test]
fn node_settings_default_and_merge() {
    use shoal_core::desired::spec::Availability;
    let (mut a, mut b) = pair();
    let n = NodeId(42);
    assert_eq!(a.node_settings(n).availability, Availability::Active);
    let da = a
        .update_node(n, Some(Availability::Drain), vec![], vec![], hlc(20, 1))
        .unwrap();
    let labels = vec![("zone".to_string(), "a".to_string())];
    let db = b.update_node(n, None, labels, vec![], hlc(19, 2)).unwrap();
    exchange(&mut a, da, &mut b, db);
    let settings = a.node_settings(n);
    assert_eq!(settings.availability, Availability::Drain);
    assert_eq!(settings.labels["zone"], "a");
    assert_eq!(a.nodes_with_settings(), vec![(n, settings)]);
    let rm = a
        .update_node(n, None, vec![], vec!["zone".into()], hlc(21, 1))
        .unwrap();
    assert!(!rm.is_empty());
    assert!(a.node_settings(n).labels.is_empty());
}

#[test]
fn refused_operations_change_nothing() {
    use shoal_core::desired::state::DesiredError as E;
    let (mut a, _) = pair();
    let mut global = def("web", "agent", 1, "agent:1");
    global.spec.mode = Mode::Global;
    a.deploy_stack(
        "web",
        vec![def("web", "api", 2, "api:1"), global],
        hlc(11, 1),
    )
    .unwrap();
    let digest = a.digest();
    let at = hlc(50, 1);
    let mut bad_env = def("web", "api", 1, "x");
    bad_env.spec.env.insert("A=B".into(), "1".into());
    let cases: Vec<(Result<DesiredState, E>, &str)> = vec![
        (a.scale("web_nope", 1, at), "UnknownService"),
        (a.scale("web_agent", 2, at), "NotReplicated"),
        (a.scale("web_api", 10_001, at), "TooManyReplicas"),
        (a.remove_stack("nope", at), "UnknownStack"),
        (a.remove_service("web_worker", at), "UnknownService"),
        (
            a.deploy_stack("bad name", vec![def("x", "y", 1, "i")], at),
            "InvalidName",
        ),
        (a.deploy_stack("web", vec![], at), "EmptyStack"),
        (
            a.deploy_stack("web", vec![def("db", "pg", 1, "i")], at),
            "WrongStack",
        ),
        (
            a.deploy_stack("web", vec![def("web", "a", 1, "")], at),
            "EmptyImage",
        ),
        (
            a.deploy_stack("web", vec![def("web", "a", 1, "i"); 2], at),
            "DuplicateService",
        ),
        (a.deploy_stack("web", vec![bad_env], at), "InvalidKey"),
        (
            a.deploy_stack("web_api", vec![def("web", "api_x", 1, "i")], at),
            "WrongStack",
        ),
    ];
    for (result, want) in cases {
        let err = result.expect_err(want);
        assert!(
            format!("{err:?}").starts_with(want),
            "{err:?} is not {want}"
        );
        assert_eq!(a.digest(), digest, "{want} changed the state");
    }
    // A name taken by a live service of another stack.
    let mut b = DesiredState::default();
    b.deploy_stack("a", vec![def("a", "b_c", 1, "i")], at)
        .unwrap();
    let err = b.deploy_stack("a_b", vec![def("a_b", "c", 1, "i")], hlc(51, 1));
    assert!(matches!(err, Err(E::NameTaken { .. })));
}

#[test]
fn cvrdt_trait_and_conflicting_stamps() {
    use crdts::CvRDT;
    let (mut a, mut b) = pair();
    // A reused stamp with different values: reported, yet both merge orders agree.
    a.scale("web_api", 3, hlc(20, 1)).unwrap();
    b.scale("web_api", 5, hlc(20, 1)).unwrap();
    assert!(a.validate_merge(&b).is_err());
    let (mut ab, mut ba) = (a.clone(), b.clone());
    CvRDT::merge(&mut ab, b);
    CvRDT::merge(&mut ba, a);
    assert_eq!(ab, ba);
}
