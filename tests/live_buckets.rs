//! Live state (issue 11) for buckets: a rollback restores bucket objects whose folder changed even
//! when the Bucket's YAML did not, and `prune: false` keeps buckets that left the repository.

mod support;

use std::time::Duration;

use gitopsd::status::Outcome;
use support::gitopsd::{Fixture, deployment};

/// A fixture whose environment reconciles buckets on the testbed's primary S3 server.
async fn with_s3(
    tb: &'static support::Testbed,
    prefix: &str,
    prune: bool,
) -> (Fixture, tempfile::TempDir) {
    let keys = tempfile::tempdir().unwrap();
    let id = keys.path().join("id");
    let secret = keys.path().join("secret");
    std::fs::write(&id, tb.env("AWS_ACCESS_KEY_ID")).unwrap();
    std::fs::write(&secret, tb.env("AWS_SECRET_ACCESS_KEY")).unwrap();
    let f = Fixture::with(tb, prefix, |env| {
        env.health_timeout = Duration::from_secs(60);
        env.extra = format!(
            "    s3:\n      endpoint: {}\n      region: {}\n      force_path_style: true\n      access_key_id_file: {}\n      secret_access_key_file: {}\n    prune: {prune}\n",
            tb.env("GITOPSD_TEST_S3_ENDPOINT"),
            tb.env("GITOPSD_TEST_S3_REGION"),
            id.display(),
            secret.display()
        );
    })
    .await;
    (f, keys)
}

fn bucket(id: &str, name: &str, source: &str) -> String {
    format!(
        "apiVersion: gitopsd.dev/v1alpha1\nkind: Bucket\nmetadata:\n  name: {id}\nspec:\n  name: {name}\n  deletionPolicy: Delete\n  objects:\n    source: {source}\n    delete: true\n"
    )
}

async fn object_text(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<String> {
    let out = s3.get_object().bucket(bucket).key(key).send().await.ok()?;
    let bytes = out.body.collect().await.ok()?.into_bytes();
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_restores_bucket_objects_whose_folder_changed() {
    let tb = require_testbed!();
    let (f, _keys) = with_s3(tb, "bsync", true).await;
    let s3 = tb.s3_client().await;
    let name = format!("{}-assets", f.env.name);
    let folder = format!("assets/{}", f.env.name);
    f.repo.write(
        &format!("{}/bucket.yaml", f.env.path),
        &bucket("assets", &name, &folder),
    );
    f.repo.write(&format!("{folder}/a.txt"), "v1");
    f.repo.write(
        &format!("{}/web.yaml", f.env.path),
        &deployment("web", 1, None, 30, "1"),
    );
    f.repo.commit_push("a bucket with one object, and web");
    f.gitopsd.once(None).assert_success("c1");
    assert_eq!(
        object_text(&s3, &name, "a.txt").await.as_deref(),
        Some("v1")
    );

    // c2 changes the folder (not the Bucket's YAML) and breaks web: the rollback must put a.txt back.
    f.repo.write(&format!("{folder}/a.txt"), "v2");
    f.repo.write(
        &format!("{}/web.yaml", f.env.path),
        &deployment("web", 1, Some("unready"), 3, "2"),
    );
    let c2 = f.repo.commit_push("new asset, broken web");
    f.gitopsd.once(None);
    let r = f.repo.expect_record(&c2, &f.env.name);
    assert_eq!(r.outcome, Outcome::RolledBack, "{r:?}");
    assert_eq!(
        object_text(&s3, &name, "a.txt").await.as_deref(),
        Some("v1"),
        "the rollback restored c1's object"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_false_keeps_a_bucket_that_left_the_repository() {
    let tb = require_testbed!();
    let (f, _keys) = with_s3(tb, "bkeep", false).await;
    let s3 = tb.s3_client().await;
    let name = format!("{}-keep", f.env.name);
    let folder = format!("assets/{}", f.env.name);
    f.repo.write(
        &format!("{}/bucket.yaml", f.env.path),
        &bucket("keep", &name, &folder),
    );
    f.repo.write(&format!("{folder}/a.txt"), "v1");
    f.repo.write(
        &format!("{}/cm.yaml", f.env.path),
        &support::gitopsd::configmap("cm", &[("k", "v")]),
    );
    f.repo.commit_push("a bucket");
    f.gitopsd.once(None).assert_success("c1");
    f.repo.remove(&format!("{}/bucket.yaml", f.env.path));
    let c2 = f.repo.commit_push("the bucket leaves the repository");
    f.gitopsd.once(None).assert_success("c2");
    let r = f.repo.expect_record(&c2, &f.env.name);
    assert!(
        r.messages.iter().any(|m| m.contains("prune is off")),
        "{r:?}"
    );
    assert!(
        s3.head_bucket().bucket(&name).send().await.is_ok(),
        "the bucket is kept"
    );
    assert_eq!(
        r.buckets.as_ref().map(|b| b.deleted),
        Some(0),
        "{:?}",
        r.buckets
    );
}
