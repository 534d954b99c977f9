//! S3 buckets as code: the `Bucket` kind (apiVersion `gitopsd.dev/v1alpha1`).
//!
//! Owns everything S3: the spec, the live state, plans, writes, health and ownership of buckets.
//! May call the AWS SDK, `crate::manifest` (the manifests a spec is parsed from), `crate::schema`
//! (validation) and `crate::plan` (YAML text of diffs); never Kubernetes or git. The flow:
//!
//! - [`parse_bucket`] ([`spec`]) validates a manifest into a [`BucketSpec`] (pure); each
//!   configuration section is parsed by its own file in [`sections`].
//! - [`plan_bucket`] ([`plan`]) reads the live bucket ([`read_live`]: Get* calls, ListObjectsV2 for
//!   object sync; never a write) and compares normalised forms into a [`BucketPlan`].
//! - [`apply_bucket`] ([`apply`]) makes exactly the writes the plan lists: a no-op plan makes no
//!   call at all. Object uploads and deletes are [`sync`].
//! - [`delete_bucket`] honours `deletionPolicy`; [`check_health`] reads back and compares.
//! - Ownership ([`owner`]): buckets gitopsd creates carry two tags naming the [`Owner`]; an existing
//!   bucket without them is never adopted, changed or deleted.
//! - [`diff_specs`] compares two specs without touching S3 (previews).
//!
//! Retries: the SDK client built by [`client`] retries throttling, 5xx and timeouts itself
//! (standard mode, exponential backoff with jitter, 5 attempts); errors that still come out say
//! through [`S3Error::is_transient`] whether a later attempt may succeed.

pub mod apply;
mod client;
mod compare;
pub mod error;
mod live;
pub mod owner;
pub mod plan;
pub mod sections;
pub mod spec;
pub mod sync;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::Region;

pub use apply::{ApplyReport, DeleteOutcome, apply_bucket, delete_bucket};
pub use client::{RequestLog, S3Settings, client, client_with_log};
pub use compare::{check_health, diff_specs};
pub use error::S3Error;
pub use live::{LiveBucket, read_live};
pub use owner::Owner;
pub use plan::{BucketAction, BucketPlan, FieldChange, PlanOptions, plan_bucket, plan_bucket_with};
pub use sections::cors::CorsRule;
pub use sections::encryption::{Encryption, SseType};
pub use sections::lifecycle::{LifecycleRule, RuleStatus, Transition};
pub use sections::public_access_block::PublicAccessBlock;
pub use sections::versioning::VersioningStatus;
pub use sections::{BucketConfig, Field, Section};
pub use spec::{BucketSpec, DeletionPolicy, ObjectSync, parse_bucket, validate_bucket_name};
pub use sync::{
    MemorySource, ObjectPlan, ObjectSource, SHA256_METADATA, SourceFile, content_type, object_key,
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

/// S3 reports us-east-1 as an empty location in some places and `EU` for eu-west-1 in old ones.
fn region_matches(live: &str, want: &str) -> bool {
    let norm = |r: &str| match r {
        "" | "US" => "us-east-1".to_string(),
        "EU" => "eu-west-1".to_string(),
        other => other.to_string(),
    };
    norm(live) == norm(want)
}

#[cfg(test)]
mod tests;
