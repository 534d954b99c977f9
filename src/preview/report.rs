//! The preview report: what JSON prints as-is and Markdown renders. Plain data; calls nothing.

use serde::Serialize;

use super::redact::ChangedKeys;
use crate::manifest::ObjectKey;
use crate::plan::Action;
use crate::s3::FieldChange;

/// The whole preview: one entry per environment.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Schema version of this document.
    pub schema: u32,
    /// Base commit (full id); with `--live` the comparison is against the cluster instead.
    pub base: String,
    pub head: String,
    pub live: bool,
    pub environments: Vec<EnvReport>,
}

impl Report {
    pub fn has_errors(&self) -> bool {
        self.environments.iter().any(|e| !e.errors.is_empty())
    }
    pub fn has_changes(&self) -> bool {
        self.environments.iter().any(EnvReport::has_changes)
    }
    /// Like `terraform plan -detailed-exitcode`: 0 no changes, 2 changes, 1 errors.
    pub fn exit_code(&self) -> u8 {
        if self.has_errors() {
            1
        } else if self.has_changes() {
            2
        } else {
            0
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct EnvReport {
    pub name: String,
    /// Folder inside the repository.
    pub path: String,
    pub summary: Summary,
    pub changes: Vec<ObjectChange>,
    pub errors: Vec<ValidationError>,
    pub buckets: Vec<BucketChange>,
    /// The renderer that produced the head's objects (e.g. `kustomize v5.8.2 + helm v4.3.1`);
    /// absent for plain YAML folders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renderer: Option<String>,
}

impl EnvReport {
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty() || !self.buckets.is_empty()
    }

    /// Recomputes the counts from the lists; `unchanged` is set by the caller.
    pub fn count(&mut self) {
        let mut s = Summary {
            unchanged: self.summary.unchanged,
            errors: self.errors.len(),
            ..Summary::default()
        };
        let actions = self
            .changes
            .iter()
            .map(|c| c.action)
            .chain(self.buckets.iter().map(|b| b.action));
        for a in actions {
            match a {
                Action::Create => s.create += 1,
                Action::Update => s.update += 1,
                Action::Delete => s.delete += 1,
            }
        }
        self.summary = s;
    }
}

/// Counts per environment (Kubernetes objects and Buckets together).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub delete: usize,
    /// Objects of the head revision that stay as they are.
    pub unchanged: usize,
    /// Validation errors.
    pub errors: usize,
}

/// One Kubernetes object to create, update or delete.
#[derive(Clone, Debug, Serialize)]
pub struct ObjectChange {
    pub action: Action,
    pub kind: String,
    /// API group, empty for the core group.
    pub group: String,
    pub api_version: String,
    pub namespace: Option<String>,
    pub name: String,
    /// `path:line` of the document (head side; base side for a deletion; absent for live objects).
    pub source: Option<String>,
    /// Unified diff of the YAML (not for sensitive objects).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// For sensitive objects (Secrets and what the host config marks): keys only, never values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed_keys: Option<ChangedKeys>,
    /// SOPS-encrypted in the repository: decrypted only when applied, so keys only here.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
}

impl ObjectChange {
    pub fn key(&self) -> ObjectKey {
        ObjectKey {
            group: self.group.clone(),
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

/// A problem in the head revision (or, with `--live`, a refusal of the server-side dry-run).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ValidationError {
    pub object: Option<String>,
    pub path: Option<String>,
    pub line: Option<u64>,
    pub message: String,
}

impl std::fmt::Display for ValidationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.path, self.line) {
            (Some(p), Some(l)) => write!(f, "{p}:{l}: ")?,
            (Some(p), None) => write!(f, "{p}: ")?,
            _ => {}
        }
        if let Some(o) = &self.object {
            write!(f, "{o}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

/// A `Bucket` whose configuration or synced objects change.
#[derive(Clone, Debug, Serialize)]
pub struct BucketChange {
    pub action: Action,
    /// `metadata.name` of the Bucket object.
    pub name: String,
    /// The S3 bucket name.
    pub bucket: String,
    pub source: Option<String>,
    /// Configuration fields that change (before/after as YAML text).
    pub fields: Vec<FieldChange>,
    pub objects: ObjectSyncChange,
    /// What a deletion means for the data (`deletionPolicy`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Object-sync changes computed from git: keys to upload (new), replace (content changed),
/// delete (file removed, `delete: true`) and keep (file removed, `delete: false`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ObjectSyncChange {
    pub upload: Vec<String>,
    pub replace: Vec<String>,
    pub delete: Vec<String>,
    pub kept: Vec<String>,
}

impl ObjectSyncChange {
    pub fn is_empty(&self) -> bool {
        self.upload.is_empty()
            && self.replace.is_empty()
            && self.delete.is_empty()
            && self.kept.is_empty()
    }
}
