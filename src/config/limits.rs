//! `limits:`: how much content the config repository may bring per file and per environment
//! (pushers are less trusted than the operator). Defaults in [`crate::manifest::Limits`].

use serde::Deserialize;

use crate::manifest::Limits;
use crate::schema::Checker;

/// `limits: { file_bytes, environment_bytes, documents, objects }`, for every environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Bytes of one manifest file (and of any file a Kustomize build reads).
    pub file_bytes: Option<u64>,
    /// Bytes of one environment's manifests (and of a Kustomize build's output).
    pub environment_bytes: Option<u64>,
    /// YAML documents in one file.
    pub documents: Option<usize>,
    /// Objects in one environment.
    pub objects: Option<usize>,
}

impl LimitsConfig {
    /// The limits with defaults filled in.
    pub fn limits(&self) -> Limits {
        let d = Limits::default();
        Limits {
            file_bytes: self.file_bytes.unwrap_or(d.file_bytes),
            environment_bytes: self.environment_bytes.unwrap_or(d.environment_bytes),
            documents: self.documents.unwrap_or(d.documents),
            objects: self.objects.unwrap_or(d.objects),
        }
    }

    pub(super) fn check(&self, c: &mut Checker) {
        let l = self.limits();
        for (key, zero) in [
            ("limits.file_bytes", l.file_bytes == 0),
            ("limits.environment_bytes", l.environment_bytes == 0),
            ("limits.documents", l.documents == 0),
            ("limits.objects", l.objects == 0),
        ] {
            if zero {
                c.problem_at(key, "must be greater than zero");
            }
        }
        if l.file_bytes > l.environment_bytes {
            c.problem_at(
                "limits.file_bytes",
                "must not be greater than limits.environment_bytes",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_what_is_unset() {
        let c = LimitsConfig {
            objects: Some(7),
            ..LimitsConfig::default()
        };
        let l = c.limits();
        assert_eq!(l.objects, 7);
        assert_eq!(l.file_bytes, 4 << 20);
        let mut checker = Checker::new();
        LimitsConfig {
            documents: Some(0),
            file_bytes: Some(100 << 20),
            ..LimitsConfig::default()
        }
        .check(&mut checker);
        let keys: Vec<String> = checker.into_problems().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["limits.documents", "limits.file_bytes"]);
    }
}
