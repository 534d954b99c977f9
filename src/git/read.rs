//! The mirror's reads: the branch head, revisions, trees, blobs, diffs and commit walks, each
//! through the shared [`Reader`] on a fresh open of the mirror (so [`Mirror`] stays `Sync`).
//! Batch reads ([`Mirror::read_blobs`], [`Mirror::read_only`]) open the repository once for
//! many objects, so rendering a folder of thousands of files does not reopen it per file.

use git2::Repository;

use super::tree::{Reader, object_error};
use super::{CommitInfo, FileChange, GitError, LocalRepo, Mirror, Oid, TreeFile};

impl Mirror {
    /// Runs `f` on a reader of a fresh open of the mirror.
    fn read<T>(&self, f: impl FnOnce(&Reader<'_>) -> Result<T, GitError>) -> Result<T, GitError> {
        let repo = self.repo()?;
        f(&Reader::new(&repo, &self.dir))
    }

    pub(super) fn object_err(&self, id: Oid, e: git2::Error) -> GitError {
        object_error(&self.dir, id, &e)
    }

    pub(super) fn commit_tree<'r>(
        &self,
        repo: &'r Repository,
        rev: Oid,
    ) -> Result<git2::Tree<'r>, GitError> {
        let commit = repo.find_commit(rev).map_err(|e| self.object_err(rev, e))?;
        commit.tree().map_err(|e| self.object_err(rev, e))
    }

    /// The mirror opened once as a read-only [`LocalRepo`] (for many reads in a row).
    pub fn read_only(&self) -> Result<LocalRepo, GitError> {
        Ok(LocalRepo::from_open(self.repo()?, self.dir.clone()))
    }

    /// The branch head from the last fetch (no network).
    pub fn branch_head(&self) -> Result<Oid, GitError> {
        let repo = self.repo()?;
        self.branch_head_in(&repo)
    }

    pub(super) fn branch_head_in(&self, repo: &Repository) -> Result<Oid, GitError> {
        match repo.refname_to_id(&self.branch_ref) {
            Ok(id) => Ok(id),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Err(GitError::MissingRef {
                name: self.branch_ref.clone(),
                url: self.url.sanitized.clone(),
            }),
            Err(e) => Err(GitError::repo("read branch", &self.dir)(e)),
        }
    }

    /// Resolves a revision expression (sha, short sha, ref name, `HEAD~1`, ...) to a commit.
    pub fn resolve(&self, rev: &str) -> Result<Oid, GitError> {
        self.read(|r| r.resolve(rev))
    }

    /// All files under `dir` ("" = root) at `rev`, recursively, sorted by path. A missing
    /// folder yields an empty list.
    pub fn list_files(&self, rev: Oid, dir: &str) -> Result<Vec<TreeFile>, GitError> {
        self.read(|r| r.list_files(rev, dir))
    }

    /// The id of the tree at `dir` in commit `rev` (`""` = the root tree); `None` when `dir`
    /// does not exist there or is not a folder (used by the renderers' input tracking).
    pub fn tree_id(&self, rev: Oid, dir: &str) -> Result<Option<Oid>, GitError> {
        self.read(|r| r.tree_id(rev, dir))
    }

    /// Content of the blob at `path` in `rev` (a symlink yields its target); `None` if the
    /// path does not exist or is not a blob.
    pub fn read_blob(&self, rev: Oid, path: &str) -> Result<Option<Vec<u8>>, GitError> {
        self.read(|r| r.read_blob(rev, path))
    }

    /// Contents of the blobs with these ids, in the same order (one open for all).
    pub fn read_blobs(&self, ids: &[Oid]) -> Result<Vec<Vec<u8>>, GitError> {
        self.read(|r| ids.iter().map(|id| r.blob(*id)).collect())
    }

    /// Sizes of these blobs from their headers, without loading them.
    pub fn blob_sizes(&self, ids: &[Oid]) -> Result<Vec<u64>, GitError> {
        self.read(|r| ids.iter().map(|id| r.blob_size(*id)).collect())
    }

    /// Paths under `dir` that differ between `from` and `to`, sorted by path. `from = None`
    /// reports everything under `dir` at `to` as added. Cost is proportional to the change.
    pub fn changed_files(
        &self,
        from: Option<Oid>,
        to: Oid,
        dir: &str,
    ) -> Result<Vec<FileChange>, GitError> {
        self.read(|r| r.changed_files(from, to, dir))
    }

    /// True if `ancestor` is `descendant` or one of its ancestors.
    pub fn is_ancestor(&self, ancestor: Oid, descendant: Oid) -> Result<bool, GitError> {
        self.read(|r| r.is_ancestor(ancestor, descendant))
    }

    /// Commits reachable from `to` and not from `from`, oldest first. When there are more
    /// than `limit`, the newest `limit` are returned. An unknown `from` (e.g. history
    /// rewritten upstream) is ignored.
    pub fn commits_between(
        &self,
        from: Option<Oid>,
        to: Oid,
        limit: usize,
    ) -> Result<Vec<CommitInfo>, GitError> {
        self.read(|r| r.commits_between(from, to, limit))
    }

    pub fn commit_info(&self, rev: Oid) -> Result<CommitInfo, GitError> {
        self.read(|r| r.commit_info(rev))
    }

    /// The signature of `rev` and the bytes it signs; `None` when the commit is unsigned.
    pub fn signed_commit(&self, rev: Oid) -> Result<Option<super::SignedCommit>, GitError> {
        let repo = self.repo()?;
        let commit = repo.find_commit(rev).map_err(|e| self.object_err(rev, e))?;
        let time = commit.committer().when().seconds();
        match repo.extract_signature(&rev, None) {
            Ok((signature, payload)) => Ok(Some(super::SignedCommit {
                signature: signature.to_vec(),
                payload: payload.to_vec(),
                time,
            })),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(self.object_err(rev, e)),
        }
    }

    /// Refs matching the `extra_fetch_refs` globs after the last fetch, sorted by name.
    pub fn extra_refs(&self) -> Result<Vec<(String, Oid)>, GitError> {
        let repo = self.repo()?;
        let mut out = Vec::new();
        for glob in &self.opts.extra_fetch_refs {
            let refs = repo
                .references_glob(glob)
                .map_err(GitError::repo("list refs", &self.dir))?;
            for r in refs {
                let r = r.map_err(GitError::repo("list refs", &self.dir))?;
                let Ok(name) = r.name() else { continue };
                match r.peel_to_commit() {
                    Ok(c) => out.push((name.to_string(), c.id())),
                    Err(e) => {
                        tracing::debug!(r#ref = name, error = %e, "extra ref does not point to a commit")
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}
