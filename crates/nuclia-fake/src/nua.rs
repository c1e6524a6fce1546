//! NUA clients (nuclia-api.md §4): the zone API's `nua_clients` routes with real semantics,
//! the model's methods for them (the [`NuaClient`] record and its keys' encoding are in
//! [`super::state`]), and their admin routes.
//!
//! A NUA client holds one key at a time: a JWT whose claims name the fake as `iss` (what the
//! Python SDK derives the API host from), the client as `sub`, and `allow_kb_management`. Its
//! payload segment is standard base64 as well as URL-safe base64 (no `-` or `_`), because the
//! SDK decodes it with `base64.b64decode`. Renewing a client's key revokes the old key at once
//! (the conservative reading of the API); deleting a client revokes its key, so it is refused
//! everywhere (`/api/authorizer/info` included) from then on. Only a user (PAT or user token)
//! who is a member of the account manages its NUA clients.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde_json::{Value, json};

use super::Shared;
use super::api::{
    ApiResult, Fields, Principal, S, authenticate, created, detail, item, no_content, offset_iso,
    ok, parse_body,
};
use super::state::{CredKind, NuaClient, State, new_id};
use crate::time;

impl State {
    /// The text a NUA client's key is listed under in `/_fake/credentials`.
    fn nua_label(title: &str, description: &str) -> String {
        if description.is_empty() {
            title.to_owned()
        } else {
            format!("{title} — {description}")
        }
    }

    fn mint_nua_key(&mut self, c: &NuaClient) -> String {
        self.insert_cred(
            CredKind::NuaKey,
            None,
            &c.client_id,
            &Self::nua_label(&c.title, &c.description),
            None,
            Some(c.account_id.clone()),
            c.allow_kb_management,
        )
    }

    /// The client an id names in `account_id` (its `client_id`, or its `internal_id` as the
    /// dashboard sends).
    pub fn nua_client_id(&self, account_id: &str, id: &str) -> Option<String> {
        self.nua_clients
            .values()
            .find(|c| c.account_id == account_id && (c.client_id == id || c.internal_id == id))
            .map(|c| c.client_id.clone())
    }

    /// Deletes a NUA client and revokes its key; false if unknown.
    pub fn delete_nua_client(&mut self, client_id: &str) -> bool {
        let Some(c) = self.nua_clients.remove(client_id) else {
            return false;
        };
        self.revoke(&c.key);
        true
    }

    fn nua_view(&self, c: &NuaClient) -> Value {
        json!({
            "title": c.title, "description": c.description, "contact": c.contact,
            "created": offset_iso(c.created), "partitions": 1, "client_id": c.client_id,
            "internal_id": c.internal_id, "account_id": c.account_id,
            "processing_webhook": c.processing_webhook, "tokens_limit": c.tokens_limit,
        })
    }

    fn nua_created(&self, c: &NuaClient) -> Value {
        json!({"token": self.creds[&c.key].value, "client_id": c.client_id,
               "internal_id": c.internal_id})
    }
}

/// The zone API's NUA client routes.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/api/v1/account/{account_id}/nua_clients",
            get(list).post(create),
        )
        .route(
            "/api/v1/account/{account_id}/nua_client/{client_id}",
            get(get_one).patch(update).delete(remove),
        )
        .route(
            "/api/v1/account/{account_id}/nua_client/{client_id}/key",
            put(renew),
        )
}

/// Admin routes: list NUA clients, delete one out of band.
pub fn admin_router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_fake/nua_clients", get(admin_list))
        .route(
            "/_fake/nua_clients/{client_id}",
            axum::routing::delete(admin_delete),
        )
}

/// A member user of the account; NUA keys and KB keys cannot manage NUA clients.
fn manage_nua(
    st: &State,
    headers: &HeaderMap,
    account_id: &str,
) -> Result<(), super::api::ApiError> {
    let principal = authenticate(st, headers)?;
    let account = st
        .accounts
        .get(account_id)
        .ok_or_else(|| detail(StatusCode::NOT_FOUND, "Account not found"))?;
    match principal {
        Principal::User { .. } if account.member => Ok(()),
        Principal::User { .. } => Err(detail(
            StatusCode::FORBIDDEN,
            "You are not a member of this account",
        )),
        Principal::Nua { .. } | Principal::SaKey { .. } => Err(detail(
            StatusCode::FORBIDDEN,
            "Only account members can manage NUA clients",
        )),
    }
}

fn find(st: &State, account_id: &str, id: &str) -> Result<String, super::api::ApiError> {
    st.nua_client_id(account_id, id)
        .ok_or_else(|| detail(StatusCode::NOT_FOUND, "NUA client not found"))
}

async fn list(
    axum::extract::State(s): S,
    headers: HeaderMap,
    Path(account_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let st = s.lock();
    manage_nua(&st, &headers, &account_id)?;
    let clients: Vec<Value> = st
        .nua_clients
        .values()
        .filter(|c| c.account_id == account_id)
        .filter(|c| q.get("client_id").is_none_or(|id| &c.client_id == id))
        .map(|c| st.nua_view(c))
        .collect();
    ok(json!({ "clients": clients }))
}

/// An optional boolean field (default false).
fn flag(f: &mut Fields, field: &str) -> bool {
    match f.map.get(field) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            f.errors.push(item(
                "bool_type",
                field,
                "Input should be a valid boolean",
                other,
            ));
            false
        }
    }
}

async fn create(
    axum::extract::State(s): S,
    headers: HeaderMap,
    Path(account_id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let mut st = s.lock();
    manage_nua(&st, &headers, &account_id)?;
    let map = parse_body(&body)?;
    let mut f = Fields::new(&map);
    let title = f.string("title", 1);
    let contact = f.string("contact", 1);
    let description = match map.get("description") {
        None | Some(Value::Null) => Some(String::new()),
        Some(_) => f.string("description", 0),
    };
    let client_id = match map.get("client_id") {
        None | Some(Value::Null) => None,
        Some(_) => f.string("client_id", 1).filter(|id| {
            let ok = id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
            if !ok {
                f.errors.push(json!({
                    "type": "string_pattern_mismatch", "loc": ["body", "client_id"],
                    "msg": "String should match pattern '^[a-z0-9_-]+$'",
                    "input": id, "ctx": {"pattern": "^[a-z0-9_-]+$"},
                }));
            }
            ok
        }),
    };
    let allow_kb_management = flag(&mut f, "allow_kb_management");
    let tokens_limit = match map.get("tokens_limit") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) => Some(n),
            None => {
                f.errors.push(item(
                    "greater_than_equal",
                    "tokens_limit",
                    "Input should be a non-negative integer",
                    v,
                ));
                None
            }
        },
    };
    let processing_webhook = map
        .get("processing_webhook")
        .cloned()
        .filter(|v| !v.is_null());
    f.finish()?;
    let (Some(title), Some(contact), Some(description)) = (title, contact, description) else {
        unreachable!("finish() reports missing fields");
    };
    let client_id = client_id.unwrap_or_else(new_id);
    if st.nua_clients.contains_key(&client_id) {
        return Err(detail(
            StatusCode::CONFLICT,
            "A NUA client with this client_id already exists",
        ));
    }
    let mut client = NuaClient {
        client_id: client_id.clone(),
        internal_id: new_id(),
        account_id,
        title,
        description,
        contact,
        allow_kb_management,
        tokens_limit,
        processing_webhook,
        created: st.now(),
        key: String::new(),
    };
    client.key = st.mint_nua_key(&client);
    let body = st.nua_created(&client);
    st.nua_clients.insert(client_id, client);
    created(body)
}

async fn get_one(
    axum::extract::State(s): S,
    headers: HeaderMap,
    Path((account_id, id)): Path<(String, String)>,
) -> ApiResult {
    let st = s.lock();
    manage_nua(&st, &headers, &account_id)?;
    let id = find(&st, &account_id, &id)?;
    ok(st.nua_view(&st.nua_clients[&id]))
}

async fn update(
    axum::extract::State(s): S,
    headers: HeaderMap,
    Path((account_id, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let mut st = s.lock();
    manage_nua(&st, &headers, &account_id)?;
    let id = find(&st, &account_id, &id)?;
    let map = parse_body(&body)?;
    let mut f = Fields::new(&map);
    let text = |f: &mut Fields, field: &str, min: usize| match map.get(field) {
        None | Some(Value::Null) => None,
        Some(_) => f.string(field, min),
    };
    let title = text(&mut f, "title", 1);
    let description = text(&mut f, "description", 0);
    let contact = text(&mut f, "contact", 1);
    f.finish()?;
    let c = st.nua_clients.get_mut(&id).expect("found above");
    if let Some(t) = title {
        c.title = t;
    }
    if let Some(d) = description {
        c.description = d;
    }
    if let Some(x) = contact {
        c.contact = x;
    }
    no_content()
}

async fn remove(
    axum::extract::State(s): S,
    headers: HeaderMap,
    Path((account_id, id)): Path<(String, String)>,
) -> ApiResult {
    let mut st = s.lock();
    manage_nua(&st, &headers, &account_id)?;
    let id = find(&st, &account_id, &id)?;
    st.delete_nua_client(&id);
    no_content()
}

/// A new key for the client; the old one is refused from now on.
async fn renew(
    axum::extract::State(s): S,
    headers: HeaderMap,
    Path((account_id, id)): Path<(String, String)>,
) -> ApiResult {
    let mut st = s.lock();
    manage_nua(&st, &headers, &account_id)?;
    let id = find(&st, &account_id, &id)?;
    let client = st.nua_clients[&id].clone();
    st.revoke(&client.key);
    let key = st.mint_nua_key(&client);
    let c = st.nua_clients.get_mut(&id).expect("found above");
    c.key = key;
    let c = c.clone();
    created(st.nua_created(&c))
}

async fn admin_list(axum::extract::State(s): S) -> Response {
    let st = s.lock();
    let list: Vec<Value> = st
        .nua_clients
        .values()
        .map(|c| {
            let mut v = st.nua_view(c);
            v["key_id"] = json!(c.key);
            v["allow_kb_management"] = json!(c.allow_kb_management);
            v["created"] = json!(time::format(c.created));
            v
        })
        .collect();
    axum::Json(Value::Array(list)).into_response()
}

/// Deletes a NUA client out of band (its key is revoked): 204, or 404.
async fn admin_delete(axum::extract::State(s): S, Path(client_id): Path<String>) -> Response {
    if s.lock().delete_nua_client(&client_id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        detail(StatusCode::NOT_FOUND, "NUA client not found").into_response()
    }
}
