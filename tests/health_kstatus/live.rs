//! Objects applied to the testbed, and every state they pass through on the way to their end state.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use serde_json::{Value, json};

use crate::{Case, has_condition, s};

/// What ends the wait for an object.
type EndState = fn(&Value) -> bool;

fn pod_spec(extra: Value) -> Value {
    let mut spec = json!({ "containers": [{ "name": "app", "image": "registry.invalid/gitopsd/fake:1",
        "resources": { "requests": { "cpu": "10m", "memory": "16Mi" } } }] });
    merge(&mut spec, extra);
    spec
}

fn merge(into: &mut Value, extra: Value) {
    if let (Some(into), Value::Object(extra)) = (into.as_object_mut(), extra) {
        into.extend(extra);
    }
}

fn workload(kind: &str, name: &str, pod_labels: Value, extra: Value) -> Value {
    let mut labels = json!({ "app": name });
    merge(&mut labels, pod_labels);
    let mut spec = json!({ "selector": { "matchLabels": { "app": name } },
        "template": { "metadata": { "labels": labels }, "spec": pod_spec(json!({})) } });
    merge(&mut spec, extra);
    json!({ "apiVersion": "apps/v1", "kind": kind, "metadata": { "name": name }, "spec": spec })
}

fn pod(name: &str, labels: Value, extra: Value) -> Value {
    let mut spec = pod_spec(json!({ "restartPolicy": "Never" }));
    merge(&mut spec, extra);
    json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name, "labels": labels }, "spec": spec })
}

fn job(name: &str, labels: Value) -> Value {
    let template = json!({ "metadata": { "labels": labels },
        "spec": pod_spec(json!({ "restartPolicy": "Never" })) });
    json!({ "apiVersion": "batch/v1", "kind": "Job", "metadata": { "name": name },
        "spec": { "backoffLimit": 0, "template": template } })
}

fn rolled_out(v: &Value) -> bool {
    has_condition(v, "Available", "True") && v["status"]["availableReplicas"] == 3
}

fn deadline_exceeded(v: &Value) -> bool {
    v["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["reason"] == "ProgressDeadlineExceeded"))
}

fn sts_ready(v: &Value) -> bool {
    v["status"]["readyReplicas"] == 2
        && v["status"]["currentRevision"] == v["status"]["updateRevision"]
}

fn ds_ready(v: &Value) -> bool {
    let ready = &v["status"]["numberReady"];
    ready.as_i64() > Some(0) && *ready == v["status"]["desiredNumberScheduled"]
}

/// The objects applied for the live comparison (kwok ready, unready and crash labels), each with
/// the state that ends the wait for it.
fn live_objects() -> Vec<(Value, EndState)> {
    let unready = json!({ "gitopsd.test/fail": "unready" });
    let crash = json!({ "gitopsd.test/fail": "crash" });
    let nowhere = json!({ "nodeSelector": { "gitopsd.test/no-such-node": "x" } });
    vec![
        (
            workload("Deployment", "ready", json!({}), json!({ "replicas": 3 })),
            rolled_out,
        ),
        (
            workload(
                "Deployment",
                "unready",
                unready.clone(),
                json!({ "replicas": 2, "progressDeadlineSeconds": 5 }),
            ),
            deadline_exceeded,
        ),
        (
            workload(
                "StatefulSet",
                "sts",
                json!({}),
                json!({ "replicas": 2, "serviceName": "sts" }),
            ),
            sts_ready,
        ),
        (workload("DaemonSet", "ds", json!({}), json!({})), ds_ready),
        (pod("crash", crash.clone(), json!({})), |v| {
            s(v, &["status", "phase"]) == "Failed"
        }),
        (pod("notready", unready, json!({})), |v| {
            s(v, &["status", "phase"]) == "Running"
        }),
        (pod("nowhere", json!({}), nowhere), |v| {
            has_condition(v, "PodScheduled", "False")
        }),
        (job("job-ok", json!({})), |v| {
            has_condition(v, "Complete", "True")
        }),
        (job("job-crash", crash), |v| {
            has_condition(v, "Failed", "True")
        }),
    ]
}

fn api_for(client: &kube::Client, ns: &str, obj: &Value) -> Api<DynamicObject> {
    let (group, version) = match s(obj, &["apiVersion"]).split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), s(obj, &["apiVersion"]).to_string()),
    };
    let kind = s(obj, &["kind"]);
    let gvk = kube::api::GroupVersionKind::gvk(&group, &version, kind);
    let plural = format!("{}s", kind.to_ascii_lowercase());
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, &plural),
    )
}

/// Every distinct state (by resourceVersion) of the namespace's workloads and pods.
async fn snapshot(client: &kube::Client, ns: &str, seen: &mut BTreeMap<String, Case>) {
    let kinds = [
        ("apps/v1", "Deployment"),
        ("apps/v1", "ReplicaSet"),
        ("apps/v1", "StatefulSet"),
        ("apps/v1", "DaemonSet"),
        ("batch/v1", "Job"),
        ("v1", "Pod"),
    ];
    for (api_version, kind) in kinds {
        let api = api_for(
            client,
            ns,
            &json!({ "apiVersion": api_version, "kind": kind }),
        );
        let list = api
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("list {kind} in {ns}: {e}"));
        for item in list.items {
            let mut v = serde_json::to_value(&item).expect("object as JSON");
            v["apiVersion"] = json!(api_version);
            v["kind"] = json!(kind);
            let name = format!(
                "live:{kind}/{}@{}",
                s(&v, &["metadata", "name"]),
                s(&v, &["metadata", "resourceVersion"])
            );
            seen.entry(name.clone()).or_insert(Case { name, object: v });
        }
    }
}

/// Creates the objects in a new namespace, then records every state until each reaches its end.
pub async fn capture(tb: &crate::support::Testbed) -> Vec<Case> {
    let client = tb.kube_client().await;
    let ns = tb.namespace(&client, "health-kstatus").await;
    let objects = live_objects();
    for (obj, _) in &objects {
        let o: DynamicObject = serde_json::from_value(obj.clone()).expect("object");
        let name = s(obj, &["metadata", "name"]);
        api_for(&client, &ns, obj)
            .create(&PostParams::default(), &o)
            .await
            .unwrap_or_else(|e| panic!("create {} {name} in {ns}: {e}", obj["kind"]));
    }
    let mut seen = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        snapshot(&client, &ns, &mut seen).await;
        let waiting = not_done(&client, &ns, &objects).await;
        if waiting.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the rollouts' end states: {waiting:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // kstatus fails an unschedulable Pod only 15 s after its creation: also compare it after that.
    let pods = api_for(&client, &ns, &json!({ "apiVersion": "v1", "kind": "Pod" }));
    crate::support::wait_until(
        "Pod nowhere older than 16 s",
        Duration::from_secs(30),
        || async {
            let created = pods
                .get("nowhere")
                .await
                .map(|p| p.metadata.creation_timestamp);
            let old = k8s_openapi::jiff::Timestamp::now() - Duration::from_secs(16);
            matches!(created, Ok(Some(t)) if t.0 < old)
        },
    )
    .await;
    snapshot(&client, &ns, &mut seen).await;
    seen.into_values().collect()
}

/// The objects not in their end state yet.
async fn not_done(client: &kube::Client, ns: &str, objects: &[(Value, EndState)]) -> Vec<String> {
    let mut waiting = Vec::new();
    for (obj, done) in objects {
        let name = s(obj, &["metadata", "name"]);
        let live = api_for(client, ns, obj)
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("get {name} in {ns}: {e}"));
        if !done(&serde_json::to_value(&live).expect("object as JSON")) {
            waiting.push(format!("{} {name}", obj["kind"]));
        }
    }
    waiting
}
