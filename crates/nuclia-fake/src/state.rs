//! The fake's in-memory model: users, accounts, zones, KBs, service accounts and their
//! [`KbRole`]s, NUA clients, credentials (and how their values are minted), the fake clock, call
//! counters and fault rules. Handlers lock it through one mutex.

use std::collections::{BTreeMap, HashMap};

use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::seed::{Seed, SeedCredential, SeedUser};
use crate::time;

/// The longest lifetime a PAT or key may be given (nuclia-api.md §3.6).
pub const MAX_LIFETIME_DAYS: i64 = 1095;

/// The role of a service account on its KB, as the wire names it (the fake's own enum: see
/// [`crate::time`] for why it keeps its own copies of the wire format).
#[allow(clippy::upper_case_acronyms)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KbRole {
    /// Owner (admin).
    SOWNER,
    /// Contributor (write).
    SCONTRIBUTOR,
    /// Member (read).
    SMEMBER,
}

/// What a credential is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredKind {
    UserToken,
    Pat,
    SaKey,
    NuaKey,
}

/// One credential. `value` is what the API minted; it never leaves the fake except through
/// the creating answer and the test-only `/_fake/minted`.
#[derive(Clone, Debug)]
pub struct Cred {
    pub id: String,
    pub kind: CredKind,
    pub value: String,
    /// User id (user token, PAT), service-account id (SA key) or NUA client id.
    pub owner: String,
    pub description: String,
    pub created: DateTime<Utc>,
    pub expires: Option<DateTime<Utc>>,
    pub revoked: bool,
    /// NUA keys and SA keys: the account they belong to.
    pub account_id: Option<String>,
    /// NUA keys only.
    pub allow_kb_management: bool,
}

#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub name: String,
    pub email: String,
}

#[derive(Clone, Debug)]
pub struct Account {
    pub id: String,
    pub slug: String,
    pub title: String,
    pub zone: String,
    /// Whether the fake's users (all of them) belong to the account.
    pub member: bool,
}

#[derive(Clone, Debug)]
pub struct Zone {
    pub id: String,
    pub slug: String,
    pub title: String,
    pub private: bool,
    pub origin: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Kb {
    pub id: String,
    pub slug: String,
    pub title: String,
    pub account_id: String,
    pub zone: String,
    pub created: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub struct ServiceAccount {
    pub id: String,
    pub account_id: String,
    pub kb_id: String,
    pub title: String,
    pub role: KbRole,
    pub created: DateTime<Utc>,
    /// Ids of its keys (live or dead; deleting a key removes it from here).
    pub keys: Vec<String>,
}

/// One NUA client of an account.
#[derive(Clone, Debug)]
pub struct NuaClient {
    pub client_id: String,
    pub internal_id: String,
    pub account_id: String,
    pub title: String,
    pub description: String,
    pub contact: String,
    pub allow_kb_management: bool,
    pub tokens_limit: Option<u64>,
    pub processing_webhook: Option<Value>,
    pub created: DateTime<Utc>,
    /// Id of its current key (a credential).
    pub key: String,
}

/// Everything the fake knows.
#[derive(Debug)]
pub struct State {
    /// The fake's own URL (the `iss` of the keys it mints).
    pub url: String,
    pub clock_offset: Duration,
    /// A clock standing still at this time, plus the offset (the lifecycle simulation's;
    /// None: real time).
    pub frozen: Option<DateTime<Utc>>,
    /// Every user by id: the default one and the seeded `users`. Each owns its user tokens
    /// and PATs; all are members of the same accounts.
    pub users: BTreeMap<String, User>,
    pub accounts: BTreeMap<String, Account>,
    pub zones: Vec<Zone>,
    pub kbs: BTreeMap<String, Kb>,
    pub service_accounts: BTreeMap<String, ServiceAccount>,
    /// NUA clients by client id (see [`super::nua`]).
    pub nua_clients: BTreeMap<String, NuaClient>,
    pub creds: BTreeMap<String, Cred>,
    by_value: HashMap<String, String>,
    pub minted: Vec<String>,
    pub calls: BTreeMap<String, u64>,
    /// Calls per credential id (`unknown` when the request carried no known credential).
    pub calls_by_credential: BTreeMap<String, u64>,
    pub faults: Vec<FaultRule>,
}

/// The values a client needs to start (printed as the binary's first line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bootstrap {
    pub url: String,
    pub user_token: String,
    pub pat: String,
    pub nua_key: String,
    pub account_id: String,
    pub account_slug: String,
    pub zone: String,
    pub kbs: Vec<BootstrapKb>,
    /// The seeded extra users (absent when there are none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<BootstrapUser>,
}

/// A seeded user in [`Bootstrap`], with its user token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapUser {
    pub id: String,
    pub email: String,
    pub user_token: String,
}

/// A KB in [`Bootstrap`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapKb {
    pub id: String,
    pub url: String,
}

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
    /// Instead of running the route, answer 400 (or `status`) with a `{"detail": ...}` that
    /// quotes every credential header of the request verbatim, as some gateways' error pages
    /// do.
    #[serde(default)]
    pub echo_credentials: bool,
    /// Run the route, then cap every `expires` of its JSON answer at now + this many seconds
    /// (a `null` expiry too); a POST answer whose `id` is a credential shortens that
    /// credential for real.
    #[serde(default)]
    pub cap_expires_secs: Option<u64>,
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
        if let Some(secs) = self.cap_expires_secs {
            let max = MAX_LIFETIME_DAYS as u64 * 86_400;
            if !(1..=max).contains(&secs) {
                return Err(format!(
                    "cap_expires_secs must be within 1..={max}, got {secs}"
                ));
            }
            if self.status.is_some() || self.echo_credentials {
                return Err(
                    "cap_expires_secs needs the route to run: not with status or echo_credentials"
                        .into(),
                );
            }
        }
        Ok(())
    }

    /// Whether the rule covers a request of `method` to the route `template`.
    pub(super) fn matches(&self, method: &str, template: &str) -> bool {
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

/// Why a request's credential is refused.
pub enum AuthFailure {
    Unknown,
    Revoked,
    Expired,
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill(&mut buf[..]);
    hex::encode(buf)
}

pub(crate) fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// JSON text whose base64 encoding has no `+`, `/`, `-` or `_`: in ASCII text only a byte
/// `>`, `?`, `~` or DEL in the third place of a group of three gives one (the sextets 62 and
/// 63), and outside ASCII every byte may; those characters only occur inside JSON strings, so
/// they are written as `\u` escapes, which decode to the same claims.
pub fn std_b64_safe(json_text: &str) -> String {
    let mut out = String::with_capacity(json_text.len());
    for c in json_text.chars() {
        if c.is_ascii() && !matches!(c, '>' | '?' | '~' | '\x7f') {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// A new token value: JWT-shaped (header.claims.signature) for keys, opaque for user tokens
/// and PATs. Unique by construction (128 random bits in the claims or body).
fn mint_value(kind: CredKind, claims: Value) -> String {
    match kind {
        CredKind::UserToken => format!("fake-ut-{}", random_hex(24)),
        CredKind::Pat => format!("fake-pat-{}", random_hex(24)),
        CredKind::SaKey | CredKind::NuaKey => {
            let mut claims = claims;
            claims["jti"] = json!(random_hex(16));
            format!(
                "{}.{}.{}",
                b64url(br#"{"alg":"HS256","typ":"JWT"}"#),
                b64url(std_b64_safe(&claims.to_string()).as_bytes()),
                b64url(&{
                    let mut sig = [0u8; 32];
                    rand::rng().fill(&mut sig);
                    sig
                })
            )
        }
    }
}

impl State {
    /// The default world (one user, account `acme` in zone `europe-1` with two KBs, a user
    /// token, a PAT and a NUA key with KB management) plus whatever `seed` adds.
    pub fn new(
        url: &str,
        user_token_ttl: Duration,
        seed: &Seed,
    ) -> Result<(Self, Bootstrap), String> {
        let now = Utc::now();
        let user = User {
            id: new_id(),
            name: "Fake User".into(),
            email: "user@example.com".into(),
        };
        let user_id = user.id.clone();
        let mut st = State {
            url: url.to_owned(),
            clock_offset: Duration::zero(),
            frozen: None,
            users: BTreeMap::from([(user_id.clone(), user)]),
            accounts: BTreeMap::new(),
            zones: Vec::new(),
            kbs: BTreeMap::new(),
            service_accounts: BTreeMap::new(),
            nua_clients: BTreeMap::new(),
            creds: BTreeMap::new(),
            by_value: HashMap::new(),
            minted: Vec::new(),
            calls: BTreeMap::new(),
            calls_by_credential: BTreeMap::new(),
            faults: Vec::new(),
        };
        st.add_zone("europe-1", "Europe 1", false, Some(url.to_owned()));
        let account_id = st.add_account(None, "acme", "Acme", "europe-1", true);
        let kb_ids = vec![
            st.add_kb(&account_id, None, "docs", "Docs"),
            st.add_kb(&account_id, None, "support", "Support"),
        ];
        let user_token = st.insert_cred(
            CredKind::UserToken,
            None,
            &user_id,
            "user token",
            Some(now + user_token_ttl),
            None,
            false,
        );
        let pat = st.insert_cred(
            CredKind::Pat,
            None,
            &user_id,
            "bootstrap PAT",
            Some(now + Duration::days(90)),
            None,
            false,
        );
        let nua_key = st.insert_cred(
            CredKind::NuaKey,
            None,
            &new_id(),
            "bootstrap NUA key",
            None,
            Some(account_id.clone()),
            true,
        );
        let users = st.apply_seed(url, seed, &user_id, user_token_ttl)?;
        let bootstrap = Bootstrap {
            url: url.to_owned(),
            user_token: st.creds[&user_token].value.clone(),
            pat: st.creds[&pat].value.clone(),
            nua_key: st.creds[&nua_key].value.clone(),
            account_id,
            account_slug: "acme".into(),
            zone: "europe-1".into(),
            kbs: kb_ids
                .into_iter()
                .map(|id| BootstrapKb {
                    url: format!("{url}/api/v1/kb/{id}"),
                    id,
                })
                .collect(),
            users,
        };
        Ok((st, bootstrap))
    }

    /// Adds the seed to the world; returns the seeded users with their tokens. `user_id` is
    /// the default user (owner of the seeded `user_tokens` and `pats`).
    fn apply_seed(
        &mut self,
        url: &str,
        seed: &Seed,
        user_id: &str,
        user_token_ttl: Duration,
    ) -> Result<Vec<BootstrapUser>, String> {
        let now = self.now();
        for z in &seed.zones {
            if self.zones.iter().any(|x| x.slug == z.slug) {
                return Err(format!("seed: zone {} already exists", z.slug));
            }
            let origin = z.origin.clone().or_else(|| Some(url.to_owned()));
            self.add_zone(
                &z.slug,
                z.title.as_deref().unwrap_or(&z.slug),
                z.private,
                origin,
            );
        }
        let expiry = |c: &SeedCredential,
                      default: Option<DateTime<Utc>>|
         -> Result<Option<DateTime<Utc>>, String> {
            match &c.expires {
                None => Ok(default),
                Some(v) => time::parse_value(v)
                    .map(Some)
                    .ok_or_else(|| format!("seed: unparseable expiry {v}")),
            }
        };
        for c in &seed.user_tokens {
            let exp = expiry(c, Some(now + user_token_ttl))?;
            self.seed_cred(
                CredKind::UserToken,
                c,
                user_id,
                "user token",
                exp,
                None,
                false,
            )?;
        }
        for c in &seed.pats {
            let exp = expiry(c, Some(now + Duration::days(90)))?;
            self.seed_cred(CredKind::Pat, c, user_id, "seeded PAT", exp, None, false)?;
        }
        let mut users = Vec::new();
        for u in &seed.users {
            users.push(self.seed_user(u, expiry(&u.credential(), Some(now + user_token_ttl))?)?);
        }
        for a in &seed.accounts {
            if self.accounts.values().any(|x| x.slug == a.slug) {
                return Err(format!("seed: account {} already exists", a.slug));
            }
            let zone = a.zone.clone().unwrap_or_else(|| "europe-1".into());
            if !self.zones.iter().any(|z| z.slug == zone) {
                return Err(format!("seed: account {}: unknown zone {zone}", a.slug));
            }
            let title = a.title.clone().unwrap_or_else(|| a.slug.clone());
            let account_id = self.add_account(a.id.clone(), &a.slug, &title, &zone, a.member);
            for kb in &a.kbs {
                let title = kb.title.clone().unwrap_or_else(|| kb.slug.clone());
                self.add_kb(&account_id, kb.id.clone(), &kb.slug, &title);
            }
            for n in &a.nua_keys {
                let c = SeedCredential {
                    token: n.token.clone(),
                    description: n.title.clone(),
                    expires: None,
                };
                let owner = new_id();
                self.seed_cred(
                    CredKind::NuaKey,
                    &c,
                    &owner,
                    "seeded NUA key",
                    None,
                    Some(account_id.clone()),
                    n.allow_kb_management,
                )?;
            }
            for sa in &a.service_accounts {
                let kb_id = self
                    .kbs
                    .values()
                    .find(|k| k.account_id == account_id && (k.slug == sa.kb || k.id == sa.kb))
                    .map(|k| k.id.clone())
                    .ok_or_else(|| {
                        format!("seed: service account {}: unknown kb {}", sa.title, sa.kb)
                    })?;
                let sa_id = self.add_service_account(&account_id, &kb_id, &sa.title, sa.role);
                for k in &sa.keys {
                    let exp = expiry(k, Some(now + Duration::days(365)))?;
                    let id = self.seed_cred(
                        CredKind::SaKey,
                        k,
                        &sa_id,
                        &sa.title,
                        exp,
                        Some(account_id.clone()),
                        false,
                    )?;
                    self.service_accounts
                        .get_mut(&sa_id)
                        .expect("just added")
                        .keys
                        .push(id);
                }
            }
        }
        Ok(users)
    }

    /// Adds one seeded user and its user token.
    fn seed_user(
        &mut self,
        u: &SeedUser,
        expires: Option<DateTime<Utc>>,
    ) -> Result<BootstrapUser, String> {
        if u.email.trim().is_empty() {
            return Err("seed: a user needs an email".into());
        }
        if self.users.values().any(|x| x.email == u.email) {
            return Err(format!("seed: user {} already exists", u.email));
        }
        let id = u.id.clone().unwrap_or_else(new_id);
        if self.users.contains_key(&id) {
            return Err(format!("seed: user id {id} already exists"));
        }
        let name = u.name.clone().unwrap_or_else(|| u.email.clone());
        self.users.insert(
            id.clone(),
            User {
                id: id.clone(),
                name,
                email: u.email.clone(),
            },
        );
        let token = self.seed_cred(
            CredKind::UserToken,
            &u.credential(),
            &id,
            "user token",
            expires,
            None,
            false,
        )?;
        Ok(BootstrapUser {
            id,
            email: u.email.clone(),
            user_token: self.creds[&token].value.clone(),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn seed_cred(
        &mut self,
        kind: CredKind,
        c: &SeedCredential,
        owner: &str,
        default_description: &str,
        expires: Option<DateTime<Utc>>,
        account_id: Option<String>,
        allow_kb_management: bool,
    ) -> Result<String, String> {
        let description = c.description.as_deref().unwrap_or(default_description);
        let id = self.insert_cred(
            kind,
            c.token.clone(),
            owner,
            description,
            expires,
            account_id,
            allow_kb_management,
        );
        if c.token.is_some() && self.by_value.len() != self.creds.len() {
            return Err("seed: a token value is used twice".into());
        }
        Ok(id)
    }

    /// The fake's clock: real time plus the offset moved by `/_fake/clock/advance`.
    pub fn now(&self) -> DateTime<Utc> {
        self.frozen.unwrap_or_else(Utc::now) + self.clock_offset
    }

    fn add_zone(&mut self, slug: &str, title: &str, private: bool, origin: Option<String>) {
        self.zones.push(Zone {
            id: new_id(),
            slug: slug.to_owned(),
            title: title.to_owned(),
            private,
            origin,
        });
    }

    fn add_account(
        &mut self,
        id: Option<String>,
        slug: &str,
        title: &str,
        zone: &str,
        member: bool,
    ) -> String {
        let id = id.unwrap_or_else(new_id);
        self.accounts.insert(
            id.clone(),
            Account {
                id: id.clone(),
                slug: slug.to_owned(),
                title: title.to_owned(),
                zone: zone.to_owned(),
                member,
            },
        );
        id
    }

    fn add_kb(&mut self, account_id: &str, id: Option<String>, slug: &str, title: &str) -> String {
        let id = id.unwrap_or_else(new_id);
        let zone = self.accounts[account_id].zone.clone();
        let created = self.now();
        self.kbs.insert(
            id.clone(),
            Kb {
                id: id.clone(),
                slug: slug.to_owned(),
                title: title.to_owned(),
                account_id: account_id.to_owned(),
                zone,
                created,
            },
        );
        id
    }

    /// Creates a service account; returns its id.
    pub fn add_service_account(
        &mut self,
        account_id: &str,
        kb_id: &str,
        title: &str,
        role: KbRole,
    ) -> String {
        let id = new_id();
        let created = self.now();
        self.service_accounts.insert(
            id.clone(),
            ServiceAccount {
                id: id.clone(),
                account_id: account_id.to_owned(),
                kb_id: kb_id.to_owned(),
                title: title.to_owned(),
                role,
                created,
                keys: Vec::new(),
            },
        );
        id
    }

    /// Stores a credential (minting a value unless one is given); returns its id.
    #[allow(clippy::too_many_arguments)]
    pub fn insert_cred(
        &mut self,
        kind: CredKind,
        value: Option<String>,
        owner: &str,
        description: &str,
        expires: Option<DateTime<Utc>>,
        account_id: Option<String>,
        allow_kb_management: bool,
    ) -> String {
        let id = new_id();
        let value = value.unwrap_or_else(|| {
            mint_value(
                kind,
                json!({
                    "iss": format!("{}/", self.url),
                    "sub": owner,
                    "key": id,
                    "exp": expires.map(|e| e.timestamp()),
                    "allow_kb_management": allow_kb_management,
                }),
            )
        });
        self.minted.push(value.clone());
        self.by_value.insert(value.clone(), id.clone());
        let created = self.now();
        self.creds.insert(
            id.clone(),
            Cred {
                id: id.clone(),
                kind,
                value,
                owner: owner.to_owned(),
                description: description.to_owned(),
                created,
                expires,
                revoked: false,
                account_id,
                allow_kb_management,
            },
        );
        id
    }

    /// The id of the credential with this value, live or not.
    pub fn credential_id(&self, value: &str) -> Option<&str> {
        self.by_value.get(value).map(String::as_str)
    }

    /// The live credential with this value, or why there is none.
    pub fn authenticate(&self, value: &str) -> Result<&Cred, AuthFailure> {
        let cred = self
            .by_value
            .get(value)
            .and_then(|id| self.creds.get(id))
            .ok_or(AuthFailure::Unknown)?;
        if cred.revoked {
            return Err(AuthFailure::Revoked);
        }
        if cred.expires.is_some_and(|e| e <= self.now()) {
            return Err(AuthFailure::Expired);
        }
        Ok(cred)
    }

    /// Whether the credential is neither revoked nor expired.
    pub fn is_live(&self, c: &Cred) -> bool {
        !c.revoked && c.expires.is_none_or(|e| e > self.now())
    }

    /// Revokes a credential; false if unknown.
    pub fn revoke(&mut self, id: &str) -> bool {
        match self.creds.get_mut(id) {
            Some(c) => {
                c.revoked = true;
                true
            }
            None => false,
        }
    }

    /// Caps a credential's expiry at `cap` (an unknown id is ignored).
    pub fn cap_expiry(&mut self, id: &str, cap: DateTime<Utc>) {
        if let Some(c) = self.creds.get_mut(id) {
            c.expires = Some(c.expires.map_or(cap, |e| e.min(cap)));
        }
    }

    /// Deletes a KB with its service accounts, revoking their keys; false if unknown.
    pub fn delete_kb(&mut self, kb_id: &str) -> bool {
        if self.kbs.remove(kb_id).is_none() {
            return false;
        }
        let sas: Vec<String> = self
            .service_accounts
            .values()
            .filter(|sa| sa.kb_id == kb_id)
            .map(|sa| sa.id.clone())
            .collect();
        for sa in sas {
            self.delete_service_account(&sa);
        }
        true
    }

    /// Deletes a service account and revokes its keys.
    pub fn delete_service_account(&mut self, sa_id: &str) -> bool {
        let Some(sa) = self.service_accounts.remove(sa_id) else {
            return false;
        };
        for k in &sa.keys {
            self.revoke(k);
        }
        true
    }

    /// Checks an expiry a client asked for: in the future and at most 1095 days away.
    pub fn check_expiry(&self, t: DateTime<Utc>) -> Result<(), &'static str> {
        let now = self.now();
        if t <= now {
            Err("Expiration date must be in the future")
        } else if t > now + Duration::days(MAX_LIFETIME_DAYS) {
            Err("Choosen key expiration exceeds the current maxium of 1095 days")
        } else {
            Ok(())
        }
    }

    /// Admin view of a credential (no value).
    pub fn cred_view(&self, c: &Cred) -> Value {
        json!({
            "id": c.id,
            "kind": c.kind,
            "owner": c.owner,
            "description_or_title": c.description,
            "created": time::format(c.created),
            "expires": c.expires.map(time::format),
            "revoked": c.revoked,
            "live": self.is_live(c),
            "account_id": c.account_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_encode_without_url_only_characters() {
        for iss in [
            "http://127.0.0.1:8080/",
            "https://europe-1.dp.progress.cloud/?x=~>",
            "https://zoné.example/~user/??>>",
            "💡~~~???>>>",
        ] {
            for pad in 0..3 {
                let claims = json!({"iss": iss, "sub": "x".repeat(pad), "key": "k"});
                let text = std_b64_safe(&claims.to_string());
                let encoded = b64url(text.as_bytes());
                assert!(
                    !encoded.contains('-') && !encoded.contains('_'),
                    "{iss} {pad}: {encoded}"
                );
                let back: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(back, claims);
            }
        }
    }
}
