//! Alertmanager (API v2, `POST /api/v2/alerts`): keeps the open alerts of every environment and
//! posts them again every resend interval with `endsAt` a few intervals ahead, as Prometheus does,
//! so Alertmanager never resolves a standing problem on its own; a resolve posts `endsAt` = now.
//! Posts are state, not events: changes that arrive while a post is retried are merged into the
//! next one. Routing, grouping, silences and escalation stay Alertmanager's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Event;
use super::delivery::{DRAIN, Endpoint};
use super::event::{Alert, Problem};
use crate::service::Metrics;

/// `endsAt` of an open alert: this many resend intervals ahead.
const ENDS_AFTER_RESENDS: u32 = 4;

/// One alert as posted.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Posted {
    pub env: String,
    pub alert: Alert,
    pub starts: SystemTime,
    /// Set when resolved.
    pub ends: Option<SystemTime>,
}

fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The request body for `alerts`; open ones end at `open_until`.
pub(super) fn payload(instance: &str, alerts: &[&Posted], open_until: SystemTime) -> Value {
    let items: Vec<Value> = alerts
        .iter()
        .map(|p| {
            let a = &p.alert;
            let mut annotations = json!({
                "summary": a.summary,
                "commit": a.commit.get(..12).unwrap_or(&a.commit),
                "commit_full": a.commit,
            });
            if a.summary.is_empty() {
                annotations["summary"] = json!(format!("{}: resolved", p.env));
            }
            json!({
                "labels": {
                    "alertname": a.problem.alertname(),
                    "environment": p.env,
                    "instance": instance,
                    "severity": a.problem.severity(),
                },
                "annotations": annotations,
                "startsAt": time(p.starts),
                "endsAt": time(p.ends.unwrap_or(open_until)),
            })
        })
        .collect();
    Value::Array(items)
}

/// The delivery task's state.
struct State {
    instance: String,
    open: BTreeMap<(String, Problem), Posted>,
    resolved: Vec<Posted>,
    dirty: bool,
}

impl State {
    fn apply(&mut self, ev: Event) {
        let key = (ev.env.clone(), ev.change.alert.problem);
        if ev.change.open {
            let starts = self.open.get(&key).map_or(ev.at, |p| p.starts);
            let posted = Posted {
                env: ev.env,
                alert: ev.change.alert,
                starts,
                ends: None,
            };
            self.open.insert(key, posted);
        } else {
            let mut posted = self.open.remove(&key).unwrap_or(Posted {
                env: ev.env,
                alert: ev.change.alert,
                starts: ev.at,
                ends: None,
            });
            posted.ends = Some(ev.at);
            self.resolved.push(posted);
        }
        self.dirty = true;
    }

    fn body(&self, resend: Duration) -> Vec<u8> {
        let until = SystemTime::now() + resend * ENDS_AFTER_RESENDS;
        let all: Vec<&Posted> = self.open.values().chain(&self.resolved).collect();
        payload(&self.instance, &all, until)
            .to_string()
            .into_bytes()
    }
}

/// Runs until `cancel`, then posts what is pending once more (within [`DRAIN`]).
pub(super) async fn run(
    endpoint: Endpoint,
    instance: String,
    resend: Duration,
    mut rx: mpsc::Receiver<Event>,
    metrics: Option<Arc<Metrics>>,
    cancel: CancellationToken,
) {
    let endpoint = endpoint.join("/api/v2/alerts");
    let mut s = State {
        instance,
        open: BTreeMap::new(),
        resolved: Vec::new(),
        dirty: false,
    };
    let mut next_resend = Instant::now() + resend;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            ev = rx.recv() => match ev {
                Some(ev) => s.apply(ev),
                None => break,
            },
            _ = tokio::time::sleep_until(next_resend) => {
                next_resend = Instant::now() + resend;
                s.dirty |= !s.open.is_empty();
            }
        }
        // Whatever else is queued goes into the same post.
        while let Ok(ev) = rx.try_recv() {
            s.apply(ev);
        }
        if s.dirty {
            // Given up or not, the open alerts go again at the next resend.
            endpoint
                .deliver(&s.body(resend), metrics.as_deref(), &cancel)
                .await;
            s.resolved.clear();
            s.dirty = false;
        }
    }
    while let Ok(ev) = rx.try_recv() {
        s.apply(ev);
    }
    if s.dirty {
        let body = s.body(resend);
        let _ =
            tokio::time::timeout(DRAIN, endpoint.deliver(&body, metrics.as_deref(), &cancel)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_has_low_cardinality_labels_and_the_commit_in_annotations() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let open = Posted {
            env: "dev".into(),
            alert: Alert {
                problem: Problem::RollbackFailed,
                commit: "0123456789abcdef0123456789abcdef01234567".into(),
                summary: "dev: rollback-failed 0123456789ab".into(),
            },
            starts: t0,
            ends: None,
        };
        let mut resolved = open.clone();
        resolved.alert.problem = Problem::Drift;
        resolved.ends = Some(t0 + Duration::from_secs(5));
        let v = payload(
            "infra-main",
            &[&open, &resolved],
            t0 + Duration::from_secs(240),
        );
        let a = &v[0];
        assert_eq!(
            a["labels"],
            json!({"alertname": "GitopsdRollbackFailed", "environment": "dev", "instance": "infra-main", "severity": "critical"})
        );
        assert_eq!(a["annotations"]["commit"], "0123456789ab");
        assert_eq!(a["annotations"]["commit_full"], open.alert.commit);
        assert_eq!(a["startsAt"], "2027-01-15T08:00:00.000Z");
        assert_eq!(a["endsAt"], "2027-01-15T08:04:00.000Z");
        assert_eq!(v[1]["endsAt"], "2027-01-15T08:00:05.000Z");
        assert_eq!(v[1]["labels"]["severity"], "warning");
    }
}
