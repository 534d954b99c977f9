//! Reading the live bucket: HeadBucket, then one Get* call per managed section (run side by side,
//! each through its section in `s3::sections`), with the ownership tags taken out of the tag set.
//! May call the S3 SDK (HeadBucket), `s3::sections` (the Get* calls) and `s3::owner`.

use std::collections::BTreeMap;

use aws_sdk_s3::Client;

use super::error::{S3Error, is_no_such_bucket};
use super::sections::{BucketConfig, Field, Got, tags::TagsSection};
use super::{BucketSpec, owner, regional};

/// What the Get* calls returned for an existing bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveBucket {
    pub name: String,
    /// Region reported by HeadBucket (`x-amz-bucket-region`), when the server sends it.
    pub region: Option<String>,
    /// The fields that were read (the ones the spec manages).
    pub config: BucketConfig,
    /// Fields the server does not implement (HTTP 501 / `NotImplemented`).
    pub unsupported: Vec<Field>,
    /// gitopsd's ownership tags on the bucket (kept out of `config`'s tags); `None` when the
    /// server does not implement bucket tagging.
    pub ownership: Option<BTreeMap<String, String>>,
}

/// Reads the live bucket: `None` when it does not exist. Only the fields the spec manages are read,
/// plus the tag set, which carries the ownership tags (kept apart in [`LiveBucket::ownership`]).
pub async fn read_live(client: &Client, spec: &BucketSpec) -> Result<Option<LiveBucket>, S3Error> {
    let client = regional(client, spec);
    let Some(region) = head_bucket(&client, &spec.name).await? else {
        return Ok(None);
    };
    let mut wanted = spec.config.fields();
    if !wanted.contains(&Field::Tags) {
        wanted.push(Field::Tags);
    }
    let (mut config, mut unsupported) = read_config(&client, &spec.name, &wanted).await?;
    let ownership = config
        .get_mut::<TagsSection>()
        .map(owner::take_ownership_tags);
    if !spec.config.has(Field::Tags) {
        config.remove(Field::Tags);
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

/// HeadBucket: `None` when the bucket does not exist, else the region the server reports.
pub(crate) async fn head_bucket(
    client: &Client,
    bucket: &str,
) -> Result<Option<Option<String>>, S3Error> {
    match client.head_bucket().bucket(bucket).send().await {
        Ok(out) => Ok(Some(out.bucket_region().map(str::to_string))),
        Err(e) if is_no_such_bucket(&e) => Ok(None),
        Err(e) => Err(S3Error::from_sdk(bucket, "HeadBucket", None, &e)),
    }
}

/// Reads the `fields` of an existing bucket, side by side; returns what was read and which
/// fields the server does not implement.
pub(crate) async fn read_config(
    client: &Client,
    bucket: &str,
    fields: &[Field],
) -> Result<(BucketConfig, Vec<Field>), S3Error> {
    // Each read is boxed by its section: SDK futures are large, seven of them side by side
    // overflow small (test) stacks.
    let reads = fields.iter().map(|f| f.read(client, bucket));
    let results = futures::future::try_join_all(reads).await?;
    let mut config = BucketConfig::default();
    let mut unsupported = Vec::new();
    for (field, got) in fields.iter().zip(results) {
        match got {
            Got::Value(slot) => config.insert(*field, slot),
            Got::Unsupported => unsupported.push(*field),
            Got::Absent => {}
        }
    }
    Ok((config, unsupported))
}
