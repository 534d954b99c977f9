//! Applying a bucket plan (only the writes it lists) and deleting buckets that left the
//! repository. May call the S3 SDK (CreateBucket, DeleteBucket), `s3::sections` (one write per
//! changed section), `s3::sync` (object uploads and deletes) and `s3::owner` (ownership tags on
//! every tagging write and on every new bucket).

use std::sync::atomic::Ordering;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;

use super::error::{self, S3Error};
use super::sections::{self, tags::TagsSection};
use super::sync::{self, ObjectSource};
use super::{
    BucketAction, BucketPlan, BucketSpec, DeletionPolicy, Field, Owner, live, owner, regional,
};

/// What [`apply_bucket`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Every write request issued (config Put*/Delete*, CreateBucket, object uploads and parts,
    /// DeleteObjects, DeleteBucket); 0 for a no-op plan.
    pub write_calls: u32,
    pub uploaded: u32,
    /// Objects deleted.
    pub deleted: u32,
    pub bytes_uploaded: u64,
    pub created: bool,
    /// Configuration fields written.
    pub fields: Vec<String>,
}

/// Outcome of [`delete_bucket`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// `deletionPolicy: Retain`: nothing was done.
    Retained,
    Deleted,
    /// The bucket did not exist.
    AlreadyGone,
    /// The bucket exists without this environment's ownership tags: not ours, left alone.
    NotOwned,
}

fn is_not_implemented(e: &S3Error) -> bool {
    matches!(e, S3Error::Api { code, status, .. }
        if matches!(code.as_deref(), Some("NotImplemented" | "XNotImplemented")) || *status == Some(501))
}

/// Applies a plan made by [`super::plan_bucket`] for the same spec and owner: only the writes it
/// lists. Every tagging write carries the ownership tags besides the spec's.
pub async fn apply_bucket(
    client: &Client,
    spec: &BucketSpec,
    owner: &Owner,
    plan: &BucketPlan,
    objects: Option<&dyn ObjectSource>,
) -> Result<ApplyReport, S3Error> {
    if plan.bucket != spec.name {
        return Err(S3Error::InvalidPlan {
            bucket: spec.name.clone(),
            message: format!("the plan is for bucket {}", plan.bucket),
        });
    }
    let mut report = ApplyReport::default();
    if plan.is_noop() {
        return Ok(report);
    }
    let rclient = regional(client, spec);
    let mut new_bucket = false;
    match plan.action {
        BucketAction::Unchanged | BucketAction::Update => {}
        BucketAction::Delete => {
            let outcome = delete_bucket(client, spec, owner).await?;
            if outcome == DeleteOutcome::Deleted {
                report.write_calls += 1;
            }
            return Ok(report);
        }
        BucketAction::Create => {
            new_bucket = owner::create_owned(client, &rclient, spec, owner, &mut report).await?;
        }
    }
    Box::pin(write_fields(
        &rclient,
        spec,
        owner,
        plan,
        new_bucket,
        &mut report,
    ))
    .await?;
    if !plan.objects.is_noop() {
        Box::pin(sync_objects(&rclient, spec, plan, objects, &mut report)).await?;
    }
    tracing::info!(
        bucket = %spec.name,
        action = ?plan.action,
        write_calls = report.write_calls,
        uploaded = report.uploaded,
        deleted = report.deleted,
        "applied bucket plan"
    );
    Ok(report)
}

/// Writes the configuration sections the plan lists, in its order.
async fn write_fields(
    rclient: &Client,
    spec: &BucketSpec,
    owner: &Owner,
    plan: &BucketPlan,
    new_bucket: bool,
    report: &mut ApplyReport,
) -> Result<(), S3Error> {
    let bucket = spec.name.as_str();
    // What is written: the spec's configuration, its tags (if managed) with ours added.
    let mut desired = spec.config.clone();
    if let Some(tags) = spec.config.get::<TagsSection>() {
        desired.set::<TagsSection>(owner.merged(Some(tags)));
    }
    for field in &plan.fields {
        // A bucket created just now already got all its tags with the ownership tags.
        if new_bucket && *field == Field::Tags {
            continue;
        }
        match sections::write_field(rclient, bucket, &desired, *field, new_bucket).await {
            Ok(n) => {
                report.write_calls += n;
                if n > 0 {
                    report.fields.push(field.name().to_string());
                }
            }
            Err(e) if spec.is_defaulted(*field) && is_not_implemented(&e) => {
                tracing::warn!(bucket, field = field.name(), error = %e, "server does not implement the section; its default is not enforced");
                report.write_calls += 1;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Uploads and deletes the objects the plan lists.
async fn sync_objects(
    rclient: &Client,
    spec: &BucketSpec,
    plan: &BucketPlan,
    objects: Option<&dyn ObjectSource>,
    report: &mut ApplyReport,
) -> Result<(), S3Error> {
    let (Some(sync), Some(source)) = (&spec.objects, objects) else {
        return Err(S3Error::InvalidPlan {
            bucket: spec.name.clone(),
            message: "the plan syncs objects but no spec.objects / object source was given".into(),
        });
    };
    let counters = sync::SyncCounters::default();
    let result = Box::pin(sync::apply_objects(
        rclient,
        &spec.name,
        sync,
        &plan.objects,
        source,
        &counters,
    ))
    .await;
    report.write_calls += counters.write_calls.load(Ordering::Relaxed);
    report.uploaded = counters.uploaded.load(Ordering::Relaxed);
    report.deleted = counters.deleted.load(Ordering::Relaxed);
    report.bytes_uploaded = counters.bytes.load(Ordering::Relaxed);
    result
}

/// CreateBucket; `false` when the bucket already exists in our account (it appeared since the
/// plan, e.g. an earlier attempt).
pub(super) async fn create_bucket(
    client: &Client,
    bucket: &str,
    region: &str,
) -> Result<bool, S3Error> {
    use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
    let mut req = client.create_bucket().bucket(bucket);
    if region != "us-east-1" {
        req = req.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region))
                .build(),
        );
    }
    tracing::info!(bucket, region, "creating bucket");
    match req.send().await {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => Ok(false),
        Err(e) => Err(S3Error::from_sdk(bucket, "CreateBucket", None, &e)),
    }
}

/// Deletes a bucket that left the repository, honouring `deletionPolicy`: `Retain` makes no call;
/// `Delete` removes the bucket only when it carries `owner`'s tags ([`DeleteOutcome::NotOwned`]
/// otherwise) and is empty (else [`S3Error::NotEmpty`]).
pub async fn delete_bucket(
    client: &Client,
    spec: &BucketSpec,
    owner: &Owner,
) -> Result<DeleteOutcome, S3Error> {
    if spec.deletion_policy == DeletionPolicy::Retain {
        tracing::info!(bucket = %spec.name, "bucket left the repository; deletionPolicy Retain keeps it");
        return Ok(DeleteOutcome::Retained);
    }
    let client = regional(client, spec);
    if live::head_bucket(&client, &spec.name).await?.is_none() {
        return Ok(DeleteOutcome::AlreadyGone);
    }
    let mut tags = sections::read_tag_set(&client, &spec.name).await?;
    let ownership = tags.as_mut().map(owner::take_ownership_tags);
    if !owner.owns(ownership.as_ref()) {
        tracing::warn!(bucket = %spec.name, instance = %owner.instance, "bucket is not this environment's; left alone");
        return Ok(DeleteOutcome::NotOwned);
    }
    match client.delete_bucket().bucket(&spec.name).send().await {
        Ok(_) => {
            tracing::info!(bucket = %spec.name, "deleted bucket");
            Ok(DeleteOutcome::Deleted)
        }
        Err(e) if e.code() == Some("BucketNotEmpty") => Err(S3Error::NotEmpty {
            bucket: spec.name.clone(),
        }),
        Err(e) if error::is_no_such_bucket(&e) => Ok(DeleteOutcome::AlreadyGone),
        Err(e) => Err(S3Error::from_sdk(&spec.name, "DeleteBucket", None, &e)),
    }
}
