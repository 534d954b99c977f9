//! Ownership of buckets: the two tags gitopsd puts on every bucket it creates, and the checks that
//! keep it away from buckets it did not create (no silent adoption, no deletion of someone else's).
//!
//! The tags live beside the spec's own `tags`: merged into every tagging write, stripped from every
//! read, so they are never a difference and never removed by a tags update. May call the S3 SDK
//! (through `s3::sections::tags` and `s3::apply`'s CreateBucket) for a new bucket only.

use std::collections::BTreeMap;

use aws_sdk_s3::Client;

use super::sections::tags::TagsSection;
use super::sections::{Section, WriteContext, read_tag_set};
use super::{ApplyReport, BucketConfig, BucketSpec, Field, S3Error, apply};

/// Tag naming the gitopsd instance (host config `instance:`) that owns the bucket.
pub const INSTANCE_TAG: &str = "gitopsd.dev/instance";
/// Tag naming the environment that owns the bucket.
pub const ENVIRONMENT_TAG: &str = "gitopsd.dev/environment";
/// Tag keys under this prefix are gitopsd's: a spec may not set them.
pub const RESERVED_TAG_PREFIX: &str = "gitopsd.dev/";
/// Tags S3 allows on a bucket, and how many of them a spec may use (the rest are ownership tags).
pub const MAX_BUCKET_TAGS: usize = 50;
pub const MAX_SPEC_TAGS: usize = MAX_BUCKET_TAGS - 2;

/// Who owns a bucket: one environment of one gitopsd instance.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    pub instance: String,
    pub environment: String,
}

impl Owner {
    pub fn new(instance: impl Into<String>, environment: impl Into<String>) -> Owner {
        Owner {
            instance: instance.into(),
            environment: environment.into(),
        }
    }

    /// The ownership tags, as they are written.
    pub fn tags(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (INSTANCE_TAG.to_string(), self.instance.clone()),
            (ENVIRONMENT_TAG.to_string(), self.environment.clone()),
        ])
    }

    /// The full tag set to write: the spec's tags (if any) plus ours.
    pub fn merged(&self, spec_tags: Option<&BTreeMap<String, String>>) -> BTreeMap<String, String> {
        let mut tags = spec_tags.cloned().unwrap_or_default();
        tags.extend(self.tags());
        tags
    }

    /// Whether live ownership tags (see [`take_ownership_tags`]) name this owner. `None` (the
    /// server cannot tag) proves nothing, so it is not ours.
    pub fn owns(&self, ownership: Option<&BTreeMap<String, String>>) -> bool {
        ownership.is_some_and(|t| {
            t.get(INSTANCE_TAG) == Some(&self.instance)
                && t.get(ENVIRONMENT_TAG) == Some(&self.environment)
        })
    }

    /// `Ok` when the existing bucket is ours, else the permanent [`S3Error::NotOwned`].
    pub(crate) fn check(
        &self,
        bucket: &str,
        ownership: Option<&BTreeMap<String, String>>,
    ) -> Result<(), S3Error> {
        if self.owns(ownership) {
            return Ok(());
        }
        Err(S3Error::NotOwned {
            bucket: bucket.to_string(),
            instance: self.instance.clone(),
            environment: self.environment.clone(),
            found: describe(ownership),
        })
    }
}

/// Creates the bucket and tags it as `owner`'s (with the spec's tags) before anything else.
/// Returns whether the bucket is new; a bucket that appeared since the plan must be ours.
pub(super) async fn create_owned(
    client: &Client,
    rclient: &Client,
    spec: &BucketSpec,
    owner: &Owner,
    report: &mut ApplyReport,
) -> Result<bool, S3Error> {
    let bucket = spec.name.as_str();
    if !apply::create_bucket(rclient, bucket, &super::effective_region(client, spec)).await? {
        let mut tags = read_tag_set(rclient, bucket).await?;
        let ownership = tags.as_mut().map(take_ownership_tags);
        owner.check(bucket, ownership.as_ref())?;
        return Ok(false);
    }
    report.write_calls += 1;
    report.created = true;
    let tags = owner.merged(spec.config.get::<TagsSection>());
    let ctx = WriteContext {
        desired: &BucketConfig::default(),
        new_bucket: true,
    };
    if let Err(e) = TagsSection::write(rclient, bucket, &tags, &ctx).await {
        // An untagged bucket would not be ours on the next attempt: remove the empty new bucket so
        // a retry starts from scratch.
        match rclient.delete_bucket().bucket(bucket).send().await {
            Ok(_) => {
                tracing::warn!(bucket, error = %e, "tagging the new bucket failed; deleted it again")
            }
            Err(d) => {
                let d = S3Error::from_sdk(bucket, "DeleteBucket", None, &d);
                tracing::error!(bucket, error = %e, delete_error = %d, "tagging the new bucket failed and deleting it failed: it is not marked as gitopsd's");
            }
        }
        return Err(e);
    }
    report.write_calls += 1;
    if spec.config.has(Field::Tags) {
        report.fields.push(Field::Tags.name().to_string());
    }
    Ok(true)
}

/// Removes the ownership tags from a live tag set and returns them (only the two exact keys: any
/// other `gitopsd.dev/` tag stays visible, so it shows as a difference rather than vanishing).
pub(crate) fn take_ownership_tags(tags: &mut BTreeMap<String, String>) -> BTreeMap<String, String> {
    [INSTANCE_TAG, ENVIRONMENT_TAG]
        .into_iter()
        .filter_map(|k| tags.remove_entry(k))
        .collect()
}

/// What the live bucket carries instead of our tags, for the error message.
fn describe(ownership: Option<&BTreeMap<String, String>>) -> String {
    match ownership {
        None => "the server does not implement bucket tagging, so ownership cannot be verified"
            .to_string(),
        Some(t) if t.is_empty() => "it carries no gitopsd ownership tags".to_string(),
        Some(t) => {
            let found: Vec<String> = t.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("it carries {}", found.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn merged_adds_ownership_to_spec_tags() {
        let o = Owner::new("gitopsd", "dev");
        let spec = map(&[("team", "web")]);
        assert_eq!(
            o.merged(Some(&spec)),
            map(&[
                ("team", "web"),
                (INSTANCE_TAG, "gitopsd"),
                (ENVIRONMENT_TAG, "dev")
            ])
        );
        assert_eq!(o.merged(None), o.tags());
    }

    #[test]
    fn take_strips_only_the_two_ownership_keys() {
        let mut live = map(&[
            ("team", "web"),
            (INSTANCE_TAG, "gitopsd"),
            (ENVIRONMENT_TAG, "dev"),
            ("gitopsd.dev/other", "x"),
        ]);
        let ours = take_ownership_tags(&mut live);
        assert_eq!(ours, Owner::new("gitopsd", "dev").tags());
        assert_eq!(live, map(&[("team", "web"), ("gitopsd.dev/other", "x")]));
    }

    #[test]
    fn owns_needs_both_tags_with_our_values() {
        let o = Owner::new("gitopsd", "dev");
        assert!(o.owns(Some(&o.tags())));
        assert!(!o.owns(None));
        assert!(!o.owns(Some(&BTreeMap::new())));
        assert!(!o.owns(Some(&map(&[(ENVIRONMENT_TAG, "dev")]))));
        assert!(!o.owns(Some(&Owner::new("other", "dev").tags())));
        assert!(!o.owns(Some(&Owner::new("gitopsd", "prod").tags())));
    }

    #[test]
    fn not_owned_error_names_bucket_and_tags_to_add() {
        let o = Owner::new("gitopsd", "dev");
        let e = o
            .check("assets", Some(&Owner::new("other", "dev").tags()))
            .unwrap_err();
        assert!(!e.is_transient());
        assert_eq!(e.bucket(), "assets");
        let msg = e.to_string();
        for part in [
            "bucket assets",
            "gitopsd.dev/instance=other",
            "gitopsd.dev/instance=gitopsd",
            "gitopsd.dev/environment=dev",
        ] {
            assert!(msg.contains(part), "{part}: {msg}");
        }
        let msg = o.check("assets", Some(&BTreeMap::new())).unwrap_err();
        assert!(
            msg.to_string().contains("no gitopsd ownership tags"),
            "{msg}"
        );
        assert!(o.check("assets", Some(&o.tags())).is_ok());
    }

    fn parse(tags: &str) -> Result<BucketSpec, Vec<String>> {
        let yaml = format!(
            "apiVersion: gitopsd.dev/v1alpha1\nkind: Bucket\nmetadata: {{name: b}}\nspec:\n  name: my-bucket\n  tags: {tags}\n"
        );
        let m = crate::manifest::parse_file("env/dev/b.yaml", yaml.as_bytes())
            .unwrap()
            .remove(0);
        super::super::parse_bucket(&m).map_err(|e| e.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn a_spec_may_not_set_ownership_tags() {
        for key in [INSTANCE_TAG, ENVIRONMENT_TAG, "Gitopsd.Dev/anything"] {
            let errs = parse(&format!("{{team: web, {key}: x}}")).unwrap_err();
            let all = errs.join("\n");
            assert!(
                all.contains(&format!(
                    "Bucket b: spec.tags.{key}: the gitopsd.dev/ prefix is reserved"
                )),
                "{all}"
            );
        }
        assert!(parse("{team: web, gitopsd-dev/x: y}").is_ok());
        let too_many: Vec<String> = (0..=MAX_SPEC_TAGS).map(|i| format!("k{i}: v")).collect();
        let errs = parse(&format!("{{{}}}", too_many.join(", "))).unwrap_err();
        assert!(errs.join("\n").contains("at most 48 tags"), "{errs:?}");
    }
}
