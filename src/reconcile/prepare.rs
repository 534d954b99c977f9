//! Stage `prepare`: a commit's render, resolved against the cluster's discovery into what the
//! planner compares (live identity and fingerprint per object) and parsed bucket specs.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use kube::core::ApiResource;

use super::decide::Wanted;
use super::record::render_errors;
use super::source::{self, Earlier, EnvRender, Kustomized, RenderFailure};
use super::{EnvWorker, ReconcileError};
use crate::confine::{self, Bounds, Placed};
use crate::git::{Mirror, Oid};
use crate::k8s::managed;
use crate::manifest::{DesiredState, Manifest, ObjectKey};
use crate::s3::{self, BucketSpec};
use crate::status::ObjectError;

/// One commit's desired state, ready to plan.
pub struct Prepared {
    pub commit: Oid,
    pub state: Arc<DesiredState>,
    /// Kubernetes objects whose kind the cluster serves, with `wanted` at the same index.
    pub manifests: Vec<Arc<Manifest>>,
    pub wanted: Vec<Wanted>,
    /// Objects of kinds the cluster does not serve yet (this commit's CRDs bring them).
    pub unresolved: Vec<Arc<Manifest>>,
    /// The kinds to watch.
    pub resources: Vec<ApiResource>,
    pub buckets: BTreeMap<ObjectKey, BucketSpec>,
    /// What a Kustomize render read and ran (none for a plain folder).
    pub kustomized: Option<Kustomized>,
}

impl Prepared {
    /// Every folder this render read: the environment's, a Kustomize build's bases, components
    /// and charts, and the buckets' object sources. A head that changes none of them renders
    /// the same.
    pub fn source_folders(&self, env_path: &str) -> Vec<String> {
        let mut folders = vec![env_path.to_string()];
        if let Some(k) = &self.kustomized {
            folders.extend(k.inputs.folders().map(|(dir, _)| dir.to_string()));
        }
        folders.extend(
            self.buckets
                .values()
                .filter_map(|b| b.objects.as_ref().map(|o| o.source.clone())),
        );
        folders
    }

    /// Keys (as written) of the unresolved objects, in live form where the namespace is known.
    pub fn unresolved_keys(&self, default_namespace: &str) -> HashSet<ObjectKey> {
        self.unresolved
            .iter()
            .map(|m| {
                let mut k = m.key.clone();
                if k.namespace.is_none() {
                    k.namespace = Some(default_namespace.to_string());
                }
                k
            })
            .collect()
    }
}

/// Why a commit cannot be prepared.
pub enum PrepareFailure {
    /// The content is wrong: reject the commit with these errors.
    Invalid(Vec<ObjectError>),
    /// Reading git or asking the cluster failed: retry later.
    Effect(ReconcileError),
}

impl From<ReconcileError> for PrepareFailure {
    fn from(e: ReconcileError) -> Self {
        PrepareFailure::Effect(e)
    }
}

impl EnvWorker {
    /// Renders and resolves `commit` (reusing the last one prepared when it is the same).
    pub(super) async fn prepare(
        &mut self,
        mirror: &Arc<Mirror>,
        commit: Oid,
    ) -> Result<Arc<Prepared>, PrepareFailure> {
        if let Some(p) = &self.prepared
            && p.commit == commit
        {
            return Ok(Arc::clone(p));
        }
        let rendered = match self.render(mirror, commit).await {
            Ok(rendered) => rendered,
            Err(RenderFailure::Git(e)) => return Err(PrepareFailure::Effect(e.into())),
            Err(RenderFailure::Renderer(e)) => return Err(PrepareFailure::Effect(e.into())),
            Err(RenderFailure::Invalid(errors)) => {
                if source::is_kustomize(mirror, commit, &self.cfg.path)
                    .await
                    .unwrap_or(false)
                {
                    let renderer = self.rendering.renderers.describe(false);
                    self.last_renderer = Some((commit, renderer));
                }
                return Err(PrepareFailure::Invalid(render_errors(&errors)));
            }
        };
        if let Some(k) = &rendered.kustomized {
            self.last_renderer = Some((commit, k.renderer.clone()));
        }
        let buckets = self.parse_buckets(&rendered.state)?;
        let mut prepared = self.resolve(commit, rendered.state, buckets).await?;
        prepared.kustomized = rendered.kustomized;
        let out_of_bounds = self.confine(&prepared);
        if !out_of_bounds.is_empty() {
            return Err(PrepareFailure::Invalid(out_of_bounds));
        }
        let prepared = Arc::new(prepared);
        if let Some(old) = self.prepared.replace(Arc::clone(&prepared)) {
            self.earlier_buckets = Some((old.commit, old.buckets.clone()));
        }
        Ok(prepared)
    }

    /// Renders `commit`, reusing what the last prepared commit read where it did not change.
    async fn render(&self, mirror: &Arc<Mirror>, commit: Oid) -> Result<EnvRender, RenderFailure> {
        let earlier = self.prepared.as_ref().map(|p| Earlier {
            commit: p.commit,
            state: &p.state,
            kustomized: p.kustomized.as_ref(),
        });
        source::render_env(mirror, commit, &self.cfg.path, &self.rendering, earlier).await
    }

    /// Stage `confine`: what of `p` is outside the environment's bounds (scope from discovery,
    /// or from the commit's own CRDs for kinds the cluster does not serve yet).
    fn confine(&self, p: &Prepared) -> Vec<ObjectError> {
        let mut placed: Vec<Placed> = p
            .manifests
            .iter()
            .zip(&p.wanted)
            .map(|(m, w)| Placed {
                manifest: m.as_ref(),
                namespace: w.key.namespace.as_deref(),
            })
            .collect();
        for m in &p.unresolved {
            let namespaced = confine::namespaced_by_crds(m, p.state.kube_objects());
            placed.push(Placed {
                manifest: m.as_ref(),
                namespace: namespaced
                    .then(|| m.key.namespace.as_deref().unwrap_or(&self.cfg.namespace)),
            });
        }
        placed.extend(p.state.buckets().map(|m| Placed {
            manifest: m,
            namespace: None,
        }));
        Bounds::new(&self.cfg).check(&placed)
    }

    fn parse_buckets(
        &self,
        state: &DesiredState,
    ) -> Result<BTreeMap<ObjectKey, BucketSpec>, PrepareFailure> {
        let mut errors = Vec::new();
        let mut specs = BTreeMap::new();
        for m in state.buckets() {
            match s3::parse_bucket(m) {
                Ok(spec) => {
                    specs.insert(m.key.clone(), spec);
                }
                Err(e) => errors.extend(render_errors(&e)),
            }
        }
        if !specs.is_empty() && self.s3.is_none() {
            errors.push(ObjectError {
                object: specs.keys().next().map(ToString::to_string).unwrap_or_default(),
                at: None,
                reason: "this environment has no s3 settings in the host config, so Buckets cannot be reconciled".into(),
            });
        }
        if state.kube_objects().next().is_some() && self.cluster.is_none() {
            errors.push(ObjectError {
                object: String::new(),
                at: Some(self.cfg.path.clone()),
                reason: "this environment has no kubernetes settings in the host config".into(),
            });
        }
        if errors.is_empty() {
            Ok(specs)
        } else {
            Err(PrepareFailure::Invalid(errors))
        }
    }

    /// Resolves every Kubernetes object against discovery: its live identity and fingerprint.
    async fn resolve(
        &self,
        commit: Oid,
        state: Arc<DesiredState>,
        buckets: BTreeMap<ObjectKey, BucketSpec>,
    ) -> Result<Prepared, ReconcileError> {
        let mut p = Prepared {
            commit,
            state: Arc::clone(&state),
            manifests: Vec::new(),
            wanted: Vec::new(),
            unresolved: Vec::new(),
            resources: Vec::new(),
            buckets,
            kustomized: None,
        };
        let Some(cluster) = &self.cluster else {
            return Ok(p);
        };
        let mut kinds = BTreeSet::new();
        for m in state.objects.values().filter(|m| !m.key.is_bucket()) {
            match cluster.target(m).await {
                Ok(target) => {
                    let body = cluster.desired_object(m, &target);
                    p.wanted.push(Wanted {
                        key: ObjectKey {
                            group: m.key.group.clone(),
                            kind: m.key.kind.clone(),
                            namespace: target.namespace.clone(),
                            name: target.name.clone(),
                        },
                        fingerprint: managed::desired_fingerprint(&body),
                    });
                    p.manifests.push(Arc::clone(m));
                    if kinds.insert((target.resource.group.clone(), target.resource.kind.clone())) {
                        p.resources.push(target.resource);
                    }
                }
                Err(crate::k8s::KubeError::UnknownKind { .. }) => p.unresolved.push(Arc::clone(m)),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(p)
    }
}
