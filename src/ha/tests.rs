//! The election loop with paused time against an in-memory Lease that checks resourceVersions
//! like the apiserver: two hosts never hold valid terms at once, a cut-off leader stops before
//! the standby takes over, and a healed one stands by. Test code only.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::Lease;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::lease::{Conflict, LeaseClient, Transport, Written};
use super::{Elector, Term};
use crate::k8s::KubeError;

const D: Duration = Duration::from_secs(6);

#[derive(Default)]
struct Store {
    lease: Mutex<Option<Lease>>,
    version: AtomicU64,
}

/// One host's connection to the store; `up: false` is a partition (calls never answer).
struct Link {
    store: Arc<Store>,
    up: Arc<AtomicBool>,
}

impl Link {
    async fn reach(&self) {
        if !self.up.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }

    fn store(&self, mut lease: Lease) -> Lease {
        let v = self.store.version.fetch_add(1, Ordering::SeqCst) + 1;
        lease.metadata.resource_version = Some(v.to_string());
        if let Ok(mut l) = self.store.lease.lock() {
            *l = Some(lease.clone());
        }
        lease
    }

    fn current(&self) -> Option<Lease> {
        self.store.lease.lock().ok().and_then(|l| l.clone())
    }
}

impl Transport for Link {
    fn get(&self) -> BoxFuture<'_, Result<Option<Lease>, KubeError>> {
        Box::pin(async move {
            self.reach().await;
            Ok(self.current())
        })
    }

    fn create(&self, lease: Lease) -> BoxFuture<'_, Written> {
        Box::pin(async move {
            self.reach().await;
            if self.current().is_some() {
                return Ok(Err(Conflict));
            }
            Ok(Ok(self.store(lease)))
        })
    }

    fn replace(&self, lease: Lease) -> BoxFuture<'_, Written> {
        Box::pin(async move {
            self.reach().await;
            let stored = self.current().and_then(|l| l.metadata.resource_version);
            if stored != lease.metadata.resource_version {
                return Ok(Err(Conflict));
            }
            Ok(Ok(self.store(lease)))
        })
    }
}

struct Host {
    up: Arc<AtomicBool>,
    terms: watch::Receiver<Option<Arc<Term>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Host {
    fn start(store: &Arc<Store>, identity: &str) -> Host {
        let up = Arc::new(AtomicBool::new(true));
        let link = Arc::new(Link {
            store: Arc::clone(store),
            up: Arc::clone(&up),
        });
        let lease = LeaseClient::with_transport(link, "ns", "gitopsd-i-dev", identity, D);
        let elector = Elector::with_lease("dev", lease, D, None);
        let (tx, terms) = watch::channel(None);
        let stop = CancellationToken::new();
        let task = tokio::spawn(elector.run(tx, stop.clone()));
        Host {
            up,
            terms,
            stop,
            task,
        }
    }

    /// Whether this host may write now (a term that passes the local fence check).
    fn leads(&self) -> bool {
        self.terms
            .borrow()
            .as_ref()
            .is_some_and(|t| t.check_local().is_ok())
    }
}

fn holder(store: &Store) -> Option<String> {
    store
        .lease
        .lock()
        .ok()
        .and_then(|l| l.clone())
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

/// Steps paused time by 50 ms `n` times, checking at every step that at most one host leads.
async fn run_for(n: u32, hosts: &[&Host], mut each: impl FnMut(Instant)) {
    for _ in 0..n {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let leaders = hosts.iter().filter(|h| h.leads()).count();
        assert!(leaders <= 1, "two hosts lead at once");
        each(Instant::now());
    }
}

#[tokio::test(start_paused = true)]
async fn a_cut_off_leader_stops_before_the_standby_takes_over_and_stands_by_when_healed() {
    let store = Arc::new(Store::default());
    let a = Host::start(&store, "host-a");
    run_for(10, &[&a], |_| {}).await;
    assert!(a.leads(), "the first host takes the missing Lease");
    let b = Host::start(&store, "host-b");
    // Many lease durations: host-a keeps renewing, host-b stands by.
    run_for(600, &[&a, &b], |_| {}).await;
    assert!(a.leads() && !b.leads());
    assert_eq!(holder(&store).as_deref(), Some("host-a"));

    a.up.store(false, Ordering::SeqCst);
    let cut = Instant::now();
    let (mut a_stopped, mut b_started) = (None, None);
    run_for(400, &[&a, &b], |now| {
        if a_stopped.is_none() && !a.leads() {
            a_stopped = Some(now);
        }
        if b_started.is_none() && b.leads() {
            b_started = Some(now);
        }
    })
    .await;
    let (a_stopped, b_started) = (a_stopped.unwrap(), b_started.unwrap());
    // The leader stops within its renew deadline; the standby waits a whole lease duration
    // after the last renewal it saw, so at least a third of it lies between them.
    assert!(a_stopped - cut <= D * 2 / 3, "{:?}", a_stopped - cut);
    assert!(b_started - a_stopped >= D / 3 - Duration::from_millis(100));
    assert!(b_started - cut <= D + D / 3 + Duration::from_millis(200));
    assert_eq!(holder(&store).as_deref(), Some("host-b"));

    a.up.store(true, Ordering::SeqCst);
    run_for(600, &[&a, &b], |_| {}).await;
    assert!(b.leads() && !a.leads(), "the healed host stands by");
    let transitions = store
        .lease
        .lock()
        .ok()
        .and_then(|l| l.clone())
        .and_then(|l| l.spec)
        .and_then(|s| s.lease_transitions);
    assert_eq!(transitions, Some(1));

    // A graceful stop releases the Lease: host-a takes it without waiting for it to expire.
    b.stop.cancel();
    let _ = b.task.await;
    assert_eq!(holder(&store), None);
    let released = Instant::now();
    let mut a_started = None;
    run_for(100, &[&a], |now| {
        if a_started.is_none() && a.leads() {
            a_started = Some(now);
        }
    })
    .await;
    assert!(a_started.unwrap() - released <= D / 3 + Duration::from_millis(100));
    a.stop.cancel();
    let _ = a.task.await;
}
