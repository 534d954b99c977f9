//! A first apply sends each object once (issue 17): created by its server-side apply, without a
//! separate dry-run, and still all or nothing. A refused object leaves the cluster as it was: what
//! the pass created is deleted again, every error is listed, and an existing object that is not
//! ours is refused before anything of its phase is sent. Later commits keep the dry-run.

mod support;

use std::time::Duration;

use gitopsd::status::Outcome;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::PostParams;
use support::gitopsd::{
    AuditEvent, Env, Fixture, Gitopsd, Transport, WorkRepo, admin_writes, audit_writes, configmap,
    owned_configmaps, wait_for,
};

fn applies(events: &[AuditEvent]) -> Vec<&AuditEvent> {
    events
        .iter()
        .filter(|e| e.verb == "patch" && !e.dry_run)
        .collect()
}

fn dry_runs(events: &[AuditEvent]) -> Vec<&AuditEvent> {
    events.iter().filter(|e| e.dry_run).collect()
}

/// `n` ConfigMaps `cm-0`… in one file.
fn many(n: usize) -> String {
    (0..n)
        .map(|i| configmap(&format!("cm-{i}"), &[("k", "v")]))
        .collect::<Vec<_>>()
        .join("---\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_apply_creates_each_object_once_and_a_later_change_is_dry_run_first() {
    let tb = require_testbed!();
    let f = Fixture::with(tb, "first-once", |_| {}).await;
    f.repo.write("envs/app/many.yaml", &many(20));
    let c1 = f.repo.commit_push("twenty");
    let before = audit_writes(tb, &f.client, &f.ns).await.len();
    f.gitopsd
        .once(Some(&f.env.name))
        .assert_success("first apply");
    let events = audit_writes(tb, &f.client, &f.ns).await;
    let new = admin_writes(&events[before..]);
    assert_eq!(applies(&new).len(), 20, "one apply per object: {new:#?}");
    assert!(
        dry_runs(&new).is_empty(),
        "no dry-run on a first apply: {new:#?}"
    );
    let r = f.repo.expect_record(&c1, &f.env.name);
    assert_eq!(
        (r.outcome, r.counts.created),
        (Outcome::Healthy, 20),
        "{r:?}"
    );

    // The next commit updates live objects: validated by a dry-run before it is applied.
    f.repo.write(
        "envs/app/many.yaml",
        &many(20).replacen("k: \"v\"", "k: \"changed\"", 1),
    );
    f.repo.commit_push("one change");
    let before = events.len();
    f.gitopsd
        .once(Some(&f.env.name))
        .assert_success("second once");
    let events = audit_writes(tb, &f.client, &f.ns).await;
    let new = admin_writes(&events[before..]);
    assert_eq!(
        (applies(&new).len(), dry_runs(&new).len()),
        (1, 1),
        "{new:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_first_apply_deletes_what_it_created_and_lists_every_error() {
    let tb = require_testbed!();
    let f = Fixture::with(tb, "first-refused", |_| {}).await;
    f.repo.write("envs/app/many.yaml", &many(10));
    f.repo.write(
        "envs/app/bogus.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bogus\ndata:\n  k: v\nspec:\n  unknown: field\n",
    );
    f.repo.write(
        "envs/app/wrong.yaml",
        "# first line\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: wrong\ndata:\n  k: 3\n",
    );
    let c1 = f.repo.commit_push("ten good, two refused");
    let out = f.gitopsd.once(Some(&f.env.name));
    out.assert_failure("a refused first apply");
    let r = f.repo.expect_record(&c1, &f.env.name);
    assert_eq!(r.outcome, Outcome::Rejected, "{r:?}");
    let at: Vec<(&str, Option<&str>)> = r
        .errors
        .iter()
        .map(|e| (e.object.as_str(), e.at.as_deref()))
        .collect();
    assert!(
        at.iter()
            .any(|(o, a)| o.contains("bogus") && *a == Some("envs/app/bogus.yaml:1")),
        "{r:?}"
    );
    assert!(
        at.iter()
            .any(|(o, a)| o.contains("wrong") && *a == Some("envs/app/wrong.yaml:2")),
        "{r:?}"
    );
    assert!(
        owned_configmaps(&f.client, &f.ns, &f.env.name)
            .await
            .is_empty(),
        "nothing of the refused commit is left"
    );
    assert!(
        r.messages.iter().any(|m| m.contains("deleted again")),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_apply_never_takes_over_an_existing_object_and_sends_nothing_of_its_phase() {
    let tb = require_testbed!();
    let f = Fixture::with(tb, "first-taken", |_| {}).await;
    let api = Api::<ConfigMap>::namespaced(f.client.clone(), &f.ns);
    let theirs: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "cm-3"}, "data": {"owner": "someone else"}
    }))
    .unwrap();
    api.create(&PostParams::default(), &theirs).await.unwrap();
    f.repo.write("envs/app/many.yaml", &many(5));
    let c1 = f.repo.commit_push("five, one of them taken");
    let before = audit_writes(tb, &f.client, &f.ns).await.len();
    f.gitopsd
        .once(Some(&f.env.name))
        .assert_failure("an existing object");
    let events = audit_writes(tb, &f.client, &f.ns).await;
    let new = admin_writes(&events[before..]);
    assert!(applies(&new).is_empty(), "nothing sent: {new:#?}");
    let r = f.repo.expect_record(&c1, &f.env.name);
    assert_eq!(r.outcome, Outcome::Rejected, "{r:?}");
    assert!(
        r.errors
            .iter()
            .any(|e| e.object.contains("cm-3") && e.reason.contains("not managed by gitopsd")),
        "{r:?}"
    );
    let live = api.get("cm-3").await.unwrap();
    assert_eq!(
        live.data.unwrap().get("owner").map(String::as_str),
        Some("someone else")
    );
    assert!(live.metadata.labels.unwrap_or_default().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_first_apply_deletes_the_namespace_it_created() {
    let tb = require_testbed!();
    let client = tb.kube_client().await;
    let ns = support::unique_name("first-ns");
    let repo = WorkRepo::new(tb, "first-ns");
    let env = Env::new("first-ns", "env", &ns);
    repo.write(
        "env/ns.yaml",
        &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"),
    );
    repo.write("env/many.yaml", &many(5));
    repo.write(
        "env/wrong.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: wrong\ndata:\n  k: [1]\n",
    );
    let c1 = repo.commit_push("a namespace, five good, one refused");
    let g = Gitopsd::new(
        tb,
        &repo.remote,
        Transport::Https,
        std::slice::from_ref(&env),
    );
    g.once(None).assert_failure("refused");
    let r = repo.expect_record(&c1, &env.name);
    assert_eq!(r.outcome, Outcome::Rejected, "{r:?}");
    assert!(r.errors.iter().any(|e| e.object.contains("wrong")), "{r:?}");
    // The Namespace goes (its deletion takes the ConfigMaps with it).
    let namespaces = Api::<Namespace>::all(client.clone());
    let rt = tokio::runtime::Handle::current();
    wait_for("the namespace deleted", Duration::from_secs(60), || {
        let live = tokio::task::block_in_place(|| rt.block_on(namespaces.get_opt(&ns))).unwrap();
        live.is_none_or(|n| n.metadata.deletion_timestamp.is_some())
    });
}
