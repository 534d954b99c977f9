//! Stage `record`: outcomes written as note sections (merged with other environments' and
//! hosts' sections, pushed; kept locally when the remote is unreachable).

use std::sync::Arc;

use super::source::git;
use super::{EnvWorker, ReconcileError, Step, Trust};
use crate::config::EnvironmentConfig;
use crate::git::{Mirror, Oid};
use crate::k8s::apply::ObjectFailure;
use crate::manifest::RenderError;
use crate::preview::redact::{is_sensitive_name, scrub};
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

/// Removes quoted values from what a record says about sensitive objects (Secrets and the
/// environment's `sensitive:` matchers on the effective namespace), as previews do: API servers
/// and webhooks quote offending values in their messages.
pub(super) fn scrub_record(record: &mut Record, cfg: &EnvironmentConfig) {
    let mut replaced = Vec::new();
    for e in &mut record.errors {
        if is_sensitive_name(&e.object, &cfg.sensitive, &cfg.namespace) {
            let clean = scrub(&e.reason);
            if clean != e.reason {
                replaced.push((std::mem::replace(&mut e.reason, clean.clone()), clean));
            }
        }
    }
    for (raw, clean) in &replaced {
        if let Some(p) = &mut record.pinned {
            *p = p.replace(raw.as_str(), clean);
        }
        for m in &mut record.messages {
            *m = m.replace(raw.as_str(), clean);
        }
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
        scrub_record(&mut record, &self.cfg);
        if record.renderer.is_none() {
            record.renderer = self.renderer_of(commit);
        }
        self.trust
            .notary
            .sign_record(&commit.to_string(), &env, &mut record)?;
        self.fence_remote().await?;
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
        self.fence_remote().await?;
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
        mut record: Record,
    ) -> Result<Step, ReconcileError> {
        scrub_record(&mut record, &self.cfg);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SensitiveMatcher;

    #[test]
    fn notes_lose_quoted_values_of_sensitive_objects() {
        let text = "name: dev\npath: e\nnamespace: apps\nsensitive: [{kind: ConfigMap, namespace: apps}]\n";
        let cfg: EnvironmentConfig = serde_saphyr::from_str(text).unwrap();
        assert_eq!(
            cfg.sensitive[0],
            SensitiveMatcher {
                kind: "ConfigMap".into(),
                name: None,
                namespace: Some("apps".into())
            }
        );
        let webhook = "admission webhook denied: value \"hunter2\" is not allowed".to_string();
        let error = |object: &str| ObjectError {
            object: object.into(),
            at: Some("e/a.yaml:1".into()),
            reason: webhook.clone(),
        };
        let mut record = rejected(
            None,
            "2026-01-01T00:00:00Z".into(),
            vec![
                error("ConfigMap creds"),
                error("ConfigMap web/public"),
                error("Secret web/s"),
            ],
            vec![],
        );
        scrub_record(&mut record, &cfg);
        assert_eq!(
            record.errors[0].reason,
            "admission webhook denied: value \"…\" is not allowed"
        );
        assert_eq!(
            record.errors[1].reason, webhook,
            "not sensitive: kept as the server said it"
        );
        assert!(!record.errors[2].reason.contains("hunter2"));
        let pinned = record.pinned.unwrap();
        assert!(!pinned.contains("hunter2"), "{pinned}");
    }
}
