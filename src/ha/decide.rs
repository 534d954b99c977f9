//! The pure part of leader election: given the Lease as last read, this host's identity and its
//! own clock, what to do next. Follows client-go's leaderelection: a candidate takes a Lease
//! from another holder only after it has itself watched the same (holder, renewTime) stay
//! unchanged for the whole lease duration, so no two hosts' clocks are ever compared; a leader
//! gives up after a renew deadline shorter than the lease duration.

use std::time::Duration;

use tokio::time::Instant;

/// What matters of a Lease's spec for the decision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Seen {
    pub holder: Option<String>,
    /// `renewTime` as the server stored it (compared for equality only, never with a clock).
    pub renew_time: Option<String>,
    pub transitions: i32,
}

impl Seen {
    fn held_by_other(&self, me: &str) -> bool {
        self.holder
            .as_deref()
            .is_some_and(|h| !h.is_empty() && h != me)
    }
}

/// When this host first saw the Lease in its current (holder, renewTime) state.
#[derive(Debug, Clone, Default)]
pub struct Memo {
    seen: Option<(Option<String>, Option<String>, Instant)>,
}

impl Memo {
    /// Records `seen` at `now`; the instant is kept while holder and renewTime stay the same.
    pub fn observe(&mut self, seen: &Seen, now: Instant) -> Instant {
        match &self.seen {
            Some((h, r, at)) if *h == seen.holder && *r == seen.renew_time => *at,
            _ => {
                self.seen = Some((seen.holder.clone(), seen.renew_time.clone(), now));
                now
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// No Lease yet: create it holding it (transitions 0).
    Create,
    /// The Lease names this host: renew it.
    Renew,
    /// Free (released, or expired by our own observation): take it, one more transition.
    Acquire,
    /// Another host holds it; look again no later than `recheck`.
    StandBy { holder: String, recheck: Instant },
}

/// The next action for `me`, given the Lease (`None`: it does not exist) and the memo of when
/// its current state was first seen (updated here).
pub fn decide(
    lease: Option<&Seen>,
    me: &str,
    memo: &mut Memo,
    now: Instant,
    lease_duration: Duration,
) -> Action {
    let Some(seen) = lease else {
        return Action::Create;
    };
    let since = memo.observe(seen, now);
    if seen.holder.as_deref() == Some(me) {
        return Action::Renew;
    }
    if !seen.held_by_other(me) {
        return Action::Acquire;
    }
    let expires = since + lease_duration;
    if now >= expires {
        return Action::Acquire;
    }
    Action::StandBy {
        holder: seen.holder.clone().unwrap_or_default(),
        recheck: expires,
    }
}

/// Timings derived from the lease duration (client-go's proportions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub lease_duration: Duration,
    /// A leader that has not renewed within this since its last successful renewal stops.
    pub renew_deadline: Duration,
    /// How often a leader renews (and a standby looks).
    pub retry: Duration,
}

impl Timing {
    pub fn new(lease_duration: Duration) -> Timing {
        Timing {
            lease_duration,
            renew_deadline: lease_duration * 2 / 3,
            retry: lease_duration / 3,
        }
    }

    /// Until when a term whose last renewal request was *sent* at `sent` stays valid here:
    /// counting from before the request keeps the leader's end ahead of any standby's take-over,
    /// which counts from after it saw the renewal.
    pub fn valid_until(&self, sent: Instant) -> Instant {
        sent + self.renew_deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(6);

    fn held(by: &str, renew: &str) -> Seen {
        Seen {
            holder: Some(by.into()),
            renew_time: Some(renew.into()),
            transitions: 3,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn standby_takes_over_only_after_its_own_lease_duration_of_silence() {
        let mut memo = Memo::default();
        let t0 = Instant::now();
        let a = held("host-a", "10:00:00");
        assert_eq!(
            decide(Some(&a), "host-b", &mut memo, t0, D),
            Action::StandBy {
                holder: "host-a".into(),
                recheck: t0 + D
            }
        );
        // A renewal restarts the count, whatever the renewTime says about the clocks.
        tokio::time::advance(Duration::from_secs(5)).await;
        let renewed = held("host-a", "09:00:00");
        let t1 = Instant::now();
        assert!(matches!(
            decide(Some(&renewed), "host-b", &mut memo, t1, D),
            Action::StandBy { recheck, .. } if recheck == t1 + D
        ));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(matches!(
            decide(Some(&renewed), "host-b", &mut memo, Instant::now(), D),
            Action::StandBy { .. }
        ));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            decide(Some(&renewed), "host-b", &mut memo, Instant::now(), D),
            Action::Acquire
        );
    }

    #[tokio::test(start_paused = true)]
    async fn own_free_and_missing_leases() {
        let mut memo = Memo::default();
        let now = Instant::now();
        assert_eq!(decide(None, "a", &mut memo, now, D), Action::Create);
        assert_eq!(
            decide(Some(&held("a", "t")), "a", &mut memo, now, D),
            Action::Renew
        );
        let released = Seen {
            holder: None,
            renew_time: None,
            transitions: 4,
        };
        assert_eq!(
            decide(Some(&released), "b", &mut memo, now, D),
            Action::Acquire
        );
        let empty = Seen {
            holder: Some(String::new()),
            ..released
        };
        assert_eq!(
            decide(Some(&empty), "b", &mut memo, now, D),
            Action::Acquire
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_stops_before_any_standby_can_take_over() {
        let t = Timing::new(D);
        let sent = Instant::now();
        // The standby saw the renewal no earlier than it was sent.
        let mut memo = Memo::default();
        decide(Some(&held("a", "r")), "b", &mut memo, sent, D);
        assert!(t.valid_until(sent) < sent + D);
        assert_eq!(t.retry, Duration::from_secs(2));
        assert_eq!(t.renew_deadline, Duration::from_secs(4));
    }
}
