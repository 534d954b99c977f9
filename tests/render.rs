//! The Kustomize/Helm renderer against the real binaries (GITOPSD_TEST_KUSTOMIZE and
//! GITOPSD_TEST_HELM, exported by target/testbed/env.sh) on the fixture repository under
//! tests/render/repo, committed into a temporary git repository and read through the mirror.
//!
//! Tests that need the binaries return early (loudly) when the variables are missing, unless
//! GITOPSD_TESTBED_REQUIRED=1, which makes that a failure. Tests with fake renderer scripts
//! always run.
//!
//! Tests in this file run one at a time (see [`serial`]): some assert that `render::runs()`
//! did not move, which another test's render would break.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, MutexGuard};

use gitopsd::git::{GitAuth, Mirror, MirrorOptions, Oid};
use gitopsd::manifest::{Manifest, ObjectKey};
use gitopsd::render::{self, Binary, Isolation, Limits, RenderFailure, Rendered, Renderers, Tree};

async fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::const_new(());
    LOCK.lock().await
}

/// A renderer binary from the environment or the testbed's env.sh; `None` (after a loud
/// message) when neither has it, a panic instead when GITOPSD_TESTBED_REQUIRED=1.
fn binary_path(var: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = support::testbed().and_then(|tb| tb.vars().get(var)) {
        return Some(PathBuf::from(p));
    }
    let msg = format!(
        "\n==================== RENDERER BINARY MISSING ====================\n\
         {var} is not set (target/testbed/env.sh exports it): this test needs it. Test skipped.\n\
         ================================================================="
    );
    if std::env::var("GITOPSD_TESTBED_REQUIRED").as_deref() == Ok("1") {
        panic!("{msg}\nGITOPSD_TESTBED_REQUIRED=1: failing instead of skipping");
    }
    eprintln!("{msg}");
    None
}

/// The real renderers, resolved the way the daemon does.
async fn real_renderers() -> Option<Renderers> {
    let paths = render::RendererPaths {
        kustomize: Some(binary_path("GITOPSD_TEST_KUSTOMIZE")?),
        helm: Some(binary_path("GITOPSD_TEST_HELM")?),
        scratch_dir: None,
    };
    let renderers = Renderers::resolve(&paths, std::env::var_os("PATH").as_deref())
        .await
        .expect("resolve renderers");
    Some(renderers)
}

macro_rules! require_renderers {
    () => {
        match real_renderers().await {
            Some(r) => r,
            None => return,
        }
    };
}

/// A work-tree repository built from tests/render/repo, read through a mirror.
struct Fixture {
    dir: tempfile::TempDir,
    mirror: Arc<Mirror>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/render/repo"),
            &work,
        );
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "fixture"]);
        let opts = MirrorOptions {
            url: work.to_string_lossy().into_owned(),
            branch: "main".into(),
            notes_ref: "refs/notes/gitopsd".into(),
            extra_fetch_refs: vec![],
            auth: GitAuth::default(),
        };
        let mirror = Mirror::open(&dir.path().join("mirror"), opts).expect("open mirror");
        Fixture {
            dir,
            mirror: Arc::new(mirror),
        }
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    fn write(&self, path: &str, text: &str) -> &Fixture {
        let p = self.work().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self
    }

    /// Commits everything and returns the mirror's tree at the new head.
    fn commit(&self, message: &str) -> Arc<dyn Tree> {
        git(&self.work(), &["add", "-A"]);
        git(
            &self.work(),
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        self.head()
    }

    fn head(&self) -> Arc<dyn Tree> {
        let head: Oid = self.mirror.fetch().expect("fetch");
        Arc::new((Arc::clone(&self.mirror), head))
    }
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .envs(support::git_isolated_env())
        .env_remove("GIT_SSL_CAINFO")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

async fn render(tree: &Arc<dyn Tree>, dir: &str, r: &Renderers) -> Rendered {
    render_with(tree, dir, r, &Limits::default())
        .await
        .unwrap_or_else(|e| panic!("render {dir}: {e}"))
}

async fn render_with(
    tree: &Arc<dyn Tree>,
    dir: &str,
    r: &Renderers,
    limits: &Limits,
) -> Result<Rendered, RenderFailure> {
    render::render_kustomize(Arc::clone(tree), dir, r, limits).await
}

fn object<'a>(r: &'a Rendered, kind: &str, name: &str) -> &'a Manifest {
    r.state
        .objects
        .values()
        .find(|m| m.key.kind == kind && m.key.name == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {:?}", keys(r)))
}

fn keys(r: &Rendered) -> Vec<String> {
    r.state.objects.keys().map(ObjectKey::to_string).collect()
}

fn no_origin_annotations(r: &Rendered) {
    for m in r.state.objects.values() {
        let text = m.body.to_string();
        assert!(!text.contains(render::ORIGIN_ANNOTATION), "{text}");
    }
}

/// The single content error of a failed render: (path, line, message).
fn content_error(result: Result<Rendered, RenderFailure>) -> (String, Option<u64>, String) {
    match result {
        Ok(r) => panic!("rendered: {:?}", keys(&r)),
        Err(RenderFailure::Invalid(errors)) => {
            assert_eq!(errors.len(), 1, "{errors:?}");
            let e = &errors[0];
            (e.path.clone(), e.line, e.message.clone())
        }
        Err(e) => panic!("not a content error: {e}"),
    }
}

#[tokio::test]
async fn overlay_with_patches_prefix_images_and_generated_configmap() {
    let _serial = serial().await;
    let renderers = require_renderers!();
    let fx = Fixture::new();
    let tree = fx.head();
    let cold = render(&tree, "overlays/dev", &renderers).await;
    let warm = render(&tree, "overlays/dev", &renderers).await;
    eprintln!(
        "render overlays/dev: cold {:?}, warm {:?}",
        cold.elapsed, warm.elapsed
    );
    let r = warm;
    assert!(r.renderer.starts_with("kustomize v5."), "{}", r.renderer);
    assert!(!r.renderer.contains("helm"), "{}", r.renderer);
    assert_eq!(r.kustomization, "overlays/dev/kustomization.yaml");
    assert_eq!(r.state.len(), 3, "{:?}", keys(&r));

    let deploy = object(&r, "Deployment", "dev-api");
    assert_eq!(
        deploy.body.value()["spec"]["replicas"],
        3,
        "strategic-merge patch"
    );
    assert_eq!(
        deploy.body.value()["metadata"]["labels"]["tier"],
        "backend",
        "JSON 6902 patch"
    );
    let container = &deploy.body.value()["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "example/api:2.0", "images:");
    assert_eq!(
        deploy.body.value()["metadata"]["annotations"]["team"],
        "payments"
    );
    assert_eq!(deploy.source.path, "base/deployment.yaml");
    assert_eq!(deploy.source.line, 1);

    let service = object(&r, "Service", "dev-api");
    assert_eq!(service.source.path, "base/service.yaml");
    assert_eq!(service.source.line, 2, "after the comment line");
    assert!(
        service.body.value()["metadata"]
            .get("annotations")
            .is_none()
    );

    let cm = r
        .state
        .objects
        .values()
        .find(|m| m.key.kind == "ConfigMap")
        .expect("generated ConfigMap");
    let suffix = cm
        .key
        .name
        .strip_prefix("dev-settings-")
        .expect("prefixed name");
    assert!(suffix.len() >= 8, "hash suffix: {}", cm.key.name);
    assert_eq!(
        cm.body.value()["data"]["settings.properties"],
        "log.level=debug\n"
    );
    assert_eq!(cm.source.path, "overlays/dev/kustomization.yaml");
    no_origin_annotations(&r);

    // A changed generator input gives a new hash-suffixed name.
    let tree = fx
        .write("overlays/dev/settings.properties", "log.level=info\n")
        .commit("settings");
    let r2 = render(&tree, "overlays/dev", &renderers).await;
    let cm2 = r2
        .state
        .objects
        .values()
        .find(|m| m.key.kind == "ConfigMap")
        .unwrap();
    assert_ne!(cm2.key.name, cm.key.name);
    assert!(cm2.key.name.starts_with("dev-settings-"));
}

#[tokio::test]
async fn local_chart_through_helm_charts_with_inline_values() {
    let _serial = serial().await;
    let renderers = require_renderers!();
    let fx = Fixture::new();
    let tree = fx.head();
    let cold = render(&tree, "overlays/web", &renderers).await;
    let r = render(&tree, "overlays/web", &renderers).await;
    eprintln!(
        "render overlays/web: cold {:?}, warm {:?}",
        cold.elapsed, r.elapsed
    );
    assert!(r.renderer.contains(" + helm v"), "{}", r.renderer);
    let d = object(&r, "Deployment", "shop-web");
    assert_eq!(d.body.value()["spec"]["replicas"], 4, "valuesInline");
    let image = &d.body.value()["spec"]["template"]["spec"]["containers"][0]["image"];
    assert_eq!(image, "nginx:1.27", "valuesFile");
    assert_eq!(d.source.path, "overlays/web/kustomization.yaml");
    no_origin_annotations(&r);
    let folders: Vec<&str> = r.inputs.folders().map(|(f, _)| f).collect();
    assert_eq!(folders, vec!["overlays/web"]);
}

#[tokio::test]
async fn inputs_change_with_base_but_not_elsewhere() {
    let _serial = serial().await;
    let renderers = require_renderers!();
    let fx = Fixture::new();
    let t1 = fx.head();
    let dev = render(&t1, "overlays/dev", &renderers).await;
    let prod = render(&t1, "overlays/prod", &renderers).await;
    let folders: Vec<&str> = dev.inputs.folders().map(|(f, _)| f).collect();
    assert_eq!(folders, vec!["base", "overlays/dev"]);
    assert!(dev.warnings.is_empty(), "{:?}", dev.warnings);
    assert!(
        prod.warnings
            .iter()
            .any(|w| w.contains("'commonLabels' is deprecated")),
        "{:?}",
        prod.warnings
    );
    assert_eq!(
        object(&prod, "Deployment", "prod-api").body.value()["metadata"]["labels"]["env"],
        "prod"
    );

    let t2 = fx
        .write(
            "plain/configmap.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: p2}\n",
        )
        .write("overlays/web/web-values.yaml", "image: nginx:1.28\n")
        .commit("elsewhere");
    let before = render::runs();
    let started = Instant::now();
    assert!(!dev.inputs.changed(t2.as_ref()).unwrap());
    eprintln!("no-op inputs check overlays/dev: {:?}", started.elapsed());
    assert!(!prod.inputs.changed(t2.as_ref()).unwrap());
    assert_eq!(render::runs(), before, "checking inputs runs nothing");

    let t3 = fx
        .write(
            "base/deployment.yaml",
            &std::fs::read_to_string(fx.work().join("base/deployment.yaml"))
                .unwrap()
                .replace("value: base", "value: changed"),
        )
        .commit("base");
    assert_eq!(
        dev.inputs.changed_folders(t3.as_ref()).unwrap(),
        vec!["base"]
    );
    assert!(prod.inputs.changed(t3.as_ref()).unwrap());
    for (dir, name) in [("overlays/dev", "dev-api"), ("overlays/prod", "prod-api")] {
        let r = render(&t3, dir, &renderers).await;
        let env = &object(&r, "Deployment", name).body.value()["spec"]["template"]["spec"]["containers"]
            [0]["env"][0];
        assert_eq!(env["value"], "changed", "{dir}");
    }
}

#[tokio::test]
async fn remote_base_is_refused_without_running_kustomize() {
    let _serial = serial().await;
    let fx = Fixture::new();
    let tree = fx
        .write(
            "overlays/remote/kustomization.yaml",
            "namePrefix: r-\nresources:\n- ../../base\n- https://github.com/kubernetes-sigs/kustomize//examples/helloWorld?ref=v5.0.0\n",
        )
        .commit("remote");
    let before = render::runs();
    let (path, line, message) = content_error(
        render_with(
            &tree,
            "overlays/remote",
            &fake_renderers(Path::new("/nonexistent")),
            &Limits::default(),
        )
        .await,
    );
    assert_eq!(render::runs(), before, "kustomize must not run");
    assert_eq!(path, "overlays/remote/kustomization.yaml");
    assert_eq!(line, Some(4));
    assert!(
        message.contains("remote bases and charts are refused"),
        "{message}"
    );
}

#[tokio::test]
async fn kustomization_yaml_error_names_file_and_line() {
    let _serial = serial().await;
    let fx = Fixture::new();
    let tree = fx
        .write(
            "overlays/broken/kustomization.yaml",
            "resources:\n- ../../base\nimages:\n  - name: x\n   newTag: y\n",
        )
        .commit("broken");
    let before = render::runs();
    let (path, line, message) = content_error(
        render_with(
            &tree,
            "overlays/broken",
            &fake_renderers(Path::new("/nonexistent")),
            &Limits::default(),
        )
        .await,
    );
    assert_eq!(render::runs(), before);
    assert_eq!(path, "overlays/broken/kustomization.yaml");
    assert_eq!(line, Some(5), "{message}");
    assert!(
        message.starts_with("invalid kustomization YAML"),
        "{message}"
    );
}

/// Renderers with `kustomize` at `path` (no version probe), isolated as the host allows.
fn fake_renderers(path: &Path) -> Renderers {
    Renderers {
        kustomize: Some(Binary {
            path: path.to_path_buf(),
            version: "v0.0.0-fake".into(),
        }),
        helm: None,
        isolation: Isolation::none(),
        scratch_dir: None,
    }
}

/// A fake `kustomize` shell script in `dir`.
fn fake_kustomize(dir: &Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("kustomize");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test]
async fn renderer_timeout_is_a_clear_error() {
    let _serial = serial().await;
    let fx = Fixture::new();
    let tree = fx.head();
    let bin = tempfile::tempdir().unwrap();
    let script = fake_kustomize(bin.path(), "echo 'working on it' >&2\nsleep 60");
    let mut renderers = fake_renderers(&script);
    renderers.isolation = Isolation::probe(std::env::var_os("PATH").as_deref()).await;
    let limits = Limits {
        timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let started = Instant::now();
    let before = render::runs();
    let (path, line, message) =
        content_error(render_with(&tree, "overlays/dev", &renderers, &limits).await);
    assert_eq!(render::runs(), before + 1);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        (path.as_str(), line),
        ("overlays/dev/kustomization.yaml", None)
    );
    assert!(
        message.starts_with("kustomize build did not finish within 1s and was stopped"),
        "{message}"
    );
    assert!(message.ends_with("working on it"), "{message}");
}

#[tokio::test]
async fn renderer_crash_is_a_clear_error() {
    let _serial = serial().await;
    let fx = Fixture::new();
    let tree = fx.head();
    let bin = tempfile::tempdir().unwrap();
    let script = fake_kustomize(
        bin.path(),
        "echo \"Error: accumulating resources: $PWD/overlays/dev/x.yaml: boom\" >&2\nexit 2",
    );
    let (path, _, message) = content_error(
        render_with(
            &tree,
            "overlays/dev",
            &fake_renderers(&script),
            &Limits::default(),
        )
        .await,
    );
    assert_eq!(path, "overlays/dev/kustomization.yaml");
    assert_eq!(
        message,
        "kustomize build failed (exit status: 2): Error: accumulating resources: overlays/dev/x.yaml: boom"
    );
}

#[tokio::test]
async fn renderer_sees_a_cleared_environment_and_only_the_closure() {
    let _serial = serial().await;
    let fx = Fixture::new();
    let tree = fx.head();
    let bin = tempfile::tempdir().unwrap();
    let script = fake_kustomize(
        bin.path(),
        "echo 'fake kustomize' >&2\n\
         echo \"args: $*\" >&2\n\
         echo \"vars: $(env | cut -d= -f1 | sort | tr '\\n' ' ')\" >&2\n\
         echo \"HOME=$HOME HELM_CONFIG_HOME=$HELM_CONFIG_HOME\" >&2\n\
         echo \"files: $(find . -type f | sort | tr '\\n' ' ')\" >&2\n\
         exit 1",
    );
    let (_, _, message) = content_error(
        render_with(
            &tree,
            "overlays/dev",
            &fake_renderers(&script),
            &Limits::default(),
        )
        .await,
    );
    let line = |prefix: &str| {
        message
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {message}"))
            .trim()
            .to_string()
    };
    assert_eq!(
        line("args: "),
        "build --load-restrictor LoadRestrictionsRootOnly overlays/dev"
    );
    let vars = line("vars: ");
    for v in vars.split(' ') {
        assert!(
            v.starts_with("HELM_")
                || v.starts_with("XDG_")
                || ["HOME", "PATH", "TMPDIR", "PWD", "SHLVL", "OLDPWD", "_"].contains(&v),
            "unexpected variable {v} in {vars}"
        );
    }
    assert_eq!(
        line("HOME="),
        "(sandbox)/home HELM_CONFIG_HOME=(sandbox)/home/.config/helm"
    );
    assert_eq!(
        line("files: "),
        "./base/deployment.yaml ./base/kustomization.yaml ./base/service.yaml \
         ./overlays/dev/kustomization.yaml ./overlays/dev/labels.json6902.yaml \
         ./overlays/dev/replicas.yaml ./overlays/dev/settings.properties"
    );
}

#[tokio::test]
async fn output_and_binary_limits() {
    let _serial = serial().await;
    let fx = Fixture::new();
    let tree = fx.head();
    let renderers = Renderers::default();
    match render_with(&tree, "overlays/dev", &renderers, &Limits::default()).await {
        Err(RenderFailure::Host(e)) => {
            let text = e.to_string();
            assert!(
                text.starts_with("kustomize is needed to render overlays/dev/kustomization.yaml"),
                "{text}"
            );
        }
        other => panic!(
            "expected a missing-binary error, got {:?}",
            other.map(|r| keys(&r))
        ),
    }
    let Some(real) = real_renderers().await else {
        return;
    };
    let limits = Limits {
        content: gitopsd::manifest::Limits {
            environment_bytes: 100,
            ..gitopsd::manifest::Limits::default()
        },
        ..Limits::default()
    };
    let (_, _, message) = content_error(render_with(&tree, "overlays/dev", &real, &limits).await);
    assert!(
        message.starts_with("kustomize build wrote more than 100 bytes"),
        "{message}"
    );
    let limits = Limits {
        content: gitopsd::manifest::Limits {
            objects: 2,
            ..gitopsd::manifest::Limits::default()
        },
        ..Limits::default()
    };
    let (_, _, message) = content_error(render_with(&tree, "overlays/dev", &real, &limits).await);
    assert!(
        message.contains("more than the limit of 2 objects"),
        "{message}"
    );
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next().map(|uid| uid == "0"))
        .unwrap_or(false)
}

#[tokio::test]
async fn renderer_has_no_network_when_isolated() {
    let _serial = serial().await;
    let isolation = Isolation::probe(std::env::var_os("PATH").as_deref()).await;
    if !isolation.network_isolated() {
        // Documented fallback (see render::sandbox); as root, namespaces must work.
        assert!(
            !running_as_root(),
            "running as root, but no network namespace"
        );
        eprintln!("not root and no user namespaces: renderer network not isolated here");
        return;
    }
    let fx = Fixture::new();
    let tree = fx.head();
    let bin = tempfile::tempdir().unwrap();
    // Interfaces as the renderer sees them (/proc/net is per network namespace).
    let script = fake_kustomize(
        bin.path(),
        "echo 'fake kustomize' >&2\n\
         echo \"interfaces: $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ' ')\" >&2\n\
         exit 1",
    );
    let mut renderers = fake_renderers(&script);
    renderers.isolation = isolation;
    let (_, _, message) =
        content_error(render_with(&tree, "overlays/dev", &renderers, &Limits::default()).await);
    let interfaces = message
        .lines()
        .find_map(|l| l.strip_prefix("interfaces: "))
        .unwrap_or_else(|| panic!("{message}"));
    assert_eq!(interfaces.trim(), "lo", "{message}");
}
