//! Fault injection: an axum middleware over the Nuclia routes that counts calls per route
//! template and applies the rules set through `PUT /_fake/faults`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Shared;

/// One fault rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// `*`, a route template (`/api/v1/user/pa_tokens`), or method and template
    /// (`POST /api/v1/user/pa_tokens`). Templates use `{param}` as in `/_fake/calls`.
    pub route: String,
    /// Only this method (when `route` has none).
    #[serde(default)]
    pub method: Option<String>,
    /// Probability of firing per matching request, 0..=1 (default 1).
    #[serde(default = "always")]
    pub rate: f64,
    /// Answer with this status (and `{"detail": "injected fault"}`) instead of running the route.
    #[serde(default)]
    pub status: Option<u16>,
    /// `Retry-After` seconds on the injected answer.
    #[serde(default)]
    pub retry_after: Option<u64>,
    /// Delay the answer by this much.
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// Delay after the route has run and committed its change (default: before it runs).
    #[serde(default)]
    pub latency_after_commit: bool,
    /// Run the route, then cut the connection in the middle of the answer.
    #[serde(default)]
    pub drop_connection: bool,
    /// Run the route, then spoil its answer.
    #[serde(default)]
    pub malformed: Option<Malformed>,
    /// Fire at most this many times (default: unlimited).
    #[serde(default)]
    pub count: Option<u64>,
}

fn always() -> f64 {
    1.0
}

/// How to spoil an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Malformed {
    /// Invalid JSON with a JSON content type.
    Json,
    /// A proxy's HTML error page with status 200.
    Html,
    /// The real body cut in half.
    Truncated,
    /// The real body labelled `text/plain`.
    ContentType,
}

impl FaultRule {
    /// Checks the rule's values.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.rate) {
            return Err(format!("rate must be within 0..=1, got {}", self.rate));
        }
        if let Some(s) = self.status
            && StatusCode::from_u16(s).is_err()
        {
            return Err(format!("invalid status {s}"));
        }
        Ok(())
    }

    fn matches(&self, method: &str, template: &str) -> bool {
        if self.route == "*" {
            return self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method));
        }
        let (rule_method, rule_path) = match self.route.split_once(' ') {
            Some((m, p)) => (Some(m), p.trim()),
            None => (self.method.as_deref(), self.route.as_str()),
        };
        rule_path == template && rule_method.is_none_or(|m| m.eq_ignore_ascii_case(method))
    }
}

/// What the rules that fired ask for.
#[derive(Default)]
struct Plan {
    before: Duration,
    after: Duration,
    status: Option<(u16, Option<u64>)>,
    drop_connection: bool,
    malformed: Option<Malformed>,
}

/// The middleware: counts the call, then applies the rules that fire.
pub async fn layer(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| req.uri().path().to_owned());
    let method = req.method().as_str().to_owned();
    let plan = {
        let mut st = shared.lock();
        *st.calls.entry(format!("{method} {template}")).or_default() += 1;
        let who = super::api::credential_value(req.headers())
            .and_then(|v| st.credential_id(v))
            .unwrap_or("unknown")
            .to_owned();
        *st.calls_by_credential.entry(who).or_default() += 1;
        let mut plan = Plan::default();
        let mut rng = rand::rng();
        for rule in st.faults.iter_mut() {
            if !rule.matches(&method, &template) || rule.count == Some(0) {
                continue;
            }
            if rule.rate < 1.0 && rng.random::<f64>() >= rule.rate {
                continue;
            }
            if let Some(n) = rule.count.as_mut() {
                *n -= 1;
            }
            let latency = Duration::from_millis(rule.latency_ms.unwrap_or(0));
            if rule.latency_after_commit {
                plan.after += latency;
            } else {
                plan.before += latency;
            }
            if plan.status.is_none() {
                plan.status = rule.status.map(|s| (s, rule.retry_after));
            }
            plan.drop_connection |= rule.drop_connection;
            plan.malformed = plan.malformed.or(rule.malformed);
        }
        plan
    };
    if !plan.before.is_zero() {
        tokio::time::sleep(plan.before).await;
    }
    let resp = match plan.status {
        Some((status, retry_after)) => {
            tracing::debug!(%method, %template, status, "fault: injected status");
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp =
                (status, axum::Json(json!({"detail": "injected fault"}))).into_response();
            if let Some(secs) = retry_after {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            resp
        }
        None => next.run(req).await,
    };
    if !plan.after.is_zero() {
        tokio::time::sleep(plan.after).await;
    }
    if plan.drop_connection {
        tracing::debug!(%method, %template, "fault: dropping the connection");
        return dropped();
    }
    match plan.malformed {
        Some(kind) => spoil(resp, kind).await,
        None => resp,
    }
}

/// An answer whose body fails half-way: the client sees the connection drop.
fn dropped() -> Response {
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from_static(b"{\"id\": ")),
        Err(std::io::Error::other("fault injection: connection dropped")),
    ];
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .expect("static response")
}

async fn spoil(resp: Response, kind: Malformed) -> Response {
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let (status, content_type, body) = match kind {
        Malformed::Json => (
            status,
            "application/json",
            Bytes::from_static(b"{\"id\": not json"),
        ),
        Malformed::Html => (
            StatusCode::OK,
            "text/html; charset=utf-8",
            Bytes::from_static(b"<html><body><h1>502 Bad Gateway</h1></body></html>"),
        ),
        Malformed::Truncated => (status, "application/json", body.slice(..body.len() / 2)),
        Malformed::ContentType => (status, "text/plain", body),
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .expect("static response")
}
