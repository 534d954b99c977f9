//! What a build read: the folders of its kustomization closure with their git tree ids, so a
//! later revision can be checked for changes without running the renderer.

use std::collections::BTreeMap;

use super::paths;
use super::tree::{Tree, TreeError};
use crate::git::Oid;

/// Folders (repository-relative) a build read, each with its tree id at the rendered revision.
/// A folder nested in another recorded folder is left out: the outer id covers it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inputs {
    folders: BTreeMap<String, Oid>,
}

impl Inputs {
    /// From every folder read (nested ones are dropped).
    pub fn new(folders: impl IntoIterator<Item = (String, Oid)>) -> Inputs {
        let all: BTreeMap<String, Oid> = folders.into_iter().collect();
        let mut kept: BTreeMap<String, Oid> = BTreeMap::new();
        // Sorted order visits a folder before everything below it.
        for (dir, id) in all {
            if !kept.keys().any(|outer| paths::within(outer, &dir)) {
                kept.insert(dir, id);
            }
        }
        Inputs { folders: kept }
    }

    /// The recorded folders and their tree ids, sorted by path.
    pub fn folders(&self) -> impl Iterator<Item = (&str, Oid)> {
        self.folders.iter().map(|(dir, id)| (dir.as_str(), *id))
    }

    pub fn is_empty(&self) -> bool {
        self.folders.is_empty()
    }

    /// The recorded folders whose tree id differs in `tree` (or that are gone there).
    pub fn changed_folders(&self, tree: &dyn Tree) -> Result<Vec<String>, TreeError> {
        let mut changed = Vec::new();
        for (dir, id) in &self.folders {
            if tree.tree_id(dir)? != Some(*id) {
                changed.push(dir.clone());
            }
        }
        Ok(changed)
    }

    /// Whether any recorded folder differs in `tree`: when not, rendering `tree` gives the same
    /// result (same renderer binaries assumed) and the renderer need not run.
    pub fn changed(&self, tree: &dyn Tree) -> Result<bool, TreeError> {
        for (dir, id) in &self.folders {
            if tree.tree_id(dir)? != Some(*id) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
