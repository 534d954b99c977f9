//! Issue 13: Kustomize environments through the `gitopsd` binary against the testbed: an overlay
//! (JSON6902 and strategic-merge patches, `namePrefix`, `images:`, a hash-suffixed generated
//! ConfigMap whose old version is pruned), a local Helm chart, a `base/` change reaching every
//! overlay while a pass on an unrelated commit runs no renderer, and the refusals: a remote base
//! (before anything runs), a renderer crash and timeout, a kustomization YAML error (file and line).
//!
//! Each test has its own repository and namespace(s). The renderers are the testbed's kustomize
//! and helm (`renderers:` in the harness's host config), except where a test swaps in a failing one.

mod support;

use std::time::Duration;

use gitopsd::status::{Outcome, Record};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use support::gitopsd::{Env, Gitopsd, Transport, WorkRepo, json_lines, wait_daemon};

// ------------------------------------------------------------------------------------------------
// fixtures

fn base_files(repo: &WorkRepo) {
    repo.write(
        "base/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - web.yaml\n  - settings.yaml\n",
    );
    repo.write(
        "base/web.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels:\n    app: web\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n        - name: web\n          image: registry.example.com/web:1.0\n",
    );
    repo.write(
        "base/settings.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  colour: blue\n",
    );
}

/// An overlay of `base/` into `ns`: every transformer the issue names.
fn overlay(ns: &str, mode: &str) -> String {
    format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: {ns}
namePrefix: app-
resources:
  - ../../base
images:
  - name: registry.example.com/web
    newTag: \"2.0\"
configMapGenerator:
  - name: generated
    literals:
      - mode={mode}
patches:
  - path: replicas.yaml
  - target: {{ kind: Deployment, name: web }}
    patch: |-
      - {{ op: add, path: /metadata/labels/tier, value: frontend }}
"
    )
}

const REPLICAS_PATCH: &str =
    "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n";

fn kustomize_env(prefix: &str, path: &str, ns: &str) -> Env {
    Env::new(prefix, path, ns)
}

async fn configmaps(client: &kube::Client, ns: &str) -> Vec<ConfigMap> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items
}

fn generated(cms: &[ConfigMap]) -> Vec<(String, String)> {
    cms.iter()
        .filter_map(|c| {
            let name = c.metadata.name.clone()?;
            name.starts_with("app-generated-").then(|| {
                let mode = c
                    .data
                    .as_ref()
                    .and_then(|d| d.get("mode"))
                    .cloned()
                    .unwrap_or_default();
                (name, mode)
            })
        })
        .collect()
}

fn renders(text: &str) -> usize {
    json_lines(text)
        .iter()
        .filter(|e| e["message"] == "rendered with kustomize")
        .count()
}

/// The only error of a rejected record (`at`, `reason`).
fn rejection(record: &Record) -> (String, String) {
    assert_eq!(record.outcome, Outcome::Rejected, "{record:?}");
    assert!(!record.errors.is_empty(), "{record:?}");
    let e = &record.errors[0];
    (e.at.clone().unwrap_or_default(), e.reason.clone())
}

// ------------------------------------------------------------------------------------------------
// tests

#[tokio::test(flavor = "multi_thread")]
async fn an_overlay_is_applied_and_its_old_generated_configmap_pruned() {
    let tb = require_testbed!();
    let client = tb.kube_client().await;
    let ns = tb.namespace(&client, "kz-overlay").await;
    let repo = WorkRepo::new(tb, "kz-overlay");
    base_files(&repo);
    repo.write("overlays/app/kustomization.yaml", &overlay(&ns, "one"));
    repo.write("overlays/app/replicas.yaml", REPLICAS_PATCH);
    let c1 = repo.commit_push("base and an overlay");
    let env = kustomize_env("kz-overlay", "overlays/app", &ns);
    let g = Gitopsd::new(
        tb,
        &repo.remote,
        Transport::Https,
        std::slice::from_ref(&env),
    );

    g.once(None).assert_success("first apply");
    let r = repo.expect_record(&c1, &env.name);
    assert_eq!(r.outcome, Outcome::Healthy, "{r:?}");
    assert!(
        r.renderer
            .as_deref()
            .is_some_and(|v| v.starts_with("kustomize v")),
        "the note names the renderer: {r:?}"
    );
    let d = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("app-web")
        .await
        .expect("namePrefix applied");
    let spec = d.spec.clone().unwrap();
    assert_eq!(spec.replicas, Some(2), "strategic-merge patch");
    assert_eq!(
        d.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("tier"))
            .map(String::as_str),
        Some("frontend"),
        "JSON6902 patch"
    );
    let image = spec.template.spec.unwrap().containers[0].image.clone();
    assert_eq!(
        image.as_deref(),
        Some("registry.example.com/web:2.0"),
        "images:"
    );
    let annotations = d.metadata.annotations.clone().unwrap_or_default();
    assert!(
        !annotations.contains_key("config.kubernetes.io/origin"),
        "the origin annotation is stripped before applying: {annotations:?}"
    );
    let cms = configmaps(&client, &ns).await;
    assert!(
        cms.iter()
            .any(|c| c.metadata.name.as_deref() == Some("app-settings"))
    );
    let first = generated(&cms);
    assert_eq!(first.len(), 1, "one generated ConfigMap: {first:?}");
    assert_eq!(first[0].1, "one");
    assert_ne!(first[0].0, "app-generated", "hash-suffixed: {first:?}");

    repo.write("overlays/app/kustomization.yaml", &overlay(&ns, "two"));
    let c2 = repo.commit_push("mode two");
    g.once(None).assert_success("second apply");
    let r = repo.expect_record(&c2, &env.name);
    assert_eq!(r.outcome, Outcome::Healthy, "{r:?}");
    assert_eq!(
        (r.counts.created, r.counts.deleted),
        (1, 1),
        "the new generated ConfigMap replaces the old one: {r:?}"
    );
    let second = generated(&configmaps(&client, &ns).await);
    assert_eq!(second.len(), 1, "the old one is pruned: {second:?}");
    assert_eq!(second[0].1, "two");
    assert_ne!(second[0].0, first[0].0, "a new hash: {second:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_helm_chart_renders_with_inline_values() {
    // The chart lives outside the overlay, as in example-repo: `valuesMerge: replace` makes
    // kustomize hand the values to helm instead of reading the chart's values.yaml itself (its
    // load restrictor forbids that outside the overlay); helm applies the chart's defaults.
    let tb = require_testbed!();
    let client = tb.kube_client().await;
    let ns = tb.namespace(&client, "kz-helm").await;
    let repo = WorkRepo::new(tb, "kz-helm");
    repo.write(
        "charts/hello/Chart.yaml",
        "apiVersion: v2\nname: hello\nversion: 0.1.0\n",
    );
    repo.write("charts/hello/values.yaml", "greeting: hello\n");
    repo.write(
        "charts/hello/templates/greeting.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-greeting\ndata:\n  greeting: {{ .Values.greeting | quote }}\n",
    );
    repo.write(
        "overlays/app/kustomization.yaml",
        &format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: {ns}\nhelmGlobals:\n  chartHome: ../../charts\nhelmCharts:\n  - name: hello\n    releaseName: hi\n    valuesMerge: replace\n    valuesInline:\n      greeting: bonjour\n"
        ),
    );
    let c1 = repo.commit_push("a local chart");
    let env = kustomize_env("kz-helm", "overlays/app", &ns);
    let g = Gitopsd::new(
        tb,
        &repo.remote,
        Transport::Https,
        std::slice::from_ref(&env),
    );
    g.once(None).assert_success("apply the chart");
    let r = repo.expect_record(&c1, &env.name);
    assert_eq!(r.outcome, Outcome::Healthy, "{r:?}");
    assert!(
        r.renderer
            .as_deref()
            .is_some_and(|v| v.contains("+ helm v")),
        "the note names helm too: {r:?}"
    );
    let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get("hi-greeting")
        .await
        .expect("the chart's ConfigMap");
    assert_eq!(
        cm.data.unwrap().get("greeting").map(String::as_str),
        Some("bonjour")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_base_change_reaches_every_overlay_and_an_unrelated_commit_runs_no_renderer() {
    let tb = require_testbed!();
    let client = tb.kube_client().await;
    let ns_a = tb.namespace(&client, "kz-base-a").await;
    let ns_b = tb.namespace(&client, "kz-base-b").await;
    let repo = WorkRepo::new(tb, "kz-base");
    base_files(&repo);
    for (dir, ns) in [("a", &ns_a), ("b", &ns_b)] {
        repo.write(
            &format!("overlays/{dir}/kustomization.yaml"),
            &overlay(ns, dir),
        );
        repo.write(&format!("overlays/{dir}/replicas.yaml"), REPLICAS_PATCH);
    }
    repo.write("README.md", "config\n");
    let c1 = repo.commit_push("two overlays of one base");
    let a = kustomize_env("kz-base-a", "overlays/a", &ns_a);
    let b = kustomize_env("kz-base-b", "overlays/b", &ns_b);
    let g = Gitopsd::new(tb, &repo.remote, Transport::Https, &[a.clone(), b.clone()]);
    let mut daemon = g.spawn_run();
    let healthy = |commit: &str, env: &Env| {
        repo.record(commit, &env.name)
            .is_some_and(|r| r.outcome == Outcome::Healthy)
    };
    let both = |commit: String| {
        let (a, b) = (a.clone(), b.clone());
        move || std::future::ready(healthy(&commit, &a) && healthy(&commit, &b))
    };
    wait_daemon(
        &mut daemon,
        "both overlays healthy at c1",
        Duration::from_secs(120),
        both(c1.clone()),
    )
    .await;
    assert_eq!(renders(&daemon.log_text()), 2, "one render per environment");

    repo.write("README.md", "config, documented\n");
    let c2 = repo.commit_push("docs only");
    wait_daemon(
        &mut daemon,
        "both environments at c2",
        Duration::from_secs(60),
        both(c2.clone()),
    )
    .await;
    assert_eq!(
        renders(&daemon.log_text()),
        2,
        "no folder a build read changed: kustomize did not run\n{}",
        daemon.log_tail()
    );

    repo.write(
        "base/settings.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  colour: green\n",
    );
    let c3 = repo.commit_push("base: green");
    wait_daemon(
        &mut daemon,
        "both environments at c3",
        Duration::from_secs(120),
        both(c3.clone()),
    )
    .await;
    assert_eq!(
        renders(&daemon.log_text()),
        4,
        "base/ changed: both re-rendered"
    );
    for ns in [&ns_a, &ns_b] {
        let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
            .get("app-settings")
            .await
            .unwrap();
        assert_eq!(
            cm.data.unwrap().get("colour").map(String::as_str),
            Some("green"),
            "the base change reached {ns}"
        );
    }
    daemon.terminate(Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_base_is_refused_before_kustomize_runs() {
    let tb = require_testbed!();
    let client = tb.kube_client().await;
    let ns = tb.namespace(&client, "kz-remote").await;
    let repo = WorkRepo::new(tb, "kz-remote");
    repo.write(
        "overlays/app/kustomization.yaml",
        &format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: {ns}\nresources:\n  - local.yaml\n  - https://github.com/example/base?ref=v1\n"
        ),
    );
    repo.write(
        "overlays/app/local.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: local\ndata:\n  a: b\n",
    );
    let c1 = repo.commit_push("a remote base");
    let env = kustomize_env("kz-remote", "overlays/app", &ns);
    let g = Gitopsd::new(
        tb,
        &repo.remote,
        Transport::Https,
        std::slice::from_ref(&env),
    );
    let out = g.once(None);
    out.assert_failure("a rejected commit fails `once`");
    assert_eq!(renders(&out.stderr), 0, "kustomize never ran:\n{out}");
    let (at, reason) = rejection(&repo.expect_record(&c1, &env.name));
    assert_eq!(at, "overlays/app/kustomization.yaml:6", "{reason}");
    assert!(reason.contains("remote"), "{reason}");
    assert!(
        Api::<ConfigMap>::namespaced(client, &ns)
            .get_opt("local")
            .await
            .unwrap()
            .is_none(),
        "nothing of the commit was applied"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kustomization_yaml_error_names_file_and_line() {
    let tb = require_testbed!();
    let client = tb.kube_client().await;
    let ns = tb.namespace(&client, "kz-yaml").await;
    let repo = WorkRepo::new(tb, "kz-yaml");
    repo.write(
        "overlays/app/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - a.yaml\nnamePrefix: [unclosed\n",
    );
    repo.write(
        "overlays/app/a.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n",
    );
    let c1 = repo.commit_push("a broken kustomization");
    let env = kustomize_env("kz-yaml", "overlays/app", &ns);
    let g = Gitopsd::new(
        tb,
        &repo.remote,
        Transport::Https,
        std::slice::from_ref(&env),
    );
    g.once(None).assert_failure("rejected");
    let (at, reason) = rejection(&repo.expect_record(&c1, &env.name));
    assert_eq!(at, "overlays/app/kustomization.yaml:5", "{reason}");
}

/// A stand-in kustomize that reports a version and then fails its build as `build` says.
fn fake_kustomize(dir: &std::path::Path, build: &str) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("kustomize");
    std::fs::write(
        &path,
        format!("#!/bin/sh\nif [ \"$1\" = version ]; then echo v5.8.2; exit 0; fi\n{build}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renderer_crash_and_a_timeout_are_rejected_with_a_clear_note() {
    let tb = require_testbed!();
    let client = tb.kube_client().await;
    let ns = tb.namespace(&client, "kz-fail").await;
    let repo = WorkRepo::new(tb, "kz-fail");
    repo.write(
        "overlays/app/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - a.yaml\n",
    );
    repo.write(
        "overlays/app/a.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: v\n",
    );
    let env = kustomize_env("kz-fail", "overlays/app", &ns);
    let g = Gitopsd::new(
        tb,
        &repo.remote,
        Transport::Https,
        std::slice::from_ref(&env),
    );
    let bin = tempfile::tempdir().unwrap();
    let real = format!("  kustomize: {}\n", tb.env("GITOPSD_TEST_KUSTOMIZE"));
    let with = |fake: &str, extra: &str| {
        let text = g.config_text();
        let line = text
            .lines()
            .find(|l| l.starts_with("  kustomize: "))
            .unwrap();
        let text = text.replacen(
            &format!("{line}\n"),
            &format!("  kustomize: {fake}\n{extra}"),
            1,
        );
        std::fs::write(&g.config, text).unwrap();
    };
    assert!(g.config_text().contains(&real), "{}", g.config_text());

    let crash = fake_kustomize(
        bin.path(),
        "echo 'Error: accumulating resources: boom' >&2; exit 2",
    );
    with(&crash, "");
    let c1 = repo.commit_push("crash");
    g.once(None).assert_failure("a crashed render is rejected");
    let (at, reason) = rejection(&repo.expect_record(&c1, &env.name));
    assert_eq!(at, "overlays/app/kustomization.yaml");
    assert!(
        reason.contains("kustomize build failed") && reason.contains("boom"),
        "the renderer's message: {reason}"
    );

    let slow = bin.path().join("slow");
    std::fs::create_dir(&slow).unwrap();
    let hang = fake_kustomize(&slow, "sleep 60");
    with(&hang, "  timeout: 1s\n");
    repo.write(
        "overlays/app/a.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: w\n",
    );
    let c2 = repo.commit_push("slow");
    let out = g.once(None);
    out.assert_failure("a render past its timeout is rejected");
    let (_, reason) = rejection(&repo.expect_record(&c2, &env.name));
    assert!(reason.contains("did not finish within 1s"), "{reason}");
    assert!(
        Api::<ConfigMap>::namespaced(client, &ns)
            .get_opt("a")
            .await
            .unwrap()
            .is_none(),
        "nothing was applied"
    );
}
