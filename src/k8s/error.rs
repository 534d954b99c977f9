//! The Kubernetes layer's error: which object, which verb, and whether retrying can help.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("kubeconfig {path}: {message}")]
    Config { path: String, message: String },
    #[error("{object}: kind {kind} ({api_version}) is not served by the cluster")]
    UnknownKind {
        object: String,
        api_version: String,
        kind: String,
    },
    #[error("{object}: {verb} refused ({code} {reason}): {message}")]
    Api {
        object: String,
        verb: &'static str,
        code: u16,
        reason: String,
        message: String,
    },
    #[error("{object}: {verb}: {message}")]
    Transport {
        object: String,
        verb: &'static str,
        message: String,
    },
    #[error("timed out after {} waiting for {what}", humantime::format_duration(*after))]
    Timeout { what: String, after: Duration },
}

impl KubeError {
    /// Throttling, server errors and transport failures may succeed later; refusals will not.
    pub fn is_transient(&self) -> bool {
        match self {
            // Server-side apply answers 500 when the object does not fit the schema (its typed
            // patch cannot be built): that is the content's fault, not the server's.
            KubeError::Api {
                code: 500, message, ..
            } if is_schema_error(message) => false,
            KubeError::Api { code, .. } => matches!(code, 429 | 500 | 502 | 503 | 504),
            KubeError::Transport { .. } | KubeError::Timeout { .. } => true,
            KubeError::Config { .. } | KubeError::UnknownKind { .. } => false,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, KubeError::Api { code: 404, .. })
    }

    /// The API's own message without our prefix, for notes and previews.
    pub fn reason(&self) -> String {
        match self {
            KubeError::Api {
                message, reason, ..
            } if !reason.is_empty() => format!("{reason}: {message}"),
            KubeError::Api { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    pub(crate) fn from_kube(object: &str, verb: &'static str, err: kube::Error) -> KubeError {
        match err {
            kube::Error::Api(status) => KubeError::Api {
                object: object.to_string(),
                verb,
                code: status.code,
                reason: status.reason.clone(),
                message: status.message.clone(),
            },
            other => KubeError::Transport {
                object: object.to_string(),
                verb,
                message: other.to_string(),
            },
        }
    }
}

fn is_schema_error(message: &str) -> bool {
    [
        "failed to create typed patch object",
        "field not declared in schema",
        "failed to create typed live object",
    ]
    .iter()
    .any(|m| message.contains(m))
}
