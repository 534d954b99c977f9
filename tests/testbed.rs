//! Proves the testbed (tests/testbed/up): Kubernetes with kwok nodes, both S3 servers, both git endpoints.
//! Each test isolates itself by a unique namespace, bucket or repository name.

mod support;

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret, ServiceAccount};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use support::wait_until;

// ---------------------------------------------------------------- Kubernetes

fn condition(conds: Option<&Vec<serde_json::Value>>, ty: &str) -> Option<(String, String)> {
    conds?.iter().find(|c| c["type"] == ty).map(|c| {
        (
            c["status"].as_str().unwrap_or_default().to_string(),
            c["reason"].as_str().unwrap_or_default().to_string(),
        )
    })
}

fn status_conditions<T: serde::Serialize>(obj: &T) -> Vec<serde_json::Value> {
    let v = serde_json::to_value(obj).unwrap();
    v["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn deployment(
    name: &str,
    replicas: i32,
    pod_labels: serde_json::Value,
    progress_deadline: i32,
) -> Deployment {
    let mut labels = json!({ "app": name });
    labels
        .as_object_mut()
        .unwrap()
        .extend(pod_labels.as_object().unwrap().clone());
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "progressDeadlineSeconds": progress_deadline,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": labels },
                "spec": { "containers": [{ "name": "app", "image": "registry.invalid/gitopsd/fake:1",
                    "resources": { "requests": { "cpu": "10m", "memory": "16Mi" } } }] }
            }
        }
    }))
    .unwrap()
}

fn job(name: &str, pod_labels: serde_json::Value) -> Job {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": { "labels": pod_labels },
                "spec": { "restartPolicy": "Never",
                    "containers": [{ "name": "job", "image": "registry.invalid/gitopsd/fake:1" }] }
            }
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn kube_version_and_kwok_nodes_ready() {
    let tb = require_testbed!();
    let client = tb.kube_client().await;
    let version = client.apiserver_version().await.expect("GET /version");
    assert_eq!(version.git_version, "v1.36.3");

    let nodes = Api::<Node>::all(client.clone())
        .list(&kube::api::ListParams::default().labels("type=kwok"))
        .await
        .unwrap();
    assert!(
        nodes.items.len() >= 2,
        "expected >= 2 kwok nodes, got {}",
        nodes.items.len()
    );
    let mut zones = std::collections::BTreeSet::new();
    for node in &nodes.items {
        let name = node.metadata.name.clone().unwrap();
        let ready = condition(Some(&status_conditions(node)), "Ready");
        assert_eq!(
            ready.map(|r| r.0).as_deref(),
            Some("True"),
            "node {name} not Ready"
        );
        let labels = node.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("kubernetes.io/hostname"), Some(&name));
        zones.insert(
            labels
                .get("topology.kubernetes.io/zone")
                .cloned()
                .expect("zone label"),
        );
    }
    assert!(
        zones.len() >= 2,
        "nodes should be in different zones: {zones:?}"
    );
}

#[tokio::test]
async fn deployment_becomes_available() {
    let tb = require_testbed!();
    let client = tb.kube_client().await;
    let ns = tb.namespace(&client, "deploy-ok").await;
    let api = Api::<Deployment>::namespaced(client.clone(), &ns);
    api.create(
        &PostParams::default(),
        &deployment("web", 3, json!({}), 600),
    )
    .await
    .unwrap();
    wait_until(
        "Deployment web Available with 3 ready replicas",
        Duration::from_secs(60),
        || async {
            let d = api.get("web").await.unwrap();
            let st = d.status.clone().unwrap_or_default();
            let available = condition(Some(&status_conditions(&d)), "Available").map(|c| c.0);
            available.as_deref() == Some("True")
                && st.ready_replicas == Some(3)
                && st.available_replicas == Some(3)
        },
    )
    .await;
}

#[tokio::test]
async fn unready_deployment_exceeds_progress_deadline() {
    let tb = require_testbed!();
    let client = tb.kube_client().await;
    let ns = tb.namespace(&client, "deploy-unready").await;
    let api = Api::<Deployment>::namespaced(client.clone(), &ns);
    let d = deployment("stuck", 2, json!({ "gitopsd.test/fail": "unready" }), 10);
    api.create(&PostParams::default(), &d).await.unwrap();
    wait_until(
        "Deployment stuck to report ProgressDeadlineExceeded",
        Duration::from_secs(90),
        || async {
            let d = api.get("stuck").await.unwrap();
            let ready = d
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            assert_eq!(
                ready, 0,
                "pods labelled gitopsd.test/fail=unready must never be ready"
            );
            let progressing = condition(Some(&status_conditions(&d)), "Progressing");
            progressing == Some(("False".into(), "ProgressDeadlineExceeded".into()))
        },
    )
    .await;
    let d = api.get("stuck").await.unwrap();
    let available = condition(Some(&status_conditions(&d)), "Available").map(|c| c.0);
    assert_eq!(available.as_deref(), Some("False"));
    // The pods exist and run: only readiness is missing.
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), &ns)
        .list(&kube::api::ListParams::default().labels("app=stuck"))
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 2);
    for p in pods.items {
        assert_eq!(p.status.and_then(|s| s.phase).as_deref(), Some("Running"));
    }
}

#[tokio::test]
async fn job_completes_and_crashing_job_fails() {
    let tb = require_testbed!();
    let client = tb.kube_client().await;
    let ns = tb.namespace(&client, "jobs").await;
    let api = Api::<Job>::namespaced(client.clone(), &ns);
    api.create(&PostParams::default(), &job("ok", json!({})))
        .await
        .unwrap();
    api.create(
        &PostParams::default(),
        &job("crash", json!({ "gitopsd.test/fail": "crash" })),
    )
    .await
    .unwrap();
    wait_until("Job ok Complete", Duration::from_secs(60), || async {
        let j = api.get("ok").await.unwrap();
        let conds = status_conditions(&j);
        assert_ne!(
            condition(Some(&conds), "Failed").map(|c| c.0).as_deref(),
            Some("True"),
            "Job ok failed"
        );
        condition(Some(&conds), "Complete").map(|c| c.0).as_deref() == Some("True")
    })
    .await;
    wait_until("Job crash Failed", Duration::from_secs(60), || async {
        let j = api.get("crash").await.unwrap();
        let conds = status_conditions(&j);
        assert_ne!(
            condition(Some(&conds), "Complete").map(|c| c.0).as_deref(),
            Some("True"),
            "Job crash completed"
        );
        condition(Some(&conds), "Failed").map(|c| c.0).as_deref() == Some("True")
    })
    .await;
}

#[tokio::test]
async fn server_side_apply_and_dry_run() {
    let tb = require_testbed!();
    let client = tb.kube_client().await;
    let ns = tb.namespace(&client, "ssa").await;
    let api = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let cm = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "cfg" }, "data": { "a": "1" } });

    // Dry-run: the server answers with the object but stores nothing.
    let dry = api
        .patch(
            "cfg",
            &PatchParams::apply("gitopsd-test").dry_run(),
            &Patch::Apply(&cm),
        )
        .await
        .unwrap();
    assert_eq!(dry.data.unwrap()["a"], "1");
    assert!(
        api.get_opt("cfg").await.unwrap().is_none(),
        "dry-run must not create the object"
    );

    let applied = api
        .patch(
            "cfg",
            &PatchParams::apply("gitopsd-test"),
            &Patch::Apply(&cm),
        )
        .await
        .unwrap();
    let managers = applied.metadata.managed_fields.unwrap_or_default();
    assert!(
        managers
            .iter()
            .any(|m| m.manager.as_deref() == Some("gitopsd-test")
                && m.operation.as_deref() == Some("Apply"))
    );

    // Another field manager changing our field conflicts unless forced.
    let other = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "cfg" }, "data": { "a": "2" } });
    let err = api
        .patch(
            "cfg",
            &PatchParams::apply("someone-else"),
            &Patch::Apply(&other),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409),
        "expected a conflict, got {err}"
    );
    let dry = api
        .patch(
            "cfg",
            &PatchParams::apply("someone-else").force().dry_run(),
            &Patch::Apply(&other),
        )
        .await
        .unwrap();
    assert_eq!(dry.data.unwrap()["a"], "2");
    assert_eq!(
        api.get("cfg").await.unwrap().data.unwrap()["a"],
        "1",
        "forced dry-run must not change the object"
    );
}

#[tokio::test]
async fn service_account_token_authenticates() {
    let tb = require_testbed!();
    let client = tb.kube_client().await;
    let ns = tb.namespace(&client, "satoken").await;
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), &ns);
    let tr: TokenRequest =
        serde_json::from_value(json!({ "spec": { "audiences": [], "expirationSeconds": 600 } }))
            .unwrap();
    let tr = sas
        .create_token_request("default", &PostParams::default(), &tr)
        .await
        .unwrap();
    let token = tr
        .status
        .and_then(|s| s.token)
        .expect("TokenRequest status.token");

    let sa_client = tb.kube_client_with_token(&token).await;
    let review: SelfSubjectReview = serde_json::from_value(json!({})).unwrap();
    let review = Api::<SelfSubjectReview>::all(sa_client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SelfSubjectReview with the service-account token");
    let user = review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username);
    assert_eq!(user, Some(format!("system:serviceaccount:{ns}:default")));

    // Authenticated (no 401) but not authorized: 403.
    let err = Api::<Secret>::namespaced(sa_client, "kube-system")
        .list(&Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "expected 403, got {err}"
    );

    // A garbage token is unauthenticated: 401.
    let bad = tb.kube_client_with_token("not-a-token").await;
    let err = Api::<Secret>::namespaced(bad, &ns)
        .list(&Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 401),
        "expected 401, got {err}"
    );
}

#[tokio::test]
async fn static_persistent_volume_binds() {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    let tb = require_testbed!();
    let client = tb.kube_client().await;
    let ns = tb.namespace(&client, "pvc").await;
    let pv_name = support::unique_name("pv");
    let class = format!("static-{pv_name}");
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": { "name": pv_name },
        "spec": { "capacity": { "storage": "1Gi" }, "accessModes": ["ReadWriteOnce"],
                  "storageClassName": class, "hostPath": { "path": "/tmp/gitopsd-testbed-pv" } }
    }))
    .unwrap();
    Api::<PersistentVolume>::all(client.clone())
        .create(&PostParams::default(), &pv)
        .await
        .unwrap();
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": { "name": "data" },
        "spec": { "accessModes": ["ReadWriteOnce"], "storageClassName": class,
                  "resources": { "requests": { "storage": "1Gi" } } }
    }))
    .unwrap();
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns);
    pvcs.create(&PostParams::default(), &pvc).await.unwrap();
    wait_until(
        "PVC data Bound to the static PV",
        Duration::from_secs(60),
        || async {
            let c = pvcs.get("data").await.unwrap();
            c.status.and_then(|s| s.phase).as_deref() == Some("Bound")
                && c.spec.and_then(|s| s.volume_name).as_deref() == Some(pv_name.as_str())
        },
    )
    .await;
}

// ---------------------------------------------------------------- S3

#[tokio::test]
async fn s3_primary_bucket_configuration_round_trips() {
    use aws_sdk_s3::types::*;
    let tb = require_testbed!();
    let s3 = tb.s3_client().await;
    let bucket = support::unique_name("cfg");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();

    s3.put_bucket_versioning()
        .bucket(&bucket)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let v = s3
        .get_bucket_versioning()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert_eq!(v.status(), Some(&BucketVersioningStatus::Enabled));

    let rule = ServerSideEncryptionRule::builder()
        .apply_server_side_encryption_by_default(
            ServerSideEncryptionByDefault::builder()
                .sse_algorithm(ServerSideEncryption::Aes256)
                .build()
                .unwrap(),
        )
        .build();
    s3.put_bucket_encryption()
        .bucket(&bucket)
        .server_side_encryption_configuration(
            ServerSideEncryptionConfiguration::builder()
                .rules(rule)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let enc = s3
        .get_bucket_encryption()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let algo = enc.server_side_encryption_configuration().unwrap().rules()[0]
        .apply_server_side_encryption_by_default()
        .unwrap()
        .sse_algorithm()
        .clone();
    assert_eq!(algo, ServerSideEncryption::Aes256);

    let lc_rule = LifecycleRule::builder()
        .id("expire-tmp")
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix("tmp/").build())
        .expiration(LifecycleExpiration::builder().days(7).build())
        .build()
        .unwrap();
    s3.put_bucket_lifecycle_configuration()
        .bucket(&bucket)
        .lifecycle_configuration(
            BucketLifecycleConfiguration::builder()
                .rules(lc_rule)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let lc = s3
        .get_bucket_lifecycle_configuration()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert_eq!(lc.rules().len(), 1);
    assert_eq!(lc.rules()[0].id(), Some("expire-tmp"));
    assert_eq!(lc.rules()[0].expiration().and_then(|e| e.days()), Some(7));

    s3.put_public_access_block()
        .bucket(&bucket)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .ignore_public_acls(true)
                .block_public_policy(false)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let pab = s3
        .get_public_access_block()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let pab = pab.public_access_block_configuration().unwrap();
    assert_eq!(pab.block_public_acls(), Some(true));
    assert_eq!(pab.block_public_policy(), Some(false));

    let policy = json!({
        "Version": "2012-10-17",
        "Statement": [{ "Sid": "read", "Effect": "Allow", "Principal": { "AWS": "arn:aws:iam::123456789012:root" },
                        "Action": "s3:GetObject", "Resource": format!("arn:aws:s3:::{bucket}/*") }]
    });
    s3.put_bucket_policy()
        .bucket(&bucket)
        .policy(policy.to_string())
        .send()
        .await
        .unwrap();
    let got = s3.get_bucket_policy().bucket(&bucket).send().await.unwrap();
    let got: serde_json::Value = serde_json::from_str(got.policy().unwrap()).unwrap();
    assert_eq!(got["Statement"][0]["Sid"], "read");

    s3.put_bucket_tagging()
        .bucket(&bucket)
        .tagging(
            Tagging::builder()
                .tag_set(Tag::builder().key("team").value("gitops").build().unwrap())
                .tag_set(Tag::builder().key("env").value("test").build().unwrap())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let tags = s3
        .get_bucket_tagging()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let mut tags: Vec<_> = tags
        .tag_set()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect();
    tags.sort();
    assert_eq!(
        tags,
        vec![
            ("env".into(), "test".into()),
            ("team".into(), "gitops".into())
        ]
    );

    let cors_rule = CorsRule::builder()
        .allowed_methods("GET")
        .allowed_origins("https://example.com")
        .allowed_headers("*")
        .max_age_seconds(300)
        .build()
        .unwrap();
    s3.put_bucket_cors()
        .bucket(&bucket)
        .cors_configuration(
            CorsConfiguration::builder()
                .cors_rules(cors_rule)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let cors = s3.get_bucket_cors().bucket(&bucket).send().await.unwrap();
    assert_eq!(cors.cors_rules().len(), 1);
    assert_eq!(
        cors.cors_rules()[0].allowed_origins(),
        ["https://example.com"]
    );
    assert_eq!(cors.cors_rules()[0].max_age_seconds(), Some(300));

    // Versioning is real: two puts give two versions.
    for body in ["one", "two"] {
        s3.put_object()
            .bucket(&bucket)
            .key("k")
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
    }
    let versions = s3
        .list_object_versions()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert_eq!(versions.versions().len(), 2);
}

#[tokio::test]
async fn s3_second_server_objects() {
    let tb = require_testbed!();
    let s3 = tb.s3_client_2().await;
    let bucket = support::unique_name("obj");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    for (key, body) in [("a.txt", "alpha"), ("dir/b.txt", "beta")] {
        s3.put_object()
            .bucket(&bucket)
            .key(key)
            .content_type("text/plain")
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
    }
    let got = s3
        .get_object()
        .bucket(&bucket)
        .key("dir/b.txt")
        .send()
        .await
        .unwrap();
    let bytes = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(&bytes[..], b"beta");

    let list = s3.list_objects_v2().bucket(&bucket).send().await.unwrap();
    let mut keys: Vec<_> = list.contents().iter().filter_map(|o| o.key()).collect();
    keys.sort();
    assert_eq!(keys, ["a.txt", "dir/b.txt"]);

    s3.delete_object()
        .bucket(&bucket)
        .key("a.txt")
        .send()
        .await
        .unwrap();
    let list = s3.list_objects_v2().bucket(&bucket).send().await.unwrap();
    let keys: Vec<_> = list.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["dir/b.txt"]);
    let err = s3
        .get_object()
        .bucket(&bucket)
        .key("a.txt")
        .send()
        .await
        .unwrap_err();
    assert!(err.into_service_error().is_no_such_key());
}

// ---------------------------------------------------------------- git

/// A local repository with one commit on main holding `file` = `content`; returns (repo, commit id).
fn local_repo_with_commit(dir: &Path, file: &str, content: &str) -> (git2::Repository, git2::Oid) {
    let repo =
        git2::Repository::init_opts(dir, git2::RepositoryInitOptions::new().initial_head("main"))
            .unwrap();
    let oid = commit_file(&repo, file, content, "first");
    (repo, oid)
}

fn commit_file(repo: &git2::Repository, file: &str, content: &str, msg: &str) -> git2::Oid {
    std::fs::write(repo.workdir().unwrap().join(file), content).unwrap();
    let mut index = repo.index().unwrap();
    index.add_path(Path::new(file)).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("gitopsd test", "test@gitopsd.invalid").unwrap();
    let parents: Vec<git2::Commit> = repo
        .head()
        .ok()
        .and_then(|h| h.peel_to_commit().ok())
        .into_iter()
        .collect();
    let parent_refs: Vec<&git2::Commit> = parents.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, msg, &tree, &parent_refs)
        .unwrap()
}

fn clone(
    url: &str,
    dir: &Path,
    callbacks: git2::RemoteCallbacks<'static>,
) -> Result<git2::Repository, git2::Error> {
    let mut fo = git2::FetchOptions::new();
    fo.remote_callbacks(callbacks);
    git2::build::RepoBuilder::new()
        .fetch_options(fo)
        .clone(url, dir)
}

#[tokio::test]
async fn git_https_push_clone_and_wrong_password() {
    let tb = require_testbed!();
    tb.trust_git_ca();
    let repo = tb.new_repo("https");
    let tmp = tempfile::tempdir().unwrap();
    let password = tb.env("GITOPSD_TEST_GIT_PASSWORD");

    let (local, oid) = local_repo_with_commit(&tmp.path().join("src"), "hello.txt", "over https\n");
    let mut remote = local.remote("origin", &repo.https_url).unwrap();
    support::git2_push(
        &mut remote,
        &["refs/heads/main:refs/heads/main"],
        tb.git2_https_callbacks(password),
    )
    .expect("push over https");

    let cloned = clone(
        &repo.https_url,
        &tmp.path().join("clone"),
        tb.git2_https_callbacks(password),
    )
    .unwrap();
    assert_eq!(cloned.head().unwrap().peel_to_commit().unwrap().id(), oid);
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("clone/hello.txt")).unwrap(),
        "over https\n"
    );

    // Wrong password: refused for both fetch and push.
    let result = clone(
        &repo.https_url,
        &tmp.path().join("clone2"),
        tb.git2_https_callbacks("wrong"),
    );
    assert!(result.is_err(), "clone with a wrong password must fail");
    commit_file(&local, "hello.txt", "second\n", "second");
    let mut remote = local.find_remote("origin").unwrap();
    support::git2_push(
        &mut remote,
        &["refs/heads/main:refs/heads/main"],
        tb.git2_https_callbacks("wrong"),
    )
    .expect_err("push with a wrong password must fail");

    // No credentials at all: the server asks (401), it does not serve anonymously.
    let mut cb = git2::RemoteCallbacks::new();
    cb.credentials(|_, _, _| Err(git2::Error::from_str("no credentials")));
    assert!(clone(&repo.https_url, &tmp.path().join("clone3"), cb).is_err());
}

#[tokio::test]
async fn git_push_rejection_is_reported() {
    let tb = require_testbed!();
    tb.trust_git_ca();
    let repo = tb.new_repo("reject");
    let tmp = tempfile::tempdir().unwrap();
    let password = tb.env("GITOPSD_TEST_GIT_PASSWORD");
    let (a, _) = local_repo_with_commit(&tmp.path().join("a"), "f", "a\n");
    let (b, _) = local_repo_with_commit(&tmp.path().join("b"), "f", "b\n");
    let mut ra = a.remote("origin", &repo.https_url).unwrap();
    support::git2_push(
        &mut ra,
        &["refs/heads/main:refs/heads/main"],
        tb.git2_https_callbacks(password),
    )
    .unwrap();
    // The server denies non-fast-forwards (like a protected branch); b's main is unrelated and
    // force-pushed, so libgit2 sends it and only the server refuses it, per ref.
    let config =
        Path::new(tb.env("GITOPSD_TEST_GIT_REPOS_DIR")).join(format!("{}.git/config", repo.name));
    let status = std::process::Command::new("git")
        .envs(support::git_isolated_env())
        .args(["config", "--file"])
        .arg(&config)
        .args(["receive.denyNonFastForwards", "true"])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rb = b.remote("origin", &repo.https_url).unwrap();
    let err = support::git2_push(
        &mut rb,
        &["+refs/heads/main:refs/heads/main"],
        tb.git2_https_callbacks(password),
    )
    .expect_err("non-fast-forward push must be rejected");
    assert!(err.contains("refs/heads/main"), "{err}");
}

#[tokio::test]
async fn git_ssh_push_clone_wrong_key_and_host_key() {
    let tb = require_testbed!();
    let repo = tb.new_repo("ssh");
    let tmp = tempfile::tempdir().unwrap();
    let key = Path::new(tb.env("GITOPSD_TEST_GIT_SSH_KEY"));

    let (local, oid) = local_repo_with_commit(&tmp.path().join("src"), "hello.txt", "over ssh\n");
    let mut remote = local.remote("origin", &repo.ssh_url).unwrap();
    support::git2_push(
        &mut remote,
        &["refs/heads/main:refs/heads/main"],
        tb.git2_ssh_callbacks(key, None),
    )
    .expect("push over ssh");
    let cloned = clone(
        &repo.ssh_url,
        &tmp.path().join("clone"),
        tb.git2_ssh_callbacks(key, None),
    )
    .unwrap();
    assert_eq!(cloned.head().unwrap().peel_to_commit().unwrap().id(), oid);

    // A key the server does not know is refused.
    let wrong = Path::new(tb.env("GITOPSD_TEST_GIT_SSH_WRONG_KEY"));
    assert!(
        clone(
            &repo.ssh_url,
            &tmp.path().join("clone2"),
            tb.git2_ssh_callbacks(wrong, None)
        )
        .is_err()
    );

    // A known_hosts that lists another key for the server makes the client refuse the server.
    let other_known_hosts = tmp.path().join("known_hosts");
    let other_key = std::fs::read_to_string(format!("{}.pub", wrong.display())).unwrap();
    let fields: Vec<&str> = other_key.split_whitespace().take(2).collect();
    let port = repo
        .ssh_url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    std::fs::write(
        &other_known_hosts,
        format!("[127.0.0.1]:{port} {} {}\n", fields[0], fields[1]),
    )
    .unwrap();
    let err = match clone(
        &repo.ssh_url,
        &tmp.path().join("clone3"),
        tb.git2_ssh_callbacks(key, Some(&other_known_hosts)),
    ) {
        Ok(_) => panic!("clone must fail when the host key is not the known one"),
        Err(e) => e,
    };
    assert!(err.message().replace(' ', "").contains("hostkey"), "{err}");
}

#[tokio::test]
async fn git_notes_push_and_fetch_with_explicit_refspec() {
    let tb = require_testbed!();
    let repo = tb.new_repo("notes");
    let tmp = tempfile::tempdir().unwrap();
    let key = Path::new(tb.env("GITOPSD_TEST_GIT_SSH_KEY"));
    let (local, oid) = local_repo_with_commit(&tmp.path().join("src"), "f", "x\n");
    let sig = git2::Signature::now("gitopsd test", "test@gitopsd.invalid").unwrap();
    local
        .note(
            &sig,
            &sig,
            Some("refs/notes/gitopsd"),
            oid,
            "status: ok",
            false,
        )
        .unwrap();
    let mut remote = local.remote("origin", &repo.ssh_url).unwrap();
    support::git2_push(
        &mut remote,
        &[
            "refs/heads/main:refs/heads/main",
            "refs/notes/gitopsd:refs/notes/gitopsd",
        ],
        tb.git2_ssh_callbacks(key, None),
    )
    .unwrap();

    // A clone does not fetch notes...
    let cloned = clone(
        &repo.ssh_url,
        &tmp.path().join("clone"),
        tb.git2_ssh_callbacks(key, None),
    )
    .unwrap();
    assert!(cloned.find_reference("refs/notes/gitopsd").is_err());
    // ...an explicit refspec does.
    let mut origin = cloned.find_remote("origin").unwrap();
    let mut fo = git2::FetchOptions::new();
    fo.remote_callbacks(tb.git2_ssh_callbacks(key, None));
    origin
        .fetch(&["+refs/notes/*:refs/notes/*"], Some(&mut fo), None)
        .unwrap();
    let note = cloned.find_note(Some("refs/notes/gitopsd"), oid).unwrap();
    assert_eq!(note.message().unwrap(), "status: ok");
}

#[test]
fn unique_names_are_dns_labels() {
    let a = support::unique_name("Some_Prefix.With-Stuff-and-a-very-long-tail-that-goes-on");
    let b = support::unique_name("Some_Prefix.With-Stuff-and-a-very-long-tail-that-goes-on");
    assert_ne!(a, b);
    for n in [
        &a,
        &b,
        &support::unique_name(""),
        &support::unique_name("9x"),
    ] {
        assert!(n.len() <= 40, "{n}");
        assert!(
            n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{n}"
        );
        assert!(n.starts_with(|c: char| c.is_ascii_lowercase()), "{n}");
        assert!(!n.ends_with('-'), "{n}");
    }
}
