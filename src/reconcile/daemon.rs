//! Setting up the effects of a run (mirror, per-environment workers), the `once` pass and the
//! `status` report. The long-running daemon is in `scheduler`.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::source::{Rendering, git};
use super::{EnvWorker, ReconcileError, S3Target, Step};
use crate::config::HostConfig;
use crate::git::{Mirror, MirrorOptions, Oid};
use crate::k8s::Cluster;
use crate::service::Metrics;

/// Upper bound of one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(180);

/// Opens (or clones) the mirror described by the host config.
pub async fn open_mirror(config: &HostConfig) -> Result<Arc<Mirror>, ReconcileError> {
    let auth = config.git_auth().map_err(|e| ReconcileError::Setup {
        env: "*".into(),
        message: e.to_string(),
    })?;
    let opts = MirrorOptions {
        url: config.repository.url.clone(),
        branch: config.repository.branch.clone(),
        notes_ref: config.notes_ref.clone(),
        // Pull-request refs are fetched by the preview watcher into its own mirror.
        extra_fetch_refs: Vec::new(),
        auth,
    };
    let dir = config.mirror_dir();
    let mirror = tokio::task::spawn_blocking(move || {
        Mirror::open(&dir, opts).map(|m| m.with_note_merger(Box::new(crate::status::merge_notes)))
    })
    .await
    .map_err(|e| ReconcileError::Setup {
        env: "*".into(),
        message: format!("opening the mirror: {e}"),
    })??;
    Ok(Arc::new(mirror))
}

/// Builds a worker (Kubernetes client, S3 client) for each selected environment.
pub async fn build_workers(
    config: &HostConfig,
    only: Option<&str>,
    metrics: Option<Arc<Metrics>>,
) -> Result<Vec<EnvWorker>, ReconcileError> {
    let mut workers = Vec::new();
    let rendering = Rendering::from_config(&config.renderers, config.limits.limits())
        .await
        .map_err(|e| ReconcileError::Setup {
            env: only.unwrap_or("*").to_string(),
            message: e.to_string(),
        })?;
    let rendering = Arc::new(rendering);
    let trust = Arc::new(super::Trust::from_config(config)?);
    for env in &config.environments {
        if only.is_some_and(|name| name != env.name) {
            continue;
        }
        let cluster = match &env.kubernetes {
            Some(k) => Some(Cluster::connect(k, &config.instance(), env).await?),
            None => None,
        };
        let s3 = match &env.s3 {
            Some(s) => {
                let settings = s.settings().map_err(|e| ReconcileError::Setup {
                    env: env.name.clone(),
                    message: e.to_string(),
                })?;
                Some(S3Target {
                    client: crate::s3::client(&settings).await,
                    owner: crate::s3::Owner::new(config.instance(), env.name.clone()),
                })
            }
            None => None,
        };
        let mut worker = EnvWorker::new(
            env.clone(),
            config.instance(),
            cluster,
            s3,
            metrics.clone(),
            Arc::clone(&trust),
        );
        worker.render_with(env_rendering(&rendering, env)?);
        workers.push(worker);
    }
    if let Some(name) = only
        && workers.is_empty()
    {
        return Err(ReconcileError::Setup {
            env: name.to_string(),
            message: "no such environment in the host config".into(),
        });
    }
    Ok(workers)
}

/// The host's rendering plus the environment's SOPS keys (read from their file at start).
fn env_rendering(
    host: &Arc<Rendering>,
    env: &crate::config::EnvironmentConfig,
) -> Result<Arc<Rendering>, ReconcileError> {
    let Some(d) = &env.decryption else {
        return Ok(Arc::clone(host));
    };
    let setup = |message: String| ReconcileError::Setup {
        env: env.name.clone(),
        message,
    };
    let text = d.age_keys().map_err(|e| setup(e.to_string()))?;
    let keys = crate::render::sops::Keys::parse(&text).map_err(|e| {
        setup(format!(
            "decryption.age_key_file {}: {e}",
            d.age_key_file.display()
        ))
    })?;
    let mut rendering = Rendering::clone(host);
    rendering.decryption = Some(keys);
    Ok(Arc::new(rendering))
}

pub(super) async fn fetch(
    mirror: &Arc<Mirror>,
    metrics: Option<&Metrics>,
) -> Result<Oid, ReconcileError> {
    let started = tokio::time::Instant::now();
    // libgit2 has no read timeout we can set without unsafe code: a server that accepts the
    // connection and then goes silent would hang the fetch, so bound it here (the blocked thread
    // finishes or dies on its own; the daemon keeps serving the last good state).
    let result = match tokio::time::timeout(FETCH_TIMEOUT, git(mirror, |m| m.fetch())).await {
        Ok(result) => result,
        Err(_) => Err(crate::git::GitError::Network {
            url: crate::git::redact_url(mirror.url()),
            op: "fetch",
            message: format!("fetch did not finish within {FETCH_TIMEOUT:?}"),
        }),
    };
    if let Some(metrics) = metrics {
        metrics.git_fetch(started.elapsed().as_secs_f64(), result.is_ok());
    }
    Ok(result?)
}

/// One pass over every selected environment (the `once` command).
/// One environment's result of `once`: the step, and the note's record of its commit.
pub struct OnceResult {
    pub env: String,
    pub step: Result<Step, ReconcileError>,
    pub record: Option<crate::status::Record>,
}

pub async fn once(
    config: &HostConfig,
    only: Option<&str>,
) -> Result<Vec<OnceResult>, ReconcileError> {
    let mirror = open_mirror(config).await?;
    let head = fetch(&mirror, None).await?;
    let mut workers = build_workers(config, only, None).await?;
    let cancel = CancellationToken::new();
    let results = futures::future::join_all(workers.iter_mut().map(|w| {
        let mirror = Arc::clone(&mirror);
        let cancel = cancel.clone();
        async move {
            let step = match super::leader::once_allowed(w, config).await {
                Ok(()) => w.reconcile(&mirror, head, &cancel).await,
                Err(e) => Err(e),
            };
            (w.name().to_string(), step)
        }
    }))
    .await;
    // Notes that could not be pushed during the pass get one more chance.
    if let Err(e) = git(&mirror, |m| m.push_pending_notes()).await {
        tracing::warn!(error = %e, "notes not pushed yet; they stay in the local mirror");
    }
    let mut out = Vec::with_capacity(results.len());
    for (env, step) in results {
        let record = match &step {
            Ok(step) => record_of(&mirror, &env, step).await,
            Err(_) => None,
        };
        out.push(OnceResult { env, step, record });
    }
    Ok(out)
}

/// The note's record of the step's commit for `env` (what the pass wrote), if it can be read.
async fn record_of(mirror: &Arc<Mirror>, env: &str, step: &Step) -> Option<crate::status::Record> {
    let commit = match step {
        Step::Converged { commit }
        | Step::Pinned { commit, .. }
        | Step::Recorded { commit, .. }
        | Step::Drift { commit, .. } => commit.parse::<crate::git::Oid>().ok()?,
    };
    let text = git(mirror, move |m| m.read_note(commit)).await.ok()??;
    crate::status::Note::parse(&text).environments.remove(env)
}

/// Per environment: last healthy commit, last outcome, pinned commits and pending commits
/// (on the branch after the last healthy one, not yet recorded). Fetches first when it can.
pub async fn status_report(config: &HostConfig) -> Result<serde_json::Value, ReconcileError> {
    let mirror = open_mirror(config).await?;
    if let Err(e) = git(&mirror, |m| m.fetch()).await {
        tracing::warn!(error = %e, "fetch failed; showing the local mirror");
    }
    let head = git(&mirror, |m| m.branch_head()).await.ok();
    let notes = git(&mirror, |m| m.list_notes()).await?;
    let trust = super::Trust::from_config(config)?;
    let mut report = serde_json::Map::new();
    for env in &config.environments {
        let h = crate::status::history(
            notes.iter().map(|(o, t)| (o.to_string(), t.as_str())),
            &env.name,
            &trust.notary,
        );
        let untrusted: serde_json::Map<String, serde_json::Value> = h
            .untrusted
            .iter()
            .map(|(c, why)| (c.clone(), why.to_string().into()))
            .collect();
        let last = h
            .records
            .iter()
            .max_by(|a, b| a.1.finished.cmp(&b.1.finished))
            .map(|(c, r)| serde_json::json!({"commit": c, "outcome": r.outcome, "finished": r.finished, "errors": r.errors}));
        let healthy = h.last_healthy.as_ref().map(|(c, _)| c.clone());
        let base = healthy.as_deref().and_then(|c| Oid::from_str(c).ok());
        let pending = match head {
            Some(head) => git(&mirror, move |m| m.commits_between(base, head, 1000))
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(|c| !h.records.contains_key(&c.id.to_string()))
                .map(|c| serde_json::json!({"commit": c.id.to_string(), "summary": c.summary}))
                .collect::<Vec<_>>(),
            None => Vec::new(),
        };
        let applied = h.last_applied.as_ref().map(|(c, _)| c.clone());
        let drift = h
            .records
            .values()
            .flat_map(|r| r.drift.iter())
            .max_by(|a, b| a.at.cmp(&b.at))
            .cloned();
        report.insert(
            env.name.clone(),
            serde_json::json!({"last_healthy": healthy, "applied": applied, "last_outcome": last,
                "pinned": h.pinned, "pending": pending, "last_drift": drift, "untrusted": untrusted,
                "live": live_health(config, env).await, "lease": lease(config, env).await}),
        );
    }
    Ok(serde_json::Value::Object(report))
}

/// The live health of `env`'s objects, or why it cannot be read.
async fn live_health(
    config: &HostConfig,
    env: &crate::config::EnvironmentConfig,
) -> serde_json::Value {
    let Some(k8s) = &env.kubernetes else {
        return serde_json::Value::Null;
    };
    let health = match Cluster::connect(k8s, &config.instance(), env).await {
        Ok(cluster) => cluster.live_health().await,
        Err(e) => Err(e),
    };
    match health {
        Ok(h) => serde_json::to_value(h).unwrap_or_default(),
        Err(e) => serde_json::json!({"error": e.to_string()}),
    }
}

/// With `ha:`, who holds `env`'s Lease now (null without `ha:`).
async fn lease(config: &HostConfig, env: &crate::config::EnvironmentConfig) -> serde_json::Value {
    let (Some(ha), Some(k8s)) = (&config.ha, &env.kubernetes) else {
        return serde_json::Value::Null;
    };
    match Cluster::connect(k8s, &config.instance(), env).await {
        Ok(c) => {
            crate::ha::lease_status(c.client().clone(), ha, &config.instance(), &env.name).await
        }
        Err(e) => serde_json::json!({"error": e.to_string()}),
    }
}

/// `gitopsd adopt`: moves `env`'s objects from instance `from` (or from before instances) to
/// this one. Returns the objects adopted; failures are errors naming the object.
pub async fn adopt(
    config: &HostConfig,
    env: &str,
    from: Option<&str>,
    dry_run: bool,
) -> Result<Vec<String>, ReconcileError> {
    let setup = |message: String| ReconcileError::Setup {
        env: env.to_string(),
        message,
    };
    let cfg = config
        .environment(env)
        .ok_or_else(|| setup("no such environment in the host config".into()))?;
    let k8s = cfg
        .kubernetes
        .as_ref()
        .ok_or_else(|| setup("the environment has no kubernetes settings".into()))?;
    if from == Some(config.instance().as_str()) {
        return Err(setup(format!(
            "{} is this instance already",
            config.instance()
        )));
    }
    let cluster = Cluster::connect(k8s, &config.instance(), cfg).await?;
    let adopted = cluster.adopt(from, dry_run).await?;
    if let Some((_, e)) = adopted.failures.into_iter().next() {
        return Err(e.into());
    }
    Ok(adopted.objects.iter().map(ToString::to_string).collect())
}
