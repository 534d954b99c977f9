use super::MemTree;
use crate::render::closure::{ClosureError, collect, detect};
use crate::render::tree::Tree;

const BASE_K: &str = "resources:\n- deployment.yaml\n";
const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\n";

fn repo() -> MemTree {
    MemTree::new(&[
        ("base/kustomization.yaml", BASE_K),
        ("base/deployment.yaml", DEPLOY),
        ("components/tls/kustomization.yaml", "kind: Component\n"),
        (
            "overlays/dev/kustomization.yaml",
            "resources:\n- ../../base\ncomponents:\n- ../../components/tls\npatches:\n- path: replicas.yaml\n",
        ),
        ("overlays/dev/replicas.yaml", DEPLOY),
        (
            "overlays/prod/kustomization.yaml",
            "resources:\n- ../../base\n",
        ),
        (
            "plain/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
        ),
        ("unrelated/file.txt", "x"),
    ])
}

fn invalid(tree: &MemTree, dir: &str) -> Vec<(String, Option<u64>, String)> {
    match collect(tree, dir) {
        Ok(c) => panic!("accepted: {:?}", c.files.keys().collect::<Vec<_>>()),
        Err(ClosureError::Tree(e)) => panic!("{e}"),
        Err(ClosureError::Invalid(errors)) => errors
            .into_iter()
            .map(|e| (e.path, e.line, e.message))
            .collect(),
    }
}

#[test]
fn detects_kustomize_environments() {
    let t = repo().with("alt/Kustomization", "resources: []\n");
    assert_eq!(
        detect(&t, "overlays/dev").unwrap().as_deref(),
        Some("overlays/dev/kustomization.yaml")
    );
    assert_eq!(
        detect(&t, "./alt/").unwrap().as_deref(),
        Some("alt/Kustomization")
    );
    assert_eq!(detect(&t, "plain").unwrap(), None);
    // Only directly inside the folder counts.
    assert_eq!(detect(&t, "overlays").unwrap(), None);
}

#[test]
fn closure_records_folders_and_files() {
    let t = repo();
    let c = collect(&t, "overlays/dev").unwrap();
    assert_eq!(c.top, "overlays/dev/kustomization.yaml");
    let folders: Vec<&str> = c.inputs.folders().map(|(d, _)| d).collect();
    assert_eq!(folders, vec!["base", "components/tls", "overlays/dev"]);
    let files: Vec<&str> = c.files.keys().map(String::as_str).collect();
    assert_eq!(
        files,
        vec![
            "base/deployment.yaml",
            "base/kustomization.yaml",
            "components/tls/kustomization.yaml",
            "overlays/dev/kustomization.yaml",
            "overlays/dev/replicas.yaml",
        ]
    );
    assert!(!c.uses_helm);
}

#[test]
fn inputs_change_only_with_their_folders() {
    let t = repo();
    let dev = collect(&t, "overlays/dev").unwrap().inputs;
    let prod = collect(&t, "overlays/prod").unwrap().inputs;
    let elsewhere = t
        .clone()
        .with("unrelated/file.txt", "changed")
        .with("overlays/prod/extra.yaml", "x");
    assert!(!dev.changed(&elsewhere).unwrap());
    let in_base = t.clone().with("base/deployment.yaml", "changed");
    assert!(dev.changed(&in_base).unwrap());
    assert!(prod.changed(&in_base).unwrap());
    assert_eq!(dev.changed_folders(&in_base).unwrap(), vec!["base"]);
    let in_component = t.clone().with("components/tls/patch.yaml", "x");
    assert!(dev.changed(&in_component).unwrap());
    assert!(!prod.changed(&in_component).unwrap());
    assert!(!dev.changed(&t).unwrap());
}

#[test]
fn missing_references_are_refused_with_their_line() {
    let t = repo().with(
        "overlays/bad/kustomization.yaml",
        "resources:\n- ../../nothere\n- gone.yaml\n- example.com/org/base\npatches:\n- path: missing.yaml\n- path: ../dev/replicas.yaml\nhelmCharts:\n- name: web\n",
    );
    let errors = invalid(&t, "overlays/bad");
    let file = "overlays/bad/kustomization.yaml";
    let at: Vec<(&str, Option<u64>)> = errors.iter().map(|e| (e.0.as_str(), e.1)).collect();
    assert_eq!(
        at,
        vec![
            (file, Some(2)),
            (file, Some(3)),
            (file, Some(4)),
            (file, Some(6)),
            (file, Some(7)),
            (file, Some(9)),
        ],
        "{errors:?}"
    );
    assert!(
        errors[2].2.contains("looks like a remote base"),
        "{}",
        errors[2].2
    );
    assert!(errors[4].2.contains("outside the kustomization's folder"));
    assert!(
        errors[5]
            .2
            .contains("chart folder overlays/bad/charts/web not found")
    );
}

#[test]
fn a_folder_without_kustomization_and_symlinks_are_refused() {
    let t = repo()
        .with(
            "overlays/x/kustomization.yaml",
            "resources:\n- ../../plain\n",
        )
        .with_symlink("base/link.yaml", "/etc/passwd");
    let errors = invalid(&t, "overlays/x");
    assert!(
        errors.iter().any(|e| e.0 == "overlays/x/kustomization.yaml"
            && e.1 == Some(2)
            && e.2.contains("no kustomization file")),
        "{errors:?}"
    );
    let errors = invalid(&t, "overlays/prod");
    assert!(
        errors
            .iter()
            .any(|e| e.0 == "base/link.yaml" && e.2.contains("symlinks")),
        "{errors:?}"
    );
}

#[test]
fn cycles_terminate() {
    let t = MemTree::new(&[
        ("a/kustomization.yaml", "resources: [../b]\n"),
        ("b/kustomization.yaml", "resources: [../a]\n"),
    ]);
    let c = collect(&t, "a").unwrap();
    assert_eq!(c.inputs.folders().count(), 2);
    assert!(t.tree_id("a").unwrap().is_some());
}

#[test]
fn a_chart_home_elsewhere_in_the_repository_is_exported_and_an_input() {
    let t = repo()
        .with(
            "charts/web/Chart.yaml",
            "apiVersion: v2\nname: web\nversion: 0.1.0\n",
        )
        .with("charts/web/templates/cm.yaml", "kind: ConfigMap\n")
        .with(
            "overlays/chart/kustomization.yaml",
            "helmGlobals:\n  chartHome: ../../charts\nhelmCharts:\n- name: web\n",
        );
    let c = collect(&t, "overlays/chart").unwrap();
    assert!(c.uses_helm);
    assert!(c.files.contains_key("charts/web/templates/cm.yaml"));
    let inputs: Vec<&str> = c.inputs.folders().map(|(d, _)| d).collect();
    assert_eq!(inputs, vec!["charts/web", "overlays/chart"]);
    let errors = invalid(
        &t.with(
            "overlays/nochart/kustomization.yaml",
            "helmGlobals:\n  chartHome: ../../charts\nhelmCharts:\n- name: api\n",
        ),
        "overlays/nochart",
    );
    assert!(
        errors[0].2.contains("chart folder charts/api not found"),
        "{errors:?}"
    );
}
