//! Unit tests of the section list and of [`BucketConfig`] (no S3 server).
use super::*;
use crate::s3::{PublicAccessBlock, VersioningStatus};
use serde_json::json;
use std::collections::BTreeMap;
use tags::TagsSection;
use versioning::VersioningSection;

#[test]
fn every_field_dispatches_to_its_own_section() {
    let mut names = std::collections::BTreeSet::new();
    for f in Field::ALL {
        assert_eq!(
            f.section().field(),
            f,
            "{f:?} is registered with another section"
        );
        assert_eq!(Field::from_name(f.name()), Some(f), "{f:?}");
        assert!(names.insert(f.name()), "duplicate name {}", f.name());
    }
    assert_eq!(Field::ALL[0], Field::PublicAccessBlock, "applied first");
    assert_eq!(
        Field::names().collect::<Vec<_>>(),
        vec![
            "publicAccessBlock",
            "versioning",
            "encryption",
            "lifecycle",
            "policy",
            "tags",
            "cors"
        ]
    );
}

#[test]
fn only_the_public_access_block_has_a_default() {
    let defaulted: Vec<Field> = Field::ALL
        .into_iter()
        .filter(|f| f.default_value().is_some())
        .collect();
    assert_eq!(defaulted, vec![Field::PublicAccessBlock]);
    assert_eq!(
        Field::PublicAccessBlock.default_text(),
        "the default (all true)"
    );
}

#[test]
fn parse_puts_the_checker_at_the_section_key() {
    let mut c = Checker::new();
    let slot = c.at("spec", |c| Field::Versioning.parse(&json!("Sometimes"), c));
    assert!(slot.is_none());
    let problems = c.into_problems();
    assert_eq!(problems[0].key, "spec.versioning");
}

#[test]
fn config_typed_access_compare_and_copy() {
    let tags = BTreeMap::from([("team".to_string(), "web".to_string())]);
    let a = BucketConfig::default()
        .with::<VersioningSection>(VersioningStatus::Enabled)
        .with::<TagsSection>(tags.clone());
    assert_eq!(a.fields(), vec![Field::Versioning, Field::Tags]);
    assert_eq!(a.get::<TagsSection>(), Some(&tags));
    assert_eq!(
        a.to_value(),
        json!({"versioning": "Enabled", "tags": {"team": "web"}})
    );

    let mut b = BucketConfig::default().with::<VersioningSection>(VersioningStatus::Suspended);
    assert!(!a.same(&b, Field::Versioning));
    assert!(!a.same(&b, Field::Tags), "managed on one side only");
    assert!(a.same(&b, Field::Cors), "managed on neither side");
    b.copy_field(&a, Field::Versioning);
    b.copy_field(&a, Field::Tags);
    assert_eq!(a, b);
    b.copy_field(&BucketConfig::default(), Field::Tags);
    assert!(!b.has(Field::Tags));

    if let Some(t) = b.get_mut::<VersioningSection>() {
        *t = VersioningStatus::Off;
    }
    assert_eq!(b.field_value(Field::Versioning), Some(json!("Off")));
    b.remove(Field::Versioning);
    assert_eq!(b, BucketConfig::default());
    assert_eq!(
        format!("{a:?}"),
        "{\"versioning\": Enabled, \"tags\": {\"team\": \"web\"}}"
    );
}

#[test]
fn slots_of_different_sections_never_compare_equal() {
    let pab =
        Slot::new::<public_access_block::PublicAccessBlockSection>(PublicAccessBlock::ALL_TRUE);
    let versioning = Slot::new::<VersioningSection>(VersioningStatus::Enabled);
    assert_ne!(pab, versioning);
    assert_eq!(pab, pab.clone());
    assert!(versioning.get::<TagsSection>().is_none());
}
