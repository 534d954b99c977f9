//! SIGTERM/SIGINT/SIGHUP handling.
//!
//! - First SIGTERM or SIGINT: graceful shutdown. The `shutdown` token is cancelled and
//!   [`Signal::Shutdown`] sent; the daemon finishes (or abandons at a safe point) the current
//!   step within its grace period, records what it must, sends `STOPPING=1` and exits 0.
//! - Second SIGTERM or SIGINT: the operator insists. Logged, then the process exits at once
//!   with code 130, without waiting for anything.
//! - SIGHUP: [`Signal::Reload`] (re-read the host config). Reloads arriving while one is
//!   still queued are coalesced; SIGHUP during shutdown is ignored.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc::Sender;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::ServiceError;

/// Exit code after a second termination signal.
pub const FORCED_EXIT_CODE: i32 = 130;

/// What a signal asks the daemon to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: stop gracefully.
    Shutdown,
    /// SIGHUP: reload the host config.
    Reload,
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Signal::Shutdown => "shutdown",
            Signal::Reload => "reload",
        })
    }
}

/// Installs the SIGTERM, SIGINT and SIGHUP handlers (before returning, so no signal is lost
/// once this returns `Ok`) and spawns the task that turns them into [`Signal`]s on `tx`.
pub fn spawn_signal_handler(
    tx: Sender<Signal>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, ServiceError> {
    let install = |kind: SignalKind, name: &'static str| {
        signal(kind).map_err(|source| ServiceError::Signal {
            signal: name,
            source,
        })
    };
    let mut term = install(SignalKind::terminate(), "SIGTERM")?;
    let mut int = install(SignalKind::interrupt(), "SIGINT")?;
    let mut hup = install(SignalKind::hangup(), "SIGHUP")?;

    Ok(tokio::spawn(async move {
        let mut shutting_down = false;
        loop {
            let (name, received) = tokio::select! {
                r = term.recv() => ("SIGTERM", r),
                r = int.recv() => ("SIGINT", r),
                r = hup.recv() => ("SIGHUP", r),
            };
            if received.is_none() {
                tracing::debug!(signal = name, "signal stream closed; signal handler stops");
                break;
            }
            if name == "SIGHUP" {
                if shutting_down {
                    tracing::info!(signal = name, "ignoring reload request during shutdown");
                    continue;
                }
                tracing::info!(signal = name, "reload requested");
                deliver(&tx, Signal::Reload);
                continue;
            }
            if shutting_down {
                tracing::error!(
                    signal = name,
                    exit_code = FORCED_EXIT_CODE,
                    "second termination signal; exiting immediately without finishing the current step"
                );
                std::process::exit(FORCED_EXIT_CODE);
            }
            shutting_down = true;
            tracing::info!(
                signal = name,
                "shutdown requested; finishing gracefully (send it again to exit immediately)"
            );
            shutdown.cancel();
            deliver(&tx, Signal::Shutdown);
        }
    }))
}

fn deliver(tx: &Sender<Signal>, sig: Signal) {
    match tx.try_send(sig) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            tracing::debug!(signal = %sig, "signal channel full; request coalesced with a pending one");
        }
        Err(TrySendError::Closed(_)) => {
            tracing::debug!(signal = %sig, "nobody listens for signals any more");
        }
    }
}
