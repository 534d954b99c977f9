//! Parsing `spec.lifecycle`: the rules, each rule's filter, actions and transitions. Pure; may call
//! `crate::schema` and the tag rules of `sections::tags`.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{LifecycleRule, RuleStatus, Transition};
use crate::s3::sections::tags::validate_tags;
use crate::schema::Checker;

const RULE_FIELDS: &[&str] = &[
    "id",
    "prefix",
    "tags",
    "filter",
    "status",
    "transitions",
    "expirationDays",
    "noncurrentVersionExpirationDays",
    "abortIncompleteMultipartUploadDays",
];

const STORAGE_CLASSES: &[&str] = &[
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "GLACIER_IR",
    "DEEP_ARCHIVE",
];

const MAX_DAYS: i64 = 2_147_483_647;

/// The rules, sorted by id (the checker is at `spec.lifecycle`).
pub(super) fn rules(v: &Value, c: &mut Checker) -> Option<Vec<LifecycleRule>> {
    let Value::Array(items) = v else {
        c.problem("must be a list of rules");
        return None;
    };
    if items.len() > 1000 {
        c.problem("at most 1000 rules");
    }
    let mut rules: Vec<LifecycleRule> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        c.at_index(i, |c| {
            let rule = rule(item, c)?;
            if rules.iter().any(|r| r.id == rule.id) {
                c.problem(format!("duplicate rule id {:?}", rule.id));
            }
            rules.push(rule);
            Some(())
        });
    }
    rules.sort_by(|a, b| a.id.cmp(&b.id));
    Some(rules)
}

/// One rule (the checker is at `spec.lifecycle[i]`).
fn rule(v: &Value, c: &mut Checker) -> Option<LifecycleRule> {
    let map = c.mapping(v, RULE_FIELDS)?;
    let id = c.required(map, "id", " (rules are matched by id)", Checker::string);
    if let Some(id) = &id
        && (id.is_empty() || id.len() > 255)
    {
        c.problem_at("id", "must be 1 to 255 characters");
    }
    let (prefix, tags) = filter(map, c);
    let status = c
        .field(map, "status", |c, v| {
            c.one_of(
                v,
                &[
                    ("Enabled", RuleStatus::Enabled),
                    ("Disabled", RuleStatus::Disabled),
                ],
            )
        })
        .unwrap_or(RuleStatus::Enabled);
    let days = |c: &mut Checker, key: &str| c.field(map, key, |c, v| c.int(v, 1, MAX_DAYS));
    let mut rule = LifecycleRule {
        id: String::new(),
        prefix,
        tags,
        status,
        expiration_days: days(c, "expirationDays"),
        noncurrent_version_expiration_days: days(c, "noncurrentVersionExpirationDays"),
        abort_incomplete_multipart_upload_days: days(c, "abortIncompleteMultipartUploadDays"),
        transitions: c.field(map, "transitions", transitions).unwrap_or_default(),
        unsupported: BTreeMap::new(),
    };
    check_actions(&rule, c);
    rule.id = id?;
    Some(rule)
}

/// The rule's prefix and tags: on the rule itself, or in a `filter` (not both).
fn filter(map: &Map<String, Value>, c: &mut Checker) -> (Option<String>, BTreeMap<String, String>) {
    let mut prefix = c.field(map, "prefix", Checker::string);
    let mut tags = c
        .field(map, "tags", Checker::string_map)
        .unwrap_or_default();
    if let Some(filter) = map.get("filter") {
        if map.contains_key("prefix") || map.contains_key("tags") {
            c.problem_at(
                "filter",
                "use either filter or prefix/tags on the rule, not both",
            );
        }
        c.at("filter", |c| {
            if let Some(f) = c.mapping(filter, &["prefix", "tags"]) {
                prefix = c.field(f, "prefix", Checker::string);
                tags = c.field(f, "tags", Checker::string_map).unwrap_or_default();
            }
        });
    }
    if prefix.as_deref() == Some("") {
        prefix = None;
    }
    c.at("tags", |c| validate_tags(&tags, 10, c));
    (prefix, tags)
}

/// `transitions: [{days, storageClass}]`, sorted by days.
fn transitions(c: &mut Checker, v: &Value) -> Option<Vec<Transition>> {
    let Value::Array(items) = v else {
        c.problem("must be a list of {days, storageClass}");
        return None;
    };
    let mut out: Vec<Transition> = items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| c.at_index(i, |c| transition(item, c)))
        .collect();
    out.sort();
    Some(out)
}

fn transition(v: &Value, c: &mut Checker) -> Option<Transition> {
    let t = c.mapping(v, &["days", "storageClass"])?;
    let days = c.required(t, "days", "", |c, v| c.int(v, 0, MAX_DAYS));
    let class = c.required(t, "storageClass", "", Checker::string);
    if let Some(class) = &class
        && !STORAGE_CLASSES.contains(&class.as_str())
    {
        c.problem_at(
            "storageClass",
            format!("{class:?} is not one of {}", STORAGE_CLASSES.join(", ")),
        );
    }
    if let (Some(d), Some(class)) = (days, &class)
        && matches!(class.as_str(), "STANDARD_IA" | "ONEZONE_IA")
        && d < 30
    {
        c.problem_at("days", format!("{class} needs at least 30 days"));
    }
    Some(Transition {
        days: days?,
        storage_class: class?,
    })
}

/// Checks that go across a rule's actions.
fn check_actions(rule: &LifecycleRule, c: &mut Checker) {
    let last = rule.transitions.iter().map(|t| t.days).max();
    if let (Some(exp), Some(last)) = (rule.expiration_days, last)
        && exp <= last
    {
        c.problem_at(
            "expirationDays",
            format!("{exp} must be later than the last transition ({last} days)"),
        );
    }
    if rule.transitions.is_empty()
        && rule.expiration_days.is_none()
        && rule.noncurrent_version_expiration_days.is_none()
        && rule.abort_incomplete_multipart_upload_days.is_none()
    {
        c.problem(
            "has no action (transitions, expirationDays, noncurrentVersionExpirationDays or abortIncompleteMultipartUploadDays)",
        );
    }
    if rule.abort_incomplete_multipart_upload_days.is_some() && !rule.tags.is_empty() {
        c.problem_at(
            "abortIncompleteMultipartUploadDays",
            "cannot be used in a rule that filters on tags",
        );
    }
}
