//! The daemon option: refs matching `previews.refs` get their preview written as a note under
//! `previews.notes_ref` on the head commit, against the merge base with the branch.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use gitopsd::config::HostConfig;
use tokio_util::sync::CancellationToken;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@gitopsd.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@gitopsd.invalid")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn note(remote: &Path, commit: &str) -> Option<String> {
    let out = Command::new("git")
        .args([
            "notes",
            "--ref",
            "refs/notes/gitopsd-preview",
            "show",
            commit,
        ])
        .current_dir(remote)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_request_heads_get_a_preview_note() {
    let tmp = tempfile::tempdir().unwrap();
    let remote = tmp.path().join("remote.git");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(
        tmp.path(),
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            remote.to_str().unwrap(),
        ],
    );
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::create_dir_all(work.join("environments/dev")).unwrap();
    std::fs::write(
        work.join("environments/dev/a.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: \"1\"}\n",
    )
    .unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "base"]);
    let base = git(&work, &["rev-parse", "HEAD"]);
    git(&work, &["push", "-q", remote.to_str().unwrap(), "main"]);
    // The pull request: one change on a branch.
    git(&work, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(
        work.join("environments/dev/a.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: \"2\"}\n",
    )
    .unwrap();
    std::fs::write(
        work.join("environments/dev/s.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {token: watch-secret-value}\n",
    )
    .unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "feature"]);
    let head = git(&work, &["rev-parse", "HEAD"]);
    git(
        &work,
        &[
            "push",
            "-q",
            remote.to_str().unwrap(),
            "feature:refs/pull/1/head",
        ],
    );
    // main moves on meanwhile: the preview is still against the merge base.
    git(&work, &["checkout", "-q", "main"]);
    std::fs::write(work.join("README.md"), "x\n").unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "main moves"]);
    git(&work, &["push", "-q", remote.to_str().unwrap(), "main"]);

    let config = HostConfig::from_text(
        &format!(
            "repository:\n  url: {}\n  poll: 1s\nstate_dir: {}\nnotes_signing_key_file: {}\npreviews:\n  refs: refs/pull/*/head\n  notes_ref: refs/notes/gitopsd-preview\nenvironments:\n  - name: dev\n    path: environments/dev\n    kubernetes: {{}}\n",
            remote.display(),
            tmp.path().join("state").display(),
            support::notes_key(tmp.path()).display()
        ),
        Path::new("test.yaml"),
    )
    .unwrap();
    let cancel = CancellationToken::new();
    let task = {
        let cancel = cancel.clone();
        let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_gitopsd"));
        tokio::spawn(
            async move { gitopsd::preview::run_preview_watcher(&config, cancel, exe).await },
        )
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        if let Some(text) = note(&remote, &head) {
            break text;
        }
        assert!(Instant::now() < deadline, "no preview note on {head}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(text.starts_with("## gitopsd preview"), "{text}");
    assert!(
        text.contains("<b>update</b> <code>ConfigMap a</code>"),
        "{text}"
    );
    assert!(
        text.contains("<b>create</b> <code>Secret s</code>"),
        "{text}"
    );
    assert!(!text.contains("watch-secret-value"), "{text}");
    // Against the merge base, not against main's newer head.
    assert!(text.contains(&format!("Base `{}`", &base[..12])), "{text}");
    // Later passes skip the commit: the notes ref keeps its single commit.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let notes_commits = git(
        &remote,
        &["rev-list", "--count", "refs/notes/gitopsd-preview"],
    );
    assert_eq!(notes_commits, "1");
    assert!(tmp.path().join("state/previews.git").exists());
    assert!(text.contains("<!-- gitopsd-signature"), "{text}");

    // A pusher's note on a new pull request head does not make the watcher skip it: the
    // unsigned note is replaced by a signed preview.
    git(&work, &["checkout", "-q", "feature"]);
    std::fs::write(
        work.join("environments/dev/b.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n",
    )
    .unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "second pull request"]);
    let head2 = git(&work, &["rev-parse", "HEAD"]);
    let preview_ref = "refs/notes/gitopsd-preview";
    git(
        &work,
        &[
            "fetch",
            "-q",
            remote.to_str().unwrap(),
            &format!("{preview_ref}:{preview_ref}"),
        ],
    );
    git(
        &work,
        &[
            "notes",
            "--ref",
            preview_ref,
            "add",
            "-m",
            "## gitopsd preview (forged: nothing to see)",
            &head2,
        ],
    );
    git(
        &work,
        &[
            "push",
            "-q",
            remote.to_str().unwrap(),
            "HEAD:refs/pull/2/head",
            &format!("{preview_ref}:{preview_ref}"),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        if let Some(text) = note(&remote, &head2).filter(|t| !t.contains("forged")) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the forged preview note on {head2} was kept"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        text.contains("<b>create</b> <code>ConfigMap b</code>"),
        "{text}"
    );
    assert!(text.contains("<!-- gitopsd-signature"), "{text}");
    cancel.cancel();
    task.await.unwrap().unwrap();
}
