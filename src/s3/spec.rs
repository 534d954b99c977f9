//! The `Bucket` kind: typed spec, normalised configuration and validation.
//!
//! Every configuration section is optional. An absent section is "not managed": gitopsd neither
//! reads nor writes it. The one exception is `publicAccessBlock`, which is secure by default: when
//! absent all four settings are managed as `true`.
//!
//! Values are normalised when they are built (from the spec or from S3), so that two configurations
//! mean the same exactly when they compare equal: lifecycle rules sorted by id, transitions by
//! days, tags as maps, CORS lists sorted within a rule, policies canonicalised.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::manifest::{Manifest, RenderError, Source};

/// Default and largest size of one synced file.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// Part size for multipart uploads; files bigger than this are uploaded in parts.
pub const PART_SIZE: u64 = 8 * 1024 * 1024;
/// S3 allows at most 10,000 parts, so with fixed 8 MiB parts this is the largest file we can upload.
pub const MAX_MULTIPART_SIZE: u64 = PART_SIZE * 10_000;

/// A parsed and validated `Bucket`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BucketSpec {
    /// `metadata.name`: identity in the repository.
    pub id: String,
    /// Where the manifest was defined.
    pub source: Source,
    /// The S3 bucket name (`spec.name`).
    pub name: String,
    /// `spec.region`; `None` = the environment's region (the client's).
    pub region: Option<String>,
    /// The configuration gitopsd manages (absent fields are left alone).
    pub config: BucketConfig,
    /// Whether `publicAccessBlock` was written in the spec (rather than the secure default).
    pub public_access_block_explicit: bool,
    pub deletion_policy: DeletionPolicy,
    pub objects: Option<ObjectSync>,
}

impl BucketSpec {
    /// The object identity used in messages, e.g. `Bucket static-assets`.
    pub fn object_name(&self) -> String {
        format!("Bucket {}", self.id)
    }
}

/// Bucket configuration; each field is `Some` when managed (desired) or read (live).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BucketConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versioning: Option<VersioningStatus>,
    /// `Some(None)`: no default encryption configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Option<Encryption>>,
    /// Empty: no lifecycle configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Vec<LifecycleRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_access_block: Option<PublicAccessBlock>,
    /// Canonical policy document; `Some(None)`: no policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Option<Value>>,
    /// Empty: no tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// Empty: no CORS configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Vec<CorsRule>>,
}

/// A configuration section of a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Field {
    Versioning,
    Encryption,
    Lifecycle,
    PublicAccessBlock,
    Policy,
    Tags,
    Cors,
}

impl Field {
    /// In apply order: the public-access block first (so a policy it would block can be set after
    /// it is relaxed), then everything else.
    pub const ALL: [Field; 7] = [
        Field::PublicAccessBlock,
        Field::Versioning,
        Field::Encryption,
        Field::Lifecycle,
        Field::Policy,
        Field::Tags,
        Field::Cors,
    ];

    /// The field's name in the spec.
    pub fn name(self) -> &'static str {
        match self {
            Field::Versioning => "versioning",
            Field::Encryption => "encryption",
            Field::Lifecycle => "lifecycle",
            Field::PublicAccessBlock => "publicAccessBlock",
            Field::Policy => "policy",
            Field::Tags => "tags",
            Field::Cors => "cors",
        }
    }

    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }
}

impl BucketConfig {
    /// Whether the field is managed (desired) / was read (live).
    pub fn has(&self, field: Field) -> bool {
        match field {
            Field::Versioning => self.versioning.is_some(),
            Field::Encryption => self.encryption.is_some(),
            Field::Lifecycle => self.lifecycle.is_some(),
            Field::PublicAccessBlock => self.public_access_block.is_some(),
            Field::Policy => self.policy.is_some(),
            Field::Tags => self.tags.is_some(),
            Field::Cors => self.cors.is_some(),
        }
    }

    /// The managed fields, in apply order.
    pub fn fields(&self) -> Vec<Field> {
        Field::ALL.into_iter().filter(|f| self.has(*f)).collect()
    }

    /// Whether `field` has the same value in both configurations.
    pub fn same(&self, other: &BucketConfig, field: Field) -> bool {
        match field {
            Field::Versioning => self.versioning == other.versioning,
            Field::Encryption => self.encryption == other.encryption,
            Field::Lifecycle => self.lifecycle == other.lifecycle,
            Field::PublicAccessBlock => self.public_access_block == other.public_access_block,
            Field::Policy => self.policy == other.policy,
            Field::Tags => self.tags == other.tags,
            Field::Cors => self.cors == other.cors,
        }
    }

    /// The field as a JSON value in the spec's shape (`None` when not managed / not read).
    pub fn field_value(&self, field: Field) -> Option<Value> {
        let to = |v: Result<Value, serde_json::Error>| v.unwrap_or(Value::Null);
        match field {
            Field::Versioning => self
                .versioning
                .map(|v| Value::String(v.as_str().to_string())),
            Field::Encryption => self.encryption.as_ref().map(|e| match e {
                Some(e) => to(serde_json::to_value(e)),
                None => Value::String("none".into()),
            }),
            Field::Lifecycle => self.lifecycle.as_ref().map(|l| to(serde_json::to_value(l))),
            Field::PublicAccessBlock => self
                .public_access_block
                .as_ref()
                .map(|p| to(serde_json::to_value(p))),
            Field::Policy => self.policy.as_ref().map(|p| match p {
                Some(p) => p.clone(),
                None => Value::String("none".into()),
            }),
            Field::Tags => self.tags.as_ref().map(|t| to(serde_json::to_value(t))),
            Field::Cors => self.cors.as_ref().map(|c| to(serde_json::to_value(c))),
        }
    }

    /// The managed fields as one JSON mapping (for display).
    pub fn to_value(&self) -> Value {
        let mut map = Map::new();
        for field in Field::ALL {
            if let Some(v) = self.field_value(field) {
                map.insert(field.name().to_string(), v);
            }
        }
        Value::Object(map)
    }

    /// Copies `field` from `other` (used to apply a plan field by field).
    pub fn copy_field(&mut self, other: &BucketConfig, field: Field) {
        match field {
            Field::Versioning => self.versioning = other.versioning,
            Field::Encryption => self.encryption = other.encryption.clone(),
            Field::Lifecycle => self.lifecycle = other.lifecycle.clone(),
            Field::PublicAccessBlock => {
                self.public_access_block = other.public_access_block.clone()
            }
            Field::Policy => self.policy = other.policy.clone(),
            Field::Tags => self.tags = other.tags.clone(),
            Field::Cors => self.cors = other.cors.clone(),
        }
    }
}

/// Bucket versioning state. `Off` is a bucket that was never versioned (read from S3 only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VersioningStatus {
    Enabled,
    Suspended,
    Off,
}

impl VersioningStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VersioningStatus::Enabled => "Enabled",
            VersioningStatus::Suspended => "Suspended",
            VersioningStatus::Off => "Off",
        }
    }
}

/// Server-side encryption types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SseType {
    #[serde(rename = "SSE-S3")]
    SseS3,
    #[serde(rename = "SSE-KMS")]
    SseKms,
    #[serde(rename = "DSSE-KMS")]
    DsseKms,
}

impl SseType {
    pub fn as_str(self) -> &'static str {
        match self {
            SseType::SseS3 => "SSE-S3",
            SseType::SseKms => "SSE-KMS",
            SseType::DsseKms => "DSSE-KMS",
        }
    }
    /// The S3 `SSEAlgorithm` value.
    pub fn algorithm(self) -> &'static str {
        match self {
            SseType::SseS3 => "AES256",
            SseType::SseKms => "aws:kms",
            SseType::DsseKms => "aws:kms:dsse",
        }
    }
    pub fn from_algorithm(alg: &str) -> Option<SseType> {
        match alg {
            "AES256" => Some(SseType::SseS3),
            "aws:kms" => Some(SseType::SseKms),
            "aws:kms:dsse" => Some(SseType::DsseKms),
            _ => None,
        }
    }
}

/// Default encryption.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Encryption {
    #[serde(rename = "type")]
    pub sse_type: SseType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    #[serde(default)]
    pub bucket_key_enabled: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RuleStatus {
    Enabled,
    Disabled,
}

/// One lifecycle rule, normalised.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleRule {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    pub status: RuleStatus,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transitions: Vec<Transition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_days: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noncurrent_version_expiration_days: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_incomplete_multipart_upload_days: Option<i32>,
    /// Settings found on a live rule that the spec cannot express (so such a rule never equals a
    /// desired one and gets rewritten).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unsupported: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    pub days: i32,
    pub storage_class: String,
}

/// Block Public Access settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicAccessBlock {
    pub block_public_acls: bool,
    pub ignore_public_acls: bool,
    pub block_public_policy: bool,
    pub restrict_public_buckets: bool,
}

impl PublicAccessBlock {
    pub const ALL_TRUE: PublicAccessBlock = PublicAccessBlock {
        block_public_acls: true,
        ignore_public_acls: true,
        block_public_policy: true,
        restrict_public_buckets: true,
    };
    pub const ALL_FALSE: PublicAccessBlock = PublicAccessBlock {
        block_public_acls: false,
        ignore_public_acls: false,
        block_public_policy: false,
        restrict_public_buckets: false,
    };
}

/// One CORS rule, normalised (lists sorted and deduplicated; rule order is kept, it matters).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CorsRule {
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<i32>,
}

impl CorsRule {
    pub(crate) fn normalised(mut self) -> Self {
        for list in [
            &mut self.allowed_origins,
            &mut self.allowed_methods,
            &mut self.allowed_headers,
            &mut self.expose_headers,
        ] {
            list.sort();
            list.dedup();
        }
        self
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeletionPolicy {
    #[default]
    Retain,
    Delete,
}

/// `spec.objects`: a repository folder synced to a key prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectSync {
    /// Repository-relative folder, without trailing slash (`""` = the repository root).
    pub source: String,
    /// Key prefix; empty or ending in `/`.
    pub prefix: String,
    pub delete: bool,
    pub cache_control: Option<String>,
    /// Extension (lowercase, with the dot) → Content-Type, overriding the built-in table.
    pub content_types: BTreeMap<String, String>,
    pub max_file_size: u64,
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// Collects validation problems with their spec path.
struct Checker {
    errors: Vec<String>,
}

impl Checker {
    fn err(&mut self, path: &str, message: impl std::fmt::Display) {
        self.errors.push(format!("{path}: {message}"));
    }

    /// The value as a mapping, reporting unknown keys.
    fn mapping<'a>(
        &mut self,
        v: &'a Value,
        path: &str,
        allowed: &[&str],
    ) -> Option<&'a Map<String, Value>> {
        match v {
            Value::Object(map) => {
                for key in map.keys() {
                    if !allowed.contains(&key.as_str()) {
                        self.err(
                            &format!("{path}.{key}"),
                            format!("unknown field (expected one of: {})", allowed.join(", ")),
                        );
                    }
                }
                Some(map)
            }
            _ => {
                self.err(path, "must be a mapping");
                None
            }
        }
    }

    fn string(&mut self, v: &Value, path: &str) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            _ => {
                self.err(path, "must be a string");
                None
            }
        }
    }

    fn boolean(&mut self, v: &Value, path: &str) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            _ => {
                self.err(path, "must be true or false");
                None
            }
        }
    }

    fn int(&mut self, v: &Value, path: &str, min: i64, max: i64) -> Option<i32> {
        match v.as_i64() {
            Some(n) if (min..=max).contains(&n) => i32::try_from(n).ok(),
            Some(n) => {
                self.err(path, format!("{n} is out of range {min}..={max}"));
                None
            }
            None => {
                self.err(path, "must be an integer");
                None
            }
        }
    }

    fn string_list(&mut self, v: &Value, path: &str) -> Option<Vec<String>> {
        match v {
            Value::Array(items) => {
                let mut out = Vec::new();
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    match self.string(item, &format!("{path}[{i}]")) {
                        Some(s) => out.push(s),
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            }
            _ => {
                self.err(path, "must be a list of strings");
                None
            }
        }
    }

    fn string_map(&mut self, v: &Value, path: &str) -> Option<BTreeMap<String, String>> {
        match v {
            Value::Object(map) => {
                let mut out = BTreeMap::new();
                for (k, v) in map {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        _ => {
                            self.err(&format!("{path}.{k}"), "must be a string");
                            continue;
                        }
                    };
                    out.insert(k.clone(), v);
                }
                Some(out)
            }
            _ => {
                self.err(path, "must be a mapping of strings");
                None
            }
        }
    }
}

/// Parses and validates a `Bucket` manifest. All problems are reported, each with the file, line
/// and object identity of the manifest.
pub fn parse_bucket(m: &Manifest) -> Result<BucketSpec, Vec<RenderError>> {
    let object = format!("Bucket {}", m.key.name);
    let mut c = Checker { errors: Vec::new() };
    let spec = parse_inner(m, &mut c);
    match spec {
        Some(spec) if c.errors.is_empty() => Ok(spec),
        _ => {
            if c.errors.is_empty() {
                c.errors.push("invalid Bucket".into());
            }
            Err(c
                .errors
                .into_iter()
                .map(|message| RenderError {
                    path: m.source.path.clone(),
                    line: Some(m.source.line),
                    object: Some(object.clone()),
                    message,
                })
                .collect())
        }
    }
}

const SPEC_FIELDS: &[&str] = &[
    "name",
    "region",
    "versioning",
    "encryption",
    "lifecycle",
    "publicAccessBlock",
    "policy",
    "tags",
    "cors",
    "deletionPolicy",
    "objects",
];

fn parse_inner(m: &Manifest, c: &mut Checker) -> Option<BucketSpec> {
    if !m.key.is_bucket() {
        c.err("kind", format!("{} is not a gitopsd Bucket", m.key));
        return None;
    }
    if m.api_version != "gitopsd.dev/v1alpha1" {
        c.err(
            "apiVersion",
            format!(
                "unsupported version {:?} (supported: gitopsd.dev/v1alpha1)",
                m.api_version
            ),
        );
    }
    if let Some(top) = m.body.as_object() {
        for key in top.keys() {
            if !["apiVersion", "kind", "metadata", "spec"].contains(&key.as_str()) {
                c.err(
                    key,
                    "unknown field (expected one of: apiVersion, kind, metadata, spec)",
                );
            }
        }
    }
    let spec = match m.body.get("spec") {
        Some(v) => c.mapping(v, "spec", SPEC_FIELDS)?,
        None => {
            c.err("spec", "missing");
            return None;
        }
    };

    let name = match spec.get("name") {
        Some(v) => c.string(v, "spec.name"),
        None => {
            c.err("spec.name", "missing (the S3 bucket name)");
            None
        }
    };
    if let Some(name) = &name
        && let Err(e) = validate_bucket_name(name)
    {
        c.err(
            "spec.name",
            format!("{name:?} is not a valid S3 bucket name: {e}"),
        );
    }
    let region = spec.get("region").and_then(|v| c.string(v, "spec.region"));
    if let Some(r) = &region
        && (r.is_empty()
            || r.len() > 32
            || !r
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
    {
        c.err(
            "spec.region",
            format!("{r:?} is not a region name (like us-east-1)"),
        );
    }

    let mut config = BucketConfig::default();
    if let Some(v) = spec.get("versioning") {
        config.versioning = match v.as_str() {
            Some("Enabled") => Some(VersioningStatus::Enabled),
            Some("Suspended") => Some(VersioningStatus::Suspended),
            _ => {
                c.err(
                    "spec.versioning",
                    format!("must be Enabled or Suspended, not {v}"),
                );
                None
            }
        };
    }
    if let Some(v) = spec.get("encryption") {
        config.encryption = parse_encryption(v, c).map(Some);
    }
    if let Some(v) = spec.get("lifecycle") {
        config.lifecycle = parse_lifecycle(v, c);
    }
    let pab_explicit = spec.get("publicAccessBlock").is_some();
    config.public_access_block = match spec.get("publicAccessBlock") {
        None => Some(PublicAccessBlock::ALL_TRUE),
        Some(v) => parse_pab(v, c),
    };
    if let Some(v) = spec.get("policy") {
        config.policy = parse_policy(v, c).map(Some);
    }
    if let Some(v) = spec.get("tags") {
        config.tags = c.string_map(v, "spec.tags");
        if let Some(tags) = &config.tags {
            validate_tags(tags, "spec.tags", super::owner::MAX_SPEC_TAGS, c);
            reject_ownership_tags(tags, c);
        }
    }
    if let Some(v) = spec.get("cors") {
        config.cors = parse_cors(v, c);
    }
    let deletion_policy = match spec.get("deletionPolicy") {
        None => DeletionPolicy::Retain,
        Some(v) => match v.as_str() {
            Some("Retain") => DeletionPolicy::Retain,
            Some("Delete") => DeletionPolicy::Delete,
            _ => {
                c.err(
                    "spec.deletionPolicy",
                    format!("must be Retain or Delete, not {v}"),
                );
                DeletionPolicy::Retain
            }
        },
    };
    let objects = match spec.get("objects") {
        None => None,
        Some(v) => parse_objects(v, c),
    };

    Some(BucketSpec {
        id: m.key.name.clone(),
        source: m.source.clone(),
        name: name?,
        region,
        config,
        public_access_block_explicit: pab_explicit,
        deletion_policy,
        objects,
    })
}

/// AWS general-purpose bucket naming rules.
pub fn validate_bucket_name(name: &str) -> Result<(), String> {
    if !(3..=63).contains(&name.len()) {
        return Err(format!(
            "must be 3 to 63 characters long, is {}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '.' || *c == '-'))
    {
        return Err(format!(
            "may contain only lowercase letters, digits, dots and hyphens, not {c:?}"
        ));
    }
    let bytes = name.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err("must begin and end with a letter or digit".into());
    }
    if name.contains("..") {
        return Err("must not contain two adjacent dots".into());
    }
    if name.contains(".-") || name.contains("-.") {
        return Err("must not contain a dot next to a hyphen".into());
    }
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("must not be formatted as an IP address".into());
    }
    for prefix in ["xn--", "sthree-", "amzn-s3-demo-"] {
        if name.starts_with(prefix) {
            return Err(format!("must not start with {prefix:?}"));
        }
    }
    for suffix in ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"] {
        if name.ends_with(suffix) {
            return Err(format!("must not end with {suffix:?}"));
        }
    }
    Ok(())
}

fn parse_encryption(v: &Value, c: &mut Checker) -> Option<Encryption> {
    let map = c.mapping(
        v,
        "spec.encryption",
        &["type", "kmsKeyId", "bucketKeyEnabled"],
    )?;
    let sse_type = match map.get("type").and_then(Value::as_str) {
        Some("SSE-S3") => SseType::SseS3,
        Some("SSE-KMS") => SseType::SseKms,
        Some("DSSE-KMS") => SseType::DsseKms,
        other => {
            c.err(
                "spec.encryption.type",
                format!(
                    "must be SSE-S3, SSE-KMS or DSSE-KMS, not {}",
                    other.unwrap_or("(missing)")
                ),
            );
            return None;
        }
    };
    let kms_key_id = map
        .get("kmsKeyId")
        .and_then(|v| c.string(v, "spec.encryption.kmsKeyId"));
    let bucket_key_enabled = map
        .get("bucketKeyEnabled")
        .and_then(|v| c.boolean(v, "spec.encryption.bucketKeyEnabled"))
        .unwrap_or(false);
    if sse_type == SseType::SseS3 {
        if kms_key_id.is_some() {
            c.err(
                "spec.encryption.kmsKeyId",
                "only valid with type SSE-KMS or DSSE-KMS",
            );
        }
        if bucket_key_enabled {
            c.err(
                "spec.encryption.bucketKeyEnabled",
                "only valid with type SSE-KMS or DSSE-KMS",
            );
        }
    }
    if kms_key_id.as_deref() == Some("") {
        c.err("spec.encryption.kmsKeyId", "must not be empty");
    }
    Some(Encryption {
        sse_type,
        kms_key_id,
        bucket_key_enabled,
    })
}

const STORAGE_CLASSES: &[&str] = &[
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "GLACIER_IR",
    "DEEP_ARCHIVE",
];

fn parse_lifecycle(v: &Value, c: &mut Checker) -> Option<Vec<LifecycleRule>> {
    let Value::Array(items) = v else {
        c.err("spec.lifecycle", "must be a list of rules");
        return None;
    };
    if items.len() > 1000 {
        c.err("spec.lifecycle", "at most 1000 rules");
    }
    let mut rules = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("spec.lifecycle[{i}]");
        if let Some(rule) = parse_rule(item, &path, c) {
            if rules.iter().any(|r: &LifecycleRule| r.id == rule.id) {
                c.err(&path, format!("duplicate rule id {:?}", rule.id));
            }
            rules.push(rule);
        }
    }
    rules.sort_by(|a, b| a.id.cmp(&b.id));
    Some(rules)
}

fn parse_rule(v: &Value, path: &str, c: &mut Checker) -> Option<LifecycleRule> {
    let map = c.mapping(
        v,
        path,
        &[
            "id",
            "prefix",
            "tags",
            "filter",
            "status",
            "transitions",
            "expirationDays",
            "noncurrentVersionExpirationDays",
            "abortIncompleteMultipartUploadDays",
        ],
    )?;
    let id = match map.get("id") {
        Some(v) => c.string(v, &format!("{path}.id")),
        None => {
            c.err(&format!("{path}.id"), "missing (rules are matched by id)");
            None
        }
    };
    if let Some(id) = &id
        && (id.is_empty() || id.len() > 255)
    {
        c.err(&format!("{path}.id"), "must be 1 to 255 characters");
    }
    let mut prefix = map
        .get("prefix")
        .and_then(|v| c.string(v, &format!("{path}.prefix")));
    let mut tags = map
        .get("tags")
        .and_then(|v| c.string_map(v, &format!("{path}.tags")))
        .unwrap_or_default();
    if let Some(filter) = map.get("filter") {
        let fpath = format!("{path}.filter");
        if map.contains_key("prefix") || map.contains_key("tags") {
            c.err(
                &fpath,
                "use either filter or prefix/tags on the rule, not both",
            );
        }
        if let Some(f) = c.mapping(filter, &fpath, &["prefix", "tags"]) {
            prefix = f
                .get("prefix")
                .and_then(|v| c.string(v, &format!("{fpath}.prefix")));
            tags = f
                .get("tags")
                .and_then(|v| c.string_map(v, &format!("{fpath}.tags")))
                .unwrap_or_default();
        }
    }
    if prefix.as_deref() == Some("") {
        prefix = None;
    }
    validate_tags(&tags, &format!("{path}.tags"), 10, c);
    let status = match map.get("status") {
        None => RuleStatus::Enabled,
        Some(v) => match v.as_str() {
            Some("Enabled") => RuleStatus::Enabled,
            Some("Disabled") => RuleStatus::Disabled,
            _ => {
                c.err(
                    &format!("{path}.status"),
                    format!("must be Enabled or Disabled, not {v}"),
                );
                RuleStatus::Enabled
            }
        },
    };
    let days = |c: &mut Checker, key: &str| {
        map.get(key)
            .and_then(|v| c.int(v, &format!("{path}.{key}"), 1, 2_147_483_647))
    };
    let expiration_days = days(c, "expirationDays");
    let noncurrent_version_expiration_days = days(c, "noncurrentVersionExpirationDays");
    let abort_incomplete_multipart_upload_days = days(c, "abortIncompleteMultipartUploadDays");
    let mut transitions = Vec::new();
    if let Some(v) = map.get("transitions") {
        let tpath = format!("{path}.transitions");
        match v {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let ipath = format!("{tpath}[{i}]");
                    let Some(t) = c.mapping(item, &ipath, &["days", "storageClass"]) else {
                        continue;
                    };
                    let d = match t.get("days") {
                        Some(v) => c.int(v, &format!("{ipath}.days"), 0, 2_147_483_647),
                        None => {
                            c.err(&format!("{ipath}.days"), "missing");
                            None
                        }
                    };
                    let class = match t.get("storageClass") {
                        Some(v) => c.string(v, &format!("{ipath}.storageClass")),
                        None => {
                            c.err(&format!("{ipath}.storageClass"), "missing");
                            None
                        }
                    };
                    if let Some(class) = &class
                        && !STORAGE_CLASSES.contains(&class.as_str())
                    {
                        c.err(
                            &format!("{ipath}.storageClass"),
                            format!("{class:?} is not one of {}", STORAGE_CLASSES.join(", ")),
                        );
                    }
                    if let (Some(d), Some(class)) = (d, &class)
                        && matches!(class.as_str(), "STANDARD_IA" | "ONEZONE_IA")
                        && d < 30
                    {
                        c.err(
                            &format!("{ipath}.days"),
                            format!("{class} needs at least 30 days"),
                        );
                    }
                    if let (Some(days), Some(storage_class)) = (d, class) {
                        transitions.push(Transition {
                            days,
                            storage_class,
                        });
                    }
                }
            }
            _ => c.err(&tpath, "must be a list of {days, storageClass}"),
        }
    }
    transitions.sort();
    if let (Some(exp), Some(last)) = (expiration_days, transitions.iter().map(|t| t.days).max())
        && exp <= last
    {
        c.err(
            &format!("{path}.expirationDays"),
            format!("{exp} must be later than the last transition ({last} days)"),
        );
    }
    if transitions.is_empty()
        && expiration_days.is_none()
        && noncurrent_version_expiration_days.is_none()
        && abort_incomplete_multipart_upload_days.is_none()
    {
        c.err(
            path,
            "has no action (transitions, expirationDays, noncurrentVersionExpirationDays or abortIncompleteMultipartUploadDays)",
        );
    }
    if abort_incomplete_multipart_upload_days.is_some() && !tags.is_empty() {
        c.err(
            &format!("{path}.abortIncompleteMultipartUploadDays"),
            "cannot be used in a rule that filters on tags",
        );
    }
    Some(LifecycleRule {
        id: id?,
        prefix,
        tags,
        status,
        transitions,
        expiration_days,
        noncurrent_version_expiration_days,
        abort_incomplete_multipart_upload_days,
        unsupported: BTreeMap::new(),
    })
}

fn parse_pab(v: &Value, c: &mut Checker) -> Option<PublicAccessBlock> {
    let path = "spec.publicAccessBlock";
    let keys = [
        "blockPublicAcls",
        "ignorePublicAcls",
        "blockPublicPolicy",
        "restrictPublicBuckets",
    ];
    let map = c.mapping(v, path, &keys)?;
    let mut get = |k: &str| {
        map.get(k)
            .and_then(|v| c.boolean(v, &format!("{path}.{k}")))
            .unwrap_or(true)
    };
    Some(PublicAccessBlock {
        block_public_acls: get("blockPublicAcls"),
        ignore_public_acls: get("ignorePublicAcls"),
        block_public_policy: get("blockPublicPolicy"),
        restrict_public_buckets: get("restrictPublicBuckets"),
    })
}

fn parse_policy(v: &Value, c: &mut Checker) -> Option<Value> {
    let path = "spec.policy";
    let doc = match v {
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(doc) => doc,
            Err(e) => {
                c.err(path, format!("is not valid JSON: {e}"));
                return None;
            }
        },
        other => other.clone(),
    };
    let Some(map) = doc.as_object() else {
        c.err(path, "must be a JSON object (a policy document)");
        return None;
    };
    match map.get("Statement") {
        Some(Value::Array(items)) if !items.is_empty() => {
            for (i, st) in items.iter().enumerate() {
                check_statement(st, &format!("{path}.Statement[{i}]"), c);
            }
        }
        Some(st @ Value::Object(_)) => check_statement(st, &format!("{path}.Statement"), c),
        Some(_) => c.err(
            &format!("{path}.Statement"),
            "must be a statement or a non-empty list of statements",
        ),
        None => c.err(path, "has no Statement"),
    }
    if let Some(version) = map.get("Version")
        && !matches!(version.as_str(), Some("2012-10-17" | "2008-10-17"))
    {
        c.err(&format!("{path}.Version"), "must be \"2012-10-17\"");
    }
    let len = serde_json::to_string(&doc).map(|s| s.len()).unwrap_or(0);
    if len > 20 * 1024 {
        c.err(
            path,
            format!("is {len} bytes; bucket policies are limited to 20 KiB"),
        );
    }
    Some(canonical_policy(&doc))
}

fn check_statement(st: &Value, path: &str, c: &mut Checker) {
    let Some(map) = st.as_object() else {
        c.err(path, "must be a mapping");
        return;
    };
    if !matches!(
        map.get("Effect").and_then(Value::as_str),
        Some("Allow" | "Deny")
    ) {
        c.err(&format!("{path}.Effect"), "must be Allow or Deny");
    }
    if !map.contains_key("Action") && !map.contains_key("NotAction") {
        c.err(path, "has no Action");
    }
    if !map.contains_key("Resource") && !map.contains_key("NotResource") {
        c.err(path, "has no Resource");
    }
}

/// Canonical form of a policy document, so that documents meaning the same compare equal: keys
/// sorted, one-element lists as scalars, list order ignored, `Statement` always a list, account ids
/// in `Principal.AWS` as root ARNs (S3 rewrites them so).
pub fn canonical_policy(doc: &Value) -> Value {
    fn canon(v: &Value, key: Option<&str>, in_principal: bool) -> Value {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for k in keys {
                    let principal = in_principal || k == "Principal" || k == "NotPrincipal";
                    out.insert(k.clone(), canon(&map[k], Some(k), principal));
                }
                Value::Object(out)
            }
            Value::Array(items) => {
                let mut items: Vec<Value> =
                    items.iter().map(|i| canon(i, key, in_principal)).collect();
                items.sort_by_cached_key(|i| serde_json::to_string(i).unwrap_or_default());
                items.dedup();
                if items.len() == 1 && key != Some("Statement") {
                    items.remove(0)
                } else {
                    Value::Array(items)
                }
            }
            Value::String(s)
                if in_principal
                    && key == Some("AWS")
                    && s.len() == 12
                    && s.bytes().all(|b| b.is_ascii_digit()) =>
            {
                Value::String(format!("arn:aws:iam::{s}:root"))
            }
            Value::Number(n) => Value::String(n.to_string()),
            Value::Bool(b) => Value::String(b.to_string()),
            other => other.clone(),
        }
    }
    let mut out = canon(doc, None, false);
    if let Some(map) = out.as_object_mut() {
        match map.get("Statement") {
            Some(Value::Array(_)) | None => {}
            Some(st) => {
                let st = st.clone();
                map.insert("Statement".into(), Value::Array(vec![st]));
            }
        }
    }
    out
}

fn parse_cors(v: &Value, c: &mut Checker) -> Option<Vec<CorsRule>> {
    let Value::Array(items) = v else {
        c.err("spec.cors", "must be a list of rules");
        return None;
    };
    if items.len() > 100 {
        c.err("spec.cors", "at most 100 rules");
    }
    let mut rules = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("spec.cors[{i}]");
        let Some(map) = c.mapping(
            item,
            &path,
            &[
                "allowedOrigins",
                "allowedMethods",
                "allowedHeaders",
                "exposeHeaders",
                "maxAgeSeconds",
            ],
        ) else {
            continue;
        };
        let mut bad = false;
        let mut list = |c: &mut Checker, key: &str| match map.get(key) {
            None => Vec::new(),
            Some(v) => c
                .string_list(v, &format!("{path}.{key}"))
                .unwrap_or_else(|| {
                    bad = true;
                    Vec::new()
                }),
        };
        let allowed_origins = list(c, "allowedOrigins");
        let allowed_methods = list(c, "allowedMethods");
        let allowed_headers = list(c, "allowedHeaders");
        let expose_headers = list(c, "exposeHeaders");
        if allowed_origins.is_empty() && !bad {
            c.err(
                &format!("{path}.allowedOrigins"),
                "must list at least one origin",
            );
        }
        if allowed_methods.is_empty() && !bad {
            c.err(
                &format!("{path}.allowedMethods"),
                "must list at least one method",
            );
        }
        for m in &allowed_methods {
            if !["GET", "PUT", "POST", "DELETE", "HEAD"].contains(&m.as_str()) {
                c.err(
                    &format!("{path}.allowedMethods"),
                    format!("{m:?} is not one of GET, PUT, POST, DELETE, HEAD"),
                );
            }
        }
        for o in &allowed_origins {
            if o.matches('*').count() > 1 {
                c.err(
                    &format!("{path}.allowedOrigins"),
                    format!("{o:?} may contain at most one '*'"),
                );
            }
        }
        let max_age_seconds = map
            .get("maxAgeSeconds")
            .and_then(|v| c.int(v, &format!("{path}.maxAgeSeconds"), 0, 2_147_483_647));
        rules.push(
            CorsRule {
                allowed_origins,
                allowed_methods,
                allowed_headers,
                expose_headers,
                max_age_seconds,
            }
            .normalised(),
        );
    }
    Some(rules)
}

/// The `gitopsd.dev/` tag keys are gitopsd's ownership marks (see `s3::owner`): a spec setting
/// them could hand a bucket to another instance or environment, so it may not.
fn reject_ownership_tags(tags: &BTreeMap<String, String>, c: &mut Checker) {
    for k in tags.keys() {
        if k.to_ascii_lowercase()
            .starts_with(super::owner::RESERVED_TAG_PREFIX)
        {
            c.err(
                &format!("spec.tags.{k}"),
                format!(
                    "the {} prefix is reserved for gitopsd's ownership tags, which it sets itself",
                    super::owner::RESERVED_TAG_PREFIX
                ),
            );
        }
    }
}

fn validate_tags(tags: &BTreeMap<String, String>, path: &str, max: usize, c: &mut Checker) {
    if tags.len() > max {
        c.err(path, format!("at most {max} tags, found {}", tags.len()));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 128 {
            c.err(
                &format!("{path}.{k}"),
                "tag keys must be 1 to 128 characters",
            );
        }
        if v.chars().count() > 256 {
            c.err(
                &format!("{path}.{k}"),
                "tag values must be at most 256 characters",
            );
        }
        if k.to_ascii_lowercase().starts_with("aws:") {
            c.err(&format!("{path}.{k}"), "the aws: prefix is reserved");
        }
    }
}

fn parse_objects(v: &Value, c: &mut Checker) -> Option<ObjectSync> {
    let path = "spec.objects";
    let map = c.mapping(
        v,
        path,
        &[
            "source",
            "prefix",
            "delete",
            "cacheControl",
            "contentTypes",
            "maxFileSize",
        ],
    )?;
    let source = match map.get("source") {
        Some(v) => c.string(v, &format!("{path}.source")),
        None => {
            c.err(&format!("{path}.source"), "missing (a repository folder)");
            None
        }
    };
    let source = source.and_then(|s| match normalise_source(&s) {
        Ok(s) => Some(s),
        Err(e) => {
            c.err(&format!("{path}.source"), format!("{s:?} {e}"));
            None
        }
    });
    let prefix = map
        .get("prefix")
        .and_then(|v| c.string(v, &format!("{path}.prefix")))
        .unwrap_or_default();
    let prefix = match normalise_prefix(&prefix) {
        Ok(p) => p,
        Err(e) => {
            c.err(&format!("{path}.prefix"), format!("{prefix:?} {e}"));
            String::new()
        }
    };
    let delete = map
        .get("delete")
        .and_then(|v| c.boolean(v, &format!("{path}.delete")))
        .unwrap_or(false);
    let cache_control = map
        .get("cacheControl")
        .and_then(|v| c.string(v, &format!("{path}.cacheControl")));
    if let Some(cc) = &cache_control
        && cc.chars().any(char::is_control)
    {
        c.err(
            &format!("{path}.cacheControl"),
            "must not contain control characters",
        );
    }
    let mut content_types = BTreeMap::new();
    if let Some(v) = map.get("contentTypes")
        && let Some(m) = c.string_map(v, &format!("{path}.contentTypes"))
    {
        for (ext, ty) in m {
            let key = if ext.starts_with('.') {
                ext.to_ascii_lowercase()
            } else {
                format!(".{}", ext.to_ascii_lowercase())
            };
            if key.len() < 2 || key[1..].contains(['.', '/', '\\']) {
                c.err(
                    &format!("{path}.contentTypes.{ext}"),
                    "must be a file extension like .webmanifest",
                );
            }
            if !ty.contains('/')
                || ty
                    .chars()
                    .any(|ch| ch.is_control() || ch.is_whitespace() && ch != ' ')
            {
                c.err(
                    &format!("{path}.contentTypes.{ext}"),
                    format!("{ty:?} is not a media type"),
                );
            }
            content_types.insert(key, ty);
        }
    }
    let max_file_size = match map.get("maxFileSize") {
        None => DEFAULT_MAX_FILE_SIZE,
        Some(v) => match parse_size(v) {
            Ok(0) => {
                c.err(&format!("{path}.maxFileSize"), "must be more than 0");
                DEFAULT_MAX_FILE_SIZE
            }
            Ok(n) if n > MAX_MULTIPART_SIZE => {
                c.err(
                    &format!("{path}.maxFileSize"),
                    format!("{n} bytes is more than the largest uploadable file ({MAX_MULTIPART_SIZE} bytes)"),
                );
                DEFAULT_MAX_FILE_SIZE
            }
            Ok(n) => n,
            Err(e) => {
                c.err(&format!("{path}.maxFileSize"), e);
                DEFAULT_MAX_FILE_SIZE
            }
        },
    };
    Some(ObjectSync {
        source: source?,
        prefix,
        delete,
        cache_control,
        content_types,
        max_file_size,
    })
}

/// A repository folder: relative, inside the repository, `/`-separated. `""` or `.` is the root.
fn normalise_source(s: &str) -> Result<String, String> {
    if s.contains('\\') {
        return Err("must use / as separator, not backslashes".into());
    }
    if s.starts_with('/') {
        return Err("must be relative to the repository root".into());
    }
    let trimmed = s.trim_end_matches('/');
    if trimmed.is_empty() || trimmed == "." {
        return Ok(String::new());
    }
    for seg in trimmed.split('/') {
        match seg {
            "" => return Err("has an empty path segment".into()),
            "." | ".." => {
                return Err("must stay inside the repository (no . or .. segments)".into());
            }
            _ if seg.chars().any(char::is_control) => {
                return Err("contains control characters".into());
            }
            _ => {}
        }
    }
    Ok(trimmed.to_string())
}

/// A key prefix: empty, or segments ending with `/` (a missing trailing `/` is added).
fn normalise_prefix(p: &str) -> Result<String, String> {
    if p.is_empty() {
        return Ok(String::new());
    }
    if p.starts_with('/') {
        return Err("must not start with /".into());
    }
    let p = if p.ends_with('/') {
        p.to_string()
    } else {
        format!("{p}/")
    };
    check_key_segments(&p[..p.len() - 1])?;
    if p.len() > 512 {
        return Err("is longer than 512 bytes".into());
    }
    Ok(p)
}

/// Checks a relative key path: no empty, `.` or `..` segments, no backslashes, no control characters.
pub(crate) fn check_key_segments(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("is empty".into());
    }
    if path.starts_with('/') {
        return Err("is absolute".into());
    }
    if path.contains('\\') {
        return Err("contains a backslash".into());
    }
    if path.chars().any(char::is_control) {
        return Err("contains control characters".into());
    }
    for seg in path.split('/') {
        match seg {
            "" => return Err("has an empty path segment".into()),
            "." | ".." => return Err("has a . or .. segment (would escape the prefix)".into()),
            _ => {}
        }
    }
    Ok(())
}

/// `5GiB`, `100 MB`, `1024` → bytes.
pub fn parse_size(v: &Value) -> Result<u64, String> {
    if let Some(n) = v.as_u64() {
        return Ok(n);
    }
    let Some(s) = v.as_str() else {
        return Err("must be a size like 5GiB or a number of bytes".into());
    };
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = (s[..split].trim(), s[split..].trim());
    let num: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 5GiB or 100MB"))?;
    let mult: u64 = match unit {
        "" | "B" => 1,
        "K" | "KB" => 1000,
        "Ki" | "KiB" => 1 << 10,
        "M" | "MB" => 1_000_000,
        "Mi" | "MiB" => 1 << 20,
        "G" | "GB" => 1_000_000_000,
        "Gi" | "GiB" => 1 << 30,
        "T" | "TB" => 1_000_000_000_000,
        "Ti" | "TiB" => 1 << 40,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use B, KB, KiB, MB, MiB, GB, GiB, TB, TiB)"
            ));
        }
    };
    let bytes = num * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_file;

    pub(crate) fn manifest(yaml: &str) -> Manifest {
        parse_file("env/dev/buckets.yaml", yaml.as_bytes())
            .unwrap()
            .remove(0)
    }

    fn errors(yaml: &str) -> Vec<String> {
        parse_bucket(&manifest(yaml))
            .unwrap_err()
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }

    const FULL: &str = r#"
apiVersion: gitopsd.dev/v1alpha1
kind: Bucket
metadata: { name: static-assets }
spec:
  name: acme-dev-static-assets
  region: us-east-1
  versioning: Enabled
  encryption: { type: SSE-KMS, kmsKeyId: "arn:aws:kms:us-east-1:111122223333:key/abc", bucketKeyEnabled: true }
  lifecycle:
    - id: z-last
      filter: { prefix: tmp/ }
      expirationDays: 1
    - id: archive-logs
      prefix: logs/
      tags: { tier: cold }
      transitions: [ { days: 90, storageClass: GLACIER }, { days: 30, storageClass: STANDARD_IA } ]
      expirationDays: 365
      noncurrentVersionExpirationDays: 30
  publicAccessBlock: { blockPublicAcls: true, restrictPublicBuckets: false }
  policy: '{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":["s3:GetObject"],"Resource":"arn:aws:s3:::acme-dev-static-assets/*"}}'
  tags: { team: web, cost: 42 }
  cors: [ { allowedOrigins: ["https://example.com"], allowedMethods: [PUT, GET], allowedHeaders: ["*"], exposeHeaders: [ETag], maxAgeSeconds: 3000 } ]
  deletionPolicy: Delete
  objects:
    source: assets/dev/
    prefix: static
    delete: true
    cacheControl: "public, max-age=300"
    contentTypes: { webmanifest: "application/manifest+json" }
    maxFileSize: 100MiB
"#;

    #[test]
    fn parses_the_full_schema() {
        let spec = parse_bucket(&manifest(FULL)).unwrap();
        assert_eq!(spec.id, "static-assets");
        assert_eq!(spec.name, "acme-dev-static-assets");
        assert_eq!(spec.region.as_deref(), Some("us-east-1"));
        let cfg = &spec.config;
        assert_eq!(cfg.versioning, Some(VersioningStatus::Enabled));
        let enc = cfg.encryption.clone().unwrap().unwrap();
        assert_eq!(enc.sse_type, SseType::SseKms);
        assert!(enc.bucket_key_enabled);
        let rules = cfg.lifecycle.as_ref().unwrap();
        assert_eq!(rules[0].id, "archive-logs", "sorted by id");
        assert_eq!(rules[0].transitions[0].days, 30, "sorted by days");
        assert_eq!(rules[1].prefix.as_deref(), Some("tmp/"));
        assert_eq!(
            cfg.public_access_block,
            Some(PublicAccessBlock {
                restrict_public_buckets: false,
                ..PublicAccessBlock::ALL_TRUE
            })
        );
        assert!(spec.public_access_block_explicit);
        let policy = cfg.policy.clone().unwrap().unwrap();
        assert!(policy["Statement"].is_array());
        assert_eq!(
            policy["Statement"][0]["Principal"]["AWS"],
            "arn:aws:iam::111122223333:root"
        );
        assert_eq!(cfg.tags.as_ref().unwrap()["cost"], "42");
        assert_eq!(
            cfg.cors.as_ref().unwrap()[0].allowed_methods,
            vec!["GET", "PUT"]
        );
        assert_eq!(spec.deletion_policy, DeletionPolicy::Delete);
        let objects = spec.objects.unwrap();
        assert_eq!(objects.source, "assets/dev");
        assert_eq!(objects.prefix, "static/");
        assert_eq!(
            objects.content_types[".webmanifest"],
            "application/manifest+json"
        );
        assert_eq!(objects.max_file_size, 100 << 20);
    }

    #[test]
    fn minimal_spec_manages_only_the_public_access_block() {
        let spec = parse_bucket(&manifest(
            "apiVersion: gitopsd.dev/v1alpha1\nkind: Bucket\nmetadata: {name: a}\nspec: {name: my-bucket}\n",
        ))
        .unwrap();
        assert_eq!(spec.config.fields(), vec![Field::PublicAccessBlock]);
        assert_eq!(
            spec.config.public_access_block,
            Some(PublicAccessBlock::ALL_TRUE)
        );
        assert!(!spec.public_access_block_explicit);
        assert_eq!(spec.deletion_policy, DeletionPolicy::Retain);
        assert!(spec.objects.is_none());
    }

    #[test]
    fn policy_as_mapping_equals_policy_as_json_string() {
        let a = parse_bucket(&manifest(
            "apiVersion: gitopsd.dev/v1alpha1\nkind: Bucket\nmetadata: {name: a}\nspec:\n  name: my-bucket\n  policy:\n    Version: '2012-10-17'\n    Statement:\n      - Effect: Deny\n        Principal: '*'\n        Action: [s3:PutObject, s3:DeleteObject]\n        Resource: arn:aws:s3:::my-bucket/*\n",
        ))
        .unwrap();
        let b = parse_bucket(&manifest(
            "apiVersion: gitopsd.dev/v1alpha1\nkind: Bucket\nmetadata: {name: a}\nspec:\n  name: my-bucket\n  policy: '{\"Statement\": [{\"Resource\": [\"arn:aws:s3:::my-bucket/*\"], \"Action\": [\"s3:DeleteObject\", \"s3:PutObject\"], \"Principal\": \"*\", \"Effect\": \"Deny\"}], \"Version\": \"2012-10-17\"}'\n",
        ))
        .unwrap();
        assert_eq!(a.config.policy, b.config.policy);
    }

    #[test]
    fn bucket_names_follow_aws_rules() {
        for ok in [
            "abc",
            "my-bucket.example",
            "a1b2c3",
            "acme-dev-static-assets",
        ] {
            assert!(validate_bucket_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "Abc",
            "-abc",
            "abc-",
            "a..b",
            "192.168.5.4",
            "xn--abc",
            "abc-s3alias",
            "a_b",
            &"a".repeat(64),
            "a.-b",
        ] {
            assert!(validate_bucket_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_fields_and_bad_values_are_all_reported_with_position() {
        let errs = errors(
            r#"
apiVersion: gitopsd.dev/v1alpha1
kind: Bucket
metadata: { name: bad }
spec:
  name: Bad_Name
  versioning: On
  versionning: Enabled
  encryption: { type: SSE-S3, kmsKeyId: x }
  lifecycle:
    - id: r
      prefix: a/
      filter: { prefix: b/ }
      transitions: [ { days: 10, storageClass: STANDARD_IA } ]
      expirationDays: 5
      bogus: 1
    - prefix: nothing/
  publicAccessBlock: { blockPublicAcls: yes-please }
  policy: '{"Statement": '
  cors: [ { allowedOrigins: [], allowedMethods: [PATCH] } ]
  deletionPolicy: Destroy
  objects: { source: ../outside, prefix: a/../../b, maxFileSize: 9000TiB }
"#,
        );
        let all = errs.join("\n");
        for needle in [
            "env/dev/buckets.yaml:2: Bucket bad: spec.name: \"Bad_Name\" is not a valid S3 bucket name",
            "spec.versioning: must be Enabled or Suspended",
            "spec.versionning: unknown field",
            "spec.encryption.kmsKeyId: only valid with type SSE-KMS",
            "spec.lifecycle[0].bogus: unknown field",
            "spec.lifecycle[0].filter: use either filter or prefix/tags",
            "spec.lifecycle[0].transitions[0].days: STANDARD_IA needs at least 30 days",
            "spec.lifecycle[0].expirationDays: 5 must be later than the last transition",
            "spec.lifecycle[1].id: missing",
            "spec.lifecycle[1]: has no action",
            "spec.publicAccessBlock.blockPublicAcls: must be true or false",
            "spec.policy: is not valid JSON",
            "spec.cors[0].allowedOrigins: must list at least one origin",
            "spec.cors[0].allowedMethods: \"PATCH\" is not one of",
            "spec.deletionPolicy: must be Retain or Delete",
            "spec.objects.source: \"../outside\" must stay inside the repository",
            "spec.objects.prefix: \"a/../../b\" has a . or .. segment",
            "spec.objects.maxFileSize: ",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn prefix_escapes_are_rejected() {
        for prefix in ["/abs", "a//b", "a\\b", "../x", "./x"] {
            assert!(normalise_prefix(prefix).is_err(), "{prefix}");
        }
        assert_eq!(normalise_prefix("static").unwrap(), "static/");
        assert_eq!(normalise_prefix("").unwrap(), "");
        assert_eq!(normalise_source("./").unwrap(), "");
        assert!(normalise_source("/etc").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size(&Value::from("5GiB")).unwrap(), 5 << 30);
        assert_eq!(parse_size(&Value::from("1.5 KB")).unwrap(), 1500);
        assert_eq!(parse_size(&Value::from(42)).unwrap(), 42);
        assert!(parse_size(&Value::from("5 parsecs")).is_err());
    }
}
