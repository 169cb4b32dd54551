//! Why an operation was refused, and the input rules it checks.

use crate::{
    desired::{hlc::Hlc, spec::Protocol},
    identity::NodeId,
};

/// Largest replica count accepted: far above any real cluster's needs, low enough that a typo
/// (`scale web=1000000`) cannot make every node plan a million slots.
pub const MAX_REPLICAS: u64 = 10_000;

/// Most live services a cluster holds. Every node holds, plans and reports over all of them;
/// the limit is far above what small fleets run, low enough that a runaway script is stopped
/// with a clear error instead of growing every node's memory without end.
pub const MAX_SERVICES: usize = 100_000;

/// Most entries in one list of a service (env vars, labels, container labels, published ports,
/// mounts, networks and the like): with the key and value bounds, this bounds one service's size.
pub const MAX_ENTRIES: usize = 1_000;

/// Longest service or stack name; Docker's limit, a DNS label.
const MAX_NAME_LEN: usize = 63;

/// Longest env var or label key, and longest value: bounds what one command can add to a state
/// that every node holds.
const MAX_KEY_LEN: usize = 256;
const MAX_VALUE_LEN: usize = 16 * 1024;

/// Why an operation was refused. Every variant means the state was not changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DesiredError {
    /// No live service has this name. The state was not changed.
    #[error("no such service: {0}")]
    UnknownService(String),
    /// No live service belongs to this stack. The state was not changed.
    #[error("no such stack: {0}")]
    UnknownStack(String),
    /// A stack or service name breaks Docker's rules. The state was not changed.
    #[error(
        "invalid {kind} name {name:?}: use 1 to {MAX_NAME_LEN} letters, digits, '-' and '_', \
         starting and ending with a letter or digit"
    )]
    InvalidName {
        /// `stack` or `service`.
        kind: &'static str,
        /// The name given.
        name: String,
    },
    /// A deployed service does not belong to the stack being deployed (its `stack` differs, or
    /// its name is not `STACK_...`). The state was not changed.
    #[error("service {service:?} is not part of stack {stack:?} (names must be {stack}_NAME)")]
    WrongStack {
        /// The service name.
        service: String,
        /// The stack being deployed.
        stack: String,
    },
    /// The same service appears twice in one deploy. The state was not changed.
    #[error("service {0} is listed twice")]
    DuplicateService(String),
    /// A live service of another stack already has this name. The state was not changed.
    #[error("service {service} already exists in stack {stack}")]
    NameTaken {
        /// The service name.
        service: String,
        /// The stack that owns it.
        stack: String,
    },
    /// `service create` of a name a live service has. The state was not changed.
    #[error("service {0} already exists")]
    ServiceExists(String),
    /// A deploy without services (use stack removal instead). The state was not changed.
    #[error("stack {0} has no services")]
    EmptyStack(String),
    /// A service without an image. The state was not changed.
    #[error("service {0} has no image")]
    EmptyImage(String),
    /// A rollback of a service that has no previous spec (it was never updated since it was
    /// created). The state was not changed.
    #[error("service {0} has no previous spec to roll back to")]
    NothingToRollBack(String),
    /// A replica count for a global service. The state was not changed.
    #[error("service {0} is global: its replica count cannot be set")]
    NotReplicated(String),
    /// A replica count above [`MAX_REPLICAS`]. The state was not changed.
    #[error("service {service}: {replicas} replicas is more than the limit of {MAX_REPLICAS}")]
    TooManyReplicas {
        /// The service.
        service: String,
        /// The count asked for.
        replicas: u64,
    },
    /// A deploy or create that would take the cluster past [`MAX_SERVICES`] live services. The
    /// state was not changed.
    #[error(
        "{count} services would be more than the cluster's limit of {MAX_SERVICES} live \
         services (remove some first)"
    )]
    TooManyServices {
        /// Live services there would be.
        count: usize,
    },
    /// One of a service's lists holds more than [`MAX_ENTRIES`] entries. The state was not
    /// changed.
    #[error("service {service}: {count} {what} are more than the limit of {MAX_ENTRIES}")]
    TooManyEntries {
        /// The service.
        service: String,
        /// Which list: `env vars`, `labels`, `published ports`...
        what: &'static str,
        /// Its length.
        count: usize,
    },
    /// A port that another live service already publishes (in either mode: see
    /// `ops::port_holders` for why host mode is included). The state was not changed.
    #[error(
        "cannot publish port {port}/{protocol} for service {service}: service {holder} already \
         publishes it (remove it there first, or pick another port)"
    )]
    PortTaken {
        /// The service that asked for the port.
        service: String,
        /// The published port.
        port: u16,
        /// Its protocol.
        protocol: Protocol,
        /// The live service that holds it.
        holder: String,
    },
    /// One service lists the same published port twice. The state was not changed.
    #[error("service {service} publishes port {port}/{protocol} twice")]
    PortTwice {
        /// The service.
        service: String,
        /// The published port.
        port: u16,
        /// Its protocol.
        protocol: Protocol,
    },
    /// An env var or label key or value that cannot be stored. The state was not changed.
    #[error("invalid {what} {key:?}: {reason}")]
    InvalidKey {
        /// `env var`, `label`, `container label`, `node label` or `network label`.
        what: &'static str,
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A network's name or settings cannot be used. The state was not changed.
    #[error("network {network}: {reason}")]
    InvalidNetwork {
        /// The network.
        network: String,
        /// What is wrong.
        reason: String,
    },
    /// `network create` of a name a live network has. The state was not changed.
    #[error("network with name {0} already exists")]
    NetworkExists(String),
    /// No live network has this name. The state was not changed.
    #[error("network {0} not found")]
    UnknownNetwork(String),
    /// `network rm` of a network live services attach to. The state was not changed.
    #[error(
        "network {network} is in use by service{} {}: remove {} or deploy {} without it first",
        if services.len() == 1 { "" } else { "s" },
        services.join(", "),
        if services.len() == 1 { "it" } else { "them" },
        if services.len() == 1 { "it" } else { "them" }
    )]
    NetworkInUse {
        /// The network.
        network: String,
        /// The live services attached to it.
        services: Vec<String>,
    },
    /// A stack file declares an external network that does not exist (Swarm's message). The
    /// state was not changed.
    #[error(
        "network \"{0}\" is declared as external, but could not be found. You need to create a \
         swarm-scoped network before the stack is deployed"
    )]
    ExternalNetworkMissing(String),
    /// A service attaches to a network that is neither declared by its stack nor live. The state
    /// was not changed.
    #[error("service {service} refers to undefined network {network}: declare it in the stack's networks")]
    ServiceNetworkUnknown {
        /// The service.
        service: String,
        /// The network it names.
        network: String,
    },
    /// An alias that is not a DNS name. The state was not changed.
    #[error("service {service}: invalid network alias {alias:?} (use DNS labels: letters, digits, '-', '_', separated by dots)")]
    InvalidAlias {
        /// The service.
        service: String,
        /// The alias.
        alias: String,
    },
    /// Every /16 of the default address pool is taken. The state was not changed.
    #[error(
        "network {0}: the default address pool (10.240.0.0/12, 16 networks) is exhausted: give \
         the network a subnet (ipam.config), or remove unused networks"
    )]
    PoolExhausted(String),
    /// Every node slot is taken. The state was not changed.
    #[error(
        "node {0}: every one of the 255 node address slots is taken (forget nodes that are gone)"
    )]
    NoNodeSlot(NodeId),
}

/// Two replicas hold different values under the same stamp for one register: a stamp was issued
/// twice. Reported by `validate_merge`; `merge` still converges.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("register {register} holds different values under the same stamp {marker}")]
pub struct MergeConflict {
    /// Which register, e.g. `web_api.replicas` or `node 1a2b3c4d5e6f.labels.zone`.
    pub register: String,
    /// The shared stamp.
    pub marker: Hlc,
}

/// Docker's rule for service names (swarmkit's `isValidDNSName`), applied to stacks too since a
/// stack name is the prefix of its services' names.
pub(super) fn check_name(kind: &'static str, name: &str) -> Result<(), DesiredError> {
    let bytes = name.as_bytes();
    let alnum = |b: &u8| b.is_ascii_alphanumeric();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && bytes.iter().all(|b| alnum(b) || *b == b'-' || *b == b'_')
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum);
    if ok {
        Ok(())
    } else {
        Err(DesiredError::InvalidName {
            kind,
            name: name.to_string(),
        })
    }
}

pub(super) fn check_replicas(service: &str, replicas: u64) -> Result<(), DesiredError> {
    if replicas > MAX_REPLICAS {
        return Err(DesiredError::TooManyReplicas {
            service: service.to_string(),
            replicas,
        });
    }
    Ok(())
}

/// Checks keys (and values, where given) of env vars and labels. Env keys may not hold `=`, which
/// would make `KEY=VALUE` ambiguous for the container runtime.
pub(super) fn check_keys<'a>(
    what: &'static str,
    entries: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<(), DesiredError> {
    for (key, val) in entries {
        let reason = if key.is_empty() {
            Some("empty key")
        } else if key.len() > MAX_KEY_LEN {
            Some("key longer than 256 bytes")
        } else if key.contains('\0') || val.is_some_and(|v| v.contains('\0')) {
            Some("contains a NUL byte")
        } else if what == "env var" && key.contains('=') {
            Some("key contains '='")
        } else if val.is_some_and(|v| v.len() > MAX_VALUE_LEN) {
            Some("value longer than 16 KiB")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(DesiredError::InvalidKey {
                what,
                key: key.to_string(),
                reason,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_service_names() {
        for good in ["web", "web_api", "a-b_c1", "A", "x9"] {
            assert!(check_name("service", good).is_ok(), "{good}");
        }
        let long = "a".repeat(64);
        for bad in ["", "_web", "web_", "-a", "a.b", "a b", "é", long.as_str()] {
            assert!(check_name("service", bad).is_err(), "{bad:?}");
        }
        assert!(check_name("service", &"a".repeat(63)).is_ok());
    }

    #[test]
    fn keys() {
        assert!(check_keys("env var", [("PATH", Some("/bin"))]).is_ok());
        assert!(check_keys("env var", [("A=B", Some("x"))]).is_err());
        assert!(check_keys("label", [("a=b", Some("x"))]).is_ok());
        assert!(check_keys("label", [("", None)]).is_err());
        assert!(check_keys("label", [("k", Some("a\0b"))]).is_err());
    }

    #[test]
    fn replica_bound() {
        assert!(check_replicas("s", MAX_REPLICAS).is_ok());
        assert!(check_replicas("s", MAX_REPLICAS + 1).is_err());
    }
}
