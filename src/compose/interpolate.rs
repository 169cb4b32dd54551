//! `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}`, `${VAR?message}`,
//! `${VAR:+alt}`, `${VAR+alt}` and `$$`, as docker compose substitutes them.
//!
//! Substitution runs on the string values of the parsed document, not on the text: a value such as
//! `a: b` or `#x` coming from the environment cannot change the YAML structure, and every position
//! in the original text stays valid for error messages. The cost is that a number written as
//! `${REPLICAS}` arrives as a string, so the numeric fields of the model accept numeric strings.

use std::collections::{BTreeMap, BTreeSet};

use yaml_serde::Value;

use super::error::{Failure, KeyPath, Warning};

/// `${A:-${B:-${C}}}` nests; past this depth the input is surely hostile.
const MAX_NESTING: usize = 16;

/// Substitutes variables from one environment, remembering which were unset.
pub(crate) struct Interpolator<'a> {
    env: &'a BTreeMap<String, String>,
    /// Unset variables already warned about, so each is reported once across all files.
    warned: BTreeSet<String>,
    /// Bytes substitution may still produce in total; a guard against `$BIG$BIG$BIG...`.
    budget: usize,
}

impl<'a> Interpolator<'a> {
    /// An interpolator reading `env`, allowed to produce `budget` bytes in all.
    pub(crate) fn new(env: &'a BTreeMap<String, String>, budget: usize) -> Self {
        Interpolator {
            env,
            warned: BTreeSet::new(),
            budget,
        }
    }

    /// Substitutes in every string value (not key) of `value`, in place.
    pub(crate) fn document(
        &mut self,
        value: &mut Value,
        path: &KeyPath,
        warnings: &mut Vec<Warning>,
    ) -> Result<(), Failure> {
        match value {
            Value::String(s) if s.contains('$') => {
                let mut unset = Vec::new();
                let out = self
                    .expand(s, 0, &mut unset)
                    .map_err(|e| Failure::at(path, e))?;
                for name in unset {
                    if self.warned.insert(name.clone()) {
                        warnings.push(Warning::at(
                            path,
                            format!("variable {name} is not set, substituting an empty string"),
                        ));
                    }
                }
                *s = out;
            }
            Value::Sequence(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.document(item, &path.index(i), warnings)?;
                }
            }
            Value::Mapping(map) => {
                for (k, v) in map.iter_mut() {
                    let key = super::load::key_text(k);
                    self.document(v, &path.key(&key), warnings)?;
                }
            }
            Value::Tagged(tagged) => self.document(&mut tagged.value, path, warnings)?,
            _ => {}
        }
        Ok(())
    }

    /// Substitutes in one string; names of unset variables used without a default go to `unset`.
    pub(crate) fn expand(
        &mut self,
        s: &str,
        depth: usize,
        unset: &mut Vec<String>,
    ) -> Result<String, String> {
        if depth > MAX_NESTING {
            return Err(format!("variables nested more than {MAX_NESTING} deep"));
        }
        let b = s.as_bytes();
        let mut out = String::new();
        let mut literal_start = 0;
        let mut i = 0;
        while i < b.len() {
            if b[i] != b'$' {
                i += 1;
                continue;
            }
            out.push_str(&s[literal_start..i]);
            match b.get(i + 1) {
                Some(b'$') => {
                    out.push('$');
                    i += 2;
                }
                Some(b'{') => {
                    let end = closing_brace(b, i + 2)
                        .ok_or_else(|| format!("invalid interpolation in {s:?}: unclosed ${{"))?;
                    let value = self.braced(&s[i + 2..end], s, depth, unset)?;
                    self.spend(value.len())?;
                    out.push_str(&value);
                    i = end + 1;
                }
                Some(&c) if is_name_start(c) => {
                    let end = name_end(b, i + 1);
                    let value = self.lookup(&s[i + 1..end], unset);
                    self.spend(value.len())?;
                    out.push_str(&value);
                    i = end;
                }
                _ => {
                    return Err(format!(
                        "invalid interpolation in {s:?}: write a literal $ as $$"
                    ))
                }
            }
            literal_start = i;
        }
        out.push_str(&s[literal_start..]);
        Ok(out)
    }

    fn spend(&mut self, bytes: usize) -> Result<(), String> {
        self.budget = self
            .budget
            .checked_sub(bytes)
            .ok_or("variable substitution produces too much text")?;
        Ok(())
    }

    fn lookup(&self, name: &str, unset: &mut Vec<String>) -> String {
        match self.env.get(name) {
            Some(v) => v.clone(),
            None => {
                unset.push(name.to_string());
                String::new()
            }
        }
    }

    /// The inside of `${...}`: a name, then nothing or an operator and its argument. The argument
    /// is only expanded when it is used, so `${A:-${B:?}}` does not fail when A is set.
    fn braced(
        &mut self,
        inner: &str,
        whole: &str,
        depth: usize,
        unset: &mut Vec<String>,
    ) -> Result<String, String> {
        let b = inner.as_bytes();
        if !b.first().is_some_and(|c| is_name_start(*c)) {
            return Err(format!(
                "invalid interpolation in {whole:?}: ${{{inner}}} does not start with a variable name"
            ));
        }
        let name_len = name_end(b, 0);
        let name = &inner[..name_len];
        let rest = &inner[name_len..];
        let value = self.env.get(name);
        let non_empty = value.filter(|v| !v.is_empty());
        if rest.is_empty() {
            return Ok(self.lookup(name, unset));
        }
        let Some(op) = [":-", ":?", ":+", "-", "?", "+"]
            .into_iter()
            .find(|op| rest.starts_with(op))
        else {
            return Err(format!(
                "invalid interpolation in {whole:?}: unknown operator in ${{{inner}}} \
                 (expected :- - :? ? :+ or +)"
            ));
        };
        let arg = &rest[op.len()..];
        match op {
            ":-" => match non_empty {
                Some(v) => Ok(v.clone()),
                None => self.expand(arg, depth + 1, unset),
            },
            "-" => match value {
                Some(v) => Ok(v.clone()),
                None => self.expand(arg, depth + 1, unset),
            },
            ":?" | "?" => {
                let present = if op == ":?" { non_empty } else { value };
                match present {
                    Some(v) => Ok(v.clone()),
                    None => {
                        let message = self.expand(arg, depth + 1, unset)?;
                        let how = if value.is_some() {
                            "is empty"
                        } else {
                            "is not set"
                        };
                        Err(if message.is_empty() {
                            format!("required variable {name} {how}")
                        } else {
                            format!("required variable {name} {how}: {message}")
                        })
                    }
                }
            }
            ":+" => match non_empty {
                Some(_) => self.expand(arg, depth + 1, unset),
                None => Ok(String::new()),
            },
            "+" => match value {
                Some(_) => self.expand(arg, depth + 1, unset),
                None => Ok(String::new()),
            },
            _ => Ok(self.lookup(name, unset)),
        }
    }
}

fn is_name_start(c: u8) -> bool {
    c == b'_' || c.is_ascii_alphabetic()
}

fn name_end(b: &[u8], start: usize) -> usize {
    let mut i = start;
    while i < b.len() && (b[i] == b'_' || b[i].is_ascii_alphanumeric()) {
        i += 1;
    }
    i
}

/// Index of the `}` closing a `${` whose inside starts at `start`, skipping nested `${...}` and
/// `$$`. Only ASCII bytes are compared, so indexes stay on UTF-8 boundaries.
fn closing_brace(b: &[u8], start: usize) -> Option<usize> {
    let mut depth = 1usize;
    let mut i = start;
    while i < b.len() {
        match (b[i], b.get(i + 1)) {
            (b'$', Some(b'{')) => {
                depth += 1;
                i += 2;
            }
            (b'$', Some(b'$')) => i += 2,
            (b'}', _) => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        [("TAG", "1.2"), ("EMPTY", ""), ("HOST", "db"), ("N", "3")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn run(s: &str) -> (Result<String, String>, Vec<String>) {
        let env = env();
        let mut i = Interpolator::new(&env, 1 << 20);
        let mut unset = Vec::new();
        let r = i.expand(s, 0, &mut unset);
        (r, unset)
    }

    fn ok(s: &str) -> String {
        run(s).0.unwrap()
    }

    #[test]
    fn forms() {
        assert_eq!(ok("nginx:$TAG"), "nginx:1.2");
        assert_eq!(ok("nginx:${TAG}-alpine"), "nginx:1.2-alpine");
        assert_eq!(ok("${MISSING:-def}"), "def");
        assert_eq!(ok("${EMPTY:-def}"), "def");
        assert_eq!(ok("${EMPTY-def}"), "");
        assert_eq!(ok("${MISSING-def}"), "def");
        assert_eq!(ok("${TAG:?x}"), "1.2");
        assert_eq!(ok("${TAG:+set}"), "set");
        assert_eq!(ok("${EMPTY:+set}"), "");
        assert_eq!(ok("${EMPTY+set}"), "set");
        assert_eq!(ok("${MISSING+set}"), "");
        assert_eq!(ok("cost: $$5 and $${X}"), "cost: $5 and ${X}");
        assert_eq!(ok("${MISSING:-${HOST}:5432}"), "db:5432");
        assert_eq!(ok("${MISSING:-a:b}"), "a:b");
        assert_eq!(ok("${TAG:-${NOPE:?never evaluated}}"), "1.2");
        assert_eq!(ok("é$N€"), "é3€");
        assert_eq!(ok("no vars"), "no vars");
    }

    #[test]
    fn unset_without_default_is_empty_and_reported() {
        let (r, unset) = run("a${MISSING}b$ALSO_MISSING");
        assert_eq!(r.unwrap(), "ab");
        assert_eq!(unset, ["MISSING", "ALSO_MISSING"]);
    }

    #[test]
    fn required() {
        let e = run("${REQUIRED:?must be set}").0.unwrap_err();
        assert_eq!(e, "required variable REQUIRED is not set: must be set");
        let e = run("${EMPTY:?must not be empty}").0.unwrap_err();
        assert_eq!(e, "required variable EMPTY is empty: must not be empty");
        assert_eq!(ok("${EMPTY?x}"), "");
        assert!(run("${REQUIRED?}")
            .0
            .unwrap_err()
            .contains("REQUIRED is not set"));
    }

    #[test]
    fn invalid() {
        for s in [
            "$", "a $ b", "$1", "${", "${X", "${}", "${1X}", "${X*y}", "${ X}", "${X:é}",
        ] {
            assert!(run(s).0.is_err(), "{s}");
        }
        let deep = format!("{}x{}", "${A:-".repeat(40), "}".repeat(40));
        assert!(run(&deep).0.unwrap_err().contains("nested"));
    }

    #[test]
    fn budget() {
        let env: BTreeMap<String, String> = [("BIG".to_string(), "x".repeat(1000))].into();
        let mut i = Interpolator::new(&env, 5000);
        let mut unset = Vec::new();
        let e = i.expand(&"$BIG".repeat(10), 0, &mut unset).unwrap_err();
        assert!(e.contains("too much"), "{e}");
    }
}
