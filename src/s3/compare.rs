//! Comparing buckets with their specs: the read-back health check, and the pure diff of two
//! specs (previews). May call `s3::live` (health reads) and `crate::plan` (YAML text).

use aws_sdk_s3::Client;

use super::plan::FieldChange;
use super::{
    BucketConfig, BucketSpec, Field, Owner, S3Error, effective_region, owner, read_live,
    region_matches,
};
use crate::plan::to_yaml;

/// A bucket configuration as YAML (plan diffs).
pub(super) fn config_yaml(c: &BucketConfig) -> String {
    to_yaml(&c.to_value())
}

/// One configuration field as YAML, empty when the configuration does not set it.
pub(super) fn field_text(c: &BucketConfig, field: Field) -> String {
    c.field_value(field)
        .map(|v| to_yaml(&v).trim_end().to_string())
        .unwrap_or_default()
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
            if !spec.is_defaulted(field) {
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
