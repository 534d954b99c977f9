//! Stage `validate`: a server-side dry-run of everything a pass will send; all or nothing.
//! Objects that need this commit's Namespaces, CRDs or Roles first are dry-run after those are
//! applied ("bootstrap"); if they fail, the bootstrap is undone: created objects are deleted and
//! updated ones are put back as the last applied commit had them.

use std::sync::Arc;

use super::apply::clone_error;
use super::decide::LivePlan;
use super::first::Sending;
use super::prepare::Prepared;
use super::record::failure_errors;
use super::source;
use super::{EnvWorker, ReconcileError};
use crate::git::{Mirror, Oid};
use crate::k8s::KubeError;
use crate::k8s::apply::{self as kapply, ObjectFailure};
use crate::manifest::Manifest;
use crate::status::ObjectError;

/// The result of validation.
pub(super) enum Validated {
    Valid,
    /// The content is wrong; `messages` says what an undone bootstrap left behind, if anything.
    Rejected {
        errors: Vec<ObjectError>,
        messages: Vec<String>,
    },
}

/// How long a 403 waits before it is asked again (see [`EnvWorker::validate`]).
const FORBIDDEN_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

fn transient(failures: &[ObjectFailure]) -> Option<ReconcileError> {
    kapply::first_transient(failures).map(|f| ReconcileError::Kube(clone_error(&f.error)))
}

impl EnvWorker {
    /// Plans every bucket (reads only) and dry-runs what `plan` sends for `p`. `previous` is the
    /// last applied commit (to undo a bootstrap). Transient API failures are errors (the pass is
    /// retried), never rejections.
    pub(super) async fn validate(
        &self,
        mirror: &Arc<Mirror>,
        p: &Prepared,
        plan: &LivePlan,
        previous: Option<Oid>,
        sending: Sending,
    ) -> Result<Validated, ReconcileError> {
        let errors = self.validate_buckets(p).await?;
        if !errors.is_empty() {
            return Ok(Validated::Rejected {
                errors,
                messages: Vec::new(),
            });
        }
        // A first apply's creates are checked by the creates themselves (`first`).
        if sending == Sending::Creating {
            return Ok(Validated::Valid);
        }
        let Some(cluster) = &self.cluster else {
            return Ok(Validated::Valid);
        };
        let concurrency = self.cfg.apply_concurrency;
        let mut changed: Vec<&Manifest> = plan
            .create
            .iter()
            .chain(&plan.update)
            .filter_map(|i| p.manifests.get(*i).map(|m| m.as_ref()))
            .collect();
        changed.extend(p.unresolved.iter().map(|m| m.as_ref()));
        if changed.is_empty() {
            return Ok(Validated::Valid);
        }
        let all: Vec<&Manifest> = p.state.kube_objects().collect();
        let mut v = kapply::validate(cluster, &changed, &all, concurrency).await;
        if let Some(e) = transient(&v.failures) {
            return Err(e);
        }
        self.recheck_forbidden(&changed, &mut v.failures).await?;
        // A create of something that exists but is not ours: never taken over silently.
        let creates: Vec<&Manifest> = plan
            .create
            .iter()
            .filter_map(|i| p.manifests.get(*i).map(|m| m.as_ref()))
            .filter(|m| v.existing.contains(&m.key))
            .collect();
        let not_owned = kapply::not_owned_existing(cluster, &creates, concurrency).await;
        if let Some(e) = transient(&not_owned) {
            return Err(e);
        }
        v.failures.extend(not_owned);
        if !v.failures.is_empty() {
            return Ok(Validated::Rejected {
                errors: failure_errors(&v.failures),
                messages: Vec::new(),
            });
        }
        if v.deferred.is_empty() {
            return Ok(Validated::Valid);
        }
        let deferred: Vec<&Manifest> = v.deferred.clone();
        self.bootstrap(mirror, p, plan, &changed, &deferred, previous)
            .await
    }

    /// A restarted apiserver answers 403 for a moment, until its authorizer has loaded the RBAC
    /// rules: a refusal is only believed when it is still there a little later.
    async fn recheck_forbidden(
        &self,
        changed: &[&Manifest],
        failures: &mut Vec<ObjectFailure>,
    ) -> Result<(), ReconcileError> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        let forbidden = |f: &ObjectFailure| matches!(f.error, KubeError::Api { code: 403, .. });
        if !failures.iter().any(forbidden) {
            return Ok(());
        }
        tokio::time::sleep(FORBIDDEN_RECHECK).await;
        let refused: Vec<&Manifest> = changed
            .iter()
            .copied()
            .filter(|m| failures.iter().any(|f| f.key == m.key && forbidden(f)))
            .collect();
        let again = kapply::dry_run_all(cluster, &refused, self.cfg.apply_concurrency).await;
        if let Some(e) = transient(&again) {
            return Err(e);
        }
        failures.retain(|f| !forbidden(f));
        failures.extend(again);
        failures.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(())
    }

    /// Applies this commit's Namespaces, CRDs and Roles, then dry-runs the deferred objects.
    async fn bootstrap(
        &self,
        mirror: &Arc<Mirror>,
        p: &Prepared,
        plan: &LivePlan,
        changed: &[&Manifest],
        deferred: &[&Manifest],
        previous: Option<Oid>,
    ) -> Result<Validated, ReconcileError> {
        let Some(cluster) = &self.cluster else {
            return Ok(Validated::Valid);
        };
        let concurrency = self.cfg.apply_concurrency;
        let bootstrap: Vec<&Manifest> = changed
            .iter()
            .copied()
            .filter(|m| kapply::is_bootstrap(m))
            .collect();
        self.fence()?;
        let (_, mut failures) = kapply::apply_all(cluster, &bootstrap, concurrency, false).await;
        if failures.is_empty() {
            failures = kapply::dry_run_all(cluster, deferred, concurrency).await;
        }
        if failures.is_empty() {
            return Ok(Validated::Valid);
        }
        let messages = self
            .undo_bootstrap(mirror, p, plan, &bootstrap, previous)
            .await;
        if let Some(e) = transient(&failures) {
            return Err(e);
        }
        Ok(Validated::Rejected {
            errors: failure_errors(&failures),
            messages,
        })
    }

    /// Deletes the bootstrap objects this attempt created and re-applies the previous version
    /// of those it updated. Returns what could not be undone.
    async fn undo_bootstrap(
        &self,
        mirror: &Arc<Mirror>,
        p: &Prepared,
        plan: &LivePlan,
        bootstrap: &[&Manifest],
        previous: Option<Oid>,
    ) -> Vec<String> {
        let Some(cluster) = &self.cluster else {
            return Vec::new();
        };
        let concurrency = self.cfg.apply_concurrency;
        let created: Vec<&Manifest> = plan
            .create
            .iter()
            .filter_map(|i| p.manifests.get(*i).map(|m| m.as_ref()))
            .chain(p.unresolved.iter().map(|m| m.as_ref()))
            .filter(|m| kapply::is_bootstrap(m))
            .collect();
        let mut messages = Vec::new();
        let d = kapply::delete_all(cluster, &created, concurrency).await;
        for f in &d.failures {
            messages.push(format!(
                "{}: not deleted again: {}",
                f.key,
                f.error.reason()
            ));
        }
        let updated: Vec<&Manifest> = bootstrap
            .iter()
            .copied()
            .filter(|m| !created.iter().any(|c| c.key == m.key))
            .collect();
        if updated.is_empty() {
            return messages;
        }
        let restored = match previous {
            Some(prev) => source::render_env(mirror, prev, &self.cfg.path, &self.rendering, None)
                .await
                .ok()
                .map(|r| r.state),
            None => None,
        };
        let Some(restored) = restored else {
            for m in &updated {
                messages.push(format!(
                    "{}: updated for validation and not restored: no earlier render to restore",
                    m.key
                ));
            }
            return messages;
        };
        let olds: Vec<&Manifest> = updated
            .iter()
            .filter_map(|m| restored.objects.get(&m.key).map(|o| o.as_ref()))
            .collect();
        let (_, failures) = kapply::apply_all(cluster, &olds, concurrency, false).await;
        for f in &failures {
            messages.push(format!("{}: not restored: {}", f.key, f.error.reason()));
        }
        messages
    }
}
