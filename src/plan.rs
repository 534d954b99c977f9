//! Plan: what differs between two versions of an object, decided one way for the daemon and for
//! previews.
//!
//! Owns the comparison: the server-managed fields that are never a difference
//! ([`SERVER_FIELDS`]), the form two versions are compared in ([`comparable`]), its
//! [`fingerprint`] (what the daemon compares desired and live objects by, see
//! `k8s::managed`), the verdict on one object ([`change`]), the namespace an object gets
//! ([`effective_namespace`]), the plan between two sets of desired objects ([`plan`], used by
//! previews) and unified diffs. Pure: no I/O; calls `manifest` (types) only.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use serde_json::Value;

use crate::manifest::{Manifest, ObjectKey};

#[cfg(test)]
mod tests;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

/// Fields of `metadata` the API server manages: they change on every write and say nothing
/// about what gitopsd would change. `status` (top level) and [`LAST_APPLIED`] go too.
pub const SERVER_FIELDS: &[&str] = &[
    "managedFields",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "selfLink",
];

/// The annotation `kubectl apply` leaves behind (it holds a full copy of the object).
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// `value` without the server-managed fields ([`SERVER_FIELDS`], `status`, the last-applied
/// annotation); empty `annotations` left behind go too. What a diff shows.
pub fn without_server_fields(value: &Value) -> Value {
    let mut v = value.clone();
    let Some(obj) = v.as_object_mut() else {
        return v;
    };
    obj.remove("status");
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in SERVER_FIELDS {
            meta.remove(*k);
        }
        let empty = match meta.get_mut("annotations").and_then(Value::as_object_mut) {
            Some(ann) => {
                ann.remove(LAST_APPLIED);
                ann.is_empty()
            }
            None => false,
        };
        if empty {
            meta.remove("annotations");
        }
    }
    v
}

/// The form two versions of an object are compared in: without server-managed fields and
/// without identity (`apiVersion`, `kind`, `metadata.name`, `metadata.namespace`: the key says
/// which object it is, and the API server converts between versions). This is also all that the
/// fields gitopsd manages on a live object can show.
pub fn comparable(value: &Value) -> Value {
    let mut out = without_server_fields(value);
    if let Some(obj) = out.as_object_mut() {
        obj.remove("apiVersion");
        obj.remove("kind");
        let empty_meta = match obj.get_mut("metadata").and_then(Value::as_object_mut) {
            Some(meta) => {
                meta.remove("name");
                meta.remove("namespace");
                meta.is_empty()
            }
            None => false,
        };
        if empty_meta {
            obj.remove("metadata");
        }
    }
    out
}

/// Fingerprint of an object's [`comparable`] form: independent of key order, and `1` and `1.0`
/// are the same number (as to the API server). Equal fingerprints mean no change.
pub fn fingerprint(value: &Value) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    hash_value(&comparable(value), &mut hasher);
    hasher.finish()
}

fn hash_value(value: &Value, h: &mut impl Hasher) {
    match value {
        Value::Null => 0u8.hash(h),
        Value::Bool(b) => (1u8, b).hash(h),
        Value::Number(n) => {
            2u8.hash(h);
            match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => (f as i64).hash(h),
                _ => n.to_string().hash(h),
            }
        }
        Value::String(s) => (3u8, s).hash(h),
        Value::Array(items) => {
            (4u8, items.len()).hash(h);
            for item in items {
                hash_value(item, h);
            }
        }
        Value::Object(fields) => {
            (5u8, fields.len()).hash(h);
            let mut keys: Vec<&String> = fields.keys().collect();
            keys.sort();
            for k in keys {
                k.hash(h);
                if let Some(v) = fields.get(k) {
                    hash_value(v, h);
                }
            }
        }
    }
}

/// The change from `before` to `after` (`None` = absent on that side); `None` when nothing
/// changes.
pub fn change(before: Option<&Value>, after: Option<&Value>) -> Option<Action> {
    match (before, after) {
        (None, Some(_)) => Some(Action::Create),
        (Some(_), None) => Some(Action::Delete),
        (Some(b), Some(a)) if fingerprint(b) != fingerprint(a) => Some(Action::Update),
        _ => None,
    }
}

/// The namespace an object lives in: for a namespaced kind the one written, or
/// `default_namespace`; none for a cluster-scoped kind. The Kubernetes layer asks discovery
/// whether a kind is namespaced; previews from git use [`namespaced_without_discovery`].
pub fn effective_namespace(
    written: Option<&str>,
    namespaced: bool,
    default_namespace: &str,
) -> Option<String> {
    namespaced.then(|| written.unwrap_or(default_namespace).to_string())
}

/// Built-in kinds that are cluster-scoped, as (group, kind).
const CLUSTER_SCOPED: &[(&str, &str)] = &[
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolume"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("apiregistration.k8s.io", "APIService"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("storage.k8s.io", "StorageClass"),
    ("storage.k8s.io", "CSIDriver"),
    ("storage.k8s.io", "CSINode"),
    ("storage.k8s.io", "VolumeAttachment"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("networking.k8s.io", "IngressClass"),
    ("node.k8s.io", "RuntimeClass"),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
    ),
    ("certificates.k8s.io", "CertificateSigningRequest"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
];

/// Whether a kind is namespaced when no cluster can be asked: every kind but the built-in
/// cluster-scoped ones (and gitopsd's own, which never reach a cluster).
pub fn namespaced_without_discovery(key: &ObjectKey) -> bool {
    !key.is_bucket()
        && !CLUSTER_SCOPED
            .iter()
            .any(|(g, k)| key.group == *g && key.kind == *k)
}

/// The key of the object the cluster would hold for `key`, without discovery (see
/// [`effective_namespace`]).
pub fn identity(key: &ObjectKey, default_namespace: &str) -> ObjectKey {
    if key.is_bucket() {
        return key.clone();
    }
    ObjectKey {
        namespace: effective_namespace(
            key.namespace.as_deref(),
            namespaced_without_discovery(key),
            default_namespace,
        ),
        ..key.clone()
    }
}

/// One object that changes between two sets of desired objects.
#[derive(Clone, Debug)]
pub struct Change<'a> {
    /// The object's [`identity`].
    pub key: ObjectKey,
    pub action: Action,
    pub before: Option<&'a Manifest>,
    pub after: Option<&'a Manifest>,
}

/// The changes between two sets of desired objects, and how many objects stay as they are.
#[derive(Clone, Debug, Default)]
pub struct Plan<'a> {
    /// Sorted by identity.
    pub changes: Vec<Change<'a>>,
    pub unchanged: usize,
}

impl Plan<'_> {
    pub fn count(&self, action: Action) -> usize {
        self.changes.iter().filter(|c| c.action == action).count()
    }
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Compares two sets of desired objects (e.g. the objects of the files a commit changed, at
/// the base and at the head). Objects are paired by [`identity`], so writing out the default
/// namespace is no change; of two objects with one identity on a side, the first counts.
pub fn plan<'a>(
    before: impl IntoIterator<Item = &'a Manifest>,
    after: impl IntoIterator<Item = &'a Manifest>,
    default_namespace: &str,
) -> Plan<'a> {
    type Pair<'a> = (Option<&'a Manifest>, Option<&'a Manifest>);
    let mut pairs: BTreeMap<ObjectKey, Pair<'a>> = BTreeMap::new();
    for m in before {
        let slot = pairs
            .entry(identity(&m.key, default_namespace))
            .or_default();
        slot.0 = slot.0.or(Some(m));
    }
    for m in after {
        let slot = pairs
            .entry(identity(&m.key, default_namespace))
            .or_default();
        slot.1 = slot.1.or(Some(m));
    }
    let mut out = Plan::default();
    for (key, (before, after)) in pairs {
        // The same text is the same document; only a difference is worth parsing.
        let same = matches!((before, after), (Some(b), Some(a)) if b.body == a.body);
        let (b, a) = (
            before.map(|m| m.body.value()),
            after.map(|m| m.body.value()),
        );
        let action = if same {
            None
        } else {
            change(b.as_ref(), a.as_ref())
        };
        match action {
            Some(action) => out.changes.push(Change {
                key,
                action,
                before,
                after,
            }),
            None => out.unchanged += 1,
        }
    }
    out
}

/// YAML text of a value for diffs and previews (stable key order as written).
pub fn to_yaml(value: &Value) -> String {
    serde_saphyr::to_string(value).unwrap_or_else(|e| format!("# cannot render as YAML: {e}\n"))
}

/// Unified diff of two YAML renderings, labelled like `git diff`.
pub fn unified_diff(before: Option<&Value>, after: Option<&Value>, label: &str) -> String {
    let old = before.map(to_yaml).unwrap_or_default();
    let new = after.map(to_yaml).unwrap_or_default();
    similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{label}"), &format!("b/{label}"))
        .to_string()
}
