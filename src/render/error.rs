//! Errors of the renderers: the commit's content is invalid (reject it), the tree could not be
//! read, or the host could not run the renderer (both: retry later, not the commit's fault).

use std::path::PathBuf;

use super::tree::TreeError;
use crate::manifest::RenderError;

/// Why a render produced no desired state.
#[derive(Debug, thiserror::Error)]
pub enum RenderFailure {
    /// The revision's content cannot be rendered (refused reference, YAML error, renderer
    /// error, timeout, output limits): a `rejected` note.
    #[error("{}", summarize(.0))]
    Invalid(Vec<RenderError>),
    /// Reading the revision failed.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// The host could not run the renderer.
    #[error(transparent)]
    Host(#[from] HostError),
}

impl RenderFailure {
    /// True when the commit's content is at fault (reject it); false when retrying may succeed.
    pub fn is_content(&self) -> bool {
        matches!(self, RenderFailure::Invalid(_))
    }
}

fn summarize(errors: &[RenderError]) -> String {
    match errors {
        [] => "render failed".to_string(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first} (and {} more errors)", rest.len()),
    }
}

/// The host's side of rendering failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A repository needs a renderer binary that is neither configured nor on PATH.
    #[error(
        "{binary} is needed to render {file}, but none is configured (renderers.{binary} in the host config) or found on PATH"
    )]
    MissingBinary { binary: &'static str, file: String },
    /// A configured or found binary does not run or does not report a version.
    #[error("renderer binary {path} is unusable: {message}")]
    Binary { path: PathBuf, message: String },
    /// The private scratch directory could not be set up or written.
    #[error("renderer scratch directory {path}: {source}")]
    Scratch {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The renderer process could not be started or read.
    #[error("running {program}: {source}")]
    Process {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A blocking task of the renderer died.
    #[error("renderer task failed: {message}")]
    Task { message: String },
}

impl HostError {
    pub(crate) fn scratch(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> HostError {
        let path = path.to_path_buf();
        move |source| HostError::Scratch { path, source }
    }
}
