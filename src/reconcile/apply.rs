//! Stage `apply`: sends exactly what differs from the live state (creates and updates in
//! dependency order), prunes owned objects no longer desired, and syncs buckets.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::decide::{self, LivePlan, LiveView};
use super::first::Sending;
use super::prepare::Prepared;
use super::record::failure_errors;
use super::{EnvWorker, ReconcileError};
use crate::git::Mirror;
use crate::k8s::apply as kapply;
use crate::k8s::live::LiveCache;
use crate::manifest::{Manifest, ObjectKey};
use crate::status::{Counts, ObjectError};

impl LiveView for LiveCache {
    fn managed(&self, key: &ObjectKey) -> Option<Option<u64>> {
        self.get(key).map(|o| o.managed)
    }
    fn prunable(&self) -> Vec<(ObjectKey, String)> {
        LiveCache::prunable(self)
    }
}

/// What applying a plan did.
#[derive(Default)]
pub(super) struct Transition {
    /// Kubernetes objects; buckets are counted apart.
    pub counts: Counts,
    pub bucket_counts: Counts,
    /// Content errors (refusals); transient ones end the pass with an error instead.
    pub errors: Vec<ObjectError>,
    pub messages: Vec<String>,
    /// Live keys applied, with what their health wait must see.
    pub applied: HashMap<ObjectKey, crate::k8s::live::Awaited>,
    /// Manifest keys the server accepted.
    pub sent: BTreeSet<ObjectKey>,
    /// Creating without a dry-run, an object was refused: the pass is to be undone.
    pub refused: bool,
}

impl EnvWorker {
    /// Compares `p` with the live cache (`prune`: also list owned objects to delete).
    pub(super) async fn plan(
        &mut self,
        p: &Prepared,
        prune: bool,
    ) -> Result<LivePlan, ReconcileError> {
        let Some(live) = &self.live else {
            return Ok(LivePlan::default());
        };
        live.ensure(&p.resources).await?;
        let unknown = p.unresolved_keys(&self.cfg.namespace);
        let mut plan = decide::plan_live(&p.wanted, live, &self.synced, prune, &unknown);
        self.confirm_updates(p, &mut plan).await?;
        Ok(plan)
    }

    /// Fingerprints differ where the server added defaults inside fields gitopsd owns as a whole
    /// (or normalised a value). Such an object is read once, compared field by field, and, if
    /// it already says what git says, remembered as in sync instead of being sent again.
    async fn confirm_updates(
        &mut self,
        p: &Prepared,
        plan: &mut LivePlan,
    ) -> Result<(), ReconcileError> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        let mut still = Vec::new();
        for &i in &plan.update {
            let (Some(m), Some(w)) = (p.manifests.get(i), p.wanted.get(i)) else {
                continue;
            };
            let confirmed = match cluster.get(m).await {
                Ok(Some(obj)) => {
                    let target = cluster.target(m).await?;
                    let live = serde_json::to_value(&obj).unwrap_or_default();
                    let desired = cluster.desired_object(m, &target);
                    crate::k8s::managed::in_sync(&live, &desired, crate::k8s::FIELD_MANAGER)
                        .then(|| {
                            crate::k8s::managed::live_fingerprint(&live, crate::k8s::FIELD_MANAGER)
                        })
                        .flatten()
                }
                Ok(None) => None,
                Err(e) if e.is_transient() => return Err(e.into()),
                Err(_) => None,
            };
            match confirmed {
                Some(fp) => {
                    self.synced.insert(w.key.clone(), (w.fingerprint, fp));
                    plan.unchanged += 1;
                }
                None => still.push(i),
            }
        }
        plan.update = still;
        Ok(())
    }

    /// Applies `plan` for `p` as `sending` says, prunes, syncs buckets and deletes
    /// `removed_buckets`.
    pub(super) async fn converge(
        &mut self,
        mirror: &Arc<Mirror>,
        p: &Prepared,
        plan: &LivePlan,
        sending: Sending,
        removed_buckets: &[crate::s3::BucketSpec],
    ) -> Result<Transition, ReconcileError> {
        let mut t = Transition {
            counts: Counts {
                unchanged: plan.unchanged,
                ..Counts::default()
            },
            ..Transition::default()
        };
        if self.cluster.is_some() {
            self.fence()?;
            self.apply_objects(p, plan, sending, &mut t).await?;
            if t.errors.is_empty() {
                self.fence()?;
                self.prune(plan, &mut t).await?;
            }
        }
        if t.errors.is_empty() {
            self.fence()?;
            self.sync_buckets(mirror, p, &mut t).await?;
        }
        if t.errors.is_empty() {
            self.fence()?;
            self.delete_buckets(removed_buckets, &mut t).await?;
        }
        Ok(t)
    }

    async fn apply_objects(
        &mut self,
        p: &Prepared,
        plan: &LivePlan,
        sending: Sending,
        t: &mut Transition,
    ) -> Result<(), ReconcileError> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        let created: HashSet<usize> = plan.create.iter().copied().collect();
        let mut to_apply: Vec<&Manifest> = plan
            .create
            .iter()
            .chain(&plan.update)
            .filter_map(|i| p.manifests.get(*i).map(|m| m.as_ref()))
            .collect();
        to_apply.extend(p.unresolved.iter().map(|m| m.as_ref()));
        if to_apply.is_empty() {
            return Ok(());
        }
        let concurrency = self.cfg.apply_concurrency;
        let (applied, failures) = match sending {
            Sending::Validated { force } => {
                kapply::apply_all(cluster, &to_apply, concurrency, force).await
            }
            Sending::Creating => kapply::create_all(cluster, &to_apply, concurrency).await,
        };
        t.sent.extend(applied.iter().map(|a| a.key.clone()));
        t.refused = sending == Sending::Creating && !failures.is_empty();
        let index: HashMap<&ObjectKey, usize> = p
            .manifests
            .iter()
            .enumerate()
            .map(|(i, m)| (&m.key, i))
            .collect();
        for a in &applied {
            let Some(&i) = index.get(&a.key) else {
                // An object of a kind this commit introduced: created.
                t.counts.created += 1;
                continue;
            };
            let Some(w) = p.wanted.get(i) else { continue };
            if created.contains(&i) {
                t.counts.created += 1;
            } else {
                t.counts.updated += 1;
            }
            if let Some(fp) = a.managed {
                self.synced.insert(w.key.clone(), (w.fingerprint, fp));
            }
            let awaited = crate::k8s::live::Awaited {
                min_generation: if a.healthy { 0 } else { a.generation.max(1) },
            };
            t.applied.insert(w.key.clone(), awaited);
        }
        if !p.unresolved.is_empty() {
            // New kinds exist now: resolve them on the next pass (and watch them).
            cluster.forget_kinds().await;
            self.prepared = None;
        }
        if let Some(f) = kapply::first_transient(&failures) {
            return Err(ReconcileError::Kube(clone_error(&f.error)));
        }
        t.errors.extend(failure_errors(&failures));
        Ok(())
    }

    async fn prune(&mut self, plan: &LivePlan, t: &mut Transition) -> Result<(), ReconcileError> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        if plan.delete.is_empty() {
            return Ok(());
        }
        let manifests: Vec<Manifest> = plan
            .delete
            .iter()
            .map(|(k, v)| crate::manifest::live_stand_in(k, v))
            .collect();
        let refs: Vec<&Manifest> = manifests.iter().collect();
        let d = kapply::delete_all(cluster, &refs, self.cfg.apply_concurrency).await;
        t.counts.deleted += d.deleted.len();
        for key in &d.deleted {
            self.synced.remove(key);
        }
        for key in d.not_owned {
            t.messages.push(format!(
                "{key} was not deleted: it is not owned by this gitopsd instance for this environment"
            ));
        }
        if let Some(f) = kapply::first_transient(&d.failures) {
            return Err(ReconcileError::Kube(clone_error(&f.error)));
        }
        t.errors.extend(failure_errors(&d.failures));
        Ok(())
    }
}

/// A copy of a Kubernetes error (they hold no sources, so nothing is lost).
pub(super) fn clone_error(e: &crate::k8s::KubeError) -> crate::k8s::KubeError {
    use crate::k8s::KubeError;
    match e {
        KubeError::Api {
            object,
            verb,
            code,
            reason,
            message,
        } => KubeError::Api {
            object: object.clone(),
            verb,
            code: *code,
            reason: reason.clone(),
            message: message.clone(),
        },
        other => KubeError::Transport {
            object: String::new(),
            verb: "apply",
            message: other.to_string(),
        },
    }
}
