//! The per-environment worker. Each pass is a pipeline of stages with typed results:
//!
//! ```text
//! decide (pure) ─▶ prepare(C) ─▶ plan(live→C) ─▶ validate ─▶ apply ─▶ health ─▶ record
//!                                                                      └─ unhealthy: rollback
//! ```
//!
//! The cluster side of every plan is the live state (a watch-fed cache, `k8s::live`), never an
//! assumption about git history. Everything needed to resume is in git notes and the cluster;
//! the worker's memory (render cache, watch cache, what it last applied) is only an optimisation.

mod apply;
mod buckets;
mod commit;
pub mod daemon;
pub mod decide;
mod drift;
mod first;
mod health;
pub mod http_check;
mod leader;
mod prepare;
mod receiver;
mod record;
mod rollback;
pub mod scheduler;
pub mod source;
pub mod summary;
mod trust;
mod validate;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::EnvironmentConfig;
use crate::git::{GitError, Mirror, Oid};
use crate::k8s::live::LiveCache;
use crate::k8s::{Cluster, KubeError};
use crate::manifest::ObjectKey;
use crate::s3::S3Error;
use crate::service::{Heartbeat, Metrics};
use crate::status::Outcome;
use decide::{Next, Synced};
pub use record::retry;
use source::git;
pub use trust::Trust;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error(transparent)]
    S3(#[from] S3Error),
    /// The renderer could not run or read its tree (never an invalid commit's fault).
    #[error(transparent)]
    Render(#[from] crate::render::RenderFailure),
    #[error(transparent)]
    Sign(#[from] crate::status::SignError),
    /// With `ha:`: the term ended (or its Lease could not be read) before a write.
    #[error("environment {env}: {source}")]
    Ha {
        env: String,
        source: Box<crate::ha::HaError>,
    },
    #[error("environment {env}: {message}")]
    Setup { env: String, message: String },
    /// A shutdown cut a health wait short: no verdict is recorded; the step is redone on the
    /// next start (re-applying is a no-op for what is already applied).
    #[error(
        "environment {env}: health wait of {commit} interrupted by shutdown; redone on the next start"
    )]
    Interrupted { env: String, commit: String },
}

impl ReconcileError {
    pub fn is_transient(&self) -> bool {
        match self {
            ReconcileError::Git(e) => e.is_transient(),
            ReconcileError::Kube(e) => e.is_transient(),
            ReconcileError::S3(e) => e.is_transient(),
            ReconcileError::Render(e) => render_transient(e),
            ReconcileError::Sign(e) => e.is_transient(),
            ReconcileError::Ha { source, .. } => source.is_transient(),
            ReconcileError::Setup { .. } | ReconcileError::Interrupted { .. } => false,
        }
    }

    /// Low-cardinality name of the failing side, for metrics.
    pub fn stage(&self) -> &'static str {
        match self {
            ReconcileError::Git(_) => "git",
            ReconcileError::Kube(_) => "kubernetes",
            ReconcileError::S3(_) => "s3",
            ReconcileError::Render(_) => "render",
            ReconcileError::Setup { .. } | ReconcileError::Sign(_) => "setup",
            ReconcileError::Interrupted { .. } => "shutdown",
            ReconcileError::Ha { .. } => "ha",
        }
    }
}

/// A missing or broken renderer binary needs the operator; the rest passes.
fn render_transient(e: &crate::render::RenderFailure) -> bool {
    use crate::render::{HostError, RenderFailure, TreeError};
    match e {
        RenderFailure::Tree(TreeError::Git(e)) => e.is_transient(),
        RenderFailure::Host(HostError::MissingBinary { .. } | HostError::Binary { .. }) => false,
        RenderFailure::Invalid(_) | RenderFailure::Tree(_) | RenderFailure::Host(_) => true,
    }
}

/// What one reconcile pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The cluster matches the head, which is healthy.
    Converged { commit: String },
    /// The head is pinned as bad; the environment stays at what was last applied.
    Pinned { commit: String, reason: String },
    /// The head was processed; the outcome was recorded on it.
    Recorded { commit: String, outcome: Outcome },
    /// Live objects differed from `commit`'s render; `corrected` when they were re-applied.
    Drift {
        commit: String,
        objects: usize,
        corrected: bool,
    },
}

impl Step {
    /// Whether the environment is at the head commit and healthy.
    pub fn converged(&self) -> bool {
        matches!(
            self,
            Step::Converged { .. }
                | Step::Recorded {
                    outcome: Outcome::Healthy,
                    ..
                }
                | Step::Drift {
                    corrected: true,
                    ..
                }
        )
    }
}

/// Cloud side of an environment.
pub struct S3Target {
    pub client: aws_sdk_s3::Client,
    /// Tags that mark a bucket as this instance's for this environment.
    pub owner: crate::s3::Owner,
}

/// One environment's worker state.
pub struct EnvWorker {
    pub cfg: EnvironmentConfig,
    pub instance: String,
    pub cluster: Option<Cluster>,
    pub s3: Option<S3Target>,
    pub metrics: Option<Arc<Metrics>>,
    /// Watch-fed live state (with `cluster`).
    live: Option<LiveCache>,
    /// Whether the kinds of objects owned from earlier runs are watched yet.
    inventoried: bool,
    /// How folders are rendered (the host's kustomize and helm).
    rendering: Arc<source::Rendering>,
    /// The last prepared commit (disposable cache).
    prepared: Option<Arc<prepare::Prepared>>,
    /// The renderer that last rendered (or refused) a commit with kustomize, for its note.
    last_renderer: Option<(Oid, String)>,
    /// The buckets of the commit prepared before it (a new commit's or a rollback's
    /// predecessor), to find buckets that left the repository without rendering it again.
    earlier_buckets: Option<(
        Oid,
        std::collections::BTreeMap<ObjectKey, crate::s3::BucketSpec>,
    )>,
    /// What this process applied and the server answered (see [`decide::Synced`]).
    synced: Synced,
    /// Objects last reported as drifted, so a standing drift is noted once.
    reported_drift: BTreeSet<ObjectKey>,
    /// When buckets were last re-read for drift.
    last_bucket_check: Option<tokio::time::Instant>,
    /// Newest branch head, from the fetcher: a newer head cancels a health wait.
    heads: Option<watch::Receiver<Option<Oid>>>,
    heartbeat: Option<Arc<Heartbeat>>,
    watches: CancellationToken,
    /// Signing key, trusted keys and commit signers.
    trust: Arc<Trust>,
    /// Commits whose untrusted record was reported already (reported once).
    untrusted_seen: std::sync::Mutex<BTreeSet<String>>,
    /// With `ha:`: the term this host leads the environment in; writes are checked against it.
    term: Option<Arc<crate::ha::Term>>,
}

impl Drop for EnvWorker {
    fn drop(&mut self) {
        self.watches.cancel();
    }
}

impl EnvWorker {
    pub fn new(
        cfg: EnvironmentConfig,
        instance: String,
        cluster: Option<Cluster>,
        s3: Option<S3Target>,
        metrics: Option<Arc<Metrics>>,
        trust: Arc<Trust>,
    ) -> Self {
        let watches = CancellationToken::new();
        let live = cluster
            .as_ref()
            .map(|c| LiveCache::new(c.client().clone(), c.selector(), watches.child_token()));
        EnvWorker {
            cfg,
            instance,
            cluster,
            s3,
            metrics,
            live,
            inventoried: false,
            rendering: Arc::default(),
            prepared: None,
            last_renderer: None,
            earlier_buckets: None,
            synced: Synced::new(),
            reported_drift: BTreeSet::new(),
            last_bucket_check: None,
            heads: None,
            heartbeat: None,
            watches,
            trust,
            untrusted_seen: std::sync::Mutex::default(),
            term: None,
        }
    }

    /// Renders Kustomize environments with these binaries (none by default).
    pub fn render_with(&mut self, rendering: Arc<source::Rendering>) {
        self.rendering = rendering;
    }

    /// The renderer that produced `commit`'s objects, when this worker rendered it.
    fn renderer_of(&self, commit: Oid) -> Option<String> {
        self.last_renderer
            .as_ref()
            .filter(|(c, _)| *c == commit)
            .map(|(_, r)| r.clone())
    }

    /// Begins (`Some`) or ends (`None`) a term of leadership. At its end what this process
    /// remembers of its writes is dropped: the next leader may have changed the cluster since.
    pub fn lead(&mut self, term: Option<Arc<crate::ha::Term>>) {
        if term.is_none() {
            self.synced = Synced::new();
            self.reported_drift.clear();
            self.prepared = None;
        }
        self.term = term;
    }

    /// Before an apply batch or prune (with `ha:`): still within the term, on this host's clock.
    fn fence(&self) -> Result<(), ReconcileError> {
        match &self.term {
            Some(t) => t.check_local().map_err(|e| ReconcileError::Ha {
                env: self.cfg.name.clone(),
                source: Box::new(e),
            }),
            None => Ok(()),
        }
    }

    /// Before a note is written and pushed (with `ha:`): the Lease read again is still ours.
    async fn fence_remote(&self) -> Result<(), ReconcileError> {
        match &self.term {
            Some(t) => t.check_remote().await.map_err(|e| ReconcileError::Ha {
                env: self.cfg.name.clone(),
                source: Box::new(e),
            }),
            None => Ok(()),
        }
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Lets a newer branch head cut a health wait short (daemon), and beats `heartbeat` from
    /// inside long stages.
    pub fn follow(&mut self, heads: watch::Receiver<Option<Oid>>, heartbeat: Arc<Heartbeat>) {
        self.heads = Some(heads);
        self.heartbeat = Some(heartbeat);
    }

    /// A receiver that changes whenever a watched object does (drift and health triggers).
    pub fn live_changes(&self) -> Option<watch::Receiver<u64>> {
        self.live.as_ref().map(LiveCache::subscribe)
    }

    /// Whether a watched object changed in a way that may be drift since the last pass.
    pub fn take_drift_hint(&self) -> bool {
        self.live
            .as_ref()
            .is_some_and(|l| !l.take_dirty().is_empty())
    }

    fn beat(&self) {
        if let Some(h) = &self.heartbeat {
            h.beat();
        }
    }

    /// Every record of this environment, from the notes.
    pub async fn history(
        &self,
        mirror: &Arc<Mirror>,
    ) -> Result<crate::status::EnvHistory, ReconcileError> {
        let notes = git(mirror, |m| m.list_notes()).await?;
        let history = crate::status::history(
            notes
                .iter()
                .map(|(oid, text)| (oid.to_string(), text.as_str())),
            &self.cfg.name,
            &self.trust.notary,
        );
        self.report_untrusted(&history);
        Ok(history)
    }

    /// One reconcile pass towards `head`.
    pub async fn reconcile(
        &mut self,
        mirror: &Arc<Mirror>,
        head: Oid,
        cancel: &CancellationToken,
    ) -> Result<Step, ReconcileError> {
        let started = tokio::time::Instant::now();
        let result = self.reconcile_inner(mirror, head, cancel).await;
        if let Some(metrics) = &self.metrics {
            let outcome = match &result {
                Ok(Step::Recorded { outcome, .. }) => outcome.as_str(),
                Ok(Step::Drift { .. }) => "drift",
                Ok(_) => "noop",
                Err(e) if e.is_transient() => "transient",
                Err(_) => "error",
            };
            metrics.reconcile_finished(&self.cfg.name, outcome, started.elapsed().as_secs_f64());
        }
        result
    }

    async fn reconcile_inner(
        &mut self,
        mirror: &Arc<Mirror>,
        head: Oid,
        cancel: &CancellationToken,
    ) -> Result<Step, ReconcileError> {
        self.inventory().await?;
        loop {
            let history = self.history(mirror).await?;
            let next = decide::decide(&history, &head.to_string());
            let pinned_reason = || {
                history
                    .records
                    .get(&head.to_string())
                    .and_then(|r| r.pinned.clone())
                    .unwrap_or_default()
            };
            match next {
                Next::ResumeRollback { bad } => {
                    let bad = parse_oid(&self.cfg.name, &bad)?;
                    tracing::info!(env = %self.cfg.name, commit = %bad, "resuming an interrupted rollback");
                    let record = history.records.get(&bad.to_string()).cloned();
                    self.finish_rollback(mirror, bad, &history, record, cancel)
                        .await?;
                    if bad == head {
                        return Ok(Step::Recorded {
                            commit: head.to_string(),
                            outcome: Outcome::RolledBack,
                        });
                    }
                }
                Next::Apply { commit } => {
                    let commit = parse_oid(&self.cfg.name, &commit)?;
                    return self.apply_commit(mirror, &history, commit, cancel).await;
                }
                Next::Hold {
                    commit,
                    head_pinned,
                } => {
                    let reason = pinned_reason();
                    let commit = parse_oid(&self.cfg.name, &commit)?;
                    let step = self.hold(mirror, commit).await?;
                    if head_pinned && !matches!(step, Step::Drift { .. }) {
                        return Ok(Step::Pinned {
                            commit: head.to_string(),
                            reason,
                        });
                    }
                    return Ok(step);
                }
                Next::Idle => {
                    return Ok(Step::Pinned {
                        commit: head.to_string(),
                        reason: pinned_reason(),
                    });
                }
            }
        }
    }

    /// Watches the kinds of every object this instance already owns for the environment, so
    /// what earlier runs applied is planned (and pruned) against (once per worker).
    async fn inventory(&mut self) -> Result<(), ReconcileError> {
        if self.inventoried {
            return Ok(());
        }
        if let (Some(cluster), Some(live)) = (&self.cluster, &self.live) {
            let mut resources = Vec::new();
            let mut seen = BTreeSet::new();
            for owned in cluster.owned_objects().await? {
                if seen.insert((owned.resource.group.clone(), owned.resource.kind.clone())) {
                    resources.push(owned.resource);
                }
            }
            live.ensure(&resources).await?;
        }
        self.inventoried = true;
        Ok(())
    }
}

fn parse_oid(env: &str, commit: &str) -> Result<Oid, ReconcileError> {
    Oid::from_str(commit).map_err(|e| ReconcileError::Setup {
        env: env.to_string(),
        message: format!("commit {commit}: {e}"),
    })
}

/// Backoff between failed passes: 0.8 s doubling to 30 s, with jitter (as kube-runtime does).
pub fn backoff(attempt: u32) -> Duration {
    let base = 0.8_f64 * 2f64.powi(attempt.min(6) as i32);
    let capped = base.min(30.0);
    let jitter = rand::random::<f64>() * capped * 0.2;
    Duration::from_secs_f64(capped + jitter)
}
