//! Pull-request previews: what a revision would change, per environment, as Markdown for a
//! comment (split to fit) or JSON for tools. Owns the report and its rendering. May call: `git`
//! (revisions only through [`LocalRepo`] and the mirror), `manifest`, `plan` (the comparison
//! the daemon uses too), `s3` (specs, no S3 calls), `k8s` (only with `--live`) and `config`.
//!
//! - Without `--live` everything comes from git: the tree diff between base and head names the
//!   changed files, only those are parsed ([`compute`]), so the cost follows the change.
//! - With `--live` the head is rendered fully and every object is dry-run against the cluster
//!   (server-side apply, dry-run) and compared with the live object ([`live`]).
//! - Secrets and objects the host config marks `sensitive` show only which keys change
//!   ([`redact`]); server-managed fields are never part of a diff.
//! - [`run_preview_watcher`] previews refs matching `previews.refs` and writes the Markdown as a
//!   note under `previews.notes_ref` on the previewed commit.

pub(crate) mod buckets;
mod child;
pub mod compute;
pub mod live;
pub mod markdown;
pub mod redact;
mod rendered;
pub mod report;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, EnvironmentConfig, HostConfig};
use crate::git::{GitError, LocalRepo, Mirror, MirrorOptions, Oid};
use crate::render::Rendering;
use crate::status::Notary;
pub use compute::EnvInput;
pub use report::Report;

/// Folder whose subfolders are the environments when no host config is given.
pub const ENVIRONMENTS_DIR: &str = "environments";
/// Version of the JSON document.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Kube(#[from] crate::k8s::KubeError),
    /// A renderer could not run or read its tree (host problem, not the change's fault).
    #[error(transparent)]
    Render(#[from] crate::render::RenderFailure),
    #[error("{0}")]
    Usage(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding the report: {0}")]
    Json(#[from] serde_json::Error),
    #[error("background task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Sign(#[from] crate::status::SignError),
    /// A preview process (the watcher's child) failed, timed out or wrote too much.
    #[error("preview process: {0}")]
    Child(String),
    /// A file of the change is over the content limit; it is refused before it is read.
    #[error("{path}: file is {size} bytes, more than the limit of {limit} bytes per file")]
    TooLarge { path: String, size: u64, limit: u64 },
}

/// Reads a manifest blob of the change, refusing one over the per-file limit before loading it
/// (a PR author is less trusted than the operator).
pub(crate) fn manifest_blob(
    repo: &LocalRepo,
    path: &str,
    oid: Oid,
) -> Result<Vec<u8>, PreviewError> {
    let limit = crate::manifest::Limits::default().file_bytes;
    let size = repo.blob_size(oid)?;
    if size > limit {
        return Err(PreviewError::TooLarge {
            path: path.to_string(),
            size,
            limit,
        });
    }
    Ok(repo.blob(oid)?)
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Markdown,
    Json,
}

/// `gitopsd preview`.
#[derive(Clone, Debug, clap::Args)]
pub struct PreviewArgs {
    /// Repository: a local path (work tree or bare, opened in place) or a URL (fetched into a
    /// temporary mirror, with the host config's credentials when --config is given).
    #[arg(long)]
    pub repo: String,
    /// Base revision (e.g. the target branch or the merge base). Optional with --live.
    #[arg(long)]
    pub base: Option<String>,
    /// Head revision (e.g. the pull request's head).
    #[arg(long)]
    pub head: String,
    /// Only these environments (repeatable).
    #[arg(long = "env")]
    pub env: Vec<String>,
    #[arg(long, value_enum, default_value = "markdown")]
    pub format: Format,
    /// Compare with the running cluster through a server-side dry-run (needs --config).
    #[arg(long)]
    pub live: bool,
    /// With --live, also compare objects this environment does not own (by default only their
    /// existence is reported: their live content belongs to someone else).
    #[arg(long, requires = "live")]
    pub live_all: bool,
    /// Exit 0 whenever the report was made (the daemon's preview watcher reads the Markdown).
    #[arg(long, hide = true)]
    pub exit_zero: bool,
    /// Host config: environments (name, path, sensitive objects), credentials, kubeconfig.
    /// Without it, every folder directly under `environments/` of the head is an environment.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Write preview-1.md, preview-2.md, ... (or preview.json) into this folder.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Largest Markdown body; bigger previews are split into numbered bodies.
    #[arg(long, default_value_t = 65536)]
    pub max_comment_bytes: usize,
}

/// A URL (fetched into a mirror) rather than a local path.
fn is_url(repo: &str) -> bool {
    repo.contains("://") || crate::git::is_scp_like(repo)
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, PreviewError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("gitopsd-preview-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|source| PreviewError::Io {
            op: "creating",
            path: path.clone(),
            source,
        })?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::debug!(path = %self.0.display(), error = %e, "cannot remove temporary mirror");
        }
    }
}

/// Refs a URL preview fetches (so that branch names, tags and pull-request refs resolve).
const URL_FETCH_REFS: &[&str] = &[
    "refs/heads/*",
    "refs/tags/*",
    "refs/pull/*/head",
    "refs/merge-requests/*/head",
];

/// Opens `--repo`: a local path directly, a URL through a temporary mirror.
fn open_repo(
    spec: &str,
    config: Option<&HostConfig>,
) -> Result<(LocalRepo, Option<TempDir>), PreviewError> {
    if !is_url(spec) {
        return Ok((LocalRepo::open(Path::new(spec))?, None));
    }
    let tmp = TempDir::new()?;
    let auth = match config {
        Some(c) => c.git_auth()?,
        None => crate::git::GitAuth::default(),
    };
    let opts = MirrorOptions {
        url: spec.to_string(),
        branch: config
            .map(|c| c.repository.branch.clone())
            .unwrap_or_else(|| "main".into()),
        notes_ref: crate::config::DEFAULT_NOTES_REF.to_string(),
        extra_fetch_refs: URL_FETCH_REFS.iter().map(|s| s.to_string()).collect(),
        auth,
    };
    let dir = tmp.0.join("mirror.git");
    let mirror = Mirror::open(&dir, opts)?;
    match mirror.fetch() {
        Ok(_) => {}
        // The default branch may not exist; the other refs were fetched all the same.
        Err(GitError::MissingRef { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    Ok((mirror.read_only()?, Some(tmp)))
}

/// Resolves a revision to a commit. `origin/<x>` also tries `<x>` (a fetched mirror has no
/// remote-tracking refs).
fn resolve(repo: &LocalRepo, rev: &str) -> Result<Oid, GitError> {
    repo.resolve(rev).or_else(|first| {
        rev.strip_prefix("origin/")
            .and_then(|rest| repo.resolve(rest).ok())
            .ok_or(first)
    })
}

/// The environments to preview: from the host config, or the folders under `environments/`.
pub fn environments(
    repo: &LocalRepo,
    head: Oid,
    config: Option<&HostConfig>,
    only: &[String],
) -> Result<Vec<(EnvInput, Option<EnvironmentConfig>)>, PreviewError> {
    let all: Vec<(EnvInput, Option<EnvironmentConfig>)> = match config {
        Some(c) => c
            .environments
            .iter()
            .map(|e| (EnvInput::from_config(e), Some(e.clone())))
            .collect(),
        None => repo
            .subdirs(head, ENVIRONMENTS_DIR)?
            .into_iter()
            .map(|name| {
                let path = format!("{ENVIRONMENTS_DIR}/{name}");
                (EnvInput::from_folder(name, path), None)
            })
            .collect(),
    };
    for name in only {
        if !all.iter().any(|(e, _)| &e.name == name) {
            return Err(PreviewError::Usage(format!(
                "no environment {name:?} to preview"
            )));
        }
    }
    Ok(all
        .into_iter()
        .filter(|(e, _)| only.is_empty() || only.contains(&e.name))
        .collect())
}

/// Previews every environment from git alone (no cluster, no S3).
pub fn preview_git(
    repo: &LocalRepo,
    base: Oid,
    head: Oid,
    envs: &[EnvInput],
    rendering: &Rendering,
) -> Result<Report, PreviewError> {
    let mut environments = Vec::with_capacity(envs.len());
    for env in envs {
        let report = match rendered::preview_rendered(repo, base, head, env, rendering)? {
            Some(report) => report,
            None => compute::preview_env(repo, base, head, env)?,
        };
        environments.push(report);
    }
    Ok(Report {
        schema: SCHEMA_VERSION,
        base: base.to_string(),
        head: head.to_string(),
        live: false,
        environments,
    })
}

fn write_file(path: &Path, text: &str) -> Result<(), PreviewError> {
    std::fs::write(path, text).map_err(|source| PreviewError::Io {
        op: "writing",
        path: path.to_path_buf(),
        source,
    })
}

/// The host's renderers (`renderers:` of the host config, else what is on `PATH`).
async fn renderers(config: Option<&HostConfig>) -> Result<Rendering, PreviewError> {
    let cfg = config.map(|c| c.renderers.clone()).unwrap_or_default();
    let limits = config.map(|c| c.limits.limits()).unwrap_or_default();
    Ok(Rendering::from_config(&cfg, limits)
        .await
        .map_err(crate::render::RenderFailure::Host)?)
}

/// Builds the report `args` ask for.
pub async fn build_report(args: &PreviewArgs) -> Result<Report, PreviewError> {
    let config = match &args.config {
        Some(p) => Some(HostConfig::load(p)?),
        None => None,
    };
    if args.live && config.is_none() {
        return Err(PreviewError::Usage(
            "--live needs --config (for the kubeconfig of each environment)".into(),
        ));
    }
    if args.base.is_none() && !args.live {
        return Err(PreviewError::Usage(
            "--base is required (unless --live)".into(),
        ));
    }
    // Git work is blocking: run it off the async workers.
    let spec = args.repo.clone();
    let base_rev = args.base.clone();
    let head_rev = args.head.clone();
    let only = args.env.clone();
    let live = args.live;
    let config2 = config.clone();
    let rendering = renderers(config.as_ref()).await?;
    let (git_report, prepared) = tokio::task::spawn_blocking(move || -> Result<_, PreviewError> {
        let (repo, _tmp) = open_repo(&spec, config2.as_ref())?;
        let head = resolve(&repo, &head_rev)?;
        let base = match &base_rev {
            Some(b) => resolve(&repo, b)?,
            None => head,
        };
        let envs = environments(&repo, head, config2.as_ref(), &only)?;
        let inputs: Vec<EnvInput> = envs.iter().map(|(e, _)| e.clone()).collect();
        let report = preview_git(&repo, base, head, &inputs, &rendering)?;
        let prepared = if live {
            Some(live::prepare(&repo, head, &envs)?)
        } else {
            None
        };
        Ok((report, prepared))
    })
    .await
    .map_err(|e| PreviewError::Task(e.to_string()))??;
    match prepared {
        None => Ok(git_report),
        Some(prepared) => {
            let instance = config.map(|c| c.instance()).unwrap_or_default();
            live::run(git_report, prepared, &instance, args.live_all).await
        }
    }
}

/// `gitopsd preview`: prints (or writes) the report and returns the exit code: 0 no changes,
/// 2 changes, 1 validation errors.
pub async fn run_cli(args: PreviewArgs) -> Result<u8, PreviewError> {
    if args.max_comment_bytes < markdown::MIN_LIMIT {
        return Err(PreviewError::Usage(format!(
            "--max-comment-bytes must be at least {}",
            markdown::MIN_LIMIT
        )));
    }
    let report = build_report(&args).await?;
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).map_err(|source| PreviewError::Io {
            op: "creating",
            path: dir.clone(),
            source,
        })?;
    }
    match args.format {
        Format::Json => {
            let text = serde_json::to_string_pretty(&report)? + "\n";
            match &args.out {
                Some(dir) => write_file(&dir.join("preview.json"), &text)?,
                None => print!("{text}"),
            }
        }
        Format::Markdown => {
            let parts = markdown::render(&report, args.max_comment_bytes);
            let m = parts.len();
            match &args.out {
                Some(dir) => {
                    for (i, part) in parts.iter().enumerate() {
                        write_file(&dir.join(format!("preview-{}.md", i + 1)), part)?;
                    }
                    eprintln!("gitopsd: wrote {m} preview bodies to {}", dir.display());
                }
                None if m == 1 => print!("{}", parts.concat()),
                None => {
                    for (i, part) in parts.iter().enumerate() {
                        println!("{}", markdown::separator(i + 1, m));
                        print!("{part}");
                    }
                }
            }
        }
    }
    Ok(if args.exit_zero {
        0
    } else {
        report.exit_code()
    })
}

/// The Markdown written into a preview note: all bodies, separated like the CLI prints them.
pub fn note_text(report: &Report, limit: usize) -> String {
    let parts = markdown::render(report, limit);
    let m = parts.len();
    if m == 1 {
        return parts.concat();
    }
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        out.push_str(&markdown::separator(i + 1, m));
        out.push('\n');
        out.push_str(part);
    }
    out
}

/// Daemon option: previews every ref matching `previews.refs` (e.g. `refs/pull/*/head`) against
/// its merge base with the branch and writes the Markdown as a note on the ref's commit under
/// `previews.notes_ref`. Uses its own mirror (`state_dir/previews.git`); commits that already
/// carry a preview note are skipped. Each preview runs in a child process of `exe` (this
/// executable) without credentials and with limits (see `child`). Returns when `cancel` fires;
/// does nothing without `previews` in the host config.
pub async fn run_preview_watcher(
    config: &HostConfig,
    cancel: CancellationToken,
    exe: PathBuf,
) -> Result<(), PreviewError> {
    let Some(previews) = config.previews.clone() else {
        return Ok(());
    };
    let dir = config.state_dir.join("previews.git");
    let opts = MirrorOptions {
        url: config.repository.url.clone(),
        branch: config.repository.branch.clone(),
        notes_ref: previews.notes_ref.clone(),
        extra_fetch_refs: vec![previews.refs.clone()],
        auth: config.git_auth()?,
    };
    let mirror_dir = dir.clone();
    let mirror = tokio::task::spawn_blocking(move || Mirror::open(&dir, opts))
        .await
        .map_err(|e| PreviewError::Task(e.to_string()))??;
    let mirror = Arc::new(mirror);
    let launcher = child::Launcher::new(exe, config, &mirror_dir).await?;
    let notary = Arc::new(config.notary()?);
    let mut done: std::collections::BTreeSet<Oid> = std::collections::BTreeSet::new();
    loop {
        match watch_once(&mirror, &mirror_dir, &launcher, &notary, &mut done).await {
            Ok(n) if n > 0 => tracing::info!(previews = n, "wrote preview notes"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "preview pass failed; retrying on the next poll"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(config.repository.poll.max(Duration::from_secs(1))) => {}
        }
    }
}

/// One pass of the preview watcher: fetch, then preview every new matching ref head in a
/// child process (no credentials, bounded), and sign its note here. Returns the number of notes
/// written. A head is skipped only when its note is signed by a trusted key; a forged note is
/// reported and overwritten.
async fn watch_once(
    mirror: &Arc<Mirror>,
    mirror_dir: &Path,
    launcher: &child::Launcher,
    notary: &Arc<Notary>,
    done: &mut std::collections::BTreeSet<Oid>,
) -> Result<usize, PreviewError> {
    let m = Arc::clone(mirror);
    let skip = done.clone();
    let verifier = Arc::clone(notary);
    let todo = tokio::task::spawn_blocking(move || -> Result<_, PreviewError> {
        let branch = m.fetch()?;
        let mut todo: Vec<(String, Oid, Oid)> = Vec::new();
        for (name, head) in m.extra_refs()? {
            if skip.contains(&head) || todo.iter().any(|t| t.1 == head) {
                continue;
            }
            if let Some(note) = m.read_note(head)? {
                match verifier.verify_text(&head.to_string(), &note) {
                    Ok(()) => continue,
                    Err(why) => {
                        tracing::warn!(r#ref = %name, commit = %head, reason = %why, "ignoring a preview note that is not signed by a trusted key; previewing again")
                    }
                }
            }
            let base = m.read_only()?.merge_base(head, branch)?;
            todo.push((name, head, base));
        }
        Ok(todo)
    })
    .await
    .map_err(|e| PreviewError::Task(e.to_string()))??;
    let mut written = 0usize;
    for (name, head, base) in todo {
        // A head whose preview fails is retried on the next pass, the others go on.
        let text = match launcher.preview(mirror_dir, base, head).await {
            Ok(text) => text,
            Err(e) => {
                tracing::warn!(r#ref = %name, commit = %head, error = %e, "preview failed");
                continue;
            }
        };
        let text = notary.seal_text(&head.to_string(), &text)?;
        let m = Arc::clone(mirror);
        tokio::task::spawn_blocking(move || m.update_note(head, &|_| text.clone()))
            .await
            .map_err(|e| PreviewError::Task(e.to_string()))??;
        tracing::info!(r#ref = %name, commit = %head, base = %base, "preview note written");
        done.insert(head);
        written += 1;
    }
    Ok(written)
}
