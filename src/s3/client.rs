//! The S3 client a host config describes: credentials, endpoint, retries, and an optional request
//! log (tests and benchmarks count calls with it). May call the AWS SDK and its config loader (the
//! default credential chain); nothing else of gitopsd.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::interceptors::{
    BeforeTransmitInterceptorContextMut, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_s3::config::{ConfigBag, Intercept, Region, RuntimeComponents};

use super::error;

/// Host-config side of S3 access (built by the config module).
#[derive(Clone, Default)]
pub struct S3Settings {
    /// Custom endpoint (MinIO, moto, ...); `None` = AWS.
    pub endpoint: Option<String>,
    /// The environment's region (default for buckets without `spec.region`).
    pub region: String,
    pub force_path_style: bool,
    /// Static credentials (read from files); both `None` = the SDK's default chain.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |v: &Option<String>| if v.is_some() { "<redacted>" } else { "<unset>" };
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint.as_deref().map(error::redact))
            .field("region", &self.region)
            .field("force_path_style", &self.force_path_style)
            .field("access_key_id", &set(&self.access_key_id))
            .field("secret_access_key", &set(&self.secret_access_key))
            .finish()
    }
}

/// Builds an S3 client: standard retries (5 attempts, backoff with jitter), connect and per-attempt
/// timeouts, checksums only where S3 requires them (works with S3-compatible servers).
pub async fn client(settings: &S3Settings) -> Client {
    client_with(settings, None).await
}

/// [`client`] with a [`RequestLog`] that records every HTTP request (tests, benchmarks).
pub async fn client_with_log(settings: &S3Settings) -> (Client, RequestLog) {
    let log = RequestLog {
        path_style: settings.force_path_style,
        ..RequestLog::default()
    };
    (client_with(settings, Some(log.clone())).await, log)
}

async fn client_with(settings: &S3Settings, log: Option<RequestLog>) -> Client {
    use aws_sdk_s3::config::retry::RetryConfig;
    use aws_sdk_s3::config::timeout::TimeoutConfig;
    use aws_sdk_s3::config::{
        BehaviorVersion, Credentials, RequestChecksumCalculation, ResponseChecksumValidation,
    };

    let retry = RetryConfig::standard()
        .with_max_attempts(5)
        .with_initial_backoff(Duration::from_millis(200))
        .with_max_backoff(Duration::from_secs(20));
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .operation_attempt_timeout(Duration::from_secs(300))
        .build();
    let region = Region::new(settings.region.clone());
    let mut builder = match (&settings.access_key_id, &settings.secret_access_key) {
        (Some(id), Some(secret)) => aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .credentials_provider(Credentials::new(
                id,
                secret,
                None,
                None,
                "gitopsd-host-config",
            )),
        _ => {
            let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(region.clone())
                .load()
                .await;
            aws_sdk_s3::config::Builder::from(&sdk)
        }
    };
    builder = builder
        .region(region)
        .retry_config(retry)
        .timeout_config(timeouts)
        .force_path_style(settings.force_path_style)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    if let Some(endpoint) = &settings.endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    builder = builder.interceptor(UserAgent);
    if let Some(log) = log {
        builder = builder.interceptor(log);
    }
    Client::from_conf(builder.build())
}

/// Puts `gitopsd/<version>` first in every request's User-Agent (the SDK's own part follows), so a
/// server's access log names gitopsd. After signing: SigV4 never signs the User-Agent.
#[derive(Debug)]
struct UserAgent;

impl Intercept for UserAgent {
    fn name(&self) -> &'static str {
        "gitopsd-user-agent"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let headers = context.request_mut().headers_mut();
        let value = match headers.get("user-agent") {
            Some(sdk) => format!("{} {sdk}", crate::USER_AGENT),
            None => crate::USER_AGENT.to_string(),
        };
        headers.insert("user-agent", value);
        Ok(())
    }
}

/// Records every HTTP request a client sends (including retries): method and S3 call shape.
/// Never records URLs, headers or bodies.
#[derive(Clone, Debug, Default)]
pub struct RequestLog {
    entries: Arc<Mutex<Vec<(String, String)>>>,
    /// Whether the client uses path-style URLs (`/bucket/key`), to tell bucket from object calls.
    path_style: bool,
}

impl RequestLog {
    /// `(method, what)` pairs, e.g. `("GET", "ListObjectsV2")`, `("PUT", "object")`,
    /// `("HEAD", "bucket")`, `("GET", "versioning")` (the sub-resource query keys).
    pub fn entries(&self) -> Vec<(String, String)> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
    pub fn total(&self) -> usize {
        self.entries().len()
    }
    /// Requests that can change state (anything but GET and HEAD).
    pub fn writes(&self) -> usize {
        self.entries()
            .iter()
            .filter(|(m, _)| m != "GET" && m != "HEAD")
            .count()
    }
    /// Requests that are not ListObjectsV2.
    pub fn non_listing(&self) -> usize {
        self.entries()
            .iter()
            .filter(|(_, w)| w != "ListObjectsV2")
            .count()
    }
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}

impl Intercept for RequestLog {
    fn name(&self) -> &'static str {
        "gitopsd-request-log"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let req = context.request();
        let method = req.method().to_string();
        let (path, query) = req.uri().split_once('?').unwrap_or((req.uri(), ""));
        let path = path.split_once("://").map_or(path, |(_, rest)| rest);
        let path = path.split_once('/').map_or("", |(_, p)| p);
        let segments = path.split('/').filter(|s| !s.is_empty()).count();
        let on_object = if self.path_style {
            segments >= 2
        } else {
            segments >= 1
        };
        let keys: Vec<&str> = query
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("x-id="))
            .map(|p| p.split_once('=').map_or(p, |(k, _)| k))
            .collect();
        let what = if query.contains("list-type=2") {
            "ListObjectsV2".to_string()
        } else if keys.is_empty() {
            if on_object { "object" } else { "bucket" }.to_string()
        } else {
            keys.join("&")
        };
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((method, what));
        Ok(())
    }
}
