//! Upstream lists shared by every resource that uses the same credential in the same scope:
//! one list call per credential per verify interval, however many resources share it.
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

/// The ids of the tokens alive upstream, as 64-bit hashes: a false match needs a collision
/// with one specific id, about one chance in 10^16 for a list of a few thousand.
pub struct LiveSet {
    hashes: Vec<u64>,
}

fn id_hash(id: &str) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(id)
}

impl LiveSet {
    fn new(list: &[LiveToken]) -> Self {
        let mut hashes: Vec<u64> = list.iter().map(|t| id_hash(&t.id)).collect();
        hashes.sort_unstable();
        hashes.dedup();
        hashes.shrink_to_fit();
        Self { hashes }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.hashes.binary_search(&id_hash(id)).is_ok()
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
        let entry = self.entry(issuer.scope_key());
        let mut slot = entry.lock().await;
        let max_age = chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
        if let Some((at, live)) = slot.as_ref()
            && Utc::now() - *at < max_age
        {
            return Ok(Listed {
                at: *at,
                live: live.clone(),
                fetched: None,
            });
        }
        let at = Utc::now();
        let list = issuer.list_live().await?;
        let live = Arc::new(LiveSet::new(&list));
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
        let now = Utc::now();
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
    pub async fn invalidate<I: Issuer>(&self, issuer: &I) {
        let entry = self.entry(issuer.scope_key());
        *entry.lock().await = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let set = LiveSet::new(&list);
        assert!(ids.iter().all(|i| set.contains(i)));
        assert!((3000..6000).all(|i| !set.contains(&format!("token-{i}"))));
        assert!(!LiveSet::new(&[]).contains("token-0"));
    }
}
