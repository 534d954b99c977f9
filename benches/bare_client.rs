//! The apiserver's limit for a first apply, as `tests/bench/flux` prints it (issue 17): a bare
//! client sends the requests gitopsd's first apply sends (a server-side apply per object, field
//! validation strict, the same ownership labels, Namespaces first, then the ConfigMaps) with the
//! same concurrency and the same HTTP stack (kube's client), and nothing else: no git, no
//! render, no validation, no existence check, no notes. gitopsd's first apply minus this is what
//! gitopsd itself costs.
//!
//! Usage: cargo bench --bench bare_client -- PREFIX OBJECTS NAMESPACES CONCURRENCY
//! (KUBECONFIG names the cluster; creates Namespaces PREFIX-00.. and OBJECTS ConfigMaps in them,
//! the same shape as the benchmark's repository; the caller deletes them).

use std::time::Instant;

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use gitopsd::k8s::{ENV_ANNOTATION, ENV_LABEL, INSTANCE_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

const FIELD_MANAGER: &str = "gitopsd-bare-client";

struct Args {
    prefix: String,
    objects: usize,
    namespaces: usize,
    concurrency: usize,
}

/// The arguments, or `None` when run by `cargo test` (cargo passes `--bench` only to a
/// benchmark run): it is built and linted with the tests, and measures only when asked.
fn args() -> anyhow::Result<Option<Args>> {
    let all: Vec<String> = std::env::args().skip(1).collect();
    if !all.iter().any(|a| a == "--bench") {
        return Ok(None);
    }
    let a: Vec<String> = all.into_iter().filter(|a| a != "--bench").collect();
    let [prefix, objects, namespaces, concurrency] = a.as_slice() else {
        bail!("usage: bare_client PREFIX OBJECTS NAMESPACES CONCURRENCY");
    };
    Ok(Some(Args {
        prefix: prefix.clone(),
        objects: objects.parse().context("OBJECTS")?,
        namespaces: namespaces.parse().context("NAMESPACES")?,
        concurrency: concurrency.parse().context("CONCURRENCY")?,
    }))
}

/// `metadata` with gitopsd's ownership marks, as `k8s::desired_body` adds them.
fn metadata(name: &str, namespace: Option<&str>, env: &str) -> Value {
    let mut meta = json!({
        "name": name,
        "labels": {
            MANAGED_BY_LABEL: MANAGED_BY_VALUE,
            INSTANCE_LABEL: "bare-client",
            ENV_LABEL: env,
        },
        "annotations": { ENV_ANNOTATION: env },
    });
    if let (Some(ns), Some(obj)) = (namespace, meta.as_object_mut()) {
        obj.insert("namespace".into(), Value::String(ns.to_string()));
    }
    meta
}

async fn apply_all(
    client: &kube::Client,
    resource: &ApiResource,
    objects: Vec<(Option<String>, String, Value)>,
    concurrency: usize,
) -> anyhow::Result<()> {
    let params = PatchParams::apply(FIELD_MANAGER).validation_strict();
    futures::stream::iter(objects.into_iter().map(|(ns, name, body)| {
        let api: Api<DynamicObject> = match &ns {
            Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
            None => Api::all_with(client.clone(), resource),
        };
        let params = params.clone();
        async move {
            api.patch(&name, &params, &Patch::Apply(&body))
                .await
                .map(|_| ())
                .with_context(|| format!("apply {name}"))
        }
    }))
    .buffer_unordered(concurrency.max(1))
    .try_collect()
    .await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(a) = args()? else {
        println!(
            "bare_client: a benchmark, run by tests/bench/flux (cargo bench --bench bare_client -- ...)"
        );
        return Ok(());
    };
    let config = kube::Config::infer().await.context("kubeconfig")?;
    let client = kube::Client::try_from(config).context("client")?;
    let env = a.prefix.clone();
    let per_ns = a.objects / a.namespaces.max(1);
    let ns_name = |n: usize| format!("{}-{n:02}", a.prefix);
    let namespaces = (0..a.namespaces)
        .map(|n| {
            let name = ns_name(n);
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": metadata(&name, None, &env)});
            (None, name, body)
        })
        .collect();
    let config_maps = (0..a.namespaces)
        .flat_map(|n| (0..per_ns).map(move |i| (n, i)))
        .map(|(n, i)| {
            let (ns, name) = (ns_name(n), format!("cm-{i:05}"));
            let body = json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": metadata(&name, Some(&ns), &env),
                "data": {"key": format!("value-{i}"), "other": "some other value"},
            });
            (Some(ns), name, body)
        })
        .collect();
    let t0 = Instant::now();
    apply_all(
        &client,
        &ApiResource::erase::<Namespace>(&()),
        namespaces,
        a.concurrency,
    )
    .await?;
    apply_all(
        &client,
        &ApiResource::erase::<ConfigMap>(&()),
        config_maps,
        a.concurrency,
    )
    .await?;
    println!(
        "{} objects ({} ConfigMaps, {} Namespaces) in {:.2} s at concurrency {}",
        per_ns * a.namespaces + a.namespaces,
        per_ns * a.namespaces,
        a.namespaces,
        t0.elapsed().as_secs_f64(),
        a.concurrency
    );
    Ok(())
}
