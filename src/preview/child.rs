//! The preview watcher's previews run in a child process: `gitopsd preview` (this executable)
//! in the renderer sandbox ([`sandbox::run`]: cleared environment, private scratch `HOME`, no
//! network where namespaces work, a timeout, capped output), under an address-space limit
//! (util-linux `prlimit`). PR authors are less trusted than the operator: whatever their change
//! makes the parser or a renderer do happens there, not in the daemon. The child gets no
//! credentials: only the path of the watcher's local mirror and a host config reduced to the
//! environments (name, folder, namespace, `sensitive:`), the renderers and the limits.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::PreviewError;
use crate::config::HostConfig;
use crate::git::Oid;
use crate::render::sandbox::{self, Isolation, Job, RunError, Scratch};

/// Address space of one preview process (its renderers included), in bytes.
const ADDRESS_SPACE: u64 = 4 << 30;
/// Wall-clock time of one preview.
const TIMEOUT: Duration = Duration::from_secs(300);
/// Markdown read back from one preview.
const MAX_OUTPUT: usize = 16 << 20;
/// Characters of the child's stderr kept in an error.
const MESSAGE_CHARS: usize = 2000;

/// How the watcher starts preview processes.
pub(crate) struct Launcher {
    exe: PathBuf,
    prlimit: Option<PathBuf>,
    isolation: Isolation,
    /// Holds the reduced host config; removed on drop.
    scratch: Scratch,
    config: PathBuf,
}

/// The host config the child sees: no repository credentials, no cluster or S3 settings.
pub(crate) fn reduced_config(config: &HostConfig, mirror: &Path, state: &Path) -> Value {
    let envs: Vec<Value> = config
        .environments
        .iter()
        .map(|e| {
            let sensitive: Vec<Value> = e
                .sensitive
                .iter()
                .map(|m| json!({ "kind": m.kind, "name": m.name, "namespace": m.namespace }))
                .collect();
            json!({
                "name": e.name,
                "path": e.path,
                "namespace": e.namespace,
                "kubernetes": {},
                "sensitive": sensitive,
            })
        })
        .collect();
    let r = &config.renderers;
    let limits = config.limits.limits();
    json!({
        "instance": config.instance(),
        "repository": { "url": mirror, "branch": config.repository.branch },
        "state_dir": state,
        // The child only renders and compares; the parent signs the note it writes, so the
        // signing key never reaches the child.
        "trust_unsigned_notes": true,
        "environments": envs,
        "renderers": {
            "kustomize": r.kustomize,
            "helm": r.helm,
            "timeout": r.timeout.map(|t| humantime::format_duration(t).to_string()),
            "scratch_dir": r.scratch_dir,
        },
        "limits": {
            "file_bytes": limits.file_bytes,
            "environment_bytes": limits.environment_bytes,
            "documents": limits.documents,
            "objects": limits.objects,
        },
    })
}

/// Removes null members (unset options), so that the child sees them unset.
fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

impl Launcher {
    /// Prepares the reduced config (JSON, which is YAML) in a private scratch directory.
    pub(crate) async fn new(
        exe: PathBuf,
        config: &HostConfig,
        mirror: &Path,
    ) -> Result<Launcher, PreviewError> {
        let scratch = Scratch::new(config.renderers.scratch_dir.as_deref())
            .map_err(crate::render::RenderFailure::Host)?;
        let path = scratch.path().join("config.yaml");
        let mut text = reduced_config(config, mirror, &scratch.path().join("state"));
        drop_nulls(&mut text);
        std::fs::write(&path, serde_json::to_string_pretty(&text)?).map_err(|source| {
            PreviewError::Io {
                op: "writing",
                path: path.clone(),
                source,
            }
        })?;
        let search = crate::config::search_path();
        let prlimit = crate::render::find_on_path("prlimit", search.as_deref());
        if prlimit.is_none() {
            tracing::warn!(
                "prlimit not found: preview processes run without an address-space limit"
            );
        }
        Ok(Launcher {
            exe,
            prlimit,
            isolation: Isolation::probe(search.as_deref()).await,
            scratch,
            config: path,
        })
    }

    /// The arguments after the program: `prlimit --as=… -- gitopsd preview …` when available.
    fn command(&self, mirror: &Path, base: Oid, head: Oid) -> (PathBuf, Vec<OsString>) {
        let mut args: Vec<OsString> = Vec::new();
        let program = match &self.prlimit {
            Some(prlimit) => {
                args.push(format!("--as={ADDRESS_SPACE}").into());
                args.push("--".into());
                args.push(self.exe.clone().into());
                prlimit.clone()
            }
            None => self.exe.clone(),
        };
        for a in [
            "preview",
            "--exit-zero",
            "--format",
            "markdown",
            "--max-comment-bytes",
            "65536",
        ] {
            args.push(a.into());
        }
        args.push("--repo".into());
        args.push(mirror.as_os_str().to_owned());
        args.push("--config".into());
        args.push(self.config.clone().into());
        args.push("--base".into());
        args.push(base.to_string().into());
        args.push("--head".into());
        args.push(head.to_string().into());
        (program, args)
    }

    /// Runs one preview; returns its Markdown (the note's text).
    pub(crate) async fn preview(
        &self,
        mirror: &Path,
        base: Oid,
        head: Oid,
    ) -> Result<String, PreviewError> {
        let (program, args) = self.command(mirror, base, head);
        let cwd = self.scratch.repo();
        let job = Job {
            program: &program,
            args,
            cwd: &cwd,
            scratch: &self.scratch,
            isolation: &self.isolation,
            timeout: TIMEOUT,
            max_stdout: MAX_OUTPUT,
        };
        match sandbox::run(job).await {
            Ok((stdout, _)) => Ok(String::from_utf8_lossy(&stdout).into_owned()),
            Err(e) => Err(PreviewError::Child(describe(e))),
        }
    }
}

/// A failed preview process for the log (the child's own message, capped).
fn describe(e: RunError) -> String {
    let (what, stderr) = match e {
        RunError::Host(e) => return e.to_string(),
        RunError::Timeout { after, stderr } => (
            format!(
                "did not finish within {}",
                humantime::format_duration(after)
            ),
            stderr,
        ),
        RunError::OutputTooLarge { limit, stderr } => {
            (format!("wrote more than {limit} bytes"), stderr)
        }
        RunError::Failed { status, stderr } => (format!("failed ({status})"), stderr),
    };
    let text = String::from_utf8_lossy(&stderr);
    let detail: String = text.trim().chars().take(MESSAGE_CHARS).collect();
    if detail.is_empty() {
        what
    } else {
        format!("{what}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_child_config_holds_no_credentials() {
        let text = "repository:\n  url: https://git.example/infra.git\n  auth: {username_file: /run/creds/user, password_file: /run/creds/password}\nstate_dir: /var/lib/gitopsd\nenvironments:\n  - name: dev\n    path: envs/dev\n    namespace: apps\n    kubernetes: {kubeconfig: /run/creds/kubeconfig}\n    s3: {access_key_id_file: /run/creds/ak, secret_access_key_file: /run/creds/sk}\n    sensitive: [{kind: ConfigMap, name: keys}]\nlimits: {objects: 7}\n";
        let config: HostConfig = serde_saphyr::from_str(text).unwrap();
        let reduced = reduced_config(&config, Path::new("/m.git"), Path::new("/s"));
        let shown = reduced.to_string();
        assert!(!shown.contains("/run/creds"), "{shown}");
        assert_eq!(reduced["repository"]["url"], "/m.git");
        assert_eq!(reduced["environments"][0]["sensitive"][0]["name"], "keys");
        assert_eq!(reduced["limits"]["objects"], 7);
        // It loads as a host config (JSON is YAML) without touching anything.
        let mut reduced = reduced;
        drop_nulls(&mut reduced);
        let back: HostConfig = serde_saphyr::from_str(&reduced.to_string()).unwrap();
        assert_eq!(back.environments[0].namespace, "apps");
        assert_eq!(back.instance(), config.instance());
    }
}
