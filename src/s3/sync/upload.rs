//! Executing an object-sync plan: single-part and multipart uploads (each carrying the content
//! SHA-256 in its metadata) and batched deletes. May call the S3 SDK (writes only), the
//! [`ObjectSource`] and `sync::digest`.

use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::{StreamExt, TryStreamExt};
use md5::{Digest as _, Md5};

use super::digest::{Digests, compute_digests, remember_digests};
use super::{ObjectPlan, ObjectSource, SHA256_METADATA, UPLOAD_CONCURRENCY, content_type};
use crate::s3::error::S3Error;
use crate::s3::spec::{ObjectSync, PART_SIZE};

/// Concurrent parts of one multipart upload.
const PART_CONCURRENCY: usize = 4;

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
            message: crate::s3::error::redact(
                err.message().unwrap_or("could not delete the object"),
            ),
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
