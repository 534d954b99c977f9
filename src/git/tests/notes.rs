//! Unit tests of the notes edge cases against a local bare remote: an edit applied exactly
//! once after a rejected push, the notes lock across `Mirror`s on one directory, and
//! re-creating a broken mirror without losing unpushed notes. Test code only.
#![cfg(test)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::git;
use crate::git::*;
use crate::status::{self, Note, Outcome, Record};

/// A bare "remote" with commits `a` and `b` on main.
struct Remote {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    remote: PathBuf,
    a: Oid,
    b: Oid,
}

impl Remote {
    fn new() -> Remote {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        git(&root, &["init", "-q", "--bare", "-b", "main", "remote.git"]);
        git(&root, &["init", "-q", "-b", "main", "work"]);
        let work = root.join("work");
        let mut ids = Vec::new();
        for (i, msg) in ["a", "b"].iter().enumerate() {
            std::fs::write(work.join("f"), format!("{i}")).expect("write");
            git(&work, &["add", "-A"]);
            git(&work, &["commit", "-q", "-m", msg]);
            ids.push(Oid::from_str(&git(&work, &["rev-parse", "HEAD"])).expect("oid"));
        }
        let remote = root.join("remote.git");
        git(
            &work,
            &["push", "-q", remote.to_str().expect("utf8"), "HEAD:main"],
        );
        Remote {
            _tmp: tmp,
            root,
            remote,
            a: ids[0],
            b: ids[1],
        }
    }

    fn opts(&self) -> MirrorOptions {
        MirrorOptions {
            url: self.remote.to_string_lossy().into_owned(),
            branch: "main".into(),
            notes_ref: "refs/notes/gitopsd".into(),
            extra_fetch_refs: vec![],
            auth: GitAuth::default(),
        }
    }

    /// A mirror merging notes as the daemon does (per environment).
    fn mirror(&self, name: &str) -> Mirror {
        Mirror::open(&self.root.join(name), self.opts())
            .expect("open mirror")
            .with_note_merger(Box::new(status::merge_notes))
    }

    fn note(&self, commit: Oid) -> Option<String> {
        let out = Command::new("git")
            .args(["notes", "--ref=gitopsd", "show", &commit.to_string()])
            .current_dir(&self.remote)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .expect("git notes");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn record(outcome: Outcome) -> Record {
    Record::new(outcome, None, "2026-01-01T00:00:00.000Z".into())
}

fn env_record(text: &str, env: &str) -> Record {
    Note::parse(text)
        .environments
        .get(env)
        .cloned()
        .unwrap_or_else(|| panic!("no {env} section in note:\n{text}"))
}

/// The edit `retry()` makes: clear the pin, append a message.
fn retry_edit(existing: Option<&str>) -> String {
    let commit = "0000000000000000000000000000000000000000";
    let notary = status::Notary::unsigned();
    status::edit_section(existing, commit, "dev", &notary, |r| {
        r.pinned = None;
        r.messages.push("retry requested".into());
    })
    .ok()
    .flatten()
    .unwrap_or_else(|| existing.unwrap_or_default().to_string())
}

#[test]
fn rejected_push_merges_the_edit_instead_of_applying_it_again() {
    let r = Remote::new();
    let ours = r.mirror("ours");
    let other = r.mirror("other");
    ours.fetch().expect("fetch");
    other.fetch().expect("fetch");
    let mut pinned = record(Outcome::Rejected);
    pinned.pinned = Some("rejected".into());
    ours.update_note(r.a, &|old| status::merge_section(old, "dev", &pinned))
        .expect("first note");
    other.fetch().expect("fetch");

    // Another writer pushes (prod) between our notes fetch and our push: the push is
    // rejected and must be retried.
    let calls = AtomicU32::new(0);
    let retries = ours
        .update_note(r.a, &|old| {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                other
                    .update_note(r.a, &|o| {
                        status::merge_section(o, "prod", &record(Outcome::Healthy))
                    })
                    .expect("concurrent writer");
            }
            retry_edit(old)
        })
        .expect("update after a rejected push");
    assert!(retries >= 1, "the concurrent push must force a retry");
    let note = r.note(r.a).expect("note on the remote");
    let dev = env_record(&note, "dev");
    assert_eq!(dev.messages, vec!["retry requested".to_string()], "{note}");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the edit runs once");
    assert_eq!(dev.pinned, None, "{note}");
    assert_eq!(env_record(&note, "prod").outcome, Outcome::Healthy);
    assert_eq!(ours.read_note(r.a).expect("read").as_deref(), Some(&*note));
}

/// Waits until `done` or the deadline; true if it became true.
fn becomes_true(done: &AtomicBool, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if done.load(Ordering::SeqCst) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done.load(Ordering::SeqCst)
}

#[test]
fn two_mirrors_on_one_directory_serialise_note_updates() {
    let r = Remote::new();
    let first = r.mirror("m");
    first.fetch().expect("fetch");
    // A second instance on the same directory, as the `retry` CLI opens the daemon's mirror.
    let second = Arc::new(r.mirror("m"));
    let second_ran = Arc::new(AtomicBool::new(false));
    let second_saw = Arc::new(std::sync::Mutex::new(None::<String>));
    let worker = std::cell::RefCell::new(None);
    let overlapped = std::cell::Cell::new(None);
    first
        .update_note(r.a, &|old| {
            let (m, ran, saw) = (second.clone(), second_ran.clone(), second_saw.clone());
            *worker.borrow_mut() = Some(std::thread::spawn(move || {
                m.update_note(r.a, &|o| {
                    *saw.lock().expect("lock") = o.map(str::to_string);
                    ran.store(true, Ordering::SeqCst);
                    status::merge_section(o, "prod", &record(Outcome::Healthy))
                })
            }));
            // While we hold the lock the other writer must not get to its edit.
            overlapped.set(Some(becomes_true(&second_ran, Duration::from_secs(2))));
            status::merge_section(old, "dev", &record(Outcome::Healthy))
        })
        .expect("first update");
    assert_eq!(
        overlapped.get(),
        Some(false),
        "second writer edited while the first held the lock"
    );
    let worker = worker.into_inner().expect("spawned");
    worker.join().expect("join").expect("second update");
    let saw = second_saw.lock().expect("lock").clone().unwrap_or_default();
    assert!(
        saw.contains("dev:"),
        "second writer read before the first pushed:\n{saw}"
    );
    let note = r.note(r.a).expect("note");
    assert_eq!(env_record(&note, "dev").outcome, Outcome::Healthy);
    assert_eq!(env_record(&note, "prod").outcome, Outcome::Healthy);
}

#[test]
fn the_lock_file_blocks_note_updates_and_recreation() {
    let r = Remote::new();
    let dir = r.root.join("m");
    let m = Arc::new(r.mirror("m"));
    m.fetch().expect("fetch");
    assert_eq!(m.notes_lock_path(), r.root.join("m.notes.lock"));
    // Another process holding the lock file: same effect as a second open file description.
    let held = std::fs::File::open(m.notes_lock_path()).expect("lock file exists");
    held.lock().expect("take the lock");
    let done = Arc::new(AtomicBool::new(false));
    let (m2, done2, a) = (m.clone(), done.clone(), r.a);
    let writer = std::thread::spawn(move || {
        let res = m2.update_note(a, &|o| {
            status::merge_section(o, "dev", &record(Outcome::Healthy))
        });
        done2.store(true, Ordering::SeqCst);
        res
    });
    assert!(
        !becomes_true(&done, Duration::from_secs(1)),
        "update ran while locked"
    );
    assert_eq!(r.note(r.a), None);
    held.unlock().expect("unlock");
    writer.join().expect("join").expect("update after unlock");
    assert!(r.note(r.a).is_some());

    // So does a fetch (it writes the remote-tracking notes ref).
    held.lock().expect("take the lock again");
    let fetched = Arc::new(AtomicBool::new(false));
    let (m2, fetched2) = (m.clone(), fetched.clone());
    let fetcher = std::thread::spawn(move || {
        let res = m2.fetch();
        fetched2.store(true, Ordering::SeqCst);
        res
    });
    assert!(
        !becomes_true(&fetched, Duration::from_secs(1)),
        "fetched while locked"
    );
    held.unlock().expect("unlock");
    fetcher.join().expect("join").expect("fetch after unlock");

    // Re-creating a broken mirror waits for the lock too.
    drop(m);
    std::fs::write(dir.join("HEAD"), "garbage").expect("corrupt HEAD");
    held.lock().expect("take the lock again");
    let opened = Arc::new(AtomicBool::new(false));
    let (opts, opened2, dir2) = (r.opts(), opened.clone(), dir.clone());
    let opener = std::thread::spawn(move || {
        let res = Mirror::open(&dir2, opts);
        opened2.store(true, Ordering::SeqCst);
        res
    });
    assert!(
        !becomes_true(&opened, Duration::from_secs(1)),
        "recreated while locked"
    );
    held.unlock().expect("unlock");
    let m = opener.join().expect("join").expect("reopen");
    m.fetch().expect("fetch after recreation");
}

/// Commits pending notes with the remote away, lets another writer change the same note,
/// breaks the mirror with `corrupt`, and checks the notes survive re-creation and get pushed.
fn unpushed_notes_survive(corrupt: fn(&Path)) {
    let r = Remote::new();
    let dir = r.root.join("m");
    let m = r.mirror("m");
    m.fetch().expect("fetch");
    m.update_note(r.a, &|o| {
        status::merge_section(o, "dev", &record(Outcome::Healthy))
    })
    .expect("pushed note");
    let away = r.root.join("remote.away");
    std::fs::rename(&r.remote, &away).expect("take the remote away");
    let mut intent = record(Outcome::Unhealthy);
    intent.rolling_back = true;
    m.update_note(r.a, &|o| status::merge_section(o, "prod", &intent))
        .expect_err("remote away: kept locally");
    m.update_note(r.b, &|o| {
        status::merge_section(o, "dev", &record(Outcome::Rejected))
    })
    .expect_err("remote away: kept locally");
    std::fs::rename(&away, &r.remote).expect("bring the remote back");
    let other = r.mirror("other");
    other.fetch().expect("fetch");
    other
        .update_note(r.a, &|o| {
            status::merge_section(o, "staging", &record(Outcome::Healthy))
        })
        .expect("other writer");
    drop(m);

    corrupt(&dir);
    let m = r.mirror("m");
    let local = m.read_note(r.a).expect("read").unwrap_or_default();
    assert!(
        env_record(&local, "prod").rolling_back,
        "before any fetch:\n{local}"
    );
    m.fetch().expect("fetch");
    let merged = m.read_note(r.a).expect("read").unwrap_or_default();
    assert!(env_record(&merged, "prod").rolling_back, "{merged}");
    assert_eq!(env_record(&merged, "staging").outcome, Outcome::Healthy);
    assert_eq!(env_record(&merged, "dev").outcome, Outcome::Healthy);
    m.push_pending_notes().expect("push the salvaged notes");
    let remote = r.note(r.a).expect("note on the remote");
    assert!(env_record(&remote, "prod").rolling_back, "{remote}");
    assert_eq!(env_record(&remote, "staging").outcome, Outcome::Healthy);
    let b = r.note(r.b).expect("note on b pushed");
    assert_eq!(env_record(&b, "dev").outcome, Outcome::Rejected);
    assert_eq!(m.push_pending_notes().expect("nothing left"), 0);
}

#[test]
fn unpushed_notes_survive_a_garbage_head() {
    unpushed_notes_survive(|dir| std::fs::write(dir.join("HEAD"), "garbage").expect("HEAD"));
}

#[test]
fn unpushed_notes_survive_a_mirror_that_does_not_open() {
    // No HEAD: libgit2 does not recognise a repository any more.
    unpushed_notes_survive(|dir| std::fs::remove_file(dir.join("HEAD")).expect("rm HEAD"));
}

#[test]
fn unpushed_notes_survive_a_truncated_pack() {
    // The fetched pack (branch commits, remote notes) is unreadable; the notes written
    // locally are loose objects.
    unpushed_notes_survive(|dir| {
        let packs = dir.join("objects/pack");
        for e in std::fs::read_dir(&packs).expect("packs").flatten() {
            if e.path().extension().is_some_and(|x| x == "pack") {
                std::fs::write(e.path(), b"").expect("truncate");
            }
        }
    });
}
