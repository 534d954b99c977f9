//! Change notification for repositories on local disk: watches a local remote's refs (through
//! `notify`) so the daemon fetches at once. Calls nothing else in the crate.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::GitError;
use super::url::{RemoteKind, parse_url, redact_url};

const DEBOUNCE: Duration = Duration::from_millis(100);

/// The git directory of a local repository path (`path/.git` for a work tree).
fn git_dir(path: &Path) -> PathBuf {
    let dotgit = path.join(".git");
    if dotgit.is_dir() {
        dotgit
    } else {
        path.to_path_buf()
    }
}

/// True for paths whose change means a ref may have moved.
fn is_ref_path(git_dir: &Path, p: &Path) -> bool {
    let Ok(rel) = p.strip_prefix(git_dir) else {
        return false;
    };
    let name = rel.to_string_lossy();
    name.starts_with("refs") || name == "packed-refs" || name == "HEAD"
}

/// For a local-path repository: watches its refs (`refs/`, `packed-refs`, `HEAD`) and sends
/// `()` on `tx` (debounced by ~100 ms) when they change. Returns `None` for network URLs.
/// Dropping the watcher stops notifications (and the debounce thread).
pub fn watch_local_refs(
    url: &str,
    tx: tokio::sync::mpsc::Sender<()>,
) -> Result<Option<notify::RecommendedWatcher>, GitError> {
    let parsed = parse_url(url).map_err(|message| GitError::InvalidUrl {
        url: redact_url(url),
        message,
    })?;
    let RemoteKind::Local(path) = parsed.kind else {
        return Ok(None);
    };
    let path = std::path::absolute(&path).map_err(GitError::io("resolving", &path))?;
    let git_dir = git_dir(&path);
    let git_dir = git_dir.canonicalize().unwrap_or(git_dir);

    let (raw_tx, raw_rx) = mpsc::channel::<()>();
    let filter_dir = git_dir.clone();
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) => {
                if ev.kind.is_access() {
                    return;
                }
                if ev.paths.iter().any(|p| is_ref_path(&filter_dir, p)) {
                    let _ = raw_tx.send(());
                }
            }
            Err(e) => tracing::warn!(error = %e, "ref watcher error"),
        })
        .map_err(|source| GitError::Watch {
            path: git_dir.clone(),
            source,
        })?;
    watcher
        .watch(&git_dir, RecursiveMode::NonRecursive)
        .map_err(|source| GitError::Watch {
            path: git_dir.clone(),
            source,
        })?;
    let refs = git_dir.join("refs");
    watcher
        .watch(&refs, RecursiveMode::Recursive)
        .map_err(|source| GitError::Watch { path: refs, source })?;

    std::thread::Builder::new()
        .name("gitopsd-ref-watch".into())
        .spawn(move || {
            // Exits when the watcher (and with it raw_tx) is dropped, or the receiver is gone.
            while raw_rx.recv().is_ok() {
                loop {
                    match raw_rx.recv_timeout(DEBOUNCE) {
                        Ok(()) => continue,
                        Err(mpsc::RecvTimeoutError::Timeout) => break,
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
                match tx.try_send(()) {
                    Ok(()) | Err(tokio::sync::mpsc::error::TrySendError::Full(())) => {}
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(())) => return,
                }
            }
        })
        .map_err(GitError::io("spawning ref watcher thread", &git_dir))?;
    tracing::debug!(path = %git_dir.display(), "watching local repository refs");
    Ok(Some(watcher))
}
