//! One revision's tree as the renderers see it: files under a folder, blob contents, folder ids.
//!
//! Kept small so that both the daemon's mirror and the preview's read-only repository can
//! provide it. Synchronous (libgit2 blocks): async callers run it on the blocking pool.

use std::sync::Arc;

use crate::git::{GitError, LocalRepo, Mirror, Oid, TreeFile};

/// Reading a revision's tree failed. Never the commit's fault: retry later.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error(transparent)]
    Git(#[from] GitError),
    /// Any other repository reader (e.g. the preview's).
    #[error("reading {what} from {repo}: {message}")]
    Read {
        repo: String,
        what: String,
        message: String,
    },
}

/// One revision's tree.
pub trait Tree: Send + Sync {
    /// All files under `dir` (`""` = root), recursively, with repository-relative paths; a
    /// missing folder yields an empty list.
    fn list_files(&self, dir: &str) -> Result<Vec<TreeFile>, TreeError>;
    /// Contents of these blobs, in the same order.
    fn read_blobs(&self, ids: &[Oid]) -> Result<Vec<Vec<u8>>, TreeError>;
    /// Sizes of these blobs from their headers (nothing loaded), in the same order.
    fn blob_sizes(&self, ids: &[Oid]) -> Result<Vec<u64>, TreeError>;
    /// The tree id of folder `dir` (`""` = root); `None` when it is not a folder here.
    fn tree_id(&self, dir: &str) -> Result<Option<Oid>, TreeError>;
}

/// The mirror at one commit.
impl Tree for (Arc<Mirror>, Oid) {
    fn list_files(&self, dir: &str) -> Result<Vec<TreeFile>, TreeError> {
        Ok(self.0.list_files(self.1, dir)?)
    }

    fn read_blobs(&self, ids: &[Oid]) -> Result<Vec<Vec<u8>>, TreeError> {
        Ok(self.0.read_blobs(ids)?)
    }

    fn blob_sizes(&self, ids: &[Oid]) -> Result<Vec<u64>, TreeError> {
        Ok(self.0.blob_sizes(ids)?)
    }

    fn tree_id(&self, dir: &str) -> Result<Option<Oid>, TreeError> {
        Ok(self.0.tree_id(self.1, dir)?)
    }
}

/// One revision of a local repository (the preview's), shared between threads.
pub struct LocalTree {
    pub repo: Arc<std::sync::Mutex<LocalRepo>>,
    pub rev: Oid,
}

impl LocalTree {
    fn with<T>(&self, f: impl FnOnce(&LocalRepo) -> Result<T, GitError>) -> Result<T, TreeError> {
        let repo = self.repo.lock().map_err(|_| TreeError::Read {
            repo: "local repository".into(),
            what: "a revision".into(),
            message: "an earlier read panicked".into(),
        })?;
        Ok(f(&repo)?)
    }
}

impl Tree for LocalTree {
    fn list_files(&self, dir: &str) -> Result<Vec<TreeFile>, TreeError> {
        self.with(|r| r.list_files(self.rev, dir))
    }

    fn read_blobs(&self, ids: &[Oid]) -> Result<Vec<Vec<u8>>, TreeError> {
        self.with(|r| r.read_blobs(ids))
    }

    fn blob_sizes(&self, ids: &[Oid]) -> Result<Vec<u64>, TreeError> {
        self.with(|r| ids.iter().map(|id| r.blob_size(*id)).collect())
    }

    fn tree_id(&self, dir: &str) -> Result<Option<Oid>, TreeError> {
        self.with(|r| r.tree_id(self.rev, dir))
    }
}
