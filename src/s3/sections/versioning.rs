//! `versioning: Enabled | Suspended` (GetBucketVersioning / PutBucketVersioning). May call the S3
//! SDK (those calls), `crate::schema` and `sections::sdk`.

use aws_sdk_s3::Client;
use aws_sdk_s3::types as t;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::sdk::{Call, Got, classify};
use super::{Field, Section, WriteContext};
use crate::s3::error::S3Error;
use crate::schema::Checker;

/// Bucket versioning state. `Off` is a bucket that was never versioned (read from S3 only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VersioningStatus {
    Enabled,
    Suspended,
    Off,
}

impl VersioningStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VersioningStatus::Enabled => "Enabled",
            VersioningStatus::Suspended => "Suspended",
            VersioningStatus::Off => "Off",
        }
    }
}

pub struct VersioningSection;

impl Section for VersioningSection {
    type Value = VersioningStatus;
    const FIELD: Field = Field::Versioning;
    const NAME: &'static str = "versioning";

    fn parse(value: &Value, c: &mut Checker) -> Option<VersioningStatus> {
        c.one_of(
            value,
            &[
                ("Enabled", VersioningStatus::Enabled),
                ("Suspended", VersioningStatus::Suspended),
            ],
        )
    }

    fn to_json(value: &VersioningStatus) -> Value {
        Value::String(value.as_str().to_string())
    }

    async fn read(client: &Client, bucket: &str) -> Result<Got<VersioningStatus>, S3Error> {
        let got = classify(
            bucket,
            "GetBucketVersioning",
            &[],
            client.get_bucket_versioning().bucket(bucket).send().await,
        )?;
        Ok(got.map(|out| match out.status() {
            Some(t::BucketVersioningStatus::Enabled) => VersioningStatus::Enabled,
            Some(t::BucketVersioningStatus::Suspended) => VersioningStatus::Suspended,
            _ => VersioningStatus::Off,
        }))
    }

    async fn write(
        client: &Client,
        bucket: &str,
        value: &VersioningStatus,
        _: &WriteContext<'_>,
    ) -> Result<u32, S3Error> {
        let status = match value {
            VersioningStatus::Enabled => t::BucketVersioningStatus::Enabled,
            VersioningStatus::Suspended => t::BucketVersioningStatus::Suspended,
            VersioningStatus::Off => return Ok(0),
        };
        let config = t::VersioningConfiguration::builder().status(status).build();
        let request = client
            .put_bucket_versioning()
            .bucket(bucket)
            .versioning_configuration(config)
            .send();
        Call::new(bucket, Self::NAME, "PutBucketVersioning")
            .send(request)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::sections::parsed;
    use serde_json::json;

    fn parse(v: Value) -> (Option<VersioningStatus>, Vec<String>) {
        parsed::<VersioningSection>(&v)
    }

    #[test]
    fn parses_enabled_and_suspended_only() {
        assert_eq!(parse(json!("Enabled")).0, Some(VersioningStatus::Enabled));
        assert_eq!(
            parse(json!("Suspended")).0,
            Some(VersioningStatus::Suspended)
        );
        let (out, problems) = parse(json!("Off"));
        assert_eq!(out, None);
        assert_eq!(
            problems,
            vec!["spec.versioning: must be Enabled or Suspended, not \"Off\""]
        );
    }

    #[test]
    fn compares_by_status_and_shows_as_text() {
        use VersioningStatus::*;
        assert!(VersioningSection::same(&Enabled, &Enabled));
        assert!(!VersioningSection::same(&Enabled, &Suspended));
        assert!(!VersioningSection::same(&Suspended, &Off));
        assert_eq!(VersioningSection::to_json(&Suspended), json!("Suspended"));
    }
}
