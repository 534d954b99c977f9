//! Rules for the names and paths a host config holds: DNS labels, git ref names, repository URL
//! schemes, and that a file it names can be read. May call the file system (opening a file) and
//! `crate::schema`.

use std::path::Path;

use crate::schema::Checker;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlScheme<'a> {
    Https,
    Http,
    Ssh,
    Local,
    Other(&'a str),
}

/// Classifies a repository URL.
pub fn url_scheme(url: &str) -> UrlScheme<'_> {
    match url.split_once("://") {
        Some(("https", _)) => UrlScheme::Https,
        Some(("http", _)) => UrlScheme::Http,
        Some(("ssh", _)) => UrlScheme::Ssh,
        Some(("file", _)) => UrlScheme::Local,
        Some((other, _)) => UrlScheme::Other(other),
        // `git@host:org/repo.git` is SSH, as git reads it, not a relative path.
        None if crate::git::is_scp_like(url) => UrlScheme::Ssh,
        None => UrlScheme::Local,
    }
}

/// Whether `s` is an RFC 1123 DNS label (what a label value and a bucket tag both accept).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub(super) fn git_ref_invalid(name: &str) -> bool {
    name.contains("..")
        || name.contains(' ')
        || name.contains('~')
        || name.contains('^')
        || name.contains(':')
        || name.ends_with('/')
        || name.ends_with(".lock")
}

/// Whether `s` is an http(s) URL.
pub(super) fn is_http_url(s: &str) -> bool {
    s.starts_with("https://") || s.starts_with("http://")
}

/// Reports `key` when the file at `path` cannot be opened.
pub(super) fn check_readable(c: &mut Checker, key: &str, path: &Path) {
    if let Err(e) = std::fs::File::open(path) {
        c.problem_at(key, format!("cannot read {}: {e}", path.display()));
    }
}

#[cfg(test)]
mod scheme_tests {
    use super::*;

    #[test]
    fn scp_like_urls_are_ssh() {
        assert_eq!(url_scheme("git@git.example:org/repo.git"), UrlScheme::Ssh);
        assert_eq!(url_scheme("/srv/git/a:b.git"), UrlScheme::Local);
        assert_eq!(url_scheme("ssh://git@h/r.git"), UrlScheme::Ssh);
        assert_eq!(url_scheme("relative/repo.git"), UrlScheme::Local);
    }
}
