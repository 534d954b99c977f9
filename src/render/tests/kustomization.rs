use crate::render::kustomization::{RefKind, parse};

fn refs(path: &str, text: &str) -> Vec<(String, &'static str, u64, RefKind)> {
    parse(path, text)
        .unwrap_or_else(|e| panic!("{e:?}"))
        .refs
        .into_iter()
        .map(|r| (r.path, r.field, r.line, r.kind))
        .collect()
}

/// A kustomization using every field that names a path.
const FULL: &str = "\
resources:
- ../../base
- extra.yaml
components: [../../components/tls]
patches:
- path: replicas.yaml
- patch: |-
    - op: remove
      path: /spec
patchesStrategicMerge:
- sm.yaml
patchesJson6902:
- target: {kind: Deployment, name: api}
  path: json.yaml
configMapGenerator:
- name: settings
  files: [app.properties, key=conf/other.txt]
  envs: [vars.env]
secretGenerator:
- name: creds
  env: secret.env
replacements:
- path: repl.yaml
crds: [crd.yaml]
openapi:
  path: schema.json
helmGlobals:
  chartHome: vendor/charts
helmCharts:
- name: web
  valuesFile: web-values.yaml
  additionalValuesFiles: [more.yaml]
  valuesInline: {a: 1}
";

#[test]
fn follows_every_path_field_with_lines() {
    let text = FULL;
    let d = "overlays/dev";
    let got = refs(&format!("{d}/kustomization.yaml"), text);
    let want: Vec<(String, &str, u64, RefKind)> = vec![
        ("base".into(), "resources", 2, RefKind::Resource),
        (format!("{d}/extra.yaml"), "resources", 3, RefKind::Resource),
        ("components/tls".into(), "components", 4, RefKind::Component),
        (format!("{d}/crd.yaml"), "crds", 24, RefKind::File),
        (
            format!("{d}/sm.yaml"),
            "patchesStrategicMerge",
            11,
            RefKind::File,
        ),
        (format!("{d}/replicas.yaml"), "patches", 6, RefKind::File),
        (
            format!("{d}/json.yaml"),
            "patchesJson6902",
            14,
            RefKind::File,
        ),
        (format!("{d}/repl.yaml"), "replacements", 23, RefKind::File),
        (format!("{d}/schema.json"), "openapi", 26, RefKind::File),
        (
            format!("{d}/app.properties"),
            "configMapGenerator",
            17,
            RefKind::File,
        ),
        (
            format!("{d}/conf/other.txt"),
            "configMapGenerator",
            17,
            RefKind::File,
        ),
        (
            format!("{d}/vars.env"),
            "configMapGenerator",
            18,
            RefKind::File,
        ),
        (
            format!("{d}/secret.env"),
            "secretGenerator",
            21,
            RefKind::File,
        ),
        (
            format!("{d}/vendor/charts/web"),
            "helmCharts",
            30,
            RefKind::Chart,
        ),
        (
            format!("{d}/web-values.yaml"),
            "helmCharts",
            31,
            RefKind::File,
        ),
        (format!("{d}/more.yaml"), "helmCharts", 32, RefKind::File),
    ];
    let mut got_sorted = got;
    got_sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want_sorted = want.clone();
    want_sorted.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got_sorted, want_sorted);
    assert_eq!(parse("a/b/k.yaml", text).unwrap().helm_charts, 1);
}

#[test]
fn default_chart_home_and_inline_entries() {
    let got = refs(
        "env/kustomization.yaml",
        "helmCharts:\n- name: web\n  releaseName: w\ngenerators:\n- gen.yaml\n- apiVersion: builtin\n  kind: ConfigMapGenerator\n",
    );
    assert_eq!(
        got,
        vec![
            (
                "env/gen.yaml".to_string(),
                "generators",
                5,
                RefKind::Resource
            ),
            (
                "env/charts/web".to_string(),
                "helmCharts",
                2,
                RefKind::Chart
            ),
        ]
    );
    // null lists and an empty file are fine
    assert!(refs("k.yaml", "resources:\npatches:\n").is_empty());
    assert!(refs("k.yaml", "").is_empty());
}

fn refused(text: &str) -> Vec<(u64, String)> {
    match parse("overlays/dev/kustomization.yaml", text) {
        Ok(k) => panic!("accepted: {:?}", k.refs),
        Err(errors) => errors
            .into_iter()
            .map(|e| {
                assert_eq!(e.path, "overlays/dev/kustomization.yaml");
                (e.line.unwrap(), e.message)
            })
            .collect(),
    }
}

#[test]
fn remote_bases_and_charts_are_refused_with_their_line() {
    let errors = refused(
        "\
resources:
- ../../base
- https://github.com/org/repo//deploy?ref=v1
- github.com/org/repo/base
components:
- git::https://example.com/comp.git
helmCharts:
- name: web
  repo: https://charts.example.com
- name: oci://registry.example.com/charts/api
patches:
- path: https://example.com/patch.yaml
",
    );
    let lines: Vec<u64> = errors.iter().map(|e| e.0).collect();
    assert_eq!(lines, vec![3, 4, 6, 12, 9, 10], "{errors:?}");
    assert!(errors[0].1.contains("is a URL"), "{}", errors[0].1);
    assert!(errors[0].1.contains("remote bases and charts are refused"));
    assert!(errors[1].1.contains("github.com/org/repo/base"));
    assert!(
        errors[4].1.contains("remote charts are refused"),
        "{}",
        errors[4].1
    );
    assert!(errors[5].1.contains("OCI"), "{}", errors[5].1);
}

#[test]
fn absolute_and_escaping_paths_are_refused() {
    let errors =
        refused("resources:\n- /etc/passwd\n- ../../../outside\npatches:\n- path: ~/x.yaml\n");
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert_eq!(errors[0].0, 2);
    assert!(errors[0].1.contains("absolute path"));
    assert_eq!(errors[1].0, 3);
    assert!(errors[1].1.contains("leaves the repository"));
    assert_eq!(errors[2].0, 5);
    let errors = refused("helmGlobals:\n  configHome: ../../helm-config\n");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, 2);
    assert!(errors[0].1.contains("outside the kustomization's folder"));
    assert_eq!(
        refused("helmGlobals:\n  configHome: /root/.config/helm\n")[0].0,
        2
    );
    let errors =
        refused("helmChartInflationGenerator:\n- chartName: x\n  chartRepoUrl: https://x\n");
    assert_eq!(errors[0].0, 2);
}

#[test]
fn yaml_errors_name_file_and_line() {
    let errors = refused("resources:\n- a.yaml\npatches:\n  - path: [unclosed\n");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].0, 4, "{errors:?}");
    assert!(
        errors[0].1.starts_with("invalid kustomization YAML"),
        "{}",
        errors[0].1
    );
    // A wrong type is an error too, at its line.
    let errors = refused("namePrefix: x\nresources: just-a-string\n");
    assert_eq!(errors[0].0, 2, "{errors:?}");
}

#[test]
fn inline_plugin_configurations_are_not_paths() {
    // A builtin transformer written inline as a YAML document in a string (as example-repo's
    // overlays do) is configuration, not a file to follow.
    let got = refs(
        "env/kustomization.yaml",
        "transformers:\n- |-\n  apiVersion: builtin\n  kind: PrefixTransformer\n  metadata:\n    name: p\n  prefix: dev-\n- t.yaml\n",
    );
    assert_eq!(
        got,
        vec![(
            "env/t.yaml".to_string(),
            "transformers",
            8,
            RefKind::Resource
        )]
    );
}

#[test]
fn inline_plugins_other_than_builtins_and_inline_helm_are_refused() {
    let errors = refused(
        "generators:\n- |-\n  apiVersion: builtin\n  kind: HelmChartInflationGenerator\n  metadata:\n    name: x\n  repo: https://charts.example.com\n- apiVersion: someteam.example.com/v1\n  kind: ChartInflator\n",
    );
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0].0, 3, "the line of the inline document");
    assert!(
        errors[0].1.contains("HelmChartInflationGenerator"),
        "{errors:?}"
    );
    assert_eq!(errors[1].0, 8);
    assert!(
        errors[1].1.contains("not a kustomize builtin"),
        "{errors:?}"
    );
}
