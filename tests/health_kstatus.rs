//! Differential test of gitopsd's health rules (`k8s::health::assess`) against kstatus
//! (sigs.k8s.io/cli-utils/pkg/kstatus/status `Compute`, the reference that kubectl, kpt, Flux and
//! cli-utils use), built by `tests/testbed/build kstatus`.
//!
//! The objects: kstatus's own test objects (extracted from its *_test.go files at test time),
//! variants of them (terminating, `Reconciling`/`Stalled` conditions, old `extensions/` groups,
//! OnDelete and partitioned StatefulSets), a few written here for the differences gitopsd keeps,
//! and every state seen while rollouts run on the testbed (kwok ready, unready and crash labels).
//! Any disagreement fails the test unless an entry of [`ALLOWED`] (the README's list) explains it.

mod support;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gitopsd::k8s::health::{Health, assess};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use serde_json::{Value, json};

/// One object to judge, named for the report.
#[derive(Debug, Clone)]
struct Case {
    name: String,
    object: Value,
}

/// kstatus's answer for one object.
#[derive(Debug, Clone, serde::Deserialize)]
struct Kstatus {
    status: String,
    message: String,
    #[serde(default)]
    error: Option<String>,
}

/// A difference gitopsd keeps on purpose: when it applies, and why.
struct Allowed {
    id: &'static str,
    reason: &'static str,
    applies: fn(&Value, &Health, &Kstatus) -> bool,
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn has_condition(v: &Value, kind: &str, status: &str) -> bool {
    v["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == kind && c["status"] == status)
    })
}

fn is(v: &Value, api_version_prefix: &str, kind: &str) -> bool {
    s(v, &["kind"]) == kind && s(v, &["apiVersion"]).starts_with(api_version_prefix)
}

/// The README's list of kept differences ("Health" section), in the same order.
const ALLOWED: &[Allowed] = &[
    Allowed {
        id: "job-counts-when-complete",
        reason: "a Job counts only when Complete: kstatus calls a started Job Current, but the commit \
                 is recorded healthy on this verdict and a running Job has proven nothing yet",
        applies: |v, h, k| {
            is(v, "batch/", "Job") && matches!(h, Health::Progressing(_)) && k.status == "Current"
        },
    },
    Allowed {
        id: "load-balancer-needs-address",
        reason: "a LoadBalancer Service needs status.loadBalancer.ingress: kstatus only checks \
                 spec.clusterIP, which every such Service has, while traffic arrives only once the \
                 load balancer has an address",
        applies: |v, h, k| {
            is(v, "v1", "Service")
                && s(v, &["spec", "type"]) == "LoadBalancer"
                && matches!(h, Health::Progressing(_))
                && k.status == "Current"
        },
    },
    Allowed {
        id: "failed-pod-is-failed",
        reason: "a Pod in phase Failed is Failed: kstatus calls it Current (it has completed), but a \
                 Pod that gitopsd applied and that ran to failure will not run again",
        applies: |v, h, k| {
            is(v, "v1", "Pod")
                && s(v, &["status", "phase"]) == "Failed"
                && matches!(h, Health::Failed(_))
                && k.status == "Current"
        },
    },
    Allowed {
        id: "unschedulable-pod-fails-at-once",
        reason: "an unschedulable Pod fails at once: kstatus waits 15 s after creation, but gitopsd's \
                 verdict is a function of the object alone, so a watch reaches it from the \
                 scheduler's event without a timer (no further event would come)",
        applies: |v, h, k| {
            is(v, "v1", "Pod")
                && s(v, &["status", "phase"]) == "Pending"
                && v["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "PodScheduled" && c["reason"] == "Unschedulable")
                })
                && matches!(h, Health::Failed(_))
                && k.status == "InProgress"
        },
    },
    Allowed {
        id: "stuck-containers-fail",
        reason: "a container or init container waiting in CrashLoopBackOff, ImagePullBackOff or \
                 CreateContainerConfigError fails the Pod in any phase: kstatus fails only a \
                 Running Pod in CrashLoopBackOff and waits for the rest until the deadline, yet none \
                 of them ends without a change to the spec",
        applies: |v, h, k| {
            let stuck = |list: &str| {
                v["status"][list].as_array().is_some_and(|cs| {
                    cs.iter().any(|c| {
                        matches!(
                            s(c, &["state", "waiting", "reason"]),
                            "CrashLoopBackOff" | "ImagePullBackOff" | "CreateContainerConfigError"
                        )
                    })
                })
            };
            is(v, "v1", "Pod")
                && matches!(h, Health::Failed(_))
                && k.status == "InProgress"
                && (stuck("containerStatuses") || stuck("initContainerStatuses"))
        },
    },
    Allowed {
        id: "ondelete-statefulset-needs-ready",
        reason: "an OnDelete StatefulSet needs its replicas ready: kstatus calls any OnDelete \
                 StatefulSet Current, even one with no pods yet",
        applies: |v, h, k| {
            is(v, "apps/", "StatefulSet")
                && s(v, &["spec", "updateStrategy", "type"]) == "OnDelete"
                && matches!(h, Health::Progressing(_))
                && k.status == "Current"
        },
    },
    Allowed {
        id: "suspended-job-is-healthy",
        reason: "a suspended Job is healthy: it does what its spec says; kstatus waits for a start \
                 that only a later commit (suspend: false) brings",
        applies: |v, h, k| {
            is(v, "batch/", "Job")
                && v["spec"]["suspend"] == true
                && *h == Health::Healthy
                && k.status == "InProgress"
        },
    },
    Allowed {
        id: "lost-claim-fails",
        reason: "a PersistentVolumeClaim in phase Lost is Failed: its volume is gone and waiting \
                 does not bring it back; kstatus reports InProgress",
        applies: |v, h, k| {
            is(v, "v1", "PersistentVolumeClaim")
                && s(v, &["status", "phase"]) == "Lost"
                && matches!(h, Health::Failed(_))
                && k.status == "InProgress"
        },
    },
    Allowed {
        id: "available-condition",
        reason: "an APIService, or a custom resource without a Ready condition, needs Available=True \
                 when it has an Available condition: kstatus only reads Ready, and an unavailable \
                 APIService breaks discovery of its whole group",
        applies: |v, h, k| {
            has_condition(v, "Available", "False")
                && v["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| !cs.iter().any(|c| c["type"] == "Ready"))
                && matches!(h, Health::Progressing(_))
                && k.status == "Current"
        },
    },
];

fn kstatus_bin(tb: &support::Testbed) -> String {
    tb.env("GITOPSD_TEST_KSTATUS").to_string()
}

/// kstatus's test objects, extracted by the kstatus program from the cli-utils test files.
fn kstatus_cases(tb: &support::Testbed) -> Vec<Case> {
    let dir = tb.env("GITOPSD_TEST_KSTATUS_CASES");
    let out = Command::new(kstatus_bin(tb))
        .args(["cases", dir])
        .output()
        .unwrap_or_else(|e| panic!("run kstatus cases {dir}: {e} (tests/testbed/build kstatus)"));
    assert!(
        out.status.success(),
        "kstatus cases {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cases: Vec<Case> = support::gitopsd::json_lines(&String::from_utf8_lossy(&out.stdout))
        .into_iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap_or("?").to_string(),
            object: c["object"].clone(),
        })
        .collect();
    assert!(
        cases.len() >= 50,
        "expected kstatus's ~58 test objects in {dir}, got {}",
        cases.len()
    );
    cases
}

/// kstatus's verdict for each object, in order.
fn run_kstatus(tb: &support::Testbed, cases: &[Case]) -> Vec<Kstatus> {
    let mut child = Command::new(kstatus_bin(tb))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kstatus (tests/testbed/build kstatus)");
    let mut stdin = child.stdin.take().expect("kstatus stdin");
    let input: String = cases.iter().map(|c| format!("{}\n", c.object)).collect();
    // Written from a thread: kstatus answers as it reads, and a full stdout pipe would block it.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("kstatus output");
    writer
        .join()
        .expect("writer thread")
        .expect("write to kstatus");
    assert!(
        out.status.success(),
        "kstatus: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<Kstatus> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("kstatus verdict line"))
        .collect();
    assert_eq!(
        verdicts.len(),
        cases.len(),
        "one kstatus verdict per object"
    );
    verdicts
}

/// gitopsd's verdict for one object, by the group and kind of its apiVersion.
fn gitopsd_health(obj: &Value) -> Health {
    let group = s(obj, &["apiVersion"])
        .rsplit_once('/')
        .map(|(g, _)| g)
        .unwrap_or_default();
    assess(group, s(obj, &["kind"]), obj)
}

/// Whether the two verdicts mean the same: Current↔Healthy, InProgress↔Progressing, Failed↔Failed,
/// Terminating↔Progressing (not healthy). kstatus returns no status only with an error.
fn agree(h: &Health, k: &Kstatus) -> bool {
    matches!(
        (h, k.status.as_str()),
        (Health::Healthy, "Current")
            | (Health::Progressing(_), "InProgress" | "Terminating")
            | (Health::Failed(_), "Failed")
    )
}

/// Compares every case; prints agreement per kind and every difference; returns the ids of the
/// allow-list entries used and the unexplained differences.
fn compare(tb: &support::Testbed, cases: &[Case]) -> (BTreeMap<&'static str, usize>, Vec<String>) {
    let verdicts = run_kstatus(tb, cases);
    // Per kind: [same, total] for kstatus's own objects, for the rest (variants, gitopsd's, live).
    let mut per_kind: BTreeMap<String, [usize; 4]> = BTreeMap::new();
    let mut used = BTreeMap::new();
    let mut unexplained = Vec::new();
    for (case, k) in cases.iter().zip(&verdicts) {
        let h = gitopsd_health(&case.object);
        let kind = s(&case.object, &["kind"]).to_string();
        let entry = per_kind.entry(kind).or_default();
        let own = case.name.contains("_test.go:") && !case.name.contains('+');
        let col = if own { 0 } else { 2 };
        entry[col + 1] += 1;
        if agree(&h, k) {
            entry[col] += 1;
            continue;
        }
        let line = format!(
            "{}: gitopsd {h:?}, kstatus {} ({}){}",
            case.name,
            k.status,
            k.message,
            k.error
                .as_deref()
                .map(|e| format!(" error: {e}"))
                .unwrap_or_default()
        );
        match ALLOWED.iter().find(|a| (a.applies)(&case.object, &h, k)) {
            Some(a) => {
                *used.entry(a.id).or_insert(0) += 1;
                eprintln!("allowed [{}] {line}", a.id);
            }
            None => unexplained.push(line),
        }
    }
    eprintln!("agreement per kind (same verdict / objects): kstatus's objects, other objects");
    for (kind, [same, total, other_same, other_total]) in &per_kind {
        eprintln!("  {kind:<26} {same:>3} / {total:<3}   {other_same:>3} / {other_total}");
    }
    (used, unexplained)
}

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
fn variants(cases: &[Case]) -> Vec<Case> {
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
fn kept_difference_cases() -> Vec<Case> {
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

#[test]
fn kstatus_test_suite_agrees() {
    let tb = require_testbed!();
    let suite = kstatus_cases(tb);
    let mut cases = suite.clone();
    cases.extend(variants(&suite));
    cases.extend(kept_difference_cases());
    let (used, unexplained) = compare(tb, &cases);
    assert!(
        unexplained.is_empty(),
        "{} of {} objects: gitopsd and kstatus disagree, not on the documented list:\n{}",
        unexplained.len(),
        cases.len(),
        unexplained.join("\n")
    );
    // Every documented difference must still be one: a stale entry would hide a new disagreement.
    let stale: Vec<_> = ALLOWED
        .iter()
        .filter(|a| !used.contains_key(a.id))
        .map(|a| format!("{}: {}", a.id, a.reason))
        .collect();
    assert!(
        stale.is_empty(),
        "allow-list entries no object needed:\n{}",
        stale.join("\n")
    );
}

// ---------------------------------------------------------------- live rollouts on the testbed

fn pod_template(labels: Value) -> Value {
    json!({
        "metadata": { "labels": labels },
        "spec": { "containers": [{ "name": "app", "image": "registry.invalid/gitopsd/fake:1",
            "resources": { "requests": { "cpu": "10m", "memory": "16Mi" } } }] }
    })
}

/// The objects applied for the live comparison, each with the state that ends the wait for it.
fn live_objects() -> Vec<(Value, fn(&Value) -> bool)> {
    let workload = |kind: &str, name: &str, fail: Option<&str>, extra: Value| {
        let mut labels = json!({ "app": name });
        if let Some(f) = fail {
            labels["gitopsd.test/fail"] = json!(f);
        }
        let mut spec = json!({ "selector": { "matchLabels": { "app": name } }, "template": pod_template(labels) });
        spec.as_object_mut()
            .map(|o| o.extend(extra.as_object().cloned().unwrap_or_default()));
        json!({ "apiVersion": "apps/v1", "kind": kind, "metadata": { "name": name }, "spec": spec })
    };
    let pod = |name: &str, labels: Value, extra: Value| {
        let mut p = pod_template(labels);
        p["spec"]["restartPolicy"] = json!("Never");
        p["spec"]
            .as_object_mut()
            .map(|o| o.extend(extra.as_object().cloned().unwrap_or_default()));
        json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name, "labels": p["metadata"]["labels"] }, "spec": p["spec"] })
    };
    let job = |name: &str, labels: Value| {
        let mut t = pod_template(labels);
        t["spec"]["restartPolicy"] = json!("Never");
        json!({ "apiVersion": "batch/v1", "kind": "Job", "metadata": { "name": name },
            "spec": { "backoffLimit": 0, "template": t } })
    };
    vec![
        (
            workload("Deployment", "ready", None, json!({ "replicas": 3 })),
            |v| has_condition(v, "Available", "True") && v["status"]["availableReplicas"] == 3,
        ),
        (
            workload(
                "Deployment",
                "unready",
                Some("unready"),
                json!({ "replicas": 2, "progressDeadlineSeconds": 5 }),
            ),
            |v| {
                v["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["reason"] == "ProgressDeadlineExceeded"))
            },
        ),
        (
            workload(
                "StatefulSet",
                "sts",
                None,
                json!({ "replicas": 2, "serviceName": "sts" }),
            ),
            |v| {
                v["status"]["readyReplicas"] == 2
                    && v["status"]["currentRevision"] == v["status"]["updateRevision"]
            },
        ),
        (workload("DaemonSet", "ds", None, json!({})), |v| {
            v["status"]["numberReady"].as_i64() > Some(0)
                && v["status"]["numberReady"] == v["status"]["desiredNumberScheduled"]
        }),
        (
            pod("crash", json!({ "gitopsd.test/fail": "crash" }), json!({})),
            |v| s(v, &["status", "phase"]) == "Failed",
        ),
        (
            pod(
                "notready",
                json!({ "gitopsd.test/fail": "unready" }),
                json!({}),
            ),
            |v| s(v, &["status", "phase"]) == "Running",
        ),
        (
            pod(
                "nowhere",
                json!({}),
                json!({ "nodeSelector": { "gitopsd.test/no-such-node": "x" } }),
            ),
            |v| has_condition(v, "PodScheduled", "False"),
        ),
        (job("job-ok", json!({})), |v| {
            has_condition(v, "Complete", "True")
        }),
        (
            job("job-crash", json!({ "gitopsd.test/fail": "crash" })),
            |v| has_condition(v, "Failed", "True"),
        ),
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

#[tokio::test]
async fn live_rollouts_agree() {
    let tb = require_testbed!();
    let client = tb.kube_client().await;
    let ns = tb.namespace(&client, "health-kstatus").await;
    let objects = live_objects();
    for (obj, _) in &objects {
        let o: DynamicObject = serde_json::from_value(obj.clone()).expect("object");
        api_for(&client, &ns, obj)
            .create(&PostParams::default(), &o)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "create {} {} in {ns}: {e}",
                    obj["kind"], obj["metadata"]["name"]
                )
            });
    }
    let mut seen = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        snapshot(&client, &ns, &mut seen).await;
        let mut waiting = Vec::new();
        for (obj, done) in &objects {
            let name = s(obj, &["metadata", "name"]);
            let live = api_for(&client, &ns, obj)
                .get(name)
                .await
                .unwrap_or_else(|e| panic!("get {name}: {e}"));
            if !done(&serde_json::to_value(&live).expect("object as JSON")) {
                waiting.push(format!("{} {name}", obj["kind"]));
            }
        }
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
    let nowhere = api_for(&client, &ns, &json!({ "apiVersion": "v1", "kind": "Pod" }));
    support::wait_until("Pod nowhere older than 16 s", Duration::from_secs(30), || async {
        let p = nowhere.get("nowhere").await.map(|p| p.metadata.creation_timestamp);
        matches!(p, Ok(Some(t)) if t.0 < k8s_openapi::jiff::Timestamp::now() - Duration::from_secs(16))
    }).await;
    snapshot(&client, &ns, &mut seen).await;
    let cases: Vec<Case> = seen.into_values().collect();
    let (_, unexplained) = compare(tb, &cases);
    assert!(
        unexplained.is_empty(),
        "{} of {} live states: gitopsd and kstatus disagree, not on the documented list:\n{}",
        unexplained.len(),
        cases.len(),
        unexplained.join("\n")
    );
}
