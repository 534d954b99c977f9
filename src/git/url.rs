//! Repository URLs: parsing (https, ssh, scp-like, git, file and local paths) and the sanitised
//! form shown in logs and errors, which never holds a password. Pure; calls nothing.

use std::fmt;
use std::path::PathBuf;

/// A parsed repository URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RemoteKind {
    /// A path on this machine (plain path or file:// URL).
    Local(PathBuf),
    /// A network URL.
    Network {
        scheme: String,
        host: String,
        port: Option<u16>,
    },
}

#[derive(Clone, PartialEq, Eq)]
pub(crate) struct RemoteUrl {
    pub kind: RemoteKind,
    /// The URL handed to libgit2 and shown in errors/logs: never contains a password.
    pub sanitized: String,
    pub username: Option<String>,
    /// Password embedded in the original URL (only used as a fallback credential).
    pub password: Option<String>,
}

impl fmt::Debug for RemoteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteUrl")
            .field("kind", &self.kind)
            .field("sanitized", &self.sanitized)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl RemoteUrl {
    /// A path on this machine, shown as `sanitized`.
    fn local(path: &str, sanitized: &str) -> RemoteUrl {
        RemoteUrl {
            kind: RemoteKind::Local(PathBuf::from(path)),
            sanitized: sanitized.to_string(),
            username: None,
            password: None,
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self.kind, RemoteKind::Local(_))
    }

    #[cfg(test)]
    pub fn is_ssh(&self) -> bool {
        matches!(&self.kind, RemoteKind::Network { scheme, .. } if scheme == "ssh")
    }
}

/// Removes a password from a URL (keeps the user name). Best effort for unparseable input.
pub fn redact_url(url: &str) -> String {
    match parse_url(url) {
        Ok(u) => u.sanitized,
        Err(_) => "<unparseable url>".to_string(),
    }
}

/// Parses `https://`, `http://`, `ssh://`, `git://`, scp-like `user@host:path`, `file://` and
/// local paths. The error message never contains the input (it may hold a password).
pub(crate) fn parse_url(url: &str) -> Result<RemoteUrl, String> {
    let url = url.trim();
    if url.is_empty() {
        return Err("empty URL".into());
    }
    if let Some(rest) = url.strip_prefix("file://") {
        return Ok(RemoteUrl::local(rest, url));
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        return parse_network(scheme, rest);
    }
    Ok(parse_scp(url).unwrap_or_else(|| RemoteUrl::local(url, url)))
}

/// `scheme://[user[:password]@]host[:port]/path` (`rest` is what follows `://`).
fn parse_network(scheme: &str, rest: &str) -> Result<RemoteUrl, String> {
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "https" | "http" | "ssh" | "git") {
        return Err(format!("unsupported scheme {scheme:?}"));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let (username, password) = match userinfo.map(|ui| ui.split_once(':').ok_or(ui)) {
        Some(Ok((u, p))) => (Some(percent_decode(u)), Some(percent_decode(p))),
        Some(Err(u)) => (Some(percent_decode(u)), None),
        None => (None, None),
    };
    let (host, port) = split_host_port(hostport)?;
    if host.is_empty() {
        return Err("URL has no host".into());
    }
    let mut sanitized = format!("{scheme}://");
    if let Some(ui) = userinfo {
        let user = ui.split_once(':').map_or(ui, |(u, _)| u);
        if !user.is_empty() {
            sanitized.push_str(user);
            sanitized.push('@');
        }
    }
    sanitized.push_str(hostport);
    sanitized.push_str(path);
    Ok(RemoteUrl {
        kind: RemoteKind::Network { scheme, host, port },
        sanitized,
        username: username.filter(|u| !u.is_empty()),
        password: password.filter(|p| !p.is_empty()),
    })
}

/// Whether `url` is git's scp-like SSH form `[user@]host:path`: no `://`, and a ':' before any
/// '/' (so `./a:b` and `/srv/a:b` stay paths, as in git).
pub fn is_scp_like(url: &str) -> bool {
    let url = url.trim();
    if url.contains("://") {
        return false;
    }
    match url.find(':') {
        Some(i) => {
            let before = &url[..i];
            !before.is_empty() && !before.contains('/')
        }
        None => false,
    }
}

/// scp-like `[user@]host:path` (see [`is_scp_like`]); `None` for a path.
fn parse_scp(url: &str) -> Option<RemoteUrl> {
    if !is_scp_like(url) {
        return None;
    }
    let before = &url[..url.find(':')?];
    let (username, host) = match before.rfind('@') {
        Some(i) => (Some(before[..i].to_string()), before[i + 1..].to_string()),
        None => (None, before.to_string()),
    };
    Some(RemoteUrl {
        kind: RemoteKind::Network {
            scheme: "ssh".into(),
            host,
            port: None,
        },
        sanitized: url.to_string(),
        username,
        password: None,
    })
}

fn split_host_port(hostport: &str) -> Result<(String, Option<u16>), String> {
    if let Some(rest) = hostport.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return Err("unterminated IPv6 address".into());
        };
        let host = rest[..end].to_string();
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) if !p.is_empty() => Some(p.parse::<u16>().map_err(|_| "invalid port")?),
            _ => None,
        };
        return Ok((host, port));
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() => {
            let port = p.parse::<u16>().map_err(|_| "invalid port".to_string())?;
            Ok((h.to_string(), Some(port)))
        }
        Some((h, _)) => Ok((h.to_string(), None)),
        None => Ok((hostport.to_string(), None)),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_redact_urls() {
        let u = parse_url("https://bob:s%40cret@git.example:8443/r.git").unwrap();
        assert_eq!(u.sanitized, "https://bob@git.example:8443/r.git");
        assert_eq!(u.username.as_deref(), Some("bob"));
        assert_eq!(u.password.as_deref(), Some("s@cret"));
        assert!(!format!("{u:?}").contains("cret"));
        assert_eq!(
            u.kind,
            RemoteKind::Network {
                scheme: "https".into(),
                host: "git.example".into(),
                port: Some(8443)
            }
        );
        let s = parse_url("ssh://git@[::1]:2222/srv/r.git").unwrap();
        assert!(s.is_ssh());
        assert_eq!(
            s.kind,
            RemoteKind::Network {
                scheme: "ssh".into(),
                host: "::1".into(),
                port: Some(2222)
            }
        );
        let scp = parse_url("git@github.com:org/repo.git").unwrap();
        assert!(scp.is_ssh());
        assert_eq!(scp.username.as_deref(), Some("git"));
        assert!(parse_url("/srv/git/repo").unwrap().is_local());
        assert!(parse_url("file:///srv/git/repo").unwrap().is_local());
        assert!(parse_url("./repo").unwrap().is_local());
        let err = parse_url("ftp://u:topsecret@x/y").unwrap_err();
        assert!(!err.contains("topsecret"));
        assert_eq!(redact_url("https://u:pw@h/p"), "https://u@h/p");
    }

    #[test]
    fn scp_like_urls_are_ssh_and_paths_with_colons_are_not() {
        for url in ["git@github.com:org/repo.git", "host:repo.git", "me@[::1]:r"] {
            assert!(is_scp_like(url), "{url}");
        }
        let u = parse_url("git@git.example:org/repo.git").unwrap();
        assert!(u.is_ssh());
        assert_eq!(
            u.kind,
            RemoteKind::Network {
                scheme: "ssh".into(),
                host: "git.example".into(),
                port: None
            }
        );
        for path in ["/srv/a:b.git", "./a:b", "repo.git", "ssh://h/r", ":r"] {
            assert!(!is_scp_like(path), "{path}");
        }
        assert!(parse_url("/srv/a:b.git").unwrap().is_local());
    }
}
