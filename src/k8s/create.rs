//! Creating without a separate dry-run, for a first apply. A server-side apply that creates an
//! object is atomic (the whole object is stored, or nothing), so an object the cluster does not
//! have yet can be sent once instead of dry-run and then applied. What must still hold: an object
//! that exists without this environment's labels is never taken over. So right before each phase
//! is sent (after the Namespaces it lands in exist), the names of every kind and namespace it
//! writes to are listed, one metadata-only list each instead of a request per object. The caller
//! deletes what the pass created when anything fails. Reads use gitopsd's own identity.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::{Api, DynamicObject, ListParams};

use super::{Cluster, KubeError};
use crate::manifest::{Manifest, ObjectKey};

/// Names per list request.
const PAGE: u32 = 500;

impl Cluster {
    /// Of `objects`, those that exist in the cluster (owned or not).
    pub async fn existing(&self, objects: &[&Manifest]) -> Result<BTreeSet<ObjectKey>, KubeError> {
        type Group<'a> = (Api<DynamicObject>, Vec<&'a Manifest>);
        let mut groups: BTreeMap<String, Group<'_>> = BTreeMap::new();
        for m in objects {
            let target = self.target(m).await?;
            let api: Api<DynamicObject> = match &target.namespace {
                Some(ns) => Api::namespaced_with(self.client.clone(), ns, &target.resource),
                None => Api::all_with(self.client.clone(), &target.resource),
            };
            groups
                .entry(api.resource_url().to_string())
                .or_insert_with(|| (api, Vec::new()))
                .1
                .push(m);
        }
        let mut found = BTreeSet::new();
        for (url, (api, members)) in groups {
            let names = list_names(&api, &url).await?;
            found.extend(
                members
                    .iter()
                    .filter(|m| names.contains(&m.key.name))
                    .map(|m| m.key.clone()),
            );
        }
        Ok(found)
    }
}

/// Every name under `api` (a namespace that does not exist lists none).
async fn list_names(api: &Api<DynamicObject>, url: &str) -> Result<BTreeSet<String>, KubeError> {
    let mut names = BTreeSet::new();
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(PAGE);
        if let Some(t) = &token {
            params = params.continue_token(t);
        }
        let page = api
            .list_metadata(&params)
            .await
            .map_err(|e| KubeError::from_kube(url, "list", e))?;
        names.extend(page.items.into_iter().filter_map(|o| o.metadata.name));
        match page.metadata.continue_ {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => return Ok(names),
        }
    }
}
