//! The types of an environment's bounds and secrets settings that are more than a scalar:
//! refused kinds (`denied_kinds`) with their defaults, and `decryption:` (the age key file).

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, read_secret};

/// A refused kind: `Kind.group` glob, or that glob and a subject-name glob for RBAC bindings
/// (refused when any `User` or `Group` subject matches).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum DeniedKind {
    Kind(String),
    Binding { kind: String, subjects: String },
}

pub(super) fn default_cluster_scoped() -> Vec<String> {
    vec!["Namespace".to_string()]
}

pub(super) fn default_denied_kinds() -> Vec<DeniedKind> {
    ["RoleBinding", "ClusterRoleBinding"]
        .into_iter()
        .map(|kind| DeniedKind::Binding {
            kind: format!("{kind}.rbac.authorization.k8s.io"),
            subjects: "system:*".to_string(),
        })
        .collect()
}

/// `decryption:` of an environment.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecryptionConfig {
    /// age identity file (`age-keygen` output), one or more `AGE-SECRET-KEY-1…` lines.
    pub age_key_file: PathBuf,
}

impl DecryptionConfig {
    /// The age key file's text, wiped from memory when dropped.
    pub fn age_keys(&self) -> Result<zeroize::Zeroizing<String>, ConfigError> {
        let text = read_secret("decryption.age_key_file", Some(&self.age_key_file))?;
        Ok(zeroize::Zeroizing::new(text.unwrap_or_default()))
    }
}
