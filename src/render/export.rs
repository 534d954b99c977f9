//! Exporting a closure's files from git into the scratch directory, and switching on origin
//! annotations in the top kustomization.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use serde_json::Value;

use super::closure::Closure;
use super::error::{HostError, RenderFailure};
use super::tree::Tree;
use crate::git::Oid;
use crate::manifest::RenderError;

/// Blobs read per batch.
const BATCH: usize = 256;

/// Byte caps of one export.
pub(crate) struct Caps {
    /// All files together.
    pub total: u64,
    /// Any one file.
    pub file: u64,
}

/// Writes every file of `closure` below `root` (files 0600 inside the 0700 scratch
/// directory; nothing executable). The top kustomization gets `originAnnotations`. Sizes are
/// checked from the blob headers before anything is read.
pub(crate) fn write(
    tree: &dyn Tree,
    closure: &Closure,
    root: &Path,
    caps: Caps,
) -> Result<(), RenderFailure> {
    let files: Vec<(&String, Oid)> = closure.files.iter().map(|(p, f)| (p, f.oid)).collect();
    let ids: Vec<Oid> = files.iter().map(|(_, id)| *id).collect();
    let sizes = tree.blob_sizes(&ids)?;
    let mut total: u64 = 0;
    for ((path, _), size) in files.iter().zip(&sizes) {
        if *size > caps.file {
            return Err(invalid(
                path,
                format!(
                    "file is {size} bytes, more than the limit of {} bytes per file",
                    caps.file
                ),
            ));
        }
        total = total.saturating_add(*size);
        if total > caps.total {
            return Err(invalid(
                &closure.top,
                format!("the files this build reads exceed {} bytes", caps.total),
            ));
        }
    }
    for batch in files.chunks(BATCH) {
        let ids: Vec<Oid> = batch.iter().map(|(_, id)| *id).collect();
        let blobs = tree.read_blobs(&ids)?;
        for ((path, _), bytes) in batch.iter().zip(blobs) {
            let bytes = if **path == closure.top {
                with_origin_annotations(&closure.top, &bytes)?
            } else {
                bytes
            };
            write_file(root, path, &bytes)?;
        }
    }
    Ok(())
}

fn invalid(path: &str, message: String) -> RenderFailure {
    RenderFailure::Invalid(vec![RenderError {
        path: path.to_string(),
        line: None,
        object: None,
        message,
    }])
}

/// Writes one repository file below `root`; a path component that could leave `root` (which
/// git itself would not store) is refused.
fn write_file(root: &Path, path: &str, bytes: &[u8]) -> Result<(), RenderFailure> {
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == ".." || c.contains('\0'))
    {
        return Err(invalid(path, "unsafe path in the tree".into()));
    }
    let target = root.join(path);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(HostError::scratch(parent))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&target)
        .map_err(HostError::scratch(&target))?;
    file.write_all(bytes).map_err(HostError::scratch(&target))?;
    Ok(())
}

/// The kustomization with `buildMetadata: [originAnnotations]` added (kept if already there),
/// written as JSON (valid YAML, no quoting questions).
pub(crate) fn with_origin_annotations(path: &str, bytes: &[u8]) -> Result<Vec<u8>, RenderFailure> {
    let text = std::str::from_utf8(bytes).map_err(|_| invalid(path, "not UTF-8".into()))?;
    let mut doc: Value = if text.trim().is_empty() {
        Value::Object(Default::default())
    } else {
        serde_saphyr::from_str(text)
            .map_err(|e| RenderFailure::Invalid(vec![super::kustomization::yaml_error(path, &e)]))?
    };
    let Some(map) = doc.as_object_mut() else {
        return Err(invalid(path, "a kustomization must be a mapping".into()));
    };
    let entry = map
        .entry("buildMetadata")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Some(list) = entry.as_array_mut() else {
        return Err(invalid(path, "buildMetadata must be a list".into()));
    };
    let origin = Value::String("originAnnotations".into());
    if !list.contains(&origin) {
        list.push(origin);
    }
    serde_json::to_vec_pretty(&doc).map_err(|e| invalid(path, format!("re-encoding: {e}")))
}
