//! The daemon: one mirror, one worker per environment, triggers (poll, local-ref watch, SIGHUP),
//! systemd notifications, endpoints and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::source::git;
use super::{EnvWorker, ReconcileError, S3Target, Step, backoff};
use crate::config::HostConfig;
use crate::git::{Mirror, MirrorOptions, Oid};
use crate::k8s::Cluster;
use crate::service::{self, Heartbeat, Metrics, Readiness, Signal, sd};

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
    for env in &config.environments {
        if only.is_some_and(|name| name != env.name) {
            continue;
        }
        let cluster = match &env.kubernetes {
            Some(k) => Some(Cluster::connect(k, env).await?),
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
                    // instance comes from the host config (lead wires it)
                    owner: crate::s3::Owner::new("gitopsd", env.name.clone()),
                })
            }
            None => None,
        };
        workers.push(EnvWorker::new(env.clone(), cluster, s3, metrics.clone()));
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

async fn fetch(mirror: &Arc<Mirror>, metrics: Option<&Metrics>) -> Result<Oid, ReconcileError> {
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
pub async fn once(
    config: &HostConfig,
    only: Option<&str>,
) -> Result<Vec<(String, Result<Step, ReconcileError>)>, ReconcileError> {
    let mirror = open_mirror(config).await?;
    let head = fetch(&mirror, None).await?;
    let mut workers = build_workers(config, only, None).await?;
    let cancel = CancellationToken::new();
    let results = futures::future::join_all(workers.iter_mut().map(|w| {
        let mirror = Arc::clone(&mirror);
        let cancel = cancel.clone();
        async move {
            let step = w.reconcile(&mirror, head, &cancel).await;
            (w.name().to_string(), step)
        }
    }))
    .await;
    // Notes that could not be pushed during the pass get one more chance.
    if let Err(e) = git(&mirror, |m| m.push_pending_notes()).await {
        tracing::warn!(error = %e, "notes not pushed yet; they stay in the local mirror");
    }
    Ok(results)
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
    let mut report = serde_json::Map::new();
    for env in &config.environments {
        let h = crate::status::history(
            notes.iter().map(|(o, t)| (o.to_string(), t.as_str())),
            &env.name,
        );
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
        report.insert(
            env.name.clone(),
            serde_json::json!({"last_healthy": healthy, "last_outcome": last, "pinned": h.pinned, "pending": pending}),
        );
    }
    Ok(serde_json::Value::Object(report))
}

/// Runs the daemon until a shutdown signal (or `shutdown` is cancelled).
pub async fn run(
    config_path: std::path::PathBuf,
    mut config: HostConfig,
    shutdown: CancellationToken,
) -> Result<(), ReconcileError> {
    let metrics = Metrics::new();
    let readiness = Readiness::new(config.repository.poll * 4 + Duration::from_secs(60));
    readiness.config_loaded();
    let heartbeat = Heartbeat::new();

    let (signal_tx, mut signals) = mpsc::channel(8);
    service::spawn_signal_handler(signal_tx, shutdown.clone()).map_err(|e| {
        ReconcileError::Setup {
            env: "*".into(),
            message: e.to_string(),
        }
    })?;
    let endpoints_cancel = CancellationToken::new();
    let (addr, endpoints) = service::serve_endpoints(
        config.listen,
        Arc::clone(&metrics),
        Arc::clone(&readiness),
        endpoints_cancel.clone(),
    )
    .await
    .map_err(|e| ReconcileError::Setup {
        env: "*".into(),
        message: e.to_string(),
    })?;
    tracing::info!(address = %addr, "endpoints listening");

    // A first clone can take long: ask systemd for time while it runs.
    sd::extend_timeout(Duration::from_secs(300));
    let mut mirror = open_mirror(&config).await?;
    let mut workers = build_workers(&config, None, Some(Arc::clone(&metrics))).await?;
    sd::ready();
    sd::status("mirror open; first reconcile starting");
    tracing::info!(environments = workers.len(), url = %crate::git::redact_url(&config.repository.url), "gitopsd running");

    let longest_health = config
        .environments
        .iter()
        .map(|e| e.health.timeout)
        .max()
        .unwrap_or_default();
    let watchdog_cancel = CancellationToken::new();
    let _watchdog = service::spawn_watchdog(
        Arc::clone(&heartbeat),
        longest_health * 3 + Duration::from_secs(120),
        watchdog_cancel.clone(),
    );

    // Pull-request previews (when configured) run beside the reconcile loop, in their own mirror.
    let (mut previews_cancel, mut previews) = spawn_previews(&config, &shutdown);

    let (trigger_tx, mut triggers) = mpsc::channel::<()>(1);
    let mut _watcher = crate::git::watch_local_refs(&config.repository.url, trigger_tx.clone())
        .ok()
        .flatten();
    let mut failures = 0u32;
    let mut next_wait = Duration::ZERO;
    loop {
        heartbeat.beat();
        // Wait for the next trigger (or the poll interval, or a retry after a failure).
        let beat_every = Duration::from_secs(5);
        let wake = tokio::time::Instant::now() + next_wait;
        let mut reload = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(wake) => break,
                Some(()) = triggers.recv() => break,
                Some(sig) = signals.recv() => match sig {
                    Signal::Shutdown => { shutdown.cancel(); break; }
                    Signal::Reload => { reload = true; break; }
                },
                _ = tokio::time::sleep(beat_every) => heartbeat.beat(),
            }
        }
        if shutdown.is_cancelled() {
            break;
        }
        if reload {
            sd::reloading();
            match HostConfig::load(&config_path) {
                Ok(new_config) => {
                    tracing::info!(path = %config_path.display(), "config reloaded");
                    match (
                        open_mirror(&new_config).await,
                        build_workers(&new_config, None, Some(Arc::clone(&metrics))).await,
                    ) {
                        (Ok(m), Ok(w)) => {
                            mirror = m;
                            workers = w;
                            _watcher = crate::git::watch_local_refs(
                                &new_config.repository.url,
                                trigger_tx.clone(),
                            )
                            .ok()
                            .flatten();
                            config = new_config;
                            // The preview watcher follows the new config too.
                            previews_cancel.cancel();
                            let _ = previews.await;
                            (previews_cancel, previews) = spawn_previews(&config, &shutdown);
                        }
                        (Err(e), _) | (_, Err(e)) => {
                            tracing::warn!(error = %e, "reloaded config not usable; keeping the previous one")
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "config reload failed; keeping the previous config")
                }
            }
            sd::ready();
        }

        // One pass: fetch, then every environment concurrently. A shutdown lets it finish
        // within the grace period, then abandons it (every step is safe to redo after restart).
        let pass = async {
            let head = fetch(&mirror, Some(&metrics)).await?;
            readiness.fetch_succeeded();
            let cancel = shutdown.child_token();
            let results = futures::future::join_all(workers.iter_mut().map(|w| {
                let mirror = Arc::clone(&mirror);
                let cancel = cancel.clone();
                async move {
                    (
                        w.name().to_string(),
                        w.reconcile(&mirror, head, &cancel).await,
                    )
                }
            }))
            .await;
            if let Err(e) = git(&mirror, |m| m.push_pending_notes()).await {
                tracing::warn!(error = %e, "notes not pushed yet; will retry");
            }
            Ok::<_, ReconcileError>(results)
        };
        let outcome = tokio::select! {
            r = pass => Some(r),
            _ = async {
                shutdown.cancelled().await;
                tracing::info!(grace = ?config.shutdown_grace, "shutdown requested; finishing the current step");
                tokio::time::sleep(config.shutdown_grace).await;
            } => {
                tracing::warn!("grace period over; abandoning the current step (it is redone after restart)");
                None
            }
        };
        let Some(outcome) = outcome else { break };
        let mut transient = false;
        match outcome {
            Ok(results) => {
                let mut summary = Vec::new();
                for (env, result) in results {
                    match result {
                        Ok(step) => summary.push(format!("{env}: {}", describe(&step))),
                        Err(e) => {
                            transient |= e.is_transient();
                            tracing::warn!(env = %env, error = %e, transient = e.is_transient(), "reconcile failed");
                            summary.push(format!("{env}: error"));
                        }
                    }
                }
                sd::status(&summary.join("; "));
            }
            Err(e) => {
                transient = true;
                tracing::warn!(error = %e, "fetch failed; serving the last good state");
                sd::status("repository unreachable; serving the last good state");
            }
        }
        if transient {
            next_wait = backoff(failures).min(config.repository.poll);
            failures += 1;
        } else {
            failures = 0;
            next_wait = config.repository.poll;
        }
    }
    sd::stopping();
    tracing::info!("stopping");
    previews_cancel.cancel();
    let _ = previews.await;
    watchdog_cancel.cancel();
    endpoints_cancel.cancel();
    let _ = endpoints.await;
    Ok(())
}

/// Starts the pull-request preview watcher (a no-op task when `previews` is not configured).
fn spawn_previews(
    config: &HostConfig,
    shutdown: &CancellationToken,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let cancel = shutdown.child_token();
    let config = config.clone();
    let task_cancel = cancel.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = crate::preview::run_preview_watcher(&config, task_cancel).await {
            tracing::warn!(error = %e, "preview watcher stopped");
        }
    });
    (cancel, task)
}

fn describe(step: &Step) -> String {
    match step {
        Step::Converged { commit } => format!("at {}", short(commit)),
        Step::Pinned { commit, .. } => format!("{} pinned", short(commit)),
        Step::Recorded { commit, outcome } => format!("{} {outcome}", short(commit)),
    }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}
