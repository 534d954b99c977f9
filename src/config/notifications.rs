//! `notifications:`: where gitopsd reports problems (Alertmanager's API v2, webhooks) and the
//! checks of those settings. Credentials (header lines, a webhook URL holding a token) come only
//! from files; their content never appears in an error. May call the file system and nothing else.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use crate::schema::Checker;

/// `notifications: { alertmanager, webhooks, resend_interval }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsConfig {
    #[serde(default)]
    pub alertmanager: Option<AlertmanagerConfig>,
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// How often active alerts are posted again (Alertmanager resolves an alert on its own after
    /// `resolve_timeout` unless it is re-posted, as Prometheus does).
    #[serde(default = "default_resend", with = "humantime_serde")]
    pub resend_interval: Duration,
}

/// `alertmanager: { url, timeout }`: the base URL (`/api/v2/alerts` is appended).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    pub url: String,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// `Name: value` lines sent with every request (e.g. `Authorization: Bearer …`).
    #[serde(default)]
    pub headers_file: Option<PathBuf>,
}

/// One webhook: `url` (or `url_file` when the URL itself is a credential, as Slack's are).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    #[serde(default)]
    pub format: WebhookFormat,
    #[serde(default)]
    pub headers_file: Option<PathBuf>,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// `{"text": "…"}`, one readable line (Slack, Mattermost, Rocket.Chat incoming webhooks).
    Slack,
    /// gitopsd's own stable object (see the README).
    #[default]
    Json,
}

fn default_resend() -> Duration {
    Duration::from_secs(60)
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl WebhookConfig {
    /// The URL, read from `url_file` when set.
    pub fn target_url(&self, key: &str) -> Result<String, ConfigError> {
        match (&self.url, &self.url_file) {
            (Some(url), _) => Ok(url.clone()),
            (None, Some(path)) => {
                let text = read(&format!("{key}.url_file"), path)?;
                Ok(text.trim().to_string())
            }
            (None, None) => Err(ConfigError::KeyFile {
                key: key.to_string(),
                path: PathBuf::new(),
                message: "neither url nor url_file is set".into(),
            }),
        }
    }
}

fn read(key: &str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Credential {
        key: key.to_string(),
        path: path.to_path_buf(),
        source,
    })
}

/// The `Name: value` lines of a headers file (blank lines and `#` comments skipped). Errors name
/// the line, never its content.
pub fn read_headers(key: &str, path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let text = read(key, path)?;
    let mut headers = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |message: &str| ConfigError::KeyFile {
            key: key.to_string(),
            path: path.to_path_buf(),
            message: format!("line {}: {message}", i + 1),
        };
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad("not a `Name: value` header line"))?;
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(bad("not a valid header name"));
        }
        let value = value.trim();
        if value.bytes().any(|b| b.is_ascii_control()) {
            return Err(bad("control characters in the value"));
        }
        headers.push((name.to_string(), value.to_string()));
    }
    Ok(headers)
}

/// RFC 9110 token characters (header names).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Problems of a notification URL: http(s), parseable, no credentials in it.
fn check_url(c: &mut Checker, key: &str, url: &str) {
    match reqwest::Url::parse(url) {
        Ok(u) if u.scheme() != "http" && u.scheme() != "https" => c.problem_at(
            key,
            format!(
                "unsupported scheme {:?}; use https:// or http://",
                u.scheme()
            ),
        ),
        Ok(u) if !u.username().is_empty() || u.password().is_some() => c.problem_at(
            key,
            "credentials must not be part of the URL; use headers_file",
        ),
        Ok(u) if u.host_str().is_none() => c.problem_at(key, "the URL has no host"),
        Ok(_) => {}
        Err(e) => c.problem_at(key, format!("not a URL: {e}")),
    }
}

fn check_timeout(c: &mut Checker, timeout: Duration) {
    if timeout.is_zero() || timeout > Duration::from_secs(300) {
        c.problem_at("timeout", "must be between 1ms and 5m");
    }
}

fn check_headers(c: &mut Checker, file: Option<&Path>) {
    if let Some(path) = file
        && let Err(e) = read_headers("headers_file", path)
    {
        c.problem_at("headers_file", e.to_string());
    }
}

impl NotificationsConfig {
    /// The checker is at `notifications`.
    pub(super) fn check(&self, c: &mut Checker) {
        if self.resend_interval < Duration::from_secs(1) {
            c.problem_at("resend_interval", "must be at least 1s");
        }
        if let Some(am) = &self.alertmanager {
            c.at("alertmanager", |c| {
                check_url(c, "url", &am.url);
                check_timeout(c, am.timeout);
                check_headers(c, am.headers_file.as_deref());
            });
        }
        c.at("webhooks", |c| {
            for (i, w) in self.webhooks.iter().enumerate() {
                c.at_index(i, |c| w.check(c));
            }
        });
    }
}

impl WebhookConfig {
    fn check(&self, c: &mut Checker) {
        match (&self.url, &self.url_file) {
            (Some(url), None) => check_url(c, "url", url),
            (None, Some(path)) => match self.target_url("url_file") {
                // The URL is a credential: its problems are named without it.
                Ok(url) => {
                    let mut inner = Checker::new();
                    check_url(&mut inner, "url_file", &url);
                    if !inner.is_clean() {
                        c.problem_at(
                            "url_file",
                            format!("{} does not hold an http(s) URL", path.display()),
                        );
                    }
                }
                Err(e) => c.problem_at("url_file", e.to_string()),
            },
            _ => c.problem("exactly one of url and url_file is required"),
        }
        check_timeout(c, self.timeout);
        check_headers(c, self.headers_file.as_deref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<String> {
        let n: NotificationsConfig = serde_saphyr::from_str(yaml).expect("parses");
        let mut c = Checker::new();
        c.at("notifications", |c| n.check(c));
        c.into_problems()
            .iter()
            .map(|p| p.keyed_message())
            .collect()
    }

    #[test]
    fn urls_formats_and_files_are_checked_with_their_key_paths() {
        let p = problems(
            "alertmanager: { url: 'ftp://am' }\nwebhooks:\n  - { url: 'https://u:p@h/x', format: slack }\n  - { format: json }\n  - { url: 'https://h/', headers_file: /nonexistent/h }\n",
        );
        let all = p.join("\n");
        assert!(
            all.contains("notifications.alertmanager.url: unsupported scheme"),
            "{all}"
        );
        assert!(
            all.contains("notifications.webhooks[0].url: credentials"),
            "{all}"
        );
        assert!(
            all.contains("notifications.webhooks[1]: exactly one of url"),
            "{all}"
        );
        assert!(
            all.contains("notifications.webhooks[2].headers_file: cannot read"),
            "{all}"
        );
        assert_eq!(p.len(), 4, "{all}");
        assert!(problems("alertmanager: { url: 'http://127.0.0.1:9093' }\n").is_empty());
        assert!(
            serde_saphyr::from_str::<NotificationsConfig>(
                "webhooks: [{url: 'https://h', format: xml}]"
            )
            .is_err()
        );
    }

    #[test]
    fn header_lines_parse_and_errors_never_quote_the_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h");
        std::fs::write(
            &path,
            "# comment\nAuthorization: Bearer s3cret\n\nX-Scope: a\n",
        )
        .expect("write");
        let h = read_headers("headers_file", &path).expect("parses");
        assert_eq!(h[0], ("Authorization".into(), "Bearer s3cret".into()));
        assert_eq!(h.len(), 2);
        std::fs::write(&path, "Bearer s3cret\n").expect("write");
        let e = read_headers("headers_file", &path)
            .expect_err("no colon")
            .to_string();
        assert!(e.contains("line 1") && !e.contains("s3cret"), "{e}");
        std::fs::write(&path, "Bad Name: s3cret\n").expect("write");
        let e = read_headers("headers_file", &path)
            .expect_err("space")
            .to_string();
        assert!(!e.contains("s3cret"), "{e}");
    }
}
