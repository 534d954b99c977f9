//! The `Bucket` kind (apiVersion `gitopsd.dev/v1alpha1`): a manifest validated into a
//! [`BucketSpec`].
//!
//! Owns the spec's top level: identity, bucket name and region rules ([`name`]), the deletion
//! policy and `objects` ([`objects`]). Each configuration section is parsed by its own file in
//! `s3::sections`; every problem is collected by one `crate::schema::Checker` and reported with
//! file, line and object identity. Pure: may call `s3::sections` (parse only), `crate::schema`
//! and `crate::manifest`; never S3.
//!
//! Every configuration section is optional. An absent section is "not managed": gitopsd neither
//! reads nor writes it, unless the section has a secure default (`publicAccessBlock`: all four
//! settings `true`), which is then managed and listed in [`BucketSpec::defaulted`].

pub mod name;
pub mod objects;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::sections::{BucketConfig, Field};
use crate::manifest::{Manifest, RenderError, Source};
use crate::schema::Checker;

pub use name::validate_bucket_name;
pub use objects::{
    DEFAULT_MAX_FILE_SIZE, MAX_MULTIPART_SIZE, ObjectSync, PART_SIZE, check_key_segments,
    parse_size,
};

/// A parsed and validated `Bucket`.
#[derive(Clone, Debug, PartialEq, Serialize)]
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
    /// Sections the spec leaves out that are managed by their default (`publicAccessBlock`).
    pub defaulted: Vec<Field>,
    pub deletion_policy: DeletionPolicy,
    pub objects: Option<ObjectSync>,
}

impl BucketSpec {
    /// The object identity used in messages, e.g. `Bucket static-assets`.
    pub fn object_name(&self) -> String {
        format!("Bucket {}", self.id)
    }

    /// Whether `field` is managed only by its default (the spec does not write it).
    pub fn is_defaulted(&self, field: Field) -> bool {
        self.defaulted.contains(&field)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeletionPolicy {
    #[default]
    Retain,
    Delete,
}

/// Parses and validates a `Bucket` manifest. All problems are reported, each with the file, line
/// and object identity of the manifest.
pub fn parse_bucket(m: &Manifest) -> Result<BucketSpec, Vec<RenderError>> {
    let mut c = Checker::new();
    let spec = parse_inner(m, &mut c);
    let mut problems: Vec<String> = c
        .into_problems()
        .iter()
        .map(|p| p.keyed_message())
        .collect();
    match spec {
        Some(spec) if problems.is_empty() => Ok(spec),
        _ => {
            if problems.is_empty() {
                problems.push("invalid Bucket".into());
            }
            let object = format!("Bucket {}", m.key.name);
            Err(problems
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

/// The keys of `spec` besides the configuration sections.
const SPEC_KEYS: &[&str] = &["name", "region", "deletionPolicy", "objects"];

fn parse_inner(m: &Manifest, c: &mut Checker) -> Option<BucketSpec> {
    let spec = &check_document(m, c)?;
    c.at("spec", |c| {
        let name = c.required(spec, "name", " (the S3 bucket name)", name::bucket_name);
        let region = c.field(spec, "region", name::region);
        let (config, defaulted) = parse_sections(spec, c);
        let deletion_policy = c
            .field(spec, "deletionPolicy", |c, v| {
                c.one_of(
                    v,
                    &[
                        ("Retain", DeletionPolicy::Retain),
                        ("Delete", DeletionPolicy::Delete),
                    ],
                )
            })
            .unwrap_or_default();
        let objects = c.field(spec, "objects", objects::parse_objects);
        Some(BucketSpec {
            id: m.key.name.clone(),
            source: m.source.clone(),
            name: name?,
            region,
            config,
            defaulted,
            deletion_policy,
            objects,
        })
    })
}

/// Kind, apiVersion and the top-level keys; the `spec` mapping with its keys checked.
fn check_document(m: &Manifest, c: &mut Checker) -> Option<Map<String, Value>> {
    if !m.key.is_bucket() {
        c.problem_at("kind", format!("{} is not a gitopsd Bucket", m.key));
        return None;
    }
    if m.api_version != "gitopsd.dev/v1alpha1" {
        c.problem_at(
            "apiVersion",
            format!(
                "unsupported version {:?} (supported: gitopsd.dev/v1alpha1)",
                m.api_version
            ),
        );
    }
    let body = m.body.value();
    if body.is_object() {
        c.mapping(&body, &["apiVersion", "kind", "metadata", "spec"]);
    }
    let Some(spec) = body.get("spec") else {
        c.problem_at("spec", "missing");
        return None;
    };
    let mut allowed: Vec<&str> = SPEC_KEYS[..2].to_vec();
    allowed.extend(Field::names());
    allowed.extend(&SPEC_KEYS[2..]);
    c.at("spec", |c| c.mapping(spec, &allowed).cloned())
}

/// Every configuration section: parsed by its own section when written, else its default.
fn parse_sections(spec: &Map<String, Value>, c: &mut Checker) -> (BucketConfig, Vec<Field>) {
    let mut config = BucketConfig::default();
    let mut defaulted = Vec::new();
    for field in Field::ALL {
        let slot = match spec.get(field.name()) {
            Some(v) => field.parse(v, c),
            None => {
                let slot = field.default_value();
                if slot.is_some() {
                    defaulted.push(field);
                }
                slot
            }
        };
        if let Some(slot) = slot {
            config.insert(field, slot);
        }
    }
    (config, defaulted)
}

#[cfg(test)]
mod tests;
