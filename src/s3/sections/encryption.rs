//! `encryption`: default server-side encryption (GetBucketEncryption / PutBucketEncryption,
//! DeleteBucketEncryption). May call the S3 SDK (those calls), `crate::schema` and `sections::sdk`.

use aws_sdk_s3::Client;
use aws_sdk_s3::types as t;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::sdk::{Call, Got, classify};
use super::{Field, Section, WriteContext};
use crate::s3::error::S3Error;
use crate::schema::Checker;

/// Server-side encryption types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SseType {
    #[serde(rename = "SSE-S3")]
    SseS3,
    #[serde(rename = "SSE-KMS")]
    SseKms,
    #[serde(rename = "DSSE-KMS")]
    DsseKms,
}

impl SseType {
    pub fn as_str(self) -> &'static str {
        match self {
            SseType::SseS3 => "SSE-S3",
            SseType::SseKms => "SSE-KMS",
            SseType::DsseKms => "DSSE-KMS",
        }
    }
    /// The S3 `SSEAlgorithm` value.
    pub fn algorithm(self) -> &'static str {
        match self {
            SseType::SseS3 => "AES256",
            SseType::SseKms => "aws:kms",
            SseType::DsseKms => "aws:kms:dsse",
        }
    }
    pub fn from_algorithm(alg: &str) -> Option<SseType> {
        match alg {
            "AES256" => Some(SseType::SseS3),
            "aws:kms" => Some(SseType::SseKms),
            "aws:kms:dsse" => Some(SseType::DsseKms),
            _ => None,
        }
    }
    fn from_name(name: &str) -> Option<SseType> {
        [SseType::SseS3, SseType::SseKms, SseType::DsseKms]
            .into_iter()
            .find(|t| t.as_str() == name)
    }
}

/// Default encryption.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Encryption {
    #[serde(rename = "type")]
    pub sse_type: SseType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    #[serde(default)]
    pub bucket_key_enabled: bool,
}

/// The section's value: `None` = no default encryption configured (read from S3 only).
pub struct EncryptionSection;

impl Section for EncryptionSection {
    type Value = Option<Encryption>;
    const FIELD: Field = Field::Encryption;
    const NAME: &'static str = "encryption";

    fn parse(value: &Value, c: &mut Checker) -> Option<Option<Encryption>> {
        parse_encryption(value, c).map(Some)
    }

    fn to_json(value: &Option<Encryption>) -> Value {
        match value {
            Some(e) => serde_json::to_value(e).unwrap_or(Value::Null),
            None => Value::String("none".into()),
        }
    }

    async fn read(client: &Client, bucket: &str) -> Result<Got<Option<Encryption>>, S3Error> {
        let got = classify(
            bucket,
            "GetBucketEncryption",
            &["ServerSideEncryptionConfigurationNotFoundError"],
            client.get_bucket_encryption().bucket(bucket).send().await,
        )?;
        let got = got.map(|out| {
            let rule = out
                .server_side_encryption_configuration()
                .and_then(|c| c.rules().first())?;
            let default = rule.apply_server_side_encryption_by_default()?;
            let sse_type = SseType::from_algorithm(default.sse_algorithm().as_str())?;
            Some(Encryption {
                sse_type,
                kms_key_id: default.kms_master_key_id().map(str::to_string),
                bucket_key_enabled: rule.bucket_key_enabled().unwrap_or(false),
            })
        });
        Ok(got.absent_as(None))
    }

    async fn write(
        client: &Client,
        bucket: &str,
        value: &Option<Encryption>,
        _: &WriteContext<'_>,
    ) -> Result<u32, S3Error> {
        let Some(enc) = value else {
            let request = client.delete_bucket_encryption().bucket(bucket).send();
            return Call::new(bucket, Self::NAME, "DeleteBucketEncryption")
                .send(request)
                .await;
        };
        let call = Call::new(bucket, Self::NAME, "PutBucketEncryption");
        let config = to_sdk(enc).map_err(|e| call.build_err(e))?;
        let request = client
            .put_bucket_encryption()
            .bucket(bucket)
            .server_side_encryption_configuration(config)
            .send();
        call.send(request).await
    }
}

fn to_sdk(
    enc: &Encryption,
) -> Result<t::ServerSideEncryptionConfiguration, aws_sdk_s3::error::BuildError> {
    let default = t::ServerSideEncryptionByDefault::builder()
        .sse_algorithm(t::ServerSideEncryption::from(enc.sse_type.algorithm()))
        .set_kms_master_key_id(enc.kms_key_id.clone())
        .build()?;
    let mut rule =
        t::ServerSideEncryptionRule::builder().apply_server_side_encryption_by_default(default);
    if enc.sse_type != SseType::SseS3 || enc.bucket_key_enabled {
        rule = rule.bucket_key_enabled(enc.bucket_key_enabled);
    }
    t::ServerSideEncryptionConfiguration::builder()
        .rules(rule.build())
        .build()
}

fn parse_encryption(v: &Value, c: &mut Checker) -> Option<Encryption> {
    let map = c.mapping(v, &["type", "kmsKeyId", "bucketKeyEnabled"])?;
    let name = map.get("type").and_then(Value::as_str);
    let Some(sse_type) = name.and_then(SseType::from_name) else {
        c.problem_at(
            "type",
            format!(
                "must be SSE-S3, SSE-KMS or DSSE-KMS, not {}",
                name.unwrap_or("(missing)")
            ),
        );
        return None;
    };
    let kms_key_id = c.field(map, "kmsKeyId", Checker::string);
    let bucket_key_enabled = c
        .field(map, "bucketKeyEnabled", Checker::boolean)
        .unwrap_or(false);
    if sse_type == SseType::SseS3 {
        const ONLY_KMS: &str = "only valid with type SSE-KMS or DSSE-KMS";
        if kms_key_id.is_some() {
            c.problem_at("kmsKeyId", ONLY_KMS);
        }
        if bucket_key_enabled {
            c.problem_at("bucketKeyEnabled", ONLY_KMS);
        }
    }
    if kms_key_id.as_deref() == Some("") {
        c.problem_at("kmsKeyId", "must not be empty");
    }
    Some(Encryption {
        sse_type,
        kms_key_id,
        bucket_key_enabled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::sections::parsed;
    use serde_json::json;

    fn parse(v: Value) -> (Option<Option<Encryption>>, Vec<String>) {
        parsed::<EncryptionSection>(&v)
    }

    #[test]
    fn parses_kms_with_key_and_bucket_key() {
        let (out, problems) =
            parse(json!({"type": "SSE-KMS", "kmsKeyId": "k", "bucketKeyEnabled": true}));
        assert!(problems.is_empty(), "{problems:?}");
        let enc = out.unwrap().unwrap();
        assert_eq!(enc.sse_type, SseType::SseKms);
        assert_eq!(enc.kms_key_id.as_deref(), Some("k"));
        assert!(enc.bucket_key_enabled);
    }

    #[test]
    fn rejects_kms_settings_on_sse_s3_and_unknown_types() {
        let (_, problems) =
            parse(json!({"type": "SSE-S3", "kmsKeyId": "", "bucketKeyEnabled": true, "x": 1}));
        assert_eq!(
            problems,
            vec![
                "spec.encryption.x: unknown field (expected one of: type, kmsKeyId, bucketKeyEnabled)",
                "spec.encryption.kmsKeyId: only valid with type SSE-KMS or DSSE-KMS",
                "spec.encryption.bucketKeyEnabled: only valid with type SSE-KMS or DSSE-KMS",
                "spec.encryption.kmsKeyId: must not be empty",
            ]
        );
        let (out, problems) = parse(json!({"type": "AES"}));
        assert_eq!(out, None);
        assert_eq!(
            problems,
            vec!["spec.encryption.type: must be SSE-S3, SSE-KMS or DSSE-KMS, not AES"]
        );
    }

    #[test]
    fn compares_settings_and_shows_none() {
        let kms = |bucket_key_enabled| {
            Some(Encryption {
                sse_type: SseType::SseKms,
                kms_key_id: None,
                bucket_key_enabled,
            })
        };
        assert!(EncryptionSection::same(&kms(true), &kms(true)));
        assert!(!EncryptionSection::same(&kms(true), &kms(false)));
        assert!(!EncryptionSection::same(&kms(true), &None));
        assert_eq!(EncryptionSection::to_json(&None), json!("none"));
        assert_eq!(
            EncryptionSection::to_json(&kms(false))["type"],
            json!("SSE-KMS")
        );
    }

    #[test]
    fn sdk_algorithms_round_trip() {
        for t in [SseType::SseS3, SseType::SseKms, SseType::DsseKms] {
            assert_eq!(SseType::from_algorithm(t.algorithm()), Some(t));
        }
        let config = to_sdk(&kms_key()).unwrap();
        let rule = &config.rules()[0];
        assert_eq!(rule.bucket_key_enabled(), Some(false));
    }

    fn kms_key() -> Encryption {
        Encryption {
            sse_type: SseType::SseKms,
            kms_key_id: Some("k".into()),
            bucket_key_enabled: false,
        }
    }
}
