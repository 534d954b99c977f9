//! Notifications (after `record`): turns each environment's step into alerts that open and
//! resolve, for Alertmanager (API v2) and webhooks (Slack-style or JSON).
//!
//! Owns the pure decision (`event`: step + what was open → changes), the per-target delivery
//! tasks (`alertmanager`, `webhook`, over `delivery`'s bounded retries) and the [`Notifier`]
//! handle the environment tasks share. May call `reconcile`'s pure summary, `status`' types,
//! `config` (targets, header files) and `service::Metrics`; never git, the cluster or S3.
//! An environment task only ever `try_send`s: a full queue drops and counts, never waits.

mod alertmanager;
mod delivery;
pub mod event;
mod webhook;

use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{NotificationsConfig, read_headers};
use crate::reconcile::Step;
use crate::service::Metrics;
use crate::status::Record;
use delivery::Endpoint;
pub use event::{Change, EnvState, Problem};

/// Changes queued per target before new ones are dropped.
const QUEUE: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// A target that cannot be set up (never quotes header values or URL paths).
    #[error("notifications.{key}: {message}")]
    Setup { key: String, message: String },
    #[error("{target}: {message}")]
    Request {
        target: String,
        message: String,
        transient: bool,
    },
}

impl NotifyError {
    pub fn is_transient(&self) -> bool {
        match self {
            NotifyError::Setup { .. } => false,
            NotifyError::Request { transient, .. } => *transient,
        }
    }
}

/// One change of one environment, as queued to a target.
#[derive(Clone, Debug)]
pub struct Event {
    pub env: String,
    pub change: Change,
    pub at: SystemTime,
}

struct Target {
    kind: &'static str,
    /// Whether it gets changes people were told of already (Alertmanager: state, not events).
    quiet_too: bool,
    tx: mpsc::Sender<Event>,
}

struct Targets {
    generation: u64,
    list: Vec<Target>,
}

/// The environment tasks' handle: cheap to clone; [`Notifier::replace`] (a reload) switches
/// every clone to the new targets.
#[derive(Clone, Default)]
pub struct Notifier {
    slot: Arc<RwLock<Option<Arc<Targets>>>>,
    metrics: Option<Arc<Metrics>>,
}

/// What one environment task keeps: its open alerts, for the targets of one generation.
#[derive(Debug, Default)]
pub struct Tracker {
    generation: u64,
    state: EnvState,
}

/// The running delivery tasks of one config: cancel, then await (they drain briefly).
pub struct Delivery {
    pub cancel: CancellationToken,
    pub tasks: JoinHandle<()>,
}

impl Notifier {
    pub fn new(metrics: Option<Arc<Metrics>>) -> Notifier {
        Notifier {
            slot: Arc::default(),
            metrics,
        }
    }

    fn targets(&self) -> Option<Arc<Targets>> {
        self.slot.read().ok().and_then(|t| t.clone())
    }

    /// Starts the delivery tasks of `config` (none: notifications off) and switches every clone
    /// of this handle to them; returns the tasks it replaced, for the caller to stop.
    pub fn replace(
        &self,
        config: Option<&NotificationsConfig>,
        instance: &str,
        parent: &CancellationToken,
    ) -> Result<Option<Delivery>, NotifyError> {
        let started = match config {
            Some(c) => Some(start(c, instance, self.metrics.clone(), parent)?),
            None => None,
        };
        let mut slot = match self.slot.write() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Process-wide, so a tracker never mistakes new targets for the ones it knew.
        static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let generation = GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (targets, delivery) = match started {
            Some((list, delivery)) => {
                (Some(Arc::new(Targets { generation, list })), Some(delivery))
            }
            None => (None, None),
        };
        *slot = targets;
        Ok(delivery)
    }

    /// Whether `step` needs the head's record to be decided (read by the caller only then).
    pub fn wants_record(&self, tracker: &Tracker, step: &Step) -> bool {
        match self.targets() {
            Some(t) => t.generation != tracker.generation || tracker.state.needs_record(step),
            None => false,
        }
    }

    /// Decides what `step` changes for `env` and queues it to every target, without waiting.
    pub fn observe(&self, env: &str, tracker: &mut Tracker, step: &Step, record: Option<&Record>) {
        let Some(targets) = self.targets() else {
            return;
        };
        if targets.generation != tracker.generation {
            tracker.state.reset();
            tracker.generation = targets.generation;
        }
        let at = SystemTime::now();
        for change in tracker.state.observe(env, step, record) {
            tracing::info!(env = %env, alertname = change.alert.problem.alertname(), commit = %change.alert.commit, open = change.open, announce = change.announce, "notification");
            let ev = Event {
                env: env.to_string(),
                change,
                at,
            };
            for t in targets
                .list
                .iter()
                .filter(|t| t.quiet_too || ev.change.announce)
            {
                if t.tx.try_send(ev.clone()).is_err() {
                    tracing::warn!(env = %env, target_kind = t.kind, "notification queue full; dropped");
                    if let Some(m) = &self.metrics {
                        m.notification(t.kind, "dropped");
                    }
                }
            }
        }
    }
}

fn headers(
    key: &str,
    file: Option<&std::path::Path>,
) -> Result<Vec<(String, String)>, NotifyError> {
    let Some(path) = file else {
        return Ok(Vec::new());
    };
    read_headers(&format!("notifications.{key}.headers_file"), path).map_err(|e| {
        NotifyError::Setup {
            key: format!("{key}.headers_file"),
            message: e.to_string(),
        }
    })
}

/// Builds every target (reading header and URL files now) and spawns its task.
fn start(
    config: &NotificationsConfig,
    instance: &str,
    metrics: Option<Arc<Metrics>>,
    parent: &CancellationToken,
) -> Result<(Vec<Target>, Delivery), NotifyError> {
    let cancel = parent.child_token();
    let mut list = Vec::new();
    let mut tasks = Vec::new();
    if let Some(am) = &config.alertmanager {
        let key = "alertmanager";
        let endpoint = Endpoint::new(
            key,
            key,
            &am.url,
            headers(key, am.headers_file.as_deref())?,
            am.timeout,
        )?;
        let (tx, rx) = mpsc::channel(QUEUE);
        tasks.push(tokio::spawn(alertmanager::run(
            endpoint,
            instance.to_string(),
            config.resend_interval,
            rx,
            metrics.clone(),
            cancel.clone(),
        )));
        list.push(Target {
            kind: "alertmanager",
            quiet_too: true,
            tx,
        });
    }
    for (i, w) in config.webhooks.iter().enumerate() {
        let key = format!("webhooks[{i}]");
        let url =
            w.target_url(&format!("notifications.{key}"))
                .map_err(|e| NotifyError::Setup {
                    key: key.clone(),
                    message: e.to_string(),
                })?;
        let endpoint = Endpoint::new(
            "webhook",
            &key,
            &url,
            headers(&key, w.headers_file.as_deref())?,
            w.timeout,
        )?;
        let (tx, rx) = mpsc::channel(QUEUE);
        tasks.push(tokio::spawn(webhook::run(
            endpoint,
            w.format,
            instance.to_string(),
            rx,
            metrics.clone(),
            cancel.clone(),
        )));
        list.push(Target {
            kind: "webhook",
            quiet_too: false,
            tx,
        });
    }
    let tasks = tokio::spawn(async move {
        futures::future::join_all(tasks).await;
    });
    Ok((list, Delivery { cancel, tasks }))
}

impl Delivery {
    /// Stops the tasks; they send what is queued within a few seconds.
    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.tasks.await;
    }
}
