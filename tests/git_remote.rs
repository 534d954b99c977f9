//! gitopsd::git against the testbed's real git servers (HTTPS via git-http-backend with basic
//! auth and a private CA, SSH with an ed25519 key and a pinned known_hosts).
//!
//! Note: these tests deliberately do NOT call `support::Testbed::trust_git_ca` — the mirror
//! must verify the server with its own `ca_file` (certificate_check callback).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gitopsd::git::{GitAuth, GitError, Mirror, MirrorOptions, Oid};

fn git(dir: &Path, env: &[(String, String)], args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {:?} failed: {}",
        args.first(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// https URL with the testbed credentials embedded, for the git CLI only.
fn https_with_password(tb: &support::Testbed, url: &str) -> String {
    url.replacen(
        "https://",
        &format!(
            "https://{}:{}@",
            tb.env("GITOPSD_TEST_GIT_USER"),
            tb.env("GITOPSD_TEST_GIT_PASSWORD")
        ),
        1,
    )
}

/// Creates a repo on the testbed with two commits on main; returns (repo, work dir, head).
fn seeded_repo(
    tb: &support::Testbed,
    tmp: &Path,
    prefix: &str,
) -> (support::TestRepo, PathBuf, Oid) {
    let repo = tb.new_repo(prefix);
    let env = tb.git_cli_env();
    let work = tmp.join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    git(&work, &env, &["init", "-q", "-b", "main"]);
    std::fs::create_dir_all(work.join("environments/dev")).expect("mkdir");
    std::fs::write(work.join("environments/dev/cm.yaml"), "kind: ConfigMap\n").expect("write");
    git(&work, &env, &["add", "-A"]);
    git(&work, &env, &["commit", "-q", "-m", "one"]);
    std::fs::write(work.join("README"), "hi\n").expect("write");
    git(&work, &env, &["add", "-A"]);
    git(&work, &env, &["commit", "-q", "-m", "two"]);
    git(
        &work,
        &env,
        &[
            "push",
            "-q",
            &https_with_password(tb, &repo.https_url),
            "HEAD:refs/heads/main",
        ],
    );
    let head = Oid::from_str(&git(&work, &env, &["rev-parse", "HEAD"])).expect("oid");
    (repo, work, head)
}

fn https_auth(tb: &support::Testbed) -> GitAuth {
    GitAuth {
        username: Some(tb.env("GITOPSD_TEST_GIT_USER").into()),
        password: Some(tb.env("GITOPSD_TEST_GIT_PASSWORD").into()),
        ca_file: Some(tb.git_ca()),
        ..Default::default()
    }
}

fn ssh_auth(tb: &support::Testbed) -> GitAuth {
    GitAuth {
        ssh_key_file: Some(tb.env("GITOPSD_TEST_GIT_SSH_KEY").into()),
        known_hosts_file: Some(tb.env("GITOPSD_TEST_GIT_KNOWN_HOSTS").into()),
        ..Default::default()
    }
}

fn opts(url: &str, auth: GitAuth) -> MirrorOptions {
    MirrorOptions {
        url: url.to_string(),
        branch: "main".into(),
        notes_ref: "refs/notes/gitopsd".into(),
        extra_fetch_refs: vec![],
        auth,
    }
}

/// Notes as a person sees them: a fresh clone that fetched refs/notes/*.
fn notes_in_fresh_clone(tb: &support::Testbed, tmp: &Path, url: &str) -> String {
    let env = tb.git_cli_env();
    let clone = tmp.join(format!("clone-{}", rand_suffix()));
    git(
        tmp,
        &env,
        &[
            "clone",
            "-q",
            &https_with_password(tb, url),
            clone.to_str().expect("utf8"),
        ],
    );
    git(
        &clone,
        &env,
        &["fetch", "-q", "origin", "refs/notes/*:refs/notes/*"],
    );
    git(&clone, &env, &["log", "--notes=gitopsd", "--format=%H%n%N"])
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn section(old: Option<&str>, env: &str, body: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in old.unwrap_or("").split_inclusive('\n') {
        if !line.starts_with(' ') && !line.trim().is_empty() {
            skipping = line.starts_with(&format!("{env}:"));
        }
        if !skipping {
            out.push_str(line);
        }
    }
    out.push_str(&format!("{env}:\n  {body}\n"));
    out
}

#[test]
fn https_mirror_fetches_and_pushes_notes() {
    let tb = require_testbed!();
    let tmp = tempfile::tempdir().expect("tmp");
    let (repo, _work, head) = seeded_repo(tb, tmp.path(), "git-https");
    let m = Mirror::open(
        &tmp.path().join("mirror"),
        opts(&repo.https_url, https_auth(tb)),
    )
    .expect("open");
    assert_eq!(m.fetch().expect("fetch over https"), head);
    let files = m.list_files(head, "environments/dev").expect("list");
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].path, "environments/dev/cm.yaml");

    m.update_note(head, &|old| section(old, "dev", "outcome: healthy"))
        .expect("note pushed");
    let log = notes_in_fresh_clone(tb, tmp.path(), &repo.https_url);
    assert!(
        log.contains(&format!("{head}\ndev:\n  outcome: healthy")),
        "git log --notes=gitopsd:\n{log}"
    );

    // Two mirrors racing on the same commit, different sections: both survive.
    let m1 = Arc::new(m);
    let m2 = Arc::new(
        Mirror::open(
            &tmp.path().join("mirror2"),
            opts(&repo.https_url, https_auth(tb)),
        )
        .expect("open"),
    );
    m2.fetch().expect("fetch");
    let run = |m: Arc<Mirror>, env: &'static str| {
        std::thread::spawn(move || {
            for i in 0..4 {
                m.update_note(head, &|old| section(old, env, &format!("round: {i}")))
                    .expect("update_note");
            }
        })
    };
    let (t1, t2) = (run(m1.clone(), "dev"), run(m2.clone(), "prod"));
    t1.join().expect("join");
    t2.join().expect("join");
    m1.fetch().expect("fetch");
    let note = m1.read_note(head).expect("read").unwrap_or_default();
    assert!(note.contains("dev:\n  round: 3\n"), "{note}");
    assert!(note.contains("prod:\n  round: 3\n"), "{note}");
}

#[test]
fn https_wrong_password_is_a_permanent_auth_error() {
    let tb = require_testbed!();
    let tmp = tempfile::tempdir().expect("tmp");
    let (repo, _work, _head) = seeded_repo(tb, tmp.path(), "git-badpw");
    let mut auth = https_auth(tb);
    auth.password = Some("definitely-wrong-pw".into());
    let m = Mirror::open(&tmp.path().join("mirror"), opts(&repo.https_url, auth)).expect("open");
    let started = Instant::now();
    let e = m.fetch().expect_err("wrong password");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(e, GitError::Auth { .. }), "{e:?}");
    assert!(!e.is_transient());
    let text = format!("{e} {e:?}");
    assert!(!text.contains("definitely-wrong-pw"), "{text}");
    assert!(
        !text.contains(tb.env("GITOPSD_TEST_GIT_PASSWORD")),
        "{text}"
    );

    // Password embedded in the URL: used, but never stored in the mirror config.
    let url = https_with_password(tb, &repo.https_url);
    let m = Mirror::open(
        &tmp.path().join("mirror2"),
        opts(
            &url,
            GitAuth {
                ca_file: Some(tb.git_ca()),
                ..Default::default()
            },
        ),
    )
    .expect("open");
    m.fetch().expect("fetch with credentials from the URL");
    let config = std::fs::read_to_string(tmp.path().join("mirror2/config")).expect("config");
    assert!(
        !config.contains(tb.env("GITOPSD_TEST_GIT_PASSWORD")),
        "{config}"
    );
}

#[test]
fn https_untrusted_server_certificate_is_refused() {
    let tb = require_testbed!();
    let tmp = tempfile::tempdir().expect("tmp");
    let (repo, _work, _head) = seeded_repo(tb, tmp.path(), "git-badca");
    // The Kubernetes CA did not sign the git server's certificate.
    let mut auth = https_auth(tb);
    auth.ca_file = Some(tb.env("GITOPSD_TEST_KUBE_CA").into());
    let m = Mirror::open(&tmp.path().join("mirror"), opts(&repo.https_url, auth)).expect("open");
    let e = m.fetch().expect_err("wrong CA");
    assert!(matches!(e, GitError::HostVerification { .. }), "{e:?}");
    assert!(!e.is_transient());
}

#[test]
fn ssh_mirror_fetches_and_pushes_notes() {
    let tb = require_testbed!();
    let tmp = tempfile::tempdir().expect("tmp");
    let (repo, _work, head) = seeded_repo(tb, tmp.path(), "git-ssh");
    let m = Mirror::open(
        &tmp.path().join("mirror"),
        opts(&repo.ssh_url, ssh_auth(tb)),
    )
    .expect("open");
    assert_eq!(m.fetch().expect("fetch over ssh"), head);
    m.update_note(head, &|old| section(old, "prod", "outcome: rolled-back"))
        .expect("note pushed over ssh");
    let log = notes_in_fresh_clone(tb, tmp.path(), &repo.https_url);
    assert!(
        log.contains(&format!("{head}\nprod:\n  outcome: rolled-back")),
        "git log --notes=gitopsd:\n{log}"
    );
}

#[test]
fn ssh_unknown_or_wrong_host_key_is_refused() {
    let tb = require_testbed!();
    let tmp = tempfile::tempdir().expect("tmp");
    let (repo, _work, _head) = seeded_repo(tb, tmp.path(), "git-hostkey");

    // Host not listed at all.
    let empty = tmp.path().join("known_hosts_empty");
    std::fs::write(&empty, "").expect("write");
    let mut auth = ssh_auth(tb);
    auth.known_hosts_file = Some(empty);
    let m = Mirror::open(&tmp.path().join("m1"), opts(&repo.ssh_url, auth)).expect("open");
    let e = m.fetch().expect_err("unknown host");
    assert!(matches!(e, GitError::HostVerification { .. }), "{e:?}");
    assert!(!e.is_transient());

    // Host listed with a different key (take the client key's public half as the "host key").
    let real = std::fs::read_to_string(tb.env("GITOPSD_TEST_GIT_KNOWN_HOSTS")).expect("read");
    let host = real
        .split_whitespace()
        .next()
        .expect("host field")
        .to_string();
    let other_pub = std::fs::read_to_string(format!("{}.pub", tb.env("GITOPSD_TEST_GIT_SSH_KEY")))
        .expect("client public key");
    let other_key = other_pub.split_whitespace().nth(1).expect("key field");
    let wrong = tmp.path().join("known_hosts_wrong");
    std::fs::write(&wrong, format!("{host} ssh-ed25519 {other_key}\n")).expect("write");
    let mut auth = ssh_auth(tb);
    auth.known_hosts_file = Some(wrong);
    let m = Mirror::open(&tmp.path().join("m2"), opts(&repo.ssh_url, auth)).expect("open");
    let e = m.fetch().expect_err("wrong host key");
    assert!(matches!(e, GitError::HostVerification { .. }), "{e:?}");
    assert!(e.to_string().contains("does not match"), "{e}");
}

#[test]
fn ssh_unauthorized_key_is_a_permanent_auth_error() {
    let tb = require_testbed!();
    let tmp = tempfile::tempdir().expect("tmp");
    let (repo, _work, _head) = seeded_repo(tb, tmp.path(), "git-sshkey");
    let mut auth = ssh_auth(tb);
    auth.ssh_key_file = Some(tb.env("GITOPSD_TEST_GIT_SSH_WRONG_KEY").into());
    let m = Mirror::open(&tmp.path().join("m"), opts(&repo.ssh_url, auth)).expect("open");
    let started = Instant::now();
    let e = m.fetch().expect_err("unauthorized key");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(matches!(e, GitError::Auth { .. }), "{e:?}");
    assert!(!e.is_transient());
}

#[test]
fn unreachable_server_is_transient() {
    let _tb = require_testbed!();
    let tmp = tempfile::tempdir().expect("tmp");
    // Nothing listens on port 9 (discard) on loopback in the testbed.
    let m = Mirror::open(
        &tmp.path().join("m"),
        opts("https://127.0.0.1:9/git/nothing.git", GitAuth::default()),
    )
    .expect("open");
    let e = m.fetch().expect_err("nothing listens");
    assert!(matches!(e, GitError::Network { .. }), "{e:?}");
    assert!(e.is_transient());
}
