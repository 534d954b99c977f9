//! The daemon's push-event receiver (`webhooks_listen:`): started with the daemon, restarted by a
//! reload that changes its address or secrets, stopped with the daemon. An accepted event sends
//! on the fetcher's trigger channel, exactly as the local-ref watcher does.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::ReconcileError;
use crate::config::HostConfig;
use crate::service::{self, Metrics, WebhookKeys};

/// A running receiver.
pub(super) struct Receiver {
    cancel: CancellationToken,
    handle: JoinHandle<()>,
}

impl Receiver {
    pub(super) async fn stop(self) {
        self.cancel.cancel();
        let _ = self.handle.await;
    }
}

/// Starts the receiver `config` asks for (none without `webhooks_listen`).
pub(super) async fn start(
    config: &HostConfig,
    trigger: mpsc::Sender<()>,
    metrics: &Arc<Metrics>,
    parent: &CancellationToken,
) -> Result<Option<Receiver>, ReconcileError> {
    let Some(addr) = config.webhooks_listen else {
        return Ok(None);
    };
    let setup = |message: String| ReconcileError::Setup {
        env: "*".into(),
        message,
    };
    let secrets = config
        .webhook_secrets
        .load()
        .map_err(|e| setup(e.to_string()))?;
    let keys = WebhookKeys {
        github: secrets.github,
        gitlab: secrets.gitlab,
        generic: secrets.generic,
    };
    let cancel = parent.child_token();
    let (_, handle) =
        service::serve_webhooks(addr, keys, trigger, Arc::clone(metrics), cancel.clone())
            .await
            .map_err(|e| setup(e.to_string()))?;
    Ok(Some(Receiver { cancel, handle }))
}

/// After a reload: the receiver for `new`, restarted only when its address or secrets changed
/// (a new one that cannot start keeps none, with a warning: the poll still fetches).
pub(super) async fn reload(
    current: Option<Receiver>,
    old: &HostConfig,
    new: &HostConfig,
    trigger: mpsc::Sender<()>,
    metrics: &Arc<Metrics>,
    parent: &CancellationToken,
) -> Option<Receiver> {
    if old.webhooks_listen == new.webhooks_listen && old.webhook_secrets == new.webhook_secrets {
        return current;
    }
    if let Some(r) = current {
        r.stop().await;
    }
    match start(new, trigger, metrics, parent).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "webhook receiver not restarted; pushes wait for the poll");
            None
        }
    }
}
