//! Unit tests of bucket planning and spec diffs (no S3 server).
use super::*;
use crate::manifest::parse_file;
use sections::versioning::VersioningSection;

fn spec(body: &str) -> BucketSpec {
    let yaml = format!(
        "apiVersion: gitopsd.dev/v1alpha1\nkind: Bucket\nmetadata: {{name: b}}\nspec:\n{body}"
    );
    let m = parse_file("env/dev/b.yaml", yaml.as_bytes())
        .unwrap()
        .remove(0);
    parse_bucket(&m).unwrap()
}

#[test]
fn settings_debug_redacts_credentials() {
    let s = S3Settings {
        endpoint: Some("http://user:pw@localhost:9000".into()),
        region: "us-east-1".into(),
        force_path_style: true,
        access_key_id: Some("AKIAEXAMPLE".into()),
        secret_access_key: Some("wJalrXUtnFEMI/K7MDENG".into()),
    };
    let d = format!("{s:?}");
    assert!(
        !d.contains("AKIAEXAMPLE") && !d.contains("wJalr") && !d.contains(":pw@"),
        "{d}"
    );
}

#[test]
fn diff_specs_shows_changed_fields_only() {
    let a = spec("  name: my-bucket\n  versioning: Enabled\n  tags: {team: web}\n");
    let b = spec(
        "  name: my-bucket\n  versioning: Suspended\n  tags: {team: web}\n  cors: [{allowedOrigins: ['*'], allowedMethods: [GET]}]\n",
    );
    let changes = diff_specs(Some(&a), Some(&b));
    let names: Vec<&str> = changes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(names, vec!["versioning", "cors"]);
    assert_eq!(changes[0].before, "Enabled");
    assert_eq!(changes[0].after, "Suspended");
    assert_eq!(changes[1].before, "(not managed)");
    assert!(diff_specs(Some(&a), Some(&a)).is_empty());
    let created = diff_specs(None, Some(&a));
    assert!(
        created
            .iter()
            .any(|c| c.field == "name" && c.before.is_empty() && c.after == "my-bucket")
    );
    let deleted = diff_specs(Some(&a), None);
    assert!(deleted.iter().all(|c| c.after.is_empty()));
}

#[test]
fn diff_text_is_a_unified_diff_with_objects() {
    let desired = spec("  name: my-bucket\n  versioning: Enabled\n");
    let mut live = desired.config.clone();
    live.set::<VersioningSection>(VersioningStatus::Suspended);
    let plan = BucketPlan {
        bucket: "my-bucket".into(),
        action: BucketAction::Update,
        changes: vec![],
        objects: ObjectPlan {
            uploads: vec!["a.txt".into(), "b.txt".into()],
            replaced: vec!["b.txt".into()],
            deletes: vec!["old.txt".into()],
            unchanged: 3,
            ..Default::default()
        },
        fields: vec![Field::Versioning],
        warnings: vec![],
        before: Some(live),
        after: Some(desired.config.clone()),
    };
    let text = plan.diff_text();
    assert!(text.contains("--- live/my-bucket"), "{text}");
    assert!(text.contains("-versioning: Suspended"), "{text}");
    assert!(text.contains("+versioning: Enabled"), "{text}");
    assert!(text.contains("+ a.txt\n~ b.txt\n- old.txt\n"), "{text}");
    assert!(text.contains("3 unchanged"), "{text}");
    assert!(!plan.is_noop());
}

#[test]
fn same_config_compares_normalised_forms() {
    let a = spec(
        "  name: my-bucket\n  lifecycle:\n    - {id: b, expirationDays: 3}\n    - {id: a, expirationDays: 2}\n  cors: [{allowedOrigins: [a.example, b.example], allowedMethods: [PUT, GET]}]\n",
    );
    let b = spec(
        "  name: my-bucket\n  lifecycle:\n    - {id: a, expirationDays: 2, status: Enabled}\n    - {id: b, expirationDays: 3}\n  cors: [{allowedOrigins: [b.example, a.example], allowedMethods: [GET, PUT]}]\n",
    );
    for f in Field::ALL {
        assert!(a.config.same(&b.config, f), "{f:?}");
    }
}

#[test]
fn region_names() {
    assert!(region_matches("", "us-east-1"));
    assert!(region_matches("EU", "eu-west-1"));
    assert!(!region_matches("eu-west-1", "us-east-1"));
}
