//! The kustomization closure of an environment: every kustomization folder a build reads,
//! starting at the environment's folder and following `resources`, `components` and the other
//! path fields, plus the files to export for the build. Refuses, before anything runs,
//! references that are remote, absolute, leave the repository, or do not exist.

use std::collections::{BTreeMap, VecDeque};

use super::inputs::Inputs;
use super::kustomization::{self, RefKind, Reference};
use super::paths;
use super::tree::{Tree, TreeError};
use crate::git::{FileKind, TreeFile};
use crate::manifest::RenderError;

/// File names that make a folder a kustomization, in kustomize's order of preference.
pub const KUSTOMIZATION_NAMES: [&str; 3] =
    ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Upper bound on kustomization folders in one closure (a guard against pathological trees).
const MAX_FOLDERS: usize = 512;

/// The kustomization file directly inside `dir`, from a listing of `dir`.
pub fn kustomization_file<'a>(files: &'a [TreeFile], dir: &str) -> Option<&'a TreeFile> {
    KUSTOMIZATION_NAMES.iter().find_map(|name| {
        let path = paths::join(dir, name);
        files
            .iter()
            .find(|f| f.path == path && matches!(f.kind, FileKind::Blob | FileKind::Executable))
    })
}

/// The repository-relative path of the kustomization file of environment folder `dir`, or
/// `None` when the folder renders as plain YAML.
pub fn detect(tree: &dyn Tree, dir: &str) -> Result<Option<String>, TreeError> {
    let Some(dir) = paths::resolve("", dir) else {
        return Ok(None);
    };
    let files = tree.list_files(&dir)?;
    Ok(kustomization_file(&files, &dir).map(|f| f.path.clone()))
}

/// What a build of one environment reads.
#[derive(Clone, Debug)]
pub(crate) struct Closure {
    /// The environment's kustomization file.
    pub top: String,
    /// Every file to export, by path.
    pub files: BTreeMap<String, TreeFile>,
    pub inputs: Inputs,
    pub uses_helm: bool,
}

/// Why a folder is visited: the entry that referred to it.
struct Referrer {
    file: String,
    line: u64,
    field: &'static str,
    raw: String,
}

struct Walk<'a> {
    tree: &'a dyn Tree,
    queue: VecDeque<(String, Option<Referrer>)>,
    folders: BTreeMap<String, crate::git::Oid>,
    files: BTreeMap<String, TreeFile>,
    errors: Vec<RenderError>,
    top: Option<String>,
    uses_helm: bool,
}

/// Failure to compute a closure.
#[derive(Debug)]
pub(crate) enum ClosureError {
    Invalid(Vec<RenderError>),
    Tree(TreeError),
}

impl From<TreeError> for ClosureError {
    fn from(e: TreeError) -> Self {
        ClosureError::Tree(e)
    }
}

/// Walks the closure of environment folder `dir` at `tree`'s revision.
pub(crate) fn collect(tree: &dyn Tree, dir: &str) -> Result<Closure, ClosureError> {
    let Some(dir) = paths::resolve("", dir) else {
        let message = "environment folder leaves the repository".to_string();
        return Err(ClosureError::Invalid(vec![file_error(dir, None, message)]));
    };
    let mut walk = Walk {
        tree,
        queue: VecDeque::from([(dir, None)]),
        folders: BTreeMap::new(),
        files: BTreeMap::new(),
        errors: Vec::new(),
        top: None,
        uses_helm: false,
    };
    while let Some((folder, referrer)) = walk.queue.pop_front() {
        if walk.folders.contains_key(&folder) {
            continue;
        }
        if walk.folders.len() >= MAX_FOLDERS {
            walk.error_at(
                referrer.as_ref(),
                &folder,
                format!("more than {MAX_FOLDERS} kustomization folders in one build"),
            );
            break;
        }
        walk.visit(&folder, referrer)?;
    }
    match (walk.errors.is_empty(), walk.top) {
        (true, Some(top)) => Ok(Closure {
            top,
            files: walk.files,
            inputs: Inputs::new(walk.folders),
            uses_helm: walk.uses_helm,
        }),
        _ => Err(ClosureError::Invalid(walk.errors)),
    }
}

impl Walk<'_> {
    /// Reads one kustomization folder and queues the folders it refers to.
    fn visit(&mut self, dir: &str, referrer: Option<Referrer>) -> Result<(), TreeError> {
        let Some(id) = self.tree.tree_id(dir)? else {
            let message = format!("folder {dir:?} does not exist");
            self.error_at(referrer.as_ref(), dir, message);
            return Ok(());
        };
        self.folders.insert(dir.to_string(), id);
        let listing = self.tree.list_files(dir)?;
        self.add_files(&listing);
        let Some(file) = kustomization_file(&listing, dir).cloned() else {
            let message = format!(
                "folder {dir:?} has no kustomization file ({})",
                KUSTOMIZATION_NAMES.join(", ")
            );
            self.error_at(referrer.as_ref(), dir, message);
            return Ok(());
        };
        if self.top.is_none() {
            self.top = Some(file.path.clone());
        }
        let bytes = self
            .tree
            .read_blobs(&[file.oid])?
            .into_iter()
            .next()
            .unwrap_or_default();
        let Ok(text) = String::from_utf8(bytes) else {
            self.errors
                .push(file_error(&file.path, None, "not UTF-8".into()));
            return Ok(());
        };
        match kustomization::parse(&file.path, &text) {
            Ok(k) => {
                self.uses_helm |= k.helm_charts > 0;
                for r in &k.refs {
                    self.follow(dir, &file.path, &listing, r)?;
                }
            }
            Err(mut errors) => self.errors.append(&mut errors),
        }
        Ok(())
    }

    /// Checks one reference of kustomization `file` in `dir` and queues folders.
    fn follow(
        &mut self,
        dir: &str,
        file: &str,
        listing: &[TreeFile],
        r: &Reference,
    ) -> Result<(), TreeError> {
        let has_file = |p: &str| listing.iter().any(|f| f.path == p);
        let err = |message: String| file_error(file, Some(r.line), message);
        match r.kind {
            RefKind::Resource | RefKind::Component => {
                if paths::within(dir, &r.path) && has_file(&r.path) {
                    return Ok(());
                }
                if self.tree.tree_id(&r.path)?.is_some() {
                    self.queue
                        .push_back((r.path.clone(), Some(referrer(file, r))));
                    return Ok(());
                }
                self.errors.push(err(missing(r, dir)));
            }
            RefKind::File => {
                if !paths::within(dir, &r.path) {
                    self.errors.push(err(format!(
                        "{}: {:?} is outside the kustomization's folder {dir:?}; kustomize loads files only from inside it",
                        r.field, r.raw
                    )));
                } else if !paths::is_glob(&r.path) && !has_file(&r.path) {
                    self.errors.push(err(format!(
                        "{}: {:?} not found ({} does not exist at this revision)",
                        r.field, r.raw, r.path
                    )));
                }
            }
            RefKind::Chart => self.chart(dir, file, listing, r)?,
        }
        Ok(())
    }

    /// A local chart: a folder of the repository (kustomize hands a `chartHome` outside the
    /// kustomization's folder straight to helm, which reads it from the export; charts are
    /// never pulled). A chart outside the folder is exported and recorded as an input.
    fn chart(
        &mut self,
        dir: &str,
        file: &str,
        listing: &[TreeFile],
        r: &Reference,
    ) -> Result<(), TreeError> {
        let prefix = format!("{}/", r.path);
        let found = if paths::within(dir, &r.path) {
            listing.iter().any(|f| f.path.starts_with(&prefix))
        } else if let Some(id) = self.tree.tree_id(&r.path)? {
            let chart = self.tree.list_files(&r.path)?;
            self.add_files(&chart);
            self.folders.insert(r.path.clone(), id);
            !chart.is_empty()
        } else {
            false
        };
        if !found {
            let message = format!(
                "helmCharts: local chart folder {} not found; charts are not pulled, put the chart in the repository",
                r.path
            );
            self.errors.push(file_error(file, Some(r.line), message));
        }
        Ok(())
    }

    /// Records files for export; symlinks and submodules are refused (a symlink could point
    /// outside the export).
    fn add_files(&mut self, listing: &[TreeFile]) {
        for f in listing {
            match f.kind {
                FileKind::Blob | FileKind::Executable => {
                    self.files.insert(f.path.clone(), f.clone());
                }
                FileKind::Symlink => self.errors.push(file_error(
                    &f.path,
                    None,
                    "symlinks are not allowed in a kustomization's folders (they could point outside the repository)".into(),
                )),
                FileKind::Submodule => self.errors.push(file_error(
                    &f.path,
                    None,
                    "submodules are not allowed in a kustomization's folders".into(),
                )),
            }
        }
    }

    fn error_at(&mut self, referrer: Option<&Referrer>, dir: &str, message: String) {
        let e = match referrer {
            Some(r) => file_error(
                &r.file,
                Some(r.line),
                format!("{}: {:?}: {message}", r.field, r.raw),
            ),
            None => file_error(dir, None, message),
        };
        self.errors.push(e);
    }
}

fn referrer(file: &str, r: &Reference) -> Referrer {
    Referrer {
        file: file.to_string(),
        line: r.line,
        field: r.field,
        raw: r.raw.clone(),
    }
}

/// The message for a resource or component that is neither a file in the folder nor a folder.
fn missing(r: &Reference, dir: &str) -> String {
    if paths::looks_like_host(&r.raw) {
        format!(
            "{}: {:?} is not in the repository and looks like a remote base; remote bases are refused",
            r.field, r.raw
        )
    } else if paths::within(dir, &r.path) {
        format!(
            "{}: {:?} not found ({} does not exist at this revision)",
            r.field, r.raw, r.path
        )
    } else {
        format!(
            "{}: {:?} is not a folder of the repository (a file outside the kustomization's folder {dir:?} cannot be loaded)",
            r.field, r.raw
        )
    }
}

fn file_error(path: &str, line: Option<u64>, message: String) -> RenderError {
    RenderError {
        path: path.to_string(),
        line,
        object: None,
        message,
    }
}
