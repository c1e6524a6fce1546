//! One metadata-only watch of the Secrets in each watched scope, shared by every kind: it wakes
//! the resources that own a Secret or read their credential from it, and its store answers,
//! without a request, whether a Secret exists and at which resourceVersion. No Secret data is
//! cached from it; the credentials the resources read are cached by resourceVersion
//! ([`CredentialCache`]), so a burst of resources sharing one login Secret reads it once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::FutureExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};

use crate::crd::SecretKeyRef;
use crate::error::Result;
use crate::nuclia::ApiToken;

/// The Secret metadata stores, one per watched scope (None: every namespace).
pub(crate) type SecretStores = Vec<(Option<String>, Store<PartialObjectMeta<Secret>>)>;

/// What the shared watch knows of one Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// The watch has not listed this namespace yet (or does not cover it): ask the apiserver.
    Unknown,
    Absent,
    Present {
        resource_version: Option<String>,
    },
}

/// Looks a Secret up in the store covering `namespace`.
pub(crate) fn seen(stores: &SecretStores, namespace: &str, name: &str) -> Seen {
    let Some((_, store)) = stores
        .iter()
        .find(|(scope, _)| scope.as_deref().is_none_or(|s| s == namespace))
    else {
        return Seen::Unknown;
    };
    if !matches!(store.wait_until_ready().now_or_never(), Some(Ok(()))) {
        return Seen::Unknown;
    }
    match store.get(&ObjectRef::new(name).within(namespace)) {
        Some(s) => Seen::Present {
            resource_version: s.resource_version(),
        },
        None => Seen::Absent,
    }
}

/// The value of annotation `key` on Secret `name` in `namespace`, as the watch shows it.
pub(crate) fn annotation(
    stores: &SecretStores,
    namespace: &str,
    name: &str,
    key: &str,
) -> Option<String> {
    stores
        .iter()
        .find(|(scope, _)| scope.as_deref().is_none_or(|s| s == namespace))
        .and_then(|(_, store)| store.get(&ObjectRef::new(name).within(namespace)))
        .and_then(|s| s.annotations().get(key).cloned())
}

/// Whether the watch shows Secret `name` in `namespace` deleted (Terminating) while the
/// resource `uid` controls it.
pub(crate) fn terminating_controlled(
    stores: &SecretStores,
    namespace: &str,
    name: &str,
    uid: &str,
) -> bool {
    stores
        .iter()
        .find(|(scope, _)| scope.as_deref().is_none_or(|s| s == namespace))
        .and_then(|(_, store)| store.get(&ObjectRef::new(name).within(namespace)))
        .is_some_and(|s| {
            s.meta().deletion_timestamp.is_some()
                && s.owner_references()
                    .iter()
                    .any(|r| r.uid == uid && r.controller == Some(true))
        })
}

/// The Secrets in `namespace` whose controller is the resource `uid`, as far as the watch of
/// that namespace shows them (none while it is not loaded).
pub(crate) fn controlled_by(stores: &SecretStores, namespace: &str, uid: &str) -> Vec<String> {
    let Some((_, store)) = stores
        .iter()
        .find(|(scope, _)| scope.as_deref().is_none_or(|s| s == namespace))
    else {
        return Vec::new();
    };
    store
        .state()
        .iter()
        .filter(|s| s.namespace().as_deref() == Some(namespace))
        .filter(|s| {
            s.owner_references()
                .iter()
                .any(|r| r.uid == uid && r.controller == Some(true))
        })
        .map(|s| s.name_any())
        .collect()
}

/// Keeps of a Secret's metadata only what the triggers and lookups use: labels, annotations
/// (a `kubectl apply` annotation can hold a whole manifest) and managed fields are dropped, but
/// for the `nuclia.dev/reissue-minted` mark.
pub(crate) fn slim(s: &mut PartialObjectMeta<Secret>) {
    let m = s.meta_mut();
    m.managed_fields = None;
    if let Some(a) = m.annotations.as_mut() {
        a.retain(|k, _| k == crate::crd::ANNOTATION_REISSUE);
    }
    if m.annotations.as_ref().is_some_and(|a| a.is_empty()) {
        m.annotations = None;
    }
    m.labels = None;
    m.finalizers = None;
    if let Some(refs) = m.owner_references.as_mut() {
        refs.retain(|r| r.controller == Some(true));
    }
}

struct Cached {
    resource_version: String,
    token: ApiToken,
    used: Instant,
}

type Key = (String, String, String);

/// Credentials read from Secrets, keyed by namespace, Secret and key, each valid while the
/// shared watch shows the Secret at the resourceVersion it was read at. Entries not used for a
/// while are evicted ([`CredentialCache::evict_idle`]).
#[derive(Default)]
pub(crate) struct CredentialCache {
    entries: Mutex<HashMap<Key, Cached>>,
    /// One read of a Secret at a time: the resources of a wave that share a login reconcile
    /// together, and all but the first take what its read cached.
    reading: Mutex<HashMap<Key, Weak<tokio::sync::Mutex<()>>>>,
}

impl CredentialCache {
    /// The credential `r` names in `namespace`: from the cache when the watch shows the Secret
    /// unchanged since it was read, else read from the apiserver (and cached).
    pub(crate) async fn read(
        &self,
        stores: Option<&SecretStores>,
        secrets: &Api<Secret>,
        namespace: &str,
        r: &SecretKeyRef,
    ) -> Result<ApiToken> {
        let key = (namespace.to_owned(), r.name.clone(), r.key.clone());
        let seen = stores.map_or(Seen::Unknown, |s| seen(s, namespace, &r.name));
        let Seen::Present {
            resource_version: Some(rv),
        } = &seen
        else {
            // Not known to the watch: nothing cached can be vouched for.
            return self.fetch(secrets, r, key).await;
        };
        if let Some(token) = self.cached(&key, rv) {
            return Ok(token);
        }
        let gate = self.gate(&key);
        let _reading = gate.lock().await;
        match self.cached(&key, rv) {
            Some(token) => Ok(token),
            None => self.fetch(secrets, r, key).await,
        }
    }

    fn cached(&self, key: &Key, resource_version: &str) -> Option<ApiToken> {
        let mut m = self.entries.lock().ok()?;
        let c = m
            .get_mut(key)
            .filter(|c| c.resource_version == resource_version)?;
        c.used = Instant::now();
        Some(c.token.clone())
    }

    fn gate(&self, key: &Key) -> Arc<tokio::sync::Mutex<()>> {
        let Ok(mut m) = self.reading.lock() else {
            return Arc::default();
        };
        if let Some(gate) = m.get(key).and_then(Weak::upgrade) {
            return gate;
        }
        let gate = Arc::default();
        m.insert(key.clone(), Arc::downgrade(&gate));
        gate
    }

    async fn fetch(&self, secrets: &Api<Secret>, r: &SecretKeyRef, key: Key) -> Result<ApiToken> {
        let (token, rv) = crate::issuer::fetch_credential(secrets, r).await?;
        if let (Some(resource_version), Ok(mut m)) = (rv, self.entries.lock()) {
            m.insert(
                key,
                Cached {
                    resource_version,
                    token: token.clone(),
                    used: Instant::now(),
                },
            );
        }
        Ok(token)
    }

    /// Drops the credentials not used within `idle`; returns how many remain.
    pub(crate) fn evict_idle(&self, idle: Duration) -> usize {
        let Ok(mut m) = self.entries.lock() else {
            return 0;
        };
        m.retain(|_, c| c.used.elapsed() < idle);
        m.shrink_to_fit();
        if let Ok(mut r) = self.reading.lock() {
            r.retain(|_, gate| gate.strong_count() > 0);
            r.shrink_to_fit();
        }
        m.len()
    }
}
