//! Webhooks: each announced change is one POST, in order, retried with backoff up to a bound.
//! `slack`: `{"text": "…"}`, one readable line (Slack's control characters escaped, so an object
//! name cannot mention a channel); `json`: gitopsd's own object, documented in the README.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Event;
use super::delivery::{DRAIN, Endpoint};
use crate::config::WebhookFormat;
use crate::service::Metrics;

/// Version of the `json` format (bumped only on incompatible changes).
const JSON_VERSION: u32 = 1;

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// Slack reads `&`, `<` and `>` as markup (`<!channel>`, links).
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The line a person reads.
pub(super) fn line(instance: &str, ev: &Event) -> String {
    let a = &ev.change.alert;
    if ev.change.open {
        format!(
            "gitopsd {instance} [{}] {}",
            a.problem.severity(),
            a.summary
        )
    } else {
        format!(
            "gitopsd {instance} [resolved] {}: {} {} resolved; now at {}",
            ev.env,
            a.problem.event(),
            short(&a.commit),
            short(&ev.change.at_commit)
        )
    }
}

/// The request body of `ev` in `format`.
pub(super) fn body(format: WebhookFormat, instance: &str, ev: &Event) -> Value {
    let a = &ev.change.alert;
    match format {
        WebhookFormat::Slack => json!({ "text": slack_escape(&line(instance, ev)) }),
        WebhookFormat::Json => json!({
            "version": JSON_VERSION,
            "instance": instance,
            "environment": ev.env,
            "event": if ev.change.open { a.problem.event() } else { "recovered" },
            "status": if ev.change.open { "firing" } else { "resolved" },
            "alertname": a.problem.alertname(),
            "severity": a.problem.severity(),
            "commit": a.commit,
            "commit_short": short(&a.commit),
            "current_commit": ev.change.at_commit,
            "summary": line(instance, ev),
            "at": humantime::format_rfc3339_millis(ev.at).to_string(),
        }),
    }
}

/// Runs until `cancel`, then sends what is queued with one attempt each (within [`DRAIN`]).
pub(super) async fn run(
    endpoint: Endpoint,
    format: WebhookFormat,
    instance: String,
    mut rx: mpsc::Receiver<Event>,
    metrics: Option<Arc<Metrics>>,
    cancel: CancellationToken,
) {
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => break,
            ev = rx.recv() => match ev {
                Some(ev) => ev,
                None => return,
            },
        };
        let bytes = body(format, &instance, &ev).to_string().into_bytes();
        endpoint.deliver(&bytes, metrics.as_deref(), &cancel).await;
    }
    let drain = async {
        while let Ok(ev) = rx.try_recv() {
            let bytes = body(format, &instance, &ev).to_string().into_bytes();
            endpoint.deliver(&bytes, metrics.as_deref(), &cancel).await;
        }
    };
    let _ = tokio::time::timeout(DRAIN, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::event::{Alert, Change, Problem};

    fn event(open: bool) -> Event {
        Event {
            env: "prod".into(),
            change: Change {
                open,
                alert: Alert {
                    problem: Problem::Rejected,
                    commit: "0123456789abcdef0123456789abcdef01234567".into(),
                    summary: "prod: rejected 0123456789ab: 1 errors: ConfigMap <!channel> (a.yaml:3): bad".into(),
                },
                at_commit: "fedcba9876543210fedcba9876543210fedcba98".into(),
                announce: true,
            },
            at: std::time::SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn slack_text_is_one_escaped_line() {
        let v = body(WebhookFormat::Slack, "infra", &event(true));
        let text = v["text"].as_str().unwrap_or_default();
        assert!(
            text.starts_with("gitopsd infra [warning] prod: rejected 0123456789ab"),
            "{text}"
        );
        assert!(
            text.contains("&lt;!channel&gt;") && !text.contains("<!"),
            "{text}"
        );
        let v = body(WebhookFormat::Slack, "infra", &event(false));
        assert_eq!(
            v["text"],
            "gitopsd infra [resolved] prod: rejected 0123456789ab resolved; now at fedcba987654"
        );
    }

    #[test]
    fn json_is_the_documented_object() {
        let v = body(WebhookFormat::Json, "infra", &event(false));
        assert_eq!(v["version"], 1);
        assert_eq!(v["event"], "recovered");
        assert_eq!(v["status"], "resolved");
        assert_eq!(v["alertname"], "GitopsdRejected");
        assert_eq!(v["commit_short"], "0123456789ab");
        assert_eq!(
            v["current_commit"],
            "fedcba9876543210fedcba9876543210fedcba98"
        );
        assert_eq!(v["at"], "1970-01-01T00:00:00.000Z");
        let keys: Vec<&String> = v
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(keys.len(), 12);
    }
}
