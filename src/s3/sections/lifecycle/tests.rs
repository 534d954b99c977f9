//! Unit tests of the lifecycle section: parse, compare, SDK round trip (no S3 server).
use super::*;
use crate::s3::sections::parsed;
use serde_json::json;

fn parse(v: Value) -> (Option<Vec<LifecycleRule>>, Vec<String>) {
    parsed::<LifecycleSection>(&v)
}

fn rule(id: &str, prefix: Option<&str>, tags: &[(&str, &str)]) -> LifecycleRule {
    LifecycleRule {
        id: id.into(),
        prefix: prefix.map(str::to_string),
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        status: RuleStatus::Enabled,
        transitions: vec![Transition {
            days: 30,
            storage_class: "STANDARD_IA".into(),
        }],
        expiration_days: Some(365),
        noncurrent_version_expiration_days: Some(30),
        abort_incomplete_multipart_upload_days: None,
        unsupported: BTreeMap::new(),
    }
}

#[test]
fn parses_rules_sorted_by_id_with_sorted_transitions() {
    let (rules, problems) = parse(json!([
        {"id": "z", "filter": {"prefix": "tmp/"}, "expirationDays": 1},
        {"id": "a", "prefix": "logs/", "tags": {"tier": "cold"}, "status": "Disabled",
         "transitions": [{"days": 90, "storageClass": "GLACIER"}, {"days": 30, "storageClass": "STANDARD_IA"}],
         "expirationDays": 365},
    ]));
    assert!(problems.is_empty(), "{problems:?}");
    let rules = rules.unwrap();
    assert_eq!(rules[0].id, "a");
    assert_eq!(rules[0].status, RuleStatus::Disabled);
    assert_eq!(rules[0].transitions[0].days, 30);
    assert_eq!(rules[0].tags["tier"], "cold");
    assert_eq!(rules[1].prefix.as_deref(), Some("tmp/"));
    assert_eq!(rules[1].status, RuleStatus::Enabled);
}

#[test]
fn reports_bad_rules_with_their_paths() {
    let (_, problems) = parse(json!([
        {"id": "r", "prefix": "a/", "filter": {"prefix": "b/"},
         "transitions": [{"days": 10, "storageClass": "STANDARD_IA"}, {"days": 40, "storageClass": "TAPE"}],
         "expirationDays": 5, "bogus": 1},
        {"prefix": "nothing/"},
        {"id": "t", "tags": {"a": "b"}, "abortIncompleteMultipartUploadDays": 0},
        {"id": "t", "expirationDays": 1},
    ]));
    let all = problems.join("\n");
    for needle in [
        "spec.lifecycle[0].bogus: unknown field",
        "spec.lifecycle[0].filter: use either filter or prefix/tags on the rule, not both",
        "spec.lifecycle[0].transitions[0].days: STANDARD_IA needs at least 30 days",
        "spec.lifecycle[0].transitions[1].storageClass: \"TAPE\" is not one of",
        "spec.lifecycle[0].expirationDays: 5 must be later than the last transition (40 days)",
        "spec.lifecycle[1].id: missing (rules are matched by id)",
        "spec.lifecycle[1]: has no action",
        "spec.lifecycle[2].abortIncompleteMultipartUploadDays: 0 is out of range 1..=2147483647",
        "spec.lifecycle[3]: duplicate rule id \"t\"",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
    let (_, problems) = parse(json!({"id": "x"}));
    assert_eq!(problems, vec!["spec.lifecycle: must be a list of rules"]);
}

#[test]
fn abort_uploads_cannot_filter_on_tags() {
    let (_, problems) = parse(json!([
        {"id": "t", "tags": {"a": "b"}, "abortIncompleteMultipartUploadDays": 3},
    ]));
    assert_eq!(
        problems,
        vec![
            "spec.lifecycle[0].abortIncompleteMultipartUploadDays: cannot be used in a rule that filters on tags"
        ]
    );
}

#[test]
fn compares_normalised_rules() {
    let a = vec![rule("a", Some("x/"), &[])];
    assert!(LifecycleSection::same(&a, &a.clone()));
    let mut live = a.clone();
    live[0]
        .unsupported
        .insert("expirationDate".into(), "2030-01-01".into());
    assert!(
        !LifecycleSection::same(&a, &live),
        "unsupported settings differ"
    );
    assert!(!LifecycleSection::same(&a, &Vec::new()));
    assert_eq!(LifecycleSection::to_json(&a)[0]["id"], json!("a"));
}

#[test]
fn lifecycle_rules_round_trip_through_sdk_types() {
    let tier = [("tier", "cold")];
    for rule in [
        rule("r", Some("logs/"), &tier),
        rule("r", None, &tier),
        rule("r", Some("x/"), &[]),
        rule("r", None, &[]),
    ] {
        let sdk = sdk::rule_to_sdk(&rule).unwrap();
        assert_eq!(sdk::rule_from_sdk(&sdk), rule);
    }
}
