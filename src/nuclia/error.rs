//! Errors of the Nuclia client, classified for retry decisions and bounded metric labels.

use std::time::Duration;

use serde_json::Value;

use super::redact::scrub;

/// The longest `detail` kept from a response body.
pub(crate) const MAX_DETAIL: usize = 300;

/// A failed Nuclia API call. `op` names the call (e.g. `create_personal_token`); `detail`
/// comes from the response body (the server's `detail` message) or the transport error,
/// scrubbed of credentials ([`scrub`]) and then truncated: never a token.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 401, or a 403 whose message says the token is nonexistent, revoked or expired.
    #[error("{op}: unauthorized: {detail}")]
    Unauthorized { op: &'static str, detail: String },
    /// 403: the credential is valid but not allowed to do this.
    #[error("{op}: forbidden: {detail}")]
    Forbidden { op: &'static str, detail: String },
    /// 404.
    #[error("{op}: not found: {detail}")]
    NotFound { op: &'static str, detail: String },
    /// 429; `retry_after` from the `Retry-After` header (seconds or HTTP date).
    #[error("{op}: rate limited (retry after {retry_after:?})")]
    RateLimited {
        op: &'static str,
        retry_after: Option<Duration>,
    },
    /// 5xx, 408, timeouts, connection errors, connections dropped mid-answer.
    #[error("{op}: transient failure: {detail}")]
    Transient { op: &'static str, detail: String },
    /// Any other 4xx (and 3xx), with the server's message; 422 validation lists are flattened.
    #[error("{op}: rejected with {status}: {detail}")]
    Invalid {
        op: &'static str,
        status: u16,
        detail: String,
    },
    /// A success status whose body is not what the API promises.
    #[error("{op}: malformed response: {detail}")]
    Malformed { op: &'static str, detail: String },
    /// A URL that is not one of the configured Nuclia endpoints.
    #[error("untrusted endpoint {url}: {reason}")]
    UntrustedEndpoint { url: String, reason: String },
    /// Bad client configuration.
    #[error("invalid Nuclia client configuration: {0}")]
    Config(String),
}

impl Error {
    /// A bounded CamelCase label for metrics, Events and condition reasons.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Unauthorized { .. } => "Unauthorized",
            Error::Forbidden { .. } => "Forbidden",
            Error::NotFound { .. } => "NotFound",
            Error::RateLimited { .. } => "RateLimited",
            Error::Transient { .. } => "Transient",
            Error::Invalid { .. } => "Invalid",
            Error::Malformed { .. } => "Malformed",
            Error::UntrustedEndpoint { .. } => "UntrustedEndpoint",
            Error::Config(_) => "Config",
        }
    }

    /// Worth retrying soon: rate limits, server errors, timeouts, connection problems, and
    /// malformed answers (usually a proxy's error page).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::RateLimited { .. } | Error::Transient { .. } | Error::Malformed { .. }
        )
    }

    /// The server's requested wait, for [`Error::RateLimited`].
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The operation that failed, when there is one.
    pub fn op(&self) -> Option<&'static str> {
        match self {
            Error::Unauthorized { op, .. }
            | Error::Forbidden { op, .. }
            | Error::NotFound { op, .. }
            | Error::RateLimited { op, .. }
            | Error::Transient { op, .. }
            | Error::Invalid { op, .. }
            | Error::Malformed { op, .. } => Some(op),
            Error::UntrustedEndpoint { .. } | Error::Config(_) => None,
        }
    }

    /// Classifies a non-success HTTP answer. `secrets` are the credentials sent with the
    /// request: none of them survives in the detail.
    pub(crate) fn from_status(
        op: &'static str,
        status: u16,
        body: &[u8],
        retry_after: Option<Duration>,
        secrets: &[&str],
    ) -> Self {
        let detail = detail_from_body(body, secrets);
        match status {
            401 => Error::Unauthorized { op, detail },
            403 if says_token_is_dead(&detail) => Error::Unauthorized { op, detail },
            403 => Error::Forbidden { op, detail },
            404 => Error::NotFound { op, detail },
            429 => Error::RateLimited { op, retry_after },
            408 | 500..=599 => Error::Transient {
                op,
                detail: format!("HTTP {status}: {detail}"),
            },
            _ => Error::Invalid { op, status, detail },
        }
    }
}

fn says_token_is_dead(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    ["nonexistent", "unexistent", "revoked", "expired"]
        .iter()
        .any(|w| d.contains(w))
}

/// The human part of an error body: FastAPI's `detail` string, a pydantic `detail` list
/// flattened to `loc: msg; ...`, or the start of the raw body. Scrubbed of `secrets` and
/// anything token-shaped, then truncated to [`MAX_DETAIL`].
pub(crate) fn detail_from_body(body: &[u8], secrets: &[&str]) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => match map.get("detail") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(items)) => items
                .iter()
                .map(flatten_validation_item)
                .collect::<Vec<_>>()
                .join("; "),
            Some(other) => other.to_string(),
            None => Value::Object(map).to_string(),
        },
        Ok(other) => other.to_string(),
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    scrubbed_detail(&text, secrets)
}

/// Upstream text as it may be kept: credentials scrubbed first (a cut must not split a
/// secret into pieces the scrubber no longer recognises), then trimmed and truncated.
pub(crate) fn scrubbed_detail(text: &str, secrets: &[&str]) -> String {
    truncate(scrub(text, secrets).trim())
}

fn flatten_validation_item(item: &Value) -> String {
    let msg = item
        .get("msg")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| item.to_string());
    let loc = item.get("loc").and_then(Value::as_array).map(|parts| {
        parts
            .iter()
            .map(|p| match p {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(".")
    });
    match loc {
        Some(loc) if !loc.is_empty() => format!("{loc}: {msg}"),
        _ => msg,
    }
}

/// Truncates to [`MAX_DETAIL`] bytes at a character boundary.
pub(crate) fn truncate(s: &str) -> String {
    if s.len() <= MAX_DETAIL {
        return s.to_owned();
    }
    let mut end = MAX_DETAIL;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_statuses() {
        let b = br#"{"detail":"nope"}"#;
        let cases: &[(u16, &[u8], &str)] = &[
            (401, b, "Unauthorized"),
            (
                403,
                br#"{"detail":"Hydra token is either unexistent or revoked"}"#,
                "Unauthorized",
            ),
            (403, b, "Forbidden"),
            (404, b, "NotFound"),
            (429, b, "RateLimited"),
            (500, b, "Transient"),
            (503, b"<html>bad gateway</html>", "Transient"),
            (408, b, "Transient"),
            (400, b, "Invalid"),
            (409, b, "Invalid"),
            (422, b, "Invalid"),
        ];
        for (status, body, label) in cases {
            assert_eq!(
                Error::from_status("t", *status, body, None, &[]).label(),
                *label
            );
        }
    }

    #[test]
    fn flattens_pydantic_details() {
        let body = br#"{"detail":[{"loc":["body","expires"],"msg":"Field required","type":"missing"},{"loc":["body",3],"msg":"bad"}]}"#;
        assert_eq!(
            detail_from_body(body, &[]),
            "body.expires: Field required; body.3: bad"
        );
        assert_eq!(detail_from_body(b"plain text", &[]), "plain text");
        let long = "é".repeat(400);
        let d = detail_from_body(long.as_bytes(), &[]);
        assert!(d.len() <= MAX_DETAIL + "…".len());
    }

    /// A credential longer than [`MAX_DETAIL`] that starts just before the cut, in every
    /// body shape and error class: scrubbed before truncating, so no piece of it is left.
    #[test]
    fn credential_at_the_cut_is_scrubbed_in_every_variant() {
        // Not token-shaped (spaces inside), so only the exact-value rule can catch it.
        let secret: String = (0..100).map(|i| format!("p{i} ")).collect::<String>() + "end";
        assert!(secret.len() > MAX_DETAIL);
        let prefix = "x".repeat(MAX_DETAIL - 20) + " ";
        let bodies = [
            format!("{prefix}{secret}").into_bytes(),
            serde_json::to_vec(&serde_json::json!({ "detail": format!("{prefix}{secret}") }))
                .unwrap(),
            serde_json::to_vec(&serde_json::json!({
                "detail": [{"loc": ["header", "authorization"], "msg": format!("{prefix}{secret}")}]
            }))
            .unwrap(),
        ];
        let first_piece = &secret[..12];
        for body in &bodies {
            for status in [400, 401, 403, 404, 409, 422, 500, 503] {
                let e = Error::from_status("t", status, body, None, &[&secret]);
                let text = e.to_string();
                assert!(!text.contains(&secret), "{status}: the credential survived");
                assert!(
                    !text.contains(first_piece),
                    "{status}: a piece of the credential survived the cut"
                );
            }
        }
    }

    #[test]
    fn echoed_headers_are_scrubbed() {
        let secret = "opaque-login-value";
        let body = format!(
            r#"{{"detail":"Bad Request: Authorization: Bearer {secret}; X-NUCLIA-NUAKEY: Bearer {secret}"}}"#
        );
        let e = Error::from_status("t", 400, body.as_bytes(), None, &[secret]);
        let text = e.to_string();
        assert!(!text.contains(secret));
        assert!(text.contains("Authorization: Bearer [redacted]"));
        // Without knowing the value, the header rule still removes it.
        let e = Error::from_status("t", 400, body.as_bytes(), None, &[]);
        assert!(!e.to_string().contains(secret));
    }
}
