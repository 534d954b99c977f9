//! Liveness-gated systemd watchdog.
//!
//! Pinging `WATCHDOG=1` from a timer alone proves only that the runtime still runs timers. Here
//! the reconcile loop calls [`Heartbeat::beat`] on every iteration *and* while it waits (for
//! the next poll, for health), and the watchdog task pings only while the last beat is younger
//! than `stale_after`. A wedged loop stops beating, the pings stop, and after `WatchdogSec=`
//! systemd kills and (with `Restart=on-failure`) restarts the service.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::sd::{self, Notifier, NotifyState};

/// Proof of life of the reconcile loop: when it last beat.
#[derive(Debug)]
pub struct Heartbeat {
    origin: Instant,
    /// Nanoseconds after `origin` of the last beat.
    last: AtomicU64,
}

impl Heartbeat {
    /// A heartbeat that has just beaten.
    pub fn new() -> Arc<Heartbeat> {
        Arc::new(Heartbeat {
            origin: Instant::now(),
            last: AtomicU64::new(0),
        })
    }

    /// Records that the loop is alive now.
    pub fn beat(&self) {
        let nanos = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.fetch_max(nanos, Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        let last = Duration::from_nanos(self.last.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }
}

/// Starts the watchdog task if systemd asked for one (`WATCHDOG_USEC`, see
/// [`sd::watchdog_interval`]) and `NOTIFY_SOCKET` is set; `None` otherwise. It pings every half
/// `WatchdogSec=` while `heartbeat` is younger than `stale_after`, and stops when `cancel` fires.
///
/// Choose `stale_after` longer than the longest stretch the loop can go without beating, and
/// shorter than `WatchdogSec=` minus the ping interval if a stall should be caught promptly.
pub fn spawn_watchdog(
    heartbeat: Arc<Heartbeat>,
    stale_after: Duration,
    cancel: CancellationToken,
) -> Option<JoinHandle<()>> {
    let interval = sd::watchdog_interval()?;
    let notifier = Notifier::from_env();
    if !notifier.is_enabled() {
        tracing::warn!("WATCHDOG_USEC is set but NOTIFY_SOCKET is not; no watchdog pings");
        return None;
    }
    Some(spawn_watchdog_with(
        heartbeat,
        stale_after,
        interval,
        notifier,
        cancel,
    ))
}

/// [`spawn_watchdog`] with an explicit ping interval and notify socket (no environment).
pub fn spawn_watchdog_with(
    heartbeat: Arc<Heartbeat>,
    stale_after: Duration,
    interval: Duration,
    notifier: Notifier,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    let interval = interval.max(Duration::from_millis(1));
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        stale_after_ms = stale_after.as_millis() as u64,
        "systemd watchdog enabled"
    );
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut stalled = false;
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let age = heartbeat.age();
            if age <= stale_after {
                if stalled {
                    stalled = false;
                    tracing::info!(
                        age_ms = age.as_millis() as u64,
                        "reconcile loop alive again; resuming watchdog pings"
                    );
                }
                notifier.send_logged(&[NotifyState::Watchdog]);
            } else if !stalled {
                stalled = true;
                tracing::error!(
                    age_s = age.as_secs(),
                    stale_after_s = stale_after.as_secs(),
                    "reconcile loop has not beaten; withholding WATCHDOG=1 so systemd restarts the service"
                );
                let status = format!("reconcile loop stalled for {}s", age.as_secs());
                notifier.send_logged(&[NotifyState::Status(&status)]);
            }
        }
        tracing::debug!("watchdog task stopped");
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    fn drain(sock: &UnixDatagram) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeat_ages_with_tokio_time() {
        let hb = Heartbeat::new();
        assert_eq!(hb.age(), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(7)).await;
        assert_eq!(hb.age(), Duration::from_secs(7));
        hb.beat();
        assert_eq!(hb.age(), Duration::ZERO);
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(hb.age(), Duration::from_millis(1500));
    }

    #[tokio::test(start_paused = true)]
    async fn pings_only_while_the_loop_beats() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind");
        sock.set_nonblocking(true).expect("nonblocking");

        let hb = Heartbeat::new();
        let cancel = CancellationToken::new();
        let task = spawn_watchdog_with(
            hb.clone(),
            Duration::from_secs(25),
            Duration::from_secs(10),
            Notifier::to(path.as_os_str()),
            cancel.clone(),
        );
        let step = || async {
            tokio::time::advance(Duration::from_secs(10)).await;
            settle().await;
        };

        settle().await; // t=0: first tick is immediate
        assert_eq!(drain(&sock), ["WATCHDOG=1\n"]);
        step().await; // t=10, age 10
        assert_eq!(drain(&sock), ["WATCHDOG=1\n"]);
        step().await; // t=20, age 20
        assert_eq!(drain(&sock), ["WATCHDOG=1\n"]);
        step().await; // t=30, age 30 > 25: stalled, status once, no ping
        assert_eq!(drain(&sock), ["STATUS=reconcile loop stalled for 30s\n"]);
        step().await; // t=40: still stalled, silent
        assert!(drain(&sock).is_empty());

        hb.beat(); // loop recovers
        step().await; // t=50, age 10
        assert_eq!(drain(&sock), ["WATCHDOG=1\n"]);

        cancel.cancel();
        task.await.expect("watchdog task ends cleanly");
        step().await;
        assert!(drain(&sock).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_loop_that_keeps_beating_stays_alive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind");
        sock.set_nonblocking(true).expect("nonblocking");

        let hb = Heartbeat::new();
        let cancel = CancellationToken::new();
        let _task = spawn_watchdog_with(
            hb.clone(),
            Duration::from_secs(5),
            Duration::from_secs(10),
            Notifier::to(path.as_os_str()),
            cancel.clone(),
        );
        // A loop waiting for its next poll beats every second while it waits.
        let beater = {
            let hb = hb.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                while !cancel.is_cancelled() {
                    hb.beat();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        };
        tokio::time::sleep(Duration::from_secs(95)).await;
        settle().await;
        let msgs = drain(&sock);
        assert_eq!(msgs.len(), 10, "{msgs:?}");
        assert!(msgs.iter().all(|m| m == "WATCHDOG=1\n"), "{msgs:?}");
        cancel.cancel();
        beater.await.expect("beater");
    }
}
