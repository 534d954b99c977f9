//! `ha:`: two (or more) management hosts share the environments; per environment a
//! `coordination.k8s.io/v1` Lease in that environment's cluster says which host reconciles it.
//! This file owns the types, their defaults (the identity defaults to the host name, read here:
//! config is the one place host facts are read) and their checks.

use std::time::Duration;

use serde::Deserialize;

use crate::schema::Checker;

/// Shortest lease a host may ask for: renewals every third of it must fit API round trips.
pub const MIN_LEASE_DURATION: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaConfig {
    /// Namespace of the Leases in every environment's cluster (a DNS label).
    pub lease_namespace: String,
    /// This host's name in the Leases' `holderIdentity`; default: the host name.
    #[serde(default)]
    pub identity: Option<String>,
    /// How long a Lease stays with a holder that stopped renewing.
    #[serde(default = "default_lease_duration", with = "humantime_serde")]
    pub lease_duration: Duration,
}

fn default_lease_duration() -> Duration {
    Duration::from_secs(15)
}

impl HaConfig {
    /// The configured identity, else the kernel's host name.
    pub fn identity(&self) -> String {
        if let Some(id) = &self.identity {
            return id.clone();
        }
        host_name().unwrap_or_else(|| "gitopsd".to_string())
    }

    pub fn check(&self, c: &mut Checker) {
        if !super::is_dns_label(&self.lease_namespace) {
            c.problem_at(
                "ha.lease_namespace",
                format!("{:?} is not a DNS label", self.lease_namespace),
            );
        }
        match &self.identity {
            Some(id) if !identity_ok(id) => c.problem_at(
                "ha.identity",
                "must be 1-128 printable characters without spaces",
            ),
            None if host_name().is_none() => c.problem_at(
                "ha.identity",
                "the host name cannot be read: set an identity for this host",
            ),
            _ => {}
        }
        if self.lease_duration < MIN_LEASE_DURATION {
            c.problem_at(
                "ha.lease_duration",
                format!(
                    "{} is shorter than the minimum {}",
                    humantime::format_duration(self.lease_duration),
                    humantime::format_duration(MIN_LEASE_DURATION)
                ),
            );
        }
        if self.lease_duration.subsec_nanos() != 0 {
            // The Lease counts whole seconds.
            c.problem_at("ha.lease_duration", "must be whole seconds");
        }
    }
}

fn identity_ok(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.chars().all(|ch| ch.is_ascii_graphic())
}

/// The kernel's host name (what `hostname` prints).
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    identity_ok(name).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        let cfg: HaConfig = serde_saphyr::from_str(text).unwrap();
        let mut c = Checker::new();
        cfg.check(&mut c);
        c.into_problems()
            .into_iter()
            .map(|p| p.keyed_message())
            .collect()
    }

    #[test]
    fn defaults_and_checks() {
        let cfg: HaConfig = serde_saphyr::from_str("lease_namespace: gitopsd-system\n").unwrap();
        assert_eq!(cfg.lease_duration, Duration::from_secs(15));
        assert!(!cfg.identity().is_empty());
        assert!(problems("lease_namespace: gitopsd-system\nidentity: host-a\n").is_empty());
        let p = problems("lease_namespace: Not_DNS\nidentity: 'a b'\nlease_duration: 2s\n");
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("ha.lease_namespace"), "{p:?}");
        assert!(p[1].contains("ha.identity"), "{p:?}");
        assert!(p[2].contains("ha.lease_duration"), "{p:?}");
        assert_eq!(
            problems("lease_namespace: x\nlease_duration: 5500ms\n").len(),
            1
        );
    }
}
