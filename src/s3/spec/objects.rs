//! `spec.objects`: which repository folder is synced to which key prefix, and how (deletes,
//! headers, size limit). The sync itself is `s3::sync`. Pure; may call `crate::schema`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::schema::Checker;

/// Default and largest size of one synced file.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// Part size for multipart uploads; files bigger than this are uploaded in parts.
pub const PART_SIZE: u64 = 8 * 1024 * 1024;
/// S3 allows at most 10,000 parts, so with fixed 8 MiB parts this is the largest file we can upload.
pub const MAX_MULTIPART_SIZE: u64 = PART_SIZE * 10_000;

/// `spec.objects`: a repository folder synced to a key prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectSync {
    /// Repository-relative folder, without trailing slash (`""` = the repository root).
    pub source: String,
    /// Key prefix; empty or ending in `/`.
    pub prefix: String,
    pub delete: bool,
    pub cache_control: Option<String>,
    /// Extension (lowercase, with the dot) → Content-Type, overriding the built-in table.
    pub content_types: BTreeMap<String, String>,
    pub max_file_size: u64,
}

const FIELDS: &[&str] = &[
    "source",
    "prefix",
    "delete",
    "cacheControl",
    "contentTypes",
    "maxFileSize",
];

/// Parses `spec.objects` (the checker is at that path).
pub(super) fn parse_objects(c: &mut Checker, v: &Value) -> Option<ObjectSync> {
    let map = c.mapping(v, FIELDS)?;
    let source = c.required(map, "source", " (a repository folder)", |c, v| {
        let s = c.string(v)?;
        normalise_source(&s)
            .map_err(|e| c.problem(format!("{s:?} {e}")))
            .ok()
    });
    let prefix = c
        .field(map, "prefix", |c, v| {
            let p = c.string(v)?;
            normalise_prefix(&p)
                .map_err(|e| c.problem(format!("{p:?} {e}")))
                .ok()
        })
        .unwrap_or_default();
    let delete = c.field(map, "delete", Checker::boolean).unwrap_or(false);
    let cache_control = c.field(map, "cacheControl", cache_control);
    let content_types = c
        .field(map, "contentTypes", content_types)
        .unwrap_or_default();
    let max_file_size = c
        .field(map, "maxFileSize", max_file_size)
        .unwrap_or(DEFAULT_MAX_FILE_SIZE);
    Some(ObjectSync {
        source: source?,
        prefix,
        delete,
        cache_control,
        content_types,
        max_file_size,
    })
}

fn cache_control(c: &mut Checker, v: &Value) -> Option<String> {
    let cc = c.string(v)?;
    if cc.chars().any(char::is_control) {
        c.problem("must not contain control characters");
    }
    Some(cc)
}

/// Extension → media type; extensions are lowercased and given their leading dot.
fn content_types(c: &mut Checker, v: &Value) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (ext, ty) in c.string_map(v)? {
        let key = if ext.starts_with('.') {
            ext.to_ascii_lowercase()
        } else {
            format!(".{}", ext.to_ascii_lowercase())
        };
        if key.len() < 2 || key[1..].contains(['.', '/', '\\']) {
            c.problem_at(&ext, "must be a file extension like .webmanifest");
        }
        let is_media_type = ty.contains('/')
            && !ty
                .chars()
                .any(|ch| ch.is_control() || ch.is_whitespace() && ch != ' ');
        if !is_media_type {
            c.problem_at(&ext, format!("{ty:?} is not a media type"));
        }
        out.insert(key, ty);
    }
    Some(out)
}

fn max_file_size(c: &mut Checker, v: &Value) -> Option<u64> {
    match parse_size(v) {
        Ok(0) => c.problem("must be more than 0"),
        Ok(n) if n > MAX_MULTIPART_SIZE => c.problem(format!(
            "{n} bytes is more than the largest uploadable file ({MAX_MULTIPART_SIZE} bytes)"
        )),
        Ok(n) => return Some(n),
        Err(e) => c.problem(e),
    }
    None
}

/// A repository folder: relative, inside the repository, `/`-separated. `""` or `.` is the root.
pub(super) fn normalise_source(s: &str) -> Result<String, String> {
    if s.contains('\\') {
        return Err("must use / as separator, not backslashes".into());
    }
    if s.starts_with('/') {
        return Err("must be relative to the repository root".into());
    }
    let trimmed = s.trim_end_matches('/');
    if trimmed.is_empty() || trimmed == "." {
        return Ok(String::new());
    }
    for seg in trimmed.split('/') {
        match seg {
            "" => return Err("has an empty path segment".into()),
            "." | ".." => {
                return Err("must stay inside the repository (no . or .. segments)".into());
            }
            _ if seg.chars().any(char::is_control) => {
                return Err("contains control characters".into());
            }
            _ => {}
        }
    }
    Ok(trimmed.to_string())
}

/// A key prefix: empty, or segments ending with `/` (a missing trailing `/` is added).
pub(super) fn normalise_prefix(p: &str) -> Result<String, String> {
    if p.is_empty() {
        return Ok(String::new());
    }
    if p.starts_with('/') {
        return Err("must not start with /".into());
    }
    let p = if p.ends_with('/') {
        p.to_string()
    } else {
        format!("{p}/")
    };
    check_key_segments(&p[..p.len() - 1])?;
    if p.len() > 512 {
        return Err("is longer than 512 bytes".into());
    }
    Ok(p)
}

/// Checks a relative key path: no empty, `.` or `..` segments, no backslashes, no control characters.
pub fn check_key_segments(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("is empty".into());
    }
    if path.starts_with('/') {
        return Err("is absolute".into());
    }
    if path.contains('\\') {
        return Err("contains a backslash".into());
    }
    if path.chars().any(char::is_control) {
        return Err("contains control characters".into());
    }
    for seg in path.split('/') {
        match seg {
            "" => return Err("has an empty path segment".into()),
            "." | ".." => return Err("has a . or .. segment (would escape the prefix)".into()),
            _ => {}
        }
    }
    Ok(())
}

/// `5GiB`, `100 MB`, `1024` → bytes.
pub fn parse_size(v: &Value) -> Result<u64, String> {
    if let Some(n) = v.as_u64() {
        return Ok(n);
    }
    let Some(s) = v.as_str() else {
        return Err("must be a size like 5GiB or a number of bytes".into());
    };
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = (s[..split].trim(), s[split..].trim());
    let num: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 5GiB or 100MB"))?;
    let mult: u64 = match unit {
        "" | "B" => 1,
        "K" | "KB" => 1000,
        "Ki" | "KiB" => 1 << 10,
        "M" | "MB" => 1_000_000,
        "Mi" | "MiB" => 1 << 20,
        "G" | "GB" => 1_000_000_000,
        "Gi" | "GiB" => 1 << 30,
        "T" | "TB" => 1_000_000_000_000,
        "Ti" | "TiB" => 1 << 40,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use B, KB, KiB, MB, MiB, GB, GiB, TB, TiB)"
            ));
        }
    };
    let bytes = num * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(bytes as u64)
}
