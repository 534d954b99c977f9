//! Renderers: an environment folder holding a kustomization (`kustomization.yaml`,
//! `kustomization.yml` or `Kustomization`) is rendered by the real `kustomize build` (with
//! `helm` for `helmCharts:`), sandboxed. Folders without one are plain YAML, rendered by
//! [`crate::manifest`] (not here).
//!
//! Owns: detection ([`detect`]), the kustomization closure and its refusals (remote, absolute,
//! escaping or missing references, with file and line, before anything runs), the inputs a
//! build read ([`Inputs`], to skip the renderer when none changed), the export of the closure
//! into a private scratch directory, running the binaries there ([`sandbox`]), and turning
//! their output into [`DesiredState`] whose sources name repository files.
//!
//! May call: a [`Tree`] (git reads, blocking: run on the blocking pool), [`crate::manifest`]
//! for parsing output, and the renderer processes. Never the cluster or the network.

mod binaries;
mod closure;
mod error;
mod export;
mod inputs;
mod kustomization;
mod output;
mod paths;
pub mod sandbox;
mod setup;
pub mod sops;
mod tree;

use std::ffi::OsString;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use binaries::{Binary, RendererPaths, Renderers, find_on_path};
pub use closure::{KUSTOMIZATION_NAMES, detect, kustomization_file};
pub use error::{HostError, RenderFailure};
pub use inputs::Inputs;
pub use output::ORIGIN_ANNOTATION;
pub use sandbox::{Isolation, Scratch};
pub use setup::Rendering;
pub use tree::{LocalTree, Tree, TreeError};

use crate::manifest::{self, DesiredState, RenderError};
use closure::{Closure, ClosureError};
use sandbox::{Job, RunError};

/// How much a render may take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time for one `kustomize build` (helm included).
    pub timeout: Duration,
    /// Bytes of the files exported for one build.
    pub max_export_bytes: u64,
    /// The host's content limits: each exported file within `file_bytes`, the rendered YAML
    /// within `environment_bytes` and `objects`.
    pub content: manifest::Limits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(60),
            max_export_bytes: 256 << 20,
            content: manifest::Limits::default(),
        }
    }
}

/// A successful render.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub state: DesiredState,
    /// The folders the build read, to skip the next render when none changed.
    pub inputs: Inputs,
    /// The environment's kustomization file.
    pub kustomization: String,
    /// e.g. `kustomize v5.8.3 + helm v4.3.1`.
    pub renderer: String,
    /// What the renderer printed on stderr while succeeding (deprecation notices, ...),
    /// scratch paths replaced by repository paths.
    pub warnings: Vec<String>,
    /// Wall-clock time of the whole render.
    pub elapsed: Duration,
}

static RUNS: AtomicU64 = AtomicU64::new(0);

/// How many times this process started `kustomize build` (for metrics and tests).
pub fn runs() -> u64 {
    RUNS.load(Ordering::Relaxed)
}

/// Lines of renderer messages kept in an error.
const MESSAGE_LINES: usize = 20;
/// Characters of renderer messages kept in an error.
const MESSAGE_CHARS: usize = 2000;

/// Renders the Kustomize environment in folder `dir` of `tree` (see the module docs).
pub async fn render_kustomize(
    tree: Arc<dyn Tree>,
    dir: &str,
    renderers: &Renderers,
    limits: &Limits,
) -> Result<Rendered, RenderFailure> {
    let started = Instant::now();
    let Some(dir) = paths::resolve("", dir) else {
        return Err(RenderFailure::Invalid(vec![RenderError {
            path: dir.to_string(),
            line: None,
            object: None,
            message: "environment folder leaves the repository".into(),
        }]));
    };
    let scratch = Scratch::new(renderers.scratch_dir.as_deref())?;
    let (closure, scratch) = prepare(tree, dir.clone(), scratch, limits).await?;
    let missing = |binary| HostError::MissingBinary {
        binary,
        file: closure.top.clone(),
    };
    let kustomize = renderers
        .kustomize
        .as_ref()
        .ok_or_else(|| missing("kustomize"))?;
    let helm = match closure.uses_helm {
        true => Some(renderers.helm.as_ref().ok_or_else(|| missing("helm"))?),
        false => None,
    };
    let repo = scratch.repo();
    let job = Job {
        program: &kustomize.path,
        args: build_args(&dir, helm),
        cwd: &repo,
        scratch: &scratch,
        isolation: &renderers.isolation,
        timeout: limits.timeout,
        max_stdout: usize::try_from(limits.content.environment_bytes).unwrap_or(usize::MAX),
    };
    RUNS.fetch_add(1, Ordering::Relaxed);
    let (stdout, stderr) = match sandbox::run(job).await {
        Ok(out) => out,
        Err(e) => {
            let failure = run_failure(e, &closure.top, &scratch);
            // Removing the export is file I/O: not on the async runtime.
            tokio::task::spawn_blocking(move || drop(scratch));
            return Err(failure);
        }
    };
    let warnings = clean_message(&String::from_utf8_lossy(&stderr), &scratch)
        .lines()
        .map(str::to_string)
        .collect();
    let state = finish(stdout, &closure, &dir, scratch, limits.content).await?;
    let elapsed = started.elapsed();
    tracing::debug!(dir = %dir, objects = state.len(), elapsed_ms = elapsed.as_millis() as u64, "rendered with kustomize");
    Ok(Rendered {
        state,
        inputs: closure.inputs,
        kustomization: closure.top,
        renderer: renderers.describe(closure.uses_helm),
        warnings,
        elapsed,
    })
}

/// Computes the closure and exports it, on the blocking pool.
async fn prepare(
    tree: Arc<dyn Tree>,
    dir: String,
    scratch: Scratch,
    limits: &Limits,
) -> Result<(Closure, Scratch), RenderFailure> {
    let (max_bytes, max_file_bytes) = (limits.max_export_bytes, limits.content.file_bytes);
    let task = tokio::task::spawn_blocking(move || {
        let closure = closure::collect(tree.as_ref(), &dir).map_err(|e| match e {
            ClosureError::Invalid(errors) => RenderFailure::Invalid(errors),
            ClosureError::Tree(e) => RenderFailure::Tree(e),
        })?;
        export::write(
            tree.as_ref(),
            &closure,
            &scratch.repo(),
            export::Caps {
                total: max_bytes,
                file: max_file_bytes,
            },
        )?;
        Ok((closure, scratch))
    });
    task.await.map_err(task_failed)?
}

/// Parses the output and removes the scratch directory, on the blocking pool.
async fn finish(
    stdout: Vec<u8>,
    closure: &Closure,
    dir: &str,
    scratch: Scratch,
    limits: manifest::Limits,
) -> Result<DesiredState, RenderFailure> {
    let (top, dir) = (closure.top.clone(), dir.to_string());
    let task = tokio::task::spawn_blocking(move || {
        let build = output::Build {
            dir: &dir,
            top: &top,
            root: &scratch.repo(),
            limits,
        };
        let state = output::into_state(&stdout, &build).map_err(RenderFailure::Invalid);
        if let Err(e) = scratch.close() {
            tracing::warn!(error = %e, "cannot remove renderer scratch directory");
        }
        state
    });
    task.await.map_err(task_failed)?
}

fn task_failed(e: tokio::task::JoinError) -> RenderFailure {
    RenderFailure::Host(HostError::Task {
        message: e.to_string(),
    })
}

fn build_args(dir: &str, helm: Option<&Binary>) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["build", "--load-restrictor", "LoadRestrictionsRootOnly"]
        .into_iter()
        .map(Into::into)
        .collect();
    if let Some(helm) = helm {
        args.push("--enable-helm".into());
        args.push("--helm-command".into());
        args.push(helm.path.clone().into());
    }
    args.push(if dir.is_empty() {
        ".".into()
    } else {
        dir.into()
    });
    args
}

/// A failed run as a content error naming the kustomization, or a host error.
fn run_failure(e: RunError, top: &str, scratch: &Scratch) -> RenderFailure {
    let (what, stderr) = match e {
        RunError::Host(e) => return RenderFailure::Host(e),
        RunError::Timeout { after, stderr } => (
            format!(
                "kustomize build did not finish within {} and was stopped",
                humantime::format_duration(after)
            ),
            stderr,
        ),
        RunError::OutputTooLarge { limit, stderr } => (
            format!("kustomize build wrote more than {limit} bytes and was stopped"),
            stderr,
        ),
        RunError::Failed { status, stderr } => {
            (format!("kustomize build failed ({status})"), stderr)
        }
    };
    let detail = clean_message(&String::from_utf8_lossy(&stderr), scratch);
    let message = if detail.is_empty() {
        what
    } else {
        format!("{what}: {detail}")
    };
    RenderFailure::Invalid(vec![RenderError {
        path: top.to_string(),
        line: None,
        object: None,
        message,
    }])
}

/// A renderer's stderr for a person: scratch paths replaced by repository paths, blank lines
/// dropped, trimmed and capped.
pub(crate) fn clean_message(stderr: &str, scratch: &Scratch) -> String {
    let repo = scratch.repo().to_string_lossy().into_owned();
    let base = scratch.path().to_string_lossy().into_owned();
    let text = stderr
        .replace(&format!("{repo}/"), "")
        .replace(&repo, ".")
        .replace(&base, "(sandbox)");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let mut out = lines[..lines.len().min(MESSAGE_LINES)].join("\n");
    if lines.len() > MESSAGE_LINES {
        out.push_str(&format!("\n(… {} more lines)", lines.len() - MESSAGE_LINES));
    }
    if out.chars().count() > MESSAGE_CHARS {
        out = out.chars().take(MESSAGE_CHARS).collect::<String>() + " (…)";
    }
    out
}

#[cfg(test)]
mod tests;
