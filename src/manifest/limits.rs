//! How much content one environment may bring: bytes per file and per environment, documents
//! per file, objects per environment, and YAML nodes (after alias expansion) per file and per
//! environment. Pushers are less trusted than the operator, so these are checked before content
//! is read where sizes are known (git blob headers), and the YAML parser's budget is spent per
//! file and per environment, never reset per document.

use super::RenderError;

/// YAML nodes (mappings, sequences, scalars, after alias expansion) one file may hold. Keeps
/// one file's parsed form to a few hundred MiB at worst.
pub const MAX_FILE_NODES: usize = 1_000_000;
/// YAML nodes (after alias expansion) of a file that uses aliases: expansion is where a small
/// file becomes a big tree, and files with anchors are small hand-written ones in practice.
pub const MAX_ALIASED_FILE_NODES: usize = 100_000;
/// YAML nodes one environment may hold (kustomize output counts as one file of this budget).
pub const MAX_ENVIRONMENT_NODES: usize = 4_000_000;
/// Mapping and sequence nesting (Kubernetes objects, CRD schemas included, stay far below).
const MAX_DEPTH: usize = 64;

/// The operator's content limits (host config `limits:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub file_bytes: u64,
    pub environment_bytes: u64,
    pub documents: usize,
    pub objects: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            file_bytes: 4 << 20,
            environment_bytes: 64 << 20,
            documents: 10_000,
            objects: 50_000,
        }
    }
}

fn error(path: &str, line: Option<u64>, message: String) -> RenderError {
    RenderError {
        path: path.to_string(),
        line,
        object: None,
        message,
    }
}

/// Checks file sizes (known from git before reading) against the byte limits. `files` are
/// (path, size) of the files that would be read; every file over the limit is named.
pub fn check_sizes<'a>(
    files: impl IntoIterator<Item = (&'a str, u64)>,
    limits: &Limits,
    environment: &str,
) -> Result<(), Vec<RenderError>> {
    let mut tally = SizeTally::default();
    let mut errors: Vec<RenderError> = files
        .into_iter()
        .filter_map(|(path, size)| tally.add(path, size, limits))
        .collect();
    if errors.is_empty()
        && let Some(e) = tally.over(limits, environment)
    {
        errors.push(e);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Bytes of an environment's manifests, counted file by file.
#[derive(Clone, Copy, Debug, Default)]
pub struct SizeTally {
    total: u64,
}

impl SizeTally {
    /// Counts one file; an error when it alone is over the per-file limit.
    pub fn add(&mut self, path: &str, size: u64, limits: &Limits) -> Option<RenderError> {
        self.total = self.total.saturating_add(size);
        (size > limits.file_bytes).then(|| {
            error(
                path,
                None,
                format!(
                    "file is {size} bytes, more than the limit of {} bytes per file",
                    limits.file_bytes
                ),
            )
        })
    }

    /// An error naming the environment folder when the files so far are over its limit.
    pub fn over(&self, limits: &Limits, environment: &str) -> Option<RenderError> {
        let folder = if environment.is_empty() {
            "."
        } else {
            environment
        };
        (self.total > limits.environment_bytes).then(|| {
            error(
                folder,
                None,
                format!(
                    "the environment's manifests are {} bytes, more than the limit of {} bytes per environment",
                    self.total, limits.environment_bytes
                ),
            )
        })
    }
}

/// What is left of an environment's budget while its files are parsed one by one.
#[derive(Clone, Debug)]
pub struct Allowance {
    pub limits: Limits,
    /// Objects still allowed in the environment.
    objects: usize,
    /// YAML nodes still allowed in the environment.
    nodes: usize,
    /// An environment-wide limit was reached: reading more files would only cost more.
    exhausted: bool,
}

impl Allowance {
    pub fn new(limits: Limits) -> Allowance {
        Allowance {
            limits,
            objects: limits.objects,
            nodes: MAX_ENVIRONMENT_NODES,
            exhausted: false,
        }
    }

    pub fn exhausted(&self) -> bool {
        self.exhausted
    }

    /// One file's share: documents and nodes for a file (kustomize output is one file that may
    /// hold the whole environment).
    pub(super) fn for_file(&self, whole_environment: bool) -> FileBudget {
        let (documents, nodes) = if whole_environment {
            (self.limits.objects, self.nodes)
        } else {
            (self.limits.documents, MAX_FILE_NODES.min(self.nodes))
        };
        FileBudget {
            documents,
            nodes,
            whole_environment,
        }
    }

    /// Spends what a parsed file used; an error once the environment has too many objects.
    pub(super) fn spend(
        &mut self,
        path: &str,
        objects: usize,
        nodes: usize,
    ) -> Result<(), RenderError> {
        self.nodes = self.nodes.saturating_sub(nodes);
        if objects > self.objects {
            self.exhausted = true;
            return Err(error(
                path,
                None,
                format!(
                    "the environment has more than the limit of {} objects (reached in this file)",
                    self.limits.objects
                ),
            ));
        }
        self.objects -= objects;
        Ok(())
    }
}

/// Documents and nodes one file may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FileBudget {
    pub documents: usize,
    pub nodes: usize,
    /// Renderer output: the documents are the environment's objects.
    pub whole_environment: bool,
}

impl FileBudget {
    /// The budget of a file that uses aliases (see [`MAX_ALIASED_FILE_NODES`]).
    pub fn with_aliases(self) -> FileBudget {
        FileBudget {
            nodes: self.nodes.min(MAX_ALIASED_FILE_NODES),
            ..self
        }
    }

    /// The message for too many documents.
    pub fn too_many_documents(&self) -> String {
        match self.whole_environment {
            true => format!(
                "the rendered output has more than the limit of {} objects",
                self.documents
            ),
            false => format!(
                "more than the limit of {} YAML documents in one file",
                self.documents
            ),
        }
    }

    /// The parser's budget for the whole file (the streaming pre-scan).
    pub fn parser_budget(&self) -> serde_saphyr::Budget {
        self.budget_of(self.nodes)
    }

    /// A budget of `nodes` (replayed aliases count as what they expand to).
    fn budget_of(&self, nodes: usize) -> serde_saphyr::Budget {
        let mut b = serde_saphyr::Budget::default();
        b.max_documents = self.documents;
        b.max_nodes = nodes;
        // Every node opens with one event, containers close with another; documents have two.
        b.max_events = nodes
            .saturating_mul(2)
            .saturating_add(self.documents.saturating_mul(2));
        b.max_depth = MAX_DEPTH;
        b
    }

    /// Options for parsing one document when `nodes` are left for the file: alias replay is
    /// capped by what is left, so a file of many small alias bombs runs out of budget.
    pub fn document_options(&self, nodes_left: usize) -> serde_saphyr::Options {
        serde_saphyr::options! {
            budget: Some(self.budget_of(nodes_left)),
            alias_limits: serde_saphyr::alias_limits! {
                max_total_replayed_events: nodes_left,
            },
        }
    }
}

/// Message for a breached parser budget, for a person.
pub(super) fn describe_breach(
    breach: &serde_saphyr::budget::BudgetBreach,
    budget: &FileBudget,
) -> String {
    use serde_saphyr::budget::BudgetBreach as B;
    match breach {
        B::Documents { .. } => budget.too_many_documents(),
        B::Nodes { .. } | B::Events { .. } => format!(
            "more than the limit of {} YAML nodes in one file",
            budget.nodes
        ),
        B::Depth { .. } => format!("YAML nested deeper than {MAX_DEPTH} levels"),
        B::Aliases { .. } | B::AliasAnchorRatio { .. } | B::Anchors { .. } => {
            "too many YAML aliases or anchors (alias bomb?)".to_string()
        }
        B::RecordedAnchorEvents { .. } | B::RecordedAnchorBytes { .. } => {
            "YAML anchors retain too much content (alias bomb?)".to_string()
        }
        B::ScalarBytes { .. } | B::InputBytes { .. } => "YAML scalars too large".to_string(),
        _ => "YAML exceeds the parser's budget".to_string(),
    }
}

/// Nodes of a parsed value (mappings, sequences, scalars; keys of mappings count too).
pub(super) fn count_nodes(value: &serde_json::Value) -> usize {
    let mut count = 0usize;
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        count += 1;
        match v {
            serde_json::Value::Array(items) => stack.extend(items.iter()),
            serde_json::Value::Object(map) => {
                count += map.len();
                stack.extend(map.values());
            }
            _ => {}
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_files_are_named_before_reading() {
        let limits = Limits {
            file_bytes: 10,
            environment_bytes: 25,
            ..Limits::default()
        };
        let errors = check_sizes([("e/a.yaml", 5), ("e/b.yaml", 11)], &limits, "e").unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "e/b.yaml");
        assert!(errors[0].message.contains("11 bytes"), "{}", errors[0]);
        let errors = check_sizes(
            [("e/a.yaml", 9), ("e/b.yaml", 9), ("e/c.yaml", 9)],
            &limits,
            "e",
        )
        .unwrap_err();
        assert_eq!(errors[0].path, "e");
        assert!(errors[0].message.contains("27 bytes"), "{}", errors[0]);
        assert!(check_sizes([("e/a.yaml", 10), ("e/b.yaml", 10)], &limits, "e").is_ok());
    }

    #[test]
    fn objects_are_counted_across_files() {
        let mut a = Allowance::new(Limits {
            objects: 3,
            ..Limits::default()
        });
        assert!(a.spend("e/a.yaml", 2, 10).is_ok());
        let err = a.spend("e/b.yaml", 2, 10).unwrap_err();
        assert_eq!(err.path, "e/b.yaml");
        assert!(err.message.contains("limit of 3 objects"), "{err}");
    }

    #[test]
    fn kustomize_output_gets_the_environment_share() {
        let a = Allowance::new(Limits::default());
        assert_eq!(a.for_file(false).documents, 10_000);
        assert_eq!(a.for_file(false).nodes, MAX_FILE_NODES);
        assert_eq!(a.for_file(true).documents, 50_000);
        assert_eq!(a.for_file(true).nodes, MAX_ENVIRONMENT_NODES);
    }

    #[test]
    fn nodes_count_keys_and_values() {
        let v = serde_json::json!({"a": [1, 2], "b": {"c": null}});
        // root, a, [..], 1, 2, b, {..}, c, null
        assert_eq!(count_nodes(&v), 9);
    }
}
