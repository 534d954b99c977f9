//! Repository-relative path arithmetic for kustomization references, and what counts as remote.

/// `reference` resolved against the repository-relative folder `dir`, with `.` and `..`
/// folded; `None` when it climbs above the repository root.
pub(crate) fn resolve(dir: &str, reference: &str) -> Option<String> {
    let mut parts: Vec<&str> = dir.split('/').filter(|s| !s.is_empty()).collect();
    for part in reference.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

/// Whether repository-relative `path` is `dir` or lies below it (`""` = the root).
pub(crate) fn within(dir: &str, path: &str) -> bool {
    dir.is_empty()
        || path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The folder part of a repository-relative file path (`""` for a file at the root).
pub(crate) fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(dir, _)| dir).unwrap_or("")
}

/// `dir/name`, where `dir` may be empty.
pub(crate) fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Why `reference` names something outside the repository, if it does: kustomize would fetch
/// it (git clone, HTTP or OCI pull).
pub(crate) fn remote_reason(reference: &str) -> Option<&'static str> {
    let lower = reference.trim().to_ascii_lowercase();
    if lower.starts_with("oci://") {
        Some("an OCI reference")
    } else if lower.contains("://") {
        Some("a URL")
    } else if lower.starts_with("git::") || lower.starts_with("git@") {
        Some("a git reference")
    } else if ["github.com/", "gitlab.com/", "bitbucket.org/"]
        .iter()
        .any(|host| lower.starts_with(host))
    {
        Some("a git repository reference")
    } else if lower.contains("?ref=") || lower.contains("?version=") || lower.contains("?timeout=")
    {
        Some("a remote reference with a query")
    } else if scp_like(&lower) {
        Some("an scp-like git address")
    } else {
        None
    }
}

/// `user@host:path`.
fn scp_like(s: &str) -> bool {
    let Some((user_host, _)) = s.split_once(':') else {
        return false;
    };
    match user_host.split_once('@') {
        Some((user, host)) => !user.is_empty() && !host.is_empty() && !user_host.contains('/'),
        None => false,
    }
}

/// A missing reference whose first segment looks like a host name (`example.com/x`): kustomize
/// would try it as a remote git base.
pub(crate) fn looks_like_host(reference: &str) -> bool {
    match reference.split_once('/') {
        Some((first, rest)) => {
            first.contains('.')
                && first != "."
                && first != ".."
                && !rest.is_empty()
                && !first.starts_with('.')
        }
        None => false,
    }
}

/// Whether a path contains glob characters (their matches are not checked in advance).
pub(crate) fn is_glob(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_and_refuses_escapes() {
        assert_eq!(
            resolve("overlays/dev", "../../base").as_deref(),
            Some("base")
        );
        assert_eq!(resolve("a", "./b/./c.yaml").as_deref(), Some("a/b/c.yaml"));
        assert_eq!(resolve("", "."), Some(String::new()));
        assert_eq!(resolve("overlays/dev", "../../../etc"), None);
        assert_eq!(resolve("", ".."), None);
    }

    #[test]
    fn within_and_parent() {
        assert!(within("", "x"));
        assert!(within("a/b", "a/b/c"));
        assert!(within("a/b", "a/b"));
        assert!(!within("a/b", "a/bc"));
        assert_eq!(parent("a/b/c.yaml"), "a/b");
        assert_eq!(parent("c.yaml"), "");
    }

    #[test]
    fn remote_forms() {
        for r in [
            "https://github.com/org/repo//base?ref=v1",
            "git::https://example.com/repo.git",
            "github.com/org/repo/base",
            "git@github.com:org/repo.git",
            "oci://registry.example.com/charts/web",
            "ssh://git@example.com/repo",
            "base?ref=main",
            "deploy@host:repo",
        ] {
            assert!(remote_reason(r).is_some(), "{r}");
        }
        for l in [
            "../../base",
            "deployment.yaml",
            "a:b.yaml",
            "dir/with@at/x.yaml",
        ] {
            assert_eq!(remote_reason(l), None, "{l}");
        }
        assert!(looks_like_host("example.com/org/base"));
        assert!(!looks_like_host("../base"));
        assert!(!looks_like_host("deploy.yaml"));
        assert!(!looks_like_host(".hidden/x"));
    }
}
