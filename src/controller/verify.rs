//! Upstream lists shared by every resource that uses the same credential in the same scope:
//! one list call per credential per verify interval, however many resources share it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::issuer::{Issuer, LiveToken};

type Entry = Arc<tokio::sync::Mutex<Option<(DateTime<Utc>, Arc<Vec<LiveToken>>)>>>;

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
    /// a scope wait for one another instead of listing in parallel. Returns when it was fetched.
    pub async fn get<I: Issuer>(
        &self,
        issuer: &mut I,
        max_age: Duration,
    ) -> Result<(DateTime<Utc>, Arc<Vec<LiveToken>>)> {
        let entry = self.entry(issuer.scope_key());
        let mut slot = entry.lock().await;
        let max_age = chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
        if let Some((at, list)) = slot.as_ref()
            && Utc::now() - *at < max_age
        {
            return Ok((*at, list.clone()));
        }
        let at = Utc::now();
        let list = Arc::new(issuer.list_live().await?);
        *slot = Some((at, list.clone()));
        Ok((at, list))
    }

    /// Drops the scope's list (it proved stale).
    pub async fn invalidate<I: Issuer>(&self, issuer: &I) {
        let entry = self.entry(issuer.scope_key());
        *entry.lock().await = None;
    }
}
