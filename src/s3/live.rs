//! Reading the live configuration of a bucket (Get* calls) and writing it (Put*/Delete* calls).

use std::collections::BTreeMap;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types as t;

use super::error::{HttpStatus, S3Error, is_no_such_bucket};
use super::spec::{
    BucketConfig, CorsRule, Encryption, Field, LifecycleRule, PublicAccessBlock, RuleStatus,
    SseType, Transition, VersioningStatus, canonical_policy,
};

/// What the Get* calls returned for an existing bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveBucket {
    pub name: String,
    /// Region reported by HeadBucket (`x-amz-bucket-region`), when the server sends it.
    pub region: Option<String>,
    /// The fields that were read (the ones the spec manages).
    pub config: BucketConfig,
    /// Fields the server does not implement (HTTP 501 / `NotImplemented`).
    pub unsupported: Vec<Field>,
    /// gitopsd's ownership tags on the bucket (kept out of `config.tags`); `None` when the server
    /// does not implement bucket tagging.
    pub ownership: Option<BTreeMap<String, String>>,
}

/// Result of one Get* call.
enum Got<T> {
    Value(T),
    /// The server says the configuration is absent.
    Absent,
    /// The server does not implement the call.
    Unsupported,
}

fn classify<T, E, R>(
    bucket: &str,
    call: &'static str,
    absent: &[&str],
    result: Result<T, SdkError<E, R>>,
) -> Result<Got<T>, S3Error>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + HttpStatus,
{
    match result {
        Ok(v) => Ok(Got::Value(v)),
        Err(e) => {
            if e.code().is_some_and(|c| absent.contains(&c)) {
                return Ok(Got::Absent);
            }
            let status = e.raw_response().map(HttpStatus::status_code);
            if matches!(e.code(), Some("NotImplemented" | "XNotImplemented")) || status == Some(501)
            {
                return Ok(Got::Unsupported);
            }
            Err(S3Error::from_sdk(bucket, call, None, &e))
        }
    }
}

/// HeadBucket: `None` when the bucket does not exist, else the region the server reports.
pub(crate) async fn head_bucket(
    client: &Client,
    bucket: &str,
) -> Result<Option<Option<String>>, S3Error> {
    match client.head_bucket().bucket(bucket).send().await {
        Ok(out) => Ok(Some(out.bucket_region().map(str::to_string))),
        Err(e) if is_no_such_bucket(&e) => Ok(None),
        Err(e) => Err(S3Error::from_sdk(bucket, "HeadBucket", None, &e)),
    }
}

/// Reads the fields of `wanted` that are managed (`Some`), for an existing bucket.
pub(crate) async fn read_config(
    client: &Client,
    bucket: &str,
    wanted: &BucketConfig,
) -> Result<(BucketConfig, Vec<Field>), S3Error> {
    // Boxed: SDK futures are large, seven of them side by side overflow small (test) stacks.
    let (versioning, encryption, lifecycle, pab, policy, tags, cors) = futures::try_join!(
        opt(
            wanted.has(Field::Versioning),
            Box::pin(read_versioning(client, bucket))
        ),
        opt(
            wanted.has(Field::Encryption),
            Box::pin(read_encryption(client, bucket))
        ),
        opt(
            wanted.has(Field::Lifecycle),
            Box::pin(read_lifecycle(client, bucket))
        ),
        opt(
            wanted.has(Field::PublicAccessBlock),
            Box::pin(read_pab(client, bucket))
        ),
        opt(
            wanted.has(Field::Policy),
            Box::pin(read_policy(client, bucket))
        ),
        opt(wanted.has(Field::Tags), Box::pin(read_tags(client, bucket))),
        opt(wanted.has(Field::Cors), Box::pin(read_cors(client, bucket))),
    )?;
    let mut config = BucketConfig::default();
    let mut unsupported = Vec::new();
    // Split each result into the value and the "unsupported" marker.
    macro_rules! put {
        ($field:expr, $got:expr, $slot:expr) => {
            match $got {
                Some(Got::Value(v)) => $slot = Some(v),
                Some(Got::Unsupported) => unsupported.push($field),
                Some(Got::Absent) | None => {}
            }
        };
    }
    put!(Field::Versioning, versioning, config.versioning);
    put!(Field::Encryption, encryption, config.encryption);
    put!(Field::Lifecycle, lifecycle, config.lifecycle);
    put!(Field::PublicAccessBlock, pab, config.public_access_block);
    put!(Field::Policy, policy, config.policy);
    put!(Field::Tags, tags, config.tags);
    put!(Field::Cors, cors, config.cors);
    Ok((config, unsupported))
}

async fn opt<T>(
    wanted: bool,
    fut: impl Future<Output = Result<Got<T>, S3Error>>,
) -> Result<Option<Got<T>>, S3Error> {
    if wanted {
        fut.await.map(Some)
    } else {
        Ok(None)
    }
}

async fn read_versioning(client: &Client, bucket: &str) -> Result<Got<VersioningStatus>, S3Error> {
    let got = classify(
        bucket,
        "GetBucketVersioning",
        &[],
        client.get_bucket_versioning().bucket(bucket).send().await,
    )?;
    Ok(map_got(got, |out| match out.status() {
        Some(t::BucketVersioningStatus::Enabled) => VersioningStatus::Enabled,
        Some(t::BucketVersioningStatus::Suspended) => VersioningStatus::Suspended,
        _ => VersioningStatus::Off,
    }))
}

fn map_got<T, U>(got: Got<T>, f: impl FnOnce(T) -> U) -> Got<U> {
    match got {
        Got::Value(v) => Got::Value(f(v)),
        Got::Absent => Got::Absent,
        Got::Unsupported => Got::Unsupported,
    }
}

/// Absent configurations become their "none" value.
fn absent_as<T>(got: Got<T>, none: T) -> Got<T> {
    match got {
        Got::Absent => Got::Value(none),
        other => other,
    }
}

async fn read_encryption(
    client: &Client,
    bucket: &str,
) -> Result<Got<Option<Encryption>>, S3Error> {
    let got = classify(
        bucket,
        "GetBucketEncryption",
        &["ServerSideEncryptionConfigurationNotFoundError"],
        client.get_bucket_encryption().bucket(bucket).send().await,
    )?;
    let got = map_got(got, |out| {
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
    Ok(absent_as(got, None))
}

async fn read_lifecycle(client: &Client, bucket: &str) -> Result<Got<Vec<LifecycleRule>>, S3Error> {
    let got = classify(
        bucket,
        "GetBucketLifecycleConfiguration",
        &["NoSuchLifecycleConfiguration"],
        client
            .get_bucket_lifecycle_configuration()
            .bucket(bucket)
            .send()
            .await,
    )?;
    let got = map_got(got, |out| {
        let mut rules: Vec<LifecycleRule> = out.rules().iter().map(rule_from_sdk).collect();
        rules.sort_by(|a, b| a.id.cmp(&b.id));
        rules
    });
    Ok(absent_as(got, Vec::new()))
}

#[allow(deprecated)]
fn rule_from_sdk(r: &t::LifecycleRule) -> LifecycleRule {
    let mut unsupported = BTreeMap::new();
    let mut prefix = r.prefix().map(str::to_string);
    let mut tags = BTreeMap::new();
    if let Some(f) = r.filter() {
        if let Some(p) = f.prefix() {
            prefix = Some(p.to_string());
        }
        if let Some(tag) = f.tag() {
            tags.insert(tag.key().to_string(), tag.value().to_string());
        }
        if let Some(and) = f.and() {
            if let Some(p) = and.prefix() {
                prefix = Some(p.to_string());
            }
            for tag in and.tags() {
                tags.insert(tag.key().to_string(), tag.value().to_string());
            }
            if let Some(n) = and.object_size_greater_than() {
                unsupported.insert("objectSizeGreaterThan".into(), n.to_string());
            }
            if let Some(n) = and.object_size_less_than() {
                unsupported.insert("objectSizeLessThan".into(), n.to_string());
            }
        }
        if let Some(n) = f.object_size_greater_than() {
            unsupported.insert("objectSizeGreaterThan".into(), n.to_string());
        }
        if let Some(n) = f.object_size_less_than() {
            unsupported.insert("objectSizeLessThan".into(), n.to_string());
        }
    }
    if prefix.as_deref() == Some("") {
        prefix = None;
    }
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

async fn read_pab(client: &Client, bucket: &str) -> Result<Got<PublicAccessBlock>, S3Error> {
    let got = classify(
        bucket,
        "GetPublicAccessBlock",
        &["NoSuchPublicAccessBlockConfiguration"],
        client.get_public_access_block().bucket(bucket).send().await,
    )?;
    let got = map_got(got, |out| match out.public_access_block_configuration() {
        Some(c) => PublicAccessBlock {
            block_public_acls: c.block_public_acls().unwrap_or(false),
            ignore_public_acls: c.ignore_public_acls().unwrap_or(false),
            block_public_policy: c.block_public_policy().unwrap_or(false),
            restrict_public_buckets: c.restrict_public_buckets().unwrap_or(false),
        },
        None => PublicAccessBlock::ALL_FALSE,
    });
    Ok(absent_as(got, PublicAccessBlock::ALL_FALSE))
}

async fn read_policy(
    client: &Client,
    bucket: &str,
) -> Result<Got<Option<serde_json::Value>>, S3Error> {
    let got = classify(
        bucket,
        "GetBucketPolicy",
        &["NoSuchBucketPolicy"],
        client.get_bucket_policy().bucket(bucket).send().await,
    )?;
    let got = map_got(got, |out| {
        let text = out.policy()?;
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(doc) => Some(canonical_policy(&doc)),
            // Keep something comparable (and visibly different) rather than failing the read.
            Err(_) => Some(serde_json::Value::String(text.to_string())),
        }
    });
    Ok(absent_as(got, None))
}

/// The bucket's whole tag set; `None` when the server does not implement bucket tagging.
pub(crate) async fn read_tag_set(
    client: &Client,
    bucket: &str,
) -> Result<Option<BTreeMap<String, String>>, S3Error> {
    Ok(match read_tags(client, bucket).await? {
        Got::Value(tags) => Some(tags),
        Got::Absent => Some(BTreeMap::new()),
        Got::Unsupported => None,
    })
}

async fn read_tags(
    client: &Client,
    bucket: &str,
) -> Result<Got<BTreeMap<String, String>>, S3Error> {
    let got = classify(
        bucket,
        "GetBucketTagging",
        &["NoSuchTagSet", "NoSuchTagSetError"],
        client.get_bucket_tagging().bucket(bucket).send().await,
    )?;
    let got = map_got(got, |out| {
        out.tag_set()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect()
    });
    Ok(absent_as(got, BTreeMap::new()))
}

async fn read_cors(client: &Client, bucket: &str) -> Result<Got<Vec<CorsRule>>, S3Error> {
    let got = classify(
        bucket,
        "GetBucketCors",
        &["NoSuchCORSConfiguration"],
        client.get_bucket_cors().bucket(bucket).send().await,
    )?;
    let got = map_got(got, |out| {
        out.cors_rules()
            .iter()
            .map(|r| {
                CorsRule {
                    allowed_origins: r.allowed_origins().to_vec(),
                    allowed_methods: r.allowed_methods().to_vec(),
                    allowed_headers: r.allowed_headers().to_vec(),
                    expose_headers: r.expose_headers().to_vec(),
                    max_age_seconds: r.max_age_seconds(),
                }
                .normalised()
            })
            .collect()
    });
    Ok(absent_as(got, Vec::new()))
}

// ---------------------------------------------------------------------------------------------
// Writes

fn build_err(bucket: &str, call: &'static str, e: impl std::fmt::Display) -> S3Error {
    S3Error::InvalidPlan {
        bucket: bucket.to_string(),
        message: format!("cannot build the {call} request: {e}"),
    }
}

/// Writes one field of `desired`. `new_bucket`: the bucket was just created, so clearing an empty
/// collection is skipped. Returns the number of write calls made (0 or 1).
pub(crate) async fn write_field(
    client: &Client,
    bucket: &str,
    desired: &BucketConfig,
    field: Field,
    new_bucket: bool,
) -> Result<u32, S3Error> {
    let call = |name: &'static str| {
        tracing::info!(
            bucket,
            call = name,
            field = field.name(),
            "writing bucket configuration"
        );
        name
    };
    match field {
        Field::Versioning => {
            let Some(status) = desired.versioning else {
                return Ok(0);
            };
            let status = match status {
                VersioningStatus::Enabled => t::BucketVersioningStatus::Enabled,
                VersioningStatus::Suspended => t::BucketVersioningStatus::Suspended,
                VersioningStatus::Off => return Ok(0),
            };
            let name = call("PutBucketVersioning");
            client
                .put_bucket_versioning()
                .bucket(bucket)
                .versioning_configuration(
                    t::VersioningConfiguration::builder().status(status).build(),
                )
                .send()
                .await
                .map_err(|e| S3Error::from_sdk(bucket, name, None, &e))?;
        }
        Field::Encryption => {
            let Some(enc) = &desired.encryption else {
                return Ok(0);
            };
            match enc {
                None => {
                    let name = call("DeleteBucketEncryption");
                    client
                        .delete_bucket_encryption()
                        .bucket(bucket)
                        .send()
                        .await
                        .map_err(|e| S3Error::from_sdk(bucket, name, None, &e))?;
                }
                Some(enc) => {
                    let name = call("PutBucketEncryption");
                    let default = t::ServerSideEncryptionByDefault::builder()
                        .sse_algorithm(t::ServerSideEncryption::from(enc.sse_type.algorithm()))
                        .set_kms_master_key_id(enc.kms_key_id.clone())
                        .build()
                        .map_err(|e| build_err(bucket, name, e))?;
                    let mut rule = t::ServerSideEncryptionRule::builder()
                        .apply_server_side_encryption_by_default(default);
                    if enc.sse_type != SseType::SseS3 || enc.bucket_key_enabled {
                        rule = rule.bucket_key_enabled(enc.bucket_key_enabled);
                    }
                    let config = t::ServerSideEncryptionConfiguration::builder()
                        .rules(rule.build())
                        .build()
                        .map_err(|e| build_err(bucket, name, e))?;
                    client
                        .put_bucket_encryption()
                        .bucket(bucket)
                        .server_side_encryption_configuration(config)
                        .send()
                        .await
                        .map_err(|e| S3Error::from_sdk(bucket, name, None, &e))?;
                }
            }
        }
        Field::Lifecycle => {
            let Some(rules) = &desired.lifecycle else {
                return Ok(0);
            };
            if rules.is_empty() {
                if new_bucket {
                    return Ok(0);
                }
                let name = call("DeleteBucketLifecycle");
                client
                    .delete_bucket_lifecycle()
                    .bucket(bucket)
                    .send()
                    .await
                    .map_err(|e| S3Error::from_sdk(bucket, name, None, &e))?;
            } else {
                let name = call("PutBucketLifecycleConfiguration");
                let mut sdk_rules = Vec::with_capacity(rules.len());
                for r in rules {
                    sdk_rules.push(rule_to_sdk(r).map_err(|e| build_err(bucket, name, e))?);
                }
                let config = t::BucketLifecycleConfiguration::builder()
                    .set_rules(Some(sdk_rules))
                    .build()
                    .map_err(|e| build_err(bucket, name, e))?;
                client
                    .put_bucket_lifecycle_configuration()
                    .bucket(bucket)
                    .lifecycle_configuration(config)
                    .send()
                    .await
                    .map_err(|e| S3Error::from_sdk(bucket, name, None, &e))?;
            }
        }
        Field::PublicAccessBlock => {
            let Some(p) = &desired.public_access_block else {
                return Ok(0);
            };
            let name = call("PutPublicAccessBlock");
            client
                .put_public_access_block()
                .bucket(bucket)
                .public_access_block_configuration(
                    t::PublicAccessBlockConfiguration::builder()
                        .block_public_acls(p.block_public_acls)
                        .ignore_public_acls(p.ignore_public_acls)
                        .block_public_policy(p.block_public_policy)
                        .restrict_public_buckets(p.restrict_public_buckets)
                        .build(),
                )
                .send()
                .await
                .map_err(|e| S3Error::from_sdk(bucket, name, None, &e))?;
        }
        Field::Policy => {
            let Some(policy) = &desired.policy else {
                return Ok(0);
            };
            match policy {
                None => {
                    if new_bucket {
                        return Ok(0);
                    }
                    let name = call("DeleteBucketPolicy");
                    client
                        .delete_bucket_policy()
                        .bucket(bucket)
                        .send()
                        .await
                        .map_err(|e| S3Error::from_sdk(bucket, name, None, &e))?;
                }
                Some(doc) => {
                    let name = call("PutBucketPolicy");
                    let text =
                        serde_json::to_string(doc).map_err(|e| build_err(bucket, name, e))?;
                    client
                        .put_bucket_policy()
                        .bucket(bucket)
                        .policy(text)
                        .send()
                        .await
                        .map_err(|e| {
                            let mut err = S3Error::from_sdk(bucket, name, None, &e);
                            let blocked = desired
                                .public_access_block
                                .as_ref()
                                .is_some_and(|p| p.block_public_policy);
                            if let S3Error::Api { code, message, .. } = &mut err
                                && code.as_deref() == Some("AccessDenied")
                                && blocked
                            {
                                message.push_str(
                                    " (publicAccessBlock.blockPublicPolicy is true, so S3 refuses public policies)",
                                );
                            }
                            err
                        })?;
                }
            }
        }
        Field::Tags => {
            let Some(tags) = &desired.tags else {
                return Ok(0);
            };
            if tags.is_empty() {
                if new_bucket {
                    return Ok(0);
                }
                let name = call("DeleteBucketTagging");
                client
                    .delete_bucket_tagging()
                    .bucket(bucket)
                    .send()
                    .await
                    .map_err(|e| S3Error::from_sdk(bucket, name, None, &e))?;
            } else {
                let name = call("PutBucketTagging");
                let mut set = Vec::with_capacity(tags.len());
                for (k, v) in tags {
                    set.push(
                        t::Tag::builder()
                            .key(k)
                            .value(v)
                            .build()
                            .map_err(|e| build_err(bucket, name, e))?,
                    );
                }
                let tagging = t::Tagging::builder()
                    .set_tag_set(Some(set))
                    .build()
                    .map_err(|e| build_err(bucket, name, e))?;
                client
                    .put_bucket_tagging()
                    .bucket(bucket)
                    .tagging(tagging)
                    .send()
                    .await
                    .map_err(|e| S3Error::from_sdk(bucket, name, None, &e))?;
            }
        }
        Field::Cors => {
            let Some(rules) = &desired.cors else {
                return Ok(0);
            };
            if rules.is_empty() {
                if new_bucket {
                    return Ok(0);
                }
                let name = call("DeleteBucketCors");
                client
                    .delete_bucket_cors()
                    .bucket(bucket)
                    .send()
                    .await
                    .map_err(|e| S3Error::from_sdk(bucket, name, None, &e))?;
            } else {
                let name = call("PutBucketCors");
                let mut sdk_rules = Vec::with_capacity(rules.len());
                for r in rules {
                    sdk_rules.push(
                        t::CorsRule::builder()
                            .set_allowed_origins(Some(r.allowed_origins.clone()))
                            .set_allowed_methods(Some(r.allowed_methods.clone()))
                            .set_allowed_headers(
                                (!r.allowed_headers.is_empty()).then(|| r.allowed_headers.clone()),
                            )
                            .set_expose_headers(
                                (!r.expose_headers.is_empty()).then(|| r.expose_headers.clone()),
                            )
                            .set_max_age_seconds(r.max_age_seconds)
                            .build()
                            .map_err(|e| build_err(bucket, name, e))?,
                    );
                }
                let config = t::CorsConfiguration::builder()
                    .set_cors_rules(Some(sdk_rules))
                    .build()
                    .map_err(|e| build_err(bucket, name, e))?;
                client
                    .put_bucket_cors()
                    .bucket(bucket)
                    .cors_configuration(config)
                    .send()
                    .await
                    .map_err(|e| S3Error::from_sdk(bucket, name, None, &e))?;
            }
        }
    }
    Ok(1)
}

fn rule_to_sdk(r: &LifecycleRule) -> Result<t::LifecycleRule, aws_sdk_s3::error::BuildError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_rules_round_trip_through_sdk_types() {
        let mut tags = BTreeMap::new();
        tags.insert("tier".to_string(), "cold".to_string());
        for (prefix, tags) in [
            (Some("logs/".to_string()), tags.clone()),
            (None, tags.clone()),
            (Some("x/".to_string()), BTreeMap::new()),
            (None, BTreeMap::new()),
        ] {
            let rule = LifecycleRule {
                id: "r".into(),
                prefix,
                tags,
                status: RuleStatus::Enabled,
                transitions: vec![Transition {
                    days: 30,
                    storage_class: "STANDARD_IA".into(),
                }],
                expiration_days: Some(365),
                noncurrent_version_expiration_days: Some(30),
                abort_incomplete_multipart_upload_days: None,
                unsupported: BTreeMap::new(),
            };
            let sdk = rule_to_sdk(&rule).unwrap();
            assert_eq!(rule_from_sdk(&sdk), rule);
        }
    }
}
