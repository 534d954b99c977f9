//! `--live`: the head revision against the running cluster. Every object of the head is dry-run
//! (server-side apply, dry-run: admission, schema, quotas) and the result is compared with the
//! live object; refusals become validation errors of that object. Objects gitopsd owns in the
//! cluster that the head no longer has are deletions (when the environment prunes).
//!
//! Buckets are still compared between the base and head revisions (from git, no S3 calls).
//! Calls `git::LocalRepo` (the head's files), `manifest::render`, `k8s::Cluster` (dry-run, get,
//! owned objects) and `plan` through [`super::compute::compare`].

use std::collections::BTreeSet;

use futures::StreamExt;
use serde_json::Value;

use super::PreviewError;
use super::compute::{EnvInput, compare, mentions_sensitive, render_error};
use super::redact::{is_sensitive, scrub};
use super::report::{EnvReport, ObjectChange, Report, ValidationError};
use crate::config::EnvironmentConfig;
use crate::git::{LocalRepo, Oid};
use crate::k8s::{Cluster, KubeError};
use crate::manifest::{self, DesiredState, EntryKind, FileEntry, Introduced, Manifest, ObjectKey};
use crate::render::sops;

/// The head rendered for each environment (git work done before any network call).
pub struct Prepared {
    envs: Vec<PreparedEnv>,
}

struct PreparedEnv {
    input: EnvInput,
    cfg: Option<EnvironmentConfig>,
    state: Result<DesiredState, Vec<ValidationError>>,
}

/// Renders the head of every environment in full.
pub fn prepare(
    repo: &LocalRepo,
    head: Oid,
    envs: &[(EnvInput, Option<EnvironmentConfig>)],
) -> Result<Prepared, PreviewError> {
    let mut out = Vec::with_capacity(envs.len());
    for (input, cfg) in envs {
        let mut entries = Vec::new();
        let mut sensitive_files = BTreeSet::new();
        for f in repo.list_files(head, &input.path)? {
            let kind = EntryKind::from(f.kind);
            let bytes = if kind == EntryKind::File && manifest::is_manifest_path(&f.path) {
                super::manifest_blob(repo, &f.path, f.oid)?
            } else {
                Vec::new()
            };
            if mentions_sensitive(&bytes, &input.sensitive) {
                sensitive_files.insert(f.path.clone());
            }
            entries.push(FileEntry {
                path: f.path,
                kind,
                bytes,
            });
        }
        let state = manifest::render(&input.path, entries).map_err(|errors| {
            errors
                .into_iter()
                .map(|e| {
                    let s = sensitive_files.contains(&e.path);
                    render_error(e, s)
                })
                .collect()
        });
        out.push(PreparedEnv {
            input: input.clone(),
            cfg: cfg.clone(),
            state,
        });
    }
    Ok(Prepared { envs: out })
}

/// Runs the live comparison; `git` is the git-only report (its buckets are kept).
/// Only objects the environment owns are compared unless `all`.
pub async fn run(
    git: Report,
    prepared: Prepared,
    instance: &str,
    all: bool,
) -> Result<Report, PreviewError> {
    let mut environments = Vec::with_capacity(prepared.envs.len());
    for (env, git_env) in prepared.envs.into_iter().zip(git.environments) {
        environments.push(live_env(env, git_env, instance, all).await?);
    }
    Ok(Report {
        live: true,
        environments,
        ..git
    })
}

fn error_of(m: &Manifest, message: String, sensitive: bool) -> ValidationError {
    ValidationError {
        object: Some(m.key.to_string()),
        path: Some(m.source.path.clone()),
        line: Some(m.source.line),
        message: if sensitive { scrub(&message) } else { message },
    }
}

/// The outcome of one object.
enum Outcome {
    Change(ObjectChange),
    Unchanged,
    Error(ValidationError),
    /// A key the cluster knows the object by (namespace defaulted).
    Key(ObjectKey, Box<Outcome>),
}

/// Whether `m` can only be created: its CRD comes with this revision, so the cluster cannot
/// dry-run it yet.
fn created_with_its_crd(m: &Manifest, sensitive: bool) -> Outcome {
    let created = compare(
        &m.key,
        None,
        Some((&m.api_version, &m.body.value())),
        Some(m.source.to_string()),
        sensitive,
    );
    let outcome = match created {
        Some(c) => Outcome::Change(c),
        None => Outcome::Unchanged,
    };
    Outcome::Key(m.key.clone(), Box::new(outcome))
}

/// What a preview says of an object that exists but belongs to someone else: its live content
/// (and the server's dry-run merge with it) is not the PR author's to read.
const NOT_OWNED: &str = "# exists in the cluster and is not owned by this environment: not compared (--live-all compares it)\n";

fn not_owned(key: &ObjectKey, m: &Manifest) -> Outcome {
    Outcome::Change(ObjectChange {
        action: crate::plan::Action::Update,
        kind: key.kind.clone(),
        group: key.group.clone(),
        api_version: m.api_version.clone(),
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        source: Some(m.source.to_string()),
        diff: Some(NOT_OWNED.to_string()),
        changed_keys: None,
        encrypted: sops::body_encrypted(&m.body),
    })
}

async fn one(
    cluster: &Cluster,
    m: &Manifest,
    sensitive: bool,
    brought: &Introduced,
    all: bool,
) -> Outcome {
    let target = match cluster.target(m).await {
        Ok(t) => t,
        Err(KubeError::UnknownKind { .. }) if brought.defines_kind_of(&m.key) => {
            return created_with_its_crd(m, sensitive);
        }
        Err(e) => return Outcome::Error(error_of(m, e.reason(), sensitive)),
    };
    let key = ObjectKey {
        namespace: target.namespace.clone(),
        ..m.key.clone()
    };
    let wrap = |o: Outcome| Outcome::Key(key.clone(), Box::new(o));
    // A preview has no keys: a SOPS object's ciphertexts are not sent, only its keys compared.
    let dry_run = match sops::body_encrypted(&m.body) {
        true => Ok(None),
        false => cluster.dry_run(m).await.map(Some),
    };
    let desired = match dry_run {
        Ok(None) => cluster.desired_object(m, &target),
        Ok(Some(obj)) => serde_json::to_value(&obj).unwrap_or(Value::Null),
        Err(e)
            if e.is_not_found()
                && target
                    .namespace
                    .as_deref()
                    .is_some_and(|ns| brought.has_namespace(ns)) =>
        {
            // Its Namespace comes with this revision.
            cluster.desired_object(m, &target)
        }
        Err(e) => return wrap(Outcome::Error(error_of(m, e.reason(), sensitive))),
    };
    let live = match cluster.get(m).await {
        Ok(Some(o)) if !all && !cluster.owns(&o) => return wrap(not_owned(&key, m)),
        Ok(live) => live.map(|o| serde_json::to_value(&o).unwrap_or(Value::Null)),
        Err(e) if e.is_not_found() => None,
        Err(e) => return wrap(Outcome::Error(error_of(m, e.reason(), sensitive))),
    };
    let api_version = m.api_version.as_str();
    let live_version = live
        .as_ref()
        .and_then(|v| v.get("apiVersion"))
        .and_then(Value::as_str)
        .unwrap_or(api_version)
        .to_string();
    match compare(
        &key,
        live.as_ref().map(|v| (live_version.as_str(), v)),
        Some((api_version, &desired)),
        Some(m.source.to_string()),
        sensitive,
    ) {
        Some(c) => wrap(Outcome::Change(c)),
        None => wrap(Outcome::Unchanged),
    }
}

/// Sorts the outcomes into the report; returns the keys the cluster knows the head's objects
/// by and how many are unchanged.
fn tally(outcomes: Vec<Outcome>, report: &mut EnvReport) -> (BTreeSet<ObjectKey>, usize) {
    let mut present: BTreeSet<ObjectKey> = BTreeSet::new();
    let mut unchanged = 0usize;
    for o in outcomes {
        let o = match o {
            Outcome::Key(key, inner) => {
                present.insert(key);
                *inner
            }
            other => other,
        };
        match o {
            Outcome::Change(c) => report.changes.push(c),
            Outcome::Unchanged => unchanged += 1,
            Outcome::Error(e) => report.errors.push(e),
            Outcome::Key(..) => {}
        }
    }
    (present, unchanged)
}

/// Objects gitopsd owns in the cluster that the head no longer has: deletions.
async fn deletions(
    cluster: &Cluster,
    state: &DesiredState,
    present: &BTreeSet<ObjectKey>,
    env: &EnvInput,
    report: &mut EnvReport,
) -> Result<(), PreviewError> {
    for owned in cluster.owned_objects().await? {
        if present.contains(&owned.key) || state.objects.contains_key(&owned.key) {
            continue;
        }
        let m = manifest::live_stand_in(&owned.key, &owned.api_version);
        let sensitive = is_sensitive(&owned.key, &env.sensitive, &env.namespace);
        match cluster.get(&m).await {
            Ok(Some(live)) => {
                let v = serde_json::to_value(&live).unwrap_or(Value::Null);
                let live = Some((owned.api_version.as_str(), &v));
                if let Some(c) = compare(&owned.key, live, None, None, sensitive) {
                    report.changes.push(c);
                }
            }
            Ok(None) => {}
            Err(e) => report.errors.push(ValidationError {
                object: Some(owned.key.to_string()),
                path: None,
                line: None,
                message: e.reason(),
            }),
        }
    }
    Ok(())
}

async fn live_env(
    env: PreparedEnv,
    git_env: EnvReport,
    instance: &str,
    all: bool,
) -> Result<EnvReport, PreviewError> {
    let mut report = EnvReport {
        name: env.input.name.clone(),
        path: env.input.path.clone(),
        buckets: git_env.buckets,
        ..EnvReport::default()
    };
    let state = match env.state {
        Ok(state) => state,
        Err(errors) => {
            report.errors = errors;
            super::compute::finish(&mut report);
            return Ok(report);
        }
    };
    // Bucket problems found from git (spec, sync) still count.
    report.errors.extend(git_env.errors.into_iter().filter(|e| {
        e.object
            .as_deref()
            .is_some_and(|o| o.starts_with("Bucket "))
    }));
    let kube: Vec<&Manifest> = state.kube_objects().collect();
    let k8s = env
        .cfg
        .as_ref()
        .and_then(|c| c.kubernetes.clone().map(|k| (c, k)));
    let Some((cfg, k8s)) = k8s else {
        if !kube.is_empty() {
            report.errors.push(ValidationError {
                object: None,
                path: Some(env.input.path.clone()),
                line: None,
                message: "this environment has no kubernetes settings in the host config".into(),
            });
        }
        report.count();
        return Ok(report);
    };
    let cluster = Cluster::connect(&k8s, instance, cfg).await?;
    let brought = Introduced::of(kube.iter().copied());
    let outcomes: Vec<Outcome> = futures::stream::iter(kube.iter().map(|m| {
        let sensitive = is_sensitive(&m.key, &env.input.sensitive, &env.input.namespace);
        one(&cluster, m, sensitive, &brought, all)
    }))
    .buffered(cfg.apply_concurrency.max(1))
    .collect()
    .await;
    let (present, unchanged) = tally(outcomes, &mut report);
    if cfg.prune {
        deletions(&cluster, &state, &present, &env.input, &mut report).await?;
    }
    super::compute::finish(&mut report);
    let buckets_unchanged = state.buckets().count().saturating_sub(
        report
            .buckets
            .iter()
            .filter(|b| b.action != crate::plan::Action::Delete)
            .count(),
    );
    report.summary.unchanged = unchanged + buckets_unchanged;
    Ok(report)
}
