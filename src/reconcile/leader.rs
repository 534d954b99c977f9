//! With `ha:`: an environment task that reconciles only while this host leads the environment.
//! The election runs beside it ([`crate::ha::Elector`]); each term starts the ordinary
//! environment loop with the term's token, which drops an in-flight pass the moment the term
//! ends (it is not recorded; the next leader redoes it: every step is safe to redo).

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::EnvWorker;
use super::scheduler::{Shared, env_loop};
use super::source::git;
use crate::ha::{Elector, Term};

/// The environment's elector, when `ha:` is configured and the environment has a cluster.
pub(super) fn elector(worker: &EnvWorker, shared: &Shared) -> Option<Elector> {
    let (ha, instance) = shared.ha.as_ref()?;
    let cluster = worker.cluster.as_ref()?;
    Some(Elector::new(
        worker.name(),
        cluster.client().clone(),
        ha,
        instance,
        Some(Arc::clone(&shared.metrics)),
    ))
}

/// `gitopsd once` with `ha:` takes no Lease: it refuses an environment whose Lease names
/// another host, so a pass by hand cannot run beside that host's daemon.
pub(super) async fn once_allowed(
    worker: &EnvWorker,
    config: &crate::config::HostConfig,
) -> Result<(), super::ReconcileError> {
    let (Some(ha), Some(cluster)) = (&config.ha, &worker.cluster) else {
        return Ok(());
    };
    let lease = crate::ha::lease_status(
        cluster.client().clone(),
        ha,
        &config.instance(),
        worker.name(),
    )
    .await;
    let holder = lease["holder"].as_str().filter(|h| *h != ha.identity());
    match (holder, lease["error"].as_str()) {
        (Some(h), _) => Err(super::ReconcileError::Setup {
            env: worker.name().to_string(),
            message: format!(
                "the environment's Lease is held by {h}: run once there, or stop the daemons first"
            ),
        }),
        (None, Some(e)) => Err(super::ReconcileError::Setup {
            env: worker.name().to_string(),
            message: format!("cannot read the environment's Lease: {e}"),
        }),
        (None, None) => Ok(()),
    }
}

/// Stands by, leads when elected, stands by again when the term ends; until `cancel`. The
/// Lease is released only after the loop has stopped writing.
pub(super) async fn led_loop(
    mut worker: EnvWorker,
    shared: Shared,
    cancel: CancellationToken,
    elector: Elector,
) {
    let env = worker.name().to_string();
    let (tx, mut terms) = watch::channel::<Option<Arc<Term>>>(None);
    let stop = CancellationToken::new();
    let election = tokio::spawn(elector.run(tx, stop.clone()));
    loop {
        let term = tokio::select! {
            _ = cancel.cancelled() => break,
            t = next_term(&mut terms) => t,
        };
        let Some(term) = term else { break };
        worker.lead(Some(Arc::clone(&term)));
        env_loop(
            &mut worker,
            shared.clone(),
            cancel.clone(),
            term.lost().clone(),
        )
        .await;
        worker.lead(None);
        if cancel.is_cancelled() {
            break;
        }
        drop_unpushed(&shared, &env).await;
    }
    stop.cancel();
    let _ = election.await;
}

/// The next term (`None` when the election stopped).
async fn next_term(terms: &mut watch::Receiver<Option<Arc<Term>>>) -> Option<Arc<Term>> {
    match terms.wait_for(Option::is_some).await {
        Ok(t) => t.clone(),
        Err(_) => None,
    }
}

/// Sections of `env` written in the ended term but not pushed yet are put back as the remote
/// has them: pushed later they would overwrite what the new leader recorded (the three-way
/// merge keeps the side that changed a section).
async fn drop_unpushed(shared: &Shared, env: &str) {
    let name = env.to_string();
    let dropped = git(&shared.mirror, move |m| {
        m.rewrite_pending_notes(&|theirs, ours| crate::status::revert_section(theirs, ours, &name))
    })
    .await;
    match dropped {
        Ok(0) => {}
        Ok(n) => {
            tracing::warn!(
                env,
                notes = n,
                "unpushed records of the ended term dropped; the leader redoes them"
            )
        }
        Err(e) => {
            tracing::warn!(env, error = %e, "unpushed records of the ended term could not be dropped")
        }
    }
}
