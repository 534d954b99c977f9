//! How a host renders: its renderer binaries and their limits, from the host config's
//! `renderers:` (unset binaries looked up on `PATH`, read through `config`), and per
//! environment the age keys that decrypt SOPS objects.

use super::sops::Keys;
use super::{HostError, Limits, RendererPaths, Renderers};
use crate::config::RenderersConfig;

/// The host's renderer binaries and the limits of one build.
#[derive(Clone, Debug, Default)]
pub struct Rendering {
    pub renderers: Renderers,
    pub limits: Limits,
    /// The environment's SOPS keys (none: SOPS objects are rejected; previews never have any).
    pub decryption: Option<Keys>,
}

impl Rendering {
    /// Resolves the host config's `renderers:` (unset binaries from `PATH`), with the content
    /// `limits:` every render keeps.
    pub async fn from_config(
        cfg: &RenderersConfig,
        content: crate::manifest::Limits,
    ) -> Result<Rendering, HostError> {
        let paths = RendererPaths {
            kustomize: cfg.kustomize.clone(),
            helm: cfg.helm.clone(),
            scratch_dir: cfg.scratch_dir.clone(),
        };
        let search = crate::config::search_path();
        let renderers = Renderers::resolve(&paths, search.as_deref()).await?;
        let mut limits = Limits {
            content,
            ..Limits::default()
        };
        if let Some(t) = cfg.timeout {
            limits.timeout = t;
        }
        Ok(Rendering {
            renderers,
            limits,
            decryption: None,
        })
    }
}
