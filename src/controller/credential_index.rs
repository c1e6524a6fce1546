//! Which resources read their credential from which Secret, kept up to date from the resource
//! watch, so that a Secret event finds its readers without scanning every resource (a scan per
//! Secret event grows with the square of the number of resources).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use kube::ResourceExt;
use kube::runtime::watcher::Event;

use super::Kind;

type Key = (String, String);

#[derive(Default)]
pub struct CredentialIndex {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// (namespace, Secret) → names of the resources reading it.
    readers: HashMap<Key, BTreeSet<String>>,
    /// (namespace, resource) → the Secret it reads.
    reads: HashMap<Key, String>,
    /// Resources seen since the watch restarted; at its end, the others are gone.
    relisted: Option<HashSet<Key>>,
}

impl Inner {
    fn remove(&mut self, key: &Key) {
        if let Some(secret) = self.reads.remove(key) {
            let skey = (key.0.clone(), secret);
            if let Some(set) = self.readers.get_mut(&skey) {
                set.remove(&key.1);
                if set.is_empty() {
                    self.readers.remove(&skey);
                }
            }
        }
    }

    fn set(&mut self, key: Key, secret: &str) {
        if self.reads.get(&key).map(String::as_str) == Some(secret) {
            return;
        }
        self.remove(&key);
        self.readers
            .entry((key.0.clone(), secret.to_owned()))
            .or_default()
            .insert(key.1.clone());
        self.reads.insert(key, secret.to_owned());
    }
}

impl CredentialIndex {
    /// Follows one event of the resource watch.
    pub fn observe<K: Kind>(&self, event: &Event<K>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let key = |o: &K| (o.namespace().unwrap_or_default(), o.name_any());
        match event {
            // A resource that reads a cluster credential reads no Secret of its namespace.
            Event::Apply(o) if o.cluster_credential().is_some() => inner.remove(&key(o)),
            Event::Apply(o) => inner.set(key(o), &o.auth_ref().name),
            Event::InitApply(o) => {
                let k = key(o);
                if let Some(seen) = inner.relisted.as_mut() {
                    seen.insert(k.clone());
                }
                if o.cluster_credential().is_some() {
                    inner.remove(&k);
                } else {
                    inner.set(k, &o.auth_ref().name);
                }
            }
            Event::Delete(o) => inner.remove(&key(o)),
            Event::Init => inner.relisted = Some(HashSet::new()),
            Event::InitDone => {
                if let Some(seen) = inner.relisted.take() {
                    let gone: Vec<Key> = inner
                        .reads
                        .keys()
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    for k in gone {
                        inner.remove(&k);
                    }
                }
            }
        }
    }

    /// Names of the resources in `namespace` that read their credential from `secret`.
    pub fn readers(&self, namespace: &str, secret: &str) -> Vec<String> {
        self.inner
            .lock()
            .ok()
            .and_then(|i| {
                i.readers
                    .get(&(namespace.to_owned(), secret.to_owned()))
                    .map(|s| s.iter().cloned().collect())
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::NucliaPersonalToken;

    fn pat(name: &str, secret: &str) -> NucliaPersonalToken {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "nuclia.dev/v1alpha1", "kind": "NucliaPersonalToken",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"description": "t", "auth": {"secretRef": {"name": secret, "key": "token"}}},
        }))
        .expect("a valid NucliaPersonalToken")
    }

    #[test]
    fn follows_applies_changes_deletes_and_relists() {
        let idx = CredentialIndex::default();
        idx.observe(&Event::Apply(pat("a", "login")));
        idx.observe(&Event::Apply(pat("b", "login")));
        idx.observe(&Event::Apply(pat("c", "other")));
        assert_eq!(idx.readers("ns", "login"), ["a", "b"]);
        assert!(idx.readers("elsewhere", "login").is_empty());
        // b moves to another Secret
        idx.observe(&Event::Apply(pat("b", "other")));
        assert_eq!(idx.readers("ns", "login"), ["a"]);
        assert_eq!(idx.readers("ns", "other"), ["b", "c"]);
        idx.observe(&Event::Delete(pat("c", "other")));
        assert_eq!(idx.readers("ns", "other"), ["b"]);
        // a relist that no longer has b (deleted while the watch was down)
        idx.observe(&Event::<NucliaPersonalToken>::Init);
        idx.observe(&Event::InitApply(pat("a", "login")));
        idx.observe(&Event::<NucliaPersonalToken>::InitDone);
        assert_eq!(idx.readers("ns", "login"), ["a"]);
        assert!(idx.readers("ns", "other").is_empty());
    }
}
