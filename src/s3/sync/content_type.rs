//! The Content-Type of a synced object, from its file extension. Pure; calls nothing.

use std::collections::BTreeMap;

/// Built-in Content-Type table by extension.
const CONTENT_TYPES: &[(&str, &str)] = &[
    (".html", "text/html; charset=utf-8"),
    (".htm", "text/html; charset=utf-8"),
    (".css", "text/css; charset=utf-8"),
    (".js", "text/javascript; charset=utf-8"),
    (".mjs", "text/javascript; charset=utf-8"),
    (".json", "application/json"),
    (".map", "application/json"),
    (".webmanifest", "application/manifest+json"),
    (".xml", "application/xml"),
    (".txt", "text/plain; charset=utf-8"),
    (".md", "text/markdown; charset=utf-8"),
    (".csv", "text/csv; charset=utf-8"),
    (".svg", "image/svg+xml"),
    (".png", "image/png"),
    (".jpg", "image/jpeg"),
    (".jpeg", "image/jpeg"),
    (".gif", "image/gif"),
    (".webp", "image/webp"),
    (".avif", "image/avif"),
    (".ico", "image/vnd.microsoft.icon"),
    (".pdf", "application/pdf"),
    (".woff", "font/woff"),
    (".woff2", "font/woff2"),
    (".ttf", "font/ttf"),
    (".otf", "font/otf"),
    (".wasm", "application/wasm"),
    (".mp4", "video/mp4"),
    (".webm", "video/webm"),
    (".mp3", "audio/mpeg"),
    (".zip", "application/zip"),
    (".gz", "application/gzip"),
    (".tar", "application/x-tar"),
    (".yaml", "application/yaml"),
    (".yml", "application/yaml"),
];

/// Content-Type of a key: the bucket's overrides, then the built-in table, else
/// `application/octet-stream`.
pub fn content_type(path: &str, overrides: &BTreeMap<String, String>) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    let Some(dot) = name.rfind('.') else {
        return "application/octet-stream".into();
    };
    let ext = name[dot..].to_ascii_lowercase();
    if let Some(t) = overrides.get(&ext) {
        return t.clone();
    }
    CONTENT_TYPES.iter().find(|(e, _)| *e == ext).map_or_else(
        || "application/octet-stream".into(),
        |(_, t)| (*t).to_string(),
    )
}
