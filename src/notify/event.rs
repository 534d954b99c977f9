//! Pure: an environment's step outcome plus what was open before → which alerts open, change or
//! resolve. No I/O; the delivery tasks turn the changes into requests.

use std::collections::BTreeMap;

use crate::reconcile::{Step, summary};
use crate::status::{Outcome, Record};

/// Longest summary annotation; the note has everything.
const SUMMARY_MAX: usize = 1000;

/// One kind of problem of an environment: one alert each (per environment).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Problem {
    Rejected,
    RolledBack,
    RollbackFailed,
    Unhealthy,
    Drift,
    Pinned,
}

impl Problem {
    pub const ALL: [Problem; 6] = [
        Problem::Rejected,
        Problem::RolledBack,
        Problem::RollbackFailed,
        Problem::Unhealthy,
        Problem::Drift,
        Problem::Pinned,
    ];

    pub fn alertname(self) -> &'static str {
        match self {
            Problem::Rejected => "GitopsdRejected",
            Problem::RolledBack => "GitopsdRolledBack",
            Problem::RollbackFailed => "GitopsdRollbackFailed",
            Problem::Unhealthy => "GitopsdUnhealthy",
            Problem::Drift => "GitopsdDrift",
            Problem::Pinned => "GitopsdPinned",
        }
    }

    /// The event name webhooks carry.
    pub fn event(self) -> &'static str {
        match self {
            Problem::Rejected => "rejected",
            Problem::RolledBack => "rolled-back",
            Problem::RollbackFailed => "rollback-failed",
            Problem::Unhealthy => "unhealthy",
            Problem::Drift => "drift",
            Problem::Pinned => "pinned",
        }
    }

    /// `critical` when the environment is left running something unhealthy; `warning` when it
    /// runs the last good commit (or a hand edit was seen) and the head needs a person.
    pub fn severity(self) -> &'static str {
        match self {
            Problem::RollbackFailed | Problem::Unhealthy => "critical",
            _ => "warning",
        }
    }

    fn of(outcome: Outcome) -> Option<Problem> {
        match outcome {
            Outcome::Rejected => Some(Problem::Rejected),
            Outcome::RolledBack => Some(Problem::RolledBack),
            Outcome::RollbackFailed => Some(Problem::RollbackFailed),
            Outcome::Unhealthy => Some(Problem::Unhealthy),
            Outcome::Healthy | Outcome::Superseded => None,
        }
    }
}

/// What an alert says: the problem, the commit it is about and one readable line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    pub problem: Problem,
    pub commit: String,
    pub summary: String,
}

/// One alert opened (or changed: a new commit or summary) or resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub open: bool,
    pub alert: Alert,
    /// The commit of the step that caused the change (on a resolve: the one now healthy).
    pub at_commit: String,
    /// Whether webhooks announce it: not for state known before a restart (Alertmanager gets
    /// it again; people were told already) nor for resolving alerts that may never have existed.
    pub announce: bool,
}

/// The alerts open for one environment. Starts unknown: the first step (from git, after a
/// start or a config reload) re-opens what is true and resolves every other alertname.
#[derive(Clone, Debug, Default)]
pub struct EnvState {
    known: bool,
    open: BTreeMap<Problem, Alert>,
}

/// The commit a step is about.
pub fn commit_of(step: &Step) -> &str {
    match step {
        Step::Converged { commit }
        | Step::Pinned { commit, .. }
        | Step::Recorded { commit, .. }
        | Step::Drift { commit, .. } => commit,
    }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

fn cap(mut s: String) -> String {
    if s.len() > SUMMARY_MAX {
        let mut end = SUMMARY_MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// One line for a recorded (or pinned) outcome: counts and the first errors with file:line.
fn outcome_summary(env: &str, commit: &str, outcome: Outcome, record: Option<&Record>) -> String {
    let step = Step::Recorded {
        commit: commit.to_string(),
        outcome,
    };
    cap(summary::line(env, &step, record))
}

fn drift_alert(env: &str, commit: &str, objects: usize, corrected: bool) -> Alert {
    let how = if corrected {
        "corrected"
    } else {
        "left as found (drift: report)"
    };
    Alert {
        problem: Problem::Drift,
        commit: commit.to_string(),
        summary: format!(
            "{env}: {objects} objects differ from {} in the cluster; {how}",
            short(commit)
        ),
    }
}

impl EnvState {
    /// Forgets what is open (the targets changed): the next step re-opens what is true.
    pub fn reset(&mut self) {
        *self = EnvState::default();
    }

    /// Whether deciding on `step` needs the head's record (the env task reads it only then).
    pub fn needs_record(&self, step: &Step) -> bool {
        match step {
            Step::Recorded { outcome, .. } => Problem::of(*outcome).is_some(),
            Step::Pinned { commit, .. } => !self
                .open
                .values()
                .any(|a| a.problem != Problem::Drift && a.commit == *commit),
            Step::Converged { .. } | Step::Drift { .. } => false,
        }
    }

    /// The alert of a pinned head: its recorded problem, else the one open for it, else `Pinned`.
    fn pinned_alert(&self, env: &str, step: &Step, commit: &str, record: Option<&Record>) -> Alert {
        let recorded = record.and_then(|r| Problem::of(r.outcome).map(|p| (p, r)));
        let kept = self
            .open
            .values()
            .find(|a| a.problem != Problem::Drift && a.commit == commit);
        match (recorded, kept) {
            (Some((problem, r)), _) => Alert {
                problem,
                commit: commit.to_string(),
                summary: outcome_summary(env, commit, r.outcome, Some(r)),
            },
            (None, Some(a)) => a.clone(),
            (None, None) => Alert {
                problem: Problem::Pinned,
                commit: commit.to_string(),
                summary: cap(summary::line(env, step, None)),
            },
        }
    }

    /// What should be open after `step`; `None` leaves everything as it is.
    fn wanted(
        &self,
        env: &str,
        step: &Step,
        record: Option<&Record>,
    ) -> Option<BTreeMap<Problem, Alert>> {
        let mut want = BTreeMap::new();
        match step {
            Step::Converged { .. } => {}
            Step::Recorded {
                outcome: Outcome::Superseded,
                ..
            } => return None,
            Step::Recorded {
                outcome: Outcome::Healthy,
                ..
            } => {}
            Step::Recorded { commit, outcome } => {
                let problem = Problem::of(*outcome)?;
                // Nothing of a rejected commit was applied: drift of what runs still stands.
                if problem == Problem::Rejected
                    && let Some(d) = self.open.get(&Problem::Drift)
                {
                    want.insert(Problem::Drift, d.clone());
                }
                let summary = outcome_summary(env, commit, *outcome, record);
                want.insert(
                    problem,
                    Alert {
                        problem,
                        commit: commit.clone(),
                        summary,
                    },
                );
            }
            Step::Pinned { commit, .. } => {
                let alert = self.pinned_alert(env, step, commit, record);
                want.insert(alert.problem, alert);
            }
            Step::Drift {
                commit,
                objects,
                corrected,
            } => {
                want = self.open.clone();
                want.insert(
                    Problem::Drift,
                    drift_alert(env, commit, *objects, *corrected),
                );
            }
        }
        Some(want)
    }

    /// The changes `step` makes; `record` is the head's record when [`needs_record`] asked.
    ///
    /// [`needs_record`]: EnvState::needs_record
    pub fn observe(&mut self, env: &str, step: &Step, record: Option<&Record>) -> Vec<Change> {
        let Some(want) = self.wanted(env, step, record) else {
            return Vec::new();
        };
        let at_commit = commit_of(step).to_string();
        let mut changes = Vec::new();
        for (problem, alert) in &self.open {
            if !want.contains_key(problem) {
                changes.push(Change {
                    open: false,
                    alert: alert.clone(),
                    at_commit: at_commit.clone(),
                    announce: true,
                });
            }
        }
        if !self.known {
            for problem in Problem::ALL {
                if !want.contains_key(&problem) && !self.open.contains_key(&problem) {
                    let alert = Alert {
                        problem,
                        commit: at_commit.clone(),
                        summary: String::new(),
                    };
                    changes.push(Change {
                        open: false,
                        alert,
                        at_commit: at_commit.clone(),
                        announce: false,
                    });
                }
            }
        }
        for (problem, alert) in &want {
            if self.open.get(problem) != Some(alert) {
                changes.push(Change {
                    open: true,
                    alert: alert.clone(),
                    at_commit: at_commit.clone(),
                    announce: self.known,
                });
            }
        }
        self.known = true;
        self.open = want;
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::ObjectError;

    const BAD: &str = "badbadbadbadbadbadbadbadbadbadbadbadbad0";
    const GOOD: &str = "600d600d600d600d600d600d600d600d600d600d";

    fn recorded(commit: &str, outcome: Outcome) -> Step {
        Step::Recorded {
            commit: commit.into(),
            outcome,
        }
    }

    fn rejected_record() -> Record {
        let mut r = Record::new(Outcome::Rejected, None, "t".into());
        r.errors.push(ObjectError {
            object: "ConfigMap web/c".into(),
            at: Some("envs/dev/c.yaml:3".into()),
            reason: "unknown field".into(),
        });
        r
    }

    fn names(changes: &[Change]) -> Vec<(bool, &'static str, bool)> {
        changes
            .iter()
            .map(|c| (c.open, c.alert.problem.alertname(), c.announce))
            .collect()
    }

    /// An environment whose last pass converged on `GOOD`.
    fn converged_on_good() -> EnvState {
        let mut s = EnvState::default();
        s.observe(
            "dev",
            &Step::Converged {
                commit: GOOD.into(),
            },
            None,
        );
        s
    }

    #[test]
    fn a_rejection_opens_one_alert_with_the_first_error_and_a_good_commit_resolves_it() {
        let mut s = converged_on_good();
        let step = recorded(BAD, Outcome::Rejected);
        assert!(s.needs_record(&step));
        let c = s.observe("dev", &step, Some(&rejected_record()));
        assert_eq!(names(&c), [(true, "GitopsdRejected", true)]);
        assert!(
            c[0].alert
                .summary
                .contains("(envs/dev/c.yaml:3): unknown field"),
            "{}",
            c[0].alert.summary
        );
        assert_eq!(c[0].alert.commit, BAD);
        // Later passes see the head pinned: nothing new, and no record needed.
        let pinned = Step::Pinned {
            commit: BAD.into(),
            reason: "rejected".into(),
        };
        assert!(!s.needs_record(&pinned));
        assert!(s.observe("dev", &pinned, None).is_empty());
        let c = s.observe("dev", &recorded(GOOD, Outcome::Healthy), None);
        assert_eq!(names(&c), [(false, "GitopsdRejected", true)]);
        assert_eq!(c[0].at_commit, GOOD);
        assert!(
            s.observe(
                "dev",
                &Step::Converged {
                    commit: GOOD.into()
                },
                None
            )
            .is_empty()
        );
    }

    #[test]
    fn after_a_restart_a_pinned_head_reopens_its_alert_quietly_and_resolves_the_others() {
        let mut s = EnvState::default();
        let mut r = rejected_record();
        r.outcome = Outcome::RolledBack;
        let pinned = Step::Pinned {
            commit: BAD.into(),
            reason: "rolled back".into(),
        };
        assert!(s.needs_record(&pinned));
        let c = s.observe("dev", &pinned, Some(&r));
        let opened: Vec<_> = c.iter().filter(|c| c.open).collect();
        assert_eq!(opened.len(), 1);
        assert_eq!(opened[0].alert.problem, Problem::RolledBack);
        assert!(!opened[0].announce, "known before the restart");
        let resolved: Vec<_> = c
            .iter()
            .filter(|c| !c.open)
            .map(|c| c.alert.problem)
            .collect();
        assert_eq!(resolved.len(), 5);
        assert!(!resolved.contains(&Problem::RolledBack));
        assert!(c.iter().filter(|c| !c.open).all(|c| !c.announce));
    }

    #[test]
    fn a_healthy_start_resolves_every_alertname_without_announcing() {
        let mut s = EnvState::default();
        let c = s.observe(
            "dev",
            &Step::Converged {
                commit: GOOD.into(),
            },
            None,
        );
        assert_eq!(c.len(), Problem::ALL.len());
        assert!(
            c.iter()
                .all(|c| !c.open && !c.announce && c.at_commit == GOOD)
        );
    }

    #[test]
    fn a_pin_without_a_problem_outcome_is_its_own_alert() {
        let mut s = converged_on_good();
        let healthy = Record::new(Outcome::Healthy, None, "t".into());
        let pinned = Step::Pinned {
            commit: BAD.into(),
            reason: "pinned by rollback --to".into(),
        };
        let c = s.observe("dev", &pinned, Some(&healthy));
        assert_eq!(names(&c), [(true, "GitopsdPinned", true)]);
        assert!(c[0].alert.summary.contains("pinned by rollback --to"));
    }

    #[test]
    fn drift_adds_an_alert_kept_through_a_rejection_and_resolved_by_a_clean_pass() {
        let mut s = converged_on_good();
        let drift = Step::Drift {
            commit: GOOD.into(),
            objects: 2,
            corrected: false,
        };
        let c = s.observe("dev", &drift, None);
        assert_eq!(names(&c), [(true, "GitopsdDrift", true)]);
        assert!(
            c[0].alert.summary.contains("2 objects"),
            "{}",
            c[0].alert.summary
        );
        assert!(
            s.observe("dev", &drift, None).is_empty(),
            "a standing drift is one alert"
        );
        let c = s.observe("dev", &recorded(BAD, Outcome::Rejected), None);
        assert_eq!(names(&c), [(true, "GitopsdRejected", true)]);
        let c = s.observe(
            "dev",
            &Step::Converged {
                commit: GOOD.into(),
            },
            None,
        );
        let mut n = names(&c);
        n.sort();
        assert_eq!(
            n,
            [
                (false, "GitopsdDrift", true),
                (false, "GitopsdRejected", true)
            ]
        );
    }

    #[test]
    fn a_new_bad_commit_replaces_the_alert_and_superseded_changes_nothing() {
        let mut s = converged_on_good();
        s.observe("dev", &recorded(BAD, Outcome::Unhealthy), None);
        assert!(
            s.observe("dev", &recorded(GOOD, Outcome::Superseded), None)
                .is_empty()
        );
        let c = s.observe("dev", &recorded(GOOD, Outcome::RollbackFailed), None);
        let mut n = names(&c);
        n.sort();
        assert_eq!(
            n,
            [
                (false, "GitopsdUnhealthy", true),
                (true, "GitopsdRollbackFailed", true)
            ]
        );
        assert_eq!(Problem::RollbackFailed.severity(), "critical");
        assert_eq!(Problem::Rejected.severity(), "warning");
    }

    #[test]
    fn a_reset_makes_the_next_step_restore_the_state() {
        let mut s = converged_on_good();
        s.observe("dev", &recorded(BAD, Outcome::Rejected), None);
        s.reset();
        let pinned = Step::Pinned {
            commit: BAD.into(),
            reason: "rejected".into(),
        };
        assert!(s.needs_record(&pinned));
        let c = s.observe("dev", &pinned, Some(&rejected_record()));
        assert!(
            c.iter()
                .any(|c| c.open && c.alert.problem == Problem::Rejected && !c.announce)
        );
    }
}
