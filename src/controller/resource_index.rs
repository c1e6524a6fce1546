//! What the operator asks of every resource, kept up to date from the resource watch so that no
//! question scans them all (a scan per event or per upstream list grows with the square of the
//! number of resources):
//! - which resources read their credential from which Secret (a Secret event wakes its readers),
//!   and which suspended resources wait for the Secret they should own (they write nothing, so
//!   a Secret of that name appearing or going is news only the watch brings them);
//! - which UIDs exist and which token ids some status records (the orphan sweep spares those);
//! - which resources name or hold keys of each `NucliaClusterCredential` (a change of it, or a
//!   mark on it, wakes them), and how many current keys each namespace holds through it (its
//!   quota).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use kube::ResourceExt;
use kube::runtime::watcher::Event;

use super::Kind;

type Key = (String, String);

#[derive(Default)]
pub struct ResourceIndex {
    inner: Mutex<Inner>,
}

/// What one resource contributes.
#[derive(PartialEq)]
struct Entry {
    /// The Secret of its namespace it reads its credential from (none for a cluster credential).
    secret: Option<String>,
    /// Other Secrets whose events it must hear: while suspended, the Secret it should own; the
    /// logins its recorded tokens were minted with (a `nuclia.dev/reissue-minted` mark there
    /// revokes them).
    watched: Vec<String>,
    uid: Option<String>,
    /// Its token and its previous tokens.
    tokens: Vec<String>,
    /// The cluster credentials its spec names or its tokens were minted with.
    cluster_credentials: Vec<String>,
    /// The cluster credential its current token was minted with.
    key_through: Option<String>,
    /// The cluster credential its spec names, and when it was created (its place in the
    /// queue for a key under a quota).
    asks: Option<(String, i64)>,
}

impl Entry {
    fn of<K: Kind>(o: &K) -> Self {
        Entry {
            secret: o
                .cluster_credential()
                .is_none()
                .then(|| o.auth_ref().name.clone()),
            watched: {
                let spec_login = o
                    .cluster_credential()
                    .is_none()
                    .then(|| o.auth_ref().name.clone());
                let mut names: Vec<String> = o
                    .lifecycle()
                    .suspend
                    .then(|| super::secret::secret_name(o))
                    .into_iter()
                    .chain(o.cr_status().into_iter().flat_map(|s| {
                        s.scope
                            .iter()
                            .chain(s.previous_tokens.iter().filter_map(|p| p.scope.as_ref()))
                            .filter_map(|sc| sc.credential.as_ref().map(|c| c.name.clone()))
                            .collect::<Vec<_>>()
                    }))
                    .filter(|n| Some(n) != spec_login.as_ref())
                    .collect();
                names.sort();
                names.dedup();
                names
            },
            uid: o.uid(),
            cluster_credentials: {
                let mut names: Vec<String> = o
                    .cluster_credential()
                    .map(str::to_owned)
                    .into_iter()
                    .chain(o.cr_status().into_iter().flat_map(|s| {
                        s.scope
                            .iter()
                            .chain(s.previous_tokens.iter().filter_map(|p| p.scope.as_ref()))
                            .filter_map(|sc| sc.cluster_credential.clone())
                            .collect::<Vec<_>>()
                    }))
                    .collect();
                names.sort();
                names.dedup();
                names
            },
            // One being deleted or suspended waits for no key.
            asks: o
                .cluster_credential()
                .filter(|_| {
                    kube::Resource::meta(o).deletion_timestamp.is_none() && !o.lifecycle().suspend
                })
                .map(|cc| {
                    let created = o.creation_timestamp().map_or(i64::MAX, |t| t.0.as_second());
                    (cc.to_owned(), created)
                }),
            key_through: o
                .cr_status()
                .filter(|s| s.token_id.is_some())
                .and_then(|s| s.scope.as_ref()?.cluster_credential.clone()),
            tokens: o
                .cr_status()
                .map(|s| {
                    s.token_id
                        .iter()
                        .cloned()
                        .chain(s.previous_tokens.iter().map(|p| p.id.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

#[derive(Default)]
struct Inner {
    /// (namespace, resource) → what it contributes.
    entries: HashMap<Key, Entry>,
    /// (namespace, Secret) → names of the resources reading it.
    readers: HashMap<Key, BTreeSet<String>>,
    uids: HashSet<String>,
    /// Token id → how many statuses record it.
    tokens: HashMap<String, u32>,
    /// Cluster credential → the resources that name it or hold its keys.
    cluster_credential_users: HashMap<String, BTreeSet<Key>>,
    /// (cluster credential, namespace) → current keys minted with it there.
    keys_through: HashMap<Key, u32>,
    /// Resources seen since the watch restarted; at its end, the others are gone.
    relisted: Option<HashSet<Key>>,
}

impl Inner {
    fn remove(&mut self, key: &Key) {
        let Some(e) = self.entries.remove(key) else {
            return;
        };
        for secret in e.secret.into_iter().chain(e.watched) {
            let skey = (key.0.clone(), secret);
            if let Some(set) = self.readers.get_mut(&skey) {
                set.remove(&key.1);
                if set.is_empty() {
                    self.readers.remove(&skey);
                }
            }
        }
        if let Some(uid) = &e.uid {
            self.uids.remove(uid);
        }
        for t in e.tokens {
            if let Some(n) = self.tokens.get_mut(&t) {
                *n -= 1;
                if *n == 0 {
                    self.tokens.remove(&t);
                }
            }
        }
        for cc in e.cluster_credentials {
            if let Some(set) = self.cluster_credential_users.get_mut(&cc) {
                set.remove(key);
                if set.is_empty() {
                    self.cluster_credential_users.remove(&cc);
                }
            }
        }
        if let Some(cc) = e.key_through {
            let k = (cc, key.0.clone());
            if let Some(n) = self.keys_through.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    self.keys_through.remove(&k);
                }
            }
        }
    }

    fn set(&mut self, key: Key, e: Entry) {
        if self.entries.get(&key) == Some(&e) {
            return;
        }
        self.remove(&key);
        for secret in e.secret.iter().chain(&e.watched) {
            self.readers
                .entry((key.0.clone(), secret.clone()))
                .or_default()
                .insert(key.1.clone());
        }
        if let Some(uid) = &e.uid {
            self.uids.insert(uid.clone());
        }
        for t in &e.tokens {
            *self.tokens.entry(t.clone()).or_default() += 1;
        }
        for cc in &e.cluster_credentials {
            self.cluster_credential_users
                .entry(cc.clone())
                .or_default()
                .insert(key.clone());
        }
        if let Some(cc) = &e.key_through {
            *self
                .keys_through
                .entry((cc.clone(), key.0.clone()))
                .or_default() += 1;
        }
        self.entries.insert(key, e);
    }
}

impl ResourceIndex {
    /// Follows one event of the resource watch.
    pub fn observe<K: Kind>(&self, event: &Event<K>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let key = |o: &K| (o.namespace().unwrap_or_default(), o.name_any());
        match event {
            Event::Apply(o) => inner.set(key(o), Entry::of(o)),
            Event::InitApply(o) => {
                let k = key(o);
                if let Some(seen) = inner.relisted.as_mut() {
                    seen.insert(k.clone());
                }
                inner.set(k, Entry::of(o));
            }
            Event::Delete(o) => inner.remove(&key(o)),
            Event::Init => inner.relisted = Some(HashSet::new()),
            Event::InitDone => {
                if let Some(seen) = inner.relisted.take() {
                    let gone: Vec<Key> = inner
                        .entries
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

    /// Names of the resources in `namespace` that read their credential from `secret`, or are
    /// suspended and should own it.
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

    /// (namespace, name) of the resources that name cluster credential `name` or hold tokens
    /// minted with it.
    pub fn cluster_credential_users(&self, name: &str) -> Vec<(String, String)> {
        self.inner
            .lock()
            .ok()
            .and_then(|i| {
                i.cluster_credential_users
                    .get(name)
                    .map(|s| s.iter().cloned().collect())
            })
            .unwrap_or_default()
    }

    /// Under a key quota of cluster credential `cc` in `namespace`: how many resources hold a
    /// key, and how many whose spec names it and hold none are ahead of the resource `me`
    /// (created at `created`; the older first, then by name).
    pub fn key_queue(&self, cc: &str, namespace: &str, me: &str, created: i64) -> (u32, u32) {
        let Ok(i) = self.inner.lock() else {
            return (0, 0);
        };
        let (mut holders, mut ahead) = (0, 0);
        for key in i.cluster_credential_users.get(cc).into_iter().flatten() {
            if key.0 != namespace || key.1 == me {
                continue;
            }
            let Some(e) = i.entries.get(key) else {
                continue;
            };
            if e.key_through.as_deref() == Some(cc) {
                holders += 1;
            } else if let Some((asked, at)) = &e.asks
                && asked == cc
                && (*at, key.1.as_str()) < (created, me)
            {
                ahead += 1;
            }
        }
        (holders, ahead)
    }

    /// Current keys minted with cluster credential `name`, by namespace.
    pub fn keys_through(&self, name: &str) -> Vec<(String, u32)> {
        self.inner.lock().map_or(Vec::new(), |i| {
            i.keys_through
                .iter()
                .filter(|((cc, _), _)| cc == name)
                .map(|((_, ns), n)| (ns.clone(), *n))
                .collect()
        })
    }

    /// Whether a resource with this UID exists, or some status records this token.
    pub fn knows(&self, uid: &str, token: &str) -> bool {
        self.inner
            .lock()
            .is_ok_and(|i| i.uids.contains(uid) || i.tokens.contains_key(token))
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
        let idx = ResourceIndex::default();
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

    fn with(
        mut o: NucliaPersonalToken,
        uid: &str,
        token: &str,
        previous: &[&str],
    ) -> NucliaPersonalToken {
        o.metadata.uid = Some(uid.into());
        o.status = Some(
            serde_json::from_value(serde_json::json!({
                "tokenId": token,
                "previousTokens": previous.iter().map(|p| serde_json::json!(
                    {"id": p, "revokeAt": "2026-01-01T00:00:00Z"})).collect::<Vec<_>>(),
            }))
            .expect("a valid status"),
        );
        o
    }

    fn kb(name: &str, created: &str, key_through: Option<&str>) -> crate::crd::NucliaKbApiKey {
        let mut status = serde_json::json!({});
        if let Some(cc) = key_through {
            status = serde_json::json!({"tokenId": format!("t-{name}"),
                "scope": {"clusterCredential": cc}});
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "nuclia.dev/v1alpha1", "kind": "NucliaKbApiKey",
            "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created},
            "spec": {"kbUrl": "https://europe-1.nuclia.cloud/api/v1/kb/k", "role": "SMEMBER",
                     "auth": {"clusterCredentialRef": {"name": "shared"}}},
            "status": status,
        }))
        .expect("a valid NucliaKbApiKey")
    }

    #[test]
    fn queues_for_a_key_quota_by_age_behind_the_holders() {
        let idx = ResourceIndex::default();
        let t = |s: &str| s.parse::<jiff::Timestamp>().unwrap().as_second();
        idx.observe(&Event::Apply(kb(
            "holder",
            "2026-01-03T00:00:00Z",
            Some("shared"),
        )));
        idx.observe(&Event::Apply(kb("old", "2026-01-01T00:00:00Z", None)));
        idx.observe(&Event::Apply(kb("new", "2026-01-02T00:00:00Z", None)));
        idx.observe(&Event::Apply(kb(
            "other",
            "2026-01-01T00:00:00Z",
            Some("elsewhere"),
        )));
        // "other" holds a key of another credential and its spec names "shared": it waits too,
        // behind "old" (the same second, then by name)
        assert_eq!(
            idx.key_queue("shared", "ns", "old", t("2026-01-01T00:00:00Z")),
            (1, 0)
        );
        assert_eq!(
            idx.key_queue("shared", "ns", "new", t("2026-01-02T00:00:00Z")),
            (1, 2)
        );
        assert_eq!(idx.key_queue("shared", "elsewhere-ns", "new", 0), (0, 0));
        assert_eq!(idx.keys_through("shared"), [("ns".to_owned(), 1)]);
        let mut users = idx.cluster_credential_users("shared");
        users.sort();
        assert_eq!(users.len(), 4);
        assert_eq!(
            idx.cluster_credential_users("elsewhere"),
            [("ns".to_owned(), "other".to_owned())]
        );
        // the holder goes: its place frees
        idx.observe(&Event::Delete(kb(
            "holder",
            "2026-01-03T00:00:00Z",
            Some("shared"),
        )));
        assert_eq!(
            idx.key_queue("shared", "ns", "old", t("2026-01-01T00:00:00Z")),
            (0, 0)
        );
        assert_eq!(
            idx.key_queue("shared", "ns", "new", t("2026-01-02T00:00:00Z")),
            (0, 2)
        );
        assert!(idx.keys_through("shared").is_empty());
    }

    #[test]
    fn knows_uids_and_recorded_tokens_until_they_go() {
        let idx = ResourceIndex::default();
        idx.observe(&Event::Apply(with(pat("a", "login"), "uid-a", "t1", &[])));
        idx.observe(&Event::Apply(with(
            pat("b", "login"),
            "uid-b",
            "t2",
            &["t1"],
        )));
        assert!(idx.knows("uid-a", "none") && idx.knows("none", "t2"));
        assert!(!idx.knows("uid-x", "t9"));
        // a rotates: t1 is still recorded by b
        idx.observe(&Event::Apply(with(
            pat("a", "login"),
            "uid-a",
            "t3",
            &["t1"],
        )));
        idx.observe(&Event::Apply(with(pat("b", "login"), "uid-b", "t2", &[])));
        assert!(idx.knows("none", "t1") && idx.knows("none", "t3"));
        idx.observe(&Event::Apply(with(pat("a", "login"), "uid-a", "t3", &[])));
        assert!(!idx.knows("none", "t1"), "no status records t1 any more");
        idx.observe(&Event::Delete(with(pat("a", "login"), "uid-a", "t3", &[])));
        assert!(!idx.knows("uid-a", "t3"));
        // gone while the watch was down
        idx.observe(&Event::<NucliaPersonalToken>::Init);
        idx.observe(&Event::<NucliaPersonalToken>::InitDone);
        assert!(!idx.knows("uid-b", "t2"));
        assert!(idx.readers("ns", "login").is_empty());
    }
}
