//! Errors of the git module (transient vs permanent, see [`GitError::is_transient`]).
//!
//! Every variant names what it was about (path, ref, URL or object). URLs are always the
//! sanitised form (no userinfo/password), see [`super::redact_url`].

use std::path::PathBuf;

/// Everything that can go wrong while talking to git.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// Network trouble (connection refused, reset, timeout, DNS, remote temporarily missing).
    #[error("network error talking to {url} while {op}: {message}")]
    Network {
        url: String,
        op: &'static str,
        message: String,
    },
    /// The remote refused our credentials (or we had none to offer).
    #[error("authentication to {url} failed: {message}")]
    Auth { url: String, message: String },
    /// The server's TLS certificate or SSH host key could not be verified.
    #[error("cannot verify the identity of {url}: {message}")]
    HostVerification { url: String, message: String },
    /// The URL is malformed, uses an unsupported scheme, or does not point to a repository.
    #[error("invalid repository URL {url}: {message}")]
    InvalidUrl { url: String, message: String },
    /// A configuration value given to the mirror is unusable.
    #[error("invalid git configuration: {message}")]
    InvalidConfig { message: String },
    /// A ref that must exist does not (e.g. the configured branch on the remote).
    #[error("ref {name} not found in {url}")]
    MissingRef { name: String, url: String },
    /// A revision expression could not be resolved to a commit.
    #[error("revision {rev:?} cannot be resolved to a commit in repository {path}: {message}")]
    BadRevision {
        rev: String,
        path: PathBuf,
        message: String,
    },
    /// An object (commit, tree, blob) is missing or unreadable.
    #[error("object {object} in repository {path}: {message}")]
    Object {
        object: String,
        path: PathBuf,
        message: String,
    },
    /// The remote kept rejecting our push of `refname` even after retries.
    #[error("push of {refname} to {url} rejected after {attempts} attempts: {reason}")]
    PushRejected {
        refname: String,
        url: String,
        attempts: u32,
        reason: String,
    },
    /// Another process (or `Mirror`) held the notes lock for longer than any notes update takes.
    #[error("notes lock {path} still held by another writer after {waited_secs}s")]
    NotesLocked { path: PathBuf, waited_secs: u64 },
    /// Any other libgit2 failure on a local repository (the mirror or one opened in place).
    #[error("git operation '{op}' on repository {path} failed: {source}")]
    Repo {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    /// Filesystem failure.
    #[error("I/O error on {path} while {op}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file watcher could not be set up.
    #[error("cannot watch {path}: {source}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

impl GitError {
    /// True when retrying later may succeed (network, timeouts, a remote that kept moving
    /// under our push). Auth failures, bad URLs, missing refs and corrupt input are permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            GitError::Network { .. }
            | GitError::PushRejected { .. }
            | GitError::NotesLocked { .. }
            | GitError::Io { .. } => true,
            GitError::Repo { source, .. } => matches!(
                source.code(),
                git2::ErrorCode::Locked | git2::ErrorCode::Modified
            ),
            GitError::Auth { .. }
            | GitError::HostVerification { .. }
            | GitError::InvalidUrl { .. }
            | GitError::InvalidConfig { .. }
            | GitError::MissingRef { .. }
            | GitError::BadRevision { .. }
            | GitError::Object { .. }
            | GitError::Watch { .. } => false,
        }
    }

    pub(crate) fn repo(
        op: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(git2::Error) -> GitError {
        let path = path.to_path_buf();
        move |source| GitError::Repo { op, path, source }
    }

    pub(crate) fn io(
        op: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> GitError {
        let path = path.to_path_buf();
        move |source| GitError::Io { op, path, source }
    }
}
