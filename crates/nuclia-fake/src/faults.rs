//! Fault injection: an axum middleware over the Nuclia routes that counts calls per route
//! template and applies the rules set through `PUT /_fake/faults` (the rules themselves,
//! [`FaultRule`](super::state::FaultRule), are part of the model).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::{Value, json};

use super::Shared;
use super::state::Malformed;
use crate::time;

/// An answer given instead of running the route.
struct Injected {
    status: u16,
    retry_after: Option<u64>,
    /// Quote the request's credential headers in the detail.
    echo_credentials: bool,
}

/// What the rules that fired ask for.
#[derive(Default)]
struct Plan {
    before: Duration,
    after: Duration,
    injected: Option<Injected>,
    drop_connection: bool,
    malformed: Option<Malformed>,
    cap_expires_secs: Option<u64>,
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
            if plan.injected.is_none() && (rule.status.is_some() || rule.echo_credentials) {
                plan.injected = Some(Injected {
                    status: rule.status.unwrap_or(400),
                    retry_after: rule.retry_after,
                    echo_credentials: rule.echo_credentials,
                });
            }
            plan.drop_connection |= rule.drop_connection;
            plan.malformed = plan.malformed.or(rule.malformed);
            if let Some(secs) = rule.cap_expires_secs {
                plan.cap_expires_secs = Some(plan.cap_expires_secs.map_or(secs, |c| c.min(secs)));
            }
        }
        plan
    };
    if !plan.before.is_zero() {
        tokio::time::sleep(plan.before).await;
    }
    let resp = match plan.injected {
        Some(Injected {
            status,
            retry_after,
            echo_credentials,
        }) => {
            tracing::debug!(%method, %template, status, echo_credentials, "fault: injected status");
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let detail = if echo_credentials {
                echo_detail(req.headers())
            } else {
                "injected fault".to_owned()
            };
            let mut resp = (status, axum::Json(json!({ "detail": detail }))).into_response();
            if let Some(secs) = retry_after {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            resp
        }
        None => {
            let resp = next.run(req).await;
            match plan.cap_expires_secs {
                Some(secs) => cap_expires(&shared, &method, &template, resp, secs).await,
                None => resp,
            }
        }
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

/// Whether a header carries a credential: `Authorization`, `Proxy-Authorization` and the
/// Nuclia key headers (`X-NUCLIA-*`, `X-STF-*`).
fn is_credential_header(name: &str) -> bool {
    name == "authorization"
        || name == "proxy-authorization"
        || name.starts_with("x-nuclia-")
        || name.starts_with("x-stf-")
}

/// A gateway's complaint that quotes the request's credential headers verbatim, e.g.
/// `... Authorization: Bearer <value>`.
fn echo_detail(headers: &HeaderMap) -> String {
    let quoted: Vec<String> = headers
        .iter()
        .filter(|(name, _)| is_credential_header(name.as_str()))
        .map(|(name, value)| {
            let name = match name.as_str() {
                "authorization" => "Authorization".to_owned(),
                "proxy-authorization" => "Proxy-Authorization".to_owned(),
                other => other.to_ascii_uppercase(),
            };
            format!("{name}: {}", String::from_utf8_lossy(value.as_bytes()))
        })
        .collect();
    let quoted = if quoted.is_empty() {
        "(none)".to_owned()
    } else {
        quoted.join("; ")
    };
    format!("Bad Request: the gateway rejected the request headers: {quoted}")
}

/// Caps every `expires` in a JSON answer at now + `secs` (`null` included, keeping the
/// route's date style) and, for a POST answer whose `id` is a credential, that credential's
/// real expiry too. Other answers pass unchanged.
async fn cap_expires(
    shared: &Shared,
    method: &str,
    template: &str,
    resp: Response,
    secs: u64,
) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let changed = {
        let mut st = shared.lock();
        let cap = st.now() + chrono::Duration::seconds(secs as i64);
        // The PAT routes answer naive ISO dates, the others RFC 3339 with an offset.
        let naive = template.contains("/pa_token");
        let changed = cap_value(&mut value, cap, naive);
        if method == "POST"
            && parts.status.is_success()
            && let Some(id) = value.get("id").and_then(Value::as_str)
        {
            st.cap_expiry(id, cap);
        }
        changed
    };
    if !changed {
        return Response::from_parts(parts, Body::from(bytes));
    }
    tracing::debug!(%method, %template, secs, "fault: capped expires");
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = serde_json::to_vec(&value).expect("serializable");
    Response::from_parts(parts, Body::from(body))
}

/// Caps the `expires` fields of `v` at any depth; true if one changed.
fn cap_value(v: &mut Value, cap: DateTime<Utc>, naive: bool) -> bool {
    match v {
        Value::Object(map) => {
            let mut changed = false;
            if let Some(e) = map.get_mut("expires") {
                let (current, naive) = match &*e {
                    Value::Null => (None, naive),
                    Value::String(s) => {
                        (time::parse_str(s), DateTime::parse_from_rfc3339(s).is_err())
                    }
                    _ => (None, naive),
                };
                if current.is_none_or(|t| t > cap) {
                    *e = json!(if naive {
                        super::api::naive_iso(cap)
                    } else {
                        super::api::offset_iso(cap)
                    });
                    changed = true;
                }
            }
            for (k, child) in map.iter_mut() {
                if k != "expires" {
                    changed |= cap_value(child, cap, naive);
                }
            }
            changed
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |acc, item| cap_value(item, cap, naive) | acc),
        _ => false,
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
