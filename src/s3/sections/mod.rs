//! The configuration sections of a bucket, one file each: how a section is parsed from the spec,
//! read from S3, written to S3 and compared.
//!
//! Owns the [`Section`] trait, the list of sections ([`Field`], in apply order) and
//! [`BucketConfig`], the set of section values of one bucket (desired or live). May call the S3
//! SDK (one Get* call to read a section, one Put*/Delete* call to write it), `crate::schema` to
//! validate and `s3::owner` for the reserved tag keys; nothing else of gitopsd.
//!
//! Adding a bucket setting: a new file here with a type implementing [`Section`], and one line
//! in the `sections!` list below. Every other part (parse, plan, apply, health, previews)
//! goes through the trait.

mod config;
pub mod cors;
pub mod encryption;
pub mod lifecycle;
pub mod policy;
pub mod public_access_block;
mod sdk;
pub mod tags;
pub mod versioning;

use std::fmt;
use std::marker::PhantomData;

use aws_sdk_s3::Client;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::S3Error;
use crate::schema::Checker;

pub use config::BucketConfig;
use config::Slot;
pub use sdk::Got;
pub use tags::read_tag_set;

/// One configuration section of a bucket.
///
/// A section's value is normalised when it is built (from the spec or from S3), so that two
/// values mean the same exactly when they compare equal.
pub trait Section: Send + Sync + 'static {
    /// The section's value, desired or live.
    type Value: Clone + PartialEq + fmt::Debug + Serialize + Send + Sync + 'static;

    /// Which section this is.
    const FIELD: Field;
    /// The key in the spec, e.g. `publicAccessBlock`.
    const NAME: &'static str;
    /// The value managed when the spec leaves the section out (`None`: not managed).
    const DEFAULT: Option<Self::Value> = None;
    /// How warnings name [`Section::DEFAULT`].
    const DEFAULT_TEXT: &'static str = "the default";

    /// Parses the spec's value of the section; the checker's path is `spec.<NAME>`.
    fn parse(value: &Value, c: &mut Checker) -> Option<Self::Value>;

    /// The value in the spec's shape (plan diffs, previews, health messages).
    fn to_json(value: &Self::Value) -> Value {
        serde_json::to_value(value).unwrap_or(Value::Null)
    }

    /// Whether a desired value and a live one mean the same.
    fn same(desired: &Self::Value, live: &Self::Value) -> bool {
        desired == live
    }

    /// Reads the live value with one Get* call; a configuration the server reports as absent
    /// comes back as the section's "none" value.
    fn read(
        client: &Client,
        bucket: &str,
    ) -> impl Future<Output = Result<Got<Self::Value>, S3Error>> + Send;

    /// Writes `value` with one Put*/Delete* call and returns the number of calls (0 or 1).
    fn write(
        client: &Client,
        bucket: &str,
        value: &Self::Value,
        ctx: &WriteContext<'_>,
    ) -> impl Future<Output = Result<u32, S3Error>> + Send;
}

/// What a write may need besides its own value.
#[derive(Clone, Copy, Debug)]
pub struct WriteContext<'a> {
    /// The whole desired configuration (a policy write explains a refusal caused by the
    /// public-access block).
    pub desired: &'a BucketConfig,
    /// The bucket was just created: clearing a configuration it cannot have yet is skipped.
    pub new_bucket: bool,
}

/// Declares the sections: the [`Field`] enum (in apply order) and each field's section.
macro_rules! sections {
    ($(#[$doc:meta] $field:ident => $section:ty,)+) => {
        /// A configuration section of a bucket.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum Field {
            $(#[$doc] $field,)+
        }

        impl Field {
            /// Every section, in apply order.
            pub const ALL: [Field; [$(Field::$field),+].len()] = [$(Field::$field),+];

            fn section(self) -> &'static dyn DynSection {
                match self {
                    $(Field::$field => {
                        const ENTRY: Entry<$section> = Entry(PhantomData);
                        &ENTRY
                    })+
                }
            }
        }
    };
}

sections! {
    /// First, so that a policy it would block can be set after it is relaxed.
    PublicAccessBlock => public_access_block::PublicAccessBlockSection,
    /// `versioning: Enabled | Suspended`.
    Versioning => versioning::VersioningSection,
    /// Default encryption.
    Encryption => encryption::EncryptionSection,
    /// Lifecycle rules.
    Lifecycle => lifecycle::LifecycleSection,
    /// The bucket policy.
    Policy => policy::PolicySection,
    /// The spec's tags (the ownership tags are kept apart, see `s3::owner`).
    Tags => tags::TagsSection,
    /// CORS rules.
    Cors => cors::CorsSection,
}

impl Field {
    /// The field's name in the spec.
    pub fn name(self) -> &'static str {
        self.section().name()
    }

    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The names of every section, for the spec's list of known keys.
    pub fn names() -> impl Iterator<Item = &'static str> {
        Field::ALL.into_iter().map(Field::name)
    }

    /// Parses the spec's value of this section (the checker is at `spec`).
    pub(crate) fn parse(self, value: &Value, c: &mut Checker) -> Option<Slot> {
        let section = self.section();
        c.at(section.name(), |c| section.parse(value, c))
    }

    /// The value managed when the spec leaves the section out.
    pub(crate) fn default_value(self) -> Option<Slot> {
        self.section().default_value()
    }

    /// How warnings name the default.
    pub(crate) fn default_text(self) -> &'static str {
        self.section().default_text()
    }

    /// Reads the live value.
    pub(crate) fn read<'a>(
        self,
        client: &'a Client,
        bucket: &'a str,
    ) -> BoxFuture<'a, Result<Got<Slot>, S3Error>> {
        self.section().read(client, bucket)
    }
}

/// Writes the section `field` of `desired` (no call when `desired` does not manage it). Returns
/// the number of write calls made.
pub(crate) async fn write_field(
    client: &Client,
    bucket: &str,
    desired: &BucketConfig,
    field: Field,
    new_bucket: bool,
) -> Result<u32, S3Error> {
    let Some(value) = desired.slot(field) else {
        return Ok(0);
    };
    let ctx = WriteContext {
        desired,
        new_bucket,
    };
    field.section().write(client, bucket, value, &ctx).await
}

/// A [`Section`] behind a vtable, so that [`Field`] can dispatch to it.
trait DynSection: Send + Sync {
    /// The section's own idea of its field (must be the one it is registered under).
    #[cfg(test)]
    fn field(&self) -> Field;
    fn name(&self) -> &'static str;
    fn default_text(&self) -> &'static str;
    fn parse(&self, value: &Value, c: &mut Checker) -> Option<Slot>;
    fn default_value(&self) -> Option<Slot>;
    fn read<'a>(
        &self,
        client: &'a Client,
        bucket: &'a str,
    ) -> BoxFuture<'a, Result<Got<Slot>, S3Error>>;
    fn write<'a>(
        &self,
        client: &'a Client,
        bucket: &'a str,
        value: &'a Slot,
        ctx: &'a WriteContext<'a>,
    ) -> BoxFuture<'a, Result<u32, S3Error>>;
}

struct Entry<S>(PhantomData<S>);

impl<S: Section> DynSection for Entry<S> {
    #[cfg(test)]
    fn field(&self) -> Field {
        S::FIELD
    }
    fn name(&self) -> &'static str {
        S::NAME
    }
    fn default_text(&self) -> &'static str {
        S::DEFAULT_TEXT
    }
    fn parse(&self, value: &Value, c: &mut Checker) -> Option<Slot> {
        S::parse(value, c).map(Slot::new::<S>)
    }
    fn default_value(&self) -> Option<Slot> {
        S::DEFAULT.map(Slot::new::<S>)
    }
    fn read<'a>(
        &self,
        client: &'a Client,
        bucket: &'a str,
    ) -> BoxFuture<'a, Result<Got<Slot>, S3Error>> {
        Box::pin(async move { Ok(S::read(client, bucket).await?.map(Slot::new::<S>)) })
    }
    fn write<'a>(
        &self,
        client: &'a Client,
        bucket: &'a str,
        value: &'a Slot,
        ctx: &'a WriteContext<'a>,
    ) -> BoxFuture<'a, Result<u32, S3Error>> {
        Box::pin(async move {
            match value.get::<S>() {
                Some(v) => S::write(client, bucket, v, ctx).await,
                None => Ok(0),
            }
        })
    }
}

/// Parses `value` with section `S` as the spec's `spec.<NAME>`: the value, and every problem
/// as `key: message`.
#[cfg(test)]
pub(crate) fn parsed<S: Section>(value: &Value) -> (Option<S::Value>, Vec<String>) {
    let mut c = Checker::new();
    let out = c.at("spec", |c| c.at(S::NAME, |c| S::parse(value, c)));
    let problems = c
        .into_problems()
        .iter()
        .map(|p| p.keyed_message())
        .collect();
    (out, problems)
}

#[cfg(test)]
mod tests;
