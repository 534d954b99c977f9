//! Unit tests of parsing a `Bucket` manifest (no S3 server).
use super::objects::{normalise_prefix, normalise_source};
use super::*;
use crate::manifest::parse_file;
use crate::s3::sections::{
    cors::CorsSection, encryption::EncryptionSection, lifecycle::LifecycleSection,
    policy::PolicySection, public_access_block::PublicAccessBlockSection, tags::TagsSection,
    versioning::VersioningSection,
};
use crate::s3::{PublicAccessBlock, SseType, VersioningStatus};

fn manifest(yaml: &str) -> Manifest {
    parse_file("env/dev/buckets.yaml", yaml.as_bytes())
        .unwrap()
        .remove(0)
}

fn errors(yaml: &str) -> Vec<String> {
    parse_bucket(&manifest(yaml))
        .unwrap_err()
        .into_iter()
        .map(|e| e.to_string())
        .collect()
}

const FULL: &str = r#"
apiVersion: gitopsd.dev/v1alpha1
kind: Bucket
metadata: { name: static-assets }
spec:
  name: acme-dev-static-assets
  region: us-east-1
  versioning: Enabled
  encryption: { type: SSE-KMS, kmsKeyId: "arn:aws:kms:us-east-1:111122223333:key/abc", bucketKeyEnabled: true }
  lifecycle:
    - id: z-last
      filter: { prefix: tmp/ }
      expirationDays: 1
    - id: archive-logs
      prefix: logs/
      tags: { tier: cold }
      transitions: [ { days: 90, storageClass: GLACIER }, { days: 30, storageClass: STANDARD_IA } ]
      expirationDays: 365
      noncurrentVersionExpirationDays: 30
  publicAccessBlock: { blockPublicAcls: true, restrictPublicBuckets: false }
  policy: '{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":["s3:GetObject"],"Resource":"arn:aws:s3:::acme-dev-static-assets/*"}}'
  tags: { team: web, cost: 42 }
  cors: [ { allowedOrigins: ["https://example.com"], allowedMethods: [PUT, GET], allowedHeaders: ["*"], exposeHeaders: [ETag], maxAgeSeconds: 3000 } ]
  deletionPolicy: Delete
  objects:
    source: assets/dev/
    prefix: static
    delete: true
    cacheControl: "public, max-age=300"
    contentTypes: { webmanifest: "application/manifest+json" }
    maxFileSize: 100MiB
"#;

#[test]
fn parses_the_full_schema() {
    let spec = parse_bucket(&manifest(FULL)).unwrap();
    assert_eq!(spec.id, "static-assets");
    assert_eq!(spec.name, "acme-dev-static-assets");
    assert_eq!(spec.region.as_deref(), Some("us-east-1"));
    let cfg = &spec.config;
    assert_eq!(
        cfg.get::<VersioningSection>(),
        Some(&VersioningStatus::Enabled)
    );
    let enc = cfg.get::<EncryptionSection>().cloned().unwrap().unwrap();
    assert_eq!(enc.sse_type, SseType::SseKms);
    assert!(enc.bucket_key_enabled);
    let rules = cfg.get::<LifecycleSection>().unwrap();
    assert_eq!(rules[0].id, "archive-logs", "sorted by id");
    assert_eq!(rules[0].transitions[0].days, 30, "sorted by days");
    assert_eq!(rules[1].prefix.as_deref(), Some("tmp/"));
    assert_eq!(
        cfg.get::<PublicAccessBlockSection>(),
        Some(&PublicAccessBlock {
            restrict_public_buckets: false,
            ..PublicAccessBlock::ALL_TRUE
        })
    );
    assert!(!spec.is_defaulted(Field::PublicAccessBlock));
    let policy = cfg.get::<PolicySection>().cloned().unwrap().unwrap();
    assert!(policy["Statement"].is_array());
    assert_eq!(
        policy["Statement"][0]["Principal"]["AWS"],
        "arn:aws:iam::111122223333:root"
    );
    assert_eq!(cfg.get::<TagsSection>().unwrap()["cost"], "42");
    assert_eq!(
        cfg.get::<CorsSection>().unwrap()[0].allowed_methods,
        vec!["GET", "PUT"]
    );
    assert_eq!(spec.deletion_policy, DeletionPolicy::Delete);
    let objects = spec.objects.unwrap();
    assert_eq!(objects.source, "assets/dev");
    assert_eq!(objects.prefix, "static/");
    assert_eq!(
        objects.content_types[".webmanifest"],
        "application/manifest+json"
    );
    assert_eq!(objects.max_file_size, 100 << 20);
}

#[test]
fn minimal_spec_manages_only_the_public_access_block() {
    let spec = parse_bucket(&manifest(
        "apiVersion: gitopsd.dev/v1alpha1\nkind: Bucket\nmetadata: {name: a}\nspec: {name: my-bucket}\n",
    ))
    .unwrap();
    assert_eq!(spec.config.fields(), vec![Field::PublicAccessBlock]);
    assert_eq!(
        spec.config.get::<PublicAccessBlockSection>(),
        Some(&PublicAccessBlock::ALL_TRUE)
    );
    assert!(spec.is_defaulted(Field::PublicAccessBlock));
    assert_eq!(spec.deletion_policy, DeletionPolicy::Retain);
    assert!(spec.objects.is_none());
}

#[test]
fn policy_as_mapping_equals_policy_as_json_string() {
    let a = parse_bucket(&manifest(
        "apiVersion: gitopsd.dev/v1alpha1\nkind: Bucket\nmetadata: {name: a}\nspec:\n  name: my-bucket\n  policy:\n    Version: '2012-10-17'\n    Statement:\n      - Effect: Deny\n        Principal: '*'\n        Action: [s3:PutObject, s3:DeleteObject]\n        Resource: arn:aws:s3:::my-bucket/*\n",
    ))
    .unwrap();
    let b = parse_bucket(&manifest(
        "apiVersion: gitopsd.dev/v1alpha1\nkind: Bucket\nmetadata: {name: a}\nspec:\n  name: my-bucket\n  policy: '{\"Statement\": [{\"Resource\": [\"arn:aws:s3:::my-bucket/*\"], \"Action\": [\"s3:DeleteObject\", \"s3:PutObject\"], \"Principal\": \"*\", \"Effect\": \"Deny\"}], \"Version\": \"2012-10-17\"}'\n",
    ))
    .unwrap();
    assert_eq!(
        a.config.get::<PolicySection>(),
        b.config.get::<PolicySection>()
    );
}

#[test]
fn bucket_names_follow_aws_rules() {
    for ok in [
        "abc",
        "my-bucket.example",
        "a1b2c3",
        "acme-dev-static-assets",
    ] {
        assert!(validate_bucket_name(ok).is_ok(), "{ok}");
    }
    for bad in [
        "ab",
        "Abc",
        "-abc",
        "abc-",
        "a..b",
        "192.168.5.4",
        "xn--abc",
        "abc-s3alias",
        "a_b",
        &"a".repeat(64),
        "a.-b",
    ] {
        assert!(validate_bucket_name(bad).is_err(), "{bad}");
    }
}

#[test]
fn unknown_fields_and_bad_values_are_all_reported_with_position() {
    let errs = errors(
        r#"
apiVersion: gitopsd.dev/v1alpha1
kind: Bucket
metadata: { name: bad }
spec:
  name: Bad_Name
  versioning: On
  versionning: Enabled
  encryption: { type: SSE-S3, kmsKeyId: x }
  lifecycle:
    - id: r
      prefix: a/
      filter: { prefix: b/ }
      transitions: [ { days: 10, storageClass: STANDARD_IA } ]
      expirationDays: 5
      bogus: 1
    - prefix: nothing/
  publicAccessBlock: { blockPublicAcls: yes-please }
  policy: '{"Statement": '
  cors: [ { allowedOrigins: [], allowedMethods: [PATCH] } ]
  deletionPolicy: Destroy
  objects: { source: ../outside, prefix: a/../../b, maxFileSize: 9000TiB }
"#,
    );
    let all = errs.join("\n");
    for needle in [
        "env/dev/buckets.yaml:2: Bucket bad: spec.name: \"Bad_Name\" is not a valid S3 bucket name",
        "spec.versioning: must be Enabled or Suspended",
        "spec.versionning: unknown field",
        "spec.encryption.kmsKeyId: only valid with type SSE-KMS",
        "spec.lifecycle[0].bogus: unknown field",
        "spec.lifecycle[0].filter: use either filter or prefix/tags",
        "spec.lifecycle[0].transitions[0].days: STANDARD_IA needs at least 30 days",
        "spec.lifecycle[0].expirationDays: 5 must be later than the last transition",
        "spec.lifecycle[1].id: missing",
        "spec.lifecycle[1]: has no action",
        "spec.publicAccessBlock.blockPublicAcls: must be true or false",
        "spec.policy: is not valid JSON",
        "spec.cors[0].allowedOrigins: must list at least one origin",
        "spec.cors[0].allowedMethods: \"PATCH\" is not one of",
        "spec.deletionPolicy: must be Retain or Delete",
        "spec.objects.source: \"../outside\" must stay inside the repository",
        "spec.objects.prefix: \"a/../../b\" has a . or .. segment",
        "spec.objects.maxFileSize: ",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

#[test]
fn prefix_escapes_are_rejected() {
    for prefix in ["/abs", "a//b", "a\\b", "../x", "./x"] {
        assert!(normalise_prefix(prefix).is_err(), "{prefix}");
    }
    assert_eq!(normalise_prefix("static").unwrap(), "static/");
    assert_eq!(normalise_prefix("").unwrap(), "");
    assert_eq!(normalise_source("./").unwrap(), "");
    assert!(normalise_source("/etc").is_err());
}

#[test]
fn sizes() {
    assert_eq!(parse_size(&Value::from("5GiB")).unwrap(), 5 << 30);
    assert_eq!(parse_size(&Value::from("1.5 KB")).unwrap(), 1500);
    assert_eq!(parse_size(&Value::from(42)).unwrap(), 42);
    assert!(parse_size(&Value::from("5 parsecs")).is_err());
}
