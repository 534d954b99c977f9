//! Reads and writes of one environment's Lease (`coordination.k8s.io/v1`) with optimistic
//! concurrency: every write is a create or a replace carrying the resourceVersion that was
//! read, so of two hosts racing for the same Lease exactly one write succeeds. The three API
//! calls are behind [`Transport`], so the election loop is tested with paused time against an
//! in-memory Lease.

use std::sync::Arc;

use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;

use super::decide::Seen;
use crate::k8s::KubeError;

/// A write lost to another host's (a 409 conflict or an existing Lease): read again.
pub struct Conflict;

/// What a write returns: the Lease as stored, or a lost race.
pub type Written = Result<Result<Lease, Conflict>, KubeError>;

/// The API calls on one Lease.
pub trait Transport: Send + Sync {
    fn get(&self) -> BoxFuture<'_, Result<Option<Lease>, KubeError>>;
    fn create(&self, lease: Lease) -> BoxFuture<'_, Written>;
    /// Replaces the Lease if its resourceVersion is still `lease`'s.
    fn replace(&self, lease: Lease) -> BoxFuture<'_, Written>;
}

/// [`Transport`] through the apiserver.
struct KubeLease {
    api: Api<Lease>,
    name: String,
    object: String,
}

fn written(object: &str, verb: &'static str, r: Result<Lease, kube::Error>) -> Written {
    match r {
        Ok(l) => Ok(Ok(l)),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Err(Conflict)),
        Err(e) => Err(KubeError::from_kube(object, verb, e)),
    }
}

impl Transport for KubeLease {
    fn get(&self) -> BoxFuture<'_, Result<Option<Lease>, KubeError>> {
        Box::pin(async move {
            self.api
                .get_opt(&self.name)
                .await
                .map_err(|e| KubeError::from_kube(&self.object, "get", e))
        })
    }

    fn create(&self, lease: Lease) -> BoxFuture<'_, Written> {
        Box::pin(async move {
            let r = self.api.create(&PostParams::default(), &lease).await;
            written(&self.object, "create", r)
        })
    }

    fn replace(&self, lease: Lease) -> BoxFuture<'_, Written> {
        Box::pin(async move {
            let r = self
                .api
                .replace(&self.name, &PostParams::default(), &lease)
                .await;
            written(&self.object, "update", r)
        })
    }
}

/// One Lease, as this host's candidate sees it.
pub struct LeaseClient {
    transport: Arc<dyn Transport>,
    namespace: String,
    name: String,
    identity: String,
    duration_secs: i32,
}

impl LeaseClient {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: std::time::Duration,
    ) -> LeaseClient {
        let transport = Arc::new(KubeLease {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            object: format!("Lease {namespace}/{name}"),
        });
        Self::with_transport(transport, namespace, name, identity, duration)
    }

    pub fn with_transport(
        transport: Arc<dyn Transport>,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: std::time::Duration,
    ) -> LeaseClient {
        LeaseClient {
            transport,
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity: identity.to_string(),
            duration_secs: i32::try_from(duration.as_secs()).unwrap_or(i32::MAX),
        }
    }

    /// `Lease NAMESPACE/NAME`, for errors and logs.
    pub fn object(&self) -> String {
        format!("Lease {}/{}", self.namespace, self.name)
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub async fn read(&self) -> Result<Option<Lease>, KubeError> {
        self.transport.get().await
    }

    /// Creates the Lease held by this host.
    pub async fn create(&self) -> Written {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(
                    [("app.kubernetes.io/managed-by".into(), "gitopsd".into())]
                        .into_iter()
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(self.held(0)),
        };
        self.transport.create(lease).await
    }

    /// Takes `lease` (read just before) for this host: a new term.
    pub async fn acquire(&self, mut lease: Lease) -> Written {
        let transitions = lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_transitions)
            .unwrap_or(0);
        lease.spec = Some(self.held(transitions.saturating_add(1)));
        self.replace(lease).await
    }

    /// Renews `lease`, which names this host.
    pub async fn renew(&self, mut lease: Lease) -> Written {
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.renew_time = Some(MicroTime(now()));
        spec.lease_duration_seconds = Some(self.duration_secs);
        self.replace(lease).await
    }

    /// Clears the holder (graceful shutdown), so a standby takes over without waiting.
    pub async fn release(&self, mut lease: Lease) -> Written {
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = None;
        spec.renew_time = None;
        spec.acquire_time = None;
        self.replace(lease).await
    }

    async fn replace(&self, lease: Lease) -> Written {
        self.transport.replace(lease).await
    }

    fn held(&self, transitions: i32) -> LeaseSpec {
        let now = MicroTime(now());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration_secs),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }
}

fn now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

/// The parts of `lease` the decision looks at.
pub fn seen(lease: &Lease) -> Seen {
    let spec = lease.spec.clone().unwrap_or_default();
    Seen {
        holder: spec.holder_identity,
        renew_time: spec.renew_time.map(|t| t.0.to_string()),
        transitions: spec.lease_transitions.unwrap_or(0),
    }
}

/// The Lease name of `env` of `instance`: `gitopsd-<instance>-<env>` (the prefix once, a
/// derived instance has it already) when that is a DNS label, else a shortened form with a
/// hash, so every environment has its own stable, valid name.
pub fn lease_name(instance: &str, env: &str) -> String {
    let plain = match instance.starts_with("gitopsd-") {
        true => format!("{instance}-{env}"),
        false => format!("gitopsd-{instance}-{env}"),
    }
    .to_ascii_lowercase();
    if crate::config::is_dns_label(&plain) {
        return plain;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{instance}/{env}").as_bytes());
    let hex: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    let safe: String = plain
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    format!("{}-{hex}", safe.trim_end_matches('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_names_are_dns_labels() {
        assert_eq!(lease_name("infra", "dev"), "gitopsd-infra-dev");
        assert_eq!(
            lease_name("gitopsd-d3bac6d95e", "dev"),
            "gitopsd-d3bac6d95e-dev"
        );
        let long = lease_name("gitopsd-0123456789", &"e".repeat(60));
        assert!(crate::config::is_dns_label(&long), "{long}");
        assert_ne!(long, lease_name("gitopsd-0123456789", &"e".repeat(61)));
        let odd = lease_name("infra", "Dev_1");
        assert!(crate::config::is_dns_label(&odd), "{odd}");
    }
}
