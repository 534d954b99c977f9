//! Bucket ownership against the testbed's S3 server (moto): buckets gitopsd creates carry the
//! instance and environment tags; a bucket without them (or with another owner's) is neither
//! adopted, changed nor deleted. Also: an unreachable server gives a transient error.

mod support;

use std::collections::BTreeMap;

use aws_sdk_s3::types::{BucketVersioningStatus, Tag, Tagging, VersioningConfiguration};
use gitopsd::manifest::parse_file;
use gitopsd::s3::owner::{ENVIRONMENT_TAG, INSTANCE_TAG};
use gitopsd::s3::{
    self, BucketAction, BucketSpec, DeleteOutcome, Owner, S3Error, S3Settings, apply_bucket,
    check_health, delete_bucket, parse_bucket, plan_bucket,
};

fn settings(tb: &support::Testbed) -> S3Settings {
    S3Settings {
        endpoint: Some(tb.env("GITOPSD_TEST_S3_ENDPOINT").to_string()),
        region: tb.env("GITOPSD_TEST_S3_REGION").to_string(),
        force_path_style: true,
        access_key_id: Some(tb.env("AWS_ACCESS_KEY_ID").to_string()),
        secret_access_key: Some(tb.env("AWS_SECRET_ACCESS_KEY").to_string()),
    }
}

fn ours() -> Owner {
    Owner::new("ownership-tests", "dev")
}

fn manifest_spec(bucket: &str, body: &str) -> Result<BucketSpec, String> {
    let yaml = format!(
        "apiVersion: gitopsd.dev/v1alpha1\nkind: Bucket\nmetadata: {{name: assets}}\nspec:\n  name: {bucket}\n{body}"
    );
    let m = parse_file("env/dev/bucket.yaml", yaml.as_bytes())
        .unwrap()
        .remove(0);
    parse_bucket(&m).map_err(|errs| {
        errs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })
}

fn spec(bucket: &str, body: &str) -> BucketSpec {
    manifest_spec(bucket, body).unwrap_or_else(|e| panic!("invalid spec: {e}"))
}

async fn converge(c: &aws_sdk_s3::Client, s: &BucketSpec, owner: &Owner) {
    let plan = plan_bucket(c, s, owner, None).await.expect("plan");
    apply_bucket(c, s, owner, &plan, None).await.expect("apply");
}

async fn put_raw_tags(sdk: &aws_sdk_s3::Client, bucket: &str, tags: &BTreeMap<String, String>) {
    let set = tags
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build().unwrap())
        .collect();
    sdk.put_bucket_tagging()
        .bucket(bucket)
        .tagging(Tagging::builder().set_tag_set(Some(set)).build().unwrap())
        .send()
        .await
        .unwrap();
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn assert_not_owned(err: &S3Error, bucket: &str, owner: &Owner) {
    assert!(
        matches!(err, S3Error::NotOwned { bucket: b, .. } if b == bucket),
        "{err:?}"
    );
    assert!(!err.is_transient(), "{err:?}");
    let msg = err.to_string();
    for part in [
        bucket.to_string(),
        format!("{INSTANCE_TAG}={}", owner.instance),
        format!("{ENVIRONMENT_TAG}={}", owner.environment),
        "does not adopt".to_string(),
    ] {
        assert!(msg.contains(&part), "missing {part:?} in: {msg}");
    }
}

#[tokio::test]
async fn created_buckets_carry_ownership_tags_that_are_never_a_difference() {
    let tb = require_testbed!();
    let (c, log) = s3::client_with_log(&settings(tb)).await;
    let sdk = tb.s3_client().await;
    let name = support::unique_name("owned");
    let s = spec(&name, "  versioning: Enabled\n  tags: {team: web}\n");

    let plan = plan_bucket(&c, &s, &ours(), None).await.unwrap();
    assert_eq!(plan.action, BucketAction::Create);
    assert!(
        !plan.diff_text().contains("gitopsd.dev/"),
        "{}",
        plan.diff_text()
    );
    let report = apply_bucket(&c, &s, &ours(), &plan, None).await.unwrap();
    assert!(report.created);
    let mut want = ours().tags();
    want.insert("team".into(), "web".into());
    assert_eq!(support::bucket_tags(&sdk, &name).await, want);

    log.clear();
    let plan = plan_bucket(&c, &s, &ours(), None).await.unwrap();
    assert!(plan.is_noop(), "{:?}\n{}", plan.changes, plan.diff_text());
    assert_eq!(log.writes(), 0, "{:?}", log.entries());
    assert!(check_health(&c, &s, &ours()).await.unwrap().is_empty());

    // A tags update changes the spec's tags and keeps ours.
    let updated = spec(&name, "  versioning: Enabled\n  tags: {team: platform}\n");
    let plan = plan_bucket(&c, &updated, &ours(), None).await.unwrap();
    assert_eq!(plan.changes.len(), 1, "{:?}", plan.changes);
    assert_eq!(plan.changes[0].field, "tags");
    assert!(
        !plan.changes[0].before.contains("gitopsd.dev/"),
        "{:?}",
        plan.changes
    );
    assert!(
        !plan.changes[0].after.contains("gitopsd.dev/"),
        "{:?}",
        plan.changes
    );
    apply_bucket(&c, &updated, &ours(), &plan, None)
        .await
        .unwrap();
    let mut want = ours().tags();
    want.insert("team".into(), "platform".into());
    assert_eq!(support::bucket_tags(&sdk, &name).await, want);

    // An empty tags section clears the spec's tags only.
    let cleared = spec(&name, "  versioning: Enabled\n  tags: {}\n");
    converge(&c, &cleared, &ours()).await;
    assert_eq!(support::bucket_tags(&sdk, &name).await, ours().tags());
    assert!(
        plan_bucket(&c, &cleared, &ours(), None)
            .await
            .unwrap()
            .is_noop()
    );

    // A spec without a tags section still marks the bucket it creates.
    let bare = support::unique_name("owned-bare");
    converge(&c, &spec(&bare, ""), &ours()).await;
    assert_eq!(support::bucket_tags(&sdk, &bare).await, ours().tags());
}

#[tokio::test]
async fn an_existing_bucket_without_our_tags_is_not_adopted_or_changed() {
    let tb = require_testbed!();
    let (c, log) = s3::client_with_log(&settings(tb)).await;
    let sdk = tb.s3_client().await;
    let name = support::unique_name("foreign");
    sdk.create_bucket().bucket(&name).send().await.unwrap();
    let before_tags = map(&[("team", "legacy")]);
    put_raw_tags(&sdk, &name, &before_tags).await;
    sdk.put_bucket_versioning()
        .bucket(&name)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();

    let s = spec(
        &name,
        "  versioning: Suspended\n  tags: {team: web}\n  deletionPolicy: Delete\n",
    );
    log.clear();
    let err = plan_bucket(&c, &s, &ours(), None).await.unwrap_err();
    assert_not_owned(&err, &name, &ours());
    assert!(
        err.to_string().contains("no gitopsd ownership tags"),
        "{err}"
    );
    assert_eq!(
        delete_bucket(&c, &s, &ours()).await.unwrap(),
        DeleteOutcome::NotOwned
    );
    assert_eq!(log.writes(), 0, "{:?}", log.entries());
    assert_eq!(support::bucket_tags(&sdk, &name).await, before_tags);
    let v = sdk
        .get_bucket_versioning()
        .bucket(&name)
        .send()
        .await
        .unwrap();
    assert_eq!(v.status(), Some(&BucketVersioningStatus::Enabled));

    // A bucket with no tags at all is refused the same way.
    let bare = support::unique_name("foreign-bare");
    sdk.create_bucket().bucket(&bare).send().await.unwrap();
    let err = plan_bucket(&c, &spec(&bare, ""), &ours(), None)
        .await
        .unwrap_err();
    assert_not_owned(&err, &bare, &ours());
    assert!(support::bucket_tags(&sdk, &bare).await.is_empty());

    // Handing it over as the message says makes it ours.
    let mut handed = before_tags.clone();
    handed.extend(ours().tags());
    put_raw_tags(&sdk, &name, &handed).await;
    let plan = plan_bucket(&c, &s, &ours(), None).await.unwrap();
    assert_eq!(plan.action, BucketAction::Update);
    apply_bucket(&c, &s, &ours(), &plan, None).await.unwrap();
    let mut want = ours().tags();
    want.insert("team".into(), "web".into());
    assert_eq!(support::bucket_tags(&sdk, &name).await, want);
}

#[tokio::test]
async fn a_bucket_of_another_instance_or_environment_is_neither_adopted_nor_deleted() {
    let tb = require_testbed!();
    let (c, log) = s3::client_with_log(&settings(tb)).await;
    let sdk = tb.s3_client().await;
    let name = support::unique_name("other-owner");
    let s = spec(&name, "  versioning: Enabled\n  deletionPolicy: Delete\n");
    let other = Owner::new("other-instance", "dev");
    converge(&c, &s, &other).await;
    let theirs = support::bucket_tags(&sdk, &name).await;
    assert_eq!(theirs, other.tags());

    for intruder in [ours(), Owner::new("other-instance", "prod")] {
        log.clear();
        let err = plan_bucket(&c, &s, &intruder, None).await.unwrap_err();
        assert_not_owned(&err, &name, &intruder);
        assert!(
            err.to_string()
                .contains("gitopsd.dev/instance=other-instance"),
            "{err}"
        );
        assert_eq!(
            delete_bucket(&c, &s, &intruder).await.unwrap(),
            DeleteOutcome::NotOwned
        );
        let plan = s3::BucketPlan::deletion(&s);
        apply_bucket(&c, &s, &intruder, &plan, None).await.unwrap();
        assert_eq!(log.writes(), 0, "{:?}", log.entries());
        let problems = check_health(&c, &s, &intruder).await.unwrap();
        assert!(
            problems.iter().any(|p| p.contains("ownership tags")),
            "{problems:?}"
        );
    }
    sdk.head_bucket()
        .bucket(&name)
        .send()
        .await
        .expect("the other instance's bucket still exists");
    assert_eq!(support::bucket_tags(&sdk, &name).await, theirs);
}

#[tokio::test]
async fn an_owned_bucket_is_deleted() {
    let tb = require_testbed!();
    let (c, _log) = s3::client_with_log(&settings(tb)).await;
    let sdk = tb.s3_client().await;
    let name = support::unique_name("owned-delete");
    let s = spec(&name, "  tags: {team: web}\n  deletionPolicy: Delete\n");
    converge(&c, &s, &ours()).await;
    assert_eq!(
        delete_bucket(&c, &s, &ours()).await.unwrap(),
        DeleteOutcome::Deleted
    );
    assert!(sdk.head_bucket().bucket(&name).send().await.is_err());
    assert_eq!(
        delete_bucket(&c, &s, &ours()).await.unwrap(),
        DeleteOutcome::AlreadyGone
    );

    // Through a deletion plan too.
    converge(&c, &s, &ours()).await;
    let report = apply_bucket(&c, &s, &ours(), &s3::BucketPlan::deletion(&s), None)
        .await
        .unwrap();
    assert_eq!(report.write_calls, 1);
    assert!(sdk.head_bucket().bucket(&name).send().await.is_err());
}

#[test]
fn a_spec_setting_ownership_tags_is_rejected_at_parse_time() {
    for key in [INSTANCE_TAG, ENVIRONMENT_TAG, "gitopsd.dev/anything"] {
        let err =
            manifest_spec("my-bucket", &format!("  tags: {{team: web, {key}: x}}\n")).unwrap_err();
        assert!(
            err.contains(&format!(
                "env/dev/bucket.yaml:1: Bucket assets: spec.tags.{key}: the gitopsd.dev/ prefix is reserved"
            )),
            "{err}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_server_gives_a_transient_error_without_credentials() {
    // A loopback port that was just free: nothing listens there, connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let secret = "wJalrXUtnFEMI-K7MDENG-not-a-real-secret";
    let c = s3::client(&S3Settings {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        region: "us-east-1".into(),
        force_path_style: true,
        access_key_id: Some("AKIAOWNERSHIPTEST".into()),
        secret_access_key: Some(secret.into()),
    })
    .await;
    let s = spec("unreachable-bucket", "  deletionPolicy: Delete\n");
    let plan_err = plan_bucket(&c, &s, &ours(), None).await.unwrap_err();
    let delete_err = delete_bucket(&c, &s, &ours()).await.unwrap_err();
    for err in [plan_err, delete_err] {
        assert!(err.is_transient(), "{err:?}");
        let text = format!("{err} {err:?}");
        assert!(text.contains("unreachable-bucket"), "{text}");
        assert!(
            !text.contains(secret) && !text.contains("AKIAOWNERSHIPTEST"),
            "{text}"
        );
    }
}
