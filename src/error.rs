//! The library's error: each variant names what failed, keeps its source, and maps to a bounded
//! CamelCase label used as condition reason and metrics label. No variant ever holds a token.

use std::time::Duration;

use crate::nuclia;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API call {op} failed: {}", describe_kube(source))]
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
    /// The cluster credential named does not let this resource use it: its namespace, its kind or
    /// the role it asks for. Nothing is minted.
    #[error("{0}")]
    CredentialNotAllowed(String),
    /// A cluster credential's quota for the resource's namespace is used up (its keys, or its
    /// issues this hour); nothing is minted. `retry_after`: when the hour frees a slot.
    #[error("{message}")]
    QuotaExceeded {
        message: String,
        retry_after: Option<Duration>,
    },
}

/// The apiserver's own words (message, reason, code) rather than kube's debug dump of its
/// Status: this text ends up in conditions, Events and logs.
fn describe_kube(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.reason.is_empty() => format!("{} (HTTP {})", s.message, s.code),
        kube::Error::Api(s) => format!("{} ({}, HTTP {})", s.message, s.reason, s.code),
        other => other.to_string(),
    }
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
            Error::CredentialNotAllowed(_) => "CredentialNotAllowed",
            Error::QuotaExceeded { .. } => "QuotaExceeded",
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
            Error::QuotaExceeded { retry_after, .. } => *retry_after,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_errors_read_like_the_apiserver() {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": 403, "reason": "Forbidden",
            "message": "secrets \"x\" is forbidden: User \"u\" cannot get resource \"secrets\"",
        }))
        .expect("a Status");
        let e = Error::kube("get Secret")(kube::Error::Api(Box::new(status)));
        assert_eq!(
            e.to_string(),
            "Kubernetes API call get Secret failed: secrets \"x\" is forbidden: User \"u\" cannot get resource \"secrets\" (Forbidden, HTTP 403)"
        );
    }
}
