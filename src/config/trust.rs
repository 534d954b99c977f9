//! Loading the trust material the host config names: the notes signing key, the trusted note
//! keys and the commit signers. Key material never appears in an error.

use std::path::Path;

use ssh_key::{PrivateKey, PublicKey};

use super::{ConfigError, HostConfig};
use crate::git::AllowedSigners;
use crate::status::Notary;

fn read(key: &str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Credential {
        key: key.to_string(),
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(key: &str, path: &Path, message: impl Into<String>) -> ConfigError {
    ConfigError::KeyFile {
        key: key.to_string(),
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// An unencrypted private key that can sign (tried once here, so signing never fails later).
pub(super) fn signing_key(path: &Path) -> Result<PrivateKey, ConfigError> {
    const KEY: &str = "notes_signing_key_file";
    let text = read(KEY, path)?;
    let key = PrivateKey::from_openssh(text.trim())
        .map_err(|e| invalid(KEY, path, format!("not an OpenSSH private key: {e}")))?;
    if key.is_encrypted() {
        return Err(invalid(
            KEY,
            path,
            "the key is encrypted (gitopsd runs unattended)",
        ));
    }
    let probe = Notary::new(Some(key.clone()), Vec::new(), false);
    probe.seal_text("0", "").map_err(|_| {
        invalid(
            KEY,
            path,
            format!("cannot sign with a {} key (use ed25519)", key.algorithm()),
        )
    })?;
    Ok(key)
}

/// Every public key of an authorized_keys-style file (options and comments allowed).
pub(super) fn public_keys(path: &Path) -> Result<Vec<PublicKey>, ConfigError> {
    const KEY: &str = "trusted_note_keys";
    let text = read(KEY, path)?;
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let entry = line
            .parse::<ssh_key::authorized_keys::Entry>()
            .map_err(|e| invalid(KEY, path, format!("line {}: {e}", i + 1)))?;
        keys.push(entry.public_key().clone());
    }
    if keys.is_empty() {
        return Err(invalid(KEY, path, "no public key in the file"));
    }
    Ok(keys)
}

pub(super) fn allowed_signers(path: &Path) -> Result<AllowedSigners, ConfigError> {
    const KEY: &str = "repository.verify.allowed_signers";
    let text = read(KEY, path)?;
    let signers = AllowedSigners::parse(&text)
        .map_err(|(line, e)| invalid(KEY, path, format!("line {line}: {e}")))?;
    if signers.is_empty() {
        return Err(invalid(
            KEY,
            path,
            "no signers: every commit would be rejected",
        ));
    }
    Ok(signers)
}

impl HostConfig {
    /// Signs the records this host writes and decides which ones to trust.
    pub fn notary(&self) -> Result<Notary, ConfigError> {
        let key = self
            .notes_signing_key_file
            .as_deref()
            .map(signing_key)
            .transpose()?;
        let mut trusted = Vec::new();
        for path in &self.trusted_note_keys {
            trusted.extend(public_keys(path)?);
        }
        Ok(Notary::new(key, trusted, self.trust_unsigned_notes))
    }

    /// The commit signers of `repository.verify`, if configured.
    pub fn allowed_signers(&self) -> Result<Option<AllowedSigners>, ConfigError> {
        self.repository
            .verify
            .as_ref()
            .map(|v| allowed_signers(&v.allowed_signers))
            .transpose()
    }
}
