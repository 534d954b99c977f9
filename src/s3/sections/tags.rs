//! `tags`: the bucket's tag set (GetBucketTagging / PutBucketTagging, DeleteBucketTagging).
//!
//! The ownership tags (`s3::owner`) share the tag set: reads return the whole set (the caller takes
//! the ownership tags out), writes are given the whole set (the caller adds them), and a spec may
//! not set keys under the reserved prefix. May call the S3 SDK (those calls), `crate::schema`,
//! `sections::sdk` and `s3::owner` (the reserved prefix and the tag limit).

use std::collections::BTreeMap;

use aws_sdk_s3::Client;
use aws_sdk_s3::types as t;
use serde_json::Value;

use super::sdk::{Call, Got, classify};
use super::{Field, Section, WriteContext};
use crate::s3::error::S3Error;
use crate::s3::owner::{MAX_SPEC_TAGS, RESERVED_TAG_PREFIX};
use crate::schema::Checker;

/// The section's value: key → value; empty = no tags.
pub struct TagsSection;

impl Section for TagsSection {
    type Value = BTreeMap<String, String>;
    const FIELD: Field = Field::Tags;
    const NAME: &'static str = "tags";

    fn parse(value: &Value, c: &mut Checker) -> Option<BTreeMap<String, String>> {
        let tags = c.string_map(value)?;
        validate_tags(&tags, MAX_SPEC_TAGS, c);
        reject_ownership_tags(&tags, c);
        Some(tags)
    }

    async fn read(client: &Client, bucket: &str) -> Result<Got<BTreeMap<String, String>>, S3Error> {
        let got = classify(
            bucket,
            "GetBucketTagging",
            &["NoSuchTagSet", "NoSuchTagSetError"],
            client.get_bucket_tagging().bucket(bucket).send().await,
        )?;
        let got = got.map(|out| {
            out.tag_set()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect()
        });
        Ok(got.absent_as(BTreeMap::new()))
    }

    async fn write(
        client: &Client,
        bucket: &str,
        tags: &BTreeMap<String, String>,
        ctx: &WriteContext<'_>,
    ) -> Result<u32, S3Error> {
        if tags.is_empty() {
            if ctx.new_bucket {
                return Ok(0);
            }
            let request = client.delete_bucket_tagging().bucket(bucket).send();
            return Call::new(bucket, Self::NAME, "DeleteBucketTagging")
                .send(request)
                .await;
        }
        let call = Call::new(bucket, Self::NAME, "PutBucketTagging");
        let set = tags
            .iter()
            .map(|(k, v)| t::Tag::builder().key(k).value(v).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| call.build_err(e))?;
        let tagging = t::Tagging::builder()
            .set_tag_set(Some(set))
            .build()
            .map_err(|e| call.build_err(e))?;
        let request = client
            .put_bucket_tagging()
            .bucket(bucket)
            .tagging(tagging)
            .send();
        call.send(request).await
    }
}

/// The bucket's whole tag set; `None` when the server does not implement bucket tagging.
pub async fn read_tag_set(
    client: &Client,
    bucket: &str,
) -> Result<Option<BTreeMap<String, String>>, S3Error> {
    Ok(match TagsSection::read(client, bucket).await? {
        Got::Value(tags) => Some(tags),
        Got::Absent => Some(BTreeMap::new()),
        Got::Unsupported => None,
    })
}

/// S3's limits on a tag set (bucket tags, lifecycle filter tags); the checker is at the set.
pub(crate) fn validate_tags(tags: &BTreeMap<String, String>, max: usize, c: &mut Checker) {
    if tags.len() > max {
        c.problem(format!("at most {max} tags, found {}", tags.len()));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 128 {
            c.problem_at(k, "tag keys must be 1 to 128 characters");
        }
        if v.chars().count() > 256 {
            c.problem_at(k, "tag values must be at most 256 characters");
        }
        if k.to_ascii_lowercase().starts_with("aws:") {
            c.problem_at(k, "the aws: prefix is reserved");
        }
    }
}

/// The `gitopsd.dev/` tag keys are gitopsd's ownership marks (see `s3::owner`): a spec setting
/// them could hand a bucket to another instance or environment, so it may not.
fn reject_ownership_tags(tags: &BTreeMap<String, String>, c: &mut Checker) {
    for k in tags.keys() {
        if k.to_ascii_lowercase().starts_with(RESERVED_TAG_PREFIX) {
            c.problem_at(
                k,
                format!(
                    "the {RESERVED_TAG_PREFIX} prefix is reserved for gitopsd's ownership tags, which it sets itself"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::sections::parsed;
    use serde_json::json;

    fn parse(v: Value) -> (Option<BTreeMap<String, String>>, Vec<String>) {
        parsed::<TagsSection>(&v)
    }

    #[test]
    fn numbers_and_booleans_are_tag_text() {
        let (tags, problems) = parse(json!({"team": "web", "cost": 42, "on": true}));
        assert!(problems.is_empty(), "{problems:?}");
        let tags = tags.unwrap();
        assert_eq!(tags["cost"], "42");
        assert_eq!(tags["on"], "true");
    }

    #[test]
    fn reserved_prefixes_and_limits_are_reported() {
        let long = "v".repeat(257);
        let (_, problems) = parse(json!({
            "aws:x": "1", "gitopsd.dev/instance": "other", "k": long, "list": [1]
        }));
        assert_eq!(
            problems,
            vec![
                "spec.tags.list: must be a string",
                "spec.tags.aws:x: the aws: prefix is reserved",
                "spec.tags.k: tag values must be at most 256 characters",
                "spec.tags.gitopsd.dev/instance: the gitopsd.dev/ prefix is reserved for gitopsd's ownership tags, which it sets itself",
            ]
        );
        let many: serde_json::Map<String, Value> = (0..=MAX_SPEC_TAGS)
            .map(|i| (format!("k{i}"), json!("v")))
            .collect();
        let (_, problems) = parse(Value::Object(many));
        assert_eq!(problems, vec!["spec.tags: at most 48 tags, found 49"]);
    }

    #[test]
    fn compares_whole_tag_sets() {
        let a = BTreeMap::from([("team".to_string(), "web".to_string())]);
        let mut b = a.clone();
        assert!(TagsSection::same(&a, &b));
        b.insert("extra".into(), "x".into());
        assert!(!TagsSection::same(&a, &b));
        assert_eq!(TagsSection::to_json(&a), json!({"team": "web"}));
    }
}
