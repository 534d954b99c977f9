use super::*;
use ssh_key::private::{Ed25519Keypair, KeypairData};
use ssh_key::{LineEnding, PrivateKey};

fn key(seed: u8) -> PrivateKey {
    PrivateKey::new(
        KeypairData::from(Ed25519Keypair::from_seed(&[seed; 32])),
        "",
    )
    .unwrap()
}

fn public(seed: u8) -> String {
    key(seed).public_key().to_openssh().unwrap()
}

/// A commit signed as `git commit -S` with `gpg.format=ssh` signs it (sshsig, namespace git).
fn commit(seed: u8, namespace: &str, payload: &str, time: i64) -> SignedCommit {
    let sig = key(seed)
        .sign(namespace, HashAlg::Sha512, payload.as_bytes())
        .unwrap();
    SignedCommit {
        signature: sig.to_pem(LineEnding::LF).unwrap().into_bytes(),
        payload: payload.as_bytes().to_vec(),
        time,
    }
}

const PAYLOAD: &str = "tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor a <a@x> 1767225600 +0000\ncommitter a <a@x> 1767225600 +0000\n\nsigned\n";
const T2026: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

fn signers(text: &str) -> AllowedSigners {
    AllowedSigners::parse(text).unwrap()
}

#[test]
fn an_allowed_signer_verifies() {
    let s = signers(&format!("# team\n\nalice@example.com {}\n", public(1)));
    let c = commit(1, "git", PAYLOAD, T2026);
    assert_eq!(s.verify(Some(&c)), Ok("alice@example.com".to_string()));
}

#[test]
fn unsigned_tampered_foreign_and_unknown_signatures_fail() {
    let s = signers(&format!("alice@example.com {}\n", public(1)));
    assert_eq!(s.verify(None), Err(CommitSignatureError::Unsigned));
    let mut tampered = commit(1, "git", PAYLOAD, T2026);
    tampered.payload = PAYLOAD.replace("signed", "evil").into_bytes();
    assert!(matches!(
        s.verify(Some(&tampered)),
        Err(CommitSignatureError::Invalid { .. })
    ));
    let stranger = commit(2, "git", PAYLOAD, T2026);
    assert!(matches!(
        s.verify(Some(&stranger)),
        Err(CommitSignatureError::UnknownKey(fp)) if fp.starts_with("SHA256:")
    ));
    // Signed for another purpose (e.g. a gitopsd note) is no commit signature.
    let other_ns = commit(1, "gitopsd-note", PAYLOAD, T2026);
    assert!(matches!(
        s.verify(Some(&other_ns)),
        Err(CommitSignatureError::Invalid { .. })
    ));
    let pgp = SignedCommit {
        signature: b"-----BEGIN PGP SIGNATURE-----\n...".to_vec(),
        ..commit(1, "git", PAYLOAD, T2026)
    };
    assert_eq!(s.verify(Some(&pgp)), Err(CommitSignatureError::NotSsh));
    let junk = SignedCommit {
        signature: b"-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n".to_vec(),
        ..commit(1, "git", PAYLOAD, T2026)
    };
    assert!(matches!(
        s.verify(Some(&junk)),
        Err(CommitSignatureError::Malformed(_))
    ));
}

#[test]
fn namespaces_and_validity_options_are_enforced() {
    let c = commit(1, "git", PAYLOAD, T2026);
    let file_only = signers(&format!("alice namespaces=\"file\" {}\n", public(1)));
    assert!(matches!(
        file_only.verify(Some(&c)),
        Err(CommitSignatureError::NotAllowed { .. })
    ));
    let git_too = signers(&format!("alice namespaces=\"file,git\" {}\n", public(1)));
    assert!(git_too.verify(Some(&c)).is_ok());
    let expired = signers(&format!("alice valid-before=20251231 {}\n", public(1)));
    let e = expired.verify(Some(&c)).unwrap_err();
    assert!(e.to_string().contains("valid-before"), "{e}");
    let early = signers(&format!(
        "alice valid-after=\"20260101000001\" {}\n",
        public(1)
    ));
    assert!(early.verify(Some(&c)).is_err());
    let window = signers(&format!(
        "\"alice,bob\" valid-after=20251201,valid-before=202602010000Z {} laptop\n",
        public(1)
    ));
    assert_eq!(window.verify(Some(&c)), Ok("alice,bob".to_string()));
    // A later entry for the same key may allow what an earlier one does not.
    let two = signers(&format!(
        "old valid-before=20250101 {k}\nnew {k}\n",
        k = public(1)
    ));
    assert_eq!(two.verify(Some(&c)), Ok("new".to_string()));
}

#[test]
fn bad_lines_name_their_line() {
    let k = public(1);
    for (text, line) in [
        (format!("# c\nalice {k}\nbob\n"), 3),
        (format!("alice cert-authority {k}\n"), 1),
        (format!("alice valid-after=2026 {k}\n"), 1),
        (format!("alice frobnicate {k}\n"), 1),
        ("alice ssh-ed25519 !!!\n".to_string(), 1),
    ] {
        let err = AllowedSigners::parse(&text).unwrap_err();
        assert_eq!(err.0, line, "{text}: {err:?}");
    }
    assert_eq!(parse_time("19700101").unwrap(), 0);
    assert_eq!(parse_time("20260101").unwrap(), T2026);
    assert_eq!(parse_time("20000301120000").unwrap(), 951_912_000);
}
