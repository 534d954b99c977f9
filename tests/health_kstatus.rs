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

#[path = "health_kstatus/live.rs"]
mod live;
#[path = "health_kstatus/oracle.rs"]
mod oracle;
#[path = "health_kstatus/variants.rs"]
mod variants;

use std::collections::BTreeMap;

use gitopsd::k8s::health::{Health, assess};
use serde_json::Value;

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

/// gitopsd's verdict for one object, by the group and kind of its apiVersion.
fn gitopsd_health(obj: &Value) -> Health {
    let group = s(obj, &["apiVersion"])
        .rsplit_once('/')
        .map(|(g, _)| g)
        .unwrap_or_default();
    assess(group, s(obj, &["kind"]), obj)
}

/// Whether the two verdicts mean the same: Current↔Healthy, InProgress↔Progressing, Failed↔Failed,
/// Terminating↔Progressing (not healthy). NotFound never occurs (kstatus's poller reports it for
/// objects it cannot GET; here the objects are given) and Unknown stands for an error of Compute
/// (e.g. an unknown Pod phase): no status, so a disagreement that shows kstatus's error.
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
    let verdicts = oracle::run_kstatus(tb, cases);
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

#[test]
fn kstatus_test_suite_agrees() {
    let tb = require_testbed!();
    let suite = oracle::kstatus_cases(tb);
    let mut cases = suite.clone();
    cases.extend(variants::variants(&suite));
    cases.extend(variants::kept_difference_cases());
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

#[tokio::test]
async fn live_rollouts_agree() {
    let tb = require_testbed!();
    let cases = live::capture(tb).await;
    let (_, unexplained) = compare(tb, &cases);
    assert!(
        unexplained.is_empty(),
        "{} of {} live states: gitopsd and kstatus disagree, not on the documented list:\n{}",
        unexplained.len(),
        cases.len(),
        unexplained.join("\n")
    );
}
