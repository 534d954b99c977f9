//! Content limits (issue 14, part 5) end to end: `gitopsd run` against the testbed is pushed a
//! 200 MiB file, an environment of 1,000,000 objects and a file of many small alias bombs. Each
//! commit is recorded `rejected`, naming the file and the limit, within seconds; the daemon's
//! peak RSS (VmHWM) stays bounded. The figures are printed (run with `--nocapture`).

mod support;

use std::io::Write as _;
use std::time::{Duration, Instant};

use gitopsd::status::{Outcome, Record};
use support::gitopsd::{Daemon, Fixture, Gitopsd, WorkRepo, configmap, wait_daemon};

/// The daemon's peak resident set (VmHWM) in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

async fn wait_record(daemon: &mut Daemon, repo: &WorkRepo, commit: &str, env: &str) -> Record {
    let mut found = None;
    wait_daemon(
        daemon,
        &format!("the record of {env} on {commit}"),
        Duration::from_secs(120),
        || {
            found = repo.record(commit, env).filter(|r| !r.rolling_back);
            std::future::ready(found.is_some())
        },
    )
    .await;
    found.unwrap()
}

/// Writes `path` of the work repository from `chunks`, without holding it in memory.
fn write_streamed(repo: &WorkRepo, rel: &str, chunks: impl Iterator<Item = String>) {
    let path = repo.path().join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for chunk in chunks {
        out.write_all(chunk.as_bytes()).unwrap();
    }
    out.flush().unwrap();
}

/// A document that expands to 10^4 nodes through aliases (4 levels of 10).
fn small_bomb(n: usize) -> String {
    let mut s = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: bomb-{n}}}\ndata:\n  a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
    );
    for i in 1..4 {
        let p = i - 1;
        s.push_str(&format!(
            "  a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    s.push_str("---\n");
    s
}

struct Case {
    what: &'static str,
    /// Files written (repository-relative under the environment), by a writer of each.
    write: fn(&WorkRepo, &str) -> Vec<String>,
    /// What the first error's reason says.
    expect: &'static str,
}

fn huge_file(repo: &WorkRepo, dir: &str) -> Vec<String> {
    let rel = format!("{dir}/huge.yaml");
    // 200 MiB of comment lines after one object: valid YAML, refused by its size alone.
    let line = format!("# {}\n", "x".repeat(1021));
    let head = std::iter::once(configmap("huge", &[("k", "v")]));
    write_streamed(
        repo,
        &rel,
        head.chain(std::iter::repeat_n(line, 200 * 1024)),
    );
    vec![rel]
}

fn million_objects(repo: &WorkRepo, dir: &str) -> Vec<String> {
    // 200 files of 5,000 small objects: each file and the folder are within the byte limits.
    (0..200)
        .map(|f| {
            let rel = format!("{dir}/many-{f:03}.yaml");
            let docs = (0..5000).map(move |i| {
                format!(
                    "{{apiVersion: v1, kind: ConfigMap, metadata: {{name: c{}}}}}\n---\n",
                    f * 5000 + i
                )
            });
            write_streamed(repo, &rel, docs);
            rel
        })
        .collect()
}

fn many_bombs(repo: &WorkRepo, dir: &str) -> Vec<String> {
    let rel = format!("{dir}/bombs.yaml");
    write_streamed(repo, &rel, (0..1000).map(small_bomb));
    vec![rel]
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_content_is_rejected_quickly_with_bounded_memory() {
    let tb = require_testbed!();
    let f = Fixture::with(tb, "limits", |_| {}).await;
    // A larger folder limit than the default, so the million objects meet the object limit.
    let g = Gitopsd::from_text(&format!(
        "{}limits:\n  environment_bytes: 134217728\n",
        f.gitopsd.config_text()
    ));
    let dir = f.env.path.clone();
    f.repo
        .write(&format!("{dir}/ok.yaml"), &configmap("ok", &[("k", "1")]));
    let c0 = f.repo.commit_push("a small environment");
    let mut daemon = g.spawn_run();
    let r = wait_record(&mut daemon, &f.repo, &c0, &f.env.name).await;
    assert_eq!(r.outcome, Outcome::Healthy, "{r:#?}");
    let baseline = peak_rss_kib(daemon.pid());
    println!("limits: daemon peak RSS after a healthy apply: {baseline} KiB");

    let cases = [
        Case {
            what: "a 200 MiB file",
            write: huge_file,
            expect: "more than the limit of 4194304 bytes per file",
        },
        Case {
            what: "1,000,000 objects",
            write: million_objects,
            expect: "more than the limit of 50000 objects",
        },
        Case {
            what: "1,000 small alias bombs",
            write: many_bombs,
            expect: "YAML nodes",
        },
    ];
    let mut written: Vec<String> = Vec::new();
    for case in cases {
        for rel in written.drain(..) {
            f.repo.remove(&rel);
        }
        written = (case.write)(&f.repo, &dir);
        let commit = f.repo.commit(case.what);
        // Over SSH: the testbed's HTTPS server refuses request bodies of tens of MiB.
        let ssh = f.repo.remote.ssh_url.clone();
        f.repo.git(&["push", "-q", &ssh, "HEAD:refs/heads/main"]);
        let pushed = Instant::now();
        let r = wait_record(&mut daemon, &f.repo, &commit, &f.env.name).await;
        let elapsed = pushed.elapsed();
        let peak = peak_rss_kib(daemon.pid());
        println!(
            "limits: {}: rejected {:.1}s after the push, daemon peak RSS {peak} KiB",
            case.what,
            elapsed.as_secs_f64()
        );
        assert_eq!(r.outcome, Outcome::Rejected, "{}: {r:#?}", case.what);
        let first = &r.errors[0];
        let at = first.at.as_deref().unwrap_or_default();
        assert!(
            written.iter().any(|w| at.starts_with(w.as_str())),
            "{}: the error names a file written: {first:?}",
            case.what
        );
        assert!(
            first.reason.contains(case.expect),
            "{}: {first:?}",
            case.what
        );
        // Seconds, not minutes: the poll, a fetch of the push, and an early stop.
        assert!(
            elapsed < Duration::from_secs(60),
            "{}: {elapsed:?}",
            case.what
        );
        // Bounded: nothing close to the input's expanded size (200 MiB, 10^8 bomb nodes).
        assert!(
            peak < baseline + 512 * 1024,
            "{}: peak RSS {peak} KiB (baseline {baseline} KiB)",
            case.what
        );
    }
    // Nothing of the rejected commits was applied.
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(f.client.clone(), &f.ns);
    assert!(cms.get_opt("huge").await.unwrap().is_none());
    assert!(cms.get_opt("c0").await.unwrap().is_none());
}
