//! What every section's S3 calls share: classifying a Get* answer ([`Got`]), and a Put*/Delete*
//! [`Call`] (logging, error mapping). May call the SDK's error types and `s3::error`.

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

/// One Put*/Delete* call of a section: logged when it is made, its errors naming bucket and call.
pub(crate) struct Call<'a> {
    bucket: &'a str,
    name: &'static str,
}

impl<'a> Call<'a> {
    /// Starts the call `name` that writes section `field` (logs it).
    pub(crate) fn new(bucket: &'a str, field: &'static str, name: &'static str) -> Call<'a> {
        tracing::info!(bucket, call = name, field, "writing bucket configuration");
        Call { bucket, name }
    }

    /// A request that the SDK refused to build (a value it rejects).
    pub(crate) fn build_err(&self, e: impl std::fmt::Display) -> S3Error {
        S3Error::InvalidPlan {
            bucket: self.bucket.to_string(),
            message: format!("cannot build the {} request: {e}", self.name),
        }
    }

    /// Sends the request: one write call, or the SDK error naming bucket and call.
    pub(crate) async fn send<T, E, R>(
        self,
        request: impl Future<Output = Result<T, SdkError<E, R>>>,
    ) -> Result<u32, S3Error>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + HttpStatus,
    {
        match request.await {
            Ok(_) => Ok(1),
            Err(e) => Err(S3Error::from_sdk(self.bucket, self.name, None, &e)),
        }
    }
}
