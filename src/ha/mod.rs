//! High availability on several management hosts (`ha:` in the host config): per environment,
//! a `coordination.k8s.io/v1` Lease in that environment's cluster says which host reconciles it.
//!
//! Owns the election (`decide`, pure; `lease`, the API calls; [`Elector`], the loop) and the
//! [`Term`]: the token of one unbroken stretch of leadership, which the environment task holds
//! while it reconciles and checks before every write (fencing). May call `crate::k8s` (errors)
//! and the metrics; nothing of the reconcile.
//!
//! Written on kube's `Api<Lease>` rather than a crate: `kube-coordinate` needs kube 2 (we use
//! kube 5), and `kube-lease-manager` (kube 5) computes expiry by comparing the Lease's
//! renewTime with the local clock (hosts' clocks compared), renews by patch without a
//! resourceVersion precondition, and increments `leaseTransitions` in a second, separate write.

pub mod decide;
pub mod lease;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::k8s::KubeError;
use crate::service::Metrics;
use decide::{Action, Memo, Timing};
use lease::{Conflict, LeaseClient};

#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error(transparent)]
    Kube(#[from] KubeError),
    /// This host no longer leads the environment: it must not write.
    #[error("{lease}: not the leader any more ({why}); leaving the environment to the holder")]
    Lost { lease: String, why: String },
}

impl HaError {
    pub fn is_transient(&self) -> bool {
        match self {
            HaError::Kube(e) => e.is_transient(),
            HaError::Lost { .. } => false,
        }
    }
}

/// One term of leadership: the holder and `leaseTransitions` it began with, cancelled the
/// moment this host may no longer assume it leads.
pub struct Term {
    pub transitions: i32,
    lost: CancellationToken,
    valid_until: Mutex<Instant>,
    lease: Arc<LeaseClient>,
    timeout: Duration,
}

impl Term {
    /// Cancelled when the term ends (lost, deadline passed, or released).
    pub fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    fn until(&self) -> Instant {
        self.valid_until
            .lock()
            .map(|g| *g)
            .unwrap_or_else(|p| *p.into_inner())
    }

    fn extend(&self, until: Instant) {
        if let Ok(mut g) = self.valid_until.lock() {
            *g = until;
        }
    }

    fn end(&self) {
        self.lost.cancel();
    }

    /// Before an apply batch or prune: renewed within the renew deadline, on this host's clock.
    pub fn check_local(&self) -> Result<(), HaError> {
        if self.lost.is_cancelled() || Instant::now() >= self.until() {
            return Err(self.lost_error("the term ended"));
        }
        Ok(())
    }

    /// Before a note is written and pushed: the local check, then the Lease read again still
    /// names this host with this term's transitions.
    pub async fn check_remote(&self) -> Result<(), HaError> {
        self.check_local()?;
        let read = tokio::time::timeout(self.timeout, self.lease.read())
            .await
            .map_err(|_| {
                HaError::Kube(KubeError::Timeout {
                    what: self.lease.object(),
                    after: self.timeout,
                })
            })??;
        let seen = read.as_ref().map(lease::seen).unwrap_or_default();
        if seen.holder.as_deref() != Some(self.lease.identity())
            || seen.transitions != self.transitions
        {
            self.end();
            return Err(self.lost_error(&format!(
                "the Lease names {} (transitions {})",
                seen.holder.as_deref().unwrap_or("nobody"),
                seen.transitions
            )));
        }
        self.check_local()
    }

    fn lost_error(&self, why: &str) -> HaError {
        HaError::Lost {
            lease: self.lease.object(),
            why: why.to_string(),
        }
    }
}

/// The election loop of one environment on this host.
pub struct Elector {
    env: String,
    lease: Arc<LeaseClient>,
    timing: Timing,
    metrics: Option<Arc<Metrics>>,
}

/// What one look at the Lease came to.
enum Looked {
    /// This host holds the Lease at `transitions`; `fresh` when this write began a new term.
    Holding {
        transitions: i32,
        fresh: bool,
    },
    StandBy {
        holder: String,
        recheck: Instant,
    },
    /// Another host wrote first: look again at once.
    Raced,
}

impl Elector {
    pub fn new(
        env: &str,
        client: kube::Client,
        ha: &crate::config::HaConfig,
        instance: &str,
        metrics: Option<Arc<Metrics>>,
    ) -> Elector {
        let lease = lease_client(client, ha, instance, env);
        Self::with_lease(env, lease, ha.lease_duration, metrics)
    }

    /// An elector on `lease` (any [`lease::Transport`]).
    pub fn with_lease(
        env: &str,
        lease: LeaseClient,
        lease_duration: Duration,
        metrics: Option<Arc<Metrics>>,
    ) -> Elector {
        Elector {
            env: env.to_string(),
            lease: Arc::new(lease),
            timing: Timing::new(lease_duration),
            metrics,
        }
    }

    /// Runs until `stop`, publishing each new term (and `None` between terms) to `terms`. On
    /// `stop` the Lease is released if this host holds it; the caller stops writing first.
    pub async fn run(self, terms: watch::Sender<Option<Arc<Term>>>, stop: CancellationToken) {
        let mut memo = Memo::default();
        let mut term: Option<Arc<Term>> = None;
        // The holder last reported as leading in our place (logged once per holder).
        let mut other: Option<String> = None;
        if let Some(m) = &self.metrics {
            m.leader(&self.env, false);
        }
        loop {
            let sent = Instant::now();
            let looked = tokio::select! {
                _ = stop.cancelled() => break,
                _ = expiry(&term) => {
                    self.lose(&mut term, &terms, "not renewed within the renew deadline");
                    continue;
                }
                r = tokio::time::timeout(self.timing.retry, self.look(&mut memo)) => r,
            };
            let next = match looked {
                Ok(Ok(Looked::Holding { transitions, fresh })) => {
                    other = None;
                    self.hold(&mut term, &terms, transitions, fresh, sent);
                    sent + self.timing.retry
                }
                Ok(Ok(Looked::StandBy { holder, recheck })) => {
                    self.lose(&mut term, &terms, &format!("held by {holder}"));
                    if other.as_ref() != Some(&holder) {
                        tracing::info!(env = %self.env, lease = %self.lease.object(), holder = %holder, "standing by");
                        other = Some(holder);
                    }
                    recheck.min(Instant::now() + self.timing.retry)
                }
                Ok(Ok(Looked::Raced)) => Instant::now() + Duration::from_millis(100),
                Ok(Err(e)) => {
                    tracing::warn!(env = %self.env, lease = %self.lease.object(), error = %e, "lease not read or written; trying again");
                    Instant::now() + self.timing.retry / 2
                }
                Err(_) => Instant::now(),
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = expiry(&term) => self.lose(&mut term, &terms, "not renewed within the renew deadline"),
                _ = tokio::time::sleep_until(next) => {}
            }
        }
        if term.is_some() {
            self.lose(&mut term, &terms, "shutting down");
            self.release().await;
        }
    }

    /// Reads the Lease and does what [`decide::decide`] says.
    async fn look(&self, memo: &mut Memo) -> Result<Looked, KubeError> {
        let read = self.lease.read().await?;
        let seen = read.as_ref().map(lease::seen);
        let action = decide::decide(
            seen.as_ref(),
            self.lease.identity(),
            memo,
            Instant::now(),
            self.timing.lease_duration,
        );
        let written = match (action, read) {
            (Action::StandBy { holder, recheck }, _) => {
                return Ok(Looked::StandBy { holder, recheck });
            }
            (Action::Create, _) => self.lease.create().await?.map(|l| (l, true)),
            (Action::Acquire, Some(l)) => self.lease.acquire(l).await?.map(|l| (l, true)),
            (Action::Renew, Some(l)) => self.lease.renew(l).await?.map(|l| (l, false)),
            (Action::Acquire | Action::Renew, None) => Err(Conflict),
        };
        Ok(match written {
            Ok((lease, fresh)) => Looked::Holding {
                transitions: lease::seen(&lease).transitions,
                fresh,
            },
            Err(Conflict) => Looked::Raced,
        })
    }

    /// A successful write at `sent`: extend the term, or begin one.
    fn hold(
        &self,
        term: &mut Option<Arc<Term>>,
        terms: &watch::Sender<Option<Arc<Term>>>,
        transitions: i32,
        fresh: bool,
        sent: Instant,
    ) {
        let until = self.timing.valid_until(sent);
        if let Some(t) = term
            && !fresh
            && t.transitions == transitions
            && !t.lost.is_cancelled()
        {
            t.extend(until);
            return;
        }
        self.lose(term, terms, "a new term begins");
        let t = Arc::new(Term {
            transitions,
            lost: CancellationToken::new(),
            valid_until: Mutex::new(until),
            lease: Arc::clone(&self.lease),
            timeout: self.timing.retry,
        });
        tracing::info!(env = %self.env, lease = %self.lease.object(), identity = %self.lease.identity(), transitions, "leading the environment");
        if let Some(m) = &self.metrics {
            m.leader(&self.env, true);
        }
        *term = Some(Arc::clone(&t));
        terms.send_replace(Some(t));
    }

    fn lose(
        &self,
        term: &mut Option<Arc<Term>>,
        terms: &watch::Sender<Option<Arc<Term>>>,
        why: &str,
    ) {
        let Some(t) = term.take() else { return };
        t.end();
        terms.send_replace(None);
        if let Some(m) = &self.metrics {
            m.leader(&self.env, false);
        }
        tracing::warn!(env = %self.env, lease = %self.lease.object(), why, "no longer leading the environment");
    }

    /// Clears the holder if it is still this host, so a standby takes over at once.
    async fn release(&self) {
        let released = async {
            let Some(l) = self.lease.read().await? else {
                return Ok(());
            };
            if lease::seen(&l).holder.as_deref() == Some(self.lease.identity()) {
                let _ = self.lease.release(l).await?;
            }
            Ok::<(), KubeError>(())
        };
        match tokio::time::timeout(self.timing.retry, released).await {
            Ok(Ok(())) => {
                tracing::info!(env = %self.env, lease = %self.lease.object(), "lease released")
            }
            Ok(Err(e)) => {
                tracing::warn!(env = %self.env, lease = %self.lease.object(), error = %e, "lease not released; it expires")
            }
            Err(_) => {
                tracing::warn!(env = %self.env, lease = %self.lease.object(), "lease release timed out; it expires")
            }
        }
    }
}

/// The client of `env`'s Lease for this instance, as `ha:` configures it.
fn lease_client(
    client: kube::Client,
    ha: &crate::config::HaConfig,
    instance: &str,
    env: &str,
) -> LeaseClient {
    let name = lease::lease_name(instance, env);
    LeaseClient::new(
        client,
        &ha.lease_namespace,
        &name,
        &ha.identity(),
        ha.lease_duration,
    )
}

/// `env`'s Lease as its cluster has it now, for `gitopsd status`: holder (or null when free),
/// transitions and renewTime, or why it cannot be read.
pub async fn lease_status(
    client: kube::Client,
    ha: &crate::config::HaConfig,
    instance: &str,
    env: &str,
) -> serde_json::Value {
    let name = lease::lease_name(instance, env);
    let lease = lease_client(client, ha, instance, env);
    match lease.read().await {
        Ok(Some(l)) => {
            let seen = lease::seen(&l);
            serde_json::json!({"name": name, "holder": seen.holder.filter(|h| !h.is_empty()),
                "transitions": seen.transitions, "renew_time": seen.renew_time,
                "this_host": ha.identity()})
        }
        Ok(None) => serde_json::json!({"name": name, "holder": null, "this_host": ha.identity()}),
        Err(e) => serde_json::json!({"name": name, "error": e.to_string()}),
    }
}

/// Resolves when `term`'s validity runs out (never without a term).
async fn expiry(term: &Option<Arc<Term>>) {
    match term {
        Some(t) => tokio::time::sleep_until(t.until()).await,
        None => std::future::pending().await,
    }
}
