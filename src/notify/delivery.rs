//! Effects: one HTTP endpoint (client, URL, headers from a file) and a bounded retry with jittered
//! exponential backoff. Header values and URLs that may hold tokens never reach logs or errors.

use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use tokio_util::sync::CancellationToken;

use super::NotifyError;
use crate::service::Metrics;

/// Attempts per delivery before giving up (0.8 s, 1.6 s, … between them: about 25 s in all).
pub(super) const MAX_ATTEMPTS: u32 = 5;
/// How long a shutdown waits for what is still queued.
pub(super) const DRAIN: Duration = Duration::from_secs(5);

/// Where notifications of one target go.
pub(super) struct Endpoint {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    /// `target` metric label: `alertmanager` or `webhook`.
    pub kind: &'static str,
    /// How logs name it: the key path and the URL's origin only (a path may be a token).
    pub name: String,
}

impl Endpoint {
    pub(super) fn new(
        kind: &'static str,
        key: &str,
        url: &str,
        headers: Vec<(String, String)>,
        timeout: Duration,
    ) -> Result<Endpoint, NotifyError> {
        let setup = |message: String| NotifyError::Setup {
            key: key.to_string(),
            message,
        };
        let url = reqwest::Url::parse(url).map_err(|e| setup(format!("not a URL: {e}")))?;
        let mut map = HeaderMap::new();
        for (i, (name, value)) in headers.into_iter().enumerate() {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| setup(format!("header {} has an invalid name", i + 1)))?;
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| setup(format!("header {name} has an invalid value")))?;
            value.set_sensitive(true);
            map.append(name, value);
        }
        map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        // No redirects: headers (credentials) go only where the operator said.
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| setup(format!("cannot build an HTTP client: {}", e.without_url())))?;
        Ok(Endpoint {
            name: format!("{key} {}", url.origin().ascii_serialization()),
            client,
            url,
            headers: map,
            kind,
        })
    }

    /// The endpoint's URL with `path` appended to its own path.
    pub(super) fn join(mut self, path: &str) -> Endpoint {
        let base = self.url.path().trim_end_matches('/').to_string();
        self.url.set_path(&format!("{base}{path}"));
        self
    }

    /// One POST of a JSON body; any 2xx is success.
    async fn post(&self, body: &[u8]) -> Result<(), NotifyError> {
        let response = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| NotifyError::Request {
                target: self.name.clone(),
                message: e.without_url().to_string(),
                transient: true,
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        Err(NotifyError::Request {
            target: self.name.clone(),
            message: format!("answered {status}"),
            transient: status.is_server_error() || status.as_u16() == 429,
        })
    }

    /// Posts `body`, retrying passing failures with backoff up to [`MAX_ATTEMPTS`] (one attempt
    /// once `cancel` is set); counts the result. False when it gave up.
    pub(super) async fn deliver(
        &self,
        body: &[u8],
        metrics: Option<&Metrics>,
        cancel: &CancellationToken,
    ) -> bool {
        let mut attempt = 0;
        let result = loop {
            match self.post(body).await {
                Ok(()) => break Ok(()),
                Err(e) if !e.is_transient() || attempt + 1 >= MAX_ATTEMPTS => break Err(e),
                Err(e) if cancel.is_cancelled() => break Err(e),
                Err(e) => {
                    let wait = crate::reconcile::backoff(attempt);
                    tracing::debug!(target_name = %self.name, error = %e, retry_in = ?wait, "notification failed; retrying");
                    attempt += 1;
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = cancel.cancelled() => {}
                    }
                }
            }
        };
        let ok = result.is_ok();
        if let Err(e) = result {
            tracing::warn!(target_name = %self.name, attempts = attempt + 1, error = %e, "notification not delivered; giving up");
        }
        if let Some(m) = metrics {
            m.notification(self.kind, if ok { "sent" } else { "failed" });
        }
        ok
    }
}
