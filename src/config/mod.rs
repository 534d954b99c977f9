//! Host configuration: what the operator owns. The config repository says *what*; only this file
//! says *where* and *with which credentials*. This module is the only reader of environment
//! variables (`${NAME}` references in the config, and the log filter).
//!
//! Owns loading (`${NAME}` expansion, YAML with serde enforcing the schema), the semantic checks
//! (`checks`, through `crate::schema::Checker`, each problem with its key path and line), and
//! reading credential files. May call `crate::schema`, `crate::git` (URL redaction, the auth
//! type) and `crate::s3` (the settings type it builds); nothing that touches the network.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::git::GitAuth;
use crate::schema::{Checker, Lines};

mod bounds;
mod checks;
mod ha;
mod limits;
mod notifications;
mod trust;
mod webhooks;

pub use crate::schema::Problem;
pub use bounds::{DecryptionConfig, DeniedKind};
pub use checks::{UrlScheme, is_dns_label, url_scheme};
pub use ha::{HaConfig, MIN_LEASE_DURATION};
pub use limits::LimitsConfig;
pub use notifications::{
    AlertmanagerConfig, NotificationsConfig, WebhookConfig, WebhookFormat, read_headers,
};
pub use webhooks::{ReceiverSecrets, WebhookSecrets};

/// Default notes ref for outcomes.
pub const DEFAULT_NOTES_REF: &str = "refs/notes/gitopsd";
/// Default loopback address of the metrics and health endpoints.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9477";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {problems}")]
    Invalid { path: PathBuf, problems: Problems },
    #[error("cannot read {key} file {path}: {source}")]
    Credential {
        key: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A key or signers file that does not parse (never quotes the file's content).
    #[error("{key} file {path}: {message}")]
    KeyFile {
        key: String,
        path: PathBuf,
        message: String,
    },
}

impl ConfigError {
    /// Config problems are never fixed by retrying.
    pub fn is_transient(&self) -> bool {
        false
    }
}

/// Every problem found, each with its key path.
#[derive(Debug, Default, Clone)]
pub struct Problems(pub Vec<Problem>);

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// This gitopsd's name on the objects and buckets it owns (a DNS label), so two
    /// repositories whose environments share a name never touch each other's objects.
    /// Defaults to a stable value derived from the repository URL (see [`HostConfig::instance`]).
    #[serde(default)]
    pub instance: Option<String>,
    pub repository: RepositoryConfig,
    #[serde(default = "default_notes_ref")]
    pub notes_ref: String,
    pub state_dir: PathBuf,
    /// Metrics and health endpoints; loopback only.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// How long a shutdown may take to finish the current step.
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    pub environments: Vec<EnvironmentConfig>,
    #[serde(default)]
    pub previews: Option<PreviewConfig>,
    /// The binaries that render Kustomize environments (pinned by the operator, not the pushers).
    #[serde(default)]
    pub renderers: RenderersConfig,
    /// OpenSSH private key (ed25519, unencrypted) that signs every status record written.
    #[serde(default)]
    pub notes_signing_key_file: Option<PathBuf>,
    /// authorized_keys-style files of the keys whose records are trusted (peers in HA); the
    /// signing key's own public half is always trusted.
    #[serde(default)]
    pub trusted_note_keys: Vec<PathBuf>,
    /// Trust records without a signature (migration from unsigned notes, or no signing key).
    #[serde(default)]
    pub trust_unsigned_notes: bool,
    /// Content limits for every environment (bytes, documents, objects).
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Where problems are reported (Alertmanager, webhooks); none when unset.
    #[serde(default)]
    pub notifications: Option<NotificationsConfig>,
    /// Several hosts share the environments; a Lease per environment picks the one that acts.
    #[serde(default)]
    pub ha: Option<HaConfig>,
    /// Where push events are received (GitHub, GitLab, signed POSTs); none when unset. May be a
    /// non-loopback address: every request must be signed with a secret from `webhook_secrets`.
    #[serde(default)]
    pub webhooks_listen: Option<SocketAddr>,
    #[serde(default)]
    pub webhook_secrets: WebhookSecrets,
}

/// `renderers:`: paths of the kustomize and helm binaries; unset ones are looked up on `PATH` at
/// start (a repository that needs a missing one fails with a clear message).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderersConfig {
    pub kustomize: Option<PathBuf>,
    pub helm: Option<PathBuf>,
    /// How long one `kustomize build` may take.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Where the private render directories are made (the system temporary directory when unset).
    pub scratch_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// `https://`, `ssh://`, `file://` or a local path.
    pub url: String,
    #[serde(default = "default_branch")]
    pub branch: String,
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll: Duration,
    #[serde(default)]
    pub auth: AuthConfig,
    /// Commits gitopsd applies must be signed by one of these signers.
    #[serde(default)]
    pub verify: Option<VerifyConfig>,
}

/// `repository.verify:` commit signature verification.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    /// git's SSH allowed-signers file (`gpg.ssh.allowedSignersFile` format).
    pub allowed_signers: PathBuf,
}

/// Credentials come only from files (systemd `LoadCredential=`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub username_file: Option<PathBuf>,
    pub password_file: Option<PathBuf>,
    pub ssh_key_file: Option<PathBuf>,
    pub known_hosts_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentConfig {
    pub name: String,
    /// Folder inside the repository.
    pub path: String,
    /// Namespace for namespaced objects that name none.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub kubernetes: Option<KubernetesConfig>,
    #[serde(default)]
    pub s3: Option<S3Config>,
    #[serde(default = "default_true")]
    pub prune: bool,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub rollback: RollbackPolicy,
    /// Objects whose values previews never show (Secrets are always treated so).
    #[serde(default)]
    pub sensitive: Vec<SensitiveMatcher>,
    /// Parallel applies within one ordering phase.
    #[serde(default = "default_concurrency")]
    pub apply_concurrency: usize,
    /// Take over fields another field manager owns (server-side apply `force`).
    #[serde(default)]
    pub force_conflicts: bool,
    /// What to do when a managed field is changed by hand or an owned object is deleted.
    #[serde(default)]
    pub drift: DriftPolicy,
    /// How often buckets (which have no watch) are re-read for drift.
    #[serde(default = "default_drift_interval", with = "humantime_serde")]
    pub drift_interval: Duration,
    /// Namespace globs this environment may write to. Unset: its `namespace` and the
    /// Namespaces it creates itself (never `kube-*`). Pushers are less trusted than the operator:
    /// these bounds are checked on every render, before any dry-run or write.
    #[serde(default)]
    pub allowed_namespaces: Option<Vec<String>>,
    /// Cluster-scoped kinds it may write, as `Kind.group` globs (`Kind` for the core group).
    #[serde(default = "bounds::default_cluster_scoped")]
    pub cluster_scoped: Vec<String>,
    /// Kinds refused wherever they are; the default refuses RBAC bindings to `system:*`
    /// users and groups. Setting the list replaces the default.
    #[serde(default = "bounds::default_denied_kinds")]
    pub denied_kinds: Vec<DeniedKind>,
    /// Bucket name globs (`spec.name`). Unset: no buckets.
    #[serde(default)]
    pub buckets: Vec<String>,
    /// `NAMESPACE/NAME` of a ServiceAccount that writes are made as (impersonation), so the
    /// cluster's own RBAC confines the environment too.
    #[serde(default)]
    pub service_account: Option<String>,
    /// How SOPS-encrypted objects are decrypted; without it they are rejected.
    #[serde(default)]
    pub decryption: Option<DecryptionConfig>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftPolicy {
    /// Re-apply what differs from git.
    #[default]
    Correct,
    /// Log, count and note it; change nothing.
    Report,
    /// Do not look.
    Off,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Defaults to the usual kubeconfig discovery when absent.
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default)]
    pub force_path_style: bool,
    /// Both set, or neither (then the AWS default credential chain is used).
    pub access_key_id_file: Option<PathBuf>,
    pub secret_access_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    #[serde(default = "default_health_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default)]
    pub http: Vec<HttpCheck>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            timeout: default_health_timeout(),
            http: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    pub url: String,
    #[serde(default = "default_status")]
    pub expect_status: u16,
    #[serde(default)]
    pub body_contains: Option<String>,
    #[serde(default = "default_http_interval", with = "humantime_serde")]
    pub interval: Duration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RollbackPolicy {
    #[default]
    Auto,
    Off,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SensitiveMatcher {
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewConfig {
    /// Glob of refs to preview, e.g. `refs/pull/*/head`.
    pub refs: String,
    #[serde(default = "default_preview_notes_ref")]
    pub notes_ref: String,
}

fn default_notes_ref() -> String {
    DEFAULT_NOTES_REF.to_string()
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9477))
}
fn default_grace() -> Duration {
    Duration::from_secs(60)
}
fn default_branch() -> String {
    "main".to_string()
}
fn default_poll() -> Duration {
    Duration::from_secs(30)
}
fn default_namespace() -> String {
    "default".to_string()
}
fn default_true() -> bool {
    true
}
fn default_concurrency() -> usize {
    8
}
fn default_region() -> String {
    "us-east-1".to_string()
}
fn default_drift_interval() -> Duration {
    Duration::from_secs(600)
}
fn default_health_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_status() -> u16 {
    200
}
fn default_http_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_preview_notes_ref() -> String {
    "refs/notes/gitopsd-preview".to_string()
}

/// The `PATH` renderer binaries are looked up on when the host config names none.
pub fn search_path() -> Option<std::ffi::OsString> {
    std::env::var_os("PATH")
}

/// The log filter (`GITOPSD_LOG`, then `RUST_LOG`, default `info`).
pub fn log_filter() -> String {
    std::env::var("GITOPSD_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        // kube-client logs every refused request at ERROR; gitopsd reports refusals itself.
        .unwrap_or_else(|_| "info,kube_client::client::builder=off".to_string())
}

/// Whether stderr is the journal: systemd sets `JOURNAL_STREAM` to the device and inode of the
/// stream it connected (systemd.exec(5)). Compared with stderr's own, because a child that
/// inherited the variable may write somewhere else.
pub fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(meta.dev()) && ino.parse::<u64>().ok() == Some(meta.ino())
}

/// Replaces `${NAME}` with the environment variable's value, outside comment lines. Unset
/// variables are problems.
fn expand_env(text: &str, problems: &mut Vec<Problem>) -> String {
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                rest = "";
                break;
            };
            let name = &after[..end];
            match std::env::var(name) {
                Ok(value) => out.push_str(&value),
                Err(_) => problems.push(Problem {
                    key: String::new(),
                    line: Some(index as u64 + 1),
                    message: format!("environment variable {name} is not set"),
                }),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
    out
}

impl HostConfig {
    /// Reads, parses and validates a host config: every problem is reported, each with its key.
    pub fn load(path: &Path) -> Result<HostConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_text(&text, path)
    }

    pub fn from_text(text: &str, path: &Path) -> Result<HostConfig, ConfigError> {
        let invalid = |problems: Vec<Problem>| ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: Problems(problems),
        };
        let mut problems = Vec::new();
        let text = expand_env(text, &mut problems);
        if !problems.is_empty() {
            return Err(invalid(problems));
        }
        let config: HostConfig = serde_saphyr::from_str(&text).map_err(|e| {
            let line = e.location().map(|l| l.line()).unwrap_or(1);
            let message = e.without_snippet().to_string();
            let message = message.lines().next().unwrap_or("invalid YAML").to_string();
            invalid(vec![Problem {
                key: String::new(),
                line: Some(line),
                message,
            }])
        })?;
        let mut checker = Checker::with_lines(Lines::from_yaml(&text));
        config.check(&mut checker);
        let problems = checker.into_problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(invalid(problems))
        }
    }

    /// The instance name: configured, or `gitopsd-` and 10 hex digits of a hash of the
    /// repository URL (without credentials), stable across restarts and hosts.
    pub fn instance(&self) -> String {
        if let Some(name) = &self.instance {
            return name.clone();
        }
        use sha2::Digest;
        let url = crate::git::redact_url(&self.repository.url);
        let digest = sha2::Sha256::digest(url.trim_end_matches('/').as_bytes());
        let hex: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
        format!("gitopsd-{hex}")
    }

    pub fn environment(&self, name: &str) -> Option<&EnvironmentConfig> {
        self.environments.iter().find(|e| e.name == name)
    }

    /// Git credentials read from their files.
    pub fn git_auth(&self) -> Result<GitAuth, ConfigError> {
        let auth = &self.repository.auth;
        Ok(GitAuth {
            username: read_secret(
                "repository.auth.username_file",
                auth.username_file.as_deref(),
            )?,
            password: read_secret(
                "repository.auth.password_file",
                auth.password_file.as_deref(),
            )?,
            ssh_key_file: auth.ssh_key_file.clone(),
            known_hosts_file: auth.known_hosts_file.clone(),
            ca_file: auth.ca_file.clone(),
        })
    }

    /// Where the mirror lives.
    pub fn mirror_dir(&self) -> PathBuf {
        self.state_dir.join("mirror.git")
    }
}

impl S3Config {
    pub fn settings(&self) -> Result<crate::s3::S3Settings, ConfigError> {
        Ok(crate::s3::S3Settings {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            force_path_style: self.force_path_style,
            access_key_id: read_secret(
                "s3.access_key_id_file",
                self.access_key_id_file.as_deref(),
            )?,
            secret_access_key: read_secret(
                "s3.secret_access_key_file",
                self.secret_access_key_file.as_deref(),
            )?,
        })
    }
}

/// Reads a one-line credential file (trailing newline dropped).
fn read_secret(key: &str, path: Option<&Path>) -> Result<Option<String>, ConfigError> {
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Credential {
        key: key.to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()))
}

#[cfg(test)]
mod tests;
