//! The line of every key path in a YAML text, so problems found after deserializing (in typed
//! values that forgot their position) can still name a line. May call `serde_saphyr` (its `Spanned`
//! positions).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// Key path (`environments[1].kubernetes`) → 1-based line of its key (or list item).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lines {
    lines: BTreeMap<String, u64>,
}

impl Lines {
    /// Indexes a YAML text. A text that does not parse gives an empty index (its syntax error is
    /// reported by whoever parses it for real).
    pub fn from_yaml(text: &str) -> Lines {
        let mut lines = BTreeMap::new();
        if let Ok(root) = serde_saphyr::from_str::<Node>(text) {
            root.index("", &mut lines);
        }
        Lines { lines }
    }

    /// The line of `path`, else of its nearest enclosing key that has one.
    pub fn line_of(&self, path: &str) -> Option<u64> {
        let mut path = path;
        loop {
            if let Some(line) = self.lines.get(path) {
                return Some(*line);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

/// A YAML node with the positions of its children.
enum Node {
    Map(Vec<(Spanned<Key>, Node)>),
    Seq(Vec<Spanned<Node>>),
    Scalar,
}

impl Node {
    fn index(&self, path: &str, out: &mut BTreeMap<String, u64>) {
        match self {
            Node::Map(entries) => {
                for (key, value) in entries {
                    let child = if path.is_empty() {
                        key.value.0.clone()
                    } else {
                        format!("{path}.{}", key.value.0)
                    };
                    out.entry(child.clone()).or_insert(key.referenced.line());
                    value.index(&child, out);
                }
            }
            Node::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let child = format!("{path}[{i}]");
                    out.entry(child.clone()).or_insert(item.referenced.line());
                    item.value.index(&child, out);
                }
            }
            Node::Scalar => {}
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Key>>()? {
            entries.push((key, map.next_value::<Node>()?));
        }
        Ok(Node::Map(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
}

/// A mapping key as text (a number or boolean key is indexed by how it prints).
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        d.deserialize_any(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a scalar key")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
        Ok(Key(s.to_string()))
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Key, E> {
        Ok(Key(b.to_string()))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Key, E> {
        Ok(Key(n.to_string()))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Key, E> {
        Ok(Key(n.to_string()))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Key, E> {
        Ok(Key(n.to_string()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
        Ok(Key(String::new()))
    }
}
