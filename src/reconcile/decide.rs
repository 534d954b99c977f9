//! Pure decisions: what a pass does next (from the notes and the branch head), and what must
//! change to bring the live objects to a desired state. No I/O; unit-tested with plain data.

use std::collections::{HashMap, HashSet};

use crate::manifest::ObjectKey;
use crate::status::EnvHistory;

/// What the next pass of an environment does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// A rollback away from `bad` was under way when the daemon stopped: finish it first.
    ResumeRollback { bad: String },
    /// The head is new (or its pin was cleared): validate, apply, wait for health, record.
    Apply { commit: String },
    /// Keep the cluster at `commit`'s render (drift), recording nothing new about the head:
    /// the head is healthy already, or pinned and `commit` is what was last applied.
    Hold { commit: String, head_pinned: bool },
    /// The head is pinned and nothing was ever applied: nothing to do.
    Idle,
}

/// Decides the next step of an environment from its history and the branch head.
pub fn decide(history: &EnvHistory, head: &str) -> Next {
    if let Some((bad, _)) = history.records.iter().find(|(_, r)| r.rolling_back) {
        return Next::ResumeRollback { bad: bad.clone() };
    }
    let Some(record) = history.records.get(head) else {
        return Next::Apply {
            commit: head.to_string(),
        };
    };
    if record.pinned.is_some() {
        return match &history.last_applied {
            Some((applied, _)) => Next::Hold {
                commit: applied.clone(),
                head_pinned: true,
            },
            None => Next::Idle,
        };
    }
    if record.healthy_since().is_some() {
        return Next::Hold {
            commit: head.to_string(),
            head_pinned: false,
        };
    }
    // Recorded, not healthy and not pinned: superseded, or an operator asked for a retry.
    Next::Apply {
        commit: head.to_string(),
    }
}

/// One desired Kubernetes object as the plan sees it: its live identity and the fingerprint
/// of what gitopsd sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub key: ObjectKey,
    pub fingerprint: u64,
}

/// What the cache says of one live object, for planning.
pub trait LiveView {
    /// `Some(fingerprint of our managed fields)` if the object exists and is ours.
    fn managed(&self, key: &ObjectKey) -> Option<Option<u64>>;
    /// Every owned object that may be pruned, with its API version.
    fn prunable(&self) -> Vec<(ObjectKey, String)>;
}

/// What is known to be in sync: per object, the desired fingerprint gitopsd last applied and the
/// live fingerprint the server answered with (servers normalise some values, so the two differ).
pub type Synced = HashMap<ObjectKey, (u64, u64)>;

/// The difference between the desired objects and the live ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LivePlan {
    /// Indexes into the desired list.
    pub create: Vec<usize>,
    pub update: Vec<usize>,
    /// Owned live objects no longer desired, with their API version.
    pub delete: Vec<(ObjectKey, String)>,
    pub unchanged: usize,
}

impl LivePlan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// Compares desired objects with the live cache. `unknown` are keys of desired objects whose kind
/// the cluster does not serve yet (created by this commit's CRDs): never pruned.
pub fn plan_live(
    wanted: &[Wanted],
    live: &dyn LiveView,
    synced: &Synced,
    prune: bool,
    unknown: &HashSet<ObjectKey>,
) -> LivePlan {
    let mut plan = LivePlan::default();
    for (index, w) in wanted.iter().enumerate() {
        match live.managed(&w.key) {
            None => plan.create.push(index),
            Some(Some(fp)) if fp == w.fingerprint => plan.unchanged += 1,
            Some(Some(fp)) if synced.get(&w.key) == Some(&(w.fingerprint, fp)) => {
                plan.unchanged += 1
            }
            Some(_) => plan.update.push(index),
        }
    }
    if prune {
        let desired: HashSet<&ObjectKey> = wanted.iter().map(|w| &w.key).collect();
        let mut delete: Vec<(ObjectKey, String)> = live
            .prunable()
            .into_iter()
            .filter(|(k, _)| !desired.contains(k) && !unknown.contains(k))
            .collect();
        delete.sort();
        plan.delete = delete;
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{Outcome, Record};

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            group: String::new(),
            kind: "ConfigMap".into(),
            namespace: Some("dev".into()),
            name: name.into(),
        }
    }

    struct Fake(HashMap<ObjectKey, Option<u64>>, HashSet<ObjectKey>);
    impl LiveView for Fake {
        fn managed(&self, key: &ObjectKey) -> Option<Option<u64>> {
            self.0.get(key).copied()
        }
        fn prunable(&self) -> Vec<(ObjectKey, String)> {
            self.0
                .keys()
                .filter(|k| !self.1.contains(*k))
                .map(|k| (k.clone(), "v1".into()))
                .collect()
        }
    }

    fn record(outcome: Outcome, pinned: bool, applied: Option<&str>, at: &str) -> Record {
        let mut r = Record::new(outcome, None, at.into());
        r.finished = at.into();
        r.pinned = pinned.then(|| "why".to_string());
        r.applied = applied.map(str::to_string);
        r
    }

    fn history(records: Vec<(&str, Record)>) -> EnvHistory {
        let notes: Vec<(String, String)> = records
            .into_iter()
            .map(|(c, r)| {
                let mut note = crate::status::Note::default();
                note.environments.insert("dev".into(), r);
                (c.to_string(), note.render())
            })
            .collect();
        crate::status::history(
            notes.iter().map(|(c, t)| (c.clone(), t.as_str())),
            "dev",
            &crate::status::Notary::unsigned(),
        )
    }

    #[test]
    fn a_new_head_is_applied() {
        let h = history(vec![(
            "a",
            record(Outcome::Healthy, false, Some("a"), "2026-01-01T00:00:00Z"),
        )]);
        assert_eq!(decide(&h, "b"), Next::Apply { commit: "b".into() });
    }

    #[test]
    fn a_healthy_head_is_held_against_drift() {
        let h = history(vec![(
            "a",
            record(Outcome::Healthy, false, Some("a"), "2026-01-01T00:00:00Z"),
        )]);
        assert_eq!(
            decide(&h, "a"),
            Next::Hold {
                commit: "a".into(),
                head_pinned: false
            }
        );
    }

    #[test]
    fn an_unhealthy_pinned_head_holds_what_was_applied_last() {
        // Rollback off: C stays applied (and pinned); the cluster is held at C, not at A.
        let h = history(vec![
            (
                "a",
                record(Outcome::Healthy, false, Some("a"), "2026-01-01T00:00:00Z"),
            ),
            (
                "c",
                record(Outcome::Unhealthy, true, Some("c"), "2026-01-01T00:01:00Z"),
            ),
        ]);
        assert_eq!(
            decide(&h, "c"),
            Next::Hold {
                commit: "c".into(),
                head_pinned: true
            }
        );
        // A revert of C is a new commit: applied (and planned against what is live).
        assert_eq!(decide(&h, "r"), Next::Apply { commit: "r".into() });
    }

    #[test]
    fn a_rejected_first_commit_is_idle_and_a_rollback_resumes_first() {
        let h = history(vec![(
            "c",
            record(Outcome::Rejected, true, None, "2026-01-01T00:00:00Z"),
        )]);
        assert_eq!(decide(&h, "c"), Next::Idle);
        let mut r = record(Outcome::Unhealthy, true, Some("c"), "2026-01-01T00:00:00Z");
        r.rolling_back = true;
        let h = history(vec![("c", r)]);
        assert_eq!(decide(&h, "d"), Next::ResumeRollback { bad: "c".into() });
    }

    #[test]
    fn an_unpinned_superseded_head_is_applied_again() {
        let h = history(vec![(
            "c",
            record(
                Outcome::Superseded,
                false,
                Some("c"),
                "2026-01-01T00:00:00Z",
            ),
        )]);
        assert_eq!(decide(&h, "c"), Next::Apply { commit: "c".into() });
    }

    #[test]
    fn plan_compares_with_live_and_prunes_only_when_asked() {
        let live = Fake(
            [
                (key("same"), Some(1)),
                (key("edited"), Some(99)),
                (key("normalised"), Some(7)),
                (key("orphan"), Some(5)),
                (key("slice"), Some(5)),
            ]
            .into_iter()
            .collect(),
            [key("slice")].into_iter().collect(),
        );
        let wanted = vec![
            Wanted {
                key: key("same"),
                fingerprint: 1,
            },
            Wanted {
                key: key("edited"),
                fingerprint: 2,
            },
            Wanted {
                key: key("normalised"),
                fingerprint: 3,
            },
            Wanted {
                key: key("new"),
                fingerprint: 4,
            },
        ];
        let synced: Synced = [(key("normalised"), (3, 7)), (key("edited"), (2, 3))]
            .into_iter()
            .collect();
        let p = plan_live(&wanted, &live, &synced, true, &HashSet::new());
        assert_eq!(p.create, vec![3]);
        assert_eq!(p.update, vec![1]);
        assert_eq!(p.unchanged, 2);
        assert_eq!(p.delete, vec![(key("orphan"), "v1".to_string())]);
        let p = plan_live(&wanted, &live, &synced, false, &HashSet::new());
        assert!(p.delete.is_empty());
    }
}
