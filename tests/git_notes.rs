//! Status-note edge cases against the testbed's git servers (HTTPS and SSH):
//! - a concurrent writer rejects our notes push: the retry merges, the appended entry lands once;
//! - the notes lock file serialises a second process on the same mirror directory (as the
//!   `gitopsd retry`/`rollback` CLIs open the daemon's mirror);
//! - a broken mirror is re-created without losing notes committed while the server was away.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use gitopsd::git::{GitAuth, Mirror, MirrorOptions, Oid};
use gitopsd::status::{self, Note, Outcome, Reapplied, Record};

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

/// A repo on the testbed with one commit on main; returns (repo, head).
fn seeded_repo(tb: &support::Testbed, tmp: &Path, prefix: &str) -> (support::TestRepo, Oid) {
    let repo = tb.new_repo(prefix);
    let env = tb.git_cli_env();
    let work = tmp.join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    git(&work, &env, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("README"), "hi\n").expect("write");
    git(&work, &env, &["add", "-A"]);
    git(&work, &env, &["commit", "-q", "-m", "one"]);
    let url = tb.https_url_with_credentials(&repo.https_url);
    git(&work, &env, &["push", "-q", &url, "HEAD:refs/heads/main"]);
    let head = Oid::from_str(&git(&work, &env, &["rev-parse", "HEAD"])).expect("oid");
    (repo, head)
}

fn https(tb: &support::Testbed, repo: &support::TestRepo) -> MirrorOptions {
    opts(
        &repo.https_url,
        GitAuth {
            username: Some(tb.env("GITOPSD_TEST_GIT_USER").into()),
            password: Some(tb.env("GITOPSD_TEST_GIT_PASSWORD").into()),
            ca_file: Some(tb.git_ca()),
            ..Default::default()
        },
    )
}

fn ssh(tb: &support::Testbed, repo: &support::TestRepo) -> MirrorOptions {
    opts(
        &repo.ssh_url,
        GitAuth {
            ssh_key_file: Some(tb.env("GITOPSD_TEST_GIT_SSH_KEY").into()),
            known_hosts_file: Some(tb.env("GITOPSD_TEST_GIT_KNOWN_HOSTS").into()),
            ..Default::default()
        },
    )
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

/// A mirror that merges notes per environment, as the daemon's does.
fn mirror(dir: &Path, o: MirrorOptions) -> Mirror {
    Mirror::open(dir, o)
        .expect("open mirror")
        .with_note_merger(Box::new(status::merge_notes))
}

/// The note on `commit` as the server has it (through a fresh mirror).
fn server_note(tmp: &Path, o: MirrorOptions, commit: Oid) -> String {
    let dir = tmp.join(format!("check-{}", support::unique_name("m")));
    let m = Mirror::open(&dir, o).expect("open");
    m.fetch().expect("fetch");
    m.read_note(commit).expect("read").unwrap_or_default()
}

fn env_record(text: &str, env: &str) -> Record {
    Note::parse(text)
        .environments
        .get(env)
        .cloned()
        .unwrap_or_else(|| panic!("no {env} section in:\n{text}"))
}

fn record(outcome: Outcome) -> Record {
    Record::new(outcome, None, status::now_rfc3339())
}

/// `edit` runs against a note someone else changes between our fetch and our push. Returns
/// the note on the server and how often the edit ran.
fn race_one_edit(
    o: MirrorOptions,
    tmp: &Path,
    head: Oid,
    edit: &dyn Fn(&mut Record),
) -> (String, u32) {
    let ours = mirror(&tmp.join("ours"), o.clone());
    let other = mirror(&tmp.join("other"), o.clone());
    ours.fetch().expect("fetch");
    ours.update_note(head, &|n| {
        status::merge_section(n, "dev", &record(Outcome::Rejected))
    })
    .expect("first note");
    other.fetch().expect("fetch");
    let calls = AtomicU32::new(0);
    let retries = ours
        .update_note(head, &|n| {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                other
                    .update_note(head, &|o| {
                        status::merge_section(o, "prod", &record(Outcome::Healthy))
                    })
                    .expect("the other writer pushes first");
            }
            let notary = status::Notary::unsigned();
            status::edit_section(n, &head.to_string(), "dev", &notary, edit)
                .expect("edit")
                .expect("dev section")
        })
        .expect("update after the rejected push");
    assert!(retries >= 1, "the concurrent push forces a retry");
    let note = server_note(tmp, o, head);
    assert_eq!(
        env_record(&note, "prod").outcome,
        Outcome::Healthy,
        "{note}"
    );
    (note, calls.load(Ordering::SeqCst))
}

#[test]
fn https_rejected_push_lands_a_retry_message_once() {
    let tb = require_testbed!();
    let tmp = tempfile::tempdir().expect("tmp");
    let (repo, head) = seeded_repo(tb, tmp.path(), "notes-once-https");
    let (note, calls) = race_one_edit(https(tb, &repo), tmp.path(), head, &|r| {
        r.pinned = None;
        r.messages.push("retry requested".into());
    });
    let dev = env_record(&note, "dev");
    assert_eq!(dev.messages, vec!["retry requested".to_string()], "{note}");
    assert_eq!(calls, 1, "the edit runs once");
}

#[test]
fn ssh_rejected_push_lands_a_reapplied_entry_once() {
    let tb = require_testbed!();
    let tmp = tempfile::tempdir().expect("tmp");
    let (repo, head) = seeded_repo(tb, tmp.path(), "notes-once-ssh");
    let (note, calls) = race_one_edit(ssh(tb, &repo), tmp.path(), head, &|r| {
        r.reapplied.push(Reapplied {
            at: "2026-01-01T00:00:00.000Z".into(),
            because: "manual rollback".into(),
            healthy: true,
        })
    });
    assert_eq!(env_record(&note, "dev").reapplied.len(), 1, "{note}");
    assert_eq!(calls, 1, "the edit runs once");
}

const CHILD_DIR: &str = "GITOPSD_TEST_NOTES_CHILD_DIR";
const CHILD_URL: &str = "GITOPSD_TEST_NOTES_CHILD_URL";
const CHILD_COMMIT: &str = "GITOPSD_TEST_NOTES_CHILD_COMMIT";

/// The second process of `notes_lock_file_serialises_another_process`: one note update on
/// the mirror directory it is given. Run only by that test (ignored otherwise).
#[test]
#[ignore = "the second process of notes_lock_file_serialises_another_process"]
fn notes_lock_child_process() {
    let (Ok(dir), Ok(url), Ok(commit)) = (
        std::env::var(CHILD_DIR),
        std::env::var(CHILD_URL),
        std::env::var(CHILD_COMMIT),
    ) else {
        panic!("run by notes_lock_file_serialises_another_process, which sets {CHILD_DIR}");
    };
    let tb = require_testbed!();
    let repo = support::TestRepo {
        name: String::new(),
        https_url: url,
        ssh_url: String::new(),
    };
    let m = mirror(Path::new(&dir), https(tb, &repo));
    let commit = Oid::from_str(&commit).expect("commit");
    m.update_note(commit, &|n| {
        status::merge_section(n, "prod", &record(Outcome::Healthy))
    })
    .expect("child update");
}

#[test]
fn notes_lock_file_serialises_another_process() {
    let tb = require_testbed!();
    let tmp = tempfile::tempdir().expect("tmp");
    let (repo, head) = seeded_repo(tb, tmp.path(), "notes-lock");
    let dir = tmp.path().join("state/mirror");
    let m = mirror(&dir, https(tb, &repo));
    m.fetch().expect("fetch");
    let lock = std::fs::File::open(m.notes_lock_path()).expect("lock file");
    lock.lock().expect("hold the notes lock");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "notes_lock_child_process",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_DIR, &dir)
        .env(CHILD_URL, &repo.https_url)
        .env(CHILD_COMMIT, head.to_string())
        .spawn()
        .expect("spawn the second process");
    // While we hold the lock the other process must not get its note out.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert!(
            child.try_wait().expect("poll child").is_none(),
            "the second process finished while the notes lock was held"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server_note(tmp.path(), https(tb, &repo), head), "");
    // Our own update, still under the lock, then release.
    drop(lock);
    m.update_note(head, &|n| {
        status::merge_section(n, "dev", &record(Outcome::Healthy))
    })
    .expect("our update");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("poll child") {
            break s;
        }
        assert!(Instant::now() < deadline, "second process still waiting");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "second process failed: {status}");
    let note = server_note(tmp.path(), https(tb, &repo), head);
    assert_eq!(env_record(&note, "dev").outcome, Outcome::Healthy, "{note}");
    assert_eq!(
        env_record(&note, "prod").outcome,
        Outcome::Healthy,
        "{note}"
    );
}

#[test]
fn ssh_broken_mirror_keeps_notes_committed_while_the_server_was_away() {
    let tb = require_testbed!();
    let tmp = tempfile::tempdir().expect("tmp");
    let (repo, head) = seeded_repo(tb, tmp.path(), "notes-salvage");
    let dir: PathBuf = tmp.path().join("mirror");
    let m = mirror(&dir, ssh(tb, &repo));
    m.fetch().expect("fetch");
    m.update_note(head, &|n| {
        status::merge_section(n, "dev", &record(Outcome::Healthy))
    })
    .expect("pushed note");
    drop(m);
    // The server unreachable (nothing listens on port 9): the intent stays local.
    let away = mirror(
        &dir,
        opts("https://127.0.0.1:9/git/nothing.git", GitAuth::default()),
    );
    let mut intent = record(Outcome::Unhealthy);
    intent.rolling_back = true;
    let e = away
        .update_note(head, &|n| status::merge_section(n, "dev", &intent))
        .expect_err("server away");
    assert!(e.is_transient(), "{e:?}");
    drop(away);
    // Meanwhile another writer adds a section to the same note.
    let other = mirror(&tmp.path().join("other"), ssh(tb, &repo));
    other.fetch().expect("fetch");
    other
        .update_note(head, &|n| {
            status::merge_section(n, "prod", &record(Outcome::Healthy))
        })
        .expect("other writer");

    std::fs::write(dir.join("HEAD"), "garbage").expect("corrupt HEAD");
    let m = mirror(&dir, ssh(tb, &repo));
    let local = m.read_note(head).expect("read").unwrap_or_default();
    assert!(env_record(&local, "dev").rolling_back, "{local}");
    m.push_pending_notes().expect("push the salvaged note");
    let note = server_note(tmp.path(), ssh(tb, &repo), head);
    assert!(env_record(&note, "dev").rolling_back, "{note}");
    assert_eq!(
        env_record(&note, "prod").outcome,
        Outcome::Healthy,
        "{note}"
    );
}
