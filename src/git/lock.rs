//! The notes lock: serialises notes fetch-merge-write-push and mirror re-creation between
//! every `Mirror` on the same directory, in this process and in others (the `gitopsd retry`
//! and `gitopsd rollback` CLIs open the daemon's mirror while the daemon runs).
//!
//! Two layers: the in-process mutex keeps threads of one `Mirror` from polling the file, and
//! an advisory lock (`flock` through `std::fs::File::try_lock`) on `<mirror dir>.notes.lock`
//! covers other `Mirror`s and processes. The file lives next to the mirror, not inside it,
//! so re-creating the mirror does not delete it while it is held. The kernel drops the lock
//! when the holder exits, even after a crash.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use super::{GitError, Mirror, NETWORK_DEADLINE};

/// Longer than a holder can legitimately keep the lock (a notes fetch and a push, each
/// bounded by [`NETWORK_DEADLINE`], plus the push retries), so a timeout means a stuck holder.
const LOCK_WAIT: Duration = Duration::from_secs(2 * NETWORK_DEADLINE.as_secs() + 60);
const POLL_FIRST: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(100);
/// After this long, waiting is worth a log line (someone else is pushing notes).
const WAIT_LOG_AFTER: Duration = Duration::from_secs(5);

/// Held while notes are fetched, merged, written and pushed, or the mirror is re-created.
/// Dropping it closes the lock file, which releases the advisory lock.
pub(crate) struct NotesGuard<'a> {
    _file: File,
    _local: MutexGuard<'a, ()>,
}

/// `<mirror dir>.notes.lock`, beside the mirror directory (in the state dir).
pub fn notes_lock_path(mirror_dir: &Path) -> PathBuf {
    let mut name = mirror_dir.as_os_str().to_owned();
    name.push(".notes.lock");
    PathBuf::from(name)
}

impl Mirror {
    /// The path of the lock file that serialises notes updates of this mirror.
    pub fn notes_lock_path(&self) -> PathBuf {
        notes_lock_path(&self.dir)
    }

    /// Takes the notes lock, waiting at most [`LOCK_WAIT`]. Blocks: call it from blocking
    /// code only (async callers run `Mirror` methods in `spawn_blocking`).
    pub(crate) fn notes_guard(&self) -> Result<NotesGuard<'_>, GitError> {
        let local = self.notes_lock.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.notes_lock_path();
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(GitError::io("creating the state directory", parent))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(GitError::io("opening the notes lock", &path))?;
        let started = Instant::now();
        let mut poll = POLL_FIRST;
        let mut logged = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => {
                    return Err(GitError::io("taking the notes lock", &path)(e));
                }
            }
            let waited = started.elapsed();
            if waited >= LOCK_WAIT {
                return Err(GitError::NotesLocked {
                    path,
                    waited_secs: waited.as_secs(),
                });
            }
            if !logged && waited >= WAIT_LOG_AFTER {
                tracing::info!(path = %path.display(), "waiting for the notes lock held by another process");
                logged = true;
            }
            std::thread::sleep(poll);
            poll = (poll * 2).min(POLL_MAX);
        }
        Ok(NotesGuard {
            _file: file,
            _local: local,
        })
    }
}
