//! Running a renderer binary in a sandbox: a private scratch directory, a cleared environment,
//! a timeout, capped output, and no network where the host allows it.
//!
//! Isolation: with util-linux `unshare` the process runs in a fresh network namespace (no
//! interfaces but a down loopback) and a fresh PID namespace (`--kill-child`), so a timeout
//! kills the renderer and every process it started (helm). As root that works directly; as
//! another user it needs unprivileged user namespaces (`--user --map-root-user`). When neither
//! works (no `unshare`, a container without the privilege), the renderer runs without network
//! isolation: it still sees only the exported tree (the kustomization closure, no symlinks),
//! a cleared environment and an empty `HOME`, but could open network connections, and on a
//! timeout only the renderer itself is killed (a helm child exits when its pipes close).
//! [`Isolation::probe`] decides once at start; the choice is logged and visible in
//! [`Isolation::describe`]. The renderer runs with the daemon's user and file permissions.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

use super::error::HostError;

/// The only `PATH` a renderer sees.
const SAFE_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// How much of stderr is kept (the rest is read and dropped).
const MAX_STDERR: usize = 64 * 1024;
/// How long stderr may stay open after the process was killed or exited.
const STDERR_GRACE: Duration = Duration::from_secs(2);

/// How renderer processes are isolated from the host (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Isolation {
    /// `unshare` and its arguments, when namespaces work here.
    unshare: Option<(PathBuf, Vec<&'static str>)>,
}

const NAMESPACES: [&str; 4] = ["--net", "--pid", "--fork", "--kill-child"];
const USER_NAMESPACES: [&str; 6] = [
    "--user",
    "--map-root-user",
    "--net",
    "--pid",
    "--fork",
    "--kill-child",
];

impl Isolation {
    /// No namespaces.
    pub fn none() -> Isolation {
        Isolation::default()
    }

    /// Finds `unshare` on `search_path` and tries the namespaces (directly, then through a
    /// user namespace); falls back to [`Isolation::none`].
    pub async fn probe(search_path: Option<&OsStr>) -> Isolation {
        let Some(unshare) = super::binaries::find_on_path("unshare", search_path) else {
            tracing::warn!("unshare not found: renderers run without network isolation");
            return Isolation::none();
        };
        for args in [&NAMESPACES[..], &USER_NAMESPACES[..]] {
            let ok = Command::new(&unshare)
                .args(args)
                .arg("--")
                .arg(&unshare)
                .arg("--version")
                .env_clear()
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .status();
            if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(10), ok).await
                && status.success()
            {
                let iso = Isolation {
                    unshare: Some((unshare.clone(), args.to_vec())),
                };
                tracing::info!(isolation = iso.describe(), "renderer sandbox");
                return iso;
            }
        }
        tracing::warn!(
            unshare = %unshare.display(),
            "cannot create namespaces here: renderers run without network isolation"
        );
        Isolation::none()
    }

    /// Whether renderers run without network access.
    pub fn network_isolated(&self) -> bool {
        self.unshare.is_some()
    }

    /// For logs and notes.
    pub fn describe(&self) -> &'static str {
        match &self.unshare {
            Some((_, args)) if args.contains(&"--user") => {
                "user, network and PID namespaces (unshare)"
            }
            Some(_) => "network and PID namespaces (unshare)",
            None => "no namespaces (network not isolated)",
        }
    }
}

/// A private (0700) scratch directory: `repo/` is the exported tree, `home/` the renderer's
/// `HOME`. Removed on drop.
pub struct Scratch {
    dir: tempfile::TempDir,
    /// The canonical path (what the renderer sees as its working directory).
    path: PathBuf,
}

impl Scratch {
    /// Creates one under `base` (the system's temporary directory when `None`).
    pub fn new(base: Option<&Path>) -> Result<Scratch, HostError> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("gitopsd-render-");
        let dir = match base {
            Some(base) => builder.tempdir_in(base),
            None => builder.tempdir(),
        }
        .map_err(HostError::scratch(
            base.unwrap_or(Path::new("(temporary directory)")),
        ))?;
        let path = std::fs::canonicalize(dir.path()).map_err(HostError::scratch(dir.path()))?;
        let scratch = Scratch { dir, path };
        for sub in [
            "repo",
            "home/tmp",
            "home/.cache",
            "home/.config",
            "home/.local/share",
        ] {
            let p = scratch.path.join(sub);
            std::fs::create_dir_all(&p).map_err(HostError::scratch(&p))?;
        }
        Ok(scratch)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The export root.
    pub fn repo(&self) -> PathBuf {
        self.path.join("repo")
    }

    pub fn home(&self) -> PathBuf {
        self.path.join("home")
    }

    /// Removes the directory now (also done on drop, ignoring errors).
    pub fn close(self) -> Result<(), HostError> {
        let path = self.dir.path().to_path_buf();
        self.dir.close().map_err(HostError::scratch(&path))
    }
}

/// One renderer invocation.
pub struct Job<'a> {
    pub program: &'a Path,
    pub args: Vec<OsString>,
    pub cwd: &'a Path,
    pub scratch: &'a Scratch,
    pub isolation: &'a Isolation,
    pub timeout: Duration,
    pub max_stdout: usize,
}

/// A run that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("did not finish within {}", humantime::format_duration(*.after))]
    Timeout { after: Duration, stderr: Vec<u8> },
    #[error("wrote more than {limit} bytes of output")]
    OutputTooLarge { limit: usize, stderr: Vec<u8> },
    #[error("exited with {status}")]
    Failed { status: ExitStatus, stderr: Vec<u8> },
}

enum Ended {
    Exited(ExitStatus, Vec<u8>),
    TooLarge,
}

/// Runs `job`; returns its stdout and stderr when it exits successfully.
pub async fn run(job: Job<'_>) -> Result<(Vec<u8>, Vec<u8>), RunError> {
    let mut cmd = command(&job);
    let spawn_err = |source| HostError::Process {
        program: job.program.to_path_buf(),
        source,
    };
    let mut child = cmd.spawn().map_err(spawn_err)?;
    let stdout = child.stdout.take();
    let stderr = tokio::spawn(read_capped(child.stderr.take(), MAX_STDERR, true));
    let max = job.max_stdout;
    let ended = tokio::time::timeout(job.timeout, async {
        let (out, overflow) = read_capped(stdout, max, false).await?;
        if overflow {
            return Ok(Ended::TooLarge);
        }
        Ok::<_, std::io::Error>(Ended::Exited(child.wait().await?, out))
    })
    .await;
    match ended {
        Ok(Ok(Ended::Exited(status, out))) => {
            let stderr = finish_stderr(stderr).await;
            if status.success() {
                Ok((out, stderr))
            } else {
                Err(RunError::Failed { status, stderr })
            }
        }
        Ok(Ok(Ended::TooLarge)) => {
            kill(&mut child).await;
            let stderr = finish_stderr(stderr).await;
            Err(RunError::OutputTooLarge { limit: max, stderr })
        }
        Ok(Err(e)) => {
            kill(&mut child).await;
            Err(spawn_err(e).into())
        }
        Err(_) => {
            kill(&mut child).await;
            let stderr = finish_stderr(stderr).await;
            Err(RunError::Timeout {
                after: job.timeout,
                stderr,
            })
        }
    }
}

fn command(job: &Job<'_>) -> Command {
    let mut cmd = match &job.isolation.unshare {
        Some((unshare, args)) => {
            let mut cmd = Command::new(unshare);
            cmd.args(args).arg("--").arg(job.program);
            cmd
        }
        None => {
            let mut cmd = Command::new(job.program);
            // Its own process group: terminal signals meant for gitopsd do not reach it.
            cmd.process_group(0);
            cmd
        }
    };
    let home = job.scratch.home();
    cmd.args(&job.args)
        .env_clear()
        .env("PATH", SAFE_PATH)
        .env("HOME", &home)
        .env("TMPDIR", home.join("tmp"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("HELM_CACHE_HOME", home.join(".cache/helm"))
        .env("HELM_CONFIG_HOME", home.join(".config/helm"))
        .env("HELM_DATA_HOME", home.join(".local/share/helm"))
        .current_dir(job.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn kill(child: &mut Child) {
    if let Err(e) = child.kill().await {
        tracing::debug!(error = %e, "renderer already gone");
    }
}

/// The stderr collected so far, waiting at most [`STDERR_GRACE`] for its end.
async fn finish_stderr(task: tokio::task::JoinHandle<std::io::Result<(Vec<u8>, bool)>>) -> Vec<u8> {
    let abort = task.abort_handle();
    match tokio::time::timeout(STDERR_GRACE, task).await {
        Ok(Ok(Ok((bytes, _)))) => bytes,
        Ok(_) => Vec::new(),
        Err(_) => {
            abort.abort();
            Vec::new()
        }
    }
}

/// Reads up to `cap` bytes; returns them and whether there was more. With `drain`, keeps
/// reading (and dropping) after the cap until the end, so the writer never blocks.
async fn read_capped<R: AsyncRead + Unpin>(
    reader: Option<R>,
    cap: usize,
    drain: bool,
) -> std::io::Result<(Vec<u8>, bool)> {
    let Some(mut reader) = reader else {
        return Ok((Vec::new(), false));
    };
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut overflow = false;
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Ok((buf, overflow));
        }
        let room = cap.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..n.min(room)]);
        if n > room {
            overflow = true;
            if !drain {
                return Ok((buf, true));
            }
        }
    }
}

/// `PATH`-style lookup helper for tests and callers: the directories of `search_path`.
pub(crate) fn split_search_path(search_path: Option<&OsStr>) -> Vec<PathBuf> {
    search_path
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default()
}
