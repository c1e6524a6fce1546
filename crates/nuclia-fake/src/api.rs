//! The Nuclia routes the fake serves (global and regional on one address), with their auth,
//! validation and error shapes (nuclia-api.md §1.3–§5).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::Shared;
use super::state::{AuthFailure, Cred, CredKind, State};
use crate::state::KbRole;
use crate::time;

/// The Nuclia routes of this file (without the NUA clients' routes of [`super::nua`] and the
/// fault layer: [`super::router`] puts them together).
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v1/user", get(user))
        .route("/api/v1/user/welcome", get(welcome))
        .route("/api/v1/accounts", get(accounts))
        .route("/api/v1/zones", get(zones))
        .route("/api/v1/user/pa_tokens", get(list_pats).post(create_pat))
        .route("/api/v1/user/pa_token/{token_id}", delete(delete_pat))
        .route("/api/v1/account/{account_id}/kbs", get(kbs))
        .route("/api/v1/account/{account_id}/kb/{kb_id}", get(kb))
        .route(
            "/api/v1/account/{account_id}/kb/{kb_id}/service_accounts",
            get(list_service_accounts).post(create_service_account),
        )
        .route(
            "/api/v1/account/{account_id}/kb/{kb_id}/service_account/{sa_id}",
            delete(delete_service_account),
        )
        .route(
            "/api/v1/account/{account_id}/kb/{kb_id}/service_account/{sa_id}/keys",
            axum::routing::post(create_key),
        )
        .route(
            "/api/v1/account/{account_id}/kb/{kb_id}/service_account/{sa_id}/key/{key_id}",
            delete(delete_key),
        )
        .route("/api/authorizer/info", get(authorizer_info))
        .route("/api/v1/kb/{kb_id}", get(nucliadb_kb))
        .route("/api/v1/kb/{kb_id}/resources", get(nucliadb_resources))
}

// ---- errors ----

/// A FastAPI-shaped error: `{"detail": "..."}` or a pydantic `detail` list for 422.
pub struct ApiError(pub(crate) StatusCode, pub(crate) Value);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

pub fn detail(status: StatusCode, msg: &str) -> ApiError {
    ApiError(status, json!({ "detail": msg }))
}

pub(crate) fn validation(items: Vec<Value>) -> ApiError {
    ApiError(StatusCode::UNPROCESSABLE_ENTITY, json!({ "detail": items }))
}

pub(crate) fn item(kind: &str, field: &str, msg: &str, input: &Value) -> Value {
    let loc = if field.is_empty() {
        json!(["body"])
    } else {
        json!(["body", field])
    };
    json!({"type": kind, "loc": loc, "msg": msg, "input": input})
}

pub(crate) type ApiResult = Result<Response, ApiError>;

pub(crate) fn created(body: Value) -> ApiResult {
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub(crate) fn ok(body: Value) -> ApiResult {
    Ok(Json(body).into_response())
}

pub(crate) fn no_content() -> ApiResult {
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- authentication ----

/// Who is calling.
pub(crate) enum Principal {
    User {
        user_id: String,
    },
    SaKey {
        sa_id: String,
        account_id: String,
        kb_id: String,
        role: KbRole,
    },
    Nua {
        client_id: String,
        account_id: String,
        allow_kb_management: bool,
    },
}

const HEADERS: [(&str, &[CredKind]); 4] = [
    ("x-nuclia-serviceaccount", &[CredKind::SaKey]),
    // What the NucliaDB SDK (`nucliadb_sdk`, under the `nuclia` SDK's KB calls) sends.
    ("x-stf-serviceaccount", &[CredKind::SaKey]),
    ("x-nuclia-nuakey", &[CredKind::NuaKey]),
    ("authorization", &[CredKind::UserToken, CredKind::Pat]),
];

/// The credential value a request carries in any of the authentication headers, if any.
pub(crate) fn credential_value(headers: &HeaderMap) -> Option<&str> {
    let raw = HEADERS
        .iter()
        .find_map(|(name, _)| headers.get(*name))?
        .to_str()
        .ok()?;
    match raw.split_once(' ') {
        Some((scheme, value)) if scheme.eq_ignore_ascii_case("bearer") => Some(value.trim()),
        _ => None,
    }
}

pub(crate) fn authenticate(st: &State, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let unauthorized = |msg: &str| detail(StatusCode::UNAUTHORIZED, msg);
    let (raw, kinds) = HEADERS
        .iter()
        .find_map(|(name, kinds)| headers.get(*name).map(|v| (v, *kinds)))
        .ok_or_else(|| unauthorized("Not authenticated"))?;
    let raw = raw
        .to_str()
        .map_err(|_| unauthorized("Invalid authentication credentials"))?;
    let value = match raw.split_once(' ') {
        Some((scheme, value))
            if scheme.eq_ignore_ascii_case("bearer") && !value.trim().is_empty() =>
        {
            value.trim()
        }
        _ => return Err(unauthorized("Invalid authentication credentials")),
    };
    let cred: &Cred = st.authenticate(value).map_err(|f| match f {
        AuthFailure::Unknown => {
            unauthorized("The OAuth Access token is either nonexistent or revoked")
        }
        AuthFailure::Revoked => unauthorized("The token has been revoked"),
        AuthFailure::Expired => unauthorized("The token has expired"),
    })?;
    if !kinds.contains(&cred.kind) {
        return Err(unauthorized(
            "The token is not valid for this authentication header",
        ));
    }
    Ok(match cred.kind {
        CredKind::UserToken | CredKind::Pat => Principal::User {
            user_id: cred.owner.clone(),
        },
        CredKind::SaKey => {
            let sa = st
                .service_accounts
                .get(&cred.owner)
                .ok_or_else(|| unauthorized("The token has been revoked"))?;
            Principal::SaKey {
                sa_id: sa.id.clone(),
                account_id: sa.account_id.clone(),
                kb_id: sa.kb_id.clone(),
                role: sa.role,
            }
        }
        CredKind::NuaKey => Principal::Nua {
            client_id: cred.owner.clone(),
            account_id: cred.account_id.clone().unwrap_or_default(),
            allow_kb_management: cred.allow_kb_management,
        },
    })
}

/// Global routes take only user tokens and PATs.
fn global_user(st: &State, headers: &HeaderMap) -> Result<String, ApiError> {
    match authenticate(st, headers)? {
        Principal::User { user_id } => Ok(user_id),
        Principal::Nua { .. } => Err(detail(
            StatusCode::UNAUTHORIZED,
            "Nuakeys are not valid in the global API",
        )),
        Principal::SaKey { .. } => Err(detail(
            StatusCode::UNAUTHORIZED,
            "Service account keys are not valid in the global API",
        )),
    }
}

/// Zone management routes: a member user, or a NUA key of the account (with
/// `allow_kb_management`).
fn manage_account(st: &State, headers: &HeaderMap, account_id: &str) -> Result<(), ApiError> {
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
        Principal::Nua {
            account_id: a,
            allow_kb_management,
            ..
        } if a == account.id => {
            if allow_kb_management {
                Ok(())
            } else {
                Err(detail(
                    StatusCode::FORBIDDEN,
                    "This NUA key is not allowed to manage knowledge boxes",
                ))
            }
        }
        Principal::Nua { .. } => Err(detail(
            StatusCode::FORBIDDEN,
            "This NUA key belongs to another account",
        )),
        Principal::SaKey { .. } => Err(detail(
            StatusCode::FORBIDDEN,
            "Service account keys cannot manage the account",
        )),
    }
}

fn manage_kb<'a>(
    st: &'a State,
    headers: &HeaderMap,
    account_id: &str,
    kb_id: &str,
) -> Result<&'a super::state::Kb, ApiError> {
    manage_account(st, headers, account_id)?;
    st.kbs
        .get(kb_id)
        .filter(|kb| kb.account_id == account_id)
        .ok_or_else(|| detail(StatusCode::NOT_FOUND, "Knowledge Box not found"))
}

// ---- request bodies ----

pub(crate) fn parse_body(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(validation(vec![item(
            "missing",
            "",
            "Field required",
            &Value::Null,
        )]));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(validation(vec![item(
            "model_attributes_type",
            "",
            "Input should be a valid dictionary or object to extract fields from",
            &other,
        )])),
        Err(e) => Err(validation(vec![json!({
            "type": "json_invalid",
            "loc": ["body", e.column()],
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": e.to_string()},
        })])),
    }
}

/// Collects pydantic-style errors while reading fields.
pub(crate) struct Fields<'a> {
    pub(crate) map: &'a Map<String, Value>,
    pub(crate) errors: Vec<Value>,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(map: &'a Map<String, Value>) -> Self {
        Self {
            map,
            errors: Vec::new(),
        }
    }

    fn missing(&mut self, field: &str) {
        let input = Value::Object(self.map.clone());
        self.errors
            .push(item("missing", field, "Field required", &input));
    }

    pub(crate) fn string(&mut self, field: &str, min_len: usize) -> Option<String> {
        match self.map.get(field) {
            None => {
                self.missing(field);
                None
            }
            Some(Value::String(s)) if s.chars().count() < min_len => {
                self.errors.push(json!({
                    "type": "string_too_short", "loc": ["body", field],
                    "msg": format!("String should have at least {min_len} character"),
                    "input": s, "ctx": {"min_length": min_len},
                }));
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.errors.push(item(
                    "string_type",
                    field,
                    "Input should be a valid string",
                    other,
                ));
                None
            }
        }
    }

    /// A datetime field; `Ok(None)` when absent or null and `optional`.
    fn datetime(
        &mut self,
        st: &State,
        field: &str,
        optional: bool,
    ) -> Option<Option<DateTime<Utc>>> {
        let v = match self.map.get(field) {
            None | Some(Value::Null) if optional => return Some(None),
            None => {
                self.missing(field);
                return None;
            }
            Some(v) => v,
        };
        if !matches!(v, Value::String(_) | Value::Number(_)) {
            self.errors.push(item(
                "datetime_type",
                field,
                "Input should be a valid datetime",
                v,
            ));
            return None;
        }
        let Some(t) = time::parse_value(v) else {
            self.errors.push(item(
                "datetime_from_date_parsing",
                field,
                "Input should be a valid datetime or date, unable to parse",
                v,
            ));
            return None;
        };
        if let Err(msg) = st.check_expiry(t) {
            self.errors.push(item(
                "value_error",
                field,
                &format!("Value error, {msg}"),
                v,
            ));
            return None;
        }
        Some(Some(t))
    }

    fn role(&mut self, field: &str) -> Option<KbRole> {
        match self.map.get(field) {
            None => {
                self.missing(field);
                None
            }
            Some(v) => match serde_json::from_value::<KbRole>(v.clone()) {
                Ok(r) => Some(r),
                Err(_) => {
                    self.errors.push(json!({
                        "type": "enum", "loc": ["body", field],
                        "msg": "Input should be 'SOWNER', 'SCONTRIBUTOR' or 'SMEMBER'",
                        "input": v, "ctx": {"expected": "'SOWNER', 'SCONTRIBUTOR' or 'SMEMBER'"},
                    }));
                    None
                }
            },
        }
    }

    pub(crate) fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(validation(self.errors))
        }
    }
}

/// How Python's `datetime.isoformat()` prints a naive UTC time (the PAT routes use it, so
/// clients see a naive form as well as the offset form of the key routes).
pub(crate) fn naive_iso(t: DateTime<Utc>) -> String {
    t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

pub(crate) fn offset_iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
}

pub(crate) type S = AxState<Arc<Shared>>;

// ---- global: user, accounts, zones ----

async fn user(AxState(s): S, headers: HeaderMap) -> ApiResult {
    let st = s.lock();
    let user_id = global_user(&st, &headers)?;
    let user = st
        .users
        .get(&user_id)
        .ok_or_else(|| detail(StatusCode::UNAUTHORIZED, "The user no longer exists"))?;
    ok(json!({
        "id": user.id, "name": user.name, "email": user.email,
        "type": "USER", "language": "en", "last_login": null, "avatar": null,
    }))
}

async fn welcome(AxState(s): S, headers: HeaderMap) -> ApiResult {
    let st = s.lock();
    global_user(&st, &headers)?;
    let accounts: Vec<&str> = st
        .accounts
        .values()
        .filter(|a| a.member)
        .map(|a| a.slug.as_str())
        .collect();
    ok(json!({
        "preferences": {"last_login": null, "language": "en", "theme": "light"},
        "accounts": accounts, "create": true, "can_be_deleted": true, "dependant_accounts": [],
    }))
}

async fn accounts(AxState(s): S, headers: HeaderMap) -> ApiResult {
    let st = s.lock();
    global_user(&st, &headers)?;
    let list: Vec<Value> = st
        .accounts
        .values()
        .filter(|a| a.member)
        .map(|a| {
            json!({"id": a.id, "slug": a.slug, "title": a.title, "type": "stash-trial",
                   "zone_visibility": null})
        })
        .collect();
    ok(Value::Array(list))
}

async fn zones(AxState(s): S, headers: HeaderMap) -> ApiResult {
    let st = s.lock();
    global_user(&st, &headers)?;
    let list: Vec<Value> = st
        .zones
        .iter()
        .map(|z| {
            json!({"id": z.id, "slug": z.slug, "title": z.title, "cloud_provider": "GCP",
                   "private": z.private, "origin": z.origin})
        })
        .collect();
    ok(Value::Array(list))
}

// ---- global: personal access tokens ----

async fn create_pat(AxState(s): S, headers: HeaderMap, body: Bytes) -> ApiResult {
    let mut st = s.lock();
    let user_id = global_user(&st, &headers)?;
    let map = parse_body(&body)?;
    let mut f = Fields::new(&map);
    let description = f.string("description", 0);
    let expires = f.datetime(&st, "expiration_date", true);
    f.finish()?;
    let (Some(description), Some(expires)) = (description, expires) else {
        unreachable!("finish() reports missing fields");
    };
    let id = st.insert_cred(
        CredKind::Pat,
        None,
        &user_id,
        &description,
        expires,
        None,
        false,
    );
    let c = &st.creds[&id];
    created(json!({"id": c.id, "token": c.value, "expires": c.expires.map(naive_iso)}))
}

async fn list_pats(AxState(s): S, headers: HeaderMap) -> ApiResult {
    let st = s.lock();
    let user_id = global_user(&st, &headers)?;
    let list: Vec<Value> = st
        .creds
        .values()
        .filter(|c| c.kind == CredKind::Pat && c.owner == user_id && !c.revoked)
        .map(|c| json!({"id": c.id, "description": c.description, "expires": c.expires.map(naive_iso)}))
        .collect();
    ok(Value::Array(list))
}

async fn delete_pat(AxState(s): S, headers: HeaderMap, Path(token_id): Path<String>) -> ApiResult {
    let mut st = s.lock();
    let user_id = global_user(&st, &headers)?;
    let found = st
        .creds
        .get(&token_id)
        .is_some_and(|c| c.kind == CredKind::Pat && c.owner == user_id && !c.revoked);
    if !found {
        return Err(detail(StatusCode::NOT_FOUND, "Token not found"));
    }
    st.revoke(&token_id);
    no_content()
}

// ---- regional: KBs ----

fn kb_summary(kb: &super::state::Kb) -> Value {
    json!({
        "id": kb.id, "slug": kb.slug, "zone": kb.zone, "title": kb.title, "state": "PUBLISHED",
        "description": "", "role_on_kb": "SOWNER", "allowed_origins": null,
        "allowed_ip_addresses": null, "search_configs": null, "external_index_provider": null,
        "enforce_security": false,
    })
}

async fn kbs(AxState(s): S, headers: HeaderMap, Path(account_id): Path<String>) -> ApiResult {
    let st = s.lock();
    manage_account(&st, &headers, &account_id)?;
    let list: Vec<Value> = st
        .kbs
        .values()
        .filter(|kb| kb.account_id == account_id)
        .map(kb_summary)
        .collect();
    ok(Value::Array(list))
}

async fn kb(
    AxState(s): S,
    headers: HeaderMap,
    Path((account_id, kb_id)): Path<(String, String)>,
) -> ApiResult {
    let st = s.lock();
    let kb = manage_kb(&st, &headers, &account_id, &kb_id)?;
    ok(json!({
        "id": kb.id, "slug": kb.slug, "account_id": kb.account_id, "zone": kb.zone,
        "title": kb.title, "description": "", "state": "PUBLISHED",
        "created": offset_iso(kb.created),
    }))
}

// ---- regional: service accounts and keys ----

async fn list_service_accounts(
    AxState(s): S,
    headers: HeaderMap,
    Path((account_id, kb_id)): Path<(String, String)>,
) -> ApiResult {
    let st = s.lock();
    manage_kb(&st, &headers, &account_id, &kb_id)?;
    let list: Vec<Value> = st
        .service_accounts
        .values()
        .filter(|sa| sa.kb_id == kb_id)
        .map(|sa| {
            let keys: Vec<Value> = sa
                .keys
                .iter()
                .filter_map(|k| st.creds.get(k))
                .filter(|c| !c.revoked)
                .map(|c| {
                    json!({"id": c.id, "created": offset_iso(c.created),
                           "expires": c.expires.map(offset_iso)})
                })
                .collect();
            // The API documents `keys` as nullable: a service account without keys says null.
            let keys = if keys.is_empty() {
                Value::Null
            } else {
                Value::Array(keys)
            };
            json!({"id": sa.id, "title": sa.title, "role": sa.role, "keys": keys})
        })
        .collect();
    ok(Value::Array(list))
}

async fn create_service_account(
    AxState(s): S,
    headers: HeaderMap,
    Path((account_id, kb_id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let mut st = s.lock();
    manage_kb(&st, &headers, &account_id, &kb_id)?;
    let map = parse_body(&body)?;
    let mut f = Fields::new(&map);
    let title = f.string("title", 1);
    let role = f.role("role");
    f.finish()?;
    let (Some(title), Some(role)) = (title, role) else {
        unreachable!("finish() reports missing fields");
    };
    let id = st.add_service_account(&account_id, &kb_id, &title, role);
    created(json!({ "id": id }))
}

fn find_sa<'a>(
    st: &'a State,
    kb_id: &str,
    sa_id: &str,
) -> Result<&'a super::state::ServiceAccount, ApiError> {
    st.service_accounts
        .get(sa_id)
        .filter(|sa| sa.kb_id == kb_id)
        .ok_or_else(|| detail(StatusCode::NOT_FOUND, "Service account not found"))
}

async fn delete_service_account(
    AxState(s): S,
    headers: HeaderMap,
    Path((account_id, kb_id, sa_id)): Path<(String, String, String)>,
) -> ApiResult {
    let mut st = s.lock();
    manage_kb(&st, &headers, &account_id, &kb_id)?;
    find_sa(&st, &kb_id, &sa_id)?;
    st.delete_service_account(&sa_id);
    no_content()
}

async fn create_key(
    AxState(s): S,
    headers: HeaderMap,
    Path((account_id, kb_id, sa_id)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult {
    let mut st = s.lock();
    manage_kb(&st, &headers, &account_id, &kb_id)?;
    let title = find_sa(&st, &kb_id, &sa_id)?.title.clone();
    let map = parse_body(&body)?;
    let mut f = Fields::new(&map);
    let expires = f.datetime(&st, "expires", false);
    f.finish()?;
    let Some(expires) = expires else {
        unreachable!("finish() reports missing fields");
    };
    let id = st.insert_cred(
        CredKind::SaKey,
        None,
        &sa_id,
        &title,
        expires,
        Some(account_id.clone()),
        false,
    );
    st.service_accounts
        .get_mut(&sa_id)
        .expect("checked above")
        .keys
        .push(id.clone());
    created(json!({"id": id, "token": st.creds[&id].value}))
}

async fn delete_key(
    AxState(s): S,
    headers: HeaderMap,
    Path((account_id, kb_id, sa_id, key_id)): Path<(String, String, String, String)>,
) -> ApiResult {
    let mut st = s.lock();
    manage_kb(&st, &headers, &account_id, &kb_id)?;
    let sa = find_sa(&st, &kb_id, &sa_id)?;
    let live = sa.keys.contains(&key_id) && st.creds.get(&key_id).is_some_and(|c| !c.revoked);
    if !live {
        return Err(detail(StatusCode::NOT_FOUND, "Key not found"));
    }
    st.revoke(&key_id);
    if let Some(sa) = st.service_accounts.get_mut(&sa_id) {
        sa.keys.retain(|k| k != &key_id);
    }
    no_content()
}

// ---- whoami and NucliaDB ----

async fn authorizer_info(AxState(s): S, headers: HeaderMap) -> ApiResult {
    let st = s.lock();
    let account_type = |id: &str| st.accounts.get(id).map(|_| "stash-trial");
    let body = match authenticate(&st, &headers)? {
        Principal::SaKey {
            sa_id,
            account_id,
            kb_id,
            role,
        } => json!({
            "auth": "service_account",
            "user": {"user_id": sa_id, "account_id": account_id, "kb_id": kb_id,
                     "role": role, "account_type": account_type(&account_id)},
            "ip_info": null,
        }),
        Principal::Nua {
            client_id,
            account_id,
            ..
        } => json!({
            "auth": "nua_key",
            "user": {"user_id": client_id, "account_id": account_id,
                     "account_type": account_type(&account_id)},
            "ip_info": null,
        }),
        Principal::User { user_id } => json!({
            "auth": "user",
            "user": {"user_id": user_id},
            "ip_info": null,
        }),
    };
    ok(body)
}

/// The KB a NucliaDB route reads, if the caller may read it: its own KB for a KB key, a KB of
/// an account they belong to for a user.
fn nucliadb_read<'a>(
    st: &'a State,
    headers: &HeaderMap,
    kb_id: &str,
) -> Result<&'a super::state::Kb, ApiError> {
    match authenticate(st, headers)? {
        Principal::SaKey { kb_id: own, .. } if own == kb_id => {}
        Principal::SaKey { .. } => {
            return Err(detail(
                StatusCode::FORBIDDEN,
                "This key is not valid for this Knowledge Box",
            ));
        }
        Principal::User { .. } => {
            let member = st
                .kbs
                .get(kb_id)
                .and_then(|kb| st.accounts.get(&kb.account_id))
                .is_none_or(|a| a.member);
            if !member {
                return Err(detail(
                    StatusCode::FORBIDDEN,
                    "You are not a member of this account",
                ));
            }
        }
        Principal::Nua { .. } => {
            return Err(detail(
                StatusCode::FORBIDDEN,
                "NUA keys cannot read Knowledge Boxes",
            ));
        }
    }
    st.kbs
        .get(kb_id)
        .ok_or_else(|| detail(StatusCode::NOT_FOUND, "Knowledge Box not found"))
}

async fn nucliadb_kb(AxState(s): S, headers: HeaderMap, Path(kb_id): Path<String>) -> ApiResult {
    let st = s.lock();
    let kb = nucliadb_read(&st, &headers, &kb_id)?;
    ok(json!({
        "uuid": kb.id, "slug": kb.slug,
        "config": {"title": kb.title, "description": "", "slug": kb.slug,
                   "hidden_resources_enabled": false, "hidden_resources_hide_on_creation": false},
        "model": null,
    }))
}

/// NucliaDB's resource list (`nuclia kb list`): the fake's KBs hold no resources.
async fn nucliadb_resources(
    AxState(s): S,
    headers: HeaderMap,
    Path(kb_id): Path<String>,
) -> ApiResult {
    let st = s.lock();
    nucliadb_read(&st, &headers, &kb_id)?;
    ok(json!({
        "resources": [],
        "pagination": {"page": 0, "size": 20, "last": true},
    }))
}
