//! Optional HTTP health checks from the host config: every check must answer with the expected
//! status (and body substring) before the deadline.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::HttpCheck;
use crate::status::ObjectError;

/// Checks until all pass or the deadline passes; returns the checks still failing, with why.
/// A failing check is not fatal at once (services take a moment after a rollout), but its last
/// answer is what the note records.
pub async fn wait_http_checks(
    checks: &[HttpCheck],
    timeout: Duration,
    cancel: &CancellationToken,
) -> Vec<ObjectError> {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            return vec![ObjectError {
                object: "http check".into(),
                at: None,
                reason: format!("cannot build an HTTP client: {e}"),
            }];
        }
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut failing = Vec::new();
    for check in checks {
        loop {
            match probe(&client, check).await {
                Ok(()) => break,
                Err(reason) => {
                    let now = tokio::time::Instant::now();
                    if now >= deadline || cancel.is_cancelled() {
                        failing.push(ObjectError {
                            object: format!("http check {}", redact(&check.url)),
                            at: None,
                            reason,
                        });
                        break;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(check.interval.min(deadline - now)) => {}
                        _ = cancel.cancelled() => {}
                    }
                }
            }
        }
    }
    failing
}

async fn probe(client: &reqwest::Client, check: &HttpCheck) -> Result<(), String> {
    let response = client
        .get(&check.url)
        .send()
        .await
        .map_err(|e| format!("request failed: {}", e.without_url()))?;
    let status = response.status().as_u16();
    if status != check.expect_status {
        return Err(format!("status {status}, expected {}", check.expect_status));
    }
    if let Some(needle) = &check.body_contains {
        let body = response
            .text()
            .await
            .map_err(|e| format!("reading body: {}", e.without_url()))?;
        if !body.contains(needle.as_str()) {
            return Err(format!("body does not contain {needle:?}"));
        }
    }
    Ok(())
}

/// URLs in notes lose their userinfo and query (which may carry tokens).
fn redact(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or(url);
    match without_query.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((_, host)) => format!("{scheme}://{host}"),
            None => without_query.to_string(),
        },
        None => without_query.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_lose_credentials_and_queries() {
        assert_eq!(super::redact("https://u:p@h/x?token=1"), "https://h/x");
    }
}
