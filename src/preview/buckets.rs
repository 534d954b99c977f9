//! Buckets in a git-only preview: configuration changes (`s3::diff_specs`, no S3 calls) and
//! object-sync changes from the tree diff of each synced folder. Calls `git::LocalRepo` and `s3`'s
//! pure parts (spec parse, object keys, spec diff).

use std::collections::BTreeMap;

use super::PreviewError;
use super::compute::{Sides, render_error};
use super::report::{BucketChange, ObjectSyncChange, ValidationError};
use crate::git::{FileSide, LocalRepo, Oid};
use crate::manifest::{Manifest, ObjectKey};
use crate::plan::Action;
use crate::s3::{self, BucketSpec};

/// What `s3::diff_specs` says for a field one side does not manage.
const NOT_MANAGED: &str = "(not managed)";

/// Buckets of the changed files (both sides) and of the unchanged files (`steady`: their synced
/// folder may have changed). Returns the changes and how many head Buckets are invalid (their
/// errors go to `errors`).
pub(crate) fn bucket_changes(
    repo: &LocalRepo,
    revs: (Oid, Oid),
    sides: &Sides,
    steady: &[Manifest],
    errors: &mut Vec<ValidationError>,
) -> Result<(Vec<BucketChange>, usize), PreviewError> {
    let mut before: BTreeMap<ObjectKey, Option<BucketSpec>> = BTreeMap::new();
    let mut after: BTreeMap<ObjectKey, Option<BucketSpec>> = BTreeMap::new();
    for (key, m) in sides.base.iter().filter(|(k, _)| k.is_bucket()) {
        // A Bucket of a file that no longer parses is not reported as deleted.
        if sides.head.contains_key(key) || sides.counts(m) {
            before.insert(key.clone(), s3::parse_bucket(m).ok());
        }
    }
    for (key, m) in sides.head.iter().filter(|(k, _)| k.is_bucket()) {
        let spec = s3::parse_bucket(m)
            .map_err(|e| errors.extend(e.into_iter().map(|e| render_error(e, false))))
            .ok();
        after.insert(key.clone(), spec);
    }
    for m in steady {
        if let Ok(spec) = s3::parse_bucket(m) {
            before.insert(m.key.clone(), Some(spec.clone()));
            after.insert(m.key.clone(), Some(spec));
        }
    }
    let keys: std::collections::BTreeSet<&ObjectKey> = before.keys().chain(after.keys()).collect();
    let mut out = Vec::new();
    for key in keys {
        let old = before.get(key).cloned().flatten();
        let new = match after.get(key) {
            // Present in head but invalid: reported as an error above.
            Some(None) => continue,
            Some(Some(s)) => Some(s.clone()),
            None => None,
        };
        if let Some(change) = bucket_change(repo, revs, old.as_ref(), new.as_ref(), errors)? {
            out.push(change);
        }
    }
    let invalid = after.values().filter(|s| s.is_none()).count();
    Ok((out, invalid))
}

/// The configuration fields that change between two specs; a created or deleted bucket lists
/// the fields it manages, not the ones it leaves alone.
pub(crate) fn changed_fields(
    before: Option<&BucketSpec>,
    after: Option<&BucketSpec>,
) -> Vec<s3::FieldChange> {
    let unmanaged = |v: &str| v.is_empty() || v == NOT_MANAGED;
    s3::diff_specs(before, after)
        .into_iter()
        .filter(|f| !(unmanaged(&f.before) && unmanaged(&f.after)))
        .collect()
}

/// Configuration and object-sync changes of one Bucket, from git.
pub fn bucket_change(
    repo: &LocalRepo,
    revs: (Oid, Oid),
    before: Option<&BucketSpec>,
    after: Option<&BucketSpec>,
    errors: &mut Vec<ValidationError>,
) -> Result<Option<BucketChange>, PreviewError> {
    let Some(spec) = after.or(before) else {
        return Ok(None);
    };
    let fields = changed_fields(before, after);
    let objects = match after {
        Some(a) => sync_changes(repo, revs, before, a, errors)?,
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
        note: (action == Action::Delete).then(|| deletion_note(spec)),
    }))
}

/// What deleting the Bucket object means for the data.
fn deletion_note(spec: &BucketSpec) -> String {
    match spec.deletion_policy {
        s3::DeletionPolicy::Retain => {
            "deletionPolicy: Retain: the S3 bucket and its objects are kept; gitopsd stops managing it".to_string()
        }
        s3::DeletionPolicy::Delete => {
            "deletionPolicy: Delete: the S3 bucket is deleted (S3 refuses while it still holds objects)".to_string()
        }
    }
}

/// Desired objects of a sync at one revision: key → (path, blob id).
fn desired(
    repo: &LocalRepo,
    rev: Oid,
    spec: &BucketSpec,
    sync: &s3::ObjectSync,
    errors: Option<&mut Vec<ValidationError>>,
) -> Result<BTreeMap<String, (String, Oid)>, PreviewError> {
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    for f in repo.list_files(rev, &sync.source)? {
        if !f.kind.is_regular() {
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

/// One Bucket's sync at the head: what its files may be checked against.
struct Sync<'a> {
    repo: &'a LocalRepo,
    spec: &'a BucketSpec,
    sync: &'a s3::ObjectSync,
}

impl Sync<'_> {
    /// Records an error when the file is larger than `maxFileSize`.
    fn check_size(
        &self,
        path: &str,
        oid: Oid,
        errors: &mut Vec<ValidationError>,
    ) -> Result<(), PreviewError> {
        let size = self.repo.blob_size(oid)?;
        if size > self.sync.max_file_size {
            errors.push(sync_error(
                self.spec,
                path,
                format!(
                    "file is {size} bytes, more than maxFileSize {}",
                    self.sync.max_file_size
                ),
            ));
        }
        Ok(())
    }

    /// The mapping is unchanged: only what changed under the folder.
    fn changed(
        &self,
        revs: (Oid, Oid),
        out: &mut ObjectSyncChange,
        errors: &mut Vec<ValidationError>,
    ) -> Result<(), PreviewError> {
        let regular = |s: Option<FileSide>| s.filter(|s| s.kind.is_regular());
        for c in self
            .repo
            .changed_files(Some(revs.0), revs.1, &self.sync.source)?
        {
            let (old, new) = (regular(c.old), regular(c.new));
            let key = match s3::object_key(&self.spec.name, self.sync, &c.path) {
                Ok(k) => k,
                Err(e) => {
                    if new.is_some() {
                        errors.push(sync_error(self.spec, &c.path, e.to_string()));
                    }
                    continue;
                }
            };
            match (old, new) {
                (None, Some(n)) => {
                    self.check_size(&c.path, n.oid, errors)?;
                    out.upload.push(key);
                }
                (Some(_), Some(n)) => {
                    self.check_size(&c.path, n.oid, errors)?;
                    out.replace.push(key);
                }
                (Some(_), None) if self.sync.delete => out.delete.push(key),
                (Some(_), None) => out.kept.push(key),
                (None, None) => {}
            }
        }
        Ok(())
    }

    /// The mapping changed (or is new): the whole folder at both revisions.
    fn remapped(
        &self,
        revs: (Oid, Oid),
        before: Option<&BucketSpec>,
        out: &mut ObjectSyncChange,
        errors: &mut Vec<ValidationError>,
    ) -> Result<(), PreviewError> {
        let new = desired(self.repo, revs.1, self.spec, self.sync, Some(errors))?;
        let old = match before.and_then(|b| b.objects.as_ref().map(|s| (b, s))) {
            Some((b, s)) => desired(self.repo, revs.0, b, s, None)?,
            None => BTreeMap::new(),
        };
        for (key, (path, oid)) in &new {
            match old.get(key) {
                None => {
                    self.check_size(path, *oid, errors)?;
                    out.upload.push(key.clone());
                }
                Some((_, o)) if o != oid => {
                    self.check_size(path, *oid, errors)?;
                    out.replace.push(key.clone());
                }
                Some(_) => {}
            }
        }
        for key in old.keys().filter(|k| !new.contains_key(*k)) {
            if self.sync.delete {
                out.delete.push(key.clone());
            } else {
                out.kept.push(key.clone());
            }
        }
        Ok(())
    }
}

fn sync_changes(
    repo: &LocalRepo,
    revs: (Oid, Oid),
    before: Option<&BucketSpec>,
    after: &BucketSpec,
    errors: &mut Vec<ValidationError>,
) -> Result<ObjectSyncChange, PreviewError> {
    let mut out = ObjectSyncChange::default();
    let Some(sync) = &after.objects else {
        return Ok(out);
    };
    let s = Sync {
        repo,
        spec: after,
        sync,
    };
    let same_mapping = before
        .and_then(|b| b.objects.as_ref())
        .is_some_and(|b| b.source == sync.source && b.prefix == sync.prefix);
    if same_mapping {
        s.changed(revs, &mut out, errors)?;
    } else {
        s.remapped(revs, before, &mut out, errors)?;
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
