//! Unit tests of the comparison, and the proof that the daemon's plan and a preview agree.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::{Value, json};

use super::*;
use crate::manifest::{DesiredState, EntryKind, FileEntry, render};

fn state(files: &[(&str, &str)]) -> DesiredState {
    render(
        "e",
        files.iter().map(|(p, t)| FileEntry {
            path: format!("e/{p}"),
            kind: EntryKind::File,
            bytes: t.as_bytes().to_vec(),
        }),
    )
    .unwrap()
}

fn objects(s: &DesiredState) -> impl Iterator<Item = &Manifest> {
    s.objects.values().map(|m| m.as_ref())
}

#[test]
fn first_plan_creates_everything() {
    let c = state(&[(
        "a.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
    )]);
    let p = plan(std::iter::empty(), objects(&c), "default");
    assert_eq!(p.count(Action::Create), 1);
    assert_eq!(p.unchanged, 0);
}

#[test]
fn plan_finds_create_update_delete_and_unchanged() {
    let a = state(&[
        (
            "a.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: '1'}\n",
        ),
        (
            "b.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n",
        ),
        (
            "c.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
        ),
    ]);
    let c = state(&[
        (
            "a.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: '2'}\n",
        ),
        (
            "c.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
        ),
        (
            "d.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: d}\n",
        ),
    ]);
    let p = plan(objects(&a), objects(&c), "default");
    assert_eq!(
        (
            p.count(Action::Create),
            p.count(Action::Update),
            p.count(Action::Delete),
            p.unchanged
        ),
        (1, 1, 1, 1)
    );
    let update = p
        .changes
        .iter()
        .find(|c| c.action == Action::Update)
        .unwrap();
    let diff = unified_diff(
        update.before.map(|m| m.body.value()).as_ref(),
        update.after.map(|m| m.body.value()).as_ref(),
        "ConfigMap a",
    );
    assert!(
        diff.contains("-  k: '1'") || diff.contains("-  k: \"1\""),
        "{diff}"
    );
}

#[test]
fn fingerprint_ignores_key_order_and_integral_floats() {
    assert_eq!(
        fingerprint(&json!({"a": 1, "b": [1, {"x": "y", "z": 2.0}]})),
        fingerprint(&json!({"b": [1, {"z": 2, "x": "y"}], "a": 1.0}))
    );
    assert_ne!(fingerprint(&json!([1, 2])), fingerprint(&json!([2, 1])));
}

#[test]
fn strips_server_fields() {
    let v = json!({"apiVersion": "v1", "kind": "ConfigMap", "status": {"x": 1},
        "metadata": {"name": "a", "uid": "u", "resourceVersion": "1", "generation": 2,
            "creationTimestamp": "t", "managedFields": [], "annotations": {(LAST_APPLIED): "{}"}}});
    assert_eq!(
        without_server_fields(&v),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}})
    );
    assert_eq!(comparable(&v), json!({}));
}

#[test]
fn identity_defaults_namespaced_kinds_only() {
    let key = |kind: &str, ns: Option<&str>| ObjectKey {
        group: String::new(),
        kind: kind.into(),
        namespace: ns.map(Into::into),
        name: "x".into(),
    };
    assert_eq!(
        identity(&key("ConfigMap", None), "apps")
            .namespace
            .as_deref(),
        Some("apps")
    );
    assert_eq!(
        identity(&key("ConfigMap", Some("web")), "apps")
            .namespace
            .as_deref(),
        Some("web")
    );
    assert_eq!(
        identity(&key("Namespace", Some("web")), "apps").namespace,
        None
    );
}

// ------------------------------------------------------------------------------------------------
// The daemon's plan and a preview agree.
//
// The daemon: each head object is sent as `k8s::desired_body` in its effective namespace and
// fingerprinted (`k8s::managed::desired_fingerprint`); the live cache holds the fingerprint of
// the fields gitopsd manages on the live object (`k8s::managed::live_fingerprint`), here the
// object a server-side apply of the base left behind; `reconcile::decide::plan_live` compares
// them. The preview: `preview::compute::object_changes` over the objects of both revisions.

/// The environment's default namespace in the corpus.
const NS: &str = "apps";

/// What discovery says of the corpus's kinds.
fn discovered_namespaced(key: &ObjectKey) -> bool {
    !matches!(key.kind.as_str(), "Namespace" | "ClusterRole")
}

fn parse(yaml: &str) -> Vec<Manifest> {
    crate::manifest::parse_file("env/objects.yaml", yaml.as_bytes()).unwrap()
}

/// The live key and the body the daemon sends for `m`.
fn sent(m: &Manifest) -> (ObjectKey, Value) {
    let namespace = effective_namespace(
        m.key.namespace.as_deref(),
        discovered_namespaced(&m.key),
        NS,
    );
    let key = ObjectKey {
        namespace: namespace.clone(),
        ..m.key.clone()
    };
    let body = crate::k8s::desired_body(m, namespace.as_deref(), "ci", "dev");
    (key, body)
}

/// A `fieldsV1` set claiming every field of `v` (lists as a whole).
fn fields_v1(v: &Value) -> Value {
    match v {
        Value::Object(map) if !map.is_empty() => Value::Object(
            map.iter()
                .map(|(k, v)| (format!("f:{k}"), fields_v1(v)))
                .collect(),
        ),
        _ => json!({}),
    }
}

/// The live object after a server-side apply of `sent`: server-managed fields, a status, a
/// field another manager owns, and gitopsd's `managedFields` entry for what it sent.
fn applied(sent: &Value) -> Value {
    let mut owned = sent.clone();
    if let Some(obj) = owned.as_object_mut() {
        obj.remove("apiVersion");
        obj.remove("kind");
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("name");
            meta.remove("namespace");
        }
    }
    let mut live = sent.clone();
    live["metadata"]["uid"] = json!("6f1c");
    live["metadata"]["resourceVersion"] = json!("4711");
    live["metadata"]["generation"] = json!(1);
    live["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    live["metadata"]["annotations"]["controller.example/seen"] = json!("yes");
    live["status"] = json!({"observedGeneration": 1});
    live["metadata"]["managedFields"] = json!([
        {"manager": crate::k8s::FIELD_MANAGER, "operation": "Apply", "fieldsType": "FieldsV1",
            "fieldsV1": fields_v1(&owned)},
        {"manager": "controller", "operation": "Update", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:annotations": {"f:controller.example/seen": {}}}}},
    ]);
    live
}

struct Cache(HashMap<ObjectKey, Option<u64>>);

impl crate::reconcile::decide::LiveView for Cache {
    fn managed(&self, key: &ObjectKey) -> Option<Option<u64>> {
        self.0.get(key).copied()
    }
    fn prunable(&self) -> Vec<(ObjectKey, String)> {
        self.0.keys().map(|k| (k.clone(), "v1".into())).collect()
    }
}

type Verdict = BTreeSet<(Action, ObjectKey)>;

fn daemon(base: &[Manifest], head: &[Manifest]) -> Verdict {
    use crate::k8s::managed::{desired_fingerprint, live_fingerprint};
    use crate::reconcile::decide::{Wanted, plan_live};
    let live = Cache(
        base.iter()
            .map(|m| {
                let (key, body) = sent(m);
                (
                    key,
                    live_fingerprint(&applied(&body), crate::k8s::FIELD_MANAGER),
                )
            })
            .collect(),
    );
    let wanted: Vec<Wanted> = head
        .iter()
        .map(|m| {
            let (key, body) = sent(m);
            Wanted {
                key,
                fingerprint: desired_fingerprint(&body),
            }
        })
        .collect();
    let p = plan_live(&wanted, &live, &HashMap::new(), true, &HashSet::new());
    let at = |i: &usize| wanted[*i].key.clone();
    let mut out = Verdict::new();
    out.extend(p.create.iter().map(|i| (Action::Create, at(i))));
    out.extend(p.update.iter().map(|i| (Action::Update, at(i))));
    out.extend(p.delete.into_iter().map(|(k, _)| (Action::Delete, k)));
    out
}

fn preview(base: &[Manifest], head: &[Manifest]) -> Verdict {
    use crate::preview::compute::{EnvInput, Sides, object_changes};
    let sides = Sides {
        base: base.iter().map(|m| (m.key.clone(), m.clone())).collect(),
        head: head.iter().map(|m| (m.key.clone(), m.clone())).collect(),
        ..Sides::default()
    };
    let mut env = EnvInput::from_folder("dev".into(), "env".into());
    env.namespace = NS.into();
    object_changes(&sides, &env)
        .into_iter()
        .map(|c| (c.action, identity(&c.key(), NS)))
        .collect()
}

const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: apps\n  labels: {app: web}\ndata:\n  LOG_LEVEL: info\n  FEATURE: \"on\"\n";
const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: apps}\nspec:\n  replicas: 2\n  template:\n    spec:\n      containers:\n        - {name: web, image: 'web:1', args: [--a, --b]}\n";
const ROLE: &str = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: reader}\nrules: []\n";
const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps}\n";

fn docs(parts: &[&str]) -> String {
    parts.join("---\n")
}

/// (what changes, base documents, head documents, how many changes both must report)
type Case = (&'static str, String, String, usize);

/// Changes to fields and to the set of objects.
fn content_cases() -> Vec<Case> {
    vec![
        ("nothing", docs(&[CM, DEPLOY]), docs(&[CM, DEPLOY]), 0),
        (
            "a modified field",
            docs(&[CM]),
            docs(&[&CM.replace("info", "debug")]),
            1,
        ),
        (
            "a modified label",
            docs(&[CM]),
            docs(&[&CM.replace("app: web", "app: api")]),
            1,
        ),
        (
            "server-only fields written into the manifest",
            docs(&[CM]),
            docs(&[&CM.replace(
                "  labels: {app: web}\n",
                "  labels: {app: web}\n  uid: 0b9c\n  resourceVersion: \"42\"\n  generation: 3\n  creationTimestamp: \"2025-01-01T00:00:00Z\"\n  managedFields: []\n  annotations:\n    kubectl.kubernetes.io/last-applied-configuration: \"{}\"\nstatus: {phase: Active}\n",
            )]),
            0,
        ),
        ("an added object", docs(&[CM]), docs(&[CM, DEPLOY]), 1),
        ("a removed object", docs(&[CM, DEPLOY]), docs(&[CM]), 1),
        (
            "reordered keys",
            docs(&[CM]),
            docs(&["kind: ConfigMap\ndata:\n  FEATURE: \"on\"\n  LOG_LEVEL: info\nmetadata:\n  labels: {app: web}\n  namespace: apps\n  name: settings\napiVersion: v1\n"]),
            0,
        ),
        (
            "a reordered list",
            docs(&[DEPLOY]),
            docs(&[&DEPLOY.replace("[--a, --b]", "[--b, --a]")]),
            1,
        ),
    ]
}

/// Changes to identity: namespaces, API versions, how values are written.
fn identity_cases() -> Vec<Case> {
    let cm_no_ns = CM.replace("  namespace: apps\n", "");
    vec![
        (
            "the default namespace written out",
            docs(&[&cm_no_ns]),
            docs(&[CM]),
            0,
        ),
        (
            "the default namespace left out",
            docs(&[CM]),
            docs(&[&cm_no_ns]),
            0,
        ),
        (
            "a namespace on a cluster-scoped kind",
            docs(&[ROLE, NAMESPACE]),
            docs(&[
                &ROLE.replace("name: reader}", "name: reader, namespace: apps}"),
                NAMESPACE,
            ]),
            0,
        ),
        (
            "an object moved to another namespace",
            docs(&[CM]),
            docs(&[&CM.replace("namespace: apps", "namespace: other")]),
            2,
        ),
        (
            "the same number written as a float",
            docs(&[DEPLOY]),
            docs(&[&DEPLOY.replace("replicas: 2", "replicas: 2.0")]),
            0,
        ),
        (
            "a new API version of the same object",
            docs(&[DEPLOY]),
            docs(&[&DEPLOY.replace("apps/v1", "apps/v1beta2")]),
            0,
        ),
        (
            "a Secret value",
            docs(&[
                "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\nstringData: {password: a}\n",
            ]),
            docs(&[
                "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\nstringData: {password: b}\n",
            ]),
            1,
        ),
    ]
}

#[test]
fn the_daemon_and_a_preview_agree_on_every_change() {
    for (what, base, head, expected) in content_cases().into_iter().chain(identity_cases()) {
        let (base, head) = (parse(&base), parse(&head));
        let daemon = daemon(&base, &head);
        let preview = preview(&base, &head);
        assert_eq!(
            daemon, preview,
            "{what}: the daemon and the preview disagree"
        );
        assert_eq!(daemon.len(), expected, "{what}: {daemon:?}");
    }
}

/// Buckets: the daemon writes the configuration fields where the spec and the live bucket
/// (here: as the base left it) are not `same`; the preview lists the fields that change.
#[test]
fn the_daemon_and_a_preview_agree_on_bucket_fields() {
    const BUCKET: &str = "apiVersion: gitopsd.dev/v1alpha1\nkind: Bucket\nmetadata: {name: logs}\nspec:\n  name: acme-dev-logs\n  versioning: Enabled\n  tags: {team: web, owner: ops}\n";
    let cases = [
        ("nothing", BUCKET.to_string(), 0),
        ("versioning", BUCKET.replace("Enabled", "Suspended"), 1),
        ("tags", BUCKET.replace("owner: ops}", "owner: platform}"), 1),
        (
            "reordered tags",
            BUCKET.replace("{team: web, owner: ops}", "{owner: ops, team: web}"),
            0,
        ),
    ];
    let spec = |yaml: &str| crate::s3::parse_bucket(&parse(yaml)[0]).unwrap();
    let base = spec(BUCKET);
    for (what, head, expected) in cases {
        let head = spec(&head);
        let daemon: BTreeSet<String> = head
            .config
            .fields()
            .into_iter()
            .filter(|f| !head.config.same(&base.config, *f))
            .map(|f| f.name().to_string())
            .collect();
        let preview: BTreeSet<String> =
            crate::preview::buckets::changed_fields(Some(&base), Some(&head))
                .into_iter()
                .map(|f| f.field)
                .collect();
        assert_eq!(
            daemon, preview,
            "{what}: the daemon and the preview disagree"
        );
        assert_eq!(daemon.len(), expected, "{what}");
    }
}
