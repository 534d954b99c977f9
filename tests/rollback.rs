//! End to end (issue 4): health failures roll the environment back to the last healthy commit
//! and pin the bad one; retry, manual rollback, kill -9 during a rollback, HTTP checks.
//!
//! Each test has its own repository, namespace and environment name, so tests run in parallel.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use gitopsd::status::{Outcome, Record};
use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use support::gitopsd::{
    CmdOut, Env, Fixture, admin_writes, audit_writes, configmap, configmap_data, deployment,
    deployment_state, event_time, job, owned_configmaps,
};

impl Fixture {
    /// The shared fixture with this file's default: health waits of 60 s.
    async fn with_health_timeout(
        tb: &'static support::Testbed,
        prefix: &str,
        edit: impl FnOnce(&mut Env),
    ) -> Fixture {
        Fixture::with(tb, prefix, |env| {
            env.health_timeout = Duration::from_secs(60);
            edit(env);
        })
        .await
    }

    async fn new(tb: &'static support::Testbed, prefix: &str) -> Fixture {
        Self::with_health_timeout(tb, prefix, |_| {}).await
    }

    fn write(&self, name: &str, text: &str) {
        self.repo.write(&format!("{}/{name}", self.env.path), text);
    }

    fn remove(&self, name: &str) {
        self.repo.remove(&format!("{}/{name}", self.env.path));
    }

    /// `gitopsd once` on the blocking pool (the test's runtime keeps serving, e.g. an HTTP check).
    async fn once(&self) -> CmdOut {
        let mut cmd = self.gitopsd.command("once", &["--env", &self.env.name]);
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let out = cmd.output().expect("run gitopsd once");
            CmdOut {
                status: out.status,
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                elapsed: started.elapsed(),
            }
        })
        .await
        .unwrap()
    }

    fn record(&self, commit: &str) -> Record {
        self.repo.expect_record(commit, &self.env.name)
    }

    async fn web(&self) -> (bool, String, std::collections::BTreeMap<String, String>) {
        deployment_state(&self.client, &self.ns, "web")
            .await
            .expect("Deployment web exists")
    }
}

fn assert_rolled_back(r: &Record, object: &str, reason: &str) {
    assert_eq!(r.outcome, Outcome::RolledBack, "{r:#?}");
    assert!(!r.rolling_back, "{r:#?}");
    assert!(r.pinned.is_some(), "a rolled-back commit is pinned: {r:#?}");
    assert!(
        r.errors
            .iter()
            .any(|e| e.object.contains(object) && e.reason.contains(reason)),
        "the failing object {object} and the reason ({reason}) are recorded: {r:#?}"
    );
}

fn assert_reapplied_because(a: &Record, because: &str) {
    assert!(
        a.reapplied
            .iter()
            .any(|x| x.because.contains(because) && x.healthy),
        "the healthy commit records its re-application because of {because}: {a:#?}"
    );
}

/// Seconds between the first log events whose message contains `from` and `to`.
fn log_gap(out: &CmdOut, from: &str, to: &str) -> Option<f64> {
    let events = out.log_events();
    let at = |needle: &str| {
        events
            .iter()
            .find(|e| e["message"].as_str().is_some_and(|m| m.contains(needle)))
            .and_then(event_time)
    };
    Some(at(to)?.duration_since(at(from)?).ok()?.as_secs_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unready_deployment_is_rolled_back_and_pinned() {
    let tb = require_testbed!();
    let f = Fixture::new(tb, "rb-unready").await;
    f.write("web.yaml", &deployment("web", 2, None, 10, "1"));
    f.write("cm.yaml", &configmap("settings", &[("v", "a")]));
    let a = f.repo.commit_push("A: healthy");
    f.once().await.assert_success("A");
    assert!(f.web().await.0);

    f.write("web.yaml", &deployment("web", 2, Some("unready"), 10, "2"));
    f.write("cm.yaml", &configmap("settings", &[("v", "c")]));
    let c = f.repo.commit_push("C: pods never become ready");
    let out = f.once().await;
    out.assert_failure("once on C (rolled back)");
    assert!(out.stdout.contains(": rolled-back "), "{out}");

    // The previous spec is back and Available.
    let (available, image, labels) = f.web().await;
    assert!(available, "web is Available again after the rollback");
    assert_eq!(image, "registry.invalid/gitopsd/fake:1");
    assert!(!labels.contains_key("gitopsd.test/fail"), "{labels:?}");
    assert_eq!(
        configmap_data(&f.client, &f.ns, "settings").await.unwrap()["v"],
        "a"
    );

    let rc = f.record(&c);
    assert_rolled_back(&rc, "Deployment", "ProgressDeadlineExceeded");
    assert_eq!(rc.from.as_deref(), Some(a.as_str()));
    assert_reapplied_because(&f.record(&a), &c);
    let log = f.repo.log_with_notes();
    assert!(
        log.contains(&format!("# gitopsd {}: rolled-back", f.env.name)),
        "{log}"
    );

    // Figures: apply of C → unhealthy (the progress deadline, not the 60 s health timeout), and
    // unhealthy → healthy again after the rollback.
    let detect = log_gap(&out, "reconciling", "unhealthy, rolling back").expect("log events");
    let recover = log_gap(&out, "unhealthy, rolling back", "rolled back").expect("log events");
    eprintln!(
        "rollback-timing: C applied -> unhealthy after {detect:.1} s (progressDeadlineSeconds 10, health timeout 60 s); \
         unhealthy -> healthy again after rollback {recover:.1} s; whole once {:.1} s",
        out.elapsed.as_secs_f64()
    );
    assert!(
        detect < 60.0,
        "ProgressDeadlineExceeded ends the wait before the health timeout: {detect} s"
    );

    // The pinned head is left alone: nothing is applied again.
    let before = audit_writes(tb, &f.client, &f.ns).await.len();
    let again = f.once().await;
    again.assert_failure("once on the pinned head");
    assert!(again.stdout.contains(": pinned "), "{again}");
    let writes = audit_writes(tb, &f.client, &f.ns).await;
    let writes = admin_writes(&writes[before..]);
    assert!(
        writes.iter().all(|e| e.dry_run),
        "a pinned commit is not applied again: {writes:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_job_is_rolled_back() {
    let tb = require_testbed!();
    let f = Fixture::new(tb, "rb-job").await;
    f.write("job-a.yaml", &job("migrate-a", None));
    f.write("cm.yaml", &configmap("settings", &[("v", "a")]));
    let a = f.repo.commit_push("A: a job that completes");
    f.once().await.assert_success("A");

    // Jobs' pod templates are immutable: a new commit brings a new Job.
    f.write("job-c.yaml", &job("migrate-c", Some("crash")));
    f.write("cm.yaml", &configmap("settings", &[("v", "c")]));
    let c = f.repo.commit_push("C: a job that crashes");
    f.once().await.assert_failure("once on C");
    let rc = f.record(&c);
    assert_rolled_back(&rc, "migrate-c", "failed");
    assert_reapplied_because(&f.record(&a), &c);
    let jobs = Api::<Job>::namespaced(f.client.clone(), &f.ns);
    support::wait_until(
        "the Job added by C to be deleted",
        Duration::from_secs(30),
        || async { jobs.get_opt("migrate-c").await.unwrap().is_none() },
    )
    .await;
    assert!(
        jobs.get_opt("migrate-a").await.unwrap().is_some(),
        "A's Job stays"
    );
    assert_eq!(
        configmap_data(&f.client, &f.ns, "settings").await.unwrap()["v"],
        "a"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollback_recreates_what_c_deleted_and_removes_what_c_added_then_a_later_good_commit_applies()
 {
    let tb = require_testbed!();
    let f = Fixture::new(tb, "rb-objects").await;
    f.write("web.yaml", &deployment("web", 1, None, 10, "1"));
    f.write("keep.yaml", &configmap("keep", &[("v", "a")]));
    f.write("doomed.yaml", &configmap("doomed", &[("v", "a")]));
    let a = f.repo.commit_push("A");
    f.once().await.assert_success("A");

    f.remove("doomed.yaml");
    f.write("extra.yaml", &configmap("extra", &[("v", "c")]));
    f.write("web.yaml", &deployment("web", 1, Some("unready"), 10, "2"));
    let c = f
        .repo
        .commit_push("C: deletes doomed, adds extra, breaks web");
    f.once().await.assert_failure("once on C");
    assert_rolled_back(&f.record(&c), "web", "ProgressDeadlineExceeded");
    let owned: std::collections::BTreeSet<String> = owned_configmaps(&f.client, &f.ns, &f.env.name)
        .await
        .into_iter()
        .collect();
    assert_eq!(
        owned,
        ["doomed", "keep"].iter().map(|s| s.to_string()).collect(),
        "doomed is re-created and extra removed by the rollback"
    );
    assert_eq!(
        configmap_data(&f.client, &f.ns, "doomed").await.unwrap()["v"],
        "a"
    );
    assert!(f.web().await.0);
    assert_reapplied_because(&f.record(&a), &c);

    // A later good commit is applied; C stays pinned.
    f.write("web.yaml", &deployment("web", 1, None, 10, "3"));
    let d = f.repo.commit_push("D: fixed");
    f.once().await.assert_success("once on D");
    let rd = f.record(&d);
    assert_eq!(rd.outcome, Outcome::Healthy, "{rd:#?}");
    assert_eq!(
        rd.from.as_deref(),
        Some(a.as_str()),
        "D moves from A, the last healthy commit: {rd:#?}"
    );
    let (available, image, _) = f.web().await;
    assert!(available);
    assert_eq!(image, "registry.invalid/gitopsd/fake:3");
    assert!(
        configmap_data(&f.client, &f.ns, "extra").await.is_some(),
        "D keeps C's extra file"
    );
    assert!(
        configmap_data(&f.client, &f.ns, "doomed").await.is_none(),
        "D deletes doomed, as C meant to"
    );
    let rc = f.record(&c);
    assert!(rc.pinned.is_some(), "C stays pinned: {rc:#?}");
    let status = f.gitopsd.cmd("status", &["--output", "json"]);
    let v: serde_json::Value =
        serde_json::from_str(&status.stdout).unwrap_or_else(|e| panic!("{e}: {status}"));
    assert_eq!(
        v[&f.env.name]["last_healthy"].as_str(),
        Some(d.as_str()),
        "{v:#}"
    );
    assert!(v[&f.env.name]["pinned"].get(&c).is_some(), "{v:#}");
}

/// A minimal HTTP server answering every request with the status in `status`.
async fn http_server(status: Arc<AtomicU16>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            let status = Arc::clone(&status);
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let code = status.load(Ordering::SeqCst);
                let body = if code == 200 { "ok" } else { "failing" };
                let response = format!(
                    "HTTP/1.1 {code} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(response.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    format!("http://{addr}/healthz")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_check_500_triggers_rollback_and_retry_reapplies_the_commit() {
    let tb = require_testbed!();
    let status = Arc::new(AtomicU16::new(200));
    let url = http_server(Arc::clone(&status)).await;
    let f = Fixture::with_health_timeout(tb, "rb-http", |e| {
        e.health_timeout = Duration::from_secs(8);
        e.http_checks = vec![url.clone()];
    })
    .await;
    f.write("cm.yaml", &configmap("settings", &[("v", "a")]));
    let a = f.repo.commit_push("A");
    f.once()
        .await
        .assert_success("A with the check answering 200");

    // The service answers 500 after C: once C is recorded unhealthy (rolling back), it recovers.
    status.store(500, Ordering::SeqCst);
    f.write("cm.yaml", &configmap("settings", &[("v", "c")]));
    let c = f.repo.commit_push("C");
    let run = f.once();
    let watch = async {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if f.repo
                .record(&c, &f.env.name)
                .is_some_and(|r| r.rolling_back || r.outcome != Outcome::Healthy)
            {
                status.store(200, Ordering::SeqCst);
                return;
            }
            assert!(Instant::now() < deadline, "C never recorded as unhealthy");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (out, ()) = tokio::join!(run, watch);
    out.assert_failure("once on C");
    let rc = f.record(&c);
    assert_rolled_back(&rc, "http check", "status 500");
    assert_eq!(
        configmap_data(&f.client, &f.ns, "settings").await.unwrap()["v"],
        "a"
    );
    assert_reapplied_because(&f.record(&a), &c);

    // Pinned: the next pass leaves it. `retry` unpins; the pass after that tries C again, and
    // with the service healthy now, C is applied.
    f.once().await.assert_failure("once on the pinned head");
    let retry = f.gitopsd.cmd("retry", &["--env", &f.env.name, &c]);
    retry.assert_success("retry");
    let rc = f.record(&c);
    assert!(rc.pinned.is_none(), "retry unpins: {rc:#?}");
    let again = f.once().await;
    again.assert_success("once after retry");
    assert_eq!(f.record(&c).outcome, Outcome::Healthy);
    assert_eq!(
        configmap_data(&f.client, &f.ns, "settings").await.unwrap()["v"],
        "c"
    );
    // Retrying a commit the environment never saw is an error.
    let unknown = f.repo.commit_push("E: not processed yet");
    f.gitopsd
        .cmd("retry", &["--env", &f.env.name, &unknown])
        .assert_failure("retry of a commit without a record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manual_rollback_applies_an_older_healthy_commit_and_pins_newer_ones() {
    let tb = require_testbed!();
    let f = Fixture::new(tb, "rb-manual").await;
    f.write("cm.yaml", &configmap("settings", &[("v", "1")]));
    f.write("web.yaml", &deployment("web", 1, None, 10, "1"));
    let a = f.repo.commit_push("A");
    f.once().await.assert_success("A");
    f.write("cm.yaml", &configmap("settings", &[("v", "2")]));
    f.write("web.yaml", &deployment("web", 1, None, 10, "2"));
    f.write("new.yaml", &configmap("added-by-b", &[("v", "2")]));
    let b = f.repo.commit_push("B");
    f.once().await.assert_success("B");

    // Rolling back to a commit that was never healthy is refused.
    f.write(
        "bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata: [1]\n",
    );
    let bad = f.repo.commit_push("bad");
    f.once().await.assert_failure("bad is rejected");
    let refused = f
        .gitopsd
        .cmd("rollback", &["--env", &f.env.name, "--to", &bad]);
    refused.assert_failure("rollback to a never-healthy commit");
    assert!(refused.stderr.contains("never healthy"), "{refused}");

    let out = f
        .gitopsd
        .cmd("rollback", &["--env", &f.env.name, "--to", &a]);
    out.assert_success("manual rollback to A");
    assert_eq!(
        configmap_data(&f.client, &f.ns, "settings").await.unwrap()["v"],
        "1"
    );
    assert!(
        configmap_data(&f.client, &f.ns, "added-by-b")
            .await
            .is_none(),
        "B's object is removed"
    );
    let (available, image, _) = f.web().await;
    assert!(available);
    assert_eq!(image, "registry.invalid/gitopsd/fake:1");
    assert_reapplied_because(&f.record(&a), "manual rollback");
    let rb = f.record(&b);
    assert!(
        rb.pinned
            .as_deref()
            .is_some_and(|p| p.contains("manual rollback")),
        "B is pinned: {rb:#?}"
    );

    // The daemon does not move forward again by itself...
    let before = audit_writes(tb, &f.client, &f.ns).await.len();
    f.once().await.assert_failure("once with the head pinned");
    let writes = audit_writes(tb, &f.client, &f.ns).await;
    assert!(
        admin_writes(&writes[before..]).iter().all(|e| e.dry_run),
        "nothing applied while pinned"
    );
    assert_eq!(
        configmap_data(&f.client, &f.ns, "settings").await.unwrap()["v"],
        "1"
    );
    // ...until a newer commit arrives.
    f.remove("bad.yaml");
    f.write("cm.yaml", &configmap("settings", &[("v", "3")]));
    let d = f.repo.commit_push("D");
    f.once().await.assert_success("once on D");
    assert_eq!(f.record(&d).outcome, Outcome::Healthy);
    assert_eq!(
        configmap_data(&f.client, &f.ns, "settings").await.unwrap()["v"],
        "3"
    );
}

/// Counts the ConfigMaps `cm-*` whose `v` is `value`.
async fn count_value(client: &kube::Client, ns: &str, value: &str) -> usize {
    let list = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .expect("list ConfigMaps");
    list.items
        .iter()
        .filter(|cm| {
            cm.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("cm-"))
        })
        .filter(|cm| {
            cm.data
                .as_ref()
                .and_then(|d| d.get("v"))
                .map(String::as_str)
                == Some(value)
        })
        .count()
}

/// One trial: A healthy, C unhealthy; `gitopsd run` is killed while it rolls C back, then
/// restarted. Returns whether the environment converged back to A with C rolled back.
async fn kill_during_rollback_trial(
    tb: &'static support::Testbed,
    trial: usize,
) -> Result<String, String> {
    const N: usize = 150;
    let f = Fixture::with_health_timeout(tb, &format!("rb-kill-{trial}"), |e| {
        e.apply_concurrency = Some(1)
    })
    .await;
    for i in 0..N {
        f.write(
            &format!("cm-{i:03}.yaml"),
            &configmap(&format!("cm-{i:03}"), &[("v", "a")]),
        );
    }
    f.write("web.yaml", &deployment("web", 1, None, 10, "1"));
    let a = f.repo.commit_push("A");
    let mut daemon = f.gitopsd.spawn_run();
    let deadline = Instant::now() + Duration::from_secs(120);
    while f.repo.record(&a, &f.env.name).is_none() {
        assert!(
            daemon.running(),
            "gitopsd run exited:\n{}",
            daemon.log_tail()
        );
        assert!(
            Instant::now() < deadline,
            "A not recorded:\n{}",
            daemon.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(f.record(&a).outcome, Outcome::Healthy);

    for i in 0..N {
        f.write(
            &format!("cm-{i:03}.yaml"),
            &configmap(&format!("cm-{i:03}"), &[("v", "c")]),
        );
    }
    f.write("web.yaml", &deployment("web", 1, Some("unready"), 10, "2"));
    let c = f.repo.commit_push("C");
    // C applied in full, then the rollback starts restoring A's values: kill in the middle.
    let deadline = Instant::now() + Duration::from_secs(120);
    while count_value(&f.client, &f.ns, "c").await < N {
        assert!(
            daemon.running() && Instant::now() < deadline,
            "C not applied:\n{}",
            daemon.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let restored = loop {
        let n = count_value(&f.client, &f.ns, "a").await;
        if n > 0 {
            break n;
        }
        assert!(
            daemon.running() && Instant::now() < deadline,
            "rollback never started:\n{}",
            daemon.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    daemon.kill9();
    let restored_after = count_value(&f.client, &f.ns, "a").await;
    let at_kill = f.repo.record(&c, &f.env.name);
    let phase = format!(
        "killed with {restored}..{restored_after} of {N} restored, C note at kill: {:?}",
        at_kill.as_ref().map(|r| (r.outcome, r.rolling_back))
    );

    let mut daemon = f.gitopsd.spawn_run();
    let deadline = Instant::now() + Duration::from_secs(120);
    let rc = loop {
        if let Some(r) = f
            .repo
            .record(&c, &f.env.name)
            .filter(|r| !r.rolling_back && r.outcome != Outcome::Unhealthy)
        {
            break r;
        }
        if !daemon.running() || Instant::now() >= deadline {
            return Err(format!(
                "{phase}; not finished after restart:\n{}",
                daemon.log_tail()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let converged = rc.outcome == Outcome::RolledBack
        && rc.pinned.is_some()
        && count_value(&f.client, &f.ns, "a").await == N
        && f.web().await.0
        && f.web().await.1 == "registry.invalid/gitopsd/fake:1"
        && f.record(&a)
            .reapplied
            .iter()
            .any(|r| r.because == c && r.healthy);
    let status = daemon.terminate(Duration::from_secs(30));
    if converged && status.success() {
        Ok(phase)
    } else {
        Err(format!(
            "{phase}; after restart: {rc:#?}; exit {status}\n{}",
            daemon.log_tail()
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_rollback_then_restart_completes_it() {
    let tb = require_testbed!();
    const TRIALS: usize = 3;
    let mut converged = 0;
    let mut failures = Vec::new();
    for trial in 0..TRIALS {
        match kill_during_rollback_trial(tb, trial).await {
            Ok(phase) => {
                converged += 1;
                eprintln!("kill-during-rollback trial {trial}: converged ({phase})");
            }
            Err(why) => {
                eprintln!("kill-during-rollback trial {trial}: NOT converged: {why}");
                failures.push(why);
            }
        }
    }
    eprintln!("kill-during-rollback: {converged}/{TRIALS} converged");
    assert_eq!(converged, TRIALS, "{failures:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revert_after_rollback_failed_brings_the_cluster_to_the_revert() {
    let tb = require_testbed!();
    let status = Arc::new(AtomicU16::new(200));
    let url = http_server(Arc::clone(&status)).await;
    let f = Fixture::with_health_timeout(tb, "rb-failed-revert", |e| {
        e.health_timeout = Duration::from_secs(8);
        e.http_checks = vec![url.clone()];
    })
    .await;
    f.write("cm.yaml", &configmap("settings", &[("v", "a")]));
    f.write("web.yaml", &deployment("web", 1, None, 30, "1"));
    f.repo.commit_push("A");
    f.once().await.assert_success("A");

    // C breaks web, and the service stays down through the rollback: rollback-failed.
    status.store(500, Ordering::SeqCst);
    f.write("cm.yaml", &configmap("settings", &[("v", "c")]));
    f.write("web.yaml", &deployment("web", 1, Some("unready"), 3, "2"));
    let c = f.repo.commit_push("C");
    f.once().await.assert_failure("C");
    let rc = f.record(&c);
    assert_eq!(rc.outcome, Outcome::RollbackFailed, "{rc:#?}");

    // The revert of C is planned against what is live, whatever the failed rollback left.
    status.store(200, Ordering::SeqCst);
    f.repo.git(&["revert", "--no-edit", &c]);
    let r = f.repo.head();
    f.repo.push();
    f.once().await.assert_success("the revert");
    assert_eq!(
        f.record(&r).outcome,
        Outcome::Healthy,
        "{:#?}",
        f.record(&r)
    );
    assert_eq!(
        configmap_data(&f.client, &f.ns, "settings").await.unwrap()["v"],
        "a"
    );
    let (ready, image, labels) = deployment_state(&f.client, &f.ns, "web").await.unwrap();
    assert!(ready && image.ends_with(":1"), "{image}");
    assert!(!labels.contains_key("gitopsd.test/fail"), "{labels:?}");
}
