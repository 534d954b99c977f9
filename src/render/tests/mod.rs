//! Unit tests of the renderers without I/O (an in-memory tree; no binaries).

mod closure;
mod kustomization;
mod output;

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::paths;
use super::tree::{Tree, TreeError};
use crate::git::{FileKind, Oid, TreeFile};

/// A tree held in memory; ids are content hashes, like git's.
#[derive(Clone, Default)]
pub(super) struct MemTree {
    files: BTreeMap<String, (FileKind, Vec<u8>)>,
}

fn oid(parts: &[&[u8]]) -> Oid {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    Oid::from_bytes(&h.finalize()[..20]).unwrap()
}

impl MemTree {
    pub(super) fn new(files: &[(&str, &str)]) -> MemTree {
        let mut t = MemTree::default();
        for (path, text) in files {
            t = t.with(path, text);
        }
        t
    }

    pub(super) fn with(mut self, path: &str, text: &str) -> MemTree {
        self.files
            .insert(path.to_string(), (FileKind::Blob, text.as_bytes().to_vec()));
        self
    }

    pub(super) fn with_symlink(mut self, path: &str, target: &str) -> MemTree {
        self.files.insert(
            path.to_string(),
            (FileKind::Symlink, target.as_bytes().to_vec()),
        );
        self
    }
}

impl Tree for MemTree {
    fn blob_sizes(&self, ids: &[Oid]) -> Result<Vec<u64>, TreeError> {
        Ok(self
            .read_blobs(ids)?
            .iter()
            .map(|b| b.len() as u64)
            .collect())
    }

    fn list_files(&self, dir: &str) -> Result<Vec<TreeFile>, TreeError> {
        Ok(self
            .files
            .iter()
            .filter(|(p, _)| paths::within(dir, p) && *p != dir)
            .map(|(p, (kind, bytes))| TreeFile {
                path: p.clone(),
                kind: *kind,
                oid: oid(&[bytes]),
            })
            .collect())
    }

    fn read_blobs(&self, ids: &[Oid]) -> Result<Vec<Vec<u8>>, TreeError> {
        ids.iter()
            .map(|id| {
                self.files
                    .values()
                    .find(|(_, b)| oid(&[b]) == *id)
                    .map(|(_, b)| b.clone())
                    .ok_or_else(|| TreeError::Read {
                        repo: "memory".into(),
                        what: id.to_string(),
                        message: "no such blob".into(),
                    })
            })
            .collect()
    }

    fn tree_id(&self, dir: &str) -> Result<Option<Oid>, TreeError> {
        let under: Vec<&[u8]> = self
            .files
            .iter()
            .filter(|(p, _)| paths::within(dir, p) && *p != dir)
            .flat_map(|(p, (_, b))| [p.as_bytes(), b.as_slice()])
            .collect();
        Ok((!under.is_empty()).then(|| oid(&under)))
    }
}
