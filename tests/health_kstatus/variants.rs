//! Objects derived from kstatus's, and gitopsd's own, for what kstatus's suite has no object for.

use serde_json::{Value, json};

use crate::{Case, is, s};

fn set_path(v: &mut Value, path: &[&str], value: Value) {
    let mut cur = v;
    for k in &path[..path.len() - 1] {
        if !cur[*k].is_object() {
            cur[*k] = json!({});
        }
        cur = &mut cur[*k];
    }
    cur[path[path.len() - 1]] = value;
}

fn with_condition(obj: &Value, kind: &str) -> Value {
    let mut v = obj.clone();
    let mut conds = v["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    conds.push(json!({"type": kind, "status": "True", "reason": "Test", "message": format!("{kind} set by the test")}));
    set_path(&mut v, &["status", "conditions"], Value::Array(conds));
    v
}

/// Variants of kstatus's objects for what its suite covers only in code: terminating objects,
/// Reconciling/Stalled on every kind, old extensions/ groups, OnDelete and partitioned StatefulSets.
pub fn variants(cases: &[Case]) -> Vec<Case> {
    let mut out = Vec::new();
    let mut add = |name: &str, suffix: &str, object: Value| {
        out.push(Case {
            name: format!("{name}+{suffix}"),
            object,
        })
    };
    for c in cases {
        let mut gone = c.object.clone();
        set_path(
            &mut gone,
            &["metadata", "deletionTimestamp"],
            json!("2024-01-01T00:00:00Z"),
        );
        add(&c.name, "terminating", gone);
        add(
            &c.name,
            "reconciling",
            with_condition(&c.object, "Reconciling"),
        );
        add(&c.name, "stalled", with_condition(&c.object, "Stalled"));
        let kind = s(&c.object, &["kind"]);
        if is(&c.object, "apps/", kind) && kind != "StatefulSet" {
            let mut old = c.object.clone();
            old["apiVersion"] = json!("extensions/v1beta1");
            add(&c.name, "extensions", old);
        }
        if is(&c.object, "apps/", "StatefulSet") {
            let mut on_delete = c.object.clone();
            set_path(
                &mut on_delete,
                &["spec", "updateStrategy", "type"],
                json!("OnDelete"),
            );
            add(&c.name, "ondelete", on_delete);
            for partition in [0, 2, 4] {
                let mut p = c.object.clone();
                set_path(
                    &mut p,
                    &["spec", "updateStrategy", "rollingUpdate", "partition"],
                    json!(partition),
                );
                add(&c.name, &format!("partition{partition}"), p);
            }
        }
    }
    out
}

/// Objects for differences gitopsd keeps that kstatus's suite has no object for.
pub fn kept_difference_cases() -> Vec<Case> {
    let pod_waiting = |reason: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "w"},
            "status": {"phase": "Pending", "containerStatuses": [
                {"name": "app", "state": {"waiting": {"reason": reason, "message": "test"}}}]}})
    };
    [
        ("podImagePullBackOff", pod_waiting("ImagePullBackOff")),
        ("podCreateContainerConfigError", pod_waiting("CreateContainerConfigError")),
        ("podErrImagePull", pod_waiting("ErrImagePull")),
        ("podInitCrashLoop", json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "i"},
            "status": {"phase": "Pending", "initContainerStatuses": [
                {"name": "init", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}})),
        ("jobSuspended", json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "generation": 1},
            "spec": {"suspend": true}, "status": {}})),
        ("pvcLost", json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c"},
            "status": {"phase": "Lost"}})),
        ("apiServiceUnavailable", json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": "v1.example.com"}, "status": {"conditions": [
                {"type": "Available", "status": "False", "reason": "MissingEndpoints"}]}})),
        ("customUnavailable", json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w", "generation": 1}, "status": {"observedGeneration": 1, "conditions": [
                {"type": "Available", "status": "False", "reason": "Starting"}]}})),
        ("onDeleteNoPods", json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "s", "generation": 1},
            "spec": {"replicas": 2, "updateStrategy": {"type": "OnDelete"}}, "status": {"observedGeneration": 1, "replicas": 0}})),
    ]
    .into_iter()
    .map(|(name, object)| Case {
        name: format!("gitopsd:{name}"),
        object,
    })
    .collect()
}
