//! End to end (issue 14, parts 2 and 3): notes a pusher forges are ignored and reported, and
//! with `repository.verify` only commits signed by an allowed signer are applied.
//!
//! Each test has its own repository, namespace and environment name, so tests run in parallel.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use gitopsd::status::{Note, Outcome, Record};
use support::gitopsd::{Fixture, WorkRepo, configmap, configmap_data, json_lines, wait_daemon};

impl Fixture {
    fn write(&self, name: &str, text: &str) {
        self.repo.write(&format!("{}/{name}", self.env.path), text);
    }

    async fn value(&self) -> Option<String> {
        configmap_data(&self.client, &self.ns, "a")
            .await
            .and_then(|d| d.get("k").cloned())
    }

    fn record(&self, commit: &str) -> Record {
        self.repo.expect_record(commit, &self.env.name)
    }
}

/// What a pusher can do: write any note on `commit` and push the notes ref (fast-forward).
fn forge(repo: &WorkRepo, commit: &str, text: &str) {
    repo.fetch_notes();
    let file = repo.path().join("forged-note");
    std::fs::write(&file, text).unwrap();
    repo.git(&[
        "notes",
        "--ref=gitopsd",
        "add",
        "-f",
        "-F",
        file.to_str().unwrap(),
        commit,
    ]);
    repo.git(&[
        "push",
        "-q",
        "origin",
        "refs/notes/gitopsd:refs/notes/gitopsd",
    ]);
}

/// A note with one section, `record`, for `env`.
fn note_with(env: &str, record: Record) -> String {
    let mut note = Note::default();
    note.environments.insert(env.to_string(), record);
    note.render()
}

/// The WARN events of `stderr` about an ignored record of `commit`.
fn untrusted_warnings(stderr: &str, commit: &str) -> usize {
    json_lines(stderr)
        .iter()
        .filter(|e| {
            e["level"] == "WARN"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("not signed by a trusted key"))
                && e.to_string().contains(commit)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_healthy_notes_are_ignored_and_reported() {
    let tb = require_testbed!();
    let f = Fixture::with(tb, "forged-healthy", |_| {}).await;
    let env = f.env.name.clone();
    f.write("a.yaml", &configmap("a", &[("k", "1")]));
    let c1 = f.repo.commit_push("one");
    f.gitopsd.once(Some(&env)).assert_success("c1");
    let r1 = f.record(&c1);
    assert!(r1.signature.is_some(), "gitopsd signs its records: {r1:?}");

    // A signed healthy record replayed onto a new commit: the signature binds it to c1.
    f.write("a.yaml", &configmap("a", &[("k", "2")]));
    let c2 = f.repo.commit_push("two");
    forge(&f.repo, &c2, &f.repo.note_text(&c1).unwrap());
    let out = f.gitopsd.once(Some(&env));
    out.assert_success("c2 despite the forged note");
    assert_eq!(f.value().await.as_deref(), Some("2"), "{out}");
    assert_eq!(untrusted_warnings(&out.stderr, &c2), 1, "{out}");
    let r2 = f.record(&c2);
    assert_eq!(
        (r2.outcome, r2.counts.updated),
        (Outcome::Healthy, 1),
        "{r2:?}"
    );
    assert_ne!(r2.signature, r1.signature, "the forged record is replaced");

    // An unsigned record claiming healthy: shown by `status`, counted by the daemon.
    f.write("a.yaml", &configmap("a", &[("k", "3")]));
    let c3 = f.repo.commit_push("three");
    let claim = Record::new(
        Outcome::Healthy,
        Some(c2.clone()),
        "2026-01-01T00:00:00.000Z".into(),
    );
    forge(&f.repo, &c3, &note_with(&env, claim));
    let status = f.gitopsd.cmd("status", &["--output", "json"]);
    status.assert_success("status");
    let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(v[&env]["untrusted"][&c3], "unsigned", "{status}");
    assert_ne!(v[&env]["last_healthy"], c3.as_str(), "{status}");
    let text = f.gitopsd.cmd("status", &[]);
    assert!(
        text.stdout
            .contains(&format!("untrusted record ignored: {c3}: unsigned")),
        "{text}"
    );

    let mut daemon = f.gitopsd.spawn_run();
    wait_daemon(
        &mut daemon,
        "c3 applied",
        Duration::from_secs(90),
        || async { f.value().await.as_deref() == Some("3") },
    )
    .await;
    let log = daemon.log.clone();
    let mut addr = None;
    wait_daemon(
        &mut daemon,
        "the endpoints address",
        Duration::from_secs(30),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            addr = json_lines(&text)
                .iter()
                .find(|e| e["message"] == "endpoints listening")
                .and_then(|e| e["address"].as_str().map(str::to_string));
            std::future::ready(addr.is_some())
        },
    )
    .await;
    let metrics = reqwest::get(format!("http://{}/metrics", addr.unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line =
        format!("gitopsd_untrusted_notes_total{{environment=\"{env}\",reason=\"unsigned\"}} 1");
    assert!(metrics.contains(&line), "{line} in:\n{metrics}");
    assert_eq!(
        untrusted_warnings(&daemon.log_text(), &c3),
        1,
        "reported once"
    );
    assert_eq!(f.record(&c3).outcome, Outcome::Healthy);
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_rollback_and_pin_are_ignored() {
    let tb = require_testbed!();
    let f = Fixture::with(tb, "forged-rollback", |_| {}).await;
    let env = f.env.name.clone();
    f.write("a.yaml", &configmap("a", &[("k", "1")]));
    let c1 = f.repo.commit_push("one");
    f.gitopsd.once(Some(&env)).assert_success("c1");
    f.write("a.yaml", &configmap("a", &[("k", "2")]));
    let c2 = f.repo.commit_push("two");
    f.gitopsd.once(Some(&env)).assert_success("c2");

    // gitopsd's own signed record of c2, edited to say a rollback away from it is under way
    // (a restart would resume it and return to c1).
    let mut tampered = f.record(&c2);
    tampered.rolling_back = true;
    tampered.outcome = Outcome::Unhealthy;
    forge(&f.repo, &c2, &note_with(&env, tampered));
    let out = f.gitopsd.once(Some(&env));
    out.assert_success("no rollback");
    assert_eq!(untrusted_warnings(&out.stderr, &c2), 1, "{out}");
    assert_eq!(f.value().await.as_deref(), Some("2"), "{out}");
    assert!(f.record(&c1).reapplied.is_empty(), "c1 was not re-applied");
    let r2 = f.record(&c2);
    assert!(!r2.rolling_back && r2.outcome == Outcome::Healthy, "{r2:?}");

    // A pin on the next commit would keep it from being applied.
    f.write("a.yaml", &configmap("a", &[("k", "3")]));
    let c3 = f.repo.commit_push("three");
    let mut pin = Record::new(
        Outcome::Rejected,
        Some(c2.clone()),
        "2026-01-01T00:00:00.000Z".into(),
    );
    pin.pinned = Some("rejected: forged".into());
    forge(&f.repo, &c3, &note_with(&env, pin));
    let out = f.gitopsd.once(Some(&env));
    out.assert_success("c3 despite the forged pin");
    assert_eq!(f.value().await.as_deref(), Some("3"), "{out}");
    assert_eq!(f.record(&c3).pinned, None);
}

/// An ssh-keygen key in `dir` and its public line.
fn signing_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = support::ssh_keygen(&dir.join(name));
    let public = std::fs::read_to_string(dir.join(format!("{name}.pub"))).unwrap();
    (key, public.trim().to_string())
}

fn signed_commit(repo: &WorkRepo, key: &Path, message: &str) -> String {
    repo.git(&["add", "-A"]);
    let signingkey = format!("user.signingkey={}", key.display());
    repo.git(&[
        "-c",
        "gpg.format=ssh",
        "-c",
        &signingkey,
        "commit",
        "-q",
        "-S",
        "-m",
        message,
    ]);
    repo.push();
    repo.head()
}

#[tokio::test(flavor = "multi_thread")]
async fn only_commits_signed_by_an_allowed_signer_are_applied() {
    let tb = require_testbed!();
    let f = Fixture::with(tb, "verify", |_| {}).await;
    let env = f.env.name.clone();
    let keys = tempfile::tempdir().unwrap();
    let (alice, alice_pub) = signing_key(keys.path(), "alice");
    let (mallory, _) = signing_key(keys.path(), "mallory");
    let signers = keys.path().join("allowed_signers");
    std::fs::write(
        &signers,
        format!("alice@example.com namespaces=\"git\" {alice_pub}\n"),
    )
    .unwrap();
    let config = f.gitopsd.config_text();
    assert_eq!(config.matches("  poll: 1s\n").count(), 1);
    let config = config.replace(
        "  poll: 1s\n",
        &format!(
            "  poll: 1s\n  verify:\n    allowed_signers: {}\n",
            signers.display()
        ),
    );
    std::fs::write(&f.gitopsd.config, config).unwrap();

    f.write("a.yaml", &configmap("a", &[("k", "1")]));
    let unsigned = f.repo.commit_push("unsigned");
    f.gitopsd
        .once(Some(&env))
        .assert_failure("an unsigned head");
    let r = f.record(&unsigned);
    assert_eq!(r.outcome, Outcome::Rejected, "{r:?}");
    assert_eq!(r.errors[0].reason, "commit is not signed", "{r:?}");
    assert_eq!(f.value().await, None, "nothing applied");

    f.write("a.yaml", &configmap("a", &[("k", "2")]));
    let wrong = signed_commit(&f.repo, &mallory, "signed by someone else");
    f.gitopsd
        .once(Some(&env))
        .assert_failure("a head signed by an unknown key");
    let r = f.record(&wrong);
    assert_eq!(r.outcome, Outcome::Rejected, "{r:?}");
    assert!(
        r.errors[0].reason.contains("not in the allowed signers"),
        "{r:?}"
    );
    assert_eq!(f.value().await, None, "nothing applied");

    f.write("a.yaml", &configmap("a", &[("k", "3")]));
    let good = signed_commit(&f.repo, &alice, "signed by alice");
    let out = f.gitopsd.once(Some(&env));
    out.assert_success("a head signed by an allowed signer");
    assert_eq!(f.record(&good).outcome, Outcome::Healthy);
    assert_eq!(f.value().await.as_deref(), Some("3"), "{out}");
}
