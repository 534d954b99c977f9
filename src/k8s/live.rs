//! The live state of one environment's owned objects, kept by watches (kube-runtime `watcher`,
//! one per kind in use, filtered by the instance and environment labels).
//!
//! Each entry keeps only what a pass needs: the fingerprint of the fields gitopsd manages, the
//! object's health, its generation and whether another object owns it. Planning, drift detection
//! and health waits read this cache; none of them LISTs per pass.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::health::{self, Health};
use super::{FIELD_MANAGER, KubeError, managed};
use crate::manifest::ObjectKey;

/// How long a new watch may take to list what exists before a pass gives up (and retries).
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// What the cache knows of one live object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveObject {
    pub api_version: String,
    /// Fingerprint of the fields gitopsd's apply manages (`None`: it manages none).
    pub managed: Option<u64>,
    /// Has `ownerReferences`: another object made it (an EndpointSlice copying its Service's
    /// labels, say), so it is never pruned.
    pub owned_by_other: bool,
    pub generation: i64,
    pub health: Health,
}

impl LiveObject {
    /// Reads what the cache keeps from a full object.
    pub fn from_object(
        group: &str,
        kind: &str,
        api_version: &str,
        value: &serde_json::Value,
    ) -> Self {
        LiveObject {
            api_version: api_version.to_string(),
            managed: managed::live_fingerprint(value, FIELD_MANAGER),
            owned_by_other: value
                .pointer("/metadata/ownerReferences")
                .and_then(serde_json::Value::as_array)
                .is_some_and(|refs| !refs.is_empty()),
            generation: value
                .pointer("/metadata/generation")
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(0),
            health: not_stale(health::assess(group, kind, value), value),
        }
    }
}

/// The deployment controller keeps a `ProgressDeadlineExceeded` condition until a new rollout
/// makes progress, so right after gitopsd changes a timed-out Deployment (a revert, a rollback)
/// the old verdict is still there. A deadline that passed before gitopsd's last apply of the
/// object (its managedFields time) is about an earlier rollout: not a failure of this one.
fn not_stale(health: Health, value: &serde_json::Value) -> Health {
    let Health::Failed(reason) = &health else {
        return health;
    };
    let deadline = value
        .pointer("/status/conditions")
        .and_then(serde_json::Value::as_array)
        .and_then(|cs| {
            cs.iter().find(|c| {
                c.get("type").and_then(serde_json::Value::as_str) == Some("Progressing")
                    && c.get("reason").and_then(serde_json::Value::as_str)
                        == Some("ProgressDeadlineExceeded")
            })
        })
        .and_then(|c| c.get("lastUpdateTime"))
        .and_then(serde_json::Value::as_str);
    let applied = managed::apply_time(value, FIELD_MANAGER);
    match (deadline, applied) {
        // RFC 3339 times in UTC with second precision compare as strings.
        (Some(deadline), Some(applied)) if applied >= deadline => Health::Progressing(format!(
            "a new rollout started after an earlier deadline ({reason})"
        )),
        _ => health,
    }
}

#[derive(Default)]
struct State {
    objects: RwLock<HashMap<ObjectKey, LiveObject>>,
    /// Keys whose managed fields changed or that disappeared since the last `take_dirty`.
    dirty: Mutex<HashSet<ObjectKey>>,
    /// Kinds being watched (group, kind) and how far their first list got.
    kinds: Mutex<HashMap<(String, String), watch::Receiver<Listing>>>,
}

/// Progress of a kind's first list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Listing {
    Running,
    Done,
    /// The API refused to list the kind (forbidden, gone): nothing of it is cached; objects of
    /// that kind plan as creates, and their dry-run says why they cannot be applied.
    Refused,
}

/// A watch-fed cache of one environment's owned objects.
#[derive(Clone)]
pub struct LiveCache {
    client: kube::Client,
    selector: String,
    state: Arc<State>,
    changed: Arc<watch::Sender<u64>>,
    cancel: CancellationToken,
}

impl LiveCache {
    /// A cache watching objects that match `selector`; its watches stop when `cancel` fires.
    pub fn new(client: kube::Client, selector: String, cancel: CancellationToken) -> LiveCache {
        LiveCache {
            client,
            selector,
            state: Arc::new(State::default()),
            changed: Arc::new(watch::channel(0).0),
            cancel,
        }
    }

    /// Starts watching the kinds not watched yet and waits until each has listed what exists.
    /// Kinds the API refuses to list are left out (and retried on the next call).
    pub async fn ensure(&self, resources: &[ApiResource]) -> Result<(), KubeError> {
        let mut waits = Vec::new();
        for resource in resources {
            let id = (resource.group.clone(), resource.kind.clone());
            let mut kinds = self.state.kinds.lock().map_err(|_| poisoned())?;
            let rx = match kinds.get(&id) {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(Listing::Running);
                    kinds.insert(id.clone(), rx.clone());
                    tokio::spawn(self.clone().watch_kind(resource.clone(), tx));
                    rx
                }
            };
            waits.push((id, rx));
        }
        for ((group, kind), mut rx) in waits {
            let listed =
                tokio::time::timeout(SYNC_TIMEOUT, rx.wait_for(|l| *l != Listing::Running)).await;
            match listed.as_ref().map(|r| r.as_deref().cloned()) {
                Ok(Ok(Listing::Done)) => {}
                Ok(Ok(_)) | Ok(Err(_)) => {
                    if let Ok(mut kinds) = self.state.kinds.lock() {
                        kinds.remove(&(group, kind));
                    }
                }
                Err(_) => {
                    return Err(KubeError::Timeout {
                        what: format!("the watch of {kind} to list existing objects"),
                        after: SYNC_TIMEOUT,
                    });
                }
            }
        }
        Ok(())
    }

    async fn watch_kind(self, resource: ApiResource, listing_tx: watch::Sender<Listing>) {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
        let config = watcher::Config::default()
            .labels(&self.selector)
            .page_size(500);
        let stream = watcher::watcher(api, config).default_backoff();
        futures::pin_mut!(stream);
        let mut listing: Option<HashSet<ObjectKey>> = None;
        loop {
            let event = tokio::select! {
                _ = self.cancel.cancelled() => return,
                event = stream.next() => event,
            };
            match event {
                None => return,
                Some(Ok(Event::Init)) => listing = Some(HashSet::new()),
                Some(Ok(Event::InitApply(obj))) => {
                    if let Some(key) = self.upsert(&resource, &obj)
                        && let Some(seen) = listing.as_mut()
                    {
                        seen.insert(key);
                    }
                }
                Some(Ok(Event::InitDone)) => {
                    if let Some(seen) = listing.take() {
                        self.retain_kind(&resource, &seen);
                    }
                    listing_tx.send_replace(Listing::Done);
                    self.notify();
                }
                Some(Ok(Event::Apply(obj))) => {
                    self.upsert(&resource, &obj);
                    self.notify();
                }
                Some(Ok(Event::Delete(obj))) => {
                    if let Some(key) = key_of(&resource, &obj) {
                        self.remove(&key);
                    }
                    self.notify();
                }
                Some(Err(e)) if *listing_tx.borrow() == Listing::Running && refused(&e) => {
                    tracing::debug!(kind = %resource.kind, error = %e, "not allowed to watch this kind");
                    listing_tx.send_replace(Listing::Refused);
                    return;
                }
                // The watcher backs off and retries by itself; the cache keeps serving.
                Some(Err(e)) => {
                    tracing::debug!(kind = %resource.kind, error = %e, "watch interrupted; retrying")
                }
            }
        }
    }

    fn upsert(&self, resource: &ApiResource, obj: &DynamicObject) -> Option<ObjectKey> {
        let key = key_of(resource, obj)?;
        let value = serde_json::to_value(obj).ok()?;
        let entry = LiveObject::from_object(
            &resource.group,
            &resource.kind,
            &resource.api_version,
            &value,
        );
        let previous = match self.state.objects.write() {
            Ok(mut objects) => objects.insert(key.clone(), entry.clone()),
            Err(_) => return None,
        };
        if previous.is_none_or(|p| p.managed != entry.managed) {
            self.mark_dirty(&key);
        }
        Some(key)
    }

    fn remove(&self, key: &ObjectKey) {
        let removed = match self.state.objects.write() {
            Ok(mut objects) => objects.remove(key).is_some(),
            Err(_) => false,
        };
        if removed {
            self.mark_dirty(key);
        }
    }

    /// After a (re)list: forget objects of the kind that the list no longer shows.
    fn retain_kind(&self, resource: &ApiResource, seen: &HashSet<ObjectKey>) {
        let gone: Vec<ObjectKey> = match self.state.objects.read() {
            Ok(objects) => objects
                .keys()
                .filter(|k| k.group == resource.group && k.kind == resource.kind)
                .filter(|k| !seen.contains(*k))
                .cloned()
                .collect(),
            Err(_) => return,
        };
        for key in gone {
            self.remove(&key);
        }
    }

    fn mark_dirty(&self, key: &ObjectKey) {
        if let Ok(mut dirty) = self.state.dirty.lock() {
            dirty.insert(key.clone());
        }
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that changes whenever the cache does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Keys whose managed fields changed, or that were deleted, since the last call.
    pub fn take_dirty(&self) -> HashSet<ObjectKey> {
        self.state
            .dirty
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default()
    }

    /// The live object with this key (effective namespace), if it exists and is ours.
    pub fn get(&self, key: &ObjectKey) -> Option<LiveObject> {
        self.state.objects.read().ok()?.get(key).cloned()
    }

    /// Every cached object that gitopsd may prune: labelled as ours, applied by gitopsd (an
    /// `Endpoints` copying its Service's labels was not), and not made by another object.
    pub fn prunable(&self) -> Vec<(ObjectKey, String)> {
        match self.state.objects.read() {
            Ok(objects) => objects
                .iter()
                .filter(|(_, o)| !o.owned_by_other && o.managed.is_some())
                .map(|(k, o)| (k.clone(), o.api_version.clone()))
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn key_of(resource: &ApiResource, obj: &DynamicObject) -> Option<ObjectKey> {
    Some(ObjectKey {
        group: resource.group.clone(),
        kind: resource.kind.clone(),
        namespace: obj.metadata.namespace.clone(),
        name: obj.metadata.name.clone()?,
    })
}

/// A refusal that waiting will not change: forbidden, not found, not allowed.
fn refused(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s)) => (403..=405).contains(&s.code),
        _ => false,
    }
}

fn poisoned() -> KubeError {
    KubeError::Transport {
        object: "live cache".into(),
        verb: "lock",
        message: "a watch task panicked while holding the cache".into(),
    }
}

/// What a health wait needs to know of one object it waits for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Awaited {
    /// The generation an apply returned (0: any).
    pub min_generation: i64,
}

/// Objects with the reason they are not healthy.
pub type Reasons = Vec<(ObjectKey, String)>;

/// Health of the given objects from the cache: `Failed` ones first, then those still
/// progressing (missing, or older than the generation an apply returned).
pub fn assess(cache: &LiveCache, keys: &[(ObjectKey, Awaited)]) -> (Reasons, Reasons) {
    let mut failed = Vec::new();
    let mut progressing = Vec::new();
    for (key, awaited) in keys {
        match cache.get(key) {
            None => progressing.push((key.clone(), "object does not exist".to_string())),
            Some(o) if o.generation < awaited.min_generation => progressing.push((
                key.clone(),
                format!("generation {} not seen yet", awaited.min_generation),
            )),
            Some(o) => match o.health {
                Health::Healthy => {}
                Health::Progressing(r) => progressing.push((key.clone(), r)),
                Health::Failed(r) => failed.push((key.clone(), r)),
            },
        }
    }
    (failed, progressing)
}
