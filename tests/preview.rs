//! `gitopsd preview` against fixture repositories built with the git CLI (fixed names and dates,
//! so commit ids are stable), compared with golden files under tests/golden/preview/.
//!
//! `GITOPSD_UPDATE_GOLDEN=1 cargo test --test preview` rewrites the golden files; review them.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

const BIN: &str = env!("CARGO_BIN_EXE_gitopsd");

/// A work-tree repository in a temporary directory.
struct Fixture {
    dir: tempfile::TempDir,
    commits: AtomicU32,
}

fn git_env(cmd: &mut Command) -> &mut Command {
    cmd.env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "gitopsd test")
        .env("GIT_AUTHOR_EMAIL", "test@gitopsd.invalid")
        .env("GIT_COMMITTER_NAME", "gitopsd test")
        .env("GIT_COMMITTER_EMAIL", "test@gitopsd.invalid")
}

impl Fixture {
    fn new() -> Fixture {
        let f = Fixture {
            dir: tempfile::tempdir().unwrap(),
            commits: AtomicU32::new(0),
        };
        f.git(&["init", "-q", "-b", "main"]);
        f
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn git(&self, args: &[&str]) -> String {
        let out = git_env(Command::new("git").args(args).current_dir(self.path()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn write(&self, path: &str, text: &str) -> &Self {
        let p = self.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self
    }

    fn remove(&self, path: &str) -> &Self {
        std::fs::remove_file(self.path().join(path)).unwrap();
        self
    }

    /// Commits everything with a fixed date (one minute after the previous commit).
    fn commit(&self, message: &str) -> String {
        let n = self.commits.fetch_add(1, Ordering::SeqCst);
        let date = format!("2024-01-01T00:{n:02}:00Z");
        self.git(&["add", "-A"]);
        let out = git_env(
            Command::new("git")
                .args(["commit", "-q", "--allow-empty", "-m", message])
                .env("GIT_AUTHOR_DATE", &date)
                .env("GIT_COMMITTER_DATE", &date)
                .current_dir(self.path()),
        )
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.git(&["rev-parse", "HEAD"])
    }
}

struct Run {
    stdout: String,
    stderr: String,
    code: i32,
}

fn preview(repo: &Path, args: &[&str]) -> Run {
    let out = Command::new(BIN)
        .arg("preview")
        .arg("--repo")
        .arg(repo)
        .args(args)
        .env("GITOPSD_LOG", "warn")
        .output()
        .unwrap();
    Run {
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code().unwrap_or(-1),
    }
}

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/preview")
        .join(name)
}

/// Compares with (or, with GITOPSD_UPDATE_GOLDEN=1, rewrites) a golden file.
fn golden(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var("GITOPSD_UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with GITOPSD_UPDATE_GOLDEN=1)", path.display()));
    if expected != actual {
        let diff = similar::TextDiff::from_lines(&expected, actual)
            .unified_diff()
            .header("golden", "actual")
            .to_string();
        panic!(
            "{name} differs from the golden file (GITOPSD_UPDATE_GOLDEN=1 rewrites it):\n{diff}"
        );
    }
}

/// Markdown and JSON of the same preview, both checked against golden files.
fn check_both(repo: &Path, args: &[&str], name: &str, code: i32) -> (Run, Run) {
    let md = preview(repo, args);
    assert_eq!(md.code, code, "markdown exit code; stderr: {}", md.stderr);
    golden(&format!("{name}.md"), &md.stdout);
    let mut json_args = args.to_vec();
    json_args.extend(["--format", "json"]);
    let json = preview(repo, &json_args);
    assert_eq!(json.code, code, "json exit code; stderr: {}", json.stderr);
    let _: serde_json::Value = serde_json::from_str(&json.stdout).expect("valid JSON");
    golden(&format!("{name}.json"), &json.stdout);
    (md, json)
}

const APP_BASE: &str = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: web
data:
  LOG_LEVEL: info
  FEATURE_X: \"off\"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: registry.example/web:1.0.0
";

const KEEP: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: web
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: keep
  namespace: web
data:
  a: \"1\"
";

/// Two environments (dev changes, prod does not): create, update, delete, and an object whose
/// only change is server-managed fields (not a change).
fn app_fixture() -> (Fixture, String, String) {
    let f = Fixture::new();
    f.write("environments/dev/app.yaml", APP_BASE)
        .write("environments/dev/keep.yaml", KEEP)
        .write(
            "environments/dev/legacy.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: legacy\n  namespace: web\ndata:\n  old: \"true\"\n",
        )
        .write(
            "environments/prod/app.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: web\ndata:\n  LOG_LEVEL: warn\n",
        )
        .write("README.md", "fixture\n");
    let base = f.commit("base");
    f.write(
        "environments/dev/app.yaml",
        &APP_BASE
            .replace("LOG_LEVEL: info", "LOG_LEVEL: debug")
            .replace("replicas: 2", "replicas: 3")
            .replace("web:1.0.0", "web:1.1.0"),
    )
    // Only server-managed fields change: not a change.
    .write(
        "environments/dev/keep.yaml",
        &KEEP.replace(
            "  namespace: web\ndata:",
            "  namespace: web\n  resourceVersion: \"42\"\n  uid: 0b9c\n  annotations:\n    kubectl.kubernetes.io/last-applied-configuration: \"{}\"\nstatus: {}\ndata:",
        ),
    )
    .remove("environments/dev/legacy.yaml")
    .write(
        "environments/dev/worker.yaml",
        "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: cleanup\n  namespace: web\nspec:\n  schedule: \"0 3 * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers:\n            - name: cleanup\n              image: registry.example/cleanup:2\n",
    )
    .write("README.md", "fixture, changed outside the environments\n");
    let head = f.commit("head");
    (f, base, head)
}

#[test]
fn created_updated_deleted_objects() {
    let (f, base, head) = app_fixture();
    check_both(f.path(), &["--base", &base, "--head", &head], "changes", 2);
}

#[test]
fn env_filter_and_unknown_env() {
    let (f, base, head) = app_fixture();
    let run = preview(
        f.path(),
        &["--base", &base, "--head", &head, "--env", "prod"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("**No changes.**"), "{}", run.stdout);
    let run = preview(
        f.path(),
        &["--base", &base, "--head", &head, "--env", "nope"],
    );
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("no environment \"nope\""),
        "{}",
        run.stderr
    );
}

#[test]
fn identical_revisions_have_no_changes() {
    let (f, _base, head) = app_fixture();
    let (md, _) = check_both(
        f.path(),
        &["--base", &head, "--head", "HEAD"],
        "no-changes",
        0,
    );
    assert!(md.stdout.contains("No changes"));
}

#[test]
fn bare_repository_and_revision_names() {
    let (f, _base, _head) = app_fixture();
    let bare = tempfile::tempdir().unwrap();
    let out = git_env(
        Command::new("git")
            .args(["clone", "-q", "--bare"])
            .arg(f.path())
            .arg(bare.path().join("r.git")),
    )
    .output()
    .unwrap();
    assert!(out.status.success());
    let from_bare = preview(
        &bare.path().join("r.git"),
        &["--base", "main~1", "--head", "main"],
    );
    let from_work = preview(f.path(), &["--base", "HEAD~1", "--head", "HEAD"]);
    assert_eq!(from_bare.code, 2, "{}", from_bare.stderr);
    assert_eq!(from_bare.stdout, from_work.stdout);
}

#[test]
fn url_repository_is_fetched_into_a_temporary_mirror() {
    let (f, base, head) = app_fixture();
    let url = format!("file://{}", f.path().display());
    let out = Command::new(BIN)
        .args(["preview", "--repo", &url, "--base", &base, "--head", "main"])
        .env("GITOPSD_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let local = preview(f.path(), &["--base", &base, "--head", &head]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), local.stdout);
}

// ------------------------------------------------------------------------------------------------
// secrets

const SECRET_VALUES: &[&str] = &[
    "s3cr3t-base-value",
    "s3cr3t-head-value",
    "admin-user-x",
    "tok-base-value",
    "tok-head-value",
    "api-key-value-1",
    "created-secret-value",
    "cm-sensitive-base",
    "cm-sensitive-head",
];

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn secret_fixture() -> (Fixture, String, String) {
    let f = Fixture::new();
    f.write(
        "environments/dev/secrets.yaml",
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db-credentials\n  namespace: web\ntype: Opaque\ndata:\n  password: {}\n  username: {}\nstringData:\n  token: tok-base-value\n",
            b64("s3cr3t-base-value"),
            b64("admin-user-x")
        ),
    )
    .write(
        "environments/dev/config.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-credentials\n  namespace: web\ndata:\n  dsn: cm-sensitive-base\n",
    );
    let base = f.commit("base");
    f.write(
        "environments/dev/secrets.yaml",
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db-credentials\n  namespace: web\n  labels: {{team: db}}\ntype: Opaque\ndata:\n  password: {}\n  api-key: {}\nstringData:\n  token: tok-head-value\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: new-secret\n  namespace: web\nstringData:\n  value: created-secret-value\n  tls.key: created-secret-value\n",
            b64("s3cr3t-head-value"),
            b64("api-key-value-1")
        ),
    )
    .write(
        "environments/dev/config.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-credentials\n  namespace: web\ndata:\n  dsn: cm-sensitive-head\n",
    );
    let head = f.commit("head");
    (f, base, head)
}

fn host_config(dir: &Path) -> PathBuf {
    let path = dir.join("gitopsd.yaml");
    std::fs::write(
        &path,
        format!(
            "repository:\n  url: {}\nstate_dir: {}\nnotes_signing_key_file: {}\nenvironments:\n  - name: dev\n    path: environments/dev\n    kubernetes: {{}}\n    sensitive:\n      - kind: ConfigMap\n        name: app-credentials\n",
            dir.display(),
            dir.join("state").display(),
            support::notes_key(dir).display()
        ),
    )
    .unwrap();
    path
}

fn assert_no_secret_values(text: &str) {
    for v in SECRET_VALUES {
        assert!(!text.contains(v), "value {v:?} leaked:\n{text}");
        let enc = b64(v);
        assert!(!text.contains(&enc), "base64 of {v:?} leaked:\n{text}");
        let trimmed = enc.trim_end_matches('=');
        assert!(!text.contains(trimmed), "base64 of {v:?} leaked:\n{text}");
    }
}

#[test]
fn secrets_show_keys_never_values() {
    let (f, base, head) = secret_fixture();
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = host_config(cfg_dir.path());
    let cfg = cfg.to_str().unwrap();
    let (md, json) = check_both(
        f.path(),
        &["--config", cfg, "--base", &base, "--head", &head],
        "secret",
        2,
    );
    assert_no_secret_values(&md.stdout);
    assert_no_secret_values(&md.stderr);
    assert_no_secret_values(&json.stdout);
    assert!(
        md.stdout.contains("changed: `data.password`"),
        "{}",
        md.stdout
    );
    assert!(md.stdout.contains("changed: `data.dsn`"), "{}", md.stdout);
    // Without the host config the ConfigMap is not sensitive, but Secrets still are.
    let plain = preview(f.path(), &["--base", &base, "--head", &head]);
    assert!(plain.stdout.contains("cm-sensitive-head"));
    for v in &SECRET_VALUES[..7] {
        assert!(!plain.stdout.contains(v));
    }
    // A split report does not leak either.
    let small = preview(
        f.path(),
        &[
            "--config",
            cfg,
            "--base",
            &base,
            "--head",
            &head,
            "--max-comment-bytes",
            "600",
        ],
    );
    assert_no_secret_values(&small.stdout);
}

#[test]
fn broken_secret_file_errors_do_not_quote_values() {
    let f = Fixture::new();
    f.write(
        "environments/dev/a.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
    );
    let base = f.commit("base");
    f.write(
        "environments/dev/s.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n  namespace: [\"leaky-secret-value\"]\nstringData:\n  k: \"leaky-secret-value\"\n",
    );
    let head = f.commit("head");
    for format in ["markdown", "json"] {
        let run = preview(
            f.path(),
            &["--base", &base, "--head", &head, "--format", format],
        );
        assert_eq!(run.code, 1, "{}", run.stdout);
        assert!(!run.stdout.contains("leaky-secret-value"), "{}", run.stdout);
    }
}

// ------------------------------------------------------------------------------------------------
// buckets

const BUCKET: &str = "\
apiVersion: gitopsd.dev/v1alpha1
kind: Bucket
metadata:
  name: static-assets
spec:
  name: acme-dev-static
  versioning: Enabled
  tags:
    team: web
  deletionPolicy: Delete
  objects:
    source: assets/dev
    prefix: static/
    delete: true
---
apiVersion: gitopsd.dev/v1alpha1
kind: Bucket
metadata:
  name: logs
spec:
  name: acme-dev-logs
  versioning: Enabled
";

const DOCS_BUCKET: &str = "\
apiVersion: gitopsd.dev/v1alpha1
kind: Bucket
metadata:
  name: docs
spec:
  name: acme-dev-docs
  objects:
    source: docs/site
    prefix: \"\"
    delete: false
";

#[test]
fn bucket_configuration_and_object_sync() {
    let f = Fixture::new();
    f.write("environments/dev/buckets.yaml", BUCKET)
        .write("environments/dev/docs.yaml", DOCS_BUCKET)
        .write("assets/dev/index.html", "<h1>v1</h1>\n")
        .write("assets/dev/app.js", "console.log(1)\n")
        .write("assets/dev/old.css", "body{}\n")
        .write("docs/site/guide.md", "# guide\n")
        .write("docs/site/gone.md", "# gone\n");
    let base = f.commit("base");
    f.write(
        "environments/dev/buckets.yaml",
        &BUCKET
            .replacen("versioning: Enabled", "versioning: Suspended", 1)
            .replace("    team: web\n", "    team: web\n    owner: platform\n")
            .replace(
                "---\napiVersion: gitopsd.dev/v1alpha1\nkind: Bucket\nmetadata:\n  name: logs\nspec:\n  name: acme-dev-logs\n  versioning: Enabled\n",
                "---\napiVersion: gitopsd.dev/v1alpha1\nkind: Bucket\nmetadata:\n  name: uploads\nspec:\n  name: acme-dev-uploads\n  versioning: Enabled\n",
            ),
    )
    .write("assets/dev/index.html", "<h1>v2</h1>\n")
    .remove("assets/dev/old.css")
    .write("assets/dev/img/logo.svg", "<svg/>\n")
    // The docs Bucket's YAML does not change; its folder does.
    .write("docs/site/guide.md", "# guide, v2\n")
    .write("docs/site/new.md", "# new\n")
    .remove("docs/site/gone.md");
    let head = f.commit("head");
    check_both(f.path(), &["--base", &base, "--head", &head], "buckets", 2);
}

// ------------------------------------------------------------------------------------------------
// validation errors

#[test]
fn validation_errors_exit_1() {
    let f = Fixture::new();
    f.write(
        "environments/dev/ok.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n",
    );
    let base = f.commit("base");
    f.write("environments/dev/ok.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\ndata: {a: b}\n")
        .write(
            "environments/dev/broken.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fine}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  labels: {a: b}\n---\nkind: [\n",
        )
        .write("environments/dev/dup.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n")
        .write(
            "environments/dev/bucket.yaml",
            "apiVersion: gitopsd.dev/v1alpha1\nkind: Bucket\nmetadata: {name: b}\nspec:\n  name: Not_A_Bucket\n  versioning: Sometimes\n",
        );
    std::os::unix::fs::symlink("/etc/passwd", f.path().join("environments/dev/link.yaml")).unwrap();
    let head = f.commit("head");
    check_both(f.path(), &["--base", &base, "--head", &head], "errors", 1);
}

// ------------------------------------------------------------------------------------------------
// splitting

fn big_fixture() -> (Fixture, String, String) {
    let f = Fixture::new();
    let cm = |i: usize, v: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i:02}\n  namespace: web\ndata:\n  value: \"{v}-{i}\"\n  other: \"x\"\n"
        )
    };
    for i in 0..12 {
        f.write(&format!("environments/dev/cm-{i:02}.yaml"), &cm(i, "old"));
    }
    let big_base: String = (0..300)
        .map(|i| format!("  key{i:03}: \"old value {i}\"\n"))
        .collect();
    f.write(
        "environments/dev/huge.yaml",
        &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: huge\n  namespace: web\ndata:\n{big_base}"),
    );
    let base = f.commit("base");
    for i in 0..12 {
        f.write(&format!("environments/dev/cm-{i:02}.yaml"), &cm(i, "new"));
    }
    let big_head: String = (0..300)
        .map(|i| format!("  key{i:03}: \"new value {i}\"\n"))
        .collect();
    f.write(
        "environments/dev/huge.yaml",
        &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: huge\n  namespace: web\ndata:\n{big_head}"),
    );
    let head = f.commit("head");
    (f, base, head)
}

/// Every body is well-formed on its own: code fences and <details> are balanced.
fn assert_balanced(part: &str) {
    let fences = part.lines().filter(|l| l.starts_with("```")).count();
    assert_eq!(fences % 2, 0, "unbalanced code fence in:\n{part}");
    assert_eq!(
        part.matches("<details>").count(),
        part.matches("</details>").count(),
        "unbalanced <details> in:\n{part}"
    );
}

#[test]
fn split_report() {
    let (f, base, head) = big_fixture();
    let limit = 2000;
    let run = preview(
        f.path(),
        &[
            "--base",
            &base,
            "--head",
            &head,
            "--max-comment-bytes",
            &limit.to_string(),
        ],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    golden("split.md", &run.stdout);
    assert!(run.stdout.starts_with("<!-- gitopsd-preview part 1/"));
    assert!(
        run.stdout.contains("diff truncated"),
        "the huge object is truncated"
    );

    let out = tempfile::tempdir().unwrap();
    let written = preview(
        f.path(),
        &[
            "--base",
            &base,
            "--head",
            &head,
            "--max-comment-bytes",
            &limit.to_string(),
            "--out",
            out.path().to_str().unwrap(),
        ],
    );
    assert_eq!(written.code, 2);
    assert_eq!(written.stdout, "");
    let mut parts = Vec::new();
    for i in 1.. {
        match std::fs::read_to_string(out.path().join(format!("preview-{i}.md"))) {
            Ok(p) => parts.push(p),
            Err(_) => break,
        }
    }
    assert!(parts.len() > 3, "{} parts", parts.len());
    let m = parts.len();
    for (i, p) in parts.iter().enumerate() {
        assert!(p.len() <= limit, "part {} has {} bytes", i + 1, p.len());
        assert!(p.starts_with(&format!("## gitopsd preview (part {}/{m})", i + 1)));
        assert_balanced(p);
        // The same bodies as printed.
        assert!(run.stdout.contains(p.as_str()));
    }
    // Every object appears exactly once across the parts.
    let all = parts.concat();
    for i in 0..12 {
        assert_eq!(
            all.matches(&format!("<code>ConfigMap web/cm-{i:02}</code>"))
                .count(),
            1
        );
    }
}

#[test]
fn json_is_one_document_whatever_the_size() {
    let (f, base, head) = big_fixture();
    let run = preview(
        f.path(),
        &[
            "--base",
            &base,
            "--head",
            &head,
            "--format",
            "json",
            "--max-comment-bytes",
            "600",
        ],
    );
    assert_eq!(run.code, 2);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let env = &v["environments"][0];
    assert_eq!(env["summary"]["update"], 13);
    assert!(
        env["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["diff"].as_str().is_some())
    );
    assert!(!run.stdout.contains("truncated"));
}

#[test]
fn usage_errors_exit_1() {
    let (f, base, _) = app_fixture();
    let run = preview(f.path(), &["--base", &base, "--head", "no-such-rev"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("no-such-rev"), "{}", run.stderr);
    let run = preview(f.path(), &["--base", &base, "--head", "HEAD", "--live"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("--live needs --config"),
        "{}",
        run.stderr
    );
    let run = preview(
        Path::new("/nonexistent/repo"),
        &["--base", "a", "--head", "b"],
    );
    assert_eq!(run.code, 1);
}
