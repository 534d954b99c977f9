//! Drift: a pass over a commit that is already applied. Live objects whose managed fields were
//! changed by hand, or that were deleted, are re-applied (`drift: correct`) or reported
//! (`drift: report`); buckets, which have no watch, are re-read every `drift_interval`.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::prepare::PrepareFailure;
use super::source::git;
use super::{EnvWorker, ReconcileError, Step};
use crate::config::DriftPolicy;
use crate::git::{Mirror, Oid};
use crate::manifest::ObjectKey;

impl EnvWorker {
    /// Keeps the cluster at `commit`'s render.
    pub(super) async fn hold(
        &mut self,
        mirror: &Arc<Mirror>,
        commit: Oid,
    ) -> Result<Step, ReconcileError> {
        let converged = Step::Converged {
            commit: commit.to_string(),
        };
        if self.cfg.drift == DriftPolicy::Off {
            return Ok(converged);
        }
        // A force-push may have dropped the applied commit: nothing to hold the cluster to.
        if git(mirror, move |m| m.commit_info(commit)).await.is_err() {
            return Ok(converged);
        }
        let p = match self.prepare(mirror, commit).await {
            Ok(p) => p,
            Err(PrepareFailure::Effect(e)) => return Err(e),
            // Applied once, invalid now (rules tightened): nothing to hold it to.
            Err(PrepareFailure::Invalid(_)) => return Ok(converged),
        };
        let plan = self.plan(&p, self.cfg.prune).await?;
        let mut drifted: BTreeSet<ObjectKey> = plan
            .create
            .iter()
            .chain(&plan.update)
            .filter_map(|i| p.wanted.get(*i).map(|w| w.key.clone()))
            .collect();
        drifted.extend(plan.delete.iter().map(|(k, _)| k.clone()));
        let mut names: Vec<String> = drifted.iter().map(ToString::to_string).collect();
        if self.bucket_check_due() {
            names.extend(self.bucket_drift(mirror, &p).await?);
            self.last_bucket_check = Some(tokio::time::Instant::now());
        }
        if let Some(metrics) = &self.metrics {
            metrics.drifted_objects(&self.cfg.name, names.len() as i64);
        }
        if names.is_empty() {
            self.reported_drift.clear();
            return Ok(converged);
        }
        let env = self.cfg.name.clone();
        let objects = names.len();
        if self.cfg.drift == DriftPolicy::Report {
            // A standing drift is noted once; bucket-only drift at each bucket check.
            if self.reported_drift != drifted || drifted.is_empty() {
                tracing::warn!(env = %env, commit = %commit, objects, first = %names[0], "drift found; drift: report leaves it");
                self.note_drift(mirror, commit, names, false).await?;
                self.reported_drift = drifted;
            }
            return Ok(Step::Drift {
                commit: commit.to_string(),
                objects,
                corrected: false,
            });
        }
        tracing::warn!(env = %env, commit = %commit, objects, first = %names[0], "drift found; correcting");
        let sending = super::first::Sending::Validated { force: true };
        let t = self.converge(mirror, &p, &plan, sending, &[]).await?;
        let corrected = t.errors.is_empty();
        if !corrected {
            tracing::warn!(env = %env, commit = %commit, errors = t.errors.len(), first = %super::record::summarize(&t.errors), "drift not corrected");
        }
        self.note_drift(mirror, commit, names, corrected).await?;
        self.reported_drift.clear();
        Ok(Step::Drift {
            commit: commit.to_string(),
            objects,
            corrected,
        })
    }

    fn bucket_check_due(&self) -> bool {
        !self.prepared.as_ref().is_some_and(|p| p.buckets.is_empty())
            && self
                .last_bucket_check
                .is_none_or(|at| at.elapsed() >= self.cfg.drift_interval)
    }

    /// When the next bucket drift check is due (`None`: no buckets, or drift is off).
    pub fn next_bucket_check(&self) -> Option<tokio::time::Instant> {
        if self.cfg.drift == DriftPolicy::Off || self.s3.is_none() {
            return None;
        }
        if self.prepared.as_ref().is_some_and(|p| p.buckets.is_empty()) {
            return None;
        }
        Some(
            self.last_bucket_check
                .map(|at| at + self.cfg.drift_interval)
                .unwrap_or_else(tokio::time::Instant::now),
        )
    }

    async fn note_drift(
        &self,
        mirror: &Arc<Mirror>,
        commit: Oid,
        objects: Vec<String>,
        corrected: bool,
    ) -> Result<(), ReconcileError> {
        let at = crate::status::now_rfc3339();
        self.edit(mirror, commit, move |r| {
            // Idempotent: the same entry is never added twice by a retried push.
            if !r.drift.iter().any(|d| d.at == at) {
                r.push_drift(&at, &objects, corrected);
            }
        })
        .await
    }
}
