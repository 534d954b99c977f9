//! `cors`: CORS rules (GetBucketCors / PutBucketCors, DeleteBucketCors). Rule order is kept (it
//! matters); the lists within a rule are sorted and deduplicated. May call the S3 SDK (those
//! calls), `crate::schema` and `sections::sdk`.

use aws_sdk_s3::Client;
use aws_sdk_s3::types as t;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::sdk::{Call, Got, classify};
use super::{Field, Section, WriteContext};
use crate::s3::error::S3Error;
use crate::schema::Checker;

/// One CORS rule, normalised (lists sorted and deduplicated; rule order is kept, it matters).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CorsRule {
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<i32>,
}

impl CorsRule {
    pub(crate) fn normalised(mut self) -> Self {
        for list in [
            &mut self.allowed_origins,
            &mut self.allowed_methods,
            &mut self.allowed_headers,
            &mut self.expose_headers,
        ] {
            list.sort();
            list.dedup();
        }
        self
    }

    fn to_sdk(&self) -> Result<t::CorsRule, aws_sdk_s3::error::BuildError> {
        let non_empty = |l: &Vec<String>| (!l.is_empty()).then(|| l.clone());
        t::CorsRule::builder()
            .set_allowed_origins(Some(self.allowed_origins.clone()))
            .set_allowed_methods(Some(self.allowed_methods.clone()))
            .set_allowed_headers(non_empty(&self.allowed_headers))
            .set_expose_headers(non_empty(&self.expose_headers))
            .set_max_age_seconds(self.max_age_seconds)
            .build()
    }
}

const RULE_FIELDS: &[&str] = &[
    "allowedOrigins",
    "allowedMethods",
    "allowedHeaders",
    "exposeHeaders",
    "maxAgeSeconds",
];

const METHODS: &[&str] = &["GET", "PUT", "POST", "DELETE", "HEAD"];

/// The section's value: the rules in order; empty = no CORS configuration.
pub struct CorsSection;

impl Section for CorsSection {
    type Value = Vec<CorsRule>;
    const FIELD: Field = Field::Cors;
    const NAME: &'static str = "cors";

    fn parse(value: &Value, c: &mut Checker) -> Option<Vec<CorsRule>> {
        let Value::Array(items) = value else {
            c.problem("must be a list of rules");
            return None;
        };
        if items.len() > 100 {
            c.problem("at most 100 rules");
        }
        let rules = items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| c.at_index(i, |c| parse_rule(item, c)))
            .collect();
        Some(rules)
    }

    async fn read(client: &Client, bucket: &str) -> Result<Got<Vec<CorsRule>>, S3Error> {
        let got = classify(
            bucket,
            "GetBucketCors",
            &["NoSuchCORSConfiguration"],
            client.get_bucket_cors().bucket(bucket).send().await,
        )?;
        let got = got.map(|out| {
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
        Ok(got.absent_as(Vec::new()))
    }

    async fn write(
        client: &Client,
        bucket: &str,
        rules: &Vec<CorsRule>,
        ctx: &WriteContext<'_>,
    ) -> Result<u32, S3Error> {
        if rules.is_empty() {
            if ctx.new_bucket {
                return Ok(0);
            }
            let request = client.delete_bucket_cors().bucket(bucket).send();
            return Call::new(bucket, Self::NAME, "DeleteBucketCors")
                .send(request)
                .await;
        }
        let call = Call::new(bucket, Self::NAME, "PutBucketCors");
        let sdk_rules = rules
            .iter()
            .map(CorsRule::to_sdk)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| call.build_err(e))?;
        let config = t::CorsConfiguration::builder()
            .set_cors_rules(Some(sdk_rules))
            .build()
            .map_err(|e| call.build_err(e))?;
        let request = client
            .put_bucket_cors()
            .bucket(bucket)
            .cors_configuration(config)
            .send();
        call.send(request).await
    }
}

/// One rule (the checker is at `spec.cors[i]`).
fn parse_rule(item: &Value, c: &mut Checker) -> Option<CorsRule> {
    let map = c.mapping(item, RULE_FIELDS)?;
    let mut bad = false;
    let allowed_origins = list(map, "allowedOrigins", &mut bad, c);
    let allowed_methods = list(map, "allowedMethods", &mut bad, c);
    let allowed_headers = list(map, "allowedHeaders", &mut bad, c);
    let expose_headers = list(map, "exposeHeaders", &mut bad, c);
    if allowed_origins.is_empty() && !bad {
        c.problem_at("allowedOrigins", "must list at least one origin");
    }
    if allowed_methods.is_empty() && !bad {
        c.problem_at("allowedMethods", "must list at least one method");
    }
    for m in &allowed_methods {
        if !METHODS.contains(&m.as_str()) {
            c.problem_at(
                "allowedMethods",
                format!("{m:?} is not one of {}", METHODS.join(", ")),
            );
        }
    }
    for o in &allowed_origins {
        if o.matches('*').count() > 1 {
            c.problem_at(
                "allowedOrigins",
                format!("{o:?} may contain at most one '*'"),
            );
        }
    }
    let max_age_seconds = c.field(map, "maxAgeSeconds", |c, v| c.int(v, 0, 2_147_483_647));
    let rule = CorsRule {
        allowed_origins,
        allowed_methods,
        allowed_headers,
        expose_headers,
        max_age_seconds,
    };
    Some(rule.normalised())
}

/// A list of strings of the rule; a bad one counts as empty and sets `bad`.
fn list(map: &Map<String, Value>, key: &str, bad: &mut bool, c: &mut Checker) -> Vec<String> {
    if !map.contains_key(key) {
        return Vec::new();
    }
    c.field(map, key, Checker::string_list).unwrap_or_else(|| {
        *bad = true;
        Vec::new()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::sections::parsed;
    use serde_json::json;

    fn parse(v: Value) -> (Option<Vec<CorsRule>>, Vec<String>) {
        parsed::<CorsSection>(&v)
    }

    #[test]
    fn lists_are_sorted_and_deduplicated_rule_order_kept() {
        let (rules, problems) = parse(json!([
            {"allowedOrigins": ["b.example", "a.example", "a.example"], "allowedMethods": ["PUT", "GET"], "maxAgeSeconds": 30},
            {"allowedOrigins": ["*"], "allowedMethods": ["HEAD"]},
        ]));
        assert!(problems.is_empty(), "{problems:?}");
        let rules = rules.unwrap();
        assert_eq!(rules[0].allowed_origins, vec!["a.example", "b.example"]);
        assert_eq!(rules[0].allowed_methods, vec!["GET", "PUT"]);
        assert_eq!(rules[0].max_age_seconds, Some(30));
        assert_eq!(rules[1].allowed_methods, vec!["HEAD"]);
    }

    #[test]
    fn reports_empty_lists_bad_methods_and_origins() {
        let (_, problems) = parse(json!([
            {"allowedOrigins": [], "allowedMethods": ["PATCH"]},
            {"allowedOrigins": ["*.*"], "allowedMethods": "GET"},
        ]));
        assert_eq!(
            problems,
            vec![
                "spec.cors[0].allowedOrigins: must list at least one origin",
                "spec.cors[0].allowedMethods: \"PATCH\" is not one of GET, PUT, POST, DELETE, HEAD",
                "spec.cors[1].allowedMethods: must be a list of strings",
                "spec.cors[1].allowedOrigins: \"*.*\" may contain at most one '*'",
            ]
        );
    }

    #[test]
    fn compares_in_rule_order() {
        let rule = |o: &str| CorsRule {
            allowed_origins: vec![o.into()],
            allowed_methods: vec!["GET".into()],
            allowed_headers: vec![],
            expose_headers: vec![],
            max_age_seconds: None,
        };
        let ab = vec![rule("a"), rule("b")];
        assert!(CorsSection::same(&ab, &ab.clone()));
        assert!(!CorsSection::same(&ab, &vec![rule("b"), rule("a")]));
        assert!(rule("a").to_sdk().is_ok());
    }
}
