//! Status notes: read, write-merge-push.
//!
//! Two refs are kept apart in the mirror:
//! - `refs/gitopsd/remote-notes`: the remote's notes ref as last fetched or pushed;
//! - `<notes_ref>` (local): the remote notes plus notes committed here but not yet pushed.
//!
//! Pending notes are the notes whose blob differs between the local tip and the merge base
//! of local and remote. After every fetch they are replayed on top of the fetched remote tip
//! (three-way merged per note with [`super::merge::merge_sections`] when the remote changed
//! the same note meanwhile), so reads always see remote and pending notes together and a
//! fetch never loses unpushed notes. Pushes never force: a rejected push (non-fast-forward,
//! reported either as an error or through `push_update_reference`) leads to fetch, replay
//! and retry with backoff; the caller's edit is applied once, never re-applied.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use git2::{ObjectType, PushOptions, Repository, Signature};

use super::auth::{self, CallbackState};
use super::url::RemoteKind;
use super::{GitError, Mirror, NETWORK_DEADLINE, Oid, REMOTE_NOTES_REF, SALVAGE_BASE_REF};

const REBUILD_REF: &str = "refs/gitopsd/notes-rebuild";
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
const PUSH_GIVE_UP: Duration = Duration::from_secs(10);

enum PushOutcome {
    Pushed,
    Rejected(String),
}

type Update<'a> = (Oid, &'a dyn Fn(Option<&str>) -> String);

fn signature(path: &Path) -> Result<Signature<'static>, GitError> {
    Signature::now("gitopsd", "gitopsd@localhost").map_err(GitError::repo("signature", path))
}

fn is_note_name(name: &str) -> bool {
    (name.len() == 40 || name.len() == 64) && name.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Mirror {
    fn ref_target(&self, repo: &Repository, name: &str) -> Result<Option<Oid>, GitError> {
        match repo.refname_to_id(name) {
            Ok(id) => Ok(Some(id)),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(GitError::repo("read ref", &self.dir)(e)),
        }
    }

    fn set_ref(
        &self,
        repo: &Repository,
        name: &str,
        target: Option<Oid>,
        msg: &str,
    ) -> Result<(), GitError> {
        match target {
            Some(id) => {
                repo.reference(name, id, true, msg)
                    .map_err(GitError::repo("update ref", &self.dir))?;
            }
            None => match repo.find_reference(name) {
                Ok(mut r) => r
                    .delete()
                    .map_err(GitError::repo("delete ref", &self.dir))?,
                Err(e) if e.code() == git2::ErrorCode::NotFound => {}
                Err(e) => return Err(GitError::repo("read ref", &self.dir)(e)),
            },
        }
        Ok(())
    }

    /// annotated commit → note blob, for the notes commit `tip` (handles fan-out trees).
    pub(super) fn notes_map(
        &self,
        repo: &Repository,
        tip: Option<Oid>,
    ) -> Result<BTreeMap<Oid, Oid>, GitError> {
        let mut out = BTreeMap::new();
        let Some(tip) = tip else { return Ok(out) };
        let tree = self.commit_tree(repo, tip)?;
        self.collect_notes(repo, &tree, String::new(), &mut out)?;
        Ok(out)
    }

    fn collect_notes(
        &self,
        repo: &Repository,
        tree: &git2::Tree<'_>,
        prefix: String,
        out: &mut BTreeMap<Oid, Oid>,
    ) -> Result<(), GitError> {
        for entry in tree.iter() {
            let Ok(name) = entry.name() else { continue };
            let full = format!("{prefix}{name}");
            match entry.kind() {
                Some(ObjectType::Tree) if full.len() < 64 => {
                    let sub = repo
                        .find_tree(entry.id())
                        .map_err(|e| self.object_err(entry.id(), e))?;
                    self.collect_notes(repo, &sub, full, out)?;
                }
                Some(ObjectType::Blob) if is_note_name(&full) => {
                    if let Ok(commit) = Oid::from_str(&full) {
                        out.insert(commit, entry.id());
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub(super) fn blob_text(&self, repo: &Repository, blob: Oid) -> Result<String, GitError> {
        let b = repo.find_blob(blob).map_err(|e| self.object_err(blob, e))?;
        Ok(String::from_utf8_lossy(b.content()).into_owned())
    }

    fn local_note(&self, repo: &Repository, commit: Oid) -> Result<Option<String>, GitError> {
        match repo.find_note(Some(&self.opts.notes_ref), commit) {
            Ok(n) => Ok(Some(
                String::from_utf8_lossy(n.message_bytes()).into_owned(),
            )),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(GitError::repo("read note", &self.dir)(e)),
        }
    }

    /// The note on `commit` (remote notes merged with notes not pushed yet).
    pub fn read_note(&self, commit: Oid) -> Result<Option<String>, GitError> {
        let repo = self.repo()?;
        self.local_note(&repo, commit)
    }

    /// All notes: (annotated commit, text), sorted by commit id.
    pub fn list_notes(&self) -> Result<Vec<(Oid, String)>, GitError> {
        let repo = self.repo()?;
        let tip = self.ref_target(&repo, &self.opts.notes_ref)?;
        let map = self.notes_map(&repo, tip)?;
        map.into_iter()
            .map(|(c, blob)| Ok((c, self.blob_text(&repo, blob)?)))
            .collect()
    }

    /// Replays notes committed locally but not pushed on top of the fetched remote notes tip
    /// and moves the local notes ref there. Caller holds the notes lock.
    pub(crate) fn rebuild_local_notes(&self, repo: &Repository) -> Result<(), GitError> {
        // Notes salvaged from a broken mirror share no history with the fetched notes; the
        // notes as they were before our edits were kept on their own ref to merge against.
        let salvage_base = self.ref_target(repo, SALVAGE_BASE_REF)?;
        self.rebuild_on(repo, salvage_base)?;
        if salvage_base.is_some() {
            // Consumed: the local notes now descend from the remote tip.
            self.set_ref(repo, SALVAGE_BASE_REF, None, "")?;
        }
        Ok(())
    }

    fn rebuild_on(&self, repo: &Repository, salvage_base: Option<Oid>) -> Result<(), GitError> {
        let local_ref = self.opts.notes_ref.as_str();
        let local = self.ref_target(repo, local_ref)?;
        let remote = self.ref_target(repo, REMOTE_NOTES_REF)?;
        if local == remote {
            return Ok(());
        }
        let (Some(l), Some(r)) = (local, remote) else {
            if local.is_none() {
                // Nothing local: take the remote notes as they are.
                self.set_ref(repo, local_ref, remote, "gitopsd: notes from remote")?;
            }
            // Remote has no notes (yet): everything local is pending, keep it.
            return Ok(());
        };
        let base = salvage_base.or_else(|| repo.merge_base(l, r).ok());
        if base == Some(l) {
            return self.set_ref(repo, local_ref, Some(r), "gitopsd: notes fast-forward");
        }
        if base == Some(r) {
            return Ok(()); // local is ahead of remote: pending notes are already on top
        }
        self.replay_pending(repo, l, r, base)
    }

    /// Writes the notes that changed between `base` and local `l` onto remote `r`.
    fn replay_pending(
        &self,
        repo: &Repository,
        l: Oid,
        r: Oid,
        base: Option<Oid>,
    ) -> Result<(), GitError> {
        let local_ref = self.opts.notes_ref.as_str();
        let base_map = self.notes_map(repo, base)?;
        let local_map = self.notes_map(repo, Some(l))?;
        let remote_map = self.notes_map(repo, Some(r))?;
        let sig = signature(&self.dir)?;
        self.set_ref(repo, REBUILD_REF, Some(r), "gitopsd: rebuild notes")?;
        let mut replayed = 0usize;
        for (commit, blob) in &local_map {
            if base_map.get(commit) == Some(blob) || remote_map.get(commit) == Some(blob) {
                continue;
            }
            let ours = self.blob_text(repo, *blob)?;
            let base_text = match base_map.get(commit) {
                Some(b) => Some(self.blob_text(repo, *b)?),
                None => None,
            };
            let theirs = match remote_map.get(commit) {
                Some(b) => Some(self.blob_text(repo, *b)?),
                None => None,
            };
            let merged = match &self.merger {
                Some(m) => m(base_text.as_deref(), &ours, theirs.as_deref()),
                None => {
                    super::merge::merge_sections(base_text.as_deref(), &ours, theirs.as_deref())
                }
            };
            if theirs.as_deref() != Some(merged.as_str()) {
                repo.note(&sig, &sig, Some(REBUILD_REF), *commit, &merged, true)
                    .map_err(GitError::repo("write note", &self.dir))?;
                replayed += 1;
            }
        }
        let tip = self.ref_target(repo, REBUILD_REF)?;
        self.set_ref(repo, local_ref, tip, "gitopsd: replay pending notes")?;
        self.set_ref(repo, REBUILD_REF, None, "")?;
        tracing::debug!(
            pending = replayed,
            notes_ref = local_ref,
            "replayed unpushed notes on the remote notes tip"
        );
        Ok(())
    }

    /// Applies `update` to the local note on `commit`.
    fn apply_local(&self, repo: &Repository, (commit, update): Update<'_>) -> Result<(), GitError> {
        let current = self.local_note(repo, commit)?;
        let new = update(current.as_deref());
        if current.as_deref() == Some(new.as_str()) {
            return Ok(());
        }
        let sig = signature(&self.dir)?;
        repo.note(&sig, &sig, Some(&self.opts.notes_ref), commit, &new, true)
            .map_err(GitError::repo("write note", &self.dir))?;
        Ok(())
    }

    /// Write-merge-push of the note on `commit`: `update` receives the current text (remote
    /// merged with pending local notes) and returns the new text. Returns the number of
    /// retries after rejected pushes. If the remote cannot be reached the note stays
    /// committed locally and is pushed by a later `update_note`/`push_pending_notes`.
    pub fn update_note(
        &self,
        commit: Oid,
        update: &dyn Fn(Option<&str>) -> String,
    ) -> Result<u32, GitError> {
        let _guard = self.notes_guard()?;
        let repo = self.repo()?;
        self.sync_notes(&repo, Some((commit, update)))
    }

    /// Rewrites every note committed here but not pushed yet as `f(remote text, local text)`
    /// says (an empty result removes the local note), without touching the remote. Returns
    /// how many notes changed.
    pub fn rewrite_pending_notes(
        &self,
        f: &dyn Fn(Option<&str>, &str) -> String,
    ) -> Result<usize, GitError> {
        let _guard = self.notes_guard()?;
        let repo = self.repo()?;
        self.rebuild_local_notes(&repo)?;
        let local = self.ref_target(&repo, &self.opts.notes_ref)?;
        let remote = self.ref_target(&repo, REMOTE_NOTES_REF)?;
        if local == remote {
            return Ok(0);
        }
        let remote_map = self.notes_map(&repo, remote)?;
        let sig = signature(&self.dir)?;
        let mut changed = 0;
        for (commit, blob) in self.notes_map(&repo, local)? {
            let theirs = remote_map.get(&commit);
            if theirs == Some(&blob) {
                continue;
            }
            let ours = self.blob_text(&repo, blob)?;
            let theirs = theirs.map(|b| self.blob_text(&repo, *b)).transpose()?;
            let new = f(theirs.as_deref(), &ours);
            if new == ours {
                continue;
            }
            let notes_ref = Some(self.opts.notes_ref.as_str());
            if new.is_empty() {
                repo.note_delete(commit, notes_ref, &sig, &sig)
            } else {
                repo.note(&sig, &sig, notes_ref, commit, &new, true)
                    .map(|_| ())
            }
            .map_err(GitError::repo("write note", &self.dir))?;
            changed += 1;
        }
        Ok(changed)
    }

    /// Pushes notes committed locally but not yet accepted by the remote (merging with the
    /// remote). Returns the number of retries.
    pub fn push_pending_notes(&self) -> Result<u32, GitError> {
        let _guard = self.notes_guard()?;
        let repo = self.repo()?;
        self.sync_notes(&repo, None)
    }

    fn sync_notes(&self, repo: &Repository, update: Option<Update<'_>>) -> Result<u32, GitError> {
        let notes_ref = self.opts.notes_ref.as_str();
        let refspec = [format!("+{notes_ref}:{REMOTE_NOTES_REF}")];
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let mut retries = 0u32;
        // The edit runs exactly once. After a rejected push it is not run again: the local
        // notes commit holding it is replayed onto the new remote tip by
        // `rebuild_local_notes`, a 3-way merge with base = the note before our edit. Running
        // it again would append `reapplied:`/`retry requested` entries twice.
        let mut update = update;
        loop {
            if let Err(e) = self.fetch_refspecs(repo, &refspec, "fetching notes") {
                if let Some(u) = update.take() {
                    self.apply_local(repo, u)?;
                    tracing::warn!(commit = %u.0, url = %self.url.sanitized, error = %e, "remote unavailable, note kept locally until the next push");
                }
                return Err(e);
            }
            self.rebuild_local_notes(repo)?;
            if let Some(u) = update.take() {
                self.apply_local(repo, u)?;
            }
            let local = self.ref_target(repo, notes_ref)?;
            let remote = self.ref_target(repo, REMOTE_NOTES_REF)?;
            let Some(local_tip) = local else {
                return Ok(retries);
            };
            if local == remote {
                return Ok(retries);
            }
            match self.push_notes(repo, local_tip, remote)? {
                PushOutcome::Pushed => {
                    self.set_ref(
                        repo,
                        REMOTE_NOTES_REF,
                        Some(local_tip),
                        "gitopsd: pushed notes",
                    )?;
                    tracing::info!(notes_commit = %local_tip, notes_ref, retries, "pushed notes");
                    return Ok(retries);
                }
                PushOutcome::Rejected(reason) => {
                    if started.elapsed() + backoff > PUSH_GIVE_UP {
                        return Err(GitError::PushRejected {
                            refname: notes_ref.to_string(),
                            url: self.url.sanitized.clone(),
                            attempts: retries + 1,
                            reason,
                        });
                    }
                    tracing::debug!(notes_ref, retries, reason = %reason, backoff_ms = backoff.as_millis() as u64, "notes push rejected, merging and retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    retries += 1;
                }
            }
        }
    }

    /// Pushes the local notes tip without force. `expected` is the remote tip it builds on.
    fn push_notes(
        &self,
        repo: &Repository,
        tip: Oid,
        expected: Option<Oid>,
    ) -> Result<PushOutcome, GitError> {
        let notes_ref = self.opts.notes_ref.as_str();
        if let RemoteKind::Local(path) = &self.url.kind {
            return self.push_notes_local(repo, path, tip, expected);
        }
        let spec = format!("{notes_ref}:{notes_ref}");
        self.push_refspec(repo, &spec)
    }

    fn push_refspec(&self, repo: &Repository, spec: &str) -> Result<PushOutcome, GitError> {
        let state = CallbackState::new(Instant::now() + NETWORK_DEADLINE);
        let result = {
            let mut remote = repo
                .remote_anonymous(&self.url.sanitized)
                .map_err(|e| self.net_error("pushing notes", e, &state))?;
            let mut po = PushOptions::new();
            po.remote_callbacks(auth::callbacks(&self.opts.auth, &self.url, &state));
            remote.push(&[spec], Some(&mut po))
        };
        match result {
            // A rejection by the server arrives only through push_update_reference.
            Ok(()) => match state.rejected.borrow().first() {
                Some((r, reason)) => Ok(PushOutcome::Rejected(format!("{r}: {reason}"))),
                None => Ok(PushOutcome::Pushed),
            },
            Err(e) if e.code() == git2::ErrorCode::NotFastForward => {
                Ok(PushOutcome::Rejected(e.message().to_string()))
            }
            Err(e) => Err(self.net_error("pushing notes", e, &state)),
        }
    }

    /// libgit2's local transport updates the remote ref without compare-and-swap (and a
    /// temporary ref would race with concurrent fetches listing refs), so for a remote on
    /// local disk we copy the missing objects into its object store and then move the notes
    /// ref with a compare-and-swap.
    fn push_notes_local(
        &self,
        repo: &Repository,
        path: &Path,
        tip: Oid,
        expected: Option<Oid>,
    ) -> Result<PushOutcome, GitError> {
        let notes_ref = self.opts.notes_ref.as_str();
        let unreachable = |e: git2::Error| GitError::Network {
            url: self.url.sanitized.clone(),
            op: "pushing notes",
            message: e.message().to_string(),
        };
        if !path.exists() {
            return Err(GitError::Network {
                url: self.url.sanitized.clone(),
                op: "pushing notes",
                message: "remote repository path does not exist (anymore)".into(),
            });
        }
        let remote_repo = Repository::open(path).map_err(unreachable)?;
        self.copy_objects(repo, &remote_repo, path, tip, expected)?;
        let msg = "gitopsd: push notes";
        let result = match expected {
            Some(old) => remote_repo.reference_matching(notes_ref, tip, true, old, msg),
            None => remote_repo.reference(notes_ref, tip, false, msg),
        };
        match result {
            Ok(_) => Ok(PushOutcome::Pushed),
            Err(e)
                if matches!(
                    e.code(),
                    git2::ErrorCode::Modified | git2::ErrorCode::Exists | git2::ErrorCode::Locked
                ) =>
            {
                Ok(PushOutcome::Rejected(format!(
                    "{notes_ref} moved on the remote: {}",
                    e.message()
                )))
            }
            Err(e) => Err(GitError::Repo {
                op: "updating remote notes ref",
                path: path.to_path_buf(),
                source: e,
            }),
        }
    }

    /// Copies the notes commits `tip` has and `remote_repo` lacks (with their trees and
    /// blobs) into the remote's object store.
    fn copy_objects(
        &self,
        repo: &Repository,
        remote_repo: &Repository,
        path: &Path,
        tip: Oid,
        known: Option<Oid>,
    ) -> Result<(), GitError> {
        let err = |source: git2::Error| GitError::Repo {
            op: "copying notes objects to the remote",
            path: path.to_path_buf(),
            source,
        };
        let src = repo.odb().map_err(GitError::repo("open odb", &self.dir))?;
        let dst = remote_repo
            .odb()
            .map_err(GitError::repo("open odb", path))?;
        let mut walk = repo
            .revwalk()
            .map_err(GitError::repo("revwalk", &self.dir))?;
        walk.push(tip).map_err(|e| self.object_err(tip, e))?;
        if let Some(k) = known
            && dst.exists(k)
        {
            walk.hide(k).map_err(|e| self.object_err(k, e))?;
        }
        let copy = |oid: Oid| -> Result<(), git2::Error> {
            if !dst.exists(oid) {
                let obj = src.read(oid)?;
                dst.write(obj.kind(), obj.data())?;
            }
            Ok(())
        };
        fn copy_tree(
            repo: &Repository,
            dst: &git2::Odb<'_>,
            copy: &dyn Fn(Oid) -> Result<(), git2::Error>,
            id: Oid,
        ) -> Result<(), git2::Error> {
            if dst.exists(id) {
                return Ok(());
            }
            let tree = repo.find_tree(id)?;
            for entry in tree.iter() {
                match entry.kind() {
                    Some(ObjectType::Tree) => copy_tree(repo, dst, copy, entry.id())?,
                    Some(ObjectType::Blob) => copy(entry.id())?,
                    _ => {}
                }
            }
            copy(id)
        }
        for id in walk {
            let id = id.map_err(GitError::repo("revwalk", &self.dir))?;
            if dst.exists(id) {
                continue;
            }
            let commit = repo.find_commit(id).map_err(|e| self.object_err(id, e))?;
            copy_tree(repo, &dst, &copy, commit.tree_id()).map_err(err)?;
            copy(id).map_err(err)?;
        }
        Ok(())
    }
}
