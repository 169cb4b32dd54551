//! The one public error type, and the key paths that every error and warning names.

use std::fmt;

/// One step of a key path: a mapping key or a list index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    /// A mapping key.
    Key(String),
    /// A list index (0-based).
    Index(usize),
}

/// Where a value sits in a stack file, shown as `services.web.ports[0]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(pub(crate) Vec<Segment>);

impl KeyPath {
    /// The document root (shown as nothing).
    pub(crate) fn root() -> Self {
        KeyPath(Vec::new())
    }

    /// This path followed by a mapping key.
    pub(crate) fn key(&self, key: &str) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.to_string()));
        KeyPath(segments)
    }

    /// This path followed by a list index.
    pub(crate) fn index(&self, index: usize) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        KeyPath(segments)
    }

    /// The last mapping key, if the path ends in one.
    pub(crate) fn last_key(&self) -> Option<&str> {
        match self.0.last() {
            Some(Segment::Key(k)) => Some(k),
            _ => None,
        }
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(k) if i == 0 => f.write_str(k)?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A problem found at a key path, before it is tied to a file and line.
///
/// Conversion code only knows paths; `mod.rs` finds the line by looking the path up in the files,
/// so the small parsers stay free of location bookkeeping.
#[derive(Debug)]
pub(crate) struct Failure {
    /// Where in the document.
    pub(crate) path: KeyPath,
    /// What is wrong, without the path.
    pub(crate) message: String,
    /// Index of the file the value came from, when known; otherwise every file is searched.
    pub(crate) file: Option<usize>,
}

impl Failure {
    /// A failure at `path` whose file is found by searching.
    pub(crate) fn at(path: &KeyPath, message: impl Into<String>) -> Self {
        Failure {
            path: path.clone(),
            message: message.into(),
            file: None,
        }
    }
}

/// Something accepted but worth telling (an ignored key, an unset variable...), at a key path;
/// `mod.rs` adds the file, line and column when it renders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Warning {
    /// Where in the document.
    pub(crate) path: KeyPath,
    /// What happened, without the path.
    pub(crate) message: String,
    /// Index of the file it came from, when known; otherwise every file is searched.
    pub(crate) file: Option<usize>,
}

impl Warning {
    /// A warning at `path` whose file is found by searching.
    pub(crate) fn at(path: &KeyPath, message: impl Into<String>) -> Self {
        Warning {
            path: path.clone(),
            message: message.into(),
            file: None,
        }
    }
}

/// Where in which file something is. Line and column are 1-based; either may be unknown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The file name the caller gave.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        Ok(())
    }
}

/// Why a stack could not be parsed. Every variant about file contents names the file and, when it
/// is known, the line, column and key path, e.g.
/// `stack.yml:14:7: services.web.deploy.replicas: invalid type: string "three", expected a
/// non-negative integer`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ComposeError {
    /// `parse_stack` was given no file.
    #[error("no stack file given")]
    NoFiles,
    /// The stack name is not `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
    #[error("invalid stack name {name:?}: {reason}")]
    StackName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file is over the size limit; it was not parsed.
    #[error("{file}: file is {}; stack files are limited to {}", mib_1dp(*size), mib(*limit))]
    TooLarge {
        /// The file name the caller gave.
        file: String,
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The YAML itself is malformed (bad indentation, unclosed quote, several documents...).
    #[error("{at}: {message}")]
    Syntax {
        /// Where.
        at: Location,
        /// What libyaml said, without its own position.
        message: String,
    },
    /// Valid YAML that is not a valid stack file: wrong type, bad value, unknown top-level key,
    /// missing image, unset required variable, too many alias expansions...
    #[error("{at}: {}{message}", path_prefix(path))]
    Invalid {
        /// Where.
        at: Location,
        /// Key path such as `services.web.deploy.replicas` (empty for the whole document).
        path: String,
        /// What is wrong.
        message: String,
    },
}

fn path_prefix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}

const MIB: usize = 1 << 20;

/// A size such as `50.0 MiB`.
fn mib_1dp(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

/// A limit such as `4 MiB` (whole when it is).
fn mib(bytes: usize) -> String {
    if bytes % MIB == 0 {
        format!("{} MiB", bytes / MIB)
    } else {
        mib_1dp(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_display_like_compose_docs() {
        let p = KeyPath::root()
            .key("services")
            .key("web")
            .key("ports")
            .index(2);
        assert_eq!(p.to_string(), "services.web.ports[2]");
        assert_eq!(KeyPath::root().to_string(), "");
    }

    #[test]
    fn sizes_are_readable() {
        assert_eq!(mib(4 << 20), "4 MiB");
        assert_eq!(mib(50 * 1000 * 1000), "47.7 MiB");
        assert_eq!(mib_1dp(50 << 20), "50.0 MiB");
    }

    #[test]
    fn invalid_shows_location_and_path() {
        let e = ComposeError::Invalid {
            at: Location {
                file: "stack.yml".into(),
                line: Some(14),
                column: Some(7),
            },
            path: "services.web.deploy.replicas".into(),
            message: "bad".into(),
        };
        assert_eq!(
            e.to_string(),
            "stack.yml:14:7: services.web.deploy.replicas: bad"
        );
    }
}
