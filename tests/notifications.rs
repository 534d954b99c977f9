//! Notifications (issue 15): `gitopsd run` reports a rejected commit to the testbed's real
//! Alertmanager (read back through its API v2), a restarted daemon re-opens the alert from git,
//! and a good commit resolves it; a Slack-format webhook reaches a receiver the test runs itself
//! (the peer), with the header from `headers_file`, which never shows in the log. Alert latency
//! is printed, never asserted.
//!
//! Each test has its own repository, namespace and environment name (the alerts are filtered by
//! the `environment` label), so tests run in parallel with others on the same testbed.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use gitopsd::status::Outcome;
use serde_json::Value;
use support::gitopsd::{Daemon, Fixture, configmap, wait_daemon};

const BOGUS: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bogus\ndata:\n  k: v\nspec:\n  unknown: field\n";

/// Waits for the final record of `env` on `commit` and checks its outcome.
async fn wait_outcome(daemon: &mut Daemon, f: &Fixture, commit: &str, outcome: Outcome) {
    wait_daemon(
        daemon,
        &format!("{outcome} record of {commit}"),
        Duration::from_secs(90),
        || {
            let r = f
                .repo
                .record(commit, &f.env.name)
                .filter(|r| !r.rolling_back);
            std::future::ready(r.is_some_and(|r| r.outcome == outcome))
        },
    )
    .await;
}

/// The alerts Alertmanager holds for `env` that are active now (resolved ones are not served).
async fn active_alerts(am: &str, env: &str) -> Vec<Value> {
    let url = format!("{am}/api/v2/alerts?active=true&filter=environment%3D%22{env}%22");
    let Ok(response) = reqwest::get(&url).await else {
        return Vec::new();
    };
    let text = response.text().await.unwrap_or_default();
    let alerts: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let now = SystemTime::now();
    alerts
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a["status"]["state"] == "active")
        .filter(|a| {
            a["endsAt"]
                .as_str()
                .and_then(|t| humantime::parse_rfc3339(t).ok())
                .is_none_or(|ends| ends > now)
        })
        .collect()
}

/// Posts `alert` back to Alertmanager as resolved (endsAt = now), as the test's own client.
async fn resolve_by_hand(am: &str, alert: &Value) {
    let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let body = serde_json::json!([{
        "labels": alert["labels"],
        "annotations": alert["annotations"],
        "startsAt": alert["startsAt"],
        "endsAt": now,
    }]);
    let response = reqwest::Client::new()
        .post(format!("{am}/api/v2/alerts"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("post to alertmanager");
    assert!(response.status().is_success(), "{}", response.status());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_commit_fires_an_alert_a_restart_reopens_it_and_a_good_commit_resolves_it() {
    let tb = require_testbed!();
    let am = tb.alertmanager();
    let f = Fixture::with(tb, "notify-am", |_| {}).await;
    f.gitopsd.append_config(&format!(
        "notifications:\n  alertmanager: {{ url: {am}, timeout: 5s }}\n  resend_interval: 60s\n"
    ));
    f.repo.write(
        "envs/app/settings.yaml",
        &configmap("settings", &[("v", "1")]),
    );
    let good = f.repo.commit_push("good");
    let mut daemon = f.gitopsd.spawn_run();
    wait_outcome(&mut daemon, &f, &good, Outcome::Healthy).await;
    assert!(active_alerts(&am, &f.env.name).await.is_empty());

    f.repo.write("envs/app/bogus.yaml", BOGUS);
    let bad = f.repo.commit_push("bogus");
    let pushed = Instant::now();
    let seen = Mutex::new(None);
    wait_daemon(
        &mut daemon,
        "the GitopsdRejected alert in Alertmanager",
        Duration::from_secs(90),
        || {
            let (seen, am, env, bad) = (&seen, &am, &f.env.name, &bad);
            async move {
                let alerts = active_alerts(am, env).await;
                let found = alerts
                    .into_iter()
                    .find(|a| a["annotations"]["commit_full"] == bad.as_str());
                let done = found.is_some();
                *seen.lock().unwrap() = found;
                done
            }
        },
    )
    .await;
    let visible_at = SystemTime::now();
    let push_to_visible = pushed.elapsed();
    let alert = seen.into_inner().unwrap().expect("seen");
    let labels = &alert["labels"];
    assert_eq!(labels["alertname"], "GitopsdRejected", "{alert}");
    assert_eq!(labels["environment"], f.env.name.as_str(), "{alert}");
    assert_eq!(labels["severity"], "warning", "{alert}");
    assert!(
        labels["instance"]
            .as_str()
            .is_some_and(|i| i.starts_with("gitopsd-")),
        "{alert}"
    );
    assert_eq!(
        labels.as_object().map(|l| l.len()),
        Some(4),
        "no commit in labels: {alert}"
    );
    assert_eq!(alert["annotations"]["commit"], &bad[..12], "{alert}");
    let summary = alert["annotations"]["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("rejected") && summary.contains("bogus.yaml:"),
        "{summary}"
    );
    let record = f.repo.expect_record(&bad, &f.env.name);
    assert_eq!(record.outcome, Outcome::Rejected);
    let finished = humantime::parse_rfc3339(&record.finished).expect("finished time");
    // startsAt is when the daemon's notifier took the step (after the note was written).
    let starts = alert["startsAt"]
        .as_str()
        .and_then(|t| humantime::parse_rfc3339(t).ok())
        .expect("startsAt");
    eprintln!(
        "alert latency: step → visible in Alertmanager {:?}; record finished → visible {:?}; push → visible {push_to_visible:?} (polled every 50 ms)",
        visible_at.duration_since(starts).unwrap_or_default(),
        visible_at.duration_since(finished).unwrap_or_default()
    );

    // Restart-safe: with the alert gone from Alertmanager (as if it had expired while gitopsd was
    // down), a restarted daemon re-opens it from what git says.
    daemon.kill9();
    resolve_by_hand(&am, &alert).await;
    assert!(active_alerts(&am, &f.env.name).await.is_empty());
    let mut daemon = f.gitopsd.spawn_run();
    wait_daemon(
        &mut daemon,
        "the alert re-opened after a restart",
        Duration::from_secs(90),
        || async {
            active_alerts(&am, &f.env.name)
                .await
                .iter()
                .any(|a| a["annotations"]["commit_full"] == bad.as_str())
        },
    )
    .await;

    f.repo.remove("envs/app/bogus.yaml");
    let fixed = f.repo.commit_push("fixed");
    let pushed = Instant::now();
    wait_daemon(
        &mut daemon,
        "the alert resolved",
        Duration::from_secs(90),
        || async { active_alerts(&am, &f.env.name).await.is_empty() },
    )
    .await;
    eprintln!(
        "resolve latency: push of the good commit → gone from active alerts {:?}",
        pushed.elapsed()
    );
    wait_outcome(&mut daemon, &f, &fixed, Outcome::Healthy).await;
    let log = daemon.log_text();
    assert!(
        log.contains("\"alertname\":\"GitopsdRejected\""),
        "the change is logged"
    );
}

/// Requests a tiny HTTP/1.1 server received: (head, body). It answers 200 to every request.
type Received = Arc<Mutex<Vec<(String, String)>>>;

fn start_receiver() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://{}/hook/T000/B000/secretpath",
        listener.local_addr().unwrap()
    );
    let received: Received = Arc::default();
    let sink = Arc::clone(&received);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head, body) = loop {
                let n = s.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break (String::new(), String::new());
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                let Some(end) = text.find("\r\n\r\n") else {
                    continue;
                };
                let head = text[..end].to_string();
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    break (
                        head,
                        String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string(),
                    );
                }
            };
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            sink.lock().unwrap().push((head, body));
        }
    });
    (url, received)
}

/// The `text` of every Slack message received.
fn texts(received: &Received) -> Vec<String> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(_, b)| serde_json::from_str::<Value>(b).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slack_webhook_announces_a_rejection_and_its_recovery_with_the_header_from_a_file() {
    let tb = require_testbed!();
    let (url, received) = start_receiver();
    let f = Fixture::with(tb, "notify-hook", |_| {}).await;
    let headers = f.gitopsd.dir().join("hook-headers");
    std::fs::write(
        &headers,
        "# sent with every request\nAuthorization: Bearer hook-token-5ecret\n",
    )
    .unwrap();
    let url_file = f.gitopsd.dir().join("hook-url");
    std::fs::write(&url_file, format!("{url}\n")).unwrap();
    f.gitopsd.append_config(&format!(
        "notifications:\n  webhooks:\n    - {{ url_file: {}, format: slack, headers_file: {} }}\n",
        url_file.display(),
        headers.display()
    ));
    f.repo.write(
        "envs/app/settings.yaml",
        &configmap("settings", &[("v", "1")]),
    );
    let good = f.repo.commit_push("good");
    let mut daemon = f.gitopsd.spawn_run();
    wait_outcome(&mut daemon, &f, &good, Outcome::Healthy).await;

    f.repo.write("envs/app/bogus.yaml", BOGUS);
    let bad = f.repo.commit_push("bogus");
    let short = &bad[..12];
    wait_daemon(
        &mut daemon,
        "the Slack message of the rejection",
        Duration::from_secs(90),
        || {
            std::future::ready(
                texts(&received)
                    .iter()
                    .any(|t| t.contains("rejected") && t.contains(short)),
            )
        },
    )
    .await;
    f.repo.remove("envs/app/bogus.yaml");
    f.repo.commit_push("fixed");
    wait_daemon(
        &mut daemon,
        "the Slack message of the recovery",
        Duration::from_secs(90),
        || {
            std::future::ready(
                texts(&received)
                    .iter()
                    .any(|t| t.contains("[resolved]") && t.contains(short)),
            )
        },
    )
    .await;

    let all = texts(&received);
    // A healthy start announces nothing (the quiet resolves go to Alertmanager only).
    assert_eq!(all.len(), 2, "{all:#?}");
    assert!(
        all[0].contains(&format!("[warning] {}: rejected {short}", f.env.name)),
        "{}",
        all[0]
    );
    assert!(
        all[0].contains("bogus.yaml:"),
        "the first error's file:line: {}",
        all[0]
    );
    for (head, _) in received.lock().unwrap().iter() {
        assert!(
            head.starts_with("POST /hook/T000/B000/secretpath "),
            "{head}"
        );
        assert!(head.contains("Bearer hook-token-5ecret"), "{head}");
    }
    let log = daemon.log_text();
    assert!(
        !log.contains("hook-token-5ecret") && !log.contains("secretpath"),
        "secrets in the log:\n{log}"
    );
}

#[test]
fn validate_names_bad_notification_settings_by_key_path() {
    let g = support::gitopsd::Gitopsd::from_text(
        "repository: { url: /nonexistent/repo.git }\nstate_dir: /tmp/x\ntrust_unsigned_notes: true\nenvironments: []\n\
         notifications:\n  alertmanager: { url: 'ftp://am.example' }\n  webhooks:\n    - { url: 'https://h.example/x', format: slack, headers_file: /nonexistent/headers }\n",
    );
    let out = g.cmd("validate", &[]);
    out.assert_failure("validate");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("notifications.alertmanager.url"), "{text}");
    assert!(
        text.contains("notifications.webhooks[0].headers_file"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_that_adds_alertmanager_reports_the_standing_rejection() {
    let tb = require_testbed!();
    let am = tb.alertmanager();
    let f = Fixture::with(tb, "notify-hup", |_| {}).await;
    f.repo.write(
        "envs/app/settings.yaml",
        &configmap("settings", &[("v", "1")]),
    );
    f.repo.write("envs/app/bogus.yaml", BOGUS);
    let bad = f.repo.commit_push("bogus from the start");
    let mut daemon = f.gitopsd.spawn_run();
    wait_outcome(&mut daemon, &f, &bad, Outcome::Rejected).await;
    assert!(active_alerts(&am, &f.env.name).await.is_empty());

    f.gitopsd.append_config(&format!(
        "notifications:\n  alertmanager: {{ url: {am} }}\n"
    ));
    let status = std::process::Command::new("kill")
        .args(["-HUP", &daemon.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
    wait_daemon(
        &mut daemon,
        "the standing rejection in Alertmanager after SIGHUP",
        Duration::from_secs(60),
        || async {
            active_alerts(&am, &f.env.name).await.iter().any(|a| {
                a["labels"]["alertname"] == "GitopsdRejected"
                    && a["annotations"]["commit_full"] == bad.as_str()
            })
        },
    )
    .await;
}
