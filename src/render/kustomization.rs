//! Reading one kustomization file: every path it makes kustomize load, with the line it is
//! written on, and the refusal of references that would leave the repository.
//!
//! Pure: text in, references or [`RenderError`]s out. Unknown fields are ignored (kustomize
//! reports those itself); only fields that name files or folders matter here.

use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use super::paths;
use crate::manifest::RenderError;

/// What kustomize does with a referenced path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RefKind {
    /// `resources`, `bases`, `generators`, ...: a file inside the kustomization's folder, or
    /// another kustomization's folder anywhere in the repository.
    Resource,
    /// `components`: another kustomization's folder.
    Component,
    /// A file the kustomization loads itself (patches, generator files, values files, ...).
    /// The load restrictor allows only files inside the kustomization's folder.
    File,
    /// A local Helm chart folder, `chartHome/name`.
    Chart,
}

/// One path a kustomization refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reference {
    /// The field it was written in, e.g. `resources` or `helmCharts`.
    pub field: &'static str,
    /// As written.
    pub raw: String,
    /// Repository-relative, `.`/`..` folded.
    pub path: String,
    /// 1-based line in the kustomization file.
    pub line: u64,
    pub kind: RefKind,
}

/// The references of one kustomization file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Kustomization {
    pub refs: Vec<Reference>,
    /// Number of `helmCharts` entries (helm is needed when non-zero).
    pub helm_charts: usize,
}

type Item = Spanned<String>;

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Doc {
    resources: Option<Vec<Item>>,
    bases: Option<Vec<Item>>,
    components: Option<Vec<Item>>,
    crds: Option<Vec<Item>>,
    configurations: Option<Vec<Item>>,
    generators: Option<Vec<Spanned<Value>>>,
    transformers: Option<Vec<Spanned<Value>>>,
    validators: Option<Vec<Spanned<Value>>>,
    patches: Option<Vec<PathEntry>>,
    patches_strategic_merge: Option<Vec<Item>>,
    #[serde(rename = "patchesJson6902")]
    patches_json6902: Option<Vec<PathEntry>>,
    replacements: Option<Vec<PathEntry>>,
    openapi: Option<PathEntry>,
    config_map_generator: Option<Vec<Generator>>,
    secret_generator: Option<Vec<Generator>>,
    helm_charts: Option<Vec<HelmChart>>,
    helm_globals: Option<HelmGlobals>,
    helm_chart_inflation_generator: Option<Spanned<Value>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PathEntry {
    path: Option<Item>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Generator {
    files: Option<Vec<Item>>,
    envs: Option<Vec<Item>>,
    env: Option<Item>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct HelmChart {
    name: Option<Item>,
    repo: Option<Item>,
    values_file: Option<Item>,
    additional_values_files: Option<Vec<Item>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct HelmGlobals {
    chart_home: Option<Item>,
    config_home: Option<Item>,
}

/// Default of `helmGlobals.chartHome`.
const DEFAULT_CHART_HOME: &str = "charts";

/// Parses the kustomization file at repository-relative `path`. Every refused reference and a
/// YAML error come back as errors naming `path` and the line.
pub(crate) fn parse(path: &str, text: &str) -> Result<Kustomization, Vec<RenderError>> {
    let doc: Doc = if text.trim().is_empty() {
        Doc::default()
    } else {
        serde_saphyr::from_str(text).map_err(|e| vec![yaml_error(path, &e)])?
    };
    let mut refs = Refs {
        file: path,
        dir: paths::parent(path),
        out: Kustomization::default(),
        errors: Vec::new(),
    };
    refs.collect(doc);
    if refs.errors.is_empty() {
        Ok(refs.out)
    } else {
        Err(refs.errors)
    }
}

/// A YAML error as a [`RenderError`] at its line.
pub(crate) fn yaml_error(path: &str, e: &serde_saphyr::Error) -> RenderError {
    let plain = e.without_snippet().to_string();
    let first = plain.lines().next().unwrap_or("invalid YAML");
    // The parser starts its text with its own position; we report ours.
    let message = match first.split_once(": ") {
        Some((pos, rest)) if pos.starts_with("line ") => rest,
        _ => first,
    };
    RenderError {
        path: path.to_string(),
        line: Some(e.location().map(|l| l.line()).unwrap_or(1).max(1)),
        object: None,
        message: format!("invalid kustomization YAML: {message}"),
    }
}

struct Refs<'a> {
    file: &'a str,
    dir: &'a str,
    out: Kustomization,
    errors: Vec<RenderError>,
}

fn items(list: Option<Vec<Item>>) -> impl Iterator<Item = Item> {
    list.into_iter().flatten()
}

impl Refs<'_> {
    fn collect(&mut self, doc: Doc) {
        for (field, list) in [("resources", doc.resources), ("bases", doc.bases)] {
            items(list).for_each(|i| self.add(field, &i, RefKind::Resource));
        }
        items(doc.components).for_each(|i| self.add("components", &i, RefKind::Component));
        for (field, list) in [("crds", doc.crds), ("configurations", doc.configurations)] {
            items(list).for_each(|i| self.add(field, &i, RefKind::File));
        }
        for (field, list) in [
            ("generators", doc.generators),
            ("transformers", doc.transformers),
            ("validators", doc.validators),
        ] {
            // A string is a path; a mapping is an inline plugin configuration.
            for entry in list.into_iter().flatten() {
                if let Value::String(s) = &entry.value {
                    let item = Spanned::new(s.clone(), entry.referenced, entry.defined);
                    self.add(field, &item, RefKind::Resource);
                }
            }
        }
        for entry in items(doc.patches_strategic_merge) {
            // Inline patches are allowed here too; only file names are followed.
            if !entry.value.contains('\n') && !entry.value.contains(": ") {
                self.add("patchesStrategicMerge", &entry, RefKind::File);
            }
        }
        for (field, list) in [
            ("patches", doc.patches),
            ("patchesJson6902", doc.patches_json6902),
            ("replacements", doc.replacements),
            ("openapi", doc.openapi.map(|o| vec![o])),
        ] {
            for entry in list.into_iter().flatten() {
                if let Some(p) = entry.path {
                    self.add(field, &p, RefKind::File);
                }
            }
        }
        for (field, list) in [
            ("configMapGenerator", doc.config_map_generator),
            ("secretGenerator", doc.secret_generator),
        ] {
            list.into_iter()
                .flatten()
                .for_each(|g| self.generator(field, g));
        }
        let globals = doc.helm_globals.unwrap_or_default();
        if let Some(config_home) = &globals.config_home {
            self.config_home(config_home);
        }
        self.helm(doc.helm_charts.unwrap_or_default(), globals.chart_home);
        if let Some(old) = doc.helm_chart_inflation_generator {
            self.refuse(
                old.referenced.line(),
                "helmChartInflationGenerator is not supported (it can pull remote charts); use helmCharts with a local chart",
            );
        }
    }

    fn generator(&mut self, field: &'static str, g: Generator) {
        // `files` entries may be `key=path`; `envs`/`env` are paths.
        for entry in items(g.files) {
            let path = match entry.value.split_once('=') {
                Some((_, path)) => path.to_string(),
                None => entry.value.clone(),
            };
            let item = Spanned::new(path, entry.referenced, entry.defined);
            self.add(field, &item, RefKind::File);
        }
        for entry in items(g.envs).chain(g.env) {
            self.add(field, &entry, RefKind::File);
        }
    }

    fn helm(&mut self, charts: Vec<HelmChart>, chart_home: Option<Item>) {
        if charts.is_empty() {
            return;
        }
        self.out.helm_charts = charts.len();
        let home = match &chart_home {
            Some(h) => {
                let before = self.errors.len();
                self.check("helmGlobals.chartHome", h);
                if self.errors.len() > before {
                    return;
                }
                h.value.clone()
            }
            None => DEFAULT_CHART_HOME.to_string(),
        };
        for chart in charts {
            self.chart(&home, chart);
        }
    }

    /// `helmGlobals.configHome` is helm's configuration folder (repositories, credentials):
    /// only a folder inside the kustomization's, never the host's.
    fn config_home(&mut self, item: &Item) {
        if let Some(path) = self.check("helmGlobals.configHome", item)
            && !paths::within(self.dir, &path)
        {
            self.refuse(
                item.referenced.line(),
                &format!(
                    "helmGlobals.configHome: {:?} is outside the kustomization's folder",
                    item.value
                ),
            );
        }
    }

    fn chart(&mut self, home: &str, chart: HelmChart) {
        if let Some(repo) = chart.repo.as_ref().filter(|r| !r.value.trim().is_empty()) {
            let name = chart.name.as_ref().map(|n| n.value.as_str()).unwrap_or("");
            self.refuse(
                repo.referenced.line(),
                &format!(
                    "helmCharts: chart {name:?} has repo {:?}: remote charts are refused; put the chart in the repository under {home}/",
                    repo.value
                ),
            );
            return;
        }
        if let Some(name) = &chart.name {
            let item = Spanned::new(
                format!("{}/{}", home.trim_end_matches('/'), name.value),
                name.referenced,
                name.defined,
            );
            if let Some(reason) = paths::remote_reason(&name.value) {
                self.refuse_remote("helmCharts", &name.value, reason, name.referenced.line());
            } else {
                self.add("helmCharts", &item, RefKind::Chart);
            }
        }
        for file in chart
            .values_file
            .into_iter()
            .chain(items(chart.additional_values_files))
        {
            self.add("helmCharts", &file, RefKind::File);
        }
    }

    /// Checks a reference (remote, absolute, escaping); `None` when refused.
    fn check(&mut self, field: &'static str, item: &Item) -> Option<String> {
        let raw = item.value.trim();
        let line = item.referenced.line();
        if let Some(reason) = paths::remote_reason(raw) {
            self.refuse_remote(field, raw, reason, line);
            return None;
        }
        if raw.starts_with('/') || raw.starts_with('~') {
            self.refuse(
                line,
                &format!(
                    "{field}: {raw:?} is an absolute path; use a path relative to the kustomization"
                ),
            );
            return None;
        }
        match paths::resolve(self.dir, raw) {
            Some(path) => Some(path),
            None => {
                self.refuse(line, &format!("{field}: {raw:?} leaves the repository"));
                None
            }
        }
    }

    fn add(&mut self, field: &'static str, item: &Item, kind: RefKind) {
        if let Some(path) = self.check(field, item) {
            self.out.refs.push(Reference {
                field,
                raw: item.value.trim().to_string(),
                path,
                line: item.referenced.line(),
                kind,
            });
        }
    }

    fn refuse_remote(&mut self, field: &str, raw: &str, reason: &str, line: u64) {
        self.refuse(
            line,
            &format!(
                "{field}: {raw:?} is {reason}: remote bases and charts are refused, gitopsd renders only what is in the repository"
            ),
        );
    }

    fn refuse(&mut self, line: u64, message: &str) {
        self.errors.push(RenderError {
            path: self.file.to_string(),
            line: Some(line.max(1)),
            object: None,
            message: message.to_string(),
        });
    }
}
