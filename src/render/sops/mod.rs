//! SOPS decryption at render time: objects carrying a top-level `sops:` mapping are decrypted
//! with the environment's age keys (`decryption: {age_key_file}` in the host config) after the
//! render and before anything is fingerprinted or applied, and lose their `sops:` key. Like
//! Flux, objects are decrypted one file at a time (the documents of a file share one data key
//! and one MAC), so kustomize output, whose objects name their source file, decrypts too.
//!
//! Why our own implementation over `age` + `aes-gcm` + `sha2` and not the `rops` crate: rops is
//! pre-1.0, MPL-2.0 (outside deny.toml's allow list), pulls serde_yaml and a KMS SDK by default,
//! and is "SOPS-like" rather than a reader of sops's files; the decrypting half of the format is
//! small (see [`tree`]) and is checked here against files made by the real sops CLI.
//!
//! Plaintext never leaves the decrypted body: errors name the file, the object and a path of
//! keys, never a value. May call: nothing with I/O (the key file is read by `config`).

mod tree;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::manifest::{self, DesiredState, Manifest, RenderError};

pub use tree::{METADATA_KEY, body_encrypted, is_encrypted};

/// The age identities of one environment.
#[derive(Clone)]
pub struct Keys {
    identities: Arc<Vec<Box<dyn age::Identity + Send + Sync>>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} age identities)", self.identities.len())
    }
}

impl Keys {
    /// Parses an age identity file (`AGE-SECRET-KEY-1…` lines, `#` comments). Errors give
    /// line numbers, never the file's contents.
    pub fn parse(text: &str) -> Result<Keys, KeyError> {
        let file =
            age::IdentityFile::from_buffer(text.as_bytes()).map_err(|e| KeyError(e.to_string()))?;
        let identities = file
            .into_identities()
            .map_err(|e| KeyError(e.to_string()))?;
        if identities.is_empty() {
            return Err(KeyError("no age identity in the file".into()));
        }
        Ok(Keys {
            identities: Arc::new(identities),
        })
    }
}

/// An age key file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

impl KeyError {
    /// A bad key file stays bad until the operator fixes it.
    pub fn is_transient(&self) -> bool {
        false
    }
}

/// Why one SOPS object cannot be decrypted. Never holds a value.
#[derive(Debug, thiserror::Error)]
pub enum SopsError {
    #[error(
        "is SOPS-encrypted, but this environment has no decryption settings (decryption.age_key_file in the host config)"
    )]
    NoDecryption,
    #[error(
        "SOPS: none of this environment's age keys opens the data key (recipients: {})",
        .recipients.join(", ")
    )]
    NoKey { recipients: Vec<String> },
    #[error("SOPS metadata: {0}")]
    Metadata(String),
    #[error("SOPS: not supported: {0}")]
    Unsupported(String),
    #[error("SOPS: the value at {path} does not decrypt (changed, or moved to another key)")]
    Value { path: String },
    #[error("SOPS: the value at {path} is not a valid {kind}")]
    Type { path: String, kind: String },
    #[error(
        "SOPS: MAC mismatch: the object was changed after it was encrypted (by hand, or by a kustomize transformation: encrypt with --mac-only-encrypted for those)"
    )]
    MacMismatch,
}

impl SopsError {
    /// The commit's content is at fault: retrying gives the same answer.
    pub fn is_transient(&self) -> bool {
        false
    }
}

/// Decrypts the documents of one SOPS file (see [`tree::decrypt`]).
pub fn decrypt_bodies(bodies: &mut [serde_json::Value], keys: &Keys) -> Result<(), SopsError> {
    tree::decrypt(bodies, &keys.identities)
}

/// Decrypts every SOPS object of `state` in place (others are left as they are, so a state
/// re-rendered from a decrypted one only decrypts its changed files). The documents of one file
/// that share a MAC are decrypted together, in document order. Objects are re-keyed by their
/// decrypted identity, since sops encrypts `kind` and `metadata.name` too unless told not to.
/// Errors name the file and the object. `written` holds the source documents of rendered
/// (kustomize) objects, whose keys are put back in the file's order first.
pub fn decrypt_state(
    state: &mut DesiredState,
    keys: Option<&Keys>,
    written: &Written,
) -> Result<(), Vec<RenderError>> {
    let mut groups: BTreeMap<(String, String), Vec<Arc<Manifest>>> = BTreeMap::new();
    for m in state.objects.values().filter(|m| body_encrypted(&m.body)) {
        let mac = tree::mac_of(&m.body.value())
            .unwrap_or_default()
            .to_string();
        groups
            .entry((m.source.path.clone(), mac))
            .or_default()
            .push(Arc::clone(m));
    }
    let mut errors = Vec::new();
    for mut group in groups.into_values() {
        group.sort_by_key(|m| m.source.document);
        for m in &group {
            state.objects.remove(&m.key);
        }
        match decrypt_group(&group, keys, written) {
            Ok(decrypted) => {
                for (old, new) in group.iter().zip(decrypted) {
                    rekey(state, old, new, &mut errors);
                }
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The decrypted objects of one file, or the error naming its first object.
fn decrypt_group(
    group: &[Arc<Manifest>],
    keys: Option<&Keys>,
    written: &Written,
) -> Result<Vec<Manifest>, RenderError> {
    let Some(first) = group.first() else {
        return Ok(Vec::new());
    };
    // An identity sops encrypted is ciphertext: the file and line name the object then.
    let object = Some(first.key.to_string()).filter(|k| !k.contains("ENC[AES256_GCM"));
    let fail = |e: SopsError| RenderError {
        path: first.source.path.clone(),
        line: Some(first.source.line),
        object: object.clone(),
        message: e.to_string(),
    };
    let keys = keys.ok_or_else(|| fail(SopsError::NoDecryption))?;
    let mut bodies: Vec<_> = group.iter().map(|m| as_written(m, written)).collect();
    decrypt_bodies(&mut bodies, keys).map_err(fail)?;
    group
        .iter()
        .zip(bodies)
        .map(|(m, body)| manifest::reparse(body, m.source.clone()))
        .collect()
}

/// Source documents by (repository path, document index), as [`manifest::parse_file`] reads
/// them.
pub type Written = BTreeMap<(String, usize), serde_json::Value>;

/// `m`'s body with its keys in the order of its source document, when that is the same
/// encrypted document (the same MAC).
fn as_written(m: &Manifest, written: &Written) -> serde_json::Value {
    let mut body = m.body.value();
    let source = written
        .get(&(m.source.path.clone(), m.source.document))
        .filter(|doc| tree::mac_of(doc).is_some() && tree::mac_of(doc) == tree::mac_of(&body));
    if let Some(doc) = source {
        tree::reorder_like(&mut body, doc);
    }
    body
}

/// Puts a decrypted object back under its (possibly new) identity.
fn rekey(state: &mut DesiredState, old: &Manifest, new: Manifest, errors: &mut Vec<RenderError>) {
    if let Some(first) = state.objects.get(&new.key) {
        errors.push(RenderError {
            path: new.source.path.clone(),
            line: Some(new.source.line),
            object: Some(new.key.to_string()),
            message: format!("duplicate object, first defined at {}", first.source),
        });
        return;
    }
    if let Some(keys) = state.files.get_mut(&old.source.path) {
        for k in keys.iter_mut().filter(|k| **k == old.key) {
            *k = new.key.clone();
        }
    }
    state.objects.insert(new.key.clone(), Arc::new(new));
}

#[cfg(test)]
mod tests;
