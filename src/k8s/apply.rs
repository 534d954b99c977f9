//! Applying and deleting sets of objects in dependency order with bounded concurrency.
//!
//! Order: CustomResourceDefinitions, then Namespaces, then other cluster-scoped objects, then
//! namespaced objects; deletions run in the reverse order. CRDs must be Established before
//! anything after them is applied. Calls [`Cluster`] (dry-run, apply, delete, get) and `manifest`.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;

use super::{Cluster, DeleteOutcome, KubeError};
use crate::manifest::{Introduced, Manifest, ObjectKey};

/// How long to wait for new CRDs to be Established.
pub const CRD_ESTABLISH_TIMEOUT: Duration = Duration::from_secs(60);

/// One object that failed, with where it was written.
#[derive(Debug)]
pub struct ObjectFailure {
    pub key: ObjectKey,
    pub at: String,
    pub error: KubeError,
}

/// The first failure that may succeed later (throttling, server errors, lost connections):
/// such a pass is retried, never recorded as the commit's fault.
pub fn first_transient(failures: &[ObjectFailure]) -> Option<&ObjectFailure> {
    failures.iter().find(|f| f.error.is_transient())
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

/// Runs `pending` with at most `concurrency` at once; the results in the order they finish.
/// (Callers build the futures first: a stream holding a closure over borrowed manifests is not
/// `Send` for the task that runs it, rust-lang/rust#102211.) A future not started yet is as large
/// as its largest state, so each one boxes its request: 10,000 unboxed request futures (about
/// 2 KB each) were the largest allocation of a first apply.
async fn at_most<F: std::future::Future>(pending: Vec<F>, concurrency: usize) -> Vec<F::Output> {
    futures::stream::iter(pending)
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await
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
    m.key.is_namespace() || m.key.is_crd() || is_role(&m.key)
}

/// Dry-runs `m`; keeps only whether it exists already (the answer carries a resourceVersion; a
/// dry-run create has none), not the answer: thousands of full objects would dominate memory.
async fn dry_run_existing<'a>(
    cluster: &Cluster,
    m: &'a Manifest,
) -> (&'a Manifest, Result<bool, KubeError>) {
    let existed = Box::pin(cluster.dry_run(m)).await.map(|answer| {
        answer
            .metadata
            .resource_version
            .as_deref()
            .is_some_and(|rv| !rv.is_empty())
    });
    (m, existed)
}

/// Roles (kind, namespace, name) a commit brings.
type Roles = BTreeSet<(String, Option<String>, String)>;

fn is_role(key: &ObjectKey) -> bool {
    key.group == "rbac.authorization.k8s.io" && matches!(key.kind.as_str(), "Role" | "ClusterRole")
}

/// A binding to a role this commit brings is checked by the apiserver against the role's rules
/// unless the caller may `bind`, which needs the role: it waits for the role.
fn waits_for_role(m: &Manifest, roles: &Roles) -> bool {
    if !matches!(m.key.kind.as_str(), "RoleBinding" | "ClusterRoleBinding") {
        return false;
    }
    m.body.get("roleRef").is_some_and(|r| {
        let text = |field: &str| {
            r.get(field)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let kind = text("kind");
        let namespace = if kind == "Role" {
            m.key.namespace.clone()
        } else {
            None
        };
        roles.contains(&(kind, namespace, text("name")))
    })
}

/// Whether a dry-run failure of `m` only says that something this commit brings is not there
/// yet (its Namespace, the CRD of its kind, the role it binds).
fn waits_for_commit(m: &Manifest, error: &KubeError, brought: &Introduced, roles: &Roles) -> bool {
    let namespace_pending = error.is_not_found()
        && brought.namespaces().any(|ns| {
            error
                .to_string()
                .contains(&format!("namespaces \"{ns}\" not found"))
        });
    let kind_pending =
        matches!(error, KubeError::UnknownKind { .. }) && brought.defines_kind_of(&m.key);
    namespace_pending || kind_pending || (error.is_not_found() && waits_for_role(m, roles))
}

/// Server-side dry-run of every object. Objects in a Namespace, or of a kind, that this same
/// commit creates are deferred rather than failed: they are dry-run once those exist.
pub async fn validate<'a>(
    cluster: &Cluster,
    objects: &[&'a Manifest],
    all_desired: &[&Manifest],
    concurrency: usize,
) -> Validation<'a> {
    let brought = Introduced::of(all_desired.iter().copied());
    let roles: Roles = all_desired
        .iter()
        .filter(|m| is_role(&m.key))
        .map(|m| {
            (
                m.key.kind.clone(),
                m.key.namespace.clone(),
                m.key.name.clone(),
            )
        })
        .collect();
    // Futures are built before they are streamed: a stream holding a closure over borrowed
    // manifests is not `Send` for the task that runs it (rust-lang/rust#102211).
    let pending: Vec<_> = objects
        .iter()
        .map(|m| dry_run_existing(cluster, m))
        .collect();
    let results = at_most(pending, concurrency).await;
    let mut validation = Validation::default();
    for (m, result) in results {
        match result {
            Ok(true) => {
                validation.existing.insert(m.key.clone());
            }
            Ok(false) => {}
            Err(error) if waits_for_commit(m, &error, &brought, &roles) => {
                validation.deferred.push(m)
            }
            Err(error) => validation.failures.push(ObjectFailure::new(m, error)),
        }
    }
    validation.failures.sort_by(|a, b| a.key.cmp(&b.key));
    validation
}

/// Of the objects a commit creates, those that already exist without gitopsd's ownership labels
/// for this environment. Applying would label someone else's object as gitopsd's (and a later
/// prune would delete it), so they fail validation: hand one over by labelling it, or delete it.
pub async fn not_owned_existing<'a>(
    cluster: &Cluster,
    objects: &[&'a Manifest],
    concurrency: usize,
) -> Vec<ObjectFailure> {
    // Closures annotated with `'a`: futures holding them must be `Send` (rust-lang/rust#102211).
    failures_of(objects, concurrency, |m: &'a Manifest| async move {
        match Box::pin(cluster.get(m)).await {
            Ok(Some(live)) if !cluster.owns(&live) => Some(not_owned(cluster, m)),
            // Not there, ours, or of a kind this commit's CRDs bring: nothing to take over.
            Ok(_) | Err(KubeError::UnknownKind { .. }) => None,
            Err(e) => Some(ObjectFailure::new(m, e)),
        }
    })
    .await
}

/// `m` exists and is someone else's: refused.
fn not_owned(cluster: &Cluster, m: &Manifest) -> ObjectFailure {
    ObjectFailure::new(
        m,
        KubeError::Api {
            object: m.key.to_string(),
            verb: "apply",
            code: 409,
            reason: "NotOwned".into(),
            message: not_owned_message(cluster),
        },
    )
}

/// How to hand an existing object over to this instance.
fn not_owned_message(cluster: &Cluster) -> String {
    format!(
        "already exists and is not managed by gitopsd instance {instance} for environment {env}; \
         to hand it over, label it {}={},{}={instance},{}={env} (or run `gitopsd adopt`), or delete it",
        super::MANAGED_BY_LABEL,
        super::MANAGED_BY_VALUE,
        super::INSTANCE_LABEL,
        super::ENV_LABEL,
        instance = cluster.instance(),
        env = cluster.environment(),
    )
}

/// Dry-runs objects again (the deferred ones, once their Namespaces and CRDs exist).
pub async fn dry_run_all<'a>(
    cluster: &Cluster,
    objects: &[&'a Manifest],
    concurrency: usize,
) -> Vec<ObjectFailure> {
    failures_of(objects, concurrency, |m: &'a Manifest| async move {
        Box::pin(cluster.dry_run(m))
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
    let pending: Vec<Fut> = objects.iter().map(|m| check(m)).collect();
    let mut failures: Vec<ObjectFailure> = at_most(pending, concurrency)
        .await
        .into_iter()
        .flatten()
        .collect();
    failures.sort_by(|a, b| a.key.cmp(&b.key));
    failures
}

/// What the server answered to one apply: all a pass keeps of it.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The manifest's key (namespace as written).
    pub key: ObjectKey,
    /// The answer already shows the object healthy.
    pub healthy: bool,
    pub generation: i64,
    /// Fingerprint of the fields gitopsd manages, as the server stored them.
    pub managed: Option<u64>,
}

fn applied(m: &Manifest, answer: &kube::api::DynamicObject) -> Applied {
    let value = serde_json::to_value(answer).unwrap_or_default();
    Applied {
        key: m.key.clone(),
        healthy: super::health::assess(&m.key.group, &m.key.kind, &value)
            == super::health::Health::Healthy,
        generation: answer.metadata.generation.unwrap_or(0),
        managed: super::managed::live_fingerprint(&value, super::FIELD_MANAGER),
    }
}

/// Applies `m`, keeping only what a pass needs of the answer.
async fn apply_one<'a>(
    cluster: &Cluster,
    m: &'a Manifest,
    force: bool,
) -> (&'a Manifest, Result<Applied, KubeError>) {
    let answer = if force {
        Box::pin(cluster.apply_forced(m)).await
    } else {
        Box::pin(cluster.apply(m)).await
    };
    (m, answer.map(|a| applied(m, &a)))
}

/// Applies objects phase by phase (`force` takes fields back from other managers). Stops after
/// the first phase with a failure (later phases depend on earlier ones). Returns what was
/// applied and the failures.
pub async fn apply_all(
    cluster: &Cluster,
    objects: &[&Manifest],
    concurrency: usize,
    force: bool,
) -> (Vec<Applied>, Vec<ObjectFailure>) {
    apply_phases(cluster, objects, concurrency, force, false).await
}

/// Creates objects the cluster does not have, phase by phase, without a dry-run first (see
/// `k8s::create`): right before a phase is sent, any of its objects that exists already is
/// refused (it is not ours: ours would be an update) and nothing of that phase is sent. Stops at
/// the first phase with a failure; the caller deletes what was created.
pub async fn create_all(
    cluster: &Cluster,
    objects: &[&Manifest],
    concurrency: usize,
) -> (Vec<Applied>, Vec<ObjectFailure>) {
    apply_phases(cluster, objects, concurrency, false, true).await
}

/// Of `phase`, those that exist already, as refusals (`Err`: the look-up itself failed).
async fn refuse_existing(cluster: &Cluster, phase: &[&Manifest]) -> Vec<ObjectFailure> {
    match cluster.existing(phase).await {
        Ok(found) => phase
            .iter()
            .filter(|m| found.contains(&m.key))
            .map(|m| not_owned(cluster, m))
            .collect(),
        Err(e) => phase
            .first()
            .map(|m| ObjectFailure::new(m, e))
            .into_iter()
            .collect(),
    }
}

async fn apply_phases(
    cluster: &Cluster,
    objects: &[&Manifest],
    concurrency: usize,
    force: bool,
    creating: bool,
) -> (Vec<Applied>, Vec<ObjectFailure>) {
    let mut done = Vec::new();
    let phases = by_phase(cluster, objects).await;
    for (index, phase) in phases.iter().enumerate() {
        // Without a dry-run before, a binding must not race the Role it binds: the apiserver
        // reads that Role to check for escalation. So a creating pass sends a phase's Roles and
        // ClusterRoles first (a validated pass dry-ran the bindings after its bootstrap).
        let (roles, rest): (Vec<&Manifest>, Vec<&Manifest>) = if creating {
            phase.iter().partition(|m| is_role(&m.key))
        } else {
            (Vec::new(), phase.clone())
        };
        for part in [roles, rest] {
            let failures = send_part(cluster, &part, concurrency, force, creating, &mut done).await;
            if !failures.is_empty() {
                return (done, failures);
            }
        }
        if index == 0 && !phase.is_empty() {
            let crds: Vec<String> = phase.iter().map(|m| m.key.name.clone()).collect();
            if let Err(e) = cluster.wait_established(&crds, CRD_ESTABLISH_TIMEOUT).await {
                let failures = phase
                    .iter()
                    .map(|m| ObjectFailure::new(m, clone_timeout(&e)))
                    .collect();
                return (done, failures);
            }
        }
    }
    (done, Vec::new())
}

/// Sends `part` of a phase (refusing existing objects first when `creating`); what was applied
/// goes to `done`, the failures are returned sorted.
async fn send_part(
    cluster: &Cluster,
    part: &[&Manifest],
    concurrency: usize,
    force: bool,
    creating: bool,
    done: &mut Vec<Applied>,
) -> Vec<ObjectFailure> {
    if part.is_empty() {
        return Vec::new();
    }
    if creating {
        let refused = refuse_existing(cluster, part).await;
        if !refused.is_empty() {
            return refused;
        }
    }
    let pending: Vec<_> = part.iter().map(|m| apply_one(cluster, m, force)).collect();
    let mut failures = Vec::new();
    for (m, result) in at_most(pending, concurrency).await {
        match result {
            Ok(a) => done.push(a),
            Err(e) => failures.push(ObjectFailure::new(m, e)),
        }
    }
    failures.sort_by(|a, b| a.key.cmp(&b.key));
    failures
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

async fn delete_one<'a>(
    cluster: &Cluster,
    m: &'a Manifest,
) -> (&'a Manifest, Result<DeleteOutcome, KubeError>) {
    (m, Box::pin(cluster.delete(m)).await)
}

/// Deletes objects in reverse dependency order; only objects gitopsd owns are touched.
pub async fn delete_all(cluster: &Cluster, objects: &[&Manifest], concurrency: usize) -> Deletions {
    let mut out = Deletions::default();
    let phases = by_phase(cluster, objects).await;
    for phase in phases.iter().rev() {
        let pending: Vec<_> = phase.iter().map(|m| delete_one(cluster, m)).collect();
        let results = at_most(pending, concurrency).await;
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
