//! The Nuclia client against `nuclia-fake`, over loopback HTTP.
//!
//! Token values are never printed: assertions compare them without formatting them, and
//! `ApiToken` redacts itself.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{Duration as CDuration, Utc};
use nuclia_fake::{self as fake, Bootstrap, FakeConfig, FakeHandle, Seed};
use nuclia_token_operator::nuclia::{
    ApiObserver, ApiToken, Client, ClientConfig, Credential, Endpoints, Error, KbRole,
};
use serde_json::{Value, json};
use url::Url;

/// A started fake with a client and the bootstrap credentials.
struct Env {
    fake: FakeHandle,
    client: Client,
    http: reqwest::Client,
}

impl Env {
    async fn start() -> Self {
        Self::with(FakeConfig::default()).await
    }

    async fn with(cfg: FakeConfig) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let fake = fake::spawn(cfg).await.expect("fake starts");
        let client = client_for(&fake.url, Duration::from_secs(10));
        Self {
            fake,
            client,
            http: reqwest::Client::new(),
        }
    }

    fn b(&self) -> &Bootstrap {
        &self.fake.bootstrap
    }
    fn user(&self) -> Credential {
        Credential::Bearer(ApiToken::new(self.b().user_token.clone()))
    }
    fn pat(&self) -> Credential {
        Credential::Bearer(ApiToken::new(self.b().pat.clone()))
    }
    fn nua(&self) -> Credential {
        Credential::NuaKey(ApiToken::new(self.b().nua_key.clone()))
    }
    fn acc(&self) -> &str {
        &self.b().account_id
    }
    fn kb(&self, i: usize) -> &str {
        &self.b().kbs[i].id
    }
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.fake.url)
    }

    async fn admin_get(&self, path: &str) -> Value {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    async fn admin_send(&self, method: reqwest::Method, path: &str, body: Value) -> u16 {
        let r = self
            .http
            .request(method, self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    }

    async fn faults(&self, rules: Value) {
        let status = self
            .admin_send(reqwest::Method::PUT, "/_fake/faults", rules)
            .await;
        assert_eq!(status, 204);
    }

    async fn advance(&self, seconds: i64) {
        let status = self
            .admin_send(
                reqwest::Method::POST,
                "/_fake/clock/advance",
                json!({ "seconds": seconds }),
            )
            .await;
        assert_eq!(status, 200);
    }

    /// Live credentials by id, from the admin API.
    async fn live(&self) -> BTreeMap<String, Value> {
        let list = self.admin_get("/_fake/credentials").await;
        list.as_array()
            .unwrap()
            .iter()
            .map(|c| (c["id"].as_str().unwrap().to_owned(), c.clone()))
            .collect()
    }

    /// A service account on KB 0 with one key; returns (sa id, key id, key).
    async fn sa_with_key(&self) -> (String, String, ApiToken) {
        let sa = self
            .client
            .create_service_account(
                &self.pat(),
                "europe-1",
                self.acc(),
                self.kb(0),
                "reader",
                KbRole::SMEMBER,
            )
            .await
            .unwrap();
        let key = self
            .client
            .create_service_account_key(
                &self.pat(),
                "europe-1",
                self.acc(),
                self.kb(0),
                &sa,
                Utc::now() + CDuration::days(30),
            )
            .await
            .unwrap();
        (sa, key.id, key.token)
    }
}

fn client_cfg(url: &str, timeout: Duration) -> ClientConfig {
    let origin = Url::parse(url).unwrap();
    ClientConfig {
        endpoints: Endpoints::single_origin(&origin, &["europe-1", "us-1"]),
        timeout,
        per_credential_rps: 10_000.0,
        per_credential_burst: 1_000,
        user_agent: "nuclia-fake-tests".into(),
    }
}

fn client_for(url: &str, timeout: Duration) -> Client {
    Client::new(client_cfg(url, timeout)).unwrap()
}

fn in_days(days: i64) -> chrono::DateTime<Utc> {
    Utc::now() + CDuration::days(days)
}

fn assert_label<T: std::fmt::Debug>(r: Result<T, Error>, label: &str) -> Error {
    match r {
        Err(e) => {
            assert_eq!(e.label(), label, "{e}");
            e
        }
        Ok(v) => panic!("expected {label}, got Ok({v:?})"),
    }
}

mod personal_tokens {
    use super::*;

    #[tokio::test]
    async fn create_list_use_delete() {
        let env = Env::start().await;
        let c = &env.client;
        let want = in_days(30);
        let created = c
            .create_personal_token(&env.user(), "ci token", want)
            .await
            .unwrap();
        let got = created.expires.expect("expires echoed");
        assert!((got - want).num_seconds().abs() <= 1, "{got} vs {want}");
        assert!(uuid::Uuid::parse_str(&created.id).is_ok());
        assert!(!format!("{created:?}").contains(created.token.expose()));

        let list = c.list_personal_tokens(&env.user()).await.unwrap();
        let item = list.iter().find(|t| t.id == created.id).expect("listed");
        assert_eq!(item.description, "ci token");
        assert_eq!(list.len(), 2, "bootstrap PAT and the new one");

        // The new PAT is a full user credential: it validates and manages PATs itself.
        let new = Credential::Bearer(created.token.clone());
        c.welcome(&new).await.unwrap();
        let child = c
            .create_personal_token(&new, "child", in_days(1))
            .await
            .unwrap();
        c.delete_personal_token(&new, &child.id).await.unwrap();
        assert_label(c.delete_personal_token(&new, &child.id).await, "NotFound");

        c.delete_personal_token(&env.pat(), &created.id)
            .await
            .unwrap();
        let e = assert_label(c.welcome(&new).await, "Unauthorized");
        assert!(!e.to_string().contains(created.token.expose()));
        assert!(!env.live().await.contains_key(&created.id));
        let list = c.list_personal_tokens(&env.user()).await.unwrap();
        assert!(list.iter().all(|t| t.id != created.id));
    }

    #[tokio::test]
    async fn user_accounts_and_zones() {
        let env = Env::start().await;
        let c = &env.client;
        c.welcome(&env.user()).await.unwrap();
        c.welcome(&env.pat()).await.unwrap();
        let accounts = c.accounts(&env.pat()).await.unwrap();
        assert_eq!(accounts.len(), 1);
        assert_eq!(accounts[0].id, env.acc());
        assert_eq!(accounts[0].slug, "acme");
        let zones = c.zones(&env.user()).await.unwrap();
        let z = zones.iter().find(|z| z.slug == "europe-1").unwrap();
        assert!(!z.title.is_empty() && !z.private);
        assert_eq!(z.origin.as_deref(), Some(env.fake.url.as_str()));
        assert!(uuid::Uuid::parse_str(&z.id).is_ok());
    }

    #[tokio::test]
    async fn expiry_bounds_are_422() {
        let env = Env::start().await;
        let c = &env.client;
        for (when, needle) in [(in_days(1100), "1095"), (in_days(-1), "future")] {
            let e = assert_label(
                c.create_personal_token(&env.pat(), "x", when).await,
                "Invalid",
            );
            match e {
                Error::Invalid { status, detail, .. } => {
                    assert_eq!(status, 422);
                    assert!(
                        detail.contains("body.expiration_date") && detail.contains(needle),
                        "{detail}"
                    );
                }
                _ => unreachable!(),
            }
        }
        c.create_personal_token(&env.pat(), "edge", in_days(1094))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn credentials_expire_on_the_fake_clock() {
        let env = Env::with(FakeConfig {
            user_token_ttl: Duration::from_secs(1800),
            ..FakeConfig::default()
        })
        .await;
        let c = &env.client;
        let short = c
            .create_personal_token(&env.user(), "short", Utc::now() + CDuration::hours(1))
            .await
            .unwrap();
        let short = Credential::Bearer(short.token);
        c.welcome(&short).await.unwrap();
        env.advance(1801).await;
        let e = assert_label(c.welcome(&env.user()).await, "Unauthorized");
        assert!(e.to_string().contains("expired"), "{e}");
        c.welcome(&short).await.unwrap();
        env.advance(1800).await;
        assert_label(c.list_personal_tokens(&short).await, "Unauthorized");
        let clock = env.admin_get("/_fake/clock").await;
        assert_eq!(clock["offset_seconds"], 3601);
    }

    #[tokio::test]
    async fn out_of_band_revocation() {
        let env = Env::start().await;
        let created = env
            .client
            .create_personal_token(&env.pat(), "victim", in_days(3))
            .await
            .unwrap();
        let status = env
            .admin_send(
                reqwest::Method::POST,
                &format!("/_fake/revoke/{}", created.id),
                json!({}),
            )
            .await;
        assert_eq!(status, 204);
        assert_label(
            env.client.welcome(&Credential::Bearer(created.token)).await,
            "Unauthorized",
        );
        let status = env
            .admin_send(reqwest::Method::POST, "/_fake/revoke/nope", json!({}))
            .await;
        assert_eq!(status, 404);
    }

    #[tokio::test]
    async fn capped_expiry_shortens_the_pat() {
        let env = Env::start().await;
        let c = &env.client;
        env.faults(json!([{"route": "POST /api/v1/user/pa_tokens", "cap_expires_secs": 120}]))
            .await;
        let created = c
            .create_personal_token(&env.pat(), "capped", in_days(30))
            .await
            .unwrap();
        let got = created.expires.expect("expires echoed");
        let want = Utc::now() + CDuration::seconds(120);
        assert!((got - want).num_seconds().abs() <= 2, "{got} vs {want}");
        // The real credential is shortened too: listed with the capped expiry, and refused
        // once it has passed.
        let listed = c.list_personal_tokens(&env.pat()).await.unwrap();
        let item = listed.iter().find(|t| t.id == created.id).unwrap();
        assert_eq!(item.expires.map(|t| t.timestamp()), Some(got.timestamp()));
        let new = Credential::Bearer(created.token.clone());
        c.welcome(&new).await.unwrap();
        // A shorter lifetime than the cap is left alone, and so is a PAT made without a
        // rule, even with an expiry further away.
        let short = c
            .create_personal_token(&env.pat(), "short", Utc::now() + CDuration::seconds(60))
            .await
            .unwrap();
        assert!((short.expires.unwrap() - Utc::now()).num_seconds() <= 60);
        env.faults(json!([])).await;
        let free = c
            .create_personal_token(&env.pat(), "free", in_days(30))
            .await
            .unwrap();
        env.advance(121).await;
        assert_label(c.welcome(&new).await, "Unauthorized");
        c.welcome(&Credential::Bearer(free.token)).await.unwrap();

        // On a GET, every `expires` of the answer is capped (a null one too), keeping the
        // route's naive date style; the credentials themselves are not touched.
        let raw = env
            .http
            .post(env.url("/api/v1/user/pa_tokens"))
            .bearer_auth(&env.b().pat)
            .json(&json!({"description": "forever"}))
            .send()
            .await
            .unwrap();
        assert_eq!(raw.status().as_u16(), 201);
        env.faults(json!([{"route": "GET /api/v1/user/pa_tokens", "cap_expires_secs": 3600}]))
            .await;
        let r = env
            .http
            .get(env.url("/api/v1/user/pa_tokens"))
            .bearer_auth(&env.b().pat)
            .send()
            .await
            .unwrap();
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .contains("json")
        );
        let list: Value = r.json().await.unwrap();
        let list = list.as_array().unwrap();
        assert!(list.len() >= 3);
        for t in list {
            let e = t["expires"]
                .as_str()
                .expect("every expiry capped, none null");
            assert!(!e.ends_with('Z') && !e.contains('+'), "naive ISO: {e}");
            let e = nuclia_token_operator::nuclia::time::parse_str(e).unwrap();
            let fake_now = Utc::now() + CDuration::seconds(121);
            assert!(e <= fake_now + CDuration::seconds(3601), "{e}");
        }
        let forever = env
            .live()
            .await
            .into_values()
            .find(|c| c["description_or_title"] == "forever")
            .unwrap();
        assert!(
            forever["expires"].is_null(),
            "a GET does not shorten credentials"
        );
    }

    #[tokio::test]
    async fn seeded_users_own_their_pats() {
        let seed: Seed = serde_json::from_value(json!({
            "users": [{"email": "b@example.com", "token": "fixed-user-b-token"},
                      {"email": "c@example.com", "name": "C"}]
        }))
        .unwrap();
        let env = Env::with(FakeConfig {
            seed,
            ..FakeConfig::default()
        })
        .await;
        let c = &env.client;
        let users = &env.b().users;
        assert_eq!(users.len(), 2);
        assert_eq!(users[0].email, "b@example.com");
        assert!(users[0].user_token == "fixed-user-b-token");
        assert!(uuid::Uuid::parse_str(&users[1].id).is_ok());
        let b = Credential::Bearer(ApiToken::new(users[0].user_token.clone()));
        let cu = Credential::Bearer(ApiToken::new(users[1].user_token.clone()));
        assert!(!users[1].user_token.is_empty() && users[1].user_token != env.b().user_token);

        // Each user is itself, with the default user's accounts.
        for (cred, email) in [
            (&users[0].user_token, "b@example.com"),
            (&users[1].user_token, "c@example.com"),
            (&env.b().user_token, "user@example.com"),
        ] {
            let me: Value = env
                .http
                .get(env.url("/api/v1/user"))
                .bearer_auth(cred)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(me["email"], email);
        }
        let accounts = c.accounts(&b).await.unwrap();
        assert_eq!(accounts.len(), 1);
        assert_eq!(accounts[0].id, env.acc());
        c.kbs(&cu, "europe-1", env.acc()).await.unwrap();

        // PATs are per user: listed and deleted only by their owner.
        let b_pat = c
            .create_personal_token(&b, "b's", in_days(5))
            .await
            .unwrap();
        let b_pat_cred = Credential::Bearer(b_pat.token.clone());
        let ids = |list: Vec<nuclia_token_operator::nuclia::PersonalTokenItem>| {
            list.into_iter().map(|t| t.id).collect::<Vec<_>>()
        };
        assert_eq!(
            ids(c.list_personal_tokens(&b).await.unwrap()),
            std::slice::from_ref(&b_pat.id)
        );
        assert_eq!(
            ids(c.list_personal_tokens(&b_pat_cred).await.unwrap()),
            std::slice::from_ref(&b_pat.id)
        );
        assert!(c.list_personal_tokens(&cu).await.unwrap().is_empty());
        let mine = ids(c.list_personal_tokens(&env.pat()).await.unwrap());
        assert!(!mine.contains(&b_pat.id) && mine.len() == 1);
        let bootstrap_pat = mine[0].clone();
        assert_label(
            c.delete_personal_token(&env.pat(), &b_pat.id).await,
            "NotFound",
        );
        assert_label(c.delete_personal_token(&cu, &b_pat.id).await, "NotFound");
        assert_label(
            c.delete_personal_token(&b_pat_cred, &bootstrap_pat).await,
            "NotFound",
        );
        c.welcome(&b_pat_cred).await.unwrap();
        c.delete_personal_token(&b, &b_pat.id).await.unwrap();
        assert_label(c.welcome(&b_pat_cred).await, "Unauthorized");
        c.welcome(&env.pat()).await.unwrap();
        let owners: HashSet<String> = env
            .live()
            .await
            .into_values()
            .filter(|c| c["kind"] == "user_token")
            .map(|c| c["owner"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(owners.len(), 3, "one user token per user");

        // A seeded user may not reuse an email.
        let dup: Seed =
            serde_json::from_value(json!({"users": [{"email": "user@example.com"}]})).unwrap();
        let err = fake::spawn(FakeConfig {
            seed: dup,
            ..FakeConfig::default()
        })
        .await
        .err()
        .expect("duplicate email refused");
        assert!(err.to_string().contains("already exists"), "{err}");
    }
}

mod kbs_and_keys {
    use super::*;

    #[tokio::test]
    async fn kbs_and_one_kb() {
        let env = Env::start().await;
        let c = &env.client;
        let kbs = c.kbs(&env.pat(), "europe-1", env.acc()).await.unwrap();
        assert_eq!(kbs.len(), 2);
        assert!(kbs.iter().any(|k| k.id == env.kb(1)));
        let kb = c
            .kb(&env.user(), "europe-1", env.acc(), env.kb(0))
            .await
            .unwrap();
        assert_eq!(kb.id, env.kb(0));
        assert_eq!(kb.account_id.as_deref(), Some(env.acc()));
        assert_eq!(kb.zone.as_deref(), Some("europe-1"));
        assert!(kb.created.is_some());
        assert_label(
            c.kb(&env.pat(), "europe-1", env.acc(), "no-such-kb").await,
            "NotFound",
        );
        assert_label(
            c.kbs(&env.pat(), "europe-1", "no-such-account").await,
            "NotFound",
        );
    }

    #[tokio::test]
    async fn service_account_and_key_lifecycle() {
        let env = Env::start().await;
        let c = &env.client;
        let (acc, kb) = (env.acc().to_owned(), env.kb(0).to_owned());
        let sa = c
            .create_service_account(
                &env.pat(),
                "europe-1",
                &acc,
                &kb,
                "search",
                KbRole::SCONTRIBUTOR,
            )
            .await
            .unwrap();
        let list = c
            .service_accounts(&env.pat(), "europe-1", &acc, &kb)
            .await
            .unwrap();
        let entry = list.iter().find(|s| s.id == sa).unwrap();
        assert_eq!(
            (entry.title.as_str(), entry.role),
            ("search", KbRole::SCONTRIBUTOR)
        );
        assert!(entry.keys.is_empty(), "null keys read as empty");

        let want = in_days(365);
        let key = c
            .create_service_account_key(&env.pat(), "europe-1", &acc, &kb, &sa, want)
            .await
            .unwrap();
        let list = c
            .service_accounts(&env.pat(), "europe-1", &acc, &kb)
            .await
            .unwrap();
        let listed = &list.iter().find(|s| s.id == sa).unwrap().keys;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, key.id);
        assert!((listed[0].expires - want).num_seconds().abs() <= 1);

        // The key works for its KB, end to end, and says who it is.
        let loc = c.endpoints().locate_kb(&env.b().kbs[0].url).unwrap();
        assert_eq!(
            (loc.zone.as_str(), loc.kb_id.as_str()),
            ("europe-1", kb.as_str())
        );
        let obj = c.get_kb_with_key(&loc, &key.token).await.unwrap();
        assert_eq!(obj.uuid, kb);
        assert_eq!(obj.config.unwrap().title.as_deref(), Some("Docs"));
        let who = c
            .authorizer_info(
                &Credential::ServiceAccount(key.token.clone()),
                &loc.regional,
            )
            .await
            .unwrap();
        assert_eq!(who.user.account_id.as_deref(), Some(acc.as_str()));
        assert_eq!(who.user.kb_id.as_deref(), Some(kb.as_str()));
        assert_eq!(who.user.role.as_deref(), Some("SCONTRIBUTOR"));
        assert_eq!(who.user.user_id.as_deref(), Some(sa.as_str()));

        // Only for its KB.
        let other = c.endpoints().locate_kb(&env.b().kbs[1].url).unwrap();
        assert_label(c.get_kb_with_key(&other, &key.token).await, "Forbidden");

        // Deleting the key revokes it.
        c.delete_service_account_key(&env.pat(), "europe-1", &acc, &kb, &sa, &key.id)
            .await
            .unwrap();
        assert_label(c.get_kb_with_key(&loc, &key.token).await, "Unauthorized");
        assert_label(
            c.delete_service_account_key(&env.pat(), "europe-1", &acc, &kb, &sa, &key.id)
                .await,
            "NotFound",
        );

        // Deleting the service account revokes its keys.
        let key2 = c
            .create_service_account_key(&env.pat(), "europe-1", &acc, &kb, &sa, in_days(10))
            .await
            .unwrap();
        c.get_kb_with_key(&loc, &key2.token).await.unwrap();
        c.delete_service_account(&env.pat(), "europe-1", &acc, &kb, &sa)
            .await
            .unwrap();
        assert_label(c.get_kb_with_key(&loc, &key2.token).await, "Unauthorized");
        assert!(!env.live().await.contains_key(&key2.id));
        let list = c
            .service_accounts(&env.pat(), "europe-1", &acc, &kb)
            .await
            .unwrap();
        assert!(list.iter().all(|s| s.id != sa));
        assert_label(
            c.delete_service_account(&env.pat(), "europe-1", &acc, &kb, &sa)
                .await,
            "NotFound",
        );
        assert_label(
            c.create_service_account_key(&env.pat(), "europe-1", &acc, &kb, &sa, in_days(1))
                .await,
            "NotFound",
        );
    }

    #[tokio::test]
    async fn key_expiry_and_bounds() {
        let env = Env::start().await;
        let (sa, _key_id, key) = env.sa_with_key().await;
        let c = &env.client;
        let loc = c.endpoints().locate_kb(&env.b().kbs[0].url).unwrap();
        c.get_kb_with_key(&loc, &key).await.unwrap();
        let e = assert_label(
            c.create_service_account_key(
                &env.pat(),
                "europe-1",
                env.acc(),
                env.kb(0),
                &sa,
                in_days(1096),
            )
            .await,
            "Invalid",
        );
        assert!(e.to_string().contains("body.expires"), "{e}");
        env.advance(31 * 86_400).await;
        let e = assert_label(c.get_kb_with_key(&loc, &key).await, "Unauthorized");
        assert!(e.to_string().contains("expired"), "{e}");
        assert_label(
            c.authorizer_info(&Credential::ServiceAccount(key), &loc.regional)
                .await,
            "Unauthorized",
        );
    }

    #[tokio::test]
    async fn nua_keys() {
        let seed: Seed = serde_json::from_value(json!({
            "accounts": [{"slug": "limited", "nua_keys": [{"token": "limited-nua-key", "allow_kb_management": false}],
                          "kbs": [{"slug": "k"}]}]
        }))
        .unwrap();
        let env = Env::with(FakeConfig {
            seed,
            ..FakeConfig::default()
        })
        .await;
        let c = &env.client;
        let regional = c.endpoints().regional("europe-1").unwrap();
        let who = c.authorizer_info(&env.nua(), &regional).await.unwrap();
        assert_eq!(who.user.account_id.as_deref(), Some(env.acc()));
        assert!(who.user.user_id.is_some());

        // allow_kb_management: may manage service accounts of its account's KBs.
        let sa = c
            .create_service_account(
                &env.nua(),
                "europe-1",
                env.acc(),
                env.kb(1),
                "by nua",
                KbRole::SOWNER,
            )
            .await
            .unwrap();
        let key = c
            .create_service_account_key(
                &env.nua(),
                "europe-1",
                env.acc(),
                env.kb(1),
                &sa,
                in_days(5),
            )
            .await
            .unwrap();
        c.delete_service_account_key(&env.nua(), "europe-1", env.acc(), env.kb(1), &sa, &key.id)
            .await
            .unwrap();
        c.delete_service_account(&env.nua(), "europe-1", env.acc(), env.kb(1), &sa)
            .await
            .unwrap();

        // NUA keys are not valid in the global API.
        assert_label(c.welcome(&env.nua()).await, "Unauthorized");
        // Without allow_kb_management, or on another account: Forbidden.
        let limited = Credential::NuaKey(ApiToken::new("limited-nua-key".into()));
        let accounts = c.accounts(&env.pat()).await.unwrap();
        let limited_acc = accounts
            .iter()
            .find(|a| a.slug == "limited")
            .unwrap()
            .id
            .clone();
        assert_label(c.kbs(&limited, "europe-1", &limited_acc).await, "Forbidden");
        assert_label(c.kbs(&limited, "europe-1", env.acc()).await, "Forbidden");
        assert_label(
            c.kbs(&env.nua(), "europe-1", &limited_acc).await,
            "Forbidden",
        );
    }

    #[tokio::test]
    async fn non_member_account_is_forbidden() {
        let seed: Seed = serde_json::from_value(json!({
            "zones": [{"slug": "us-1", "title": "US 1", "private": true}],
            "accounts": [{"slug": "strangers", "member": false, "zone": "us-1",
                          "id": "11111111-2222-4333-8444-555555555555", "kbs": [{"slug": "theirs"}]}]
        }))
        .unwrap();
        let env = Env::with(FakeConfig {
            seed,
            ..FakeConfig::default()
        })
        .await;
        let c = &env.client;
        let e = assert_label(
            c.kbs(&env.pat(), "us-1", "11111111-2222-4333-8444-555555555555")
                .await,
            "Forbidden",
        );
        assert!(e.to_string().contains("member"), "{e}");
        let zones = c.zones(&env.pat()).await.unwrap();
        assert!(zones.iter().any(|z| z.slug == "us-1" && z.private));
        assert!(
            c.accounts(&env.pat())
                .await
                .unwrap()
                .iter()
                .all(|a| a.slug != "strangers")
        );
    }

    #[tokio::test]
    async fn capped_expiry_shortens_the_key() {
        let env = Env::start().await;
        let (sa, _, _) = env.sa_with_key().await;
        let c = &env.client;
        env.faults(json!([{
            "route": "POST /api/v1/account/{account_id}/kb/{kb_id}/service_account/{sa_id}/keys",
            "cap_expires_secs": 300
        }]))
        .await;
        let key = c
            .create_service_account_key(
                &env.pat(),
                "europe-1",
                env.acc(),
                env.kb(0),
                &sa,
                in_days(30),
            )
            .await
            .unwrap();
        // The answer has no `expires` (as at Nuclia); the listing shows the real, capped one.
        let list = c
            .service_accounts(&env.pat(), "europe-1", env.acc(), env.kb(0))
            .await
            .unwrap();
        let listed = list
            .iter()
            .flat_map(|s| &s.keys)
            .find(|k| k.id == key.id)
            .unwrap();
        let want = Utc::now() + CDuration::seconds(300);
        assert!(
            (listed.expires - want).num_seconds().abs() <= 2,
            "{}",
            listed.expires
        );
        let loc = c.endpoints().locate_kb(&env.b().kbs[0].url).unwrap();
        c.get_kb_with_key(&loc, &key.token).await.unwrap();
        env.advance(301).await;
        assert_label(c.get_kb_with_key(&loc, &key.token).await, "Unauthorized");

        // On the listing route the nested `keys[].expires` are capped too, in RFC 3339.
        env.faults(json!([{
            "route": "GET /api/v1/account/{account_id}/kb/{kb_id}/service_accounts",
            "cap_expires_secs": 60
        }]))
        .await;
        let list = c
            .service_accounts(&env.pat(), "europe-1", env.acc(), env.kb(0))
            .await
            .unwrap();
        let fake_now = Utc::now() + CDuration::seconds(301);
        for k in list.iter().flat_map(|s| &s.keys) {
            assert!(
                k.expires <= fake_now + CDuration::seconds(61),
                "{}",
                k.expires
            );
        }
    }

    #[tokio::test]
    async fn admin_deletes_a_kb_with_its_service_accounts_and_keys() {
        let env = Env::start().await;
        let (sa, key_id, key) = env.sa_with_key().await;
        let c = &env.client;
        let (acc, kb) = (env.acc().to_owned(), env.kb(0).to_owned());
        let other_sa = c
            .create_service_account(
                &env.pat(),
                "europe-1",
                &acc,
                env.kb(1),
                "other",
                KbRole::SMEMBER,
            )
            .await
            .unwrap();
        let other_key = c
            .create_service_account_key(
                &env.pat(),
                "europe-1",
                &acc,
                env.kb(1),
                &other_sa,
                in_days(3),
            )
            .await
            .unwrap();
        let loc = c.endpoints().locate_kb(&env.b().kbs[0].url).unwrap();
        c.get_kb_with_key(&loc, &key).await.unwrap();

        let path = format!("/_fake/kbs/{kb}");
        assert_eq!(
            env.admin_send(reqwest::Method::DELETE, &path, json!({}))
                .await,
            204
        );
        assert_eq!(
            env.admin_send(reqwest::Method::DELETE, &path, json!({}))
                .await,
            404
        );

        // Its keys stop working, everything under it answers 404, the other KB is untouched.
        assert_label(c.get_kb_with_key(&loc, &key).await, "Unauthorized");
        assert!(!env.live().await.contains_key(&key_id));
        let sas = env.admin_get("/_fake/service_accounts").await;
        let sas: Vec<&str> = sas
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert_eq!(sas, [other_sa.as_str()]);
        assert_label(c.kb(&env.pat(), "europe-1", &acc, &kb).await, "NotFound");
        assert_label(
            c.service_accounts(&env.pat(), "europe-1", &acc, &kb).await,
            "NotFound",
        );
        assert_label(
            c.create_service_account(&env.pat(), "europe-1", &acc, &kb, "x", KbRole::SMEMBER)
                .await,
            "NotFound",
        );
        assert_label(
            c.create_service_account_key(&env.pat(), "europe-1", &acc, &kb, &sa, in_days(1))
                .await,
            "NotFound",
        );
        assert_label(
            c.delete_service_account_key(&env.pat(), "europe-1", &acc, &kb, &sa, &key_id)
                .await,
            "NotFound",
        );
        assert_label(
            c.delete_service_account(&env.pat(), "europe-1", &acc, &kb, &sa)
                .await,
            "NotFound",
        );
        let kbs = c.kbs(&env.pat(), "europe-1", &acc).await.unwrap();
        assert_eq!(kbs.len(), 1);
        assert_eq!(kbs[0].id, env.kb(1));
        let other_loc = c.endpoints().locate_kb(&env.b().kbs[1].url).unwrap();
        c.get_kb_with_key(&other_loc, &other_key.token)
            .await
            .unwrap();
        assert_eq!(
            env.admin_send(reqwest::Method::DELETE, "/_fake/kbs/nope", json!({}))
                .await,
            404
        );
    }
}

mod error_classes {
    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, String)>>);
    impl ApiObserver for Recorder {
        fn observe(&self, op: &'static str, outcome: &str, _elapsed: Duration) {
            self.0
                .lock()
                .unwrap()
                .push((op.to_owned(), outcome.to_owned()));
        }
    }

    #[tokio::test]
    async fn injected_statuses() {
        let env = Env::start().await;
        let rec = Arc::new(Recorder::default());
        let c = env.client.clone().with_observer(rec.clone());
        env.faults(json!([{"route": "GET /api/v1/user/pa_tokens", "status": 429, "retry_after": 7, "count": 1}]))
            .await;
        let e = assert_label(c.list_personal_tokens(&env.pat()).await, "RateLimited");
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        assert!(e.is_transient());
        c.list_personal_tokens(&env.pat()).await.unwrap(); // count: 1 → spent

        for (status, label) in [
            (500, "Transient"),
            (503, "Transient"),
            (404, "NotFound"),
            (403, "Forbidden"),
            (401, "Unauthorized"),
            (409, "Invalid"),
        ] {
            env.faults(json!([{"route": "/api/v1/zones", "method": "GET", "status": status}]))
                .await;
            let e = assert_label(c.zones(&env.pat()).await, label);
            assert_eq!(e.is_transient(), label == "Transient", "{e}");
        }
        env.faults(json!([{"route": "*", "rate": 0.0, "status": 500}]))
            .await;
        c.zones(&env.pat()).await.unwrap();
        let seen = rec.0.lock().unwrap().clone();
        assert_eq!(
            seen[0],
            ("list_personal_tokens".to_owned(), "429".to_owned())
        );
        assert!(seen.contains(&("zones".to_owned(), "503".to_owned())));
        assert_eq!(seen.last().unwrap().1, "200");
    }

    #[tokio::test]
    async fn timeouts_and_dropped_connections() {
        let env = Env::start().await;
        let rec = Arc::new(Recorder::default());
        let fast = client_for(&env.fake.url, Duration::from_millis(300)).with_observer(rec.clone());
        env.faults(json!([{"route": "GET /api/v1/accounts", "latency_ms": 1500}]))
            .await;
        let e = assert_label(fast.accounts(&env.pat()).await, "Transient");
        assert!(e.to_string().contains("timed out"), "{e}");
        assert_eq!(rec.0.lock().unwrap()[0].1, "timeout");

        env.faults(json!([{"route": "GET /api/v1/accounts", "drop_connection": true}]))
            .await;
        assert_label(fast.accounts(&env.pat()).await, "Transient");

        let dead = client_for("http://127.0.0.1:9", Duration::from_secs(2));
        let e = assert_label(dead.welcome(&env.pat()).await, "Transient");
        assert!(e.to_string().contains("connection"), "{e}");
    }

    #[tokio::test]
    async fn minted_upstream_but_answer_lost() {
        // After-commit latency: the PAT exists at Nuclia although the client timed out.
        let env = Env::start().await;
        let fast = client_for(&env.fake.url, Duration::from_millis(300));
        env.faults(json!([{"route": "POST /api/v1/user/pa_tokens", "latency_ms": 1000, "latency_after_commit": true}]))
            .await;
        let before = env.live().await.len();
        assert_label(
            fast.create_personal_token(&env.pat(), "lost", in_days(2))
                .await,
            "Transient",
        );
        let after = env.live().await;
        assert_eq!(after.len(), before + 1);
        assert!(after.values().any(|c| c["description_or_title"] == "lost"));

        env.faults(json!([{"route": "POST /api/v1/user/pa_tokens", "drop_connection": true}]))
            .await;
        assert_label(
            env.client
                .create_personal_token(&env.pat(), "dropped", in_days(2))
                .await,
            "Transient",
        );
        assert!(
            env.live()
                .await
                .values()
                .any(|c| c["description_or_title"] == "dropped")
        );
    }

    #[tokio::test]
    async fn malformed_answers() {
        let env = Env::start().await;
        for kind in ["json", "html", "truncated", "content_type"] {
            env.faults(json!([{"route": "GET /api/v1/user/pa_tokens", "malformed": kind}]))
                .await;
            let e = assert_label(
                env.client.list_personal_tokens(&env.pat()).await,
                "Malformed",
            );
            assert!(e.is_transient(), "{kind}: {e}");
            env.faults(json!([{"route": "POST /api/v1/user/pa_tokens", "malformed": kind}]))
                .await;
            let e = assert_label(
                env.client
                    .create_personal_token(&env.pat(), "m", in_days(1))
                    .await,
                "Malformed",
            );
            let minted = env.admin_get("/_fake/minted").await;
            for v in minted.as_array().unwrap() {
                assert!(
                    !e.to_string().contains(v.as_str().unwrap()),
                    "{kind}: error leaks a token"
                );
            }
        }
    }

    #[tokio::test]
    async fn untrusted_endpoints() {
        let env = Env::start().await;
        let e = env.client.endpoints();
        assert!(e.locate_kb(&env.b().kbs[0].url).is_ok());
        for bad in [
            "https://evil.example/api/v1/kb/abc".to_owned(),
            format!("{}/api/v1/kb/abc?token=x", env.fake.url),
            format!("{}/api/v1/kb/abc#x", env.fake.url),
            env.fake.url.replace("http://", "http://u:p@") + "/api/v1/kb/abc",
            "http://127.0.0.1:1/api/v1/kb/abc".to_owned(),
        ] {
            assert_label(e.locate_kb(&bad), "UntrustedEndpoint");
        }
    }

    #[tokio::test]
    async fn per_credential_rate_limit_waits() {
        let env = Env::start().await;
        let mut cfg = client_cfg(&env.fake.url, Duration::from_secs(5));
        cfg.per_credential_rps = 20.0;
        cfg.per_credential_burst = 1;
        let c = Client::new(cfg).unwrap();
        let started = std::time::Instant::now();
        for _ in 0..5 {
            c.zones(&env.pat()).await.unwrap();
        }
        assert!(
            started.elapsed() >= Duration::from_millis(190),
            "{:?}",
            started.elapsed()
        );
        // Another credential has its own budget.
        let started = std::time::Instant::now();
        c.zones(&env.user()).await.unwrap();
        assert!(started.elapsed() < Duration::from_millis(45));
    }

    #[tokio::test]
    async fn calls_are_counted_per_credential() {
        let env = Env::start().await;
        env.client.zones(&env.pat()).await.unwrap();
        env.client.zones(&env.pat()).await.unwrap();
        env.client.zones(&env.user()).await.unwrap();
        // refused (a NUA key on a global route) and anonymous calls are counted too
        assert!(env.client.zones(&env.nua()).await.is_err());
        let anonymous = env.http.get(env.url("/api/v1/zones")).send().await.unwrap();
        assert_eq!(anonymous.status(), 401);
        let creds = env.admin_get("/_fake/credentials").await;
        let id_of = |kind: &str| {
            creds
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["kind"] == kind)
                .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let by = env.admin_get("/_fake/calls?by=credential").await;
        assert_eq!(
            by,
            json!({id_of("pat"): 2, id_of("user_token"): 1, id_of("nua_key"): 1, "unknown": 1}),
        );
        assert_eq!(env.admin_get("/_fake/calls").await["GET /api/v1/zones"], 5);
        env.admin_send(reqwest::Method::POST, "/_fake/calls/reset", json!({}))
            .await;
        assert_eq!(env.admin_get("/_fake/calls?by=credential").await, json!({}));
    }

    #[tokio::test]
    async fn calls_are_counted_per_route_template() {
        let env = Env::start().await;
        let (sa, key_id, _) = env.sa_with_key().await;
        env.client
            .delete_service_account_key(&env.pat(), "europe-1", env.acc(), env.kb(0), &sa, &key_id)
            .await
            .unwrap();
        let calls = env.admin_get("/_fake/calls").await;
        assert_eq!(
            calls["POST /api/v1/account/{account_id}/kb/{kb_id}/service_accounts"],
            1
        );
        assert_eq!(
            calls["POST /api/v1/account/{account_id}/kb/{kb_id}/service_account/{sa_id}/keys"],
            1
        );
        assert_eq!(
            calls["DELETE /api/v1/account/{account_id}/kb/{kb_id}/service_account/{sa_id}/key/{key_id}"],
            1
        );
        assert_eq!(
            env.admin_send(reqwest::Method::POST, "/_fake/calls/reset", json!({}))
                .await,
            204
        );
        assert_eq!(env.admin_get("/_fake/calls").await, json!({}));
        let sas = env.admin_get("/_fake/service_accounts").await;
        assert_eq!(sas.as_array().unwrap().len(), 1);
    }

    /// What a test may say about an error without quoting it (it could hold a secret).
    fn label_of<T>(r: Result<T, Error>) -> Option<(&'static str, String, String)> {
        r.err()
            .map(|e| (e.label(), e.to_string(), format!("{e:?}")))
    }

    #[tokio::test]
    async fn echoed_credentials_never_reach_the_error() {
        let env = Env::start().await;
        let c = &env.client;
        env.faults(json!([{"route": "POST /api/v1/user/pa_tokens", "echo_credentials": true}]))
            .await;
        // The fake really quotes the header, verbatim, in a 400 (checked without printing).
        let user_token = env.b().user_token.clone();
        let r = env
            .http
            .post(env.url("/api/v1/user/pa_tokens"))
            .bearer_auth(&user_token)
            .json(&json!({"description": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400);
        let body: Value = r.json().await.unwrap();
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains(&format!("Authorization: Bearer {user_token}")));

        // Through the real client: classified, and the value is gone from every rendering.
        let before = env.live().await.len();
        let (label, text, debug) =
            label_of(c.create_personal_token(&env.user(), "x", in_days(1)).await).unwrap();
        assert_eq!(label, "Invalid");
        assert!(!text.contains(&user_token) && !debug.contains(&user_token));
        assert!(text.contains("400") && text.contains("Authorization: Bearer [redacted]"));
        assert_eq!(env.live().await.len(), before, "the route did not run");

        // Any credential header, any status: a NUA key quoted by a 401 page.
        env.faults(json!([{"route": "*", "echo_credentials": true, "status": 401}]))
            .await;
        let nua = env.b().nua_key.clone();
        let regional = c.endpoints().regional("europe-1").unwrap();
        let (label, text, debug) =
            label_of(c.authorizer_info(&env.nua(), &regional).await).unwrap();
        assert_eq!(label, "Unauthorized");
        assert!(!text.contains(&nua) && !debug.contains(&nua));
        assert!(!text.contains("eyJ"), "no piece of the JWT is left");
        assert!(text.contains("X-NUCLIA-NUAKEY: Bearer [redacted]"));
        // A KB key, on a 503 (Transient).
        env.faults(json!([])).await;
        let (_, _, key) = env.sa_with_key().await;
        env.faults(
            json!([{"route": "GET /api/v1/kb/{kb_id}", "echo_credentials": true, "status": 503}]),
        )
        .await;
        let loc = c.endpoints().locate_kb(&env.b().kbs[0].url).unwrap();
        let (label, text, _) = label_of(c.get_kb_with_key(&loc, &key).await).unwrap();
        assert_eq!(label, "Transient");
        assert!(!text.contains(key.expose()));
        assert!(text.contains("X-NUCLIA-SERVICEACCOUNT: Bearer [redacted]"));
    }

    #[tokio::test]
    async fn new_fault_fields_are_validated() {
        let env = Env::start().await;
        let put = |rules: Value| {
            let env = &env;
            async move {
                env.admin_send(reqwest::Method::PUT, "/_fake/faults", rules)
                    .await
            }
        };
        for bad in [
            json!([{"route": "*", "cap_expires_secs": 0}]),
            json!([{"route": "*", "cap_expires_secs": 94_608_001u64}]),
            json!([{"route": "*", "cap_expires_secs": -5}]),
            json!([{"route": "*", "cap_expires_secs": 10, "status": 500}]),
            json!([{"route": "*", "cap_expires_secs": 10, "echo_credentials": true}]),
            json!([{"route": "*", "echo_credentials": "yes"}]),
            json!([{"route": "*", "echo_credentials": true, "status": 1000}]),
        ] {
            assert_eq!(put(bad.clone()).await, 422, "{bad}");
        }
        for good in [
            json!([{"route": "*", "cap_expires_secs": 94_608_000u64}]),
            json!([{"route": "*", "echo_credentials": true, "status": 502, "retry_after": 3}]),
        ] {
            assert_eq!(put(good.clone()).await, 204, "{good}");
        }
        let rules = env.admin_get("/_fake/faults").await;
        assert_eq!(rules[0]["echo_credentials"], true);
        assert_eq!(rules[0]["status"], 502);
    }
}

mod raw_requests {
    use super::*;

    async fn send(
        env: &Env,
        method: &str,
        path: &str,
        auth: Option<(&str, String)>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let mut req = env.http.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            env.url(path),
        );
        if let Some((name, value)) = auth {
            req = req.header(name, value);
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let bytes = r.bytes().await.unwrap();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, v)
    }

    fn bearer(t: &str) -> Option<(&'static str, String)> {
        Some(("Authorization", format!("Bearer {t}")))
    }

    /// `GET /api/v1/kb/{kb_id}/resources` (what `nuclia kb list` calls through `nucliadb_sdk`,
    /// which sends the key as `X-STF-SERVICEACCOUNT`): a KB key reads its own KB only, and is
    /// refused once expired or revoked.
    #[tokio::test]
    async fn kb_resources_take_a_kb_key_with_real_semantics() {
        let env = Env::start().await;
        let (_sa, key_id, key) = env.sa_with_key().await;
        let path = |i: usize| format!("/api/v1/kb/{}/resources", env.kb(i));
        let sa_header = |name: &'static str| Some((name, format!("Bearer {}", key.expose())));
        for name in ["X-NUCLIA-SERVICEACCOUNT", "X-STF-SERVICEACCOUNT"] {
            let (status, v) = send(&env, "GET", &path(0), sa_header(name), None).await;
            assert_eq!(status, 200, "{name}: {v}");
            assert_eq!(v["resources"], json!([]));
            assert_eq!(v["pagination"]["last"], true);
            let (status, _) = send(&env, "GET", &path(1), sa_header(name), None).await;
            assert_eq!(status, 403, "{name}: another KB");
        }
        let (status, _) = send(&env, "GET", &path(0), bearer(&env.b().pat), None).await;
        assert_eq!(status, 200, "a member user reads the KB too");
        let (status, _) = send(&env, "GET", &path(0), None, None).await;
        assert_eq!(status, 401);
        let (status, _) = send(
            &env,
            "GET",
            "/api/v1/kb/nope/resources",
            bearer(&env.b().pat),
            None,
        )
        .await;
        assert_eq!(status, 404);
        let nua = Some(("X-NUCLIA-NUAKEY", format!("Bearer {}", env.b().nua_key)));
        let (status, _) = send(&env, "GET", &path(0), nua, None).await;
        assert_eq!(status, 403, "NUA keys cannot read KBs");

        // Counted per route and per credential, like every route.
        let calls = env.admin_get("/_fake/calls").await;
        assert!(calls["GET /api/v1/kb/{kb_id}/resources"].as_u64().unwrap() >= 6);
        let by = env.admin_get("/_fake/calls?by=credential").await;
        assert_eq!(by[&key_id], 4);

        // Revoked: 401, through either header.
        let status = env
            .admin_send(
                reqwest::Method::POST,
                &format!("/_fake/revoke/{key_id}"),
                json!({}),
            )
            .await;
        assert_eq!(status, 204);
        for name in ["X-NUCLIA-SERVICEACCOUNT", "X-STF-SERVICEACCOUNT"] {
            let (status, v) = send(&env, "GET", &path(0), sa_header(name), None).await;
            assert_eq!(status, 401, "{name}");
            assert!(v["detail"].as_str().unwrap().contains("revoked"), "{v}");
        }
        // Expired: 401.
        let (_sa, _id, key2) = env.sa_with_key().await;
        env.advance(31 * 86_400).await;
        let expired = Some(("X-STF-SERVICEACCOUNT", format!("Bearer {}", key2.expose())));
        let (status, v) = send(&env, "GET", &path(0), expired, None).await;
        assert_eq!(status, 401);
        assert!(v["detail"].as_str().unwrap().contains("expired"), "{v}");
    }

    #[tokio::test]
    async fn pat_bodies_are_validated_pydantic_style() {
        let env = Env::start().await;
        let pat = env.b().pat.clone();
        let cases: &[(&str, &str, Value)] = &[
            ("{not json", "json_invalid", json!(["body", 2])),
            ("", "missing", json!(["body"])),
            ("[1,2]", "model_attributes_type", json!(["body"])),
            (
                r#"{"expiration_date": null}"#,
                "missing",
                json!(["body", "description"]),
            ),
            (
                r#"{"description": 5}"#,
                "string_type",
                json!(["body", "description"]),
            ),
            (
                r#"{"description": "x", "expiration_date": "tomorrow"}"#,
                "datetime_from_date_parsing",
                json!(["body", "expiration_date"]),
            ),
            (
                r#"{"description": "x", "expiration_date": true}"#,
                "datetime_type",
                json!(["body", "expiration_date"]),
            ),
            (
                r#"{"description": "x", "expiration_date": "2999-01-01T00:00:00Z"}"#,
                "value_error",
                json!(["body", "expiration_date"]),
            ),
        ];
        for (body, kind, loc) in cases {
            let (status, v) = send(
                &env,
                "POST",
                "/api/v1/user/pa_tokens",
                bearer(&pat),
                Some(body),
            )
            .await;
            assert_eq!(status, 422, "{body}");
            let first = &v["detail"][0];
            assert_eq!(first["type"], *kind, "{body}: {v}");
            assert_eq!(first["loc"], *loc, "{body}: {v}");
            assert!(first["msg"].is_string());
        }
    }

    #[tokio::test]
    async fn date_forms_are_accepted() {
        let env = Env::start().await;
        let pat = env.b().pat.clone();
        let t = Utc::now() + CDuration::days(10);
        let naive = t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
        let forms = [
            json!(naive),
            json!(t.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
            json!(
                t.with_timezone(&chrono::FixedOffset::east_opt(3600).unwrap())
                    .to_rfc3339()
            ),
            json!(t.timestamp()),
            json!(t.timestamp().to_string()),
        ];
        for f in &forms {
            let body = json!({"description": "d", "expiration_date": f}).to_string();
            let (status, v) = send(
                &env,
                "POST",
                "/api/v1/user/pa_tokens",
                bearer(&pat),
                Some(&body),
            )
            .await;
            assert_eq!(status, 201, "{f}");
            assert!(v["id"].is_string() && v["token"].is_string() && v["expires"].is_string());
        }
        // A PAT without an expiry never expires.
        let (status, v) = send(
            &env,
            "POST",
            "/api/v1/user/pa_tokens",
            bearer(&pat),
            Some(r#"{"description":"forever"}"#),
        )
        .await;
        assert_eq!(status, 201);
        assert!(v["expires"].is_null());

        let (sa, _, _) = env.sa_with_key().await;
        let path = format!(
            "/api/v1/account/{}/kb/{}/service_account/{sa}/keys",
            env.acc(),
            env.kb(0)
        );
        for f in &forms {
            let body = json!({ "expires": f }).to_string();
            let (status, v) = send(&env, "POST", &path, bearer(&pat), Some(&body)).await;
            assert_eq!(status, 201, "{f}");
            assert!(v["id"].is_string() && v["token"].is_string());
        }
        let (status, v) = send(&env, "POST", &path, bearer(&pat), Some("{}")).await;
        assert_eq!(status, 422);
        assert_eq!(v["detail"][0]["loc"], json!(["body", "expires"]));
        assert_eq!(v["detail"][0]["type"], "missing");
    }

    #[tokio::test]
    async fn service_account_bodies() {
        let env = Env::start().await;
        let pat = env.b().pat.clone();
        let path = format!(
            "/api/v1/account/{}/kb/{}/service_accounts",
            env.acc(),
            env.kb(0)
        );
        let (status, v) = send(
            &env,
            "POST",
            &path,
            bearer(&pat),
            Some(r#"{"title": "", "role": "SREADER"}"#),
        )
        .await;
        assert_eq!(status, 422);
        let types: Vec<&str> = v["detail"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["string_too_short", "enum"]);
        let (status, v) = send(
            &env,
            "POST",
            &path,
            bearer(&pat),
            Some(r#"{"title": "t", "role": "SMEMBER"}"#),
        )
        .await;
        assert_eq!(status, 201);
        let sa = v["id"].as_str().unwrap().to_owned();
        let del = format!(
            "/api/v1/account/{}/kb/{}/service_account/{sa}",
            env.acc(),
            env.kb(0)
        );
        let r = env
            .http
            .delete(env.url(&del))
            .bearer_auth(&pat)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
        assert!(r.bytes().await.unwrap().is_empty());
        let (status, v) = send(&env, "DELETE", &del, bearer(&pat), None).await;
        assert_eq!(status, 404);
        assert!(v["detail"].is_string());
    }

    #[tokio::test]
    async fn auth_headers() {
        let env = Env::start().await;
        let b = env.b().clone();
        let cases: Vec<(Option<(&str, String)>, &str)> = vec![
            (None, "Not authenticated"),
            (
                Some(("Authorization", format!("Token {}", b.pat))),
                "Invalid authentication credentials",
            ),
            (
                Some(("Authorization", "Bearer ".to_owned())),
                "Invalid authentication credentials",
            ),
            (
                Some(("Authorization", "Bearer not-a-token".to_owned())),
                "nonexistent",
            ),
            (
                Some(("X-NUCLIA-SERVICEACCOUNT", format!("Bearer {}", b.pat))),
                "not valid for this authentication header",
            ),
            (
                Some(("x-nuclia-nuakey", format!("Bearer {}", b.nua_key))),
                "Nuakeys are not valid in the global API",
            ),
        ];
        for (auth, needle) in cases {
            let (status, v) = send(&env, "GET", "/api/v1/user/pa_tokens", auth, None).await;
            assert_eq!(status, 401, "{needle}");
            assert!(
                v["detail"].as_str().unwrap().contains(needle),
                "{needle}: {v}"
            );
        }
        // Header names are case-insensitive and the scheme too.
        let (status, _) = send(
            &env,
            "GET",
            "/api/v1/user/welcome",
            Some(("authorization", format!("bearer {}", b.pat))),
            None,
        )
        .await;
        assert_eq!(status, 200);
        let (status, _) = send(
            &env,
            "GET",
            "/api/authorizer/info",
            Some(("X-Nuclia-Nuakey", format!("Bearer {}", b.nua_key))),
            None,
        )
        .await;
        assert_eq!(status, 200);
        let (status, v) = send(&env, "GET", "/api/v1/nope", bearer(&b.pat), None).await;
        assert_eq!((status, v["detail"].as_str()), (404, Some("Not Found")));
        let (status, _) = send(
            &env,
            "PATCH",
            "/api/v1/user/pa_tokens",
            bearer(&b.pat),
            None,
        )
        .await;
        assert_eq!(status, 405);
    }
}

mod concurrency {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn parallel_mints_and_revokes() {
        const PATS: usize = 300;
        const KEYS: usize = 200;
        let env = Env::start().await;
        let (acc, kb) = (env.acc().to_owned(), env.kb(0).to_owned());
        let sa = env
            .client
            .create_service_account(&env.pat(), "europe-1", &acc, &kb, "bulk", KbRole::SMEMBER)
            .await
            .unwrap();

        let mut tasks = Vec::new();
        for i in 0..PATS {
            let (c, cred) = (env.client.clone(), env.pat());
            tasks.push(tokio::spawn(async move {
                c.create_personal_token(&cred, &format!("bulk-{i}"), in_days(7))
                    .await
                    .map(|t| (t.id, t.token))
            }));
        }
        for _ in 0..KEYS {
            let (c, cred, acc, kb, sa) = (
                env.client.clone(),
                env.nua(),
                acc.clone(),
                kb.clone(),
                sa.clone(),
            );
            tasks.push(tokio::spawn(async move {
                c.create_service_account_key(&cred, "europe-1", &acc, &kb, &sa, in_days(7))
                    .await
                    .map(|k| (k.id, k.token))
            }));
        }
        let mut minted = Vec::new();
        for t in tasks {
            minted.push(t.await.unwrap().unwrap());
        }
        let ids: HashSet<&String> = minted.iter().map(|(id, _)| id).collect();
        let prints: HashSet<String> = minted.iter().map(|(_, t)| t.fingerprint()).collect();
        assert_eq!(ids.len(), PATS + KEYS, "duplicate ids");
        assert_eq!(prints.len(), PATS + KEYS, "duplicate token values");

        // Revoke every other one, in parallel.
        let mut tasks = Vec::new();
        for (n, (id, _)) in minted.iter().enumerate().filter(|(n, _)| n % 2 == 0) {
            let (c, cred, id) = (env.client.clone(), env.pat(), id.clone());
            let (acc, kb, sa) = (acc.clone(), kb.clone(), sa.clone());
            tasks.push(tokio::spawn(async move {
                if n < PATS {
                    c.delete_personal_token(&cred, &id).await
                } else {
                    c.delete_service_account_key(&cred, "europe-1", &acc, &kb, &sa, &id)
                        .await
                }
            }));
        }
        let revoked = tasks.len();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let live = env.live().await;
        for (n, (id, _)) in minted.iter().enumerate() {
            assert_eq!(live.contains_key(id), n % 2 == 1, "credential #{n}");
        }
        // bootstrap user token, PAT, NUA key + survivors.
        assert_eq!(live.len(), 3 + PATS + KEYS - revoked);
        let pats = env.client.list_personal_tokens(&env.pat()).await.unwrap();
        assert_eq!(pats.len(), 1 + PATS / 2);
        let sas = env
            .client
            .service_accounts(&env.pat(), "europe-1", &acc, &kb)
            .await
            .unwrap();
        assert_eq!(sas[0].keys.len(), KEYS / 2);
        let all = env.admin_get("/_fake/minted").await;
        assert_eq!(all.as_array().unwrap().len(), 3 + PATS + KEYS);
        // Survivors still authenticate; revoked ones do not.
        let loc = env
            .client
            .endpoints()
            .locate_kb(&env.b().kbs[0].url)
            .unwrap();
        env.client
            .get_kb_with_key(&loc, &minted[PATS + 1].1)
            .await
            .unwrap();
        assert_label(
            env.client.get_kb_with_key(&loc, &minted[PATS].1).await,
            "Unauthorized",
        );
    }
}

/// NUA clients (issue 13): create, list, get, 409 on a duplicate `client_id`, keys that the
/// SDK decodes and `/api/authorizer/info` answers for, renew (the old key refused at once),
/// delete (the key refused), rights, the admin view and faults.
mod nua_clients {
    use super::*;
    use nuclia_token_operator::issuer::formats::jwt_issuer;
    use nuclia_token_operator::nuclia::NuaClientCreation;

    fn body(title: &str) -> NuaClientCreation {
        NuaClientCreation {
            title: title.into(),
            contact: "ops@example.com".into(),
            description: "ingestion [nto:c/ns/uid]".into(),
            allow_kb_management: false,
            tokens_limit: Some(1000),
        }
    }

    #[tokio::test]
    async fn nua_client_lifecycle() {
        let env = Env::start().await;
        let c = &env.client;
        let created = c
            .create_nua_client(&env.pat(), "europe-1", env.acc(), &body("one"))
            .await
            .unwrap();
        let key = created.token.clone();
        // The payload is plain base64 as well as URL-safe: the SDK's b64decode reads it.
        let payload = key.expose().split('.').nth(1).unwrap().to_owned();
        assert!(!payload.contains('-') && !payload.contains('_'));
        assert_eq!(
            jwt_issuer(key.expose()).as_deref(),
            Some(format!("{}/", env.fake.url).as_str())
        );
        let regional = c.endpoints().regional("europe-1").unwrap();
        let who = c
            .authorizer_info(&Credential::NuaKey(key.clone()), &regional)
            .await
            .unwrap();
        assert_eq!(
            who.user.user_id.as_deref(),
            Some(created.client_id.as_str())
        );
        assert_eq!(who.user.account_id.as_deref(), Some(env.acc()));

        let listed = c
            .nua_clients(&env.pat(), "europe-1", env.acc())
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].client_id, created.client_id);
        assert_eq!(listed[0].description, "ingestion [nto:c/ns/uid]");
        let one = c
            .nua_client(&env.pat(), "europe-1", env.acc(), &created.client_id)
            .await
            .unwrap();
        assert_eq!(one.title, "one");
        // the admin API lists the client and its key (no value)
        let admin = env.admin_get("/_fake/nua_clients").await;
        assert_eq!(admin[0]["client_id"], created.client_id.as_str());
        assert!(!admin.to_string().contains(key.expose()));
        let creds = env.admin_get("/_fake/credentials").await;
        assert!(
            creds
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"] == "nua_key" && k["owner"] == created.client_id.as_str())
        );

        // 409 on a duplicate client_id
        let url = env.url(&format!("/api/v1/account/{}/nua_clients", env.acc()));
        let send = |id: &str| {
            env.http
                .post(&url)
                .bearer_auth(&env.b().pat)
                .json(&json!({"title": "t", "contact": "c", "client_id": id}))
                .send()
        };
        assert_eq!(send("my-client").await.unwrap().status(), 201);
        assert_eq!(send("my-client").await.unwrap().status(), 409);
        assert_eq!(send("Bad Id").await.unwrap().status(), 422);

        // renew: a new key, the old one refused at once
        let renewed = c
            .renew_nua_client_key(&env.pat(), "europe-1", env.acc(), &created.client_id)
            .await
            .unwrap();
        assert_eq!(renewed.client_id, created.client_id);
        assert_label(
            c.authorizer_info(&Credential::NuaKey(key.clone()), &regional)
                .await,
            "Unauthorized",
        );
        let new_key = Credential::NuaKey(renewed.token.clone());
        c.authorizer_info(&new_key, &regional).await.unwrap();

        // a NUA key cannot manage NUA clients, nor a non-member user
        assert_label(
            c.nua_clients(&env.nua(), "europe-1", env.acc()).await,
            "Forbidden",
        );

        // delete: the key is refused, the client gone (404 the second time)
        c.delete_nua_client(&env.pat(), "europe-1", env.acc(), &created.client_id)
            .await
            .unwrap();
        assert_label(c.authorizer_info(&new_key, &regional).await, "Unauthorized");
        assert_label(
            c.delete_nua_client(&env.pat(), "europe-1", env.acc(), &created.client_id)
                .await,
            "NotFound",
        );
        assert_label(
            c.nua_client(&env.pat(), "europe-1", env.acc(), &created.client_id)
                .await,
            "NotFound",
        );

        // faults apply to the NUA routes like any other
        env.faults(json!([{"route": "POST /api/v1/account/{account_id}/nua_clients", "status": 503, "count": 1}]))
            .await;
        assert_label(
            c.create_nua_client(&env.pat(), "europe-1", env.acc(), &body("two"))
                .await,
            "Transient",
        );
        c.create_nua_client(&env.pat(), "europe-1", env.acc(), &body("two"))
            .await
            .unwrap();
    }
}
