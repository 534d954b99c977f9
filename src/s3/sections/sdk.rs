//! What every section's S3 calls share: classifying a Get* answer ([`Got`]), logging and error
//! mapping of a Put*/Delete* call. May call the SDK's error types and `s3::error`.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::s3::error::{HttpStatus, S3Error};

/// Result of one Get* call.
#[derive(Debug, PartialEq)]
pub enum Got<T> {
    Value(T),
    /// The server says the configuration is absent.
    Absent,
    /// The server does not implement the call.
    Unsupported,
}

impl<T> Got<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Got<U> {
        match self {
            Got::Value(v) => Got::Value(f(v)),
            Got::Absent => Got::Absent,
            Got::Unsupported => Got::Unsupported,
        }
    }

    /// An absent configuration as the section's "none" value.
    pub fn absent_as(self, none: T) -> Got<T> {
        match self {
            Got::Absent => Got::Value(none),
            other => other,
        }
    }
}

/// Classifies the answer of a Get* call: error codes in `absent` mean "not configured"; 501 or
/// `NotImplemented` mean the server lacks the feature.
pub(crate) fn classify<T, E, R>(
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

/// Logs a configuration write about to be sent.
pub(crate) fn writing(bucket: &str, field: &'static str, call: &'static str) {
    tracing::info!(bucket, call, field, "writing bucket configuration");
}

/// The outcome of a sent write: one call, or the SDK error naming bucket and call.
pub(crate) fn sent<T, E, R>(
    bucket: &str,
    call: &'static str,
    result: Result<T, SdkError<E, R>>,
) -> Result<u32, S3Error>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + HttpStatus,
{
    result
        .map(|_| 1)
        .map_err(|e| S3Error::from_sdk(bucket, call, None, &e))
}

/// A request that the SDK refused to build (a value it rejects).
pub(crate) fn build_err(bucket: &str, call: &'static str, e: impl std::fmt::Display) -> S3Error {
    S3Error::InvalidPlan {
        bucket: bucket.to_string(),
        message: format!("cannot build the {call} request: {e}"),
    }
}
