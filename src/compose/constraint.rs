//! Placement constraints (`node.labels.zone == a`) and spread preferences, with Swarm's keys.

use shoal_core::desired::spec::{Constraint, ConstraintKey, ConstraintOp};

const KEYS_HELP: &str = "expected node.id, node.hostname, node.role, node.labels.KEY, \
                         engine.labels.KEY, node.platform.os or node.platform.arch";

/// Parses one constraint. Whitespace around the operator is optional; the fixed keys are
/// case-insensitive as in Swarm, label keys and values keep their case.
pub(crate) fn parse_constraint(text: &str) -> Result<Constraint, String> {
    let (key, op, value) = match (text.find("=="), text.find("!=")) {
        (Some(eq), Some(ne)) if ne < eq => (&text[..ne], ConstraintOp::Ne, &text[ne + 2..]),
        (Some(eq), _) => (&text[..eq], ConstraintOp::Eq, &text[eq + 2..]),
        (None, Some(ne)) => (&text[..ne], ConstraintOp::Ne, &text[ne + 2..]),
        (None, None) => {
            return Err(format!(
                "invalid constraint {text:?}: expected KEY == VALUE or KEY != VALUE"
            ))
        }
    };
    let (key, value) = (key.trim(), value.trim());
    if value.is_empty() {
        return Err(format!("invalid constraint {text:?}: missing value"));
    }
    if value.contains("==") || value.contains("!=") {
        return Err(format!(
            "invalid constraint {text:?}: more than one operator"
        ));
    }
    let lower = key.to_ascii_lowercase();
    let key = match lower.as_str() {
        "node.id" => ConstraintKey::NodeId,
        "node.hostname" => ConstraintKey::NodeHostname,
        "node.role" => {
            if !value.eq_ignore_ascii_case("manager") && !value.eq_ignore_ascii_case("worker") {
                return Err(format!(
                    "invalid constraint {text:?}: node.role is manager or worker"
                ));
            }
            ConstraintKey::NodeRole
        }
        "node.platform.os" => ConstraintKey::PlatformOs,
        "node.platform.arch" => ConstraintKey::PlatformArch,
        _ => {
            let in_text = |e: String| format!("invalid constraint {text:?}: {e}");
            if let Some(label) = label_key(key, "node.labels.") {
                ConstraintKey::NodeLabel(label.map_err(in_text)?.to_string())
            } else if let Some(label) = label_key(key, "engine.labels.") {
                ConstraintKey::EngineLabel(label.map_err(in_text)?.to_string())
            } else if key.is_empty() {
                return Err(format!("invalid constraint {text:?}: missing key"));
            } else {
                return Err(format!(
                    "invalid constraint {text:?}: unknown key {key:?} ({KEYS_HELP})"
                ));
            }
        }
    };
    Ok(Constraint {
        key,
        op,
        value: value.to_string(),
    })
}

/// `Some(Ok(label))` when `key` starts with `prefix` (any case), `Some(Err)` when the label is
/// empty or has spaces, `None` for another prefix.
fn label_key<'a>(key: &'a str, prefix: &str) -> Option<Result<&'a str, String>> {
    let head = key.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let label = &key[prefix.len()..];
    if label.is_empty() || label.contains(char::is_whitespace) {
        return Some(Err(format!("invalid label name {label:?}")));
    }
    Some(Ok(label))
}

/// Parses a `spread:` preference: `node.labels.zone` → `zone`.
pub(crate) fn parse_spread(text: &str) -> Result<String, String> {
    let key = text.trim();
    match label_key(key, "node.labels.") {
        Some(Ok(label)) => Ok(label.to_string()),
        Some(Err(e)) => Err(e),
        None => Err(format!(
            "invalid spread preference {text:?}: expected node.labels.KEY"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> (ConstraintKey, ConstraintOp, String) {
        let c = parse_constraint(text).unwrap();
        (c.key, c.op, c.value)
    }

    #[test]
    fn all_keys() {
        use ConstraintKey::*;
        use ConstraintOp::*;
        assert_eq!(
            ok("node.labels.zone == a"),
            (NodeLabel("zone".into()), Eq, "a".into())
        );
        assert_eq!(ok("node.hostname!=x"), (NodeHostname, Ne, "x".into()));
        assert_eq!(ok("node.id==abc"), (NodeId, Eq, "abc".into()));
        assert_eq!(ok("node.role == manager"), (NodeRole, Eq, "manager".into()));
        assert_eq!(
            ok(" engine.labels.k == v "),
            (EngineLabel("k".into()), Eq, "v".into())
        );
        assert_eq!(
            ok("node.platform.os == linux"),
            (PlatformOs, Eq, "linux".into())
        );
        assert_eq!(
            ok("node.platform.arch == x86_64"),
            (PlatformArch, Eq, "x86_64".into())
        );
        assert_eq!(
            ok("Node.Labels.Zone == A"),
            (NodeLabel("Zone".into()), Eq, "A".into())
        );
    }

    #[test]
    fn rejects() {
        for (text, needle) in [
            ("node.labels.zone = a", "expected KEY == VALUE"),
            ("foo == bar", "unknown key \"foo\""),
            ("node.labels. == a", "invalid label name"),
            ("node.labels.zone ==", "missing value"),
            ("== a", "missing key"),
            ("node.role == boss", "manager or worker"),
            ("node.id == a == b", "more than one operator"),
            ("node.labels.a b == c", "invalid label name"),
            ("é == b", "unknown key"),
        ] {
            let e = parse_constraint(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
            assert!(e.contains(text), "{text}: {e}");
        }
    }

    #[test]
    fn spread() {
        assert_eq!(parse_spread("node.labels.zone"), Ok("zone".into()));
        assert!(parse_spread("node.hostname").is_err());
        assert!(parse_spread("node.labels.").is_err());
    }
}
