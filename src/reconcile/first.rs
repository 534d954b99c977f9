//! A first apply (nothing applied by this instance yet, as when a cluster is rebuilt from git)
//! sends each object once: the objects are created by their server-side apply directly, not
//! dry-run first (a create is atomic). All or nothing still holds: if any object is refused, the
//! objects not sent yet are dry-run so the note lists every error, everything this pass created is
//! deleted again, and the commit is rejected. Later commits (updates of live objects) keep the
//! separate dry-run: an update that fails half-way cannot be taken back exactly.

use super::EnvWorker;
use super::apply::Transition;
use super::decide::LivePlan;
use super::prepare::Prepared;
use super::record::failure_errors;
use crate::git::Oid;
use crate::k8s::apply as kapply;
use crate::manifest::Manifest;
use crate::status::ObjectError;

/// How a pass sends its objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sending {
    /// Validated by a dry-run before; `force` takes fields back from other managers.
    Validated { force: bool },
    /// Created without a dry-run; undone as a whole when anything fails.
    Creating,
}

impl EnvWorker {
    /// Whether this pass creates without a dry-run: nothing of this environment was applied by
    /// this instance yet, and every change is a create of a kind the cluster serves.
    pub(super) fn sending(&self, p: &Prepared, plan: &LivePlan, previous: Option<Oid>) -> Sending {
        let first = previous.is_none()
            && plan.update.is_empty()
            && plan.delete.is_empty()
            && p.unresolved.is_empty()
            && !plan.create.is_empty();
        if first && self.cluster.is_some() {
            Sending::Creating
        } else {
            Sending::Validated { force: false }
        }
    }

    /// After a failed create pass: dry-runs what was not sent (for the full list of errors) and
    /// deletes what was created. Returns the errors and messages of the rejection.
    pub(super) async fn undo_creates(
        &mut self,
        p: &Prepared,
        plan: &LivePlan,
        t: &Transition,
    ) -> (Vec<ObjectError>, Vec<String>) {
        let Some(cluster) = &self.cluster else {
            return (t.errors.clone(), t.messages.clone());
        };
        let concurrency = self.cfg.apply_concurrency;
        let creates: Vec<&Manifest> = plan
            .create
            .iter()
            .filter_map(|i| p.manifests.get(*i).map(|m| m.as_ref()))
            .collect();
        let failed: Vec<&str> = t.errors.iter().map(|e| e.object.as_str()).collect();
        let unsent: Vec<&Manifest> = creates
            .iter()
            .copied()
            .filter(|m| !t.sent.contains(&m.key) && !failed.contains(&m.key.to_string().as_str()))
            .collect();
        let all: Vec<&Manifest> = p.state.kube_objects().collect();
        // Objects waiting for a Namespace of this commit that was never created stay unchecked.
        let more = kapply::validate(cluster, &unsent, &all, concurrency).await;
        let sent: Vec<&Manifest> = creates
            .iter()
            .copied()
            .filter(|m| t.sent.contains(&m.key))
            .collect();
        let deleted = kapply::delete_all(cluster, &sent, concurrency).await;
        let mut messages = vec![format!(
            "first apply refused: {} objects created by this pass were deleted again",
            deleted.deleted.len()
        )];
        for f in &deleted.failures {
            messages.push(format!(
                "{}: not deleted again: {}",
                f.key,
                f.error.reason()
            ));
        }
        for key in t.applied.keys() {
            self.synced.remove(key);
        }
        let mut errors = t.errors.clone();
        errors.extend(failure_errors(
            &more
                .failures
                .into_iter()
                .filter(|f| !f.error.is_transient())
                .collect::<Vec<_>>(),
        ));
        errors.sort_by(|a, b| a.object.cmp(&b.object));
        (errors, messages)
    }
}
