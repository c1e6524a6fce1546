//! The test-only admin API under `/_fake/` (no auth): inspect credentials and service
//! accounts, revoke out of band, move the clock, count calls, set faults, list minted values.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::Shared;
use super::api::detail;
use super::state::FaultRule;
use crate::time;

/// The admin router.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_fake/bootstrap", get(bootstrap))
        .route("/_fake/credentials", get(credentials))
        .route("/_fake/service_accounts", get(service_accounts))
        .route("/_fake/revoke/{id}", post(revoke))
        .route("/_fake/kbs/{kb_id}", delete(delete_kb))
        .route("/_fake/clock", get(clock))
        .route("/_fake/clock/advance", post(advance))
        .route("/_fake/calls", get(calls))
        .route("/_fake/calls/reset", post(reset_calls))
        .route(
            "/_fake/faults",
            get(get_faults).put(put_faults).delete(clear_faults),
        )
        .route("/_fake/minted", get(minted))
}

type S = State<Arc<Shared>>;

async fn bootstrap(State(s): S) -> Json<Value> {
    Json(serde_json::to_value(&s.bootstrap).expect("serializable"))
}

/// Live credentials (neither revoked nor expired); `?all=true` lists dead ones too.
async fn credentials(State(s): S, Query(q): Query<HashMap<String, String>>) -> Json<Value> {
    let all = q.get("all").is_some_and(|v| v == "true" || v == "1");
    let st = s.lock();
    let list: Vec<Value> = st
        .creds
        .values()
        .filter(|c| all || st.is_live(c))
        .map(|c| st.cred_view(c))
        .collect();
    Json(Value::Array(list))
}

async fn service_accounts(State(s): S) -> Json<Value> {
    let st = s.lock();
    let list: Vec<Value> = st
        .service_accounts
        .values()
        .map(|sa| {
            json!({
                "id": sa.id, "account_id": sa.account_id, "kb_id": sa.kb_id, "title": sa.title,
                "role": sa.role, "created": time::format(sa.created), "keys": sa.keys,
            })
        })
        .collect();
    Json(Value::Array(list))
}

async fn revoke(State(s): S, Path(id): Path<String>) -> Response {
    if s.lock().revoke(&id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        detail(StatusCode::NOT_FOUND, "Credential not found").into_response()
    }
}

/// Deletes a KB out of band, with its service accounts and their keys (204, or 404).
async fn delete_kb(State(s): S, Path(kb_id): Path<String>) -> Response {
    if s.lock().delete_kb(&kb_id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        detail(StatusCode::NOT_FOUND, "Knowledge Box not found").into_response()
    }
}

fn clock_view(st: &super::state::State) -> Value {
    json!({"now": time::format(st.now()), "offset_seconds": st.clock_offset.num_seconds()})
}

async fn clock(State(s): S) -> Json<Value> {
    Json(clock_view(&s.lock()))
}

async fn advance(State(s): S, body: Bytes) -> Response {
    let seconds = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("seconds").and_then(Value::as_i64));
    let Some(seconds) = seconds.filter(|s| s.abs() < 1_000_000_000) else {
        return detail(
            StatusCode::UNPROCESSABLE_ENTITY,
            "expected {\"seconds\": <integer>}",
        )
        .into_response();
    };
    let mut st = s.lock();
    st.clock_offset += chrono::Duration::seconds(seconds);
    Json(clock_view(&st)).into_response()
}

/// Calls per route template, or per credential id with `?by=credential`.
async fn calls(State(s): S, Query(q): Query<HashMap<String, String>>) -> Json<Value> {
    let st = s.lock();
    if q.get("by").is_some_and(|v| v == "credential") {
        Json(json!(st.calls_by_credential))
    } else {
        Json(json!(st.calls))
    }
}

async fn reset_calls(State(s): S) -> StatusCode {
    let mut st = s.lock();
    st.calls.clear();
    st.calls_by_credential.clear();
    StatusCode::NO_CONTENT
}

async fn get_faults(State(s): S) -> Json<Value> {
    Json(json!(s.lock().faults))
}

async fn put_faults(State(s): S, body: Bytes) -> Response {
    let rules: Vec<FaultRule> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return detail(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("fault rules: {e}"),
            )
            .into_response();
        }
    };
    if let Err(e) = rules.iter().try_for_each(FaultRule::validate) {
        return detail(StatusCode::UNPROCESSABLE_ENTITY, &e).into_response();
    }
    s.lock().faults = rules;
    StatusCode::NO_CONTENT.into_response()
}

async fn clear_faults(State(s): S) -> StatusCode {
    s.lock().faults.clear();
    StatusCode::NO_CONTENT
}

/// Every token value ever minted or seeded. TEST ONLY: lets leak scans search logs for them.
async fn minted(State(s): S) -> Json<Value> {
    Json(json!(s.lock().minted))
}
