//! The renderer binaries: configured paths or a `PATH` lookup at start, each with the version
//! it reports (read once, recorded in notes and previews).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::HostError;
use super::sandbox::{self, Isolation, Job, RunError, Scratch};

/// How long `kustomize version` / `helm version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(20);

/// One renderer binary and the version it reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binary {
    pub path: PathBuf,
    /// e.g. `v5.8.3`.
    pub version: String,
}

/// What the host config says (`renderers:`); unset binaries are looked up on `PATH`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RendererPaths {
    pub kustomize: Option<PathBuf>,
    pub helm: Option<PathBuf>,
    /// Parent of the private scratch directories (the system temporary directory when unset).
    pub scratch_dir: Option<PathBuf>,
}

/// The renderers available to this process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Renderers {
    pub kustomize: Option<Binary>,
    pub helm: Option<Binary>,
    pub isolation: Isolation,
    pub scratch_dir: Option<PathBuf>,
}

impl Renderers {
    /// Resolves the configured binaries (which must work) or finds them on `search_path` (the
    /// caller's `PATH`; a binary not found is `None`, an error only once a repository needs
    /// it), reads their versions, and probes the sandbox's isolation.
    pub async fn resolve(
        paths: &RendererPaths,
        search_path: Option<&OsStr>,
    ) -> Result<Renderers, HostError> {
        let scratch_dir = paths.scratch_dir.clone();
        let kustomize = match locate(paths.kustomize.as_deref(), "kustomize", search_path) {
            Some(p) => Some(probe(&p, &["version"], scratch_dir.as_deref()).await?),
            None => None,
        };
        let helm = match locate(paths.helm.as_deref(), "helm", search_path) {
            Some(p) => Some(probe(&p, &["version", "--short"], scratch_dir.as_deref()).await?),
            None => None,
        };
        Ok(Renderers {
            kustomize,
            helm,
            isolation: Isolation::probe(search_path).await,
            scratch_dir,
        })
    }

    /// e.g. `kustomize v5.8.3 + helm v4.3.1` (helm only when the build used charts).
    pub fn describe(&self, uses_helm: bool) -> String {
        let name = |what: &str, b: &Option<Binary>| match b {
            Some(b) => format!("{what} {}", b.version),
            None => format!("{what} (missing)"),
        };
        if uses_helm {
            format!(
                "{} + {}",
                name("kustomize", &self.kustomize),
                name("helm", &self.helm)
            )
        } else {
            name("kustomize", &self.kustomize)
        }
    }
}

fn locate(configured: Option<&Path>, name: &str, search_path: Option<&OsStr>) -> Option<PathBuf> {
    match configured {
        Some(p) => Some(p.to_path_buf()),
        None => find_on_path(name, search_path),
    }
}

/// The first executable file called `name` in the directories of `search_path`.
pub fn find_on_path(name: &str, search_path: Option<&OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    sandbox::split_search_path(search_path)
        .into_iter()
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Runs `path args` in the sandbox's cleared environment and returns the version it prints.
pub async fn probe(
    path: &Path,
    args: &[&str],
    scratch_dir: Option<&Path>,
) -> Result<Binary, HostError> {
    let bad = |message: String| HostError::Binary {
        path: path.to_path_buf(),
        message,
    };
    let scratch = Scratch::new(scratch_dir)?;
    let job = Job {
        program: path,
        args: args.iter().map(Into::into).collect(),
        cwd: &scratch.home(),
        scratch: &scratch,
        isolation: &Isolation::none(),
        timeout: VERSION_TIMEOUT,
        max_stdout: 64 * 1024,
    };
    let out = match sandbox::run(job).await {
        Ok((out, _)) => out,
        Err(RunError::Host(e)) => return Err(bad(e.to_string())),
        Err(RunError::Failed { status, stderr }) => {
            let text = String::from_utf8_lossy(&stderr);
            return Err(bad(format!(
                "`{}` {status}: {}",
                args.join(" "),
                text.trim()
            )));
        }
        Err(e) => return Err(bad(format!("`{}` {e}", args.join(" ")))),
    };
    let version = parse_version(&String::from_utf8_lossy(&out))
        .ok_or_else(|| bad(format!("`{}` printed no version", args.join(" "))))?;
    scratch.close()?;
    Ok(Binary {
        path: path.to_path_buf(),
        version,
    })
}

/// The version in `kustomize version` / `helm version --short` output: the first word that
/// starts with `v` and a digit, without build metadata (`v4.3.1+g1234` → `v4.3.1`); else the
/// first word.
pub(crate) fn parse_version(output: &str) -> Option<String> {
    let words: Vec<&str> = output
        .split(|c: char| c.is_whitespace() || c == ',' || c == '"' || c == '{' || c == '}')
        .filter(|w| !w.is_empty())
        .collect();
    let word = words
        .iter()
        .map(|w| w.rsplit([':', '/']).next().unwrap_or(w))
        .find(|w| {
            w.strip_prefix('v')
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .or_else(|| words.first().copied())?;
    let word = word.split('+').next().unwrap_or(word);
    Some(word.to_string())
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn versions() {
        assert_eq!(parse_version("v5.8.3\n").as_deref(), Some("v5.8.3"));
        assert_eq!(
            parse_version("v4.3.1+g0123abc\n").as_deref(),
            Some("v4.3.1")
        );
        assert_eq!(
            parse_version("{Version:kustomize/v5.8.3 GitCommit:abc}").as_deref(),
            Some("v5.8.3")
        );
        assert_eq!(parse_version("(devel)\n").as_deref(), Some("(devel)"));
        assert_eq!(parse_version("  \n"), None);
    }
}
