//! What `gitopsd once` (and a manual rollback) prints per environment: one line a person reads
//! (outcome, commit, counts, the first errors with file:line), or a JSON object for tools. Pure.

use serde_json::{Value, json};

use super::Step;
use crate::status::Record;

/// How many errors a line shows; the note has them all.
const FIRST_ERRORS: usize = 3;

/// The 12-character short form of a commit id.
fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// One readable line for `env`; `record` is the note's section for the step's commit, if any.
pub fn line(env: &str, step: &Step, record: Option<&Record>) -> String {
    let mut out = match step {
        Step::Converged { commit } => {
            format!("{env}: healthy at {} (nothing to do)", short(commit))
        }
        Step::Pinned { commit, reason } => format!(
            "{env}: pinned {}: {}; staying at what was applied last",
            short(commit),
            one_line(reason)
        ),
        Step::Recorded { commit, outcome } => format!("{env}: {outcome} {}", short(commit)),
        Step::Drift {
            commit,
            objects,
            corrected,
        } => format!(
            "{env}: drift at {}: {objects} objects {}",
            short(commit),
            if *corrected { "corrected" } else { "reported" }
        ),
    };
    let Some(r) = record.filter(|_| matches!(step, Step::Recorded { .. })) else {
        return out;
    };
    let c = &r.counts;
    out.push_str(&format!(
        ": {} created, {} updated, {} deleted, {} unchanged",
        c.created, c.updated, c.deleted, c.unchanged
    ));
    if let Some(b) = &r.buckets {
        out.push_str(&format!(
            "; buckets {} created, {} updated, {} deleted",
            b.created, b.updated, b.deleted
        ));
    }
    if !r.errors.is_empty() {
        let first: Vec<String> = r
            .errors
            .iter()
            .take(FIRST_ERRORS)
            .map(|e| {
                let at =
                    e.at.as_deref()
                        .map(|a| format!(" ({a})"))
                        .unwrap_or_default();
                let object = if e.object.is_empty() {
                    ""
                } else {
                    e.object.as_str()
                };
                one_line(&format!("{object}{at}: {}", e.reason))
            })
            .collect();
        let more = r.errors.len().saturating_sub(FIRST_ERRORS);
        out.push_str(&format!(
            "; {} errors: {}",
            r.errors.len(),
            first.join("; ")
        ));
        if more > 0 {
            out.push_str(&format!("; and {more} more (see the note)"));
        }
    }
    out
}

/// The same as JSON: `{environment, step, commit, outcome?, counts?, errors?}`; a pinned head
/// carries its recorded outcome, counts and errors too.
pub fn json(env: &str, step: &Step, record: Option<&Record>) -> Value {
    let (kind, commit) = match step {
        Step::Converged { commit } => ("converged", commit),
        Step::Pinned { commit, .. } => ("pinned", commit),
        Step::Recorded { commit, .. } => ("recorded", commit),
        Step::Drift { commit, .. } => ("drift", commit),
    };
    let mut v = json!({"environment": env, "step": kind, "commit": commit});
    match step {
        Step::Pinned { reason, .. } => v["reason"] = json!(reason),
        Step::Recorded { outcome, .. } => v["outcome"] = json!(outcome.as_str()),
        Step::Drift {
            objects, corrected, ..
        } => {
            v["objects"] = json!(objects);
            v["corrected"] = json!(corrected);
        }
        Step::Converged { .. } => v["outcome"] = json!("healthy"),
    }
    if let (Some(r), Step::Recorded { .. } | Step::Pinned { .. }) = (record, step) {
        v["outcome"] = json!(r.outcome.as_str());
        v["counts"] = serde_json::to_value(&r.counts).unwrap_or(Value::Null);
        v["errors"] = serde_json::to_value(&r.errors).unwrap_or(Value::Null);
    }
    v
}

/// Newlines in messages would start lines of their own.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{ObjectError, Outcome};

    fn rejected() -> Record {
        let mut r = Record::new(Outcome::Rejected, None, "t".into());
        r.errors = (0..5)
            .map(|i| ObjectError {
                object: format!("ConfigMap web/c{i}"),
                at: Some(format!("envs/dev/c{i}.yaml:3")),
                reason: "field not declared\nin schema".into(),
            })
            .collect();
        r
    }

    #[test]
    fn a_rejection_names_the_first_errors_with_file_and_line() {
        let step = Step::Recorded {
            commit: "0123456789abcdef0123".into(),
            outcome: Outcome::Rejected,
        };
        let l = line("dev", &step, Some(&rejected()));
        assert!(
            l.starts_with("dev: rejected 0123456789ab: 0 created"),
            "{l}"
        );
        assert!(
            l.contains(
                "5 errors: ConfigMap web/c0 (envs/dev/c0.yaml:3): field not declared in schema"
            ),
            "{l}"
        );
        assert!(l.contains("and 2 more"), "{l}");
        assert!(!l.contains('\n') && !l.contains("c3.yaml"), "{l}");
    }

    #[test]
    fn converged_and_pinned_lines_read_as_words() {
        let c = Step::Converged {
            commit: "abcdef0123456789".into(),
        };
        assert_eq!(
            line("prod", &c, None),
            "prod: healthy at abcdef012345 (nothing to do)"
        );
        let p = Step::Pinned {
            commit: "abcdef0123456789".into(),
            reason: "rolled back".into(),
        };
        assert!(line("prod", &p, None).starts_with("prod: pinned abcdef012345: rolled back"));
    }

    #[test]
    fn json_carries_counts_and_errors() {
        let step = Step::Recorded {
            commit: "c".into(),
            outcome: Outcome::Rejected,
        };
        let v = json("dev", &step, Some(&rejected()));
        assert_eq!(v["outcome"], "rejected");
        assert_eq!(v["errors"].as_array().map(Vec::len), Some(5));
        assert_eq!(v["counts"]["created"], 0);
    }
}
