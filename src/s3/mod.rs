//! S3 buckets as code: the `Bucket` kind (apiVersion `gitopsd.dev/v1alpha1`).
//!
//! - [`parse_bucket`] validates a manifest into a [`BucketSpec`] (pure).
//! - [`plan_bucket`] reads the live bucket (Get* calls, ListObjectsV2 for object sync; never a
//!   write) and compares normalised forms into a [`BucketPlan`].
//! - [`apply_bucket`] makes exactly the writes the plan lists: a no-op plan makes no call at all.
//! - [`delete_bucket`] honours `deletionPolicy`; [`check_health`] reads back and compares.
//! - Ownership ([`owner`]): buckets gitopsd creates carry two tags naming the [`Owner`]; an existing
//!   bucket without them is never adopted, changed or deleted.
//! - [`diff_specs`] compares two specs without touching S3 (previews).
//!
//! Retries: the SDK client built by [`client`] retries throttling, 5xx and timeouts itself
//! (standard mode, exponential backoff with jitter, 5 attempts); errors that still come out say
//! through [`S3Error::is_transient`] whether a later attempt may succeed.

mod client;
mod compare;
pub mod error;
mod live;
pub mod objects;
pub mod owner;
pub mod spec;

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, Region, RuntimeComponents};
use aws_sdk_s3::error::ProvideErrorMetadata;

pub use client::{RequestLog, S3Settings, client, client_with_log};
pub use compare::{check_health, diff_specs};
use compare::{config_yaml, field_text};
pub use error::S3Error;
pub use live::LiveBucket;
pub use objects::{
    MemorySource, ObjectPlan, ObjectSource, SHA256_METADATA, SourceFile, content_type, object_key,
};
pub use owner::Owner;
pub use spec::{
    BucketConfig, BucketSpec, CorsRule, DeletionPolicy, Encryption, Field, LifecycleRule,
    ObjectSync, PublicAccessBlock, RuleStatus, SseType, Transition, VersioningStatus, parse_bucket,
    validate_bucket_name,
};

/// A client for the bucket's region (the spec's, else the client's own).
fn regional(client: &Client, spec: &BucketSpec) -> Client {
    match &spec.region {
        Some(r) if client.config().region().map(Region::as_ref) != Some(r.as_str()) => {
            Client::from_conf(
                client
                    .config()
                    .to_builder()
                    .region(Region::new(r.clone()))
                    .build(),
            )
        }
        _ => client.clone(),
    }
}

fn effective_region(client: &Client, spec: &BucketSpec) -> String {
    spec.region
        .clone()
        .or_else(|| client.config().region().map(|r| r.as_ref().to_string()))
        .unwrap_or_else(|| "us-east-1".to_string())
}

/// Reads the live bucket: `None` when it does not exist. Only the fields the spec manages are read,
/// plus the tag set, which carries the ownership tags (kept apart in [`LiveBucket::ownership`]).
pub async fn read_live(client: &Client, spec: &BucketSpec) -> Result<Option<LiveBucket>, S3Error> {
    let client = regional(client, spec);
    let Some(region) = live::head_bucket(&client, &spec.name).await? else {
        return Ok(None);
    };
    let mut wanted = spec.config.clone();
    wanted.tags.get_or_insert_default();
    let (mut config, mut unsupported) = live::read_config(&client, &spec.name, &wanted).await?;
    let ownership = config.tags.as_mut().map(owner::take_ownership_tags);
    if !spec.config.has(Field::Tags) {
        config.tags = None;
        unsupported.retain(|f| *f != Field::Tags);
    }
    Ok(Some(LiveBucket {
        name: spec.name.clone(),
        region,
        config,
        unsupported,
        ownership,
    }))
}

/// What to do with a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BucketAction {
    Create,
    Update,
    Unchanged,
    Delete,
}

/// One changed field: its name and its value before and after, as YAML text (empty = absent).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub before: String,
    pub after: String,
}

/// The plan for one bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct BucketPlan {
    /// S3 bucket name.
    pub bucket: String,
    pub action: BucketAction,
    /// Changed configuration fields (for `Create`: every managed field).
    pub changes: Vec<FieldChange>,
    pub objects: ObjectPlan,
    /// Configuration fields to write, in apply order.
    pub fields: Vec<Field>,
    /// Things the plan skipped, e.g. a section the server does not implement.
    pub warnings: Vec<String>,
    /// Live configuration of the managed fields (`None`: the bucket does not exist).
    pub before: Option<BucketConfig>,
    /// Desired configuration (`None`: the bucket is deleted).
    pub after: Option<BucketConfig>,
}

impl BucketPlan {
    /// A plan that deletes the bucket (used by the reconcile loop when a Bucket leaves the repo).
    pub fn deletion(spec: &BucketSpec) -> BucketPlan {
        BucketPlan {
            bucket: spec.name.clone(),
            action: BucketAction::Delete,
            changes: diff_specs(Some(spec), None),
            objects: ObjectPlan::default(),
            fields: Vec::new(),
            warnings: Vec::new(),
            before: Some(spec.config.clone()),
            after: None,
        }
    }

    /// Whether applying the plan would make no call.
    pub fn is_noop(&self) -> bool {
        self.action == BucketAction::Unchanged && self.objects.is_noop()
    }

    /// Unified diff of the configuration (YAML) from live to desired, then the object changes.
    /// Holds only configuration and keys, never credentials.
    pub fn diff_text(&self) -> String {
        let before = self.before.as_ref().map(config_yaml).unwrap_or_default();
        let after = self.after.as_ref().map(config_yaml).unwrap_or_default();
        let mut out = String::new();
        if before != after {
            let (old, new) = match self.action {
                BucketAction::Create => {
                    ("/dev/null".to_string(), format!("desired/{}", self.bucket))
                }
                BucketAction::Delete => (format!("live/{}", self.bucket), "/dev/null".to_string()),
                _ => (
                    format!("live/{}", self.bucket),
                    format!("desired/{}", self.bucket),
                ),
            };
            let diff = similar::TextDiff::from_lines(&before, &after);
            out.push_str(
                &diff
                    .unified_diff()
                    .context_radius(3)
                    .header(&old, &new)
                    .to_string(),
            );
        }
        for w in &self.warnings {
            out.push_str(&format!("# warning: {w}\n"));
        }
        let o = &self.objects;
        if !o.is_noop() || o.unchanged > 0 {
            out.push_str(&format!(
                "# objects: {} to upload ({} replaced), {} to delete, {} unchanged\n",
                o.uploads.len(),
                o.replaced.len(),
                o.deletes.len(),
                o.unchanged
            ));
            const MAX_LISTED: usize = 200;
            let mut listed = 0;
            for key in &o.uploads {
                if listed == MAX_LISTED {
                    break;
                }
                let mark = if o.replaced.binary_search(key).is_ok() {
                    '~'
                } else {
                    '+'
                };
                out.push_str(&format!("{mark} {key}\n"));
                listed += 1;
            }
            for key in &o.deletes {
                if listed == MAX_LISTED {
                    break;
                }
                out.push_str(&format!("- {key}\n"));
                listed += 1;
            }
            let total = o.uploads.len() + o.deletes.len();
            if total > listed {
                out.push_str(&format!("… and {} more\n", total - listed));
            }
        }
        out
    }
}

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

/// Options of [`plan_bucket_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// HEAD every synced object that looks unchanged and re-upload it when its Content-Type or
    /// Cache-Control differ from the spec. Listing cannot see headers, so use this when
    /// `objects.cacheControl` or `objects.contentTypes` changed (see [`diff_specs`]); it costs one
    /// request per object.
    pub verify_object_headers: bool,
}

/// Plans a bucket: Get* calls and ListObjectsV2 only (HeadObject only for objects whose ETag
/// cannot be trusted). `objects` is needed for object sync; without it the sync is not planned.
/// An existing bucket that does not carry `owner`'s tags is not adopted: [`S3Error::NotOwned`].
pub async fn plan_bucket(
    client: &Client,
    spec: &BucketSpec,
    owner: &Owner,
    objects: Option<&dyn ObjectSource>,
) -> Result<BucketPlan, S3Error> {
    plan_bucket_with(client, spec, owner, objects, PlanOptions::default()).await
}

/// [`plan_bucket`] with options.
pub async fn plan_bucket_with(
    client: &Client,
    spec: &BucketSpec,
    owner: &Owner,
    objects: Option<&dyn ObjectSource>,
    options: PlanOptions,
) -> Result<BucketPlan, S3Error> {
    let rclient = regional(client, spec);
    let live = Box::pin(read_live(client, spec)).await?;
    let mut warnings = Vec::new();
    if let Some(live) = &live {
        owner.check(&spec.name, live.ownership.as_ref())?;
        if let Some(live_region) = &live.region {
            let region = effective_region(client, spec);
            if !region_matches(live_region, &region) {
                return Err(S3Error::Conflict {
                    bucket: spec.name.clone(),
                    call: "HeadBucket",
                    message: format!(
                        "the bucket exists in region {live_region}, the spec wants {region}; buckets cannot move between regions"
                    ),
                });
            }
        }
    }
    let object_plan = match (&spec.objects, objects) {
        (Some(sync), Some(source)) => {
            Box::pin(objects::plan_objects(
                &rclient,
                &spec.name,
                sync,
                source,
                live.is_some(),
                options.verify_object_headers,
            ))
            .await?
        }
        (Some(_), None) => {
            warnings.push("objects: no source given, object sync not planned".to_string());
            ObjectPlan::default()
        }
        _ => ObjectPlan::default(),
    };
    match live {
        None => Ok(plan_create(spec, object_plan, warnings)),
        Some(live) => plan_update(spec, &live, object_plan, warnings),
    }
}

/// The plan for a bucket that does not exist: every managed field is a change.
fn plan_create(spec: &BucketSpec, objects: ObjectPlan, warnings: Vec<String>) -> BucketPlan {
    let fields = spec.config.fields();
    let changes = fields
        .iter()
        .map(|f| FieldChange {
            field: f.name().to_string(),
            before: String::new(),
            after: field_text(&spec.config, *f),
        })
        .collect();
    BucketPlan {
        bucket: spec.name.clone(),
        action: BucketAction::Create,
        changes,
        objects,
        fields,
        warnings,
        before: None,
        after: Some(spec.config.clone()),
    }
}

/// The plan for an existing (owned) bucket: the managed fields that differ.
fn plan_update(
    spec: &BucketSpec,
    live: &LiveBucket,
    objects: ObjectPlan,
    mut warnings: Vec<String>,
) -> Result<BucketPlan, S3Error> {
    let mut desired = spec.config.clone();
    for field in &live.unsupported {
        if *field == Field::PublicAccessBlock && !spec.public_access_block_explicit {
            let msg = "publicAccessBlock: the server does not implement it; the default (all true) is not enforced";
            tracing::warn!(bucket = %spec.name, "{msg}");
            warnings.push(msg.to_string());
            desired.public_access_block = None;
        } else {
            return Err(S3Error::Conflict {
                bucket: spec.name.clone(),
                call: "Get",
                message: format!(
                    "the server does not implement {} configuration, which the spec sets",
                    field.name()
                ),
            });
        }
    }
    let fields: Vec<Field> = desired
        .fields()
        .into_iter()
        .filter(|f| !desired.same(&live.config, *f))
        .collect();
    let changes = fields
        .iter()
        .map(|f| FieldChange {
            field: f.name().to_string(),
            before: field_text(&live.config, *f),
            after: field_text(&desired, *f),
        })
        .collect();
    // Show only the managed fields on both sides.
    let mut before = BucketConfig::default();
    for f in desired.fields() {
        before.copy_field(&live.config, f);
    }
    let action = if fields.is_empty() && objects.is_noop() {
        BucketAction::Unchanged
    } else {
        BucketAction::Update
    };
    Ok(BucketPlan {
        bucket: spec.name.clone(),
        action,
        changes,
        objects,
        fields,
        warnings,
        before: Some(before),
        after: Some(desired),
    })
}

/// S3 reports us-east-1 as an empty location in some places and `EU` for eu-west-1 in old ones.
fn region_matches(live: &str, want: &str) -> bool {
    let norm = |r: &str| match r {
        "" | "US" => "us-east-1".to_string(),
        "EU" => "eu-west-1".to_string(),
        other => other.to_string(),
    };
    norm(live) == norm(want)
}

/// Applies a plan made by [`plan_bucket`] for the same spec and owner: only the writes it lists.
/// Every tagging write carries the ownership tags besides the spec's.
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
    let bucket = spec.name.as_str();
    // What is written: the spec's configuration, its tags (if managed) with ours added.
    let mut desired = spec.config.clone();
    if desired.has(Field::Tags) {
        desired.tags = Some(owner.merged(spec.config.tags.as_ref()));
    }
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
    for field in &plan.fields {
        // A bucket created just now already got all its tags with the ownership tags.
        if new_bucket && *field == Field::Tags {
            continue;
        }
        match Box::pin(live::write_field(
            &rclient, bucket, &desired, *field, new_bucket,
        ))
        .await
        {
            Ok(n) => {
                report.write_calls += n;
                if n > 0 {
                    report.fields.push(field.name().to_string());
                }
            }
            Err(e)
                if *field == Field::PublicAccessBlock
                    && !spec.public_access_block_explicit
                    && is_not_implemented(&e) =>
            {
                tracing::warn!(bucket, error = %e, "server does not implement the public-access block; default not enforced");
                report.write_calls += 1;
            }
            Err(e) => return Err(e),
        }
    }
    if !plan.objects.is_noop() {
        Box::pin(sync_objects(&rclient, spec, plan, objects, &mut report)).await?;
    }
    tracing::info!(
        bucket,
        action = ?plan.action,
        write_calls = report.write_calls,
        uploaded = report.uploaded,
        deleted = report.deleted,
        "applied bucket plan"
    );
    Ok(report)
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
    let counters = objects::SyncCounters::default();
    let result = Box::pin(objects::apply_objects(
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
async fn create_bucket(client: &Client, bucket: &str, region: &str) -> Result<bool, S3Error> {
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
    let mut tags = live::read_tag_set(&client, &spec.name).await?;
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

#[cfg(test)]
mod tests;
