//! `publicAccessBlock`: Block Public Access (GetPublicAccessBlock / PutPublicAccessBlock). The one
//! section that is secure by default: when the spec leaves it out, all four settings are managed as
//! `true`. May call the S3 SDK (those calls), `crate::schema` and `sections::sdk`.

use aws_sdk_s3::Client;
use aws_sdk_s3::types as t;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::sdk::{Call, Got, classify};
use super::{Field, Section, WriteContext};
use crate::s3::error::S3Error;
use crate::schema::Checker;

/// Block Public Access settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicAccessBlock {
    pub block_public_acls: bool,
    pub ignore_public_acls: bool,
    pub block_public_policy: bool,
    pub restrict_public_buckets: bool,
}

impl PublicAccessBlock {
    pub const ALL_TRUE: PublicAccessBlock = PublicAccessBlock {
        block_public_acls: true,
        ignore_public_acls: true,
        block_public_policy: true,
        restrict_public_buckets: true,
    };
    pub const ALL_FALSE: PublicAccessBlock = PublicAccessBlock {
        block_public_acls: false,
        ignore_public_acls: false,
        block_public_policy: false,
        restrict_public_buckets: false,
    };
}

pub struct PublicAccessBlockSection;

impl Section for PublicAccessBlockSection {
    type Value = PublicAccessBlock;
    const FIELD: Field = Field::PublicAccessBlock;
    const NAME: &'static str = "publicAccessBlock";
    const DEFAULT: Option<PublicAccessBlock> = Some(PublicAccessBlock::ALL_TRUE);
    const DEFAULT_TEXT: &'static str = "the default (all true)";

    /// Each setting left out of the mapping is `true`.
    fn parse(value: &Value, c: &mut Checker) -> Option<PublicAccessBlock> {
        let map = c.mapping(
            value,
            &[
                "blockPublicAcls",
                "ignorePublicAcls",
                "blockPublicPolicy",
                "restrictPublicBuckets",
            ],
        )?;
        let mut get = |k: &str| c.field(map, k, Checker::boolean).unwrap_or(true);
        Some(PublicAccessBlock {
            block_public_acls: get("blockPublicAcls"),
            ignore_public_acls: get("ignorePublicAcls"),
            block_public_policy: get("blockPublicPolicy"),
            restrict_public_buckets: get("restrictPublicBuckets"),
        })
    }

    /// A bucket without a configuration blocks nothing.
    async fn read(client: &Client, bucket: &str) -> Result<Got<PublicAccessBlock>, S3Error> {
        let got = classify(
            bucket,
            "GetPublicAccessBlock",
            &["NoSuchPublicAccessBlockConfiguration"],
            client.get_public_access_block().bucket(bucket).send().await,
        )?;
        let got = got.map(|out| match out.public_access_block_configuration() {
            Some(c) => PublicAccessBlock {
                block_public_acls: c.block_public_acls().unwrap_or(false),
                ignore_public_acls: c.ignore_public_acls().unwrap_or(false),
                block_public_policy: c.block_public_policy().unwrap_or(false),
                restrict_public_buckets: c.restrict_public_buckets().unwrap_or(false),
            },
            None => PublicAccessBlock::ALL_FALSE,
        });
        Ok(got.absent_as(PublicAccessBlock::ALL_FALSE))
    }

    async fn write(
        client: &Client,
        bucket: &str,
        p: &PublicAccessBlock,
        _: &WriteContext<'_>,
    ) -> Result<u32, S3Error> {
        let config = t::PublicAccessBlockConfiguration::builder()
            .block_public_acls(p.block_public_acls)
            .ignore_public_acls(p.ignore_public_acls)
            .block_public_policy(p.block_public_policy)
            .restrict_public_buckets(p.restrict_public_buckets)
            .build();
        let request = client
            .put_public_access_block()
            .bucket(bucket)
            .public_access_block_configuration(config)
            .send();
        Call::new(bucket, Self::NAME, "PutPublicAccessBlock")
            .send(request)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::sections::parsed;
    use serde_json::json;

    fn parse(v: Value) -> (Option<PublicAccessBlock>, Vec<String>) {
        parsed::<PublicAccessBlockSection>(&v)
    }

    #[test]
    fn settings_left_out_are_true() {
        let (out, problems) = parse(json!({"restrictPublicBuckets": false}));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            out,
            Some(PublicAccessBlock {
                restrict_public_buckets: false,
                ..PublicAccessBlock::ALL_TRUE
            })
        );
        assert_eq!(
            PublicAccessBlockSection::DEFAULT,
            Some(PublicAccessBlock::ALL_TRUE)
        );
    }

    #[test]
    fn reports_non_booleans_and_unknown_settings() {
        let (_, problems) = parse(json!({"blockPublicAcls": "yes-please", "blockAll": true}));
        assert_eq!(
            problems,
            vec![
                "spec.publicAccessBlock.blockAll: unknown field (expected one of: blockPublicAcls, ignorePublicAcls, blockPublicPolicy, restrictPublicBuckets)",
                "spec.publicAccessBlock.blockPublicAcls: must be true or false",
            ]
        );
    }

    #[test]
    fn compares_all_four_settings() {
        let all = PublicAccessBlock::ALL_TRUE;
        assert!(PublicAccessBlockSection::same(&all, &all.clone()));
        let open = PublicAccessBlock {
            ignore_public_acls: false,
            ..all.clone()
        };
        assert!(!PublicAccessBlockSection::same(&all, &open));
        assert_eq!(
            PublicAccessBlockSection::to_json(&all)["blockPublicPolicy"],
            json!(true)
        );
    }
}
