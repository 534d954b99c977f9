//! Pure diff of two desired states: what to create, update and delete, with unified diffs.
//!
//! `plan_keys` compares only the objects a re-render touched, so planning a commit costs
//! O(changed), not O(repository).

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;

use crate::manifest::{DesiredState, Manifest, ObjectKey};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Change {
    pub key: ObjectKey,
    pub action: Action,
    pub before: Option<Arc<Manifest>>,
    pub after: Option<Arc<Manifest>>,
}

#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub unchanged: usize,
}

impl Plan {
    pub fn count(&self, action: Action) -> usize {
        self.changes.iter().filter(|c| c.action == action).count()
    }
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Full comparison (first apply when `before` is `None`).
pub fn plan(before: Option<&DesiredState>, after: &DesiredState) -> Plan {
    let mut keys: BTreeSet<&ObjectKey> = after.objects.keys().collect();
    if let Some(before) = before {
        keys.extend(before.objects.keys());
    }
    let keys: Vec<ObjectKey> = keys.into_iter().cloned().collect();
    plan_keys(before, after, &keys)
}

/// Compares only `keys` (the objects of changed files); everything else in `after` is unchanged.
pub fn plan_keys(before: Option<&DesiredState>, after: &DesiredState, keys: &[ObjectKey]) -> Plan {
    let mut changes = Vec::new();
    for key in keys {
        let old = before.and_then(|b| b.objects.get(key));
        let new = after.objects.get(key);
        let action = match (old, new) {
            (None, Some(_)) => Action::Create,
            (Some(_), None) => Action::Delete,
            (Some(o), Some(n)) if o.body != n.body || o.api_version != n.api_version => {
                Action::Update
            }
            _ => continue,
        };
        changes.push(Change {
            key: key.clone(),
            action,
            before: old.cloned(),
            after: new.cloned(),
        });
    }
    let changed_in_after = changes.iter().filter(|c| c.after.is_some()).count();
    Plan {
        unchanged: after.len().saturating_sub(changed_in_after),
        changes,
    }
}

/// YAML text of a value for diffs and previews (stable key order as written).
pub fn to_yaml(value: &Value) -> String {
    serde_saphyr::to_string(value).unwrap_or_else(|e| format!("# cannot render as YAML: {e}\n"))
}

/// Unified diff of two YAML renderings, labelled like `git diff`.
pub fn unified_diff(before: Option<&Value>, after: Option<&Value>, label: &str) -> String {
    let old = before.map(to_yaml).unwrap_or_default();
    let new = after.map(to_yaml).unwrap_or_default();
    similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{label}"), &format!("b/{label}"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{EntryKind, FileEntry, render};

    fn state(files: &[(&str, &str)]) -> DesiredState {
        render(
            "e",
            files.iter().map(|(p, t)| FileEntry {
                path: format!("e/{p}"),
                kind: EntryKind::File,
                bytes: t.as_bytes().to_vec(),
            }),
        )
        .unwrap()
    }

    #[test]
    fn first_plan_creates_everything() {
        let c = state(&[(
            "a.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
        )]);
        let p = plan(None, &c);
        assert_eq!(p.count(Action::Create), 1);
        assert_eq!(p.unchanged, 0);
    }

    #[test]
    fn plan_finds_create_update_delete_and_unchanged() {
        let a = state(&[
            (
                "a.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: '1'}\n",
            ),
            (
                "b.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n",
            ),
            (
                "c.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
            ),
        ]);
        let c = state(&[
            (
                "a.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: '2'}\n",
            ),
            (
                "c.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
            ),
            (
                "d.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: d}\n",
            ),
        ]);
        let p = plan(Some(&a), &c);
        assert_eq!(
            (
                p.count(Action::Create),
                p.count(Action::Update),
                p.count(Action::Delete),
                p.unchanged
            ),
            (1, 1, 1, 1)
        );
        let update = p
            .changes
            .iter()
            .find(|c| c.action == Action::Update)
            .unwrap();
        let diff = unified_diff(
            update.before.as_ref().map(|m| &m.body),
            update.after.as_ref().map(|m| &m.body),
            "ConfigMap a",
        );
        assert!(
            diff.contains("-  k: '1'") || diff.contains("-  k: \"1\""),
            "{diff}"
        );
    }
}
