//! Path-tracking validation, shared by the `Bucket` spec (`s3::spec`, `s3::sections`) and the host
//! config (`config`).
//!
//! Owns [`Checker`], which walks a document and collects every [`Problem`] instead of stopping at
//! the first: unknown fields, wrong types and bad values, each with its key path
//! (`spec.lifecycle[0].id`, `environments[1].name`) and, when a [`Lines`] index of the YAML text
//! is given, its line. May call `serde_json` (the document model) and `serde_saphyr` (the line
//! index); nothing else of gitopsd.

mod lines;

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

pub use lines::Lines;

/// One problem found in a document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `spec.lifecycle[0].id` or `environments[1].kubernetes.kubeconfig`; empty
    /// for a problem of the whole text (a syntax error).
    pub key: String,
    /// 1-based line in the text, when known.
    pub line: Option<u64>,
    pub message: String,
}

impl Problem {
    /// `key: message` (or the message alone without a key): the form without the line, for
    /// callers that report the position themselves.
    pub fn keyed_message(&self) -> String {
        if self.key.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.key, self.message)
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        f.write_str(&self.keyed_message())
    }
}

/// Collects problems while walking a document; the current key path is tracked by [`Checker::at`]
/// and [`Checker::at_index`], so readers report at the right place without building paths.
#[derive(Debug, Default)]
pub struct Checker {
    path: String,
    problems: Vec<Problem>,
    lines: Option<Lines>,
}

impl Checker {
    pub fn new() -> Checker {
        Checker::default()
    }

    /// A checker that gives each problem the line of its key (or of the nearest enclosing one).
    pub fn with_lines(lines: Lines) -> Checker {
        Checker {
            lines: Some(lines),
            ..Checker::default()
        }
    }

    /// The current key path (empty at the root).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Runs `f` with the path extended by `.key`.
    pub fn at<T>(&mut self, key: &str, f: impl FnOnce(&mut Checker) -> T) -> T {
        let len = self.path.len();
        if !self.path.is_empty() {
            self.path.push('.');
        }
        self.path.push_str(key);
        let out = f(self);
        self.path.truncate(len);
        out
    }

    /// Runs `f` with the path extended by `[index]`.
    pub fn at_index<T>(&mut self, index: usize, f: impl FnOnce(&mut Checker) -> T) -> T {
        let len = self.path.len();
        self.path.push_str(&format!("[{index}]"));
        let out = f(self);
        self.path.truncate(len);
        out
    }

    /// A problem at the current path.
    pub fn problem(&mut self, message: impl fmt::Display) {
        let line = self.lines.as_ref().and_then(|l| l.line_of(&self.path));
        self.problems.push(Problem {
            key: self.path.clone(),
            line,
            message: message.to_string(),
        });
    }

    /// A problem at the current path extended by `.key`.
    pub fn problem_at(&mut self, key: &str, message: impl fmt::Display) {
        self.at(key, |c| c.problem(message));
    }

    /// Whether no problem was found so far.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn into_problems(self) -> Vec<Problem> {
        self.problems
    }

    // -----------------------------------------------------------------------------------------
    // Readers of a JSON document model: each reports a wrong type at the current path.

    /// The value as a mapping; keys not in `allowed` are reported as unknown fields.
    pub fn mapping<'a>(
        &mut self,
        v: &'a Value,
        allowed: &[&str],
    ) -> Option<&'a Map<String, Value>> {
        let Value::Object(map) = v else {
            self.problem("must be a mapping");
            return None;
        };
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                self.problem_at(
                    key,
                    format!("unknown field (expected one of: {})", allowed.join(", ")),
                );
            }
        }
        Some(map)
    }

    pub fn string(&mut self, v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            _ => {
                self.problem("must be a string");
                None
            }
        }
    }

    pub fn boolean(&mut self, v: &Value) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            _ => {
                self.problem("must be true or false");
                None
            }
        }
    }

    /// An integer in `min..=max` (which must fit an `i32`).
    pub fn int(&mut self, v: &Value, min: i64, max: i64) -> Option<i32> {
        match v.as_i64() {
            Some(n) if (min..=max).contains(&n) => i32::try_from(n).ok(),
            Some(n) => {
                self.problem(format!("{n} is out of range {min}..={max}"));
                None
            }
            None => {
                self.problem("must be an integer");
                None
            }
        }
    }

    /// A list of strings; `None` when it is not one or an item is not a string.
    pub fn string_list(&mut self, v: &Value) -> Option<Vec<String>> {
        let Value::Array(items) = v else {
            self.problem("must be a list of strings");
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.at_index(i, |c| c.string(item)) {
                Some(s) => out.push(s),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// A mapping of strings (numbers and booleans are taken as their text).
    pub fn string_map(&mut self, v: &Value) -> Option<BTreeMap<String, String>> {
        let Value::Object(map) = v else {
            self.problem("must be a mapping of strings");
            return None;
        };
        let mut out = BTreeMap::new();
        for (k, v) in map {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => {
                    self.problem_at(k, "must be a string");
                    continue;
                }
            };
            out.insert(k.clone(), text);
        }
        Some(out)
    }

    /// One of the named string values, mapped to `T`; else `must be A or B, not <value>`.
    pub fn one_of<T: Copy>(&mut self, v: &Value, choices: &[(&str, T)]) -> Option<T> {
        if let Some(s) = v.as_str()
            && let Some((_, t)) = choices.iter().find(|(name, _)| *name == s)
        {
            return Some(*t);
        }
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        self.problem(format!("must be {}, not {v}", or_list(&names)));
        None
    }

    // -----------------------------------------------------------------------------------------
    // Fields of a mapping.

    /// Reads `map[key]` with `read` at the path `.key`; `None` when absent or invalid.
    pub fn field<T>(
        &mut self,
        map: &Map<String, Value>,
        key: &str,
        read: impl FnOnce(&mut Checker, &Value) -> Option<T>,
    ) -> Option<T> {
        let v = map.get(key)?;
        self.at(key, |c| read(c, v))
    }

    /// Like [`Checker::field`], but a missing key is a problem: `missing` plus `hint` (e.g.
    /// ` (a repository folder)`).
    pub fn required<T>(
        &mut self,
        map: &Map<String, Value>,
        key: &str,
        hint: &str,
        read: impl FnOnce(&mut Checker, &Value) -> Option<T>,
    ) -> Option<T> {
        if !map.contains_key(key) {
            self.problem_at(key, format!("missing{hint}"));
            return None;
        }
        self.field(map, key, read)
    }
}

/// `A`, `A or B`, `A, B or C`.
pub fn or_list(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests;
