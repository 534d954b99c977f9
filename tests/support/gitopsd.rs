//! Harness for end-to-end tests of the `gitopsd` binary against the testbed: a work clone of a test
//! repository driven with the git CLI, a host config in a tempdir, `gitopsd once|run|...` as child
//! processes, note readers, kube helpers, polling waits and the apiserver audit log.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use gitopsd::status::{Note, Record};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use serde_json::Value;

use super::{TestRepo, Testbed, unique_name};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_gitopsd");

// ------------------------------------------------------------------------------------------------
// waits

/// Polls `check` every 100 ms until it returns true; panics with `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ------------------------------------------------------------------------------------------------
// the work repository (the test's own clone, pushed to with credentials in the remote URL)

pub struct WorkRepo {
    pub remote: TestRepo,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl WorkRepo {
    /// A new bare repository on the testbed and an empty work clone of it (branch main).
    pub fn new(tb: &Testbed, prefix: &str) -> WorkRepo {
        let remote = tb.new_repo(prefix);
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = WorkRepo {
            env: tb.git_cli_env(),
            remote,
            dir,
        };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.git(&[
            "remote",
            "add",
            "origin",
            &tb.https_url_with_credentials(&repo.remote.https_url),
        ]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn git_output(&self, args: &[&str]) -> Output {
        Command::new("git")
            .args(args)
            .current_dir(self.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.path())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run git")
    }

    /// Runs git; panics on failure; returns stdout.
    pub fn git(&self, args: &[&str]) -> String {
        let out = self.git_output(args);
        assert!(
            out.status.success(),
            "git {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("git output is UTF-8")
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// Removes a file or a whole folder.
    pub fn remove(&self, rel: &str) {
        let p = self.path().join(rel);
        if p.is_dir() {
            std::fs::remove_dir_all(p).unwrap();
        } else {
            std::fs::remove_file(p).unwrap();
        }
    }

    /// Commits everything in the work tree; returns the new commit.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.head()
    }

    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"]).trim().to_string()
    }

    pub fn push(&self) {
        self.git(&["push", "-q", "origin", "HEAD:refs/heads/main"]);
    }

    pub fn force_push(&self) {
        self.git(&["push", "-q", "--force", "origin", "HEAD:refs/heads/main"]);
    }

    /// commit + push.
    pub fn commit_push(&self, message: &str) -> String {
        let c = self.commit(message);
        self.push();
        c
    }

    /// Replaces the local notes with the remote's.
    pub fn fetch_notes(&self) {
        self.git(&["fetch", "-q", "origin", "+refs/notes/*:refs/notes/*"]);
    }

    /// The note on `commit` as last fetched (no fetch).
    pub fn local_note_text(&self, commit: &str) -> Option<String> {
        let out = self.git_output(&["notes", "--ref=gitopsd", "show", commit]);
        out.status
            .success()
            .then(|| String::from_utf8(out.stdout).unwrap())
    }

    /// Fetches the notes and returns the note on `commit`.
    pub fn note_text(&self, commit: &str) -> Option<String> {
        self.fetch_notes();
        self.local_note_text(commit)
    }

    pub fn note(&self, commit: &str) -> Option<Note> {
        self.note_text(commit).map(|t| Note::parse(&t))
    }

    /// The remote record of `env` on `commit`.
    pub fn record(&self, commit: &str, env: &str) -> Option<Record> {
        self.note(commit)?.environments.get(env).cloned()
    }

    /// Like [`WorkRepo::record`] but panics with the whole note when absent.
    pub fn expect_record(&self, commit: &str, env: &str) -> Record {
        let text = self.note_text(commit);
        let note = Note::parse(text.as_deref().unwrap_or_default());
        note.environments
            .get(env)
            .cloned()
            .unwrap_or_else(|| panic!("no record of {env} on {commit}; note: {text:?}"))
    }

    /// `git log --notes=gitopsd` (after fetching the notes).
    pub fn log_with_notes(&self) -> String {
        self.fetch_notes();
        self.git(&["log", "--notes=gitopsd", "main"])
    }
}

// ------------------------------------------------------------------------------------------------
// the host config and the binary

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Https,
    Ssh,
}

/// One environment of a host config.
#[derive(Clone, Debug)]
pub struct Env {
    pub name: String,
    pub path: String,
    pub namespace: String,
    pub health_timeout: Duration,
    pub http_checks: Vec<String>,
    pub apply_concurrency: Option<usize>,
    pub rollback: bool,
    /// More keys of the environment, as YAML lines indented by four spaces.
    pub extra: String,
    /// The environment's bounds (`allowed_namespaces`, `cluster_scoped`, `buckets`, …) as YAML
    /// lines. Tests of other behaviour are unbounded; the confinement tests set their own.
    pub bounds: String,
}

/// Bounds that let a test environment touch any namespace, cluster-scoped kind and bucket.
pub const UNBOUNDED: &str =
    "    allowed_namespaces: ['*']\n    cluster_scoped: ['*']\n    buckets: ['*']\n";

impl Env {
    /// An environment named uniquely after `prefix`, rendering `path` into `namespace`.
    pub fn new(prefix: &str, path: &str, namespace: &str) -> Env {
        Env {
            name: unique_name(prefix),
            path: path.to_string(),
            namespace: namespace.to_string(),
            health_timeout: Duration::from_secs(60),
            http_checks: Vec::new(),
            apply_concurrency: None,
            rollback: true,
            extra: String::new(),
            bounds: UNBOUNDED.to_string(),
        }
    }

    fn yaml(&self, kubeconfig: &Path) -> String {
        let mut y = format!(
            "  - name: {}\n    path: {}\n    namespace: {}\n    kubernetes:\n      kubeconfig: {}\n    rollback: {}\n    health:\n      timeout: {}s\n",
            self.name,
            self.path,
            self.namespace,
            kubeconfig.display(),
            if self.rollback { "auto" } else { "off" },
            self.health_timeout.as_secs()
        );
        if !self.http_checks.is_empty() {
            y.push_str("      http:\n");
            for url in &self.http_checks {
                y.push_str(&format!(
                    "        - url: {url}\n          interval: 200ms\n"
                ));
            }
        }
        if let Some(n) = self.apply_concurrency {
            y.push_str(&format!("    apply_concurrency: {n}\n"));
        }
        y.push_str(&self.bounds);
        y.push_str(&self.extra);
        y
    }
}

/// A host config (and its credential files and state_dir) in a tempdir.
pub struct Gitopsd {
    dir: tempfile::TempDir,
    pub config: PathBuf,
}

/// Output of one finished command.
#[derive(Debug)]
pub struct CmdOut {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl CmdOut {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    pub fn assert_success(&self, what: &str) -> &Self {
        assert!(self.success(), "{what}: expected success, got {self}");
        self
    }

    pub fn assert_failure(&self, what: &str) -> &Self {
        assert!(!self.success(), "{what}: expected failure, got {self}");
        self
    }

    /// The JSON log events written to stderr (other lines skipped).
    pub fn log_events(&self) -> Vec<Value> {
        json_lines(&self.stderr)
    }
}

impl std::fmt::Display for CmdOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} after {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.status,
            self.elapsed,
            self.stdout,
            tail(&self.stderr, 60)
        )
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// Timestamp (as a SystemTime) of a JSON log event.
pub fn event_time(event: &Value) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339(event["timestamp"].as_str()?).ok()
}

impl Gitopsd {
    /// Writes a host config for `repo` over `transport` with these environments.
    pub fn new(tb: &Testbed, repo: &TestRepo, transport: Transport, envs: &[Env]) -> Gitopsd {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let repository = match transport {
            Transport::Https => {
                std::fs::write(d.join("git-user"), tb.env("GITOPSD_TEST_GIT_USER")).unwrap();
                std::fs::write(d.join("git-password"), tb.env("GITOPSD_TEST_GIT_PASSWORD"))
                    .unwrap();
                format!(
                    "repository:\n  url: {}\n  branch: main\n  poll: 1s\n  auth:\n    username_file: {}\n    password_file: {}\n    ca_file: {}\n",
                    repo.https_url,
                    d.join("git-user").display(),
                    d.join("git-password").display(),
                    tb.env("GITOPSD_TEST_GIT_CA")
                )
            }
            Transport::Ssh => format!(
                "repository:\n  url: {}\n  branch: main\n  poll: 1s\n  auth:\n    ssh_key_file: {}\n    known_hosts_file: {}\n",
                repo.ssh_url,
                tb.env("GITOPSD_TEST_GIT_SSH_KEY"),
                tb.env("GITOPSD_TEST_GIT_KNOWN_HOSTS")
            ),
        };
        let mut text = format!(
            "{repository}state_dir: {}\nnotes_signing_key_file: {}\nlisten: 127.0.0.1:0\nshutdown_grace: 5s\nrenderers:\n  kustomize: {}\n  helm: {}\nenvironments:\n",
            d.join("state").display(),
            super::notes_key(d).display(),
            tb.env("GITOPSD_TEST_KUSTOMIZE"),
            tb.env("GITOPSD_TEST_HELM"),
        );
        for env in envs {
            text.push_str(&env.yaml(&tb.kubeconfig_path()));
        }
        Self::with_text(&text, dir)
    }

    /// A config file with exactly this text (e.g. an invalid one).
    pub fn from_text(text: &str) -> Gitopsd {
        Self::with_text(text, tempfile::tempdir().expect("tempdir"))
    }

    fn with_text(text: &str, dir: tempfile::TempDir) -> Gitopsd {
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, text).unwrap();
        Gitopsd { dir, config }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Appends top-level keys (e.g. `notifications:`) to the host config.
    pub fn append_config(&self, yaml: &str) {
        let mut text = self.config_text();
        text.push_str(yaml);
        std::fs::write(&self.config, text).unwrap();
    }

    pub fn config_text(&self) -> String {
        std::fs::read_to_string(&self.config).unwrap()
    }

    /// Throws away the local state (the mirror): the next command starts from a fresh clone.
    pub fn wipe_state(&self) {
        let _ = std::fs::remove_dir_all(self.dir().join("state"));
    }

    /// `gitopsd <sub> --config <config> <args>`, not started.
    pub fn command(&self, sub: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg(sub)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir(self.dir())
            .env("GITOPSD_LOG", "info")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `gitopsd <sub> --config <config> <args>` to completion.
    pub fn cmd(&self, sub: &str, args: &[&str]) -> CmdOut {
        let started = Instant::now();
        let out = self.command(sub, args).output().expect("run gitopsd");
        CmdOut {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: started.elapsed(),
        }
    }

    /// `gitopsd once` (all environments, or one).
    pub fn once(&self, env: Option<&str>) -> CmdOut {
        match env {
            Some(e) => self.cmd("once", &["--env", e]),
            None => self.cmd("once", &[]),
        }
    }

    /// Starts `gitopsd run` with its output going to a log file in the tempdir.
    pub fn spawn_run(&self) -> Daemon {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = self.dir().join(format!("run-{n}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = self
            .command("run", &[])
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("spawn gitopsd run");
        Daemon { child, log }
    }
}

/// Polls `check` every 50 ms; panics with the daemon's log when `timeout` passes or the daemon
/// exits.
pub async fn wait_daemon<F, Fut>(daemon: &mut Daemon, what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if let Some(status) = daemon.child.try_wait().expect("try_wait") {
            panic!(
                "gitopsd run exited ({status}) while waiting for {what}; log:\n{}",
                daemon.log_tail()
            );
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}; log:\n{}",
                daemon.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running `gitopsd run`; killed (SIGKILL) when dropped.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9 gitopsd");
        self.child.wait().expect("wait for gitopsd");
    }

    /// SIGTERM; waits up to `timeout` for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(ok.success(), "kill -TERM failed");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "gitopsd run did not exit within {timeout:?} of SIGTERM; log:\n{}",
                    tail(&self.log_text(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        tail(&self.log_text(), 40)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ------------------------------------------------------------------------------------------------
// manifests

/// A ConfigMap (no namespace: the environment's default applies).
pub fn configmap(name: &str, data: &[(&str, &str)]) -> String {
    let mut y = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n");
    for (k, v) in data {
        y.push_str(&format!("  {k}: {v:?}\n"));
    }
    if data.is_empty() {
        y = y.replace("data:\n", "data: {}\n");
    }
    y
}

/// A Deployment of fake pods; `fail` = Some("unready" | "crash") labels the pod template for kwok.
pub fn deployment(
    name: &str,
    replicas: u32,
    fail: Option<&str>,
    progress_deadline: u32,
    version: &str,
) -> String {
    let fail_label = fail
        .map(|f| format!("        gitopsd.test/fail: {f}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  progressDeadlineSeconds: {progress_deadline}\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n{fail_label}    spec:\n      containers:\n        - name: app\n          image: registry.invalid/gitopsd/fake:{version}\n          resources:\n            requests:\n              cpu: 10m\n              memory: 16Mi\n"
    )
}

/// A Job of one fake pod (backoffLimit 0).
pub fn job(name: &str, fail: Option<&str>) -> String {
    let labels = match fail {
        Some(f) => format!("      labels:\n        gitopsd.test/fail: {f}\n"),
        None => "      labels:\n        job: fake\n".to_string(),
    };
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\nspec:\n  backoffLimit: 0\n  template:\n    metadata:\n{labels}    spec:\n      restartPolicy: Never\n      containers:\n        - name: job\n          image: registry.invalid/gitopsd/fake:1\n"
    )
}

// ------------------------------------------------------------------------------------------------
// cluster reads

pub async fn configmap_data(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Option<BTreeMap<String, String>> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .expect("get ConfigMap")
        .map(|cm| cm.data.unwrap_or_default())
}

pub async fn configmap_labels(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Option<BTreeMap<String, String>> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .expect("get ConfigMap")
        .map(|cm| cm.metadata.labels.unwrap_or_default())
}

/// Names of the ConfigMaps in `ns` labelled as gitopsd's for `env`.
pub async fn owned_configmaps(client: &kube::Client, ns: &str, env: &str) -> Vec<String> {
    let lp = kube::api::ListParams::default().labels(&format!(
        "app.kubernetes.io/managed-by=gitopsd,gitopsd.dev/environment={env}"
    ));
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .list_metadata(&lp)
        .await
        .expect("list ConfigMaps")
        .items
        .into_iter()
        .filter_map(|m| m.metadata.name)
        .collect()
}

/// (Available condition is True, the image of the first container, the pod template labels).
pub async fn deployment_state(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Option<(bool, String, BTreeMap<String, String>)> {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .expect("get Deployment")?;
    let spec = d.spec.clone().unwrap_or_default();
    let image = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let available = d
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Available" && c.status == "True")
        });
    let st = d.status.unwrap_or_default();
    let all_ready = st.updated_replicas == spec.replicas
        && st.ready_replicas == spec.replicas
        && st.replicas == spec.replicas;
    Some((available && all_ready, image, labels))
}

// ------------------------------------------------------------------------------------------------
// audit log

/// One write request to the apiserver, from the audit log.
#[derive(Clone, Debug)]
pub struct AuditEvent {
    pub verb: String,
    pub resource: String,
    pub name: String,
    pub dry_run: bool,
    pub user: String,
    /// The user the request was made as (`Impersonate-User`), if any.
    pub impersonated: Option<String>,
    pub user_agent: String,
    pub code: i64,
}

const SENTINEL: &str = "audit-sentinel";

/// Every write request recorded in namespace `ns`, in log order, up to a sentinel request made now
/// (a delete of a ConfigMap that does not exist): when this returns, every request that completed
/// before the call is in the list. Sentinels are left out.
pub async fn audit_writes(tb: &Testbed, client: &kube::Client, ns: &str) -> Vec<AuditEvent> {
    let sentinel = unique_name(SENTINEL);
    let _ = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .delete(&sentinel, &Default::default())
        .await;
    let path = PathBuf::from(tb.env("GITOPSD_TEST_AUDIT_LOG"));
    let needle = format!("\"namespace\":\"{ns}\"");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut events = Vec::new();
        let mut seen_sentinel = false;
        let file = std::fs::File::open(&path).expect("open audit log");
        for line in BufReader::new(file).lines() {
            let Ok(line) = line else { continue };
            if !line.contains(&needle) {
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["objectRef"]["namespace"].as_str() != Some(ns) {
                continue;
            }
            let name = v["objectRef"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if name == sentinel {
                seen_sentinel = true;
                break;
            }
            if name.starts_with(SENTINEL) {
                continue;
            }
            let uri = v["requestURI"].as_str().unwrap_or_default();
            events.push(AuditEvent {
                verb: v["verb"].as_str().unwrap_or_default().to_string(),
                resource: v["objectRef"]["resource"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                name,
                dry_run: uri.contains("dryRun=All"),
                user: v["user"]["username"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                impersonated: v["impersonatedUser"]["username"]
                    .as_str()
                    .map(str::to_string),
                user_agent: v["userAgent"].as_str().unwrap_or_default().to_string(),
                code: v["responseStatus"]["code"].as_i64().unwrap_or_default(),
            });
        }
        if seen_sentinel {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "audit sentinel {sentinel} never reached {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The requests made with the testbed's admin credentials (gitopsd's, and the test's own), not
/// the controllers'.
pub fn admin_writes(events: &[AuditEvent]) -> Vec<AuditEvent> {
    events
        .iter()
        .filter(|e| e.user == "gitopsd-testbed-admin")
        .cloned()
        .collect()
}

/// One environment `envs/app` rendered into a fresh namespace, in a fresh repository (the
/// fixture of the core-loop, rollback and daemon tests; each adds its own helpers).
pub struct Fixture {
    pub client: kube::Client,
    pub repo: WorkRepo,
    pub ns: String,
    pub env: Env,
    pub gitopsd: Gitopsd,
}

impl Fixture {
    pub async fn with(
        tb: &'static super::Testbed,
        prefix: &str,
        edit: impl FnOnce(&mut Env),
    ) -> Fixture {
        let client = tb.kube_client().await;
        let ns = tb.namespace(&client, prefix).await;
        let repo = WorkRepo::new(tb, prefix);
        let mut env = Env::new(prefix, "envs/app", &ns);
        edit(&mut env);
        let gitopsd = Gitopsd::new(
            tb,
            &repo.remote,
            Transport::Https,
            std::slice::from_ref(&env),
        );
        Fixture {
            client,
            repo,
            ns,
            env,
            gitopsd,
        }
    }
}
