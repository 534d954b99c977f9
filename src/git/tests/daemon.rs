//! Unit tests over the git protocol (a `git daemon`): a notes race and an outage, and a
//! server-side push rejection detected and retried. Test code only.
#![cfg(test)]

use super::*;

/// A git:// server (git daemon) exercises the smart protocol: push rejections arrive through
/// `push_update_reference`/non-fast-forward errors, and killing it is a real outage.
struct Daemon {
    child: std::process::Child,
    url: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts git-daemon (in Debian's `git` package, which tests/testbed/deps installs) on a free port.
fn start_daemon(f: &Fixture) -> Daemon {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    // Run git-daemon itself: `git daemon` forks it, and killing the wrapper would leave the
    // server running.
    let child = Command::new("/usr/lib/git-core/git-daemon")
        .args([
            "--reuseaddr",
            "--export-all",
            "--enable=receive-pack",
            "--listen=127.0.0.1",
            &format!("--port={port}"),
            &format!("--base-path={}", f.root.display()),
            &f.root.to_string_lossy(),
        ])
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("git-daemon (Debian package git)");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "git-daemon not listening on {port} after 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Daemon {
        child,
        url: format!("git://127.0.0.1:{port}/remote.git"),
    }
}

#[test]
fn notes_race_and_outage_over_git_protocol() {
    let f = Fixture::new();
    f.write("a", "1");
    let a = f.commit("a");
    let daemon = start_daemon(&f);
    let mut o = f.opts();
    o.url = daemon.url.clone();
    let m1 = Arc::new(Mirror::open(&f.root.join("m1"), o.clone()).expect("open"));
    let m2 = Arc::new(Mirror::open(&f.root.join("m2"), o.clone()).expect("open"));
    assert_eq!(m1.fetch().expect("fetch"), a);
    m2.fetch().expect("fetch");
    let spawn = |m: Arc<Mirror>, env: &'static str| {
        std::thread::spawn(move || {
            let mut retries = 0;
            for i in 0..6 {
                retries += m
                    .update_note(a, &|old| set_section(old, env, &format!("round: {i}")))
                    .expect("update_note");
            }
            retries
        })
    };
    let t1 = spawn(m1.clone(), "dev");
    let t2 = spawn(m2.clone(), "prod");
    let retries = t1.join().expect("join") + t2.join().expect("join");
    eprintln!("retries over git://: {retries}");
    let note = remote_note(&f, a).expect("note");
    assert!(note.contains("dev:\n  round: 5\n"), "{note}");
    assert!(note.contains("prod:\n  round: 5\n"), "{note}");

    drop(daemon);
    let e = m1.fetch().expect_err("daemon is down");
    assert!(matches!(e, GitError::Network { .. }), "{e:?}");
    assert!(e.is_transient());
    m1.update_note(a, &|old| set_section(old, "dev", "round: offline"))
        .expect_err("daemon is down");
    let daemon = start_daemon(&f);
    let mut o2 = o.clone();
    o2.url = daemon.url.clone();
    let m3 = Mirror::open(&f.root.join("m1"), o2).expect("reopen with new port");
    m3.push_pending_notes().expect("push pending");
    assert!(
        remote_note(&f, a)
            .unwrap_or_default()
            .contains("dev:\n  round: offline\n")
    );
}

/// The server declines pushes with a pre-receive hook: libgit2 reports that only through
/// `push_update_reference` (push returns Ok). We must notice, retry, and finally give up
/// with a transient error.
#[test]
fn server_side_push_rejection_is_detected_and_retried() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    f.write("a", "1");
    let a = f.commit("a");
    let counter = f.root.join("hook-count");
    let always = f.root.join("hook-always");
    let hook = f.remote.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nn=$(cat {c} 2>/dev/null || echo 0)\nn=$((n+1))\necho $n > {c}\n\
             if [ -e {always} ] || [ $n -le 2 ]; then echo \"declined $n\" >&2; exit 1; fi\nexit 0\n",
            c = counter.display(),
            always = always.display()
        ),
    )
    .expect("hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let daemon = start_daemon(&f);
    let mut o = f.opts();
    o.url = daemon.url.clone();
    let m = Mirror::open(&f.root.join("m"), o).expect("open");
    m.fetch().expect("fetch");
    let retries = m
        .update_note(a, &|old| set_section(old, "dev", "outcome: healthy"))
        .expect("accepted on the third push");
    assert_eq!(retries, 2);
    assert_eq!(
        remote_note(&f, a).as_deref(),
        Some("dev:\n  outcome: healthy\n")
    );

    std::fs::write(&always, "").expect("flag");
    let started = std::time::Instant::now();
    let e = m
        .update_note(a, &|old| set_section(old, "prod", "outcome: healthy"))
        .expect_err("always declined");
    assert!(matches!(e, GitError::PushRejected { .. }), "{e:?}");
    assert!(e.is_transient());
    assert!(started.elapsed() < Duration::from_secs(15));
    // The note is kept locally and pushed once the server accepts again.
    assert!(
        m.read_note(a)
            .expect("read")
            .unwrap_or_default()
            .contains("prod:")
    );
    std::fs::remove_file(&always).expect("unflag");
    m.push_pending_notes().expect("push pending");
    assert!(remote_note(&f, a).unwrap_or_default().contains("prod:"));
}
