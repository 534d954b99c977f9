//! Semantic checks of a host config beyond its schema: names, paths, URLs, and that credential
//! files exist. Every problem is reported with its key path.

use std::path::Path;
use std::time::Duration;

use super::{HostConfig, Problem};

impl HostConfig {
    /// Semantic checks beyond the schema: names, paths, URLs and that credential files exist.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut add = |key: String, message: String| out.push(Problem { key, message });
        if let Some(name) = &self.instance
            && !is_dns_label(name)
        {
            add(
                "instance".into(),
                format!(
                    "{name:?} is not a DNS label (1-63 of a-z, 0-9 and '-', starting and ending with a letter or digit)"
                ),
            );
        }
        let repo = &self.repository;
        let scheme = url_scheme(&repo.url);
        match scheme {
            UrlScheme::Https | UrlScheme::Ssh | UrlScheme::Local => {}
            UrlScheme::Http => add(
                "repository.url".into(),
                "plain http is not allowed (credentials and content would travel unprotected); use https://".into(),
            ),
            UrlScheme::Other(s) => add("repository.url".into(), format!("unsupported scheme {s:?}; use https://, ssh:// or a local path")),
        }
        if scheme == UrlScheme::Local {
            let path = Path::new(repo.url.strip_prefix("file://").unwrap_or(&repo.url));
            if path.join(".git").exists() {
                add(
                    "repository.url".into(),
                    format!(
                        "{} is a checked-out repository; use a bare one (`git clone --bare`): notes cannot be pushed into a working tree",
                        path.display()
                    ),
                );
            }
        }
        if repo.url.contains('@') && scheme == UrlScheme::Https {
            add("repository.url".into(), "credentials must not be part of the URL; use auth.username_file and auth.password_file".into());
        }
        if repo.branch.trim().is_empty() || git_ref_invalid(&repo.branch) {
            add(
                "repository.branch".into(),
                format!("{:?} is not a valid branch name", repo.branch),
            );
        }
        if repo.poll < Duration::from_secs(1) {
            add("repository.poll".into(), "must be at least 1s".into());
        }
        let auth = &repo.auth;
        for (key, file) in [
            ("username_file", &auth.username_file),
            ("password_file", &auth.password_file),
            ("ssh_key_file", &auth.ssh_key_file),
            ("known_hosts_file", &auth.known_hosts_file),
            ("ca_file", &auth.ca_file),
        ] {
            if let Some(path) = file {
                check_readable(&format!("repository.auth.{key}"), path, &mut add);
            }
        }
        if auth.password_file.is_some() != auth.username_file.is_some() {
            add(
                "repository.auth".into(),
                "username_file and password_file go together".into(),
            );
        }
        if scheme == UrlScheme::Ssh {
            if auth.ssh_key_file.is_none() {
                add(
                    "repository.auth.ssh_key_file".into(),
                    "required for an ssh:// repository".into(),
                );
            }
            if auth.known_hosts_file.is_none() {
                add(
                    "repository.auth.known_hosts_file".into(),
                    "required for an ssh:// repository (host keys are always verified)".into(),
                );
            }
        }
        if !self.notes_ref.starts_with("refs/notes/") || git_ref_invalid(&self.notes_ref) {
            add(
                "notes_ref".into(),
                format!("{:?} must be a ref under refs/notes/", self.notes_ref),
            );
        }
        if !self.listen.ip().is_loopback() {
            add(
                "listen".into(),
                format!(
                    "{} is not a loopback address (metrics are not for the network)",
                    self.listen
                ),
            );
        }
        if !self.state_dir.is_absolute() {
            add("state_dir".into(), "must be an absolute path".into());
        }
        if self.environments.is_empty() {
            add(
                "environments".into(),
                "at least one environment is required".into(),
            );
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, env) in self.environments.iter().enumerate() {
            let key = |k: &str| format!("environments[{i}].{k}");
            if !is_dns_label(&env.name) {
                add(
                    key("name"),
                    format!(
                        "{:?} must be a DNS label (lowercase letters, digits, '-'; at most 63)",
                        env.name
                    ),
                );
            }
            if !names.insert(env.name.clone()) {
                add(
                    key("name"),
                    format!("duplicate environment name {:?}", env.name),
                );
            }
            let path = env.path.trim_matches('/');
            if path.split('/').any(|c| c == ".." || c == ".") || env.path.starts_with('/') {
                add(
                    key("path"),
                    "must be a relative folder inside the repository without '..'".into(),
                );
            }
            if env.namespace.is_empty() || !is_dns_label(&env.namespace) {
                add(
                    key("namespace"),
                    format!("{:?} is not a valid namespace name", env.namespace),
                );
            }
            if env.kubernetes.is_none() && env.s3.is_none() {
                add(
                    key("kubernetes"),
                    "an environment needs a kubernetes or an s3 target".into(),
                );
            }
            if let Some(k) = &env.kubernetes
                && let Some(path) = &k.kubeconfig
            {
                check_readable(&key("kubernetes.kubeconfig"), path, &mut add);
            }
            if let Some(s3) = &env.s3 {
                if s3.access_key_id_file.is_some() != s3.secret_access_key_file.is_some() {
                    add(
                        key("s3"),
                        "access_key_id_file and secret_access_key_file go together".into(),
                    );
                }
                for (k, file) in [
                    ("s3.access_key_id_file", &s3.access_key_id_file),
                    ("s3.secret_access_key_file", &s3.secret_access_key_file),
                ] {
                    if let Some(path) = file {
                        check_readable(&key(k), path, &mut add);
                    }
                }
                if let Some(endpoint) = &s3.endpoint
                    && !(endpoint.starts_with("https://") || endpoint.starts_with("http://"))
                {
                    add(key("s3.endpoint"), "must be an http(s) URL".into());
                }
            }
            if env.health.timeout.is_zero() {
                add(key("health.timeout"), "must be greater than zero".into());
            }
            for (j, check) in env.health.http.iter().enumerate() {
                if !(check.url.starts_with("http://") || check.url.starts_with("https://")) {
                    add(
                        key(&format!("health.http[{j}].url")),
                        "must be an http(s) URL".into(),
                    );
                }
                if !(100..=599).contains(&check.expect_status) {
                    add(
                        key(&format!("health.http[{j}].expect_status")),
                        "must be an HTTP status code".into(),
                    );
                }
            }
            if env.apply_concurrency == 0 {
                add(key("apply_concurrency"), "must be at least 1".into());
            }
        }
        if let Some(p) = &self.previews {
            if let Err(e) = globset::Glob::new(&p.refs) {
                add("previews.refs".into(), format!("invalid glob: {e}"));
            }
            if !p.notes_ref.starts_with("refs/notes/") || p.notes_ref == self.notes_ref {
                add(
                    "previews.notes_ref".into(),
                    "must be a ref under refs/notes/ other than notes_ref".into(),
                );
            }
        }
        out
    }
}

fn check_readable(key: &str, path: &Path, add: &mut impl FnMut(String, String)) {
    if let Err(e) = std::fs::File::open(path) {
        add(
            key.to_string(),
            format!("cannot read {}: {e}", path.display()),
        );
    }
}

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

fn git_ref_invalid(name: &str) -> bool {
    name.contains("..")
        || name.contains(' ')
        || name.contains('~')
        || name.contains('^')
        || name.contains(':')
        || name.ends_with('/')
        || name.ends_with(".lock")
}
