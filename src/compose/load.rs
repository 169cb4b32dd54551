//! From text to one merged YAML tree: parsing with a size budget, `<<` merge keys, list forms made
//! mergeable, and several `-c` files merged in order.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use yaml_serde::{Mapping, Value};

use super::error::{Failure, KeyPath};

/// Nodes (scalars, lists, mappings) one file may expand to once aliases are followed. A real
/// stack file has a few thousand; a billion-laughs file hits this after milliseconds instead of
/// exhausting memory (yaml_serde's own repetition limit allows 100 replays per event, which a
/// large file turns into billions of nodes).
pub(crate) const MAX_NODES: usize = 1_000_000;
/// Bytes of scalar text one file may expand to; stops an alias to a huge string repeated often.
pub(crate) const MAX_SCALAR_BYTES: usize = 32 << 20;

/// Parses one YAML document into a tree, failing fast when aliases blow it up and rejecting
/// tags (`!reset`, `!override`...) that would otherwise change meaning silently.
pub(crate) fn parse(text: &str) -> Result<Value, yaml_serde::Error> {
    let mut budget = Budget {
        nodes: MAX_NODES,
        bytes: MAX_SCALAR_BYTES,
    };
    let seed = Bounded {
        budget: &mut budget,
        existing: None,
    };
    seed.deserialize(yaml_serde::Deserializer::from_str(text))
}

struct Budget {
    nodes: usize,
    bytes: usize,
}

impl Budget {
    fn charge<E: de::Error>(&mut self, bytes: usize) -> Result<(), E> {
        match (self.nodes.checked_sub(1), self.bytes.checked_sub(bytes)) {
            (Some(n), Some(b)) => {
                self.nodes = n;
                self.bytes = b;
                Ok(())
            }
            _ => Err(E::custom(format!(
                "the document expands to more than {MAX_NODES} nodes or {} MiB of text once \
                 aliases are followed (an alias bomb?)",
                MAX_SCALAR_BYTES >> 20
            ))),
        }
    }
}

/// Builds a `Value` like `Value::deserialize` does, charging every node to the budget. As a
/// mapping key it also rejects duplicates of `existing`, so the error points at the key.
struct Bounded<'b, 'm> {
    budget: &'b mut Budget,
    existing: Option<&'m Mapping>,
}

impl Bounded<'_, '_> {
    fn scalar<E: de::Error>(self, value: Value, bytes: usize) -> Result<Value, E> {
        self.budget.charge(bytes)?;
        match self.existing {
            Some(m) if m.contains_key(&value) => {
                Err(E::custom(format!("duplicate key {:?}", key_text(&value))))
            }
            _ => Ok(value),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Bounded<'_, '_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.scalar(Value::Bool(v), 0)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.scalar(Value::Number(v.into()), 0)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.scalar(Value::Number(v.into()), 0)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.scalar(Value::Number(v.into()), 0)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.scalar(Value::String(v.to_string()), v.len())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.scalar(Value::Null, 0)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.budget.charge(0)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Bounded {
            budget: &mut *self.budget,
            existing: None,
        })? {
            items.push(item);
        }
        Ok(Value::Sequence(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.budget.charge(0)?;
        let mut out = Mapping::new();
        loop {
            let seed = Bounded {
                budget: &mut *self.budget,
                existing: Some(&out),
            };
            let Some(key) = map.next_key_seed(seed)? else {
                break;
            };
            if out.contains_key(&key) {
                // A complex key (list or mapping) repeated: report it on the value's line.
                let message = format!("duplicate key {:?}", key_text(&key));
                return map.next_value_seed(Fail(message));
            }
            let value = map.next_value_seed(Bounded {
                budget: &mut *self.budget,
                existing: None,
            })?;
            out.insert(key, value);
        }
        Ok(Value::Mapping(out))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let (tag, _) = data.variant::<String>()?;
        Err(de::Error::custom(format!(
            "YAML tags such as !{tag} are not supported"
        )))
    }
}

/// A seed that fails where it is deserialized, so the error carries that node's position.
struct Fail(String);

impl<'de> DeserializeSeed<'de> for Fail {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

macro_rules! fail_on {
    ($($method:ident($($arg:ty),*)),* $(,)?) => {
        $(fn $method<E: de::Error>(self $(, _: $arg)*) -> Result<Value, E> {
            Err(E::custom(self.0))
        })*
    };
}

impl<'de> Visitor<'de> for Fail {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("nothing")
    }
    fail_on!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_f64(f64),
        visit_str(&str),
        visit_unit(),
        visit_none(),
    );
    fn visit_some<D: Deserializer<'de>>(self, _: D) -> Result<Value, D::Error> {
        Err(de::Error::custom(self.0))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Value, A::Error> {
        Err(de::Error::custom(self.0))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Value, A::Error> {
        Err(de::Error::custom(self.0))
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<Value, A::Error> {
        Err(de::Error::custom(self.0))
    }
}

/// A mapping key as text for paths and messages (keys are almost always strings).
pub(crate) fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => "null".to_string(),
        other => format!("{other:?}"),
    }
}

/// Applies `<<` merge keys in place. Unlike `Value::apply_merge`, a merged mapping's own `<<` is
/// resolved first, so `x-b: &b {<<: *a}` chains work. Explicit keys win over merged ones, and
/// earlier mappings in `<<: [*a, *b]` win over later ones, as YAML specifies.
pub(crate) fn resolve_merges(value: &mut Value, path: &KeyPath) -> Result<(), Failure> {
    match value {
        Value::Mapping(map) => {
            let merge = map.shift_remove("<<");
            for (k, v) in map.iter_mut() {
                resolve_merges(v, &path.key(&key_text(k)))?;
            }
            let Some(mut merge) = merge else {
                return Ok(());
            };
            let merge_path = path.key("<<");
            resolve_merges(&mut merge, &merge_path)?;
            let sources = match merge {
                Value::Mapping(m) => vec![m],
                Value::Sequence(items) => items
                    .into_iter()
                    .map(|item| match item {
                        Value::Mapping(m) => Ok(m),
                        _ => Err(Failure::at(
                            &merge_path,
                            "each entry of a `<<` list must be a mapping",
                        )),
                    })
                    .collect::<Result<_, _>>()?,
                _ => {
                    return Err(Failure::at(
                        &merge_path,
                        "`<<` must be a mapping or a list of mappings",
                    ))
                }
            };
            for source in sources {
                for (k, v) in source {
                    map.entry(k).or_insert(v);
                }
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                resolve_merges(item, &path.index(i))?;
            }
        }
        Value::Tagged(tagged) => resolve_merges(&mut tagged.value, path)?,
        _ => {}
    }
    Ok(())
}

/// Rewrites the list forms of `environment`, `labels`, `deploy.labels` and `networks` of every
/// service as mappings, so a later file can override one variable or label of an earlier one.
/// Lists with anything but plain strings are left alone for the model to report.
pub(crate) fn normalize_lists(doc: &mut Value) {
    let Some(Value::Mapping(services)) = doc.get_mut("services") else {
        return;
    };
    for service in services.values_mut() {
        let Value::Mapping(service) = service else {
            continue;
        };
        for key in ["environment", "labels", "sysctls"] {
            if let Some(v) = service.get_mut(key) {
                list_to_map(v, true);
            }
        }
        if let Some(v) = service.get_mut("networks") {
            list_to_map(v, false);
        }
        if let Some(Value::Mapping(deploy)) = service.get_mut("deploy") {
            if let Some(v) = deploy.get_mut("labels") {
                list_to_map(v, true);
            }
        }
    }
}

/// `[A=1, B]` → `{A: "1", B: null}` (`split` true) or `[a, b]` → `{a: null, b: null}`.
fn list_to_map(value: &mut Value, split: bool) {
    let Value::Sequence(items) = value else {
        return;
    };
    let mut map = Mapping::new();
    for item in items.iter() {
        let Value::String(s) = item else {
            return;
        };
        let (k, v) = match s.split_once('=') {
            Some((k, v)) if split => (k, Value::String(v.to_string())),
            _ => (s.as_str(), Value::Null),
        };
        if k.is_empty() {
            return;
        }
        map.insert(Value::String(k.to_string()), v);
    }
    *value = Value::Mapping(map);
}

/// Merges a later file into an earlier one: mappings merge key by key, anything else (scalars,
/// lists such as `ports` and `volumes`) is replaced whole.
pub(crate) fn merge_into(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(base), Value::Mapping(over)) => {
            for (k, v) in over {
                match base.get_mut(&k) {
                    Some(existing) => merge_into(existing, v),
                    None => {
                        base.insert(k, v);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Value {
        let mut v = parse(text).unwrap();
        resolve_merges(&mut v, &KeyPath::root()).unwrap();
        v
    }

    #[test]
    fn merge_keys_chain_and_precedence() {
        let v =
            doc("a: &a {x: 1, y: 1}\nb: &b {<<: *a, y: 2}\nc: {<<: [*b, {z: 3, x: 9}], z: 4}\n");
        let c = &v["c"];
        assert_eq!(c["x"], Value::from(1));
        assert_eq!(c["y"], Value::from(2));
        assert_eq!(c["z"], Value::from(4));
        assert!(c.get("<<").is_none());
    }

    #[test]
    fn bad_merge_is_reported_at_its_key() {
        let mut v = parse("a:\n  b:\n    <<: 3\n").unwrap();
        let e = resolve_merges(&mut v, &KeyPath::root()).unwrap_err();
        assert_eq!(e.path.to_string(), "a.b.<<");
    }

    #[test]
    fn alias_bomb_fails_fast() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = format!("*a{}", i - 1);
            let items = [prev.as_str(); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{items}]\n"));
        }
        let start = std::time::Instant::now();
        assert!(parse(&text).is_err());
        assert!(start.elapsed().as_secs() < 5);
    }

    #[test]
    fn wide_alias_fan_out_hits_the_node_budget() {
        let list: Vec<String> = (0..2000).map(|i| i.to_string()).collect();
        let mut text = format!("a: &a [{}]\nb: [", list.join(","));
        text.push_str(&vec!["*a"; 1000].join(","));
        text.push_str("]\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("alias bomb"), "{e}");
    }

    #[test]
    fn duplicate_keys_and_tags_are_errors() {
        let e = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert!(e.to_string().contains("duplicate key \"a\""));
        assert_eq!(e.location().map(|l| l.line()), Some(3));
        let e = parse("a: !reset null\n").unwrap_err();
        assert!(e.to_string().contains("!reset"));
    }

    #[test]
    fn lists_become_mappings_and_files_merge() {
        let mut base =
            doc("services:\n  web:\n    environment: [A=1, B=2, C]\n    ports: ['80']\n");
        normalize_lists(&mut base);
        let mut over = doc("services:\n  web:\n    environment: {B: 3}\n    ports: ['81']\n");
        normalize_lists(&mut over);
        merge_into(&mut base, over);
        let web = &base["services"]["web"];
        assert_eq!(web["environment"]["A"], Value::from("1"));
        assert_eq!(web["environment"]["B"], Value::from(3));
        assert_eq!(web["environment"]["C"], Value::Null);
        assert_eq!(web["ports"], Value::Sequence(vec![Value::from("81")]));
    }
}
