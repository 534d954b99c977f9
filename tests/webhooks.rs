//! The push-event receiver (issue 15): with a 10-minute poll over HTTPS, a signed GitHub, GitLab or
//! generic push event makes the daemon fetch at once and apply the new commit; bad signatures,
//! wrong tokens, unknown paths, other methods, oversized bodies and pings trigger nothing.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use gitopsd::status::Outcome;
use hmac::{KeyInit, Mac};
use support::gitopsd::{Daemon, Fixture, configmap, configmap_data, json_lines, wait_for};

/// A raw HTTP/1.1 request; the status code and body of the answer.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // A server may answer (413) before reading a large body: a failed write is not the test's subject.
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2_hmac::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// The `address` of the first log event with `message`.
fn logged_address(daemon: &Daemon, message: &str) -> SocketAddr {
    let log = daemon.log.clone();
    let mut addr = None;
    wait_for(message, Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        addr = json_lines(&text)
            .iter()
            .find(|e| e["message"] == message)
            .and_then(|e| e["address"].as_str().and_then(|a| a.parse().ok()));
        addr.is_some()
    });
    addr.unwrap()
}

/// One sample of the daemon's /metrics (0 when absent).
fn metric(addr: SocketAddr, series: &str) -> f64 {
    let (code, body) = http(addr, "GET", "/metrics", &[], b"");
    assert_eq!(code, 200);
    body.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

const FETCHES: &str = "gitopsd_git_fetch_duration_seconds_count";

fn requests(source: &str, result: &str) -> String {
    format!("gitopsd_webhook_requests_total{{source=\"{source}\",result=\"{result}\"}}")
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_push_events_fetch_at_once_and_nothing_else_triggers() {
    let tb = require_testbed!();
    let f = Fixture::with(tb, "hooks", |_| {}).await;
    f.repo
        .write("envs/app/cm.yaml", &configmap("app", &[("v", "1")]));
    let c1 = f.repo.commit_push("first");
    let dir = f.gitopsd.dir().to_path_buf();
    for (name, secret) in [
        ("gh", "gh-secret"),
        ("gl", "gl-token"),
        ("gen", "gen-secret"),
    ] {
        std::fs::write(dir.join(name), format!("{secret}\n")).unwrap();
    }
    let text = f.gitopsd.config_text().replace("poll: 1s", "poll: 10m");
    std::fs::write(&f.gitopsd.config, text).unwrap();
    f.gitopsd.append_config(&format!(
        "webhooks_listen: 127.0.0.1:0\nwebhook_secrets:\n  github_secret_file: {}\n  gitlab_token_file: {}\n  generic_secret_file: {}\n",
        dir.join("gh").display(),
        dir.join("gl").display(),
        dir.join("gen").display()
    ));
    let mut daemon = f.gitopsd.spawn_run();
    let hooks = logged_address(&daemon, "receiving push webhooks");
    let metrics = logged_address(&daemon, "endpoints listening");
    support::gitopsd::wait_daemon(
        &mut daemon,
        "c1 recorded",
        Duration::from_secs(60),
        || async { f.repo.record(&c1, &f.env.name).is_some() },
    )
    .await;

    // c2 waits for a fetch: none of these may cause one.
    f.repo
        .write("envs/app/cm.yaml", &configmap("app", &[("v", "2")]));
    let c2 = f.repo.commit_push("second");
    let fetches = metric(metrics, FETCHES);
    let body = br#"{"ref":"refs/heads/main"}"#;
    let bad = [
        (
            "/hooks/github",
            vec![
                ("X-GitHub-Event", "push".to_string()),
                ("X-Hub-Signature-256", sign("wrong", body)),
            ],
            401,
        ),
        (
            "/hooks/github",
            vec![("X-GitHub-Event", "push".to_string())],
            401,
        ),
        (
            "/hooks/gitlab",
            vec![
                ("X-Gitlab-Event", "Push Hook".to_string()),
                ("X-Gitlab-Token", "gl-tokeN".to_string()),
            ],
            401,
        ),
        (
            "/hooks/generic",
            vec![("X-Gitopsd-Signature", sign("gh-secret", body))],
            401,
        ),
        ("/hooks/bitbucket", vec![], 404),
        ("/other", vec![], 404),
        (
            "/hooks/github",
            vec![
                ("X-GitHub-Event", "ping".to_string()),
                ("X-Hub-Signature-256", sign("gh-secret", body)),
            ],
            200,
        ),
    ];
    for (path, headers, want) in &bad {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            http(hooks, "POST", path, &h, body).0,
            *want,
            "{path} {headers:?}"
        );
    }
    let good_sig = sign("gh-secret", body);
    let push = [
        ("X-GitHub-Event", "push"),
        ("X-Hub-Signature-256", good_sig.as_str()),
    ];
    assert_eq!(
        http(hooks, "GET", "/hooks/github", &push, body).0,
        404,
        "GET"
    );
    let big = vec![b'x'; gitopsd::service::MAX_BODY + 1];
    let big_sig = sign("gh-secret", &big);
    let big_push = [
        ("X-GitHub-Event", "push"),
        ("X-Hub-Signature-256", big_sig.as_str()),
    ];
    assert_eq!(http(hooks, "POST", "/hooks/github", &big_push, &big).0, 413);
    assert_eq!(metric(metrics, &requests("github", "unauthorized")), 2.0);
    assert_eq!(metric(metrics, &requests("github", "ignored")), 1.0);
    assert_eq!(metric(metrics, &requests("github", "too_large")), 1.0);
    assert_eq!(metric(metrics, &requests("gitlab", "unauthorized")), 1.0);
    assert_eq!(metric(metrics, FETCHES), fetches, "nothing fetched");
    assert!(
        f.repo.record(&c2, &f.env.name).is_none(),
        "c2 not applied yet"
    );

    // A signed GitHub push: fetched and applied well before the 10-minute poll.
    let t0 = Instant::now();
    assert_eq!(http(hooks, "POST", "/hooks/github", &push, body).0, 202);
    support::gitopsd::wait_daemon(
        &mut daemon,
        "c2 applied",
        Duration::from_secs(60),
        || async {
            configmap_data(&f.client, &f.ns, "app")
                .await
                .is_some_and(|d| d["v"] == "2")
        },
    )
    .await;
    eprintln!("webhook → c2 applied: {:.2} s", t0.elapsed().as_secs_f64());
    wait_for("c2 recorded", Duration::from_secs(30), || {
        f.repo.record(&c2, &f.env.name).is_some()
    });
    assert_eq!(
        f.repo.expect_record(&c2, &f.env.name).outcome,
        Outcome::Healthy
    );

    // GitLab's token and the generic signature work the same way.
    for (n, (path, headers)) in [
        (
            "/hooks/gitlab",
            vec![
                ("X-Gitlab-Event", "Push Hook".to_string()),
                ("X-Gitlab-Token", "gl-token".to_string()),
            ],
        ),
        (
            "/hooks/generic",
            vec![("X-Gitopsd-Signature", sign("gen-secret", body))],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let v = (3 + n).to_string();
        f.repo
            .write("envs/app/cm.yaml", &configmap("app", &[("v", &v)]));
        f.repo.commit_push(&format!("commit {v}"));
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let t0 = Instant::now();
        assert_eq!(http(hooks, "POST", path, &h, body).0, 202, "{path}");
        support::gitopsd::wait_daemon(&mut daemon, path, Duration::from_secs(60), || async {
            configmap_data(&f.client, &f.ns, "app")
                .await
                .is_some_and(|d| d["v"] == v)
        })
        .await;
        eprintln!("{path} → applied: {:.2} s", t0.elapsed().as_secs_f64());
    }
    assert_eq!(metric(metrics, &requests("github", "accepted")), 1.0);
    assert_eq!(metric(metrics, &requests("gitlab", "accepted")), 1.0);
    assert_eq!(metric(metrics, &requests("generic", "accepted")), 1.0);
    daemon.terminate(Duration::from_secs(30));
}

#[test]
fn validate_refuses_a_receiver_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    std::fs::write(&key, "").unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "repository: {{url: /nonexistent.git}}\nstate_dir: {}\nnotes_signing_key_file: {}\nwebhooks_listen: 0.0.0.0:9478\nenvironments: [{{name: dev, path: envs/dev}}]\n",
            dir.path().join("state").display(),
            key.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gitopsd"))
        .args(["validate", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("webhooks_listen") && text.contains("webhook_secrets"),
        "{text}"
    );
}
