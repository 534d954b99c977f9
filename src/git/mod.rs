//! Fetch: everything that touches git. Owns the bare mirror of the config repository (fetch,
//! revisions, tree reads and diffs, commit walks, status notes with write-merge-push) and the
//! read-only [`LocalRepo`] that previews open in place. Both read trees through one reader
//! (`tree`); this is the only module that uses libgit2. May call: nothing else in the crate
//! (it knows commits, files and bytes, not manifests).
//!
//! The API is synchronous (libgit2 blocks); async callers wrap calls in `spawn_blocking`.
//! [`Mirror`] is `Send + Sync`: it stores paths and options and opens the repository per call.
//!
//! Global git configuration never leaks in: every repository we open gets a config object
//! that contains only its own `config` file (`Repository::set_config`). The process-global
//! `git2::opts::set_search_path` would be the other way, but it is `unsafe` and the crate
//! forbids unsafe code. (libgit2 still reads `safe.directory` while opening; harmless here.)
//!
//! Layout of the mirror (bare repository):
//! - `refs/heads/<branch>`: the branch, force-updated on every fetch (follows force-pushes);
//!   `HEAD` points at it, so `resolve("HEAD~1")` works.
//! - `refs/gitopsd/remote-notes`: the notes ref as last seen on the remote.
//! - `refs/gitopsd/salvage-base`: only after re-creating a broken mirror, see `salvage`.
//! - `<notes_ref>` (e.g. `refs/notes/gitopsd`): the local view = remote notes plus notes not
//!   yet pushed (see `notes`).
//! - extra refs (e.g. `refs/pull/*/head`) under their own names.

pub mod auth;
mod error;
mod known_hosts;
mod local;
mod lock;
pub mod merge;
mod notes;
mod read;
mod salvage;
mod tree;
mod url;
pub mod verify;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use git2::{AutotagOption, ConfigLevel, FetchOptions, FetchPrune, Repository};

pub use auth::GitAuth;
pub use error::GitError;
pub use git2::Oid;
pub use local::LocalRepo;
pub use lock::notes_lock_path;
pub use tree::{ChangeKind, CommitInfo, FileChange, FileKind, FileSide, TreeFile};
pub use url::{is_scp_like, redact_url};
pub use verify::{AllowedSigners, CommitSignatureError, SignedCommit};
pub use watch::watch_local_refs;

use auth::CallbackState;
use url::{RemoteKind, RemoteUrl};

/// Where the remote's notes ref is fetched to (kept apart from the local notes ref).
pub(crate) const REMOTE_NOTES_REF: &str = "refs/gitopsd/remote-notes";
/// Base of notes salvaged from a broken mirror, until their first replay (see [`salvage`]).
pub(crate) const SALVAGE_BASE_REF: &str = "refs/gitopsd/salvage-base";
const REMOTE_NAME: &str = "origin";
/// Upper bound for one network operation (enforced through the progress callbacks).
const NETWORK_DEADLINE: Duration = Duration::from_secs(300);

/// What to mirror and how.
#[derive(Clone, Debug)]
pub struct MirrorOptions {
    /// https://, ssh://, scp-like, file:// URL or a local path. May carry a user name; a
    /// password in it is used as credential but never stored or logged.
    pub url: String,
    pub branch: String,
    /// e.g. `refs/notes/gitopsd`.
    pub notes_ref: String,
    /// Globs such as `refs/pull/*/head` (one `*` each), fetched under the same names.
    pub extra_fetch_refs: Vec<String>,
    pub auth: GitAuth,
}

/// Custom three-way merge for replaying unpushed notes: `(base, ours, theirs) -> merged`.
pub type NoteMerger = dyn Fn(Option<&str>, &str, Option<&str>) -> String + Send + Sync;

/// A bare mirror of the config repository on local disk.
pub struct Mirror {
    dir: PathBuf,
    opts: MirrorOptions,
    url: RemoteUrl,
    branch_ref: String,
    /// Serialises notes updates (and local notes rebuilds) within this process; the lock
    /// file (see [`lock`]) serialises them with other processes.
    notes_lock: Mutex<()>,
    merger: Option<Box<NoteMerger>>,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("dir", &self.dir)
            .field("url", &self.url.sanitized)
            .field("branch", &self.opts.branch)
            .field("notes_ref", &self.opts.notes_ref)
            .finish_non_exhaustive()
    }
}

fn validate_options(opts: &MirrorOptions) -> Result<(), GitError> {
    let bad = |message: String| GitError::InvalidConfig { message };
    if opts.branch.is_empty()
        || !git2::Reference::is_valid_name(&format!("refs/heads/{}", opts.branch))
    {
        return Err(bad(format!("invalid branch name {:?}", opts.branch)));
    }
    if !opts.notes_ref.starts_with("refs/") || !git2::Reference::is_valid_name(&opts.notes_ref) {
        return Err(bad(format!(
            "invalid notes ref {:?} (must be a full ref name such as refs/notes/gitopsd)",
            opts.notes_ref
        )));
    }
    if opts.notes_ref.starts_with("refs/gitopsd/") || opts.notes_ref.starts_with("refs/heads/") {
        return Err(bad(format!(
            "notes ref {:?} must not live under refs/heads/ or refs/gitopsd/",
            opts.notes_ref
        )));
    }
    for glob in &opts.extra_fetch_refs {
        let stars = glob.matches('*').count();
        let probe = glob.replace('*', "x");
        if !glob.starts_with("refs/") || stars > 1 || !git2::Reference::is_valid_name(&probe) {
            return Err(bad(format!(
                "invalid extra fetch ref {glob:?} (a full ref name with at most one '*')"
            )));
        }
        if glob.starts_with("refs/notes/") || glob.starts_with("refs/gitopsd/") {
            return Err(bad(format!(
                "extra fetch ref {glob:?} would overwrite notes or internal refs"
            )));
        }
    }
    Ok(())
}

impl Mirror {
    /// Opens the bare mirror at `dir` (created if missing, initialised with the remote
    /// configured). A corrupted mirror is deleted and re-created. Does not fetch.
    pub fn open(dir: &Path, opts: MirrorOptions) -> Result<Mirror, GitError> {
        validate_options(&opts)?;
        let mut url = url::parse_url(&opts.url).map_err(|message| GitError::InvalidUrl {
            url: redact_url(&opts.url),
            message,
        })?;
        if let RemoteKind::Local(p) = &url.kind {
            let abs = std::path::absolute(p).map_err(GitError::io("resolving", p))?;
            if !abs.exists() {
                return Err(GitError::InvalidUrl {
                    url: url.sanitized.clone(),
                    message: "no repository at this path".into(),
                });
            }
            url.sanitized = abs.to_string_lossy().into_owned();
            url.kind = RemoteKind::Local(abs);
        }
        let branch_ref = format!("refs/heads/{}", opts.branch);
        let mirror = Mirror {
            dir: dir.to_path_buf(),
            opts,
            url,
            branch_ref,
            notes_lock: Mutex::new(()),
            merger: None,
        };
        match mirror.open_checked() {
            Ok(repo) => mirror.configure(&repo)?,
            // A first start: nothing is wrong, there is just no mirror yet.
            Err(_) if !mirror.dir.exists() => {
                tracing::info!(path = %mirror.dir.display(), "creating the mirror");
                mirror.recreate()?;
            }
            Err(e) => {
                tracing::warn!(path = %mirror.dir.display(), error = %e, "mirror unusable, re-creating it");
                mirror.recreate()?;
            }
        }
        Ok(mirror)
    }

    /// Replaces the built-in section merge used when replaying unpushed notes on top of a
    /// remote that changed the same note meanwhile (see [`merge::merge_sections`]).
    pub fn with_note_merger(mut self, merger: Box<NoteMerger>) -> Mirror {
        self.merger = Some(merger);
        self
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The repository URL without credentials (for logs).
    pub fn url(&self) -> &str {
        &self.url.sanitized
    }

    /// Opens the repository with a config that holds only the repository's own file.
    fn repo(&self) -> Result<Repository, GitError> {
        let repo = Repository::open_bare(&self.dir).map_err(GitError::repo("open", &self.dir))?;
        let mut cfg = git2::Config::new().map_err(GitError::repo("config", &self.dir))?;
        cfg.add_file(&self.dir.join("config"), ConfigLevel::Local, false)
            .map_err(GitError::repo("config", &self.dir))?;
        repo.set_config(&cfg)
            .map_err(GitError::repo("config", &self.dir))?;
        Ok(repo)
    }

    /// Opens the repository and checks that HEAD, the branch head commit and its tree and
    /// the notes tips are readable.
    fn open_checked(&self) -> Result<Repository, GitError> {
        if !self.dir.exists() {
            return Err(GitError::Io {
                op: "opening mirror",
                path: self.dir.clone(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        let repo = self.repo()?;
        self.health_check(&repo)?;
        Ok(repo)
    }

    fn health_check(&self, repo: &Repository) -> Result<(), GitError> {
        repo.find_reference("HEAD")
            .map_err(GitError::repo("read HEAD", &self.dir))?;
        for name in [
            self.branch_ref.as_str(),
            REMOTE_NOTES_REF,
            self.opts.notes_ref.as_str(),
        ] {
            let id = match repo.refname_to_id(name) {
                Ok(id) => id,
                Err(e) if e.code() == git2::ErrorCode::NotFound => continue,
                Err(e) => return Err(GitError::repo("read ref", &self.dir)(e)),
            };
            let commit = repo.find_commit(id).map_err(|e| self.object_err(id, e))?;
            let tree = commit.tree().map_err(|e| self.object_err(id, e))?;
            for entry in tree.iter() {
                if entry.kind() == Some(git2::ObjectType::Tree) {
                    repo.find_tree(entry.id())
                        .map_err(|e| self.object_err(entry.id(), e))?;
                }
            }
        }
        Ok(())
    }

    /// Makes sure `origin` points at the (sanitised) URL and HEAD at the branch.
    fn configure(&self, repo: &Repository) -> Result<(), GitError> {
        let url = &self.url.sanitized;
        match repo.find_remote(REMOTE_NAME) {
            Ok(r) if r.url().ok() == Some(url.as_str()) => {}
            Ok(_) => repo
                .remote_set_url(REMOTE_NAME, url)
                .map_err(GitError::repo("configure remote", &self.dir))?,
            Err(_) => {
                repo.remote_with_fetch(REMOTE_NAME, url, &format!("+{b}:{b}", b = self.branch_ref))
                    .map_err(GitError::repo("configure remote", &self.dir))?;
            }
        }
        let head_ok = repo
            .find_reference("HEAD")
            .ok()
            .map(|h| h.symbolic_target().ok().flatten() == Some(self.branch_ref.as_str()))
            .unwrap_or(false);
        if !head_ok {
            repo.set_head(&self.branch_ref)
                .map_err(GitError::repo("set HEAD", &self.dir))?;
        }
        Ok(())
    }

    /// Runs a fetch of `refspecs` from the remote (prunes refs that vanished upstream).
    pub(crate) fn fetch_refspecs(
        &self,
        repo: &Repository,
        refspecs: &[String],
        op: &'static str,
    ) -> Result<(), GitError> {
        self.check_local_remote(op)?;
        let state = CallbackState::new(Instant::now() + NETWORK_DEADLINE);
        let result = {
            let mut remote = repo
                .remote_anonymous(&self.url.sanitized)
                .map_err(|e| self.net_error(op, e, &state))?;
            let mut fo = FetchOptions::new();
            fo.remote_callbacks(auth::callbacks(&self.opts.auth, &self.url, &state))
                .prune(FetchPrune::On)
                .download_tags(AutotagOption::None);
            remote.fetch(refspecs, Some(&mut fo), Some("gitopsd: fetch"))
        };
        result.map_err(|e| self.net_error(op, e, &state))
    }

    /// A local remote that vanished after `open()` (e.g. while being replaced, or an
    /// unmounted share) is an outage, not a bad URL: libgit2 would report "unsupported URL
    /// protocol" for it.
    pub(crate) fn check_local_remote(&self, op: &'static str) -> Result<(), GitError> {
        if let RemoteKind::Local(p) = &self.url.kind
            && !p.exists()
        {
            return Err(GitError::Network {
                url: self.url.sanitized.clone(),
                op,
                message: "remote repository path does not exist (anymore)".into(),
            });
        }
        Ok(())
    }

    /// Classifies a libgit2 error from a network operation.
    pub(crate) fn net_error(
        &self,
        op: &'static str,
        e: git2::Error,
        state: &CallbackState,
    ) -> GitError {
        let url = self.url.sanitized.clone();
        if let Some(message) = state.cert_failure.borrow().clone() {
            return GitError::HostVerification { url, message };
        }
        if let Some(message) = state.auth_failure.borrow().clone() {
            return GitError::Auth { url, message };
        }
        if state.timed_out.get() {
            return GitError::Network {
                url,
                op,
                message: format!("timed out after {}s", NETWORK_DEADLINE.as_secs()),
            };
        }
        let message = e.message().to_string();
        let lower = message.to_ascii_lowercase();
        match e.code() {
            git2::ErrorCode::Auth => return GitError::Auth { url, message },
            git2::ErrorCode::Certificate => return GitError::HostVerification { url, message },
            _ => {}
        }
        if lower.contains("401") || lower.contains("403") || lower.contains("authenticat") {
            return GitError::Auth { url, message };
        }
        if lower.contains("host key") || lower.contains("certificate") {
            return GitError::HostVerification { url, message };
        }
        if lower.contains("unsupported url protocol") || lower.contains("invalid url") {
            return GitError::InvalidUrl { url, message };
        }
        if lower.contains("404") {
            return GitError::InvalidUrl {
                url,
                message: format!("repository not found ({message})"),
            };
        }
        match e.class() {
            git2::ErrorClass::Net
            | git2::ErrorClass::Os
            | git2::ErrorClass::Ssl
            | git2::ErrorClass::Ssh
            | git2::ErrorClass::Http
            | git2::ErrorClass::Callback => GitError::Network { url, op, message },
            // A local remote that vanished after open() (e.g. being replaced): retry later.
            // Refs changing under libgit2's local transport while it lists them.
            git2::ErrorClass::Repository | git2::ErrorClass::Reference if self.url.is_local() => {
                GitError::Network { url, op, message }
            }
            _ => GitError::Repo {
                op,
                path: self.dir.clone(),
                source: e,
            },
        }
    }

    fn is_corruption(e: &GitError) -> bool {
        match e {
            GitError::Object { .. } => true,
            GitError::Repo { source, .. } => matches!(
                source.class(),
                git2::ErrorClass::Odb
                    | git2::ErrorClass::Zlib
                    | git2::ErrorClass::Object
                    | git2::ErrorClass::Indexer
                    | git2::ErrorClass::Repository
                    | git2::ErrorClass::Reference
            ),
            _ => false,
        }
    }

    /// Fetches the branch (force), the notes ref (into `refs/gitopsd/remote-notes`) and the
    /// extra refs; merges unpushed local notes on top of the fetched notes. Returns the
    /// branch head. A corrupted mirror is re-created and fetched again.
    ///
    /// Holds the notes lock throughout: the fetch writes the remote-tracking notes ref, and
    /// two processes fetching into one mirror would collide on ref locks, which looks like
    /// damage and would trigger a re-creation under the other's feet.
    pub fn fetch(&self) -> Result<Oid, GitError> {
        let mut refspecs = vec![
            format!("+{b}:{b}", b = self.branch_ref),
            format!("+{}:{}", self.opts.notes_ref, REMOTE_NOTES_REF),
        ];
        refspecs.extend(
            self.opts
                .extra_fetch_refs
                .iter()
                .map(|g| format!("+{g}:{g}")),
        );
        let _guard = self.notes_guard()?;
        let repo = match self.open_checked() {
            Ok(repo) => repo,
            Err(e) => {
                tracing::warn!(path = %self.dir.display(), error = %e, "mirror unusable, re-creating it");
                self.recreate_locked()?
            }
        };
        let repo = match self.fetch_refspecs(&repo, &refspecs, "fetching") {
            Ok(()) => repo,
            Err(e) if Self::is_corruption(&e) => {
                tracing::warn!(path = %self.dir.display(), error = %e, "fetch failed on a damaged mirror, re-creating it");
                drop(repo);
                let repo = self.recreate_locked()?;
                self.fetch_refspecs(&repo, &refspecs, "fetching")?;
                repo
            }
            Err(e) => return Err(e),
        };
        self.rebuild_local_notes(&repo)?;
        let head = self.branch_head_in(&repo)?;
        tracing::debug!(commit = %head, url = %self.url.sanitized, branch = %self.opts.branch, "fetched");
        Ok(head)
    }
}

#[cfg(test)]
mod tests;
