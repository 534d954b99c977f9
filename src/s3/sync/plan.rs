//! Planning an object sync: the desired objects, the listing of the prefix, and which keys to
//! upload or delete. Reads only (ListObjectsV2, HeadObject where ETags cannot be trusted). May call
//! the S3 SDK (those reads), the [`ObjectSource`] and `sync::digest`.

use std::collections::BTreeMap;

use aws_sdk_s3::Client;
use futures::{StreamExt, TryStreamExt};

use super::digest::{digests_of, normalise_etag};
use super::{
    ObjectSource, SHA256_METADATA, SourceFile, UPLOAD_CONCURRENCY, content_type, object_key,
};
use crate::s3::error::S3Error;
use crate::s3::spec::ObjectSync;

/// What an object sync will do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectPlan {
    /// Keys to upload (new or changed), sorted.
    pub uploads: Vec<String>,
    /// Keys to delete (only with `delete: true`), sorted.
    pub deletes: Vec<String>,
    /// Objects already equal to their file.
    pub unchanged: usize,
    /// The subset of `uploads` that replaces an existing object.
    pub replaced: Vec<String>,
    /// Source file of every upload, by key.
    pub sources: BTreeMap<String, SourceFile>,
    /// Per-object HEAD requests the plan needed (0 unless ETags could not be trusted).
    pub head_requests: u32,
    /// ListObjectsV2 pages read.
    pub list_requests: u32,
}

impl ObjectPlan {
    pub fn is_noop(&self) -> bool {
        self.uploads.is_empty() && self.deletes.is_empty()
    }
}

/// A listed object.
struct LiveObject {
    size: u64,
    etag: String,
}

/// Lists every object under the prefix.
async fn list_prefix(
    client: &Client,
    bucket: &str,
    prefix: &str,
    pages: &mut u32,
) -> Result<BTreeMap<String, LiveObject>, S3Error> {
    let mut out = BTreeMap::new();
    let mut token: Option<String> = None;
    loop {
        let mut req = client.list_objects_v2().bucket(bucket).max_keys(1000);
        if !prefix.is_empty() {
            req = req.prefix(prefix);
        }
        if let Some(t) = &token {
            req = req.continuation_token(t);
        }
        *pages += 1;
        let resp = req
            .send()
            .await
            .map_err(|e| S3Error::from_sdk(bucket, "ListObjectsV2", Some(prefix), &e))?;
        for obj in resp.contents() {
            let Some(key) = obj.key() else { continue };
            out.insert(
                key.to_string(),
                LiveObject {
                    size: obj.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                    etag: obj.e_tag().map(normalise_etag).unwrap_or_default(),
                },
            );
        }
        match resp.next_continuation_token() {
            Some(t) if resp.is_truncated() == Some(true) => token = Some(t.to_string()),
            _ => break,
        }
    }
    Ok(out)
}

/// The desired objects of a sync: key → source file.
pub fn desired_objects(
    bucket: &str,
    sync: &ObjectSync,
    source: &dyn ObjectSource,
) -> Result<BTreeMap<String, SourceFile>, S3Error> {
    let files = source
        .list(&sync.source)
        .map_err(|e| e.with_bucket(bucket))?;
    let mut out = BTreeMap::new();
    for file in files {
        let key = object_key(bucket, sync, &file.path)?;
        if file.size > sync.max_file_size {
            return Err(S3Error::FileTooLarge {
                bucket: bucket.to_string(),
                key,
                path: file.path,
                size: file.size,
                max: sync.max_file_size,
            });
        }
        if let Some(previous) = out.insert(key.clone(), file) {
            return Err(S3Error::InvalidKey {
                bucket: bucket.to_string(),
                key,
                path: previous.path,
                reason: "two files map to the same key".into(),
            });
        }
    }
    Ok(out)
}

/// An object whose HEAD decides whether it is unchanged.
struct HeadCheck<'a> {
    key: &'a String,
    file: &'a SourceFile,
    /// The SHA-256 to find in the metadata, when the ETag could not be trusted.
    sha256: Option<String>,
}

/// Plans a sync. `exists = false` (the bucket is about to be created): everything is uploaded and
/// nothing is listed. `verify_headers`: also HEAD every unchanged object and re-upload those whose
/// Content-Type or Cache-Control differ (use it when `cacheControl`/`contentTypes` changed; it costs
/// one request per object).
pub async fn plan_objects(
    client: &Client,
    bucket: &str,
    sync: &ObjectSync,
    source: &dyn ObjectSource,
    exists: bool,
    verify_headers: bool,
) -> Result<ObjectPlan, S3Error> {
    let desired = desired_objects(bucket, sync, source)?;
    let mut plan = ObjectPlan::default();
    let live = if exists {
        list_prefix(client, bucket, &sync.prefix, &mut plan.list_requests).await?
    } else {
        BTreeMap::new()
    };
    let mut changed = Vec::new();
    let mut to_head = Vec::new();
    for (key, file) in &desired {
        let Some(obj) = live.get(key) else {
            plan.uploads.push(key.clone());
            plan.sources.insert(key.clone(), file.clone());
            continue;
        };
        if obj.size != file.size {
            changed.push(key);
            continue;
        }
        let d = digests_of(bucket, source, file)?;
        if d.etag == obj.etag && !verify_headers {
            plan.unchanged += 1;
        } else {
            // The ETag is not what gitopsd's upload gives (SSE-KMS, other multipart sizes,
            // another server's scheme): the object's SHA-256 metadata decides.
            let sha256 = (d.etag != obj.etag).then_some(d.sha256);
            to_head.push(HeadCheck { key, file, sha256 });
        }
    }
    plan.head_requests = u32::try_from(to_head.len()).unwrap_or(u32::MAX);
    for (key, same) in head_checks(client, bucket, sync, to_head, verify_headers).await? {
        if same {
            plan.unchanged += 1;
        } else {
            changed.push(key);
        }
    }
    for key in changed {
        if let Some(file) = desired.get(key) {
            plan.uploads.push(key.clone());
            plan.replaced.push(key.clone());
            plan.sources.insert(key.clone(), file.clone());
        }
    }
    plan.uploads.sort();
    plan.replaced.sort();
    if sync.delete {
        plan.deletes = live
            .keys()
            .filter(|k| !desired.contains_key(*k))
            .cloned()
            .collect();
    }
    Ok(plan)
}

/// HEADs the objects (concurrently) and says for each whether it is the same as its file.
async fn head_checks<'a>(
    client: &Client,
    bucket: &str,
    sync: &ObjectSync,
    checks: Vec<HeadCheck<'a>>,
    verify_headers: bool,
) -> Result<Vec<(&'a String, bool)>, S3Error> {
    futures::stream::iter(
        // Futures built before streaming: a stream holding this closure is not `Send` (rust-lang/rust#102211).
        checks
            .into_iter()
            .map(|check| async move {
                let head = client
                    .head_object()
                    .bucket(bucket)
                    .key(check.key)
                    .send()
                    .await
                    .map_err(|e| S3Error::from_sdk(bucket, "HeadObject", Some(check.key), &e))?;
                let mut same = true;
                if let Some(sha) = &check.sha256 {
                    same &= head
                        .metadata()
                        .and_then(|m| m.get(SHA256_METADATA))
                        .is_some_and(|s| s.eq_ignore_ascii_case(sha));
                }
                if verify_headers {
                    let norm = |s: &str| s.replace(' ', "").to_ascii_lowercase();
                    let want_type = content_type(&check.file.path, &sync.content_types);
                    same &= head.content_type().map(norm) == Some(norm(&want_type));
                    same &=
                        head.cache_control().map(norm) == sync.cache_control.as_deref().map(norm);
                }
                Ok::<_, S3Error>((check.key, same))
            })
            .collect::<Vec<_>>(),
    )
    .buffer_unordered(UPLOAD_CONCURRENCY)
    .try_collect()
    .await
}
