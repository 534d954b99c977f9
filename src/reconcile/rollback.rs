//! Stage `rollback`: brings the cluster back to the last healthy commit A (planned against what
//! is live, so whatever C changed, created or deleted is put back, buckets and their objects
//! included), waits for health and records both notes. Also the operator's manual rollback.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::commit::existing;
use super::health::Verdict;
use super::prepare::{PrepareFailure, Prepared};
use super::record::summarize;
use super::source::git;
use super::{EnvWorker, ReconcileError, Step};
use crate::git::{Mirror, Oid};
use crate::status::{self, EnvHistory, ObjectError, Outcome, Reapplied, Record};

impl EnvWorker {
    /// Converges to `p` (pruning what it does not have) and waits for health.
    async fn restore(
        &mut self,
        mirror: &Arc<Mirror>,
        p: &Prepared,
        from: Option<Oid>,
        cancel: &CancellationToken,
    ) -> Result<Verdict, ReconcileError> {
        let plan = self.plan(p, self.cfg.prune).await?;
        let removed = self.removed_buckets(mirror, from, p).await?;
        let sending = super::first::Sending::Validated { force: false };
        let t = self.converge(mirror, p, &plan, sending, &removed).await?;
        if !t.errors.is_empty() {
            return Ok(Verdict::Unhealthy(t.errors));
        }
        self.wait_health(p, &t, None, cancel).await
    }

    /// Rolls the environment back from `bad` (C) to the last healthy commit and records both.
    pub(super) async fn finish_rollback(
        &mut self,
        mirror: &Arc<Mirror>,
        bad: Oid,
        history: &EnvHistory,
        record: Option<Record>,
        cancel: &CancellationToken,
    ) -> Result<(), ReconcileError> {
        let env = self.cfg.name.clone();
        let base = existing(mirror, history.last_healthy.as_ref()).await;
        let record = record.unwrap_or_else(|| {
            Record::new(
                Outcome::Unhealthy,
                base.map(|b| b.to_string()),
                status::now_rfc3339(),
            )
        });
        let failed = |mut record: Record, why: String| {
            record.outcome = Outcome::RollbackFailed;
            record.rolling_back = false;
            record.pinned = Some(why);
            record.finished = status::now_rfc3339();
            record
        };
        let Some(base) = base else {
            tracing::error!(env = %env, commit = %bad, "rollback impossible: no healthy commit to return to");
            let record = failed(
                record,
                "rollback impossible: no healthy commit to return to".into(),
            );
            return self.write(mirror, bad, &record).await;
        };
        // Verified when it was applied; checked again because the signers file may have changed.
        if let Some(error) = self.verify_commit(mirror, base).await? {
            let why = format!("rollback failed: {base}: {}", error.reason);
            return self.write(mirror, bad, &failed(record, why)).await;
        }
        let p = match self.prepare(mirror, base).await {
            Ok(p) => p,
            Err(PrepareFailure::Effect(e)) => return Err(e),
            Err(PrepareFailure::Invalid(errors)) => {
                let why = format!(
                    "rollback failed: {base} no longer renders: {}",
                    summarize(&errors)
                );
                tracing::error!(env = %env, commit = %bad, to = %base, "rollback target no longer renders");
                return self.write(mirror, bad, &failed(record, why)).await;
            }
        };
        let verdict = self.restore(mirror, &p, Some(bad), cancel).await?;
        let problems = match verdict {
            Verdict::Healthy => Vec::new(),
            Verdict::Unhealthy(problems) => problems,
            // The note still says `rolling_back`, so the next start resumes this.
            Verdict::Interrupted | Verdict::Superseded(_) => {
                return Err(ReconcileError::Interrupted {
                    env,
                    commit: bad.to_string(),
                });
            }
        };
        self.record_rollback(mirror, bad, base, record, &problems)
            .await
    }

    async fn record_rollback(
        &mut self,
        mirror: &Arc<Mirror>,
        bad: Oid,
        base: Oid,
        mut record: Record,
        problems: &[ObjectError],
    ) -> Result<(), ReconcileError> {
        let env = self.cfg.name.clone();
        let healthy = problems.is_empty();
        if let Some(metrics) = &self.metrics {
            metrics.rollback(&env);
        }
        record.rolling_back = false;
        record.finished = status::now_rfc3339();
        record.applied = Some(base.to_string());
        if healthy {
            record.outcome = Outcome::RolledBack;
            record.pinned = Some(format!("rolled back: {}", summarize(&record.errors)));
            tracing::warn!(env = %env, commit = %bad, to = %base, "rolled back");
        } else {
            record.outcome = Outcome::RollbackFailed;
            record.pinned = Some(format!("rollback failed: {}", summarize(problems)));
            record.messages.push(format!(
                "rollback to {base} unhealthy: {}",
                summarize(problems)
            ));
            tracing::error!(env = %env, commit = %bad, to = %base, problems = %summarize(problems), "rollback is unhealthy; not changing this environment until a new commit arrives");
        }
        self.write(mirror, bad, &record).await?;
        let at = status::now_rfc3339();
        let because = bad.to_string();
        self.edit(mirror, base, move |r| {
            r.reapplied.push(Reapplied {
                at: at.clone(),
                because: because.clone(),
                healthy,
            })
        })
        .await
    }

    /// Re-applies an older healthy commit at an operator's request and pins the newer ones.
    pub async fn manual_rollback(
        &mut self,
        mirror: &Arc<Mirror>,
        to: Oid,
        cancel: &CancellationToken,
    ) -> Result<Step, ReconcileError> {
        let history = self.history(mirror).await?;
        self.inventory().await?;
        let to_s = to.to_string();
        let env = self.cfg.name.clone();
        let setup = |message: String| ReconcileError::Setup {
            env: env.clone(),
            message,
        };
        if history
            .records
            .get(&to_s)
            .and_then(|r| r.healthy_since())
            .is_none()
        {
            return Err(setup(format!(
                "{to_s} was never healthy in this environment; refusing to roll back to it"
            )));
        }
        let current = existing(mirror, history.last_applied.as_ref()).await;
        if let Some(error) = self.verify_commit(mirror, to).await? {
            return Err(setup(format!(
                "refusing to roll back to {to_s}: {}",
                error.reason
            )));
        }
        let p = match self.prepare(mirror, to).await {
            Ok(p) => p,
            Err(PrepareFailure::Effect(e)) => return Err(e),
            Err(PrepareFailure::Invalid(errs)) => {
                return Err(setup(format!("{} render errors in {to_s}", errs.len())));
            }
        };
        self.pin_newer(mirror, to).await?;
        let verdict = self.restore(mirror, &p, current, cancel).await?;
        let healthy = matches!(verdict, Verdict::Healthy);
        let at = status::now_rfc3339();
        let because = format!(
            "manual rollback from {}",
            current.map(|c| c.to_string()).unwrap_or_else(|| "-".into())
        );
        self.edit(mirror, to, move |r| {
            r.reapplied.push(Reapplied {
                at: at.clone(),
                because: because.clone(),
                healthy,
            })
        })
        .await?;
        Ok(Step::Recorded {
            commit: to_s,
            outcome: if healthy {
                Outcome::Healthy
            } else {
                Outcome::RollbackFailed
            },
        })
    }

    /// Pins every commit after `to` on the branch, so the daemon does not move forward again.
    async fn pin_newer(&self, mirror: &Arc<Mirror>, to: Oid) -> Result<(), ReconcileError> {
        let head = git(mirror, |m| m.branch_head()).await?;
        let newer = git(mirror, move |m| m.commits_between(Some(to), head, 10_000)).await?;
        for c in &newer {
            let reason = format!("pinned by manual rollback to {to}");
            let env = self.cfg.name.clone();
            let id = c.id;
            let trust = std::sync::Arc::clone(&self.trust);
            git(mirror, move |m| {
                m.update_note(id, &|existing| {
                    let commit = id.to_string();
                    match status::pin_section(existing, &commit, &env, &reason, &trust.notary) {
                        Ok(text) => text,
                        // Unreachable: the key was probed at start. The note stays as it is.
                        Err(e) => {
                            tracing::error!(env = %env, commit = %id, error = %e, "commit not pinned");
                            existing.unwrap_or_default().to_string()
                        }
                    }
                })
            })
            .await?;
        }
        Ok(())
    }
}
