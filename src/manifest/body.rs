//! A manifest's document kept compact: its JSON text, parsed again when a stage needs the tree.
//! An environment of 10,000 small objects holds its bodies in a few MB this way, where `Value`
//! trees (a map and a string allocation per key) took about 30 MB for the whole life of a pass.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

/// The document as written (JSON model of the YAML), serialised compactly; cheap to clone.
#[derive(Clone, PartialEq, Eq)]
pub struct Body(Arc<str>);

impl Body {
    pub fn new(value: &Value) -> Body {
        // A `Value` always serialises (its keys are strings); "null" only guards the impossible.
        Body(
            serde_json::to_string(value)
                .unwrap_or_else(|_| "null".to_string())
                .into(),
        )
    }

    /// The document as a tree (a fresh copy each call).
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }

    /// The compact JSON text.
    pub fn json(&self) -> &str {
        &self.0
    }

    /// One top-level field, parsed.
    pub fn get(&self, key: &str) -> Option<Value> {
        match self.value() {
            Value::Object(mut map) => map.remove(key),
            _ => None,
        }
    }

    /// The value at a JSON pointer (`/spec/name`), parsed.
    pub fn pointer(&self, pointer: &str) -> Option<Value> {
        self.value().pointer(pointer).cloned()
    }

    /// Whether the document has a top-level key `key` (a text search first: most have not).
    pub fn has_key(&self, key: &str) -> bool {
        self.0.contains(&format!("\"{key}\":")) && self.get(key).is_some()
    }

    /// Bytes held (for memory accounting in tests and benchmarks).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Value> for Body {
    fn from(value: Value) -> Body {
        Body::new(&value)
    }
}

impl fmt::Display for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_in_key_order() {
        let v = serde_json::json!({"kind": "ConfigMap", "apiVersion": "v1", "data": {"b": "1", "a": "2"}});
        let b = Body::new(&v);
        assert_eq!(b.value(), v);
        assert_eq!(
            b.json(),
            r#"{"kind":"ConfigMap","apiVersion":"v1","data":{"b":"1","a":"2"}}"#
        );
        assert_eq!(b.get("data"), Some(serde_json::json!({"b": "1", "a": "2"})));
        assert_eq!(b.get("spec"), None);
    }
}
