//! `webhooks_listen:` and `webhook_secrets:`: the push-event receiver. Secrets are read from files
//! only (systemd credentials), held zeroized, and never printed.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use zeroize::Zeroizing;

use super::{ConfigError, read_secret};
use crate::schema::Checker;

/// The files holding each source's secret; a source without one is not served (404).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSecrets {
    /// GitHub's webhook secret: `X-Hub-Signature-256` is its HMAC-SHA256 of the body.
    pub github_secret_file: Option<PathBuf>,
    /// GitLab's secret token, sent as `X-Gitlab-Token`.
    pub gitlab_token_file: Option<PathBuf>,
    /// gitopsd's own: `X-Gitopsd-Signature: sha256=<hex HMAC-SHA256 of the body>`.
    pub generic_secret_file: Option<PathBuf>,
}

/// The secrets as read, for the receiver.
#[derive(Default)]
pub struct ReceiverSecrets {
    pub github: Option<Zeroizing<Vec<u8>>>,
    pub gitlab: Option<Zeroizing<Vec<u8>>>,
    pub generic: Option<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for ReceiverSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReceiverSecrets(<redacted>)")
    }
}

impl WebhookSecrets {
    /// Reads every configured secret file.
    pub fn load(&self) -> Result<ReceiverSecrets, ConfigError> {
        let read = |key: &str, path: &Option<PathBuf>| -> Result<_, ConfigError> {
            Ok(read_secret(key, path.as_deref())?.map(|s| Zeroizing::new(s.into_bytes())))
        };
        Ok(ReceiverSecrets {
            github: read(
                "webhook_secrets.github_secret_file",
                &self.github_secret_file,
            )?,
            gitlab: read("webhook_secrets.gitlab_token_file", &self.gitlab_token_file)?,
            generic: read(
                "webhook_secrets.generic_secret_file",
                &self.generic_secret_file,
            )?,
        })
    }

    fn any(&self) -> bool {
        self.github_secret_file.is_some()
            || self.gitlab_token_file.is_some()
            || self.generic_secret_file.is_some()
    }
}

/// `webhooks_listen` needs at least one secret, and every secret file must be readable and not
/// empty (an empty secret would accept anyone's signature).
pub(super) fn check(listen: Option<SocketAddr>, secrets: &WebhookSecrets, c: &mut Checker) {
    if listen.is_none() {
        if secrets.any() {
            c.problem_at(
                "webhook_secrets",
                "set webhooks_listen too: without it no receiver runs",
            );
        }
        return;
    }
    if !secrets.any() {
        c.problem_at(
            "webhooks_listen",
            "needs webhook_secrets (github_secret_file, gitlab_token_file or generic_secret_file): the receiver accepts only signed events",
        );
        return;
    }
    let files = [
        ("github_secret_file", &secrets.github_secret_file),
        ("gitlab_token_file", &secrets.gitlab_token_file),
        ("generic_secret_file", &secrets.generic_secret_file),
    ];
    for (key, path) in files {
        let path_key = format!("webhook_secrets.{key}");
        match read_secret(&path_key, path.as_deref()) {
            Ok(Some(s)) if s.is_empty() => c.problem_at(&path_key, "the secret file is empty"),
            Ok(_) => {}
            Err(e) => c.problem_at(&path_key, e.to_string()),
        }
    }
}
