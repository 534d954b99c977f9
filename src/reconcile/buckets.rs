//! Buckets in the `apply`, `health` and drift stages. Buckets have no watch: each sync re-reads
//! them (a few Get* calls and a listing), so a plan with nothing to do writes nothing.

use std::sync::Arc;

use super::apply::Transition;
use super::prepare::Prepared;
use super::source::GitObjectSource;
use super::{EnvWorker, ReconcileError};
use crate::git::Mirror;
use crate::s3::{self, BucketSpec, S3Error};
use crate::status::ObjectError;

/// Result of one bucket's sync.
enum Synced {
    Unchanged,
    Created,
    Updated,
}

impl EnvWorker {
    /// Brings every bucket of `p` to its spec (configuration and object sync from `p`'s commit).
    pub(super) async fn sync_buckets(
        &self,
        mirror: &Arc<Mirror>,
        p: &Prepared,
        t: &mut Transition,
    ) -> Result<(), ReconcileError> {
        let Some(target) = &self.s3 else {
            return Ok(());
        };
        let source = GitObjectSource {
            mirror: Arc::clone(mirror),
            rev: p.commit,
        };
        for spec in p.buckets.values() {
            self.beat();
            let objects = spec
                .objects
                .as_ref()
                .map(|_| &source as &dyn s3::ObjectSource);
            match sync_one(target, spec, objects).await {
                Ok(Synced::Unchanged) => t.bucket_counts.unchanged += 1,
                Ok(Synced::Created) => t.bucket_counts.created += 1,
                Ok(Synced::Updated) => t.bucket_counts.updated += 1,
                Err(e) if e.is_transient() => return Err(e.into()),
                Err(e) => t.errors.push(bucket_error(spec, &e)),
            }
        }
        Ok(())
    }

    /// Stage `validate` for buckets: plans each one (reads only), so a bucket that cannot
    /// become this spec (another owner's, an impossible change) rejects the commit before
    /// anything is changed, instead of failing half-applied as unhealthy.
    pub(super) async fn validate_buckets(
        &self,
        p: &Prepared,
    ) -> Result<Vec<ObjectError>, ReconcileError> {
        let mut errors = Vec::new();
        let Some(target) = &self.s3 else {
            return Ok(errors);
        };
        for spec in p.buckets.values() {
            match s3::plan_bucket(&target.client, spec, &target.owner, None).await {
                Ok(_) => {}
                Err(e) if e.is_transient() => return Err(e.into()),
                Err(e) => errors.push(bucket_error(spec, &e)),
            }
        }
        Ok(errors)
    }

    /// Deletes buckets that left the repository (`prune` and `deletionPolicy` permitting).
    pub(super) async fn delete_buckets(
        &self,
        removed: &[BucketSpec],
        t: &mut Transition,
    ) -> Result<(), ReconcileError> {
        let Some(target) = &self.s3 else {
            return Ok(());
        };
        if removed.is_empty() {
            return Ok(());
        }
        if !self.cfg.prune {
            t.messages.push(format!(
                "prune is off: {} removed buckets were left in place",
                removed.len()
            ));
            return Ok(());
        }
        for spec in removed {
            match s3::delete_bucket(&target.client, spec, &target.owner).await {
                Ok(s3::DeleteOutcome::NotOwned) => t.messages.push(format!(
                    "{}: not deleted: it is not owned by this gitopsd instance for this environment",
                    spec.object_name()
                )),
                Ok(outcome) => {
                    if outcome == s3::DeleteOutcome::Deleted {
                        t.bucket_counts.deleted += 1;
                    }
                    t.messages.push(format!(
                        "{}: {}",
                        spec.object_name(),
                        describe_delete(outcome)
                    ));
                }
                Err(e) if e.is_transient() => return Err(e.into()),
                Err(e) => t.errors.push(bucket_error(spec, &e)),
            }
        }
        Ok(())
    }

    /// Reads every bucket back; the problems found (empty when all match their spec).
    pub(super) async fn bucket_health(
        &self,
        p: &Prepared,
    ) -> Result<Vec<ObjectError>, ReconcileError> {
        let mut problems = Vec::new();
        let Some(target) = &self.s3 else {
            return Ok(problems);
        };
        for spec in p.buckets.values() {
            match s3::check_health(&target.client, spec, &target.owner).await {
                Ok(issues) => problems.extend(issues.into_iter().map(|reason| ObjectError {
                    object: spec.object_name(),
                    at: None,
                    reason,
                })),
                Err(e) if e.is_transient() => return Err(e.into()),
                Err(e) => problems.push(bucket_error(spec, &e)),
            }
        }
        Ok(problems)
    }

    /// Buckets whose live state differs from `p` (drift), without changing anything.
    pub(super) async fn bucket_drift(
        &self,
        mirror: &Arc<Mirror>,
        p: &Prepared,
    ) -> Result<Vec<String>, ReconcileError> {
        let mut drifted = Vec::new();
        let Some(target) = &self.s3 else {
            return Ok(drifted);
        };
        let source = GitObjectSource {
            mirror: Arc::clone(mirror),
            rev: p.commit,
        };
        for spec in p.buckets.values() {
            let objects = spec
                .objects
                .as_ref()
                .map(|_| &source as &dyn s3::ObjectSource);
            match s3::plan_bucket(&target.client, spec, &target.owner, objects).await {
                Ok(plan) if plan.is_noop() => {}
                Ok(_) => drifted.push(spec.object_name()),
                Err(e) if e.is_transient() => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(env = %self.cfg.name, bucket = %spec.name, error = %e, "cannot read bucket for drift")
                }
            }
        }
        Ok(drifted)
    }
}

async fn sync_one(
    target: &super::S3Target,
    spec: &BucketSpec,
    objects: Option<&dyn s3::ObjectSource>,
) -> Result<Synced, S3Error> {
    let (client, owner) = (&target.client, &target.owner);
    let plan = s3::plan_bucket(client, spec, owner, objects).await?;
    if plan.is_noop() {
        return Ok(Synced::Unchanged);
    }
    let created = plan.action == s3::BucketAction::Create;
    s3::apply_bucket(client, spec, owner, &plan, objects).await?;
    Ok(if created {
        Synced::Created
    } else {
        Synced::Updated
    })
}

fn bucket_error(spec: &BucketSpec, e: &S3Error) -> ObjectError {
    ObjectError {
        object: spec.object_name(),
        at: Some(spec.source.to_string()),
        reason: e.to_string(),
    }
}

fn describe_delete(outcome: s3::DeleteOutcome) -> &'static str {
    match outcome {
        s3::DeleteOutcome::Retained => "kept (deletionPolicy: Retain)",
        s3::DeleteOutcome::Deleted => "deleted",
        s3::DeleteOutcome::AlreadyGone => "already gone",
        s3::DeleteOutcome::NotOwned => "not owned, left alone",
    }
}
