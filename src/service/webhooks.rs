//! The push-event receiver (`webhooks_listen:`): a forge's push event makes the fetcher fetch at
//! once instead of at the next poll. It may listen on a non-loopback address, so every request
//! must prove it knows a secret from `webhook_secrets`:
//!
//! - `POST /hooks/github`: `X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256 of the body with the
//!   GitHub secret; `X-GitHub-Event: push` triggers a fetch, `ping` is answered, others ignored.
//! - `POST /hooks/gitlab`: `X-Gitlab-Token` equal to the GitLab token; `Push Hook` and
//!   `Tag Push Hook` trigger a fetch, others are ignored.
//! - `POST /hooks/generic`: `X-Gitopsd-Signature: sha256=<hex>`, HMAC-SHA256 of the body.
//!
//! A missing or wrong signature is 401, a source without a configured secret or any other path or
//! method 404, a body over [`MAX_BODY`] 413; none of them triggers anything. The body is only
//! authenticated, never parsed: a fetch is cheap and reads what the remote has. Calls nothing of
//! gitopsd but the trigger channel and the metrics (the scheduler hands it the secrets).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use hmac::{KeyInit, Mac};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use zeroize::Zeroizing;

use super::{Metrics, ServiceError};

/// Each source's secret; a source without one is not served.
#[derive(Default)]
pub struct WebhookKeys {
    pub github: Option<Zeroizing<Vec<u8>>>,
    pub gitlab: Option<Zeroizing<Vec<u8>>>,
    pub generic: Option<Zeroizing<Vec<u8>>>,
}

/// Largest body accepted (GitHub caps push payloads at 25 MB, but one with this many commits is
/// rare; a refused event only means the next poll fetches).
pub const MAX_BODY: usize = 1024 * 1024;

type HmacSha256 = hmac::Hmac<sha2_hmac::Sha256>;

/// What a request amounts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Authentic push: fetch now.
    Accepted,
    /// Authentic, but nothing to fetch for (a ping, another event).
    Ignored,
    Unauthorized,
    NotFound,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Accepted => "accepted",
            Verdict::Ignored => "ignored",
            Verdict::Unauthorized => "unauthorized",
            Verdict::NotFound => "not_found",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Verdict::Accepted => StatusCode::ACCEPTED,
            Verdict::Ignored => StatusCode::OK,
            Verdict::Unauthorized => StatusCode::UNAUTHORIZED,
            Verdict::NotFound => StatusCode::NOT_FOUND,
        }
    }
}

/// Whether `header` is `sha256=<hex>` of the HMAC-SHA256 of `body` under `secret` (constant time).
pub fn signature_valid(secret: &[u8], header: Option<&str>, body: &[u8]) -> bool {
    let Some(hex) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Some(given) = decode_hex(hex) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// Whether `given` equals `token` (constant time in the token's content).
pub fn token_valid(token: &[u8], given: Option<&str>) -> bool {
    given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(token)))
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The pure decision for one request: `source` from the path, the headers and the body.
pub fn judge(
    secrets: &WebhookKeys,
    source: &str,
    method: &Method,
    headers: &HeaderMap,
    body: &[u8],
) -> Verdict {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if method != Method::POST {
        return Verdict::NotFound;
    }
    let (secret, authentic, pushed) = match source {
        "github" => (
            secrets.github.as_deref(),
            secrets
                .github
                .as_deref()
                .is_some_and(|s| signature_valid(s, header("x-hub-signature-256"), body)),
            header("x-github-event") == Some("push"),
        ),
        "gitlab" => (
            secrets.gitlab.as_deref(),
            secrets
                .gitlab
                .as_deref()
                .is_some_and(|t| token_valid(t, header("x-gitlab-token"))),
            matches!(
                header("x-gitlab-event"),
                Some("Push Hook") | Some("Tag Push Hook")
            ),
        ),
        "generic" => (
            secrets.generic.as_deref(),
            secrets
                .generic
                .as_deref()
                .is_some_and(|s| signature_valid(s, header("x-gitopsd-signature"), body)),
            true,
        ),
        _ => (None, false, false),
    };
    match (secret, authentic, pushed) {
        (None, _, _) => Verdict::NotFound,
        (Some(_), false, _) => Verdict::Unauthorized,
        (Some(_), true, true) => Verdict::Accepted,
        (Some(_), true, false) => Verdict::Ignored,
    }
}

#[derive(Clone)]
struct Receiver {
    secrets: Arc<WebhookKeys>,
    trigger: mpsc::Sender<()>,
    metrics: Arc<Metrics>,
}

/// Serves the receiver on `addr` until `cancel`; accepted events send on `trigger` (a full
/// channel means a fetch is due already).
pub async fn serve_webhooks(
    addr: SocketAddr,
    secrets: WebhookKeys,
    trigger: mpsc::Sender<()>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), ServiceError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServiceError::WebhookBind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServiceError::LocalAddr { addr, source })?;
    let state = Receiver {
        secrets: Arc::new(secrets),
        trigger,
        metrics,
    };
    let app = Router::new()
        .route("/hooks/{source}", any(hook))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state);
    tracing::info!(address = %bound, "receiving push webhooks");
    let handle = tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(error) = result {
            tracing::warn!(address = %bound, error = %error, "webhook receiver failed");
        }
    });
    Ok((bound, handle))
}

async fn not_found(State(state): State<Receiver>) -> Response {
    state.metrics.webhook_request("unknown", "not_found");
    StatusCode::NOT_FOUND.into_response()
}

async fn hook(
    State(state): State<Receiver>,
    Path(source): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let label = match source.as_str() {
        "github" | "gitlab" | "generic" => source.as_str(),
        _ => "unknown",
    };
    let Ok(body) = body else {
        state.metrics.webhook_request(label, "too_large");
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let verdict = judge(&state.secrets, &source, &method, &headers, &body);
    if verdict == Verdict::Accepted {
        // Full: a fetch is already due, which is all this event asks for.
        let _ = state.trigger.try_send(());
        tracing::debug!(source = label, "push event: fetching now");
    } else if verdict == Verdict::Unauthorized {
        tracing::warn!(
            source = label,
            "webhook refused: missing or wrong signature"
        );
    }
    state.metrics.webhook_request(label, verdict.label());
    verdict.status().into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> WebhookKeys {
        WebhookKeys {
            github: Some(Zeroizing::new(b"gh-secret".to_vec())),
            gitlab: Some(Zeroizing::new(b"gl-token".to_vec())),
            generic: None,
        }
    }

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(secret).unwrap();
        mac.update(body);
        let bytes = mac.finalize().into_bytes();
        format!(
            "sha256={}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn github_push_needs_the_right_signature_over_the_exact_body() {
        let s = secrets();
        let body = br#"{"ref":"refs/heads/main"}"#;
        let good = sign(b"gh-secret", body);
        let h = headers(&[("x-hub-signature-256", &good), ("x-github-event", "push")]);
        assert_eq!(
            judge(&s, "github", &Method::POST, &h, body),
            Verdict::Accepted
        );
        assert_eq!(
            judge(&s, "github", &Method::POST, &h, b"{}"),
            Verdict::Unauthorized,
            "another body"
        );
        let wrong = sign(b"other", body);
        let h = headers(&[("x-hub-signature-256", &wrong), ("x-github-event", "push")]);
        assert_eq!(
            judge(&s, "github", &Method::POST, &h, body),
            Verdict::Unauthorized
        );
        let h = headers(&[("x-github-event", "push")]);
        assert_eq!(
            judge(&s, "github", &Method::POST, &h, body),
            Verdict::Unauthorized,
            "no signature"
        );
        let h = headers(&[("x-hub-signature-256", &good), ("x-github-event", "ping")]);
        assert_eq!(
            judge(&s, "github", &Method::POST, &h, body),
            Verdict::Ignored
        );
        let h = headers(&[("x-hub-signature-256", &good), ("x-github-event", "push")]);
        assert_eq!(
            judge(&s, "github", &Method::GET, &h, body),
            Verdict::NotFound
        );
    }

    #[test]
    fn gitlab_token_and_unconfigured_sources() {
        let s = secrets();
        let h = headers(&[
            ("x-gitlab-token", "gl-token"),
            ("x-gitlab-event", "Push Hook"),
        ]);
        assert_eq!(
            judge(&s, "gitlab", &Method::POST, &h, b"{}"),
            Verdict::Accepted
        );
        let h = headers(&[
            ("x-gitlab-token", "gl-tokeN"),
            ("x-gitlab-event", "Push Hook"),
        ]);
        assert_eq!(
            judge(&s, "gitlab", &Method::POST, &h, b"{}"),
            Verdict::Unauthorized
        );
        let h = headers(&[
            ("x-gitlab-token", "gl-token"),
            ("x-gitlab-event", "Issue Hook"),
        ]);
        assert_eq!(
            judge(&s, "gitlab", &Method::POST, &h, b"{}"),
            Verdict::Ignored
        );
        let h = headers(&[("x-gitopsd-signature", &sign(b"x", b"{}"))]);
        assert_eq!(
            judge(&s, "generic", &Method::POST, &h, b"{}"),
            Verdict::NotFound,
            "no generic secret configured"
        );
        assert_eq!(
            judge(&s, "bitbucket", &Method::POST, &h, b"{}"),
            Verdict::NotFound
        );
    }

    #[test]
    fn signatures_must_be_well_formed_hex() {
        assert!(!signature_valid(b"k", Some("sha256=zz"), b""));
        assert!(!signature_valid(b"k", Some("sha1=00"), b""));
        assert!(!signature_valid(b"k", Some("sha256=abc"), b""));
        assert!(signature_valid(b"k", Some(&sign(b"k", b"x")), b"x"));
    }
}
