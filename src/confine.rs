//! Stage `confine`: every object and bucket of a render must fall inside its environment's bounds
//! from the host config (namespaces, cluster-scoped kinds, refused kinds, bucket names). The
//! pushers are less trusted than the operator, so a commit that steps outside is rejected whole,
//! naming the object and the rule, before any dry-run or write. Pure: it decides on the rendered
//! objects and their scope (from discovery, or the commit's own CRDs). May call `config` (the
//! bounds), `manifest` and `status` (the error type); nothing with I/O.

use std::collections::BTreeSet;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde_json::Value;

use crate::config::{DeniedKind, EnvironmentConfig};
use crate::manifest::Manifest;
use crate::status::ObjectError;

/// Namespaces the cluster itself runs in: never "created" by an environment.
const SYSTEM_NAMESPACE: &str = "kube-*";

/// One environment's bounds, compiled.
pub struct Bounds {
    default_namespace: String,
    /// `None`: the default (the environment's namespace and the Namespaces it creates).
    namespaces: Option<Matcher>,
    cluster_scoped: Matcher,
    denied: Vec<(Matcher, Option<Matcher>)>,
    buckets: Matcher,
    /// `kube-*`: compiled once.
    system: Matcher,
}

/// A glob list and its text, for the messages.
struct Matcher {
    set: GlobSet,
    text: String,
}

impl Matcher {
    /// Globs the config checks already accepted; one that does not compile matches nothing.
    fn new(globs: &[String]) -> Matcher {
        let mut b = GlobSetBuilder::new();
        for g in globs {
            if let Ok(glob) = Glob::new(g) {
                b.add(glob);
            }
        }
        Matcher {
            set: b.build().unwrap_or_else(|_| GlobSet::empty()),
            text: format!("[{}]", globs.join(", ")),
        }
    }

    fn matches(&self, s: &str) -> bool {
        self.set.is_match(s)
    }
}

/// Whether `glob` compiles (for the config checks).
pub fn valid_glob(glob: &str) -> bool {
    Glob::new(glob).is_ok()
}

/// A rendered object and where it will live: `None` for a cluster-scoped kind.
pub struct Placed<'a> {
    pub manifest: &'a Manifest,
    pub namespace: Option<&'a str>,
}

impl Bounds {
    pub fn new(env: &EnvironmentConfig) -> Bounds {
        let denied = env
            .denied_kinds
            .iter()
            .map(|d| match d {
                DeniedKind::Kind(kind) => (Matcher::new(std::slice::from_ref(kind)), None),
                DeniedKind::Binding { kind, subjects } => (
                    Matcher::new(std::slice::from_ref(kind)),
                    Some(Matcher::new(std::slice::from_ref(subjects))),
                ),
            })
            .collect();
        Bounds {
            default_namespace: env.namespace.clone(),
            namespaces: env.allowed_namespaces.as_deref().map(Matcher::new),
            cluster_scoped: Matcher::new(&env.cluster_scoped),
            denied,
            buckets: Matcher::new(&env.buckets),
            system: Matcher::new(&[SYSTEM_NAMESPACE.to_string()]),
        }
    }

    /// Every object outside the bounds, with the rule it breaks.
    pub fn check(&self, objects: &[Placed<'_>]) -> Vec<ObjectError> {
        let created = self.created_namespaces(objects);
        let mut errors = Vec::new();
        for p in objects {
            let m = p.manifest;
            let error = |reason: String| ObjectError {
                object: m.key.to_string(),
                at: Some(m.source.to_string()),
                reason,
            };
            if m.key.is_bucket() {
                errors.extend(self.check_bucket(m).map(error));
                continue;
            }
            let kind = kind_group(m);
            if let Some(reason) = self.denied(&kind, m) {
                errors.push(error(reason));
                continue;
            }
            let refusal = match p.namespace {
                Some(ns) => self.check_namespace(ns, &created),
                None => self.check_cluster_scoped(&kind, m),
            };
            errors.extend(refusal.map(error));
        }
        errors
    }

    /// The Namespaces the render creates that count as its own under the default bounds.
    fn created_namespaces<'a>(&self, objects: &[Placed<'a>]) -> BTreeSet<&'a str> {
        objects
            .iter()
            .map(|p| p.manifest)
            .filter(|m| m.key.is_namespace() && !self.system.matches(&m.key.name))
            .map(|m| m.key.name.as_str())
            .collect()
    }

    fn check_namespace(&self, ns: &str, created: &BTreeSet<&str>) -> Option<String> {
        match &self.namespaces {
            Some(allowed) if allowed.matches(ns) => None,
            Some(allowed) => Some(format!(
                "namespace {ns:?} is outside this environment's allowed_namespaces {}",
                allowed.text
            )),
            None if ns == self.default_namespace || created.contains(ns) => None,
            None => Some(format!(
                "namespace {ns:?} is outside this environment's bounds: without \
                 allowed_namespaces in the host config it may use only {:?} and the \
                 Namespaces it creates",
                self.default_namespace
            )),
        }
    }

    fn check_cluster_scoped(&self, kind: &str, m: &Manifest) -> Option<String> {
        if !self.cluster_scoped.matches(kind) {
            return Some(format!(
                "cluster-scoped kind {kind} is not in this environment's cluster_scoped {}",
                self.cluster_scoped.text
            ));
        }
        if !m.key.is_namespace() {
            return None;
        }
        let name = m.key.name.as_str();
        match &self.namespaces {
            Some(allowed) if !allowed.matches(name) => Some(format!(
                "Namespace {name:?} is outside this environment's allowed_namespaces {}",
                allowed.text
            )),
            Some(_) => None,
            None if self.system.matches(name) => Some(format!(
                "Namespace {name:?} belongs to the cluster; list it in allowed_namespaces to manage it"
            )),
            None => None,
        }
    }

    fn denied(&self, kind: &str, m: &Manifest) -> Option<String> {
        for (kinds, subjects) in &self.denied {
            if !kinds.matches(kind) {
                continue;
            }
            let Some(subjects) = subjects else {
                return Some(format!(
                    "kind {kind} is refused by this environment's denied_kinds {}",
                    kinds.text
                ));
            };
            if let Some(name) = bound_subject(&m.body.value(), subjects) {
                return Some(format!(
                    "binds {name:?}, and bindings of {kind} to subjects matching {} are refused \
                     (denied_kinds)",
                    subjects.text
                ));
            }
        }
        None
    }

    fn check_bucket(&self, m: &Manifest) -> Option<String> {
        let spec_name = m.body.pointer("/spec/name");
        let name = spec_name
            .as_ref()
            .and_then(Value::as_str)
            .unwrap_or(&m.key.name);
        if self.buckets.matches(name) {
            return None;
        }
        Some(if self.buckets.text == "[]" {
            format!(
                "bucket {name:?}: this environment may manage no buckets (buckets: in the host config)"
            )
        } else {
            format!(
                "bucket {name:?} is outside this environment's buckets {}",
                self.buckets.text
            )
        })
    }
}

/// `Kind.group`, or `Kind` for the core group.
fn kind_group(m: &Manifest) -> String {
    if m.key.group.is_empty() {
        m.key.kind.clone()
    } else {
        format!("{}.{}", m.key.kind, m.key.group)
    }
}

/// The first `User` or `Group` subject whose name matches.
fn bound_subject<'a>(body: &'a Value, subjects: &Matcher) -> Option<&'a str> {
    body.get("subjects")?
        .as_array()?
        .iter()
        .filter(|s| {
            matches!(
                s.get("kind").and_then(Value::as_str),
                Some("User" | "Group")
            )
        })
        .filter_map(|s| s.get("name").and_then(Value::as_str))
        .find(|name| subjects.matches(name))
}

/// Whether an object of a kind the cluster does not serve yet is namespaced, from the commit's
/// own CustomResourceDefinitions (`spec.scope`); a kind none defines counts as namespaced (its
/// dry-run fails anyway).
pub fn namespaced_by_crds<'a>(m: &Manifest, mut crds: impl Iterator<Item = &'a Manifest>) -> bool {
    let defines = |crd: &&Manifest| {
        let spec = crd.body.get("spec").unwrap_or_default();
        spec.pointer("/group").and_then(Value::as_str) == Some(m.key.group.as_str())
            && spec.pointer("/names/kind").and_then(Value::as_str) == Some(m.key.kind.as_str())
    };
    let scope = crds
        .find(defines)
        .and_then(|crd| crd.body.pointer("/spec/scope"));
    scope
        .as_ref()
        .and_then(Value::as_str)
        .is_none_or(|scope| scope != "Cluster")
}

#[cfg(test)]
mod tests;
