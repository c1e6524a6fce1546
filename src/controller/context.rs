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
    /// build their Nuclia credential from it).
    cluster_credential_types: Mutex<HashMap<String, crate::crd::CredentialType>>,
    /// The last upstream check of each `NucliaClusterCredential`.
    pub(super) cluster_checks: super::cluster_credentials::Checks,
    /// Re-issues after each `nuclia.dev/reissue-minted` value, by (namespace, Secret, value).
    reissues: Mutex<HashMap<(String, String, String), ReissueTally>>,
}

/// What one `nuclia.dev/reissue-minted` value on one Secret has brought about so far.
#[derive(Default)]
struct ReissueTally {
    reissued: HashSet<String>,
    failed: HashSet<String>,
    revoked: usize,
}

impl Context {
    pub(super) fn remember_cluster_credential_type(
        &self,
        name: &str,
        t: crate::crd::CredentialType,
    ) {
        if let Ok(mut m) = self.cluster_credential_types.lock() {
            m.insert(name.to_owned(), t);
        }
    }

    /// How the cluster credential `name` sends its credential, as last resolved (Bearer if
    /// never resolved).
    pub fn cluster_credential_type(&self, name: &str) -> crate::crd::CredentialType {
        self.cluster_credential_types
            .lock()
            .ok()
            .and_then(|m| m.get(name).copied())
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
            cluster_checks: Default::default(),
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

    /// `nuclia.dev/reissue-minted` on the login Secret a token of `scope` was minted with (in
    /// `namespace`), as the Secret watch shows it. (A cluster credential's is not followed yet.)
    pub(super) fn reissue_request(
        &self,
        namespace: &str,
        scope: Option<&crate::crd::TokenScope>,
    ) -> Option<String> {
        let scope = scope?;
        if scope.cluster_credential.is_some() {
            return None;
        }
        super::secret_watch::annotation(
            self.secret_stores.get()?,
            namespace,
            &scope.credential.as_ref()?.name,
            crate::crd::ANNOTATION_REISSUE,
        )
    }

    /// Counts what one resource did after `nuclia.dev/reissue-minted=value` on Secret `login`
    /// (re-issued, revoking `revoked` tokens at once; or failed), and reports the running totals
    /// as an Event on that Secret (ids, never values).
    pub(super) fn reissue_done(
        &self,
        resource: &k8s_openapi::api::core::v1::ObjectReference,
        login: &str,
        value: &str,
        revoked: Option<usize>,
    ) {
        let kind = resource.kind.as_deref().unwrap_or_default();
        let namespace = resource.namespace.as_deref().unwrap_or_default();
        let uid = resource.uid.as_deref().unwrap_or_default();
        let note = {
            let Ok(mut all) = self.reissues.lock() else {
                return;
            };
            let t = all
                .entry((namespace.into(), login.into(), value.into()))
                .or_default();
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
                "after nuclia.dev/reissue-minted={value:?}: {} credential(s) minted with this Secret re-issued, {} token(s) revoked at once, {} failed so far (see the resources' Events)",
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
        let secret = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Secret".into()),
            name: Some(login.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        };
        // Related to the resource: one Event per resource (the recorder would fold them).
        self.event_related(
            &secret,
            Some(resource.clone()),
            revoked.is_none(),
            "ReissueProgress",
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
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
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
