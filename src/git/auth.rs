//! Credentials and server identity for network operations: the libgit2 remote callbacks
//! (credentials with a bounded number of attempts, deadline, push rejections) and the TLS check
//! against a configured CA.
//!
//! Custom CA: libgit2's TLS options (`git2::opts::set_ssl_cert_file`) are process-global and
//! `unsafe`, which the crate forbids. Instead, the `certificate_check` callback verifies the
//! leaf certificate libgit2 hands us against the configured CA with `rustls-webpki` (chain to
//! the CA, validity period, serverAuth usage and host name). Caveat: libgit2 passes only the
//! leaf, so the CA file must contain the CA that signed the server certificate directly, or
//! the intermediates as well (every certificate in the file is offered as an intermediate and
//! as a trust anchor). SSH host keys are checked in `known_hosts`.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use git2::{CertificateCheckStatus, Cred, CredentialType, RemoteCallbacks};

use super::known_hosts::check_known_hosts;
use super::url::{RemoteKind, RemoteUrl};

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
        let msg = format!(
            "server asked for credentials ({}) but none are configured",
            credential_kinds(allowed)
        );
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

/// The credential kinds a server asked for, as a person reads them.
fn credential_kinds(allowed: CredentialType) -> String {
    let kinds = [
        (CredentialType::USER_PASS_PLAINTEXT, "username and password"),
        (CredentialType::SSH_KEY, "SSH key"),
        (CredentialType::SSH_MEMORY, "SSH key"),
        (CredentialType::SSH_CUSTOM, "SSH key"),
        (CredentialType::SSH_INTERACTIVE, "SSH keyboard-interactive"),
        (CredentialType::USERNAME, "username"),
        (CredentialType::DEFAULT, "default credentials"),
    ];
    let mut names: Vec<&str> = kinds
        .iter()
        .filter(|(kind, _)| allowed.contains(*kind))
        .map(|(_, name)| *name)
        .collect();
    names.dedup();
    if names.is_empty() {
        "none that gitopsd supports".to_string()
    } else {
        names.join(", ")
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
    fn x509_verification_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ca.pem");
        std::fs::write(&f, "not a pem").unwrap();
        assert!(verify_x509(&f, b"\x30\x00", "h").is_err());
        assert!(verify_x509(&dir.path().join("missing.pem"), b"\x30\x00", "h").is_err());
    }
}
