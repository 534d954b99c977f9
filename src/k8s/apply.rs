//! Applying and deleting sets of objects in dependency order with bounded concurrency.
//!
//! Order: CustomResourceDefinitions, then Namespaces, then other cluster-scoped objects, then
//! namespaced objects; deletions run in the reverse order. CRDs must be Established before
//! anything after them is applied.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;

use super::{Cluster, DeleteOutcome, KubeError};
use crate::manifest::{Manifest, ObjectKey};

/// How long to wait for new CRDs to be Established.
pub const CRD_ESTABLISH_TIMEOUT: Duration = Duration::from_secs(60);

/// One object that failed, with where it was written.
#[derive(Debug)]
pub struct ObjectFailure {
    pub key: ObjectKey,
    pub at: String,
    pub error: KubeError,
}

impl ObjectFailure {
    fn new(m: &Manifest, error: KubeError) -> ObjectFailure {
        ObjectFailure {
            key: m.key.clone(),
            at: m.source.to_string(),
            error,
        }
    }
}

/// Ordering phase of an object: 0 CRD, 1 Namespace, 2 other cluster-scoped, 3 namespaced.
async fn phase(cluster: &Cluster, m: &Manifest) -> usize {
    if m.key.is_crd() {
        return 0;
    }
    if m.key.is_namespace() {
        return 1;
    }
    if m.key.namespace.is_some() {
        return 3;
    }
    match cluster.target(m).await {
        Ok(t) if !t.namespaced => 2,
        // Unknown yet (a custom resource whose CRD comes in this commit) or namespaced.
        _ => 3,
    }
}

async fn by_phase<'a>(cluster: &Cluster, objects: &[&'a Manifest]) -> [Vec<&'a Manifest>; 4] {
    let mut phases: [Vec<&Manifest>; 4] = Default::default();
    for m in objects {
        phases[phase(cluster, m).await].push(m);
    }
    phases
}

/// Result of validating a commit's changed objects.
#[derive(Debug, Default)]
pub struct Validation<'a> {
    pub failures: Vec<ObjectFailure>,
    /// Objects that cannot be dry-run until this commit's Namespaces, CRDs or (for bindings
    /// checked against the roles they grant) Roles exist.
    pub deferred: Vec<&'a Manifest>,
    /// Objects the dry-run showed to exist already (the answer carries a resourceVersion; a
    /// dry-run create has none), so only these need an ownership look-up.
    pub existing: BTreeSet<ObjectKey>,
}

/// Whether a manifest is something a deferred object may depend on: applied first (bootstrap)
/// when a commit has deferred objects.
pub fn is_bootstrap(m: &Manifest) -> bool {
    m.key.is_namespace()
        || m.key.is_crd()
        || (m.key.group == "rbac.authorization.k8s.io"
            && matches!(m.key.kind.as_str(), "Role" | "ClusterRole"))
}

/// Server-side dry-run of every object. Objects in a Namespace, or of a kind, that this same
/// commit creates are deferred rather than failed: they are dry-run once those exist.
pub async fn validate<'a>(
    cluster: &Cluster,
    objects: &[&'a Manifest],
    all_desired: &[&Manifest],
    concurrency: usize,
) -> Validation<'a> {
    let new_namespaces: BTreeSet<&str> = all_desired
        .iter()
        .filter(|m| m.key.is_namespace())
        .map(|m| m.key.name.as_str())
        .collect();
    let crd_kinds: BTreeSet<(String, String)> = all_desired
        .iter()
        .filter_map(|m| crate::manifest::crd_defined_kind(m))
        .collect();
    let results: Vec<(&Manifest, Result<_, KubeError>)> =
        futures::stream::iter(objects.iter().copied())
            // Keep only what is needed of each answer (whether the object exists), not the
            // answers themselves: thousands of full objects would dominate memory.
            .map(|m| async move {
                let existed = cluster.dry_run(m).await.map(|answer| {
                    answer
                        .metadata
                        .resource_version
                        .as_deref()
                        .is_some_and(|rv| !rv.is_empty())
                });
                (m, existed)
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
    // Roles (kind, namespace, name) this commit brings: a binding to one of them is checked by
    // the apiserver against the role's rules unless the caller may `bind`, which needs the role.
    let roles: BTreeSet<(String, Option<String>, String)> = all_desired
        .iter()
        .filter(|m| {
            m.key.group == "rbac.authorization.k8s.io"
                && matches!(m.key.kind.as_str(), "Role" | "ClusterRole")
        })
        .map(|m| {
            (
                m.key.kind.clone(),
                m.key.namespace.clone(),
                m.key.name.clone(),
            )
        })
        .collect();
    let mut validation = Validation::default();
    for (m, result) in results {
        let error = match result {
            Ok(existed) => {
                if existed {
                    validation.existing.insert(m.key.clone());
                }
                continue;
            }
            Err(error) => error,
        };
        let role_pending = error.is_not_found()
            && matches!(m.key.kind.as_str(), "RoleBinding" | "ClusterRoleBinding")
            && m.body.get("roleRef").is_some_and(|r| {
                let kind = r
                    .get("kind")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let name = r
                    .get("name")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let namespace = if kind == "Role" {
                    m.key.namespace.clone()
                } else {
                    None
                };
                roles.contains(&(kind, namespace, name))
            });
        let namespace_pending = error.is_not_found()
            && new_namespaces.iter().any(|ns| {
                error
                    .to_string()
                    .contains(&format!("namespaces \"{ns}\" not found"))
            });
        let kind_pending = matches!(error, KubeError::UnknownKind { .. })
            && crd_kinds.contains(&(m.key.group.clone(), m.key.kind.clone()));
        if namespace_pending || kind_pending || role_pending {
            validation.deferred.push(m);
        } else {
            validation.failures.push(ObjectFailure::new(m, error));
        }
    }
    validation.failures.sort_by(|a, b| a.key.cmp(&b.key));
    validation
}

/// Of the objects a commit creates, those that already exist without gitopsd's ownership labels
/// for this environment. Applying would label someone else's object as gitopsd's (and a later
/// prune would delete it), so they fail validation: hand one over by labelling it, or delete it.
pub async fn not_owned_existing(
    cluster: &Cluster,
    objects: &[&Manifest],
    concurrency: usize,
) -> Vec<ObjectFailure> {
    let env = cluster.environment();
    failures_of(objects, concurrency, |m| async move {
        match cluster.get(m).await {
            Ok(Some(live)) if !cluster.owns(&live) => Some(ObjectFailure::new(
                m,
                KubeError::Api {
                    object: m.key.to_string(),
                    verb: "apply",
                    code: 409,
                    reason: "NotOwned".into(),
                    message: format!(
                        "already exists and is not managed by gitopsd for environment {env}; to hand it over, \
                         label it {}={},{}={env}, or delete it",
                        super::MANAGED_BY_LABEL,
                        super::MANAGED_BY_VALUE,
                        super::ENV_LABEL
                    ),
                },
            )),
            // Not there, ours, or of a kind this commit's CRDs bring: nothing to take over.
            Ok(_) | Err(KubeError::UnknownKind { .. }) => None,
            Err(e) => Some(ObjectFailure::new(m, e)),
        }
    })
    .await
}

/// Dry-runs objects again (the deferred ones, once their Namespaces and CRDs exist).
pub async fn dry_run_all(
    cluster: &Cluster,
    objects: &[&Manifest],
    concurrency: usize,
) -> Vec<ObjectFailure> {
    failures_of(objects, concurrency, |m| async move {
        cluster
            .dry_run(m)
            .await
            .err()
            .map(|e| ObjectFailure::new(m, e))
    })
    .await
}

/// Runs `check` on every object (at most `concurrency` at once) and returns the failures it
/// reports, sorted by object.
async fn failures_of<'a, F, Fut>(
    objects: &[&'a Manifest],
    concurrency: usize,
    check: F,
) -> Vec<ObjectFailure>
where
    F: Fn(&'a Manifest) -> Fut,
    Fut: std::future::Future<Output = Option<ObjectFailure>>,
{
    let mut failures: Vec<ObjectFailure> = futures::stream::iter(objects.iter().copied())
        .map(check)
        .buffer_unordered(concurrency.max(1))
        .filter_map(|f| async move { f })
        .collect()
        .await;
    failures.sort_by(|a, b| a.key.cmp(&b.key));
    failures
}

/// Applies objects phase by phase. Stops after the first phase with a failure (later phases
/// depend on earlier ones). Returns what was applied, each with whether the server's answer
/// already shows it healthy, and the failures.
pub async fn apply_all(
    cluster: &Cluster,
    objects: &[&Manifest],
    concurrency: usize,
) -> (Vec<(ObjectKey, bool)>, Vec<ObjectFailure>) {
    let mut applied = Vec::new();
    let phases = by_phase(cluster, objects).await;
    for (index, phase) in phases.iter().enumerate() {
        if phase.is_empty() {
            continue;
        }
        let results: Vec<(&Manifest, Result<_, KubeError>)> =
            futures::stream::iter(phase.iter().copied())
                // The answer carries the object's state; keep only whether it is already healthy.
                .map(|m| async move {
                    let healthy = cluster.apply(m).await.map(|answer| {
                        serde_json::to_value(&answer)
                            .map(|v| {
                                super::health::assess(&m.key.group, &m.key.kind, &v)
                                    == super::health::Health::Healthy
                            })
                            .unwrap_or(false)
                    });
                    (m, healthy)
                })
                .buffer_unordered(concurrency.max(1))
                .collect()
                .await;
        let mut failures = Vec::new();
        for (m, result) in results {
            match result {
                Ok(healthy) => applied.push((m.key.clone(), healthy)),
                Err(e) => failures.push(ObjectFailure::new(m, e)),
            }
        }
        if !failures.is_empty() {
            failures.sort_by(|a, b| a.key.cmp(&b.key));
            return (applied, failures);
        }
        if index == 0 {
            let crds: Vec<String> = phase.iter().map(|m| m.key.name.clone()).collect();
            if let Err(e) = cluster.wait_established(&crds, CRD_ESTABLISH_TIMEOUT).await {
                let failures = phase
                    .iter()
                    .map(|m| ObjectFailure::new(m, clone_timeout(&e)))
                    .collect();
                return (applied, failures);
            }
        }
    }
    (applied, Vec::new())
}

fn clone_timeout(e: &KubeError) -> KubeError {
    KubeError::Timeout {
        what: e.to_string(),
        after: CRD_ESTABLISH_TIMEOUT,
    }
}

/// Outcome of deleting a set of objects.
#[derive(Debug, Default)]
pub struct Deletions {
    pub deleted: Vec<ObjectKey>,
    /// Present but not gitopsd's for this environment: left alone.
    pub not_owned: Vec<ObjectKey>,
    pub failures: Vec<ObjectFailure>,
}

/// Deletes objects in reverse dependency order; only objects gitopsd owns are touched.
pub async fn delete_all(cluster: &Cluster, objects: &[&Manifest], concurrency: usize) -> Deletions {
    let mut out = Deletions::default();
    let phases = by_phase(cluster, objects).await;
    for phase in phases.iter().rev() {
        let results: Vec<(&Manifest, Result<DeleteOutcome, KubeError>)> =
            futures::stream::iter(phase.iter().copied())
                .map(|m| async move { (m, cluster.delete(m).await) })
                .buffer_unordered(concurrency.max(1))
                .collect()
                .await;
        for (m, result) in results {
            match result {
                Ok(DeleteOutcome::Deleted) | Ok(DeleteOutcome::AlreadyGone) => {
                    out.deleted.push(m.key.clone())
                }
                Ok(DeleteOutcome::NotOwned) => out.not_owned.push(m.key.clone()),
                Err(e) => out.failures.push(ObjectFailure::new(m, e)),
            }
        }
    }
    out
}
