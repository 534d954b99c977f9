//! A one-shot look at the live health of an environment's owned objects (`gitopsd status`),
//! for a process that keeps no watches.

use kube::api::{Api, DynamicObject, ListParams};

use super::health::Health;
use super::live::LiveObject;
use super::{Cluster, KubeError};

/// How many unhealthy objects a snapshot names.
const NAMED: usize = 10;

/// Live health of an environment.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct LiveHealth {
    pub objects: usize,
    pub healthy: usize,
    pub progressing: usize,
    pub failed: usize,
    /// `Kind namespace/name: reason` of the first unhealthy objects.
    pub unhealthy: Vec<String>,
}

impl Cluster {
    /// Lists every owned object (all kinds in use) and assesses its health.
    pub async fn live_health(&self) -> Result<LiveHealth, KubeError> {
        let mut out = LiveHealth::default();
        let mut kinds = std::collections::BTreeMap::new();
        for owned in self.owned_objects().await? {
            kinds
                .entry((owned.resource.group.clone(), owned.resource.kind.clone()))
                .or_insert(owned.resource);
        }
        let params = ListParams::default().labels(&self.selector());
        for resource in kinds.values() {
            let api: Api<DynamicObject> = Api::all_with(self.client().clone(), resource);
            let list = api
                .list(&params)
                .await
                .map_err(|e| KubeError::from_kube(&resource.kind, "list", e))?;
            for item in list.items {
                let value = serde_json::to_value(&item).unwrap_or_default();
                let o = LiveObject::from_object(
                    &resource.group,
                    &resource.kind,
                    &resource.api_version,
                    &value,
                );
                if o.owned_by_other {
                    continue;
                }
                out.objects += 1;
                let name = crate::manifest::ObjectKey {
                    group: resource.group.clone(),
                    kind: resource.kind.clone(),
                    namespace: item.metadata.namespace.clone(),
                    name: item.metadata.name.clone().unwrap_or_default(),
                }
                .to_string();
                let reason = match o.health {
                    Health::Healthy => {
                        out.healthy += 1;
                        continue;
                    }
                    Health::Progressing(r) => {
                        out.progressing += 1;
                        r
                    }
                    Health::Failed(r) => {
                        out.failed += 1;
                        r
                    }
                };
                if out.unhealthy.len() < NAMED {
                    out.unhealthy.push(format!("{name}: {reason}"));
                }
            }
        }
        Ok(out)
    }
}
