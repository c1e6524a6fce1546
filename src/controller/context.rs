//! What every reconcile shares: clients, settings, metrics, the caches of every kind, and the
//! per-resource memory (verification times, backoff, the memo of settled reconciles).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use chrono::{DateTime, Utc};

use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use super::memo::Memo;

use super::restart::Restarter;
use super::secret_watch::{CredentialCache, SecretStores, Seen};
use super::verify::LiveCache;
use super::{Settings, Stores};

use crate::issuer::UserCache;
use crate::issuer::kb::AccountCache;
use crate::nuclia;
use crate::runtime::metrics::Metrics;

/// Everything a reconcile needs, shared by every controller.
pub struct Context {
    pub kube: kube::Client,
    pub nuclia: nuclia::Client,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    recorder: Recorder,
    /// When each resource's token was last seen upstream (memory only: verifying writes nothing).
    verified: Mutex<HashMap<String, DateTime<Utc>>>,
    pub(super) live: LiveCache,
    pub(super) memo: Memo,
    pub(super) backoff: Mutex<HashMap<String, ExponentialBackoff>>,
    pub accounts: AccountCache,
    /// The user behind user credentials (lists are shared by user).
    pub users: UserCache,
    pub(super) restarter: Restarter,
    /// Other installations seen marking tokens with this cluster id (reported once each).
    foreign: Mutex<HashSet<String>>,
    /// Every resource of every kind: UIDs for the orphan sweep, readers of a Secret for the
    /// order of deletions.
    pub(super) stores: OnceLock<Stores>,
    /// The shared Secret metadata watch's stores, one per watched scope.
    pub(super) secret_stores: OnceLock<SecretStores>,
    /// Credentials read from Secrets, valid while the watch shows them unchanged.
    pub(super) credentials: CredentialCache,
    /// How each `NucliaClusterCredential` resolved so far sends its credential (the issuers
    /// build their Nuclia credential from it), and the `nuclia.dev/reissue-minted` mark it
    /// carried then (read while the watch has not shown it yet).
    cluster_credential_types: Mutex<HashMap<String, (crate::crd::CredentialType, Option<String>)>>,
    /// The last upstream check of each `NucliaClusterCredential`.
    pub(super) cluster_checks: super::cluster_credentials::Checks,
    /// Every `NucliaClusterCredential`, from the one watch that wakes the resources using each.
    pub(super) cluster_credentials: OnceLock<
        kube::runtime::reflector::Store<crate::cluster_credential::NucliaClusterCredential>,
    >,
    /// Re-issues after each `nuclia.dev/reissue-minted` value, by (namespace, login, value).
    reissues: Mutex<HashMap<(String, String, String), ReissueTally>>,
    /// Mints through each cluster credential in the last hour, by (credential, namespace).
    cluster_issues: Mutex<HashMap<(String, String), MintTimes>>,
}

/// When the mints of the last hour started, oldest first.
type MintTimes = std::collections::VecDeque<DateTime<Utc>>;

/// What one `nuclia.dev/reissue-minted` value on one Secret has brought about so far.
#[derive(Default)]
struct ReissueTally {
    reissued: HashSet<String>,
    failed: HashSet<String>,
    revoked: usize,
}

impl Context {
    pub(super) fn remember_cluster_credential(
        &self,
        name: &str,
        t: crate::crd::CredentialType,
        mark: Option<String>,
    ) {
        if let Ok(mut m) = self.cluster_credential_types.lock() {
            m.insert(name.to_owned(), (t, mark));
        }
    }

    /// How the cluster credential `name` sends its credential, as last resolved (Bearer if
    /// never resolved).
    pub fn cluster_credential_type(&self, name: &str) -> crate::crd::CredentialType {
        self.cluster_credential_types
            .lock()
            .ok()
            .and_then(|m| m.get(name).map(|(t, _)| *t))
            .unwrap_or_default()
    }

    pub fn new(
        kube: kube::Client,
        nuclia: nuclia::Client,
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let recorder = Recorder::new(
            kube.clone(),
            Reporter {
                controller: crate::crd::FIELD_MANAGER.into(),
                instance: None,
            },
        );
        let restarter = Restarter::new(kube.clone(), settings.rollout_restart_interval);
        let users = UserCache::new(settings.verify_interval);
        for kind in &super::KINDS {
            metrics.register_kind((kind.name)());
        }
        Arc::new(Self {
            kube,
            nuclia,
            settings,
            metrics,
            recorder,
            verified: Mutex::default(),
            live: LiveCache::default(),
            memo: Memo::default(),
            backoff: Mutex::default(),
            accounts: AccountCache::default(),
            users,
            foreign: Mutex::default(),
            restarter,
            cluster_credential_types: Mutex::default(),
            reissues: Mutex::default(),
            cluster_issues: Mutex::default(),
            cluster_checks: Default::default(),
            cluster_credentials: OnceLock::new(),
            stores: OnceLock::new(),
            secret_stores: OnceLock::new(),
            credentials: CredentialCache::default(),
        })
    }

    /// Another installation marks tokens with this cluster id: two clusters share a
    /// `--cluster-id`. Nothing of it is revoked; this says so once per installation.
    pub(super) fn foreign_installation(&self, installation: &str, token_id: &str) {
        let first = self
            .foreign
            .lock()
            .expect("foreign installations")
            .insert(installation.to_owned());
        if first {
            let seen = self.foreign.lock().expect("foreign installations").len();
            self.metrics.set_foreign_installations(seen);
            tracing::error!(
                cluster_id = %self.settings.cluster_id,
                installation = %self.settings.installation_id,
                other_installation = %installation,
                token_id = %token_id,
                "another installation marks tokens with this cluster id: two clusters share --cluster-id (or this installation's identity ConfigMap was recreated). Their tokens are never revoked by this operator's orphan sweep; give each cluster its own --cluster-id (chart value clusterId), or leave it empty"
            );
        }
    }

    /// Whether every controller's cache holds its resources. The stores' own readiness future
    /// wakes only its last poller (the controllers poll it too), so this is polled, not awaited.
    pub fn caches_ready(&self) -> bool {
        self.stores
            .get()
            .is_some_and(|caches| caches.iter().all(|c| c.ready()))
    }

    /// Resolves once [`Context::caches_ready`].
    pub async fn wait_for_caches(&self) {
        while !self.caches_ready() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Whether some resource has this UID or records this token in its status. Only worth
    /// asking once [`Context::caches_ready`]: before that an unknown UID proves nothing.
    pub(super) fn knows(&self, uid: &str, token: &str) -> bool {
        self.stores
            .get()
            .is_some_and(|caches| caches.iter().any(|c| c.knows(uid, token)))
    }

    /// Resources of any kind in `namespace`, other than `uid`, that authenticate with the
    /// Secret `secret`, each with whether it is being deleted: their revocations need that
    /// Secret, so they go first. Found through the resource indexes, not a scan.
    pub(super) fn readers(&self, namespace: &str, secret: &str, uid: &str) -> Vec<(String, bool)> {
        self.stores.get().map_or(Vec::new(), |caches| {
            caches
                .iter()
                .flat_map(|c| c.readers(namespace, secret, uid))
                .collect()
        })
    }

    /// What the shared Secret watch knows of Secret `name` in `namespace`.
    pub(super) fn secret_seen(&self, namespace: &str, name: &str) -> Seen {
        self.secret_stores.get().map_or(Seen::Unknown, |s| {
            super::secret_watch::seen(s, namespace, name)
        })
    }

    /// The Secrets in `namespace` the Secret watch shows controlled by the resource `uid`.
    pub(super) fn secrets_controlled_by(&self, namespace: &str, uid: &str) -> Vec<String> {
        self.secret_stores.get().map_or(Vec::new(), |s| {
            super::secret_watch::controlled_by(s, namespace, uid)
        })
    }

    /// Whether the Secret watch shows `name` in `namespace` Terminating, controlled by `uid`.
    pub(super) fn secret_terminating(&self, namespace: &str, name: &str, uid: &str) -> bool {
        self.secret_stores
            .get()
            .is_some_and(|s| super::secret_watch::terminating_controlled(s, namespace, name, uid))
    }

    /// The `nuclia.dev/reissue-minted` marks of the login a token of `scope` was minted with
    /// (in `namespace`), as the watches show them: on the login Secret; for a cluster
    /// credential, on the `NucliaClusterCredential` and on its Secret (seen when the operator
    /// watches the cluster credential namespace). Joined by [`crate::lifecycle::reissue_mark`].
    pub(super) fn reissue_request(
        &self,
        namespace: &str,
        scope: Option<&crate::crd::TokenScope>,
    ) -> Option<String> {
        let scope = scope?;
        let secret_mark = |ns: &str, name: &str| {
            super::secret_watch::annotation(
                self.secret_stores.get()?,
                ns,
                name,
                crate::crd::ANNOTATION_REISSUE,
            )
        };
        let Some(cc) = &scope.cluster_credential else {
            return secret_mark(namespace, &scope.credential.as_ref()?.name);
        };
        let Some(obj) = self
            .cluster_credentials
            .get()
            .and_then(|s| s.get(&kube::runtime::reflector::ObjectRef::new(cc)))
        else {
            // Not watched yet (the operator is starting): the mark its last resolution read.
            let m = self.cluster_credential_types.lock().ok()?;
            return m.get(cc)?.1.clone();
        };
        let on_secret = self
            .settings
            .cluster_credential_namespace
            .as_deref()
            .and_then(|ns| secret_mark(ns, &obj.spec.secret_ref.name));
        let on_object = obj
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::crd::ANNOTATION_REISSUE));
        crate::lifecycle::reissue_mark(on_secret.as_deref(), on_object.map(String::as_str))
    }

    /// Takes one of the hour's mints through cluster credential `cc` for `namespace`, or says
    /// when the first slot frees if `limit` are taken (a mint attempted counts, whatever
    /// comes of it: it spends the shared budget too).
    pub(super) fn take_issue_slot(
        &self,
        cc: &str,
        namespace: &str,
        limit: Option<u32>,
        now: DateTime<Utc>,
    ) -> Result<(), DateTime<Utc>> {
        let Ok(mut all) = self.cluster_issues.lock() else {
            return Ok(());
        };
        let q = all
            .entry((cc.to_owned(), namespace.to_owned()))
            .or_default();
        let hour = chrono::Duration::hours(1);
        while q.front().is_some_and(|t| *t + hour <= now) {
            q.pop_front();
        }
        if let Some(limit) = limit
            && q.len() >= limit as usize
        {
            return Err(q.front().map_or(now, |t| *t + hour));
        }
        q.push_back(now);
        self.metrics.cluster_credential_issue(cc, namespace);
        Ok(())
    }

    /// Mints through cluster credential `cc` in the last hour, by namespace.
    pub(super) fn issues_last_hour(&self, cc: &str, now: DateTime<Utc>) -> Vec<(String, u32)> {
        let Ok(mut all) = self.cluster_issues.lock() else {
            return Vec::new();
        };
        let hour = chrono::Duration::hours(1);
        all.retain(|_, q| {
            while q.front().is_some_and(|t| *t + hour <= now) {
                q.pop_front();
            }
            !q.is_empty()
        });
        all.iter()
            .filter(|((c, _), _)| c == cc)
            .map(|((_, ns), q)| (ns.clone(), q.len() as u32))
            .collect()
    }

    /// Under a key quota of cluster credential `cc`: resources of `namespace` holding a key,
    /// and those ahead of `me` waiting for one (every kind's cache).
    pub(super) fn key_queue(
        &self,
        cc: &str,
        namespace: &str,
        me: &str,
        created: i64,
    ) -> (u32, u32) {
        self.stores.get().map_or((0, 0), |caches| {
            caches.iter().fold((0, 0), |(h, a), c| {
                let (h2, a2) = c.key_queue(cc, namespace, me, created);
                (h + h2, a + a2)
            })
        })
    }

    /// Current keys minted with cluster credential `cc`, by namespace (every kind's cache).
    pub(super) fn keys_through(&self, cc: &str) -> Vec<(String, u32)> {
        let mut by_ns: std::collections::BTreeMap<String, u32> = Default::default();
        for c in self.stores.get().into_iter().flatten() {
            for (ns, n) in c.keys_through(cc) {
                *by_ns.entry(ns).or_default() += n;
            }
        }
        by_ns.into_iter().collect()
    }

    /// The cluster credentials whose Secret is `name` (in the cluster credential namespace).
    pub(super) fn cluster_credentials_reading(&self, name: &str) -> Vec<String> {
        self.cluster_credentials.get().map_or(Vec::new(), |s| {
            s.state()
                .iter()
                .filter(|cc| cc.spec.secret_ref.name == name)
                .map(|cc| cc.metadata.name.clone().unwrap_or_default())
                .collect()
        })
    }

    /// Counts what one resource did after the `nuclia.dev/reissue-minted` marks `value` of the
    /// login a token of `source` was minted with (re-issued, revoking `revoked` tokens at
    /// once; or failed), and reports the running totals as an Event on the login's Secret (a
    /// cluster credential's, in the cluster credential namespace; ids, never values).
    pub(super) fn reissue_done(
        &self,
        resource: &k8s_openapi::api::core::v1::ObjectReference,
        source: &crate::crd::TokenScope,
        value: &str,
        revoked: Option<usize>,
    ) {
        let kind = resource.kind.as_deref().unwrap_or_default();
        let namespace = resource.namespace.as_deref().unwrap_or_default();
        let uid = resource.uid.as_deref().unwrap_or_default();
        // The login Secret; a cluster credential's is in the cluster credential namespace (an
        // Event on the cluster-scoped object itself is refused by older apiservers).
        let secret = match (&source.cluster_credential, &source.credential) {
            (Some(cc), _) => self
                .cluster_credentials
                .get()
                .and_then(|s| s.get(&kube::runtime::reflector::ObjectRef::new(cc)))
                .map(|o| o.spec.secret_ref.name.clone())
                .zip(self.settings.cluster_credential_namespace.clone()),
            (None, Some(secret)) => Some((secret.name.clone(), namespace.to_owned())),
            (None, None) => None,
        };
        let Some((secret, secret_ns)) = secret else {
            return;
        };
        let login = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Secret".into()),
            name: Some(secret),
            namespace: Some(secret_ns),
            ..Default::default()
        };
        let note = {
            let Ok(mut all) = self.reissues.lock() else {
                return;
            };
            let key = (
                login.namespace.clone().unwrap_or_default(),
                format!(
                    "{}/{}",
                    login.kind.as_deref().unwrap_or_default(),
                    login.name.as_deref().unwrap_or_default()
                ),
                value.to_owned(),
            );
            let t = all.entry(key).or_default();
            match revoked {
                Some(n) => {
                    t.failed.remove(uid);
                    if t.reissued.insert(uid.into()) {
                        t.revoked += n;
                    }
                }
                None if t.reissued.contains(uid) => return,
                None => {
                    if !t.failed.insert(uid.into()) {
                        return;
                    }
                }
            }
            format!(
                "after nuclia.dev/reissue-minted={value:?}: {} credential(s) minted with this login re-issued, {} token(s) revoked at once, {} failed so far (see the resources' Events)",
                t.reissued.len(),
                t.revoked,
                t.failed.len()
            )
        };
        let reason = if revoked.is_some() {
            "Reissued"
        } else {
            "Failed"
        };
        self.metrics.reissued(kind, reason);
        // Related to the resource: one Event per resource (the recorder would fold them), and
        // one series per mark (the recorder folds a repeat into the first Event's series,
        // keeping its note: a second round would show the first's counts).
        let round = &crate::lifecycle::token_hash(value)[..8];
        self.publish(
            &login,
            Some(resource.clone()),
            revoked.is_none(),
            "ReissueProgress",
            &format!("Reissue-{round}"),
            note,
        );
    }

    /// The credential `r` names in `namespace` (through the credential cache).
    pub(super) async fn read_credential(
        &self,
        secrets: &kube::Api<k8s_openapi::api::core::v1::Secret>,
        namespace: &str,
        r: &crate::crd::SecretKeyRef,
    ) -> crate::error::Result<crate::nuclia::ApiToken> {
        self.credentials
            .read(self.secret_stores.get(), secrets, namespace, r)
            .await
    }

    pub(super) fn last_verified(&self, uid: &str) -> Option<DateTime<Utc>> {
        self.verified.lock().ok()?.get(uid).copied()
    }

    pub(super) fn mark_verified(&self, uid: &str, at: DateTime<Utc>) {
        if let Ok(mut m) = self.verified.lock() {
            m.insert(uid.into(), at);
        }
    }

    /// Entries kept per resource (memo, verification times, backoffs).
    pub(super) fn resource_entries(&self) -> usize {
        self.memo.len()
            + self.verified.lock().map_or(0, |m| m.len())
            + self.backoff.lock().map_or(0, |m| m.len())
    }

    /// The next delay of the resource's exponential backoff (with jitter).
    pub(super) fn next_backoff(&self, uid: &str) -> Duration {
        let s = &self.settings;
        self.backoff
            .lock()
            .ok()
            .and_then(|mut m| {
                m.entry(uid.to_owned())
                    .or_insert_with(|| {
                        ExponentialBuilder::default()
                            .with_min_delay(s.backoff_base)
                            .with_max_delay(s.backoff_max)
                            .with_jitter()
                            .without_max_times()
                            .build()
                    })
                    .next()
            })
            .unwrap_or(s.backoff_max)
    }

    pub(super) fn forget(&self, uid: &str) {
        self.memo.forget(uid);
        if let Ok(mut m) = self.verified.lock() {
            m.remove(uid);
        }
        if let Ok(mut m) = self.backoff.lock() {
            m.remove(uid);
        }
    }

    /// Publishes an Event in the background: it informs people, and must not hold up the
    /// reconcile (an Event is one more apiserver round trip).
    pub(super) fn event(
        &self,
        obj_ref: &k8s_openapi::api::core::v1::ObjectReference,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        self.event_related(obj_ref, None, warning, reason, note);
    }

    /// [`Self::event`], naming a second object it concerns (also what keeps Events of one
    /// reason on one object apart: the recorder folds those with the same into one series).
    pub(super) fn event_related(
        &self,
        obj_ref: &k8s_openapi::api::core::v1::ObjectReference,
        related: Option<k8s_openapi::api::core::v1::ObjectReference>,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        self.publish(obj_ref, related, warning, reason, reason, note);
    }

    /// [`Self::event_related`] with an action of its own (the recorder folds Events of the same
    /// object, reason, action and related object into one series).
    fn publish(
        &self,
        obj_ref: &k8s_openapi::api::core::v1::ObjectReference,
        related: Option<k8s_openapi::api::core::v1::ObjectReference>,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: related,
        };
        let recorder = self.recorder.clone();
        let obj_ref = obj_ref.clone();
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&ev, &obj_ref).await {
                tracing::debug!(error = %e, "could not publish event");
            }
        });
    }
}
