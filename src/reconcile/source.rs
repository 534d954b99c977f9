//! Reading desired state out of the mirror: blocking git calls moved off the async runtime.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::git::{ChangeKind, FileKind, GitError, Mirror, Oid, TreeFile};
use crate::manifest::{self, DesiredState, EntryKind, FileEntry, Limits, ObjectKey, RenderError};
pub use crate::render::Rendering;
use crate::render::sops::{self, Keys, Written};
use crate::render::{self, Inputs, Tree};
use crate::s3::{ObjectSource, S3Error, SourceFile};

/// Runs a blocking git operation on the blocking pool.
pub async fn git<T, F>(mirror: &Arc<Mirror>, f: F) -> Result<T, GitError>
where
    T: Send + 'static,
    F: FnOnce(&Mirror) -> Result<T, GitError> + Send + 'static,
{
    let mirror = Arc::clone(mirror);
    match tokio::task::spawn_blocking(move || f(&mirror)).await {
        Ok(result) => result,
        Err(e) => Err(GitError::InvalidConfig {
            message: format!("git task failed: {e}"),
        }),
    }
}

/// Rendering failed: either the content is invalid, or git could not be read, or the
/// renderer could not run (a host problem: retried, never the commit's fault).
#[derive(Debug, thiserror::Error)]
pub enum RenderFailure {
    #[error("{} render errors", .0.len())]
    Invalid(Vec<RenderError>),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Renderer(render::RenderFailure),
}

impl From<render::RenderFailure> for RenderFailure {
    fn from(e: render::RenderFailure) -> Self {
        match e {
            render::RenderFailure::Invalid(errors) => RenderFailure::Invalid(errors),
            render::RenderFailure::Tree(render::TreeError::Git(e)) => RenderFailure::Git(e),
            other => RenderFailure::Renderer(other),
        }
    }
}

/// What a Kustomize render read and what ran it (absent for plain folders).
#[derive(Clone, Debug)]
pub struct Kustomized {
    pub inputs: Inputs,
    /// e.g. `kustomize v5.8.2 + helm v4.3.1`, recorded in the note.
    pub renderer: String,
}

/// One environment's desired state at one revision.
pub struct EnvRender {
    pub state: Arc<DesiredState>,
    pub kustomized: Option<Kustomized>,
}

/// The render of an earlier revision, reused where nothing it read changed.
pub struct Earlier<'a> {
    pub commit: Oid,
    pub state: &'a Arc<DesiredState>,
    pub kustomized: Option<&'a Kustomized>,
}

/// Renders environment folder `dir` at `rev`: with kustomize when it holds a kustomization
/// (skipped when none of the folders the earlier build read changed), else as plain YAML
/// (re-reading only the files changed since `earlier`).
pub async fn render_env(
    mirror: &Arc<Mirror>,
    rev: Oid,
    dir: &str,
    rendering: &Rendering,
    earlier: Option<Earlier<'_>>,
) -> Result<EnvRender, RenderFailure> {
    let tree: Arc<dyn Tree> = Arc::new((Arc::clone(mirror), rev));
    if !is_kustomize(mirror, rev, dir).await? {
        let state = match earlier {
            Some(e) if e.kustomized.is_none() => {
                render_changed(
                    mirror,
                    e.commit,
                    e.state,
                    rev,
                    dir,
                    &rendering.limits.content,
                )
                .await?
                .0
            }
            _ => render_full(mirror, rev, dir, &rendering.limits.content).await?,
        };
        let state = decrypted(state, rendering.decryption.as_ref(), &Written::new(), dir).await?;
        return Ok(EnvRender {
            state: Arc::new(state),
            kustomized: None,
        });
    }
    if let Some(e) = earlier
        && let Some(k) = e.kustomized
    {
        let inputs = k.inputs.clone();
        let t = Arc::clone(&tree);
        let changed = tokio::task::spawn_blocking(move || inputs.changed(t.as_ref()))
            .await
            .map_err(|e| GitError::InvalidConfig {
                message: format!("git task failed: {e}"),
            })?
            .map_err(render::RenderFailure::from)?;
        if !changed {
            return Ok(EnvRender {
                state: Arc::clone(e.state),
                kustomized: Some(k.clone()),
            });
        }
    }
    let r = render::render_kustomize(tree, dir, &rendering.renderers, &rendering.limits).await?;
    tracing::info!(dir = %dir, commit = %rev, objects = r.state.len(), elapsed_ms = r.elapsed.as_millis() as u64, renderer = %r.renderer, "rendered with kustomize");
    let written = written_sources(mirror, rev, &r.state).await?;
    let state = decrypted(r.state, rendering.decryption.as_ref(), &written, dir).await?;
    Ok(EnvRender {
        state: Arc::new(state),
        kustomized: Some(Kustomized {
            inputs: r.inputs,
            renderer: r.renderer,
        }),
    })
}

/// `state` with its SOPS objects decrypted (on the blocking pool: age and AES-GCM are CPU work).
async fn decrypted(
    mut state: DesiredState,
    keys: Option<&Keys>,
    written: &Written,
    dir: &str,
) -> Result<DesiredState, RenderFailure> {
    let count = state
        .objects
        .values()
        .filter(|m| sops::body_encrypted(&m.body))
        .count();
    if count == 0 {
        return Ok(state);
    }
    let (keys, written, started) = (keys.cloned(), written.clone(), std::time::Instant::now());
    let task = tokio::task::spawn_blocking(move || {
        sops::decrypt_state(&mut state, keys.as_ref(), &written).map(|()| state)
    });
    let state = task
        .await
        .map_err(|e| GitError::InvalidConfig {
            message: format!("decryption task failed: {e}"),
        })?
        .map_err(RenderFailure::Invalid)?;
    tracing::debug!(dir = %dir, objects = count, elapsed_ms = started.elapsed().as_millis() as u64, "decrypted SOPS objects");
    Ok(state)
}

/// The source documents of a kustomize render's SOPS objects, read from git at `rev` (the
/// build printed their keys sorted; their MAC follows the file's order).
async fn written_sources(
    mirror: &Arc<Mirror>,
    rev: Oid,
    state: &DesiredState,
) -> Result<Written, GitError> {
    let paths: BTreeSet<String> = state
        .objects
        .values()
        .filter(|m| sops::body_encrypted(&m.body))
        .map(|m| m.source.path.clone())
        .collect();
    if paths.is_empty() {
        return Ok(Written::new());
    }
    git(mirror, move |m| {
        let mut written = Written::new();
        for path in paths {
            let Some(bytes) = m.read_blob(rev, &path)? else {
                continue;
            };
            for doc in manifest::parse_file(&path, &bytes).unwrap_or_default() {
                written.insert((path.clone(), doc.source.document), doc.body.value());
            }
        }
        Ok(written)
    })
    .await
}

/// Whether `dir` holds a kustomization at `rev` (three small lookups, no listing).
pub async fn is_kustomize(mirror: &Arc<Mirror>, rev: Oid, dir: &str) -> Result<bool, GitError> {
    let dir = dir.trim_matches('/').to_string();
    git(mirror, move |m| {
        for name in render::KUSTOMIZATION_NAMES {
            let path = if dir.is_empty() {
                name.to_string()
            } else {
                format!("{dir}/{name}")
            };
            if m.read_blob(rev, &path)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    })
    .await
}

/// Renders an environment folder at `rev` from scratch, on the blocking pool. Sizes are checked
/// from the blob headers before any file is read; files are then read one at a time, and no
/// more once a limit is reached.
pub async fn render_full(
    mirror: &Arc<Mirror>,
    rev: Oid,
    dir: &str,
    limits: &Limits,
) -> Result<DesiredState, RenderFailure> {
    let (dir, limits) = (dir.trim_matches('/').to_string(), *limits);
    git(mirror, move |m| {
        let files = m.list_files(rev, &dir)?;
        if let Err(errors) = check_sizes(m, &files, &dir, &limits)? {
            return Ok(Err(errors));
        }
        let mut failed: Option<GitError> = None;
        // Only YAML blobs are read; other entries are passed on for their kind checks.
        let entries = files.into_iter().map_while(|f| {
            let bytes = match is_manifest(&f) {
                true => match m.read_blobs(&[f.oid]) {
                    Ok(mut b) => b.pop().unwrap_or_default(),
                    Err(e) => {
                        failed = Some(e);
                        return None;
                    }
                },
                false => Vec::new(),
            };
            Some(FileEntry {
                path: f.path,
                kind: EntryKind::from(f.kind),
                bytes,
            })
        });
        let rendered = manifest::render_within(&dir, entries, &limits);
        match failed {
            Some(e) => Err(e),
            None => Ok(rendered),
        }
    })
    .await?
    .map_err(RenderFailure::Invalid)
}

/// A regular YAML file, read as manifests.
fn is_manifest(f: &TreeFile) -> bool {
    EntryKind::from(f.kind) == EntryKind::File && manifest::is_manifest_path(&f.path)
}

/// Checks the byte limits of the whole folder at `rev` from the blob headers.
fn check_folder_sizes(
    m: &Mirror,
    rev: Oid,
    dir: &str,
    limits: &Limits,
) -> Result<Result<(), Vec<RenderError>>, GitError> {
    check_sizes(m, &m.list_files(rev, dir)?, dir, limits)
}

/// Checks the byte limits of a folder's `files` from their blob headers, reading no blob.
fn check_sizes(
    m: &Mirror,
    files: &[TreeFile],
    dir: &str,
    limits: &Limits,
) -> Result<Result<(), Vec<RenderError>>, GitError> {
    let wanted: Vec<&TreeFile> = files.iter().filter(|f| is_manifest(f)).collect();
    let ids: Vec<Oid> = wanted.iter().map(|f| f.oid).collect();
    let sizes = m.blob_sizes(&ids)?;
    let sized = wanted
        .iter()
        .zip(&sizes)
        .map(|(f, s)| (f.path.as_str(), *s));
    Ok(manifest::limits::check_sizes(sized, limits, dir))
}

/// Renders `rev` by re-reading only the files changed since `base_rev` (one at a time, on the
/// blocking pool, no more once a limit is reached). Returns the state and the keys of the
/// objects of changed files.
pub async fn render_changed(
    mirror: &Arc<Mirror>,
    base_rev: Oid,
    base: &DesiredState,
    rev: Oid,
    dir: &str,
    limits: &Limits,
) -> Result<(DesiredState, Vec<ObjectKey>), RenderFailure> {
    let (dir, limits) = (dir.trim_matches('/').to_string(), *limits);
    // The base is shared, cloned only for the task.
    let base = base.clone();
    git(mirror, move |m| {
        if let Err(errors) = check_folder_sizes(m, rev, &dir, &limits)? {
            return Ok(Err(errors));
        }
        let changes = m.changed_files(Some(base_rev), rev, &dir)?;
        let paths: Vec<String> = changes.iter().map(|c| c.path.clone()).collect();
        let mut failed: Option<GitError> = None;
        let entries = changes
            .into_iter()
            .filter(|c| c.change != ChangeKind::Deleted)
            .map_while(|c| {
                let kind = EntryKind::from(c.kind);
                let bytes = if kind == EntryKind::File && manifest::is_manifest_path(&c.path) {
                    match m.read_blob(rev, &c.path) {
                        Ok(b) => b.unwrap_or_default(),
                        Err(e) => {
                            failed = Some(e);
                            return None;
                        }
                    }
                } else {
                    Vec::new()
                };
                Some(FileEntry {
                    path: c.path,
                    kind,
                    bytes,
                })
            });
        let rendered = manifest::rerender_lazily(&dir, &base, &paths, entries, &limits);
        match failed {
            Some(e) => Err(e),
            None => Ok(rendered),
        }
    })
    .await?
    .map_err(RenderFailure::Invalid)
}

/// Whether anything under `dir` changed between two revisions.
pub async fn folder_changed(
    mirror: &Arc<Mirror>,
    from: Option<Oid>,
    to: Oid,
    dir: &str,
) -> Result<bool, GitError> {
    let dir = dir.trim_matches('/').to_string();
    git(mirror, move |m| {
        Ok(!m.changed_files(from, to, &dir)?.is_empty())
    })
    .await
}

/// Repository files at one revision, for bucket object sync.
pub struct GitObjectSource {
    pub mirror: Arc<Mirror>,
    pub rev: Oid,
}

impl GitObjectSource {
    // The S3 module's trait is synchronous; git reads are fast local I/O, so run them in place
    // while telling the runtime this worker thread is blocked.
    fn blocking<T>(&self, f: impl FnOnce(&Mirror) -> T) -> T {
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| f(&self.mirror))
            }
            _ => f(&self.mirror),
        }
    }
}

impl ObjectSource for GitObjectSource {
    fn list(&self, dir: &str) -> Result<Vec<SourceFile>, S3Error> {
        let files = self
            .blocking(|m| m.list_files(self.rev, dir))
            .map_err(|e| S3Error::source(dir, e.to_string()))?;
        let regular: Vec<_> = files
            .into_iter()
            .filter(|f| matches!(f.kind, FileKind::Blob | FileKind::Executable))
            .collect();
        let ids: Vec<Oid> = regular.iter().map(|f| f.oid).collect();
        // Sizes come from the object headers: nothing is loaded until an object must be uploaded.
        let sizes = self
            .blocking(|m| m.blob_sizes(&ids))
            .map_err(|e| S3Error::source(dir, e.to_string()))?;
        Ok(regular
            .into_iter()
            .zip(sizes)
            .map(|(f, size)| SourceFile {
                path: f.path,
                size,
                content_id: f.oid.to_string(),
            })
            .collect())
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, S3Error> {
        self.blocking(|m| m.read_blob(self.rev, path))
            .map_err(|e| S3Error::source(path, e.to_string()))?
            .ok_or_else(|| S3Error::source(path, "no such file at this revision"))
    }
}
