//! Stage `health`: waits, from the watch-fed cache, until every object of the environment is
//! healthy, one has failed, the deadline passes, a newer commit arrives, or shutdown; then
//! buckets and the optional HTTP checks.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::apply::Transition;
use super::prepare::Prepared;
use super::{EnvWorker, ReconcileError, http_check, source};
use crate::git::{Mirror, Oid};
use crate::k8s::live;
use crate::manifest::ObjectKey;
use crate::status::ObjectError;

/// How often a wait beats the watchdog while nothing changes.
const BEAT_EVERY: Duration = Duration::from_secs(5);

/// The end of a health wait.
#[derive(Debug)]
pub(super) enum Verdict {
    Healthy,
    Unhealthy(Vec<ObjectError>),
    /// A newer branch head arrived first (only when the wait may be superseded).
    Superseded(Oid),
    /// Shutdown: no verdict.
    Interrupted,
}

fn errors(items: Vec<(ObjectKey, String)>) -> Vec<ObjectError> {
    items
        .into_iter()
        .map(|(key, reason)| ObjectError {
            object: key.to_string(),
            at: None,
            reason,
        })
        .collect()
}

/// Resolves when `heads` shows a head other than `commit` that changes one of `dirs` (what
/// makes the environment's desired state). A head that changes none of them, e.g. another
/// environment's folder, renders the same: superseding would only restart this wait, and with
/// it the deadline, so an environment that never gets healthy would never be rolled back.
async fn newer_head(
    follow: Option<(watch::Receiver<Option<Oid>>, Arc<Mirror>)>,
    commit: Oid,
    dirs: Vec<String>,
) -> Oid {
    let Some((mut heads, mirror)) = follow else {
        return std::future::pending().await;
    };
    loop {
        let head = *heads.borrow_and_update();
        if let Some(head) = head
            && head != commit
            && changes_any(&mirror, commit, head, &dirs).await
        {
            return head;
        }
        if heads.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Whether anything under one of `dirs` differs between `from` and `to`; an unreadable diff
/// counts as a change (superseding only re-plans).
async fn changes_any(mirror: &Arc<Mirror>, from: Oid, to: Oid, dirs: &[String]) -> bool {
    for dir in dirs {
        if source::folder_changed(mirror, Some(from), to, dir)
            .await
            .unwrap_or(true)
        {
            return true;
        }
    }
    false
}

impl EnvWorker {
    /// Waits for `p`'s objects (at least the generations `t` applied), then its buckets and
    /// HTTP checks. `supersede`: a newer head that changes what `p` was rendered from ends the
    /// wait (compared in this mirror).
    pub(super) async fn wait_health(
        &self,
        p: &Prepared,
        t: &Transition,
        supersede: Option<&Arc<Mirror>>,
        cancel: &CancellationToken,
    ) -> Result<Verdict, ReconcileError> {
        let timeout = self.cfg.health.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let follow = supersede.and_then(|m| Some((self.heads.clone()?, Arc::clone(m))));
        let newer = newer_head(follow, p.commit, p.source_folders(&self.cfg.path));
        tokio::pin!(newer);
        if let Some(cache) = &self.live {
            let keys: Vec<(ObjectKey, live::Awaited)> = p
                .wanted
                .iter()
                .map(|w| {
                    (
                        w.key.clone(),
                        t.applied.get(&w.key).cloned().unwrap_or_default(),
                    )
                })
                .collect();
            let mut changes = cache.subscribe();
            loop {
                self.beat();
                let (failed, progressing) = live::assess(cache, &keys);
                if !failed.is_empty() {
                    return Ok(Verdict::Unhealthy(errors(failed)));
                }
                if progressing.is_empty() {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Ok(Verdict::Unhealthy(errors(progressing)));
                }
                tokio::select! {
                    _ = changes.changed() => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                    _ = tokio::time::sleep(BEAT_EVERY) => {}
                    _ = cancel.cancelled() => return Ok(Verdict::Interrupted),
                    head = &mut newer => return Ok(Verdict::Superseded(head)),
                }
            }
        }
        let problems = self.bucket_health(p).await?;
        if !problems.is_empty() {
            return Ok(Verdict::Unhealthy(problems));
        }
        if !self.cfg.health.http.is_empty() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let checks = http_check::wait_http_checks(&self.cfg.health.http, left, cancel);
            let problems = tokio::select! {
                problems = checks => problems,
                head = &mut newer => return Ok(Verdict::Superseded(head)),
            };
            if cancel.is_cancelled() {
                return Ok(Verdict::Interrupted);
            }
            if !problems.is_empty() {
                return Ok(Verdict::Unhealthy(problems));
            }
        }
        Ok(Verdict::Healthy)
    }
}
