//! The stack file as written, before any meaning is given to it: serde structs whose every field
//! is optional (so a missing `image` gets a message of ours, not serde's) and small lenient types.
//!
//! Fields that are absent here are reported by `serde_ignored` as "not supported" warnings, so
//! adding support for a key means adding it here and converting it in `convert`/`deploy`.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Unexpected, Visitor};
use serde::Deserialize;

use super::error::{KeyPath, Segment};
use shoal_core::desired::spec::{
    EndpointMode, FailureAction, Mode, Protocol, PublishMode, RestartCondition, UpdateOrder,
};

/// Every key compose defines, by where it may appear (the parent's path with service, network
/// and volume names as `*` and list items as `[]`). Keys that `Raw*` below lack are valid but not
/// acted on (a warning); a key not listed at its level is a typo or from another tool (an error,
/// with the nearest listed key as a hint), as `docker stack deploy` refuses it.
const KEYS: &[(&str, &str)] = &[
    ("", "version services networks volumes configs secrets"),
    (
        "services.*",
        "annotations attach blkio_config build cap_add cap_drop cgroup cgroup_parent \
         cgroupns_mode command configs container_name cpu_count cpu_percent cpu_period cpu_quota \
         cpu_rt_period cpu_rt_runtime cpu_shares cpus cpuset credential_spec depends_on deploy \
         develop device_cgroup_rules devices dns dns_opt dns_search domainname entrypoint \
         env_file environment expose extends external_links extra_hosts gpus group_add \
         healthcheck hostname image init ipc isolation label_file labels links logging \
         mac_address mem_limit mem_reservation mem_swappiness memswap_limit network_mode \
         networks oom_kill_disable oom_score_adj pid pids_limit platform ports post_start \
         pre_stop privileged profiles pull_policy read_only restart runtime scale secrets \
         security_opt shm_size stdin_open stop_grace_period stop_signal storage_opt sysctls \
         tmpfs tty ulimits user userns_mode uts volumes volumes_from working_dir",
    ),
    (
        "services.*.deploy",
        "endpoint_mode labels mode placement replicas resources restart_policy rollback_config \
         update_config",
    ),
    (
        "services.*.deploy.update_config",
        "delay failure_action max_failure_ratio monitor order parallelism",
    ),
    (
        "services.*.deploy.rollback_config",
        "delay failure_action max_failure_ratio monitor order parallelism",
    ),
    (
        "services.*.deploy.restart_policy",
        "condition delay max_attempts window",
    ),
    (
        "services.*.deploy.placement",
        "constraints max_replicas_per_node preferences",
    ),
    ("services.*.deploy.placement.preferences.[]", "spread"),
    ("services.*.deploy.resources", "limits reservations"),
    ("services.*.deploy.resources.limits", "cpus memory pids"),
    (
        "services.*.deploy.resources.reservations",
        "cpus devices generic_resources memory",
    ),
    ("services.*.logging", "driver options"),
    ("services.*.ulimits.*", "hard soft"),
    ("services.*.env_file.[]", "format path required"),
    (
        "services.*.healthcheck",
        "disable interval retries start_interval start_period test timeout",
    ),
    (
        "services.*.ports.[]",
        "app_protocol host_ip mode name protocol published target",
    ),
    (
        "services.*.volumes.[]",
        "bind cluster consistency image read_only source target tmpfs type volume",
    ),
    (
        "services.*.networks.*",
        "aliases driver_opts gw_priority interface_name ipv4_address ipv6_address \
         link_local_ips mac_address priority",
    ),
    (
        "networks.*",
        "attachable driver driver_opts enable_ipv4 enable_ipv6 external internal ipam labels name",
    ),
    ("networks.*.external", "name"),
    ("networks.*.ipam", "config driver options"),
    (
        "networks.*.ipam.config.[]",
        "aux_addresses gateway ip_range subnet",
    ),
    ("volumes.*", "driver driver_opts external labels name"),
    ("volumes.*.external", "name"),
];

/// Parents whose keys are names chosen by the author (services, networks, volumes).
const NAMED: [&str; 5] = [
    "services",
    "networks",
    "volumes",
    "services.*.networks",
    "services.*.ulimits",
];

/// What to do with a key that deserialization ignored.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ignored {
    /// `x-*`: compose allows extensions anywhere; ignored silently.
    Extension,
    /// Valid compose that shoal does not act on: a warning.
    Unsupported,
    /// Not compose: an error, with a hint when a known key is close.
    Unknown(String),
}

/// Sorts out the key at the end of `path`, which deserialization ignored.
pub(crate) fn classify_ignored(path: &KeyPath) -> Ignored {
    let key = path.last_key().unwrap_or_default();
    if key.starts_with("x-") {
        return Ignored::Extension;
    }
    let parent = parent_shape(path);
    let known = keys_at(&parent);
    if known.contains(&key) {
        return Ignored::Unsupported;
    }
    Ignored::Unknown(unknown_key_message(key, &parent, &known))
}

/// The path without its last segment, names as `*` and indices as `[]`.
fn parent_shape(path: &KeyPath) -> String {
    let segments = &path.0[..path.0.len().saturating_sub(1)];
    let mut shape = String::new();
    for segment in segments {
        let part = match segment {
            Segment::Index(_) => "[]",
            Segment::Key(_) if NAMED.contains(&shape.as_str()) => "*",
            Segment::Key(k) => k.as_str(),
        };
        if !shape.is_empty() {
            shape.push('.');
        }
        shape.push_str(part);
    }
    shape
}

fn keys_at(shape: &str) -> Vec<&'static str> {
    KEYS.iter()
        .find(|(s, _)| *s == shape)
        .map(|(_, keys)| keys.split_whitespace().collect())
        .unwrap_or_default()
}

/// `unknown key`, plus the closest known key at the same level, or else one level down or up
/// (`replicas` written beside `image` instead of under `deploy`, `image` under `deploy`).
fn unknown_key_message(key: &str, parent: &str, known: &[&'static str]) -> String {
    let lower = key.to_ascii_lowercase();
    if let Some(k) = closest(&lower, known) {
        return format!("unknown key; did you mean `{k}`?");
    }
    let misplaced = match parent {
        "services.*" => closest(&lower, &keys_at("services.*.deploy"))
            .map(|k| format!("unknown key here; did you mean `deploy.{k}`?")),
        "services.*.deploy" => closest(&lower, &keys_at("services.*")).map(|k| {
            format!("unknown key here; did you mean the service's `{k}` (not under `deploy`)?")
        }),
        _ => None,
    };
    misplaced.unwrap_or_else(|| "unknown key".to_string())
}

/// The known key nearest to `key`, allowing about one typo per three letters (and at least one).
fn closest(key: &str, known: &[&'static str]) -> Option<&'static str> {
    let limit = (key.chars().count() / 3).clamp(1, 3);
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(key, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// The whole file. `configs` and `secrets` are deliberately absent: they are reported as ignored.
#[derive(Deserialize, Default)]
pub(crate) struct RawStack {
    #[allow(dead_code)] // Any version is accepted; reading it keeps it out of the warnings.
    pub version: Option<Scalar>,
    pub services: Option<Entries<RawService>>,
    pub networks: Option<Entries<Option<RawNetwork>>>,
    pub volumes: Option<Entries<Option<RawDeclaration>>>,
}

/// A top-level network: what a volume has, and its settings. Driver options and IPv6 are not
/// modelled (warned about).
#[derive(Deserialize, Default)]
pub(crate) struct RawNetwork {
    pub external: Option<External>,
    pub name: Option<String>,
    pub driver: Option<String>,
    pub attachable: Option<Lenient<bool>>,
    pub internal: Option<Lenient<bool>>,
    pub labels: Option<ListOrEntries<Scalar>>,
    pub ipam: Option<RawIpam>,
}

/// `networks.NAME.ipam`: the first config's subnet is taken.
#[derive(Deserialize, Default)]
pub(crate) struct RawIpam {
    pub driver: Option<String>,
    pub config: Option<Vec<RawIpamConfig>>,
}

/// One `ipam.config` entry.
#[derive(Deserialize, Default)]
pub(crate) struct RawIpamConfig {
    pub subnet: Option<String>,
}

/// A top-level network or volume. Driver options are not modelled (warned about).
#[derive(Deserialize, Default)]
pub(crate) struct RawDeclaration {
    pub external: Option<External>,
    pub name: Option<String>,
}

/// `services.NAME`.
#[derive(Deserialize, Default)]
pub(crate) struct RawService {
    pub image: Option<String>,
    pub command: Option<StringOrList>,
    pub entrypoint: Option<StringOrList>,
    pub environment: Option<ListOrEntries<Scalar>>,
    pub labels: Option<ListOrEntries<Scalar>>,
    pub ports: Option<Vec<RawPort>>,
    pub healthcheck: Option<RawHealthcheck>,
    pub deploy: Option<RawDeploy>,
    pub networks: Option<ListOrEntries<RawServiceNetwork>>,
    pub volumes: Option<Vec<RawMount>>,
    pub env_file: Option<RawEnvFiles>,
    pub user: Option<Scalar>,
    pub working_dir: Option<String>,
    pub hostname: Option<String>,
    pub stop_signal: Option<Scalar>,
    pub stop_grace_period: Option<Scalar>,
    pub init: Option<Lenient<bool>>,
    pub tty: Option<Lenient<bool>>,
    pub read_only: Option<Lenient<bool>>,
    pub cap_add: Option<Vec<String>>,
    pub cap_drop: Option<Vec<String>>,
    pub sysctls: Option<ListOrEntries<Scalar>>,
    pub ulimits: Option<Entries<RawUlimit>>,
    pub logging: Option<RawLogging>,
    pub dns: Option<StringOrList>,
    pub dns_search: Option<StringOrList>,
    pub extra_hosts: Option<ListOrEntries<Scalar>>,
}

/// `env_file`: one path, or a list of paths or `{path, required}`.
pub(crate) enum RawEnvFiles {
    /// `env_file: a.env`.
    One(String),
    /// `env_file: [a.env, {path: b.env, required: false}]`.
    List(Vec<RawEnvFile>),
}

/// One entry of an `env_file` list.
pub(crate) enum RawEnvFile {
    /// A path.
    Short(String),
    /// `{path, required, format}`.
    Long(RawEnvFileLong),
}

/// The long `env_file` syntax.
#[derive(Deserialize, Default)]
pub(crate) struct RawEnvFileLong {
    pub path: Option<String>,
    pub required: Option<Lenient<bool>>,
    pub format: Option<String>,
}

/// One `ulimits` entry: a number (soft and hard alike) or `{soft, hard}`.
pub(crate) enum RawUlimit {
    /// `nproc: 65535`.
    Single(Scalar),
    /// `nofile: {soft: 20000, hard: 40000}`.
    Pair(RawUlimitPair),
}

/// `{soft, hard}`.
#[derive(Deserialize, Default)]
pub(crate) struct RawUlimitPair {
    pub soft: Option<Scalar>,
    pub hard: Option<Scalar>,
}

/// `logging`.
#[derive(Deserialize, Default)]
pub(crate) struct RawLogging {
    pub driver: Option<String>,
    pub options: Option<Entries<Option<Scalar>>>,
}

impl<'de> Deserialize<'de> for RawEnvFiles {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawEnvFiles;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a path or a list of paths")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawEnvFiles::One(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element()? {
                    out.push(item);
                }
                Ok(RawEnvFiles::List(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawUlimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawUlimit;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or a mapping with soft and hard")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawUlimit::Single(Scalar(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(RawUlimit::Single(Scalar(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(RawUlimit::Single(Scalar(v.to_string())))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                RawUlimitPair::deserialize(MapAccessDeserializer::new(map)).map(RawUlimit::Pair)
            }
        }
        d.deserialize_any(V)
    }
}

/// `services.NAME.networks.NET`: aliases; static addresses, priorities... are not modelled
/// (warned about).
#[derive(Deserialize, Default)]
pub(crate) struct RawServiceNetwork {
    pub aliases: Option<Vec<Scalar>>,
}

/// One entry of `ports`.
pub(crate) enum RawPort {
    /// `"8080:80/udp"` or a bare number.
    Short(String),
    /// `{target, published, protocol, mode}`.
    Long(RawPortLong),
}

/// The long port syntax.
#[derive(Deserialize, Default)]
pub(crate) struct RawPortLong {
    pub target: Option<Lenient<u64>>,
    pub published: Option<Scalar>,
    pub protocol: Option<Protocol>,
    pub mode: Option<PublishMode>,
    pub host_ip: Option<String>,
}

/// `healthcheck`.
#[derive(Deserialize, Default)]
pub(crate) struct RawHealthcheck {
    pub test: Option<StringOrList>,
    pub interval: Option<Scalar>,
    pub timeout: Option<Scalar>,
    pub retries: Option<Lenient<u64>>,
    pub start_period: Option<Scalar>,
    pub disable: Option<Lenient<bool>>,
    pub start_interval: Option<Scalar>,
}

/// One entry of `volumes` in a service.
pub(crate) enum RawMount {
    /// `src:dst[:ro]` or `dst`.
    Short(String),
    /// `{type, source, target, read_only}`.
    Long(RawMountLong),
}

/// The long volume syntax.
#[derive(Deserialize, Default)]
pub(crate) struct RawMountLong {
    /// `volume`, `bind`, `tmpfs`, `cluster` or `npipe`; read as text so that the kinds shoal
    /// has no equivalent for get a message of their own.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub source: Option<String>,
    pub target: Option<String>,
    pub read_only: Option<Lenient<bool>>,
}

/// `deploy`.
#[derive(Deserialize, Default)]
pub(crate) struct RawDeploy {
    pub mode: Option<Mode>,
    pub replicas: Option<Lenient<u64>>,
    pub placement: Option<RawPlacement>,
    pub update_config: Option<RawUpdateConfig>,
    pub rollback_config: Option<RawUpdateConfig>,
    pub restart_policy: Option<RawRestartPolicy>,
    pub resources: Option<RawResources>,
    pub labels: Option<ListOrEntries<Scalar>>,
    pub endpoint_mode: Option<EndpointMode>,
}

/// `deploy.placement`.
#[derive(Deserialize, Default)]
pub(crate) struct RawPlacement {
    pub constraints: Option<Vec<String>>,
    pub preferences: Option<Vec<RawPreference>>,
    pub max_replicas_per_node: Option<Lenient<u64>>,
}

/// One `placement.preferences` entry.
#[derive(Deserialize, Default)]
pub(crate) struct RawPreference {
    pub spread: Option<String>,
}

/// `deploy.update_config` and `deploy.rollback_config`.
#[derive(Deserialize, Default)]
pub(crate) struct RawUpdateConfig {
    pub parallelism: Option<Lenient<u64>>,
    pub delay: Option<Scalar>,
    pub failure_action: Option<FailureAction>,
    pub monitor: Option<Scalar>,
    pub max_failure_ratio: Option<Scalar>,
    pub order: Option<UpdateOrder>,
}

/// `deploy.restart_policy`.
#[derive(Deserialize, Default)]
pub(crate) struct RawRestartPolicy {
    pub condition: Option<RestartCondition>,
    pub delay: Option<Scalar>,
    pub max_attempts: Option<Lenient<u64>>,
    pub window: Option<Scalar>,
}

/// `deploy.resources`.
#[derive(Deserialize, Default)]
pub(crate) struct RawResources {
    pub limits: Option<RawAmounts>,
    pub reservations: Option<RawAmounts>,
}

/// `limits` / `reservations`.
#[derive(Deserialize, Default)]
pub(crate) struct RawAmounts {
    pub cpus: Option<Scalar>,
    pub memory: Option<Scalar>,
}

/// A scalar kept as the text it stands for: `0.5`, `"0.5"` and `true` are all accepted where
/// compose accepts either a string or a number (durations, CPUs, sizes, variable values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(yaml_serde::Number::from(v).to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A number or boolean that may also be written as a string, as it is after `${VAR}`
/// substitution: `replicas: "3"` is 3, `read_only: "true"` is true.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Lenient<T>(pub T);

impl<'de> Deserialize<'de> for Lenient<u64> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Lenient<u64>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a non-negative integer")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Lenient(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(Lenient)
                    .map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v.trim().parse::<u64>() {
                    Ok(n) => Ok(Lenient(n)),
                    Err(_) => match v.trim().parse::<i64>() {
                        Ok(n) => Err(E::invalid_value(Unexpected::Signed(n), &self)),
                        Err(_) => Err(E::invalid_type(Unexpected::Str(v), &self)),
                    },
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Lenient<bool> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Lenient<bool>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true or false")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Lenient(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v.trim().to_ascii_lowercase().as_str() {
                    "true" | "yes" | "on" => Ok(Lenient(true)),
                    "false" | "no" | "off" => Ok(Lenient(false)),
                    _ => Err(E::invalid_type(Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A mapping as an ordered list of entries, so services come out in file order.
pub(crate) struct Entries<T>(pub Vec<(String, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Entries<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EntriesVisitor(PhantomData))
    }
}

struct EntriesVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for EntriesVisitor<T> {
    type Value = Entries<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<T>, A::Error> {
        let mut out = Vec::new();
        while let Some(Scalar(key)) = map.next_key()? {
            out.push((key, map.next_value()?));
        }
        Ok(Entries(out))
    }
}

/// `["a", "b"]` or `{a: ..., b: ...}`: environment, labels, service networks.
pub(crate) enum ListOrEntries<T> {
    /// The list form, items as written (`K=V` for environment and labels).
    List(Vec<Scalar>),
    /// The mapping form; a key with no value is `None`.
    Map(Vec<(String, Option<T>)>),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ListOrEntries<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = ListOrEntries<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list or a mapping")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element()? {
                    out.push(item);
                }
                Ok(ListOrEntries::List(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                EntriesVisitor(PhantomData)
                    .visit_map(map)
                    .map(|Entries(e)| ListOrEntries::Map(e))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// `command`/`entrypoint`: a shell-like string or an exec-form list.
pub(crate) enum StringOrList {
    /// To be split into words.
    String(String),
    /// Already words.
    List(Vec<Scalar>),
}

impl<'de> Deserialize<'de> for StringOrList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StringOrList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StringOrList::String(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element()? {
                    out.push(item);
                }
                Ok(StringOrList::List(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A list item that is either a short-syntax string or a long-syntax mapping.
macro_rules! short_or_long {
    ($ty:ident, $long:ty, $expecting:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        Ok($ty::Short(v.to_string()))
                    }
                    fn visit_u64<E: de::Error>(self, v: u64) -> Result<$ty, E> {
                        Ok($ty::Short(v.to_string()))
                    }
                    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<$ty, A::Error> {
                        <$long>::deserialize(MapAccessDeserializer::new(map)).map($ty::Long)
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

short_or_long!(
    RawPort,
    RawPortLong,
    "a port such as \"8080:80\" or a mapping with target and published"
);
short_or_long!(
    RawEnvFile,
    RawEnvFileLong,
    "a path or a mapping with path and required"
);
short_or_long!(
    RawMount,
    RawMountLong,
    "a volume such as \"data:/var/lib/data\" or a mapping with type, source and target"
);

/// `external: true`, or the legacy `external: {name: NAME}`.
pub(crate) enum External {
    /// `true` / `false`.
    Flag(bool),
    /// Legacy form; the name, if given, is the real object's name.
    Named(Option<String>),
}

#[derive(Deserialize)]
struct ExternalMap {
    name: Option<String>,
}

impl<'de> Deserialize<'de> for External {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = External;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true, false or a mapping with name")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<External, E> {
                Ok(External::Flag(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<External, E> {
                let Lenient(b) = Lenient::<bool>::deserialize(de::value::StrDeserializer::new(v))?;
                Ok(External::Flag(b))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<External, A::Error> {
                let m = ExternalMap::deserialize(MapAccessDeserializer::new(map))?;
                Ok(External::Named(m.name))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(keys: &[&str]) -> KeyPath {
        let mut p = KeyPath::root();
        for k in keys {
            p = match k.parse::<usize>() {
                Ok(i) => p.index(i),
                Err(_) => p.key(k),
            };
        }
        p
    }

    #[test]
    fn ignored_keys_are_sorted_by_level() {
        let c = |keys: &[&str]| classify_ignored(&path(keys));
        assert_eq!(c(&["services", "web", "secrets"]), Ignored::Unsupported);
        assert_eq!(c(&["services", "web", "x-anything"]), Ignored::Extension);
        assert_eq!(c(&["x-top"]), Ignored::Extension);
        assert_eq!(
            c(&["services", "secrets", "networks", "front", "aliases"]),
            Ignored::Unsupported,
            "a service named like a key is still a name"
        );
        assert_eq!(
            c(&["services", "web", "ports", "0", "app_protocol"]),
            Ignored::Unsupported
        );
        // `secrets` is a service key, not a deploy key.
        assert!(matches!(
            c(&["services", "web", "deploy", "secrets"]),
            Ignored::Unknown(m) if m.contains("the service's `secrets`")
        ));
        assert!(matches!(
            c(&["services", "web", "enviroment"]),
            Ignored::Unknown(m) if m.contains("`environment`")
        ));
        assert_eq!(
            c(&["services", "web", "zzz"]),
            Ignored::Unknown("unknown key".into())
        );
    }

    #[test]
    fn hints_allow_a_typo_per_three_letters() {
        let known = ["replicas", "mode", "labels"];
        assert_eq!(closest("replica", &known), Some("replicas"));
        assert_eq!(closest("rpelicas", &known), Some("replicas"));
        assert_eq!(closest("mod", &known), Some("mode"));
        assert_eq!(closest("xyz", &known), None);
        assert_eq!(closest("lbl", &known), None);
    }
}
