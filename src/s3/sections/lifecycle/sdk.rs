//! Lifecycle rules to and from the SDK's types. Settings a live rule has that the spec cannot
//! express are kept in [`LifecycleRule::unsupported`], so such a rule never equals a desired one.
//! Pure; may call only the SDK's types.

use std::collections::BTreeMap;

use aws_sdk_s3::types as t;

use super::{LifecycleRule, RuleStatus, Transition};

/// The prefix, tags and unsupported filter settings of a live rule.
#[derive(Default)]
struct Filter {
    prefix: Option<String>,
    tags: BTreeMap<String, String>,
    unsupported: BTreeMap<String, String>,
}

impl Filter {
    fn object_sizes(&mut self, greater: Option<i64>, less: Option<i64>) {
        if let Some(n) = greater {
            self.unsupported
                .insert("objectSizeGreaterThan".into(), n.to_string());
        }
        if let Some(n) = less {
            self.unsupported
                .insert("objectSizeLessThan".into(), n.to_string());
        }
    }
}

#[allow(deprecated)] // `LifecycleRule::prefix`: old rules still carry it.
fn filter_from_sdk(r: &t::LifecycleRule) -> Filter {
    let mut out = Filter {
        prefix: r.prefix().map(str::to_string),
        ..Filter::default()
    };
    if let Some(f) = r.filter() {
        if let Some(p) = f.prefix() {
            out.prefix = Some(p.to_string());
        }
        if let Some(tag) = f.tag() {
            out.tags
                .insert(tag.key().to_string(), tag.value().to_string());
        }
        if let Some(and) = f.and() {
            if let Some(p) = and.prefix() {
                out.prefix = Some(p.to_string());
            }
            for tag in and.tags() {
                out.tags
                    .insert(tag.key().to_string(), tag.value().to_string());
            }
            out.object_sizes(and.object_size_greater_than(), and.object_size_less_than());
        }
        out.object_sizes(f.object_size_greater_than(), f.object_size_less_than());
    }
    if out.prefix.as_deref() == Some("") {
        out.prefix = None;
    }
    out
}

/// A live rule in the spec's terms.
pub(super) fn rule_from_sdk(r: &t::LifecycleRule) -> LifecycleRule {
    let Filter {
        prefix,
        tags,
        mut unsupported,
    } = filter_from_sdk(r);
    let mut transitions = Vec::new();
    for tr in r.transitions() {
        match (tr.days(), tr.storage_class()) {
            (Some(days), Some(class)) => transitions.push(Transition {
                days,
                storage_class: class.as_str().to_string(),
            }),
            _ => {
                unsupported.insert("transitionByDate".into(), format!("{:?}", tr.date()));
            }
        }
    }
    transitions.sort();
    let mut expiration_days = None;
    if let Some(exp) = r.expiration() {
        expiration_days = exp.days();
        if let Some(d) = exp.date() {
            unsupported.insert("expirationDate".into(), d.to_string());
        }
        if exp.expired_object_delete_marker() == Some(true) {
            unsupported.insert("expiredObjectDeleteMarker".into(), "true".into());
        }
    }
    let noncurrent_version_expiration_days = r.noncurrent_version_expiration().and_then(|n| {
        if let Some(k) = n.newer_noncurrent_versions() {
            unsupported.insert("newerNoncurrentVersions".into(), k.to_string());
        }
        n.noncurrent_days()
    });
    if !r.noncurrent_version_transitions().is_empty() {
        unsupported.insert(
            "noncurrentVersionTransitions".into(),
            r.noncurrent_version_transitions().len().to_string(),
        );
    }
    LifecycleRule {
        id: r.id().unwrap_or_default().to_string(),
        prefix,
        tags,
        status: if r.status() == &t::ExpirationStatus::Enabled {
            RuleStatus::Enabled
        } else {
            RuleStatus::Disabled
        },
        transitions,
        expiration_days,
        noncurrent_version_expiration_days,
        abort_incomplete_multipart_upload_days: r
            .abort_incomplete_multipart_upload()
            .and_then(|a| a.days_after_initiation()),
        unsupported,
    }
}

/// A desired rule as the SDK's type.
pub(super) fn rule_to_sdk(
    r: &LifecycleRule,
) -> Result<t::LifecycleRule, aws_sdk_s3::error::BuildError> {
    let prefix = r.prefix.clone().unwrap_or_default();
    let mut tags = Vec::with_capacity(r.tags.len());
    for (k, v) in &r.tags {
        tags.push(t::Tag::builder().key(k).value(v).build()?);
    }
    let filter = match (r.tags.len(), r.prefix.is_some()) {
        (0, _) => t::LifecycleRuleFilter::builder().prefix(prefix).build(),
        (1, false) => t::LifecycleRuleFilter::builder()
            .set_tag(tags.pop())
            .build(),
        _ => t::LifecycleRuleFilter::builder()
            .and(
                t::LifecycleRuleAndOperator::builder()
                    .set_prefix(r.prefix.clone())
                    .set_tags(Some(tags))
                    .build(),
            )
            .build(),
    };
    let mut b = t::LifecycleRule::builder()
        .id(&r.id)
        .filter(filter)
        .status(match r.status {
            RuleStatus::Enabled => t::ExpirationStatus::Enabled,
            RuleStatus::Disabled => t::ExpirationStatus::Disabled,
        });
    for tr in &r.transitions {
        b = b.transitions(
            t::Transition::builder()
                .days(tr.days)
                .storage_class(t::TransitionStorageClass::from(tr.storage_class.as_str()))
                .build(),
        );
    }
    if let Some(d) = r.expiration_days {
        b = b.expiration(t::LifecycleExpiration::builder().days(d).build());
    }
    if let Some(d) = r.noncurrent_version_expiration_days {
        b = b.noncurrent_version_expiration(
            t::NoncurrentVersionExpiration::builder()
                .noncurrent_days(d)
                .build(),
        );
    }
    if let Some(d) = r.abort_incomplete_multipart_upload_days {
        b = b.abort_incomplete_multipart_upload(
            t::AbortIncompleteMultipartUpload::builder()
                .days_after_initiation(d)
                .build(),
        );
    }
    b.build()
}
