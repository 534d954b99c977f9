//! Trust checks: the notes signing key (required unless `trust_unsigned_notes: true`), the
//! trusted note keys and the commit signers must load.

use crate::config::{HostConfig, trust};
use crate::schema::Checker;

pub(super) fn check(config: &HostConfig, c: &mut Checker) {
    match &config.notes_signing_key_file {
        Some(path) => {
            if let Err(e) = trust::signing_key(path) {
                c.problem_at("notes_signing_key_file", e.to_string());
            }
        }
        None if !config.trust_unsigned_notes => c.problem_at(
            "notes_signing_key_file",
            "required: status notes are signed so that pushed notes cannot forge gitopsd's decisions (or set trust_unsigned_notes: true to run with unsigned notes)",
        ),
        None => {}
    }
    for (i, path) in config.trusted_note_keys.iter().enumerate() {
        if let Err(e) = trust::public_keys(path) {
            c.problem_at(&format!("trusted_note_keys[{i}]"), e.to_string());
        }
    }
    if let Some(v) = &config.repository.verify
        && let Err(e) = trust::allowed_signers(&v.allowed_signers)
    {
        c.problem_at("repository.verify.allowed_signers", e.to_string());
    }
}
