//! `repository:` checks: the URL's scheme and shape, the branch, the poll interval, and the
//! credential files each scheme needs. May call the file system (a local repository must be bare,
//! credential files readable).

use std::path::Path;
use std::time::Duration;

use super::names::{UrlScheme, check_readable, git_ref_invalid, url_scheme};
use crate::config::{AuthConfig, RepositoryConfig};
use crate::schema::Checker;

/// The checker is at `repository`.
pub(super) fn check(repo: &RepositoryConfig, c: &mut Checker) {
    let scheme = url_scheme(&repo.url);
    check_url(&repo.url, scheme, c);
    if repo.branch.trim().is_empty() || git_ref_invalid(&repo.branch) {
        c.problem_at(
            "branch",
            format!("{:?} is not a valid branch name", repo.branch),
        );
    }
    if repo.poll < Duration::from_secs(1) {
        c.problem_at("poll", "must be at least 1s");
    }
    c.at("auth", |c| check_auth(&repo.auth, scheme, c));
}

fn check_url(url: &str, scheme: UrlScheme<'_>, c: &mut Checker) {
    match scheme {
        UrlScheme::Https | UrlScheme::Ssh | UrlScheme::Local => {}
        UrlScheme::Http => c.problem_at(
            "url",
            "plain http is not allowed (credentials and content would travel unprotected); use https://",
        ),
        UrlScheme::Other(s) => c.problem_at(
            "url",
            format!("unsupported scheme {s:?}; use https://, ssh:// or a local path"),
        ),
    }
    if scheme == UrlScheme::Local {
        let path = Path::new(url.strip_prefix("file://").unwrap_or(url));
        if path.join(".git").exists() {
            c.problem_at(
                "url",
                format!(
                    "{} is a checked-out repository; use a bare one (`git clone --bare`): notes cannot be pushed into a working tree",
                    path.display()
                ),
            );
        }
    }
    if url.contains('@') && scheme == UrlScheme::Https {
        c.problem_at(
            "url",
            "credentials must not be part of the URL; use auth.username_file and auth.password_file",
        );
    }
}

/// The checker is at `repository.auth`.
fn check_auth(auth: &AuthConfig, scheme: UrlScheme<'_>, c: &mut Checker) {
    for (key, file) in [
        ("username_file", &auth.username_file),
        ("password_file", &auth.password_file),
        ("ssh_key_file", &auth.ssh_key_file),
        ("known_hosts_file", &auth.known_hosts_file),
        ("ca_file", &auth.ca_file),
    ] {
        if let Some(path) = file {
            check_readable(c, key, path);
        }
    }
    if auth.password_file.is_some() != auth.username_file.is_some() {
        c.problem("username_file and password_file go together");
    }
    if scheme == UrlScheme::Ssh {
        if auth.ssh_key_file.is_none() {
            c.problem_at("ssh_key_file", "required for an ssh:// repository");
        }
        if auth.known_hosts_file.is_none() {
            c.problem_at(
                "known_hosts_file",
                "required for an ssh:// repository (host keys are always verified)",
            );
        }
    }
}
