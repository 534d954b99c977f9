//! Unit tests of rendering: parsing, identities, errors with file and line.
use super::*;

fn file(path: &str, text: &str) -> FileEntry {
    FileEntry {
        path: path.into(),
        kind: EntryKind::File,
        bytes: text.as_bytes().to_vec(),
    }
}

#[test]
fn renders_multi_document_files_and_ignores_other_files() {
    let state = render(
        "env/dev",
        vec![
            file(
                "env/dev/app.yaml",
                "# leading comment\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: x\n---\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n",
            ),
            file("env/dev/README.md", "not yaml: ["),
        ],
    )
    .unwrap();
    assert_eq!(state.len(), 2);
    let deploy = state
        .objects
        .values()
        .find(|m| m.key.kind == "Deployment")
        .unwrap();
    assert_eq!(deploy.key.group, "apps");
    assert_eq!(deploy.key.namespace, None);
    assert_eq!(deploy.source.line, 9);
    assert_eq!(deploy.source.document, 2);
    assert_eq!(state.files["env/dev/app.yaml"].len(), 2);
}

#[test]
fn yaml_errors_name_file_and_absolute_line() {
    let errors = render(
        "e",
        vec![file(
            "e/a.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: [\n",
        )],
    )
    .unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, "e/a.yaml");
    let line = errors[0].line.unwrap();
    assert!(
        (5..=7).contains(&line),
        "line {line} should point into the second document"
    );
}

#[test]
fn missing_kind_or_name_and_duplicates_are_errors() {
    let errors = render(
        "e",
        vec![
            file("e/a.yaml", "apiVersion: v1\nmetadata: {name: a}\n"),
            file(
                "e/b.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n",
            ),
            file(
                "e/c.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: d}\n",
            ),
            file(
                "e/d.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: d}\n",
            ),
        ],
    )
    .unwrap_err();
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("e/a.yaml:1") && m.contains("missing kind")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("e/b.yaml:1") && m.contains("missing metadata.name"))
    );
    assert!(messages.iter().any(|m| {
        m.contains("e/d.yaml:1: ConfigMap d: duplicate object, first defined at e/c.yaml:1")
    }));
}

#[test]
fn symlinks_submodules_and_escaping_paths_are_errors() {
    let errors = render(
        "e",
        vec![
            FileEntry {
                path: "e/link.yaml".into(),
                kind: EntryKind::Symlink,
                bytes: b"../../etc/passwd".to_vec(),
            },
            FileEntry {
                path: "e/sub".into(),
                kind: EntryKind::Submodule,
                bytes: vec![],
            },
            file(
                "e/../x.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
            ),
            file(
                "other/x.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
            ),
        ],
    )
    .unwrap_err();
    assert_eq!(errors.len(), 4, "{errors:?}");
}

#[test]
fn rerender_reads_only_changed_files_and_reports_touched_keys() {
    let base = render(
        "e",
        vec![
            file(
                "e/a.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: '1'}\n",
            ),
            file(
                "e/b.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n",
            ),
        ],
    )
    .unwrap();
    let (next, touched) = rerender(
        "e",
        &base,
        vec![
            FileUpdate {
                path: "e/a.yaml".into(),
                entry: Some(file(
                    "e/a.yaml",
                    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: '2'}\n",
                )),
            },
            FileUpdate {
                path: "e/b.yaml".into(),
                entry: None,
            },
        ],
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(touched.len(), 2);
    // An object moving from one changed file to another is not a duplicate.
    let (moved, _) = rerender(
        "e",
        &base,
        vec![
            FileUpdate {
                path: "e/a.yaml".into(),
                entry: None,
            },
            FileUpdate {
                path: "e/c.yaml".into(),
                entry: Some(file(
                    "e/c.yaml",
                    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
                )),
            },
        ],
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(moved.len(), 2);
}

#[test]
fn path_within_rejects_escapes() {
    assert!(path_within("env/dev", "env/dev/a.yaml"));
    assert!(!path_within("env/dev", "env/devx/a.yaml"));
    assert!(!path_within("env/dev", "env/dev/../prod/a.yaml"));
    assert!(!path_within("", "/etc/passwd"));
    assert!(path_within("", "a/b.yaml"));
}

/// A billion-laughs document: ten levels of ten aliases each.
fn alias_bomb(name: &str) -> String {
    let mut s = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata:\n  a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
    );
    for i in 1..10 {
        let p = i - 1;
        s.push_str(&format!(
            "  a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    s
}

#[test]
fn one_alias_bomb_is_refused_quickly() {
    let started = std::time::Instant::now();
    let errors = parse_file("e/bomb.yaml", alias_bomb("b").as_bytes()).unwrap_err();
    // Generous for an unoptimised build; an optimised one takes a small fraction of it.
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, "e/bomb.yaml");
    assert!(errors[0].message.contains("YAML nodes"), "{}", errors[0]);
}

#[test]
fn many_small_bombs_share_one_budget() {
    // Each document expands to ~10,000 nodes: under a per-document budget, but not fifty.
    let small = |n: usize| {
        let mut s = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{n}}}\ndata:\n  a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
        );
        for i in 1..4 {
            let p = i - 1;
            s.push_str(&format!("  a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
        }
        s
    };
    let text: Vec<String> = (0..50).map(small).collect();
    let one = parse_file("e/one.yaml", small(0).as_bytes()).unwrap();
    assert_eq!(one.len(), 1, "one such document is fine");
    let errors = parse_file("e/bombs.yaml", text.join("---\n").as_bytes()).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let line = errors[0].line.unwrap();
    assert!(
        line > 9,
        "a later document exhausts the file's budget: line {line}"
    );
    assert!(
        errors[0].message.contains("100000 YAML nodes"),
        "{}",
        errors[0]
    );
}

#[test]
fn documents_depth_and_objects_are_limited() {
    let many = "{}\n---\n".repeat(10_001);
    let errors = parse_file("e/many.yaml", many.as_bytes()).unwrap_err();
    assert!(
        errors[0].message.contains("10000 YAML documents"),
        "{}",
        errors[0]
    );
    let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    let errors = parse_file("e/deep.yaml", deep.as_bytes()).unwrap_err();
    assert!(errors[0].message.contains("nested deeper"), "{}", errors[0]);
    let cm = |n: usize| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{n}}}\n");
    let limits = Limits {
        objects: 3,
        ..Limits::default()
    };
    let errors = render_within(
        "e",
        (0..5).map(|n| file(&format!("e/{n}.yaml"), &cm(n))),
        &limits,
    )
    .unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "e/3.yaml");
    let big = Limits {
        file_bytes: 10,
        ..Limits::default()
    };
    let errors = render_within("e", vec![file("e/a.yaml", &cm(1))], &big).unwrap_err();
    assert!(
        errors[0].message.contains("limit of 10 bytes per file"),
        "{}",
        errors[0]
    );
}
