//! Tree ids of folders, so a caller can tell whether anything under a folder changed between
//! two revisions by comparing one id (used by the renderers' input tracking).

use std::path::Path;

use super::{GitError, Mirror, Oid, normalize_dir};

impl Mirror {
    /// The id of the tree at `dir` in commit `rev` (`""` = the root tree); `None` when `dir`
    /// does not exist there or is not a folder.
    pub fn tree_id(&self, rev: Oid, dir: &str) -> Result<Option<Oid>, GitError> {
        let repo = self.repo()?;
        let root = self.commit_tree(&repo, rev)?;
        let dir = normalize_dir(dir);
        if dir.is_empty() {
            return Ok(Some(root.id()));
        }
        match root.get_path(Path::new(&dir)) {
            Ok(entry) if entry.kind() == Some(git2::ObjectType::Tree) => Ok(Some(entry.id())),
            Ok(_) => Ok(None),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(self.object_err(rev, e)),
        }
    }
}
