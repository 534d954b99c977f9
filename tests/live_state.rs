//! Live state (issue 11): plans are made against what is live, hand edits are corrected or
//! reported, ownership names the instance, and transient failures never reject a commit.
//!
//! Each test has its own repository, namespace and environment name, so tests run in parallel.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use gitopsd::status::{Outcome, Record};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use support::gitopsd::{
    Env, Fixture, Gitopsd, Transport, WorkRepo, admin_writes, audit_writes, configmap,
    configmap_data, deployment, deployment_state,
};

impl Fixture {
    async fn new(tb: &'static support::Testbed, prefix: &str) -> Fixture {
        Fixture::with(tb, prefix, |_| {}).await
    }

    fn write(&self, name: &str, text: &str) {
        self.repo.write(&format!("{}/{name}", self.env.path), text);
    }

    async fn cm(&self, name: &str) -> Option<std::collections::BTreeMap<String, String>> {
        configmap_data(&self.client, &self.ns, name).await
    }

    /// Waits (60 s at most) until the daemon records `commit` healthy.
    async fn wait_healthy(&self, commit: &str) {
        support::wait_until("recorded healthy", Duration::from_secs(60), || async {
            self.repo
                .record(commit, &self.env.name)
                .is_some_and(|r| r.outcome == Outcome::Healthy)
        })
        .await;
    }

    fn record(&self, commit: &str) -> Record {
        self.repo.expect_record(commit, &self.env.name)
    }
}

/// Merge-patches a ConfigMap's data as another field manager (a person with kubectl).
async fn hand_edit(client: &kube::Client, ns: &str, name: &str, key: &str, value: &str) {
    let api = Api::<ConfigMap>::namespaced(client.clone(), ns);
    let patch = serde_json::json!({"data": {key: value}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("hand edit");
}

#[tokio::test(flavor = "multi_thread")]
async fn revert_after_unhealthy_with_rollback_off_brings_the_cluster_to_the_revert() {
    let tb = require_testbed!();
    let f = Fixture::with(tb, "revert", |env| {
        env.rollback = false;
        env.health_timeout = Duration::from_secs(60);
    })
    .await;
    f.write("web.yaml", &deployment("web", 1, None, 30, "1"));
    let c1 = f.repo.commit_push("healthy web");
    f.gitopsd.once(None).assert_success("c1");
    f.write("web.yaml", &deployment("web", 1, Some("unready"), 3, "2"));
    let c2 = f.repo.commit_push("web never becomes ready");
    f.gitopsd.once(None);
    let r2 = f.record(&c2);
    assert_eq!(r2.outcome, Outcome::Unhealthy, "{r2:?}");
    assert_eq!(r2.applied.as_deref(), Some(c2.as_str()), "{r2:?}");

    // Revert C: the cluster still runs C's Deployment, so the revert must change it back.
    f.repo.git(&["revert", "--no-edit", &c2]);
    let c3 = f.repo.head();
    f.repo.push();
    let out = f.gitopsd.once(None);
    out.assert_success("the revert");
    let r3 = f.record(&c3);
    assert_eq!(r3.outcome, Outcome::Healthy, "{r3:?}");
    assert_eq!(r3.counts.updated, 1, "the Deployment is put back: {r3:?}");
    let (ready, image, labels) = deployment_state(&f.client, &f.ns, "web")
        .await
        .expect("web exists");
    assert!(ready, "web is ready again");
    assert!(image.ends_with(":1"), "the revert's image: {image}");
    assert!(!labels.contains_key("gitopsd.test/fail"), "{labels:?}");
    assert_eq!(r3.from.as_deref(), Some(c1.as_str()), "{r3:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hand_edit_is_corrected_and_a_deleted_object_recreated() {
    let tb = require_testbed!();
    let f = Fixture::new(tb, "drift-fix").await;
    f.write("a.yaml", &configmap("a", &[("level", "1")]));
    f.write("b.yaml", &configmap("b", &[("k", "v")]));
    let c1 = f.repo.commit_push("two ConfigMaps");
    let daemon = f.gitopsd.spawn_run();
    f.wait_healthy(&c1).await;

    hand_edit(&f.client, &f.ns, "a", "level", "9").await;
    support::wait_until(
        "the hand edit is undone",
        Duration::from_secs(20),
        || async { f.cm("a").await.is_some_and(|d| d["level"] == "1") },
    )
    .await;
    Api::<ConfigMap>::namespaced(f.client.clone(), &f.ns)
        .delete("b", &Default::default())
        .await
        .expect("delete b");
    support::wait_until("b is recreated", Duration::from_secs(20), || async {
        f.cm("b").await.is_some()
    })
    .await;
    support::wait_until(
        "the note lists the drift",
        Duration::from_secs(20),
        || async {
            f.repo.record(&c1, &f.env.name).is_some_and(|r| {
                r.drift
                    .iter()
                    .any(|d| d.corrected && d.objects.iter().any(|o| o.contains("/a")))
                    && r.drift
                        .iter()
                        .any(|d| d.objects.iter().any(|o| o.contains("/b")))
            })
        },
    )
    .await;
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_report_leaves_the_edit_and_notes_it() {
    let tb = require_testbed!();
    let f = Fixture::with(tb, "drift-report", |env| {
        env.extra = "    drift: report\n".into();
    })
    .await;
    f.write("a.yaml", &configmap("a", &[("level", "1")]));
    let c1 = f.repo.commit_push("one ConfigMap");
    let daemon = f.gitopsd.spawn_run();
    f.wait_healthy(&c1).await;
    hand_edit(&f.client, &f.ns, "a", "level", "9").await;
    support::wait_until("the drift is noted", Duration::from_secs(20), || async {
        f.repo.record(&c1, &f.env.name).is_some_and(|r| {
            r.drift
                .iter()
                .any(|d| !d.corrected && d.objects.iter().any(|o| o.contains("/a")))
        })
    })
    .await;
    assert_eq!(
        f.cm("a").await.unwrap()["level"],
        "9",
        "report changes nothing"
    );
    assert!(
        daemon.log_text().contains("drift found"),
        "logged: {}",
        daemon.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_owned_by_another_manager_are_no_drift_and_no_write() {
    let tb = require_testbed!();
    let f = Fixture::new(tb, "hpa").await;
    // No replicas in git: an autoscaler owns them.
    let web = deployment("web", 1, None, 30, "1").replace("  replicas: 1\n", "");
    f.write("web.yaml", &web);
    f.repo.commit_push("web without replicas");
    f.gitopsd.once(None).assert_success("first apply");
    let api = Api::<Deployment>::namespaced(f.client.clone(), &f.ns);
    let scale = serde_json::json!({"spec": {"replicas": 3}});
    api.patch(
        "web",
        &PatchParams::apply("horizontal-pod-autoscaler").force(),
        &Patch::Apply(&serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": scale["spec"]})),
    )
    .await
    .expect("scale as the autoscaler");
    let before = audit_writes(tb, &f.client, &f.ns).await.len();
    let out = f.gitopsd.once(None);
    out.assert_success("a pass after the scale");
    let events = audit_writes(tb, &f.client, &f.ns).await;
    let writes: Vec<_> = admin_writes(&events[before..])
        .into_iter()
        .filter(|e| e.user_agent.contains("gitopsd") || e.user.contains("admin"))
        .collect();
    assert!(
        writes.is_empty(),
        "no write for another manager's field: {writes:#?}\n{out}"
    );
    let d = api.get("web").await.unwrap();
    assert_eq!(
        d.spec.and_then(|s| s.replicas),
        Some(3),
        "the autoscaler's replicas stay"
    );
}

/// A second repository (so a second instance) deploying an environment of the same name into
/// the same namespace.
fn sibling(tb: &'static support::Testbed, f: &Fixture) -> (WorkRepo, Gitopsd) {
    let repo = WorkRepo::new(tb, "sibling");
    let mut env = Env::new("sibling", "envs/app", &f.ns);
    env.name = f.env.name.clone();
    let gitopsd = Gitopsd::new(tb, &repo.remote, Transport::Https, &[env]);
    (repo, gitopsd)
}

async fn names(client: &kube::Client, ns: &str) -> BTreeSet<String> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .list_metadata(&ListParams::default().labels("app.kubernetes.io/managed-by=gitopsd"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|m| m.metadata.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_with_the_same_environment_name_never_touch_each_other() {
    let tb = require_testbed!();
    let f = Fixture::new(tb, "twins").await;
    f.write("a1.yaml", &configmap("a1", &[("k", "a")]));
    f.write("a2.yaml", &configmap("a2", &[("k", "a")]));
    f.repo.commit_push("A's objects");
    f.gitopsd.once(None).assert_success("A first");
    let (other, other_gitopsd) = sibling(tb, &f);
    other.write("envs/app/b1.yaml", &configmap("b1", &[("k", "b")]));
    other.commit_push("B's first objects");
    let out = other_gitopsd.once(None);
    out.assert_success("B first");
    let all = names(&f.client, &f.ns).await;
    assert!(
        all.contains("a1") && all.contains("a2") && all.contains("b1"),
        "{all:?}\n{out}"
    );

    // B replaces b1 with b2: only b1 goes.
    other.remove("envs/app/b1.yaml");
    other.write("envs/app/b2.yaml", &configmap("b2", &[("k", "b")]));
    other.commit_push("B swaps b1 for b2");
    other_gitopsd.once(None).assert_success("B second");
    let all = names(&f.client, &f.ns).await;
    assert_eq!(
        all,
        ["a1", "a2", "b2"].map(String::from).into(),
        "B pruned only its own"
    );

    // A drops a2: only a2 goes, B's b2 stays.
    f.repo.remove(&format!("{}/a2.yaml", f.env.path));
    let c = f.repo.commit_push("A drops a2");
    f.gitopsd.once(None).assert_success("A second");
    let all = names(&f.client, &f.ns).await;
    assert_eq!(
        all,
        ["a1", "b2"].map(String::from).into(),
        "A pruned only its own"
    );
    assert_eq!(f.record(&c).counts.deleted, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpointslice_of_a_managed_service_is_never_pruned() {
    let tb = require_testbed!();
    let f = Fixture::new(tb, "slices").await;
    let svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector:\n    app: web\n  ports:\n    - port: 80\n";
    f.write("svc.yaml", svc);
    f.write("a.yaml", &configmap("a", &[("k", "1")]));
    f.repo.commit_push("a Service");
    f.gitopsd.once(None).assert_success("first apply");
    let slices = Api::<EndpointSlice>::namespaced(f.client.clone(), &f.ns);
    let selector = format!(
        "kubernetes.io/service-name=web,gitopsd.dev/environment={}",
        f.env.name
    );
    support::wait_until(
        "the controller made an EndpointSlice with our labels",
        Duration::from_secs(30),
        || async {
            !slices
                .list(&ListParams::default().labels(&selector))
                .await
                .unwrap()
                .items
                .is_empty()
        },
    )
    .await;
    f.write("a.yaml", &configmap("a", &[("k", "2")]));
    let c2 = f.repo.commit_push("another change");
    f.gitopsd.once(None).assert_success("second apply");
    assert_eq!(f.record(&c2).counts.deleted, 0);
    assert!(
        !slices
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
            .is_empty(),
        "the EndpointSlice is still there"
    );
    assert!(
        Api::<Service>::namespaced(f.client.clone(), &f.ns)
            .get_opt("web")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn adopt_moves_an_environment_to_another_instance() {
    let tb = require_testbed!();
    let f = Fixture::new(tb, "adopt").await;
    let text = f.gitopsd.config_text();
    let old = Gitopsd::from_text(&format!("instance: team-old\n{text}"));
    let new = Gitopsd::from_text(&format!("instance: team-new\n{text}"));
    f.write("a.yaml", &configmap("a", &[("k", "1")]));
    f.write("b.yaml", &configmap("b", &[("k", "1")]));
    f.repo.commit_push("two ConfigMaps");
    old.once(None).assert_success("the old instance applies");

    // The new instance does not take another instance's objects silently.
    f.write("a.yaml", &configmap("a", &[("k", "2")]));
    let c2 = f.repo.commit_push("a change");
    let out = new.once(None);
    out.assert_failure("the new instance before adopt");
    let r = f.record(&c2);
    assert_eq!(r.outcome, Outcome::Rejected, "{r:?}");
    assert!(
        r.errors.iter().any(|e| e.reason.contains("gitopsd adopt")),
        "{r:?}"
    );
    assert_eq!(f.cm("a").await.unwrap()["k"], "1");

    let dry = new.cmd(
        "adopt",
        &[
            "--env",
            &f.env.name,
            "--from-instance",
            "team-old",
            "--dry-run",
        ],
    );
    dry.assert_success("adopt --dry-run");
    assert!(dry.stdout.contains("would adopt 2 objects"), "{dry}");
    let labels = support::gitopsd::configmap_labels(&f.client, &f.ns, "a")
        .await
        .unwrap();
    assert_eq!(
        labels["gitopsd.dev/instance"], "team-old",
        "a dry run changes nothing"
    );
    new.cmd(
        "adopt",
        &["--env", &f.env.name, "--from-instance", "team-old"],
    )
    .assert_success("adopt");
    new.cmd("retry", &["--env", &f.env.name, &c2])
        .assert_success("retry c2");
    new.once(None)
        .assert_success("the new instance after adopt");
    assert_eq!(f.record(&c2).outcome, Outcome::Healthy);
    assert_eq!(f.cm("a").await.unwrap()["k"], "2");
    for name in ["a", "b"] {
        let labels = support::gitopsd::configmap_labels(&f.client, &f.ns, name)
            .await
            .unwrap();
        assert_eq!(
            labels["gitopsd.dev/instance"], "team-new",
            "{name}: {labels:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_bootstrap_puts_updated_roles_back_and_removes_created_namespaces() {
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::api::rbac::v1::Role;
    let tb = require_testbed!();
    let f = Fixture::new(tb, "bootstrap").await;
    let role = |verbs: &str| {
        format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: reader\nrules:\n  - apiGroups: [\"\"]\n    resources: [configmaps]\n    verbs: [{verbs}]\n"
        )
    };
    f.write("role.yaml", &role("get"));
    f.repo.commit_push("a Role");
    f.gitopsd.once(None).assert_success("c1");

    // c2 widens the Role and adds a Namespace with an invalid object in it: the Namespace and the
    // Role are applied so the object can be dry-run; its failure must undo both.
    let extra_ns = format!("{}-x", f.ns);
    f.write("role.yaml", &role("get, list"));
    f.write(
        "new.yaml",
        &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {extra_ns}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\n  namespace: {extra_ns}\ndata:\n  k: v\nspec:\n  unknown: field\n"),
    );
    let c2 = f.repo.commit_push("bootstrap that fails");
    f.gitopsd.once(None).assert_failure("c2");
    let r = f.record(&c2);
    assert_eq!(r.outcome, Outcome::Rejected, "{r:?}");
    assert!(r.errors.iter().any(|e| e.object.contains("bad")), "{r:?}");
    let live = Api::<Role>::namespaced(f.client.clone(), &f.ns)
        .get("reader")
        .await
        .unwrap();
    let verbs = live.rules.unwrap_or_default()[0].verbs.clone();
    assert_eq!(verbs, vec!["get".to_string()], "the Role is as c1 had it");
    let ns = Api::<Namespace>::all(f.client.clone())
        .get_opt(&extra_ns)
        .await
        .unwrap();
    assert!(
        ns.is_none_or(|n| n.metadata.deletion_timestamp.is_some()),
        "the Namespace created for validation is deleted again"
    );
}
