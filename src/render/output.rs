//! Turning kustomize's output into desired state: parse the documents, map each object's
//! `config.kubernetes.io/origin` annotation to the repository file it came from, and strip the
//! annotation before anything is applied.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::paths;
use crate::manifest::{self, Body, DesiredState, Manifest, RenderError, Source};

/// The annotation kustomize writes with `buildMetadata: [originAnnotations]`.
pub const ORIGIN_ANNOTATION: &str = "config.kubernetes.io/origin";

/// Where kustomize says an object came from. Paths are relative to the built folder.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct Origin {
    /// The resource file (objects read from files).
    pub path: Option<String>,
    /// The kustomization whose generator made it (generators, Helm charts).
    pub configured_in: Option<String>,
}

/// Removes the origin annotation from `body` (and an `annotations` map it leaves empty), and
/// returns it parsed.
pub(crate) fn take_origin(body: &mut Value) -> Option<Origin> {
    let metadata = body.get_mut("metadata")?.as_object_mut()?;
    let annotations = metadata.get_mut("annotations")?.as_object_mut()?;
    let raw = annotations.remove(ORIGIN_ANNOTATION)?;
    if annotations.is_empty() {
        metadata.remove("annotations");
    }
    let text = raw.as_str()?;
    serde_saphyr::from_str(text).ok()
}

/// The repository-relative file an origin names, for a build of folder `dir`.
pub(crate) fn origin_file(origin: &Origin, dir: &str) -> Option<String> {
    let rel = origin.path.as_deref().or(origin.configured_in.as_deref())?;
    if rel.starts_with('/') || paths::remote_reason(rel).is_some() {
        return None;
    }
    paths::resolve(dir, rel)
}

/// Finds the document an object came from in its source file, to give errors a line.
struct Lines<'a> {
    root: &'a Path,
    /// Per file: (kind, name, line, document index) of each document.
    files: HashMap<String, Vec<(String, String, u64, usize)>>,
}

impl Lines<'_> {
    fn locate(&mut self, path: &str, kind: &str, name: &str) -> (u64, usize) {
        let root = self.root;
        let docs = self.files.entry(path.to_string()).or_insert_with(|| {
            let bytes = std::fs::read(root.join(path)).unwrap_or_default();
            manifest::parse_file(path, &bytes)
                .unwrap_or_default()
                .into_iter()
                .map(|m| (m.key.kind, m.key.name, m.source.line, m.source.document))
                .collect()
        });
        let same_kind = || docs.iter().filter(|d| d.0 == kind);
        let found = same_kind()
            .find(|d| d.1 == name)
            // A name prefix or suffix (namePrefix, generator hashes) keeps the original inside.
            .or_else(|| {
                same_kind()
                    .filter(|d| name.contains(d.1.as_str()))
                    .max_by_key(|d| d.1.len())
            })
            .or_else(|| {
                let mut it = same_kind();
                match (it.next(), it.next()) {
                    (Some(only), None) => Some(only),
                    _ => None,
                }
            });
        found.map(|d| (d.2, d.3)).unwrap_or((1, 0))
    }
}

/// What [`into_state`] needs to know about the build.
pub(crate) struct Build<'a> {
    /// The built folder (repository-relative).
    pub dir: &'a str,
    /// Its kustomization file, the source of objects without an origin.
    pub top: &'a str,
    /// The export root, to look up lines in source files.
    pub root: &'a Path,
    pub limits: manifest::Limits,
}

/// Parses kustomize's stdout into desired state; sources name repository files.
pub(crate) fn into_state(
    stdout: &[u8],
    build: &Build<'_>,
) -> Result<DesiredState, Vec<RenderError>> {
    let label = format!("{} (kustomize output)", build.top);
    // The output is the whole environment: its budget, not one file's.
    let mut allowance = manifest::Allowance::new(build.limits);
    let manifests = manifest::parse_file_within(&label, stdout, &mut allowance, true)?;
    let mut lines = Lines {
        root: build.root,
        files: HashMap::new(),
    };
    let mut state = DesiredState::default();
    let mut errors = Vec::new();
    for mut m in manifests {
        m.source = source_of(&mut m, build, &mut lines);
        insert(&mut state, m, &mut errors);
    }
    if errors.is_empty() {
        Ok(state)
    } else {
        Err(errors)
    }
}

/// Strips the origin annotation of `m` and returns the source it names.
fn source_of(m: &mut Manifest, build: &Build<'_>, lines: &mut Lines<'_>) -> Source {
    let mut body = m.body.value();
    let origin = take_origin(&mut body);
    m.body = Body::new(&body);
    let path = origin
        .as_ref()
        .and_then(|o| origin_file(o, build.dir))
        .unwrap_or_else(|| build.top.to_string());
    let from_file = origin.as_ref().is_some_and(|o| o.path.is_some());
    let (line, document) = if from_file {
        lines.locate(&path, &m.key.kind, &m.key.name)
    } else {
        (1, 0)
    };
    Source {
        path,
        line,
        document,
    }
}

/// Adds one object, refusing a second object with the same identity.
fn insert(state: &mut DesiredState, m: Manifest, errors: &mut Vec<RenderError>) {
    if let Some(first) = state.objects.get(&m.key) {
        errors.push(RenderError {
            path: m.source.path.clone(),
            line: Some(m.source.line),
            object: Some(m.key.to_string()),
            message: format!(
                "duplicate object in the rendered output, first from {}",
                first.source
            ),
        });
        return;
    }
    state
        .files
        .entry(m.source.path.clone())
        .or_default()
        .push(m.key.clone());
    state.objects.insert(m.key.clone(), Arc::new(m));
}
