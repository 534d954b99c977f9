//! All of gitopsd's metrics, encoded as OpenMetrics text by prometheus-client.
//!
//! Labels are kept low-cardinality on purpose: the environment name (from the host config) and
//! small closed sets (outcome, action). Commit SHAs, object names and URLs never become labels;
//! unknown outcome/action strings are folded into `other`.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Metric, Registry, Unit};

use super::ServiceError;

/// Outcomes accepted as the `outcome` label of `gitopsd_reconciles_total`; anything else is
/// recorded as `other`.
pub const OUTCOMES: &[&str] = &[
    "healthy",
    "rejected",
    "rolled-back",
    "rollback-failed",
    "unhealthy",
    "superseded",
    "error",
    "noop",
    "drift",
    "transient",
];

/// Sides accepted as the `stage` label of `gitopsd_transient_retries_total`.
pub const STAGES: &[&str] = &["git", "kubernetes", "s3", "setup", "shutdown", "ha"];

/// Reasons accepted as the `reason` label of `gitopsd_untrusted_notes_total`.
pub const UNTRUSTED: &[&str] = &["unsigned", "bad-signature", "unknown-key"];

/// Actions accepted as the `action` label of `gitopsd_applied_objects_total`; anything else is
/// recorded as `other`.
pub const ACTIONS: &[&str] = &["create", "update", "delete"];

/// `target` and `result` labels of `gitopsd_notifications_total`.
pub const NOTIFY_TARGETS: &[&str] = &["alertmanager", "webhook"];
pub const NOTIFY_RESULTS: &[&str] = &["sent", "failed", "dropped"];
/// Label values of `gitopsd_webhook_requests_total`.
pub const WEBHOOK_SOURCES: &[&str] = &["github", "gitlab", "generic", "unknown"];
pub const WEBHOOK_RESULTS: &[&str] = &[
    "accepted",
    "ignored",
    "unauthorized",
    "not_found",
    "too_large",
];

fn closed_set(value: &str, allowed: &[&'static str]) -> &'static str {
    allowed
        .iter()
        .copied()
        .find(|a| *a == value)
        .unwrap_or("other")
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EnvLabels {
    environment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    environment: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    environment: String,
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    environment: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    environment: String,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    source: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotifyLabels {
    target: &'static str,
    result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn reconcile_histogram() -> Histogram {
    // 0.5 s … ~17 min: a reconcile includes health waits of several minutes.
    Histogram::new(exponential_buckets(0.5, 2.0, 12))
}

/// Registers a new default `M` under `name` (with `unit`, if any) and returns it.
fn add<M: Metric + Clone + Default>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
) -> M {
    add_with(registry, name, help, unit, M::default())
}

/// Registers `metric` under `name` (with `unit`, if any) and returns it.
fn add_with<M: Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    metric: M,
) -> M {
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, metric.clone()),
        None => registry.register(name, help, metric.clone()),
    }
    metric
}

/// All metrics of the daemon. Cheap to share (`Arc`); every method takes `&self`.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<OutcomeLabels, Counter>,
    reconcile_duration: HistogramFamily<EnvLabels>,
    last_healthy_commit: Family<EnvLabels, Gauge>,
    rollbacks: Family<EnvLabels, Counter>,
    drifted_objects: Family<EnvLabels, Gauge>,
    applied_objects: Family<ActionLabels, Counter>,
    git_fetch_duration: Histogram,
    git_fetch_failures: Counter,
    notes_push_retries: Counter,
    transient_retries: Family<StageLabels, Counter>,
    untrusted_notes: Family<ReasonLabels, Counter>,
    notifications: Family<NotifyLabels, Counter>,
    ha: HaMetrics,
    webhook_requests: Family<WebhookLabels, Counter>,
}

/// Leadership per environment (`ha:`).
struct HaMetrics {
    leader: Family<EnvLabels, Gauge>,
    lease_transitions: Family<EnvLabels, Counter>,
}

fn register_ha(r: &mut Registry) -> HaMetrics {
    HaMetrics {
        leader: add(
            r,
            "leader",
            "1 while this host holds the environment's Lease and may write, else 0",
            None,
        ),
        lease_transitions: add(
            r,
            "lease_transitions",
            "Terms this host began as the environment's leader",
            None,
        ),
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// `gitopsd_build_info{version}`.
fn register_build(r: &mut Registry) {
    r.register(
        "build",
        "gitopsd build information",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
}

/// `gitopsd_notifications_total{target,result}`.
fn notifications_family(r: &mut Registry) -> Family<NotifyLabels, Counter> {
    add(
        r,
        "notifications",
        "Notification requests sent or given up on (failed), and changes dropped on a full queue",
        None,
    )
}

fn webhook_family(r: &mut Registry) -> Family<WebhookLabels, Counter> {
    add(
        r,
        "webhook_requests",
        "Push-event requests received, by source and result (only accepted ones trigger a fetch)",
        None,
    )
}

impl Metrics {
    /// Creates and registers every metric, all with the `gitopsd_` prefix.
    pub fn new() -> Arc<Metrics> {
        let mut r = Registry::with_prefix("gitopsd");
        register_build(&mut r);
        let seconds = Some(Unit::Seconds);
        Arc::new(Metrics {
            reconciles: add(
                &mut r,
                "reconciles",
                "Finished reconciles by environment and outcome",
                None,
            ),
            reconcile_duration: add_with(
                &mut r,
                "reconcile_duration",
                "Wall time of one reconcile, fetch to record",
                seconds.clone(),
                Family::new_with_constructor(reconcile_histogram),
            ),
            last_healthy_commit: add(
                &mut r,
                "last_healthy_commit_timestamp",
                "Commit time of the newest commit recorded healthy for the environment",
                seconds.clone(),
            ),
            rollbacks: add(
                &mut r,
                "rollbacks",
                "Rollbacks started after an unhealthy apply",
                None,
            ),
            drifted_objects: add(
                &mut r,
                "drifted_objects",
                "Live objects that differ from the desired state at the last drift check",
                None,
            ),
            applied_objects: add(
                &mut r,
                "applied_objects",
                "Objects created, updated or deleted by applies",
                None,
            ),
            // 50 ms … ~100 s.
            git_fetch_duration: add_with(
                &mut r,
                "git_fetch_duration",
                "Duration of fetches from the config repository, successful or not",
                seconds,
                Histogram::new(exponential_buckets(0.05, 2.0, 12)),
            ),
            git_fetch_failures: add(
                &mut r,
                "git_fetch_failures",
                "Fetches from the config repository that failed",
                None,
            ),
            notes_push_retries: add(
                &mut r,
                "notes_push_retries",
                "Notes pushes retried after the remote rejected them",
                None,
            ),
            transient_retries: add(
                &mut r,
                "transient_retries",
                "Passes that failed for a passing reason (API 5xx/429, timeouts, lost connections) and are retried with the same commit",
                None,
            ),
            untrusted_notes: add(
                &mut r,
                "untrusted_notes",
                "Status records ignored because no trusted key signed them (each counted once per commit)",
                None,
            ),
            notifications: notifications_family(&mut r),
            ha: register_ha(&mut r),
            webhook_requests: webhook_family(&mut r),
            registry: r,
        })
    }

    fn env(env: &str) -> EnvLabels {
        EnvLabels {
            environment: env.to_owned(),
        }
    }

    /// One reconcile of `env` finished with `outcome` (one of [`OUTCOMES`]) after `seconds`.
    pub fn reconcile_finished(&self, env: &str, outcome: &str, seconds: f64) {
        let label = closed_set(outcome, OUTCOMES);
        if label == "other" {
            tracing::debug!(
                environment = env,
                outcome,
                "unknown reconcile outcome recorded as other"
            );
        }
        self.reconciles
            .get_or_create(&OutcomeLabels {
                environment: env.to_owned(),
                outcome: label,
            })
            .inc();
        self.reconcile_duration
            .get_or_create(&Self::env(env))
            .observe(seconds.max(0.0));
    }

    /// The newest healthy commit of `env` has commit time `unix_seconds`.
    pub fn last_healthy_commit(&self, env: &str, unix_seconds: i64) {
        self.last_healthy_commit
            .get_or_create(&Self::env(env))
            .set(unix_seconds);
    }

    /// A rollback of `env` started.
    pub fn rollback(&self, env: &str) {
        self.rollbacks.get_or_create(&Self::env(env)).inc();
    }

    /// The last drift check of `env` found `count` drifted objects.
    pub fn drifted_objects(&self, env: &str, count: i64) {
        self.drifted_objects
            .get_or_create(&Self::env(env))
            .set(count);
    }

    /// An apply to `env` performed `count` objects of `action` (one of [`ACTIONS`]).
    pub fn applied_objects(&self, env: &str, action: &str, count: u64) {
        let label = closed_set(action, ACTIONS);
        self.applied_objects
            .get_or_create(&ActionLabels {
                environment: env.to_owned(),
                action: label,
            })
            .inc_by(count);
    }

    /// A fetch from the config repository took `seconds`; `ok` is false when it failed.
    pub fn git_fetch(&self, seconds: f64, ok: bool) {
        self.git_fetch_duration.observe(seconds.max(0.0));
        if !ok {
            self.git_fetch_failures.inc();
        }
    }

    /// A pass of `env` failed for a reason that may pass (`stage`: one of `STAGES`) and will be
    /// retried with the same commit.
    pub fn transient_retry(&self, env: &str, stage: &str) {
        self.transient_retries
            .get_or_create(&StageLabels {
                environment: env.to_owned(),
                stage: closed_set(stage, STAGES),
            })
            .inc();
    }

    /// A record of `env` (or `previews`) was ignored for `reason` (one of [`UNTRUSTED`]).
    pub fn untrusted_note(&self, env: &str, reason: &str) {
        self.untrusted_notes
            .get_or_create(&ReasonLabels {
                environment: env.to_owned(),
                reason: closed_set(reason, UNTRUSTED),
            })
            .inc();
    }

    /// A notification to `target` ended with `result` (see [`NOTIFY_RESULTS`]).
    pub fn notification(&self, target: &str, result: &str) {
        self.notifications
            .get_or_create(&NotifyLabels {
                target: closed_set(target, NOTIFY_TARGETS),
                result: closed_set(result, NOTIFY_RESULTS),
            })
            .inc();
    }

    /// A push-event request from `source` ended with `result` (see [`WEBHOOK_RESULTS`]).
    pub fn webhook_request(&self, source: &str, result: &str) {
        self.webhook_requests
            .get_or_create(&WebhookLabels {
                source: closed_set(source, WEBHOOK_SOURCES),
                result: closed_set(result, WEBHOOK_RESULTS),
            })
            .inc();
    }

    /// A notes push needed `retries` additional attempts.
    /// Whether this host now leads `env` (and, when it starts leading, one more transition).
    pub fn leader(&self, env: &str, leading: bool) {
        self.ha
            .leader
            .get_or_create(&Self::env(env))
            .set(i64::from(leading));
        if leading {
            self.ha
                .lease_transitions
                .get_or_create(&Self::env(env))
                .inc();
        }
    }

    pub fn notes_push_retries(&self, retries: u64) {
        self.notes_push_retries.inc_by(retries);
    }

    /// OpenMetrics text of every metric, ending with `# EOF`.
    pub fn try_encode(&self) -> Result<String, ServiceError> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .map_err(ServiceError::Encode)?;
        Ok(out)
    }

    /// OpenMetrics text of every metric, ending with `# EOF`. If encoding fails (it cannot for
    /// the metric types used here) the error is logged and a valid, empty exposition returned.
    pub fn encode(&self) -> String {
        match self.try_encode() {
            Ok(text) => text,
            Err(error) => {
                tracing::error!(error = %error, "metrics encoding failed");
                "# EOF\n".to_owned()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_line<'a>(text: &'a str, name_and_labels: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(name_and_labels))
    }

    #[test]
    fn empty_registry_encodes_with_eof() {
        let m = Metrics::new();
        let text = m.encode();
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("# TYPE gitopsd_build info"), "{text}");
        assert!(text.contains("gitopsd_build_info{version=\""), "{text}");
    }

    #[test]
    fn every_call_shows_up_with_its_labels() {
        let m = Metrics::new();
        m.reconcile_finished("prod", "healthy", 12.5);
        m.reconcile_finished("prod", "healthy", 1.0);
        m.reconcile_finished("staging", "rolled-back", 100.0);
        m.last_healthy_commit("prod", 1_700_000_000);
        m.rollback("staging");
        m.drifted_objects("prod", 3);
        m.applied_objects("prod", "create", 4);
        m.applied_objects("prod", "delete", 1);
        m.git_fetch(0.2, true);
        m.git_fetch(3.0, false);
        m.notes_push_retries(2);
        m.notification("alertmanager", "sent");
        m.notification("webhook", "dropped");
        let text = m.encode();
        assert!(text.ends_with("# EOF\n"));

        let expect = [
            (
                "gitopsd_reconciles_total{environment=\"prod\",outcome=\"healthy\"}",
                "2",
            ),
            (
                "gitopsd_reconciles_total{environment=\"staging\",outcome=\"rolled-back\"}",
                "1",
            ),
            (
                "gitopsd_reconcile_duration_seconds_count{environment=\"prod\"}",
                "2",
            ),
            (
                "gitopsd_reconcile_duration_seconds_sum{environment=\"prod\"}",
                "13.5",
            ),
            (
                "gitopsd_last_healthy_commit_timestamp_seconds{environment=\"prod\"}",
                "1700000000",
            ),
            ("gitopsd_rollbacks_total{environment=\"staging\"}", "1"),
            ("gitopsd_drifted_objects{environment=\"prod\"}", "3"),
            (
                "gitopsd_applied_objects_total{environment=\"prod\",action=\"create\"}",
                "4",
            ),
            (
                "gitopsd_applied_objects_total{environment=\"prod\",action=\"delete\"}",
                "1",
            ),
            ("gitopsd_git_fetch_duration_seconds_count", "2"),
            ("gitopsd_git_fetch_failures_total", "1"),
            ("gitopsd_notes_push_retries_total", "2"),
            (
                "gitopsd_notifications_total{target=\"alertmanager\",result=\"sent\"}",
                "1",
            ),
            (
                "gitopsd_notifications_total{target=\"webhook\",result=\"dropped\"}",
                "1",
            ),
        ];
        for (series, value) in expect {
            let line = sample_line(&text, &format!("{series} "))
                .unwrap_or_else(|| panic!("missing {series} in\n{text}"));
            assert_eq!(line, format!("{series} {value}"), "in\n{text}");
        }
        for ty in [
            "# TYPE gitopsd_reconciles counter",
            "# TYPE gitopsd_reconcile_duration_seconds histogram",
            "# UNIT gitopsd_reconcile_duration_seconds seconds",
            "# TYPE gitopsd_last_healthy_commit_timestamp_seconds gauge",
            "# TYPE gitopsd_git_fetch_duration_seconds histogram",
        ] {
            assert!(text.contains(ty), "missing {ty} in\n{text}");
        }
    }

    #[test]
    fn unknown_label_values_are_folded_into_other() {
        let m = Metrics::new();
        m.reconcile_finished("prod", "0123456789abcdef0123456789abcdef01234567", 1.0);
        m.applied_objects("prod", "Deployment/web", 1);
        let text = m.encode();
        assert!(!text.contains("0123456789abcdef"), "{text}");
        assert!(!text.contains("Deployment/web"), "{text}");
        assert!(
            text.contains("gitopsd_reconciles_total{environment=\"prod\",outcome=\"other\"} 1")
        );
        assert!(
            text.contains("gitopsd_applied_objects_total{environment=\"prod\",action=\"other\"} 1")
        );
    }
}
