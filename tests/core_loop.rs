//! End to end: the `gitopsd` binary against the testbed (issue 3): apply, plan only what changed,
//! prune only what it owns, reject invalid commits whole, notes over HTTPS and SSH, two
//! environments per note, force-pushes, the empty-render guard, restart after kill -9, concurrent
//! note pushes, `validate` and `status`.
//!
//! Each test has its own repository, namespace(s) and environment name(s), so tests run in parallel.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use gitopsd::status::Outcome;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::PostParams;
use support::gitopsd::{
    Env, Gitopsd, Transport, WorkRepo, admin_writes, audit_writes, configmap, configmap_data,
    configmap_labels, deployment, deployment_state, owned_configmaps,
};

/// A repository with one environment `envs/app` rendered into a fresh namespace.
struct Fixture {
    client: kube::Client,
    repo: WorkRepo,
    ns: String,
    env: Env,
    gitopsd: Gitopsd,
}

impl Fixture {
    async fn new(tb: &'static support::Testbed, prefix: &str) -> Fixture {
        Self::with(tb, prefix, |_| {}).await
    }

    async fn with(
        tb: &'static support::Testbed,
        prefix: &str,
        edit: impl FnOnce(&mut Env),
    ) -> Fixture {
        let client = tb.kube_client().await;
        let ns = tb.namespace(&client, prefix).await;
        let repo = WorkRepo::new(tb, prefix);
        let mut env = Env::new(prefix, "envs/app", &ns);
        edit(&mut env);
        let gitopsd = Gitopsd::new(
            tb,
            &repo.remote,
            Transport::Https,
            std::slice::from_ref(&env),
        );
        Fixture {
            client,
            repo,
            ns,
            env,
            gitopsd,
        }
    }

    fn file(&self, name: &str) -> String {
        format!("{}/{name}", self.env.path)
    }

    fn write(&self, name: &str, text: &str) {
        self.repo.write(&self.file(name), text);
    }

    fn once(&self) -> support::gitopsd::CmdOut {
        self.gitopsd.once(Some(&self.env.name))
    }

    async fn cm(&self, name: &str) -> Option<std::collections::BTreeMap<String, String>> {
        configmap_data(&self.client, &self.ns, name).await
    }

    async fn owned(&self) -> BTreeSet<String> {
        owned_configmaps(&self.client, &self.ns, &self.env.name)
            .await
            .into_iter()
            .collect()
    }
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn first_apply_labels_objects_and_records_healthy() {
    let tb = require_testbed!();
    let f = Fixture::new(tb, "first-apply").await;
    f.write(
        "config.yaml",
        &format!(
            "{}---\n{}",
            configmap("one", &[("k", "1")]),
            configmap("two", &[("k", "2")])
        ),
    );
    f.write("three.yaml", &configmap("three", &[("k", "3")]));
    f.write("web.yaml", &deployment("web", 2, None, 30, "1"));
    let c1 = f.repo.commit_push("first");

    let out = f.once();
    out.assert_success("first once");
    for name in ["one", "two", "three"] {
        let labels = configmap_labels(&f.client, &f.ns, name)
            .await
            .unwrap_or_else(|| panic!("ConfigMap {name} was not created"));
        assert_eq!(
            labels
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("gitopsd"),
            "{name}: {labels:?}"
        );
        assert_eq!(
            labels.get("gitopsd.dev/environment"),
            Some(&f.env.name),
            "{name}: {labels:?}"
        );
    }
    assert_eq!(f.cm("two").await.unwrap()["k"], "2");
    let (available, image, _) = deployment_state(&f.client, &f.ns, "web")
        .await
        .expect("Deployment web");
    assert!(available, "once reported healthy, so web must be Available");
    assert_eq!(image, "registry.invalid/gitopsd/fake:1");

    let r = f.repo.expect_record(&c1, &f.env.name);
    assert_eq!(r.outcome, Outcome::Healthy, "{r:?}");
    assert_eq!(
        (r.counts.created, r.counts.updated, r.counts.deleted),
        (4, 0, 0),
        "{r:?}"
    );
    assert!(r.errors.is_empty() && r.pinned.is_none(), "{r:?}");
    assert!(
        r.from.is_none(),
        "first apply has no previous commit: {r:?}"
    );
    assert!(!r.version.is_empty());

    // A second pass at the same head changes nothing and still succeeds.
    let before = admin_writes(&audit_writes(tb, &f.client, &f.ns).await).len();
    f.once().assert_success("second once, nothing new");
    let after = audit_writes(tb, &f.client, &f.ns).await;
    let new: Vec<_> = admin_writes(&after).into_iter().skip(before).collect();
    assert!(
        new.is_empty(),
        "a converged environment is not written to: {new:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn changing_one_of_twenty_objects_sends_one_apply() {
    let tb = require_testbed!();
    let f = Fixture::new(tb, "one-of-twenty").await;
    // Ten objects in one multi-document file, ten in files of their own.
    let many: Vec<String> = (0..10)
        .map(|i| configmap(&format!("multi-{i}"), &[("v", "1")]))
        .collect();
    f.write("multi.yaml", &many.join("---\n"));
    for i in 0..10 {
        f.write(
            &format!("single-{i}.yaml"),
            &configmap(&format!("single-{i}"), &[("v", "1")]),
        );
    }
    f.repo.commit_push("twenty");
    f.once().assert_success("first once");
    assert_eq!(f.owned().await.len(), 20);

    // Change one object inside the multi-document file.
    let mut many = many.clone();
    many[4] = configmap("multi-4", &[("v", "2")]);
    f.write("multi.yaml", &many.join("---\n"));
    let c2 = f.repo.commit_push("change multi-4");
    let before = audit_writes(tb, &f.client, &f.ns).await.len();
    f.once().assert_success("second once");
    let events = audit_writes(tb, &f.client, &f.ns).await;
    let new = admin_writes(&events[before..]);
    let applies: Vec<_> = new
        .iter()
        .filter(|e| e.verb == "patch" && !e.dry_run)
        .collect();
    let dry_runs: Vec<_> = new
        .iter()
        .filter(|e| e.verb == "patch" && e.dry_run)
        .collect();
    assert_eq!(
        applies.len(),
        1,
        "exactly one apply for one changed object: {new:#?}"
    );
    assert_eq!(applies[0].name, "multi-4");
    assert_eq!(
        dry_runs.len(),
        1,
        "exactly one dry-run for one changed object: {new:#?}"
    );
    assert_eq!(new.len(), 2, "no other writes: {new:#?}");
    assert_eq!(f.cm("multi-4").await.unwrap()["v"], "2");

    let r = f.repo.expect_record(&c2, &f.env.name);
    assert_eq!(r.outcome, Outcome::Healthy);
    assert_eq!(
        (
            r.counts.created,
            r.counts.updated,
            r.counts.deleted,
            r.counts.unchanged
        ),
        (0, 1, 0, 19),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_file_prunes_only_owned_objects() {
    let tb = require_testbed!();
    let f = Fixture::new(tb, "prune").await;
    f.write("keep.yaml", &configmap("keep", &[("k", "v")]));
    f.write(
        "gone.yaml",
        &format!(
            "{}---\n{}",
            configmap("gone-a", &[("k", "v")]),
            configmap("gone-b", &[("k", "v")])
        ),
    );
    f.write("taken.yaml", &configmap("taken", &[("k", "gitopsd")]));
    f.repo.commit_push("three files");
    f.once().assert_success("first once");
    assert_eq!(f.owned().await, set(&["keep", "gone-a", "gone-b", "taken"]));

    // Someone replaces "taken" with an object of their own (same name, no gitopsd labels).
    let api = Api::<ConfigMap>::namespaced(f.client.clone(), &f.ns);
    api.delete("taken", &Default::default()).await.unwrap();
    support::wait_until("taken deleted", Duration::from_secs(10), || async {
        api.get_opt("taken").await.unwrap().is_none()
    })
    .await;
    let foreign: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "taken"}, "data": {"k": "someone else"}
    }))
    .unwrap();
    api.create(&PostParams::default(), &foreign).await.unwrap();

    // The repository removes gone.yaml and taken.yaml.
    f.repo.remove(&f.file("gone.yaml"));
    f.repo.remove(&f.file("taken.yaml"));
    let c2 = f.repo.commit_push("remove two files");
    let out = f.once();
    out.assert_success("prune once");
    assert!(
        f.cm("gone-a").await.is_none() && f.cm("gone-b").await.is_none(),
        "objects of the deleted file are pruned"
    );
    assert!(f.cm("keep").await.is_some(), "keep stays");
    let taken = f
        .cm("taken")
        .await
        .expect("an object gitopsd does not own must never be deleted");
    assert_eq!(taken["k"], "someone else");
    let r = f.repo.expect_record(&c2, &f.env.name);
    assert_eq!(r.counts.deleted, 2, "{r:?}");
    assert!(
        r.messages
            .iter()
            .any(|m| m.contains("taken") && m.contains("not owned")),
        "the note says why taken was left alone: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unowned_object_is_not_adopted_silently_nor_deleted() {
    let tb = require_testbed!();
    let f = Fixture::new(tb, "unowned").await;
    f.write("base.yaml", &configmap("base", &[("k", "v")]));
    f.repo.commit_push("base");
    f.once().assert_success("first once");

    // An object created by someone else, with a value the repository disagrees with.
    let api = Api::<ConfigMap>::namespaced(f.client.clone(), &f.ns);
    let foreign: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "theirs"}, "data": {"owner": "another team"}
    }))
    .unwrap();
    api.create(
        &PostParams {
            field_manager: Some("another-team".into()),
            ..Default::default()
        },
        &foreign,
    )
    .await
    .unwrap();
    f.write("theirs.yaml", &configmap("theirs", &[("owner", "gitopsd")]));
    let c2 = f.repo.commit_push("claim theirs");
    let out = f.once();
    let r = f.repo.expect_record(&c2, &f.env.name);
    let data = f.cm("theirs").await.expect("theirs still exists");
    let labels = configmap_labels(&f.client, &f.ns, "theirs").await.unwrap();
    let mentioned = r.errors.iter().any(|e| e.object.contains("theirs"))
        || r.messages.iter().any(|m| m.contains("theirs"));
    if data["owner"] == "gitopsd" || labels.contains_key("gitopsd.dev/environment") {
        // Taking it over is acceptable only when the outcome says so.
        assert!(
            mentioned,
            "theirs was taken over silently (no error or message names it): {r:?}\n{out}"
        );
    } else {
        assert_ne!(
            r.outcome,
            Outcome::Healthy,
            "not applied, yet recorded healthy: {r:?}"
        );
        assert!(mentioned, "the record names the conflicting object: {r:?}");
    }

    // The repository drops the file again: the foreign object is never deleted.
    f.repo.remove(&f.file("theirs.yaml"));
    f.repo.commit_push("drop theirs");
    f.once();
    let data = f
        .cm("theirs")
        .await
        .expect("an unowned object must never be deleted");
    assert!(data.contains_key("owner"));
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_commit_applies_nothing_and_lists_every_error() {
    let tb = require_testbed!();
    let f = Fixture::new(tb, "invalid").await;
    f.write("settings.yaml", &configmap("settings", &[("level", "1")]));
    let c1 = f.repo.commit_push("valid");
    f.once().assert_success("first once");

    // One valid change, plus two schema errors in two other files.
    f.write("settings.yaml", &configmap("settings", &[("level", "2")]));
    f.write("new.yaml", &configmap("added", &[("k", "v")]));
    f.write(
        "web.yaml",
        &deployment("web", 1, None, 30, "1").replace("replicas: 1", "replicas: \"three\""),
    );
    f.write(
        "extra.yaml",
        "# a comment line\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bogus\ndata:\n  k: v\nspec:\n  unknown: field\n",
    );
    let c2 = f.repo.commit_push("one valid change, two invalid objects");
    let before = audit_writes(tb, &f.client, &f.ns).await.len();
    let out = f.once();
    out.assert_failure("once on an invalid commit");
    let events = audit_writes(tb, &f.client, &f.ns).await;
    let applies: Vec<_> = admin_writes(&events[before..])
        .into_iter()
        .filter(|e| !e.dry_run)
        .collect();
    assert!(
        applies.is_empty(),
        "an invalid commit applies nothing: {applies:#?}"
    );
    assert_eq!(
        f.cm("settings").await.unwrap()["level"],
        "1",
        "the valid change of a rejected commit is not applied"
    );
    assert!(f.cm("added").await.is_none() && f.cm("bogus").await.is_none());
    assert!(deployment_state(&f.client, &f.ns, "web").await.is_none());

    let r = f.repo.expect_record(&c2, &f.env.name);
    assert_eq!(r.outcome, Outcome::Rejected, "{r:?}");
    assert_eq!(r.from.as_deref(), Some(c1.as_str()));
    assert!(r.pinned.is_some(), "{r:?}");
    let web = r
        .errors
        .iter()
        .find(|e| e.object.contains("web"))
        .unwrap_or_else(|| panic!("no error for web: {r:#?}"));
    assert_eq!(web.at.as_deref(), Some("envs/app/web.yaml:1"), "{web:?}");
    let bogus = r
        .errors
        .iter()
        .find(|e| e.object.contains("bogus"))
        .unwrap_or_else(|| panic!("no error for bogus: {r:#?}"));
    assert_eq!(
        bogus.at.as_deref(),
        Some("envs/app/extra.yaml:1"),
        "{bogus:?}"
    );
    assert!(bogus.reason.contains("spec"), "{bogus:?}");
    assert_eq!(r.errors.len(), 2, "{r:#?}");

    // The next pass does not apply the pinned head either.
    let before = events.len();
    f.once().assert_failure("once on a pinned head");
    let events = audit_writes(tb, &f.client, &f.ns).await;
    assert!(
        admin_writes(&events[before..]).iter().all(|e| e.dry_run),
        "a pinned head is not applied"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn yaml_syntax_error_is_rejected_with_file_and_line() {
    let tb = require_testbed!();
    let f = Fixture::new(tb, "yaml-error").await;
    f.write("ok.yaml", &configmap("ok", &[("k", "v")]));
    f.repo.commit_push("valid");
    f.once().assert_success("first once");

    f.write("ok.yaml", &configmap("ok", &[("k", "changed")]));
    // Line 7 (in the second document) has an unclosed flow sequence.
    f.write(
        "broken.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fine\n---\napiVersion: v1\ndata: [unclosed\nkind: ConfigMap\n",
    );
    let c2 = f.repo.commit_push("syntax error");
    f.once().assert_failure("once on a YAML syntax error");
    let r = f.repo.expect_record(&c2, &f.env.name);
    assert_eq!(r.outcome, Outcome::Rejected, "{r:?}");
    let e = r
        .errors
        .iter()
        .find(|e| {
            e.at.as_deref()
                .is_some_and(|a| a.starts_with("envs/app/broken.yaml:"))
        })
        .unwrap_or_else(|| panic!("{r:#?}"));
    let line: u32 =
        e.at.as_deref()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
    assert!(
        (7..=8).contains(&line),
        "the error points at the broken line (7): {e:?}"
    );
    assert_eq!(
        f.cm("ok").await.unwrap()["k"],
        "v",
        "nothing of a rejected commit is applied"
    );
    assert!(f.cm("fine").await.is_none());
}
