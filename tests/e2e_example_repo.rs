//! Issue 8: the whole example repository (example-repo/: dev, staging and prod side by side on one
//! cluster, plus their S3 buckets) driven through the `gitopsd` binary on the testbed, then a realistic
//! day: a staging image bump, a prod change whose pods never become ready (rolled back and pinned),
//! and a preview of a pending change with a Secret in it (values never shown).
//!
//! The namespaces, cluster-scoped names and bucket names of example-repo are fixed, so this is ONE
//! sequential test and the only one applying them; it starts by deleting what a previous run left.
//! Run: `source target/testbed/env.sh && GITOPSD_TESTBED_REQUIRED=1 cargo test --test e2e_example_repo -- --nocapture`

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gitopsd::status::{Note, Outcome, Record};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams};
use kube::discovery::{ApiCapabilities, Scope};
use serde_json::Value;
use support::{Testbed, wait_until};

const ENVS: [&str; 3] = ["dev", "staging", "prod"];
const BIN: &str = env!("CARGO_BIN_EXE_gitopsd");

// ------------------------------------------------------------------------------------------------
// what example-repo declares (read independently of gitopsd's renderer)

#[derive(Clone, Debug)]
struct Declared {
    api_version: String,
    kind: String,
    name: String,
    namespace: Option<String>,
    body: Value,
}

impl Declared {
    fn gvk(&self) -> GroupVersionKind {
        let (group, version) = match self.api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), self.api_version.clone()),
        };
        GroupVersionKind {
            group,
            version,
            kind: self.kind.clone(),
        }
    }

    fn is_bucket(&self) -> bool {
        self.kind == "Bucket" && self.api_version.starts_with("gitopsd.dev/")
    }
}

fn example_repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("example-repo")
}

/// Every object environment `env` of `root` renders to, by the real kustomize and helm of the
/// testbed run as gitopsd runs them (from the repository root, remote loads refused).
fn declared(tb: &Testbed, root: &Path, env: &str) -> Vec<Declared> {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(tb.env("GITOPSD_TEST_KUSTOMIZE"))
        .args([
            "build",
            "--load-restrictor",
            "LoadRestrictionsRootOnly",
            "--enable-helm",
        ])
        .arg("--helm-command")
        .arg(tb.env("GITOPSD_TEST_HELM"))
        .arg(format!("environments/{env}"))
        .current_dir(root)
        .env_clear()
        .env("HOME", home.path())
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("run kustomize");
    assert!(
        out.status.success(),
        "kustomize build environments/{env}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("parse the render of {env}: {e}"));
    docs.into_iter()
        .filter(Value::is_object)
        .map(|doc| Declared {
            api_version: doc["apiVersion"].as_str().unwrap().to_string(),
            kind: doc["kind"].as_str().unwrap().to_string(),
            name: doc["metadata"]["name"].as_str().unwrap().to_string(),
            namespace: doc["metadata"]["namespace"].as_str().map(str::to_string),
            body: doc,
        })
        .collect()
}

fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

// ------------------------------------------------------------------------------------------------
// the work clone (git CLI, credentials in the remote URL)

struct Work {
    dir: PathBuf,
    env: Vec<(String, String)>,
}

impl Work {
    fn git_raw(&self, args: &[&str]) -> std::process::Output {
        Command::new("git")
            .args(args)
            .current_dir(&self.dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &self.dir)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run git")
    }

    fn git(&self, args: &[&str]) -> String {
        let out = self.git_raw(args);
        assert!(
            out.status.success(),
            "git {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"]).trim().to_string()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Replaces exactly one occurrence of `from` in `rel`.
    fn edit_once(&self, rel: &str, from: &str, to: &str) {
        let p = self.path(rel);
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            text.matches(from).count(),
            1,
            "{rel} should contain {from:?} exactly once"
        );
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }

    fn commit(&self, paths: &[&str], message: &str) -> String {
        let mut args = vec!["add", "--"];
        args.extend_from_slice(paths);
        self.git(&args);
        self.git(&["commit", "-q", "-m", message]);
        self.head()
    }

    fn push_main(&self) {
        self.git(&["push", "-q", "origin", "HEAD:refs/heads/main"]);
    }

    /// The remote's notes ref (None before the first note).
    fn remote_notes_ref(&self) -> Option<String> {
        let out = self.git(&["ls-remote", "origin", "refs/notes/gitopsd"]);
        out.split_whitespace().next().map(str::to_string)
    }

    /// Fetches the notes and returns the note on `commit`.
    fn note_text(&self, commit: &str) -> Option<String> {
        self.git(&["fetch", "-q", "origin", "+refs/notes/*:refs/notes/*"]);
        let out = self.git_raw(&["notes", "--ref=gitopsd", "show", commit]);
        out.status
            .success()
            .then(|| String::from_utf8(out.stdout).unwrap())
    }

    fn record(&self, commit: &str, env: &str) -> (Record, String) {
        let text = self
            .note_text(commit)
            .unwrap_or_else(|| panic!("no note on {commit}"));
        let note = Note::parse(&text);
        let record = note
            .environments
            .get(env)
            .cloned()
            .unwrap_or_else(|| panic!("no section {env} in the note on {commit}:\n{text}"));
        (record, text)
    }
}

// ------------------------------------------------------------------------------------------------
// the gitopsd binary

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Run {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines: Vec<&str> = self.stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(60)..].join("\n");
        write!(
            f,
            "exit {:?} after {:.1?}\n--- stdout\n{}\n--- stderr (tail)\n{tail}",
            self.code, self.elapsed, self.stdout
        )
    }
}

struct Host {
    dir: tempfile::TempDir,
    config: PathBuf,
    vars: Vec<(String, String)>,
}

impl Host {
    /// hosts/testbed.yaml plus repository auth; the placeholders are left for gitopsd to expand
    /// from the child's environment.
    fn new(tb: &Testbed, https_url: &str) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let creds = d.join("creds");
        std::fs::create_dir(&creds).unwrap();
        let write = |name: &str, value: &str| {
            let p = creds.join(name);
            std::fs::write(&p, value).unwrap();
            p.display().to_string()
        };
        let git_user = write("git-user", tb.env("GITOPSD_TEST_GIT_USER"));
        let git_password = write("git-password", tb.env("GITOPSD_TEST_GIT_PASSWORD"));
        let aws_key = write("aws-key", tb.env("AWS_ACCESS_KEY_ID"));
        let aws_secret = write("aws-secret", tb.env("AWS_SECRET_ACCESS_KEY"));

        let template = std::fs::read_to_string(example_repo().join("hosts/testbed.yaml")).unwrap();
        let poll = "  poll: 5s\n";
        assert_eq!(
            template.matches(poll).count(),
            1,
            "hosts/testbed.yaml: {poll:?}"
        );
        let auth = format!(
            "{poll}  auth:\n    username_file: {git_user}\n    password_file: {git_password}\n    ca_file: {}\n",
            tb.env("GITOPSD_TEST_GIT_CA")
        );
        let text = template.replacen(poll, &auth, 1);
        for placeholder in [
            "REPO_URL",
            "STATE_DIR",
            "KUBECONFIG",
            "S3_ENDPOINT",
            "S3_REGION",
            "AWS_KEY_FILE",
            "AWS_SECRET_FILE",
            "KUSTOMIZE",
            "HELM",
            "NOTES_KEY_FILE",
        ] {
            assert!(
                text.contains(&format!("${{{placeholder}}}")),
                "hosts/testbed.yaml lost the placeholder {placeholder}"
            );
        }
        let config = d.join("config.yaml");
        std::fs::write(&config, text).unwrap();
        let vars = vec![
            ("REPO_URL".into(), https_url.to_string()),
            ("STATE_DIR".into(), d.join("state").display().to_string()),
            ("KUBECONFIG".into(), tb.env("KUBECONFIG").to_string()),
            (
                "S3_ENDPOINT".into(),
                tb.env("GITOPSD_TEST_S3_ENDPOINT").to_string(),
            ),
            (
                "S3_REGION".into(),
                tb.env("GITOPSD_TEST_S3_REGION").to_string(),
            ),
            ("AWS_KEY_FILE".into(), aws_key),
            ("AWS_SECRET_FILE".into(), aws_secret),
            (
                "KUSTOMIZE".into(),
                tb.env("GITOPSD_TEST_KUSTOMIZE").to_string(),
            ),
            ("HELM".into(), tb.env("GITOPSD_TEST_HELM").to_string()),
            (
                "NOTES_KEY_FILE".into(),
                support::notes_key(&creds).display().to_string(),
            ),
            ("GITOPSD_LOG".into(), "info".into()),
        ];
        Host { dir, config, vars }
    }

    /// Runs gitopsd with `args` (no --config added) to completion, killing it after `timeout`.
    fn run(&self, args: &[&str], timeout: Duration) -> Run {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out_path = self.dir.path().join(format!("run-{n}.stdout"));
        let err_path = self.dir.path().join(format!("run-{n}.stderr"));
        let started = Instant::now();
        let mut child = Command::new(BIN)
            .args(args)
            .current_dir(self.dir.path())
            .envs(self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .expect("spawn gitopsd");
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "gitopsd {args:?} did not finish within {timeout:?}; stderr tail:\n{}",
                    std::fs::read_to_string(&err_path)
                        .unwrap_or_default()
                        .lines()
                        .rev()
                        .take(40)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Run {
            code: status.code(),
            stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
            stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
            elapsed: started.elapsed(),
        }
    }

    fn once(&self, env: Option<&str>) -> Run {
        let config = self.config.display().to_string();
        let mut args = vec!["once", "--config", config.as_str()];
        if let Some(e) = env {
            args.extend(["--env", e]);
        }
        self.run(&args, Duration::from_secs(900))
    }
}

// ------------------------------------------------------------------------------------------------
// the cluster

async fn resolve(
    client: &kube::Client,
    cache: &mut BTreeMap<String, (ApiResource, ApiCapabilities)>,
    gvk: &GroupVersionKind,
) -> (ApiResource, ApiCapabilities) {
    let key = format!("{}/{}/{}", gvk.group, gvk.version, gvk.kind);
    if let Some(v) = cache.get(&key) {
        return v.clone();
    }
    let v = kube::discovery::pinned_kind(client, gvk)
        .await
        .unwrap_or_else(|e| panic!("discover {key}: {e}"));
    cache.insert(key, v.clone());
    v
}

fn dynamic_api(
    client: &kube::Client,
    ar: &ApiResource,
    caps: &ApiCapabilities,
    ns: Option<&str>,
) -> Api<DynamicObject> {
    match (caps.scope == Scope::Namespaced, ns) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, ar),
        (true, None) => Api::default_namespaced_with(client.clone(), ar),
        (false, _) => Api::all_with(client.clone(), ar),
    }
}

/// Deletes what a previous run left: the repository's namespaces (and everything in them), its
/// cluster-scoped objects (by name, and by gitopsd's environment label), and its buckets.
async fn delete_leftovers(
    client: &kube::Client,
    s3: &aws_sdk_s3::Client,
    decl: &BTreeMap<&str, Vec<Declared>>,
) {
    let started = Instant::now();
    let namespaces: BTreeSet<String> = decl
        .values()
        .flatten()
        .filter(|d| d.kind == "Namespace")
        .map(|d| d.name.clone())
        .collect();
    for ns in &namespaces {
        assert!(
            ENVS.iter().any(|e| ns.starts_with(&format!("{e}-"))),
            "refusing to delete namespace {ns}: not dev-*/staging-*/prod-*"
        );
    }
    let ns_api = Api::<Namespace>::all(client.clone());
    let mut deleted_ns = 0;
    for ns in &namespaces {
        match ns_api.delete(ns, &DeleteParams::background()).await {
            Ok(_) => deleted_ns += 1,
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => panic!("delete namespace {ns}: {e}"),
        }
    }
    for ns in &namespaces {
        wait_until(
            &format!("leftover namespace {ns} to be gone"),
            Duration::from_secs(300),
            || async { ns_api.get_opt(ns).await.unwrap().is_none() },
        )
        .await;
    }

    // Cluster-scoped objects: those the repository names, and anything labelled for dev/staging/prod.
    let mut cache = BTreeMap::new();
    let mut cluster_scoped: Vec<(Api<DynamicObject>, String)> = Vec::new();
    let mut kinds: BTreeMap<String, Api<DynamicObject>> = BTreeMap::new();
    for d in decl
        .values()
        .flatten()
        .filter(|d| !d.is_bucket() && d.kind != "Namespace")
    {
        let (ar, caps) = resolve(client, &mut cache, &d.gvk()).await;
        if caps.scope == Scope::Cluster {
            let api = dynamic_api(client, &ar, &caps, None);
            kinds.insert(d.kind.clone(), api.clone());
            cluster_scoped.push((api, d.name.clone()));
        }
    }
    let selector = "gitopsd.dev/environment in (dev,staging,prod)";
    for api in kinds.values() {
        for obj in api
            .list_metadata(&ListParams::default().labels(selector))
            .await
            .unwrap()
        {
            let name = obj.metadata.name.unwrap();
            if !cluster_scoped.iter().any(|(_, n)| n == &name) {
                cluster_scoped.push((api.clone(), name));
            }
        }
    }
    let mut deleted_cluster = 0;
    for (api, name) in &cluster_scoped {
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => deleted_cluster += 1,
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => panic!("delete {name}: {e}"),
        }
    }
    for (api, name) in &cluster_scoped {
        wait_until(
            &format!("leftover cluster-scoped {name} to be gone"),
            Duration::from_secs(120),
            || async { api.get_opt(name).await.unwrap().is_none() },
        )
        .await;
    }

    // Buckets: empty (every version and delete marker), then delete. Never a moto reset.
    let mut deleted_buckets = 0;
    for d in decl.values().flatten().filter(|d| d.is_bucket()) {
        let bucket = d.body["spec"]["name"].as_str().unwrap();
        assert!(
            bucket.starts_with("acme-"),
            "refusing to delete bucket {bucket}"
        );
        if s3.head_bucket().bucket(bucket).send().await.is_err() {
            continue;
        }
        loop {
            let page = s3
                .list_object_versions()
                .bucket(bucket)
                .send()
                .await
                .unwrap_or_else(|e| panic!("list versions of {bucket}: {e:?}"));
            let mut ids: Vec<(String, Option<String>)> = Vec::new();
            for v in page.versions() {
                ids.push((
                    v.key().unwrap().to_string(),
                    v.version_id().map(str::to_string),
                ));
            }
            for m in page.delete_markers() {
                ids.push((
                    m.key().unwrap().to_string(),
                    m.version_id().map(str::to_string),
                ));
            }
            if ids.is_empty() {
                break;
            }
            for (key, version) in ids {
                s3.delete_object()
                    .bucket(bucket)
                    .key(&key)
                    .set_version_id(version)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("delete s3://{bucket}/{key}: {e:?}"));
            }
        }
        s3.delete_bucket()
            .bucket(bucket)
            .send()
            .await
            .unwrap_or_else(|e| panic!("delete bucket {bucket}: {e:?}"));
        deleted_buckets += 1;
    }
    println!(
        "cleanup of a previous run: {deleted_ns} namespaces, {deleted_cluster} cluster-scoped objects, {deleted_buckets} buckets deleted in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

fn deployment_available(d: &Deployment) -> bool {
    d.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Available" && c.status == "True")
        })
}

/// Every declared object exists with gitopsd's labels; workloads and claims are healthy; policies,
/// PSA labels as declared.
async fn check_live_env(
    client: &kube::Client,
    cache: &mut BTreeMap<String, (ApiResource, ApiCapabilities)>,
    env: &str,
    decl: &[Declared],
) {
    for d in decl.iter().filter(|d| !d.is_bucket()) {
        let (ar, caps) = resolve(client, cache, &d.gvk()).await;
        let api = dynamic_api(client, &ar, &caps, d.namespace.as_deref());
        let live =
            api.get_opt(&d.name).await.unwrap().unwrap_or_else(|| {
                panic!("{env}: {} {:?}/{} missing", d.kind, d.namespace, d.name)
            });
        let labels = live.metadata.labels.unwrap_or_default();
        assert_eq!(
            labels.get("gitopsd.dev/environment").map(String::as_str),
            Some(env),
            "{env}: {} {} environment label",
            d.kind,
            d.name
        );
        assert_eq!(
            labels
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("gitopsd"),
            "{env}: {} {} managed-by label",
            d.kind,
            d.name
        );
    }

    // Deployments Available.
    for d in decl.iter().filter(|d| d.kind == "Deployment") {
        let api = Api::<Deployment>::namespaced(client.clone(), d.namespace.as_deref().unwrap());
        wait_until(
            &format!("{env}: Deployment {} Available", d.name),
            Duration::from_secs(60),
            || async { deployment_available(&api.get(&d.name).await.unwrap()) },
        )
        .await;
    }
    // StatefulSets ready, and their claims Bound.
    let mut claims = Vec::new();
    for d in decl.iter().filter(|d| d.kind == "StatefulSet") {
        let ns = d.namespace.as_deref().unwrap();
        let replicas = d.body["spec"]["replicas"].as_i64().unwrap_or(1) as i32;
        let api = Api::<StatefulSet>::namespaced(client.clone(), ns);
        wait_until(
            &format!("{env}: StatefulSet {} {replicas}/{replicas} ready", d.name),
            Duration::from_secs(60),
            || async {
                let s = api.get(&d.name).await.unwrap();
                let st = s.status.unwrap_or_default();
                st.ready_replicas == Some(replicas) && st.updated_replicas == Some(replicas)
            },
        )
        .await;
        for t in d.body["spec"]["volumeClaimTemplates"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for i in 0..replicas {
                claims.push((
                    ns.to_string(),
                    format!("{}-{}-{i}", t["metadata"]["name"].as_str().unwrap(), d.name),
                ));
            }
        }
    }
    assert!(
        !claims.is_empty(),
        "{env}: the StatefulSets declare volume claims"
    );
    for (ns, name) in &claims {
        let api = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns);
        wait_until(
            &format!("{env}: PVC {ns}/{name} Bound"),
            Duration::from_secs(60),
            || async {
                api.get_opt(name)
                    .await
                    .unwrap()
                    .and_then(|c| c.status)
                    .and_then(|s| s.phase)
                    .as_deref()
                    == Some("Bound")
            },
        )
        .await;
    }
    // NetworkPolicies: as many live (labelled for this environment) as declared.
    let declared_netpol = decl.iter().filter(|d| d.kind == "NetworkPolicy").count();
    let lp = ListParams::default().labels(&format!("gitopsd.dev/environment={env}"));
    let live_netpol = Api::<NetworkPolicy>::all(client.clone())
        .list_metadata(&lp)
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(live_netpol, declared_netpol, "{env}: NetworkPolicy count");
    // Pod Security Admission labels on the namespaces.
    let ns_api = Api::<Namespace>::all(client.clone());
    let mut psa = Vec::new();
    for d in decl.iter().filter(|d| d.kind == "Namespace") {
        let live = ns_api
            .get(&d.name)
            .await
            .unwrap()
            .metadata
            .labels
            .unwrap_or_default();
        let want: BTreeMap<String, String> = d.body["metadata"]["labels"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with("pod-security.kubernetes.io/"))
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        assert!(
            !want.is_empty(),
            "{env}: namespace {} declares PSA labels",
            d.name
        );
        for (k, v) in &want {
            assert_eq!(
                live.get(k),
                Some(v),
                "{env}: namespace {} label {k}",
                d.name
            );
        }
        psa.push(format!(
            "{}={}",
            d.name, want["pod-security.kubernetes.io/enforce"]
        ));
    }
    println!(
        "  {env}: live ok: {} Deployments Available, {} StatefulSets ready, {} PVCs Bound, {} NetworkPolicies, PSA enforce {}",
        decl.iter().filter(|d| d.kind == "Deployment").count(),
        decl.iter().filter(|d| d.kind == "StatefulSet").count(),
        claims.len(),
        live_netpol,
        psa.join(" ")
    );
}

/// The buckets read back as configured, and the static assets synced.
async fn check_buckets(s3: &aws_sdk_s3::Client, env: &str, decl: &[Declared], repo_root: &Path) {
    let mut checked = Vec::new();
    for d in decl.iter().filter(|d| d.is_bucket()) {
        let spec = &d.body["spec"];
        let bucket = spec["name"].as_str().unwrap();
        s3.head_bucket()
            .bucket(bucket)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{env}: bucket {bucket} missing: {e:?}"));
        let mut what = vec![];
        if let Some(v) = spec["versioning"].as_str() {
            let got = s3
                .get_bucket_versioning()
                .bucket(bucket)
                .send()
                .await
                .unwrap();
            assert_eq!(
                got.status().map(|s| s.as_str()),
                Some(v),
                "{bucket}: versioning"
            );
            what.push(format!("versioning {v}"));
        }
        if let Some(enc) = spec["encryption"].as_object() {
            let got = s3
                .get_bucket_encryption()
                .bucket(bucket)
                .send()
                .await
                .unwrap();
            let rule = got
                .server_side_encryption_configuration()
                .and_then(|c| c.rules().first())
                .and_then(|r| r.apply_server_side_encryption_by_default())
                .unwrap_or_else(|| panic!("{bucket}: no default encryption"));
            let want_alg = match enc["type"].as_str().unwrap() {
                "SSE-S3" => "AES256",
                "SSE-KMS" => "aws:kms",
                other => panic!("unexpected encryption {other}"),
            };
            assert_eq!(
                rule.sse_algorithm().as_str(),
                want_alg,
                "{bucket}: encryption"
            );
            if let Some(key) = enc.get("kmsKeyId").and_then(Value::as_str) {
                assert_eq!(rule.kms_master_key_id(), Some(key), "{bucket}: KMS key");
            }
            what.push(format!("encryption {want_alg}"));
        }
        if let Some(rules) = spec["lifecycle"].as_array() {
            let got = s3
                .get_bucket_lifecycle_configuration()
                .bucket(bucket)
                .send()
                .await
                .unwrap();
            let live: BTreeMap<String, &aws_sdk_s3::types::LifecycleRule> = got
                .rules()
                .iter()
                .map(|r| (r.id().unwrap_or_default().to_string(), r))
                .collect();
            for want in rules {
                let id = want["id"].as_str().unwrap();
                let r = live.get(id).unwrap_or_else(|| {
                    panic!("{bucket}: lifecycle rule {id} missing: {:?}", live.keys())
                });
                assert_eq!(
                    r.status().as_str(),
                    want["status"].as_str().unwrap(),
                    "{bucket}: rule {id} status"
                );
                if let Some(days) = want["expirationDays"].as_i64() {
                    assert_eq!(
                        r.expiration().and_then(|e| e.days()),
                        Some(days as i32),
                        "{bucket}: rule {id} expiration"
                    );
                }
                if let Some(ts) = want["transitions"].as_array() {
                    let got: Vec<(Option<i32>, String)> = r
                        .transitions()
                        .iter()
                        .map(|t| {
                            (
                                t.days(),
                                t.storage_class()
                                    .map(|s| s.as_str().to_string())
                                    .unwrap_or_default(),
                            )
                        })
                        .collect();
                    let want: Vec<(Option<i32>, String)> = ts
                        .iter()
                        .map(|t| {
                            (
                                t["days"].as_i64().map(|d| d as i32),
                                t["storageClass"].as_str().unwrap().to_string(),
                            )
                        })
                        .collect();
                    assert_eq!(got, want, "{bucket}: rule {id} transitions");
                }
            }
            assert_eq!(live.len(), rules.len(), "{bucket}: lifecycle rule count");
            what.push(format!("{} lifecycle rules", rules.len()));
        }
        if let Some(pab) = spec["publicAccessBlock"].as_object() {
            let got = s3
                .get_public_access_block()
                .bucket(bucket)
                .send()
                .await
                .unwrap();
            let c = got
                .public_access_block_configuration()
                .expect("public access block");
            let flags = [
                ("blockPublicAcls", c.block_public_acls()),
                ("ignorePublicAcls", c.ignore_public_acls()),
                ("blockPublicPolicy", c.block_public_policy()),
                ("restrictPublicBuckets", c.restrict_public_buckets()),
            ];
            for (k, v) in flags {
                assert_eq!(
                    v,
                    pab.get(k).and_then(Value::as_bool),
                    "{bucket}: publicAccessBlock.{k}"
                );
            }
            what.push("public access blocked".into());
        }
        if let Some(cors) = spec["cors"].as_array() {
            let got = s3.get_bucket_cors().bucket(bucket).send().await.unwrap();
            assert_eq!(
                got.cors_rules().len(),
                cors.len(),
                "{bucket}: CORS rule count"
            );
            for (g, w) in got.cors_rules().iter().zip(cors) {
                // Sets: the order of methods/origins carries no meaning (and is normalised).
                let strs = |v: &Value| -> BTreeSet<String> {
                    v.as_array()
                        .unwrap()
                        .iter()
                        .map(|s| s.as_str().unwrap().to_string())
                        .collect()
                };
                let set = |v: &[String]| -> BTreeSet<String> { v.iter().cloned().collect() };
                assert_eq!(
                    set(g.allowed_origins()),
                    strs(&w["allowedOrigins"]),
                    "{bucket}: CORS origins"
                );
                assert_eq!(
                    set(g.allowed_methods()),
                    strs(&w["allowedMethods"]),
                    "{bucket}: CORS methods"
                );
            }
            what.push(format!("{} CORS rules", cors.len()));
        }
        if let Some(tags) = spec["tags"].as_object() {
            let got = s3.get_bucket_tagging().bucket(bucket).send().await.unwrap();
            let mut live: BTreeMap<&str, &str> =
                got.tag_set().iter().map(|t| (t.key(), t.value())).collect();
            // The ownership tags come besides the spec's (the instance name is the host config's).
            assert_eq!(
                live.remove("gitopsd.dev/environment"),
                Some(env),
                "{bucket}: ownership"
            );
            assert!(
                live.remove("gitopsd.dev/instance").is_some(),
                "{bucket}: ownership"
            );
            let want: BTreeMap<&str, &str> = tags
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
                .collect();
            assert_eq!(live, want, "{bucket}: tags");
        }
        if spec["policy"].is_object() {
            let got = s3.get_bucket_policy().bucket(bucket).send().await.unwrap();
            let live: Value = serde_json::from_str(got.policy().unwrap()).unwrap();
            assert_eq!(
                live["Statement"][0]["Sid"], spec["policy"]["Statement"][0]["Sid"],
                "{bucket}: policy"
            );
        }
        if let Some(objects) = spec["objects"].as_object() {
            let source = objects["source"].as_str().unwrap();
            let prefix = objects["prefix"].as_str().unwrap_or_default();
            let want: BTreeSet<String> = files_under(&repo_root.join(source))
                .into_iter()
                .map(|f| format!("{prefix}{f}"))
                .collect();
            let got = s3
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .send()
                .await
                .unwrap();
            let live: BTreeSet<String> = got
                .contents()
                .iter()
                .map(|o| o.key().unwrap().to_string())
                .collect();
            assert_eq!(live, want, "{bucket}: synced objects under {prefix}");
            if let Some(cc) = objects.get("cacheControl").and_then(Value::as_str) {
                let head = s3
                    .head_object()
                    .bucket(bucket)
                    .key(format!("{prefix}index.html"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    head.cache_control(),
                    Some(cc),
                    "{bucket}: Cache-Control of index.html"
                );
                assert!(
                    head.content_type()
                        .is_some_and(|t| t.starts_with("text/html")),
                    "{bucket}: Content-Type of index.html: {:?}",
                    head.content_type()
                );
            }
            what.push(format!("{} objects synced under {prefix}", live.len()));
        }
        checked.push(format!("{bucket} ({})", what.join(", ")));
    }
    println!("  {env}: buckets ok: {}", checked.join("; "));
}

fn bucket_count(decl: &[Declared]) -> usize {
    decl.iter().filter(|d| d.is_bucket()).count()
}

fn object_count(decl: &[Declared]) -> usize {
    decl.iter().filter(|d| !d.is_bucket()).count()
}

// ------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_repo_three_environments_and_a_day_of_changes() {
    let tb = require_testbed!();
    let client = tb.kube_client().await;
    let s3 = tb.s3_client().await;
    let source = example_repo();
    let decl: BTreeMap<&str, Vec<Declared>> = ENVS
        .iter()
        .map(|e| (*e, declared(tb, &source, e)))
        .collect();
    println!("example-repo declares:");
    for env in ENVS {
        println!(
            "  {env}: {} Kubernetes objects, {} buckets",
            object_count(&decl[env]),
            bucket_count(&decl[env])
        );
    }

    // ---------------------------------------------------------------- 1. a clean slate, the repository
    delete_leftovers(&client, &s3, &decl).await;

    let remote = tb.new_repo("e2e");
    let work_dir = tempfile::tempdir().unwrap();
    let work = Work {
        dir: work_dir.path().to_path_buf(),
        env: tb.git_cli_env(),
    };
    work.git(&["init", "-q", "-b", "main"]);
    work.git(&[
        "remote",
        "add",
        "origin",
        &tb.https_url_with_credentials(&remote.https_url),
    ]);
    let cp = Command::new("cp")
        .arg("-r")
        .arg(source.join("."))
        .arg(&work.dir)
        .status()
        .unwrap();
    assert!(cp.success(), "copy example-repo");
    let c1 = work.commit(&["."], "Acme infrastructure: dev, staging, prod");
    work.push_main();
    let tree = work.git(&["ls-tree", "-r", "--name-only", "HEAD"]);
    assert!(
        tree.lines()
            .any(|l| l == "environments/prod/kustomization.yaml")
    );
    assert!(tree.lines().any(|l| l == "charts/web/templates/web.yaml"));
    assert!(tree.lines().any(|l| l == "assets/dev/index.html"));

    // ---------------------------------------------------------------- 2. host config
    let host = Host::new(tb, &remote.https_url);
    let config = host.config.display().to_string();
    let v = host.run(&["validate", "--config", &config], Duration::from_secs(60));
    assert!(v.ok(), "validate: {v}");

    // ---------------------------------------------------------------- 3. first full apply
    let first = host.once(None);
    assert!(
        first.ok(),
        "first `once` of all three environments: {first}"
    );
    for env in ENVS {
        assert!(
            first.stdout.contains(&format!("{env}: healthy ")),
            "stdout names {env} recorded healthy: {}",
            first.stdout
        );
    }
    let (_, note1) = work.record(&c1, "dev");
    let parsed = Note::parse(&note1);
    assert_eq!(
        parsed
            .environments
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        vec!["dev", "prod", "staging"],
        "note sections:\n{note1}"
    );
    println!(
        "first full apply of dev, staging and prod: {:.1}s",
        first.elapsed.as_secs_f64()
    );
    for env in ENVS {
        let r = &parsed.environments[env];
        assert_eq!(r.outcome, Outcome::Healthy, "{env}:\n{note1}");
        assert!(r.errors.is_empty() && r.pinned.is_none(), "{env}:\n{note1}");
        assert_eq!(r.from, None, "{env}: first commit has no A");
        assert_eq!(
            r.counts.created,
            object_count(&decl[env]),
            "{env}: counts.created\n{note1}"
        );
        assert_eq!(
            (r.counts.updated, r.counts.deleted, r.counts.unchanged),
            (0, 0, 0),
            "{env}:\n{note1}"
        );
        let b = r
            .buckets
            .clone()
            .unwrap_or_else(|| panic!("{env}: no bucket counts\n{note1}"));
        assert_eq!(
            b.created,
            bucket_count(&decl[env]),
            "{env}: buckets.created\n{note1}"
        );
        println!(
            "  {env}: {} objects created, {} buckets created ({} -> {})",
            r.counts.created, b.created, r.started, r.finished
        );
    }
    let mut cache = BTreeMap::new();
    for env in ENVS {
        check_live_env(&client, &mut cache, env, &decl[env]).await;
        check_buckets(&s3, env, &decl[env], &work.dir).await;
    }

    // No-op: nothing changes, not even the notes.
    let notes_before = work.remote_notes_ref();
    assert!(notes_before.is_some());
    let noop = host.once(None);
    assert!(noop.ok(), "no-op `once`: {noop}");
    for env in ENVS {
        assert!(
            noop.stdout.contains(&format!("{env}: healthy at ")),
            "{env} converged: {noop}"
        );
    }
    assert_eq!(
        work.remote_notes_ref(),
        notes_before,
        "a no-op pass must not change the notes"
    );
    println!(
        "no-op reconcile of all three environments: {:.2}s",
        noop.elapsed.as_secs_f64()
    );

    // ---------------------------------------------------------------- 4a. staging image bump
    use sha2::Digest as _;
    let digest = format!(
        "{:x}",
        sha2::Sha256::digest(support::unique_name("api-2.15.1").as_bytes())
    );
    let old_image = decl["staging"]
        .iter()
        .find(|d| d.kind == "Deployment" && d.name == "api")
        .map(|d| {
            d.body["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .unwrap();
    let new_image = format!("registry.example.com/acme/api@sha256:{digest}");
    // A release in the overlay: the api digest (`images:` pins the Deployment and the migration
    // Job) and the migration it needs, a new Job (a Job's template cannot change in place).
    let staging = "environments/staging/kustomization.yaml";
    let old_digest = old_image.rsplit_once('@').unwrap().1;
    work.edit_once(staging, old_digest, &format!("sha256:{digest}"));
    work.edit_once(
        staging,
        "value: api-migrate-v42 }",
        "value: api-migrate-v43 }",
    );
    work.edit_once(staging, "value: --target=v42 }", "value: --target=v43 }");
    let c2 = work.commit(&[staging], "staging: api 2.15.1 (migration v43)");
    work.push_main();
    let bump = host.once(Some("staging"));
    assert!(bump.ok(), "staging release: {bump}");
    let (r, text) = work.record(&c2, "staging");
    assert_eq!(r.outcome, Outcome::Healthy, "{text}");
    assert_eq!(r.from.as_deref(), Some(c1.as_str()), "{text}");
    assert_eq!(
        (r.counts.created, r.counts.updated, r.counts.deleted),
        (1, 1, 1),
        "the api Deployment is updated, the v43 migration Job replaces v42's:\n{text}"
    );
    assert!(
        r.renderer
            .as_deref()
            .is_some_and(|v| v.starts_with("kustomize v")),
        "the note names the renderer:\n{text}"
    );
    assert!(
        !Note::parse(&text).environments.contains_key("prod"),
        "--env staging touched only staging:\n{text}"
    );
    let api = Api::<Deployment>::namespaced(client.clone(), "staging-web");
    let d = api.get("api").await.unwrap();
    let image = d
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone();
    assert_eq!(image.as_deref(), Some(new_image.as_str()));
    assert!(
        deployment_available(&d),
        "staging api Available after the bump"
    );
    println!(
        "staging image bump: healthy in {:.1}s (1 updated)",
        bump.elapsed.as_secs_f64()
    );

    // ---------------------------------------------------------------- 4b. a prod change that never becomes ready
    let web = "environments/prod/kustomization.yaml";
    work.edit_once(
        web,
        "\npatches:\n",
        "\npatches:\n  - target: { kind: Deployment, name: web }\n    patch: |-\n      - { op: replace, path: /spec/progressDeadlineSeconds, value: 15 }\n      - { op: add, path: /spec/template/metadata/labels/gitopsd.test~1fail, value: unready }\n",
    );
    let c3 = work.commit(&[web], "prod: web with a readiness regression");
    work.push_main();
    let bad = host.once(Some("prod"));
    assert!(
        !bad.ok(),
        "a prod change whose pods never become ready must fail `once`: {bad}"
    );
    let (r, text) = work.record(&c3, "prod");
    assert_eq!(r.outcome, Outcome::RolledBack, "{text}");
    assert!(r.pinned.is_some(), "rolled-back commit is pinned:\n{text}");
    assert!(!r.rolling_back, "{text}");
    assert!(
        r.errors
            .iter()
            .any(|e| e.object.contains("Deployment") && e.object.contains("prod-web/web")),
        "errors name the Deployment:\n{text}"
    );
    assert_eq!(r.from.as_deref(), Some(c1.as_str()), "{text}");
    let (base, base_text) = work.record(&c1, "prod");
    assert!(
        base.reapplied.iter().any(|x| x.because == c3 && x.healthy),
        "the base commit records its healthy re-application:\n{base_text}"
    );
    let web_api = Api::<Deployment>::namespaced(client.clone(), "prod-web");
    wait_until(
        "prod web Available again after the rollback",
        Duration::from_secs(60),
        || async { deployment_available(&web_api.get("web").await.unwrap()) },
    )
    .await;
    let d = web_api.get("web").await.unwrap();
    let spec = d.spec.clone().unwrap();
    let labels = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap_or_default();
    assert!(
        !labels.contains_key("gitopsd.test/fail"),
        "the rollback removed the label: {labels:?}"
    );
    assert_eq!(spec.progress_deadline_seconds, Some(300));
    println!(
        "prod readiness regression: rolled back and pinned in {:.1}s ({})",
        bad.elapsed.as_secs_f64(),
        r.pinned.as_deref().unwrap_or_default()
    );
    // Pinned: the next pass leaves prod alone (no note, no write to the Deployment).
    let notes_before = work.remote_notes_ref();
    let generation_before = d.metadata.generation;
    let again = host.once(Some("prod"));
    assert!(
        !again.ok(),
        "a pinned head is not healthy at the head: {again}"
    );
    assert!(again.stdout.contains(": pinned "), "stays pinned: {again}");
    assert_eq!(
        work.remote_notes_ref(),
        notes_before,
        "a pinned pass changes no note"
    );
    let d = web_api.get("web").await.unwrap();
    assert_eq!(
        d.metadata.generation, generation_before,
        "a pinned pass does not change the Deployment"
    );
    assert!(deployment_available(&d), "prod web stays Available");
    println!(
        "prod pinned pass: {:.2}s, {}",
        again.elapsed.as_secs_f64(),
        again.stdout.trim()
    );

    // ---------------------------------------------------------------- 4c. preview of a pending change
    preview_step(tb, &host, &work).await;
    drop(client);
}

async fn preview_step(_tb: &Testbed, host: &Host, work: &Work) {
    let main_sha = work.head();
    work.git(&["checkout", "-q", "-b", "preview-flags-and-secret"]);
    // A flag in base/ (staging and prod use base's value; dev sets its own) and a Secret that only
    // staging's overlay lists.
    let flags = "base/api.yaml";
    work.edit_once(
        flags,
        "    checkout.new-flow: false\n",
        "    checkout.new-flow: true\n",
    );
    let staging = "environments/staging/kustomization.yaml";
    work.edit_once(
        staging,
        "resources:\n  - ../../base\n",
        "resources:\n  - ../../base\n  - e2e-credentials.yaml\n",
    );
    use base64::Engine as _;
    let secret_value = format!("pw-{}", support::unique_name("e2e-secret-value"));
    let token = format!("tok-{}", support::unique_name("e2e-token-value"));
    let token_b64 = base64::engine::general_purpose::STANDARD.encode(&token);
    let secret_value_b64 = base64::engine::general_purpose::STANDARD.encode(&secret_value);
    let secret_file = "environments/staging/e2e-credentials.yaml";
    std::fs::write(
        work.path(secret_file),
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: e2e-credentials\n  namespace: staging-web\ntype: Opaque\nstringData:\n  password: {secret_value}\ndata:\n  token: {token_b64}\n"
        ),
    )
    .unwrap();
    let branch_sha = work.commit(
        &[flags, staging, secret_file],
        "new checkout flow (base), e2e credentials (staging)",
    );
    let repo = work.dir.display().to_string();
    // The host config names the renderers (the testbed's kustomize and helm).
    let config = host.config.display().to_string();
    let preview = |format: &str| {
        host.run(
            &[
                "preview",
                "--config",
                &config,
                "--repo",
                &repo,
                "--base",
                &main_sha,
                "--head",
                &branch_sha,
                "--format",
                format,
            ],
            Duration::from_secs(120),
        )
    };
    let forbidden = [
        secret_value.as_str(),
        secret_value_b64.as_str(),
        token.as_str(),
        token_b64.as_str(),
    ];

    let md = preview("markdown");
    assert_eq!(md.code, Some(2), "preview with changes exits 2: {md}");
    for s in forbidden {
        assert!(
            !md.stdout.contains(s) && !md.stderr.contains(s),
            "markdown preview leaks a secret value ({s}):\n{md}"
        );
    }
    for want in [
        "staging",
        "api-feature-flags",
        "checkout.new-flow",
        "e2e-credentials",
        "Secret",
    ] {
        assert!(
            md.stdout.contains(want),
            "markdown preview mentions {want}:\n{}",
            md.stdout
        );
    }
    assert!(
        md.stdout
            .lines()
            .any(|l| l.starts_with('+') && l.contains("checkout.new-flow: true"))
            && md
                .stdout
                .lines()
                .any(|l| l.starts_with('-') && l.contains("checkout.new-flow: false")),
        "markdown preview shows the flag diff:\n{}",
        md.stdout
    );

    assert!(
        md.stdout.contains("Rendered by `kustomize v"),
        "the summary names the renderer of each environment:\n{}",
        md.stdout
    );
    println!("--- gitopsd preview --format markdown\n{}---", md.stdout);

    let js = preview("json");
    assert_eq!(js.code, Some(2), "json preview exits 2: {js}");
    for s in forbidden {
        assert!(
            !js.stdout.contains(s) && !js.stderr.contains(s),
            "json preview leaks a secret value ({s}):\n{js}"
        );
    }
    let report: Value =
        serde_json::from_str(&js.stdout).unwrap_or_else(|e| panic!("json preview: {e}\n{js}"));
    assert_eq!(
        report["head"].as_str(),
        Some(branch_sha.as_str()),
        "{report:#}"
    );
    let envs = report["environments"].as_array().unwrap();
    let by_name: BTreeMap<&str, &Value> = envs
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e))
        .collect();
    if let Some(e) = by_name.get("dev") {
        assert!(
            e["changes"].as_array().is_none_or(|c| c.is_empty()),
            "dev sets its own flag, so it does not change: {e:#}"
        );
    }
    let prod = by_name
        .get("prod")
        .unwrap_or_else(|| panic!("no prod in {report:#}"));
    let prod_changes = prod["changes"].as_array().unwrap();
    assert_eq!(
        prod_changes.len(),
        1,
        "the base change reaches prod too: {prod:#}"
    );
    assert_eq!(prod_changes[0]["name"], "api-feature-flags", "{prod:#}");
    assert!(
        prod_changes[0]["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("base/api.yaml")),
        "the rendered object names its source file: {prod:#}"
    );
    assert!(
        prod["renderer"]
            .as_str()
            .is_some_and(|r| r.starts_with("kustomize v") && r.contains("+ helm v")),
        "the report names the renderer: {prod:#}"
    );
    let staging = by_name
        .get("staging")
        .unwrap_or_else(|| panic!("no staging in {report:#}"));
    let changes = staging["changes"].as_array().unwrap();
    assert_eq!(
        changes.len(),
        2,
        "two objects change in staging: {staging:#}"
    );
    let cm = changes
        .iter()
        .find(|c| c["kind"] == "ConfigMap")
        .expect("ConfigMap change");
    assert_eq!(cm["name"], "api-feature-flags");
    assert_eq!(cm["action"], "update", "{cm:#}");
    assert!(
        cm["diff"]
            .as_str()
            .unwrap_or_default()
            .contains("checkout.new-flow: true"),
        "{cm:#}"
    );
    let secret = changes
        .iter()
        .find(|c| c["kind"] == "Secret")
        .expect("Secret change");
    assert_eq!(secret["name"], "e2e-credentials");
    assert_eq!(secret["action"], "create", "{secret:#}");
    assert!(
        secret["diff"].is_null(),
        "a Secret has no value diff: {secret:#}"
    );
    let keys = secret["changed_keys"].to_string();
    assert!(
        keys.contains("password") && keys.contains("token"),
        "the Secret's keys (names only): {secret:#}"
    );
    println!(
        "preview (markdown {} bytes, json {} bytes): ConfigMap diff shown, Secret keys only, no secret value",
        md.stdout.len(),
        js.stdout.len()
    );
    work.git(&["checkout", "-q", "main"]);
}
