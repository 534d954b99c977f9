//! `gitopsd preview --live` against the testbed's cluster: the head is dry-run server-side and
//! compared with the live objects; admission refusals (Pod Security `restricted`) are validation
//! errors of that object; Secret values never appear.

mod support;

use std::path::Path;
use std::process::Command;

use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_gitopsd");

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .envs(support::git_isolated_env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const SECRET_VALUE: &str = "live-secret-value-7f3a";
/// In a ConfigMap someone else owns: `--live` must not show it, `--live-all` does.
const FOREIGN_VALUE: &str = "foreign-live-value-91c2";

fn manifests(ns: &str) -> String {
    format!(
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: existing
  namespace: {ns}
data:
  a: \"2\"
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: fresh
  namespace: {ns}
data:
  b: \"1\"
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: foreign
  namespace: {ns}
data:
  d: \"1\"
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
  namespace: {ns}
stringData:
  password: {SECRET_VALUE}
---
apiVersion: v1
kind: Pod
metadata:
  name: privileged
  namespace: {ns}
spec:
  containers:
    - name: app
      image: registry.invalid/gitopsd/fake:1
      securityContext:
        privileged: true
"
    )
}

fn run(repo: &Path, config: &Path, format: &str) -> (String, String, i32) {
    run_with(repo, config, format, &[])
}

fn run_with(repo: &Path, config: &Path, format: &str, extra: &[&str]) -> (String, String, i32) {
    let out = Command::new(BIN)
        .args([
            "preview", "--live", "--head", "HEAD", "--format", format, "--repo",
        ])
        .arg(repo)
        .args(extra)
        .arg("--config")
        .arg(config)
        .env("GITOPSD_LOG", "warn")
        .output()
        .unwrap();
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

#[tokio::test]
async fn live_preview_reports_admission_errors_and_live_diffs() {
    let tb = require_testbed!();
    let client = tb.kube_client().await;
    let ns = tb.namespace(&client, "pv-live").await;

    // Pod Security `restricted`, enforced: the privileged Pod is refused at admission.
    let nsr = ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "Namespace"));
    let namespaces: Api<DynamicObject> = Api::all_with(client.clone(), &nsr);
    namespaces
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})),
        )
        .await
        .unwrap();
    // A ConfigMap applied earlier by gitopsd for this environment (same field manager, its
    // ownership labels), so the head's change is an update.
    let env_name = support::unique_name("pvlive");
    let instance = support::unique_name("pvinst");
    let labels = json!({
        "app.kubernetes.io/managed-by": "gitopsd",
        "gitopsd.dev/instance": instance,
        "gitopsd.dev/environment": env_name,
    });
    let cmr = ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "ConfigMap"));
    let cms: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &cmr);
    cms.patch(
        "existing",
        &PatchParams::apply("gitopsd"),
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "existing", "labels": labels}, "data": {"a": "1"}})),
    )
    .await
    .unwrap();
    // One someone else made: the head names it too, but its live content is not the PR's to see.
    cms.patch(
        "foreign",
        &PatchParams::apply("someone-else"),
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "foreign"}, "data": {"c": FOREIGN_VALUE}})),
    )
    .await
    .unwrap();

    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    std::fs::create_dir_all(repo.path().join("environments/live")).unwrap();
    std::fs::write(
        repo.path().join("environments/live/all.yaml"),
        manifests(&ns),
    )
    .unwrap();
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-q", "-m", "live"]);

    // The host config names a bare repository (the daemon's source); the preview reads --repo.
    let bare = repo.path().join("bare.git");
    git(repo.path(), &["clone", "-q", "--bare", ".", "bare.git"]);
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("gitopsd.yaml");
    std::fs::write(
        &cfg,
        format!(
            "instance: {instance}\nrepository:\n  url: {}\nstate_dir: {}\nnotes_signing_key_file: {}\nenvironments:\n  - name: {env_name}\n    path: environments/live\n    namespace: {ns}\n    kubernetes:\n      kubeconfig: {}\n",
            bare.display(),
            cfg_dir.path().join("state").display(),
            support::notes_key(cfg_dir.path()).display(),
            tb.kubeconfig_path().display()
        ),
    )
    .unwrap();

    let (json_text, stderr, code) = run(repo.path(), &cfg, "json");
    assert_eq!(
        code, 1,
        "admission error → exit 1; stderr: {stderr}\n{json_text}"
    );
    assert!(!json_text.contains(SECRET_VALUE), "{json_text}");
    let v: Value =
        serde_json::from_str(&json_text).unwrap_or_else(|e| panic!("{e}: stderr: {stderr}"));
    assert_eq!(v["live"], true);
    let env = &v["environments"][0];
    let errors = env["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["object"], format!("Pod {ns}/privileged"));
    let msg = errors[0]["message"].as_str().unwrap();
    assert!(
        msg.contains("PodSecurity") && msg.contains("restricted"),
        "{msg}"
    );

    let changes = env["changes"].as_array().unwrap();
    let find = |name: &str| {
        changes
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {changes:?}"))
    };
    let existing = find("existing");
    assert_eq!(existing["action"], "update");
    let diff = existing["diff"].as_str().unwrap();
    assert!(
        diff.contains("-  a: '1'") || diff.contains("-  a: \"1\""),
        "{diff}"
    );
    // Server-managed fields are not in the diff.
    for field in [
        "resourceVersion",
        "managedFields",
        "uid:",
        "creationTimestamp",
    ] {
        assert!(!diff.contains(field), "{field} in {diff}");
    }
    assert_eq!(find("fresh")["action"], "create");
    let creds = find("creds");
    assert_eq!(creds["action"], "create");
    assert!(creds.get("diff").is_none());
    assert!(
        creds["changed_keys"]["added"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == "data.password"),
        "{creds}"
    );
    // Not owned: reported as existing, never compared or shown.
    assert!(!json_text.contains(FOREIGN_VALUE), "{json_text}");
    let foreign = find("foreign")["diff"].as_str().unwrap();
    assert!(
        foreign.contains("not owned by this environment"),
        "{foreign}"
    );
    assert_eq!(env["summary"]["update"], 2);
    assert_eq!(env["summary"]["create"], 2);
    assert_eq!(env["summary"]["errors"], 1);

    let (md, _, code) = run(repo.path(), &cfg, "markdown");
    println!("{md}");
    assert_eq!(code, 1);
    assert!(!md.contains(SECRET_VALUE));
    use base64::Engine;
    assert!(!md.contains(&base64::engine::general_purpose::STANDARD.encode(SECRET_VALUE)));
    assert!(md.contains("compared with the **live cluster**"), "{md}");
    assert!(md.contains("PodSecurity"), "{md}");
    assert!(!md.contains(FOREIGN_VALUE), "{md}");

    // --live-all compares it like any other object.
    let (all, _, _) = run_with(repo.path(), &cfg, "json", &["--live-all"]);
    assert!(all.contains(FOREIGN_VALUE), "{all}");
    assert!(!all.contains("not owned by this environment"), "{all}");
}
