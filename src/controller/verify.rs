//! Upstream lists shared by every resource that would get the same list: one list call per
//! credential and scope per verify interval (per user for personal tokens: every login of one
//! user lists the same tokens), however many resources share it.
//!
//! A scope's list can be long (every personal token of the user behind a credential) and many
//! credentials may see the same one, so only a sorted set of id hashes is kept for the interval;
//! the full list goes to the one caller that fetched it, for the orphan sweep.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::issuer::{Issuer, LiveToken};

/// The ids of the tokens alive upstream, as 64-bit hashes (a false match needs a collision
/// with one specific id, about one chance in 10^16 for a list of a few thousand), each with the
/// expiry the list gave (seconds; `i64::MAX`: none). A token listed with an expiry already past
/// is not alive: Nuclia may cap a lifetime without saying so when it mints.
pub struct LiveSet {
    tokens: Vec<(u64, i64)>,
}

fn id_hash(id: &str) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(id)
}

impl LiveSet {
    fn new(list: &[LiveToken], at: DateTime<Utc>) -> Self {
        let mut tokens: Vec<(u64, i64)> = list
            .iter()
            .filter(|t| t.expires.is_none_or(|e| e > at))
            .map(|t| {
                (
                    id_hash(&t.id),
                    t.expires.map_or(i64::MAX, |e| e.timestamp()),
                )
            })
            .collect();
        tokens.sort_unstable();
        tokens.dedup_by_key(|t| t.0);
        tokens.shrink_to_fit();
        Self { tokens }
    }

    fn find(&self, id: &str) -> Option<(u64, i64)> {
        let h = id_hash(id);
        self.tokens
            .binary_search_by_key(&h, |t| t.0)
            .ok()
            .map(|i| self.tokens[i])
    }

    pub fn contains(&self, id: &str) -> bool {
        self.find(id).is_some()
    }

    /// The expiry the list gave the live token `id`, if it gave one.
    pub fn expires(&self, id: &str) -> Option<DateTime<Utc>> {
        self.find(id)
            .filter(|t| t.1 != i64::MAX)
            .and_then(|t| DateTime::from_timestamp(t.1, 0))
    }
}

/// One answer of [`LiveCache::get`].
pub struct Listed {
    /// When the list was fetched.
    pub at: DateTime<Utc>,
    pub live: Arc<LiveSet>,
    /// The whole list, only for the caller whose call fetched it.
    pub fetched: Option<Vec<LiveToken>>,
}

type Entry = Arc<tokio::sync::Mutex<Option<(DateTime<Utc>, Arc<LiveSet>)>>>;

#[derive(Default)]
pub struct LiveCache {
    entries: Mutex<HashMap<String, Entry>>,
}

impl LiveCache {
    fn entry(&self, key: String) -> Entry {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key).or_default().clone()
    }

    /// The list for the issuer's scope, fetched at most once per `max_age`; callers that share
    /// a scope wait for one another instead of listing in parallel.
    pub async fn get<I: Issuer>(&self, issuer: &mut I, max_age: Duration) -> Result<Listed> {
        let entry = self.entry(issuer.scope_key().await);
        let mut slot = entry.lock().await;
        let max_age = chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
        if let Some((at, live)) = slot.as_ref()
            && crate::clock::now() - *at < max_age
        {
            return Ok(Listed {
                at: *at,
                live: live.clone(),
                fetched: None,
            });
        }
        let at = crate::clock::now();
        let list = issuer.list_live().await?;
        let live = Arc::new(LiveSet::new(&list, at));
        *slot = Some((at, live.clone()));
        Ok(Listed {
            at,
            live,
            fetched: Some(list),
        })
    }

    /// Drops the lists fetched longer than `age` ago (nobody asked for them since: a list is
    /// refetched once it is a verify interval old); returns how many remain.
    pub fn evict_stale(&self, age: Duration) -> usize {
        let age = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
        let now = crate::clock::now();
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, e| match e.try_lock() {
            Ok(slot) => slot.as_ref().is_some_and(|(at, _)| now - *at < age),
            // A list is being fetched right now.
            Err(_) => true,
        });
        map.shrink_to_fit();
        map.len()
    }

    /// Drops the scope's list (it proved stale).
    pub async fn invalidate<I: Issuer>(&self, issuer: &mut I) {
        let entry = self.entry(issuer.scope_key().await);
        *entry.lock().await = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issuer::UserCache;
    use crate::issuer::personal::PersonalIssuer;
    use crate::nuclia::{ApiToken, Client, ClientConfig, Credential, Endpoints};
    use nuclia_fake::{self as fake, FakeConfig, Seed};

    fn client_for(url: &str) -> Client {
        let origin = url::Url::parse(url).unwrap();
        Client::new(ClientConfig {
            endpoints: Endpoints::single_origin(&origin, &["europe-1"]),
            timeout: Duration::from_secs(10),
            per_credential_rps: 10_000.0,
            per_credential_burst: 1_000,
            user_agent: "verify-tests".into(),
        })
        .unwrap()
    }

    async fn calls(http: &reqwest::Client, url: &str, route: &str) -> u64 {
        let calls: serde_json::Value = http
            .get(format!("{url}/_fake/calls"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        calls[route].as_u64().unwrap_or(0)
    }

    /// Logins of one user see the same personal tokens: they share one list (the bench's 500
    /// logins of one user listed the same 3500 tokens 500 times per interval). Another user's
    /// login lists its own; a list of credentials whose first is refused is keyed by the user
    /// of the one that answers; without an answer from `GET /api/v1/user` nothing is shared.
    #[tokio::test]
    async fn personal_lists_are_shared_by_user() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let seed: Seed = serde_json::from_value(serde_json::json!({
            "users": [{"email": "other@example.com"}]
        }))
        .unwrap();
        let fake = fake::spawn(FakeConfig {
            seed,
            ..Default::default()
        })
        .await
        .unwrap();
        let (url, b) = (fake.url.clone(), fake.bootstrap.clone());
        let client = client_for(&url);
        let http = reqwest::Client::new();
        let expires = Utc::now() + chrono::Duration::days(1);
        let user = Credential::Bearer(ApiToken::new(b.user_token.clone()));
        let second_pat = client
            .create_personal_token(&user, "second login", expires)
            .await
            .unwrap()
            .token;
        let other = ApiToken::new(b.users[0].user_token.clone());
        let users = UserCache::new(Duration::from_secs(3600));
        let issuer = |creds: Vec<ApiToken>| {
            PersonalIssuer::new(client.clone(), "t".into(), creds, users.clone())
        };
        let cache = LiveCache::default();
        let hour = Duration::from_secs(3600);
        let list = "GET /api/v1/user/pa_tokens";

        let first = cache
            .get(&mut issuer(vec![ApiToken::new(b.pat.clone())]), hour)
            .await
            .unwrap();
        assert!(first.fetched.is_some());
        let same_user = cache
            .get(&mut issuer(vec![second_pat.clone()]), hour)
            .await
            .unwrap();
        assert!(
            same_user.fetched.is_none(),
            "a second login of the user listed again"
        );
        assert_eq!(calls(&http, &url, list).await, 1);
        let other_user = cache
            .get(&mut issuer(vec![other.clone()]), hour)
            .await
            .unwrap();
        assert!(
            other_user.fetched.is_some(),
            "another user's list was shared"
        );
        assert_eq!(calls(&http, &url, list).await, 2);

        // The first credential is refused: the user is the second's.
        let revoked = client
            .create_personal_token(&user, "soon revoked", expires)
            .await
            .unwrap();
        client
            .delete_personal_token(&user, &revoked.id)
            .await
            .unwrap();
        let chained = cache
            .get(&mut issuer(vec![revoked.token, other.clone()]), hour)
            .await
            .unwrap();
        assert!(
            chained.fetched.is_none(),
            "keyed by the refused credential's user"
        );
        assert_eq!(calls(&http, &url, list).await, 2);

        // Nuclia does not say who: each login lists for itself.
        let faults = serde_json::json!([{"route": "GET /api/v1/user", "status": 500}]);
        let put = http
            .put(format!("{url}/_fake/faults"))
            .json(&faults)
            .send()
            .await
            .unwrap();
        assert!(put.status().is_success());
        let third_pat = client
            .create_personal_token(&user, "third login", expires)
            .await
            .unwrap()
            .token;
        let unknown = cache.get(&mut issuer(vec![third_pat]), hour).await.unwrap();
        assert!(unknown.fetched.is_some(), "shared without knowing the user");
        assert_eq!(calls(&http, &url, list).await, 3);
        // A user known before still is, without asking again.
        let asked = calls(&http, &url, "GET /api/v1/user").await;
        let known = cache
            .get(&mut issuer(vec![second_pat]), hour)
            .await
            .unwrap();
        assert!(known.fetched.is_none());
        assert_eq!(calls(&http, &url, "GET /api/v1/user").await, asked);

        // A verify interval later the user is asked again: each login is still checked once
        // per interval (a revoked login shows), only the long list is shared.
        let put = http
            .put(format!("{url}/_fake/faults"))
            .json(&serde_json::json!([]))
            .send()
            .await
            .unwrap();
        assert!(put.status().is_success());
        let stale = UserCache::new(Duration::ZERO);
        let mut again = PersonalIssuer::new(client.clone(), "t".into(), vec![other], stale);
        let asked = calls(&http, &url, "GET /api/v1/user").await;
        assert_eq!(again.scope_key().await, again.scope_key().await);
        assert_eq!(calls(&http, &url, "GET /api/v1/user").await, asked + 2);
        fake.shutdown().await.unwrap();
    }

    #[test]
    fn live_set_answers_membership() {
        let token = |id: &str| LiveToken {
            id: id.into(),
            marker: None,
            expires: None,
            service_account_id: None,
        };
        let ids: Vec<String> = (0..3000).map(|i| format!("token-{i}")).collect();
        let list: Vec<LiveToken> = ids.iter().map(|i| token(i)).collect();
        let now = Utc::now();
        let set = LiveSet::new(&list, now);
        assert!(ids.iter().all(|i| set.contains(i)));
        assert!((3000..6000).all(|i| !set.contains(&format!("token-{i}"))));
        assert!(!LiveSet::new(&[], now).contains("token-0"));
    }

    /// A token listed with an expiry already past is not alive; a live one's expiry is kept.
    #[test]
    fn listed_expiries_count() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let token = |id: &str, expires: Option<DateTime<Utc>>| LiveToken {
            id: id.into(),
            marker: None,
            expires,
            service_account_id: None,
        };
        let list = [
            token("expired", Some(now - chrono::Duration::seconds(1))),
            token("capped", Some(now + chrono::Duration::days(3))),
            token("forever", None),
        ];
        let set = LiveSet::new(&list, now);
        assert!(!set.contains("expired"));
        assert_eq!(set.expires("capped"), Some(now + chrono::Duration::days(3)));
        assert!(set.contains("forever"));
        assert_eq!(set.expires("forever"), None);
    }
}
