//! Reading a repository at a revision: revisions, trees, blobs, tree diffs and commit walks.
//!
//! Owns the one implementation of these reads ([`Reader`], over an opened libgit2 repository)
//! and the types callers see ([`TreeFile`], [`FileChange`], [`CommitInfo`]). Both the bare
//! [`Mirror`](super::Mirror) and a [`LocalRepo`](super::LocalRepo) opened in place read through
//! it. Calls libgit2 only; never the network.

use std::path::Path;

use git2::{FileMode, Repository, TreeWalkMode, TreeWalkResult};

use super::{GitError, Oid};

/// A file in a tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeFile {
    /// Repository-relative path, `/`-separated.
    pub path: String,
    pub kind: FileKind,
    pub oid: Oid,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    Blob,
    Executable,
    Symlink,
    Submodule,
}

impl FileKind {
    fn from_filemode(mode: i32) -> Option<FileKind> {
        match mode {
            0o100644 | 0o100664 | 0o100666 => Some(FileKind::Blob),
            0o100755 => Some(FileKind::Executable),
            0o120000 => Some(FileKind::Symlink),
            0o160000 => Some(FileKind::Submodule),
            _ => None,
        }
    }

    fn from_mode(mode: FileMode) -> Option<FileKind> {
        match mode {
            FileMode::Blob | FileMode::BlobGroupWritable => Some(FileKind::Blob),
            FileMode::BlobExecutable => Some(FileKind::Executable),
            FileMode::Link => Some(FileKind::Symlink),
            FileMode::Commit => Some(FileKind::Submodule),
            FileMode::Tree | FileMode::Unreadable => None,
        }
    }

    /// A regular file (plain or executable), whose content can be read.
    pub fn is_regular(self) -> bool {
        matches!(self, FileKind::Blob | FileKind::Executable)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// What a path held on one side of a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileSide {
    pub kind: FileKind,
    pub oid: Oid,
}

/// One changed path. A type change (file ↔ symlink, mode change) is `Modified`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileChange {
    pub path: String,
    pub change: ChangeKind,
    /// Kind of the new side, or of the old side if deleted.
    pub kind: FileKind,
    /// The old side (`None` when added, or when it was no file).
    pub old: Option<FileSide>,
    /// The new side (`None` when deleted).
    pub new: Option<FileSide>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    pub id: Oid,
    /// First line of the message.
    pub summary: String,
    /// `Name <email>` of the author.
    pub author: String,
    /// Committer time, unix seconds.
    pub time: i64,
}

/// A repository-relative folder without `./`, leading or trailing slashes (`""` = root).
pub(crate) fn normalize_dir(dir: &str) -> String {
    let mut d = dir.trim();
    while let Some(rest) = d.strip_prefix("./") {
        d = rest;
    }
    let d = d.trim_matches('/');
    if d == "." {
        String::new()
    } else {
        d.to_string()
    }
}

/// `dir/rest`, where either may be empty.
pub(crate) fn join_path(dir: &str, rest: &str) -> String {
    if dir.is_empty() {
        rest.to_string()
    } else if rest.is_empty() {
        dir.to_string()
    } else {
        format!("{dir}/{rest}")
    }
}

/// An unreadable object of the repository at `path`.
pub(super) fn object_error(path: &Path, object: impl ToString, e: &git2::Error) -> GitError {
    GitError::Object {
        object: object.to_string(),
        path: path.to_path_buf(),
        message: e.message().to_string(),
    }
}

/// Reads of an opened repository; errors name the repository's `path`.
pub(super) struct Reader<'r> {
    repo: &'r Repository,
    path: &'r Path,
}

impl<'r> Reader<'r> {
    pub(super) fn new(repo: &'r Repository, path: &'r Path) -> Reader<'r> {
        Reader { repo, path }
    }

    fn err(&self, object: impl ToString) -> impl FnOnce(git2::Error) -> GitError + 'r {
        let (path, object) = (self.path, object.to_string());
        move |e| object_error(path, object, &e)
    }

    /// Resolves a revision expression (sha, short sha, ref name, `HEAD~1`, ...) to a commit.
    pub(super) fn resolve(&self, rev: &str) -> Result<Oid, GitError> {
        let bad = |e: git2::Error| GitError::BadRevision {
            rev: rev.to_string(),
            path: self.path.to_path_buf(),
            message: e.message().to_string(),
        };
        let obj = self.repo.revparse_single(rev).map_err(bad)?;
        let commit = obj.peel_to_commit().map_err(bad)?;
        Ok(commit.id())
    }

    pub(super) fn commit_tree(&self, rev: Oid) -> Result<git2::Tree<'r>, GitError> {
        let commit = self.repo.find_commit(rev).map_err(self.err(rev))?;
        commit.tree().map_err(self.err(rev))
    }

    /// The tree at `dir` in commit `rev`; `None` if the folder does not exist there.
    fn subtree(&self, rev: Oid, dir: &str) -> Result<Option<git2::Tree<'r>>, GitError> {
        let root = self.commit_tree(rev)?;
        if dir.is_empty() {
            return Ok(Some(root));
        }
        let entry = match root.get_path(Path::new(dir)) {
            Ok(e) => e,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(self.err(rev)(e)),
        };
        if entry.kind() != Some(git2::ObjectType::Tree) {
            return Ok(None);
        }
        let tree = self
            .repo
            .find_tree(entry.id())
            .map_err(self.err(entry.id()))?;
        Ok(Some(tree))
    }

    /// The id of the tree at `dir` in commit `rev` (`""` = the root tree); `None` when `dir`
    /// does not exist there or is not a folder. Equal ids: nothing under `dir` changed.
    pub(super) fn tree_id(&self, rev: Oid, dir: &str) -> Result<Option<Oid>, GitError> {
        Ok(self.subtree(rev, &normalize_dir(dir))?.map(|t| t.id()))
    }

    /// Names of the folders directly under `dir` at `rev`, sorted.
    pub(super) fn subdirs(&self, rev: Oid, dir: &str) -> Result<Vec<String>, GitError> {
        let Some(tree) = self.subtree(rev, &normalize_dir(dir))? else {
            return Ok(Vec::new());
        };
        let mut out: Vec<String> = tree
            .iter()
            .filter(|e| e.kind() == Some(git2::ObjectType::Tree))
            .map(|e| String::from_utf8_lossy(e.name_bytes()).into_owned())
            .collect();
        out.sort();
        Ok(out)
    }

    /// All files under `dir` ("" = root) at `rev`, recursively, sorted by path. A missing
    /// folder yields an empty list.
    pub(super) fn list_files(&self, rev: Oid, dir: &str) -> Result<Vec<TreeFile>, GitError> {
        let dir = normalize_dir(dir);
        let Some(tree) = self.subtree(rev, &dir)? else {
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
        .map_err(self.err(rev))?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// Content of the blob at `path` in `rev` (a symlink yields its target); `None` if the
    /// path does not exist or is not a blob.
    pub(super) fn read_blob(&self, rev: Oid, path: &str) -> Result<Option<Vec<u8>>, GitError> {
        let path = normalize_dir(path);
        if path.is_empty() {
            return Ok(None);
        }
        let root = self.commit_tree(rev)?;
        let entry = match root.get_path(Path::new(&path)) {
            Ok(e) => e,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(self.err(rev)(e)),
        };
        if entry.kind() != Some(git2::ObjectType::Blob) {
            return Ok(None);
        }
        self.blob(entry.id()).map(Some)
    }

    /// Content of the blob `id`.
    pub(super) fn blob(&self, id: Oid) -> Result<Vec<u8>, GitError> {
        let blob = self.repo.find_blob(id).map_err(self.err(id))?;
        Ok(blob.content().to_vec())
    }

    /// Size of the blob `id` from its header, without reading it.
    pub(super) fn blob_size(&self, id: Oid) -> Result<u64, GitError> {
        let odb = self
            .repo
            .odb()
            .map_err(GitError::repo("open object database", self.path))?;
        let (size, _) = odb.read_header(id).map_err(self.err(id))?;
        Ok(size as u64)
    }

    /// Paths under `dir` that differ between `from` and `to`, sorted by path. `from = None`
    /// reports everything under `dir` at `to` as added. Cost is proportional to the change.
    pub(super) fn changed_files(
        &self,
        from: Option<Oid>,
        to: Oid,
        dir: &str,
    ) -> Result<Vec<FileChange>, GitError> {
        let dir = normalize_dir(dir);
        let new = self.subtree(to, &dir)?;
        let old = match from {
            Some(f) => self.subtree(f, &dir)?,
            None => None,
        };
        if old.is_none() && new.is_none() {
            return Ok(Vec::new());
        }
        let mut opts = git2::DiffOptions::new();
        opts.include_typechange(true)
            .include_typechange_trees(false)
            .ignore_submodules(false);
        let diff = self
            .repo
            .diff_tree_to_tree(old.as_ref(), new.as_ref(), Some(&mut opts))
            .map_err(self.err(to))?;
        let mut out: Vec<FileChange> = diff
            .deltas()
            .filter_map(|delta| file_change(&dir, &delta))
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// True if `ancestor` is `descendant` or one of its ancestors.
    pub(super) fn is_ancestor(&self, ancestor: Oid, descendant: Oid) -> Result<bool, GitError> {
        if ancestor == descendant {
            return Ok(true);
        }
        self.repo
            .graph_descendant_of(descendant, ancestor)
            .map_err(self.err(descendant))
    }

    /// The best common ancestor of two commits.
    pub(super) fn merge_base(&self, a: Oid, b: Oid) -> Result<Oid, GitError> {
        self.repo
            .merge_base(a, b)
            .map_err(self.err(format!("merge base of {a} and {b}")))
    }

    /// Commits reachable from `to` and not from `from`, oldest first. When there are more
    /// than `limit`, the newest `limit` are returned. An unknown `from` (e.g. history
    /// rewritten upstream) is ignored.
    pub(super) fn commits_between(
        &self,
        from: Option<Oid>,
        to: Oid,
        limit: usize,
    ) -> Result<Vec<CommitInfo>, GitError> {
        let walk_err = || GitError::repo("revwalk", self.path);
        let mut walk = self.repo.revwalk().map_err(walk_err())?;
        walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::TIME)
            .map_err(walk_err())?;
        walk.push(to).map_err(self.err(to))?;
        if let Some(from) = from {
            if self.repo.find_commit(from).is_ok() {
                walk.hide(from).map_err(self.err(from))?;
            } else {
                tracing::debug!(commit = %from, "commits_between: base commit unknown, not hiding it");
            }
        }
        let mut out = Vec::new();
        for id in walk.take(limit) {
            out.push(self.commit_info(id.map_err(walk_err())?)?);
        }
        out.reverse();
        Ok(out)
    }

    pub(super) fn commit_info(&self, rev: Oid) -> Result<CommitInfo, GitError> {
        let c = self.repo.find_commit(rev).map_err(self.err(rev))?;
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
}

/// One delta of a tree diff under `dir` as a [`FileChange`]; `None` for what is not a file.
fn file_change(dir: &str, delta: &git2::DiffDelta<'_>) -> Option<FileChange> {
    let side = |f: git2::DiffFile<'_>| {
        FileKind::from_mode(f.mode()).map(|kind| FileSide { kind, oid: f.id() })
    };
    let (change, old, new, file) = match delta.status() {
        git2::Delta::Added | git2::Delta::Copied | git2::Delta::Untracked => (
            ChangeKind::Added,
            None,
            side(delta.new_file()),
            delta.new_file(),
        ),
        git2::Delta::Deleted => (
            ChangeKind::Deleted,
            side(delta.old_file()),
            None,
            delta.old_file(),
        ),
        git2::Delta::Modified | git2::Delta::Typechange | git2::Delta::Renamed => (
            ChangeKind::Modified,
            side(delta.old_file()),
            side(delta.new_file()),
            delta.new_file(),
        ),
        _ => return None,
    };
    let kind = if change == ChangeKind::Deleted {
        old?.kind
    } else {
        new?.kind
    };
    let path = file.path_bytes()?;
    Some(FileChange {
        path: join_path(dir, &String::from_utf8_lossy(path)),
        change,
        kind,
        old,
        new,
    })
}
