//! Transient is not rejected (issue 11), end to end: a testbed server is stopped in the middle of
//! a pass and started again; the same commit is retried until it converges and is never recorded
//! rejected or pinned. Also: an existing bucket without gitopsd's tags is refused, not adopted.
//!
//! These tests stop servers every other test shares, so they run one at a time (`SERIAL`, held
//! for each test's whole body), and a guard starts what a test stopped even when it panics.

mod support;

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gitopsd::status::{Outcome, Record};
use support::gitopsd::{Daemon, Fixture, configmap, json_lines, owned_configmaps};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long the kube-apiserver stays down (the scenario of issue 11).
const APISERVER_OUTAGE: Duration = Duration::from_secs(20);

// ------------------------------------------------------------------------------------------------
// stopping and starting a testbed server

/// A testbed server this test stopped, with what it takes to start it again exactly as
/// tests/testbed/up did (`tb_start`: `setsid EXE ARGS >logs/NAME.log`, pid in run/NAME.pid).
/// Dropped while still stopped, it starts the server again (so a panicking test leaves none down).
struct Stopped {
    name: String,
    pid_file: PathBuf,
    log: PathBuf,
    exe: PathBuf,
    argv: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cwd: PathBuf,
    /// Succeeds once the server serves again.
    ready: Vec<String>,
    /// When SIGTERM was sent: the server stops listening at once, while its exit can wait for
    /// in-flight requests.
    signalled: Instant,
    running: bool,
}

/// The NUL-separated entries of a /proc file (cmdline, environ).
fn proc_list(path: &Path) -> Vec<OsString> {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    raw.split(|b| *b == 0)
        .filter(|part| !part.is_empty())
        .map(|part| OsString::from_vec(part.to_vec()))
        .collect()
}

/// Whether `pid` is a live process (a zombie has exited).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(ok.success(), "kill -{sig} {pid} failed");
}

fn setsid() -> PathBuf {
    ["/usr/bin/setsid", "/bin/setsid"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("setsid (util-linux) is installed")
}

impl Stopped {
    /// Reads how server `name` runs, stops it with SIGTERM and waits until it has exited
    /// (SIGKILL after `grace`).
    fn stop(tb: &support::Testbed, name: &str, ready: Vec<String>, grace: Duration) -> Stopped {
        let run = tb.root().join("run");
        let pid_file = run.join(format!("{name}.pid"));
        let exe_file = run.join(format!("{name}.exe"));
        let pid: u32 = std::fs::read_to_string(&pid_file)
            .unwrap_or_else(|e| panic!("read {}: {e}", pid_file.display()))
            .trim()
            .parse()
            .expect("a pid");
        let exe = std::fs::read_to_string(&exe_file).expect("read the .exe file");
        let exe = std::fs::canonicalize(exe.trim()).expect("the server's executable exists");
        let running_exe = std::fs::read_link(format!("/proc/{pid}/exe"));
        assert_eq!(
            running_exe.ok().as_ref(),
            Some(&exe),
            "{name} (pid {pid}) is not running: the testbed is not up"
        );
        let mut stopped = Stopped {
            name: name.to_string(),
            pid_file,
            log: tb.root().join("logs").join(format!("{name}.log")),
            exe,
            argv: proc_list(Path::new(&format!("/proc/{pid}/cmdline"))),
            env: proc_list(Path::new(&format!("/proc/{pid}/environ")))
                .into_iter()
                .filter_map(|kv| {
                    let kv = kv.into_vec();
                    let eq = kv.iter().position(|b| *b == b'=')?;
                    Some((
                        OsString::from_vec(kv[..eq].to_vec()),
                        OsString::from_vec(kv[eq + 1..].to_vec()),
                    ))
                })
                .collect(),
            cwd: std::fs::read_link(format!("/proc/{pid}/cwd")).expect("the server's cwd"),
            ready,
            signalled: Instant::now(),
            running: false,
        };
        assert!(!stopped.argv.is_empty(), "{name}: empty command line");
        stopped.signalled = Instant::now();
        signal(pid, "TERM");
        let deadline = stopped.signalled + grace;
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(pid) {
            eprintln!("[outage] {name} still running {grace:?} after SIGTERM: SIGKILL");
            signal(pid, "KILL");
            support::gitopsd::wait_for(&format!("{name} to exit"), Duration::from_secs(10), || {
                !alive(pid)
            });
        }
        eprintln!(
            "[outage] {name} (pid {pid}) stopped, {:?} after SIGTERM",
            stopped.signalled.elapsed()
        );
        stopped
    }

    /// Starts the server as before (same argv, environment and directory, output appended to its
    /// log, new pid in its pid file) and waits until it serves.
    fn start(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.log)
            .map_err(|e| format!("open {}: {e}", self.log.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        // Not a process-group leader, so setsid execs in place: the child's pid is the server's.
        let child = Command::new(setsid())
            .args(&self.argv)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.name))?;
        let pid = child.id();
        std::fs::write(&self.pid_file, format!("{pid}\n"))
            .map_err(|e| format!("write {}: {e}", self.pid_file.display()))?;
        self.running = true;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut exe_seen = false;
        loop {
            exe_seen = exe_seen
                || std::fs::read_link(format!("/proc/{pid}/exe")).ok().as_ref() == Some(&self.exe);
            let ready = exe_seen
                && Command::new(&self.ready[0])
                    .args(&self.ready[1..])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
            if ready {
                eprintln!("[outage] {} (pid {pid}) started again", self.name);
                return Ok(());
            }
            if !alive(pid) {
                return Err(format!(
                    "{} exited at start: see {}",
                    self.name,
                    self.log.display()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!("{} not ready after 120 s", self.name));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn restart(mut self) {
        self.start().unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if !self.running
            && let Err(e) = self.start()
        {
            eprintln!("[outage] FAILED to start {} again: {e}", self.name);
        }
    }
}

/// `curl` that fails unless `url` answers 2xx, within 2 s.
fn curl(args: &[String], url: String) -> Vec<String> {
    let mut cmd: Vec<String> = ["curl", "-fsS", "-o", "/dev/null", "--max-time", "2"]
        .map(String::from)
        .to_vec();
    cmd.extend_from_slice(args);
    cmd.push(url);
    cmd
}

/// The apiserver's `/readyz`, with the testbed's admin certificate (as tests/testbed/up checks).
fn apiserver_ready(tb: &support::Testbed) -> Vec<String> {
    let pki = tb.root().join("pki");
    let certs = [
        ("--cacert", "ca.crt"),
        ("--cert", "admin.crt"),
        ("--key", "admin.key"),
    ]
    .iter()
    .flat_map(|(flag, f)| [flag.to_string(), pki.join(f).display().to_string()])
    .collect::<Vec<_>>();
    curl(
        &certs,
        format!("{}/readyz", tb.env("GITOPSD_TEST_KUBE_SERVER")),
    )
}

fn versitygw_ready(tb: &support::Testbed) -> Vec<String> {
    curl(
        &[],
        format!("{}/health", tb.env("GITOPSD_TEST_S3_ENDPOINT_2")),
    )
}

// ------------------------------------------------------------------------------------------------
// the daemon and its records

/// The address of the daemon's endpoints, from its `endpoints listening` log event.
fn endpoint_address(daemon: &Daemon) -> String {
    let mut addr = None;
    support::gitopsd::wait_for(
        "the `endpoints listening` log event",
        Duration::from_secs(60),
        || {
            addr = json_lines(&daemon.log_text())
                .iter()
                .find(|e| e["message"] == "endpoints listening")
                .and_then(|e| e["address"].as_str().map(str::to_string));
            addr.is_some()
        },
    );
    addr.unwrap()
}

/// `gitopsd_transient_retries_total{environment=env,stage=stage}` from `/metrics` (0 if absent).
async fn transient_retries(addr: &str, env: &str, stage: &str) -> f64 {
    let body = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    let env_label = format!("environment=\"{env}\"");
    let stage_label = format!("stage=\"{stage}\"");
    body.lines()
        .filter(|l| l.starts_with("gitopsd_transient_retries_total{"))
        .filter(|l| l.contains(&env_label) && l.contains(&stage_label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Panics if `record` says the commit is bad: a transient failure must never be recorded so.
fn assert_not_condemned(record: Option<&Record>, commit: &str) {
    if let Some(r) = record {
        assert_ne!(r.outcome, Outcome::Rejected, "{commit} rejected: {r:?}");
        assert!(r.pinned.is_none(), "{commit} pinned: {r:?}");
    }
}

/// Waits until `commit` is recorded healthy, checking at each look that it is not condemned.
async fn wait_healthy(f: &Fixture, daemon: &Daemon, commit: &str, timeout: Duration) -> Record {
    let deadline = Instant::now() + timeout;
    loop {
        let record = f.repo.record(commit, &f.env.name);
        assert_not_condemned(record.as_ref(), commit);
        if let Some(r) = record.filter(|r| r.outcome == Outcome::Healthy) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{commit} not healthy after {timeout:?}; record {:?}; daemon log:\n{}",
            f.repo.record(commit, &f.env.name),
            daemon.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// How many passes started on `commit`, and how many failed passes were logged as transient
/// since the first of them.
fn passes_and_retries(daemon: &Daemon, commit: &str) -> (usize, usize) {
    let events = json_lines(&daemon.log_text());
    let is_pass = |e: &&serde_json::Value| e["message"] == "reconciling" && e["commit"] == commit;
    let passes = events.iter().filter(is_pass).count();
    let retries = events
        .iter()
        .skip_while(|e| !is_pass(e))
        .filter(|e| e["message"] == "reconcile failed; retrying the same commit")
        .filter(|e| e["transient"] == true)
        .count();
    (passes, retries)
}

/// Waits until the first of the environment's ConfigMaps exists; how many exist then.
async fn wait_apply_started(f: &Fixture, daemon: &Daemon) -> usize {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = owned_count(f).await;
        if n > 0 {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "the apply never started; daemon log:\n{}",
            daemon.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn owned_count(f: &Fixture) -> usize {
    owned_configmaps(&f.client, &f.ns, &f.env.name).await.len()
}

// ------------------------------------------------------------------------------------------------
// kube-apiserver down in the middle of an apply

const CONFIGMAPS: usize = 300;

#[tokio::test(flavor = "multi_thread")]
async fn kube_apiserver_down_mid_apply_retries_the_same_commit_until_it_converges() {
    let tb = require_testbed!();
    let _serial = SERIAL.lock().await;
    let f = Fixture::with(tb, "outage-kube", |env| {
        env.apply_concurrency = Some(2);
        env.health_timeout = Duration::from_secs(180);
    })
    .await;
    let filler = "x".repeat(2048);
    for i in 0..CONFIGMAPS {
        f.repo.write(
            &format!("{}/cm-{i:03}.yaml", f.env.path),
            &configmap(
                &format!("cm-{i:03}"),
                &[("n", &i.to_string()), ("filler", &filler)],
            ),
        );
    }
    let c1 = f.repo.commit_push("300 ConfigMaps");
    let daemon = f.gitopsd.spawn_run();
    let addr = endpoint_address(&daemon);

    // Stop the apiserver once the apply has begun and before it has finished.
    let seen = wait_apply_started(&f, &daemon).await;
    let down = Stopped::stop(tb, "kube-apiserver", apiserver_ready(tb), APISERVER_OUTAGE);
    eprintln!("[outage] {seen} of {CONFIGMAPS} ConfigMaps applied when the apiserver was stopped");
    assert!(
        seen < CONFIGMAPS,
        "the apply had finished: {seen} ConfigMaps"
    );
    while down.signalled.elapsed() < APISERVER_OUTAGE {
        assert_not_condemned(f.repo.record(&c1, &f.env.name).as_ref(), &c1);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (passes_during, retries_during) = passes_and_retries(&daemon, &c1);
    let down_at = down.signalled;
    down.restart();
    assert!(
        passes_during >= 2 && retries_during >= 1,
        "the daemon did not retry {c1} while the apiserver was down: {passes_during} passes, {retries_during} transient failures; log:\n{}",
        daemon.log_tail()
    );

    let record = wait_healthy(&f, &daemon, &c1, Duration::from_secs(240)).await;
    eprintln!(
        "[outage] {c1} healthy {:?} after the apiserver was stopped: {:?}",
        down_at.elapsed(),
        record.counts
    );
    assert_eq!(record.applied.as_deref(), Some(c1.as_str()), "{record:?}");
    let c = &record.counts;
    assert_eq!(
        c.created + c.updated + c.unchanged,
        CONFIGMAPS,
        "{record:?}"
    );
    assert_converged(&f).await;
    let retries = transient_retries(&addr, &f.env.name, "kubernetes").await;
    assert!(retries > 0.0, "no kubernetes retries in /metrics");
    let text = f.repo.note_text(&c1).unwrap_or_default();
    assert!(
        !text.contains("rejected") && !text.contains("pinned"),
        "{text}"
    );
}

/// Every ConfigMap of the commit exists with its data.
async fn assert_converged(f: &Fixture) {
    assert_eq!(owned_count(f).await, CONFIGMAPS);
    for i in [0, CONFIGMAPS / 2, CONFIGMAPS - 1] {
        let data = support::gitopsd::configmap_data(&f.client, &f.ns, &format!("cm-{i:03}"))
            .await
            .unwrap_or_else(|| panic!("cm-{i:03} exists"));
        assert_eq!(data["n"], i.to_string());
    }
}

// ------------------------------------------------------------------------------------------------
// the S3 server down during a bucket change

/// Credential files and the `s3:` block of an environment for the S3 server at `endpoint`.
fn s3_block(tb: &support::Testbed, dir: &Path, endpoint: &str) -> String {
    let key = dir.join("s3-access-key-id");
    let secret = dir.join("s3-secret-access-key");
    std::fs::write(&key, tb.env("AWS_ACCESS_KEY_ID")).unwrap();
    std::fs::write(&secret, tb.env("AWS_SECRET_ACCESS_KEY")).unwrap();
    format!(
        "    s3:\n      endpoint: {endpoint}\n      region: {}\n      force_path_style: true\n      access_key_id_file: {}\n      secret_access_key_file: {}\n",
        tb.env("GITOPSD_TEST_S3_REGION"),
        key.display(),
        secret.display()
    )
}

fn bucket_manifest(bucket: &str, team: &str) -> String {
    format!(
        "apiVersion: gitopsd.dev/v1alpha1\nkind: Bucket\nmetadata:\n  name: assets\nspec:\n  name: {bucket}\n  versioning: Enabled\n  tags:\n    team: {team}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_server_down_during_a_bucket_change_is_retried_until_it_converges() {
    let tb = require_testbed!();
    let _serial = SERIAL.lock().await;
    // versitygw keeps its buckets on disk, so a restart loses nothing (moto's are in memory).
    let creds = tempfile::tempdir().unwrap();
    let endpoint = tb.env("GITOPSD_TEST_S3_ENDPOINT_2").to_string();
    let f = Fixture::with(tb, "outage-s3", |env| {
        env.extra = s3_block(tb, creds.path(), &endpoint);
    })
    .await;
    let sdk = tb.s3_client_2().await;
    let bucket = support::unique_name("outage-s3");
    f.repo.write(
        &format!("{}/bucket.yaml", f.env.path),
        &bucket_manifest(&bucket, "web"),
    );
    let c1 = f.repo.commit_push("a bucket");
    let daemon = f.gitopsd.spawn_run();
    let addr = endpoint_address(&daemon);
    wait_healthy(&f, &daemon, &c1, Duration::from_secs(120)).await;
    assert_eq!(
        support::bucket_tags(&sdk, &bucket)
            .await
            .get("team")
            .map(String::as_str),
        Some("web")
    );

    let down = Stopped::stop(
        tb,
        "versitygw",
        versitygw_ready(tb),
        Duration::from_secs(20),
    );
    f.repo.write(
        &format!("{}/bucket.yaml", f.env.path),
        &bucket_manifest(&bucket, "platform"),
    );
    let c2 = f.repo.commit_push("the bucket changes team");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert_not_condemned(f.repo.record(&c2, &f.env.name).as_ref(), &c2);
        let (passes, retries) = passes_and_retries(&daemon, &c2);
        if passes >= 2 && retries >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no retry of {c2} while the S3 server was down; log:\n{}",
            daemon.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    down.restart();

    let record = wait_healthy(&f, &daemon, &c2, Duration::from_secs(120)).await;
    let buckets = record.buckets.clone().unwrap_or_default();
    assert_eq!(buckets.updated, 1, "{record:?}");
    let tags = support::bucket_tags(&sdk, &bucket).await;
    assert_eq!(
        tags.get("team").map(String::as_str),
        Some("platform"),
        "{tags:?}"
    );
    assert!(tags.contains_key("gitopsd.dev/instance"), "{tags:?}");
    assert!(transient_retries(&addr, &f.env.name, "s3").await > 0.0);
    for commit in [&c1, &c2] {
        let text = f.repo.note_text(commit).unwrap_or_default();
        assert!(!text.contains("rejected"), "{commit}: {text}");
    }
}

// ------------------------------------------------------------------------------------------------
// an existing bucket without gitopsd's tags

#[tokio::test(flavor = "multi_thread")]
async fn an_existing_untagged_bucket_is_not_adopted_and_the_commit_is_rejected() {
    let tb = require_testbed!();
    let _serial = SERIAL.lock().await;
    let creds = tempfile::tempdir().unwrap();
    let endpoint = tb.env("GITOPSD_TEST_S3_ENDPOINT").to_string();
    let f = Fixture::with(tb, "outage-foreign", |env| {
        env.extra = s3_block(tb, creds.path(), &endpoint);
    })
    .await;
    let sdk = tb.s3_client().await;
    let bucket = support::unique_name("foreign-e2e");
    sdk.create_bucket().bucket(&bucket).send().await.unwrap();
    f.repo.write(
        &format!("{}/bucket.yaml", f.env.path),
        &bucket_manifest(&bucket, "web"),
    );
    let c1 = f.repo.commit_push("a bucket that is someone else's");
    let out = f.gitopsd.once(None);

    let record = f.repo.expect_record(&c1, &f.env.name);
    assert_eq!(record.outcome, Outcome::Rejected, "{record:?}\n{out}");
    let instance = gitopsd::config::HostConfig::load(&f.gitopsd.config)
        .unwrap()
        .instance();
    let text = format!("{:?}", record.errors);
    for part in [
        bucket.clone(),
        format!("gitopsd.dev/instance={instance}"),
        format!("gitopsd.dev/environment={}", f.env.name),
    ] {
        assert!(text.contains(&part), "missing {part:?} in {text}");
    }
    assert!(
        support::bucket_tags(&sdk, &bucket).await.is_empty(),
        "the bucket was tagged"
    );
    let versioning = sdk
        .get_bucket_versioning()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert!(
        versioning.status().is_none(),
        "versioning changed: {versioning:?}"
    );
}
