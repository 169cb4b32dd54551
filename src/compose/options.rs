//! The container options of a service that Swarm passes to every task: `user`, `working_dir`,
//! `hostname`, `stop_signal`, `stop_grace_period`, `init`, `tty`, `read_only`, `cap_add`,
//! `cap_drop`, `sysctls`, `ulimits`, `logging`, `dns`, `dns_search`, `extra_hosts`; and
//! `env_file`, read when the stack is deployed, relative to the stack file, as `docker stack
//! deploy` reads it.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Component, Path, PathBuf},
};

use shoal_core::desired::spec::{LoggingSpec, ServiceSpec, Ulimit};

use super::convert::{pairs, Ctx};
use super::error::{Failure, KeyPath, Warning};
use super::model::{
    Lenient, RawEnvFile, RawEnvFileLong, RawEnvFiles, RawService, RawUlimit, RawUlimitPair, Scalar,
    StringOrList,
};
use super::units;

/// What a stack file may refer to outside itself, and how to read it. The compose module does no
/// IO of its own: the CLI passes the directory of the (first) stack file, the home directory,
/// and a reader.
pub struct FileContext<'a> {
    /// Relative bind sources and `env_file` paths are resolved against it; None leaves relative
    /// bind sources as written and refuses `env_file`.
    pub base_dir: Option<&'a Path>,
    /// What `~` stands for in bind sources; None leaves `~` as written.
    pub home: Option<&'a Path>,
    /// Reads a file (an `env_file`) into text.
    pub read: &'a dyn Fn(&Path) -> Result<String, String>,
}

impl FileContext<'static> {
    /// No directory, no home, no reading: what `parse_stack` uses.
    pub fn none() -> Self {
        FileContext {
            base_dir: None,
            home: None,
            read: &|path| {
                Err(format!(
                    "{}: no stack file directory to read it from",
                    path.display()
                ))
            },
        }
    }
}

/// Largest `env_file` read.
const MAX_ENV_FILE_BYTES: usize = 4 << 20;

/// Docker's ulimit names (`man setrlimit`, as `docker run --ulimit` accepts them).
const ULIMITS: [&str; 15] = [
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// The raw options, taken out of the service before the rest is converted.
#[derive(Default)]
pub(crate) struct RawOptions {
    env_file: Option<RawEnvFiles>,
    user: Option<Scalar>,
    working_dir: Option<String>,
    hostname: Option<String>,
    stop_signal: Option<Scalar>,
    stop_grace_period: Option<Scalar>,
    init: Option<Lenient<bool>>,
    tty: Option<Lenient<bool>>,
    read_only: Option<Lenient<bool>>,
    cap_add: Option<Vec<String>>,
    cap_drop: Option<Vec<String>>,
    sysctls: Option<super::model::ListOrEntries<Scalar>>,
    ulimits: Option<super::model::Entries<RawUlimit>>,
    logging: Option<super::model::RawLogging>,
    dns: Option<StringOrList>,
    dns_search: Option<StringOrList>,
    extra_hosts: Option<super::model::ListOrEntries<Scalar>>,
}

impl RawOptions {
    /// Moves the option fields out of `raw`.
    pub(crate) fn take(raw: &mut RawService) -> Self {
        RawOptions {
            env_file: raw.env_file.take(),
            user: raw.user.take(),
            working_dir: raw.working_dir.take(),
            hostname: raw.hostname.take(),
            stop_signal: raw.stop_signal.take(),
            stop_grace_period: raw.stop_grace_period.take(),
            init: raw.init.take(),
            tty: raw.tty.take(),
            read_only: raw.read_only.take(),
            cap_add: raw.cap_add.take(),
            cap_drop: raw.cap_drop.take(),
            sysctls: raw.sysctls.take(),
            ulimits: raw.ulimits.take(),
            logging: raw.logging.take(),
            dns: raw.dns.take(),
            dns_search: raw.dns_search.take(),
            extra_hosts: raw.extra_hosts.take(),
        }
    }
}

fn no_space(path: &KeyPath, what: &str, value: &str) -> Result<(), Failure> {
    if value.is_empty() || value.contains(char::is_whitespace) {
        return Err(Failure::at(
            path,
            format!("invalid {what} {value:?}: empty or with spaces"),
        ));
    }
    Ok(())
}

/// Fills the option fields of `spec` from `raw` (the service at `path`). `env_file` entries go
/// under the variables `spec.env` already has from `environment`, which win.
pub(crate) fn apply(
    ctx: &mut Ctx<'_>,
    path: &KeyPath,
    raw: RawOptions,
    spec: &mut ServiceSpec,
) -> Result<(), Failure> {
    if let Some(files) = raw.env_file {
        let from_files = env_files(ctx, &path.key("env_file"), files)?;
        for (k, v) in from_files {
            spec.env.entry(k).or_insert(v);
        }
    }
    if let Some(Scalar(user)) = raw.user {
        no_space(&path.key("user"), "user", &user)?;
        spec.user = Some(user);
    }
    if let Some(dir) = raw.working_dir {
        if !dir.starts_with('/') {
            return Err(Failure::at(
                &path.key("working_dir"),
                format!("{dir:?} is not an absolute path"),
            ));
        }
        spec.working_dir = Some(dir);
    }
    if let Some(host) = raw.hostname {
        let at = path.key("hostname");
        if host.contains("{{") {
            return Err(Failure::at(
                &at,
                "Swarm's templates ({{.Node.Hostname}}...) are not supported by shoal",
            ));
        }
        check_hostname(&host).map_err(|e| Failure::at(&at, e))?;
        spec.hostname = Some(host);
    }
    if let Some(Scalar(signal)) = raw.stop_signal {
        let at = path.key("stop_signal");
        let ok = !signal.is_empty()
            && signal
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-');
        if !ok {
            return Err(Failure::at(&at, format!("{signal:?} is not a signal")));
        }
        spec.stop_signal = Some(signal);
    }
    if let Some(Scalar(grace)) = raw.stop_grace_period {
        let at = path.key("stop_grace_period");
        spec.stop_grace_ms = Some(units::duration_ms(&grace).map_err(|e| Failure::at(&at, e))?);
    }
    spec.init = raw.init.map(|Lenient(b)| b);
    spec.tty = raw.tty.is_some_and(|Lenient(b)| b);
    spec.read_only = raw.read_only.is_some_and(|Lenient(b)| b);
    for (key, list, out) in [
        ("cap_add", raw.cap_add, &mut spec.cap_add),
        ("cap_drop", raw.cap_drop, &mut spec.cap_drop),
    ] {
        for (i, cap) in list.unwrap_or_default().into_iter().enumerate() {
            no_space(&path.key(key).index(i), "capability", &cap)?;
            if !out.contains(&cap) {
                out.push(cap);
            }
        }
    }
    if let Some(sysctls) = raw.sysctls {
        for (k, v, at) in pairs(&path.key("sysctls"), sysctls)? {
            let Some(v) = v else {
                return Err(Failure::at(&at, format!("sysctl {k} has no value")));
            };
            spec.sysctls.insert(k, v);
        }
    }
    if let Some(ulimits) = raw.ulimits {
        let upath = path.key("ulimits");
        for (name, raw) in ulimits.0 {
            spec.ulimits.push(ulimit(&upath.key(&name), name, raw)?);
        }
        spec.ulimits.sort();
    }
    if let Some(logging) = raw.logging {
        let lpath = path.key("logging");
        let mut options = BTreeMap::new();
        for (k, v) in logging.options.map(|e| e.0).unwrap_or_default() {
            options.insert(k, v.map(|Scalar(s)| s).unwrap_or_default());
        }
        let driver = logging.driver.unwrap_or_default();
        if driver.contains(char::is_whitespace) {
            return Err(Failure::at(
                &lpath.key("driver"),
                format!("invalid log driver {driver:?}"),
            ));
        }
        spec.logging = Some(LoggingSpec { driver, options });
    }
    if let Some(dns) = raw.dns {
        let at = path.key("dns");
        for server in list_of(dns) {
            server
                .parse::<IpAddr>()
                .map_err(|_| Failure::at(&at, format!("{server:?} is not an IP address")))?;
            spec.dns.push(server);
        }
    }
    if let Some(search) = raw.dns_search {
        let at = path.key("dns_search");
        for domain in list_of(search) {
            check_hostname(domain.trim_end_matches('.')).map_err(|e| Failure::at(&at, e))?;
            spec.dns_search.push(domain);
        }
    }
    if let Some(hosts) = raw.extra_hosts {
        for (k, v, at) in extra_host_pairs(&path.key("extra_hosts"), hosts)? {
            spec.extra_hosts.push(extra_host(&at, &k, &v)?);
        }
    }
    Ok(())
}

fn list_of(value: StringOrList) -> Vec<String> {
    match value {
        StringOrList::String(s) => vec![s],
        StringOrList::List(items) => items.into_iter().map(|Scalar(s)| s).collect(),
    }
}

/// A host name as Docker accepts it: dot-separated labels of letters, digits and `-`.
fn check_hostname(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid host name"))
    }
}

/// `extra_hosts` entries as `(host, address, where)`: list items `HOST:IP` or `HOST=IP`, or map
/// entries `HOST: IP`.
fn extra_host_pairs(
    path: &KeyPath,
    raw: super::model::ListOrEntries<Scalar>,
) -> Result<Vec<(String, String, KeyPath)>, Failure> {
    use super::model::ListOrEntries;
    match raw {
        ListOrEntries::List(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, Scalar(s))| {
                let at = path.index(i);
                // The host name holds no `:`, so the first `:` (or `=`) ends it; an IPv6
                // address keeps the rest.
                let split = s.find(['=', ':']);
                match split {
                    Some(n) => Ok((s[..n].to_string(), s[n + 1..].to_string(), at)),
                    None => Err(Failure::at(&at, format!("{s:?} is not HOST:IP"))),
                }
            })
            .collect(),
        ListOrEntries::Map(entries) => entries
            .into_iter()
            .map(|(k, v)| {
                let at = path.key(&k);
                match v {
                    Some(Scalar(ip)) => Ok((k, ip, at)),
                    None => Err(Failure::at(&at, format!("{k} has no address"))),
                }
            })
            .collect(),
    }
}

fn extra_host(at: &KeyPath, host: &str, ip: &str) -> Result<String, Failure> {
    check_hostname(host).map_err(|e| Failure::at(at, e))?;
    let bare = ip
        .strip_prefix('[')
        .and_then(|i| i.strip_suffix(']'))
        .unwrap_or(ip);
    // `host-gateway` is Docker's name for the host's address on the bridge.
    if bare != "host-gateway" && bare.parse::<IpAddr>().is_err() {
        return Err(Failure::at(at, format!("{ip:?} is not an IP address")));
    }
    Ok(format!("{host}:{bare}"))
}

fn limit_value(at: &KeyPath, Scalar(text): &Scalar) -> Result<i64, Failure> {
    text.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= -1)
        .ok_or_else(|| {
            Failure::at(
                at,
                format!("{text:?} is not a limit (an integer, -1: none)"),
            )
        })
}

fn ulimit(at: &KeyPath, name: String, raw: RawUlimit) -> Result<Ulimit, Failure> {
    if !ULIMITS.contains(&name.as_str()) {
        return Err(Failure::at(
            at,
            format!(
                "unknown ulimit {name:?} (expected one of {})",
                ULIMITS.join(", ")
            ),
        ));
    }
    let (soft, hard) = match raw {
        RawUlimit::Single(v) => {
            let n = limit_value(at, &v)?;
            (n, n)
        }
        RawUlimit::Pair(RawUlimitPair { soft, hard }) => {
            let get = |v: Option<Scalar>, key: &str| match v {
                Some(v) => limit_value(&at.key(key), &v),
                None => Err(Failure::at(at, format!("missing {key}"))),
            };
            (get(soft, "soft")?, get(hard, "hard")?)
        }
    };
    // -1 is unlimited, above any number.
    let above = |a: i64, b: i64| b != -1 && (a == -1 || a > b);
    if above(soft, hard) {
        return Err(Failure::at(
            at,
            format!("soft limit {soft} is above the hard limit {hard}"),
        ));
    }
    Ok(Ulimit { name, soft, hard })
}

/// Reads the env files in order (later ones override earlier ones).
fn env_files(
    ctx: &mut Ctx<'_>,
    path: &KeyPath,
    raw: RawEnvFiles,
) -> Result<BTreeMap<String, String>, Failure> {
    let entries: Vec<(String, bool, KeyPath)> = match raw {
        RawEnvFiles::One(p) => vec![(p, true, path.clone())],
        RawEnvFiles::List(items) => {
            let mut out = Vec::new();
            for (i, item) in items.into_iter().enumerate() {
                let at = path.index(i);
                match item {
                    RawEnvFile::Short(p) => out.push((p, true, at)),
                    RawEnvFile::Long(RawEnvFileLong {
                        path,
                        required,
                        format,
                    }) => {
                        if let Some(f) = format.filter(|f| f != "raw") {
                            return Err(Failure::at(
                                &at.key("format"),
                                format!("unknown format {f:?} (shoal reads KEY=VALUE lines)"),
                            ));
                        }
                        let Some(p) = path else {
                            return Err(Failure::at(&at.key("path"), "missing: the file's path"));
                        };
                        out.push((p, required.is_none_or(|Lenient(b)| b), at));
                    }
                }
            }
            out
        }
    };
    let mut env = BTreeMap::new();
    for (file, required, at) in entries {
        let Some(base) = ctx.files.base_dir else {
            return Err(Failure::at(
                &at,
                format!("{file}: env_file needs the stack file's directory"),
            ));
        };
        let full = clean(&base.join(&file));
        let text = match (ctx.files.read)(&full) {
            Ok(text) => text,
            Err(_) if !required => {
                ctx.warnings.push(Warning::at(
                    &at,
                    format!("{} not found, skipped (required: false)", full.display()),
                ));
                continue;
            }
            Err(e) => return Err(Failure::at(&at, format!("cannot read env file: {e}"))),
        };
        if text.len() > MAX_ENV_FILE_BYTES {
            return Err(Failure::at(
                &at,
                format!("{} is larger than 4 MiB", full.display()),
            ));
        }
        for (line_no, line) in text.lines().enumerate() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let where_ = || format!("{}:{}", full.display(), line_no + 1);
            let (key, value) = match line.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (line.trim_end(), None),
            };
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(Failure::at(
                    &at,
                    format!("{}: variable {key:?} is empty or has spaces", where_()),
                ));
            }
            // As docker reads env files: `KEY` alone takes the deploying shell's value, and is
            // left out when that is unset.
            let value = match value {
                Some(v) => v.to_string(),
                None => match ctx.env.get(key) {
                    Some(v) => v.clone(),
                    None => continue,
                },
            };
            env.insert(key.to_string(), value);
        }
    }
    Ok(env)
}

/// A bind source as Docker's compose loader resolves it: `~` against the home directory, a
/// relative path against the stack file's directory. Unchanged when those are not known.
pub(crate) fn resolve_bind(ctx: &Ctx<'_>, source: &str) -> String {
    if source == "~" || source.starts_with("~/") {
        return match ctx.files.home {
            Some(home) => clean(&home.join(source[1..].trim_start_matches('/')))
                .display()
                .to_string(),
            None => source.to_string(),
        };
    }
    let windows = source.as_bytes().get(1) == Some(&b':') || source.starts_with(r"\\");
    if source.starts_with('/') || windows {
        return source.to_string();
    }
    match ctx.files.base_dir {
        Some(base) => clean(&base.join(source)).display().to_string(),
        None => source.to_string(),
    }
}

/// `a/./b/../c` → `a/c`, without touching the file system (Go's `filepath.Clean`).
fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() && !out.has_root() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned() {
        assert_eq!(clean(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(clean(Path::new("/a/../../c")), PathBuf::from("/c"));
    }

    #[test]
    fn hostnames() {
        assert!(check_hostname("web-1.example.com").is_ok());
        for bad in ["", "-a", "a..b", "a_b", "a b"] {
            assert!(check_hostname(bad).is_err(), "{bad}");
        }
    }
}
