//! Object sync: a repository folder mirrored to a key prefix.
//!
//! Owns the object plan ([`plan`]: what to upload and delete), its execution (`upload`) and
//! the expected digests of files (`digest`). May call the S3 SDK (ListObjectsV2, HeadObject,
//! PutObject, multipart uploads, DeleteObjects), an [`ObjectSource`] for the files, and
//! `s3::spec` for the sync settings and key rules.
//!
//! The plan lists the prefix with ListObjectsV2 (size and ETag of every object) and compares:
//! - a key that is missing or has another size is uploaded, without reading the file;
//! - same size: the file's expected ETag is computed (MD5 for single-part uploads; for multipart
//!   uploads the S3 multipart ETag, MD5 of the part MD5s plus `-N`, which is deterministic because
//!   gitopsd always uses 8 MiB parts) and compared with the listed one. Digests are cached by the
//!   source's content id (a git blob id), so a no-op re-sync reads no file and makes only listing
//!   calls.
//! - only when the ETag differs although the size matches (servers that compute ETags otherwise,
//!   SSE-KMS buckets) is the object's HEAD read: every upload stores the content SHA-256 in
//!   `x-amz-meta-gitopsd-sha256`, and a matching SHA-256 means unchanged.
//!
//! Content-Type comes from the file extension (built-in table, overridable per bucket) and the
//! bucket's Cache-Control is set on every upload. Changing only `cacheControl` or `contentTypes`
//! does not change ETags, so existing objects keep their old headers until their content changes.

mod content_type;
mod digest;
pub mod plan;
pub(crate) mod upload;

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256};

use super::error::S3Error;
use super::spec::{ObjectSync, check_key_segments};

pub use content_type::content_type;
pub use plan::{ObjectPlan, desired_objects, plan_objects};
pub(crate) use upload::{SyncCounters, apply_objects};

/// Metadata key (without `x-amz-meta-`) holding the content SHA-256 of synced objects.
pub const SHA256_METADATA: &str = "gitopsd-sha256";
/// Concurrent single-part uploads (and HEAD requests while planning).
const UPLOAD_CONCURRENCY: usize = 16;

/// Files of the repository at one revision (the reconcile loop implements it over git; tests over
/// a map or a directory).
pub trait ObjectSource: Send + Sync {
    /// Every regular file under `dir` (recursively), with repository-relative paths.
    fn list(&self, dir: &str) -> Result<Vec<SourceFile>, S3Error>;
    /// The contents of one file.
    fn read(&self, path: &str) -> Result<Vec<u8>, S3Error>;
}

/// One file of an [`ObjectSource`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    /// Repository-relative path.
    pub path: String,
    pub size: u64,
    /// Identifies the content (e.g. the git blob id); digests are cached by it. Empty = no caching.
    pub content_id: String,
}

impl S3Error {
    /// An error of an [`ObjectSource`] implementation (the bucket is filled in by the caller).
    pub fn source(path: impl Into<String>, message: impl Into<String>) -> S3Error {
        S3Error::Source {
            bucket: String::new(),
            path: path.into(),
            message: message.into(),
        }
    }

    fn with_bucket(self, name: &str) -> S3Error {
        match self {
            S3Error::Source {
                bucket,
                path,
                message,
            } if bucket.is_empty() => S3Error::Source {
                bucket: name.to_string(),
                path,
                message,
            },
            other => other,
        }
    }
}

/// The object key of a source file, checked to stay under the prefix.
pub fn object_key(bucket: &str, sync: &ObjectSync, path: &str) -> Result<String, S3Error> {
    let invalid = |reason: &str| S3Error::InvalidKey {
        bucket: bucket.to_string(),
        key: format!("{}{}", sync.prefix, path),
        path: path.to_string(),
        reason: reason.to_string(),
    };
    let rel = if sync.source.is_empty() {
        path
    } else {
        path.strip_prefix(sync.source.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| {
                invalid(&format!(
                    "the file is not inside the source folder {:?}",
                    sync.source
                ))
            })?
    };
    check_key_segments(rel).map_err(|e| invalid(&format!("path {e}")))?;
    let key = format!("{}{}", sync.prefix, rel);
    if key.len() > 1024 {
        return Err(invalid("keys are limited to 1024 bytes"));
    }
    Ok(key)
}

/// An [`ObjectSource`] over an in-memory map of path → bytes (tests, previews).
#[derive(Clone, Debug, Default)]
pub struct MemorySource {
    pub files: BTreeMap<String, Vec<u8>>,
}

impl MemorySource {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn insert(&mut self, path: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        self.files.insert(path.into(), bytes.into());
    }
}

impl ObjectSource for MemorySource {
    fn list(&self, dir: &str) -> Result<Vec<SourceFile>, S3Error> {
        let dir = dir.trim_end_matches('/');
        Ok(self
            .files
            .iter()
            .filter(|(p, _)| {
                dir.is_empty() || p.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
            })
            .map(|(p, b)| SourceFile {
                path: p.clone(),
                size: b.len() as u64,
                // Content-addressed like a git blob id, so the digest cache is exercised.
                content_id: digest::hex(&Sha256::digest(b)),
            })
            .collect())
    }
    fn read(&self, path: &str) -> Result<Vec<u8>, S3Error> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| S3Error::source(path, "no such file"))
    }
}

#[cfg(test)]
mod tests;
