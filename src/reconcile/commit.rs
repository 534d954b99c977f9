//! A pass that moves the environment to a new commit C: prepare ─▶ plan(live→C) ─▶ validate ─▶
//! apply ─▶ health ─▶ record, with a rollback to the last healthy commit A when health fails.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::health::Verdict;
use super::prepare::{PrepareFailure, Prepared};
use super::record::{rejected, summarize};
use super::source::{self, git};
use super::validate::Validated;
use super::{EnvWorker, ReconcileError, Step};
use crate::config::RollbackPolicy;
use crate::git::{Mirror, Oid};
use crate::s3::{self, BucketSpec};
use crate::status::{self, EnvHistory, ObjectError, Outcome, Record};

/// A commit of the history, if it is still in the repository (a force-push may drop it).
pub(super) async fn existing(
    mirror: &Arc<Mirror>,
    commit: Option<&(String, String)>,
) -> Option<Oid> {
    let oid = Oid::from_str(&commit?.0).ok()?;
    git(mirror, move |m| m.commit_info(oid)).await.ok()?;
    Some(oid)
}

impl EnvWorker {
    /// Moves the environment to `head` and records the outcome on it.
    pub(super) async fn apply_commit(
        &mut self,
        mirror: &Arc<Mirror>,
        history: &EnvHistory,
        head: Oid,
        cancel: &CancellationToken,
    ) -> Result<Step, ReconcileError> {
        let started = status::now_rfc3339();
        // A: the last healthy commit, if the repository still has it.
        let from = existing(mirror, history.last_healthy.as_ref())
            .await
            .map(|c| c.to_string());
        let previous = existing(mirror, history.last_applied.as_ref()).await;
        // Before anything reads the commit's files (renderers run on them).
        if let Some(error) = self.verify_commit(mirror, head).await? {
            let record = rejected(from, started, vec![error], Vec::new());
            return self.finish(mirror, head, record).await;
        }
        if let Some(record) = self.same_as_pinned(mirror, history, head).await? {
            return self.finish(mirror, head, record).await;
        }
        tracing::info!(env = %self.cfg.name, commit = %head, from = from.as_deref().unwrap_or("none"), "reconciling");
        let p = match self.prepare(mirror, head).await {
            Ok(p) => p,
            Err(PrepareFailure::Effect(e)) => return Err(e),
            Err(PrepareFailure::Invalid(errors)) => {
                let record = rejected(from, started, errors, Vec::new());
                return self.finish(mirror, head, record).await;
            }
        };
        // A first apply (nothing applied by this instance yet) never prunes.
        let prune = self.cfg.prune && history.last_applied.is_some();
        let plan = self.plan(&p, prune).await?;
        let removed = self.removed_buckets(mirror, previous, &p).await?;
        if p.state.is_empty() && (!plan.delete.is_empty() || !removed.is_empty()) {
            let message = format!(
                "render of {} is empty: refusing to prune {} objects (remove objects file by file, or set prune: false)",
                self.cfg.path,
                plan.delete.len() + removed.len()
            );
            let error = ObjectError {
                object: String::new(),
                at: Some(self.cfg.path.clone()),
                reason: message.clone(),
            };
            let record = rejected(from, started, vec![error], vec![message]);
            return self.finish(mirror, head, record).await;
        }
        let sending = self.sending(&p, &plan, previous);
        if let Validated::Rejected { errors, messages } =
            self.validate(mirror, &p, &plan, previous, sending).await?
        {
            let record = rejected(from, started, errors, messages);
            return self.finish(mirror, head, record).await;
        }
        let t = self.converge(mirror, &p, &plan, sending, &removed).await?;
        if t.refused {
            let (errors, messages) = self.undo_creates(&p, &plan, &t).await;
            let record = rejected(from, started, errors, messages);
            return self.finish(mirror, head, record).await;
        }
        let mut record = Record::new(Outcome::Healthy, from, started);
        record.counts = t.counts.clone();
        record.buckets =
            (!p.buckets.is_empty() || !removed.is_empty()).then(|| t.bucket_counts.clone());
        record.messages = t.messages.clone();
        record.applied = Some(head.to_string());
        let verdict = if t.errors.is_empty() {
            self.wait_health(&p, &t, Some(mirror), cancel).await?
        } else {
            Verdict::Unhealthy(t.errors.clone())
        };
        self.conclude(mirror, history, head, record, verdict, cancel)
            .await
    }

    /// A head that changes nothing of this environment (a push to another environment's folder)
    /// after a pinned commit would only repeat the pinned commit's failure: it is pinned too,
    /// with the same outcome, and nothing is applied.
    async fn same_as_pinned(
        &mut self,
        mirror: &Arc<Mirror>,
        history: &EnvHistory,
        head: Oid,
    ) -> Result<Option<Record>, ReconcileError> {
        let Some((last, record)) = history
            .records
            .iter()
            .max_by(|a, b| a.1.finished.cmp(&b.1.finished))
        else {
            return Ok(None);
        };
        let (Some(reason), Ok(last_oid)) = (&record.pinned, Oid::from_str(last)) else {
            return Ok(None);
        };
        if git(mirror, move |m| m.commit_info(last_oid)).await.is_err() {
            return Ok(None);
        }
        let folders = match self.prepare(mirror, head).await {
            Ok(p) => p.source_folders(&self.cfg.path),
            Err(_) => vec![self.cfg.path.clone()],
        };
        for folder in folders {
            if source::folder_changed(mirror, Some(last_oid), head, &folder).await? {
                return Ok(None);
            }
        }
        let mut same = record.clone();
        same.started = status::now_rfc3339();
        same.finished = status::now_rfc3339();
        same.rolling_back = false;
        same.reapplied.clear();
        same.drift.clear();
        same.pinned = Some(format!("same files as {last}, which is pinned: {reason}"));
        same.messages = vec![format!(
            "not applied: this environment's files are those of {last}"
        )];
        Ok(Some(same))
    }

    /// Records the verdict of `head`'s health, rolling back when it is unhealthy.
    async fn conclude(
        &mut self,
        mirror: &Arc<Mirror>,
        history: &EnvHistory,
        head: Oid,
        mut record: Record,
        verdict: Verdict,
        cancel: &CancellationToken,
    ) -> Result<Step, ReconcileError> {
        let env = self.cfg.name.clone();
        let problems = match verdict {
            Verdict::Healthy => {
                self.count_applied(mirror, head, &record).await;
                record.finished = status::now_rfc3339();
                return self.finish(mirror, head, record).await;
            }
            // Cut short by a shutdown, the wait is no verdict: record nothing (a note would
            // pin C, or roll it back, for a rollout that may just have needed more time).
            Verdict::Interrupted => {
                return Err(ReconcileError::Interrupted {
                    env,
                    commit: head.to_string(),
                });
            }
            Verdict::Superseded(newer) => {
                record.outcome = Outcome::Superseded;
                record
                    .messages
                    .push(format!("superseded by {newer} before its health was known"));
                record.finished = status::now_rfc3339();
                return self.finish(mirror, head, record).await;
            }
            Verdict::Unhealthy(problems) => problems,
        };
        record.errors = problems.clone();
        let base = existing(mirror, history.last_healthy.as_ref()).await;
        let can_roll_back =
            self.cfg.rollback == RollbackPolicy::Auto && base.is_some_and(|b| b != head);
        if !can_roll_back {
            record.outcome = Outcome::Unhealthy;
            let why = if base.is_none() {
                " with no healthy commit to roll back to"
            } else {
                " (rollback is off)"
            };
            record.pinned = Some(format!("unhealthy{why}: {}", summarize(&problems)));
            record.finished = status::now_rfc3339();
            return self.finish(mirror, head, record).await;
        }
        // Record the intent first: a crash from here on resumes the rollback instead of re-applying C.
        record.outcome = Outcome::Unhealthy;
        record.rolling_back = true;
        record.pinned = Some(format!("unhealthy, rolling back: {}", summarize(&problems)));
        record.finished = status::now_rfc3339();
        self.write(mirror, head, &record).await?;
        tracing::warn!(env = %env, commit = %head, problems = %summarize(&problems), "unhealthy, rolling back");
        self.finish_rollback(mirror, head, history, Some(record), cancel)
            .await?;
        Ok(Step::Recorded {
            commit: head.to_string(),
            outcome: Outcome::RolledBack,
        })
    }

    async fn count_applied(&self, mirror: &Arc<Mirror>, head: Oid, record: &Record) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        if let Ok(info) = git(mirror, move |m| m.commit_info(head)).await {
            metrics.last_healthy_commit(&self.cfg.name, info.time);
        }
        let c = &record.counts;
        metrics.applied_objects(&self.cfg.name, "create", c.created as u64);
        metrics.applied_objects(&self.cfg.name, "update", c.updated as u64);
        metrics.applied_objects(&self.cfg.name, "delete", c.deleted as u64);
    }

    /// Buckets of the `previous` commit's render that `p` no longer has.
    pub(super) async fn removed_buckets(
        &self,
        mirror: &Arc<Mirror>,
        previous: Option<Oid>,
        p: &Prepared,
    ) -> Result<Vec<BucketSpec>, ReconcileError> {
        let Some(previous) = previous.filter(|prev| *prev != p.commit) else {
            return Ok(Vec::new());
        };
        if self.s3.is_none() {
            return Ok(Vec::new());
        }
        // Usually the previous commit was prepared a moment ago: no second render.
        let cached = match (&self.prepared, &self.earlier_buckets) {
            (Some(c), _) if c.commit == previous => Some(&c.buckets),
            (_, Some((commit, buckets))) if *commit == previous => Some(buckets),
            _ => None,
        };
        if let Some(buckets) = cached {
            return Ok(buckets
                .iter()
                .filter(|(k, _)| !p.buckets.contains_key(*k))
                .map(|(_, spec)| spec.clone())
                .collect());
        }
        let path = &self.cfg.path;
        let before = match source::render_env(mirror, previous, path, &self.rendering, None).await {
            Ok(rendered) => rendered.state,
            Err(source::RenderFailure::Git(e)) => return Err(e.into()),
            Err(source::RenderFailure::Renderer(e)) => return Err(e.into()),
            // What no longer renders cannot be compared; nothing is deleted on its account.
            Err(source::RenderFailure::Invalid(_)) => return Ok(Vec::new()),
        };
        let keep: BTreeSet<_> = p.buckets.keys().collect();
        Ok(before
            .buckets()
            .filter(|m| !keep.contains(&m.key))
            .filter_map(|m| s3::parse_bucket(m).ok())
            .collect())
    }
}
