//! The library's error: each variant names what failed, keeps its source, and maps to a bounded
//! CamelCase label used as condition reason and metrics label. No variant ever holds a token.

use std::time::Duration;

use crate::nuclia;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API call {op} failed: {source}")]
    Kube {
        op: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Nuclia(#[from] nuclia::Error),
    /// The spec is valid for the schema but not usable (e.g. renewBefore longer than the lifetime).
    #[error("{0}")]
    InvalidSpec(String),
    /// The credentials Secret or its key is missing, empty or unusable.
    #[error("{0}")]
    CredentialsMissing(String),
    /// The Secret to write exists and is not owned by this resource.
    #[error("{0}")]
    SecretConflict(String),
}

impl Error {
    pub fn kube(op: &'static str) -> impl FnOnce(kube::Error) -> Error {
        move |source| Error::Kube { op, source }
    }

    /// Bounded label: condition reason, Event reason and metrics label.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "KubernetesError",
            Error::Nuclia(e) => e.label(),
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::CredentialsMissing(_) => "CredentialsMissing",
            Error::SecretConflict(_) => "SecretConflict",
        }
    }

    /// Failures that fix themselves (network, 5xx, rate limits, apiserver hiccups) are retried
    /// on the fast backoff; the rest wait for the user, on a slower one.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Kube { .. } => true,
            Error::Nuclia(e) => e.is_transient(),
            _ => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Nuclia(e) => e.retry_after(),
            _ => None,
        }
    }

    /// Whether a `kube` error is a 404.
    pub fn is_not_found(e: &kube::Error) -> bool {
        matches!(e, kube::Error::Api(s) if s.is_not_found())
    }

    pub fn is_conflict(e: &kube::Error) -> bool {
        matches!(e, kube::Error::Api(s) if s.is_conflict())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
