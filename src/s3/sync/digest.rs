//! Expected digests of a file (the ETag gitopsd's upload gives it, and its SHA-256), with a
//! process-wide cache by content id so an unchanged file is never read twice. May call the
//! [`ObjectSource`] (to read a file whose digests are not cached).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use md5::{Digest as _, Md5};
use sha2::Sha256;

use super::{ObjectSource, SourceFile};
use crate::s3::error::S3Error;
use crate::s3::spec::PART_SIZE;

/// Expected digests of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Digests {
    /// The ETag S3 gives the object when gitopsd uploads it (lowercase, no quotes).
    pub etag: String,
    pub sha256: String,
}

/// Process-wide digest cache, by content id and size. Disposable; bounded.
static DIGESTS: LazyLock<Mutex<HashMap<(String, u64), Digests>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));
const DIGEST_CACHE_MAX: usize = 200_000;

fn cached_digests(file: &SourceFile) -> Option<Digests> {
    if file.content_id.is_empty() {
        return None;
    }
    let cache = DIGESTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    cache.get(&(file.content_id.clone(), file.size)).cloned()
}

pub(super) fn remember_digests(file: &SourceFile, digests: &Digests) {
    if file.content_id.is_empty() {
        return;
    }
    let mut cache = DIGESTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if cache.len() >= DIGEST_CACHE_MAX {
        cache.clear();
    }
    cache.insert((file.content_id.clone(), file.size), digests.clone());
}

pub(super) fn compute_digests(bytes: &[u8]) -> Digests {
    let sha256 = hex(&Sha256::digest(bytes));
    let etag = if bytes.len() as u64 <= PART_SIZE {
        hex(&Md5::digest(bytes))
    } else {
        let mut all = Md5::new();
        let mut parts = 0usize;
        for chunk in bytes.chunks(PART_SIZE as usize) {
            all.update(Md5::digest(chunk));
            parts += 1;
        }
        format!("{}-{parts}", hex(&all.finalize()))
    };
    Digests { etag, sha256 }
}

/// Digests of a file, from the cache or by reading it.
pub(super) fn digests_of(
    bucket: &str,
    source: &dyn ObjectSource,
    file: &SourceFile,
) -> Result<Digests, S3Error> {
    if let Some(d) = cached_digests(file) {
        return Ok(d);
    }
    let bytes = source.read(&file.path).map_err(|e| e.with_bucket(bucket))?;
    let d = compute_digests(&bytes);
    remember_digests(file, &d);
    Ok(d)
}

pub(super) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

pub(super) fn normalise_etag(etag: &str) -> String {
    etag.trim().trim_matches('"').to_ascii_lowercase()
}
