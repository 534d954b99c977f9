//! Planning a bucket: the live bucket compared with its spec, section by section, into a
//! [`BucketPlan`] that lists exactly the writes to make. Reads only; may call `s3::live`,
//! `s3::sync` (the object plan) and `s3::owner` (refusing buckets that are not ours).

use aws_sdk_s3::Client;

use super::compare::{config_yaml, field_text};
use super::sync::{self, ObjectPlan, ObjectSource};
use super::{
    BucketConfig, BucketSpec, Field, LiveBucket, Owner, S3Error, diff_specs, effective_region,
    read_live, region_matches, regional,
};

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
            out.push_str(&object_lines(o));
        }
        out
    }
}

/// The object part of [`BucketPlan::diff_text`]: counts, then up to 200 keys.
fn object_lines(o: &ObjectPlan) -> String {
    const MAX_LISTED: usize = 200;
    let mut out = format!(
        "# objects: {} to upload ({} replaced), {} to delete, {} unchanged\n",
        o.uploads.len(),
        o.replaced.len(),
        o.deletes.len(),
        o.unchanged
    );
    let uploads = o.uploads.iter().map(|key| {
        let mark = if o.replaced.binary_search(key).is_ok() {
            '~'
        } else {
            '+'
        };
        (mark, key)
    });
    let deletes = o.deletes.iter().map(|key| ('-', key));
    let mut listed = 0;
    for (mark, key) in uploads.chain(deletes).take(MAX_LISTED) {
        out.push_str(&format!("{mark} {key}\n"));
        listed += 1;
    }
    let total = o.uploads.len() + o.deletes.len();
    if total > listed {
        out.push_str(&format!("… and {} more\n", total - listed));
    }
    out
}

/// Options of [`plan_bucket_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// HEAD every synced object that looks unchanged and re-upload it when its Content-Type or
    /// Cache-Control differ from the spec. Listing cannot see headers, so use this when
    /// `objects.cacheControl` or `objects.contentTypes` changed (see [`diff_specs`]); it costs
    /// one request per object.
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
    let live = Box::pin(read_live(client, spec)).await?;
    if let Some(live) = &live {
        owner.check(&spec.name, live.ownership.as_ref())?;
        check_region(client, spec, live)?;
    }
    let mut warnings = Vec::new();
    let object_plan = match (&spec.objects, objects) {
        (Some(sync), Some(source)) => {
            let rclient = regional(client, spec);
            Box::pin(sync::plan_objects(
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

/// Buckets cannot move between regions: a bucket elsewhere than the spec wants is a conflict.
fn check_region(client: &Client, spec: &BucketSpec, live: &LiveBucket) -> Result<(), S3Error> {
    let Some(live_region) = &live.region else {
        return Ok(());
    };
    let region = effective_region(client, spec);
    if region_matches(live_region, &region) {
        return Ok(());
    }
    Err(S3Error::Conflict {
        bucket: spec.name.clone(),
        call: "HeadBucket",
        message: format!(
            "the bucket exists in region {live_region}, the spec wants {region}; buckets cannot move between regions"
        ),
    })
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
        if !spec.is_defaulted(*field) {
            return Err(S3Error::Conflict {
                bucket: spec.name.clone(),
                call: "Get",
                message: format!(
                    "the server does not implement {} configuration, which the spec sets",
                    field.name()
                ),
            });
        }
        let msg = format!(
            "{}: the server does not implement it; {} is not enforced",
            field.name(),
            field.default_text()
        );
        tracing::warn!(
            bucket = %spec.name,
            field = field.name(),
            "server does not implement the section; its default is not enforced"
        );
        warnings.push(msg);
        desired.remove(*field);
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
