//! Sticky sessions: which service labels turn them on, and the cookie that carries them.
//!
//! Stack files written for Traefik work unchanged, so both of its label dialects are read:
//! v1 `traefik.backend.loadbalancer.stickiness=true` (and its older `...sticky=true`), v2
//! `traefik.http.services.NAME.loadbalancer.sticky.cookie=true` (any `sticky.cookie.*` key turns
//! it on, as in Traefik). shoal's own `shoal.ingress.sticky=true` does the same.
//!
//! The cookie's value is the task id of the replica that answered: a later request carrying it goes
//! to that replica while it is ready, else to another one, and the cookie is set again.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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

    /// The `Set-Cookie` header value that pins a client to `task_id`.
    pub fn set_cookie(&self, task_id: &str) -> String {
        let mut out = format!("{}={task_id}; Path=/", self.name);
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

    #[test]
    fn default_names_are_valid_cookie_names() {
        assert_eq!(default_cookie_name("demo_web"), "shoal_demo_web");
        assert_eq!(default_cookie_name("a b/c"), "shoal_a_b_c");
    }
}
