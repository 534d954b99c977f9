//! Preview of a Kustomize environment: base and head rendered through the daemon's own
//! sandboxed path ([`render::render_kustomize`]), then compared object by object with the shared
//! planner, each object named by its source file. A head whose build reads nothing that changed
//! is not rendered again. Calls `render` (through [`render::LocalTree`] over a second handle on
//! the same repository), `manifest` (a plain side of a conversion), and `preview::compute` /
//! `preview::buckets` for the comparison.

use std::sync::{Arc, Mutex};

use super::PreviewError;
use super::buckets::bucket_changes;
use super::compute::{EnvInput, Sides, finish, object_changes, render_error};
use super::report::EnvReport;
use crate::git::{LocalRepo, Oid};
use crate::manifest::{self, DesiredState, EntryKind, FileEntry, RenderError};
use crate::render::{self, LocalTree, Rendered, Rendering, Tree};

/// One side of the preview: the objects, or why the revision does not render.
enum Side {
    Kustomize(Box<Rendered>),
    Plain(DesiredState),
    Invalid(Vec<RenderError>),
}

/// Previews `env` when either revision renders it with kustomize; `None` for plain folders
/// on both sides (the file-by-file preview handles those).
pub(crate) fn preview_rendered(
    repo: &LocalRepo,
    base: Oid,
    head: Oid,
    env: &EnvInput,
    rendering: &Rendering,
) -> Result<Option<EnvReport>, PreviewError> {
    let dir = env.path.trim_matches('/').to_string();
    let shared = Arc::new(Mutex::new(LocalRepo::open(repo.path())?));
    let tree = |rev| -> Arc<dyn Tree> {
        Arc::new(LocalTree {
            repo: Arc::clone(&shared),
            rev,
        })
    };
    let base_k = render::detect(tree(base).as_ref(), &dir).map_err(render::RenderFailure::from)?;
    let head_k = render::detect(tree(head).as_ref(), &dir).map_err(render::RenderFailure::from)?;
    if base_k.is_none() && head_k.is_none() {
        return Ok(None);
    }
    let base_side = side(repo, tree(base), base, &dir, base_k.is_some(), rendering)?;
    let head_side = match &base_side {
        // Nothing the base build read changed: the head renders the same.
        Side::Kustomize(r) if head_k.is_some() && !inputs_changed(r, tree(head))? => {
            Side::Kustomize(r.clone())
        }
        _ => side(repo, tree(head), head, &dir, head_k.is_some(), rendering)?,
    };
    Ok(Some(report(
        repo,
        (base, head),
        env,
        dir,
        base_side,
        head_side,
    )?))
}

fn inputs_changed(base: &Rendered, head: Arc<dyn Tree>) -> Result<bool, PreviewError> {
    Ok(base
        .inputs
        .changed(head.as_ref())
        .map_err(render::RenderFailure::from)?)
}

/// Renders one revision: with kustomize (on the runtime, from this blocking thread) or as plain
/// YAML files.
fn side(
    repo: &LocalRepo,
    tree: Arc<dyn Tree>,
    rev: Oid,
    dir: &str,
    kustomize: bool,
    rendering: &Rendering,
) -> Result<Side, PreviewError> {
    if !kustomize {
        return plain(repo, rev, dir);
    }
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|e| PreviewError::Task(format!("rendering {dir}: {e}")))?;
    let rendered = handle.block_on(render::render_kustomize(
        tree,
        dir,
        &rendering.renderers,
        &rendering.limits,
    ));
    match rendered {
        Ok(r) => Ok(Side::Kustomize(Box::new(r))),
        Err(render::RenderFailure::Invalid(errors)) => Ok(Side::Invalid(errors)),
        Err(e) => Err(e.into()),
    }
}

/// A plain folder read whole (one side of a conversion to or from Kustomize).
fn plain(repo: &LocalRepo, rev: Oid, dir: &str) -> Result<Side, PreviewError> {
    let files = repo.list_files(rev, dir)?;
    let mut entries = Vec::with_capacity(files.len());
    for f in files {
        let kind = EntryKind::from(f.kind);
        let bytes = if kind == EntryKind::File && manifest::is_manifest_path(&f.path) {
            super::manifest_blob(repo, &f.path, f.oid)?
        } else {
            Vec::new()
        };
        entries.push(FileEntry {
            path: f.path,
            kind,
            bytes,
        });
    }
    Ok(match manifest::render(dir, entries) {
        Ok(state) => Side::Plain(state),
        Err(errors) => Side::Invalid(errors),
    })
}

fn objects(side: &Side) -> Option<&DesiredState> {
    match side {
        Side::Kustomize(r) => Some(&r.state),
        Side::Plain(state) => Some(state),
        Side::Invalid(_) => None,
    }
}

/// Compares the two sides; a head that does not render reports its errors and no changes.
fn report(
    repo: &LocalRepo,
    revs: (Oid, Oid),
    env: &EnvInput,
    dir: String,
    base: Side,
    head: Side,
) -> Result<EnvReport, PreviewError> {
    let mut report = EnvReport {
        name: env.name.clone(),
        path: dir,
        renderer: match &head {
            Side::Kustomize(r) => Some(r.renderer.clone()),
            _ => None,
        },
        ..EnvReport::default()
    };
    let Some(head_state) = objects(&head) else {
        if let Side::Invalid(errors) = head {
            report
                .errors
                .extend(errors.into_iter().map(|e| render_error(e, false)));
        }
        finish(&mut report);
        return Ok(report);
    };
    let mut sides = Sides::default();
    if let Some(base_state) = objects(&base) {
        sides.base = base_state
            .objects
            .iter()
            .map(|(k, m)| (k.clone(), m.as_ref().clone()))
            .collect();
    }
    sides.head = head_state
        .objects
        .iter()
        .map(|(k, m)| (k.clone(), m.as_ref().clone()))
        .collect();
    report.changes = object_changes(&sides, env);
    let (buckets, invalid) = bucket_changes(repo, revs, &sides, &[], &mut report.errors)?;
    report.buckets = buckets;
    finish(&mut report);
    report.summary.unchanged = sides
        .head
        .len()
        .saturating_sub(invalid + report.summary.create + report.summary.update);
    Ok(report)
}
