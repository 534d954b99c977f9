//! Unit tests of notes across mirrors and outages against a local bare remote: written,
//! pushed and read; two mirrors at once; pending notes kept through an outage; an ended term's
//! unpushed section dropped. Test code only.
#![cfg(test)]

use super::*;

/// Replaces (or adds) the top-level section `env` of a YAML-ish note.
pub(super) fn set_section(old: Option<&str>, env: &str, body: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in old.unwrap_or("").split_inclusive('\n') {
        let top = !line.starts_with(' ') && !line.trim().is_empty();
        if top {
            skipping = line.starts_with(&format!("{env}:"));
        }
        if !skipping {
            out.push_str(line);
        }
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!("{env}:\n  {body}\n"));
    out
}

pub(super) fn remote_note(f: &Fixture, commit: Oid) -> Option<String> {
    let out = Command::new("git")
        .args(["notes", "--ref=gitopsd", "show", &commit.to_string()])
        .current_dir(&f.remote)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git notes");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Adds a note to `commit` with the git CLI in the work tree and pushes it, as a human would.
fn cli_note(f: &Fixture, commit: Oid, text: &str) {
    let notes = "refs/notes/gitopsd:refs/notes/gitopsd";
    git(&f.work, &["fetch", "-q", "origin", notes]);
    let id = commit.to_string();
    git(&f.work, &["notes", "--ref=gitopsd", "add", "-m", text, &id]);
    git(&f.work, &["push", "-q", "origin", notes]);
}

#[test]
fn notes_are_written_pushed_and_read() {
    let f = Fixture::new();
    f.write("a", "1");
    let a = f.commit("a");
    f.write("a", "2");
    let b = f.commit("b");
    let m = f.mirror("m");
    m.fetch().expect("fetch");
    assert_eq!(m.read_note(a).expect("read"), None);
    assert!(m.list_notes().expect("list").is_empty());

    let retries = m
        .update_note(a, &|old| {
            assert_eq!(old, None);
            set_section(old, "dev", "outcome: healthy")
        })
        .expect("update");
    assert_eq!(retries, 0);
    m.update_note(b, &|old| set_section(old, "dev", "outcome: rejected"))
        .expect("update");
    m.update_note(a, &|old| {
        assert_eq!(old, Some("dev:\n  outcome: healthy\n"));
        set_section(old, "prod", "outcome: healthy")
    })
    .expect("update");
    assert_eq!(
        m.read_note(a).expect("read").as_deref(),
        Some("dev:\n  outcome: healthy\nprod:\n  outcome: healthy\n")
    );
    assert_eq!(
        remote_note(&f, a).as_deref(),
        Some("dev:\n  outcome: healthy\nprod:\n  outcome: healthy\n")
    );
    assert_eq!(
        remote_note(&f, b).as_deref(),
        Some("dev:\n  outcome: rejected\n")
    );
    let listed = m.list_notes().expect("list");
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .any(|(c, t)| *c == b && t.contains("rejected"))
    );

    // A second mirror sees the notes after a fetch; a note written with the git CLI is
    // preserved when the first mirror writes again.
    let m2 = f.mirror("m2");
    m2.fetch().expect("fetch");
    assert_eq!(
        m2.read_note(b).expect("read").as_deref(),
        Some("dev:\n  outcome: rejected\n")
    );
    let c = f.commit("c");
    cli_note(&f, c, "human: hello");
    m.update_note(b, &|old| set_section(old, "prod", "outcome: healthy"))
        .expect("update after foreign push");
    assert_eq!(remote_note(&f, c).as_deref(), Some("human: hello\n"));
    assert!(remote_note(&f, b).unwrap_or_default().contains("prod:"));
    assert_eq!(m.push_pending_notes().expect("nothing pending"), 0);
}

#[test]
fn concurrent_note_updates_from_two_mirrors_keep_both_sections() {
    let f = Fixture::new();
    f.write("a", "1");
    let a = f.commit("a");
    let m1 = Arc::new(f.mirror("m1"));
    let m2 = Arc::new(f.mirror("m2"));
    m1.fetch().expect("fetch");
    m2.fetch().expect("fetch");
    let rounds = 8;
    let spawn = |m: Arc<Mirror>, env: &'static str| {
        std::thread::spawn(move || {
            let mut retries = 0;
            for i in 0..rounds {
                retries += m
                    .update_note(a, &|old| set_section(old, env, &format!("round: {i}")))
                    .expect("update_note");
            }
            retries
        })
    };
    let t1 = spawn(m1.clone(), "dev");
    let t2 = spawn(m2.clone(), "prod");
    let r1 = t1.join().expect("join");
    let r2 = t2.join().expect("join");
    let note = remote_note(&f, a).expect("note on remote");
    assert!(
        note.contains(&format!("dev:\n  round: {}\n", rounds - 1)),
        "{note}"
    );
    assert!(
        note.contains(&format!("prod:\n  round: {}\n", rounds - 1)),
        "{note}"
    );
    eprintln!("retries: {r1} + {r2}");
    m1.fetch().expect("fetch");
    assert_eq!(
        m1.read_note(a).expect("read").as_deref(),
        Some(note.as_str())
    );
}

#[test]
fn pending_notes_survive_an_outage_and_are_pushed_later() {
    let f = Fixture::new();
    f.write("a", "1");
    let a = f.commit("a");
    f.write("a", "2");
    let b = f.commit("b");
    let m1 = f.mirror("m1");
    let m2 = f.mirror("m2");
    m1.fetch().expect("fetch");
    m2.fetch().expect("fetch");

    let away = f.root.join("remote.away");
    std::fs::rename(&f.remote, &away).expect("take remote away");
    let e = m1
        .update_note(a, &|old| set_section(old, "dev", "outcome: healthy"))
        .expect_err("remote is gone");
    assert!(e.is_transient(), "{e:?}");
    m1.update_note(b, &|old| set_section(old, "dev", "outcome: rejected"))
        .expect_err("remote is gone");
    assert_eq!(
        m1.read_note(a).expect("local note").as_deref(),
        Some("dev:\n  outcome: healthy\n")
    );
    assert!(
        m1.push_pending_notes()
            .expect_err("still gone")
            .is_transient()
    );
    std::fs::rename(&away, &f.remote).expect("bring remote back");

    // Meanwhile someone else annotates the same commit (other section) and pushes.
    m2.update_note(a, &|old| set_section(old, "prod", "outcome: healthy"))
        .expect("m2 update");
    // A fetch merges without losing the pending local notes.
    m1.fetch().expect("fetch");
    let merged = m1.read_note(a).expect("read").unwrap_or_default();
    assert!(merged.contains("dev:\n  outcome: healthy\n"), "{merged}");
    assert!(merged.contains("prod:\n  outcome: healthy\n"), "{merged}");
    assert_eq!(remote_note(&f, b), None);

    m1.push_pending_notes().expect("push pending");
    let remote = remote_note(&f, a).expect("remote note");
    assert!(remote.contains("dev:\n  outcome: healthy\n"), "{remote}");
    assert!(remote.contains("prod:\n  outcome: healthy\n"), "{remote}");
    assert_eq!(
        remote_note(&f, b).as_deref(),
        Some("dev:\n  outcome: rejected\n")
    );
    assert_eq!(m1.push_pending_notes().expect("idempotent"), 0);
}

/// An ended term's unpushed section is put back as the remote has it (the new leader's), so a
/// later push cannot overwrite it; other pending sections stay pending and are pushed.
#[test]
fn rewriting_pending_notes_drops_one_sections_unpushed_edit() {
    let f = Fixture::new();
    f.write("a", "1");
    let a = f.commit("a");
    let old_leader = f.mirror("m1");
    let new_leader = f.mirror("m2");
    old_leader.fetch().expect("fetch");
    new_leader.fetch().expect("fetch");
    let away = f.root.join("remote.away");
    std::fs::rename(&f.remote, &away).expect("take remote away");
    old_leader
        .update_note(a, &|old| set_section(old, "dev", "term: 1"))
        .expect_err("remote is gone");
    old_leader
        .update_note(a, &|old| set_section(old, "prod", "term: 1"))
        .expect_err("remote is gone");
    std::fs::rename(&away, &f.remote).expect("bring remote back");
    new_leader
        .update_note(a, &|old| set_section(old, "dev", "term: 2"))
        .expect("new leader pushes");
    old_leader.fetch().expect("fetch");
    // The old leader lost dev: its dev section goes back to the remote's.
    let n = old_leader
        .rewrite_pending_notes(&|theirs, ours| {
            let keep = |t: &str| -> String {
                t.split_inclusive('\n')
                    .skip_while(|l| !l.starts_with("dev:"))
                    .take(2)
                    .collect()
            };
            let dev = keep(theirs.unwrap_or_default());
            let without: String = ours.replace(&keep(ours), "");
            format!("{without}{dev}")
        })
        .expect("rewrite");
    assert_eq!(n, 1);
    old_leader.push_pending_notes().expect("push");
    let remote = remote_note(&f, a).expect("remote note");
    assert!(remote.contains("dev:\n  term: 2\n"), "{remote}");
    assert!(remote.contains("prod:\n  term: 1\n"), "{remote}");
    assert_eq!(
        old_leader
            .rewrite_pending_notes(&|_, o| o.into())
            .expect("none"),
        0
    );
}
