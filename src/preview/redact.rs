//! What a preview may show: sensitive objects (Secrets, plus what the host config marks) are
//! reduced to the keys that changed, and messages about them lose their quoted values.
//! (Server-managed fields are dropped by `plan`, for every object.)

use std::collections::BTreeMap;

use serde_json::Value;

use crate::config::SensitiveMatcher;
use crate::manifest::ObjectKey;

/// Whether an object's values must never be shown. A matcher's `namespace` is compared with
/// the object's effective namespace: `default_namespace` (the environment's) when it names none.
pub fn is_sensitive(
    key: &ObjectKey,
    matchers: &[SensitiveMatcher],
    default_namespace: &str,
) -> bool {
    let namespace = key.namespace.as_deref().unwrap_or(default_namespace);
    matches_any(&key.group, &key.kind, namespace, &key.name, matchers) || key.is_secret()
}

fn matches_any(
    group: &str,
    kind: &str,
    namespace: &str,
    name: &str,
    matchers: &[SensitiveMatcher],
) -> bool {
    (group.is_empty() && kind == "Secret")
        || matchers.iter().any(|m| {
            let kind_ok =
                m.kind == kind || (!group.is_empty() && m.kind == format!("{kind}.{group}"));
            kind_ok
                && m.name.as_ref().is_none_or(|n| n == name)
                && m.namespace.as_ref().is_none_or(|ns| ns == namespace)
        })
}

/// [`is_sensitive`] for an object named as [`ObjectKey`] displays it (`Kind[.group] [ns/]name`,
/// as notes carry it). An empty or unreadable name is not sensitive by itself.
pub fn is_sensitive_name(
    object: &str,
    matchers: &[SensitiveMatcher],
    default_namespace: &str,
) -> bool {
    let Some((kind, rest)) = object.split_once(' ') else {
        return false;
    };
    let (kind, group) = kind.split_once('.').unwrap_or((kind, ""));
    let (namespace, name) = rest.split_once('/').unwrap_or((default_namespace, rest));
    matches_any(group, kind, namespace, name, matchers)
}

/// Which keys of a sensitive object changed; never values.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ChangedKeys {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

impl ChangedKeys {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

fn segment(key: &str) -> String {
    if !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        format!(".{key}")
    } else {
        format!("[{}]", serde_json::to_string(key).unwrap_or_default())
    }
}

/// Leaf paths (`data.password`, `spec.items[0]`) and a fingerprint of each leaf's value. The
/// fingerprint is only compared, never shown.
fn leaves(value: &Value, prefix: &str, out: &mut BTreeMap<String, String>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                leaves(v, &format!("{prefix}{}", segment(k)), out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, v) in items.iter().enumerate() {
                leaves(v, &format!("{prefix}[{i}]"), out);
            }
        }
        other => {
            let path = prefix.strip_prefix('.').unwrap_or(prefix).to_string();
            out.insert(path, other.to_string());
        }
    }
}

/// Identity fields are not listed for a created or deleted object: they are in the summary.
fn is_identity(path: &str) -> bool {
    matches!(
        path,
        "apiVersion" | "kind" | "metadata.name" | "metadata.namespace"
    )
}

/// Keys added, changed and removed between two versions of a sensitive object.
pub fn changed_keys(before: Option<&Value>, after: Option<&Value>) -> ChangedKeys {
    let mut old = BTreeMap::new();
    let mut new = BTreeMap::new();
    if let Some(b) = before {
        leaves(b, "", &mut old);
    }
    if let Some(a) = after {
        leaves(a, "", &mut new);
    }
    let whole_object = before.is_none() || after.is_none();
    let mut out = ChangedKeys::default();
    for (path, value) in &new {
        if whole_object && is_identity(path) {
            continue;
        }
        match old.get(path) {
            None => out.added.push(path.clone()),
            Some(v) if v != value => out.changed.push(path.clone()),
            Some(_) => {}
        }
    }
    for path in old.keys() {
        if !(new.contains_key(path) || whole_object && is_identity(path)) {
            out.removed.push(path.clone());
        }
    }
    out
}

/// Removes quoted text from a message about a sensitive object (parsers and API servers quote
/// offending values).
pub fn scrub(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' || c == '`' || c == '\'' {
            // Apostrophes inside words are not quotes.
            if c == '\'' && out.chars().last().is_some_and(char::is_alphanumeric) {
                out.push(c);
                continue;
            }
            let rest: String = chars.clone().collect();
            if let Some(end) = rest.find(c) {
                out.push(c);
                out.push('…');
                out.push(c);
                for _ in 0..rest[..end].chars().count() + 1 {
                    chars.next();
                }
                continue;
            }
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changed_keys_never_hold_values() {
        let a = json!({"kind": "Secret", "metadata": {"name": "s"}, "data": {"a": "MQ==", "b": "Mg=="}});
        let b = json!({"kind": "Secret", "metadata": {"name": "s"}, "data": {"a": "Mw==", "c": "NA==", "tls.crt": "x"}});
        let k = changed_keys(Some(&a), Some(&b));
        assert_eq!(k.added, vec!["data.c", "data[\"tls.crt\"]"]);
        assert_eq!(k.changed, vec!["data.a"]);
        assert_eq!(k.removed, vec!["data.b"]);
        let created = changed_keys(None, Some(&b));
        assert_eq!(created.added, vec!["data.a", "data.c", "data[\"tls.crt\"]"]);
    }

    #[test]
    fn sensitive_matchers() {
        let key = |kind: &str, ns: Option<&str>, name: &str| ObjectKey {
            group: String::new(),
            kind: kind.into(),
            namespace: ns.map(Into::into),
            name: name.into(),
        };
        let m = vec![SensitiveMatcher {
            kind: "ConfigMap".into(),
            name: Some("creds".into()),
            namespace: None,
        }];
        assert!(is_sensitive(&key("Secret", None, "x"), &[], "default"));
        assert!(is_sensitive(
            &key("ConfigMap", Some("a"), "creds"),
            &m,
            "default"
        ));
        assert!(!is_sensitive(
            &key("ConfigMap", Some("a"), "other"),
            &m,
            "default"
        ));
        // A namespace matcher sees the environment's namespace for objects that name none.
        let in_apps = vec![SensitiveMatcher {
            kind: "ConfigMap".into(),
            name: None,
            namespace: Some("apps".into()),
        }];
        assert!(is_sensitive(&key("ConfigMap", None, "c"), &in_apps, "apps"));
        assert!(!is_sensitive(
            &key("ConfigMap", None, "c"),
            &in_apps,
            "default"
        ));
        assert!(!is_sensitive(
            &key("ConfigMap", Some("web"), "c"),
            &in_apps,
            "apps"
        ));
        assert!(is_sensitive_name("ConfigMap c", &in_apps, "apps"));
        assert!(is_sensitive_name("ConfigMap apps/c", &in_apps, "default"));
        assert!(!is_sensitive_name("ConfigMap web/c", &in_apps, "apps"));
        assert!(is_sensitive_name("Secret web/s", &[], "apps"));
        assert!(!is_sensitive_name("Secret.example.com web/s", &[], "apps"));
        assert!(!is_sensitive_name("", &in_apps, "apps"));
    }

    #[test]
    fn scrub_removes_quoted_text() {
        assert_eq!(
            scrub("invalid value \"hunter2\" at 'x' isn't ok"),
            "invalid value \"…\" at '…' isn't ok"
        );
    }
}
