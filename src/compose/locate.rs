//! Finding the line and column of a key path in a file's text.
//!
//! Validation works on a merged, interpolated tree that has no positions, so when it fails the
//! path is looked up again in the original text. The lookup re-reads the file with yaml_serde and
//! a visitor that walks down the path and, on reaching it, returns an error: yaml_serde stamps
//! every error with the position of the node being read, which is exactly the position wanted.
//! This costs a parse per lookup, and only runs on the error path.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::error::Segment;

/// Marks the error that means "found"; no YAML message contains it.
const FOUND: &str = "\u{1}shoal-compose-path-found\u{1}";

/// The 1-based (line, column) of `path` in `text`: of the last key when the path ends in a key,
/// of the list item when it ends in an index, of the document for the empty path. Keys written
/// in the file win over keys that come in through a `<<` merge, as in the merged tree.
pub(crate) fn locate(text: &str, path: &[Segment]) -> Option<(usize, usize)> {
    seek(text, path, false).or_else(|| seek(text, path, true))
}

fn seek(text: &str, path: &[Segment], merges: bool) -> Option<(usize, usize)> {
    let seeker = Seek {
        path,
        merges,
        merge_list: false,
    };
    match seeker.deserialize(yaml_serde::Deserializer::from_str(text)) {
        Ok(()) => None,
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| (l.line(), l.column())),
        Err(_) => None,
    }
}

fn found<E: de::Error>() -> E {
    E::custom(FOUND)
}

/// Walks down `path`; `Ok(())` means not found.
struct Seek<'p> {
    path: &'p [Segment],
    /// Also look inside `<<` values.
    merges: bool,
    /// This node is the value of `<<`: a mapping to search, or a list of them.
    merge_list: bool,
}

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Seek<'_> {
    fn scalar<E: de::Error>(&self) -> Result<(), E> {
        if self.path.is_empty() {
            Err(found())
        } else {
            Ok(())
        }
    }
}

impl<'de> Visitor<'de> for Seek<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.scalar()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.merge_list {
            let each = || Seek {
                path: self.path,
                merges: self.merges,
                merge_list: false,
            };
            while seq.next_element_seed(each())?.is_some() {}
            return Ok(());
        }
        let Some((first, rest)) = self.path.split_first() else {
            return Err(found());
        };
        let Segment::Index(want) = *first else {
            return Ok(());
        };
        for _ in 0..want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Seek {
            path: rest,
            merges: self.merges,
            merge_list: false,
        })?;
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.path.split_first() else {
            return Err(found());
        };
        let Segment::Key(want) = first else {
            return Ok(());
        };
        while let Some(kind) = map.next_key_seed(KeySeed {
            want,
            last: rest.is_empty(),
        })? {
            match kind {
                KeyKind::Wanted => {
                    // An explicit key hides whatever a `<<` brings under the same name.
                    return map.next_value_seed(Seek {
                        path: rest,
                        merges: self.merges,
                        merge_list: false,
                    });
                }
                KeyKind::Merge if self.merges => map.next_value_seed(Seek {
                    path: self.path,
                    merges: true,
                    merge_list: true,
                })?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

enum KeyKind {
    Wanted,
    Merge,
    Other,
}

/// Reads a key; when it is the last wanted segment, fails there so the key's position is taken.
struct KeySeed<'a> {
    want: &'a str,
    last: bool,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = KeyKind;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<KeyKind, D::Error> {
        d.deserialize_any(self)
    }
}

impl KeySeed<'_> {
    fn key<E: de::Error>(self, key: &str) -> Result<KeyKind, E> {
        if key == self.want {
            if self.last {
                Err(found())
            } else {
                Ok(KeyKind::Wanted)
            }
        } else if key == "<<" {
            Ok(KeyKind::Merge)
        } else {
            Ok(KeyKind::Other)
        }
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = KeyKind;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyKind, E> {
        self.key(v)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyKind, E> {
        self.key(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyKind, E> {
        self.key(&v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyKind, E> {
        self.key(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeyKind, E> {
        self.key(&yaml_serde::Number::from(v).to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<KeyKind, E> {
        self.key("null")
    }
    fn visit_none<E: de::Error>(self) -> Result<KeyKind, E> {
        self.key("null")
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<KeyKind, D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KeyKind, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(KeyKind::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyKind, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(KeyKind::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &[&str]) -> Vec<Segment> {
        p.iter()
            .map(|s| match s.parse::<usize>() {
                Ok(i) => Segment::Index(i),
                Err(_) => Segment::Key(s.to_string()),
            })
            .collect()
    }

    const TEXT: &str = "\
x-d: &d
  deploy:
    replicas: 2
services:
  web:
    <<: *d
    image: nginx
    ports:
      - \"80\"
      - target: 81
  db:
    <<: *d
    deploy: {replicas: 3}
";

    #[test]
    fn finds_keys_items_and_merged_keys() {
        assert_eq!(
            locate(TEXT, &path(&["services", "web", "image"])),
            Some((7, 5))
        );
        assert_eq!(
            locate(TEXT, &path(&["services", "web", "ports", "1"])),
            Some((10, 9))
        );
        assert_eq!(
            locate(TEXT, &path(&["services", "web", "ports", "1", "target"])),
            Some((10, 9))
        );
        // Through the merge: the anchor's line.
        assert_eq!(
            locate(TEXT, &path(&["services", "web", "deploy", "replicas"])),
            Some((3, 5))
        );
        // The explicit key wins over the merged one.
        assert_eq!(
            locate(TEXT, &path(&["services", "db", "deploy", "replicas"])),
            Some((13, 14))
        );
        assert_eq!(locate(TEXT, &path(&["services", "nope"])), None);
        assert_eq!(
            locate(TEXT, &path(&["services", "web", "ports", "5"])),
            None
        );
        assert_eq!(locate(TEXT, &[]), Some((1, 1)));
        // Keys before a syntax error are still found; nothing after it is.
        assert_eq!(locate("a: [\nb: 1", &path(&["a"])), Some((1, 1)));
        assert_eq!(locate("a: [\nb: 1", &path(&["b"])), None);
    }
}
