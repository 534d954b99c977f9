//! Confinement (issue 14): an environment's bounds from the host config hold against what a pusher
//! commits. Out-of-bounds namespaces, cluster-wide bindings to `system:` groups and buckets outside
//! `buckets:` reject the whole commit before any request; with `service_account`, the cluster's
//! RBAC for that ServiceAccount refuses what it does not allow, and that is recorded.

mod support;

use std::time::Duration;

use gitopsd::status::Outcome;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, Role, RoleBinding};
use kube::Api;
use kube::api::PostParams;
use support::gitopsd::{Fixture, admin_writes, audit_writes, configmap};

/// A fixture with the default bounds (only its own namespace and what it creates).
async fn bounded(tb: &'static support::Testbed, prefix: &str, bounds: &str) -> Fixture {
    Fixture::with(tb, prefix, |env| {
        env.health_timeout = Duration::from_secs(60);
        env.bounds = bounds.to_string();
    })
    .await
}

fn once(f: &Fixture) -> support::gitopsd::CmdOut {
    f.gitopsd.once(Some(&f.env.name))
}

fn write(f: &Fixture, name: &str, text: &str) {
    f.repo.write(&format!("{}/{name}", f.env.path), text);
}

/// The writes (dry-runs included) made in `ns` with the testbed's admin credentials, which
/// gitopsd uses, other than the test's own creation of the namespace.
async fn writes_in(tb: &'static support::Testbed, f: &Fixture, ns: &str) -> usize {
    let events = audit_writes(tb, &f.client, ns).await;
    admin_writes(&events)
        .iter()
        .filter(|e| e.resource != "namespaces")
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_outside_the_allowed_namespaces_rejects_the_commit_and_applies_nothing() {
    let tb = require_testbed!();
    let f = bounded(tb, "confine-ns", "").await;
    let outside = tb.namespace(&f.client, "confine-outside").await;
    write(&f, "inside.yaml", &configmap("inside", &[("k", "1")]));
    write(
        &f,
        "outside.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: escaped\n  namespace: {outside}\ndata: {{k: '1'}}\n"
        ),
    );
    let c1 = f.repo.commit_push("one object elsewhere");
    let out = once(&f);
    out.assert_failure("an out-of-bounds commit is rejected");
    // One readable line: outcome, short commit, counts, the first error with file:line.
    let line = format!("{}: rejected {}: 0 created", f.env.name, &c1[..12]);
    assert!(out.stdout.contains(&line), "{out}");
    assert!(out.stdout.contains("outside.yaml:1"), "{out}");
    let js = f
        .gitopsd
        .cmd("once", &["--env", &f.env.name, "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(js.stdout.trim()).expect("once --output json");
    assert_eq!(v[0]["outcome"], "rejected", "{js}");
    assert_eq!(v[0]["commit"], c1.as_str(), "{js}");

    let r = f.repo.expect_record(&c1, &f.env.name);
    assert_eq!(r.outcome, Outcome::Rejected, "{r:?}");
    let e = r
        .errors
        .iter()
        .find(|e| e.object == format!("ConfigMap {outside}/escaped"))
        .unwrap_or_else(|| panic!("the escaped object is named: {r:?}"));
    assert!(e.reason.contains("allowed_namespaces"), "{e:?}");
    assert_eq!(
        e.at.as_deref(),
        Some(&*format!("{}/outside.yaml:1", f.env.path))
    );
    // Nothing of the commit reached the API server, not even a dry-run.
    assert_eq!(
        writes_in(tb, &f, &f.ns).await,
        0,
        "no request for the in-bounds object"
    );
    assert_eq!(
        writes_in(tb, &f, &outside).await,
        0,
        "no request for the escaped one"
    );

    // The same object within allowed_namespaces is applied.
    let f2 = bounded(
        tb,
        "confine-ns-ok",
        &format!("    allowed_namespaces: ['{outside}', 'confine-ns-ok-*']\n"),
    )
    .await;
    write(
        &f2,
        "outside.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: allowed\n  namespace: {outside}\ndata: {{k: '1'}}\n"
        ),
    );
    let c2 = f2.repo.commit_push("allowed elsewhere");
    once(&f2).assert_success("within allowed_namespaces");
    let r = f2.repo.expect_record(&c2, &f2.env.name);
    assert_eq!(r.outcome, Outcome::Healthy, "{r:?}");
}

fn note_text(f: &Fixture, commit: &str) -> String {
    f.repo.note_text(commit).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_role_binding_to_system_authenticated_is_rejected() {
    let tb = require_testbed!();
    // Even with every cluster-scoped kind allowed, the default denied_kinds refuse it.
    let f = bounded(tb, "confine-crb", "    cluster_scoped: ['*']\n").await;
    let name = format!("{}-everyone", f.env.name);
    write(
        &f,
        "crb.yaml",
        &format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: {name}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}}\n\
             subjects:\n  - {{kind: Group, apiGroup: rbac.authorization.k8s.io, name: 'system:authenticated'}}\n"
        ),
    );
    let c1 = f.repo.commit_push("everyone is admin");
    once(&f).assert_failure("a binding to system:authenticated is rejected");
    let r = f.repo.expect_record(&c1, &f.env.name);
    assert_eq!(r.outcome, Outcome::Rejected, "{r:?}");
    assert!(
        r.errors
            .iter()
            .any(|e| e.object.contains(&name) && e.reason.contains("system:authenticated")),
        "{}",
        note_text(&f, &c1)
    );
    let crbs: Api<ClusterRoleBinding> = Api::all(f.client.clone());
    assert!(crbs.get_opt(&name).await.unwrap().is_none(), "not created");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_outside_buckets_is_rejected() {
    let tb = require_testbed!();
    let keys = tempfile::tempdir().unwrap();
    let id = keys.path().join("id");
    let secret = keys.path().join("secret");
    std::fs::write(&id, tb.env("AWS_ACCESS_KEY_ID")).unwrap();
    std::fs::write(&secret, tb.env("AWS_SECRET_ACCESS_KEY")).unwrap();
    let f = Fixture::with(tb, "confine-bucket", |env| {
        env.bounds = "    buckets: ['confine-ours-*']\n".to_string();
        env.extra = format!(
            "    s3:\n      endpoint: {}\n      region: {}\n      force_path_style: true\n      access_key_id_file: {}\n      secret_access_key_file: {}\n",
            tb.env("GITOPSD_TEST_S3_ENDPOINT"),
            tb.env("GITOPSD_TEST_S3_REGION"),
            id.display(),
            secret.display()
        );
    })
    .await;
    let bucket = format!("confine-theirs-{}", f.env.name);
    write(
        &f,
        "bucket.yaml",
        &format!(
            "apiVersion: gitopsd.dev/v1alpha1\nkind: Bucket\nmetadata:\n  name: data\nspec:\n  name: {bucket}\n"
        ),
    );
    let c1 = f.repo.commit_push("someone else's bucket");
    once(&f).assert_failure("a bucket outside buckets: is rejected");
    let r = f.repo.expect_record(&c1, &f.env.name);
    assert_eq!(r.outcome, Outcome::Rejected, "{r:?}");
    assert!(
        r.errors
            .iter()
            .any(|e| e.reason.contains(&bucket) && e.reason.contains("confine-ours-*")),
        "{r:?}"
    );
    let s3 = tb.s3_client().await;
    assert!(
        s3.head_bucket().bucket(&bucket).send().await.is_err(),
        "bucket {bucket} was not created"
    );
}

/// A ServiceAccount in `ns` that may manage ConfigMaps there, and nothing else.
async fn configmap_writer(client: &kube::Client, ns: &str) -> String {
    let name = "configmap-writer";
    let pp = PostParams::default();
    let sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(&pp, &sa)
        .await
        .unwrap();
    let role: Role = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                   "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}]
    }))
    .unwrap();
    Api::<Role>::namespaced(client.clone(), ns)
        .create(&pp, &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .create(&pp, &binding)
        .await
        .unwrap();
    format!("{ns}/{name}")
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_service_account_the_cluster_refuses_what_it_may_not_create() {
    let tb = require_testbed!();
    let f = bounded(tb, "confine-sa", "").await;
    let sa = configmap_writer(&f.client, &f.ns).await;
    let gitopsd = support::gitopsd::Gitopsd::new(
        tb,
        &f.repo.remote,
        support::gitopsd::Transport::Https,
        &[{
            let mut env = f.env.clone();
            env.extra = format!("    service_account: {sa}\n");
            env
        }],
    );
    write(&f, "cm.yaml", &configmap("allowed", &[("k", "1")]));
    let c1 = f
        .repo
        .commit_push("a ConfigMap, which the ServiceAccount may write");
    gitopsd
        .once(Some(&f.env.name))
        .assert_success("applied as the ServiceAccount");
    let r = f.repo.expect_record(&c1, &f.env.name);
    assert_eq!(r.outcome, Outcome::Healthy, "{r:?}");
    // The write was made as the ServiceAccount (impersonated), not as the daemon's own user.
    let user = format!("system:serviceaccount:{}", sa.replace('/', ":"));
    let events = audit_writes(tb, &f.client, &f.ns).await;
    assert!(
        events
            .iter()
            .any(|e| e.impersonated.as_deref() == Some(&*user)),
        "no write impersonating {user}: {events:?}"
    );

    write(
        &f,
        "secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  password: hunter2\n",
    );
    write(&f, "cm.yaml", &configmap("allowed", &[("k", "2")]));
    let c2 = f.repo.commit_push("a Secret, which it may not");
    gitopsd
        .once(Some(&f.env.name))
        .assert_failure("the cluster refuses the Secret");
    let r = f.repo.expect_record(&c2, &f.env.name);
    assert_eq!(r.outcome, Outcome::Rejected, "{r:?}");
    assert!(
        r.errors
            .iter()
            .any(|e| e.object.contains("Secret") && e.reason.to_lowercase().contains("forbidden")),
        "{r:?}"
    );
    // All or nothing: the ConfigMap change of the same commit was not applied either.
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(f.client.clone(), &f.ns);
    let cm = cms.get("allowed").await.unwrap();
    assert_eq!(cm.data.unwrap()["k"], "1");
    let secrets: Api<Secret> = Api::namespaced(f.client.clone(), &f.ns);
    assert!(secrets.get_opt("creds").await.unwrap().is_none());
}
