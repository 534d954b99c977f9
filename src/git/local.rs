//! A read-only handle on a local repository opened in place (a work tree, its `.git`, or a bare
//! repository), for `gitopsd preview`: revisions, trees, blobs and tree diffs through the same
//! [`Reader`] the mirror uses. Never writes, never fetches.

use std::path::{Path, PathBuf};

use git2::Repository;

use super::tree::Reader;
use super::{FileChange, GitError, Oid, TreeFile};

/// An opened local repository (read-only). `Send`, not `Sync`: use it from one thread.
pub struct LocalRepo {
    repo: Repository,
    path: PathBuf,
}

impl std::fmt::Debug for LocalRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRepo")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl LocalRepo {
    /// Opens the repository at `path` (a work tree, its `.git`, or a bare repository).
    pub fn open(path: &Path) -> Result<LocalRepo, GitError> {
        let repo = Repository::open(path).map_err(GitError::repo("open", path))?;
        Ok(LocalRepo::from_open(repo, path.to_path_buf()))
    }

    pub(super) fn from_open(repo: Repository, path: PathBuf) -> LocalRepo {
        LocalRepo { repo, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn reader(&self) -> Reader<'_> {
        Reader::new(&self.repo, &self.path)
    }

    /// Resolves a revision expression (sha, short sha, ref name, `HEAD~1`, ...) to a commit.
    pub fn resolve(&self, rev: &str) -> Result<Oid, GitError> {
        self.reader().resolve(rev)
    }

    /// The best common ancestor of two commits.
    pub fn merge_base(&self, a: Oid, b: Oid) -> Result<Oid, GitError> {
        self.reader().merge_base(a, b)
    }

    /// Names of the folders directly under `dir` at `rev`, sorted.
    pub fn subdirs(&self, rev: Oid, dir: &str) -> Result<Vec<String>, GitError> {
        self.reader().subdirs(rev, dir)
    }

    /// Every file under `dir` at `rev`, recursively, sorted by path.
    pub fn list_files(&self, rev: Oid, dir: &str) -> Result<Vec<TreeFile>, GitError> {
        self.reader().list_files(rev, dir)
    }

    /// Paths under `dir` that differ between `from` and `to` (tree diff: cost follows the
    /// change); see [`Mirror::changed_files`](super::Mirror::changed_files).
    pub fn changed_files(
        &self,
        from: Option<Oid>,
        to: Oid,
        dir: &str,
    ) -> Result<Vec<FileChange>, GitError> {
        self.reader().changed_files(from, to, dir)
    }

    /// The id of the tree at `dir` in commit `rev`; `None` when it is not a folder there.
    pub fn tree_id(&self, rev: Oid, dir: &str) -> Result<Option<Oid>, GitError> {
        self.reader().tree_id(rev, dir)
    }

    /// Contents of the blobs with these ids, in the same order.
    pub fn read_blobs(&self, ids: &[Oid]) -> Result<Vec<Vec<u8>>, GitError> {
        let r = self.reader();
        ids.iter().map(|id| r.blob(*id)).collect()
    }

    /// The content of the blob `id`.
    pub fn blob(&self, id: Oid) -> Result<Vec<u8>, GitError> {
        self.reader().blob(id)
    }

    /// Size of the blob `id` from its header, without reading it.
    pub fn blob_size(&self, id: Oid) -> Result<u64, GitError> {
        self.reader().blob_size(id)
    }
}
