//! Trust on the way in: records are used only when their signature verifies (untrusted ones are
//! reported once per commit), and a commit is applied only when it carries a valid signature
//! from an allowed signer (`repository.verify`).

use std::sync::Arc;

use super::source::git;
use super::{EnvWorker, ReconcileError};
use crate::config::HostConfig;
use crate::git::{AllowedSigners, Mirror, Oid};
use crate::status::{EnvHistory, Notary, ObjectError};

/// The host's signing key, the keys it trusts and the commit signers.
pub struct Trust {
    pub notary: Notary,
    /// `None`: commit signatures are not checked.
    pub signers: Option<AllowedSigners>,
}

impl Trust {
    pub fn from_config(config: &HostConfig) -> Result<Trust, ReconcileError> {
        let setup = |e: crate::config::ConfigError| ReconcileError::Setup {
            env: "*".into(),
            message: e.to_string(),
        };
        Ok(Trust {
            notary: config.notary().map_err(setup)?,
            signers: config.allowed_signers().map_err(setup)?,
        })
    }

    /// Trusts unsigned records and checks no commits (tests of unrelated behaviour).
    pub fn none() -> Trust {
        Trust {
            notary: Notary::unsigned(),
            signers: None,
        }
    }

    /// Why `commit` must not be applied, or `None` when it may (or nothing is checked).
    pub async fn check_commit(
        &self,
        mirror: &Arc<Mirror>,
        commit: Oid,
    ) -> Result<Option<String>, ReconcileError> {
        let Some(signers) = &self.signers else {
            return Ok(None);
        };
        let signed = git(mirror, move |m| m.signed_commit(commit)).await?;
        match signers.verify(signed.as_ref()) {
            Ok(principals) => {
                tracing::debug!(commit = %commit, signer = %principals, "commit signature verified");
                Ok(None)
            }
            Err(e) => Ok(Some(e.to_string())),
        }
    }
}

impl EnvWorker {
    /// Logs and counts the untrusted records of `history` not reported before.
    pub(super) fn report_untrusted(&self, history: &EnvHistory) {
        let Ok(mut seen) = self.untrusted_seen.lock() else {
            return;
        };
        for (commit, why) in &history.untrusted {
            if !seen.insert(commit.clone()) {
                continue;
            }
            tracing::warn!(env = %self.cfg.name, commit = %commit, reason = %why, "ignoring a status record that is not signed by a trusted key");
            if let Some(metrics) = &self.metrics {
                metrics.untrusted_note(&self.cfg.name, why.label());
            }
        }
    }

    /// `None` when `commit` may be applied; otherwise the error of its `rejected` record.
    pub(super) async fn verify_commit(
        &self,
        mirror: &Arc<Mirror>,
        commit: Oid,
    ) -> Result<Option<ObjectError>, ReconcileError> {
        let Some(reason) = self.trust.check_commit(mirror, commit).await? else {
            return Ok(None);
        };
        tracing::warn!(env = %self.cfg.name, commit = %commit, reason = %reason, "commit signature not accepted; nothing applied");
        Ok(Some(ObjectError {
            object: String::new(),
            at: Some(format!("commit {commit}")),
            reason,
        }))
    }
}
