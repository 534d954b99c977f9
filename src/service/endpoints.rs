//! `/metrics`, `/healthz` and `/readyz` over plain HTTP/1.1 on a loopback address.
//!
//! - `/healthz`: 200 `ok` while the process serves requests (liveness).
//! - `/readyz`: 200 when the host config is loaded and the repository was fetched successfully
//!   within `max_fetch_age`; 503 with the reason otherwise.
//! - `/metrics`: OpenMetrics text.
//!
//! The endpoints are unauthenticated and read-only; by default they refuse non-loopback
//! addresses.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Metrics, ServiceError};

/// `Content-Type` of `/metrics`.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What `/readyz` reports: the host config is loaded and the repository was reached recently.
#[derive(Debug)]
pub struct Readiness {
    max_fetch_age: Duration,
    config_loaded: AtomicBool,
    last_fetch: Mutex<Option<Instant>>,
}

impl Readiness {
    /// Not ready until [`Readiness::config_loaded`] and [`Readiness::fetch_succeeded`] were
    /// called; ready again becomes not-ready when the last successful fetch is older than
    /// `max_fetch_age` (pick a few poll intervals).
    pub fn new(max_fetch_age: Duration) -> Arc<Readiness> {
        Arc::new(Readiness {
            max_fetch_age,
            config_loaded: AtomicBool::new(false),
            last_fetch: Mutex::new(None),
        })
    }

    /// The host config was loaded and validated.
    pub fn config_loaded(&self) {
        self.config_loaded.store(true, Ordering::Release);
    }

    /// A fetch from the config repository just succeeded.
    pub fn fetch_succeeded(&self) {
        *self
            .last_fetch
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// Whether the daemon is ready, and why (or why not).
    pub fn is_ready(&self) -> (bool, String) {
        if !self.config_loaded.load(Ordering::Acquire) {
            return (false, "host config not loaded yet".to_owned());
        }
        let last = *self
            .last_fetch
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(last) = last else {
            return (
                false,
                "config repository not fetched successfully yet".to_owned(),
            );
        };
        let age = last.elapsed();
        if age > self.max_fetch_age {
            return (
                false,
                format!(
                    "last successful fetch of the config repository was {}s ago (limit {}s)",
                    age.as_secs(),
                    self.max_fetch_age.as_secs()
                ),
            );
        }
        (true, "ok".to_owned())
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

/// Binds `addr` (loopback only; port 0 picks a free port) and serves `/metrics`, `/healthz` and
/// `/readyz` until `cancel` fires. Returns the bound address and the server task.
pub async fn serve_endpoints(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    cancel: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), ServiceError> {
    serve_endpoints_on(addr, false, metrics, readiness, cancel).await
}

/// [`serve_endpoints`], optionally allowing a non-loopback `addr` (the host config must opt in
/// explicitly: these endpoints have no authentication).
pub async fn serve_endpoints_on(
    addr: SocketAddr,
    allow_non_loopback: bool,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    cancel: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), ServiceError> {
    if !addr.ip().is_loopback() && !allow_non_loopback {
        return Err(ServiceError::NonLoopback { addr });
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServiceError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServiceError::LocalAddr { addr, source })?;

    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz_handler))
        .route("/readyz", get(readyz_handler))
        .with_state(AppState { metrics, readiness });

    tracing::info!(address = %bound, "serving /metrics, /healthz and /readyz");
    let handle = tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        match result {
            Ok(()) => tracing::debug!(address = %bound, "endpoint server stopped"),
            Err(error) => {
                tracing::error!(address = %bound, error = %error, "endpoint server failed")
            }
        }
    });
    Ok((bound, handle))
}

async fn metrics_handler(State(state): State<AppState>) -> Response {
    match state.metrics.try_encode() {
        Ok(text) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], text).into_response(),
        Err(error) => {
            tracing::error!(error = %error, "metrics encoding failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics encoding failed\n",
            )
                .into_response()
        }
    }
}

async fn healthz_handler() -> &'static str {
    "ok"
}

async fn readyz_handler(State(state): State<AppState>) -> (StatusCode, String) {
    let (ready, reason) = state.readiness.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Reply {
        status: u16,
        headers: String,
        body: String,
    }

    async fn get(addr: SocketAddr, path: &str) -> Reply {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        let raw = String::from_utf8(raw).expect("utf8");
        let (head, body) = raw.split_once("\r\n\r\n").expect("head/body split");
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        Reply {
            status,
            headers: head.to_ascii_lowercase(),
            body: body.to_owned(),
        }
    }

    async fn start() -> (
        SocketAddr,
        Arc<Metrics>,
        Arc<Readiness>,
        CancellationToken,
        JoinHandle<()>,
    ) {
        let metrics = Metrics::new();
        let readiness = Readiness::new(Duration::from_secs(120));
        let cancel = CancellationToken::new();
        let (addr, handle) = serve_endpoints(
            "127.0.0.1:0".parse().expect("addr"),
            metrics.clone(),
            readiness.clone(),
            cancel.clone(),
        )
        .await
        .expect("serve");
        (addr, metrics, readiness, cancel, handle)
    }

    #[tokio::test]
    async fn healthz_readyz_metrics_over_loopback() {
        let (addr, metrics, readiness, cancel, handle) = start().await;
        assert_ne!(addr.port(), 0);

        let r = get(addr, "/healthz").await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));

        let r = get(addr, "/readyz").await;
        assert_eq!(r.status, 503);
        assert!(r.body.contains("config not loaded"), "{}", r.body);

        readiness.config_loaded();
        let r = get(addr, "/readyz").await;
        assert_eq!(r.status, 503);
        assert!(r.body.contains("not fetched"), "{}", r.body);

        readiness.fetch_succeeded();
        let r = get(addr, "/readyz").await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));

        metrics.rollback("prod");
        let r = get(addr, "/metrics").await;
        assert_eq!(r.status, 200);
        assert!(
            r.headers
                .contains(&format!("content-type: {OPENMETRICS_CONTENT_TYPE}")),
            "{}",
            r.headers
        );
        assert!(
            r.body
                .contains("gitopsd_rollbacks_total{environment=\"prod\"} 1"),
            "{}",
            r.body
        );
        assert!(r.body.ends_with("# EOF\n"));

        let r = get(addr, "/nope").await;
        assert_eq!(r.status, 404);

        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .expect("server stops on cancel")
            .expect("server task");
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "listener closed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_expires_with_fetch_age() {
        let readiness = Readiness::new(Duration::from_secs(90));
        readiness.config_loaded();
        readiness.fetch_succeeded();
        assert!(readiness.is_ready().0);
        tokio::time::advance(Duration::from_secs(91)).await;
        let (ready, reason) = readiness.is_ready();
        assert!(!ready);
        assert!(reason.contains("91s ago (limit 90s)"), "{reason}");
        readiness.fetch_succeeded();
        assert_eq!(readiness.is_ready(), (true, "ok".to_owned()));
    }

    #[tokio::test]
    async fn non_loopback_needs_opt_in() {
        let cancel = CancellationToken::new();
        let err = serve_endpoints(
            "0.0.0.0:0".parse().expect("addr"),
            Metrics::new(),
            Readiness::new(Duration::from_secs(1)),
            cancel.clone(),
        )
        .await
        .expect_err("non-loopback refused");
        assert!(err.to_string().contains("0.0.0.0:0"), "{err}");

        let (addr, handle) = serve_endpoints_on(
            "0.0.0.0:0".parse().expect("addr"),
            true,
            Metrics::new(),
            Readiness::new(Duration::from_secs(1)),
            cancel.clone(),
        )
        .await
        .expect("allowed explicitly");
        assert_ne!(addr.port(), 0);
        cancel.cancel();
        handle.await.expect("server task");
    }

    #[tokio::test]
    async fn bind_error_names_the_address() {
        let (addr, _m, _r, cancel, _h) = start().await;
        let err = serve_endpoints(
            addr,
            Metrics::new(),
            Readiness::new(Duration::from_secs(1)),
            cancel.clone(),
        )
        .await
        .expect_err("address in use");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
        cancel.cancel();
    }
}
