//! The per-environment worker: fetch ─▶ render(C) ─▶ validate ─▶ plan(A→C) ─▶ apply ─▶ health ─▶ record,
//! with rollback to A when health fails. Everything it needs to resume is in git notes and the
//! cluster; its in-memory render cache is only an optimisation.

pub mod daemon;
pub mod http_check;
pub mod source;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{EnvironmentConfig, RollbackPolicy};
use crate::git::{GitError, Mirror, Oid};
use crate::k8s::apply::{self as kapply, ObjectFailure};
use crate::k8s::health::{self, Unhealthy};
use crate::k8s::{Cluster, KubeError};
use crate::manifest::{DesiredState, Manifest, ObjectKey, RenderError, Source};
use crate::plan::{self, Action, Plan};
use crate::s3::{self, BucketSpec, S3Error};
use crate::service::Metrics;
use crate::status::{self, Counts, ObjectError, Outcome, Reapplied, Record};
use source::{RenderFailure, git};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error(transparent)]
    S3(#[from] S3Error),
    #[error("environment {env}: {message}")]
    Setup { env: String, message: String },
    /// A shutdown cut a health wait short: no verdict is recorded; the step is redone on the
    /// next start (re-applying is a no-op for what is already applied).
    #[error(
        "environment {env}: health wait of {commit} interrupted by shutdown; redone on the next start"
    )]
    Interrupted { env: String, commit: String },
}

impl ReconcileError {
    pub fn is_transient(&self) -> bool {
        match self {
            ReconcileError::Git(e) => e.is_transient(),
            ReconcileError::Kube(e) => e.is_transient(),
            ReconcileError::S3(e) => e.is_transient(),
            ReconcileError::Setup { .. } | ReconcileError::Interrupted { .. } => false,
        }
    }
}

/// What one reconcile pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The head is already the healthy state.
    Converged { commit: String },
    /// The head is pinned as bad; the environment stays where it is.
    Pinned { commit: String, reason: String },
    /// The head was processed; the outcome was recorded on it.
    Recorded { commit: String, outcome: Outcome },
}

impl Step {
    /// Whether the environment is at the head commit and healthy.
    pub fn converged(&self) -> bool {
        matches!(
            self,
            Step::Converged { .. }
                | Step::Recorded {
                    outcome: Outcome::Healthy,
                    ..
                }
        )
    }
}

/// Cloud side of an environment.
pub struct S3Target {
    pub client: aws_sdk_s3::Client,
    /// Whose buckets these are (written as tags, checked before any change or deletion).
    pub owner: s3::Owner,
}

/// One environment's worker state.
pub struct EnvWorker {
    pub cfg: EnvironmentConfig,
    pub cluster: Option<Cluster>,
    pub s3: Option<S3Target>,
    pub metrics: Option<Arc<Metrics>>,
    /// Render of the last applied commit (disposable cache).
    cache: Option<(Oid, Arc<DesiredState>)>,
}

fn render_errors(errors: &[RenderError]) -> Vec<ObjectError> {
    errors
        .iter()
        .map(|e| ObjectError {
            object: e.object.clone().unwrap_or_default(),
            at: Some(match e.line {
                Some(line) => format!("{}:{line}", e.path),
                None => e.path.clone(),
            }),
            reason: e.message.clone(),
        })
        .collect()
}

fn failure_errors(failures: &[ObjectFailure]) -> Vec<ObjectError> {
    failures
        .iter()
        .map(|f| ObjectError {
            object: f.key.to_string(),
            at: Some(f.at.clone()),
            reason: f.error.reason(),
        })
        .collect()
}

fn unhealthy_errors(items: &[Unhealthy]) -> Vec<ObjectError> {
    items
        .iter()
        .map(|u| ObjectError {
            object: u.key.to_string(),
            at: None,
            reason: u.reason.clone(),
        })
        .collect()
}

fn summarize(errors: &[ObjectError]) -> String {
    let first = errors
        .first()
        .map(|e| format!("{}: {}", e.object, e.reason))
        .unwrap_or_default();
    if errors.len() > 1 {
        format!("{first} (and {} more)", errors.len() - 1)
    } else {
        first
    }
}

/// A manifest standing for a live object found by the inventory (only its identity matters).
fn inventory_manifest(key: ObjectKey, api_version: String) -> Manifest {
    Manifest {
        source: Source {
            path: "(cluster inventory)".into(),
            line: 0,
            document: 0,
        },
        body: serde_json::json!({"apiVersion": api_version, "kind": key.kind, "metadata": {"name": key.name}}),
        key,
        api_version,
    }
}

/// Result of applying one transition between two desired states.
#[derive(Default)]
struct Transition {
    counts: Counts,
    bucket_counts: Counts,
    errors: Vec<ObjectError>,
    messages: Vec<String>,
    /// Objects to wait for.
    applied: Vec<Manifest>,
    buckets_applied: Vec<BucketSpec>,
}

impl EnvWorker {
    pub fn new(
        cfg: EnvironmentConfig,
        cluster: Option<Cluster>,
        s3: Option<S3Target>,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        EnvWorker {
            cfg,
            cluster,
            s3,
            metrics,
            cache: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    async fn render(
        &mut self,
        mirror: &Arc<Mirror>,
        rev: Oid,
    ) -> Result<Arc<DesiredState>, RenderFailure> {
        if let Some((cached, state)) = &self.cache
            && *cached == rev
        {
            return Ok(Arc::clone(state));
        }
        Ok(Arc::new(
            source::render_full(mirror, rev, &self.cfg.path).await?,
        ))
    }

    async fn write(
        &self,
        mirror: &Arc<Mirror>,
        commit: Oid,
        record: &Record,
    ) -> Result<(), ReconcileError> {
        let env = self.cfg.name.clone();
        let record = record.clone();
        let retries = git(mirror, move |m| {
            m.update_note(commit, &|existing| {
                status::merge_section(existing, &env, &record)
            })
        })
        .await;
        match retries {
            Ok(n) => {
                if let Some(metrics) = &self.metrics {
                    metrics.notes_push_retries(u64::from(n));
                }
                Ok(())
            }
            // The note is committed locally and pushed later; the outcome is not lost.
            Err(e) if e.is_transient() => {
                tracing::warn!(env = %self.cfg.name, commit = %commit, error = %e, "note kept locally, push will be retried");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn edit(
        &self,
        mirror: &Arc<Mirror>,
        commit: Oid,
        f: impl Fn(&mut Record) + Send + Sync + 'static,
    ) -> Result<(), ReconcileError> {
        let env = self.cfg.name.clone();
        let result = git(mirror, move |m| {
            m.update_note(commit, &|existing| {
                status::edit_section(existing, &env, &f)
                    .unwrap_or_else(|| existing.unwrap_or_default().to_string())
            })
        })
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.is_transient() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every record of this environment, from the notes.
    pub async fn history(
        &self,
        mirror: &Arc<Mirror>,
    ) -> Result<status::EnvHistory, ReconcileError> {
        let notes = git(mirror, |m| m.list_notes()).await?;
        Ok(status::history(
            notes
                .iter()
                .map(|(oid, text)| (oid.to_string(), text.as_str())),
            &self.cfg.name,
        ))
    }

    /// One reconcile pass towards `head`.
    pub async fn reconcile(
        &mut self,
        mirror: &Arc<Mirror>,
        head: Oid,
        cancel: &CancellationToken,
    ) -> Result<Step, ReconcileError> {
        let started = tokio::time::Instant::now();
        let result = self.reconcile_inner(mirror, head, cancel).await;
        if let Some(metrics) = &self.metrics {
            let outcome = match &result {
                Ok(Step::Recorded { outcome, .. }) => outcome.as_str(),
                Ok(_) => "noop",
                Err(_) => "error",
            };
            metrics.reconcile_finished(&self.cfg.name, outcome, started.elapsed().as_secs_f64());
        }
        result
    }

    async fn reconcile_inner(
        &mut self,
        mirror: &Arc<Mirror>,
        head: Oid,
        cancel: &CancellationToken,
    ) -> Result<Step, ReconcileError> {
        let env = self.cfg.name.clone();
        let history = self.history(mirror).await?;
        let base = match &history.last_healthy {
            Some((commit, _)) => {
                let oid = Oid::from_str(commit).ok();
                match oid {
                    // The commit must still be readable (a force-push may have dropped it).
                    Some(oid) if git(mirror, move |m| m.commit_info(oid)).await.is_ok() => {
                        Some(oid)
                    }
                    _ => {
                        tracing::warn!(env = %env, commit = %commit, "last healthy commit is gone from the repository; pruning from the cluster inventory");
                        None
                    }
                }
            }
            None => None,
        };

        // A rollback interrupted by a crash is finished before anything else.
        if let Some((bad, _)) = history.records.iter().find(|(_, r)| r.rolling_back)
            && let Ok(bad) = Oid::from_str(bad)
        {
            tracing::info!(env = %env, commit = %bad, "resuming an interrupted rollback");
            let record = history.records.get(&bad.to_string()).cloned();
            self.finish_rollback(mirror, bad, base, record, cancel)
                .await?;
            if bad == head {
                return Ok(Step::Recorded {
                    commit: head.to_string(),
                    outcome: Outcome::RolledBack,
                });
            }
            return Box::pin(self.reconcile_inner(mirror, head, cancel)).await;
        }

        let head_s = head.to_string();
        if let Some(record) = history.records.get(&head_s) {
            if let Some(reason) = &record.pinned {
                return Ok(Step::Pinned {
                    commit: head_s,
                    reason: reason.clone(),
                });
            }
            if base == Some(head) {
                if let Some(metrics) = &self.metrics
                    && let Ok(info) = git(mirror, move |m| m.commit_info(head)).await
                {
                    metrics.last_healthy_commit(&env, info.time);
                }
                return Ok(Step::Converged { commit: head_s });
            }
        }
        self.apply_commit(mirror, base, head, cancel).await
    }

    /// Moves the environment from `base` (A) to `head` (C) and records the outcome on C.
    async fn apply_commit(
        &mut self,
        mirror: &Arc<Mirror>,
        base: Option<Oid>,
        head: Oid,
        cancel: &CancellationToken,
    ) -> Result<Step, ReconcileError> {
        let env = self.cfg.name.clone();
        let started_at = status::now_rfc3339();
        let from = base.map(|b| b.to_string());
        let reject = |errors: Vec<ObjectError>, messages: Vec<String>| {
            let mut record = Record::new(Outcome::Rejected, from.clone(), started_at.clone());
            record.pinned = Some(format!("rejected: {}", summarize(&errors)));
            record.errors = errors;
            record.messages = messages;
            record
        };
        tracing::info!(env = %env, commit = %head, from = ?from, "reconciling");

        // render(A), then render(C) re-reading only what changed.
        let base_state = match base {
            Some(b) => match self.render(mirror, b).await {
                Ok(state) => Some(state),
                Err(RenderFailure::Git(e)) => return Err(e.into()),
                // A was valid when applied; if it no longer renders (e.g. rules tightened), plan from the cluster inventory.
                Err(RenderFailure::Invalid(errors)) => {
                    tracing::warn!(env = %env, commit = %b, errors = errors.len(), "last healthy commit no longer renders");
                    None
                }
            },
            None => None,
        };
        let rendered = match (&base, &base_state) {
            (Some(b), Some(state)) => {
                source::render_changed(mirror, *b, state, head, &self.cfg.path)
                    .await
                    .map(|(s, touched)| (s, Some(touched)))
            }
            _ => source::render_full(mirror, head, &self.cfg.path)
                .await
                .map(|s| (s, None)),
        };
        let (state, touched) = match rendered {
            Ok(r) => r,
            Err(RenderFailure::Git(e)) => return Err(e.into()),
            Err(RenderFailure::Invalid(errors)) => {
                let record = reject(render_errors(&errors), Vec::new());
                return self.finish(mirror, head, record).await;
            }
        };

        // Buckets: parse every bucket (render-level validation), and find those whose object folders changed.
        let mut bucket_errors = Vec::new();
        let mut specs: BTreeMap<ObjectKey, BucketSpec> = BTreeMap::new();
        for m in state.buckets() {
            match s3::parse_bucket(m) {
                Ok(spec) => {
                    specs.insert(m.key.clone(), spec);
                }
                Err(errors) => bucket_errors.extend(render_errors(&errors)),
            }
        }
        if !specs.is_empty() && self.s3.is_none() {
            bucket_errors.push(ObjectError {
                object: specs.keys().next().map(ToString::to_string).unwrap_or_default(),
                at: None,
                reason: "this environment has no s3 settings in the host config, so Buckets cannot be reconciled".into(),
            });
        }
        if !bucket_errors.is_empty() {
            let record = reject(bucket_errors, Vec::new());
            return self.finish(mirror, head, record).await;
        }

        let the_plan = match (&base_state, &touched) {
            (Some(b), Some(keys)) => plan::plan_keys(Some(b), &state, keys),
            _ => plan::plan(base_state.as_deref(), &state),
        };
        // Buckets whose synced folder changed must be planned even if their YAML did not.
        let mut sync_changed = BTreeSet::new();
        for (key, spec) in &specs {
            if let Some(objects) = &spec.objects
                && the_plan.changes.iter().all(|c| &c.key != key)
                && source::folder_changed(mirror, base, head, &objects.source).await?
            {
                sync_changed.insert(key.clone());
            }
        }

        // Empty-render guard: never prune an environment to nothing.
        let mut inventory_orphans: Vec<Manifest> = Vec::new();
        if self.cfg.prune
            && let Some(cluster) = &self.cluster
            && base_state.is_none()
        {
            // No usable A: prune from what the cluster says gitopsd owns.
            for owned in cluster.owned_objects().await? {
                if !state.objects.contains_key(&owned.key)
                    && !self.owned_key_matches(&state, &owned.key)
                {
                    inventory_orphans.push(inventory_manifest(owned.key, owned.api_version));
                }
            }
        }
        let deletions = the_plan.count(Action::Delete) + inventory_orphans.len();
        if state.is_empty() && deletions > 0 && self.cfg.prune {
            let message = format!(
                "render of {} is empty: refusing to prune {deletions} objects (remove objects file by file, or set prune: false)",
                self.cfg.path
            );
            tracing::warn!(env = %env, commit = %head, "{message}");
            let record = reject(
                vec![ObjectError {
                    object: String::new(),
                    at: Some(self.cfg.path.clone()),
                    reason: message.clone(),
                }],
                vec![message],
            );
            return self.finish(mirror, head, record).await;
        }

        // Validate: server-side dry-run of every changed object; all or nothing.
        let mut validation_deferred: Vec<Manifest> = Vec::new();
        if let Some(cluster) = &self.cluster {
            let changed: Vec<&Manifest> = the_plan
                .changes
                .iter()
                .filter_map(|c| c.after.as_deref())
                .filter(|m| !m.key.is_bucket())
                .collect();
            let all: Vec<&Manifest> = state.kube_objects().collect();
            let mut v = kapply::validate(cluster, &changed, &all, self.cfg.apply_concurrency).await;
            let creates: Vec<&Manifest> = the_plan
                .changes
                .iter()
                .filter(|c| c.action == Action::Create && v.existing.contains(&c.key))
                .filter_map(|c| c.after.as_deref())
                .filter(|m| !m.key.is_bucket())
                .collect();
            v.failures.extend(
                kapply::not_owned_existing(cluster, &creates, self.cfg.apply_concurrency).await,
            );
            if !v.failures.is_empty() {
                let record = reject(failure_errors(&v.failures), Vec::new());
                return self.finish(mirror, head, record).await;
            }
            validation_deferred = v.deferred.into_iter().cloned().collect();
        } else if state.kube_objects().next().is_some() {
            let record = reject(
                vec![ObjectError {
                    object: String::new(),
                    at: Some(self.cfg.path.clone()),
                    reason: "this environment has no kubernetes settings in the host config".into(),
                }],
                Vec::new(),
            );
            return self.finish(mirror, head, record).await;
        }

        // Bootstrap: Namespaces and CRDs this commit needs before the rest can be dry-run.
        if !validation_deferred.is_empty()
            && let Some(cluster) = &self.cluster
        {
            let bootstrap: Vec<&Manifest> = the_plan
                .changes
                .iter()
                .filter_map(|c| c.after.as_deref())
                .filter(|m| kapply::is_bootstrap(m))
                .collect();
            let (_, failures) =
                kapply::apply_all(cluster, &bootstrap, self.cfg.apply_concurrency).await;
            let deferred: Vec<&Manifest> = validation_deferred.iter().collect();
            let mut failures = failures;
            if failures.is_empty() {
                failures =
                    kapply::dry_run_all(cluster, &deferred, self.cfg.apply_concurrency).await;
            }
            if !failures.is_empty() {
                // Undo what this attempt created, so a rejected commit leaves nothing behind.
                let created: Vec<&Manifest> = the_plan
                    .changes
                    .iter()
                    .filter(|c| c.action == Action::Create)
                    .filter_map(|c| c.after.as_deref())
                    .filter(|m| kapply::is_bootstrap(m))
                    .collect();
                let _ = kapply::delete_all(cluster, &created, self.cfg.apply_concurrency).await;
                let record = reject(failure_errors(&failures), Vec::new());
                return self.finish(mirror, head, record).await;
            }
        }

        // Apply, prune, and wait for health.
        let transition = self
            .transition(
                mirror,
                head,
                &the_plan,
                &inventory_orphans,
                &specs,
                &sync_changed,
                base.is_none(),
            )
            .await?;
        let mut record = Record::new(Outcome::Healthy, from.clone(), started_at.clone());
        record.counts = transition.counts.clone();
        record.buckets = (!specs.is_empty()).then(|| transition.bucket_counts.clone());
        record.messages = transition.messages.clone();
        let mut problems = transition.errors.clone();
        if problems.is_empty() {
            problems = self.wait_health(&transition, cancel).await;
            // Cut short by a shutdown, the wait is no verdict: record nothing (a note would pin
            // C, or roll it back, for a rollout that may just have needed more time).
            if !problems.is_empty() && cancel.is_cancelled() {
                return Err(ReconcileError::Interrupted {
                    env,
                    commit: head.to_string(),
                });
            }
        }
        if problems.is_empty() {
            self.cache = Some((head, Arc::new(state)));
            if let Some(metrics) = &self.metrics {
                if let Ok(info) = git(mirror, move |m| m.commit_info(head)).await {
                    metrics.last_healthy_commit(&env, info.time);
                }
                metrics.applied_objects(&env, "create", transition.counts.created as u64);
                metrics.applied_objects(&env, "update", transition.counts.updated as u64);
                metrics.applied_objects(&env, "delete", transition.counts.deleted as u64);
            }
            record.finished = status::now_rfc3339();
            return self.finish(mirror, head, record).await;
        }

        // Unhealthy: roll back to A, or stay and record.
        self.cache = None;
        record.errors = problems.clone();
        let can_roll_back =
            self.cfg.rollback == RollbackPolicy::Auto && base.is_some() && base_state.is_some();
        if !can_roll_back {
            record.outcome = Outcome::Unhealthy;
            record.pinned = Some(format!(
                "unhealthy{}: {}",
                if base.is_none() {
                    " with no healthy commit to roll back to"
                } else {
                    " (rollback is off)"
                },
                summarize(&problems)
            ));
            record.finished = status::now_rfc3339();
            tracing::warn!(env = %env, commit = %head, problems = %summarize(&problems), "unhealthy, left as it is");
            return self.finish(mirror, head, record).await;
        }
        // Record the intent first: a crash from here on resumes the rollback instead of re-applying C.
        record.outcome = Outcome::Unhealthy;
        record.rolling_back = true;
        record.pinned = Some(format!("unhealthy, rolling back: {}", summarize(&problems)));
        record.finished = status::now_rfc3339();
        self.write(mirror, head, &record).await?;
        tracing::warn!(env = %env, commit = %head, problems = %summarize(&problems), "unhealthy, rolling back");
        self.finish_rollback(mirror, head, base, Some(record), cancel)
            .await?;
        Ok(Step::Recorded {
            commit: head.to_string(),
            outcome: Outcome::RolledBack,
        })
    }

    /// Whether an inventory key is the same object as one in the desired state once namespaces
    /// are defaulted (render keeps namespaces as written; the cluster reports the effective one).
    fn owned_key_matches(&self, state: &DesiredState, key: &ObjectKey) -> bool {
        let mut unqualified = key.clone();
        match &key.namespace {
            Some(ns) if *ns == self.cfg.namespace => {
                unqualified.namespace = None;
                state.objects.contains_key(&unqualified)
            }
            None => state
                .objects
                .keys()
                .any(|k| k.group == key.group && k.kind == key.kind && k.name == key.name),
            _ => false,
        }
    }

    /// Applies a plan: Kubernetes creates/updates in dependency order, then prunes; buckets.
    #[allow(clippy::too_many_arguments)]
    async fn transition(
        &self,
        mirror: &Arc<Mirror>,
        rev: Oid,
        the_plan: &Plan,
        orphans: &[Manifest],
        specs: &BTreeMap<ObjectKey, BucketSpec>,
        sync_changed: &BTreeSet<ObjectKey>,
        full_sync: bool,
    ) -> Result<Transition, ReconcileError> {
        // `counts` are Kubernetes objects; buckets are counted apart (`bucket_counts`).
        let buckets_changed = the_plan
            .changes
            .iter()
            .filter(|c| c.key.is_bucket() && c.after.is_some())
            .count();
        let buckets_unchanged = specs.len().saturating_sub(buckets_changed);
        let mut t = Transition {
            counts: Counts {
                unchanged: the_plan.unchanged.saturating_sub(buckets_unchanged),
                ..Counts::default()
            },
            ..Transition::default()
        };
        if let Some(cluster) = &self.cluster {
            let to_apply: Vec<&Manifest> = the_plan
                .changes
                .iter()
                .filter(|c| c.action != Action::Delete && !c.key.is_bucket())
                .filter_map(|c| c.after.as_deref())
                .collect();
            let (applied, failures) =
                kapply::apply_all(cluster, &to_apply, self.cfg.apply_concurrency).await;
            let actions: BTreeMap<&ObjectKey, Action> = the_plan
                .changes
                .iter()
                .map(|c| (&c.key, c.action))
                .collect();
            let mut pending_health = BTreeSet::new();
            for (key, healthy) in &applied {
                match actions.get(key) {
                    Some(Action::Create) => t.counts.created += 1,
                    _ => t.counts.updated += 1,
                }
                // What the apply answer already showed healthy needs no further look.
                if !healthy {
                    pending_health.insert(key.clone());
                }
            }
            t.applied = to_apply
                .into_iter()
                .filter(|m| pending_health.contains(&m.key))
                .cloned()
                .collect();
            if !failures.is_empty() {
                t.errors.extend(failure_errors(&failures));
                return Ok(t);
            }
            let mut to_delete: Vec<&Manifest> = the_plan
                .changes
                .iter()
                .filter(|c| c.action == Action::Delete && !c.key.is_bucket())
                .filter_map(|c| c.before.as_deref())
                .collect();
            to_delete.extend(orphans.iter());
            if !to_delete.is_empty() {
                if self.cfg.prune {
                    let d =
                        kapply::delete_all(cluster, &to_delete, self.cfg.apply_concurrency).await;
                    t.counts.deleted += d.deleted.len();
                    for key in d.not_owned {
                        t.messages.push(format!(
                            "{key} was not deleted: it is not owned by gitopsd for this environment"
                        ));
                    }
                    t.errors.extend(failure_errors(&d.failures));
                } else {
                    t.messages.push(format!(
                        "prune is off: {} removed objects were left in the cluster",
                        to_delete.len()
                    ));
                }
            }
        }
        if let Some(s3t) = &self.s3 {
            let objects_source = source::GitObjectSource {
                mirror: Arc::clone(mirror),
                rev,
            };
            for (key, spec) in specs {
                let planned = the_plan.changes.iter().any(|c| &c.key == key);
                if !planned && !sync_changed.contains(key) && !full_sync {
                    t.bucket_counts.unchanged += 1;
                    continue;
                }
                let objects: Option<&dyn s3::ObjectSource> = spec
                    .objects
                    .as_ref()
                    .map(|_| &objects_source as &dyn s3::ObjectSource);
                let result = async {
                    let bucket_plan =
                        s3::plan_bucket(&s3t.client, spec, &s3t.owner, objects).await?;
                    if bucket_plan.is_noop() {
                        return Ok::<_, S3Error>(None);
                    }
                    let created = bucket_plan.action == s3::BucketAction::Create;
                    s3::apply_bucket(&s3t.client, spec, &s3t.owner, &bucket_plan, objects).await?;
                    Ok(Some(created))
                }
                .await;
                match result {
                    Ok(None) => t.bucket_counts.unchanged += 1,
                    Ok(Some(true)) => t.bucket_counts.created += 1,
                    Ok(Some(false)) => t.bucket_counts.updated += 1,
                    Err(e) => t.errors.push(ObjectError {
                        object: spec.object_name(),
                        at: Some(spec.source.to_string()),
                        reason: e.to_string(),
                    }),
                }
                t.buckets_applied.push(spec.clone());
            }
            for change in the_plan
                .changes
                .iter()
                .filter(|c| c.action == Action::Delete && c.key.is_bucket())
            {
                let Some(before) = &change.before else {
                    continue;
                };
                let Ok(spec) = s3::parse_bucket(before) else {
                    continue;
                };
                match s3::delete_bucket(&s3t.client, &spec, &s3t.owner).await {
                    Ok(outcome) => {
                        t.bucket_counts.deleted += 1;
                        t.messages
                            .push(format!("{}: {outcome:?}", spec.object_name()));
                    }
                    Err(e) => t.errors.push(ObjectError {
                        object: spec.object_name(),
                        at: Some(before.source.to_string()),
                        reason: e.to_string(),
                    }),
                }
            }
        }
        Ok(t)
    }

    /// Waits for what a transition applied to become healthy; returns the problems.
    async fn wait_health(&self, t: &Transition, cancel: &CancellationToken) -> Vec<ObjectError> {
        let timeout = self.cfg.health.timeout;
        let mut problems = Vec::new();
        if let Some(cluster) = &self.cluster {
            let objects: Vec<&Manifest> = t.applied.iter().collect();
            problems.extend(unhealthy_errors(
                &health::wait_healthy(cluster, &objects, timeout, cancel).await,
            ));
        }
        if let Some(s3t) = &self.s3 {
            for spec in &t.buckets_applied {
                match s3::check_health(&s3t.client, spec, &s3t.owner).await {
                    Ok(issues) => problems.extend(issues.into_iter().map(|reason| ObjectError {
                        object: spec.object_name(),
                        at: None,
                        reason,
                    })),
                    Err(e) => problems.push(ObjectError {
                        object: spec.object_name(),
                        at: None,
                        reason: e.to_string(),
                    }),
                }
            }
        }
        if problems.is_empty() && !self.cfg.health.http.is_empty() {
            problems
                .extend(http_check::wait_http_checks(&self.cfg.health.http, timeout, cancel).await);
        }
        problems
    }

    /// Moves the cluster from one full desired state to another (rollbacks: a full plan, not
    /// O(changed), since they are rare and must be exact) and waits for health. Returns the problems.
    async fn restore(
        &self,
        mirror: &Arc<Mirror>,
        rev: Oid,
        from: &DesiredState,
        to: &DesiredState,
        cancel: &CancellationToken,
    ) -> Result<Vec<ObjectError>, ReconcileError> {
        let the_plan = plan::plan(Some(from), to);
        let specs: BTreeMap<ObjectKey, BucketSpec> = to
            .buckets()
            .filter_map(|m| s3::parse_bucket(m).ok().map(|spec| (m.key.clone(), spec)))
            .collect();
        let t = self
            .transition(mirror, rev, &the_plan, &[], &specs, &BTreeSet::new(), false)
            .await?;
        if !t.errors.is_empty() {
            return Ok(t.errors);
        }
        Ok(self.wait_health(&t, cancel).await)
    }

    /// Rolls the environment back from `bad` (C) to `base` (A) and records both notes.
    async fn finish_rollback(
        &mut self,
        mirror: &Arc<Mirror>,
        bad: Oid,
        base: Option<Oid>,
        record: Option<Record>,
        cancel: &CancellationToken,
    ) -> Result<(), ReconcileError> {
        let env = self.cfg.name.clone();
        let mut record = record.unwrap_or_else(|| {
            Record::new(
                Outcome::Unhealthy,
                base.map(|b| b.to_string()),
                status::now_rfc3339(),
            )
        });
        let Some(base) = base else {
            record.outcome = Outcome::RollbackFailed;
            record.rolling_back = false;
            record.pinned = Some("rollback impossible: no healthy commit to return to".into());
            record.finished = status::now_rfc3339();
            tracing::error!(env = %env, commit = %bad, "rollback impossible: no healthy commit to return to");
            self.write(mirror, bad, &record).await?;
            return Ok(());
        };
        let bad_state = source::render_full(mirror, bad, &self.cfg.path).await;
        let good_state = self.render(mirror, base).await;
        let (bad_state, good_state) = match (bad_state, good_state) {
            (Ok(b), Ok(g)) => (b, g),
            (Err(RenderFailure::Git(e)), _) | (_, Err(RenderFailure::Git(e))) => {
                return Err(e.into());
            }
            _ => {
                record.outcome = Outcome::RollbackFailed;
                record.rolling_back = false;
                record.finished = status::now_rfc3339();
                self.write(mirror, bad, &record).await?;
                return Ok(());
            }
        };
        // Re-apply render(A), delete what C created, re-create what C deleted.
        let problems = self
            .restore(mirror, base, &bad_state, &good_state, cancel)
            .await?;
        // Interrupted: the note still says `rolling_back`, so the next start resumes this.
        if !problems.is_empty() && cancel.is_cancelled() {
            return Err(ReconcileError::Interrupted {
                env,
                commit: bad.to_string(),
            });
        }
        let healthy = problems.is_empty();
        if let Some(metrics) = &self.metrics {
            metrics.rollback(&env);
        }
        record.rolling_back = false;
        record.finished = status::now_rfc3339();
        let bad_s = bad.to_string();
        if healthy {
            record.outcome = Outcome::RolledBack;
            record.pinned = Some(format!("rolled back: {}", summarize(&record.errors)));
            self.cache = Some((base, good_state));
            tracing::warn!(env = %env, commit = %bad, to = %base, "rolled back");
        } else {
            record.outcome = Outcome::RollbackFailed;
            record.pinned = Some(format!("rollback failed: {}", summarize(&problems)));
            record.messages.push(format!(
                "rollback to {base} unhealthy: {}",
                summarize(&problems)
            ));
            tracing::error!(env = %env, commit = %bad, to = %base, problems = %summarize(&problems), "rollback is unhealthy; not changing this environment until a new commit arrives");
        }
        self.write(mirror, bad, &record).await?;
        let at = status::now_rfc3339();
        self.edit(mirror, base, move |r| {
            r.reapplied.push(Reapplied {
                at: at.clone(),
                because: bad_s.clone(),
                healthy,
            })
        })
        .await?;
        Ok(())
    }

    async fn finish(
        &mut self,
        mirror: &Arc<Mirror>,
        head: Oid,
        record: Record,
    ) -> Result<Step, ReconcileError> {
        match record.outcome {
            Outcome::Healthy => tracing::info!(
                env = %self.cfg.name, commit = %head,
                created = record.counts.created, updated = record.counts.updated,
                deleted = record.counts.deleted, unchanged = record.counts.unchanged,
                "applied and healthy"
            ),
            outcome => {
                tracing::warn!(env = %self.cfg.name, commit = %head, outcome = %outcome, errors = record.errors.len(), first = %summarize(&record.errors), "not applied")
            }
        }
        self.write(mirror, head, &record).await?;
        Ok(Step::Recorded {
            commit: head.to_string(),
            outcome: record.outcome,
        })
    }

    /// Re-applies an older healthy commit at an operator's request and pins the newer ones.
    pub async fn manual_rollback(
        &mut self,
        mirror: &Arc<Mirror>,
        to: Oid,
        cancel: &CancellationToken,
    ) -> Result<Step, ReconcileError> {
        let history = self.history(mirror).await?;
        let to_s = to.to_string();
        let target = history.records.get(&to_s);
        if target.and_then(|r| r.healthy_since()).is_none() {
            return Err(ReconcileError::Setup {
                env: self.cfg.name.clone(),
                message: format!(
                    "{to_s} was never healthy in this environment; refusing to roll back to it"
                ),
            });
        }
        let Some((current, _)) = history.last_healthy.clone() else {
            return Err(ReconcileError::Setup {
                env: self.cfg.name.clone(),
                message: "no healthy commit is applied".into(),
            });
        };
        let current = Oid::from_str(&current).map_err(|e| ReconcileError::Setup {
            env: self.cfg.name.clone(),
            message: e.to_string(),
        })?;
        let from_state = self.render(mirror, current).await.map_err(|e| match e {
            RenderFailure::Git(g) => ReconcileError::Git(g),
            RenderFailure::Invalid(errs) => ReconcileError::Setup {
                env: self.cfg.name.clone(),
                message: format!("{} render errors in the current commit", errs.len()),
            },
        })?;
        let to_state = source::render_full(mirror, to, &self.cfg.path)
            .await
            .map_err(|e| match e {
                RenderFailure::Git(g) => ReconcileError::Git(g),
                RenderFailure::Invalid(errs) => ReconcileError::Setup {
                    env: self.cfg.name.clone(),
                    message: format!("{} render errors in {to_s}", errs.len()),
                },
            })?;
        // Pin every commit after `to` on the branch so the daemon does not move forward again.
        let head = git(mirror, |m| m.branch_head()).await?;
        let newer = git(mirror, move |m| m.commits_between(Some(to), head, 10_000)).await?;
        for c in &newer {
            let reason = format!("pinned by manual rollback to {to_s}");
            let env = self.cfg.name.clone();
            let id = c.id;
            let reason2 = reason.clone();
            git(mirror, move |m| {
                m.update_note(id, &|existing| {
                    let mut note = existing.map(status::Note::parse).unwrap_or_default();
                    let record = note.environments.entry(env.clone()).or_insert_with(|| {
                        let mut r = Record::new(Outcome::Superseded, None, status::now_rfc3339());
                        r.messages.push("never applied".into());
                        r
                    });
                    record.pinned = Some(reason2.clone());
                    note.render()
                })
            })
            .await?;
        }
        let problems = self
            .restore(mirror, to, &from_state, &to_state, cancel)
            .await?;
        let healthy = problems.is_empty();
        let at = status::now_rfc3339();
        let because = format!("manual rollback from {current}");
        self.edit(mirror, to, move |r| {
            r.reapplied.push(Reapplied {
                at: at.clone(),
                because: because.clone(),
                healthy,
            })
        })
        .await?;
        if healthy {
            self.cache = Some((to, Arc::new(to_state)));
        }
        Ok(Step::Recorded {
            commit: to_s,
            outcome: if healthy {
                Outcome::Healthy
            } else {
                Outcome::RollbackFailed
            },
        })
    }
}

/// Clears the pin of `commit` for `env` so the daemon tries it again.
pub async fn retry(mirror: &Arc<Mirror>, env: &str, commit: Oid) -> Result<bool, ReconcileError> {
    let env = env.to_string();
    let found = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let found2 = Arc::clone(&found);
    git(mirror, move |m| {
        m.update_note(
            commit,
            &|existing| match status::edit_section(existing, &env, |r| {
                r.pinned = None;
                r.messages
                    .push(format!("retry requested at {}", status::now_rfc3339()));
            }) {
                Some(text) => {
                    found2.store(true, std::sync::atomic::Ordering::SeqCst);
                    text
                }
                None => existing.unwrap_or_default().to_string(),
            },
        )
    })
    .await?;
    Ok(found.load(std::sync::atomic::Ordering::SeqCst))
}

/// Backoff between failed passes: 0.8 s doubling to 30 s, with jitter (as kube-runtime does).
pub fn backoff(attempt: u32) -> Duration {
    let base = 0.8_f64 * 2f64.powi(attempt.min(6) as i32);
    let capped = base.min(30.0);
    let jitter = rand::random::<f64>() * capped * 0.2;
    Duration::from_secs_f64(capped + jitter)
}
