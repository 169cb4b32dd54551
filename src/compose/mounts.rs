//! Service `volumes`: short syntax `src:dst[:ro]` and the long syntax, into binds, named volumes
//! (stack-scoped like Swarm: `data` in stack `app` is `app_data` unless declared external),
//! anonymous volumes and tmpfs. Windows paths (`C:\data`) are understood as docker's loader
//! understands them: a drive letter's colon does not separate fields.

use std::collections::BTreeMap;

use shoal_core::desired::spec::{MountKind, MountSpec};

use super::convert::Ctx;
use super::error::{Failure, KeyPath, Warning};
use super::model::{Lenient, RawMount, RawMountLong};

/// `C:\...` or `C:/...`.
fn is_windows_path(path: &str) -> bool {
    let b = path.as_bytes();
    b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && matches!(b[2], b'\\' | b'/')
}

/// A host path rather than a volume name, by the same rule as compose.
fn is_host_path(source: &str) -> bool {
    source.starts_with(['/', '.', '~']) || source.starts_with(r"\\") || is_windows_path(source)
}

/// A parsed short-syntax volume.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ShortMount<'a> {
    /// Volume name or host path; `None` for an anonymous volume.
    pub(crate) source: Option<&'a str>,
    /// Path in the container.
    pub(crate) target: &'a str,
    /// `:ro`.
    pub(crate) read_only: bool,
    /// Mode options shoal ignores (`z`, `cached`, `nocopy`...).
    pub(crate) unknown: Vec<&'a str>,
}

/// Splits at colons, except the one after a Windows drive letter (`C:\x:/y` is two fields).
fn fields(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let b = text.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        let drive = i == start + 1
            && b[start].is_ascii_alphabetic()
            && matches!(b.get(i + 1), Some(b'\\' | b'/'));
        if c == b':' && !drive {
            out.push(&text[start..i]);
            start = i + 1;
        }
    }
    out.push(&text[start..]);
    out
}

/// Parses `SOURCE:TARGET[:MODE]` or `TARGET`.
pub(crate) fn parse_short(text: &str) -> Result<ShortMount<'_>, String> {
    let parts = fields(text);
    let (source, target, mode) = match parts.as_slice() {
        [target] => (None, *target, None),
        [source, target] => (Some(*source), *target, None),
        [source, target, mode] => (Some(*source), *target, Some(*mode)),
        _ => {
            return Err(format!(
                "invalid volume {text:?}: expected SOURCE:TARGET[:MODE]"
            ))
        }
    };
    if source == Some("") {
        return Err(format!("invalid volume {text:?}: empty source"));
    }
    let mut read_only = false;
    let mut unknown = Vec::new();
    for option in mode.unwrap_or("").split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" => read_only = true,
            "rw" => read_only = false,
            other => unknown.push(other),
        }
    }
    Ok(ShortMount {
        source,
        target,
        read_only,
        unknown,
    })
}

/// What the long syntax's `type` asks for.
enum Kind {
    Plain(MountKind),
    /// A Swarm cluster (CSI) volume.
    Cluster,
}

/// Converts one entry of `services.NAME.volumes` at `path`.
pub(crate) fn mount(
    ctx: &mut Ctx<'_>,
    path: &KeyPath,
    raw: RawMount,
) -> Result<MountSpec, Failure> {
    let (kind, source, target, read_only) = match raw {
        RawMount::Short(text) => {
            let ShortMount {
                source,
                target,
                read_only,
                unknown,
            } = parse_short(&text).map_err(|e| Failure::at(path, e))?;
            for option in unknown {
                ctx.warnings.push(Warning::at(
                    path,
                    format!("volume option {option:?} is not supported by shoal, ignored"),
                ));
            }
            if source.is_none() && ctx.volumes.contains_key(target) {
                // Docker's loader reads this as an anonymous volume mounted at the relative path
                // `vol1`, which every Swarm task then fails on ("invalid mount target"). Refusing
                // it here says what was most likely meant.
                return Err(Failure::at(
                    path,
                    format!(
                        "{target:?} alone is not a mount: it names the volume but not where to \
                         mount it; write \"{target}:/PATH\""
                    ),
                ));
            }
            let kind = match source {
                Some(s) if is_host_path(s) => MountKind::Bind,
                _ => MountKind::Volume,
            };
            (
                Kind::Plain(kind),
                source.map(str::to_string),
                target.to_string(),
                read_only,
            )
        }
        RawMount::Long(RawMountLong {
            kind,
            source,
            target,
            read_only,
        }) => {
            let source = source.filter(|s| !s.is_empty());
            let kind = match kind.as_deref() {
                None => Kind::Plain(match &source {
                    Some(s) if is_host_path(s) => MountKind::Bind,
                    _ => MountKind::Volume,
                }),
                Some("volume") => Kind::Plain(MountKind::Volume),
                Some("bind") => Kind::Plain(MountKind::Bind),
                Some("tmpfs") => Kind::Plain(MountKind::Tmpfs),
                Some("cluster") => Kind::Cluster,
                Some("npipe") => {
                    return Err(Failure::at(
                        &path.key("type"),
                        "named pipes (npipe) exist only on Windows engines; shoal's nodes run \
                         Linux containers",
                    ))
                }
                Some(other) => {
                    return Err(Failure::at(
                        &path.key("type"),
                        format!(
                            "unknown mount type {other:?} (expected volume, bind, tmpfs, \
                             cluster or npipe)"
                        ),
                    ))
                }
            };
            let Some(target) = target else {
                return Err(Failure::at(
                    &path.key("target"),
                    "missing: the path in the container",
                ));
            };
            (kind, source, target, read_only.is_some_and(|Lenient(b)| b))
        }
    };
    check_target(ctx, path, &target)?;
    let (kind, source) = match (kind, source) {
        (Kind::Cluster, source) => (MountKind::Volume, cluster_source(ctx, path, source)?),
        (Kind::Plain(MountKind::Bind), None) => {
            return Err(Failure::at(path, "a bind mount needs a source path"));
        }
        (Kind::Plain(MountKind::Bind), Some(s)) => {
            (MountKind::Bind, super::options::resolve_bind(ctx, &s))
        }
        (Kind::Plain(MountKind::Tmpfs), None) => (MountKind::Tmpfs, String::new()),
        (Kind::Plain(MountKind::Tmpfs), Some(_)) => {
            return Err(Failure::at(path, "a tmpfs mount takes no source"));
        }
        (Kind::Plain(MountKind::Volume), None) => (MountKind::Volume, String::new()),
        (Kind::Plain(MountKind::Volume), Some(s)) if is_host_path(&s) => {
            return Err(Failure::at(
                path,
                format!("{s:?} is a path; use type: bind for host paths"),
            ));
        }
        (Kind::Plain(MountKind::Volume), Some(s)) => (MountKind::Volume, declared(ctx, path, &s)?),
    };
    Ok(MountSpec {
        source,
        target,
        kind,
        read_only,
    })
}

/// The real name of a volume declared at the top level.
fn declared(ctx: &Ctx<'_>, path: &KeyPath, name: &str) -> Result<String, Failure> {
    match ctx.volumes.get(name) {
        Some(d) => Ok(d.name.clone()),
        None => Err(Failure::at(
            path,
            format!("volume {name:?} is not declared in the top-level volumes"),
        )),
    }
}

/// A `type: cluster` volume: Swarm's CSI volumes, which shoal does not have. It is mounted as a
/// node-local named volume, with a warning saying what that loses.
fn cluster_source(
    ctx: &mut Ctx<'_>,
    path: &KeyPath,
    source: Option<String>,
) -> Result<String, Failure> {
    let Some(source) = source else {
        return Err(Failure::at(path, "a cluster volume needs a source"));
    };
    if source.starts_with("group:") {
        return Err(Failure::at(
            path,
            format!(
                "{source:?}: volume groups are a feature of Swarm's CSI cluster volumes, which \
                 shoal does not have"
            ),
        ));
    }
    let name = declared(ctx, path, &source)?;
    ctx.warnings.push(Warning::at(
        path,
        format!(
            "type: cluster (a Swarm CSI volume) is mounted as the node-local volume {name:?}: \
             shoal has no CSI, so each node has its own copy and the data does not follow a \
             replica to another node"
        ),
    ));
    Ok(name)
}

/// A target must be an absolute path. A Windows path is accepted as Swarm accepts it, with a
/// warning: only a Windows engine can mount it.
fn check_target(ctx: &mut Ctx<'_>, path: &KeyPath, target: &str) -> Result<(), Failure> {
    if target.starts_with('/') {
        return Ok(());
    }
    if is_windows_path(target) {
        ctx.warnings.push(Warning::at(
            path,
            format!(
                "target {target:?} is a Windows path: only a Windows engine can mount it, and a \
                 Linux node will fail to start the replica"
            ),
        ));
        return Ok(());
    }
    Err(Failure::at(
        path,
        format!("target {target:?} must be an absolute path in the container"),
    ))
}

/// The form under which two targets are the same mount point: `/data`, `/data/` and `//data/.`
/// are one; Windows paths compare without regard to case or slash direction.
fn normalized(target: &str) -> String {
    if is_windows_path(target) {
        let t = target.replace('/', "\\").to_ascii_lowercase();
        return t.trim_end_matches('\\').to_string();
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Refuses two mounts of one service on the same target, as Docker does ("duplicate mount
/// point"): which one wins would depend on the engine.
pub(crate) fn check_duplicates(path: &KeyPath, mounts: &[MountSpec]) -> Result<(), Failure> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, m) in mounts.iter().enumerate() {
        if let Some(first) = seen.insert(normalized(&m.target), i) {
            return Err(Failure::at(
                &path.index(i),
                format!(
                    "duplicate mount point {:?}: volumes[{first}] already mounts there",
                    m.target
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(source: Option<&'static str>, target: &'static str, ro: bool) -> ShortMount<'static> {
        ShortMount {
            source,
            target,
            read_only: ro,
            unknown: vec![],
        }
    }

    #[test]
    fn short_syntax() {
        assert_eq!(
            parse_short("data:/var/lib/data"),
            Ok(short(Some("data"), "/var/lib/data", false))
        );
        assert_eq!(parse_short("/cache"), Ok(short(None, "/cache", false)));
        assert_eq!(
            parse_short("./conf:/etc/conf:ro"),
            Ok(short(Some("./conf"), "/etc/conf", true))
        );
        assert_eq!(parse_short("/a:/b:rw,z").map(|m| m.unknown), Ok(vec!["z"]));
        assert!(parse_short("a:b:c:d").is_err());
        assert!(parse_short(":/b").is_err());
        assert!(is_host_path("~/x") && is_host_path("../x") && !is_host_path("data"));
    }

    #[test]
    fn windows_paths() {
        assert_eq!(parse_short(r"C:\data"), Ok(short(None, r"C:\data", false)));
        assert_eq!(
            parse_short(r"data:C:\data:ro"),
            Ok(short(Some("data"), r"C:\data", true))
        );
        assert_eq!(
            parse_short(r"D:\host:C:\data"),
            Ok(short(Some(r"D:\host"), r"C:\data", false))
        );
        assert!(is_host_path(r"D:\host") && is_host_path("c:/x") && !is_host_path("c:x"));
        assert_eq!(normalized(r"C:\Data\"), normalized("c:/data"));
    }

    #[test]
    fn same_mount_point() {
        assert_eq!(normalized("/data"), "/data");
        assert_eq!(normalized("/data/"), "/data");
        assert_eq!(normalized("//data/./x/.."), "/data");
        assert_ne!(normalized("/data"), normalized("/Data"));
    }
}
