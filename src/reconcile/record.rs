//! Stage `record`: outcomes written as note sections (merged with other environments' and
//! hosts' sections, pushed; kept locally when the remote is unreachable).

use std::sync::Arc;

use super::source::git;
use super::{EnvWorker, ReconcileError, Step, Trust};
use crate::git::{Mirror, Oid};
use crate::k8s::apply::ObjectFailure;
use crate::manifest::RenderError;
use crate::status::{self, ObjectError, Outcome, Record};

pub(super) fn render_errors(errors: &[RenderError]) -> Vec<ObjectError> {
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

pub(super) fn failure_errors(failures: &[ObjectFailure]) -> Vec<ObjectError> {
    failures
        .iter()
        .map(|f| ObjectError {
            object: f.key.to_string(),
            at: Some(f.at.clone()),
            reason: f.error.reason(),
        })
        .collect()
}

pub(super) fn summarize(errors: &[ObjectError]) -> String {
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

/// A `rejected` record: nothing of the commit was applied, and it is pinned.
pub(super) fn rejected(
    from: Option<String>,
    started: String,
    errors: Vec<ObjectError>,
    messages: Vec<String>,
) -> Record {
    let mut record = Record::new(Outcome::Rejected, from, started);
    record.pinned = Some(format!("rejected: {}", summarize(&errors)));
    record.errors = errors;
    record.messages = messages;
    record
}

impl EnvWorker {
    /// Writes our section of `commit`'s note.
    pub(super) async fn write(
        &self,
        mirror: &Arc<Mirror>,
        commit: Oid,
        record: &Record,
    ) -> Result<(), ReconcileError> {
        let env = self.cfg.name.clone();
        let mut record = record.clone();
        if record.renderer.is_none() {
            record.renderer = self.renderer_of(commit);
        }
        self.trust
            .notary
            .sign_record(&commit.to_string(), &env, &mut record)?;
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

    /// Edits our section of `commit`'s note in place (no-op when there is none).
    pub(super) async fn edit(
        &self,
        mirror: &Arc<Mirror>,
        commit: Oid,
        f: impl Fn(&mut Record) + Send + Sync + 'static,
    ) -> Result<(), ReconcileError> {
        let env = self.cfg.name.clone();
        let trust = Arc::clone(&self.trust);
        let result = git(mirror, move |m| {
            m.update_note(commit, &|existing| {
                edited(existing, commit, &env, &trust, &f)
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

    /// Logs and writes the final record of `head`.
    pub(super) async fn finish(
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
                tracing::warn!(env = %self.cfg.name, commit = %head, outcome = %outcome, errors = record.errors.len(), first = %summarize(&record.errors), "not applied as it is")
            }
        }
        self.write(mirror, head, &record).await?;
        Ok(Step::Recorded {
            commit: head.to_string(),
            outcome: record.outcome,
        })
    }
}

/// `env`'s trusted section of `existing` edited by `f` and signed again; `None` when there is
/// none (or, unreachably, when the key probed at start cannot sign: the note stays as it is).
fn edited(
    existing: Option<&str>,
    commit: Oid,
    env: &str,
    trust: &Trust,
    f: &dyn Fn(&mut Record),
) -> Option<String> {
    match status::edit_section(existing, &commit.to_string(), env, &trust.notary, f) {
        Ok(text) => text,
        Err(e) => {
            tracing::error!(env, commit = %commit, error = %e, "status record left unchanged");
            None
        }
    }
}

/// Clears the pin of `commit` for `env` so the daemon tries it again (only a trusted record).
pub async fn retry(
    mirror: &Arc<Mirror>,
    trust: Arc<Trust>,
    env: &str,
    commit: Oid,
) -> Result<bool, ReconcileError> {
    let env = env.to_string();
    let found = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let found2 = Arc::clone(&found);
    git(mirror, move |m| {
        m.update_note(
            commit,
            &|existing| match edited(existing, commit, &env, &trust, &|r| {
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
