//! Sticky sessions: which service labels turn them on, and the cookie that carries them.
//!
//! Stack files written for Traefik work unchanged, so both of its label dialects are read:
//! v1 `traefik.backend.loadbalancer.stickiness=true` (and its older `...sticky=true`), v2
//! `traefik.http.services.NAME.loadbalancer.sticky.cookie=true` (any `sticky.cookie.*` key turns
//! it on, as in Traefik). shoal's own `shoal.ingress.sticky=true` does the same.
//!
//! # The cookie
//!
//! A later request carrying the cookie goes to the replica that answered while it is ready, else
//! to another one, and the cookie is set again. Any node may get that later request, including
//! one whose view of the observed state lags (it has not received the replica's report yet): the
//! cookie therefore carries what such a node needs to reach the replica, and a signature so that
//! nobody outside the cluster can make a node connect wherever they like:
//!
//! ```text
//! s1~KEY~ISSUED~TASK~IP:PORT~MAC
//! ```
//!
//! `KEY` is the id of the gossip key the cookie key was derived from ([`CookieKeys`]), `ISSUED`
//! the issuing node's clock in seconds since the Unix epoch, `TASK` the replica's task id,
//! `IP:PORT` its endpoint, and `MAC` the first [`MAC_BYTES`] bytes, in hex, of
//! HMAC-SHA-256 under the cookie key of the service's name, the route's container port and
//! everything before the last `~`. Binding the service and the port means a cookie issued for
//! one service (or one of its ports) never leads a request of another to its endpoint, even when
//! two services share a cookie name.
//!
//! What a node does with a cookie is [`decide`]'s rules. A bare task id (the format before
//! signing) is still followed to a replica this node knows is ready, as before; so is a
//! well-formed cookie signed under a key this node no longer holds (retired by a rotation): in
//! both cases only the task id is used, which a client could pick among the ready replicas
//! anyway. Only a verified signature makes a node trust the endpoint.

use std::{collections::BTreeMap, net::SocketAddr};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::routes::Route;
use crate::seal::Keyring;

/// How a sticky service's cookie is named and flagged.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StickyCookie {
    /// Cookie name.
    pub name: String,
    /// `Secure`: browsers send it over HTTPS only.
    pub secure: bool,
    /// `HttpOnly`: scripts cannot read it.
    pub http_only: bool,
    /// `SameSite` value (`Lax`, `Strict`, `None`), if set.
    pub same_site: Option<String>,
}

impl StickyCookie {
    /// A cookie named `name` with no flags.
    pub fn named(name: impl Into<String>) -> Self {
        StickyCookie {
            name: name.into(),
            secure: false,
            http_only: false,
            same_site: None,
        }
    }

    /// The `Set-Cookie` header value that pins a client with `value` (see [`cookie_value`]).
    pub fn set_cookie(&self, value: &str) -> String {
        let mut out = format!("{}={value}; Path=/", self.name);
        if self.secure {
            out.push_str("; Secure");
        }
        if self.http_only {
            out.push_str("; HttpOnly");
        }
        if let Some(s) = &self.same_site {
            out.push_str("; SameSite=");
            out.push_str(s);
        }
        out
    }

    /// The value of this cookie in a `Cookie` header (`a=1; b=2`), if present.
    pub fn find_in<'a>(&self, cookie_header: &'a str) -> Option<&'a str> {
        cookie_header.split(';').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k.trim() == self.name).then(|| v.trim().trim_matches('"'))
        })
    }
}

/// Version tag, first field of a signed cookie value. A value that does not start with it is a
/// bare task id, the format before signing.
pub const SIGNED_TAG: &str = "s1";
/// Field separator of a signed value: allowed in a cookie value (RFC 6265 §4.1.1), and in
/// neither a task id nor an endpoint.
const SEPARATOR: char = '~';
/// Bytes of HMAC-SHA-256 kept in the cookie. 128 bits leave a forger one chance in 2^128 per
/// try, and keep the value short; HMAC's security when truncated to half its output is standard
/// (RFC 2104 §5).
pub const MAC_BYTES: usize = 16;
/// How long after a cookie was issued a node that does not know its replica still follows the
/// cookie to the endpoint. A replica's report reaches every node within seconds; past this, a
/// replica a node has never heard of is more likely gone than unreported, and its endpoint may
/// be a new replica's (Docker reuses ports and addresses), so the node balances instead.
/// Allowed in both directions, for clocks that disagree.
pub const ENDPOINT_TRUST_MS: u64 = 60_000;
/// A cookie older than this, or signed under a key other than the current one, is set again
/// (re-signed, with the same replica) when a node that knows its replica serves a request with
/// it: an active session's cookie therefore stays within [`ENDPOINT_TRUST_MS`] and moves to the
/// new key during a key rotation, before the old key is retired.
pub const REFRESH_AFTER_MS: u64 = 20_000;
/// Longest cookie value looked at: a signed value is well under 200 bytes.
const MAX_VALUE_BYTES: usize = 256;
/// What the cookie keys are derived under, from each gossip key ([`Keyring::derive`]).
const KEY_LABEL: &[u8] = b"shoal ingress sticky cookie v1";

/// The keys sticky cookies are signed and checked with: one per gossip key the node holds,
/// derived from it, so every member of the cluster has them and nobody else does.
///
/// New cookies are signed under the key of the gossip keyring's primary, which is by
/// construction a key every live member holds (see `node::trust`): a cookie one node signs,
/// every other can check. Cookies signed under any key of the ring are accepted, so a rotation
/// breaks no session: the new key signs once everyone has it, the old one checks until it is
/// retired, and in between every cookie in use is re-signed ([`REFRESH_AFTER_MS`]).
#[derive(Clone, Default)]
pub struct CookieKeys {
    /// The key id new cookies are signed with; None: no keys, cookies are bare task ids.
    primary: Option<u32>,
    /// Cookie keys by the id of the gossip key they were derived from.
    keys: BTreeMap<u32, Zeroizing<[u8; 32]>>,
}

impl CookieKeys {
    /// The cookie keys of `ring`.
    pub fn from_keyring(ring: &Keyring) -> Self {
        CookieKeys {
            primary: Some(ring.primary_id()),
            keys: ring.derive(KEY_LABEL).into_iter().collect(),
        }
    }

    /// The key id new cookies are signed with, if any.
    pub fn primary_id(&self) -> Option<u32> {
        self.primary
    }

    fn mac(&self, id: u32, service: &str, target: u16, signed: &str) -> Option<Hmac<Sha256>> {
        let key = self.keys.get(&id)?;
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&key[..]).expect("HMAC takes any key length");
        // Length-prefixed, so that no two (service, port, value) triples feed the same bytes.
        mac.update(&(service.len() as u64).to_be_bytes());
        mac.update(service.as_bytes());
        mac.update(&target.to_be_bytes());
        mac.update(signed.as_bytes());
        Some(mac)
    }
}

impl PartialEq for CookieKeys {
    fn eq(&self, other: &Self) -> bool {
        self.primary == other.primary
            && self.keys.len() == other.keys.len()
            && self
                .keys
                .iter()
                .zip(&other.keys)
                .all(|((a, ka), (b, kb))| a == b && bool::from(ka.ct_eq(&kb[..])))
    }
}

impl Eq for CookieKeys {}

impl std::fmt::Debug for CookieKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the bytes: routing tables are logged.
        f.debug_struct("CookieKeys")
            .field("primary", &self.primary)
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Whether `task_id` can be carried in a cookie value as it is.
fn cookie_safe(task_id: &str) -> bool {
    !task_id.is_empty()
        && task_id.len() <= 64
        && task_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// A signed cookie value naming replica `task_id` at `addr`, issued at `now_ms`, for container
/// port `target` of `service`. None when there is no key to sign with, or the task id cannot
/// be carried (never the case for task ids shoal makes).
pub fn sign(
    keys: &CookieKeys,
    service: &str,
    target: u16,
    task_id: &str,
    addr: SocketAddr,
    now_ms: u64,
) -> Option<String> {
    let id = keys.primary?;
    if !cookie_safe(task_id) {
        return None;
    }
    let s = SEPARATOR;
    let signed = format!(
        "{SIGNED_TAG}{s}{id}{s}{}{s}{task_id}{s}{addr}",
        now_ms / 1000
    );
    let tag = keys
        .mac(id, service, target, &signed)?
        .finalize()
        .into_bytes();
    Some(format!("{signed}{s}{}", hex::encode(&tag[..MAC_BYTES])))
}

/// The value to set in a response from replica `task_id` at `addr` of `route`: signed when the
/// node has keys, else the bare task id.
pub fn cookie_value(
    keys: &CookieKeys,
    route: &Route,
    task_id: &str,
    addr: SocketAddr,
    now_ms: u64,
) -> String {
    sign(keys, &route.service, route.target, task_id, addr, now_ms)
        .unwrap_or_else(|| task_id.to_string())
}

/// What a signed cookie says, once its signature checked out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pin<'a> {
    /// The replica's task id.
    pub task_id: &'a str,
    /// Its endpoint when the cookie was issued.
    pub addr: SocketAddr,
    /// When it was issued, by the issuing node's clock (ms since the epoch, whole seconds).
    pub issued_ms: u64,
    /// The key it was signed under.
    pub key_id: u32,
}

/// Why a cookie value is not followed at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CookieError {
    /// It carries the signed format's tag but does not parse as one.
    #[error("malformed signed cookie")]
    Malformed,
    /// It parses, under a key this node holds, but the signature does not match: made or
    /// altered outside the cluster, or issued for another service or port.
    #[error("bad cookie signature")]
    BadSignature,
}

/// A cookie value, read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim<'a> {
    /// Signed by a member of the cluster: the endpoint may be trusted.
    Signed(Pin<'a>),
    /// A task id alone, unproven: a bare (old-format) value, or a signed one under a key this
    /// node does not hold (retired, or never the cluster's).
    Unproven(&'a str),
    /// Not to be followed.
    Invalid(CookieError),
}

/// Reads and checks a cookie value for container port `target` of `service`.
pub fn read<'a>(value: &'a str, keys: &CookieKeys, service: &str, target: u16) -> Claim<'a> {
    if value.len() > MAX_VALUE_BYTES {
        return Claim::Invalid(CookieError::Malformed);
    }
    let Some(rest) = value
        .strip_prefix(SIGNED_TAG)
        .and_then(|r| r.strip_prefix(SEPARATOR))
    else {
        return if cookie_safe(value) {
            Claim::Unproven(value)
        } else {
            Claim::Invalid(CookieError::Malformed)
        };
    };
    let Some((signed, tag)) = value.rsplit_once(SEPARATOR) else {
        return Claim::Invalid(CookieError::Malformed);
    };
    let fields: Vec<&str> = rest.split(SEPARATOR).collect();
    let [key, issued, task_id, addr, _tag] = fields[..] else {
        return Claim::Invalid(CookieError::Malformed);
    };
    let parsed = (
        key.parse::<u32>(),
        issued.parse::<u64>(),
        addr.parse::<SocketAddr>(),
        hex::decode(tag),
    );
    let (Ok(key_id), Ok(issued_s), Ok(addr), Ok(tag)) = parsed else {
        return Claim::Invalid(CookieError::Malformed);
    };
    if tag.len() != MAC_BYTES || !cookie_safe(task_id) {
        return Claim::Invalid(CookieError::Malformed);
    }
    let Some(mac) = keys.mac(key_id, service, target, signed) else {
        return Claim::Unproven(task_id);
    };
    if mac.verify_truncated_left(&tag).is_err() {
        return Claim::Invalid(CookieError::BadSignature);
    }
    Claim::Signed(Pin {
        task_id,
        addr,
        issued_ms: issued_s.saturating_mul(1000),
        key_id,
    })
}

/// Where a request with a sticky cookie goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision<'a> {
    /// To the next replica in turn (no cookie, or one that cannot be followed); the response
    /// sets a new cookie.
    Balance,
    /// To this replica, which this node knows is ready (the balancer still passes over it while
    /// it is held for a failed connection). `refresh`: set the cookie again, re-signed.
    Replica {
        /// The replica's task id.
        task_id: &'a str,
        /// The cookie is old, unsigned or signed under an older key.
        refresh: bool,
    },
    /// Straight to this endpoint, first: a signed, recent cookie for a replica this node has not
    /// heard of, because its view lags. If it cannot be reached, balance.
    Direct {
        /// The replica's task id, as the cookie names it.
        task_id: &'a str,
        /// Its endpoint, as the cookie carries it.
        addr: SocketAddr,
    },
}

/// Where a request whose cookie holds `value` goes on `route`, at `now_ms`. The rules:
///
/// 1. A cookie naming a replica of `route`'s ready backends goes there, signed or not (an
///    unsigned one only ever picks among ready replicas, which any client may reach).
/// 2. A signed cookie naming a replica this node knows but that is not ready (starting,
///    unhealthy, stopping, finished, on a down node) is balanced: the session moves.
/// 3. A signed cookie whose endpoint is another ready replica's is balanced: the address was
///    reused, and the request must not reach a replica it was not meant for.
/// 4. A signed cookie naming a replica this node has never heard of goes straight to its
///    endpoint, if issued within [`ENDPOINT_TRUST_MS`] (the replica was ready when a cluster
///    member issued it; this node's view lags).
/// 5. Anything else (no cookie, tampered, malformed, too old, an unproven task id that is not
///    ready) is balanced.
pub fn decide<'a>(
    value: Option<&'a str>,
    keys: &CookieKeys,
    route: &Route,
    now_ms: u64,
) -> Decision<'a> {
    let Some(value) = value else {
        return Decision::Balance;
    };
    let ready = |task: &str| route.backends.iter().any(|b| b.task_id == task);
    match read(value, keys, &route.service, route.target) {
        Claim::Invalid(_) => Decision::Balance,
        Claim::Unproven(task_id) if ready(task_id) => Decision::Replica {
            task_id,
            // Upgrade it to a signed cookie, when this node can sign.
            refresh: keys.primary.is_some(),
        },
        Claim::Unproven(_) => Decision::Balance,
        Claim::Signed(pin) if ready(pin.task_id) => Decision::Replica {
            task_id: pin.task_id,
            refresh: Some(pin.key_id) != keys.primary
                || now_ms.saturating_sub(pin.issued_ms) >= REFRESH_AFTER_MS,
        },
        Claim::Signed(pin) => {
            let known = route.not_ready.contains(pin.task_id);
            let reused = route.backends.iter().any(|b| b.addr == pin.addr);
            let recent = now_ms.abs_diff(pin.issued_ms) <= ENDPOINT_TRUST_MS;
            if known || reused || !recent {
                Decision::Balance
            } else {
                Decision::Direct {
                    task_id: pin.task_id,
                    addr: pin.addr,
                }
            }
        }
    }
}

/// Label keys shoal understands for its own sticky sessions.
pub const SHOAL_STICKY: &str = "shoal.ingress.sticky";
/// shoal's own cookie name label.
pub const SHOAL_STICKY_COOKIE: &str = "shoal.ingress.sticky.cookie";

const TRAEFIK_V1: &str = "traefik.backend.loadbalancer.stickiness";
const TRAEFIK_V1_OLD: &str = "traefik.backend.loadbalancer.sticky";
const TRAEFIK_V1_NAME: &str = "traefik.backend.loadbalancer.stickiness.cookieName";

/// The sticky-session setting of a service, from its `deploy.labels`. `Ok(None)`: not sticky.
/// An unreadable value (a boolean that is not one, a bad cookie name) is an error naming the label.
pub fn from_labels(
    service: &str,
    labels: &BTreeMap<String, String>,
) -> Result<Option<StickyCookie>, String> {
    let mut on = false;
    let mut cookie = StickyCookie::named(default_cookie_name(service));
    for (key, value) in labels {
        let flag = || parse_bool(value).map_err(|e| format!("label {key}: {e}"));
        match key.as_str() {
            SHOAL_STICKY | TRAEFIK_V1 | TRAEFIK_V1_OLD => on |= flag()?,
            SHOAL_STICKY_COOKIE | TRAEFIK_V1_NAME => {
                cookie.name = cookie_name(value).map_err(|e| format!("label {key}: {e}"))?;
            }
            _ => {
                let Some(rest) = traefik_v2_sticky(key) else {
                    continue;
                };
                match rest.as_str() {
                    // `sticky.cookie=true`, or `sticky.cookie={}` in Traefik's map syntax.
                    "" => on |= value.trim() == "{}" || flag()?,
                    ".name" => {
                        on = true;
                        cookie.name =
                            cookie_name(value).map_err(|e| format!("label {key}: {e}"))?;
                    }
                    ".secure" => {
                        on = true;
                        cookie.secure = flag()?;
                    }
                    ".httponly" => {
                        on = true;
                        cookie.http_only = flag()?;
                    }
                    ".samesite" => {
                        on = true;
                        cookie.same_site = same_site(value)
                            .map_err(|e| format!("label {key}: {e}"))?
                            .map(str::to_string);
                    }
                    // Options shoal does not apply (maxage, path, domain): sticky all the same.
                    other if other.starts_with('.') => on = true,
                    _ => {}
                }
            }
        }
    }
    Ok(on.then_some(cookie))
}

/// For `traefik.http.services.NAME.loadbalancer.sticky.cookie[REST]`, REST lower-cased: Traefik
/// matches label keys case-insensitively (`httpOnly`, `sameSite`, `loadBalancer`).
fn traefik_v2_sticky(key: &str) -> Option<String> {
    let rest = key.strip_prefix("traefik.http.services.")?;
    let (_name, option) = rest.split_once('.')?;
    option
        .to_ascii_lowercase()
        .strip_prefix("loadbalancer.sticky.cookie")
        .map(str::to_string)
}

/// `shoal_SERVICE`, with characters a cookie name cannot hold replaced by `_`. One name per
/// service, because a browser sends a host's cookies to every port of it.
pub fn default_cookie_name(service: &str) -> String {
    let clean: String = service
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("shoal_{clean}")
}

fn cookie_name(value: &str) -> Result<String, String> {
    let name = value.trim();
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
    if valid {
        Ok(name.to_string())
    } else {
        Err(format!(
            "{value:?} is not a cookie name (1 to 64 letters, digits or !#$%&'*+-.^_`|~)"
        ))
    }
}

fn same_site(value: &str) -> Result<Option<&'static str>, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "none" => Ok(Some("None")),
        "lax" => Ok(Some("Lax")),
        "strict" => Ok(Some("Strict")),
        other => Err(format!(
            "{other:?} is not a SameSite value (none, lax, strict)"
        )),
    }
}

/// A boolean as Traefik (Go's `strconv.ParseBool`) reads it.
pub(crate) fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(format!("{other:?} is not a boolean (true or false)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_label_is_not_sticky() {
        assert_eq!(from_labels("s_web", &labels(&[("a", "b")])), Ok(None));
    }

    #[test]
    fn every_dialect_turns_it_on() {
        for key in [
            "shoal.ingress.sticky",
            "traefik.backend.loadbalancer.stickiness",
            "traefik.backend.loadbalancer.sticky",
            "traefik.http.services.web.loadbalancer.sticky.cookie",
            "traefik.http.services.web.loadBalancer.sticky.cookie",
        ] {
            let got = from_labels("s_web", &labels(&[(key, "true")])).unwrap();
            assert_eq!(got, Some(StickyCookie::named("shoal_s_web")), "{key}");
            assert_eq!(from_labels("s_web", &labels(&[(key, "false")])), Ok(None));
        }
    }

    #[test]
    fn traefik_v2_cookie_options_are_read() {
        let got = from_labels(
            "s_web",
            &labels(&[
                (
                    "traefik.http.services.web.loadbalancer.sticky.cookie.name",
                    "sid",
                ),
                (
                    "traefik.http.services.web.loadbalancer.sticky.cookie.secure",
                    "true",
                ),
                (
                    "traefik.http.services.web.loadbalancer.sticky.cookie.httpOnly",
                    "true",
                ),
                (
                    "traefik.http.services.web.loadbalancer.sticky.cookie.sameSite",
                    "strict",
                ),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(got.name, "sid");
        assert_eq!(
            got.set_cookie("t1"),
            "sid=t1; Path=/; Secure; HttpOnly; SameSite=Strict"
        );
    }

    #[test]
    fn traefik_v1_cookie_name_is_read() {
        let got = from_labels(
            "s_web",
            &labels(&[
                ("traefik.backend.loadbalancer.stickiness", "true"),
                (
                    "traefik.backend.loadbalancer.stickiness.cookieName",
                    "web_sticky",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(got, Some(StickyCookie::named("web_sticky")));
    }

    #[test]
    fn bad_values_name_the_label() {
        let err = from_labels("s", &labels(&[("shoal.ingress.sticky", "yes please")])).unwrap_err();
        assert!(
            err.contains("shoal.ingress.sticky") && err.contains("boolean"),
            "{err}"
        );
        let err = from_labels(
            "s",
            &labels(&[(
                "traefik.http.services.x.loadbalancer.sticky.cookie.name",
                "a b",
            )]),
        )
        .unwrap_err();
        assert!(err.contains("cookie name"), "{err}");
    }

    #[test]
    fn unrelated_traefik_labels_are_ignored() {
        let got = from_labels(
            "s",
            &labels(&[
                ("traefik.http.services.web.loadbalancer.server.port", "8080"),
                ("traefik.http.routers.web.rule", "Host(`x`)"),
            ]),
        );
        assert_eq!(got, Ok(None));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let c = StickyCookie::named("shoal_web");
        assert_eq!(c.find_in("a=1; shoal_web=abc; b=2"), Some("abc"));
        assert_eq!(c.find_in("shoal_web=\"abc\""), Some("abc"));
        assert_eq!(c.find_in("shoal_webx=abc"), None);
        assert_eq!(c.find_in(""), None);
    }

    mod signed {
        use proptest::prelude::*;

        use super::super::*;
        use crate::{
            identity::NodeId,
            routing::routes::Backend,
            seal::{GossipKey, Keyring},
        };

        const NOW: u64 = 1_800_000_000_000;

        fn keys() -> CookieKeys {
            CookieKeys::from_keyring(&Keyring::new(1, GossipKey([7; 32])))
        }

        fn addr(last: u8) -> SocketAddr {
            SocketAddr::from(([10, 0, 0, last], 32_000))
        }

        fn route(ready: &[(&str, u8)], not_ready: &[&str]) -> Route {
            Route {
                service: "s_web".into(),
                target: 8080,
                sticky: Some(StickyCookie::named("shoal_s_web")),
                backends: ready
                    .iter()
                    .map(|(task, last)| Backend {
                        task_id: task.to_string(),
                        node: NodeId(1),
                        addr: addr(*last),
                    })
                    .collect(),
                not_ready: not_ready.iter().map(|t| t.to_string()).collect(),
            }
        }

        fn cookie(keys: &CookieKeys, task: &str, last: u8, at: u64) -> String {
            sign(keys, "s_web", 8080, task, addr(last), at).unwrap()
        }

        #[test]
        fn a_signed_cookie_reads_back_what_it_was_given() {
            let value = cookie(&keys(), "a1b2c3", 5, NOW + 999);
            assert!(
                value.starts_with("s1~1~1800000000~a1b2c3~10.0.0.5:32000~"),
                "{value}"
            );
            assert_eq!(value.len() - value.rfind('~').unwrap() - 1, 2 * MAC_BYTES);
            assert_eq!(
                read(&value, &keys(), "s_web", 8080),
                Claim::Signed(Pin {
                    task_id: "a1b2c3",
                    addr: addr(5),
                    issued_ms: NOW,
                    key_id: 1
                })
            );
            let v6 = sign(
                &keys(),
                "s_web",
                8080,
                "t",
                "[fd00::1]:80".parse().unwrap(),
                NOW,
            );
            assert!(matches!(
                read(&v6.unwrap(), &keys(), "s_web", 8080),
                Claim::Signed(_)
            ));
        }

        #[test]
        fn any_change_breaks_the_signature() {
            let keys = keys();
            let value = cookie(&keys, "a1b2c3", 5, NOW);
            let bad = Claim::Invalid(CookieError::BadSignature);
            for altered in [
                value.replace("a1b2c3", "a1b2c4"),
                value.replace("10.0.0.5", "10.0.0.6"),
                value.replace(":32000", ":32001"),
                value.replace("1800000000", "1800000060"),
            ] {
                assert_eq!(read(&altered, &keys, "s_web", 8080), bad, "{altered}");
            }
            // Issued for another service or port: not valid here.
            assert_eq!(read(&value, &keys, "s_api", 8080), bad);
            assert_eq!(read(&value, &keys, "s_web", 8081), bad);
            // Another cluster's key.
            let theirs = CookieKeys::from_keyring(&Keyring::new(1, GossipKey([8; 32])));
            assert_eq!(read(&value, &theirs, "s_web", 8080), bad);
        }

        #[test]
        fn every_key_of_the_ring_checks_the_primary_signs() {
            let old = keys();
            let value = cookie(&old, "t1", 5, NOW);
            // Rotation: key 2 added, then promoted; key 1 still checks.
            let mut ring = Keyring::new(1, GossipKey([7; 32]));
            ring.add(2, GossipKey([9; 32])).unwrap();
            ring.promote(2).unwrap();
            let both = CookieKeys::from_keyring(&ring);
            assert!(matches!(
                read(&value, &both, "s_web", 8080),
                Claim::Signed(Pin { key_id: 1, .. })
            ));
            assert!(cookie(&both, "t1", 5, NOW).starts_with("s1~2~"));
            // Key 1 retired: the task id is still worth what an unsigned cookie's is.
            ring.retire(1).unwrap();
            let new = CookieKeys::from_keyring(&ring);
            assert_eq!(read(&value, &new, "s_web", 8080), Claim::Unproven("t1"));
        }

        #[test]
        fn bare_and_malformed_values() {
            let keys = keys();
            assert_eq!(
                read("a1b2c3", &keys, "s_web", 8080),
                Claim::Unproven("a1b2c3")
            );
            let malformed = Claim::Invalid(CookieError::Malformed);
            for value in [
                "",
                "s1~",
                "s1~1~2~t~10.0.0.1:1",
                "s1~1~2~t~nowhere~00",
                "s1~x~2~t~10.0.0.1:1~00000000000000000000000000000000",
                "s1~1~2~t~10.0.0.1:1~0000",
                "s1~1~2~t~10.0.0.1:1~00000000000000000000000000000000~more",
                "s1~1~2~t/u~10.0.0.1:1~00000000000000000000000000000000",
                "a b",
            ] {
                assert_eq!(read(value, &keys, "s_web", 8080), malformed, "{value:?}");
            }
            let long = "a".repeat(MAX_VALUE_BYTES + 1);
            assert_eq!(read(&long, &keys, "s_web", 8080), malformed);
        }

        #[test]
        fn a_known_ready_replica_is_kept_and_its_cookie_renewed_when_due() {
            let keys = keys();
            let r = route(&[("t1", 1), ("t2", 2)], &[]);
            let fresh = cookie(&keys, "t2", 2, NOW);
            let d = decide(Some(&fresh), &keys, &r, NOW + 1_000);
            assert_eq!(
                d,
                Decision::Replica {
                    task_id: "t2",
                    refresh: false
                }
            );
            let d = decide(Some(&fresh), &keys, &r, NOW + REFRESH_AFTER_MS);
            assert_eq!(
                d,
                Decision::Replica {
                    task_id: "t2",
                    refresh: true
                }
            );
            // Long after issue, a node that knows the replica still keeps the session.
            let d = decide(Some(&fresh), &keys, &r, NOW + 10 * ENDPOINT_TRUST_MS);
            assert_eq!(
                d,
                Decision::Replica {
                    task_id: "t2",
                    refresh: true
                }
            );
            // An old-format cookie for a ready replica: kept, and upgraded to a signed one.
            let d = decide(Some("t1"), &keys, &r, NOW);
            assert_eq!(
                d,
                Decision::Replica {
                    task_id: "t1",
                    refresh: true
                }
            );
            // Without keys (no keyring), bare cookies stay bare and are not renewed.
            let none = CookieKeys::default();
            let d = decide(Some("t1"), &none, &r, NOW);
            assert_eq!(
                d,
                Decision::Replica {
                    task_id: "t1",
                    refresh: false
                }
            );
            assert_eq!(cookie_value(&none, &r, "t1", addr(1), NOW), "t1");
        }

        #[test]
        fn a_lagging_node_follows_a_recent_signed_cookie_to_its_endpoint() {
            let keys = keys();
            let value = cookie(&keys, "t9", 9, NOW);
            let lagging = route(&[("t1", 1)], &[]);
            let direct = Decision::Direct {
                task_id: "t9",
                addr: addr(9),
            };
            assert_eq!(decide(Some(&value), &keys, &lagging, NOW + 1_000), direct);
            assert_eq!(decide(Some(&value), &keys, &route(&[], &[]), NOW), direct);
            // Clocks that disagree a little.
            assert_eq!(decide(Some(&value), &keys, &lagging, NOW - 5_000), direct);
            // Too old: the replica is more likely gone than unreported.
            let late = NOW + ENDPOINT_TRUST_MS + 1_000;
            assert_eq!(
                decide(Some(&value), &keys, &lagging, late),
                Decision::Balance
            );
        }

        #[test]
        fn a_known_unready_replica_or_a_reused_endpoint_is_not_followed() {
            let keys = keys();
            let value = cookie(&keys, "t9", 9, NOW);
            let stopping = route(&[("t1", 1)], &["t9"]);
            assert_eq!(
                decide(Some(&value), &keys, &stopping, NOW),
                Decision::Balance
            );
            // Another ready replica has the address now.
            let reused = route(&[("t1", 9)], &[]);
            assert_eq!(decide(Some(&value), &keys, &reused, NOW), Decision::Balance);
        }

        #[test]
        fn forged_or_unproven_cookies_only_ever_pick_among_ready_replicas() {
            let keys = keys();
            let r = route(&[("t1", 1)], &[]);
            // A bare task id or a cookie under an unknown key for an unknown replica: balanced.
            assert_eq!(decide(Some("t9"), &keys, &r, NOW), Decision::Balance);
            let theirs = CookieKeys::from_keyring(&Keyring::new(3, GossipKey([1; 32])));
            let foreign = cookie(&theirs, "t9", 9, NOW);
            assert_eq!(decide(Some(&foreign), &keys, &r, NOW), Decision::Balance);
            // Tampered: balanced, even when it names a ready replica.
            let tampered = cookie(&keys, "t1", 1, NOW).replace("10.0.0.1", "10.0.0.7");
            assert_eq!(decide(Some(&tampered), &keys, &r, NOW), Decision::Balance);
            assert_eq!(decide(None, &keys, &r, NOW), Decision::Balance);
        }

        #[test]
        fn keys_never_show_in_debug_output() {
            let shown = format!("{:?}", keys());
            assert!(shown.contains("primary: Some(1)"), "{shown}");
            assert!(!shown.contains("7"), "{shown}");
            assert_eq!(keys(), keys());
            assert_ne!(keys(), CookieKeys::default());
        }

        proptest! {
            #[test]
            fn reading_any_value_never_panics(value in "\\PC{0,300}") {
                let _ = read(&value, &keys(), "s_web", 8080);
            }

            #[test]
            fn no_altered_cookie_is_signed(pos in 0usize..200, c in "[-~.:0-9a-z]") {
                let keys = keys();
                let value = cookie(&keys, "a1b2c3", 5, NOW);
                let pos = pos % value.len();
                let mut altered = value.clone();
                altered.replace_range(pos..pos + 1, &c);
                prop_assume!(altered != value);
                let claim = read(&altered, &keys, "s_web", 8080);
                prop_assert!(!matches!(claim, Claim::Signed(_)), "{altered}");
            }
        }
    }

    #[test]
    fn default_names_are_valid_cookie_names() {
        assert_eq!(default_cookie_name("demo_web"), "shoal_demo_web");
        assert_eq!(default_cookie_name("a b/c"), "shoal_a_b_c");
    }
}
