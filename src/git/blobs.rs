//! Batch reads: one repository open for many blobs, so rendering a folder of thousands of files
//! does not reopen the repository per file.

use super::{GitError, Mirror, Oid};

impl Mirror {
    /// Contents of the blobs with these ids, in the same order.
    pub fn read_blobs(&self, ids: &[Oid]) -> Result<Vec<Vec<u8>>, GitError> {
        let repo = self.repo()?;
        ids.iter()
            .map(|id| {
                repo.find_blob(*id)
                    .map(|b| b.content().to_vec())
                    .map_err(|e| self.object_err(*id, e))
            })
            .collect()
    }
}
