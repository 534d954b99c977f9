//! The daemon: one fetcher publishes the branch head; each environment runs its own task with its
//! own triggers (new head, drift from its watches, bucket re-reads, a periodic check), backoff and
//! cancellation, so one environment's health wait or rollback never delays another. SIGHUP
//! rebuilds only the environments whose config changed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::daemon::{build_workers, fetch, open_mirror};
use super::receiver;
use super::source::git;
use super::{EnvWorker, ReconcileError, Step, backoff};
use crate::config::{EnvironmentConfig, HostConfig};
use crate::git::{Mirror, Oid};
use crate::notify::{self, Notifier};
use crate::service::{self, Heartbeat, Metrics, Readiness, Signal, sd};

/// Live-cache changes are collected this long before a drift check, so a burst is one pass.
const DRIFT_DEBOUNCE: Duration = Duration::from_millis(300);
/// How often the fetcher beats the watchdog while it waits.
const BEAT_EVERY: Duration = Duration::from_secs(5);

/// What every environment task shares.
#[derive(Clone)]
pub(super) struct Shared {
    pub(super) mirror: Arc<Mirror>,
    heads: watch::Receiver<Option<Oid>>,
    heartbeat: Arc<Heartbeat>,
    pub(super) metrics: Arc<Metrics>,
    notifier: Notifier,
    poll: Duration,
    /// `ha:` and the instance name (the Leases' names), when hosts share the environments.
    pub(super) ha: Option<(crate::config::HaConfig, String)>,
}

struct EnvTask {
    cfg: EnvironmentConfig,
    cancel: CancellationToken,
    handle: JoinHandle<()>,
}

fn spawn_env(mut worker: EnvWorker, shared: &Shared, parent: &CancellationToken) -> EnvTask {
    let cancel = parent.child_token();
    let cfg = worker.cfg.clone();
    worker.follow(shared.heads.clone(), Arc::clone(&shared.heartbeat));
    let (task_shared, task_cancel) = (shared.clone(), cancel.clone());
    let handle = match super::leader::elector(&worker, shared) {
        // With `ha:` the environment is reconciled only during this host's terms.
        Some(elector) => tokio::spawn(super::leader::led_loop(
            worker,
            task_shared,
            task_cancel,
            elector,
        )),
        None => tokio::spawn(async move {
            let never = CancellationToken::new();
            env_loop(&mut worker, task_shared, task_cancel, never).await;
        }),
    };
    EnvTask {
        cfg,
        cancel,
        handle,
    }
}

/// Waits until the live cache reports a change that may be drift.
async fn drift_hint(worker: &EnvWorker, changes: &mut Option<watch::Receiver<u64>>) {
    let Some(rx) = changes.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
        tokio::time::sleep(DRIFT_DEBOUNCE).await;
        if worker.take_drift_hint() {
            return;
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One environment's loop: a pass whenever something may need doing, until `cancel` (shutdown:
/// the current step finishes) or `lost` (the term ended: the pass is dropped where it is).
pub(super) async fn env_loop(
    worker: &mut EnvWorker,
    mut shared: Shared,
    cancel: CancellationToken,
    lost: CancellationToken,
) {
    let env = worker.name().to_string();
    let mut changes = worker.live_changes();
    let mut failures = 0u32;
    let mut retry_at = Some(Instant::now());
    let mut tracker = notify::Tracker::default();
    loop {
        let buckets_at = worker.next_bucket_check();
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = lost.cancelled() => break,
            changed = shared.heads.changed() => if changed.is_err() { break },
            _ = drift_hint(worker, &mut changes) => {}
            _ = sleep_until(retry_at) => {}
            _ = sleep_until(buckets_at) => {}
            _ = tokio::time::sleep(shared.poll) => {}
        }
        let Some(head) = *shared.heads.borrow_and_update() else {
            continue;
        };
        retry_at = None;
        let result = tokio::select! {
            r = worker.reconcile(&shared.mirror, head, &cancel) => r,
            _ = lost.cancelled() => break,
        };
        match result {
            Ok(step) => {
                failures = 0;
                sd::status(&format!("{env}: {}", describe(&step)));
                notify_step(&shared, worker, &mut tracker, &step).await;
                // A superseded commit: plan the newer head at once.
                if matches!(
                    step,
                    Step::Recorded {
                        outcome: crate::status::Outcome::Superseded,
                        ..
                    }
                ) {
                    retry_at = Some(Instant::now());
                }
            }
            Err(ReconcileError::Interrupted { .. }) => break,
            Err(e) => {
                let wait = backoff(failures).min(shared.poll.max(Duration::from_secs(1)));
                failures = failures.saturating_add(1);
                if e.is_transient() {
                    shared.metrics.transient_retry(&env, e.stage());
                }
                tracing::warn!(env = %env, commit = %head, error = %e, transient = e.is_transient(), retry_in = %humantime::format_duration(wait), "reconcile failed; retrying the same commit");
                retry_at = Some(Instant::now() + wait);
            }
        }
    }
    tracing::debug!(env = %env, "environment task stopped");
}

/// Tells the notifier about `step`, reading the head's record only when it needs it.
async fn notify_step(
    shared: &Shared,
    worker: &EnvWorker,
    tracker: &mut notify::Tracker,
    step: &Step,
) {
    let record = if shared.notifier.wants_record(tracker, step) {
        let commit = notify::event::commit_of(step);
        match worker.history(&shared.mirror).await {
            Ok(h) => h.records.get(commit).cloned(),
            Err(e) => {
                tracing::debug!(env = %worker.name(), error = %e, "record not read for the notification");
                None
            }
        }
    } else {
        None
    };
    shared
        .notifier
        .observe(worker.name(), tracker, step, record.as_ref());
}

/// Runs the daemon until a shutdown signal (or `shutdown` is cancelled).
pub async fn run(
    config_path: std::path::PathBuf,
    config: HostConfig,
    shutdown: CancellationToken,
) -> Result<(), ReconcileError> {
    let metrics = Metrics::new();
    let readiness = Readiness::new(config.repository.poll * 4 + Duration::from_secs(60));
    readiness.config_loaded();
    let heartbeat = Heartbeat::new();
    let (mut signals, endpoints_cancel, endpoints) =
        start_service(&config, &shutdown, &metrics, &readiness).await?;
    // A first clone can take long: ask systemd for time while it runs.
    sd::extend_timeout(Duration::from_secs(300));
    let mirror = open_mirror(&config).await?;
    let (head_tx, heads) = watch::channel(None);
    let (notifier, delivery, notify_parent) = start_notifier(&config, &metrics)?;
    let shared = Shared {
        mirror,
        heads,
        heartbeat: Arc::clone(&heartbeat),
        metrics: Arc::clone(&metrics),
        notifier,
        poll: config.repository.poll,
        ha: config.ha.clone().map(|ha| (ha, config.instance())),
    };
    let tasks_cancel = shutdown.child_token();
    let tasks = spawn_all(&config, &shared, &tasks_cancel).await?;
    sd::ready();
    sd::status("mirror open; first reconcile starting");
    tracing::info!(environments = tasks.len(), instance = %config.instance(), url = %crate::git::redact_url(&config.repository.url), "gitopsd running");
    let watchdog_cancel = CancellationToken::new();
    let _watchdog = service::spawn_watchdog(
        Arc::clone(&heartbeat),
        Duration::from_secs(120),
        watchdog_cancel.clone(),
    );
    let (trigger_tx, mut triggers) = mpsc::channel::<()>(1);
    let receiver = receiver::start(&config, trigger_tx.clone(), &metrics, &shutdown).await?;
    let mut d = Fetcher {
        receiver,
        _watcher: crate::git::watch_local_refs(&config.repository.url, trigger_tx.clone())
            .ok()
            .flatten(),
        previews: spawn_previews(&config, &shutdown),
        config,
        config_path,
        shared,
        tasks,
        tasks_cancel,
        head_tx,
        trigger_tx,
        readiness,
        delivery,
        notify_parent,
        failures: 0,
        next_fetch: Instant::now(),
    };
    loop {
        heartbeat.beat();
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep_until(d.next_fetch) => {}
            Some(()) = triggers.recv() => {}
            Some(sig) = signals.recv() => match sig {
                Signal::Shutdown => { shutdown.cancel(); break; }
                Signal::Reload => d.reload(&shutdown).await,
            },
            _ = tokio::time::sleep(BEAT_EVERY) => continue,
        }
        d.fetch().await;
    }
    sd::stopping();
    d.stop().await;
    watchdog_cancel.cancel();
    endpoints_cancel.cancel();
    let _ = endpoints.await;
    Ok(())
}

/// The notification targets of `config` (none when not configured) and the token that stops
/// them: not a child of the shutdown, so deliveries drain after the environment tasks stopped.
fn start_notifier(
    config: &HostConfig,
    metrics: &Arc<Metrics>,
) -> Result<(Notifier, Option<notify::Delivery>, CancellationToken), ReconcileError> {
    let parent = CancellationToken::new();
    let notifier = Notifier::new(Some(Arc::clone(metrics)));
    let delivery = notifier
        .replace(config.notifications.as_ref(), &config.instance(), &parent)
        .map_err(|e| ReconcileError::Setup {
            env: "*".into(),
            message: e.to_string(),
        })?;
    Ok((notifier, delivery, parent))
}

/// Signal handling and the metrics/health endpoints.
async fn start_service(
    config: &HostConfig,
    shutdown: &CancellationToken,
    metrics: &Arc<Metrics>,
    readiness: &Arc<Readiness>,
) -> Result<(mpsc::Receiver<Signal>, CancellationToken, JoinHandle<()>), ReconcileError> {
    let setup = |message: String| ReconcileError::Setup {
        env: "*".into(),
        message,
    };
    let (signal_tx, signals) = mpsc::channel(8);
    service::spawn_signal_handler(signal_tx, shutdown.clone()).map_err(|e| setup(e.to_string()))?;
    let endpoints_cancel = CancellationToken::new();
    let (addr, endpoints) = service::serve_endpoints(
        config.listen,
        Arc::clone(metrics),
        Arc::clone(readiness),
        endpoints_cancel.clone(),
    )
    .await
    .map_err(|e| setup(e.to_string()))?;
    tracing::info!(address = %addr, "endpoints listening");
    Ok((signals, endpoints_cancel, endpoints))
}

/// The daemon's own loop state: fetches the branch and publishes its head to the environments.
struct Fetcher {
    config: HostConfig,
    config_path: std::path::PathBuf,
    shared: Shared,
    tasks: BTreeMap<String, EnvTask>,
    tasks_cancel: CancellationToken,
    head_tx: watch::Sender<Option<Oid>>,
    trigger_tx: mpsc::Sender<()>,
    /// Kept alive: it triggers a fetch when a local repository's refs change.
    _watcher: Option<::notify::RecommendedWatcher>,
    previews: (CancellationToken, JoinHandle<()>),
    /// The push-event receiver (`webhooks_listen:`).
    receiver: Option<receiver::Receiver>,
    readiness: Arc<Readiness>,
    /// The notification targets' tasks, rebuilt when a reload changes `notifications:`.
    delivery: Option<notify::Delivery>,
    notify_parent: CancellationToken,
    failures: u32,
    next_fetch: Instant,
}

impl Fetcher {
    /// Shutdown: the environment tasks finish their steps (within the grace period), then the
    /// notifications, previews and the webhook receiver stop.
    async fn stop(self) {
        stop_tasks(self.tasks, self.config.shutdown_grace).await;
        if let Some(delivery) = self.delivery {
            delivery.stop().await;
        }
        self.previews.0.cancel();
        let _ = self.previews.1.await;
        if let Some(r) = self.receiver {
            r.stop().await;
        }
    }

    /// Fetches, publishes a new head, and pushes notes that are still pending.
    async fn fetch(&mut self) {
        let poll = self.config.repository.poll;
        match fetch(&self.shared.mirror, Some(&self.shared.metrics)).await {
            Ok(head) => {
                self.readiness.fetch_succeeded();
                self.failures = 0;
                self.head_tx.send_if_modified(|h| {
                    let changed = *h != Some(head);
                    *h = Some(head);
                    changed
                });
                self.next_fetch = Instant::now() + poll;
            }
            Err(e) => {
                tracing::warn!(error = %e, "fetch failed; serving the last good state");
                sd::status("repository unreachable; serving the last good state");
                self.next_fetch = Instant::now() + backoff(self.failures).min(poll);
                self.failures = self.failures.saturating_add(1);
            }
        }
        if let Err(e) = git(&self.shared.mirror, |m| m.push_pending_notes()).await {
            tracing::warn!(error = %e, "notes not pushed yet; will retry");
        }
    }

    /// SIGHUP: reloads the config, restarting what changed.
    async fn reload(&mut self, shutdown: &CancellationToken) {
        sd::reloading();
        let reloaded = reload_config(
            &self.config_path,
            &self.config,
            &mut self.shared,
            &mut self.tasks,
            &self.tasks_cancel,
        )
        .await;
        match reloaded {
            Ok(Some(new_config)) => {
                self._watcher = crate::git::watch_local_refs(
                    &new_config.repository.url,
                    self.trigger_tx.clone(),
                )
                .ok()
                .flatten();
                self.reload_notifications(&new_config).await;
                self.receiver = receiver::reload(
                    self.receiver.take(),
                    &self.config,
                    &new_config,
                    self.trigger_tx.clone(),
                    &self.shared.metrics,
                    shutdown,
                )
                .await;
                self.config = new_config;
                self.previews.0.cancel();
                let old =
                    std::mem::replace(&mut self.previews, spawn_previews(&self.config, shutdown));
                let _ = old.1.await;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "reloaded config not usable; keeping the previous one")
            }
        }
        sd::ready();
        // Fetch at once: the new config may point elsewhere.
        self.next_fetch = Instant::now();
    }
}

impl Fetcher {
    /// Rebuilds the notification targets when their config (or the instance) changed; a
    /// config whose targets cannot be set up keeps the previous ones.
    async fn reload_notifications(&mut self, new: &HostConfig) {
        if new.notifications == self.config.notifications
            && new.instance() == self.config.instance()
        {
            return;
        }
        let replaced = self.shared.notifier.replace(
            new.notifications.as_ref(),
            &new.instance(),
            &self.notify_parent,
        );
        match replaced {
            Ok(delivery) => {
                tracing::info!(enabled = delivery.is_some(), "notification targets rebuilt");
                if let Some(old) = std::mem::replace(&mut self.delivery, delivery) {
                    old.stop().await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "notification targets not usable; keeping the previous ones")
            }
        }
    }
}

async fn spawn_all(
    config: &HostConfig,
    shared: &Shared,
    parent: &CancellationToken,
) -> Result<BTreeMap<String, EnvTask>, ReconcileError> {
    let workers = build_workers(config, None, Some(Arc::clone(&shared.metrics))).await?;
    Ok(workers
        .into_iter()
        .map(|w| (w.name().to_string(), spawn_env(w, shared, parent)))
        .collect())
}

/// Lets every environment task finish its current step within `grace` (shutdown already
/// cancelled their health waits), then abandons the rest: every step is safe to redo.
async fn stop_tasks(tasks: BTreeMap<String, EnvTask>, grace: Duration) {
    tracing::info!(grace = %humantime::format_duration(grace), "stopping; finishing the current steps");
    for task in tasks.values() {
        task.cancel.cancel();
    }
    let all = futures::future::join_all(tasks.into_values().map(|t| t.handle));
    if tokio::time::timeout(grace, all).await.is_err() {
        tracing::warn!(
            "grace period over; abandoning the current steps (they are redone after restart)"
        );
    }
}

/// Applies a reloaded config: a new repository or instance rebuilds everything, otherwise only
/// the environments whose config changed are restarted. `None` when the file is unusable.
async fn reload_config(
    path: &std::path::Path,
    old: &HostConfig,
    shared: &mut Shared,
    tasks: &mut BTreeMap<String, EnvTask>,
    parent: &CancellationToken,
) -> Result<Option<HostConfig>, ReconcileError> {
    let new = match HostConfig::load(path) {
        Ok(new) => new,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "config reload failed; keeping the previous config");
            return Ok(None);
        }
    };
    tracing::info!(path = %path.display(), "config reloaded");
    let everything = new.repository.url != old.repository.url
        || new.repository.branch != old.repository.branch
        || new.notes_ref != old.notes_ref
        || new.state_dir != old.state_dir
        || new.instance() != old.instance();
    if everything {
        shared.mirror = open_mirror(&new).await?;
    }
    shared.poll = new.repository.poll;
    shared.ha = new.ha.clone().map(|ha| (ha, new.instance()));
    let everything = everything || new.ha != old.ha;
    let changed: Vec<String> = tasks
        .iter()
        .filter(|(name, t)| everything || new.environment(name) != Some(&t.cfg))
        .map(|(name, _)| name.clone())
        .collect();
    for name in &changed {
        if let Some(task) = tasks.remove(name) {
            task.cancel.cancel();
            let _ = task.handle.await;
        }
    }
    for env in &new.environments {
        if tasks.contains_key(&env.name) {
            continue;
        }
        let mut workers =
            build_workers(&new, Some(&env.name), Some(Arc::clone(&shared.metrics))).await?;
        if let Some(worker) = workers.pop() {
            tracing::info!(env = %env.name, "environment (re)started");
            tasks.insert(env.name.clone(), spawn_env(worker, shared, parent));
        }
    }
    Ok(Some(new))
}

/// Starts the pull-request preview watcher (a no-op task when `previews` is not configured).
fn spawn_previews(
    config: &HostConfig,
    shutdown: &CancellationToken,
) -> (CancellationToken, JoinHandle<()>) {
    let cancel = shutdown.child_token();
    let config = config.clone();
    let task_cancel = cancel.clone();
    let task = tokio::spawn(async move {
        if config.previews.is_none() {
            return;
        }
        // Previews run in child processes of this very executable (credential-less, limited).
        let exe = match std::env::current_exe() {
            Ok(exe) => exe,
            Err(e) => {
                tracing::warn!(error = %e, "cannot find gitopsd's own executable: no previews");
                return;
            }
        };
        if let Err(e) = crate::preview::run_preview_watcher(&config, task_cancel, exe).await {
            tracing::warn!(error = %e, "preview watcher stopped");
        }
    });
    (cancel, task)
}

pub(super) fn describe(step: &Step) -> String {
    match step {
        Step::Converged { commit } => format!("at {}", short(commit)),
        Step::Pinned { commit, .. } => format!("{} pinned", short(commit)),
        Step::Recorded { commit, outcome } => format!("{} {outcome}", short(commit)),
        Step::Drift {
            commit,
            objects,
            corrected,
        } => format!(
            "{} drift: {objects} objects {}",
            short(commit),
            if *corrected { "corrected" } else { "reported" }
        ),
    }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}
