//! Typed desired state: an environment folder at a revision, rendered into objects. Owns object
//! identity ([`ObjectKey`]), sources, render errors and what a set of objects brings with it
//! ([`Introduced`]). May call: nothing with I/O (it uses `git`'s file kinds as a type only).
//!
//! Rendering is pure: it sees file paths, kinds and bytes (read from git by the caller) and never
//! touches the network or the cluster. Errors carry the file, the line and the object identity.
//!
//! Namespaces: render keeps `metadata.namespace` exactly as written. Whether a kind is namespaced is
//! the cluster's knowledge, so the Kubernetes layer defaults a namespaced object without a
//! namespace to the environment's `namespace` from the host config (`default` when unset) and
//! drops the field from cluster-scoped kinds.

mod body;
pub mod limits;
mod parse;
mod yaml;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::git::FileKind;
pub use body::Body;
pub use limits::{Allowance, Limits};
pub use parse::{parse_file, parse_file_within, reparse};
pub use yaml::split_documents;

/// Namespace of namespaced objects that name none, when the host config names none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// apiVersion of gitopsd's own kinds (`Bucket`).
pub const GITOPSD_API_GROUP: &str = "gitopsd.dev";
/// Kind for an S3 bucket reconciled by gitopsd.
pub const BUCKET_KIND: &str = "Bucket";

/// Identity of an object: what makes two documents "the same object". The API version is not part
/// of it, so moving an object from `v1beta1` to `v1` is an update, not a delete plus a create.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ObjectKey {
    /// API group, empty for the core group.
    pub group: String,
    pub kind: String,
    /// As written in the manifest; `None` when absent (see the module docs).
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    pub fn is_crd(&self) -> bool {
        self.group == "apiextensions.k8s.io" && self.kind == "CustomResourceDefinition"
    }
    pub fn is_namespace(&self) -> bool {
        self.group.is_empty() && self.kind == "Namespace"
    }
    /// gitopsd's own S3 bucket kind, handled by the `s3` module instead of the cluster.
    pub fn is_bucket(&self) -> bool {
        self.group == GITOPSD_API_GROUP && self.kind == BUCKET_KIND
    }
    pub fn is_secret(&self) -> bool {
        self.group.is_empty() && self.kind == "Secret"
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        };
        match &self.namespace {
            Some(ns) => write!(f, "{kind} {ns}/{}", self.name),
            None => write!(f, "{kind} {}", self.name),
        }
    }
}

/// A manifest standing for a live object found in the cluster: only its identity (deletes,
/// live reads).
pub fn live_stand_in(key: &ObjectKey, api_version: &str) -> Manifest {
    let mut metadata = serde_json::json!({ "name": key.name });
    if let Some(ns) = &key.namespace {
        metadata["namespace"] = Value::String(ns.clone());
    }
    Manifest {
        key: key.clone(),
        api_version: api_version.to_string(),
        source: Source {
            path: "(cluster)".into(),
            line: 0,
            document: 0,
        },
        body: Body::new(
            &serde_json::json!({ "apiVersion": api_version, "kind": key.kind, "metadata": metadata }),
        ),
    }
}

/// Where a document came from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Source {
    /// Repository-relative path.
    pub path: String,
    /// 1-based line of the document's first line.
    pub line: u64,
    /// 0-based index of the document in its file.
    pub document: usize,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path, self.line)
    }
}

/// One desired object.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    pub key: ObjectKey,
    pub api_version: String,
    pub source: Source,
    /// The document as written (JSON model of the YAML), kept as compact JSON.
    pub body: Body,
}

/// A rendering problem, with as much position as is known.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub struct RenderError {
    pub path: String,
    pub line: Option<u64>,
    pub object: Option<String>,
    pub message: String,
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(object) = &self.object {
            write!(f, ": {object}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl RenderError {
    fn at(source: &Source, object: Option<String>, message: impl Into<String>) -> Self {
        RenderError {
            path: source.path.clone(),
            line: Some(source.line),
            object,
            message: message.into(),
        }
    }
}

/// What a tree entry is; only regular files are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Symlink,
    Submodule,
}

impl From<FileKind> for EntryKind {
    fn from(kind: FileKind) -> EntryKind {
        match kind {
            FileKind::Blob | FileKind::Executable => EntryKind::File,
            FileKind::Symlink => EntryKind::Symlink,
            FileKind::Submodule => EntryKind::Submodule,
        }
    }
}

/// One entry of an environment folder, as read from git by the caller.
#[derive(Clone, Debug)]
pub struct FileEntry {
    /// Repository-relative path.
    pub path: String,
    pub kind: EntryKind,
    /// Contents; only needed for YAML files.
    pub bytes: Vec<u8>,
}

/// The (group, kind) a CustomResourceDefinition manifest defines, if `m` is one.
pub fn crd_defined_kind(m: &Manifest) -> Option<(String, String)> {
    if !m.key.is_crd() {
        return None;
    }
    let spec = m.body.get("spec")?;
    let spec = &spec;
    let group = spec.get("group")?.as_str()?.to_string();
    let kind = spec.get("names")?.get("kind")?.as_str()?.to_string();
    Some((group, kind))
}

/// What a set of objects brings with it: its Namespaces and the kinds its
/// CustomResourceDefinitions define. Objects in those namespaces or of those kinds cannot be
/// checked against the cluster (dry-run) before these exist.
#[derive(Clone, Debug, Default)]
pub struct Introduced {
    namespaces: BTreeSet<String>,
    kinds: BTreeSet<(String, String)>,
}

impl Introduced {
    pub fn of<'a>(objects: impl IntoIterator<Item = &'a Manifest>) -> Introduced {
        let mut out = Introduced::default();
        for m in objects {
            if m.key.is_namespace() {
                out.namespaces.insert(m.key.name.clone());
            }
            if let Some(kind) = crd_defined_kind(m) {
                out.kinds.insert(kind);
            }
        }
        out
    }

    /// The Namespaces brought.
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.namespaces.iter().map(String::as_str)
    }

    pub fn has_namespace(&self, namespace: &str) -> bool {
        self.namespaces.contains(namespace)
    }

    /// Whether a brought CRD defines the kind of `key`.
    pub fn defines_kind_of(&self, key: &ObjectKey) -> bool {
        self.kinds.contains(&(key.group.clone(), key.kind.clone()))
    }
}

/// Whether a path is read as manifests (`.yaml` / `.yml`); everything else is ignored.
pub fn is_manifest_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.ends_with(".yaml") || lower.ends_with(".yml")
}

/// Whether `path` lies inside `dir` (both repository-relative, `""` is the root) without escaping it.
pub fn path_within(dir: &str, path: &str) -> bool {
    if path.starts_with('/')
        || path
            .split('/')
            .any(|c| c == ".." || c == "." || c.is_empty())
    {
        return false;
    }
    let dir = dir.trim_matches('/');
    dir.is_empty()
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The typed desired state of one environment at one revision.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DesiredState {
    /// Shared, so re-rendering a commit copies pointers, not documents.
    pub objects: BTreeMap<ObjectKey, Arc<Manifest>>,
    /// Which objects each file produced, so a re-render only re-reads changed files.
    pub files: BTreeMap<String, Vec<ObjectKey>>,
}

impl DesiredState {
    pub fn len(&self) -> usize {
        self.objects.len()
    }
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
    /// Objects for the cluster (everything but gitopsd's own kinds).
    pub fn kube_objects(&self) -> impl Iterator<Item = &Manifest> {
        self.objects
            .values()
            .map(|m| m.as_ref())
            .filter(|m| !m.key.is_bucket())
    }
    /// gitopsd `Bucket` objects.
    pub fn buckets(&self) -> impl Iterator<Item = &Manifest> {
        self.objects
            .values()
            .map(|m| m.as_ref())
            .filter(|m| m.key.is_bucket())
    }

    fn insert_file(&mut self, path: &str, manifests: Vec<Manifest>, errors: &mut Vec<RenderError>) {
        let mut keys = Vec::with_capacity(manifests.len());
        for manifest in manifests {
            if let Some(existing) = self.objects.get(&manifest.key) {
                errors.push(RenderError::at(
                    &manifest.source,
                    Some(manifest.key.to_string()),
                    format!("duplicate object, first defined at {}", existing.source),
                ));
                continue;
            }
            keys.push(manifest.key.clone());
            self.objects
                .insert(manifest.key.clone(), Arc::new(manifest));
        }
        if !keys.is_empty() {
            self.files.insert(path.to_string(), keys);
        }
    }

    fn remove_file(&mut self, path: &str) -> Vec<ObjectKey> {
        let keys = self.files.remove(path).unwrap_or_default();
        for key in &keys {
            self.objects.remove(key);
        }
        keys
    }
}

/// Renders a whole environment folder within the default limits.
pub fn render(
    dir: &str,
    entries: impl IntoIterator<Item = FileEntry>,
) -> Result<DesiredState, Vec<RenderError>> {
    render_within(dir, entries, &Limits::default())
}

/// Renders a whole environment folder. All problems are collected, not just the first; a
/// limit reached stops the render, and `entries` is not consumed further (a caller reading
/// files lazily reads no more). Callers that know sizes beforehand (git) check them first with
/// [`limits::check_sizes`]; the byte limits are checked here again as entries come.
pub fn render_within(
    dir: &str,
    entries: impl IntoIterator<Item = FileEntry>,
    limits: &Limits,
) -> Result<DesiredState, Vec<RenderError>> {
    let mut allowance = Allowance::new(*limits);
    let mut state = DesiredState::default();
    let mut errors = Vec::new();
    let mut tally = limits::SizeTally::default();
    for entry in entries {
        if entry.kind == EntryKind::File && is_manifest_path(&entry.path) {
            if let Some(e) = tally.add(&entry.path, entry.bytes.len() as u64, limits) {
                errors.push(e);
                continue;
            }
            if let Some(e) = tally.over(limits, dir) {
                errors.push(e);
                break;
            }
        }
        if let Some(manifests) = read_entry(dir, &entry, &mut allowance, &mut errors) {
            state.insert_file(&entry.path, manifests, &mut errors);
        }
        if allowance.exhausted() {
            break;
        }
    }
    if errors.is_empty() {
        Ok(state)
    } else {
        Err(errors)
    }
}

/// A change to one file between two revisions: the new entry, or `None` when the file was deleted.
#[derive(Clone, Debug)]
pub struct FileUpdate {
    pub path: String,
    pub entry: Option<FileEntry>,
}

/// Re-renders `base` with only the changed files re-read. Returns the new state and the keys of
/// every object that came from a changed file (before or after), which is all a plan must compare.
/// The caller checks the byte limits of the whole folder (it knows the sizes from git).
pub fn rerender(
    dir: &str,
    base: &DesiredState,
    updates: impl IntoIterator<Item = FileUpdate>,
    limits: &Limits,
) -> Result<(DesiredState, Vec<ObjectKey>), Vec<RenderError>> {
    let (paths, entries): (Vec<String>, Vec<Option<FileEntry>>) =
        updates.into_iter().map(|u| (u.path, u.entry)).unzip();
    rerender_lazily(dir, base, &paths, entries.into_iter().flatten(), limits)
}

/// [`rerender`] with the changed `paths` and the new side of those that still exist as
/// `entries`, consumed one at a time and no further once a limit is reached.
pub fn rerender_lazily(
    dir: &str,
    base: &DesiredState,
    paths: &[String],
    entries: impl IntoIterator<Item = FileEntry>,
    limits: &Limits,
) -> Result<(DesiredState, Vec<ObjectKey>), Vec<RenderError>> {
    let mut state = base.clone();
    let mut touched = Vec::new();
    let mut errors = Vec::new();
    // Remove every changed file first so that an object moving between two changed files is not
    // reported as a duplicate of its old self.
    for path in paths {
        touched.extend(state.remove_file(path));
    }
    let mut allowance = Allowance::new(*limits);
    if let Err(e) = allowance.spend(dir, state.len(), 0) {
        return Err(vec![e]);
    }
    for entry in entries {
        if let Some(manifests) = read_entry(dir, &entry, &mut allowance, &mut errors) {
            touched.extend(manifests.iter().map(|m| m.key.clone()));
            state.insert_file(&entry.path, manifests, &mut errors);
        }
        if allowance.exhausted() {
            break;
        }
    }
    if errors.is_empty() {
        touched.sort();
        touched.dedup();
        Ok((state, touched))
    } else {
        Err(errors)
    }
}

/// Reads one folder entry; `None` when it yields nothing (ignored file or an error already pushed).
fn read_entry(
    dir: &str,
    entry: &FileEntry,
    allowance: &mut Allowance,
    errors: &mut Vec<RenderError>,
) -> Option<Vec<Manifest>> {
    let err = |message: &str| RenderError {
        path: entry.path.clone(),
        line: None,
        object: None,
        message: message.to_string(),
    };
    if !path_within(dir, &entry.path) {
        errors.push(err("path leaves the environment folder"));
        return None;
    }
    match entry.kind {
        EntryKind::Symlink => {
            errors.push(err(
                "symlinks are not allowed in an environment folder (they could point outside it)",
            ));
            return None;
        }
        EntryKind::Submodule => {
            errors.push(err("submodules are not allowed in an environment folder"));
            return None;
        }
        EntryKind::File => {}
    }
    if !is_manifest_path(&entry.path) || allowance.exhausted() {
        return None;
    }
    match parse_file_within(&entry.path, &entry.bytes, allowance, false) {
        Ok(manifests) => Some(manifests),
        Err(mut file_errors) => {
            errors.append(&mut file_errors);
            None
        }
    }
}

#[cfg(test)]
mod tests;
