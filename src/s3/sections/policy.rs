//! `policy`: the bucket policy (GetBucketPolicy / PutBucketPolicy, DeleteBucketPolicy), written as
//! a mapping or a JSON string and compared in a canonical form. May call the S3 SDK (those calls),
//! `crate::schema`, `sections::sdk`, and `sections::public_access_block` (to explain a refused
//! write).

use aws_sdk_s3::Client;
use serde_json::{Map, Value};

use super::public_access_block::PublicAccessBlockSection;
use super::sdk::{Call, Got, classify};
use super::{Field, Section, WriteContext};
use crate::s3::error::S3Error;
use crate::schema::Checker;

/// The section's value: the canonical policy document; `None` = no policy (read from S3 only).
pub struct PolicySection;

impl Section for PolicySection {
    type Value = Option<Value>;
    const FIELD: Field = Field::Policy;
    const NAME: &'static str = "policy";

    fn parse(value: &Value, c: &mut Checker) -> Option<Option<Value>> {
        parse_policy(value, c).map(Some)
    }

    fn to_json(value: &Option<Value>) -> Value {
        match value {
            Some(p) => p.clone(),
            None => Value::String("none".into()),
        }
    }

    async fn read(client: &Client, bucket: &str) -> Result<Got<Option<Value>>, S3Error> {
        let got = classify(
            bucket,
            "GetBucketPolicy",
            &["NoSuchBucketPolicy"],
            client.get_bucket_policy().bucket(bucket).send().await,
        )?;
        let got = got.map(|out| {
            let text = out.policy()?;
            match serde_json::from_str::<Value>(text) {
                Ok(doc) => Some(canonical_policy(&doc)),
                // Keep something comparable (and visibly different) rather than failing the read.
                Err(_) => Some(Value::String(text.to_string())),
            }
        });
        Ok(got.absent_as(None))
    }

    async fn write(
        client: &Client,
        bucket: &str,
        value: &Option<Value>,
        ctx: &WriteContext<'_>,
    ) -> Result<u32, S3Error> {
        let Some(doc) = value else {
            if ctx.new_bucket {
                return Ok(0);
            }
            let request = client.delete_bucket_policy().bucket(bucket).send();
            return Call::new(bucket, Self::NAME, "DeleteBucketPolicy")
                .send(request)
                .await;
        };
        let call = Call::new(bucket, Self::NAME, "PutBucketPolicy");
        let text = serde_json::to_string(doc).map_err(|e| call.build_err(e))?;
        let request = client
            .put_bucket_policy()
            .bucket(bucket)
            .policy(text)
            .send();
        call.send(request)
            .await
            .map_err(|e| explain_refusal(e, ctx))
    }
}

/// S3 refuses a public policy with AccessDenied while `blockPublicPolicy` is on: say so.
fn explain_refusal(mut err: S3Error, ctx: &WriteContext<'_>) -> S3Error {
    let blocked = ctx
        .desired
        .get::<PublicAccessBlockSection>()
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
}

fn parse_policy(v: &Value, c: &mut Checker) -> Option<Value> {
    let doc = match v {
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(doc) => doc,
            Err(e) => {
                c.problem(format!("is not valid JSON: {e}"));
                return None;
            }
        },
        other => other.clone(),
    };
    let Some(map) = doc.as_object() else {
        c.problem("must be a JSON object (a policy document)");
        return None;
    };
    check_document(map, c);
    let len = serde_json::to_string(&doc).map(|s| s.len()).unwrap_or(0);
    if len > 20 * 1024 {
        c.problem(format!(
            "is {len} bytes; bucket policies are limited to 20 KiB"
        ));
    }
    Some(canonical_policy(&doc))
}

fn check_document(map: &Map<String, Value>, c: &mut Checker) {
    match map.get("Statement") {
        Some(Value::Array(items)) if !items.is_empty() => c.at("Statement", |c| {
            for (i, st) in items.iter().enumerate() {
                c.at_index(i, |c| check_statement(st, c));
            }
        }),
        Some(st @ Value::Object(_)) => c.at("Statement", |c| check_statement(st, c)),
        Some(_) => c.problem_at(
            "Statement",
            "must be a statement or a non-empty list of statements",
        ),
        None => c.problem("has no Statement"),
    }
    if let Some(version) = map.get("Version")
        && !matches!(version.as_str(), Some("2012-10-17" | "2008-10-17"))
    {
        c.problem_at("Version", "must be \"2012-10-17\"");
    }
}

fn check_statement(st: &Value, c: &mut Checker) {
    let Some(map) = st.as_object() else {
        c.problem("must be a mapping");
        return;
    };
    if !matches!(
        map.get("Effect").and_then(Value::as_str),
        Some("Allow" | "Deny")
    ) {
        c.problem_at("Effect", "must be Allow or Deny");
    }
    if !map.contains_key("Action") && !map.contains_key("NotAction") {
        c.problem("has no Action");
    }
    if !map.contains_key("Resource") && !map.contains_key("NotResource") {
        c.problem("has no Resource");
    }
}

/// Canonical form of a policy document, so that documents meaning the same compare equal: keys
/// sorted, one-element lists as scalars, list order ignored, `Statement` always a list, account ids
/// in `Principal.AWS` as root ARNs (S3 rewrites them so).
pub fn canonical_policy(doc: &Value) -> Value {
    let mut out = canon(doc, None, false);
    if let Some(map) = out.as_object_mut() {
        match map.get("Statement") {
            Some(Value::Array(_)) | None => {}
            Some(st) => {
                let st = st.clone();
                map.insert("Statement".into(), Value::Array(vec![st]));
            }
        }
    }
    out
}

fn canon(v: &Value, key: Option<&str>, in_principal: bool) -> Value {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                let principal = in_principal || k == "Principal" || k == "NotPrincipal";
                out.insert(k.clone(), canon(&map[k], Some(k), principal));
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            let mut items: Vec<Value> = items.iter().map(|i| canon(i, key, in_principal)).collect();
            items.sort_by_cached_key(|i| serde_json::to_string(i).unwrap_or_default());
            items.dedup();
            if items.len() == 1 && key != Some("Statement") {
                items.remove(0)
            } else {
                Value::Array(items)
            }
        }
        Value::String(s)
            if in_principal
                && key == Some("AWS")
                && s.len() == 12
                && s.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Value::String(format!("arn:aws:iam::{s}:root"))
        }
        Value::Number(n) => Value::String(n.to_string()),
        Value::Bool(b) => Value::String(b.to_string()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::sections::parsed;
    use serde_json::json;

    fn parse(v: Value) -> (Option<Value>, Vec<String>) {
        let (out, problems) = parsed::<PolicySection>(&v);
        (out.flatten(), problems)
    }

    #[test]
    fn mapping_and_json_string_mean_the_same() {
        let (a, pa) = parse(json!({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Deny", "Principal": "*", "Action": ["s3:PutObject", "s3:DeleteObject"], "Resource": "arn:aws:s3:::b/*"}]
        }));
        let (b, pb) = parse(json!(
            "{\"Statement\": {\"Resource\": [\"arn:aws:s3:::b/*\"], \"Action\": [\"s3:DeleteObject\", \"s3:PutObject\"], \"Principal\": \"*\", \"Effect\": \"Deny\"}, \"Version\": \"2012-10-17\"}"
        ));
        assert!(pa.is_empty() && pb.is_empty(), "{pa:?} {pb:?}");
        assert!(PolicySection::same(&a, &b));
        assert!(!PolicySection::same(&a, &None));
        assert!(a.unwrap()["Statement"].is_array());
    }

    #[test]
    fn account_principals_become_root_arns() {
        let doc = canonical_policy(&json!({"Statement": {"Principal": {"AWS": "111122223333"}}}));
        assert_eq!(
            doc["Statement"][0]["Principal"]["AWS"],
            "arn:aws:iam::111122223333:root"
        );
    }

    #[test]
    fn reports_bad_documents_and_statements() {
        let (_, problems) = parse(json!("{\"Statement\": "));
        assert!(
            problems[0].starts_with("spec.policy: is not valid JSON"),
            "{problems:?}"
        );
        let (_, problems) = parse(json!({"Version": "2020", "Statement": [{"Effect": "Maybe"}]}));
        assert_eq!(
            problems,
            vec![
                "spec.policy.Statement[0].Effect: must be Allow or Deny",
                "spec.policy.Statement[0]: has no Action",
                "spec.policy.Statement[0]: has no Resource",
                "spec.policy.Version: must be \"2012-10-17\"",
            ]
        );
        let (_, problems) = parse(json!([1]));
        assert_eq!(
            problems,
            vec!["spec.policy: must be a JSON object (a policy document)"]
        );
        assert_eq!(PolicySection::to_json(&None), json!("none"));
    }
}
