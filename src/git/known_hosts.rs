//! SSH server identity: the host key is compared byte for byte with the `known_hosts` entry for
//! `host` (port 22) or `[host]:port` (plain or `|1|` hashed names, `*`/`?` wildcards, `!`
//! negation, `@revoked`). Hashed names are HMAC-SHA1 (RustCrypto `hmac`/`sha1`). Reads only the
//! given file; calls nothing else.

use std::path::Path;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

/// Checks `key` (SSH wire-format blob) against the known_hosts file for host/port.
pub(super) fn check_known_hosts(
    file: &Path,
    host: &str,
    port: u16,
    key: &[u8],
) -> Result<(), String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read known_hosts file {}: {e}", file.display()))?;
    let name = if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    };
    let mut host_known = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let Some(mut first) = fields.next() else {
            continue;
        };
        let mut marker = None;
        if first.starts_with('@') {
            marker = Some(first);
            let Some(next) = fields.next() else { continue };
            first = next;
        }
        let (Some(_keytype), Some(b64)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Ok(blob) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            continue;
        };
        match marker {
            Some("@revoked") => {
                if blob == key {
                    return Err(format!(
                        "host key of {name} is marked @revoked in {}",
                        file.display()
                    ));
                }
                continue;
            }
            Some(_) => continue, // @cert-authority: certificates are not supported
            None => {}
        }
        if !host_patterns_match(first, &name) {
            continue;
        }
        host_known = true;
        if blob == key {
            return Ok(());
        }
    }
    if host_known {
        Err(format!(
            "host key of {name} does not match the key in {} (possible man-in-the-middle)",
            file.display()
        ))
    } else {
        Err(format!(
            "host {name} is not listed in known_hosts file {}",
            file.display()
        ))
    }
}

fn host_patterns_match(patterns: &str, name: &str) -> bool {
    if let Some(hashed) = patterns.strip_prefix("|1|") {
        let Some((salt, hash)) = hashed.split_once('|') else {
            return false;
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        let (Ok(salt), Ok(hash)) = (b64.decode(salt), b64.decode(hash)) else {
            return false;
        };
        return hashed_name_matches(&salt, &hash, name);
    }
    let mut matched = false;
    for pat in patterns.split(',') {
        if let Some(neg) = pat.strip_prefix('!') {
            if wildcard_match(neg, name) {
                return false;
            }
        } else if wildcard_match(pat, name) {
            matched = true;
        }
    }
    matched
}

/// Case-insensitive glob with `*` and `?`.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let t: Vec<char> = text.to_ascii_lowercase().chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Whether `name` is the host name hashed as `|1|salt|hash` (HMAC-SHA1 of the name keyed with
/// the salt). The security of the check rests on comparing the key bytes, not on this hash.
fn hashed_name_matches(salt: &[u8], hash: &[u8], name: &str) -> bool {
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(hash).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hmac_sha1(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("any key length");
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }

    #[test]
    fn hmac_known_vector_matches_hashed_names() {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        // RFC 2202 test case 2
        let mac = hmac_sha1(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex(&mac), "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
        assert!(hashed_name_matches(
            b"Jefe",
            &mac,
            "what do ya want for nothing?"
        ));
        assert!(!hashed_name_matches(
            b"Jefe",
            &mac,
            "what do ya want for something?"
        ));
    }

    #[test]
    fn known_hosts_matching() {
        let dir = tempfile::tempdir().unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        let key_a =
            b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_vec();
        let key_b =
            b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB".to_vec();
        let salt = b"0123456789abcdef0123";
        let hashed = format!(
            "|1|{}|{}",
            b64.encode(salt),
            b64.encode(hmac_sha1(salt, b"[hashed.example]:2222"))
        );
        let text = format!(
            "# comment\n[git.example]:2222,other ssh-ed25519 {a}\nplain.example ssh-ed25519 {a}\n*.wild.example,!bad.wild.example ssh-ed25519 {a}\n{hashed} ssh-ed25519 {b}\n@revoked * ssh-ed25519 {b2}\n",
            a = b64.encode(&key_a),
            b = b64.encode(&key_b),
            b2 = b64.encode(b"revoked-key"),
        );
        let f = dir.path().join("known_hosts");
        std::fs::write(&f, text).unwrap();
        assert!(check_known_hosts(&f, "git.example", 2222, &key_a).is_ok());
        assert!(
            check_known_hosts(&f, "git.example", 2222, &key_b)
                .unwrap_err()
                .contains("does not match")
        );
        assert!(
            check_known_hosts(&f, "git.example", 22, &key_a)
                .unwrap_err()
                .contains("not listed")
        );
        assert!(check_known_hosts(&f, "plain.example", 22, &key_a).is_ok());
        assert!(check_known_hosts(&f, "x.wild.example", 22, &key_a).is_ok());
        assert!(check_known_hosts(&f, "bad.wild.example", 22, &key_a).is_err());
        assert!(check_known_hosts(&f, "hashed.example", 2222, &key_b).is_ok());
        assert!(check_known_hosts(&f, "hashed.example", 2222, &key_a).is_err());
        assert!(
            check_known_hosts(&f, "plain.example", 22, b"revoked-key")
                .unwrap_err()
                .contains("revoked")
        );
    }
}
