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
    Env, Fixture, Gitopsd, Transport, WorkRepo, admin_writes, audit_writes, configmap,
    configmap_data, configmap_labels, deployment, deployment_state, owned_configmaps,
};

impl Fixture {
    async fn new(tb: &'static support::Testbed, prefix: &str) -> Fixture {
        Self::with(tb, prefix, |_| {}).await
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
    // The audit log names gitopsd and its version (issue 15).
    assert!(
        new.iter().all(|e| e.user_agent == gitopsd::USER_AGENT),
        "User-Agent {}: {new:#?}",
        gitopsd::USER_AGENT
    );
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
    // Pruning works from the live objects this instance owns: "taken" (someone else's now) is
    // not among them, so it is neither deleted nor counted.
    assert_eq!(r.counts.deleted, 2, "{r:?}");
}

async fn create_foreign(f: &Fixture, name: &str, value: &str) {
    let foreign: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name}, "data": {"owner": value}
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(f.client.clone(), &f.ns)
        .create(
            &PostParams {
                field_manager: Some("another-team".into()),
                ..Default::default()
            },
            &foreign,
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn unowned_object_is_not_adopted_silently_nor_deleted() {
    let tb = require_testbed!();
    let f = Fixture::new(tb, "unowned").await;
    f.write("base.yaml", &configmap("base", &[("k", "v")]));
    f.repo.commit_push("base");
    f.once().assert_success("first once");

    // Someone else's object with a value the repository disagrees with: a conflict, reported.
    create_foreign(&f, "theirs", "another team").await;
    f.write("theirs.yaml", &configmap("theirs", &[("owner", "gitopsd")]));
    let c2 = f.repo.commit_push("claim theirs");
    f.once()
        .assert_failure("once on a commit that claims someone else's object");
    let r = f.repo.expect_record(&c2, &f.env.name);
    assert_eq!(r.outcome, Outcome::Rejected, "{r:?}");
    assert!(
        r.errors
            .iter()
            .any(|e| e.object.contains("theirs") && e.reason.contains("another-team")),
        "the record names the object and the other field manager: {r:?}"
    );
    assert_eq!(f.cm("theirs").await.unwrap()["owner"], "another team");
    let labels = configmap_labels(&f.client, &f.ns, "theirs").await.unwrap();
    assert!(
        !labels.contains_key("gitopsd.dev/environment"),
        "not adopted: {labels:?}"
    );
    f.repo.remove(&f.file("theirs.yaml"));
    f.repo.commit_push("drop theirs");
    f.once().assert_success("once after dropping theirs");
    assert!(
        f.cm("theirs").await.is_some(),
        "an unowned object must never be deleted"
    );

    // Someone else's object with exactly the repository's content: no conflict to stop the apply.
    create_foreign(&f, "same", "gitopsd").await;
    f.write("same.yaml", &configmap("same", &[("owner", "gitopsd")]));
    let c4 = f.repo.commit_push("claim same");
    let out = f.once();
    let r = f.repo.expect_record(&c4, &f.env.name);
    eprintln!(
        "unowned (same content): {} errors {:?} messages {:?}",
        r.outcome, r.errors, r.messages
    );
    let labels = configmap_labels(&f.client, &f.ns, "same").await.unwrap();
    assert!(
        !labels.contains_key("gitopsd.dev/environment"),
        "someone else's object was adopted silently (labelled as gitopsd's): {r:?}\n{out}"
    );
    assert_eq!(r.outcome, Outcome::Rejected, "{r:?}");
    assert!(
        r.errors
            .iter()
            .any(|e| e.object.contains("same") && e.reason.contains("not managed by gitopsd")),
        "the record says why: {r:?}"
    );
    f.repo.remove(&f.file("same.yaml"));
    f.repo.commit_push("drop same");
    f.once();
    assert!(
        f.cm("same").await.is_some(),
        "an object gitopsd did not create must never be deleted"
    );
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
        Some("envs/app/extra.yaml:2"),
        "the object starts on line 2, after a comment: {bogus:?}"
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

#[tokio::test(flavor = "multi_thread")]
async fn notes_reach_the_remote_over_https_and_ssh() {
    let tb = require_testbed!();
    let client = tb.kube_client().await;
    let ns_https = tb.namespace(&client, "notes-https").await;
    let ns_ssh = tb.namespace(&client, "notes-ssh").await;
    let repo = WorkRepo::new(tb, "notes-transports");
    let env_https = Env::new("over-https", "envs/a", &ns_https);
    let env_ssh = Env::new("over-ssh", "envs/b", &ns_ssh);
    repo.write("envs/a/cm.yaml", &configmap("a", &[("k", "v")]));
    repo.write("envs/b/cm.yaml", &configmap("b", &[("k", "v")]));
    let c1 = repo.commit_push("two environments");
    let https = Gitopsd::new(
        tb,
        &repo.remote,
        Transport::Https,
        std::slice::from_ref(&env_https),
    );
    let ssh = Gitopsd::new(
        tb,
        &repo.remote,
        Transport::Ssh,
        std::slice::from_ref(&env_ssh),
    );
    assert!(
        ssh.config_text().contains("ssh://"),
        "{}",
        ssh.config_text()
    );
    https.once(None).assert_success("once over HTTPS");
    ssh.once(None).assert_success("once over SSH");
    assert!(configmap_data(&client, &ns_ssh, "b").await.is_some());

    // A fresh clone (not the work repo) sees both sections in `git log --notes=gitopsd`.
    let fresh = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("git")
        .args([
            "clone",
            "-q",
            &tb.https_url_with_credentials(&repo.remote.https_url),
            ".",
        ])
        .current_dir(fresh.path())
        .env("HOME", fresh.path())
        .envs(tb.git_cli_env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(fresh.path())
            .env("HOME", fresh.path())
            .envs(tb.git_cli_env())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    git(&["fetch", "-q", "origin", "refs/notes/*:refs/notes/*"]);
    let log = git(&["log", "--notes=gitopsd", "-1", &c1]);
    for env in [&env_https.name, &env_ssh.name] {
        assert!(
            log.contains(&format!("# gitopsd {env}: healthy (1 created")),
            "git log --notes=gitopsd shows {env}:\n{log}"
        );
    }
    let note = gitopsd::status::Note::parse(&git(&["notes", "--ref=gitopsd", "show", &c1]));
    assert_eq!(note.environments.len(), 2, "{note:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_environments_in_one_repository_share_a_note() {
    let tb = require_testbed!();
    let client = tb.kube_client().await;
    let ns_a = tb.namespace(&client, "two-envs-a").await;
    let ns_b = tb.namespace(&client, "two-envs-b").await;
    let repo = WorkRepo::new(tb, "two-envs");
    let a = Env::new("two-a", "envs/a", &ns_a);
    let b = Env::new("two-b", "envs/b", &ns_b);
    let gitopsd = Gitopsd::new(tb, &repo.remote, Transport::Https, &[a.clone(), b.clone()]);
    repo.write("envs/a/one.yaml", &configmap("one", &[("k", "a")]));
    repo.write("envs/a/two.yaml", &configmap("two", &[("k", "a")]));
    repo.write("envs/b/one.yaml", &configmap("one", &[("k", "b")]));
    let c1 = repo.commit_push("both");
    gitopsd.once(None).assert_success("once, two environments");
    assert_eq!(
        configmap_data(&client, &ns_a, "one").await.unwrap()["k"],
        "a"
    );
    assert_eq!(
        configmap_data(&client, &ns_b, "one").await.unwrap()["k"],
        "b"
    );
    assert!(
        configmap_data(&client, &ns_b, "two").await.is_none(),
        "folders do not leak into each other"
    );
    let note = repo.note(&c1).expect("note on c1");
    assert_eq!(note.environments.len(), 2, "{note:?}");
    assert_eq!(note.environments[&a.name].counts.created, 2);
    assert_eq!(note.environments[&b.name].counts.created, 1);

    // A change to one folder only: both environments record the new head, only one applies.
    repo.write("envs/a/two.yaml", &configmap("two", &[("k", "a2")]));
    let c2 = repo.commit_push("a only");
    gitopsd.once(None).assert_success("second once");
    let note = repo.note(&c2).expect("note on c2");
    let (ra, rb) = (&note.environments[&a.name], &note.environments[&b.name]);
    assert_eq!(
        (ra.outcome, ra.counts.updated, ra.counts.unchanged),
        (Outcome::Healthy, 1, 1),
        "{ra:?}"
    );
    assert_eq!(
        (rb.outcome, rb.counts.updated, rb.counts.unchanged),
        (Outcome::Healthy, 0, 1),
        "{rb:?}"
    );
    assert_eq!(ra.from.as_deref(), Some(c1.as_str()));
    // The log reads per environment.
    let log = repo.log_with_notes();
    assert!(
        log.contains(&format!(
            "# gitopsd {}: healthy (0 created, 1 updated",
            a.name
        )),
        "{log}"
    );
}

/// Force-push that drops the last healthy commit. `fresh_mirror`: the daemon's state is wiped
/// as well, so the lost commit is unreadable and pruning must come from the cluster inventory.
async fn force_push_case(prefix: &str, fresh_mirror: bool) {
    let tb = require_testbed!();
    let f = Fixture::new(tb, prefix).await;
    f.write("a.yaml", &configmap("a", &[("k", "1")]));
    f.write("b.yaml", &configmap("b", &[("k", "1")]));
    let c1 = f.repo.commit_push("a b");
    f.once().assert_success("c1");
    f.write("c.yaml", &configmap("c", &[("k", "1")]));
    let c2 = f.repo.commit_push("add c");
    f.once().assert_success("c2");
    assert_eq!(f.owned().await, set(&["a", "b", "c"]));

    // Rewrite history: back to c1, then a different commit (b removed, d added, a changed).
    f.repo.git(&["reset", "-q", "--hard", &c1]);
    f.repo.remove(&f.file("b.yaml"));
    f.write("a.yaml", &configmap("a", &[("k", "2")]));
    f.write("d.yaml", &configmap("d", &[("k", "1")]));
    let c3 = f.repo.commit("rewritten");
    f.repo.force_push();
    if fresh_mirror {
        f.gitopsd.wipe_state();
    }
    let out = f.once();
    out.assert_success("once after the force-push");
    assert_eq!(
        f.owned().await,
        set(&["a", "d"]),
        "objects of the lost commit are pruned\n{out}"
    );
    assert_eq!(f.cm("a").await.unwrap()["k"], "2");
    let r = f.repo.expect_record(&c3, &f.env.name);
    assert_eq!(r.outcome, Outcome::Healthy, "{r:?}");
    assert_eq!(r.counts.deleted, 2, "b and c deleted: {r:?}");
    // With the old mirror, c2 is still readable and the plan runs c2 -> c3; with a fresh clone
    // c2 is gone and the record moves from nothing (pruning came from the cluster inventory).
    let expected_from = (!fresh_mirror).then_some(c2.as_str());
    assert_eq!(r.from.as_deref(), expected_from, "{r:?}");
    // And it stays converged.
    f.once().assert_success("once again");
}

#[tokio::test(flavor = "multi_thread")]
async fn force_push_converges_and_prunes_objects_of_the_lost_commit() {
    force_push_case("force-push", false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn force_push_with_a_fresh_mirror_prunes_from_the_inventory() {
    force_push_case("force-push-fresh", true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_render_is_refused_and_nothing_deleted() {
    let tb = require_testbed!();
    let f = Fixture::new(tb, "empty-render").await;
    f.write("a.yaml", &configmap("a", &[("k", "1")]));
    f.write("b.yaml", &configmap("b", &[("k", "1")]));
    f.repo.write("README.md", "infra\n");
    f.repo.commit_push("two objects");
    f.once().assert_success("first once");

    f.repo.remove(&f.env.path);
    let c2 = f
        .repo
        .commit_push("oops: the whole environment folder is gone");
    let before = audit_writes(tb, &f.client, &f.ns).await.len();
    f.once().assert_failure("once on an empty render");
    let events = audit_writes(tb, &f.client, &f.ns).await;
    let writes = admin_writes(&events[before..]);
    assert!(
        writes.iter().all(|e| e.verb != "delete"),
        "nothing deleted: {writes:#?}"
    );
    assert_eq!(f.owned().await, set(&["a", "b"]));
    let r = f.repo.expect_record(&c2, &f.env.name);
    assert_eq!(r.outcome, Outcome::Rejected, "{r:?}");
    assert!(
        r.errors
            .iter()
            .any(|e| e.reason.contains("empty") && e.reason.contains("refusing to prune")),
        "the reason is recorded: {r:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_apply_then_restart_converges() {
    let tb = require_testbed!();
    const N: usize = 300;
    let f = Fixture::with(tb, "kill-apply", |e| e.apply_concurrency = Some(1)).await;
    for i in 0..N {
        f.write(
            &format!("cm-{i:03}.yaml"),
            &configmap(&format!("cm-{i:03}"), &[("i", &i.to_string())]),
        );
    }
    let c1 = f.repo.commit_push("300 ConfigMaps");

    let mut daemon = f.gitopsd.spawn_run();
    let started = std::time::Instant::now();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let at_kill = loop {
        let n = f.owned().await.len();
        if n > 0 {
            break n;
        }
        assert!(
            daemon.running(),
            "gitopsd run exited:\n{}",
            daemon.log_tail()
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no object applied within 120 s:\n{}",
            daemon.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    daemon.kill9();
    let at_kill_confirmed = f.owned().await.len();
    eprintln!(
        "kill-during-apply: killed after {:?} with {at_kill}..{at_kill_confirmed} of {N} applied",
        started.elapsed()
    );
    assert!(
        at_kill_confirmed < N,
        "the kill came too late: all {N} were applied already"
    );
    assert!(
        f.repo.note_text(&c1).is_none(),
        "no note before the apply finished"
    );

    let mut daemon = f.gitopsd.spawn_run();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let record = loop {
        if let Some(r) = f.repo.record(&c1, &f.env.name) {
            break r;
        }
        assert!(
            daemon.running(),
            "gitopsd run exited:\n{}",
            daemon.log_tail()
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no note on the head 180 s after restart:\n{}",
            daemon.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let r = record;
    assert_eq!(r.outcome, Outcome::Healthy, "{r:?}\n{}", daemon.log_tail());
    assert_eq!(f.owned().await.len(), N);
    assert_eq!(
        r.counts.created + r.counts.updated + r.counts.unchanged,
        N,
        "{r:?}"
    );
    let status = daemon.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "SIGTERM exits cleanly: {status}\n{}",
        daemon.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_note_pushes_from_two_processes_lose_nothing() {
    let tb = require_testbed!();
    let client = tb.kube_client().await;
    let ns_a = tb.namespace(&client, "race-a").await;
    let ns_b = tb.namespace(&client, "race-b").await;
    let repo = WorkRepo::new(tb, "note-race");
    let a = Env::new("race-a", "envs/a", &ns_a);
    let b = Env::new("race-b", "envs/b", &ns_b);
    let ga = Gitopsd::new(tb, &repo.remote, Transport::Https, std::slice::from_ref(&a));
    let gb = Gitopsd::new(tb, &repo.remote, Transport::Https, std::slice::from_ref(&b));
    let mut commits = Vec::new();
    const ROUNDS: usize = 5;
    for round in 0..ROUNDS {
        repo.write(
            "envs/a/cm.yaml",
            &configmap("cm", &[("round", &round.to_string())]),
        );
        repo.write(
            "envs/b/cm.yaml",
            &configmap("cm", &[("round", &round.to_string())]),
        );
        commits.push(repo.commit_push(&format!("round {round}")));
        // Both start at the same moment.
        let barrier = std::sync::Barrier::new(2);
        let (oa, ob) = std::thread::scope(|s| {
            let ha = s.spawn(|| {
                barrier.wait();
                ga.once(None)
            });
            let hb = s.spawn(|| {
                barrier.wait();
                gb.once(None)
            });
            (ha.join().unwrap(), hb.join().unwrap())
        });
        oa.assert_success(&format!("round {round}, process a"));
        ob.assert_success(&format!("round {round}, process b"));
    }
    repo.fetch_notes();
    for (i, c) in commits.iter().enumerate() {
        let note = gitopsd::status::Note::parse(&repo.local_note_text(c).unwrap_or_default());
        for env in [&a.name, &b.name] {
            let r = note
                .environments
                .get(env)
                .unwrap_or_else(|| panic!("round {i}: section {env} lost: {note:?}"));
            assert_eq!(r.outcome, Outcome::Healthy, "round {i}: {r:?}");
        }
    }
    assert_eq!(
        configmap_data(&client, &ns_b, "cm").await.unwrap()["round"],
        (ROUNDS - 1).to_string()
    );
}

#[test]
fn validate_reports_every_problem_with_its_key_path() {
    let bad = Gitopsd::from_text(
        "repository:\n  url: http://example.com/infra.git\n  poll: 0s\nstate_dir: relative/dir\nlisten: 0.0.0.0:9477\nenvironments:\n  - name: Not_A_Label\n    path: ../escape\n  - name: ok\n    path: envs/ok\n    kubernetes:\n      kubeconfig: /nonexistent/kubeconfig\n",
    );
    let out = bad.cmd("validate", &[]);
    out.assert_failure("validate on a bad config");
    for key in [
        "repository.url",
        "repository.poll",
        "state_dir",
        "listen",
        "environments[0].name",
        "environments[0].path",
        "environments[1].kubernetes.kubeconfig",
        "notes_signing_key_file",
    ] {
        assert!(out.stderr.contains(key), "validate names {key}:\n{out}");
    }
    // An unknown key is named too (with its line).
    let typo = Gitopsd::from_text(
        "repository: {url: /srv/x.git}\nstate_dir: /var/lib/x\nenvironmnets: []\n",
    );
    let out = typo.cmd("validate", &[]);
    out.assert_failure("validate with a misspelt key");
    assert!(
        out.stderr.contains("environmnets") && out.stderr.contains("line 3"),
        "{out}"
    );
    // A good config passes (it names a notes signing key; without one it is invalid).
    let key_dir = tempfile::tempdir().unwrap();
    let good = Gitopsd::from_text(&format!(
        "repository: {{url: /srv/infra.git}}\nstate_dir: /var/lib/gitopsd\nnotes_signing_key_file: {}\nenvironments:\n  - name: dev\n    path: envs/dev\n    kubernetes: {{}}\n",
        support::notes_key(key_dir.path()).display()
    ));
    good.cmd("validate", &[])
        .assert_success("validate on a good config");
}

#[tokio::test(flavor = "multi_thread")]
async fn status_json_shows_last_healthy_pinned_and_pending() {
    let tb = require_testbed!();
    let f = Fixture::new(tb, "status").await;
    f.write("a.yaml", &configmap("a", &[("k", "1")]));
    let c1 = f.repo.commit_push("good");
    f.once().assert_success("c1");
    f.write(
        "a.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata: [not, a, map]\n",
    );
    let c2 = f.repo.commit_push("bad");
    f.once().assert_failure("c2 rejected");
    f.write("a.yaml", &configmap("a", &[("k", "3")]));
    let c3 = f.repo.commit_push("not yet applied");

    let out = f.gitopsd.cmd("status", &["--output", "json"]);
    out.assert_success("status");
    let v: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("status json: {e}\n{out}"));
    let env = &v[&f.env.name];
    assert_eq!(env["last_healthy"].as_str(), Some(c1.as_str()), "{v:#}");
    assert_eq!(
        env["last_outcome"]["commit"].as_str(),
        Some(c2.as_str()),
        "{v:#}"
    );
    assert_eq!(
        env["last_outcome"]["outcome"].as_str(),
        Some("rejected"),
        "{v:#}"
    );
    assert!(env["pinned"].get(&c2).is_some(), "c2 pinned: {v:#}");
    let pending: Vec<&str> = env["pending"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["commit"].as_str())
        .collect();
    assert_eq!(pending, vec![c3.as_str()], "{v:#}");
    // Live health comes from the cluster, not from the notes: c1's one ConfigMap, healthy.
    assert_eq!(env["live"]["objects"].as_u64(), Some(1), "{v:#}");
    assert_eq!(env["live"]["healthy"].as_u64(), Some(1), "{v:#}");
    assert_eq!(env["applied"].as_str(), Some(c1.as_str()), "{v:#}");
    // The text form says the same for people.
    let text = f.gitopsd.cmd("status", &[]);
    assert!(
        text.stdout.contains(&format!("last healthy: {c1}")),
        "{text}"
    );
}
