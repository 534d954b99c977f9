//! Re-creating a broken mirror without losing notes that were committed locally but never
//! pushed (an outcome written while the remote was down, a `rolling_back: true` intent).
//!
//! Before the old directory is deleted, the pending notes are read from whatever is still
//! readable: the repository if libgit2 can open it, otherwise its object store alone with
//! the ref tips parsed from the ref files. In the fresh mirror they are written onto the local
//! notes ref (on top of a commit holding their base, kept on `SALVAGE_BASE_REF`), so reads
//! see them at once and the first notes fetch replays them onto the remote tip with the
//! usual 3-way merge (see `notes::rebuild_local_notes`).

use std::path::Path;

use git2::{Odb, Repository, RepositoryInitOptions, Signature};

use super::{GitError, Mirror, Oid, REMOTE_NOTES_REF, SALVAGE_BASE_REF};

/// A pending note read from the broken mirror.
struct Salvaged {
    commit: Oid,
    /// The note at the last state shared with the remote (None: it did not exist there).
    base: Option<String>,
    ours: String,
}

impl Mirror {
    /// [`Self::recreate_locked`] under the notes lock, unless the mirror is healthy once we
    /// hold the lock (another process re-created it while we waited).
    pub(crate) fn recreate(&self) -> Result<Repository, GitError> {
        let _guard = self.notes_guard()?;
        if let Ok(repo) = self.open_checked() {
            self.configure(&repo)?;
            return Ok(repo);
        }
        self.recreate_locked()
    }

    /// Deletes whatever is at `dir` and initialises a fresh bare mirror, carrying over the
    /// unpushed notes. The caller holds the notes lock.
    pub(crate) fn recreate_locked(&self) -> Result<Repository, GitError> {
        let mut salvaged = Vec::new();
        if self.dir.exists() {
            let aside = self
                .dir
                .with_extension(format!("corrupt-{}", std::process::id()));
            let old = match std::fs::rename(&self.dir, &aside) {
                Ok(()) => aside,
                Err(_) => self.dir.clone(),
            };
            salvaged = self.salvage_notes(&old);
            if old == self.dir {
                std::fs::remove_dir_all(&self.dir)
                    .map_err(GitError::io("deleting corrupted mirror", &self.dir))?;
            } else if let Err(e) = std::fs::remove_dir_all(&old) {
                tracing::warn!(path = %old.display(), error = %e, "cannot delete corrupted mirror");
            }
        }
        let mut init = RepositoryInitOptions::new();
        init.bare(true)
            .mkpath(true)
            .no_reinit(false)
            .initial_head(&self.opts.branch);
        Repository::init_opts(&self.dir, &init).map_err(GitError::repo("init", &self.dir))?;
        tracing::info!(path = %self.dir.display(), url = %self.url.sanitized, "initialised mirror");
        let repo = self.repo()?;
        self.configure(&repo)?;
        self.restore_notes(&repo, &salvaged)?;
        Ok(repo)
    }

    /// Opens what is left of a broken mirror at `old` for reading objects: the repository
    /// (with an empty config, the file may be damaged), or else only its object store.
    fn open_broken(&self, old: &Path) -> Option<Repository> {
        let opened = Repository::open_bare(old).and_then(|repo| {
            let cfg = git2::Config::new()?;
            repo.set_config(&cfg)?;
            Ok(repo)
        });
        match opened {
            Ok(repo) => return Some(repo),
            Err(e) => {
                tracing::debug!(path = %old.display(), error = %e, "broken mirror does not open, reading its objects directly");
            }
        }
        let objects = old.join("objects");
        let odb = Odb::new().ok()?;
        odb.add_disk_alternate(objects.to_str()?).ok()?;
        Repository::from_odb(odb).ok()
    }

    /// A ref tip of the broken mirror: through libgit2, else from the loose or packed ref file.
    fn broken_ref(repo: &Repository, old: &Path, name: &str) -> Option<Oid> {
        if let Ok(id) = repo.refname_to_id(name) {
            return Some(id);
        }
        let loose = std::fs::read_to_string(old.join(name)).ok();
        if let Some(id) = loose.and_then(|t| Oid::from_str(t.trim()).ok()) {
            return Some(id);
        }
        let packed = std::fs::read_to_string(old.join("packed-refs")).ok()?;
        packed.lines().find_map(|line| {
            let (id, r) = line.split_once(' ')?;
            (r.trim() == name).then(|| Oid::from_str(id).ok()).flatten()
        })
    }

    /// The notes of the broken mirror at `old` that the remote had not accepted yet. Never
    /// fails: what cannot be read is logged (naming the path) and left behind.
    fn salvage_notes(&self, old: &Path) -> Vec<Salvaged> {
        let Some(repo) = self.open_broken(old) else {
            tracing::warn!(path = %old.display(), "broken mirror unreadable: notes committed locally and not pushed are lost");
            return Vec::new();
        };
        let Some(local) = Self::broken_ref(&repo, old, &self.opts.notes_ref) else {
            if old.join(&self.opts.notes_ref).exists() {
                tracing::warn!(path = %old.display(), notes_ref = %self.opts.notes_ref, "local notes ref of the broken mirror unreadable: notes not pushed are lost");
            }
            return Vec::new(); // no local notes at all
        };
        // The last state shared with the remote: a salvage base left by an earlier
        // re-creation, else the merge base of local and remote-tracking notes.
        let remote = Self::broken_ref(&repo, old, REMOTE_NOTES_REF);
        let base = Self::broken_ref(&repo, old, SALVAGE_BASE_REF).or_else(|| {
            let r = remote?;
            match repo.merge_base(local, r) {
                Ok(b) => Some(b),
                Err(e) if e.code() == git2::ErrorCode::NotFound => None,
                Err(_) => Some(r), // history unreadable: the remote-tracking tip is the best guess
            }
        });
        if base == Some(local) {
            return Vec::new();
        }
        let local_map = match self.notes_map(&repo, Some(local)) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(path = %old.display(), notes_commit = %local, error = %e, "local notes of the broken mirror unreadable: notes not pushed are lost");
                return Vec::new();
            }
        };
        let base_map = self.notes_map(&repo, base).unwrap_or_else(|e| {
            tracing::warn!(path = %old.display(), error = %e, "base of the unpushed notes unreadable, merging them as new");
            Default::default()
        });
        let mut out = Vec::new();
        for (commit, blob) in local_map {
            let base_blob = base_map.get(&commit);
            if base_blob == Some(&blob) {
                continue;
            }
            let ours = match self.blob_text(&repo, blob) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(path = %old.display(), commit = %commit, error = %e, "unpushed note unreadable, lost");
                    continue;
                }
            };
            let base = base_blob.and_then(|b| self.blob_text(&repo, *b).ok());
            out.push(Salvaged { commit, base, ours });
        }
        tracing::info!(path = %old.display(), notes = out.len(), "salvaged unpushed notes from the broken mirror");
        out
    }

    /// Writes salvaged notes into the fresh mirror: their bases on `SALVAGE_BASE_REF`, the
    /// notes themselves on the local notes ref, on top of the bases.
    fn restore_notes(&self, repo: &Repository, notes: &[Salvaged]) -> Result<(), GitError> {
        if notes.is_empty() {
            return Ok(());
        }
        let sig = Signature::now("gitopsd", "gitopsd@localhost")
            .map_err(GitError::repo("signature", &self.dir))?;
        let write = |notes_ref: &str, commit: Oid, text: &str| {
            repo.note(&sig, &sig, Some(notes_ref), commit, text, true)
                .map(|_| ())
                .map_err(GitError::repo("write note", &self.dir))
        };
        for n in notes {
            if let Some(base) = &n.base {
                write(SALVAGE_BASE_REF, n.commit, base)?;
            }
        }
        let local_ref = self.opts.notes_ref.as_str();
        if let Ok(base_tip) = repo.refname_to_id(SALVAGE_BASE_REF) {
            repo.reference(local_ref, base_tip, true, "gitopsd: salvaged notes base")
                .map_err(GitError::repo("update ref", &self.dir))?;
        }
        for n in notes {
            write(local_ref, n.commit, &n.ours)?;
        }
        tracing::warn!(path = %self.dir.display(), notes = notes.len(), "restored unpushed notes into the re-created mirror; they are pushed with the next notes sync");
        Ok(())
    }
}
