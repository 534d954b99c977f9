//! Health of live objects, modelled on kstatus: pure rules over an object's JSON, and a wait
//! that checks applied objects until all are healthy, one has failed, or the deadline passes.

use std::time::Duration;

use serde_json::Value;

use super::Cluster;
use crate::manifest::{Manifest, ObjectKey};

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

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    get(obj, &["status", "conditions"])?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

/// Whether `status.conditions[type=kind].status` is "True".
pub fn condition_true(obj: &Value, kind: &str) -> bool {
    condition(obj, kind)
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        == Some("True")
}

fn condition_message(obj: &Value, kind: &str) -> String {
    condition(obj, kind)
        .map(|c| {
            let reason = c.get("reason").and_then(Value::as_str).unwrap_or_default();
            let message = c.get("message").and_then(Value::as_str).unwrap_or_default();
            format!("{reason}: {message}")
                .trim_matches([':', ' '])
                .to_string()
        })
        .unwrap_or_default()
}

/// Health of one live object by its group and kind.
pub fn assess(group: &str, kind: &str, obj: &Value) -> Health {
    let generation = int(obj, &["metadata", "generation"]);
    let observed = int(obj, &["status", "observedGeneration"]);
    if let (Some(generation), Some(observed)) = (generation, observed)
        && observed < generation
    {
        return Health::Progressing(format!(
            "controller has not observed generation {generation} yet"
        ));
    }
    match (group, kind) {
        ("apps", "Deployment") => deployment(obj, generation, observed),
        ("apps", "StatefulSet") => statefulset(obj, observed),
        ("apps", "DaemonSet") => daemonset(obj, observed),
        ("apps", "ReplicaSet") => replicaset(obj),
        ("batch", "Job") => job(obj),
        ("", "Pod") => pod(obj),
        ("", "PersistentVolumeClaim") => {
            match get(obj, &["status", "phase"]).and_then(Value::as_str) {
                Some("Bound") => Health::Healthy,
                Some("Lost") => Health::Failed("claim lost its volume".into()),
                other => Health::Progressing(format!("claim is {}", other.unwrap_or("Pending"))),
            }
        }
        ("", "Service") => {
            if get(obj, &["spec", "type"]).and_then(Value::as_str) == Some("LoadBalancer") {
                let has_address = get(obj, &["status", "loadBalancer", "ingress"])
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty());
                if has_address {
                    Health::Healthy
                } else {
                    Health::Progressing("load balancer has no address yet".into())
                }
            } else {
                Health::Healthy
            }
        }
        ("", "Namespace") => match get(obj, &["status", "phase"]).and_then(Value::as_str) {
            Some("Active") | None => Health::Healthy,
            Some(phase) => Health::Progressing(format!("namespace is {phase}")),
        },
        ("apiextensions.k8s.io", "CustomResourceDefinition") => ready_condition(obj, "Established"),
        ("apiregistration.k8s.io", "APIService") => ready_condition(obj, "Available"),
        _ => generic(obj),
    }
}

fn ready_condition(obj: &Value, kind: &str) -> Health {
    if condition_true(obj, kind) {
        Health::Healthy
    } else {
        Health::Progressing(format!("not {kind}: {}", condition_message(obj, kind)))
    }
}

fn deployment(obj: &Value, generation: Option<i64>, observed: Option<i64>) -> Health {
    if let Some(c) = condition(obj, "Progressing")
        && c.get("reason").and_then(Value::as_str) == Some("ProgressDeadlineExceeded")
    {
        // The condition's reason is ProgressDeadlineExceeded; the message carries it.
        return Health::Failed(condition_message(obj, "Progressing"));
    }
    if generation.is_some() && observed.is_none() {
        return Health::Progressing("rollout not observed yet".into());
    }
    let desired = int(obj, &["spec", "replicas"]).unwrap_or(1);
    let updated = int(obj, &["status", "updatedReplicas"]).unwrap_or(0);
    let total = int(obj, &["status", "replicas"]).unwrap_or(0);
    let available = int(obj, &["status", "availableReplicas"]).unwrap_or(0);
    let ready = int(obj, &["status", "readyReplicas"]).unwrap_or(0);
    if updated < desired {
        return Health::Progressing(format!("{updated} of {desired} replicas updated"));
    }
    if total > updated {
        return Health::Progressing(format!(
            "{} old replicas pending termination",
            total - updated
        ));
    }
    if ready < desired || available < desired {
        return Health::Progressing(format!(
            "{available} of {desired} replicas available ({ready} ready)"
        ));
    }
    Health::Healthy
}

fn statefulset(obj: &Value, observed: Option<i64>) -> Health {
    if observed.is_none() {
        return Health::Progressing("rollout not observed yet".into());
    }
    let desired = int(obj, &["spec", "replicas"]).unwrap_or(1);
    let ready = int(obj, &["status", "readyReplicas"]).unwrap_or(0);
    let available = int(obj, &["status", "availableReplicas"]).unwrap_or(ready);
    let rolling =
        get(obj, &["spec", "updateStrategy", "type"]).and_then(Value::as_str) != Some("OnDelete");
    if rolling {
        let updated = int(obj, &["status", "updatedReplicas"]).unwrap_or(0);
        let current = get(obj, &["status", "currentRevision"]);
        let update = get(obj, &["status", "updateRevision"]);
        if updated < desired || (update.is_some() && current != update) {
            return Health::Progressing(format!("{updated} of {desired} replicas updated"));
        }
    }
    if ready < desired || available < desired {
        return Health::Progressing(format!("{ready} of {desired} replicas ready"));
    }
    Health::Healthy
}

fn daemonset(obj: &Value, observed: Option<i64>) -> Health {
    if observed.is_none() {
        return Health::Progressing("rollout not observed yet".into());
    }
    let desired = int(obj, &["status", "desiredNumberScheduled"]).unwrap_or(0);
    let updated = int(obj, &["status", "updatedNumberScheduled"]).unwrap_or(0);
    let available = int(obj, &["status", "numberAvailable"]).unwrap_or(0);
    if updated < desired {
        return Health::Progressing(format!("{updated} of {desired} pods updated"));
    }
    if available < desired {
        return Health::Progressing(format!("{available} of {desired} pods available"));
    }
    Health::Healthy
}

fn replicaset(obj: &Value) -> Health {
    let desired = int(obj, &["spec", "replicas"]).unwrap_or(1);
    let available = int(obj, &["status", "availableReplicas"]).unwrap_or(0);
    if available < desired {
        return Health::Progressing(format!("{available} of {desired} replicas available"));
    }
    Health::Healthy
}

fn job(obj: &Value) -> Health {
    if condition_true(obj, "Failed") {
        return Health::Failed(format!("job failed: {}", condition_message(obj, "Failed")));
    }
    if condition_true(obj, "Complete") {
        return Health::Healthy;
    }
    if get(obj, &["spec", "suspend"]).and_then(Value::as_bool) == Some(true) {
        return Health::Healthy;
    }
    let succeeded = int(obj, &["status", "succeeded"]).unwrap_or(0);
    let completions = int(obj, &["spec", "completions"]).unwrap_or(1);
    Health::Progressing(format!("{succeeded} of {completions} completions"))
}

fn pod(obj: &Value) -> Health {
    match get(obj, &["status", "phase"]).and_then(Value::as_str) {
        Some("Succeeded") => return Health::Healthy,
        Some("Failed") => {
            let reason = get(obj, &["status", "reason"])
                .and_then(Value::as_str)
                .unwrap_or("Failed");
            return Health::Failed(format!("pod failed: {reason}"));
        }
        _ => {}
    }
    let statuses = get(obj, &["status", "containerStatuses"]).and_then(Value::as_array);
    for status in statuses.into_iter().flatten() {
        let waiting = get(status, &["state", "waiting", "reason"]).and_then(Value::as_str);
        if matches!(
            waiting,
            Some(
                "CrashLoopBackOff"
                    | "ImagePullBackOff"
                    | "ErrImagePull"
                    | "CreateContainerConfigError"
            )
        ) {
            let name = status.get("name").and_then(Value::as_str).unwrap_or("?");
            return Health::Failed(format!("container {name}: {}", waiting.unwrap_or_default()));
        }
    }
    if condition_true(obj, "Ready") {
        Health::Healthy
    } else {
        Health::Progressing(format!(
            "pod not ready: {}",
            condition_message(obj, "Ready")
        ))
    }
}

fn generic(obj: &Value) -> Health {
    for kind in ["Ready", "Available"] {
        if let Some(c) = condition(obj, kind) {
            return match c.get("status").and_then(Value::as_str) {
                Some("True") => Health::Healthy,
                _ => Health::Progressing(format!("not {kind}: {}", condition_message(obj, kind))),
            };
        }
    }
    Health::Healthy
}

/// An object that did not become healthy, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unhealthy {
    pub key: ObjectKey,
    pub reason: String,
}

/// Checks `objects` until all are healthy (empty result), one has Failed (returned at once,
/// without waiting for the deadline), or `timeout` passes (the ones still progressing).
pub async fn wait_healthy(
    cluster: &Cluster,
    objects: &[&Manifest],
    timeout: Duration,
    cancel: &tokio_util::sync::CancellationToken,
) -> Vec<Unhealthy> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pending: Vec<&Manifest> = objects.to_vec();
    let mut delay = Duration::from_millis(250);
    loop {
        let mut still = Vec::new();
        let mut reasons = Vec::new();
        let mut failed = Vec::new();
        for m in &pending {
            let health = match cluster.get(m).await {
                Ok(Some(obj)) => match serde_json::to_value(&obj) {
                    Ok(v) => assess(&m.key.group, &m.key.kind, &v),
                    Err(e) => Health::Progressing(format!("cannot read status: {e}")),
                },
                Ok(None) => Health::Progressing("object does not exist".into()),
                Err(e) if e.is_transient() => Health::Progressing(e.to_string()),
                Err(e) => Health::Failed(e.reason()),
            };
            match health {
                Health::Healthy => {}
                Health::Progressing(reason) => {
                    still.push(*m);
                    reasons.push(Unhealthy {
                        key: m.key.clone(),
                        reason,
                    });
                }
                Health::Failed(reason) => failed.push(Unhealthy {
                    key: m.key.clone(),
                    reason,
                }),
            }
        }
        if !failed.is_empty() {
            return failed;
        }
        if still.is_empty() {
            return Vec::new();
        }
        if tokio::time::Instant::now() >= deadline || cancel.is_cancelled() {
            return reasons;
        }
        pending = still;
        tokio::select! {
            _ = tokio::time::sleep(delay.min(deadline.saturating_duration_since(tokio::time::Instant::now()))) => {}
            _ = cancel.cancelled() => {}
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deployment_rules() {
        let ok = json!({"metadata": {"generation": 2}, "spec": {"replicas": 3},
            "status": {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3}});
        assert_eq!(assess("apps", "Deployment", &ok), Health::Healthy);
        let stale = json!({"metadata": {"generation": 3}, "spec": {"replicas": 3},
            "status": {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3}});
        assert!(matches!(
            assess("apps", "Deployment", &stale),
            Health::Progressing(_)
        ));
        let deadline = json!({"metadata": {"generation": 1}, "spec": {"replicas": 3},
            "status": {"observedGeneration": 1, "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet web-1 has timed out progressing."}]}});
        assert!(
            matches!(assess("apps", "Deployment", &deadline), Health::Failed(m) if m.contains("ProgressDeadlineExceeded"))
        );
    }

    #[test]
    fn job_pod_pvc_and_generic_rules() {
        let failed = json!({"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}});
        assert!(matches!(assess("batch", "Job", &failed), Health::Failed(_)));
        let done = json!({"status": {"conditions": [{"type": "Complete", "status": "True"}]}});
        assert_eq!(assess("batch", "Job", &done), Health::Healthy);
        let crash = json!({"status": {"phase": "Running", "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        assert!(matches!(assess("", "Pod", &crash), Health::Failed(_)));
        assert!(matches!(
            assess(
                "",
                "PersistentVolumeClaim",
                &json!({"status": {"phase": "Pending"}})
            ),
            Health::Progressing(_)
        ));
        assert_eq!(
            assess(
                "",
                "PersistentVolumeClaim",
                &json!({"status": {"phase": "Bound"}})
            ),
            Health::Healthy
        );
        assert_eq!(
            assess("", "ConfigMap", &json!({"data": {}})),
            Health::Healthy
        );
        let not_ready = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "message": "waiting"}]}});
        assert!(matches!(
            assess("example.com", "Widget", &not_ready),
            Health::Progressing(_)
        ));
        let lb = json!({"spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {}}});
        assert!(matches!(assess("", "Service", &lb), Health::Progressing(_)));
    }
}
