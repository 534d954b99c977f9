//! Signatures on status records (sshsig through `ssh-key`): a pusher can write any note, so
//! only records signed by a trusted key count. Pure: the keys are loaded by `config`.
//!
//! The signed message binds a record to the commit its note is attached to and to the
//! environment, so a signed `healthy` record copied onto another commit or environment does not
//! verify. Preview notes (Markdown) carry their signature in a trailing HTML comment.

use ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

use super::Record;

/// sshsig namespace of gitopsd's notes (never `git`, so a note signature is no commit signature).
pub const NAMESPACE: &str = "gitopsd-note";
/// The pseudo environment a preview note's signature is bound to.
pub const PREVIEW: &str = "(preview)";
const PREVIEW_MARK: &str = "\n<!-- gitopsd-signature\n";
const PREVIEW_END: &str = "-->\n";

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("cannot sign a status record: {0}")]
    Sign(String),
}

impl SignError {
    /// A key that cannot sign once cannot sign on retry either.
    pub fn is_transient(&self) -> bool {
        false
    }
}

/// Why a record is not trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Untrusted {
    Unsigned,
    /// Not a readable sshsig signature.
    Malformed(String),
    /// Signed by a key not in `trusted_note_keys` (SHA256 fingerprint).
    UnknownKey(String),
    /// The signature does not match this record on this commit and environment.
    BadSignature,
}

impl Untrusted {
    /// Low-cardinality name for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Untrusted::Unsigned => "unsigned",
            Untrusted::Malformed(_) | Untrusted::BadSignature => "bad-signature",
            Untrusted::UnknownKey(_) => "unknown-key",
        }
    }
}

impl std::fmt::Display for Untrusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Untrusted::Unsigned => f.write_str("unsigned"),
            Untrusted::Malformed(why) => write!(f, "unreadable signature: {why}"),
            Untrusted::UnknownKey(fp) => write!(f, "signed by an untrusted key {fp}"),
            Untrusted::BadSignature => {
                f.write_str("signature does not match this record, commit and environment")
            }
        }
    }
}

/// How many verified signatures are remembered (about 3 MB); then the memo starts over.
const MEMO_LIMIT: usize = 100_000;

/// Signs what this host writes and decides which records to trust.
pub struct Notary {
    key: Option<PrivateKey>,
    trusted: Vec<PublicKey>,
    /// `trust_unsigned_notes: true`: records without a signature count (migration, or no key).
    accept_unsigned: bool,
    /// SHA-256 of (message, signature) pairs that verified: every pass reads the whole history,
    /// and an ed25519 verification costs ~100 times the hash.
    verified: std::sync::Mutex<std::collections::HashSet<[u8; 32]>>,
}

impl Notary {
    /// Signs with `key`; trusts signatures by `trusted` (its own key is always trusted).
    pub fn new(
        key: Option<PrivateKey>,
        mut trusted: Vec<PublicKey>,
        accept_unsigned: bool,
    ) -> Self {
        if let Some(k) = &key
            && !trusted
                .iter()
                .any(|t| t.key_data() == k.public_key().key_data())
        {
            trusted.push(k.public_key().clone());
        }
        Notary {
            key,
            trusted,
            accept_unsigned,
            verified: std::sync::Mutex::default(),
        }
    }

    /// Writes and trusts unsigned records (tests of code that does not care about trust).
    pub fn unsigned() -> Self {
        Notary::new(None, Vec::new(), true)
    }

    pub fn signs(&self) -> bool {
        self.key.is_some()
    }

    /// Sets `record.signature` for `record` on `commit` in `env` (clears it without a key).
    pub fn sign_record(
        &self,
        commit: &str,
        env: &str,
        record: &mut Record,
    ) -> Result<(), SignError> {
        record.signature = None;
        let Some(key) = &self.key else { return Ok(()) };
        let message = message(commit, env, &canonical(record));
        record.signature = Some(armor(key, &message)?);
        Ok(())
    }

    /// Whether `record` on `commit` in `env` may be used for decisions.
    pub fn verify_record(&self, commit: &str, env: &str, record: &Record) -> Result<(), Untrusted> {
        let Some(armored) = &record.signature else {
            return self.unsigned_ok();
        };
        let mut bare = record.clone();
        bare.signature = None;
        self.verify(armored, &message(commit, env, &canonical(&bare)))
    }

    /// `text` with its signature appended as an HTML comment (invisible in rendered Markdown).
    pub fn seal_text(&self, commit: &str, text: &str) -> Result<String, SignError> {
        let Some(key) = &self.key else {
            return Ok(text.to_string());
        };
        let sig = armor(key, &message(commit, PREVIEW, text))?;
        Ok(format!("{text}{PREVIEW_MARK}{sig}{PREVIEW_END}"))
    }

    /// Checks a note written by [`Notary::seal_text`] for `commit`.
    pub fn verify_text(&self, commit: &str, note: &str) -> Result<(), Untrusted> {
        let Some(at) = note.rfind(PREVIEW_MARK) else {
            return self.unsigned_ok();
        };
        let (text, rest) = note.split_at(at);
        let sig = rest[PREVIEW_MARK.len()..].trim_end_matches(PREVIEW_END);
        self.verify(sig, &message(commit, PREVIEW, text))
    }

    fn unsigned_ok(&self) -> Result<(), Untrusted> {
        if self.accept_unsigned {
            Ok(())
        } else {
            Err(Untrusted::Unsigned)
        }
    }

    fn verify(&self, armored: &str, message: &[u8]) -> Result<(), Untrusted> {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        hash.update(message);
        hash.update([0]);
        hash.update(armored.as_bytes());
        let digest: [u8; 32] = hash.finalize().into();
        if self
            .verified
            .lock()
            .is_ok_and(|memo| memo.contains(&digest))
        {
            return Ok(());
        }
        self.verify_uncached(armored, message)?;
        if let Ok(mut memo) = self.verified.lock() {
            if memo.len() >= MEMO_LIMIT {
                memo.clear();
            }
            memo.insert(digest);
        }
        Ok(())
    }

    fn verify_uncached(&self, armored: &str, message: &[u8]) -> Result<(), Untrusted> {
        let sig =
            SshSig::from_pem(armored.trim()).map_err(|e| Untrusted::Malformed(e.to_string()))?;
        let Some(key) = self
            .trusted
            .iter()
            .find(|k| k.key_data() == sig.public_key())
        else {
            let fingerprint = sig.public_key().fingerprint(HashAlg::Sha256).to_string();
            return Err(Untrusted::UnknownKey(fingerprint));
        };
        key.verify(NAMESPACE, message, &sig)
            .map_err(|_| Untrusted::BadSignature)
    }
}

fn armor(key: &PrivateKey, message: &[u8]) -> Result<String, SignError> {
    let sig = key
        .sign(NAMESPACE, HashAlg::Sha512, message)
        .map_err(|e| SignError::Sign(e.to_string()))?;
    sig.to_pem(LineEnding::LF)
        .map_err(|e| SignError::Sign(e.to_string()))
}

/// The record as signed: JSON of its fields in declaration order (stable across YAML round
/// trips; fields this version does not know are dropped on parse and so never signed).
fn canonical(record: &Record) -> String {
    // Plain strings and numbers always serialise; an empty message would fail to verify.
    serde_json::to_string(record).unwrap_or_default()
}

fn message(commit: &str, env: &str, body: &str) -> Vec<u8> {
    format!("gitopsd status v1\ncommit {commit}\nenvironment {env}\n{body}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{Note, Outcome, merge_section};
    use ssh_key::private::{Ed25519Keypair, KeypairData};

    fn key(seed: u8) -> PrivateKey {
        let pair = Ed25519Keypair::from_seed(&[seed; 32]);
        PrivateKey::new(KeypairData::from(pair), "test").unwrap()
    }

    fn signed(n: &Notary, commit: &str, env: &str) -> Record {
        let mut r = Record::new(Outcome::Healthy, None, "2026-01-01T00:00:00.000Z".into());
        n.sign_record(commit, env, &mut r).unwrap();
        r
    }

    const C1: &str = "1111111111111111111111111111111111111111";
    const C2: &str = "2222222222222222222222222222222222222222";

    #[test]
    fn good_signature_verifies_after_a_round_trip_through_the_note() {
        let n = Notary::new(Some(key(1)), Vec::new(), false);
        let r = signed(&n, C1, "dev");
        let text = merge_section(None, "dev", &r);
        let parsed = Note::parse(&text).environments["dev"].clone();
        assert_eq!(parsed, r);
        assert_eq!(n.verify_record(C1, "dev", &parsed), Ok(()));
    }

    #[test]
    fn tampered_record_fails() {
        let n = Notary::new(Some(key(1)), Vec::new(), false);
        let mut r = signed(&n, C1, "dev");
        // Remembered as verified; the memo must not let an edited copy through.
        assert_eq!(n.verify_record(C1, "dev", &r), Ok(()));
        assert_eq!(n.verify_record(C1, "dev", &r), Ok(()));
        r.outcome = Outcome::RolledBack;
        assert_eq!(n.verify_record(C1, "dev", &r), Err(Untrusted::BadSignature));
        let mut r = signed(&n, C1, "dev");
        r.rolling_back = true;
        assert_eq!(n.verify_record(C1, "dev", &r), Err(Untrusted::BadSignature));
    }

    #[test]
    fn replay_to_another_commit_or_environment_fails() {
        let n = Notary::new(Some(key(1)), Vec::new(), false);
        let r = signed(&n, C1, "dev");
        assert_eq!(n.verify_record(C2, "dev", &r), Err(Untrusted::BadSignature));
        assert_eq!(
            n.verify_record(C1, "prod", &r),
            Err(Untrusted::BadSignature)
        );
    }

    #[test]
    fn unknown_key_and_unsigned_fail_peers_pass() {
        let ours = Notary::new(Some(key(1)), Vec::new(), false);
        let stranger = Notary::new(Some(key(2)), Vec::new(), false);
        let r = signed(&stranger, C1, "dev");
        assert!(matches!(
            ours.verify_record(C1, "dev", &r),
            Err(Untrusted::UnknownKey(fp)) if fp.starts_with("SHA256:")
        ));
        let unsigned = signed(&Notary::unsigned(), C1, "dev");
        assert_eq!(unsigned.signature, None);
        assert_eq!(
            ours.verify_record(C1, "dev", &unsigned),
            Err(Untrusted::Unsigned)
        );
        let peer = Notary::new(Some(key(1)), vec![key(2).public_key().clone()], false);
        assert_eq!(peer.verify_record(C1, "dev", &r), Ok(()));
        // Migration mode trusts unsigned records, never forged ones.
        let lax = Notary::new(Some(key(1)), Vec::new(), true);
        assert_eq!(lax.verify_record(C1, "dev", &unsigned), Ok(()));
        let mut forged = signed(&lax, C1, "dev");
        forged.pinned = Some("x".into());
        assert_eq!(
            lax.verify_record(C1, "dev", &forged),
            Err(Untrusted::BadSignature)
        );
        let mut junk = unsigned.clone();
        junk.signature = Some("not a signature".into());
        assert!(matches!(
            lax.verify_record(C1, "dev", &junk),
            Err(Untrusted::Malformed(_))
        ));
    }

    #[test]
    fn preview_notes_are_sealed_and_bound_to_their_commit() {
        let n = Notary::new(Some(key(1)), Vec::new(), false);
        let sealed = n.seal_text(C1, "## Preview\n\nno changes\n").unwrap();
        assert!(sealed.starts_with("## Preview\n\nno changes\n"), "{sealed}");
        assert_eq!(n.verify_text(C1, &sealed), Ok(()));
        assert_eq!(n.verify_text(C2, &sealed), Err(Untrusted::BadSignature));
        let edited = sealed.replacen("no changes", "all good", 1);
        assert_eq!(n.verify_text(C1, &edited), Err(Untrusted::BadSignature));
        assert_eq!(n.verify_text(C1, "forged"), Err(Untrusted::Unsigned));
        // A record signature is no preview signature (and the other way round).
        let r = signed(&n, C1, PREVIEW);
        assert_eq!(
            n.verify_text(
                C1,
                &format!("x{PREVIEW_MARK}{}{PREVIEW_END}", r.signature.unwrap())
            ),
            Err(Untrusted::BadSignature)
        );
    }

    #[test]
    fn history_ignores_untrusted_records_and_edits_never_launder_them() {
        use crate::status::{edit_section, history, pin_section};
        let n = Notary::new(Some(key(1)), Vec::new(), false);
        let good = merge_section(None, "dev", &signed(&n, C1, "dev"));
        let forged = merge_section(None, "dev", &signed(&Notary::unsigned(), C2, "dev"));
        let h = history(
            [
                (C1.to_string(), good.as_str()),
                (C2.to_string(), forged.as_str()),
            ],
            "dev",
            &n,
        );
        assert!(h.records.contains_key(C1));
        assert!(!h.records.contains_key(C2));
        assert_eq!(h.untrusted[C2], Untrusted::Unsigned);
        assert_eq!(h.last_healthy.unwrap().0, C1);
        let edit = |r: &mut Record| r.pinned = Some("p".into());
        assert_eq!(
            edit_section(Some(&forged), C2, "dev", &n, edit).unwrap(),
            None
        );
        let edited = edit_section(Some(&good), C1, "dev", &n, edit)
            .unwrap()
            .unwrap();
        let r = Note::parse(&edited).environments["dev"].clone();
        assert_eq!(r.pinned.as_deref(), Some("p"));
        assert_eq!(n.verify_record(C1, "dev", &r), Ok(()));
        let pinned = pin_section(Some(&forged), C2, "dev", "manual", &n).unwrap();
        let r = Note::parse(&pinned).environments["dev"].clone();
        assert_eq!(
            r.outcome,
            Outcome::Superseded,
            "the forged record is replaced"
        );
        assert_eq!(n.verify_record(C2, "dev", &r), Ok(()));
    }

    #[test]
    fn two_hosts_merge_signed_sections() {
        use crate::status::merge_notes;
        let a = Notary::new(Some(key(1)), vec![key(2).public_key().clone()], false);
        let b = Notary::new(Some(key(2)), vec![key(1).public_key().clone()], false);
        let base = merge_section(None, "old", &signed(&a, C1, "old"));
        let ours = merge_section(Some(&base), "dev", &signed(&a, C1, "dev"));
        let theirs = merge_section(Some(&base), "prod", &signed(&b, C1, "prod"));
        let merged = Note::parse(&merge_notes(Some(&base), &ours, Some(&theirs)));
        for env in ["old", "dev", "prod"] {
            assert_eq!(
                a.verify_record(C1, env, &merged.environments[env]),
                Ok(()),
                "{env}"
            );
            assert_eq!(
                b.verify_record(C1, env, &merged.environments[env]),
                Ok(()),
                "{env}"
            );
        }
    }
}
