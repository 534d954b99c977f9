//! Health of live objects: pure rules over an object's JSON that follow kstatus
//! (sigs.k8s.io/cli-utils/pkg/kstatus/status, what kubectl, kpt, Flux and cli-utils use), except for
//! the differences listed in the README's health section; tests/health_kstatus.rs compares both.
//! Waiting for health is the live cache's job (`k8s::live`, `reconcile::health`).
//!
//! A verdict depends on the object alone (no clock), so a watch reaches it from the object's own events.

mod resources;
mod workloads;

use serde_json::Value;

use crate::manifest::ObjectKey;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// Not there yet; the reason says what is missing.
    Progressing(String),
    /// Will not get better by waiting (e.g. ProgressDeadlineExceeded, a failed Job).
    Failed(String),
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn int(v: &Value, path: &[&str]) -> Option<i64> {
    get(v, path).and_then(Value::as_i64)
}

fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    get(v, path).and_then(Value::as_str)
}

/// `status.conditions`, in their order (kstatus acts on the first that matches).
fn conditions(obj: &Value) -> impl Iterator<Item = &Value> {
    get(obj, &["status", "conditions"])
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    conditions(obj).find(|c| text(c, &["type"]) == Some(kind))
}

/// Whether `status.conditions[type=kind].status` is "True".
pub fn condition_true(obj: &Value, kind: &str) -> bool {
    condition(obj, kind).and_then(|c| text(c, &["status"])) == Some("True")
}

/// "reason: message" of a condition (or what there is of it).
fn explain(c: &Value) -> String {
    let reason = text(c, &["reason"]).unwrap_or_default();
    let message = text(c, &["message"]).unwrap_or_default();
    match (reason.is_empty(), message.is_empty()) {
        (false, false) => format!("{reason}: {message}"),
        (false, true) => reason.to_string(),
        _ => message.to_string(),
    }
}

/// `what`, followed by ": detail" when there is one.
fn detailed(what: &str, detail: &str) -> String {
    if detail.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {detail}")
    }
}

fn progressing(what: impl Into<String>) -> Health {
    Health::Progressing(what.into())
}

/// Health of one live object by its group and kind.
pub fn assess(group: &str, kind: &str, obj: &Value) -> Health {
    if let Some(health) = common(kind, obj) {
        return health;
    }
    // The old extensions/ group served the same workloads as apps/.
    let group = match (group, kind) {
        ("extensions", "Deployment" | "DaemonSet" | "ReplicaSet") => "apps",
        _ => group,
    };
    match (group, kind) {
        ("apps", "Deployment") => workloads::deployment(obj),
        ("apps", "StatefulSet") => workloads::statefulset(obj),
        ("apps", "DaemonSet") => workloads::daemonset(obj),
        ("apps", "ReplicaSet") => workloads::replicaset(obj),
        ("batch", "Job") => workloads::job(obj),
        ("", "Pod") => workloads::pod(obj),
        ("", "PersistentVolumeClaim") => resources::claim(obj),
        ("", "Service") => resources::service(obj),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => resources::crd(obj),
        ("apiregistration.k8s.io", "APIService") => resources::api_service(obj),
        // Nothing to wait for (as in kstatus), whatever conditions they carry.
        ("", "ConfigMap" | "Secret") | ("batch", "CronJob") | ("policy", "PodDisruptionBudget") => {
            Health::Healthy
        }
        _ => resources::generic(obj),
    }
}

/// What holds for every kind before its own rule: deletion, an unobserved generation, and the
/// standard Reconciling/Stalled conditions.
fn common(kind: &str, obj: &Value) -> Option<Health> {
    if text(obj, &["metadata", "deletionTimestamp"]).is_some_and(|t| !t.is_empty()) {
        return Some(progressing(format!("{kind} is being deleted")));
    }
    let generation = int(obj, &["metadata", "generation"]);
    let observed = int(obj, &["status", "observedGeneration"]);
    if let (Some(generation), Some(observed)) = (generation, observed)
        && observed != generation
    {
        return Some(progressing(format!(
            "controller has not observed generation {generation} yet (at {observed})"
        )));
    }
    conditions(obj).find_map(|c| match (text(c, &["type"]), text(c, &["status"])) {
        (Some("Reconciling"), Some("True")) => {
            Some(progressing(detailed("reconciling", &explain(c))))
        }
        (Some("Stalled"), Some("True")) => Some(Health::Failed(detailed("stalled", &explain(c)))),
        _ => None,
    })
}

/// An object that did not become healthy, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unhealthy {
    pub key: ObjectKey,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn is_progressing(h: &Health, part: &str) -> bool {
        matches!(h, Health::Progressing(m) if m.contains(part))
    }

    #[test]
    fn terminating_objects_are_not_healthy() {
        let gone = json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}});
        assert!(is_progressing(
            &assess("", "ConfigMap", &gone),
            "being deleted"
        ));
        assert!(is_progressing(
            &assess("example.com", "Widget", &gone),
            "being deleted"
        ));
    }

    #[test]
    fn unobserved_generation_is_progressing() {
        let stale = json!({"metadata": {"generation": 3}, "status": {"observedGeneration": 2,
            "conditions": [{"type": "Ready", "status": "True"}]}});
        assert!(is_progressing(
            &assess("example.com", "Widget", &stale),
            "generation 3"
        ));
        let current = json!({"metadata": {"generation": 3}, "status": {"observedGeneration": 3}});
        assert_eq!(assess("example.com", "Widget", &current), Health::Healthy);
    }

    #[test]
    fn reconciling_and_stalled_hold_for_every_kind() {
        let reconciling = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "Reconciling", "status": "True", "reason": "Progressing", "message": "fetching"}]}});
        assert!(is_progressing(
            &assess("example.com", "Widget", &reconciling),
            "Progressing: fetching"
        ));
        let stalled = json!({"status": {"conditions": [
            {"type": "Stalled", "status": "True", "reason": "InvalidSpec", "message": "bad url"}]}});
        assert_eq!(
            assess("example.com", "Widget", &stalled),
            Health::Failed("stalled: InvalidSpec: bad url".into())
        );
        assert!(matches!(
            assess("", "ConfigMap", &stalled),
            Health::Failed(_)
        ));
        let not_stalled =
            json!({"status": {"conditions": [{"type": "Stalled", "status": "False"}]}});
        assert_eq!(
            assess("example.com", "Widget", &not_stalled),
            Health::Healthy
        );
    }

    #[test]
    fn always_ready_kinds_ignore_ready_conditions() {
        let not_ready = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        assert_eq!(assess("batch", "CronJob", &not_ready), Health::Healthy);
        assert_eq!(
            assess("policy", "PodDisruptionBudget", &not_ready),
            Health::Healthy
        );
        assert!(is_progressing(
            &assess("example.com", "Widget", &not_ready),
            "not ready"
        ));
    }

    #[test]
    fn extensions_group_uses_the_apps_rules() {
        let ds = json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1}});
        assert!(is_progressing(
            &assess("extensions", "DaemonSet", &ds),
            "desiredNumberScheduled"
        ));
        assert_eq!(
            assess("apps", "DaemonSet", &ds),
            assess("extensions", "DaemonSet", &ds)
        );
    }
}
