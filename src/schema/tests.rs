//! Unit tests of the checker and the line index.
use super::*;
use serde_json::json;

fn keyed(c: Checker) -> Vec<String> {
    c.into_problems()
        .iter()
        .map(Problem::keyed_message)
        .collect()
}

#[test]
fn paths_follow_keys_and_indexes() {
    let mut c = Checker::new();
    c.at("spec", |c| {
        c.at("lifecycle", |c| {
            c.at_index(1, |c| {
                c.problem("has no action");
                c.problem_at("id", "missing");
            })
        });
        assert_eq!(c.path(), "spec");
    });
    c.problem_at("kind", "not a Bucket");
    assert_eq!(
        keyed(c),
        vec![
            "spec.lifecycle[1]: has no action",
            "spec.lifecycle[1].id: missing",
            "kind: not a Bucket",
        ]
    );
}

#[test]
fn readers_report_wrong_types_and_unknown_fields() {
    let doc = json!({"a": 1, "b": "x", "c": [1, "y"], "d": {"k": [1]}, "zz": true});
    let mut c = Checker::new();
    let map = c.mapping(&doc, &["a", "b", "c", "d"]).unwrap();
    assert_eq!(c.field(map, "a", Checker::string), None);
    assert_eq!(c.field(map, "b", Checker::boolean), None);
    assert_eq!(c.field(map, "c", Checker::string_list), None);
    assert!(c.field(map, "d", Checker::string_map).unwrap().is_empty());
    assert_eq!(c.field(map, "a", |c, v| c.int(v, 2, 9)), None);
    assert_eq!(c.required(map, "e", " (a name)", Checker::string), None);
    let choices = [("Retain", 1), ("Delete", 2)];
    assert_eq!(c.field(map, "b", |c, v| c.one_of(v, &choices)), None);
    assert_eq!(
        keyed(c),
        vec![
            "zz: unknown field (expected one of: a, b, c, d)",
            "a: must be a string",
            "b: must be true or false",
            "c[0]: must be a string",
            "d.k: must be a string",
            "a: 1 is out of range 2..=9",
            "e: missing (a name)",
            "b: must be Retain or Delete, not \"x\"",
        ]
    );
}

#[test]
fn good_values_pass_without_problems() {
    let doc = json!({"s": "x", "b": true, "n": 5, "l": ["a"], "m": {"k": 1, "t": false}});
    let mut c = Checker::new();
    let map = c.mapping(&doc, &["s", "b", "n", "l", "m"]).unwrap();
    assert_eq!(c.field(map, "s", Checker::string).as_deref(), Some("x"));
    assert_eq!(c.field(map, "b", Checker::boolean), Some(true));
    assert_eq!(c.field(map, "n", |c, v| c.int(v, 0, 10)), Some(5));
    assert_eq!(
        c.field(map, "l", Checker::string_list),
        Some(vec!["a".into()])
    );
    let m = c.field(map, "m", Checker::string_map).unwrap();
    assert_eq!(m["k"], "1");
    assert_eq!(m["t"], "false");
    assert_eq!(c.field(map, "absent", Checker::string), None);
    assert!(c.is_clean());
}

#[test]
fn or_lists() {
    assert_eq!(or_list(&["A"]), "A");
    assert_eq!(or_list(&["A", "B"]), "A or B");
    assert_eq!(or_list(&["A", "B", "C"]), "A, B or C");
}

#[test]
fn lines_name_keys_and_list_items() {
    let text = "repository:\n  url: x\n\nenvironments:\n  - name: dev\n    kubernetes:\n      kubeconfig: /k\n  - {name: prod, path: p}\n";
    let lines = Lines::from_yaml(text);
    assert_eq!(lines.line_of("repository"), Some(1));
    assert_eq!(lines.line_of("repository.url"), Some(2));
    assert_eq!(lines.line_of("environments[0]"), Some(5));
    assert_eq!(lines.line_of("environments[0].kubernetes"), Some(6));
    assert_eq!(
        lines.line_of("environments[0].kubernetes.kubeconfig"),
        Some(7)
    );
    assert_eq!(lines.line_of("environments[1].path"), Some(8));
    // Unknown paths fall back to the nearest enclosing key.
    assert_eq!(lines.line_of("environments[0].s3.endpoint"), Some(5));
    assert_eq!(lines.line_of("nowhere"), None);
    assert_eq!(Lines::from_yaml("a: [\n").line_of("a"), None);
}

#[test]
fn problems_carry_lines_when_indexed() {
    let mut c = Checker::with_lines(Lines::from_yaml("a:\n  b: 1\n"));
    c.at("a", |c| c.problem_at("b", "bad"));
    c.problem_at("z", "nowhere");
    let problems = c.into_problems();
    assert_eq!(problems[0].to_string(), "line 2: a.b: bad");
    assert_eq!(problems[1].to_string(), "z: nowhere");
}
