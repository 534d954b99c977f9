//! Read-only access to a repository for previews: a local repository opened in place (bare or
//! not), or the bare mirror a URL was fetched into. Synchronous (libgit2 blocks).

use std::path::{Path, PathBuf};

use git2::{Oid, Repository, TreeWalkMode, TreeWalkResult};

use super::PreviewError;
use crate::git::{ChangeKind, FileKind};

/// A file in a tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoFile {
    pub path: String,
    pub kind: FileKind,
    pub oid: Oid,
}

/// One changed path between two revisions, with both sides.
#[derive(Clone, Debug)]
pub struct RepoChange {
    pub path: String,
    pub change: ChangeKind,
    /// The base side (`None` when added).
    pub old: Option<(FileKind, Oid)>,
    /// The head side (`None` when deleted).
    pub new: Option<(FileKind, Oid)>,
}

/// An opened repository.
pub struct Repo {
    repo: Repository,
    path: PathBuf,
}

impl Repo {
    /// Opens the repository at `path` (a work tree, its `.git`, or a bare repository).
    pub fn open(path: &Path) -> Result<Repo, PreviewError> {
        let repo = Repository::open(path).map_err(|e| PreviewError::Open {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })?;
        Ok(Repo {
            repo,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn git_err(&self, what: impl Into<String>) -> impl FnOnce(git2::Error) -> PreviewError {
        let what = what.into();
        let path = self.path.clone();
        move |e| PreviewError::Git {
            path,
            what,
            message: e.message().to_string(),
        }
    }

    /// Resolves a revision expression to a commit. `origin/<x>` also tries `<x>` (a fetched
    /// mirror has no remote-tracking refs).
    pub fn resolve(&self, rev: &str) -> Result<Oid, PreviewError> {
        let try_one = |r: &str| -> Result<Oid, git2::Error> {
            let obj = self.repo.revparse_single(r)?;
            Ok(obj.peel_to_commit()?.id())
        };
        match try_one(rev) {
            Ok(id) => Ok(id),
            Err(first) => {
                if let Some(rest) = rev.strip_prefix("origin/")
                    && let Ok(id) = try_one(rest)
                {
                    return Ok(id);
                }
                Err(PreviewError::BadRevision {
                    rev: rev.to_string(),
                    message: first.message().to_string(),
                })
            }
        }
    }

    pub fn merge_base(&self, a: Oid, b: Oid) -> Result<Oid, PreviewError> {
        self.repo
            .merge_base(a, b)
            .map_err(self.git_err(format!("merge-base of {a} and {b}")))
    }

    fn subtree(&self, rev: Oid, dir: &str) -> Result<Option<git2::Tree<'_>>, PreviewError> {
        let commit = self
            .repo
            .find_commit(rev)
            .map_err(self.git_err(format!("reading commit {rev}")))?;
        let root = commit
            .tree()
            .map_err(self.git_err(format!("reading tree of {rev}")))?;
        if dir.is_empty() {
            return Ok(Some(root));
        }
        let entry = match root.get_path(Path::new(dir)) {
            Ok(e) => e,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(self.git_err(format!("reading {dir} at {rev}"))(e)),
        };
        if entry.kind() != Some(git2::ObjectType::Tree) {
            return Ok(None);
        }
        let tree = self
            .repo
            .find_tree(entry.id())
            .map_err(self.git_err(format!("reading {dir} at {rev}")))?;
        Ok(Some(tree))
    }

    /// Names of the folders directly under `dir` at `rev`, sorted.
    pub fn subdirs(&self, rev: Oid, dir: &str) -> Result<Vec<String>, PreviewError> {
        let dir = crate::git::normalize_dir(dir);
        let Some(tree) = self.subtree(rev, &dir)? else {
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

    /// Every file under `dir` at `rev`, recursively, sorted by path.
    pub fn list_files(&self, rev: Oid, dir: &str) -> Result<Vec<RepoFile>, PreviewError> {
        let dir = crate::git::normalize_dir(dir);
        let Some(tree) = self.subtree(rev, &dir)? else {
            return Ok(Vec::new());
        };
        let mut files = Vec::new();
        tree.walk(TreeWalkMode::PreOrder, |root, entry| {
            if let Some(kind) = FileKind::from_filemode(entry.filemode()) {
                let name = String::from_utf8_lossy(entry.name_bytes());
                files.push(RepoFile {
                    path: crate::git::join_path(&dir, &format!("{root}{name}")),
                    kind,
                    oid: entry.id(),
                });
            }
            TreeWalkResult::Ok
        })
        .map_err(self.git_err(format!("listing {dir} at {rev}")))?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// Paths under `dir` that differ between `base` and `head` (tree diff: cost follows the change).
    pub fn changed_files(
        &self,
        base: Oid,
        head: Oid,
        dir: &str,
    ) -> Result<Vec<RepoChange>, PreviewError> {
        let dir = crate::git::normalize_dir(dir);
        let old = self.subtree(base, &dir)?;
        let new = self.subtree(head, &dir)?;
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
            .map_err(self.git_err(format!("diffing {dir} between {base} and {head}")))?;
        let mut out = Vec::new();
        for delta in diff.deltas() {
            let side = |f: git2::DiffFile<'_>| FileKind::from_mode(f.mode()).map(|k| (k, f.id()));
            let (change, old, new) = match delta.status() {
                git2::Delta::Added | git2::Delta::Copied | git2::Delta::Untracked => {
                    (ChangeKind::Added, None, side(delta.new_file()))
                }
                git2::Delta::Deleted => (ChangeKind::Deleted, side(delta.old_file()), None),
                git2::Delta::Modified | git2::Delta::Typechange | git2::Delta::Renamed => (
                    ChangeKind::Modified,
                    side(delta.old_file()),
                    side(delta.new_file()),
                ),
                _ => continue,
            };
            let file = if new.is_some() {
                delta.new_file()
            } else {
                delta.old_file()
            };
            let Some(path) = file.path_bytes() else {
                continue;
            };
            if old.is_none() && new.is_none() {
                continue;
            }
            out.push(RepoChange {
                path: crate::git::join_path(&dir, &String::from_utf8_lossy(path)),
                change,
                old,
                new,
            });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// The content of a blob.
    pub fn blob(&self, oid: Oid) -> Result<Vec<u8>, PreviewError> {
        let blob = self
            .repo
            .find_blob(oid)
            .map_err(self.git_err(format!("reading blob {oid}")))?;
        Ok(blob.content().to_vec())
    }

    /// Size of a blob from its header, without reading it.
    pub fn blob_size(&self, oid: Oid) -> Result<u64, PreviewError> {
        let odb = self
            .repo
            .odb()
            .map_err(self.git_err("opening the object database"))?;
        let (size, _) = odb
            .read_header(oid)
            .map_err(self.git_err(format!("reading blob {oid}")))?;
        Ok(size as u64)
    }
}
