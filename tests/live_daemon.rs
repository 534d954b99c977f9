//! `gitopsd run` schedules each environment on its own (issue 11), end to end against the
//! testbed: one environment's long health wait does not delay another's commit; a newer commit
//! supersedes a health wait (and a superseding commit that fails too rolls back to the last
//! healthy one); SIGHUP rebuilds only the environment whose config changed; the systemd watchdog
//! keeps being fed during a long health wait.
//!
//! Each test has its own repository, namespace(s) and environment name(s), so tests run in
//! parallel with other agents' tests on the same testbed.

mod support;

use support::notify::NotifySocket;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gitopsd::status::{Outcome, Record};
use serde_json::Value;
use support::gitopsd::{
    Daemon, Env, Fixture, Gitopsd, Transport, WorkRepo, configmap, configmap_data, deployment,
    deployment_state, json_lines, wait_daemon,
};

/// The repository poll of the harness's host configs (`poll: 1s`).
const POLL: Duration = Duration::from_secs(1);
/// A progressDeadlineSeconds so long that an unready rollout never fails early: only the
/// health timeout ends its wait.
const NEVER: u32 = 600;

// ------------------------------------------------------------------------------------------------
// helpers

/// A record of `env` on `commit` that is not an intermediate `rolling_back` one, if any yet.
fn final_record(repo: &WorkRepo, commit: &str, env: &str) -> Option<Record> {
    repo.record(commit, env).filter(|r| !r.rolling_back)
}

/// Waits for the final record of `env` on `commit`.
async fn wait_record(
    daemon: &mut Daemon,
    repo: &WorkRepo,
    commit: &str,
    env: &str,
    timeout: Duration,
) -> Record {
    let mut found = None;
    wait_daemon(
        daemon,
        &format!("the record of {env} on {commit}"),
        timeout,
        || {
            found = final_record(repo, commit, env);
            std::future::ready(found.is_some())
        },
    )
    .await;
    found.unwrap()
}

/// The image of Deployment `name` ends with `:version` (the apply of that version is done).
async fn wait_image(daemon: &mut Daemon, client: &kube::Client, ns: &str, name: &str, v: &str) {
    let suffix = format!(":{v}");
    wait_daemon(
        daemon,
        &format!("Deployment {ns}/{name} at version {v}"),
        Duration::from_secs(60),
        || async {
            deployment_state(client, ns, name)
                .await
                .is_some_and(|(_, image, _)| image.ends_with(&suffix))
        },
    )
    .await;
}

fn log_events(daemon: &Daemon) -> Vec<Value> {
    json_lines(&daemon.log_text())
}

/// The `env` field of every log event with this message.
fn envs_logging(daemon: &Daemon, message: &str) -> Vec<String> {
    log_events(daemon)
        .iter()
        .filter(|e| e["message"] == message)
        .map(|e| e["env"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn rfc3339(s: &str) -> std::time::SystemTime {
    humantime::parse_rfc3339(s).unwrap_or_else(|e| panic!("timestamp {s:?}: {e}"))
}

// ------------------------------------------------------------------------------------------------
// the notify socket

/// `gitopsd run` with `NOTIFY_SOCKET`, and `WATCHDOG_USEC` when given (no `WATCHDOG_PID`: the
/// watchdog is the daemon's own). Nothing of the test's own systemd environment leaks in.
fn spawn_notified(g: &Gitopsd, socket: &Path, watchdog_usec: Option<u64>) -> Daemon {
    static N: AtomicUsize = AtomicUsize::new(0);
    let log = g
        .dir()
        .join(format!("live-{}.log", N.fetch_add(1, Ordering::Relaxed)));
    let file = std::fs::File::create(&log).unwrap();
    let mut cmd = g.command("run", &[]);
    cmd.stdout(file.try_clone().unwrap())
        .stderr(file)
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env("NOTIFY_SOCKET", socket);
    if let Some(usec) = watchdog_usec {
        cmd.env("WATCHDOG_USEC", usec.to_string());
    }
    let child = cmd.spawn().expect("spawn gitopsd run");
    Daemon { child, log }
}

// ------------------------------------------------------------------------------------------------
// 1. one environment's health wait does not delay another

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stuck_health_wait_does_not_delay_another_environment() {
    let tb = require_testbed!();
    let client = tb.kube_client().await;
    let ns_slow = tb.namespace(&client, "ld-slow").await;
    let ns_fast = tb.namespace(&client, "ld-fast").await;
    let repo = WorkRepo::new(tb, "ld-two-envs");
    let slow = Env::new("ld-slow", "envs/slow", &ns_slow);
    let fast = Env::new("ld-fast", "envs/fast", &ns_fast);
    assert_eq!(slow.health_timeout, Duration::from_secs(60));
    let g = Gitopsd::new(
        tb,
        &repo.remote,
        Transport::Https,
        &[slow.clone(), fast.clone()],
    );
    repo.write(
        "envs/slow/web.yaml",
        &deployment("web", 1, None, NEVER, "1"),
    );
    repo.write("envs/fast/cm.yaml", &configmap("settings", &[("v", "1")]));
    let c0 = repo.commit_push("c0: both healthy");
    let mut daemon = g.spawn_run();
    for env in [&slow.name, &fast.name] {
        let r = wait_record(&mut daemon, &repo, &c0, env, Duration::from_secs(90)).await;
        assert_eq!(r.outcome, Outcome::Healthy, "{env} on c0: {r:#?}");
    }

    // slow: pods that never become ready; its wait can only end at the 60 s timeout.
    repo.write(
        "envs/slow/web.yaml",
        &deployment("web", 1, Some("unready"), NEVER, "2"),
    );
    let c_slow = repo.commit_push("slow: pods never become ready");
    let slow_pushed = Instant::now();
    wait_image(&mut daemon, &client, &ns_slow, "web", "2").await;
    // fast is idle again (its render did not change with c_slow).
    let r = wait_record(
        &mut daemon,
        &repo,
        &c_slow,
        &fast.name,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(r.outcome, Outcome::Healthy, "{r:#?}");

    repo.write("envs/fast/cm.yaml", &configmap("settings", &[("v", "2")]));
    let c_fast = repo.commit("fast: a new value");
    let pushed = Instant::now();
    repo.push();
    let push_took = pushed.elapsed();
    wait_daemon(
        &mut daemon,
        "fast's ConfigMap at v=2",
        Duration::from_secs(30),
        || async {
            configmap_data(&client, &ns_fast, "settings")
                .await
                .is_some_and(|d| d.get("v").map(String::as_str) == Some("2"))
        },
    )
    .await;
    let latency = pushed.elapsed();
    println!(
        "push -> applied in the other environment: {latency:?} (git push took {push_took:?}, poll {POLL:?})"
    );
    assert!(
        latency < POLL + Duration::from_secs(2),
        "fast's commit took {latency:?} from its push to the cluster (poll {POLL:?} + 2 s allowed)"
    );

    let r = wait_record(
        &mut daemon,
        &repo,
        &c_fast,
        &fast.name,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(r.outcome, Outcome::Healthy, "{r:#?}");
    // ...while slow is still in its health wait: no verdict on its commit, nor on the next.
    assert!(
        slow_pushed.elapsed() < slow.health_timeout,
        "the test itself took too long to show anything"
    );
    assert_eq!(
        repo.record(&c_slow, &slow.name),
        None,
        "{}",
        daemon.log_tail()
    );
    assert_eq!(
        repo.record(&c_fast, &slow.name),
        None,
        "{}",
        daemon.log_tail()
    );
    let (ready, image, _) = deployment_state(&client, &ns_slow, "web").await.unwrap();
    assert!(!ready && image.ends_with(":2"), "slow is still rolling out");
}

// ------------------------------------------------------------------------------------------------
// 2. a newer commit supersedes a health wait

/// Writes the web Deployment (`fail`, image version `v`) and a ConfigMap saying `v`, commits
/// and pushes.
fn push_version(f: &Fixture, v: &str, fail: Option<&str>, message: &str) -> String {
    let dir = &f.env.path;
    f.repo.write(
        &format!("{dir}/web.yaml"),
        &deployment("web", 1, fail, NEVER, v),
    );
    f.repo.write(
        &format!("{dir}/cm.yaml"),
        &configmap("settings", &[("v", v)]),
    );
    f.repo.commit_push(message)
}

/// The cluster holds version `v` of both objects, and web is rolled out and ready.
async fn assert_cluster_at(f: &Fixture, v: &str) {
    let (ready, image, labels) = deployment_state(&f.client, &f.ns, "web")
        .await
        .expect("Deployment web");
    assert!(ready, "web is ready at {v}");
    assert_eq!(image, format!("registry.invalid/gitopsd/fake:{v}"));
    assert!(!labels.contains_key("gitopsd.test/fail"), "{labels:?}");
    let data = configmap_data(&f.client, &f.ns, "settings").await.unwrap();
    assert_eq!(data["v"], v, "ConfigMap settings");
}

fn assert_superseded(r: &Record, by: &str) {
    assert_eq!(r.outcome, Outcome::Superseded, "{r:#?}");
    assert_eq!(r.pinned, None, "a superseded commit is not pinned: {r:#?}");
    assert!(
        r.messages.iter().any(|m| m.contains(by)),
        "names the commit that superseded it: {r:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_newer_commit_supersedes_a_health_wait() {
    let tb = require_testbed!();
    let f = Fixture::with(tb, "ld-supersede", |e| {
        e.health_timeout = Duration::from_secs(60);
        e.rollback = true;
    })
    .await;
    let c1 = push_version(&f, "1", None, "c1: healthy");
    let mut daemon = f.gitopsd.spawn_run();
    let env = f.env.name.clone();
    let r1 = wait_record(&mut daemon, &f.repo, &c1, &env, Duration::from_secs(90)).await;
    assert_eq!(r1.outcome, Outcome::Healthy, "{r1:#?}");

    // c2 never becomes ready; c3, pushed during c2's wait, fixes it.
    let c2 = push_version(&f, "2", Some("unready"), "c2: pods never become ready");
    let c2_pushed = Instant::now();
    wait_image(&mut daemon, &f.client, &f.ns, "web", "2").await;
    assert_eq!(
        final_record(&f.repo, &c2, &env),
        None,
        "c2 is still waiting"
    );
    let c3 = push_version(&f, "3", None, "c3: ready again");
    let r3 = wait_record(&mut daemon, &f.repo, &c3, &env, Duration::from_secs(90)).await;
    assert_eq!(r3.outcome, Outcome::Healthy, "{r3:#?}");
    let r2 = f.repo.expect_record(&c2, &env);
    assert_superseded(&r2, &c3);
    assert!(
        rfc3339(&r2.finished) < rfc3339(&r2.started) + f.env.health_timeout,
        "c2's wait was cut short, not timed out: {r2:#?}"
    );
    assert!(
        c2_pushed.elapsed() < f.env.health_timeout,
        "c3 healthy before c2's deadline"
    );
    assert_cluster_at(&f, "3").await;

    // c4 never becomes ready; c5, pushed during c4's wait, does not either: back to c3.
    let c4 = push_version(&f, "4", Some("unready"), "c4: pods never become ready");
    wait_image(&mut daemon, &f.client, &f.ns, "web", "4").await;
    assert_eq!(
        final_record(&f.repo, &c4, &env),
        None,
        "c4 is still waiting"
    );
    let c5 = push_version(&f, "5", Some("unready"), "c5: still never ready");
    let r5 = wait_record(&mut daemon, &f.repo, &c5, &env, Duration::from_secs(150)).await;
    assert_eq!(r5.outcome, Outcome::RolledBack, "{r5:#?}");
    assert!(r5.pinned.is_some(), "c5 is pinned: {r5:#?}");
    assert_eq!(r5.from.as_deref(), Some(c3.as_str()), "{r5:#?}");
    assert_eq!(r5.applied.as_deref(), Some(c3.as_str()), "{r5:#?}");
    assert_superseded(&f.repo.expect_record(&c4, &env), &c5);
    assert_cluster_at(&f, "3").await;
    let r3 = f.repo.expect_record(&c3, &env);
    assert!(
        r3.reapplied
            .iter()
            .any(|x| x.because.contains(&c5) && x.healthy),
        "c3 records its re-application because of c5: {r3:#?}"
    );
}

// ------------------------------------------------------------------------------------------------
// 3. SIGHUP rebuilds only the environment whose config changed

const RESTARTED: &str = "environment (re)started";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_rebuilds_only_the_changed_environment() {
    let tb = require_testbed!();
    let client = tb.kube_client().await;
    let ns_a = tb.namespace(&client, "ld-hup-a").await;
    let ns_b = tb.namespace(&client, "ld-hup-b").await;
    let repo = WorkRepo::new(tb, "ld-hup");
    let a = Env::new("ld-hup-a", "envs/a", &ns_a);
    let mut b = Env::new("ld-hup-b", "envs/b", &ns_b);
    // A distinct value, so the edit below touches b's section only.
    b.health_timeout = Duration::from_secs(45);
    let g = Gitopsd::new(tb, &repo.remote, Transport::Https, &[a.clone(), b.clone()]);
    repo.write("envs/a/cm.yaml", &configmap("settings", &[("v", "1")]));
    repo.write("envs/b/cm.yaml", &configmap("settings", &[("v", "1")]));
    let c1 = repo.commit_push("c1: a and b");
    let notify = NotifySocket::bind();
    let mut daemon = spawn_notified(&g, &notify.path, None);
    for env in [&a.name, &b.name] {
        let r = wait_record(&mut daemon, &repo, &c1, env, Duration::from_secs(90)).await;
        assert_eq!(r.outcome, Outcome::Healthy, "{env}: {r:#?}");
    }
    assert_eq!(envs_logging(&daemon, RESTARTED), Vec::<String>::new());

    let text = g.config_text();
    assert_eq!(text.matches("timeout: 45s").count(), 1, "{text}");
    std::fs::write(&g.config, text.replace("timeout: 45s", "timeout: 50s")).unwrap();
    let before = notify.lines().len();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &daemon.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_daemon(
        &mut daemon,
        "RELOADING=1 then READY=1",
        Duration::from_secs(60),
        || std::future::ready(notify.reload_done(before)),
    )
    .await;
    assert!(
        daemon.log_text().contains("config reloaded"),
        "{}",
        daemon.log_tail()
    );
    assert_eq!(envs_logging(&daemon, RESTARTED), vec![b.name.clone()]);

    // a kept running: it applies the next commit, still without a restart.
    repo.write("envs/a/cm.yaml", &configmap("settings", &[("v", "2")]));
    let c2 = repo.commit_push("c2: a changes");
    wait_daemon(&mut daemon, "a at v=2", Duration::from_secs(30), || async {
        configmap_data(&client, &ns_a, "settings")
            .await
            .is_some_and(|d| d.get("v").map(String::as_str) == Some("2"))
    })
    .await;
    for env in [&a.name, &b.name] {
        let r = wait_record(&mut daemon, &repo, &c2, env, Duration::from_secs(30)).await;
        assert_eq!(r.outcome, Outcome::Healthy, "{env}: {r:#?}");
    }
    assert_eq!(envs_logging(&daemon, RESTARTED), vec![b.name.clone()]);
    let status = daemon.terminate(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{}", daemon.log_tail());
}

// ------------------------------------------------------------------------------------------------
// 4. the watchdog during a long health wait

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_watchdog_is_fed_during_a_long_health_wait() {
    const WATCHDOG_USEC: u64 = 2_000_000;
    // Pings are due every WATCHDOG_USEC / 2; a late ping is allowed this much on a busy host
    // (still short of WATCHDOG_USEC, where systemd would kill the service).
    const SLACK: Duration = Duration::from_millis(750);
    let tb = require_testbed!();
    let f = Fixture::with(tb, "ld-watchdog", |e| {
        e.health_timeout = Duration::from_secs(30);
    })
    .await;
    let dir = f.env.path.clone();
    f.repo.write(
        &format!("{dir}/web.yaml"),
        &deployment("web", 1, Some("unready"), NEVER, "1"),
    );
    let c1 = f.repo.commit_push("c1: pods never become ready");
    let notify = NotifySocket::bind();
    let mut daemon = spawn_notified(&f.gitopsd, &notify.path, Some(WATCHDOG_USEC));
    wait_image(&mut daemon, &f.client, &f.ns, "web", "1").await;
    let wait_from = Instant::now();
    let r = wait_record(
        &mut daemon,
        &f.repo,
        &c1,
        &f.env.name,
        Duration::from_secs(90),
    )
    .await;
    let wait_to = Instant::now();
    assert_eq!(r.outcome, Outcome::Unhealthy, "{r:#?}");
    let waited = rfc3339(&r.finished)
        .duration_since(rfc3339(&r.started))
        .unwrap();
    assert!(
        waited >= f.env.health_timeout,
        "the health wait ran to its timeout: {r:#?}"
    );

    let pings: Vec<Instant> = notify
        .timed_lines()
        .into_iter()
        .filter(|(t, l)| l == "WATCHDOG=1" && *t >= wait_from && *t <= wait_to)
        .map(|(t, _)| t)
        .collect();
    let mut marks = vec![wait_from];
    marks.extend(&pings);
    marks.push(wait_to);
    let longest = marks.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    println!(
        "{} WATCHDOG=1 in {:?} of health wait; longest gap {longest:?}",
        pings.len(),
        wait_to - wait_from
    );
    let due = Duration::from_micros(WATCHDOG_USEC / 2);
    assert!(
        longest <= due + SLACK,
        "a gap of {longest:?} without WATCHDOG=1 during the health wait (due every {due:?})"
    );
}
