//! The bounds, decided without a cluster: scope is given as discovery would.

use super::*;
use crate::manifest::parse_file;

fn env(extra: &str) -> EnvironmentConfig {
    let yaml = format!("name: dev\npath: dev\nnamespace: web\nkubernetes: {{}}\n{extra}");
    serde_saphyr::from_str(&yaml).unwrap()
}

fn manifests(yaml: &str) -> Vec<Manifest> {
    parse_file("dev/all.yaml", yaml.as_bytes()).unwrap()
}

/// Places every object as discovery would: the kinds listed are cluster-scoped.
fn check(env: &EnvironmentConfig, yaml: &str) -> Vec<ObjectError> {
    let ms = manifests(yaml);
    let cluster = [
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
    ];
    let placed: Vec<Placed> = ms
        .iter()
        .map(|m| Placed {
            manifest: m,
            namespace: if cluster.contains(&m.key.kind.as_str()) || m.key.is_bucket() {
                None
            } else {
                Some(m.key.namespace.as_deref().unwrap_or(&env.namespace))
            },
        })
        .collect();
    Bounds::new(env).check(&placed)
}

const CM_DEFAULT: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n";

#[test]
fn the_default_allows_the_environment_namespace() {
    assert!(check(&env(""), CM_DEFAULT).is_empty());
}

#[test]
fn the_default_refuses_another_namespace_naming_object_file_and_rule() {
    let errors = check(
        &env(""),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: kube-system}\n",
    );
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].object, "ConfigMap kube-system/a");
    assert_eq!(errors[0].at.as_deref(), Some("dev/all.yaml:1"));
    assert!(
        errors[0].reason.contains("\"kube-system\""),
        "{}",
        errors[0].reason
    );
    assert!(
        errors[0].reason.contains("allowed_namespaces"),
        "{}",
        errors[0].reason
    );
}

#[test]
fn the_default_allows_namespaces_the_environment_creates() {
    let yaml = "apiVersion: v1\nkind: Namespace\nmetadata: {name: extra}\n---\n\
                apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: extra}\n";
    assert!(check(&env(""), yaml).is_empty());
}

#[test]
fn creating_a_kube_namespace_does_not_open_it() {
    let yaml = "apiVersion: v1\nkind: Namespace\nmetadata: {name: kube-system}\n---\n\
                apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a, namespace: kube-system}\n";
    let errors = check(&env(""), yaml);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].reason.contains("belongs to the cluster"));
}

#[test]
fn allowed_namespaces_globs_replace_the_default() {
    let e = env("allowed_namespaces: ['team-*']\n");
    let ok = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: team-x}\n";
    assert!(check(&e, ok).is_empty());
    // The environment's own namespace is no longer implied.
    let errors = check(&e, CM_DEFAULT);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].reason.contains("[team-*]"),
        "{}",
        errors[0].reason
    );
    // A Namespace object outside the globs is refused too.
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n";
    assert_eq!(check(&e, ns).len(), 1);
}

#[test]
fn cluster_scoped_kinds_need_listing() {
    let crb = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: r}\n";
    let errors = check(&env(""), crb);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .reason
            .contains("ClusterRole.rbac.authorization.k8s.io"),
        "{}",
        errors[0].reason
    );
    let e = env("cluster_scoped: [Namespace, '*.rbac.authorization.k8s.io']\n");
    assert!(check(&e, crb).is_empty());
}

#[test]
fn bindings_to_system_groups_are_refused_by_default_even_when_in_bounds() {
    let e = env("cluster_scoped: ['*']\n");
    let yaml = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n\
                metadata: {name: everyone}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: gitopsd-apply}\n\
                subjects: [{kind: Group, name: 'system:authenticated', apiGroup: rbac.authorization.k8s.io}]\n";
    let errors = check(&e, yaml);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].reason.contains("system:authenticated"),
        "{}",
        errors[0].reason
    );
    // A namespaced RoleBinding to a user of the same kind is refused as well.
    let rb = "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: b}\n\
              roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: r}\n\
              subjects: [{kind: User, name: 'system:anonymous'}]\n";
    assert_eq!(check(&e, rb).len(), 1);
    // A ServiceAccount subject is fine.
    let sa = "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: b}\n\
              roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: r}\n\
              subjects: [{kind: ServiceAccount, name: app, namespace: web}]\n";
    assert!(check(&e, sa).is_empty());
}

#[test]
fn denied_kinds_refuse_plain_kinds() {
    let e = env("denied_kinds: ['*.admissionregistration.k8s.io', Secret]\n");
    let yaml = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n";
    let errors = check(&e, yaml);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].reason.contains("denied_kinds"),
        "{}",
        errors[0].reason
    );
}

#[test]
fn buckets_need_a_matching_glob() {
    let yaml = "apiVersion: gitopsd.dev/v1alpha1\nkind: Bucket\nmetadata: {name: logs}\n\
                spec: {name: acme-dev-logs}\n";
    let errors = check(&env(""), yaml);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].reason.contains("no buckets"),
        "{}",
        errors[0].reason
    );
    assert!(check(&env("buckets: ['acme-dev-*']\n"), yaml).is_empty());
    let errors = check(&env("buckets: ['acme-prod-*']\n"), yaml);
    assert!(
        errors[0].reason.contains("acme-dev-logs"),
        "{}",
        errors[0].reason
    );
}

#[test]
fn a_crd_in_the_commit_gives_the_scope_of_its_kind() {
    let ms = manifests(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: ws.x.dev}\n\
         spec: {group: x.dev, scope: Cluster, names: {kind: W, plural: ws}}\n---\n\
         apiVersion: x.dev/v1\nkind: W\nmetadata: {name: w}\n---\n\
         apiVersion: y.dev/v1\nkind: V\nmetadata: {name: v}\n",
    );
    assert!(!namespaced_by_crds(&ms[1], ms.iter()));
    assert!(namespaced_by_crds(&ms[2], ms.iter()));
}
