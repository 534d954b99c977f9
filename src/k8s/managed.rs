//! The fields gitopsd manages on a live object, from its server-side-apply `managedFields`.
//!
//! Pure: no I/O. A live object is compared with the desired one only on the fields the
//! `gitopsd` apply manager owns (`fieldsV1` of its `Apply` entry), so fields other managers own
//! (an HPA's `replicas`, a controller's defaults, `status`) are never a difference. The cache
//! stores only a fingerprint (a hash) of that projection, not the object. What counts as a
//! difference (server-managed fields, identity, number forms) is `plan`'s: both fingerprints
//! are [`plan::fingerprint`]s, the same comparison previews use. Calls `plan` only.

use serde_json::{Map, Value};

use crate::plan;

/// `manager`'s `Apply` entry of `managedFields` for the main resource, if any.
fn apply_entry<'a>(obj: &'a Value, manager: &str) -> Option<&'a Value> {
    obj.pointer("/metadata/managedFields")?
        .as_array()?
        .iter()
        .find(|entry| {
            entry.get("manager").and_then(Value::as_str) == Some(manager)
                && entry.get("operation").and_then(Value::as_str) == Some("Apply")
                && entry
                    .get("subresource")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
        })
}

/// The `fieldsV1` set of `manager`'s `Apply` operation on the main resource, if any.
pub fn fields_of<'a>(obj: &'a Value, manager: &str) -> Option<&'a Value> {
    apply_entry(obj, manager)?.get("fieldsV1")
}

/// When `manager`'s `Apply` operation last changed the object (RFC 3339), if recorded.
pub fn apply_time<'a>(obj: &'a Value, manager: &str) -> Option<&'a str> {
    apply_entry(obj, manager)?.get("time")?.as_str()
}

/// `obj` restricted to the fields in `set` (a `fieldsV1` tree: `f:` fields, `k:` keyed list
/// items, `v:` set values, `i:` list indexes; `.` marks the node itself).
pub fn project(obj: &Value, set: &Value) -> Value {
    let Some(members) = set.as_object() else {
        return obj.clone();
    };
    // A leaf (or atomic) field: owned as a whole.
    if members.keys().all(|k| k == ".") {
        return obj.clone();
    }
    match obj {
        Value::Object(fields) => {
            let mut out = Map::new();
            for (path, sub) in members {
                if let Some(name) = path.strip_prefix("f:")
                    && let Some(child) = fields.get(name)
                {
                    out.insert(name.to_string(), project(child, sub));
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(project_list(items, members)),
        other => other.clone(),
    }
}

/// Items of a list that `members` names, in the live order.
fn project_list(items: &[Value], members: &Map<String, Value>) -> Vec<Value> {
    let mut out = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let found = members
            .iter()
            .find(|(path, _)| item_matches(path, index, item));
        if let Some((path, sub)) = found {
            if path.starts_with("v:") {
                out.push(item.clone());
            } else {
                out.push(project(item, sub));
            }
        }
    }
    out
}

fn item_matches(path: &str, index: usize, item: &Value) -> bool {
    if let Some(key) = path.strip_prefix("k:") {
        let Ok(Value::Object(key)) = serde_json::from_str::<Value>(key) else {
            return false;
        };
        return key.iter().all(|(k, v)| item.get(k) == Some(v));
    }
    if let Some(value) = path.strip_prefix("v:") {
        return serde_json::from_str::<Value>(value).is_ok_and(|v| v == *item);
    }
    if let Some(i) = path.strip_prefix("i:") {
        return i.parse::<usize>().is_ok_and(|i| i == index);
    }
    false
}

/// Whether the live projection shows everything the desired value says: the server may add
/// defaults inside fields gitopsd owns as a whole (an atomic list's items get `volumeMode`,
/// `status`, …), which are not a difference; a missing or different desired value is.
pub fn covers(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        // Go's `omitempty` drops zero values (`globalDefault: false`, `0`, `""`, `[]`, `{}`).
        (Value::Object(l), Value::Object(d)) => d.iter().all(|(k, dv)| match l.get(k) {
            Some(lv) => covers(lv, dv),
            None => is_zero(dv),
        }),
        (Value::Array(l), Value::Array(d)) => {
            l.len() == d.len() && l.iter().zip(d).all(|(lv, dv)| covers(lv, dv))
        }
        (Value::Number(l), Value::Number(d)) => l.as_f64() == d.as_f64(),
        (l, d) => l == d,
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// Whether a live object already has what `desired` (as sent) says on the fields `manager`
/// manages (see [`covers`]); both sides in their [`plan::comparable`] form.
pub fn in_sync(live: &Value, desired: &Value, manager: &str) -> bool {
    fields_of(live, manager).is_some_and(|set| {
        covers(
            &plan::comparable(&project(live, set)),
            &plan::comparable(desired),
        )
    })
}

/// Fingerprint of the fields `manager` manages on a live object ([`plan::fingerprint`] of
/// their projection); `None` when it manages none.
pub fn live_fingerprint(obj: &Value, manager: &str) -> Option<u64> {
    fields_of(obj, manager).map(|set| plan::fingerprint(&project(obj, set)))
}

/// Fingerprint of a desired object as sent ([`plan::fingerprint`]): equal to the live
/// fingerprint when the cluster holds what gitopsd would send.
pub fn desired_fingerprint(desired: &Value) -> u64 {
    plan::fingerprint(desired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::comparable;
    use serde_json::json;

    fn live_deployment(replicas: i64, image: &str, image_owner: &str) -> Value {
        let mut container = json!({".": {}, "f:name": {}, "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}});
        let mut entries = vec![
            json!({"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1",
                "fieldsV1": {"f:spec": {"f:replicas": {}}}}),
        ];
        if image_owner == "gitopsd" {
            container["f:image"] = json!({});
        } else {
            entries.push(json!({"manager": image_owner, "operation": "Update", "apiVersion": "apps/v1",
                "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {"f:image": {}}}}}}}}));
        }
        entries.insert(0, json!({"manager": "gitopsd", "operation": "Apply", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}, "f:gitopsd.dev/environment": {}}},
                "f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"app\"}": container}}}}}}));
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "dev", "uid": "u1", "resourceVersion": "7",
                "labels": {"app": "web", "gitopsd.dev/environment": "dev"},
                "managedFields": entries},
            "spec": {"replicas": replicas, "revisionHistoryLimit": 10,
                "template": {"spec": {"containers": [{"name": "app", "image": image, "imagePullPolicy": "Always",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}}},
            "status": {"replicas": replicas}
        })
    }

    fn desired() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "dev", "labels": {"gitopsd.dev/environment": "dev", "app": "web"}},
            "spec": {"template": {"spec": {"containers": [{"name": "app", "ports": [{"containerPort": 80}]}]}}}})
    }

    #[test]
    fn projection_keeps_only_our_fields() {
        let live = live_deployment(5, "nginx:1", "other");
        let set = fields_of(&live, "gitopsd").cloned();
        assert!(set.is_some());
        let projected = project(&live, &set.unwrap_or_default());
        assert_eq!(projected, comparable(&desired()));
        // Other managers' fields (replicas, image owned by someone else) are never a difference.
        assert_eq!(
            live_fingerprint(&live_deployment(9, "nginx:2", "other"), "gitopsd"),
            Some(desired_fingerprint(&desired()))
        );
    }

    #[test]
    fn a_change_to_a_field_we_own_changes_the_fingerprint() {
        let a = live_fingerprint(&live_deployment(1, "nginx:1", "gitopsd"), "gitopsd");
        let b = live_fingerprint(&live_deployment(1, "nginx:2", "gitopsd"), "gitopsd");
        assert!(a.is_some());
        assert_ne!(a, b);
        // Without the image in the desired object, the live one with an image we own differs.
        assert_ne!(a, Some(desired_fingerprint(&desired())));
    }

    #[test]
    fn set_values_and_indexes() {
        let obj = json!({"finalizers": ["a", "b", "c"], "args": ["x", "y"]});
        let set = json!({"f:finalizers": {"v:\"a\"": {}, "v:\"c\"": {}}, "f:args": {"i:1": {}}});
        assert_eq!(
            project(&obj, &set),
            json!({"finalizers": ["a", "c"], "args": ["y"]})
        );
    }

    #[test]
    fn server_defaults_inside_owned_fields_are_covered() {
        let live = json!({"spec": {"templates": [{"kind": "PersistentVolumeClaim", "spec": {"volumeMode": "Filesystem", "size": 1}, "status": {"phase": "Pending"}}]}});
        let desired = json!({"spec": {"templates": [{"spec": {"size": 1.0}}]}});
        assert!(covers(&live, &desired));
        let edited = json!({"spec": {"templates": [{"spec": {"size": 2}}]}});
        assert!(!covers(&edited, &desired));
        let shorter = json!({"spec": {"templates": []}});
        assert!(!covers(&shorter, &desired));
        assert!(
            !covers(&json!({"spec": {}}), &desired),
            "a field taken over by another manager"
        );
    }

    #[test]
    fn no_apply_entry_means_no_fingerprint() {
        let obj = json!({"metadata": {"managedFields": [{"manager": "gitopsd", "operation": "Update", "fieldsV1": {}}]}});
        assert_eq!(live_fingerprint(&obj, "gitopsd"), None);
    }
}
