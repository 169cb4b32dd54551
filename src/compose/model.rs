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

use super::error::KeyPath;
use shoal_core::desired::spec::{
    FailureAction, Mode, MountKind, Protocol, PublishMode, RestartCondition, UpdateOrder,
};

/// Compose keys that are valid but that shoal does not act on; any other key missing from the
/// structs below is reported as unknown (likely a typo) instead.
const KNOWN_UNSUPPORTED: &str = "
    build cap_add cap_drop cgroup_parent cgroupns_mode configs container_name cpu_count
    cpu_percent cpu_shares cpu_period cpu_quota cpus cpuset credential_spec depends_on devices
    device_cgroup_rules dns dns_opt dns_search domainname env_file expose external_links
    extra_hosts group_add hostname init ipc isolation links logging mac_address mem_limit
    mem_reservation mem_swappiness memswap_limit network_mode oom_kill_disable oom_score_adj pid
    pids_limit platform privileged profiles pull_policy read_only restart runtime scale secrets
    security_opt shm_size stdin_open stop_grace_period stop_signal storage_opt sysctls tmpfs tty
    ulimits user userns_mode volumes_from working_dir endpoint_mode pids generic_resources
    start_interval aliases ipv4_address ipv6_address link_local_ips priority driver driver_opts
    attachable ipam internal enable_ipv6 labels name app_protocol bind volume consistency";

/// The warning for a key that deserialization ignored, or `None` for `x-*` extensions, which
/// compose allows anywhere and which are ignored silently.
pub(crate) fn ignored_key_warning(path: &KeyPath) -> Option<String> {
    let key = path.last_key().unwrap_or_default();
    if key.starts_with("x-") {
        return None;
    }
    let why = if KNOWN_UNSUPPORTED.split_whitespace().any(|k| k == key) {
        "not supported by shoal, ignored"
    } else {
        "unknown key, ignored"
    };
    Some(format!("{path}: {why}"))
}

/// The whole file. `configs` and `secrets` are deliberately absent: they are reported as ignored.
#[derive(Deserialize, Default)]
pub(crate) struct RawStack {
    #[allow(dead_code)] // Any version is accepted; reading it keeps it out of the warnings.
    pub version: Option<Scalar>,
    pub services: Option<Entries<RawService>>,
    pub networks: Option<Entries<Option<RawDeclaration>>>,
    pub volumes: Option<Entries<Option<RawDeclaration>>>,
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
}

/// `services.NAME.networks.NET`: aliases, static IPs... are not modelled (warned about).
#[derive(Deserialize, Default)]
pub(crate) struct RawServiceNetwork {}

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
    #[serde(rename = "type")]
    pub kind: Option<MountKind>,
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
