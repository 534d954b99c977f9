//! Kubernetes effects (validate, apply, health): discovery, server-side dry-run, server-side
//! apply, ownership-checked delete, the watch-fed live cache, health rules, and the inventory of
//! what gitopsd owns for an environment. Owns the ownership labels and the object as sent
//! ([`desired_body`]). May call: `manifest` (objects), `plan` (the comparison, namespaces),
//! `config` (cluster settings) and the Kubernetes API; never git or S3.

pub mod adopt;
pub mod apply;
mod create;
mod error;
pub mod health;
pub mod live;
pub mod managed;
pub mod snapshot;

use std::collections::HashMap;
use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{Discovery, Scope, verbs};
use kube::{Client, Config};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::config::{EnvironmentConfig, KubernetesConfig};
use crate::manifest::{Manifest, ObjectKey};

pub use error::KubeError;

/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "gitopsd";
/// Ownership: gitopsd only ever changes or deletes objects carrying these labels with its own
/// instance and environment.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "gitopsd";
pub const ENV_LABEL: &str = "gitopsd.dev/environment";
pub const INSTANCE_LABEL: &str = "gitopsd.dev/instance";
pub const ENV_ANNOTATION: &str = "gitopsd.dev/environment";

/// The user name a ServiceAccount `NAMESPACE/NAME` authenticates as (the apiserver adds its
/// groups when it is impersonated).
/// Adds `User-Agent: gitopsd/<version>` to every request, so the apiserver's audit log names
/// gitopsd (kube sends none of its own).
fn with_user_agent(mut config: Config) -> Config {
    config
        .headers
        .retain(|(name, _)| name != http::header::USER_AGENT);
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(crate::USER_AGENT),
    ));
    config
}

fn service_account_user(sa: &str) -> String {
    let (ns, name) = sa.split_once('/').unwrap_or(("default", sa));
    format!("system:serviceaccount:{ns}:{name}")
}

/// The object as sent for environment `env` of `instance`: the manifest without `status`, in its
/// effective `namespace` (none: cluster-scoped), with the ownership labels and annotation.
pub fn desired_body(m: &Manifest, namespace: Option<&str>, instance: &str, env: &str) -> Value {
    let mut body = m.body.value();
    let Some(obj) = body.as_object_mut() else {
        return body;
    };
    obj.remove("status");
    let metadata = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    let Some(meta) = metadata.as_object_mut() else {
        return body;
    };
    match namespace {
        Some(ns) => {
            meta.insert("namespace".into(), Value::String(ns.to_string()));
        }
        None => {
            meta.remove("namespace");
        }
    }
    let labels = meta
        .entry("labels")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(labels) = labels.as_object_mut() {
        labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
        labels.insert(INSTANCE_LABEL.into(), Value::String(instance.to_string()));
        labels.insert(ENV_LABEL.into(), Value::String(env.to_string()));
    }
    let annotations = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(annotations) = annotations.as_object_mut() {
        annotations.insert(ENV_ANNOTATION.into(), Value::String(env.to_string()));
    }
    body
}

/// Where an object lives in the API.
#[derive(Clone)]
pub struct Target {
    pub api: Api<DynamicObject>,
    pub resource: ApiResource,
    pub namespaced: bool,
    /// Effective namespace (defaulted for namespaced kinds).
    pub namespace: Option<String>,
    pub name: String,
}

/// Result of an ownership-checked delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    AlreadyGone,
    /// Exists but is not gitopsd's for this environment: left alone.
    NotOwned,
}

/// An object gitopsd owns in the cluster for one environment.
#[derive(Debug, Clone)]
pub struct OwnedObject {
    pub key: ObjectKey,
    pub api_version: String,
    pub resource: ApiResource,
}

/// One environment's cluster.
pub struct Cluster {
    /// Reads: discovery, the watches of owned objects, health.
    client: Client,
    /// Dry-runs, applies and deletes: the environment's ServiceAccount when one is configured
    /// (impersonation), so the cluster's RBAC bounds what a commit can do.
    writer: Client,
    instance: String,
    env: String,
    default_namespace: String,
    force: bool,
    kinds: Mutex<HashMap<(String, String), (ApiResource, bool)>>,
}

impl Cluster {
    /// Builds a client from the environment's kubeconfig (and context).
    pub async fn connect(
        k8s: &KubernetesConfig,
        instance: &str,
        env: &EnvironmentConfig,
    ) -> Result<Cluster, KubeError> {
        let options = KubeConfigOptions {
            context: k8s.context.clone(),
            ..Default::default()
        };
        let path = k8s
            .kubeconfig
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(default)".to_string());
        let config_err = |message: String| KubeError::Config {
            path: path.clone(),
            message,
        };
        let config = match &k8s.kubeconfig {
            Some(file) => {
                let kubeconfig =
                    Kubeconfig::read_from(file).map_err(|e| config_err(e.to_string()))?;
                Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|e| config_err(e.to_string()))?
            }
            None => Config::from_kubeconfig(&options)
                .await
                .map_err(|e| config_err(e.to_string()))?,
        };
        let config = with_user_agent(config);
        let writer = match &env.service_account {
            Some(sa) => {
                let mut as_sa = config.clone();
                as_sa.auth_info.impersonate = Some(service_account_user(sa));
                Some(Client::try_from(as_sa).map_err(|e| config_err(e.to_string()))?)
            }
            None => None,
        };
        let client = Client::try_from(config).map_err(|e| config_err(e.to_string()))?;
        let mut cluster = Cluster::new(
            client,
            instance,
            &env.name,
            &env.namespace,
            env.force_conflicts,
        );
        if let Some(writer) = writer {
            cluster.writer = writer;
        }
        Ok(cluster)
    }

    pub fn new(
        client: Client,
        instance: &str,
        env: &str,
        default_namespace: &str,
        force: bool,
    ) -> Cluster {
        Cluster {
            writer: client.clone(),
            client,
            instance: instance.to_string(),
            env: env.to_string(),
            default_namespace: default_namespace.to_string(),
            force,
            kinds: Mutex::new(HashMap::new()),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn environment(&self) -> &str {
        &self.env
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Label selector of the objects this instance owns for this environment.
    pub fn selector(&self) -> String {
        format!(
            "{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{INSTANCE_LABEL}={},{ENV_LABEL}={}",
            self.instance, self.env
        )
    }

    /// Forgets discovered kinds (after CRDs change).
    pub async fn forget_kinds(&self) {
        self.kinds.lock().await.clear();
    }

    /// Resolves a kind through discovery (cached; a miss asks again, so CRDs created a moment ago
    /// are found). `None` when the cluster does not serve it.
    async fn kind(
        &self,
        object: &str,
        api_version: &str,
        kind: &str,
    ) -> Result<Option<(ApiResource, bool)>, KubeError> {
        let cache_key = (api_version.to_string(), kind.to_string());
        if let Some(found) = self.kinds.lock().await.get(&cache_key) {
            return Ok(Some(found.clone()));
        }
        let (group, version) = match api_version.rsplit_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        match kube::discovery::pinned_kind(&self.client, &gvk).await {
            Ok((resource, caps)) => {
                let namespaced = caps.scope == Scope::Namespaced;
                self.kinds
                    .lock()
                    .await
                    .insert(cache_key, (resource.clone(), namespaced));
                Ok(Some((resource, namespaced)))
            }
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
            Err(kube::Error::Discovery(_)) => Ok(None),
            Err(e) => Err(KubeError::from_kube(object, "discover", e)),
        }
    }

    /// Where `m` lives, with its namespace defaulted (namespaced kinds) or dropped (cluster-scoped).
    pub async fn target(&self, m: &Manifest) -> Result<Target, KubeError> {
        let object = m.key.to_string();
        let (resource, namespaced) = self
            .kind(&object, &m.api_version, &m.key.kind)
            .await?
            .ok_or_else(|| KubeError::UnknownKind {
                object: object.clone(),
                api_version: m.api_version.clone(),
                kind: m.key.kind.clone(),
            })?;
        let namespace = crate::plan::effective_namespace(
            m.key.namespace.as_deref(),
            namespaced,
            &self.default_namespace,
        );
        let api = match &namespace {
            Some(ns) => Api::namespaced_with(self.writer.clone(), ns, &resource),
            None => Api::all_with(self.writer.clone(), &resource),
        };
        Ok(Target {
            api,
            resource,
            namespaced,
            namespace,
            name: m.key.name.clone(),
        })
    }

    /// The object as sent: the manifest plus ownership marks and the effective namespace.
    pub fn desired_object(&self, m: &Manifest, target: &Target) -> Value {
        desired_body(m, target.namespace.as_deref(), &self.instance, &self.env)
    }

    fn patch_params(&self, dry_run: bool, force: bool) -> PatchParams {
        let mut params = PatchParams::apply(FIELD_MANAGER).validation_strict();
        if self.force || force {
            params = params.force();
        }
        if dry_run {
            params = params.dry_run();
        }
        params
    }

    async fn patch(
        &self,
        m: &Manifest,
        dry_run: bool,
        force: bool,
    ) -> Result<DynamicObject, KubeError> {
        let target = self.target(m).await?;
        let body = self.desired_object(m, &target);
        let verb = if dry_run { "dry-run apply" } else { "apply" };
        target
            .api
            .patch(
                &target.name,
                &self.patch_params(dry_run, force),
                &Patch::Apply(&body),
            )
            .await
            .map_err(|e| KubeError::from_kube(&describe(m, &target), verb, e))
    }

    /// Server-side dry-run of a server-side apply: admission, schema and conflicts, no change.
    pub async fn dry_run(&self, m: &Manifest) -> Result<DynamicObject, KubeError> {
        self.patch(m, true, false).await
    }

    /// Server-side apply with field manager `gitopsd`.
    pub async fn apply(&self, m: &Manifest) -> Result<DynamicObject, KubeError> {
        self.patch(m, false, false).await
    }

    /// Server-side apply that takes back fields another manager took over (drift correction:
    /// the fields were gitopsd's, and git says what they must be).
    pub async fn apply_forced(&self, m: &Manifest) -> Result<DynamicObject, KubeError> {
        self.patch(m, false, true).await
    }

    /// The live object, if any.
    pub async fn get(&self, m: &Manifest) -> Result<Option<DynamicObject>, KubeError> {
        let target = self.target(m).await?;
        target
            .api
            .get_opt(&target.name)
            .await
            .map_err(|e| KubeError::from_kube(&describe(m, &target), "get", e))
    }

    /// Whether a live object is this instance's for this environment.
    pub fn owns(&self, obj: &DynamicObject) -> bool {
        let labels = obj.metadata.labels.as_ref();
        let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
        label(MANAGED_BY_LABEL) == Some(MANAGED_BY_VALUE)
            && label(INSTANCE_LABEL) == Some(self.instance.as_str())
            && label(ENV_LABEL) == Some(self.env.as_str())
    }

    /// Deletes `m` only if gitopsd owns it for this environment.
    pub async fn delete(&self, m: &Manifest) -> Result<DeleteOutcome, KubeError> {
        let target = match self.target(m).await {
            Ok(t) => t,
            // A kind the cluster no longer serves has nothing left to delete.
            Err(KubeError::UnknownKind { .. }) => return Ok(DeleteOutcome::AlreadyGone),
            Err(e) => return Err(e),
        };
        let object = describe(m, &target);
        let live = target
            .api
            .get_opt(&target.name)
            .await
            .map_err(|e| KubeError::from_kube(&object, "get", e))?;
        let Some(live) = live else {
            return Ok(DeleteOutcome::AlreadyGone);
        };
        // Objects made by other objects (EndpointSlices copy their Service's labels) are
        // their owner's business, never ours to prune.
        let made_by_other = live
            .metadata
            .owner_references
            .as_ref()
            .is_some_and(|r| !r.is_empty());
        // Only what gitopsd applied: labels alone can be copied (Endpoints copy their Service's).
        let applied_by_us = live.metadata.managed_fields.as_ref().is_some_and(|m| {
            m.iter()
                .any(|e| e.manager.as_deref() == Some(FIELD_MANAGER))
        });
        if !self.owns(&live) || made_by_other || !applied_by_us {
            return Ok(DeleteOutcome::NotOwned);
        }
        let mut params = DeleteParams::background();
        // Only delete the object we checked, not a re-created namesake.
        if let Some(uid) = live.metadata.uid.clone() {
            params = params.preconditions(kube::api::Preconditions {
                uid: Some(uid),
                resource_version: None,
            });
        }
        match target.api.delete(&target.name, &params).await {
            Ok(_) => Ok(DeleteOutcome::Deleted),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(DeleteOutcome::AlreadyGone),
            Err(e) => Err(KubeError::from_kube(&object, "delete", e)),
        }
    }

    /// Waits until the named CRDs report `Established`.
    pub async fn wait_established(
        &self,
        crds: &[String],
        timeout: Duration,
    ) -> Result<(), KubeError> {
        if crds.is_empty() {
            return Ok(());
        }
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        );
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
        let deadline = tokio::time::Instant::now() + timeout;
        for name in crds {
            loop {
                let obj = api.get_opt(name).await.map_err(|e| {
                    KubeError::from_kube(&format!("CustomResourceDefinition {name}"), "get", e)
                })?;
                let established = obj
                    .as_ref()
                    .map(|o| health::condition_true(&o.data, "Established"))
                    .unwrap_or(false);
                if established {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(KubeError::Timeout {
                        what: format!("CustomResourceDefinition {name} to be Established"),
                        after: timeout,
                    });
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        // Kinds served by new CRDs must be discovered afresh.
        self.kinds.lock().await.clear();
        Ok(())
    }

    /// Everything in the cluster labelled as this instance's for this environment (all listable
    /// kinds), except objects made by other objects (`ownerReferences`).
    pub async fn owned_objects(&self) -> Result<Vec<OwnedObject>, KubeError> {
        self.labelled_objects(&self.selector(), false).await
    }

    /// Objects matching `selector` in every listable kind, with their API resource;
    /// `with_dependents` keeps objects that have `ownerReferences`.
    pub async fn labelled_objects(
        &self,
        selector: &str,
        with_dependents: bool,
    ) -> Result<Vec<OwnedObject>, KubeError> {
        let discovery = Discovery::new(self.client.clone())
            .run()
            .await
            .map_err(|e| KubeError::from_kube("cluster", "discover", e))?;
        let mut out = Vec::new();
        for group in discovery.groups() {
            for (resource, caps) in group.recommended_resources() {
                if !caps.supports_operation(verbs::LIST) || !caps.supports_operation(verbs::DELETE)
                {
                    continue;
                }
                // Events and the like are never applied; skip noise.
                if resource.kind == "Event" {
                    continue;
                }
                let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
                // In pages: a whole list of 10,000 objects' metadata (managedFields included)
                // was 50 MB of heap at once.
                let mut params = ListParams::default().labels(selector).limit(500);
                loop {
                    let list = match api.list_metadata(&params).await {
                        Ok(list) => list,
                        // Not allowed to list a kind: we never applied it with these credentials.
                        Err(kube::Error::Api(s)) if [403, 404, 405].contains(&s.code) => break,
                        Err(e) => return Err(KubeError::from_kube(&resource.kind, "list", e)),
                    };
                    for item in list.items {
                        let dependent = item
                            .metadata
                            .owner_references
                            .as_ref()
                            .is_some_and(|r| !r.is_empty());
                        let Some(name) =
                            item.metadata.name.filter(|_| with_dependents || !dependent)
                        else {
                            continue;
                        };
                        out.push(OwnedObject {
                            key: ObjectKey {
                                group: resource.group.clone(),
                                kind: resource.kind.clone(),
                                namespace: item.metadata.namespace,
                                name,
                            },
                            api_version: resource.api_version.clone(),
                            resource: resource.clone(),
                        });
                    }
                    match list.metadata.continue_ {
                        Some(token) if !token.is_empty() => params = params.continue_token(&token),
                        _ => break,
                    }
                }
            }
        }
        Ok(out)
    }
}

fn describe(m: &Manifest, target: &Target) -> String {
    let kind = &m.key.kind;
    match &target.namespace {
        Some(ns) => format!("{kind} {ns}/{}", target.name),
        None => format!("{kind} {}", target.name),
    }
}
