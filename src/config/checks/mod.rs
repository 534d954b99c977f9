//! Semantic checks of a host config beyond its schema (which serde enforces while parsing):
//! names, paths, URLs, and that credential files exist. Every problem is reported with its key
//! path through one `crate::schema::Checker`. May call the file system (to see that files can be
//! read) and nothing else.

mod environment;
mod names;
mod repository;
mod trust;

use crate::schema::{Checker, Problem};

use super::HostConfig;

pub use names::{UrlScheme, is_dns_label, url_scheme};

impl HostConfig {
    /// Semantic checks beyond the schema: names, paths, URLs and that credential files exist.
    pub fn problems(&self) -> Vec<Problem> {
        let mut c = Checker::new();
        self.check(&mut c);
        c.into_problems()
    }

    /// Reports every problem of the config to `c` (at the root of the config's key paths).
    pub fn check(&self, c: &mut Checker) {
        if let Some(name) = &self.instance
            && !is_dns_label(name)
        {
            c.problem_at(
                "instance",
                format!(
                    "{name:?} is not a DNS label (1-63 of a-z, 0-9 and '-', starting and ending with a letter or digit)"
                ),
            );
        }
        c.at("repository", |c| repository::check(&self.repository, c));
        self.limits.check(c);
        self.check_local(c);
        c.at("environments", |c| {
            environment::check_all(&self.environments, c)
        });
        trust::check(self, c);
        super::webhooks::check(self.webhooks_listen, &self.webhook_secrets, c);
        if let Some(n) = &self.notifications {
            c.at("notifications", |c| n.check(c));
        }
        if let Some(ha) = &self.ha {
            ha.check(c);
            for (i, env) in self.environments.iter().enumerate() {
                if env.kubernetes.is_none() {
                    c.problem_at(
                        &format!("environments[{i}].kubernetes"),
                        "required with ha: the environment's Lease lives in its cluster",
                    );
                }
            }
        }
        if let Some(p) = &self.previews {
            if let Err(e) = globset::Glob::new(&p.refs) {
                c.problem_at("previews.refs", format!("invalid glob: {e}"));
            }
            if !p.notes_ref.starts_with("refs/notes/") || p.notes_ref == self.notes_ref {
                c.problem_at(
                    "previews.notes_ref",
                    "must be a ref under refs/notes/ other than notes_ref",
                );
            }
        }
    }

    /// What stays on this host: the notes ref, the metrics address and the state directory.
    fn check_local(&self, c: &mut Checker) {
        if !self.notes_ref.starts_with("refs/notes/") || names::git_ref_invalid(&self.notes_ref) {
            c.problem_at(
                "notes_ref",
                format!("{:?} must be a ref under refs/notes/", self.notes_ref),
            );
        }
        if !self.listen.ip().is_loopback() {
            c.problem_at(
                "listen",
                format!(
                    "{} is not a loopback address (metrics are not for the network)",
                    self.listen
                ),
            );
        }
        if !self.state_dir.is_absolute() {
            c.problem_at("state_dir", "must be an absolute path");
        }
    }
}
