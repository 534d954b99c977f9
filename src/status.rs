//! Record: the outcome of each commit per environment, stored as git notes. Owns the record
//! format (write, parse, merge of sections) and the status report; pure: writing and reading the
//! notes is `git`'s. May call: nothing with I/O.
//!
//! One note per commit; inside it one section per environment. The body is YAML (so tools parse
//! it) preceded by `#` summary lines (so `git log --notes=gitopsd` reads well). Sections of other
//! environments are always carried over untouched when ours is written.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod report;
pub mod sign;

pub use report::format_report;
pub use sign::{Notary, SignError, Untrusted};

/// What happened to a commit in one environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Applied and healthy.
    Healthy,
    /// Failed validation; nothing was applied.
    Rejected,
    /// Applied, unhealthy, and rolled back to the previous healthy commit.
    RolledBack,
    /// Applied, unhealthy, and the rollback did not become healthy either.
    RollbackFailed,
    /// Applied and unhealthy with nothing to roll back to (or rollback is off).
    Unhealthy,
    /// A newer commit was applied before this one finished.
    Superseded,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Healthy => "healthy",
            Outcome::Rejected => "rejected",
            Outcome::RolledBack => "rolled-back",
            Outcome::RollbackFailed => "rollback-failed",
            Outcome::Unhealthy => "unhealthy",
            Outcome::Superseded => "superseded",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    pub unchanged: usize,
}

/// A failing object (or file) and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectError {
    /// `Kind namespace/name`, or empty when the error is about a file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub object: String,
    /// `path:line` when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    pub reason: String,
}

/// A later re-application of this commit (rollback target or manual rollback).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reapplied {
    pub at: String,
    /// The commit whose failure (or the operator's request) caused it.
    pub because: String,
    pub healthy: bool,
}

/// One environment's section of a note.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub outcome: Outcome,
    /// The commit the environment moved from (A), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub started: String,
    pub finished: String,
    #[serde(default)]
    pub counts: Counts,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ObjectError>,
    /// Why this commit must not be applied again until a newer commit or `gitopsd retry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reapplied: Vec<Reapplied>,
    /// Set while a rollback away from this commit is under way, so that a restart finishes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rolling_back: bool,
    /// Buckets created/updated/deleted/unchanged (S3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<Counts>,
    /// Free-form remarks (e.g. why a prune was refused).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<String>,
    /// The commit whose render this step left applied in the cluster, whatever the outcome
    /// (this commit, or the one a rollback returned to); absent when nothing was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<String>,
    /// Changes found in the cluster by hand (the most recent [`MAX_DRIFT_ENTRIES`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<Drift>,
    /// The renderer that produced this commit's objects (e.g. `kustomize v5.8.2 + helm v4.3.1`);
    /// absent for plain YAML folders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renderer: Option<String>,
    pub version: String,
    /// Armored sshsig signature over the commit, the environment and the rest of the record
    /// (see [`sign`]); records without a valid one are ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// How many drift entries a record keeps.
pub const MAX_DRIFT_ENTRIES: usize = 10;
/// How many objects a drift entry names.
pub const MAX_DRIFT_OBJECTS: usize = 20;

/// Objects found changed or deleted in the cluster, and whether gitopsd put them back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    pub at: String,
    /// `Kind namespace/name` of the drifted objects (at most [`MAX_DRIFT_OBJECTS`]).
    pub objects: Vec<String>,
    /// How many objects drifted in all.
    pub count: usize,
    pub corrected: bool,
}

impl Record {
    /// Appends a drift entry found `at`, keeping the most recent [`MAX_DRIFT_ENTRIES`].
    pub fn push_drift(&mut self, at: &str, objects: &[String], corrected: bool) {
        self.drift.push(Drift {
            at: at.to_string(),
            objects: objects.iter().take(MAX_DRIFT_OBJECTS).cloned().collect(),
            count: objects.len(),
            corrected,
        });
        let excess = self.drift.len().saturating_sub(MAX_DRIFT_ENTRIES);
        self.drift.drain(..excess);
    }
}

impl Record {
    pub fn new(outcome: Outcome, from: Option<String>, started: String) -> Record {
        Record {
            outcome,
            from,
            started,
            finished: now_rfc3339(),
            counts: Counts::default(),
            errors: Vec::new(),
            pinned: None,
            reapplied: Vec::new(),
            rolling_back: false,
            buckets: None,
            messages: Vec::new(),
            applied: None,
            drift: Vec::new(),
            renderer: None,
            version: crate::VERSION.to_string(),
            signature: None,
        }
    }

    /// When this commit last became the environment's healthy state, if ever.
    pub fn healthy_since(&self) -> Option<&str> {
        let reapplied = self
            .reapplied
            .iter()
            .filter(|r| r.healthy)
            .map(|r| r.at.as_str())
            .max();
        let own = (self.outcome == Outcome::Healthy).then_some(self.finished.as_str());
        own.into_iter().chain(reapplied).max()
    }

    fn summary(&self, env: &str) -> String {
        let c = &self.counts;
        let mut line = format!(
            "# gitopsd {env}: {} ({} created, {} updated, {} deleted, {} unchanged)",
            self.outcome, c.created, c.updated, c.deleted, c.unchanged
        );
        if !self.errors.is_empty() {
            line.push_str(&format!(", {} errors", self.errors.len()));
        }
        if let Some(reason) = &self.pinned {
            line.push_str(&format!("; pinned: {}", one_line(reason)));
        }
        if let Some(last) = self.reapplied.last() {
            line.push_str(&format!(
                "; re-applied {} because of {}",
                last.at,
                short(&last.because)
            ));
        }
        line
    }
}

/// A whole note: one section per environment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Note {
    #[serde(default)]
    pub environments: BTreeMap<String, Record>,
    /// Text of a note that was not ours to parse, kept rather than overwritten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unparsed: Option<String>,
}

impl Note {
    /// Parses a note; text that is not a gitopsd note is kept in `unparsed`, never dropped.
    pub fn parse(text: &str) -> Note {
        match serde_saphyr::from_str::<Note>(text) {
            Ok(note) => note,
            Err(_) => Note {
                environments: BTreeMap::new(),
                unparsed: Some(text.to_string()),
            },
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (env, record) in &self.environments {
            out.push_str(&record.summary(env));
            out.push('\n');
        }
        match serde_saphyr::to_string(self) {
            Ok(yaml) => out.push_str(&yaml),
            // Serialising plain strings and numbers cannot fail; keep the summary if it ever does.
            Err(e) => out.push_str(&format!("# cannot serialise note: {e}\n")),
        }
        out
    }
}

/// Replaces (or adds) one environment's section of a note's text, keeping every other section.
pub fn merge_section(existing: Option<&str>, env: &str, record: &Record) -> String {
    let mut note = existing.map(Note::parse).unwrap_or_default();
    note.environments.insert(env.to_string(), record.clone());
    note.render()
}

/// Three-way merge of a note that two writers changed at once (a notes push raced another
/// writer): per environment, a section we did not change (ours == base) takes theirs, otherwise
/// ours. Installed as the mirror's note merger: the generic merge works on top-level YAML keys,
/// and every section of a gitopsd note lives under the single key `environments`.
pub fn merge_notes(base: Option<&str>, ours: &str, theirs: Option<&str>) -> String {
    let Some(theirs) = theirs else {
        return ours.to_string();
    };
    let base = base.map(Note::parse).unwrap_or_default();
    let ours = Note::parse(ours);
    let mut merged = Note::parse(theirs);
    let envs: std::collections::BTreeSet<&String> = base
        .environments
        .keys()
        .chain(ours.environments.keys())
        .collect();
    for env in envs {
        let mine = ours.environments.get(env);
        if mine == base.environments.get(env) {
            continue;
        }
        match mine {
            Some(record) => merged.environments.insert(env.clone(), record.clone()),
            None => merged.environments.remove(env),
        };
    }
    if ours.unparsed != base.unparsed {
        merged.unparsed = ours.unparsed;
    }
    merged.render()
}

/// `ours` (a note written here, not pushed yet) with `env`'s section put back as `theirs`
/// (the remote's) has it: used when this host stopped leading `env`, so a section from its
/// ended term is never pushed over the new leader's. Empty when nothing of ours is left.
pub fn revert_section(theirs: Option<&str>, ours: &str, env: &str) -> String {
    let theirs = theirs.map(Note::parse).unwrap_or_default();
    let mut note = Note::parse(ours);
    if note.environments.get(env) == theirs.environments.get(env) {
        return ours.to_string();
    }
    match theirs.environments.get(env) {
        Some(record) => note.environments.insert(env.to_string(), record.clone()),
        None => note.environments.remove(env),
    };
    if note.environments.is_empty() && note.unparsed.is_none() {
        return String::new();
    }
    note.render()
}

/// Changes one environment's existing, trusted section in place (e.g. pin, unpin, add a
/// re-application) and signs it again. Returns `None` when there is no trusted section for `env`
/// (an untrusted one is never edited: re-signing it would launder it).
pub fn edit_section(
    existing: Option<&str>,
    commit: &str,
    env: &str,
    notary: &Notary,
    edit: impl FnOnce(&mut Record),
) -> Result<Option<String>, SignError> {
    let Some(mut note) = existing.map(Note::parse) else {
        return Ok(None);
    };
    let Some(record) = note.environments.get_mut(env) else {
        return Ok(None);
    };
    if notary.verify_record(commit, env, record).is_err() {
        return Ok(None);
    }
    edit(record);
    notary.sign_record(commit, env, record)?;
    Ok(Some(note.render()))
}

/// Pins `env`'s section with `reason`: the trusted section, or else a new `superseded` one
/// (replacing an untrusted one), signed.
pub fn pin_section(
    existing: Option<&str>,
    commit: &str,
    env: &str,
    reason: &str,
    notary: &Notary,
) -> Result<String, SignError> {
    let mut note = existing.map(Note::parse).unwrap_or_default();
    let trusted = note
        .environments
        .get(env)
        .filter(|r| notary.verify_record(commit, env, r).is_ok())
        .cloned();
    let mut record = trusted.unwrap_or_else(|| {
        let mut r = Record::new(Outcome::Superseded, None, now_rfc3339());
        r.messages.push("never applied".into());
        r
    });
    record.pinned = Some(reason.to_string());
    notary.sign_record(commit, env, &mut record)?;
    note.environments.insert(env.to_string(), record);
    Ok(note.render())
}

/// Wall-clock time for records (UTC, seconds, sortable as text).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

fn one_line(s: &str) -> String {
    s.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(160)
        .collect()
}

/// Per environment, from all notes: the last healthy commit and the pinned commits.
#[derive(Clone, Debug, Default)]
pub struct EnvHistory {
    /// (commit, since) of the most recent healthy state.
    pub last_healthy: Option<(String, String)>,
    /// Commits pinned for this environment, with the reason.
    pub pinned: BTreeMap<String, String>,
    /// Every record for this environment by commit.
    pub records: BTreeMap<String, Record>,
    /// (commit, when) of the render most recently applied to the cluster, whatever its outcome.
    pub last_applied: Option<(String, String)>,
    /// Records ignored because their signature does not verify, by commit.
    pub untrusted: BTreeMap<String, Untrusted>,
}

/// Builds each environment's history from `(commit, note text)` pairs, from the records
/// `notary` trusts only.
pub fn history<'a>(
    notes: impl IntoIterator<Item = (String, &'a str)>,
    env: &str,
    notary: &Notary,
) -> EnvHistory {
    let mut h = EnvHistory::default();
    for (commit, text) in notes {
        let note = Note::parse(text);
        let Some(record) = note.environments.get(env) else {
            continue;
        };
        if let Err(why) = notary.verify_record(&commit, env, record) {
            h.untrusted.insert(commit, why);
            continue;
        }
        if let Some(since) = record.healthy_since() {
            let newer = h
                .last_healthy
                .as_ref()
                .is_none_or(|(_, best)| since > best.as_str());
            if newer {
                h.last_healthy = Some((commit.clone(), since.to_string()));
            }
        }
        if let Some(reason) = &record.pinned {
            h.pinned.insert(commit.clone(), reason.clone());
        }
        // Re-applications (rollback targets, manual rollbacks) apply this commit again.
        let reapplied = record
            .reapplied
            .iter()
            .map(|r| (commit.clone(), r.at.clone()));
        let own = record
            .applied
            .clone()
            .map(|applied| (applied, record.finished.clone()));
        for (applied, at) in own.into_iter().chain(reapplied) {
            if h.last_applied.as_ref().is_none_or(|(_, best)| at > *best) {
                h.last_applied = Some((applied, at));
            }
        }
        h.records.insert(commit, record.clone());
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_entries_are_bounded() {
        let mut r = Record::new(Outcome::Healthy, None, "2026-01-01T00:00:00.000Z".into());
        let many: Vec<String> = (0..30).map(|i| format!("ConfigMap dev/c{i}")).collect();
        for n in 0..12 {
            r.push_drift(&format!("2026-01-01T00:00:{n:02}.000Z"), &many, n % 2 == 0);
        }
        assert_eq!(r.drift.len(), MAX_DRIFT_ENTRIES);
        assert_eq!(
            r.drift[0].at, "2026-01-01T00:00:02.000Z",
            "the oldest go first"
        );
        assert_eq!(r.drift[0].objects.len(), MAX_DRIFT_OBJECTS);
        assert_eq!(r.drift[0].count, 30);
    }

    fn record(outcome: Outcome, finished: &str) -> Record {
        let mut r = Record::new(outcome, None, "2026-01-01T00:00:00.000Z".into());
        r.finished = finished.into();
        r
    }

    #[test]
    fn note_round_trips_and_reads_well() {
        let mut r = record(Outcome::Rejected, "2026-01-01T00:00:01.000Z");
        r.errors.push(ObjectError {
            object: "ConfigMap a/b".into(),
            at: Some("env/a.yaml:3".into()),
            reason: "invalid: data: must be a map".into(),
        });
        let text = merge_section(None, "dev", &r);
        assert!(
            text.starts_with("# gitopsd dev: rejected (0 created"),
            "{text}"
        );
        let note = Note::parse(&text);
        assert_eq!(note.environments["dev"], r);
    }

    #[test]
    fn merging_keeps_other_environments_and_foreign_text() {
        let dev = record(Outcome::Healthy, "2026-01-01T00:00:01.000Z");
        let prod = record(Outcome::RolledBack, "2026-01-01T00:00:02.000Z");
        let text = merge_section(None, "dev", &dev);
        let text = merge_section(Some(&text), "prod", &prod);
        let note = Note::parse(&text);
        assert_eq!(note.environments.len(), 2);
        let foreign = merge_section(Some("reviewed-by: alice"), "dev", &dev);
        let note = Note::parse(&foreign);
        assert_eq!(note.unparsed.as_deref(), Some("reviewed-by: alice"));
        assert_eq!(note.environments["dev"], dev);
    }

    #[test]
    fn concurrent_writers_keep_both_sections() {
        let dev = record(Outcome::Healthy, "2026-01-01T00:00:01.000Z");
        let prod = record(Outcome::Rejected, "2026-01-01T00:00:02.000Z");
        let base = merge_section(None, "old", &dev);
        let ours = merge_section(Some(&base), "dev", &dev);
        let theirs = merge_section(Some(&base), "prod", &prod);
        let note = Note::parse(&merge_notes(Some(&base), &ours, Some(&theirs)));
        assert_eq!(note.environments.len(), 3, "{note:?}");
        assert_eq!(note.environments["prod"], prod);
        // New note on both sides, no base.
        let ours = merge_section(None, "dev", &dev);
        let theirs = merge_section(None, "prod", &prod);
        let note = Note::parse(&merge_notes(None, &ours, Some(&theirs)));
        assert_eq!(note.environments.len(), 2, "{note:?}");
        // A section we did not touch takes their newer version.
        let mut dev2 = dev.clone();
        dev2.pinned = Some("x".into());
        let theirs = merge_section(Some(&base), "old", &dev2);
        let ours = merge_section(Some(&base), "dev", &dev);
        let note = Note::parse(&merge_notes(Some(&base), &ours, Some(&theirs)));
        assert_eq!(note.environments["old"], dev2);
    }

    #[test]
    fn revert_section_drops_only_the_lost_environment() {
        let dev = record(Outcome::Healthy, "2026-01-01T00:00:01.000Z");
        let newer = record(Outcome::Healthy, "2026-01-01T00:00:09.000Z");
        let prod = record(Outcome::Rejected, "2026-01-01T00:00:02.000Z");
        let theirs = merge_section(None, "dev", &newer);
        let ours = merge_section(Some(&merge_section(None, "dev", &dev)), "prod", &prod);
        let reverted = Note::parse(&revert_section(Some(&theirs), &ours, "dev"));
        assert_eq!(reverted.environments["dev"], newer);
        assert_eq!(reverted.environments["prod"], prod);
        // Nothing of ours left: no note.
        let only = merge_section(None, "dev", &dev);
        assert_eq!(revert_section(None, &only, "dev"), "");
        assert_eq!(revert_section(Some(&only), &only, "dev"), only);
    }

    #[test]
    fn history_finds_latest_healthy_including_reapplications_and_pins() {
        let a = record(Outcome::Healthy, "2026-01-01T00:00:01.000Z");
        let mut b = record(Outcome::Healthy, "2026-01-01T00:00:02.000Z");
        let mut c = record(Outcome::RolledBack, "2026-01-01T00:00:03.000Z");
        c.pinned = Some("Deployment web/api: not ready".into());
        let ta = merge_section(None, "dev", &a);
        let tc = merge_section(None, "dev", &c);
        let tb = merge_section(None, "dev", &b);
        let h = history(
            [
                ("a".to_string(), ta.as_str()),
                ("b".into(), tb.as_str()),
                ("c".into(), tc.as_str()),
            ],
            "dev",
            &Notary::unsigned(),
        );
        assert_eq!(h.last_healthy.as_ref().unwrap().0, "b");
        assert!(h.pinned.contains_key("c"));
        // A re-application of an older commit makes it the current healthy state.
        b.reapplied.clear();
        let mut a2 = a.clone();
        a2.reapplied.push(Reapplied {
            at: "2026-01-01T00:00:04.000Z".into(),
            because: "c".into(),
            healthy: true,
        });
        let ta2 = merge_section(None, "dev", &a2);
        let h = history(
            [("a".to_string(), ta2.as_str()), ("b".into(), tb.as_str())],
            "dev",
            &Notary::unsigned(),
        );
        assert_eq!(h.last_healthy.unwrap().0, "a");
        // Other environments' records are invisible.
        assert!(
            history(
                [("a".to_string(), ta.as_str())],
                "prod",
                &Notary::unsigned()
            )
            .records
            .is_empty()
        );
    }
}
