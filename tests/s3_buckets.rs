//! Bucket configuration against the primary S3 server of the testbed (moto): create, update of
//! every field, no-op, drift, rollback, Retain vs Delete, error classification.

mod support;

use aws_sdk_s3::types::{
    BucketVersioningStatus, PublicAccessBlockConfiguration, VersioningConfiguration,
};
use gitopsd::manifest::parse_file;
use gitopsd::s3::{
    self, BucketAction, BucketSpec, DeleteOutcome, Owner, RequestLog, S3Error, S3Settings,
    apply_bucket, check_health, delete_bucket, parse_bucket, plan_bucket,
};

fn settings(tb: &support::Testbed, endpoint_var: &str) -> S3Settings {
    S3Settings {
        endpoint: Some(tb.env(endpoint_var).to_string()),
        region: tb.env("GITOPSD_TEST_S3_REGION").to_string(),
        force_path_style: true,
        access_key_id: Some(tb.env("AWS_ACCESS_KEY_ID").to_string()),
        secret_access_key: Some(tb.env("AWS_SECRET_ACCESS_KEY").to_string()),
    }
}

async fn client(tb: &support::Testbed) -> (aws_sdk_s3::Client, RequestLog) {
    s3::client_with_log(&settings(tb, "GITOPSD_TEST_S3_ENDPOINT")).await
}

/// The owner these tests plan and apply as (bucket names are unique per test).
fn owner() -> Owner {
    Owner::new("s3-tests", "dev")
}

/// Replaces the bucket's tag set with the raw SDK: `pairs`, plus our ownership tags if `owned`.
async fn put_tags(sdk: &aws_sdk_s3::Client, bucket: &str, pairs: &[(&str, &str)], owned: bool) {
    let mut tags: std::collections::BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if owned {
        tags.extend(owner().tags());
    }
    let set = tags
        .iter()
        .map(|(k, v)| {
            aws_sdk_s3::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
                .unwrap()
        })
        .collect();
    sdk.put_bucket_tagging()
        .bucket(bucket)
        .tagging(
            aws_sdk_s3::types::Tagging::builder()
                .set_tag_set(Some(set))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

fn spec(bucket: &str, body: &str) -> BucketSpec {
    let yaml = format!(
        "apiVersion: gitopsd.dev/v1alpha1\nkind: Bucket\nmetadata: {{name: assets}}\nspec:\n  name: {bucket}\n{body}"
    );
    let m = parse_file("env/dev/bucket.yaml", yaml.as_bytes())
        .unwrap()
        .remove(0);
    parse_bucket(&m).unwrap_or_else(|e| panic!("invalid spec: {e:?}"))
}

/// Version A of a fully configured bucket. moto evaluates policies: only Allow statements for the
/// test's own account, so the test is never locked out.
fn spec_a(bucket: &str) -> BucketSpec {
    spec(
        bucket,
        &format!(
            r#"  versioning: Enabled
  encryption: {{ type: SSE-S3 }}
  lifecycle:
    - id: archive-logs
      prefix: logs/
      transitions: [ {{ days: 30, storageClass: STANDARD_IA }}, {{ days: 90, storageClass: GLACIER }} ]
      expirationDays: 365
      noncurrentVersionExpirationDays: 30
    - id: abort-uploads
      abortIncompleteMultipartUploadDays: 7
  publicAccessBlock: {{ blockPublicAcls: true, ignorePublicAcls: true, blockPublicPolicy: true, restrictPublicBuckets: true }}
  policy:
    Version: "2012-10-17"
    Statement:
      - Sid: ReadForAccount
        Effect: Allow
        Principal: {{ AWS: "arn:aws:iam::123456789012:root" }}
        Action: [ "s3:GetObject" ]
        Resource: "arn:aws:s3:::{bucket}/*"
  tags: {{ team: web, env: dev }}
  cors: [ {{ allowedOrigins: ["https://example.com"], allowedMethods: [GET, PUT], allowedHeaders: ["*"], exposeHeaders: [ETag], maxAgeSeconds: 3000 }} ]
"#
        ),
    )
}

/// Version B: every field different from A.
fn spec_b(bucket: &str) -> BucketSpec {
    spec(
        bucket,
        &format!(
            r#"  versioning: Suspended
  encryption: {{ type: SSE-KMS, kmsKeyId: "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab", bucketKeyEnabled: true }}
  lifecycle:
    - id: archive-logs
      filter: {{ prefix: logs/, tags: {{ tier: cold }} }}
      status: Disabled
      transitions: [ {{ days: 60, storageClass: GLACIER }} ]
      expirationDays: 400
  publicAccessBlock: {{ blockPublicAcls: true, ignorePublicAcls: false, blockPublicPolicy: true, restrictPublicBuckets: false }}
  policy: '{{"Version":"2012-10-17","Statement":[{{"Sid":"ListForAccount","Effect":"Allow","Principal":{{"AWS":"123456789012"}},"Action":"s3:ListBucket","Resource":"arn:aws:s3:::{bucket}"}}]}}'
  tags: {{ team: platform }}
  cors: [ {{ allowedOrigins: ["https://a.example", "https://b.example"], allowedMethods: [GET], maxAgeSeconds: 60 }} ]
"#
        ),
    )
}

/// Plans and applies; returns the plan.
async fn converge(c: &aws_sdk_s3::Client, s: &BucketSpec) -> s3::BucketPlan {
    let plan = plan_bucket(c, s, &owner(), None).await.expect("plan");
    apply_bucket(c, s, &owner(), &plan, None)
        .await
        .expect("apply");
    plan
}

async fn assert_healthy(c: &aws_sdk_s3::Client, s: &BucketSpec) {
    let problems = check_health(c, s, &owner()).await.expect("health");
    assert!(problems.is_empty(), "unhealthy: {problems:?}");
}

#[tokio::test]
async fn create_then_noop_makes_no_write_calls() {
    let tb = require_testbed!();
    let (c, log) = client(tb).await;
    let name = support::unique_name("create");
    let s = spec_a(&name);

    let plan = plan_bucket(&c, &s, &owner(), None).await.unwrap();
    assert_eq!(plan.action, BucketAction::Create);
    assert_eq!(
        log.writes(),
        0,
        "planning writes nothing: {:?}",
        log.entries()
    );
    let fields: Vec<&str> = plan.changes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "publicAccessBlock",
            "versioning",
            "encryption",
            "lifecycle",
            "policy",
            "tags",
            "cors"
        ]
    );
    assert!(
        plan.diff_text().contains("+versioning: Enabled"),
        "{}",
        plan.diff_text()
    );

    let report = apply_bucket(&c, &s, &owner(), &plan, None).await.unwrap();
    assert!(report.created);
    assert_eq!(report.write_calls, 8, "CreateBucket + 7 fields: {report:?}");
    assert_healthy(&c, &s).await;

    // Second round: nothing to do, and nothing is written.
    log.clear();
    let plan = plan_bucket(&c, &s, &owner(), None).await.unwrap();
    assert!(plan.is_noop(), "{:?}\n{}", plan.changes, plan.diff_text());
    assert_eq!(plan.action, BucketAction::Unchanged);
    let report = apply_bucket(&c, &s, &owner(), &plan, None).await.unwrap();
    assert_eq!(report.write_calls, 0);
    assert_eq!(log.writes(), 0, "{:?}", log.entries());
    assert_eq!(plan.diff_text(), "");
}

#[tokio::test]
async fn every_field_updates_and_rollback_restores_the_previous_configuration() {
    let tb = require_testbed!();
    let (c, log) = client(tb).await;
    let name = support::unique_name("update");
    let (a, b) = (spec_a(&name), spec_b(&name));
    converge(&c, &a).await;
    assert_healthy(&c, &a).await;

    let plan = plan_bucket(&c, &b, &owner(), None).await.unwrap();
    assert_eq!(plan.action, BucketAction::Update);
    let mut fields: Vec<&str> = plan.changes.iter().map(|c| c.field.as_str()).collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "cors",
            "encryption",
            "lifecycle",
            "policy",
            "publicAccessBlock",
            "tags",
            "versioning"
        ]
    );
    let text = plan.diff_text();
    assert!(
        text.contains("-versioning: Enabled") && text.contains("+versioning: Suspended"),
        "{text}"
    );
    assert!(
        text.contains("+  team: platform") || text.contains("+  team: 'platform'"),
        "{text}"
    );
    log.clear();
    let report = apply_bucket(&c, &b, &owner(), &plan, None).await.unwrap();
    assert_eq!(report.write_calls, 7, "{report:?}");
    assert_eq!(log.writes(), 7, "{:?}", log.entries());
    assert_healthy(&c, &b).await;
    assert!(plan_bucket(&c, &b, &owner(), None).await.unwrap().is_noop());

    // Rollback: applying the previous spec restores the previous configuration.
    let back = converge(&c, &a).await;
    assert_eq!(back.changes.len(), 7);
    assert_healthy(&c, &a).await;
    assert!(plan_bucket(&c, &a, &owner(), None).await.unwrap().is_noop());
    assert!(
        !check_health(&c, &b, &owner()).await.unwrap().is_empty(),
        "B no longer matches"
    );

    // Emptying the collections removes them (Delete* calls) and then reads back as empty.
    let empty = spec(&name, "  lifecycle: []\n  tags: {}\n  cors: []\n");
    let plan = converge(&c, &empty).await;
    let mut fields: Vec<&str> = plan.changes.iter().map(|c| c.field.as_str()).collect();
    fields.sort();
    assert_eq!(fields, ["cors", "lifecycle", "tags"]);
    assert_healthy(&c, &empty).await;
    assert!(
        plan_bucket(&c, &empty, &owner(), None)
            .await
            .unwrap()
            .is_noop()
    );
}

#[tokio::test]
async fn drift_is_planned_and_repaired() {
    let tb = require_testbed!();
    let (c, _log) = client(tb).await;
    let sdk = tb.s3_client().await;
    let name = support::unique_name("drift");
    let s = spec_a(&name);
    converge(&c, &s).await;

    // Out-of-band changes with the SDK.
    sdk.put_bucket_versioning()
        .bucket(&name)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Suspended)
                .build(),
        )
        .send()
        .await
        .unwrap();
    // Someone else's tag set (that keeps the ownership tags: without them the bucket is disowned).
    put_tags(&sdk, &name, &[("team", "someone-else")], true).await;
    sdk.put_public_access_block()
        .bucket(&name)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(false)
                .ignore_public_acls(false)
                .block_public_policy(false)
                .restrict_public_buckets(false)
                .build(),
        )
        .send()
        .await
        .unwrap();
    sdk.delete_bucket_cors().bucket(&name).send().await.unwrap();

    let problems = check_health(&c, &s, &owner()).await.unwrap();
    assert_eq!(problems.len(), 4, "{problems:?}");
    let plan = plan_bucket(&c, &s, &owner(), None).await.unwrap();
    let mut fields: Vec<&str> = plan.changes.iter().map(|c| c.field.as_str()).collect();
    fields.sort();
    assert_eq!(fields, ["cors", "publicAccessBlock", "tags", "versioning"]);
    let text = plan.diff_text();
    assert!(
        text.contains("-versioning: Suspended") && text.contains("+versioning: Enabled"),
        "{text}"
    );
    assert!(
        text.contains("-  blockPublicAcls: false") && text.contains("+  blockPublicAcls: true"),
        "{text}"
    );
    let report = apply_bucket(&c, &s, &owner(), &plan, None).await.unwrap();
    assert_eq!(report.write_calls, 4);
    assert_healthy(&c, &s).await;
    assert!(plan_bucket(&c, &s, &owner(), None).await.unwrap().is_noop());
}

#[tokio::test]
async fn minimal_spec_is_secure_by_default_and_leaves_the_rest_alone() {
    let tb = require_testbed!();
    let (c, log) = client(tb).await;
    let sdk = tb.s3_client().await;
    let name = support::unique_name("minimal");
    let s = spec(&name, "");
    let plan = converge(&c, &s).await;
    assert_eq!(plan.fields, [s3::Field::PublicAccessBlock]);
    let pab = sdk
        .get_public_access_block()
        .bucket(&name)
        .send()
        .await
        .unwrap();
    let pab = pab.public_access_block_configuration().unwrap();
    assert_eq!(pab.block_public_acls(), Some(true));
    assert_eq!(pab.restrict_public_buckets(), Some(true));

    // Tags set by someone else are not managed, so not touched: they are read only for the
    // ownership tags, which are kept out of every comparison.
    put_tags(&sdk, &name, &[("owner", "ops")], true).await;
    log.clear();
    assert!(plan_bucket(&c, &s, &owner(), None).await.unwrap().is_noop());
    assert_eq!(log.writes(), 0, "{:?}", log.entries());
    assert_healthy(&c, &s).await;
    let tags = sdk.get_bucket_tagging().bucket(&name).send().await.unwrap();
    assert!(
        tags.tag_set()
            .iter()
            .any(|t| t.key() == "owner" && t.value() == "ops"),
        "{tags:?}"
    );
}

#[tokio::test]
async fn retain_keeps_and_delete_refuses_a_non_empty_bucket() {
    let tb = require_testbed!();
    let (c, log) = client(tb).await;
    let sdk = tb.s3_client().await;

    let kept = support::unique_name("retain");
    let s = spec(&kept, "  deletionPolicy: Retain\n");
    converge(&c, &s).await;
    log.clear();
    assert_eq!(
        delete_bucket(&c, &s, &owner()).await.unwrap(),
        DeleteOutcome::Retained
    );
    assert_eq!(log.total(), 0, "Retain makes no call");
    sdk.head_bucket()
        .bucket(&kept)
        .send()
        .await
        .expect("retained bucket still exists");

    let gone = support::unique_name("delete");
    let s = spec(&gone, "  deletionPolicy: Delete\n");
    converge(&c, &s).await;
    sdk.put_object()
        .bucket(&gone)
        .key("keep/me.txt")
        .body(b"data".to_vec().into())
        .send()
        .await
        .unwrap();
    let err = delete_bucket(&c, &s, &owner()).await.unwrap_err();
    assert!(
        matches!(&err, S3Error::NotEmpty { bucket } if bucket == &gone),
        "{err:?}"
    );
    assert!(!err.is_transient());
    assert!(
        err.to_string().contains(&gone) && err.to_string().contains("not empty"),
        "{err}"
    );
    sdk.head_bucket()
        .bucket(&gone)
        .send()
        .await
        .expect("bucket kept");

    // Through a deletion plan too.
    let plan = s3::BucketPlan::deletion(&s);
    assert!(apply_bucket(&c, &s, &owner(), &plan, None).await.is_err());

    sdk.delete_object()
        .bucket(&gone)
        .key("keep/me.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(
        delete_bucket(&c, &s, &owner()).await.unwrap(),
        DeleteOutcome::Deleted
    );
    assert_eq!(
        delete_bucket(&c, &s, &owner()).await.unwrap(),
        DeleteOutcome::AlreadyGone
    );
    assert!(sdk.head_bucket().bucket(&gone).send().await.is_err());
    assert_eq!(
        plan_bucket(&c, &s, &owner(), None).await.unwrap().action,
        BucketAction::Create
    );
}

#[tokio::test]
async fn errors_name_bucket_and_call_and_are_classified() {
    let tb = require_testbed!();
    // Nothing listens on port 9 (discard): a connection failure is transient.
    let mut bad = settings(tb, "GITOPSD_TEST_S3_ENDPOINT");
    bad.endpoint = Some("http://127.0.0.1:9".into());
    let c = s3::client(&bad).await;
    let s = spec(&support::unique_name("unreachable"), "");
    let err = plan_bucket(&c, &s, &owner(), None).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("HeadBucket") && msg.contains(&s.name), "{msg}");
    assert!(!msg.contains(tb.env("AWS_SECRET_ACCESS_KEY")), "{msg}");

    // A permanent service error: a bucket policy that is not valid for S3.
    let (c, _) = client(tb).await;
    let name = support::unique_name("badpolicy");
    let s = spec(
        &name,
        "  policy: {Version: '2012-10-17', Statement: [{Effect: Allow, Principal: '*', Action: 's3:NoSuchAction', Resource: 'arn:aws:s3:::not-this-bucket/*'}]}\n  publicAccessBlock: {blockPublicPolicy: false, restrictPublicBuckets: false}\n",
    );
    let plan = plan_bucket(&c, &s, &owner(), None).await.unwrap();
    match apply_bucket(&c, &s, &owner(), &plan, None).await {
        Ok(_) => {} // moto stores policies without checking them; AWS would refuse this one.
        Err(e) => {
            assert!(!e.is_transient(), "{e:?}");
            assert!(
                e.to_string().contains("PutBucketPolicy") && e.to_string().contains(&name),
                "{e}"
            );
        }
    }
}

#[tokio::test]
async fn buckets_are_created_in_their_region_and_cannot_move() {
    let tb = require_testbed!();
    let (c, _log) = client(tb).await;
    let name = support::unique_name("region");
    let s = spec(&name, "  region: eu-west-1\n  versioning: Enabled\n");
    let plan = converge(&c, &s).await;
    assert_eq!(plan.action, BucketAction::Create);
    let sdk = tb.s3_client().await;
    let loc = sdk
        .get_bucket_location()
        .bucket(&name)
        .send()
        .await
        .unwrap();
    assert_eq!(
        loc.location_constraint().map(|l| l.as_str()),
        Some("eu-west-1")
    );
    assert!(plan_bucket(&c, &s, &owner(), None).await.unwrap().is_noop());
    assert_healthy(&c, &s).await;

    let moved = spec(&name, "  region: us-west-2\n  versioning: Enabled\n");
    match plan_bucket(&c, &moved, &owner(), None).await {
        Err(e @ S3Error::Conflict { .. }) => {
            assert!(e.to_string().contains("eu-west-1"), "{e}");
            assert!(!e.is_transient());
        }
        other => panic!("expected a region conflict, got {other:?}"),
    }
}
