//! Service `volumes`: short syntax `src:dst[:ro]` and the long syntax, into binds, named volumes
//! (stack-scoped like Swarm: `data` in stack `app` is `app_data` unless declared external), anonymous
//! volumes and tmpfs.

use shoal_core::desired::spec::{MountKind, MountSpec};

use super::convert::Ctx;
use super::error::{Failure, KeyPath, Warning};
use super::model::{Lenient, RawMount, RawMountLong};

/// A host path rather than a volume name, by the same rule as compose.
fn is_host_path(source: &str) -> bool {
    source.starts_with('/')
        || source.starts_with("./")
        || source.starts_with("../")
        || source.starts_with('~')
        || source == "."
        || source == ".."
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

/// Parses `SOURCE:TARGET[:MODE]` or `TARGET`.
pub(crate) fn parse_short(text: &str) -> Result<ShortMount<'_>, String> {
    let parts: Vec<&str> = text.split(':').collect();
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
            let kind = match source {
                Some(s) if is_host_path(s) => MountKind::Bind,
                _ => MountKind::Volume,
            };
            (
                kind,
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
            let kind = kind.unwrap_or(match &source {
                Some(s) if is_host_path(s) => MountKind::Bind,
                _ => MountKind::Volume,
            });
            let Some(target) = target else {
                return Err(Failure::at(
                    &path.key("target"),
                    "missing: the path in the container",
                ));
            };
            (kind, source, target, read_only.is_some_and(|Lenient(b)| b))
        }
    };
    if !target.starts_with('/') {
        return Err(Failure::at(
            path,
            format!("target {target:?} must be an absolute path in the container"),
        ));
    }
    let source = match (kind, source) {
        (MountKind::Bind, None) => {
            return Err(Failure::at(path, "a bind mount needs a source path"));
        }
        (MountKind::Bind, Some(s)) => s,
        (MountKind::Tmpfs, None) => String::new(),
        (MountKind::Tmpfs, Some(_)) => {
            return Err(Failure::at(path, "a tmpfs mount takes no source"));
        }
        (MountKind::Volume, None) => String::new(),
        (MountKind::Volume, Some(s)) if is_host_path(&s) => {
            return Err(Failure::at(
                path,
                format!("{s:?} is a path; use type: bind for host paths"),
            ));
        }
        (MountKind::Volume, Some(s)) => match ctx.volumes.get(&s) {
            Some(declared) => declared.name.clone(),
            None => {
                return Err(Failure::at(
                    path,
                    format!("volume {s:?} is not declared in the top-level volumes"),
                ))
            }
        },
    };
    Ok(MountSpec {
        source,
        target,
        kind,
        read_only,
    })
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
}
