//! Unit tests against local repositories in temp dirs (driven with the git CLI, isolated
//! from the user's git config). Test code only: compiled under #[cfg(test)].
#![cfg(test)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use super::*;

mod daemon;
mod note_sync;
mod notes;

use note_sync::{remote_note, set_section};

/// Runs the git CLI in `dir`, isolated from the user's config; panics on failure (test code).
pub(super) fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Alice")
        .env("GIT_AUTHOR_EMAIL", "alice@example.com")
        .env("GIT_COMMITTER_NAME", "Alice")
        .env("GIT_COMMITTER_EMAIL", "alice@example.com")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare "remote" plus a work tree that pushes to it.
struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    remote: PathBuf,
    work: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        let remote = root.join("remote.git");
        let work = root.join("work");
        git(&root, &["init", "-q", "--bare", "-b", "main", "remote.git"]);
        git(&root, &["init", "-q", "-b", "main", "work"]);
        git(
            &work,
            &["remote", "add", "origin", remote.to_str().expect("utf8")],
        );
        Fixture {
            _tmp: tmp,
            root,
            remote,
            work,
        }
    }

    fn write(&self, path: &str, content: &str) {
        let p = self.work.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, content).expect("write");
    }

    fn commit(&self, msg: &str) -> Oid {
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "--allow-empty", "-m", msg]);
        git(
            &self.work,
            &["push", "-q", "-f", "origin", "HEAD:refs/heads/main"],
        );
        Oid::from_str(&git(&self.work, &["rev-parse", "HEAD"])).expect("oid")
    }

    fn opts(&self) -> MirrorOptions {
        MirrorOptions {
            url: self.remote.to_string_lossy().into_owned(),
            branch: "main".into(),
            notes_ref: "refs/notes/gitopsd".into(),
            extra_fetch_refs: vec!["refs/pull/*/head".into()],
            auth: GitAuth::default(),
        }
    }

    fn mirror(&self, name: &str) -> Mirror {
        Mirror::open(&self.root.join(name), self.opts()).expect("open mirror")
    }
}

#[test]
fn mirror_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Mirror>();
}

/// A repository with two commits (c1: blobs, an executable and a symlink under environments/;
/// c2: adds README), fetched into a fresh mirror.
fn tree_fixture() -> (Fixture, Mirror, Oid, Oid) {
    let f = Fixture::new();
    f.write("environments/dev/b.yaml", "b: 1\n");
    f.write("environments/dev/a.yaml", "a: 1\n");
    f.write("environments/dev/sub/c.yaml", "c: 1\n");
    f.write("environments/prod/p.yaml", "p: 1\n");
    f.write("environments/dev/run.sh", "#!/bin/sh\n");
    {
        use std::os::unix::fs::PermissionsExt;
        let p = f.work.join("environments/dev/run.sh");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    std::os::unix::fs::symlink("a.yaml", f.work.join("environments/dev/link.yaml"))
        .expect("symlink");
    let c1 = f.commit("first");
    f.write("README", "hi\n");
    let c2 = f.commit("second\n\nbody");
    let m = f.mirror("mirror");
    assert!(matches!(m.branch_head(), Err(GitError::MissingRef { .. })));
    assert_eq!(m.fetch().expect("fetch"), c2);
    assert_eq!(m.branch_head().expect("head"), c2);
    (f, m, c1, c2)
}

#[test]
fn fetch_and_list_files() {
    let (_f, m, _c1, c2) = tree_fixture();
    let files = m.list_files(c2, "environments/dev").expect("list");
    let summary: Vec<(&str, FileKind)> = files.iter().map(|f| (f.path.as_str(), f.kind)).collect();
    assert_eq!(
        summary,
        vec![
            ("environments/dev/a.yaml", FileKind::Blob),
            ("environments/dev/b.yaml", FileKind::Blob),
            ("environments/dev/link.yaml", FileKind::Symlink),
            ("environments/dev/run.sh", FileKind::Executable),
            ("environments/dev/sub/c.yaml", FileKind::Blob),
        ]
    );
    assert_eq!(
        m.list_files(c2, "/environments/dev/").expect("list").len(),
        5
    );
    assert_eq!(m.list_files(c2, "").expect("root").len(), 7);
    assert!(
        m.list_files(c2, "environments/nope")
            .expect("missing")
            .is_empty()
    );
    assert!(m.list_files(c2, "README").expect("file as dir").is_empty());
}

#[test]
fn read_blobs_resolve_revisions_and_commit_info() {
    let (_f, m, c1, c2) = tree_fixture();
    assert_eq!(
        m.read_blob(c2, "environments/dev/sub/c.yaml")
            .expect("read"),
        Some(b"c: 1\n".to_vec())
    );
    assert_eq!(
        m.read_blob(c2, "environments/dev/link.yaml").expect("read"),
        Some(b"a.yaml".to_vec())
    );
    assert_eq!(m.read_blob(c1, "README").expect("read"), None);
    assert_eq!(m.read_blob(c2, "environments").expect("dir"), None);

    assert_eq!(m.resolve("HEAD").expect("HEAD"), c2);
    assert_eq!(m.resolve("main").expect("main"), c2);
    assert_eq!(m.resolve("HEAD~1").expect("HEAD~1"), c1);
    assert_eq!(m.resolve(&c1.to_string()[..8]).expect("short"), c1);
    let bad = m.resolve("does-not-exist").expect_err("bad rev");
    assert!(!bad.is_transient());
    assert!(bad.to_string().contains("does-not-exist"));

    let info = m.commit_info(c2).expect("info");
    assert_eq!(info.summary, "second");
    assert_eq!(info.author, "Alice <alice@example.com>");
    assert!(info.time > 1_600_000_000);
}

#[test]
fn ancestry_and_commits_between() {
    let (f, m, c1, c2) = tree_fixture();
    assert!(m.is_ancestor(c1, c2).expect("anc"));
    assert!(m.is_ancestor(c2, c2).expect("anc"));
    assert!(!m.is_ancestor(c2, c1).expect("anc"));

    let c3 = f.commit("third");
    let c4 = f.commit("fourth");
    assert_eq!(m.fetch().expect("fetch"), c4);
    let ids = |from, limit| -> Vec<Oid> {
        m.commits_between(from, c4, limit)
            .expect("between")
            .iter()
            .map(|c| c.id)
            .collect()
    };
    assert_eq!(ids(Some(c1), 10), vec![c2, c3, c4]);
    assert_eq!(ids(Some(c1), 2), vec![c3, c4]);
    assert_eq!(ids(None, 100).len(), 4);
    assert!(ids(Some(c4), 100).is_empty());
}

#[test]
fn force_push_is_followed() {
    let f = Fixture::new();
    f.write("a", "1");
    let a = f.commit("a");
    f.write("a", "2");
    let b = f.commit("b");
    let m = f.mirror("mirror");
    assert_eq!(m.fetch().expect("fetch"), b);
    git(&f.work, &["reset", "-q", "--hard", &a.to_string()]);
    f.write("a", "3");
    let c = f.commit("c");
    assert_eq!(m.fetch().expect("fetch"), c);
    assert!(!m.is_ancestor(b, c).expect("anc"));
    assert!(m.is_ancestor(a, c).expect("anc"));
    // The dropped commit is still readable (it is still in the object store).
    assert_eq!(m.read_blob(b, "a").expect("read"), Some(b"2".to_vec()));
}

#[test]
fn changed_files_reports_adds_modifies_deletes_and_type_changes() {
    let f = Fixture::new();
    f.write("env/a.yaml", "a");
    f.write("env/b.yaml", "b");
    f.write("env/c.yaml", "c");
    f.write("env/sub/d.yaml", "d");
    f.write("other/x", "x");
    let c1 = f.commit("one");
    f.write("env/a.yaml", "a2");
    std::fs::remove_file(f.work.join("env/b.yaml")).expect("rm");
    std::fs::remove_file(f.work.join("env/c.yaml")).expect("rm");
    std::os::unix::fs::symlink("a.yaml", f.work.join("env/c.yaml")).expect("symlink");
    f.write("env/new/e.yaml", "e");
    f.write("other/x", "x2");
    let c2 = f.commit("two");
    let m = f.mirror("mirror");
    m.fetch().expect("fetch");

    let changes = m.changed_files(Some(c1), c2, "env").expect("diff");
    let got: Vec<(&str, ChangeKind, FileKind)> = changes
        .iter()
        .map(|c| (c.path.as_str(), c.change, c.kind))
        .collect();
    assert_eq!(
        got,
        vec![
            ("env/a.yaml", ChangeKind::Modified, FileKind::Blob),
            ("env/b.yaml", ChangeKind::Deleted, FileKind::Blob),
            ("env/c.yaml", ChangeKind::Modified, FileKind::Symlink),
            ("env/new/e.yaml", ChangeKind::Added, FileKind::Blob),
        ]
    );
    let all = m.changed_files(None, c2, "env").expect("diff");
    assert_eq!(all.len(), 4);
    assert!(all.iter().all(|c| c.change == ChangeKind::Added));
    assert!(
        m.changed_files(Some(c1), c2, "missing")
            .expect("diff")
            .is_empty()
    );
    let root = m.changed_files(Some(c1), c2, "").expect("diff");
    assert!(root.iter().any(|c| c.path == "other/x"));
    // Folder deleted entirely.
    git(&f.work, &["rm", "-q", "-r", "env"]);
    let c3 = f.commit("three");
    m.fetch().expect("fetch");
    let gone = m.changed_files(Some(c2), c3, "env").expect("diff");
    assert_eq!(gone.len(), 4);
    assert!(gone.iter().all(|c| c.change == ChangeKind::Deleted));
}

#[test]
fn corrupted_mirror_is_recreated() {
    let f = Fixture::new();
    f.write("a", "1");
    let a = f.commit("a");
    let dir = f.root.join("mirror");
    let m = Mirror::open(&dir, f.opts()).expect("open");
    assert_eq!(m.fetch().expect("fetch"), a);
    drop(m);

    // 1. objects directory gone: open() notices and re-creates.
    std::fs::remove_dir_all(dir.join("objects")).expect("rm objects");
    let m = Mirror::open(&dir, f.opts()).expect("reopen");
    assert_eq!(m.fetch().expect("fetch"), a);
    assert_eq!(m.read_blob(a, "a").expect("read"), Some(b"1".to_vec()));

    // 2. packs truncated while the mirror is in use: fetch() notices and re-creates.
    for entry in walk(&dir.join("objects")) {
        if entry.is_file() {
            std::fs::write(&entry, b"").expect("truncate");
        }
    }
    assert_eq!(m.fetch().expect("fetch after corruption"), a);
    assert_eq!(m.read_blob(a, "a").expect("read"), Some(b"1".to_vec()));

    // 3. garbage instead of a repository.
    drop(m);
    std::fs::remove_dir_all(&dir).expect("rm");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("HEAD"), "garbage").expect("write");
    let m = Mirror::open(&dir, f.opts()).expect("reopen garbage");
    assert_eq!(m.fetch().expect("fetch"), a);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn invalid_options_are_permanent_errors() {
    let f = Fixture::new();
    let dir = f.root.join("m");
    let mut o = f.opts();
    o.branch = "bad..name".into();
    assert!(matches!(
        Mirror::open(&dir, o),
        Err(GitError::InvalidConfig { .. })
    ));
    let mut o = f.opts();
    o.extra_fetch_refs = vec!["refs/notes/*".into()];
    assert!(matches!(
        Mirror::open(&dir, o),
        Err(GitError::InvalidConfig { .. })
    ));
    let mut o = f.opts();
    o.notes_ref = "gitopsd".into();
    assert!(matches!(
        Mirror::open(&dir, o),
        Err(GitError::InvalidConfig { .. })
    ));
    let mut o = f.opts();
    o.url = f.root.join("nope").to_string_lossy().into_owned();
    let e = Mirror::open(&dir, o).expect_err("missing path");
    assert!(matches!(e, GitError::InvalidUrl { .. }));
    assert!(!e.is_transient());
    let mut o = f.opts();
    o.url = "ftp://user:hunter2@example.com/x".into();
    let e = Mirror::open(&dir, o).expect_err("bad scheme");
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

#[test]
fn missing_branch_is_a_permanent_error() {
    let f = Fixture::new();
    f.write("a", "1");
    f.commit("a");
    let mut o = f.opts();
    o.branch = "nope".into();
    let m = Mirror::open(&f.root.join("m"), o).expect("open");
    let e = m.fetch().expect_err("missing branch");
    assert!(matches!(e, GitError::MissingRef { .. }), "{e:?}");
    assert!(!e.is_transient());
    assert!(e.to_string().contains("refs/heads/nope"));
}

#[test]
fn extra_refs_are_fetched_and_pruned() {
    let f = Fixture::new();
    f.write("a", "1");
    let a = f.commit("a");
    f.write("a", "2");
    git(&f.work, &["commit", "-q", "-am", "pr"]);
    let pr = Oid::from_str(&git(&f.work, &["rev-parse", "HEAD"])).expect("oid");
    git(&f.work, &["push", "-q", "origin", "HEAD:refs/pull/7/head"]);
    let m = f.mirror("m");
    assert_eq!(m.fetch().expect("fetch"), a);
    assert_eq!(
        m.extra_refs().expect("extra"),
        vec![("refs/pull/7/head".to_string(), pr)]
    );
    assert_eq!(m.resolve("refs/pull/7/head").expect("resolve"), pr);
    git(&f.work, &["push", "-q", "origin", ":refs/pull/7/head"]);
    m.fetch().expect("fetch");
    assert!(m.extra_refs().expect("extra").is_empty());
}

#[test]
fn watch_local_refs_notifies_on_push() {
    let f = Fixture::new();
    f.write("a", "1");
    f.commit("a");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let url = f.remote.to_string_lossy().into_owned();
    let watcher = watch_local_refs(&url, tx)
        .expect("watch")
        .expect("local url");
    std::thread::sleep(Duration::from_millis(200));
    f.write("a", "2");
    f.commit("b");
    let got = rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), rx.recv()).await });
    assert!(matches!(got, Ok(Some(()))), "no notification: {got:?}");
    drop(watcher);

    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    assert!(
        watch_local_refs("https://example.com/r.git", tx)
            .expect("remote")
            .is_none()
    );
}

#[test]
fn transient_classification() {
    let net = GitError::Network {
        url: "u".into(),
        op: "fetching",
        message: "refused".into(),
    };
    assert!(net.is_transient());
    assert!(
        !GitError::Auth {
            url: "u".into(),
            message: "no".into()
        }
        .is_transient()
    );
    assert!(
        GitError::PushRejected {
            refname: "r".into(),
            url: "u".into(),
            attempts: 3,
            reason: "x".into()
        }
        .is_transient()
    );
}
