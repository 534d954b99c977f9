//! Object sync: a repository folder mirrored to a key prefix.
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

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{LazyLock, Mutex};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::{StreamExt, TryStreamExt};
use md5::{Digest as _, Md5};
use sha2::Sha256;

use super::error::S3Error;
use super::spec::{ObjectSync, PART_SIZE, check_key_segments};

/// Metadata key (without `x-amz-meta-`) holding the content SHA-256 of synced objects.
pub const SHA256_METADATA: &str = "gitopsd-sha256";
/// Concurrent single-part uploads.
const UPLOAD_CONCURRENCY: usize = 16;
/// Concurrent parts of one multipart upload.
const PART_CONCURRENCY: usize = 4;

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

/// Expected digests of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Digests {
    /// The ETag S3 gives the object when gitopsd uploads it (lowercase, no quotes).
    etag: String,
    sha256: String,
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

fn remember_digests(file: &SourceFile, digests: &Digests) {
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

fn compute_digests(bytes: &[u8]) -> Digests {
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

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn normalise_etag(etag: &str) -> String {
    etag.trim().trim_matches('"').to_ascii_lowercase()
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

/// Built-in Content-Type table by extension.
const CONTENT_TYPES: &[(&str, &str)] = &[
    (".html", "text/html; charset=utf-8"),
    (".htm", "text/html; charset=utf-8"),
    (".css", "text/css; charset=utf-8"),
    (".js", "text/javascript; charset=utf-8"),
    (".mjs", "text/javascript; charset=utf-8"),
    (".json", "application/json"),
    (".map", "application/json"),
    (".webmanifest", "application/manifest+json"),
    (".xml", "application/xml"),
    (".txt", "text/plain; charset=utf-8"),
    (".md", "text/markdown; charset=utf-8"),
    (".csv", "text/csv; charset=utf-8"),
    (".svg", "image/svg+xml"),
    (".png", "image/png"),
    (".jpg", "image/jpeg"),
    (".jpeg", "image/jpeg"),
    (".gif", "image/gif"),
    (".webp", "image/webp"),
    (".avif", "image/avif"),
    (".ico", "image/vnd.microsoft.icon"),
    (".pdf", "application/pdf"),
    (".woff", "font/woff"),
    (".woff2", "font/woff2"),
    (".ttf", "font/ttf"),
    (".otf", "font/otf"),
    (".wasm", "application/wasm"),
    (".mp4", "video/mp4"),
    (".webm", "video/webm"),
    (".mp3", "audio/mpeg"),
    (".zip", "application/zip"),
    (".gz", "application/gzip"),
    (".tar", "application/x-tar"),
    (".yaml", "application/yaml"),
    (".yml", "application/yaml"),
];

/// Content-Type of a key: the bucket's overrides, then the built-in table, else
/// `application/octet-stream`.
pub fn content_type(path: &str, overrides: &BTreeMap<String, String>) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    let Some(dot) = name.rfind('.') else {
        return "application/octet-stream".into();
    };
    let ext = name[dot..].to_ascii_lowercase();
    if let Some(t) = overrides.get(&ext) {
        return t.clone();
    }
    CONTENT_TYPES.iter().find(|(e, _)| *e == ext).map_or_else(
        || "application/octet-stream".into(),
        |(_, t)| (*t).to_string(),
    )
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

/// Digests of a file, from the cache or by reading it.
fn digests_of(
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
    // (key, file, sha256 to check when the ETag could not be trusted)
    let mut to_head: Vec<(&String, &SourceFile, Option<String>)> = Vec::new();
    let mut changed = Vec::new();
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
        if d.etag == obj.etag {
            if verify_headers {
                to_head.push((key, file, None));
            } else {
                plan.unchanged += 1;
            }
        } else {
            // The ETag is not what gitopsd's upload gives (SSE-KMS, other multipart sizes,
            // another server's scheme): the object's SHA-256 metadata decides.
            to_head.push((key, file, Some(d.sha256)));
        }
    }
    plan.head_requests = u32::try_from(to_head.len()).unwrap_or(u32::MAX);
    let heads: Vec<(&String, bool)> = futures::stream::iter(
        // Futures built before streaming: a stream holding this closure is not `Send` (rust-lang/rust#102211).
        to_head
            .into_iter()
            .map(|(key, file, sha)| async move {
                let head = client
                    .head_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| S3Error::from_sdk(bucket, "HeadObject", Some(key), &e))?;
                let mut same = true;
                if let Some(sha) = sha {
                    same &= head
                        .metadata()
                        .and_then(|m| m.get(SHA256_METADATA))
                        .is_some_and(|s| s.eq_ignore_ascii_case(&sha));
                }
                if verify_headers {
                    let norm = |s: &str| s.replace(' ', "").to_ascii_lowercase();
                    let want_type = content_type(&file.path, &sync.content_types);
                    same &= head.content_type().map(norm) == Some(norm(&want_type));
                    same &=
                        head.cache_control().map(norm) == sync.cache_control.as_deref().map(norm);
                }
                Ok::<_, S3Error>((key, same))
            })
            .collect::<Vec<_>>(),
    )
    .buffer_unordered(UPLOAD_CONCURRENCY)
    .try_collect()
    .await?;
    for (key, same) in heads {
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

/// Counts of an object sync.
#[derive(Debug, Default)]
pub(crate) struct SyncCounters {
    pub write_calls: AtomicU32,
    pub uploaded: AtomicU32,
    pub deleted: AtomicU32,
    pub bytes: std::sync::atomic::AtomicU64,
}

/// Executes the uploads and deletes of a plan.
pub(crate) async fn apply_objects(
    client: &Client,
    bucket: &str,
    sync: &ObjectSync,
    plan: &ObjectPlan,
    source: &dyn ObjectSource,
    counters: &SyncCounters,
) -> Result<(), S3Error> {
    let mut small = Vec::new();
    let mut large = Vec::new();
    for key in &plan.uploads {
        let file = plan.sources.get(key).ok_or_else(|| S3Error::InvalidPlan {
            bucket: bucket.to_string(),
            message: format!("no source file for upload {key:?}"),
        })?;
        if file.size > PART_SIZE {
            large.push((key, file));
        } else {
            small.push((key, file));
        }
    }
    futures::stream::iter(small.into_iter().map(Ok::<_, S3Error>))
        .try_for_each_concurrent(UPLOAD_CONCURRENCY, |(key, file)| async move {
            let bytes = source.read(&file.path).map_err(|e| e.with_bucket(bucket))?;
            let d = compute_digests(&bytes);
            remember_digests(file, &d);
            put_object(client, bucket, sync, key, &file.path, bytes, &d, counters).await
        })
        .await?;
    for (key, file) in large {
        let bytes = source.read(&file.path).map_err(|e| e.with_bucket(bucket))?;
        let d = compute_digests(&bytes);
        remember_digests(file, &d);
        multipart_upload(client, bucket, sync, key, &file.path, bytes, &d, counters).await?;
    }
    for batch in plan.deletes.chunks(1000) {
        delete_batch(client, bucket, batch, counters).await?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn put_object(
    client: &Client,
    bucket: &str,
    sync: &ObjectSync,
    key: &str,
    path: &str,
    bytes: Vec<u8>,
    d: &Digests,
    counters: &SyncCounters,
) -> Result<(), S3Error> {
    let len = bytes.len() as u64;
    let md5 = BASE64.encode(Md5::digest(&bytes));
    let mut req = client
        .put_object()
        .bucket(bucket)
        .key(key)
        .content_type(content_type(path, &sync.content_types))
        .content_md5(md5)
        .metadata(SHA256_METADATA, &d.sha256)
        .body(ByteStream::from(bytes));
    if let Some(cc) = &sync.cache_control {
        req = req.cache_control(cc);
    }
    counters.write_calls.fetch_add(1, Ordering::Relaxed);
    req.send()
        .await
        .map_err(|e| S3Error::from_sdk(bucket, "PutObject", Some(key), &e))?;
    counters.uploaded.fetch_add(1, Ordering::Relaxed);
    counters.bytes.fetch_add(len, Ordering::Relaxed);
    tracing::debug!(bucket, key, bytes = len, "uploaded object");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn multipart_upload(
    client: &Client,
    bucket: &str,
    sync: &ObjectSync,
    key: &str,
    path: &str,
    bytes: Vec<u8>,
    d: &Digests,
    counters: &SyncCounters,
) -> Result<(), S3Error> {
    let mut req = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .content_type(content_type(path, &sync.content_types))
        .metadata(SHA256_METADATA, &d.sha256);
    if let Some(cc) = &sync.cache_control {
        req = req.cache_control(cc);
    }
    counters.write_calls.fetch_add(1, Ordering::Relaxed);
    let created = req
        .send()
        .await
        .map_err(|e| S3Error::from_sdk(bucket, "CreateMultipartUpload", Some(key), &e))?;
    let Some(upload_id) = created.upload_id().map(str::to_string) else {
        return Err(S3Error::Api {
            bucket: bucket.to_string(),
            call: "CreateMultipartUpload",
            key: Some(key.to_string()),
            code: None,
            status: None,
            message: "the response has no UploadId".into(),
            transient: false,
        });
    };
    let result = upload_parts(client, bucket, key, &upload_id, &bytes, counters).await;
    let parts = match result {
        Ok(parts) => parts,
        Err(e) => {
            abort(client, bucket, key, &upload_id, counters).await;
            return Err(e);
        }
    };
    counters.write_calls.fetch_add(1, Ordering::Relaxed);
    let done = client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await;
    if let Err(e) = done {
        abort(client, bucket, key, &upload_id, counters).await;
        return Err(S3Error::from_sdk(
            bucket,
            "CompleteMultipartUpload",
            Some(key),
            &e,
        ));
    }
    counters.uploaded.fetch_add(1, Ordering::Relaxed);
    counters
        .bytes
        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
    tracing::debug!(bucket, key, bytes = bytes.len(), "uploaded object in parts");
    Ok(())
}

async fn upload_parts(
    client: &Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
    bytes: &[u8],
    counters: &SyncCounters,
) -> Result<Vec<CompletedPart>, S3Error> {
    let chunks: Vec<(i32, &[u8])> = bytes
        .chunks(PART_SIZE as usize)
        .enumerate()
        .map(|(i, c)| (i32::try_from(i + 1).unwrap_or(i32::MAX), c))
        .collect();
    let mut parts: Vec<CompletedPart> = futures::stream::iter(
        // Futures built before streaming: a stream holding this closure is not `Send` (rust-lang/rust#102211).
        chunks
            .into_iter()
            .map(|(number, chunk)| async move {
                counters.write_calls.fetch_add(1, Ordering::Relaxed);
                let resp = client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .content_md5(BASE64.encode(Md5::digest(chunk)))
                    .body(ByteStream::from(chunk.to_vec()))
                    .send()
                    .await
                    .map_err(|e| S3Error::from_sdk(bucket, "UploadPart", Some(key), &e))?;
                Ok::<_, S3Error>(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(resp.e_tag().map(str::to_string))
                        .build(),
                )
            })
            .collect::<Vec<_>>(),
    )
    .buffer_unordered(PART_CONCURRENCY)
    .try_collect()
    .await?;
    parts.sort_by_key(|p| p.part_number());
    Ok(parts)
}

async fn abort(client: &Client, bucket: &str, key: &str, upload_id: &str, counters: &SyncCounters) {
    counters.write_calls.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
    {
        let e = S3Error::from_sdk(bucket, "AbortMultipartUpload", Some(key), &e);
        tracing::warn!(bucket, key, error = %e, "could not abort a failed multipart upload");
    }
}

async fn delete_batch(
    client: &Client,
    bucket: &str,
    keys: &[String],
    counters: &SyncCounters,
) -> Result<(), S3Error> {
    let mut objects = Vec::with_capacity(keys.len());
    for key in keys {
        let id =
            ObjectIdentifier::builder()
                .key(key)
                .build()
                .map_err(|e| S3Error::InvalidPlan {
                    bucket: bucket.to_string(),
                    message: format!("cannot delete {key:?}: {e}"),
                })?;
        objects.push(id);
    }
    let delete = Delete::builder()
        .set_objects(Some(objects))
        .quiet(true)
        .build()
        .map_err(|e| S3Error::InvalidPlan {
            bucket: bucket.to_string(),
            message: format!("cannot build DeleteObjects: {e}"),
        })?;
    counters.write_calls.fetch_add(1, Ordering::Relaxed);
    let first = keys.first().map(String::as_str);
    let resp = client
        .delete_objects()
        .bucket(bucket)
        .delete(delete)
        .send()
        .await
        .map_err(|e| S3Error::from_sdk(bucket, "DeleteObjects", first, &e))?;
    if let Some(err) = resp.errors().first() {
        let code = err.code().map(str::to_string);
        let transient = code
            .as_deref()
            .is_some_and(|c| matches!(c, "SlowDown" | "InternalError" | "ServiceUnavailable"));
        return Err(S3Error::Api {
            bucket: bucket.to_string(),
            call: "DeleteObjects",
            key: err.key().map(str::to_string),
            code,
            status: None,
            message: super::error::redact(err.message().unwrap_or("could not delete the object")),
            transient,
        });
    }
    counters.deleted.fetch_add(
        u32::try_from(keys.len()).unwrap_or(u32::MAX),
        Ordering::Relaxed,
    );
    tracing::debug!(bucket, count = keys.len(), "deleted objects");
    Ok(())
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
                content_id: hex(&Sha256::digest(b)),
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
mod tests {
    use super::*;

    fn sync(source: &str, prefix: &str) -> ObjectSync {
        ObjectSync {
            source: source.into(),
            prefix: prefix.into(),
            delete: true,
            cache_control: None,
            content_types: BTreeMap::new(),
            max_file_size: 100,
        }
    }

    #[test]
    fn keys_stay_under_the_prefix() {
        let s = sync("assets/dev", "static/");
        assert_eq!(
            object_key("b", &s, "assets/dev/css/a.css").unwrap(),
            "static/css/a.css"
        );
        for bad in [
            "assets/dev/../prod/x",
            "assets/dev//x",
            "assets/dev/a\\b",
            "assets/devx/y",
            "other/x",
            "assets/dev/./x",
        ] {
            let e = object_key("b", &s, bad).unwrap_err();
            assert!(matches!(e, S3Error::InvalidKey { .. }), "{bad}: {e}");
            assert!(e.to_string().contains("bucket b"), "{e}");
        }
        let root = sync("", "");
        assert_eq!(object_key("b", &root, "x/y.txt").unwrap(), "x/y.txt");
        assert!(object_key("b", &root, "/etc/passwd").is_err());
    }

    #[test]
    fn content_types_with_overrides() {
        let mut o = BTreeMap::new();
        o.insert(
            ".webmanifest".to_string(),
            "application/x-custom".to_string(),
        );
        assert_eq!(
            content_type("a/b/INDEX.HTML", &o),
            "text/html; charset=utf-8"
        );
        assert_eq!(content_type("app.webmanifest", &o), "application/x-custom");
        assert_eq!(content_type("x.woff2", &o), "font/woff2");
        assert_eq!(content_type("x.unknown", &o), "application/octet-stream");
        assert_eq!(content_type("Makefile", &o), "application/octet-stream");
    }

    #[test]
    fn multipart_etag_is_md5_of_part_md5s() {
        let small = compute_digests(b"hello");
        assert_eq!(small.etag, "5d41402abc4b2a76b9719d911017c592");
        let big = vec![7u8; PART_SIZE as usize + 10];
        let d = compute_digests(&big);
        let mut all = Md5::new();
        all.update(Md5::digest(&big[..PART_SIZE as usize]));
        all.update(Md5::digest(&big[PART_SIZE as usize..]));
        assert_eq!(d.etag, format!("{}-2", hex(&all.finalize())));
        assert_eq!(normalise_etag("\"ABC-2\""), "abc-2");
    }

    #[test]
    fn desired_objects_enforce_size_and_errors_name_the_bucket() {
        let mut src = MemorySource::new();
        src.insert("site/a.txt", vec![0u8; 10]);
        src.insert("site/big.bin", vec![0u8; 101]);
        src.insert("elsewhere/x", vec![1u8]);
        let e = desired_objects("bk", &sync("site", "p/"), &src).unwrap_err();
        assert!(matches!(e, S3Error::FileTooLarge { size: 101, .. }), "{e}");
        src.files.remove("site/big.bin");
        let d = desired_objects("bk", &sync("site", "p/"), &src).unwrap();
        assert_eq!(d.keys().collect::<Vec<_>>(), vec!["p/a.txt"]);
        let e = src
            .read("nope")
            .map_err(|e| e.with_bucket("bk"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "bucket bk: reading nope from the repository: no such file"
        );
    }
}
