//! Reading the mirrored branch: heads, revisions, trees, blobs, diffs and commit walks.

use std::path::Path;

use git2::{Repository, TreeWalkMode, TreeWalkResult};

use super::{
    ChangeKind, CommitInfo, FileChange, FileKind, GitError, Mirror, Oid, TreeFile, join_path,
    normalize_dir,
};

impl Mirror {
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
        let repo = self.repo()?;
        let bad = |e: git2::Error| GitError::BadRevision {
            rev: rev.to_string(),
            path: self.dir.clone(),
            message: e.message().to_string(),
        };
        let obj = repo.revparse_single(rev).map_err(bad)?;
        let commit = obj.peel_to_commit().map_err(bad)?;
        Ok(commit.id())
    }

    pub(super) fn commit_tree<'r>(
        &self,
        repo: &'r Repository,
        rev: Oid,
    ) -> Result<git2::Tree<'r>, GitError> {
        let commit = repo.find_commit(rev).map_err(|e| self.object_err(rev, e))?;
        commit.tree().map_err(|e| self.object_err(rev, e))
    }

    /// The tree at `dir` in commit `rev`; `None` if the folder does not exist there.
    fn subtree<'r>(
        &self,
        repo: &'r Repository,
        rev: Oid,
        dir: &str,
    ) -> Result<Option<git2::Tree<'r>>, GitError> {
        let root = self.commit_tree(repo, rev)?;
        if dir.is_empty() {
            return Ok(Some(root));
        }
        let entry = match root.get_path(Path::new(dir)) {
            Ok(e) => e,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(self.object_err(rev, e)),
        };
        if entry.kind() != Some(git2::ObjectType::Tree) {
            return Ok(None);
        }
        let tree = repo
            .find_tree(entry.id())
            .map_err(|e| self.object_err(entry.id(), e))?;
        Ok(Some(tree))
    }

    /// All files under `dir` ("" = root) at `rev`, recursively, sorted by path. A missing
    /// folder yields an empty list.
    pub fn list_files(&self, rev: Oid, dir: &str) -> Result<Vec<TreeFile>, GitError> {
        let repo = self.repo()?;
        let dir = normalize_dir(dir);
        let Some(tree) = self.subtree(&repo, rev, &dir)? else {
            return Ok(Vec::new());
        };
        let mut files = Vec::new();
        tree.walk(TreeWalkMode::PreOrder, |root, entry| {
            if let Some(kind) = FileKind::from_filemode(entry.filemode()) {
                let name = String::from_utf8_lossy(entry.name_bytes());
                files.push(TreeFile {
                    path: join_path(&dir, &format!("{root}{name}")),
                    kind,
                    oid: entry.id(),
                });
            }
            TreeWalkResult::Ok
        })
        .map_err(|e| self.object_err(rev, e))?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// Content of the blob at `path` in `rev` (a symlink yields its target); `None` if the
    /// path does not exist or is not a blob.
    pub fn read_blob(&self, rev: Oid, path: &str) -> Result<Option<Vec<u8>>, GitError> {
        let repo = self.repo()?;
        let path = normalize_dir(path);
        if path.is_empty() {
            return Ok(None);
        }
        let root = self.commit_tree(&repo, rev)?;
        let entry = match root.get_path(Path::new(&path)) {
            Ok(e) => e,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(self.object_err(rev, e)),
        };
        if entry.kind() != Some(git2::ObjectType::Blob) {
            return Ok(None);
        }
        let blob = repo
            .find_blob(entry.id())
            .map_err(|e| self.object_err(entry.id(), e))?;
        Ok(Some(blob.content().to_vec()))
    }

    /// Paths under `dir` that differ between `from` and `to`, sorted by path. `from = None`
    /// reports everything under `dir` at `to` as added. Cost is proportional to the change.
    pub fn changed_files(
        &self,
        from: Option<Oid>,
        to: Oid,
        dir: &str,
    ) -> Result<Vec<FileChange>, GitError> {
        let repo = self.repo()?;
        let dir = normalize_dir(dir);
        let new = self.subtree(&repo, to, &dir)?;
        let old = match from {
            Some(f) => self.subtree(&repo, f, &dir)?,
            None => None,
        };
        if old.is_none() && new.is_none() {
            return Ok(Vec::new());
        }
        let mut opts = git2::DiffOptions::new();
        opts.include_typechange(true)
            .include_typechange_trees(false)
            .ignore_submodules(false);
        let diff = repo
            .diff_tree_to_tree(old.as_ref(), new.as_ref(), Some(&mut opts))
            .map_err(|e| self.object_err(to, e))?;
        let mut out = Vec::new();
        for delta in diff.deltas() {
            let (change, side) = match delta.status() {
                git2::Delta::Added | git2::Delta::Copied | git2::Delta::Untracked => {
                    (ChangeKind::Added, delta.new_file())
                }
                git2::Delta::Deleted => (ChangeKind::Deleted, delta.old_file()),
                git2::Delta::Modified | git2::Delta::Typechange | git2::Delta::Renamed => {
                    (ChangeKind::Modified, delta.new_file())
                }
                _ => continue,
            };
            let Some(kind) = FileKind::from_mode(side.mode()) else {
                continue;
            };
            let Some(path) = side.path_bytes() else {
                continue;
            };
            out.push(FileChange {
                path: join_path(&dir, &String::from_utf8_lossy(path)),
                change,
                kind,
            });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// True if `ancestor` is `descendant` or one of its ancestors.
    pub fn is_ancestor(&self, ancestor: Oid, descendant: Oid) -> Result<bool, GitError> {
        if ancestor == descendant {
            return Ok(true);
        }
        let repo = self.repo()?;
        repo.graph_descendant_of(descendant, ancestor)
            .map_err(|e| self.object_err(descendant, e))
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
        let repo = self.repo()?;
        let mut walk = repo
            .revwalk()
            .map_err(GitError::repo("revwalk", &self.dir))?;
        walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::TIME)
            .map_err(GitError::repo("revwalk", &self.dir))?;
        walk.push(to).map_err(|e| self.object_err(to, e))?;
        if let Some(from) = from {
            if repo.find_commit(from).is_ok() {
                walk.hide(from).map_err(|e| self.object_err(from, e))?;
            } else {
                tracing::debug!(commit = %from, "commits_between: base commit unknown, not hiding it");
            }
        }
        let mut out = Vec::new();
        for id in walk.take(limit) {
            let id = id.map_err(GitError::repo("revwalk", &self.dir))?;
            out.push(self.commit_info_in(&repo, id)?);
        }
        out.reverse();
        Ok(out)
    }

    pub fn commit_info(&self, rev: Oid) -> Result<CommitInfo, GitError> {
        let repo = self.repo()?;
        self.commit_info_in(&repo, rev)
    }

    fn commit_info_in(&self, repo: &Repository, rev: Oid) -> Result<CommitInfo, GitError> {
        let c = repo.find_commit(rev).map_err(|e| self.object_err(rev, e))?;
        let author = c.author();
        let author = format!(
            "{} <{}>",
            String::from_utf8_lossy(author.name_bytes()),
            String::from_utf8_lossy(author.email_bytes())
        );
        let summary = c
            .summary_bytes()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .unwrap_or_default();
        Ok(CommitInfo {
            id: rev,
            summary,
            author,
            time: c.time().seconds(),
        })
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
