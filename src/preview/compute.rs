//! Preview of one environment between two revisions, from git alone (no cluster, no S3).
//!
//! Cost follows the change: the tree diff names the changed files and only those are parsed.
//! The `unchanged` count comes from counting the YAML documents of the other files (a line
//! scan, no parsing), and only files that mention gitopsd's API group are parsed to find
//! Buckets whose synced folder may have changed.

use std::collections::{BTreeMap, BTreeSet};

use git2::Oid;
use serde_json::Value;

use super::PreviewError;
use super::redact::{changed_keys, is_sensitive, scrub, strip_server_fields};
use super::repo::{Repo, RepoChange};
use super::report::{BucketChange, EnvReport, ObjectChange, ObjectSyncChange, ValidationError};
use crate::config::SensitiveMatcher;
use crate::git::FileKind;
use crate::manifest::{self, GITOPSD_API_GROUP, Manifest, ObjectKey, RenderError};
use crate::plan::{Action, unified_diff};
use crate::s3::{self, BucketSpec};

/// An environment to preview.
#[derive(Clone, Debug)]
pub struct EnvInput {
    pub name: String,
    /// Folder inside the repository.
    pub path: String,
    pub sensitive: Vec<SensitiveMatcher>,
}

/// What `s3::diff_specs` says for a field one side does not manage.
const NOT_MANAGED: &str = "(not managed)";

fn is_regular(kind: FileKind) -> bool {
    matches!(kind, FileKind::Blob | FileKind::Executable)
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
fn mentions_sensitive(text: &[u8], matchers: &[SensitiveMatcher]) -> bool {
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

/// Compares two versions of an object (server-managed fields ignored). `None` = no change.
pub fn compare(
    key: &ObjectKey,
    before: Option<(&str, &Value)>,
    after: Option<(&str, &Value)>,
    source: Option<String>,
    sensitive: bool,
) -> Option<ObjectChange> {
    let old = before.map(|(v, b)| (v, strip_server_fields(b)));
    let new = after.map(|(v, b)| (v, strip_server_fields(b)));
    let action = match (&old, &new) {
        (None, Some(_)) => Action::Create,
        (Some(_), None) => Action::Delete,
        (Some(o), Some(n)) if o != n => Action::Update,
        _ => return None,
    };
    let api_version = new
        .as_ref()
        .or(old.as_ref())
        .map(|(v, _)| v.to_string())
        .unwrap_or_default();
    let (diff, keys) = if sensitive {
        (
            None,
            Some(changed_keys(
                old.as_ref().map(|o| &o.1),
                new.as_ref().map(|n| &n.1),
            )),
        )
    } else {
        (
            Some(unified_diff(
                old.as_ref().map(|o| &o.1),
                new.as_ref().map(|n| &n.1),
                &label(key),
            )),
            None,
        )
    };
    Some(ObjectChange {
        action,
        kind: key.kind.clone(),
        group: key.group.clone(),
        api_version,
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        source,
        diff,
        changed_keys: keys,
    })
}

/// What one side (base or head) of the changed files holds.
#[derive(Default)]
struct Side {
    objects: BTreeMap<ObjectKey, Manifest>,
}

/// Previews one environment from `base` to `head` using git only.
pub fn preview_env(
    repo: &Repo,
    base: Oid,
    head: Oid,
    env: &EnvInput,
) -> Result<EnvReport, PreviewError> {
    let dir = env.path.trim_matches('/').to_string();
    let changes = repo.changed_files(base, head, &dir)?;
    let changed: BTreeSet<&str> = changes.iter().map(|c| c.path.as_str()).collect();
    let mut report = EnvReport {
        name: env.name.clone(),
        path: dir.clone(),
        ..EnvReport::default()
    };

    // Unchanged files: count their documents; parse only those that may hold Buckets.
    let mut unchanged_docs = 0usize;
    let mut steady_buckets: Vec<Manifest> = Vec::new();
    for f in repo.list_files(head, &dir)? {
        if changed.contains(f.path.as_str())
            || !is_regular(f.kind)
            || !manifest::is_manifest_path(&f.path)
        {
            continue;
        }
        let bytes = repo.blob(f.oid)?;
        unchanged_docs += count_documents(&bytes);
        if memmem(&bytes, GITOPSD_API_GROUP.as_bytes())
            && let Ok(ms) = manifest::parse_file(&f.path, &bytes)
        {
            steady_buckets.extend(ms.into_iter().filter(|m| m.key.is_bucket()));
        }
    }

    // Changed files: parse both sides.
    let mut base_side = Side::default();
    let mut head_side = Side::default();
    let mut failed_files: BTreeSet<String> = BTreeSet::new();
    let mut base_paths: BTreeMap<ObjectKey, String> = BTreeMap::new();
    for c in &changes {
        if let Some((kind, oid)) = c.old
            && is_regular(kind)
            && manifest::is_manifest_path(&c.path)
            && let Ok(ms) = manifest::parse_file(&c.path, &repo.blob(oid)?)
        {
            for m in ms {
                base_paths.insert(m.key.clone(), c.path.clone());
                base_side.objects.entry(m.key.clone()).or_insert(m);
            }
        }
        let Some((kind, oid)) = c.new else { continue };
        let err = |message: &str| ValidationError {
            object: None,
            path: Some(c.path.clone()),
            line: None,
            message: message.to_string(),
        };
        match kind {
            FileKind::Symlink => {
                report.errors.push(err(
                    "symlinks are not allowed in an environment folder (they could point outside it)",
                ));
                failed_files.insert(c.path.clone());
                continue;
            }
            FileKind::Submodule => {
                report
                    .errors
                    .push(err("submodules are not allowed in an environment folder"));
                failed_files.insert(c.path.clone());
                continue;
            }
            FileKind::Blob | FileKind::Executable => {}
        }
        if !manifest::is_manifest_path(&c.path) {
            continue;
        }
        let bytes = repo.blob(oid)?;
        match manifest::parse_file(&c.path, &bytes) {
            Ok(ms) => {
                for m in ms {
                    if let Some(first) = head_side.objects.get(&m.key) {
                        report.errors.push(ValidationError {
                            object: Some(m.key.to_string()),
                            path: Some(m.source.path.clone()),
                            line: Some(m.source.line),
                            message: format!("duplicate object, first defined at {}", first.source),
                        });
                        continue;
                    }
                    head_side.objects.insert(m.key.clone(), m);
                }
            }
            Err(errors) => {
                let sensitive = mentions_sensitive(&bytes, &env.sensitive);
                report
                    .errors
                    .extend(errors.into_iter().map(|e| render_error(e, sensitive)));
                failed_files.insert(c.path.clone());
            }
        }
    }

    // Kubernetes objects.
    let mut keys: BTreeSet<&ObjectKey> = head_side.objects.keys().collect();
    for k in base_side.objects.keys() {
        // Objects of a file that no longer parses are not reported as deleted.
        let from_failed = base_paths.get(k).is_some_and(|p| failed_files.contains(p));
        if !from_failed {
            keys.insert(k);
        }
    }
    for key in keys.iter().filter(|k| !k.is_bucket()) {
        let before = base_side.objects.get(*key);
        let after = head_side.objects.get(*key);
        let source = after.or(before).map(|m| m.source.to_string());
        let sensitive = is_sensitive(key, &env.sensitive);
        if let Some(change) = compare(
            key,
            before.map(|m| (m.api_version.as_str(), &m.body)),
            after.map(|m| (m.api_version.as_str(), &m.body)),
            source,
            sensitive,
        ) {
            report.changes.push(change);
        }
    }

    // Buckets: those in changed files, plus those in unchanged files (their synced folder may
    // have changed).
    let mut before_buckets: BTreeMap<ObjectKey, Option<BucketSpec>> = BTreeMap::new();
    let mut after_buckets: BTreeMap<ObjectKey, Option<BucketSpec>> = BTreeMap::new();
    for key in keys.iter().filter(|k| k.is_bucket()) {
        if let Some(m) = base_side.objects.get(*key) {
            before_buckets.insert((*key).clone(), s3::parse_bucket(m).ok());
        }
        if let Some(m) = head_side.objects.get(*key) {
            match s3::parse_bucket(m) {
                Ok(spec) => {
                    after_buckets.insert((*key).clone(), Some(spec));
                }
                Err(errors) => {
                    report
                        .errors
                        .extend(errors.into_iter().map(|e| render_error(e, false)));
                    after_buckets.insert((*key).clone(), None);
                }
            }
        }
    }
    for m in &steady_buckets {
        if let Ok(spec) = s3::parse_bucket(m) {
            before_buckets.insert(m.key.clone(), Some(spec.clone()));
            after_buckets.insert(m.key.clone(), Some(spec));
        }
    }
    let bucket_keys: BTreeSet<ObjectKey> = before_buckets
        .keys()
        .chain(after_buckets.keys())
        .cloned()
        .collect();
    for key in bucket_keys {
        let before = before_buckets.get(&key).cloned().flatten();
        let after = match after_buckets.get(&key) {
            // Present in head but invalid: reported as an error above.
            Some(None) => continue,
            Some(Some(s)) => Some(s.clone()),
            None => None,
        };
        if let Some(change) = bucket_change(
            repo,
            base,
            head,
            before.as_ref(),
            after.as_ref(),
            &mut report.errors,
        )? {
            report.buckets.push(change);
        }
    }

    let invalid = after_buckets.values().filter(|s| s.is_none()).count();
    let head_objects = (unchanged_docs + head_side.objects.len()).saturating_sub(invalid);
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

/// Configuration and object-sync changes of one Bucket, from git.
pub fn bucket_change(
    repo: &Repo,
    base: Oid,
    head: Oid,
    before: Option<&BucketSpec>,
    after: Option<&BucketSpec>,
    errors: &mut Vec<ValidationError>,
) -> Result<Option<BucketChange>, PreviewError> {
    let Some(spec) = after.or(before) else {
        return Ok(None);
    };
    // A created or deleted bucket lists the fields it manages, not the ones it leaves alone.
    let unmanaged = |v: &str| v.is_empty() || v == NOT_MANAGED;
    let fields: Vec<_> = s3::diff_specs(before, after)
        .into_iter()
        .filter(|f| !(unmanaged(&f.before) && unmanaged(&f.after)))
        .collect();
    let objects = match after {
        Some(a) => sync_changes(repo, base, head, before, a, errors)?,
        None => ObjectSyncChange::default(),
    };
    let action = match (before, after) {
        (None, Some(_)) => Action::Create,
        (Some(_), None) => Action::Delete,
        _ if !fields.is_empty() || !objects.is_empty() => Action::Update,
        _ => return Ok(None),
    };
    Ok(Some(BucketChange {
        action,
        name: spec.id.clone(),
        bucket: spec.name.clone(),
        source: Some(spec.source.to_string()),
        fields,
        objects,
        note: (action == Action::Delete).then(|| match spec.deletion_policy {
            s3::DeletionPolicy::Retain => {
                "deletionPolicy: Retain: the S3 bucket and its objects are kept; gitopsd stops managing it".to_string()
            }
            s3::DeletionPolicy::Delete => {
                "deletionPolicy: Delete: the S3 bucket is deleted (S3 refuses while it still holds objects)".to_string()
            }
        }),
    }))
}

/// Desired objects of a sync at one revision: key → blob id.
fn desired(
    repo: &Repo,
    rev: Oid,
    spec: &BucketSpec,
    sync: &s3::ObjectSync,
    errors: Option<&mut Vec<ValidationError>>,
) -> Result<BTreeMap<String, (String, Oid)>, PreviewError> {
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    for f in repo.list_files(rev, &sync.source)? {
        if !is_regular(f.kind) {
            continue;
        }
        match s3::object_key(&spec.name, sync, &f.path) {
            Ok(key) => {
                out.insert(key, (f.path, f.oid));
            }
            Err(e) => problems.push(sync_error(spec, &f.path, e.to_string())),
        }
    }
    if let Some(errors) = errors {
        errors.extend(problems);
    }
    Ok(out)
}

fn sync_error(spec: &BucketSpec, path: &str, message: String) -> ValidationError {
    ValidationError {
        object: Some(spec.object_name()),
        path: Some(path.to_string()),
        line: None,
        message,
    }
}

fn check_size(
    repo: &Repo,
    spec: &BucketSpec,
    sync: &s3::ObjectSync,
    path: &str,
    oid: Oid,
    errors: &mut Vec<ValidationError>,
) -> Result<(), PreviewError> {
    let size = repo.blob_size(oid)?;
    if size > sync.max_file_size {
        errors.push(sync_error(
            spec,
            path,
            format!(
                "file is {size} bytes, more than maxFileSize {}",
                sync.max_file_size
            ),
        ));
    }
    Ok(())
}

fn sync_changes(
    repo: &Repo,
    base: Oid,
    head: Oid,
    before: Option<&BucketSpec>,
    after: &BucketSpec,
    errors: &mut Vec<ValidationError>,
) -> Result<ObjectSyncChange, PreviewError> {
    let mut out = ObjectSyncChange::default();
    let Some(sync) = &after.objects else {
        return Ok(out);
    };
    let same_mapping = before
        .and_then(|b| b.objects.as_ref())
        .is_some_and(|b| b.source == sync.source && b.prefix == sync.prefix);
    if same_mapping {
        // Only what changed under the folder.
        for c in repo.changed_files(base, head, &sync.source)? {
            let RepoChange { path, old, new, .. } = c;
            let old_file = old.filter(|(k, _)| is_regular(*k));
            let new_file = new.filter(|(k, _)| is_regular(*k));
            let key = match s3::object_key(&after.name, sync, &path) {
                Ok(k) => k,
                Err(e) => {
                    if new_file.is_some() {
                        errors.push(sync_error(after, &path, e.to_string()));
                    }
                    continue;
                }
            };
            match (old_file, new_file) {
                (None, Some((_, oid))) => {
                    check_size(repo, after, sync, &path, oid, errors)?;
                    out.upload.push(key);
                }
                (Some(_), Some((_, oid))) => {
                    check_size(repo, after, sync, &path, oid, errors)?;
                    out.replace.push(key);
                }
                (Some(_), None) if sync.delete => out.delete.push(key),
                (Some(_), None) => out.kept.push(key),
                (None, None) => {}
            }
        }
    } else {
        let new = desired(repo, head, after, sync, Some(errors))?;
        let old = match before.and_then(|b| b.objects.as_ref().map(|s| (b, s))) {
            Some((b, s)) => desired(repo, base, b, s, None)?,
            None => BTreeMap::new(),
        };
        for (key, (path, oid)) in &new {
            match old.get(key) {
                None => {
                    check_size(repo, after, sync, path, *oid, errors)?;
                    out.upload.push(key.clone());
                }
                Some((_, o)) if o != oid => {
                    check_size(repo, after, sync, path, *oid, errors)?;
                    out.replace.push(key.clone());
                }
                Some(_) => {}
            }
        }
        for key in old.keys().filter(|k| !new.contains_key(*k)) {
            if sync.delete {
                out.delete.push(key.clone());
            } else {
                out.kept.push(key.clone());
            }
        }
    }
    for list in [
        &mut out.upload,
        &mut out.replace,
        &mut out.delete,
        &mut out.kept,
    ] {
        list.sort();
    }
    Ok(out)
}
