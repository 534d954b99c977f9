//! `lifecycle`: rules that transition and expire objects (GetBucketLifecycleConfiguration /
//! PutBucketLifecycleConfiguration, DeleteBucketLifecycle). Rules are matched by id and kept sorted
//! by it; transitions are sorted by days. May call the S3 SDK (those calls), `crate::schema`,
//! `sections::sdk` and `sections::tags` (the tag rules of a filter).

mod parse;
mod sdk;

use std::collections::BTreeMap;

use aws_sdk_s3::Client;
use aws_sdk_s3::types as t;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::sdk::{Call, Got, classify};
use super::{Field, Section, WriteContext};
use crate::s3::error::S3Error;
use crate::schema::Checker;

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

/// The section's value: the rules sorted by id; empty = no lifecycle configuration.
pub struct LifecycleSection;

impl Section for LifecycleSection {
    type Value = Vec<LifecycleRule>;
    const FIELD: Field = Field::Lifecycle;
    const NAME: &'static str = "lifecycle";

    fn parse(value: &Value, c: &mut Checker) -> Option<Vec<LifecycleRule>> {
        parse::rules(value, c)
    }

    async fn read(client: &Client, bucket: &str) -> Result<Got<Vec<LifecycleRule>>, S3Error> {
        let got = classify(
            bucket,
            "GetBucketLifecycleConfiguration",
            &["NoSuchLifecycleConfiguration"],
            client
                .get_bucket_lifecycle_configuration()
                .bucket(bucket)
                .send()
                .await,
        )?;
        let got = got.map(|out| {
            let mut rules: Vec<LifecycleRule> =
                out.rules().iter().map(sdk::rule_from_sdk).collect();
            rules.sort_by(|a, b| a.id.cmp(&b.id));
            rules
        });
        Ok(got.absent_as(Vec::new()))
    }

    async fn write(
        client: &Client,
        bucket: &str,
        rules: &Vec<LifecycleRule>,
        ctx: &WriteContext<'_>,
    ) -> Result<u32, S3Error> {
        if rules.is_empty() {
            if ctx.new_bucket {
                return Ok(0);
            }
            let request = client.delete_bucket_lifecycle().bucket(bucket).send();
            return Call::new(bucket, Self::NAME, "DeleteBucketLifecycle")
                .send(request)
                .await;
        }
        let call = Call::new(bucket, Self::NAME, "PutBucketLifecycleConfiguration");
        let sdk_rules = rules
            .iter()
            .map(sdk::rule_to_sdk)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| call.build_err(e))?;
        let config = t::BucketLifecycleConfiguration::builder()
            .set_rules(Some(sdk_rules))
            .build()
            .map_err(|e| call.build_err(e))?;
        let request = client
            .put_bucket_lifecycle_configuration()
            .bucket(bucket)
            .lifecycle_configuration(config)
            .send();
        call.send(request).await
    }
}

#[cfg(test)]
mod tests;
