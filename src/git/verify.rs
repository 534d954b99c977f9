//! Commit signatures: git's SSH signatures (sshsig, namespace `git`) checked against an
//! allowed-signers file (git's `gpg.ssh.allowedSignersFile` format). Pure: the file is read by
//! `config`, the signature extracted by [`super::Mirror::signed_commit`].
//!
//! An entry is `principals [options] keytype base64 [comment]`; options understood are
//! `namespaces="…"` (must include `git` when present), `valid-after=` and `valid-before=`
//! (`YYYYMMDD[HHMM[SS]]`, read as UTC, checked against the committer time, as git does).
//! `cert-authority` (certificate signers) is refused when the file is parsed.

use ssh_key::{HashAlg, PublicKey, SshSig};

/// sshsig namespace of git commit and tag signatures.
pub const GIT_NAMESPACE: &str = "git";

/// A commit's signature and the bytes it signs.
#[derive(Clone, Debug)]
pub struct SignedCommit {
    /// The `gpgsig` header, armored.
    pub signature: Vec<u8>,
    /// The commit object without that header.
    pub payload: Vec<u8>,
    /// Committer time (Unix seconds).
    pub time: i64,
}

#[derive(Clone, Debug)]
struct Signer {
    principals: String,
    namespaces: Option<Vec<String>>,
    valid_after: Option<i64>,
    valid_before: Option<i64>,
    key: PublicKey,
}

/// The parsed allowed-signers file.
#[derive(Clone, Debug, Default)]
pub struct AllowedSigners {
    signers: Vec<Signer>,
}

/// Why a commit is not accepted (the reason of its `rejected` note).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommitSignatureError {
    #[error("commit is not signed")]
    Unsigned,
    #[error("commit signature is not an SSH signature (only SSH signatures are verified)")]
    NotSsh,
    #[error("commit signature is unreadable: {0}")]
    Malformed(String),
    #[error("commit is signed by {0}, which is not in the allowed signers")]
    UnknownKey(String),
    #[error("commit signature by {principals} does not match the commit")]
    Invalid { principals: String },
    #[error("commit signer {principals} is not allowed {why}")]
    NotAllowed { principals: String, why: String },
}

impl CommitSignatureError {
    /// A commit's signature does not change.
    pub fn is_transient(&self) -> bool {
        false
    }
}

impl AllowedSigners {
    /// Parses the file's text; an error names the line (1-based) and what is wrong.
    pub fn parse(text: &str) -> Result<AllowedSigners, (usize, String)> {
        let mut signers = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            signers.push(parse_line(line).map_err(|e| (i + 1, e))?);
        }
        Ok(AllowedSigners { signers })
    }

    pub fn is_empty(&self) -> bool {
        self.signers.is_empty()
    }

    /// Verifies `commit` (None: unsigned); returns the signer's principals.
    pub fn verify(&self, commit: Option<&SignedCommit>) -> Result<String, CommitSignatureError> {
        let c = commit.ok_or(CommitSignatureError::Unsigned)?;
        let armored =
            std::str::from_utf8(&c.signature).map_err(|_| CommitSignatureError::NotSsh)?;
        if !armored
            .trim_start()
            .starts_with("-----BEGIN SSH SIGNATURE-----")
        {
            return Err(CommitSignatureError::NotSsh);
        }
        let sig = SshSig::from_pem(armored.trim())
            .map_err(|e| CommitSignatureError::Malformed(e.to_string()))?;
        let mut candidates = self
            .signers
            .iter()
            .filter(|s| s.key.key_data() == sig.public_key())
            .peekable();
        let Some(first) = candidates.peek() else {
            let fp = sig.public_key().fingerprint(HashAlg::Sha256).to_string();
            return Err(CommitSignatureError::UnknownKey(fp));
        };
        if first.key.verify(GIT_NAMESPACE, &c.payload, &sig).is_err() {
            return Err(CommitSignatureError::Invalid {
                principals: first.principals.clone(),
            });
        }
        let mut refusal = None;
        for s in candidates {
            match s.allows(c.time) {
                Ok(()) => return Ok(s.principals.clone()),
                Err(why) => refusal = Some((s.principals.clone(), why)),
            }
        }
        let (principals, why) = refusal.unwrap_or_default();
        Err(CommitSignatureError::NotAllowed { principals, why })
    }
}

impl Signer {
    fn allows(&self, time: i64) -> Result<(), String> {
        if let Some(ns) = &self.namespaces
            && !ns.iter().any(|n| n == GIT_NAMESPACE)
        {
            return Err(format!("to sign namespace {GIT_NAMESPACE}"));
        }
        if self.valid_after.is_some_and(|t| time < t) {
            return Err("yet at the commit's time (valid-after)".into());
        }
        if self.valid_before.is_some_and(|t| time >= t) {
            return Err("any more at the commit's time (valid-before)".into());
        }
        Ok(())
    }
}

/// Splits off the next whitespace-separated token, keeping double-quoted runs whole.
fn token(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    let mut quoted = false;
    for (i, ch) in s.char_indices() {
        match ch {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => return (&s[..i], &s[i..]),
            _ => {}
        }
    }
    (s, "")
}

fn is_key_type(t: &str) -> bool {
    t.starts_with("ssh-") || t.starts_with("ecdsa-") || t.starts_with("sk-")
}

fn parse_line(line: &str) -> Result<Signer, String> {
    let (principals, rest) = token(line);
    let (mut next, mut rest) = token(rest);
    let mut options = Options::default();
    if !is_key_type(next) {
        for option in split_options(next) {
            options.set(option)?;
        }
        (next, rest) = token(rest);
    }
    let (b64, _comment) = token(rest);
    if !is_key_type(next) || b64.is_empty() {
        return Err("expected `principals [options] keytype base64-key`".into());
    }
    let key = PublicKey::from_openssh(&format!("{next} {b64}"))
        .map_err(|e| format!("unreadable public key: {e}"))?;
    Ok(Signer {
        principals: principals.trim_matches('"').to_string(),
        namespaces: options.namespaces,
        valid_after: options.valid_after,
        valid_before: options.valid_before,
        key,
    })
}

/// Comma-separated options, commas inside quotes kept.
fn split_options(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, ch) in s.char_indices() {
        match ch {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

#[derive(Default)]
struct Options {
    namespaces: Option<Vec<String>>,
    valid_after: Option<i64>,
    valid_before: Option<i64>,
}

impl Options {
    fn set(&mut self, option: &str) -> Result<(), String> {
        let (name, value) = option.split_once('=').unwrap_or((option, ""));
        let value = value.trim_matches('"');
        match name.to_ascii_lowercase().as_str() {
            "namespaces" => {
                self.namespaces = Some(value.split(',').map(|n| n.trim().to_string()).collect())
            }
            "valid-after" => self.valid_after = Some(parse_time(value)?),
            "valid-before" => self.valid_before = Some(parse_time(value)?),
            "cert-authority" => {
                return Err("cert-authority (certificate signers) is not supported".into());
            }
            other => return Err(format!("unknown option {other}")),
        }
        Ok(())
    }
}

/// `YYYYMMDD[HHMM[SS]][Z]` as Unix seconds, UTC.
fn parse_time(s: &str) -> Result<i64, String> {
    let digits = s.strip_suffix(['Z', 'z']).unwrap_or(s);
    let bad = || format!("invalid time {s:?} (YYYYMMDD[HHMM[SS]])");
    if !matches!(digits.len(), 8 | 12 | 14) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| {
        digits
            .get(r)
            .and_then(|d| d.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let (y, m, d) = (num(0..4), num(4..6), num(6..8));
    let (hh, mm, ss) = (num(8..10), num(10..12), num(12..14));
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return Err(bad());
    }
    Ok(days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests;
