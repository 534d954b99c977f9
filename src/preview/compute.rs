//! Preview of one environment between two revisions, from git alone (no cluster, no S3).
//!
//! Cost follows the change: the tree diff names the changed files and only those are parsed.
//! The `unchanged` count comes from counting the YAML documents of the other files (a line
//! scan, no parsing), and only files that mention gitopsd's API group are parsed to find
//! Buckets whose synced folder may have changed. Objects are compared by [`plan::plan`], the
//! comparison the daemon's plan makes too. Calls `git::LocalRepo` (reads), `manifest` (parse),
//! `plan` and, for Buckets, `preview::buckets`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::PreviewError;
use super::buckets::bucket_changes;
use super::redact::{changed_keys, is_sensitive, scrub};
use super::report::{EnvReport, ObjectChange, ValidationError};
use crate::config::{EnvironmentConfig, SensitiveMatcher};
use crate::git::{FileChange, FileKind, LocalRepo, Oid};
use crate::manifest::{self, GITOPSD_API_GROUP, Manifest, ObjectKey, RenderError};
use crate::plan::{self, Action, unified_diff, without_server_fields};
use crate::render::sops;

/// An environment to preview.
#[derive(Clone, Debug)]
pub struct EnvInput {
    pub name: String,
    /// Folder inside the repository.
    pub path: String,
    /// Namespace of namespaced objects that name none.
    pub namespace: String,
    pub sensitive: Vec<SensitiveMatcher>,
}

impl EnvInput {
    /// An environment of the host config.
    pub fn from_config(e: &EnvironmentConfig) -> EnvInput {
        EnvInput {
            name: e.name.clone(),
            path: e.path.trim_matches('/').to_string(),
            namespace: e.namespace.clone(),
            sensitive: e.sensitive.clone(),
        }
    }

    /// An environment found as a folder, without a host config.
    pub fn from_folder(name: String, path: String) -> EnvInput {
        EnvInput {
            name,
            path,
            namespace: manifest::DEFAULT_NAMESPACE.to_string(),
            sensitive: Vec::new(),
        }
    }
}

pub(crate) fn render_error(e: RenderError, sensitive: bool) -> ValidationError {
    ValidationError {
        object: e.object,
        path: Some(e.path),
        line: e.line,
        message: if sensitive {
            scrub(&e.message)
        } else {
            e.message
        },
    }
}

/// Whether a file's text mentions a sensitive kind; errors about it are scrubbed of quotes.
pub(crate) fn mentions_sensitive(text: &[u8], matchers: &[SensitiveMatcher]) -> bool {
    let text = String::from_utf8_lossy(text);
    text.contains("Secret") || matchers.iter().any(|m| text.contains(m.kind.as_str()))
}

/// Number of YAML documents with content (what render would turn into objects).
pub fn count_documents(bytes: &[u8]) -> usize {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return 0;
    };
    manifest::split_documents(text)
        .iter()
        .filter(|d| {
            d.text.lines().any(|l| {
                let t = l.trim();
                !(t.is_empty() || t.starts_with('#') || t.starts_with('%'))
            })
        })
        .count()
}

/// Objects with identity and body; the label for diffs.
fn label(key: &ObjectKey) -> String {
    let kind = if key.group.is_empty() {
        key.kind.clone()
    } else {
        format!("{}.{}", key.kind, key.group)
    };
    match &key.namespace {
        Some(ns) => format!("{kind}/{ns}/{}", key.name),
        None => format!("{kind}/{}", key.name),
    }
}

/// Compares two versions of an object with [`plan::change`] (server-managed fields ignored).
/// `None` = no change.
pub fn compare(
    key: &ObjectKey,
    before: Option<(&str, &Value)>,
    after: Option<(&str, &Value)>,
    source: Option<String>,
    sensitive: bool,
) -> Option<ObjectChange> {
    let action = plan::change(before.map(|b| b.1), after.map(|a| a.1))?;
    Some(describe(key, action, before, after, source, sensitive))
}

/// What a preview shows of one change: a diff without server-managed fields, or for a
/// sensitive object only the keys that change.
fn describe(
    key: &ObjectKey,
    action: Action,
    before: Option<(&str, &Value)>,
    after: Option<(&str, &Value)>,
    source: Option<String>,
    sensitive: bool,
) -> ObjectChange {
    // A preview has no keys: a SOPS object is shown as keys only, its ciphertexts compared.
    let encrypted = [before, after]
        .iter()
        .flatten()
        .any(|(_, body)| sops::is_encrypted(body));
    let shown = |body: &Value| {
        let mut body = without_server_fields(body);
        if let Some(map) = body.as_object_mut() {
            map.remove(sops::METADATA_KEY);
        }
        body
    };
    let old = before.map(|(_, b)| shown(b));
    let new = after.map(|(_, a)| shown(a));
    let api_version = after.or(before).map(|(v, _)| v.to_string());
    let (diff, keys) = if sensitive || encrypted {
        (None, Some(changed_keys(old.as_ref(), new.as_ref())))
    } else {
        let diff = unified_diff(old.as_ref(), new.as_ref(), &label(key));
        (Some(diff), None)
    };
    ObjectChange {
        action,
        kind: key.kind.clone(),
        group: key.group.clone(),
        api_version: api_version.unwrap_or_default(),
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        source,
        diff,
        changed_keys: keys,
        encrypted,
    }
}

/// A manifest's API version and body, as [`compare`] takes them.
fn side(m: Option<&Manifest>) -> Option<(&str, Value)> {
    m.map(|m| (m.api_version.as_str(), m.body.value()))
}

/// What the changed files hold at the base and at the head (objects keyed as written).
#[derive(Default)]
pub(crate) struct Sides {
    pub base: BTreeMap<ObjectKey, Manifest>,
    pub head: BTreeMap<ObjectKey, Manifest>,
    /// Changed files that hold no usable objects at the head (parse errors, symlinks,
    /// submodules): their base objects are not reported as deleted.
    pub failed: BTreeSet<String>,
    pub errors: Vec<ValidationError>,
}

impl Sides {
    /// Whether a base object counts (its file did not fail at the head).
    pub fn counts(&self, m: &Manifest) -> bool {
        !self.failed.contains(&m.source.path)
    }

    /// Adds the base side of a changed file (unparseable base files are ignored).
    fn add_base(&mut self, path: &str, bytes: &[u8]) {
        if let Ok(ms) = manifest::parse_file(path, bytes) {
            for m in ms {
                self.base.entry(m.key.clone()).or_insert(m);
            }
        }
    }

    /// Adds the head side of a changed file; its problems become errors.
    fn add_head(&mut self, path: &str, bytes: &[u8], matchers: &[SensitiveMatcher]) {
        let ms = match manifest::parse_file(path, bytes) {
            Ok(ms) => ms,
            Err(errors) => {
                let sensitive = mentions_sensitive(bytes, matchers);
                self.errors
                    .extend(errors.into_iter().map(|e| render_error(e, sensitive)));
                self.failed.insert(path.to_string());
                return;
            }
        };
        for m in ms {
            if let Some(first) = self.head.get(&m.key) {
                self.errors.push(ValidationError {
                    object: Some(m.key.to_string()),
                    path: Some(m.source.path.clone()),
                    line: Some(m.source.line),
                    message: format!("duplicate object, first defined at {}", first.source),
                });
                continue;
            }
            self.head.insert(m.key.clone(), m);
        }
    }

    /// A head entry that is no file gitopsd reads.
    fn refuse(&mut self, path: &str, message: &str) {
        self.errors.push(ValidationError {
            object: None,
            path: Some(path.to_string()),
            line: None,
            message: message.to_string(),
        });
        self.failed.insert(path.to_string());
    }
}

/// Reads both sides of the changed files.
fn read_changes(
    repo: &LocalRepo,
    changes: &[FileChange],
    env: &EnvInput,
) -> Result<Sides, PreviewError> {
    let mut sides = Sides::default();
    for c in changes {
        let yaml = manifest::is_manifest_path(&c.path);
        if let Some(old) = c.old.filter(|o| o.kind.is_regular() && yaml) {
            sides.add_base(&c.path, &super::manifest_blob(repo, &c.path, old.oid)?);
        }
        match c.new.map(|n| (n.kind, n.oid)) {
            None => {}
            Some((FileKind::Symlink, _)) => sides.refuse(
                &c.path,
                "symlinks are not allowed in an environment folder (they could point outside it)",
            ),
            Some((FileKind::Submodule, _)) => sides.refuse(
                &c.path,
                "submodules are not allowed in an environment folder",
            ),
            Some((_, oid)) if yaml => sides.add_head(
                &c.path,
                &super::manifest_blob(repo, &c.path, oid)?,
                &env.sensitive,
            ),
            Some(_) => {}
        }
    }
    Ok(sides)
}

/// Changes of the Kubernetes objects of the changed files, paired and compared by
/// [`plan::plan`] (the environment's namespace defaults the ones that name none).
pub(crate) fn object_changes(sides: &Sides, env: &EnvInput) -> Vec<ObjectChange> {
    let kube = |m: &&Manifest| !m.key.is_bucket();
    let base = sides.base.values().filter(kube);
    let plan = plan::plan(base, sides.head.values().filter(kube), &env.namespace);
    plan.changes
        .iter()
        // Objects of a file that no longer parses are not reported as deleted.
        .filter(|c| c.after.is_some() || c.before.is_some_and(|m| sides.counts(m)))
        .filter_map(|c| {
            let shown = c.after.or(c.before)?;
            let (before, after) = (side(c.before), side(c.after));
            Some(describe(
                &shown.key,
                c.action,
                before.as_ref().map(|(v, b)| (*v, b)),
                after.as_ref().map(|(v, a)| (*v, a)),
                Some(shown.source.to_string()),
                is_sensitive(&shown.key, &env.sensitive, &env.namespace),
            ))
        })
        .collect()
}

/// The files the change leaves alone: how many documents they hold, and the Buckets among them
/// (their synced folder may still have changed).
struct Steady {
    documents: usize,
    buckets: Vec<Manifest>,
}

fn steady_files(
    repo: &LocalRepo,
    head: Oid,
    dir: &str,
    changes: &[FileChange],
) -> Result<Steady, PreviewError> {
    let changed: BTreeSet<&str> = changes.iter().map(|c| c.path.as_str()).collect();
    let mut steady = Steady {
        documents: 0,
        buckets: Vec::new(),
    };
    for f in repo.list_files(head, dir)? {
        if changed.contains(f.path.as_str())
            || !f.kind.is_regular()
            || !manifest::is_manifest_path(&f.path)
        {
            continue;
        }
        let bytes = super::manifest_blob(repo, &f.path, f.oid)?;
        steady.documents += count_documents(&bytes);
        if memmem(&bytes, GITOPSD_API_GROUP.as_bytes())
            && let Ok(ms) = manifest::parse_file(&f.path, &bytes)
        {
            steady
                .buckets
                .extend(ms.into_iter().filter(|m| m.key.is_bucket()));
        }
    }
    Ok(steady)
}

/// Previews one environment from `base` to `head` using git only.
pub fn preview_env(
    repo: &LocalRepo,
    base: Oid,
    head: Oid,
    env: &EnvInput,
) -> Result<EnvReport, PreviewError> {
    let dir = env.path.trim_matches('/').to_string();
    let changes = repo.changed_files(Some(base), head, &dir)?;
    let steady = steady_files(repo, head, &dir, &changes)?;
    let mut sides = read_changes(repo, &changes, env)?;
    let mut report = EnvReport {
        name: env.name.clone(),
        path: dir,
        changes: object_changes(&sides, env),
        errors: std::mem::take(&mut sides.errors),
        ..EnvReport::default()
    };
    let (buckets, invalid) = bucket_changes(
        repo,
        (base, head),
        &sides,
        &steady.buckets,
        &mut report.errors,
    )?;
    report.buckets = buckets;
    let head_objects = (steady.documents + sides.head.len()).saturating_sub(invalid);
    finish(&mut report);
    report.summary.unchanged =
        head_objects.saturating_sub(report.summary.create + report.summary.update);
    Ok(report)
}

/// Stable order (creates, updates, deletes; then by object) and counts.
pub(crate) fn finish(report: &mut EnvReport) {
    report.changes.sort_by_key(|c| (c.action, c.key()));
    report
        .buckets
        .sort_by(|a, b| (a.action, &a.name).cmp(&(b.action, &b.name)));
    report
        .errors
        .sort_by(|a, b| (&a.path, a.line).cmp(&(&b.path, b.line)));
    report.count();
}

fn memmem(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
