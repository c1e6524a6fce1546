//! The HTTP client: one method per Nuclia call, each with a timeout, a per-credential rate
//! limit and classified errors.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use url::Url;

use super::error::scrubbed_detail;
use super::types::*;
use super::{ApiToken, Credential, Endpoints, Error, KbLocation, time};

/// Answers larger than this are refused as [`Error::Malformed`].
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Receives one report per HTTP call, e.g. to feed metrics. `outcome` is the status code
/// (`"200"`, `"404"`, ...) or one of `"timeout"`, `"connect"`, `"io"`, `"too_large"`.
pub trait ApiObserver: Send + Sync {
    /// Called once per HTTP attempt, after the answer has been read.
    fn observe(&self, op: &'static str, outcome: &str, elapsed: Duration);
    /// Called when a call waited for its credential's budget, made for `tenant` (a
    /// namespace; "" for the operator's own work).
    fn rate_limited(&self, _tenant: &str, _waited: Duration) {}
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Where the API lives.
    pub endpoints: Endpoints,
    /// Total time allowed for one request, answer included.
    pub timeout: Duration,
    /// Sustained requests per second per credential (0 or less: unlimited).
    pub per_credential_rps: f64,
    /// Requests a credential may make at once before the rate applies.
    pub per_credential_burst: u32,
    /// The `User-Agent` header.
    pub user_agent: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            endpoints: Endpoints::default(),
            timeout: Duration::from_secs(30),
            per_credential_rps: 5.0,
            per_credential_burst: 10,
            user_agent: concat!("nuclia-token-operator/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

struct Inner {
    http: reqwest::Client,
    endpoints: Endpoints,
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    /// Who waits on a credential's budget next (round robin over namespaces).
    turns: Arc<super::fair::Turns>,
}

/// The Nuclia API client. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    observer: Option<Arc<dyn ApiObserver>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.inner.endpoints)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct ItemCreated {
    id: String,
}

impl Client {
    /// Builds a client. Needs a rustls crypto provider installed in the process.
    pub fn new(cfg: ClientConfig) -> Result<Self, Error> {
        cfg.endpoints.validate()?;
        if cfg.timeout.is_zero() {
            return Err(Error::Config("timeout must be positive".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .user_agent(cfg.user_agent.clone())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        let limiter = if cfg.per_credential_rps > 0.0 {
            if !cfg.per_credential_rps.is_finite() {
                return Err(Error::Config("per_credential_rps must be finite".into()));
            }
            let period = Duration::from_secs_f64(1.0 / cfg.per_credential_rps);
            let quota = Quota::with_period(period)
                .ok_or_else(|| Error::Config("per_credential_rps is too large".into()))?
                .allow_burst(NonZeroU32::new(cfg.per_credential_burst.max(1)).expect("max(1)"));
            Some(RateLimiter::keyed(quota))
        } else {
            None
        };
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                endpoints: cfg.endpoints,
                limiter,
                turns: Arc::default(),
            }),
            observer: None,
        })
    }

    /// Reports every call to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn ApiObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Drops the rate limiters of credentials whose budget is back to full (the same as a new
    /// one's), so the limiters of credentials no longer used do not pile up; returns how many
    /// remain.
    pub fn evict_idle_limiters(&self) -> usize {
        let Some(l) = &self.inner.limiter else {
            return 0;
        };
        l.retain_recent();
        l.shrink_to_fit();
        l.len()
    }

    /// The configured endpoints.
    pub fn endpoints(&self) -> &Endpoints {
        &self.inner.endpoints
    }

    // ---- personal access tokens and the user (global API) ----

    /// `POST /api/v1/user/pa_tokens`.
    pub async fn create_personal_token(
        &self,
        c: &Credential,
        description: &str,
        expires: DateTime<Utc>,
    ) -> Result<CreatedToken, Error> {
        let url = self.global(&["api", "v1", "user", "pa_tokens"]);
        let body = json!({"description": description, "expiration_date": time::format(expires)});
        self.json("create_personal_token", Method::POST, url, c, Some(body))
            .await
    }

    /// `GET /api/v1/user/pa_tokens`.
    pub async fn list_personal_tokens(
        &self,
        c: &Credential,
    ) -> Result<Vec<PersonalTokenItem>, Error> {
        let url = self.global(&["api", "v1", "user", "pa_tokens"]);
        self.json("list_personal_tokens", Method::GET, url, c, None)
            .await
    }

    /// `DELETE /api/v1/user/pa_token/{token_id}` (singular `pa_token`).
    pub async fn delete_personal_token(&self, c: &Credential, id: &str) -> Result<(), Error> {
        let url = self.global(&["api", "v1", "user", "pa_token", id]);
        self.empty("delete_personal_token", Method::DELETE, url, c, None)
            .await
    }

    /// `GET /api/v1/user/welcome`: succeeds if the user token or PAT is valid.
    pub async fn welcome(&self, c: &Credential) -> Result<(), Error> {
        let url = self.global(&["api", "v1", "user", "welcome"]);
        self.json::<Value>("welcome", Method::GET, url, c, None)
            .await
            .map(drop)
    }

    /// `GET /api/v1/user`: who the user token or PAT belongs to.
    pub async fn user(&self, c: &Credential) -> Result<UserProfile, Error> {
        let url = self.global(&["api", "v1", "user"]);
        self.json("user", Method::GET, url, c, None).await
    }

    /// `GET /api/v1/accounts`.
    pub async fn accounts(&self, c: &Credential) -> Result<Vec<Account>, Error> {
        let url = self.global(&["api", "v1", "accounts"]);
        self.json("accounts", Method::GET, url, c, None).await
    }

    /// `GET /api/v1/zones`.
    pub async fn zones(&self, c: &Credential) -> Result<Vec<Zone>, Error> {
        let url = self.global(&["api", "v1", "zones"]);
        self.json("zones", Method::GET, url, c, None).await
    }

    // ---- KBs and service accounts (regional API) ----

    /// `GET /api/v1/account/{account_id}/kbs`.
    pub async fn kbs(
        &self,
        c: &Credential,
        zone: &str,
        account_id: &str,
    ) -> Result<Vec<KbSummary>, Error> {
        let url = self.regional(zone, &["api", "v1", "account", account_id, "kbs"])?;
        self.json("kbs", Method::GET, url, c, None).await
    }

    /// `GET /api/v1/account/{account_id}/kb/{kb_id}`.
    pub async fn kb(
        &self,
        c: &Credential,
        zone: &str,
        account_id: &str,
        kb_id: &str,
    ) -> Result<KnowledgeBox, Error> {
        let url = self.regional(zone, &["api", "v1", "account", account_id, "kb", kb_id])?;
        self.json("kb", Method::GET, url, c, None).await
    }

    /// `GET /api/v1/account/{account_id}/kb/{kb_id}/service_accounts` (with their keys).
    pub async fn service_accounts(
        &self,
        c: &Credential,
        zone: &str,
        account_id: &str,
        kb_id: &str,
    ) -> Result<Vec<ServiceAccount>, Error> {
        let url = self.kb_url(zone, account_id, kb_id, &["service_accounts"])?;
        self.json("service_accounts", Method::GET, url, c, None)
            .await
    }

    /// `POST /api/v1/account/{account_id}/kb/{kb_id}/service_accounts`; returns the new id.
    pub async fn create_service_account(
        &self,
        c: &Credential,
        zone: &str,
        account_id: &str,
        kb_id: &str,
        title: &str,
        role: KbRole,
    ) -> Result<String, Error> {
        let url = self.kb_url(zone, account_id, kb_id, &["service_accounts"])?;
        let body = json!({"title": title, "role": role.as_str()});
        let created: ItemCreated = self
            .json("create_service_account", Method::POST, url, c, Some(body))
            .await?;
        Ok(created.id)
    }

    /// `DELETE /api/v1/account/{account_id}/kb/{kb_id}/service_account/{sa_id}`.
    pub async fn delete_service_account(
        &self,
        c: &Credential,
        zone: &str,
        account_id: &str,
        kb_id: &str,
        sa_id: &str,
    ) -> Result<(), Error> {
        let url = self.kb_url(zone, account_id, kb_id, &["service_account", sa_id])?;
        self.empty("delete_service_account", Method::DELETE, url, c, None)
            .await
    }

    /// `POST /api/v1/account/{account_id}/kb/{kb_id}/service_account/{sa_id}/keys`.
    /// The answer does not echo the expiry: keep the one requested.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_service_account_key(
        &self,
        c: &Credential,
        zone: &str,
        account_id: &str,
        kb_id: &str,
        sa_id: &str,
        expires: DateTime<Utc>,
    ) -> Result<CreatedKey, Error> {
        let url = self.kb_url(zone, account_id, kb_id, &["service_account", sa_id, "keys"])?;
        let body = json!({"expires": time::format(expires)});
        self.json(
            "create_service_account_key",
            Method::POST,
            url,
            c,
            Some(body),
        )
        .await
    }

    /// `DELETE /api/v1/account/{account_id}/kb/{kb_id}/service_account/{sa_id}/key/{key_id}`.
    #[allow(clippy::too_many_arguments)]
    pub async fn delete_service_account_key(
        &self,
        c: &Credential,
        zone: &str,
        account_id: &str,
        kb_id: &str,
        sa_id: &str,
        key_id: &str,
    ) -> Result<(), Error> {
        let url = self.kb_url(
            zone,
            account_id,
            kb_id,
            &["service_account", sa_id, "key", key_id],
        )?;
        self.empty("delete_service_account_key", Method::DELETE, url, c, None)
            .await
    }

    /// `GET {regional}/api/authorizer/info` (no `/v1`): who a KB key or NUA key belongs to.
    pub async fn authorizer_info(
        &self,
        c: &Credential,
        regional: &Url,
    ) -> Result<AuthorizerInfo, Error> {
        let url = join(regional, &["api", "authorizer", "info"]);
        self.json("authorizer_info", Method::GET, url, c, None)
            .await
    }

    /// `GET {kbUrl}` with the KB key, as a consumer of the key would (nuclia-api.md §5.2).
    pub async fn get_kb_with_key(
        &self,
        loc: &KbLocation,
        key: &ApiToken,
    ) -> Result<KbObject, Error> {
        let c = Credential::ServiceAccount(key.clone());
        self.json("get_kb_with_key", Method::GET, loc.kb_url.clone(), &c, None)
            .await
    }

    // ---- NUA clients (regional API, nuclia-api.md §4) ----

    /// `GET /api/v1/account/{account_id}/nua_clients`.
    pub async fn nua_clients(
        &self,
        c: &Credential,
        zone: &str,
        account_id: &str,
    ) -> Result<Vec<NuaClient>, Error> {
        let url = self.regional(zone, &["api", "v1", "account", account_id, "nua_clients"])?;
        let list: NuaClients = self.json("nua_clients", Method::GET, url, c, None).await?;
        Ok(list.clients)
    }

    /// `POST /api/v1/account/{account_id}/nua_clients`: a new client and its key.
    pub async fn create_nua_client(
        &self,
        c: &Credential,
        zone: &str,
        account_id: &str,
        body: &NuaClientCreation,
    ) -> Result<CreatedNuaClient, Error> {
        let url = self.regional(zone, &["api", "v1", "account", account_id, "nua_clients"])?;
        let body = serde_json::to_value(body).map_err(|e| Error::Config(e.to_string()))?;
        self.json("create_nua_client", Method::POST, url, c, Some(body))
            .await
    }

    /// `GET /api/v1/account/{account_id}/nua_client/{client_id}`.
    pub async fn nua_client(
        &self,
        c: &Credential,
        zone: &str,
        account_id: &str,
        client_id: &str,
    ) -> Result<NuaClient, Error> {
        let url = self.nua_client_url(zone, account_id, client_id, &[])?;
        self.json("nua_client", Method::GET, url, c, None).await
    }

    /// `DELETE /api/v1/account/{account_id}/nua_client/{client_id}`: the client and its key.
    pub async fn delete_nua_client(
        &self,
        c: &Credential,
        zone: &str,
        account_id: &str,
        client_id: &str,
    ) -> Result<(), Error> {
        let url = self.nua_client_url(zone, account_id, client_id, &[])?;
        self.empty("delete_nua_client", Method::DELETE, url, c, None)
            .await
    }

    /// `PUT /api/v1/account/{account_id}/nua_client/{client_id}/key`: a new key for the client
    /// (the old one may stop working at once; the operator rotates by new clients instead).
    pub async fn renew_nua_client_key(
        &self,
        c: &Credential,
        zone: &str,
        account_id: &str,
        client_id: &str,
    ) -> Result<CreatedNuaClient, Error> {
        let url = self.nua_client_url(zone, account_id, client_id, &["key"])?;
        self.json("renew_nua_client_key", Method::PUT, url, c, Some(json!({})))
            .await
    }

    fn nua_client_url(
        &self,
        zone: &str,
        account_id: &str,
        client_id: &str,
        rest: &[&str],
    ) -> Result<Url, Error> {
        let mut segments = vec!["api", "v1", "account", account_id, "nua_client", client_id];
        segments.extend_from_slice(rest);
        self.regional(zone, &segments)
    }

    // ---- plumbing ----

    fn global(&self, segments: &[&str]) -> Url {
        join(&self.inner.endpoints.global, segments)
    }

    fn regional(&self, zone: &str, segments: &[&str]) -> Result<Url, Error> {
        Ok(join(&self.inner.endpoints.regional(zone)?, segments))
    }

    fn kb_url(
        &self,
        zone: &str,
        account_id: &str,
        kb_id: &str,
        rest: &[&str],
    ) -> Result<Url, Error> {
        let mut segments = vec!["api", "v1", "account", account_id, "kb", kb_id];
        segments.extend_from_slice(rest);
        self.regional(zone, &segments)
    }

    async fn json<T: DeserializeOwned>(
        &self,
        op: &'static str,
        method: Method,
        url: Url,
        c: &Credential,
        body: Option<Value>,
    ) -> Result<T, Error> {
        let (_, bytes) = self.send(op, method, url, c, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Malformed {
            op,
            detail: describe_json_error(&e),
        })
    }

    async fn empty(
        &self,
        op: &'static str,
        method: Method,
        url: Url,
        c: &Credential,
        body: Option<Value>,
    ) -> Result<(), Error> {
        self.send(op, method, url, c, body).await.map(drop)
    }

    /// Sends one request; returns the status and body of a 2xx answer (checked to be JSON
    /// unless empty), or the classified error.
    async fn send(
        &self,
        op: &'static str,
        method: Method,
        url: Url,
        c: &Credential,
        body: Option<Value>,
    ) -> Result<(StatusCode, Vec<u8>), Error> {
        if let Some(limiter) = &self.inner.limiter {
            let key = c.fingerprint();
            let started = Instant::now();
            let tenant = super::fair::current_tenant();
            let turn = self.inner.turns.turn(&key, &tenant).await;
            limiter.until_key_ready(&key).await;
            drop(turn);
            let waited = started.elapsed();
            if let Some(o) = &self.observer
                && waited >= Duration::from_millis(1)
            {
                o.rate_limited(&tenant, waited);
            }
        }
        let mut auth =
            HeaderValue::try_from(format!("Bearer {}", c.token().expose())).map_err(|_| {
                Error::Config(format!("{op}: the credential is not a valid header value"))
            })?;
        auth.set_sensitive(true);
        let mut req = self
            .inner
            .http
            .request(method, url)
            .header(c.header_name(), auth)
            .header(ACCEPT, "application/json");
        if let Some(body) = body {
            req = req.json(&body);
        }
        // Every text taken from the answer (or the transport error) is scrubbed of the
        // credential sent, in case something upstream quotes the request's headers.
        let secrets = [c.token().expose()];
        let started = Instant::now();
        let result = self.exchange(op, req, &secrets).await;
        if let Some(o) = &self.observer {
            let outcome = match &result {
                Ok((status, _, _)) => status.as_u16().to_string(),
                Err(Failure(outcome, _)) => (*outcome).to_owned(),
            };
            o.observe(op, &outcome, started.elapsed());
        }
        match result {
            Ok((status, headers, bytes)) => {
                if !status.is_success() {
                    return Err(Error::from_status(
                        op,
                        status.as_u16(),
                        &bytes,
                        retry_after(&headers),
                        &secrets,
                    ));
                }
                if !bytes.is_empty() && status != StatusCode::NO_CONTENT {
                    let ct = headers
                        .get(CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    if !ct.to_ascii_lowercase().contains("json") {
                        return Err(Error::Malformed {
                            op,
                            detail: format!(
                                "expected JSON, got content type {:?}",
                                scrubbed_detail(ct, &secrets)
                            ),
                        });
                    }
                }
                Ok((status, bytes))
            }
            Err(Failure(_, e)) => Err(e),
        }
    }

    async fn exchange(
        &self,
        op: &'static str,
        req: reqwest::RequestBuilder,
        secrets: &[&str],
    ) -> Result<(StatusCode, reqwest::header::HeaderMap, Vec<u8>), Failure> {
        let mut resp = req.send().await.map_err(|e| transport(op, &e, secrets))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_BODY_BYTES as u64)
        {
            return Err(too_large(op));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| transport(op, &e, secrets))? {
            if bytes.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(too_large(op));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok((status, headers, bytes))
    }
}

/// An exchange that produced no HTTP answer: the observer's outcome label and the error.
struct Failure(&'static str, Error);

fn too_large(op: &'static str) -> Failure {
    Failure(
        "too_large",
        Error::Malformed {
            op,
            detail: format!("answer larger than {MAX_BODY_BYTES} bytes"),
        },
    )
}

/// Classifies a transport error. Credentials travel in headers, not in the URL, but the
/// message (which quotes lower layers, even a peer's words) is scrubbed and truncated anyway.
fn transport(op: &'static str, e: &reqwest::Error, secrets: &[&str]) -> Failure {
    let (outcome, what) = if e.is_timeout() {
        ("timeout", "timed out")
    } else if e.is_connect() {
        ("connect", "connection failed")
    } else if e.is_body() || e.is_decode() {
        ("io", "connection dropped while reading the answer")
    } else {
        ("io", "request failed")
    };
    let mut detail = what.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    Failure(
        outcome,
        Error::Transient {
            op,
            detail: scrubbed_detail(&detail, secrets),
        },
    )
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    Some((at - Utc::now()).to_std().unwrap_or(Duration::ZERO))
}

/// A JSON decoding error without any value from the body (a misplaced token must not leak).
fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Syntax => "invalid JSON".to_owned(),
        Category::Eof => "truncated JSON".to_owned(),
        Category::Io => "unreadable body".to_owned(),
        Category::Data => {
            let msg = e.to_string();
            if msg.starts_with("missing field") || msg.starts_with("invalid type: null") {
                msg.split(" at line").next().unwrap_or("").to_owned()
            } else {
                "unexpected shape".to_owned()
            }
        }
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

/// `base` + path segments (percent-encoded, so an id cannot change the path).
fn join(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_encodes_segments() {
        let base = Url::parse("http://h:1/prefix/").unwrap();
        assert_eq!(
            join(&base, &["api", "v1", "x/../y"]).as_str(),
            "http://h:1/prefix/api/v1/x%2F..%2Fy"
        );
        let base = Url::parse("http://h:1").unwrap();
        assert_eq!(join(&base, &["api"]).as_str(), "http://h:1/api");
    }

    #[test]
    fn retry_after_forms() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        let later = (Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        h.insert(RETRY_AFTER, HeaderValue::try_from(later).unwrap());
        let got = retry_after(&h).unwrap();
        assert!(
            got > Duration::from_secs(100) && got <= Duration::from_secs(120),
            "{got:?}"
        );
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }
}
