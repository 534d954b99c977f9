//! Credentials, URL handling and server identity checks (TLS CA, SSH known_hosts).
//!
//! Custom CA: libgit2's TLS options (`git2::opts::set_ssl_cert_file`) are process-global and
//! `unsafe`, which the crate forbids. Instead, the `certificate_check` callback verifies the
//! leaf certificate libgit2 hands us against the configured CA with `rustls-webpki` (chain to
//! the CA, validity period, serverAuth usage and host name). Caveat: libgit2 passes only the
//! leaf, so the CA file must contain the CA that signed the server certificate directly, or
//! the intermediates as well (every certificate in the file is offered as an intermediate and
//! as a trust anchor).
//!
//! SSH: the host key arrives as raw SSH wire-format blob and is compared byte for byte with
//! the `known_hosts` entry for `host` (port 22) or `[host]:port` (plain or `|1|` hashed names,
//! `*`/`?` wildcards, `!` negation, `@revoked`).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use base64::Engine as _;
use git2::{CertificateCheckStatus, Cred, CredentialType, RemoteCallbacks};

/// How to authenticate to the config repository. Values are supplied by the config module.
#[derive(Clone, Default)]
pub struct GitAuth {
    pub username: Option<String>,
    pub password: Option<String>,
    pub ssh_key_file: Option<PathBuf>,
    pub known_hosts_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
}

impl fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitAuth")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ssh_key_file", &self.ssh_key_file)
            .field("known_hosts_file", &self.known_hosts_file)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// A parsed repository URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RemoteKind {
    /// A path on this machine (plain path or file:// URL).
    Local(PathBuf),
    /// A network URL.
    Network {
        scheme: String,
        host: String,
        port: Option<u16>,
    },
}

#[derive(Clone, PartialEq, Eq)]
pub(crate) struct RemoteUrl {
    pub kind: RemoteKind,
    /// The URL handed to libgit2 and shown in errors/logs: never contains a password.
    pub sanitized: String,
    pub username: Option<String>,
    /// Password embedded in the original URL (only used as a fallback credential).
    pub password: Option<String>,
}

impl fmt::Debug for RemoteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteUrl")
            .field("kind", &self.kind)
            .field("sanitized", &self.sanitized)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl RemoteUrl {
    pub fn is_local(&self) -> bool {
        matches!(self.kind, RemoteKind::Local(_))
    }

    #[cfg(test)]
    pub fn is_ssh(&self) -> bool {
        matches!(&self.kind, RemoteKind::Network { scheme, .. } if scheme == "ssh")
    }
}

/// Removes a password from a URL (keeps the user name). Best effort for unparseable input.
pub fn redact_url(url: &str) -> String {
    match parse_url(url) {
        Ok(u) => u.sanitized,
        Err(_) => "<unparseable url>".to_string(),
    }
}

/// Parses `https://`, `http://`, `ssh://`, `git://`, scp-like `user@host:path`, `file://` and
/// local paths. The error message never contains the input (it may hold a password).
pub(crate) fn parse_url(url: &str) -> Result<RemoteUrl, String> {
    let url = url.trim();
    if url.is_empty() {
        return Err("empty URL".into());
    }
    if let Some(rest) = url.strip_prefix("file://") {
        return Ok(RemoteUrl {
            kind: RemoteKind::Local(PathBuf::from(rest)),
            sanitized: url.to_string(),
            username: None,
            password: None,
        });
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        if !matches!(scheme.as_str(), "https" | "http" | "ssh" | "git") {
            return Err(format!("unsupported scheme {scheme:?}"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            Some(ui) => match ui.split_once(':') {
                Some((u, p)) => (Some(percent_decode(u)), Some(percent_decode(p))),
                None => (Some(percent_decode(ui)), None),
            },
            None => (None, None),
        };
        let (host, port) = split_host_port(hostport)?;
        if host.is_empty() {
            return Err("URL has no host".into());
        }
        let mut sanitized = format!("{scheme}://");
        if let Some(ui) = userinfo {
            let user = ui.split_once(':').map_or(ui, |(u, _)| u);
            if !user.is_empty() {
                sanitized.push_str(user);
                sanitized.push('@');
            }
        }
        sanitized.push_str(hostport);
        sanitized.push_str(path);
        return Ok(RemoteUrl {
            kind: RemoteKind::Network { scheme, host, port },
            sanitized,
            username: username.filter(|u| !u.is_empty()),
            password: password.filter(|p| !p.is_empty()),
        });
    }
    // scp-like: [user@]host:path (a ':' before any '/'), but not a Windows drive or a path.
    if let Some(colon) = url.find(':') {
        let before = &url[..colon];
        if !before.contains('/') && !before.is_empty() {
            let (username, host) = match before.rfind('@') {
                Some(i) => (Some(before[..i].to_string()), before[i + 1..].to_string()),
                None => (None, before.to_string()),
            };
            return Ok(RemoteUrl {
                kind: RemoteKind::Network {
                    scheme: "ssh".into(),
                    host,
                    port: None,
                },
                sanitized: url.to_string(),
                username,
                password: None,
            });
        }
    }
    Ok(RemoteUrl {
        kind: RemoteKind::Local(PathBuf::from(url)),
        sanitized: url.to_string(),
        username: None,
        password: None,
    })
}

fn split_host_port(hostport: &str) -> Result<(String, Option<u16>), String> {
    if let Some(rest) = hostport.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return Err("unterminated IPv6 address".into());
        };
        let host = rest[..end].to_string();
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) if !p.is_empty() => Some(p.parse::<u16>().map_err(|_| "invalid port")?),
            _ => None,
        };
        return Ok((host, port));
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() => {
            let port = p.parse::<u16>().map_err(|_| "invalid port".to_string())?;
            Ok((h.to_string(), Some(port)))
        }
        Some((h, _)) => Ok((h.to_string(), None)),
        None => Ok((hostport.to_string(), None)),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Per-operation state shared by the callbacks; inspected afterwards to classify errors.
pub(crate) struct CallbackState {
    pub auth_attempts: Cell<u32>,
    pub auth_failure: RefCell<Option<String>>,
    pub cert_failure: RefCell<Option<String>>,
    /// (refname, reason) for every ref the remote refused in a push.
    pub rejected: RefCell<Vec<(String, String)>>,
    pub deadline: Instant,
    pub timed_out: Cell<bool>,
}

impl CallbackState {
    pub fn new(deadline: Instant) -> Self {
        CallbackState {
            auth_attempts: Cell::new(0),
            auth_failure: RefCell::new(None),
            cert_failure: RefCell::new(None),
            rejected: RefCell::new(Vec::new()),
            deadline,
            timed_out: Cell::new(false),
        }
    }

    fn check_deadline(&self) -> bool {
        if Instant::now() > self.deadline {
            self.timed_out.set(true);
            false
        } else {
            true
        }
    }
}

/// Maximum number of times we answer a credentials request per operation; libgit2 keeps
/// asking while the server says 401, so a wrong password would otherwise loop forever.
const MAX_AUTH_ATTEMPTS: u32 = 2;

/// Builds the remote callbacks for one network operation.
pub(crate) fn callbacks<'a>(
    auth: &'a GitAuth,
    url: &'a RemoteUrl,
    state: &'a CallbackState,
) -> RemoteCallbacks<'a> {
    let mut cb = RemoteCallbacks::new();
    cb.credentials(move |_url, username_from_url, allowed| {
        let n = state.auth_attempts.get() + 1;
        state.auth_attempts.set(n);
        if n > MAX_AUTH_ATTEMPTS {
            let msg = "credentials rejected by the server".to_string();
            *state.auth_failure.borrow_mut() = Some(msg.clone());
            return Err(git2::Error::from_str(&msg));
        }
        let user = auth
            .username
            .clone()
            .or_else(|| username_from_url.map(str::to_string))
            .or_else(|| url.username.clone());
        if allowed.contains(CredentialType::SSH_KEY)
            && let Some(key) = &auth.ssh_key_file
        {
            let user = username_from_url
                .map(str::to_string)
                .or(user)
                .unwrap_or_else(|| "git".into());
            return Cred::ssh_key(&user, None, key, None);
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            let password = auth.password.clone().or_else(|| url.password.clone());
            if let Some(password) = password {
                let user = user.unwrap_or_else(|| "git".into());
                return Cred::userpass_plaintext(&user, &password);
            }
        }
        if allowed.contains(CredentialType::USERNAME) {
            let user = user.unwrap_or_else(|| "git".into());
            return Cred::username(&user);
        }
        let msg = format!("server asked for credentials ({allowed:?}) but none are configured");
        *state.auth_failure.borrow_mut() = Some(msg.clone());
        Err(git2::Error::from_str(&msg))
    });
    cb.certificate_check(
        move |cert, host| match check_certificate(auth, url, cert, host) {
            Ok(status) => Ok(status),
            Err(msg) => {
                *state.cert_failure.borrow_mut() = Some(msg.clone());
                Err(git2::Error::new(
                    git2::ErrorCode::Certificate,
                    git2::ErrorClass::Callback,
                    msg,
                ))
            }
        },
    );
    cb.push_update_reference(move |refname, status| {
        if let Some(reason) = status {
            state
                .rejected
                .borrow_mut()
                .push((refname.to_string(), reason.to_string()));
        }
        Ok(())
    });
    cb.transfer_progress(move |_| state.check_deadline());
    cb.sideband_progress(move |_| state.check_deadline());
    cb.push_transfer_progress(move |_, _, _| {
        // Cannot cancel from here; the deadline is enforced by the other callbacks.
    });
    cb
}

fn check_certificate(
    auth: &GitAuth,
    url: &RemoteUrl,
    cert: &git2::cert::Cert<'_>,
    host: &str,
) -> Result<CertificateCheckStatus, String> {
    if let Some(hostkey) = cert.as_hostkey() {
        let Some(known_hosts) = &auth.known_hosts_file else {
            // No pinned known_hosts: let libgit2 decide (it consults ~/.ssh/known_hosts).
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let Some(key) = hostkey.hostkey() else {
            return Err("the SSH server's host key is not available for verification".into());
        };
        let port = match &url.kind {
            RemoteKind::Network { port, .. } => port.unwrap_or(22),
            RemoteKind::Local(_) => 22,
        };
        check_known_hosts(known_hosts, host, port, key)?;
        return Ok(CertificateCheckStatus::CertificateOk);
    }
    if let Some(x509) = cert.as_x509() {
        let Some(ca_file) = &auth.ca_file else {
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        verify_x509(ca_file, x509.data(), host)?;
        return Ok(CertificateCheckStatus::CertificateOk);
    }
    Ok(CertificateCheckStatus::CertificatePassthrough)
}

/// Verifies a DER leaf certificate for `host` against the PEM certificates in `ca_file`.
pub(crate) fn verify_x509(ca_file: &Path, leaf_der: &[u8], host: &str) -> Result<(), String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| format!("cannot read CA file {}: {e}", ca_file.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot parse CA file {}: {e}", ca_file.display()))?;
    if cas.is_empty() {
        return Err(format!(
            "CA file {} holds no certificate",
            ca_file.display()
        ));
    }
    let anchors: Vec<_> = cas
        .iter()
        .filter_map(|c| webpki::anchor_from_trusted_cert(c).ok())
        .collect();
    if anchors.is_empty() {
        return Err(format!(
            "CA file {} holds no usable CA certificate",
            ca_file.display()
        ));
    }
    let leaf = CertificateDer::from(leaf_der);
    let ee = webpki::EndEntityCert::try_from(&leaf)
        .map_err(|e| format!("cannot parse the server certificate of {host}: {e}"))?;
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &cas,
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|e| {
        format!(
            "server certificate of {host} does not chain to CA {}: {e}",
            ca_file.display()
        )
    })?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| format!("invalid server name {host:?}: {e}"))?;
    ee.verify_is_valid_for_subject_name(&name)
        .map_err(|e| format!("server certificate is not valid for {host}: {e}"))?;
    Ok(())
}

/// Checks `key` (SSH wire-format blob) against the known_hosts file for host/port.
pub(crate) fn check_known_hosts(
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
        return sha1::hmac_sha1(&salt, name.as_bytes()).as_slice() == hash.as_slice();
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

/// Minimal SHA-1/HMAC-SHA1, only used to match hashed known_hosts host names (the security
/// of the check rests on comparing the key bytes, not on this hash).
mod sha1 {
    pub fn digest(data: &[u8]) -> [u8; 20] {
        let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
        let mut msg = data.to_vec();
        let bit_len = (data.len() as u64).wrapping_mul(8);
        msg.push(0x80);
        while msg.len() % 64 != 56 {
            msg.push(0);
        }
        msg.extend_from_slice(&bit_len.to_be_bytes());
        for chunk in msg.chunks_exact(64) {
            let mut w = [0u32; 80];
            for (i, word) in chunk.chunks_exact(4).enumerate() {
                w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
            }
            for i in 16..80 {
                w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
            }
            let [mut a, mut b, mut c, mut d, mut e] = h;
            for (i, wi) in w.iter().enumerate() {
                let (f, k) = match i {
                    0..=19 => ((b & c) | (!b & d), 0x5A827999),
                    20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                    40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                    _ => (b ^ c ^ d, 0xCA62C1D6),
                };
                let temp = a
                    .rotate_left(5)
                    .wrapping_add(f)
                    .wrapping_add(e)
                    .wrapping_add(k)
                    .wrapping_add(*wi);
                e = d;
                d = c;
                c = b.rotate_left(30);
                b = a;
                a = temp;
            }
            h[0] = h[0].wrapping_add(a);
            h[1] = h[1].wrapping_add(b);
            h[2] = h[2].wrapping_add(c);
            h[3] = h[3].wrapping_add(d);
            h[4] = h[4].wrapping_add(e);
        }
        let mut out = [0u8; 20];
        for (i, v) in h.iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&v.to_be_bytes());
        }
        out
    }

    pub fn hmac_sha1(key: &[u8], data: &[u8]) -> [u8; 20] {
        let mut k = [0u8; 64];
        if key.len() > 64 {
            k[..20].copy_from_slice(&digest(key));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let mut inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
        inner.extend_from_slice(data);
        let mut outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
        outer.extend_from_slice(&digest(&inner));
        digest(&outer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_password() {
        let a = GitAuth {
            username: Some("bob".into()),
            password: Some("hunter2".into()),
            ..Default::default()
        };
        let s = format!("{a:?}");
        assert!(s.contains("bob"));
        assert!(!s.contains("hunter2"));
        assert!(s.contains("redacted"));
    }

    #[test]
    fn parse_and_redact_urls() {
        let u = parse_url("https://bob:s%40cret@git.example:8443/r.git").unwrap();
        assert_eq!(u.sanitized, "https://bob@git.example:8443/r.git");
        assert_eq!(u.username.as_deref(), Some("bob"));
        assert_eq!(u.password.as_deref(), Some("s@cret"));
        assert!(!format!("{u:?}").contains("cret"));
        assert_eq!(
            u.kind,
            RemoteKind::Network {
                scheme: "https".into(),
                host: "git.example".into(),
                port: Some(8443)
            }
        );
        let s = parse_url("ssh://git@[::1]:2222/srv/r.git").unwrap();
        assert!(s.is_ssh());
        assert_eq!(
            s.kind,
            RemoteKind::Network {
                scheme: "ssh".into(),
                host: "::1".into(),
                port: Some(2222)
            }
        );
        let scp = parse_url("git@github.com:org/repo.git").unwrap();
        assert!(scp.is_ssh());
        assert_eq!(scp.username.as_deref(), Some("git"));
        assert!(parse_url("/srv/git/repo").unwrap().is_local());
        assert!(parse_url("file:///srv/git/repo").unwrap().is_local());
        assert!(parse_url("./repo").unwrap().is_local());
        let err = parse_url("ftp://u:topsecret@x/y").unwrap_err();
        assert!(!err.contains("topsecret"));
        assert_eq!(redact_url("https://u:pw@h/p"), "https://u@h/p");
    }

    #[test]
    fn sha1_and_hmac_known_vectors() {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(
            hex(&sha1::digest(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex(&sha1::digest(b"")),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
        // RFC 2202 test case 2
        assert_eq!(
            hex(&sha1::hmac_sha1(b"Jefe", b"what do ya want for nothing?")),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
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
            b64.encode(sha1::hmac_sha1(salt, b"[hashed.example]:2222"))
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

    #[test]
    fn x509_verification_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ca.pem");
        std::fs::write(&f, "not a pem").unwrap();
        assert!(verify_x509(&f, b"\x30\x00", "h").is_err());
        assert!(verify_x509(&dir.path().join("missing.pem"), b"\x30\x00", "h").is_err());
    }
}
