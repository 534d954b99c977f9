//! Rules for workloads (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, Pod), checked in
//! kstatus's order so that the first thing missing is the one named.

use serde_json::Value;

use super::{
    Health, condition, condition_true, conditions, detailed, explain, get, int, progressing, text,
};

fn count(obj: &Value, field: &str) -> i64 {
    int(obj, &["status", field]).unwrap_or(0)
}

/// Desired replicas; the controllers default a missing spec.replicas to 1.
fn desired(obj: &Value) -> i64 {
    int(obj, &["spec", "replicas"]).unwrap_or(1)
}

pub(super) fn deployment(obj: &Value) -> Health {
    // Without a progress deadline the controller never reports the new ReplicaSet available.
    let deadline = int(obj, &["spec", "progressDeadlineSeconds"]);
    let mut rolled_out = deadline.is_none_or(|d| d == i64::from(i32::MAX));
    let mut available = false;
    for c in conditions(obj) {
        let reason = text(c, &["reason"]);
        let is_true = text(c, &["status"]) == Some("True");
        match text(c, &["type"]) {
            Some("Progressing") if reason == Some("ProgressDeadlineExceeded") => {
                return Health::Failed(explain(c));
            }
            Some("Progressing") if is_true && reason == Some("NewReplicaSetAvailable") => {
                rolled_out = true;
            }
            Some("Available") if is_true => available = true,
            _ => {}
        }
    }
    let want = desired(obj);
    let (total, updated) = (count(obj, "replicas"), count(obj, "updatedReplicas"));
    let (ready, avail) = (count(obj, "readyReplicas"), count(obj, "availableReplicas"));
    if want > total {
        return progressing(format!("{total} of {want} pods created"));
    }
    if want > updated {
        return progressing(format!("{updated} of {want} pods updated"));
    }
    if total > want {
        return progressing(format!("{} old pods pending termination", total - want));
    }
    if updated > avail {
        return progressing(format!("{avail} of {updated} updated pods available"));
    }
    if want > ready {
        return progressing(format!("{ready} of {want} pods ready"));
    }
    if !rolled_out {
        let why = condition(obj, "Progressing")
            .map(explain)
            .unwrap_or_default();
        return progressing(detailed("new ReplicaSet not available yet", &why));
    }
    if !available {
        let why = condition(obj, "Available").map(explain).unwrap_or_default();
        return progressing(detailed("Deployment not Available", &why));
    }
    Health::Healthy
}

pub(super) fn statefulset(obj: &Value) -> Health {
    let want = desired(obj);
    let (total, ready) = (count(obj, "replicas"), count(obj, "readyReplicas"));
    if get(obj, &["spec", "updateStrategy", "type"]).and_then(Value::as_str) == Some("OnDelete") {
        // Pods change revision only when deleted, so only readiness can be waited for (kstatus
        // waits for nothing here, not even the first pods).
        return if want > ready {
            progressing(format!("{ready} of {want} pods ready"))
        } else {
            Health::Healthy
        };
    }
    if want > total {
        return progressing(format!("{total} of {want} pods created"));
    }
    if want > ready {
        return progressing(format!("{ready} of {want} pods ready"));
    }
    if total > want {
        return progressing(format!("{} extra pods pending termination", total - want));
    }
    let updated = count(obj, "updatedReplicas");
    if let Some(partition) = int(
        obj,
        &["spec", "updateStrategy", "rollingUpdate", "partition"],
    ) {
        // Pods below the partition keep the old revision on purpose.
        let due = want - partition;
        return if updated < due {
            progressing(format!(
                "{updated} of {due} pods updated (partition {partition})"
            ))
        } else {
            Health::Healthy
        };
    }
    let current = count(obj, "currentReplicas");
    if want > current {
        return progressing(format!("{current} of {want} pods at the current revision"));
    }
    let current_rev = text(obj, &["status", "currentRevision"]).unwrap_or_default();
    let update_rev = text(obj, &["status", "updateRevision"]).unwrap_or_default();
    if current_rev != update_rev {
        return progressing(format!(
            "rolling update from revision {current_rev} to {update_rev}"
        ));
    }
    Health::Healthy
}

pub(super) fn daemonset(obj: &Value) -> Health {
    if int(obj, &["metadata", "generation"]).is_none()
        || int(obj, &["status", "observedGeneration"]).is_none()
    {
        return progressing("DaemonSet not observed by its controller yet");
    }
    let Some(want) = int(obj, &["status", "desiredNumberScheduled"]) else {
        return progressing("nodes not counted yet (no status.desiredNumberScheduled)");
    };
    let checks = [
        ("currentNumberScheduled", "scheduled"),
        ("updatedNumberScheduled", "updated"),
        ("numberAvailable", "available"),
        ("numberReady", "ready"),
    ];
    for (field, what) in checks {
        let have = count(obj, field);
        if want > have {
            return progressing(format!("{have} of {want} pods {what}"));
        }
    }
    Health::Healthy
}

pub(super) fn replicaset(obj: &Value) -> Health {
    if let Some(c) = conditions(obj).find(|c| {
        text(c, &["type"]) == Some("ReplicaFailure") && text(c, &["status"]) == Some("True")
    }) {
        // E.g. a quota: it can clear without a new commit, so kstatus keeps waiting too.
        return progressing(detailed("pods cannot be created", &explain(c)));
    }
    let want = desired(obj);
    let checks = [
        ("fullyLabeledReplicas", "created"),
        ("availableReplicas", "available"),
        ("readyReplicas", "ready"),
    ];
    for (field, what) in checks {
        let have = count(obj, field);
        if want > have {
            return progressing(format!("{have} of {want} pods {what}"));
        }
    }
    let total = count(obj, "replicas");
    if total > want {
        return progressing(format!("{} extra pods pending termination", total - want));
    }
    Health::Healthy
}

/// Healthy only once Complete (kstatus: once started), or while suspended on purpose.
pub(super) fn job(obj: &Value) -> Health {
    for c in conditions(obj) {
        let is_true = text(c, &["status"]) == Some("True");
        match text(c, &["type"]) {
            Some("Complete") if is_true => return Health::Healthy,
            Some("Failed") if is_true => {
                return Health::Failed(detailed("job failed", &explain(c)));
            }
            _ => {}
        }
    }
    if get(obj, &["spec", "suspend"]).and_then(Value::as_bool) == Some(true) {
        return Health::Healthy;
    }
    let parallelism = int(obj, &["spec", "parallelism"]).unwrap_or(1);
    let completions = int(obj, &["spec", "completions"]).unwrap_or(parallelism);
    let succeeded = count(obj, "succeeded");
    progressing(format!("{succeeded} of {completions} completions"))
}

/// Waiting reasons that do not end without a change to the spec.
const STUCK: [&str; 3] = [
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "CreateContainerConfigError",
];

pub(super) fn pod(obj: &Value) -> Health {
    let phase = text(obj, &["status", "phase"]).unwrap_or_default();
    match phase {
        "Succeeded" => return Health::Healthy,
        "Failed" => return Health::Failed(pod_failure(obj)),
        "Running" if condition_true(obj, "Ready") => return Health::Healthy,
        _ => {}
    }
    if let Some(stuck) = stuck_container(obj) {
        return Health::Failed(stuck);
    }
    match phase {
        "Running" => {
            let why = condition(obj, "Ready").map(explain).unwrap_or_default();
            progressing(detailed("pod running but not ready", &why))
        }
        "Pending" => match condition(obj, "PodScheduled") {
            Some(c)
                if text(c, &["status"]) == Some("False")
                    && text(c, &["reason"]) == Some("Unschedulable") =>
            {
                let why = text(c, &["message"]).unwrap_or_default();
                Health::Failed(detailed("unschedulable", why))
            }
            _ => progressing("pod pending"),
        },
        "" => progressing("pod not observed by a kubelet yet"),
        other => progressing(format!("pod is {other}")),
    }
}

/// "container app: CrashLoopBackOff: back-off 5m0s…" for the first container in a [`STUCK`] state.
fn stuck_container(obj: &Value) -> Option<String> {
    ["initContainerStatuses", "containerStatuses"]
        .iter()
        .filter_map(|list| get(obj, &["status", list]).and_then(Value::as_array))
        .flatten()
        .find_map(|cs| {
            let waiting = get(cs, &["state", "waiting"])?;
            let reason = text(waiting, &["reason"]).filter(|r| STUCK.contains(r))?;
            let name = text(cs, &["name"]).unwrap_or("?");
            let message = text(waiting, &["message"]).unwrap_or_default();
            Some(detailed(&format!("container {name}: {reason}"), message))
        })
}

/// Why a pod failed: its own reason (e.g. Evicted), else the first container that exited badly.
fn pod_failure(obj: &Value) -> String {
    if let Some(reason) = text(obj, &["status", "reason"]) {
        let message = text(obj, &["status", "message"]).unwrap_or_default();
        return detailed(&format!("pod failed: {reason}"), message);
    }
    let exited = get(obj, &["status", "containerStatuses"])
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find_map(|cs| {
            let term = get(cs, &["state", "terminated"])?;
            let code = int(term, &["exitCode"]).filter(|c| *c != 0)?;
            let name = text(cs, &["name"]).unwrap_or("?");
            let reason = text(term, &["reason"]).unwrap_or_default();
            Some(format!("container {name} exited with code {code} {reason}"))
        });
    exited.map_or_else(
        || "pod failed".to_string(),
        |e| format!("pod failed: {}", e.trim_end()),
    )
}

#[cfg(test)]
mod tests {
    use super::super::assess;
    use super::*;
    use serde_json::json;

    fn progressing_with(h: Health, part: &str) -> bool {
        matches!(&h, Health::Progressing(m) if m.contains(part))
            || panic!("{h:?} is not Progressing({part}…)")
    }

    fn deployment_with(status: Value, conditions: Value) -> Value {
        let mut status = status;
        status["conditions"] = conditions;
        status["observedGeneration"] = json!(1);
        json!({"metadata": {"generation": 1}, "spec": {"replicas": 3, "progressDeadlineSeconds": 600}, "status": status})
    }

    const ROLLED_OUT: [(&str, &str, &str); 2] = [
        ("Progressing", "True", "NewReplicaSetAvailable"),
        ("Available", "True", "MinimumReplicasAvailable"),
    ];

    fn conds(list: &[(&str, &str, &str)]) -> Value {
        list.iter()
            .map(|(t, s, r)| json!({"type": t, "status": s, "reason": r}))
            .collect()
    }

    #[test]
    fn deployment_needs_counts_and_conditions() {
        let full = json!({"replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3});
        assert_eq!(
            assess(
                "apps",
                "Deployment",
                &deployment_with(full.clone(), conds(&ROLLED_OUT))
            ),
            Health::Healthy
        );
        let not_available = conds(&[
            ROLLED_OUT[0],
            ("Available", "False", "MinimumReplicasUnavailable"),
        ]);
        assert!(progressing_with(
            assess(
                "apps",
                "Deployment",
                &deployment_with(full.clone(), not_available)
            ),
            "not Available"
        ));
        let still_rolling = conds(&[("Progressing", "True", "ReplicaSetUpdated"), ROLLED_OUT[1]]);
        assert!(progressing_with(
            assess(
                "apps",
                "Deployment",
                &deployment_with(full.clone(), still_rolling)
            ),
            "new ReplicaSet"
        ));
        let extra = json!({"replicas": 4, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3});
        assert!(progressing_with(
            assess(
                "apps",
                "Deployment",
                &deployment_with(extra, conds(&ROLLED_OUT))
            ),
            "1 old pods"
        ));
        let half = json!({"replicas": 3, "updatedReplicas": 3, "readyReplicas": 1, "availableReplicas": 1});
        assert!(progressing_with(
            assess(
                "apps",
                "Deployment",
                &deployment_with(half, conds(&ROLLED_OUT))
            ),
            "1 of 3 updated pods available"
        ));
        let deadline = conds(&[("Progressing", "False", "ProgressDeadlineExceeded")]);
        assert!(
            matches!(assess("apps", "Deployment", &deployment_with(full, deadline)),
            Health::Failed(m) if m.starts_with("ProgressDeadlineExceeded"))
        );
    }

    #[test]
    fn deployment_without_deadline_skips_the_progressing_condition() {
        let d = json!({"metadata": {"generation": 1}, "spec": {"replicas": 1}, "status": {"observedGeneration": 1,
            "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
            "conditions": [{"type": "Available", "status": "True"}]}});
        assert_eq!(assess("apps", "Deployment", &d), Health::Healthy);
    }

    fn sts(strategy: Value, status: Value) -> Value {
        json!({"metadata": {"generation": 1}, "spec": {"replicas": 4, "updateStrategy": strategy}, "status": status})
    }

    #[test]
    fn statefulset_without_updated_replicas_completes() {
        let done = json!({"observedGeneration": 1, "replicas": 4, "readyReplicas": 4, "currentReplicas": 4});
        assert_eq!(
            assess("apps", "StatefulSet", &sts(json!({}), done.clone())),
            Health::Healthy
        );
        let mut rolling = done.clone();
        rolling["currentRevision"] = json!("web-1");
        rolling["updateRevision"] = json!("web-2");
        assert!(progressing_with(
            assess("apps", "StatefulSet", &sts(json!({}), rolling)),
            "web-1 to web-2"
        ));
        let partitioned = json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 2}});
        let mut part = done.clone();
        part["updatedReplicas"] = json!(1);
        assert!(progressing_with(
            assess(
                "apps",
                "StatefulSet",
                &sts(partitioned.clone(), part.clone())
            ),
            "1 of 2 pods updated"
        ));
        part["updatedReplicas"] = json!(2);
        assert_eq!(
            assess("apps", "StatefulSet", &sts(partitioned, part)),
            Health::Healthy
        );
        let mut extra = done.clone();
        extra["replicas"] = json!(5);
        assert!(progressing_with(
            assess("apps", "StatefulSet", &sts(json!({}), extra)),
            "1 extra pods"
        ));
    }

    #[test]
    fn ondelete_statefulset_waits_for_ready_pods_only() {
        let on_delete = json!({"type": "OnDelete"});
        let half = json!({"observedGeneration": 1, "replicas": 4, "readyReplicas": 2});
        assert!(progressing_with(
            assess("apps", "StatefulSet", &sts(on_delete.clone(), half)),
            "2 of 4 pods ready"
        ));
        let ready = json!({"observedGeneration": 1, "replicas": 4, "readyReplicas": 4, "currentRevision": "a", "updateRevision": "b"});
        assert_eq!(
            assess("apps", "StatefulSet", &sts(on_delete, ready)),
            Health::Healthy
        );
    }

    #[test]
    fn daemonset_counts_every_stage() {
        let ds = |status: Value| json!({"metadata": {"generation": 1}, "status": status});
        let full = json!({"observedGeneration": 1, "desiredNumberScheduled": 4, "currentNumberScheduled": 4,
            "updatedNumberScheduled": 4, "numberAvailable": 4, "numberReady": 4});
        assert_eq!(
            assess("apps", "DaemonSet", &ds(full.clone())),
            Health::Healthy
        );
        let mut less_ready = full.clone();
        less_ready["numberReady"] = json!(2);
        assert_eq!(
            assess("apps", "DaemonSet", &ds(less_ready)),
            Health::Progressing("2 of 4 pods ready".into())
        );
        assert!(progressing_with(
            assess("apps", "DaemonSet", &ds(json!({"observedGeneration": 1}))),
            "desiredNumberScheduled"
        ));
        assert!(progressing_with(
            assess("apps", "DaemonSet", &json!({"metadata": {"generation": 1}})),
            "not observed"
        ));
    }

    #[test]
    fn replicaset_counts_and_replica_failure() {
        let rs = |status: Value| json!({"spec": {"replicas": 4}, "status": status});
        let full = json!({"replicas": 4, "fullyLabeledReplicas": 4, "availableReplicas": 4, "readyReplicas": 4});
        assert_eq!(
            assess("apps", "ReplicaSet", &rs(full.clone())),
            Health::Healthy
        );
        let mut less_ready = full.clone();
        less_ready["readyReplicas"] = json!(2);
        assert!(progressing_with(
            assess("apps", "ReplicaSet", &rs(less_ready)),
            "2 of 4 pods ready"
        ));
        let mut failure = full;
        failure["conditions"] = json!([{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
            "message": "exceeded quota: pods"}]);
        assert_eq!(
            assess("apps", "ReplicaSet", &rs(failure)),
            Health::Progressing(
                "pods cannot be created: FailedCreate: exceeded quota: pods".into()
            )
        );
    }

    #[test]
    fn jobs_count_when_complete() {
        let job = |spec: Value, status: Value| json!({"spec": spec, "status": status});
        let complete = job(
            json!({}),
            json!({"conditions": [{"type": "Complete", "status": "True"}]}),
        );
        assert_eq!(assess("batch", "Job", &complete), Health::Healthy);
        let failed = job(
            json!({}),
            json!({"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}),
        );
        assert_eq!(
            assess("batch", "Job", &failed),
            Health::Failed("job failed: BackoffLimitExceeded".into())
        );
        let running = job(
            json!({"completions": 10, "parallelism": 2}),
            json!({"startTime": "2024-01-01T00:00:00Z", "succeeded": 3}),
        );
        assert_eq!(
            assess("batch", "Job", &running),
            Health::Progressing("3 of 10 completions".into())
        );
        assert_eq!(
            assess("batch", "Job", &job(json!({"suspend": true}), json!({}))),
            Health::Healthy
        );
    }

    fn pod_with(status: Value) -> Value {
        json!({"metadata": {"name": "p"}, "status": status})
    }

    #[test]
    fn pods_by_phase() {
        let ready = pod_with(
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}),
        );
        assert_eq!(assess("", "Pod", &ready), Health::Healthy);
        assert_eq!(
            assess("", "Pod", &pod_with(json!({"phase": "Succeeded"}))),
            Health::Healthy
        );
        let unready = pod_with(
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False",
            "reason": "ContainersNotReady", "message": "containers with unready status: [app]"}]}),
        );
        assert!(progressing_with(
            assess("", "Pod", &unready),
            "containers with unready status"
        ));
        assert!(progressing_with(
            assess("", "Pod", &pod_with(json!({}))),
            "not observed"
        ));
        assert!(progressing_with(
            assess("", "Pod", &pod_with(json!({"phase": "Pending"}))),
            "pending"
        ));
    }

    #[test]
    fn failed_pods_say_why() {
        let crashed = pod_with(
            json!({"phase": "Failed", "containerStatuses": [{"name": "app",
            "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}),
        );
        assert_eq!(
            assess("", "Pod", &crashed),
            Health::Failed("pod failed: container app exited with code 1 Error".into())
        );
        let evicted =
            pod_with(json!({"phase": "Failed", "reason": "Evicted", "message": "low on memory"}));
        assert_eq!(
            assess("", "Pod", &evicted),
            Health::Failed("pod failed: Evicted: low on memory".into())
        );
    }

    #[test]
    fn unschedulable_and_stuck_pods_fail_at_once() {
        let unschedulable = pod_with(
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/2 nodes are available: 2 Insufficient cpu."}]}),
        );
        assert_eq!(
            assess("", "Pod", &unschedulable),
            Health::Failed("unschedulable: 0/2 nodes are available: 2 Insufficient cpu.".into())
        );
        for reason in STUCK {
            let stuck = pod_with(
                json!({"phase": "Pending", "initContainerStatuses": [{"name": "init",
                "state": {"waiting": {"reason": reason, "message": "m"}}}]}),
            );
            assert_eq!(
                assess("", "Pod", &stuck),
                Health::Failed(format!("container init: {reason}: m"))
            );
        }
        let pulling = pod_with(
            json!({"phase": "Pending", "containerStatuses": [{"name": "app",
            "state": {"waiting": {"reason": "ErrImagePull"}}}]}),
        );
        assert!(matches!(
            assess("", "Pod", &pulling),
            Health::Progressing(_)
        ));
    }
}
