//! Benchmark (ignored by default): a 10-file change on a 10,000-object repository previews in
//! at most 1 s without --live.
//!
//! `cargo test --release --test preview_bench -- --ignored --nocapture`
//!
//! Builds a repository with 10,000 ConfigMaps across 50 namespaces in 200 files (50 objects
//! each), changes 10 files, and times `gitopsd preview` (wall time; peak RSS from
//! `/usr/bin/time -v` when it is installed).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gitopsd");
const FILES: usize = 200;
const PER_FILE: usize = 50;
const NAMESPACES: usize = 50;
const CHANGED: usize = 10;

fn git(dir: &Path, args: &[&str], date: &str) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@gitopsd.invalid")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@gitopsd.invalid")
        .env("GIT_AUTHOR_DATE", date)
        .env("GIT_COMMITTER_DATE", date)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn file(i: usize, generation: &str) -> String {
    let mut text = String::new();
    for j in 0..PER_FILE {
        let n = i * PER_FILE + j;
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{n:05}\n  namespace: ns-{:02}\n  labels:\n    app: bench\n    shard: \"{i}\"\ndata:\n  generation: \"{generation}\"\n  payload: \"{}\"\n",
            n % NAMESPACES,
            "x".repeat(64)
        ));
    }
    text
}

/// Wall time and peak RSS (kB) of one preview run.
fn run(repo: &Path, base: &str) -> (Duration, Option<u64>, i32, usize) {
    let args = [
        "preview",
        "--repo",
        repo.to_str().unwrap(),
        "--base",
        base,
        "--head",
        "HEAD",
        "--format",
        "json",
    ];
    let time = Path::new("/usr/bin/time");
    let started = Instant::now();
    let out = if time.exists() {
        Command::new(time)
            .arg("-v")
            .arg(BIN)
            .args(args)
            .output()
            .unwrap()
    } else {
        Command::new(BIN).args(args).output().unwrap()
    };
    let wall = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let rss = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let changes = v["environments"][0]["changes"]
        .as_array()
        .map_or(0, Vec::len);
    (wall, rss, out.status.code().unwrap_or(-1), changes)
}

#[test]
#[ignore = "benchmark: cargo test --release --test preview_bench -- --ignored --nocapture"]
fn ten_file_change_on_ten_thousand_objects() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    git(repo, &["init", "-q", "-b", "main"], "2024-01-01T00:00:00Z");
    let env = repo.join("environments/bench");
    std::fs::create_dir_all(&env).unwrap();
    for i in 0..FILES {
        std::fs::write(env.join(format!("shard-{i:03}.yaml")), file(i, "1")).unwrap();
    }
    git(repo, &["add", "-A"], "2024-01-01T00:00:00Z");
    git(
        repo,
        &["commit", "-q", "-m", "base"],
        "2024-01-01T00:00:00Z",
    );
    for i in (0..FILES).step_by(FILES / CHANGED) {
        std::fs::write(env.join(format!("shard-{i:03}.yaml")), file(i, "2")).unwrap();
    }
    git(
        repo,
        &["commit", "-q", "-a", "-m", "change 10 files"],
        "2024-01-01T00:01:00Z",
    );

    let mut walls = Vec::new();
    let mut last = (Duration::ZERO, None, 0, 0);
    for _ in 0..5 {
        last = run(repo, "HEAD~1");
        walls.push(last.0);
    }
    walls.sort();
    let (_, rss, code, changes) = last;
    println!(
        "preview of a {CHANGED}-file change on {} objects in {FILES} files: wall median {:?}, min {:?}, max {:?}; peak RSS {}; {changes} changes",
        FILES * PER_FILE,
        walls[walls.len() / 2],
        walls[0],
        walls[walls.len() - 1],
        rss.map_or("n/a".to_string(), |kb| format!(
            "{:.1} MiB",
            kb as f64 / 1024.0
        )),
    );
    assert_eq!(code, 2);
    assert_eq!(changes, CHANGED * PER_FILE);
    assert!(
        walls[walls.len() / 2] <= Duration::from_secs(1),
        "median {:?} > 1 s",
        walls[walls.len() / 2]
    );
}
