//! Parsing one multi-document YAML file into manifests within a budget: the file is scanned
//! once as a stream (no tree built) against its documents and nodes, then each document is
//! parsed with what is left, so a file of many small alias bombs runs out of budget too.

use serde_json::Value;

use super::limits::{self, Allowance, FileBudget, Limits};
use super::{Body, Manifest, ObjectKey, RenderError, Source, split_documents, yaml};

/// Parses one file within the default limits of a single file.
pub fn parse_file(path: &str, bytes: &[u8]) -> Result<Vec<Manifest>, Vec<RenderError>> {
    parse_file_within(path, bytes, &mut Allowance::new(Limits::default()), false)
}

/// Parses one file, spending from the environment's `allowance`. `whole_environment` is for
/// renderer output, which holds the whole environment in one stream.
pub fn parse_file_within(
    path: &str,
    bytes: &[u8],
    allowance: &mut Allowance,
    whole_environment: bool,
) -> Result<Vec<Manifest>, Vec<RenderError>> {
    let error = |line: Option<u64>, message: String| {
        vec![RenderError {
            path: path.to_string(),
            line,
            object: None,
            message,
        }]
    };
    let max_bytes = match whole_environment {
        true => allowance.limits.environment_bytes,
        false => allowance.limits.file_bytes,
    };
    if bytes.len() as u64 > max_bytes {
        return Err(error(
            None,
            format!(
                "{} bytes, more than the limit of {max_bytes} bytes",
                bytes.len()
            ),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| error(None, format!("not UTF-8: {e}")))?;
    let mut budget = allowance.for_file(whole_environment);
    if prescan(text, &budget).map_err(|m| error(None, m))? {
        budget = budget.with_aliases();
    }
    let (manifests, nodes) = parse_documents(path, text, &budget)?;
    allowance
        .spend(path, manifests.len(), nodes)
        .map_err(|e| vec![e])?;
    Ok(manifests)
}

/// Streams the whole file through the parser's budget without building anything; returns
/// whether it uses aliases. A syntax error is left to the document parse, which names its line
/// (and is charged as if the file used aliases).
fn prescan(text: &str, budget: &FileBudget) -> Result<bool, String> {
    use serde_saphyr::budget::{EnforcingPolicy, check_yaml_budget};
    match check_yaml_budget(text, budget.parser_budget(), EnforcingPolicy::AllContent) {
        Ok(report) => match report.breached {
            Some(breach) => Err(limits::describe_breach(&breach, budget)),
            None => Ok(report.aliases > 0),
        },
        Err(_) => Ok(true),
    }
}

/// Parses each document with the nodes left; returns the manifests and the nodes used.
fn parse_documents(
    path: &str,
    text: &str,
    budget: &FileBudget,
) -> Result<(Vec<Manifest>, usize), Vec<RenderError>> {
    let mut manifests = Vec::new();
    let mut errors = Vec::new();
    let mut left = budget.nodes;
    for (index, doc) in split_documents(text).into_iter().enumerate() {
        if index >= budget.documents {
            errors.push(RenderError {
                path: path.to_string(),
                line: Some(doc.first_line),
                object: None,
                message: budget.too_many_documents(),
            });
            break;
        }
        let source = Source {
            path: path.to_string(),
            line: doc.first_line,
            document: index,
        };
        let parsed =
            serde_saphyr::from_str_with_options::<Value>(&doc.text, budget.document_options(left));
        let value = match parsed {
            Ok(value) => value,
            Err(e) => {
                let (line, message) = yaml::describe_error(&e, doc.line_offset);
                let budget_spent = yaml::is_budget_error(&e);
                let message = match budget_spent {
                    true => format!(
                        "{message} (a file may hold {} YAML nodes, aliases counted as what they expand to)",
                        budget.nodes
                    ),
                    false => message,
                };
                errors.push(RenderError {
                    path: path.to_string(),
                    line: Some(line),
                    object: None,
                    message,
                });
                if budget_spent {
                    break;
                }
                continue;
            }
        };
        let nodes = limits::count_nodes(&value);
        if nodes > left {
            errors.push(RenderError {
                path: path.to_string(),
                line: Some(doc.first_line),
                object: None,
                message: format!(
                    "the file expands to more than the limit of {} YAML nodes (aliases included)",
                    budget.nodes
                ),
            });
            break;
        }
        left -= nodes;
        match manifest_from_value(value, source) {
            Ok(Some(manifest)) => manifests.push(manifest),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok((manifests, budget.nodes - left))
    } else {
        Err(errors)
    }
}

/// A manifest from a document that was changed after parsing (a decrypted SOPS object): its
/// identity is read again.
pub fn reparse(value: Value, source: Source) -> Result<Manifest, RenderError> {
    manifest_from_value(value, source.clone())?
        .ok_or_else(|| RenderError::at(&source, None, "document is empty"))
}

fn manifest_from_value(value: Value, source: Source) -> Result<Option<Manifest>, RenderError> {
    let map = match &value {
        Value::Null => return Ok(None),
        Value::Object(map) => map,
        _ => return Err(RenderError::at(&source, None, "document is not a mapping")),
    };
    let name = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str);
    let kind = map.get("kind").and_then(Value::as_str);
    let describe = || match (kind, name) {
        (Some(k), Some(n)) => Some(format!("{k} {n}")),
        (Some(k), None) => Some(k.to_string()),
        (None, Some(n)) => Some(format!("<no kind> {n}")),
        (None, None) => None,
    };
    let api_version = match map.get("apiVersion").and_then(Value::as_str) {
        Some(v) if !v.is_empty() => v.to_string(),
        _ => return Err(RenderError::at(&source, describe(), "missing apiVersion")),
    };
    let kind = match kind {
        Some(k) if !k.is_empty() => k.to_string(),
        _ => return Err(RenderError::at(&source, describe(), "missing kind")),
    };
    let name = match name {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => {
            return Err(RenderError::at(
                &source,
                describe(),
                "missing metadata.name",
            ));
        }
    };
    if map
        .get("metadata")
        .and_then(|m| m.get("generateName"))
        .is_some()
    {
        return Err(RenderError::at(
            &source,
            describe(),
            "metadata.generateName cannot be reconciled (every apply would create a new object); use metadata.name",
        ));
    }
    let namespace = match map.get("metadata").and_then(|m| m.get("namespace")) {
        None | Some(Value::Null) => None,
        Some(Value::String(ns)) if !ns.is_empty() => Some(ns.clone()),
        Some(_) => {
            return Err(RenderError::at(
                &source,
                describe(),
                "metadata.namespace must be a non-empty string",
            ));
        }
    };
    let group = match api_version.rsplit_once('/') {
        Some((group, _)) => group.to_string(),
        None => String::new(),
    };
    let key = ObjectKey {
        group,
        kind,
        namespace,
        name,
    };
    Ok(Some(Manifest {
        key,
        api_version,
        source,
        body: Body::new(&value),
    }))
}
