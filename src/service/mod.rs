//! The service shell: everything that makes `gitopsd run` a well-behaved systemd service,
//! independent of what the reconcile loop does. May call: nothing else in the crate (the
//! scheduler calls it):
//!
//! - [`Metrics`]: OpenMetrics counters, gauges and histograms (prometheus-client);
//! - [`Readiness`] and [`serve_endpoints`]: `/metrics`, `/healthz`, `/readyz` on a loopback socket;
//! - [`sd`]: the systemd notify protocol (`READY=1`, `STATUS=`, `WATCHDOG=1`, `STOPPING=1`, …);
//! - [`Heartbeat`] and [`spawn_watchdog`]: `WATCHDOG=1` only while the reconcile loop is alive;
//! - [`Signal`] and [`spawn_signal_handler`]: SIGTERM/SIGINT/SIGHUP;
//! - [`serve_webhooks`]: the push-event receiver (signed GitHub, GitLab and generic events).
//!
//! All time is `tokio::time`, so tests can pause it.

mod endpoints;
mod metrics;
pub mod sd;
mod signals;
mod watchdog;
mod webhooks;

pub use endpoints::{Readiness, serve_endpoints, serve_endpoints_on};
pub use metrics::{ACTIONS, Metrics, OUTCOMES};
pub use signals::{FORCED_EXIT_CODE, Signal, spawn_signal_handler};
pub use watchdog::{Heartbeat, spawn_watchdog, spawn_watchdog_with};
pub use webhooks::{MAX_BODY, Verdict, WebhookKeys, judge, serve_webhooks};

use std::net::SocketAddr;

/// What went wrong while setting up or running the service plumbing. Each variant names the
/// address, socket or signal involved.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The endpoint address is not loopback and non-loopback was not explicitly allowed.
    #[error(
        "refusing to serve metrics and health endpoints on non-loopback address {addr}: \
         they are unauthenticated; use 127.0.0.1 or ::1, or allow it explicitly"
    )]
    NonLoopback { addr: SocketAddr },
    /// Binding the endpoint listener failed (address in use, permission, …).
    #[error("binding the metrics and health endpoints on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Binding the webhook receiver failed.
    #[error("binding the webhook receiver on {addr}")]
    WebhookBind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The bound listener could not report its local address.
    #[error("reading the local address of the endpoint listener bound on {addr}")]
    LocalAddr {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Installing a signal handler failed.
    #[error("installing the {signal} handler")]
    Signal {
        signal: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// Sending a message to the systemd notify socket failed.
    #[error("sending {message:?} to the systemd notify socket {socket}")]
    Notify {
        socket: String,
        message: String,
        #[source]
        source: std::io::Error,
    },
    /// Encoding metrics as OpenMetrics text failed.
    #[error("encoding metrics as OpenMetrics text")]
    Encode(#[source] std::fmt::Error),
}
