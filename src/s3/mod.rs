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
use serde_json::Value;

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

/// Host-config side of S3 access (built by the config module).
#[derive(Clone, Default)]
pub struct S3Settings {
    /// Custom endpoint (MinIO, moto, ...); `None` = AWS.
    pub endpoint: Option<String>,
    /// The environment's region (default for buckets without `spec.region`).
    pub region: String,
    pub force_path_style: bool,
    /// Static credentials (read from files); both `None` = the SDK's default chain.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |v: &Option<String>| if v.is_some() { "<redacted>" } else { "<unset>" };
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint.as_deref().map(error::redact))
            .field("region", &self.region)
            .field("force_path_style", &self.force_path_style)
            .field("access_key_id", &set(&self.access_key_id))
            .field("secret_access_key", &set(&self.secret_access_key))
            .finish()
    }
}

/// Builds an S3 client: standard retries (5 attempts, backoff with jitter), connect and per-attempt
/// timeouts, checksums only where S3 requires them (works with S3-compatible servers).
pub async fn client(settings: &S3Settings) -> Client {
    client_with(settings, None).await
}

/// [`client`] with a [`RequestLog`] that records every HTTP request (tests, benchmarks).
pub async fn client_with_log(settings: &S3Settings) -> (Client, RequestLog) {
    let log = RequestLog {
        path_style: settings.force_path_style,
        ..RequestLog::default()
    };
    (client_with(settings, Some(log.clone())).await, log)
}

async fn client_with(settings: &S3Settings, log: Option<RequestLog>) -> Client {
    use aws_sdk_s3::config::retry::RetryConfig;
    use aws_sdk_s3::config::timeout::TimeoutConfig;
    use aws_sdk_s3::config::{
        BehaviorVersion, Credentials, RequestChecksumCalculation, ResponseChecksumValidation,
    };

    let retry = RetryConfig::standard()
        .with_max_attempts(5)
        .with_initial_backoff(Duration::from_millis(200))
        .with_max_backoff(Duration::from_secs(20));
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .operation_attempt_timeout(Duration::from_secs(300))
        .build();
    let region = Region::new(settings.region.clone());
    let mut builder = match (&settings.access_key_id, &settings.secret_access_key) {
        (Some(id), Some(secret)) => aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .credentials_provider(Credentials::new(
                id,
                secret,
                None,
                None,
                "gitopsd-host-config",
            )),
        _ => {
            let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(region.clone())
                .load()
                .await;
            aws_sdk_s3::config::Builder::from(&sdk)
        }
    };
    builder = builder
        .region(region)
        .retry_config(retry)
        .timeout_config(timeouts)
        .force_path_style(settings.force_path_style)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    if let Some(endpoint) = &settings.endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    if let Some(log) = log {
        builder = builder.interceptor(log);
    }
    Client::from_conf(builder.build())
}

/// Records every HTTP request a client sends (including retries): method and S3 call shape.
/// Never records URLs, headers or bodies.
#[derive(Clone, Debug, Default)]
pub struct RequestLog {
    entries: Arc<Mutex<Vec<(String, String)>>>,
    /// Whether the client uses path-style URLs (`/bucket/key`), to tell bucket from object calls.
    path_style: bool,
}

impl RequestLog {
    /// `(method, what)` pairs, e.g. `("GET", "ListObjectsV2")`, `("PUT", "object")`,
    /// `("HEAD", "bucket")`, `("GET", "versioning")` (the sub-resource query keys).
    pub fn entries(&self) -> Vec<(String, String)> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
    pub fn total(&self) -> usize {
        self.entries().len()
    }
    /// Requests that can change state (anything but GET and HEAD).
    pub fn writes(&self) -> usize {
        self.entries()
            .iter()
            .filter(|(m, _)| m != "GET" && m != "HEAD")
            .count()
    }
    /// Requests that are not ListObjectsV2.
    pub fn non_listing(&self) -> usize {
        self.entries()
            .iter()
            .filter(|(_, w)| w != "ListObjectsV2")
            .count()
    }
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}

impl Intercept for RequestLog {
    fn name(&self) -> &'static str {
        "gitopsd-request-log"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let req = context.request();
        let method = req.method().to_string();
        let (path, query) = req.uri().split_once('?').unwrap_or((req.uri(), ""));
        let path = path.split_once("://").map_or(path, |(_, rest)| rest);
        let path = path.split_once('/').map_or("", |(_, p)| p);
        let segments = path.split('/').filter(|s| !s.is_empty()).count();
        let on_object = if self.path_style {
            segments >= 2
        } else {
            segments >= 1
        };
        let keys: Vec<&str> = query
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("x-id="))
            .map(|p| p.split_once('=').map_or(p, |(k, _)| k))
            .collect();
        let what = if query.contains("list-type=2") {
            "ListObjectsV2".to_string()
        } else if keys.is_empty() {
            if on_object { "object" } else { "bucket" }.to_string()
        } else {
            keys.join("&")
        };
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((method, what));
        Ok(())
    }
}

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

/// YAML text of a value (falls back to JSON, which is YAML too).
fn to_yaml(v: &Value) -> String {
    match serde_saphyr::to_string(v) {
        Ok(s) => s,
        Err(_) => serde_json::to_string_pretty(v).unwrap_or_default() + "\n",
    }
}

fn config_yaml(c: &BucketConfig) -> String {
    to_yaml(&c.to_value())
}

fn field_text(c: &BucketConfig, field: Field) -> String {
    c.field_value(field)
        .map(|v| to_yaml(&v).trim_end().to_string())
        .unwrap_or_default()
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

/// Reads the bucket back and lists how it differs from the spec (empty = healthy). The ownership
/// tags are not part of the comparison; a bucket that lost them is reported, since the next plan
/// would refuse it. Object sync is not checked here (it needs the source; a plan with no object
/// work is the check).
pub async fn check_health(
    client: &Client,
    spec: &BucketSpec,
    owner: &Owner,
) -> Result<Vec<String>, S3Error> {
    let Some(live) = read_live(client, spec).await? else {
        return Ok(vec![format!("bucket {} does not exist", spec.name)]);
    };
    let mut problems = Vec::new();
    if !owner.owns(live.ownership.as_ref()) {
        problems.push(format!(
            "bucket {} no longer carries the ownership tags {}={} and {}={}",
            spec.name,
            owner::INSTANCE_TAG,
            owner.instance,
            owner::ENVIRONMENT_TAG,
            owner.environment
        ));
    }
    let region = effective_region(client, spec);
    if let Some(r) = &live.region
        && !region_matches(r, &region)
    {
        problems.push(format!(
            "bucket {} is in region {r}, want {region}",
            spec.name
        ));
    }
    for field in spec.config.fields() {
        if live.unsupported.contains(&field) {
            if field != Field::PublicAccessBlock || spec.public_access_block_explicit {
                problems.push(format!("{}: not implemented by the server", field.name()));
            }
            continue;
        }
        if !spec.config.same(&live.config, field) {
            let compact = |c: &BucketConfig| {
                c.field_value(field)
                    .map(|v| serde_json::to_string(&v).unwrap_or_default())
                    .unwrap_or_else(|| "(absent)".into())
            };
            problems.push(format!(
                "{} is {}, want {}",
                field.name(),
                compact(&live.config),
                compact(&spec.config)
            ));
        }
    }
    Ok(problems)
}

/// Pure diff of two specs (previews, no S3 access): identity and settings fields plus every
/// configuration field managed on either side. `None` = the bucket does not exist on that side.
pub fn diff_specs(before: Option<&BucketSpec>, after: Option<&BucketSpec>) -> Vec<FieldChange> {
    const NOT_MANAGED: &str = "(not managed)";
    let mut changes = Vec::new();
    let mut push = |field: &str, b: String, a: String| {
        if b != a {
            changes.push(FieldChange {
                field: field.to_string(),
                before: b,
                after: a,
            });
        }
    };
    let text =
        |s: Option<&BucketSpec>, f: &dyn Fn(&BucketSpec) -> String| s.map(f).unwrap_or_default();
    push(
        "name",
        text(before, &|s| s.name.clone()),
        text(after, &|s| s.name.clone()),
    );
    let region = |s: &BucketSpec| {
        s.region
            .clone()
            .unwrap_or_else(|| "(environment default)".into())
    };
    push("region", text(before, &region), text(after, &region));
    for field in Field::ALL {
        let side = |s: Option<&BucketSpec>| match s {
            None => String::new(),
            Some(s) if s.config.has(field) => field_text(&s.config, field),
            Some(_) => NOT_MANAGED.to_string(),
        };
        push(field.name(), side(before), side(after));
    }
    let policy = |s: &BucketSpec| format!("{:?}", s.deletion_policy);
    push(
        "deletionPolicy",
        text(before, &policy),
        text(after, &policy),
    );
    let objects = |s: &BucketSpec| match &s.objects {
        None => NOT_MANAGED.to_string(),
        Some(o) => serde_json::to_value(o)
            .map(|v| to_yaml(&v).trim_end().to_string())
            .unwrap_or_default(),
    };
    push("objects", text(before, &objects), text(after, &objects));
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_file;

    fn spec(body: &str) -> BucketSpec {
        let yaml = format!(
            "apiVersion: gitopsd.dev/v1alpha1\nkind: Bucket\nmetadata: {{name: b}}\nspec:\n{body}"
        );
        let m = parse_file("env/dev/b.yaml", yaml.as_bytes())
            .unwrap()
            .remove(0);
        parse_bucket(&m).unwrap()
    }

    #[test]
    fn settings_debug_redacts_credentials() {
        let s = S3Settings {
            endpoint: Some("http://user:pw@localhost:9000".into()),
            region: "us-east-1".into(),
            force_path_style: true,
            access_key_id: Some("AKIAEXAMPLE".into()),
            secret_access_key: Some("wJalrXUtnFEMI/K7MDENG".into()),
        };
        let d = format!("{s:?}");
        assert!(
            !d.contains("AKIAEXAMPLE") && !d.contains("wJalr") && !d.contains(":pw@"),
            "{d}"
        );
    }

    #[test]
    fn diff_specs_shows_changed_fields_only() {
        let a = spec("  name: my-bucket\n  versioning: Enabled\n  tags: {team: web}\n");
        let b = spec(
            "  name: my-bucket\n  versioning: Suspended\n  tags: {team: web}\n  cors: [{allowedOrigins: ['*'], allowedMethods: [GET]}]\n",
        );
        let changes = diff_specs(Some(&a), Some(&b));
        let names: Vec<&str> = changes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(names, vec!["versioning", "cors"]);
        assert_eq!(changes[0].before, "Enabled");
        assert_eq!(changes[0].after, "Suspended");
        assert_eq!(changes[1].before, "(not managed)");
        assert!(diff_specs(Some(&a), Some(&a)).is_empty());
        let created = diff_specs(None, Some(&a));
        assert!(
            created
                .iter()
                .any(|c| c.field == "name" && c.before.is_empty() && c.after == "my-bucket")
        );
        let deleted = diff_specs(Some(&a), None);
        assert!(deleted.iter().all(|c| c.after.is_empty()));
    }

    #[test]
    fn diff_text_is_a_unified_diff_with_objects() {
        let desired = spec("  name: my-bucket\n  versioning: Enabled\n");
        let mut live = desired.config.clone();
        live.versioning = Some(VersioningStatus::Suspended);
        let plan = BucketPlan {
            bucket: "my-bucket".into(),
            action: BucketAction::Update,
            changes: vec![],
            objects: ObjectPlan {
                uploads: vec!["a.txt".into(), "b.txt".into()],
                replaced: vec!["b.txt".into()],
                deletes: vec!["old.txt".into()],
                unchanged: 3,
                ..Default::default()
            },
            fields: vec![Field::Versioning],
            warnings: vec![],
            before: Some(live),
            after: Some(desired.config.clone()),
        };
        let text = plan.diff_text();
        assert!(text.contains("--- live/my-bucket"), "{text}");
        assert!(text.contains("-versioning: Suspended"), "{text}");
        assert!(text.contains("+versioning: Enabled"), "{text}");
        assert!(text.contains("+ a.txt\n~ b.txt\n- old.txt\n"), "{text}");
        assert!(text.contains("3 unchanged"), "{text}");
        assert!(!plan.is_noop());
    }

    #[test]
    fn same_config_compares_normalised_forms() {
        let a = spec(
            "  name: my-bucket\n  lifecycle:\n    - {id: b, expirationDays: 3}\n    - {id: a, expirationDays: 2}\n  cors: [{allowedOrigins: [a.example, b.example], allowedMethods: [PUT, GET]}]\n",
        );
        let b = spec(
            "  name: my-bucket\n  lifecycle:\n    - {id: a, expirationDays: 2, status: Enabled}\n    - {id: b, expirationDays: 3}\n  cors: [{allowedOrigins: [b.example, a.example], allowedMethods: [GET, PUT]}]\n",
        );
        for f in Field::ALL {
            assert!(a.config.same(&b.config, f), "{f:?}");
        }
    }

    #[test]
    fn region_names() {
        assert!(region_matches("", "us-east-1"));
        assert!(region_matches("EU", "eu-west-1"));
        assert!(!region_matches("eu-west-1", "us-east-1"));
    }
}
