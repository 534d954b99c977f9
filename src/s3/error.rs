//! Errors of the S3 layer: every one names the bucket, the S3 call and (where there is one) the
//! object key, and says whether retrying may help. Messages are scrubbed of anything that looks
//! like a credential or a presigned URL before they are stored. May call only the SDK's error
//! types.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

/// An S3 failure.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// An S3 API call failed.
    #[error("S3 {call} on bucket {bucket}{}: {}{message}", key_suffix(key), code_prefix(code, *status))]
    Api {
        bucket: String,
        /// The S3 operation, e.g. `PutBucketVersioning`.
        call: &'static str,
        key: Option<String>,
        /// S3 error code (`AccessDenied`, `SlowDown`, ...), when the server sent one.
        code: Option<String>,
        /// HTTP status, when a response arrived.
        status: Option<u16>,
        message: String,
        transient: bool,
    },
    /// `deletionPolicy: Delete` on a bucket that still holds objects.
    #[error(
        "bucket {bucket} is not empty: deletionPolicy Delete removes a bucket only when it is empty; \
         empty it first or set deletionPolicy: Retain"
    )]
    NotEmpty { bucket: String },
    /// An object key computed from the source folder is not acceptable.
    #[error("bucket {bucket}: object key {key:?} (from {path}) is invalid: {reason}")]
    InvalidKey {
        bucket: String,
        key: String,
        path: String,
        reason: String,
    },
    /// A file is bigger than `objects.maxFileSize`.
    #[error(
        "bucket {bucket}: {path} is {size} bytes, more than objects.maxFileSize ({max} bytes); key {key}"
    )]
    FileTooLarge {
        bucket: String,
        key: String,
        path: String,
        size: u64,
        max: u64,
    },
    /// Reading the source folder (the repository) failed.
    #[error("bucket {bucket}: reading {path} from the repository: {message}")]
    Source {
        bucket: String,
        path: String,
        message: String,
    },
    /// The live bucket cannot be made equal to the spec (e.g. it lives in another region).
    #[error("bucket {bucket}: {call}: {message}")]
    Conflict {
        bucket: String,
        call: &'static str,
        message: String,
    },
    /// Plan and spec do not belong together, or the plan is impossible to apply.
    #[error("bucket {bucket}: invalid plan: {message}")]
    InvalidPlan { bucket: String, message: String },
    /// The bucket exists but is not this environment's: gitopsd does not adopt it.
    #[error(
        "bucket {bucket} already exists and is not managed by gitopsd instance {instance} for \
         environment {environment} ({found}); gitopsd does not adopt it: to hand it over, tag it \
         gitopsd.dev/instance={instance} and gitopsd.dev/environment={environment}, or rename the \
         bucket in the spec"
    )]
    NotOwned {
        bucket: String,
        instance: String,
        environment: String,
        /// What the bucket carries instead (its ownership tags, or why they are unknown).
        found: String,
    },
}

fn key_suffix(key: &Option<String>) -> String {
    match key {
        Some(k) => format!(" key {k:?}"),
        None => String::new(),
    }
}

fn code_prefix(code: &Option<String>, status: Option<u16>) -> String {
    match (code, status) {
        (Some(c), Some(s)) => format!("{c} (HTTP {s}): "),
        (Some(c), None) => format!("{c}: "),
        (None, Some(s)) => format!("HTTP {s}: "),
        (None, None) => String::new(),
    }
}

/// Codes that S3 and compatible servers use for throttling and passing trouble.
const TRANSIENT_CODES: &[&str] = &[
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
    "OperationAborted",
    "PriorRequestNotComplete",
    "IDPCommunicationError",
    "EC2ThrottledException",
    "TransactionInProgressException",
];

impl S3Error {
    /// Whether the same call may succeed later: throttling, 5xx, timeouts and connection
    /// failures are transient; AccessDenied, NoSuchBucket, validation and conflicts are not.
    pub fn is_transient(&self) -> bool {
        match self {
            S3Error::Api { transient, .. } => *transient,
            _ => false,
        }
    }

    /// The bucket the error is about.
    pub fn bucket(&self) -> &str {
        match self {
            S3Error::Api { bucket, .. }
            | S3Error::NotEmpty { bucket }
            | S3Error::InvalidKey { bucket, .. }
            | S3Error::FileTooLarge { bucket, .. }
            | S3Error::Source { bucket, .. }
            | S3Error::Conflict { bucket, .. }
            | S3Error::InvalidPlan { bucket, .. }
            | S3Error::NotOwned { bucket, .. } => bucket,
        }
    }

    /// The S3 error code, when the server sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            S3Error::Api { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// Builds an error for a failed SDK call.
    pub(crate) fn from_sdk<E, R>(
        bucket: &str,
        call: &'static str,
        key: Option<&str>,
        err: &SdkError<E, R>,
    ) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + HttpStatus,
    {
        let status = err.raw_response().map(HttpStatus::status_code);
        let (code, message, transient) = match err {
            SdkError::ConstructionFailure(_) => (None, describe(err), false),
            SdkError::TimeoutError(_) => (None, "timed out".to_string(), true),
            SdkError::DispatchFailure(d) => {
                let transient = !d.is_user();
                (None, describe(err), transient)
            }
            SdkError::ResponseError(_) => (
                None,
                describe(err),
                status.is_none_or(|s| s >= 500 || s == 429),
            ),
            _ => {
                let code = err.code().map(str::to_string);
                let message = err
                    .message()
                    .map(str::to_string)
                    .unwrap_or_else(|| describe(err));
                let transient = status.is_some_and(|s| s >= 500 || s == 429)
                    || code
                        .as_deref()
                        .is_some_and(|c| TRANSIENT_CODES.contains(&c));
                (code, message, transient)
            }
        };
        S3Error::Api {
            bucket: bucket.to_string(),
            call,
            key: key.map(str::to_string),
            code,
            status,
            message: redact(&message),
            transient,
        }
    }
}

/// The HTTP status of a raw response (lets [`S3Error::from_sdk`] stay generic over response types).
pub(crate) trait HttpStatus {
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

fn describe<E, R>(err: &SdkError<E, R>) -> String
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    aws_sdk_s3::error::DisplayErrorContext(err).to_string()
}

/// Whether an SDK error says the bucket does not exist.
pub(crate) fn is_no_such_bucket<E, R>(err: &SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
    R: HttpStatus,
{
    matches!(err.code(), Some("NoSuchBucket" | "NotFound"))
        || (matches!(err, SdkError::ServiceError(_))
            && err.raw_response().map(HttpStatus::status_code) == Some(404))
}

/// Removes anything that could be a secret from a message: presigned-URL query parameters,
/// signatures, security tokens and `user:password@` in URLs.
pub fn redact(message: &str) -> String {
    const SECRET_PARAMS: &[&str] = &[
        "x-amz-signature=",
        "x-amz-credential=",
        "x-amz-security-token=",
        "signature=",
        "awsaccesskeyid=",
        "x-amz-date=",
    ];
    let mut out = String::with_capacity(message.len());
    let lower = message.to_ascii_lowercase();
    let bytes = message.as_bytes();
    let mut i = 0;
    'outer: while i < bytes.len() {
        for param in SECRET_PARAMS {
            if lower[i..].starts_with(param)
                && (i == 0 || matches!(bytes[i - 1], b'?' | b'&' | b' ' | b'"' | b'\''))
            {
                out.push_str(&message[i..i + param.len()]);
                out.push_str("REDACTED");
                i += param.len();
                while i < bytes.len()
                    && !matches!(bytes[i], b'&' | b' ' | b'"' | b'\'' | b'\n' | b'>' | b'<')
                {
                    i += 1;
                }
                continue 'outer;
            }
        }
        // `scheme://user:pass@host` → `scheme://REDACTED@host`
        if lower[i..].starts_with("://") {
            let rest = &message[i + 3..];
            let end = rest
                .find(|c: char| c == '/' || c.is_whitespace())
                .unwrap_or(rest.len());
            if let Some(at) = rest[..end].rfind('@') {
                out.push_str("://REDACTED@");
                i += 3 + at + 1;
                continue;
            }
        }
        // Copy one whole character.
        let ch_len = message[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&message[i..i + ch_len]);
        i += ch_len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_presigned_urls_and_userinfo() {
        let m = "GET https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA123%2F2024&X-Amz-Signature=abcdef&x=1 failed";
        let r = redact(m);
        assert!(!r.contains("AKIA123"), "{r}");
        assert!(!r.contains("abcdef"), "{r}");
        assert!(r.contains("x=1 failed"), "{r}");
        let r = redact("connect to http://admin:hunter2@minio:9000/bucket refused");
        assert!(!r.contains("hunter2"), "{r}");
        assert!(r.contains("minio:9000/bucket"), "{r}");
        assert_eq!(redact("plain ünïcode message"), "plain ünïcode message");
    }

    fn service_error(
        code: &str,
        status: u16,
    ) -> SdkError<
        aws_sdk_s3::operation::head_bucket::HeadBucketError,
        aws_sdk_s3::config::http::HttpResponse,
    > {
        let meta = aws_sdk_s3::error::ErrorMetadata::builder()
            .code(code)
            .message("server says no")
            .build();
        let raw = aws_sdk_s3::config::http::HttpResponse::new(
            status.try_into().unwrap(),
            aws_smithy_types::body::SdkBody::empty(),
        );
        SdkError::service_error(
            aws_sdk_s3::operation::head_bucket::HeadBucketError::generic(meta),
            raw,
        )
    }

    #[test]
    fn sdk_errors_are_classified() {
        for (code, status, transient) in [
            ("SlowDown", 503, true),
            ("InternalError", 500, true),
            ("Throttling", 400, true),
            ("RequestTimeout", 400, true),
            ("AccessDenied", 403, false),
            ("NoSuchBucket", 404, false),
            ("InvalidArgument", 400, false),
            ("MalformedPolicy", 400, false),
        ] {
            let e = S3Error::from_sdk("bk", "PutBucketPolicy", None, &service_error(code, status));
            assert_eq!(e.is_transient(), transient, "{code}");
            assert_eq!(e.code(), Some(code));
            assert_eq!(
                e.to_string(),
                format!("S3 PutBucketPolicy on bucket bk: {code} (HTTP {status}): server says no")
            );
        }
        assert!(is_no_such_bucket(&service_error("NoSuchBucket", 404)));
        assert!(is_no_such_bucket(&service_error("NotFound", 404)));
        assert!(!is_no_such_bucket(&service_error("AccessDenied", 403)));
        let timeout: SdkError<
            aws_sdk_s3::operation::head_bucket::HeadBucketError,
            aws_sdk_s3::config::http::HttpResponse,
        > = SdkError::timeout_error("deadline");
        let e = S3Error::from_sdk("bk", "HeadObject", Some("a/b.txt"), &timeout);
        assert!(e.is_transient());
        assert!(
            e.to_string()
                .contains("HeadObject on bucket bk key \"a/b.txt\""),
            "{e}"
        );
    }

    type HeadErr = SdkError<
        aws_sdk_s3::operation::head_bucket::HeadBucketError,
        aws_sdk_s3::config::http::HttpResponse,
    >;

    #[test]
    fn status_codes_and_content_errors_are_classified() {
        for (code, status, transient) in [
            ("TooManyRequests", 429, true),
            ("BadGateway", 502, true),
            ("GatewayTimeout", 504, true),
            ("ServiceUnavailable", 503, true),
            ("InvalidBucketName", 400, false),
            ("MalformedXML", 400, false),
            ("InvalidTag", 400, false),
            ("BucketAlreadyExists", 409, false),
        ] {
            let e = S3Error::from_sdk("bk", "CreateBucket", None, &service_error(code, status));
            assert_eq!(e.is_transient(), transient, "{code} {status}");
        }
    }

    #[test]
    fn connection_failures_are_transient_and_user_errors_are_not() {
        use aws_sdk_s3::error::ConnectorError;
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e: HeadErr = SdkError::dispatch_failure(ConnectorError::io(Box::new(refused)));
        let e = S3Error::from_sdk("bk", "HeadBucket", None, &e);
        assert!(e.is_transient(), "{e:?}");
        assert!(e.to_string().contains("HeadBucket on bucket bk"), "{e}");
        let e: HeadErr = SdkError::dispatch_failure(ConnectorError::timeout("slow".into()));
        assert!(S3Error::from_sdk("bk", "HeadBucket", None, &e).is_transient());
        let e: HeadErr = SdkError::dispatch_failure(ConnectorError::user("bad uri".into()));
        assert!(!S3Error::from_sdk("bk", "HeadBucket", None, &e).is_transient());
        let raw = |s: u16| {
            aws_sdk_s3::config::http::HttpResponse::new(
                s.try_into().unwrap(),
                aws_smithy_types::body::SdkBody::empty(),
            )
        };
        let e: HeadErr = SdkError::response_error("unparsable body", raw(503));
        assert!(S3Error::from_sdk("bk", "HeadBucket", None, &e).is_transient());
        let e: HeadErr = SdkError::response_error("unparsable body", raw(400));
        assert!(!S3Error::from_sdk("bk", "HeadBucket", None, &e).is_transient());
        let e: HeadErr = SdkError::construction_failure("no region");
        assert!(!S3Error::from_sdk("bk", "HeadBucket", None, &e).is_transient());
    }

    #[test]
    fn server_messages_are_scrubbed_of_credentials() {
        let meta = aws_sdk_s3::error::ErrorMetadata::builder()
            .code("AccessDenied")
            .message("denied for https://u:s3cr3t@h/b?X-Amz-Credential=AKIAEXAMPLE%2F1&X-Amz-Signature=f00d")
            .build();
        let raw = aws_sdk_s3::config::http::HttpResponse::new(
            403.try_into().unwrap(),
            aws_smithy_types::body::SdkBody::empty(),
        );
        let e: HeadErr = SdkError::service_error(
            aws_sdk_s3::operation::head_bucket::HeadBucketError::generic(meta),
            raw,
        );
        let text = S3Error::from_sdk("bk", "HeadBucket", None, &e).to_string();
        for secret in ["s3cr3t", "AKIAEXAMPLE", "f00d"] {
            assert!(!text.contains(secret), "{secret}: {text}");
        }
    }

    #[test]
    fn transience_and_display() {
        let e = S3Error::Api {
            bucket: "b".into(),
            call: "PutBucketVersioning",
            key: None,
            code: Some("SlowDown".into()),
            status: Some(503),
            message: "reduce your request rate".into(),
            transient: true,
        };
        assert!(e.is_transient());
        assert_eq!(
            e.to_string(),
            "S3 PutBucketVersioning on bucket b: SlowDown (HTTP 503): reduce your request rate"
        );
        let e = S3Error::NotEmpty { bucket: "b".into() };
        assert!(!e.is_transient());
        assert!(e.to_string().contains("not empty"));
    }
}
