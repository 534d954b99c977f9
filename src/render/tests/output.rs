use crate::render::output::{Build, Origin, into_state, origin_file, take_origin};
use serde_json::json;

#[test]
fn origin_is_taken_and_stripped() {
    let mut body = json!({
        "metadata": {
            "name": "x",
            "annotations": { "config.kubernetes.io/origin": "path: ../../base/deployment.yaml\n" }
        }
    });
    let origin = take_origin(&mut body).unwrap();
    assert_eq!(origin.path.as_deref(), Some("../../base/deployment.yaml"));
    assert_eq!(body, json!({ "metadata": { "name": "x" } }));
    let mut body = json!({
        "metadata": {
            "name": "x",
            "annotations": {
                "keep": "me",
                "config.kubernetes.io/origin": "configuredIn: kustomization.yaml\nconfiguredBy:\n  apiVersion: builtin\n  kind: HelmChartInflationGenerator\n"
            }
        }
    });
    let origin = take_origin(&mut body).unwrap();
    assert_eq!(origin.configured_in.as_deref(), Some("kustomization.yaml"));
    assert_eq!(body["metadata"]["annotations"], json!({ "keep": "me" }));
    assert!(take_origin(&mut json!({"metadata": {"name": "y"}})).is_none());
}

#[test]
fn origins_map_to_repository_paths() {
    let o = |path: Option<&str>, configured_in: Option<&str>| Origin {
        path: path.map(Into::into),
        configured_in: configured_in.map(Into::into),
    };
    let dir = "overlays/dev";
    assert_eq!(
        origin_file(&o(Some("../../base/deployment.yaml"), None), dir).as_deref(),
        Some("base/deployment.yaml")
    );
    assert_eq!(
        origin_file(&o(None, Some("kustomization.yaml")), dir).as_deref(),
        Some("overlays/dev/kustomization.yaml")
    );
    assert_eq!(
        origin_file(&o(Some("cm.yaml"), None), "").as_deref(),
        Some("cm.yaml")
    );
    assert_eq!(origin_file(&o(Some("../../../x.yaml"), None), dir), None);
    assert_eq!(origin_file(&o(None, None), dir), None);
}

#[test]
fn output_becomes_state_with_sources_and_lines() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("base")).unwrap();
    std::fs::write(
        root.path().join("base/all.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: api\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\n",
    )
    .unwrap();
    let out = "\
apiVersion: v1
kind: ConfigMap
metadata:
  annotations:
    config.kubernetes.io/origin: |
      configuredIn: kustomization.yaml
      configuredBy:
        apiVersion: builtin
        kind: ConfigMapGenerator
  name: dev-settings-ttchg99576
---
apiVersion: apps/v1
kind: Deployment
metadata:
  annotations:
    config.kubernetes.io/origin: |
      path: ../../base/all.yaml
  name: dev-api
";
    let build = Build {
        dir: "overlays/dev",
        top: "overlays/dev/kustomization.yaml",
        root: root.path(),
        limits: crate::manifest::Limits::default(),
    };
    let state = into_state(out.as_bytes(), &build).unwrap();
    let sources: Vec<(String, String, u64, usize)> = state
        .objects
        .values()
        .map(|m| {
            assert!(
                m.body.value()["metadata"].get("annotations").is_none(),
                "{}",
                m.body
            );
            (
                m.key.name.clone(),
                m.source.path.clone(),
                m.source.line,
                m.source.document,
            )
        })
        .collect();
    assert_eq!(
        sources,
        vec![
            (
                "dev-settings-ttchg99576".into(),
                "overlays/dev/kustomization.yaml".into(),
                1,
                0
            ),
            ("dev-api".into(), "base/all.yaml".into(), 6, 1),
        ]
    );
    assert_eq!(state.files.len(), 2);
    let build = Build {
        limits: crate::manifest::Limits {
            objects: 1,
            ..crate::manifest::Limits::default()
        },
        ..build
    };
    let errors = into_state(out.as_bytes(), &build).unwrap_err();
    assert!(
        errors[0]
            .message
            .contains("more than the limit of 1 objects"),
        "{errors:?}"
    );
}
