//! `gitopsd adopt`: hands an environment's objects from one instance to this one, by moving the
//! `gitopsd.dev/instance` label. Objects labelled before instances existed carry no instance
//! label; they are what `adopt` takes when no previous instance is named.

use kube::api::{Api, DynamicObject, Patch, PatchParams};

use super::{Cluster, ENV_LABEL, INSTANCE_LABEL, KubeError, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::manifest::ObjectKey;

/// Field manager of the relabelling patch (the next apply owns the label again).
const ADOPT_MANAGER: &str = "gitopsd-adopt";

/// What `adopt` found and changed.
#[derive(Debug, Default)]
pub struct Adopted {
    pub objects: Vec<ObjectKey>,
    pub failures: Vec<(ObjectKey, KubeError)>,
}

/// Selector of an environment's objects owned by `from` (`None`: labelled before instances).
pub fn previous_owner_selector(env: &str, from: Option<&str>) -> String {
    let instance = match from {
        Some(name) => format!("{INSTANCE_LABEL}={name}"),
        None => format!("!{INSTANCE_LABEL}"),
    };
    format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{ENV_LABEL}={env},{instance}")
}

impl Cluster {
    /// Relabels every object of this environment owned by `from` as this instance's
    /// (`dry_run`: only lists them).
    pub async fn adopt(&self, from: Option<&str>, dry_run: bool) -> Result<Adopted, KubeError> {
        let selector = previous_owner_selector(self.environment(), from);
        let mut out = Adopted::default();
        let patch = serde_json::json!({"metadata": {"labels": {INSTANCE_LABEL: self.instance()}}});
        let params = PatchParams {
            field_manager: Some(ADOPT_MANAGER.into()),
            dry_run,
            ..PatchParams::default()
        };
        for owned in self.labelled_objects(&selector, false).await? {
            let api: Api<DynamicObject> = match &owned.key.namespace {
                Some(ns) => Api::namespaced_with(self.client().clone(), ns, &owned.resource),
                None => Api::all_with(self.client().clone(), &owned.resource),
            };
            match api
                .patch(&owned.key.name, &params, &Patch::Merge(&patch))
                .await
            {
                Ok(_) => out.objects.push(owned.key),
                Err(e) => {
                    let object = owned.key.to_string();
                    out.failures
                        .push((owned.key, KubeError::from_kube(&object, "adopt", e)));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_name_the_previous_owner_or_none() {
        assert_eq!(
            previous_owner_selector("dev", Some("old")),
            "app.kubernetes.io/managed-by=gitopsd,gitopsd.dev/environment=dev,gitopsd.dev/instance=old"
        );
        assert!(previous_owner_selector("dev", None).ends_with(",!gitopsd.dev/instance"));
    }
}
