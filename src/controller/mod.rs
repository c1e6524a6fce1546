//! The controllers: kube-runtime wiring for both kinds around one generic reconcile that
//! carries out what [`crate::lifecycle::decide`] says. Per kind, only [`Kind`] differs.

mod credential_index;
pub mod kinds;
mod memo;
pub mod secret;
pub mod status;
mod verify;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use chrono::{DateTime, Utc};
use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crd::{
    ANNOTATION_ISSUE_INTENT, ANNOTATION_REVOKE_NOW, ANNOTATION_ROTATE, CredentialStatus,
    DeletionPolicy, FINALIZER, NucliaKbApiKey, NucliaPersonalToken, PreviousToken, SecretKeyRef,
    SecretTemplate,
};
use crate::error::{Error, Result};
use crate::issuer::kb::AccountCache;
use crate::issuer::{Issuer, Marker, Minted};
use crate::lifecycle::{self, IssueReason, Observation, Policy, SecretState, Step};
use crate::nuclia::{self, ApiToken};
use crate::runtime::metrics::Metrics;
use credential_index::CredentialIndex;
use memo::Memo;
use secret::SecretView;
use verify::LiveCache;

/// Settings of the controllers (from the command line).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Identifies this cluster in ownership markers.
    pub cluster_id: String,
    pub verify_interval: Duration,
    /// Cap on any scheduled wake-up, so a missed event heals itself.
    pub requeue_max: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How long an issue intent may be in flight before it counts as interrupted; longer than
    /// one Nuclia call, so a replica taking over never sweeps a mint still in progress.
    pub intent_grace: Duration,
    pub concurrency: u16,
    /// Namespaces to watch (empty: all).
    pub namespaces: Vec<String>,
    pub label_selector: Option<String>,
}

impl Settings {
    /// The orphan sweep may only judge tokens of resources it can see: every resource of a
    /// watched namespace (a label selector hides some, so it turns the sweep off).
    fn sees_namespace(&self, namespace: &str) -> bool {
        self.label_selector.is_none()
            && (self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace))
    }
}

/// The caches of every controller (one per kind and watched namespace).
type Stores = (Vec<Store<NucliaPersonalToken>>, Vec<Store<NucliaKbApiKey>>);

/// Everything a reconcile needs, shared by both controllers.
pub struct Context {
    pub kube: kube::Client,
    pub nuclia: nuclia::Client,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    recorder: Recorder,
    /// When each resource's token was last seen upstream (memory only: verifying writes nothing).
    verified: Mutex<HashMap<String, DateTime<Utc>>>,
    live: LiveCache,
    memo: Memo,
    backoff: Mutex<HashMap<String, ExponentialBackoff>>,
    pub accounts: AccountCache,
    /// UIDs of every resource of both kinds, for the orphan sweep.
    stores: OnceLock<Stores>,
}

impl Context {
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
            stores: OnceLock::new(),
        })
    }

    /// Whether every controller's cache holds its resources. The stores' own readiness future
    /// wakes only its last poller (the controllers poll it too), so this is polled, not awaited.
    pub fn caches_ready(&self) -> bool {
        let ready = |r: Option<Result<(), _>>| matches!(r, Some(Ok(())));
        self.stores.get().is_some_and(|(pt, kb)| {
            pt.iter()
                .all(|s| ready(s.wait_until_ready().now_or_never()))
                && kb
                    .iter()
                    .all(|s| ready(s.wait_until_ready().now_or_never()))
        })
    }

    /// Resolves once [`Context::caches_ready`].
    pub async fn wait_for_caches(&self) {
        while !self.caches_ready() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn known_uids(&self) -> Option<HashSet<String>> {
        // Before every cache is complete an unknown UID proves nothing.
        if !self.caches_ready() {
            return None;
        }
        let (pt, kb) = self.stores.get()?;
        let mut uids: HashSet<String> = pt
            .iter()
            .flat_map(|s| s.state())
            .filter_map(|o| o.uid())
            .collect();
        uids.extend(kb.iter().flat_map(|s| s.state()).filter_map(|o| o.uid()));
        Some(uids)
    }

    fn last_verified(&self, uid: &str) -> Option<DateTime<Utc>> {
        self.verified.lock().ok()?.get(uid).copied()
    }

    fn mark_verified(&self, uid: &str, at: DateTime<Utc>) {
        if let Ok(mut m) = self.verified.lock() {
            m.insert(uid.into(), at);
        }
    }

    fn forget(&self, uid: &str) {
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
    fn event(
        &self,
        obj_ref: &k8s_openapi::api::core::v1::ObjectReference,
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
            secondary: None,
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

/// What distinguishes the two kinds; the reconcile is otherwise the same.
pub trait Kind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    type Issuer: Issuer;
    fn cr_status(&self) -> Option<&CredentialStatus>;
    /// The validated spec; the error says what to fix.
    fn policy(&self) -> Result<Policy>;
    fn secret_template(&self) -> &SecretTemplate;
    /// Data key of the token in the managed Secret.
    fn token_key(&self) -> &str;
    fn auth_ref(&self) -> &SecretKeyRef;
    fn deletion_policy(&self) -> DeletionPolicy;
    /// Builds the issuer from the credential read from `spec.auth.secretRef` (see
    /// [`read_credential`]) and, for KB keys, locates the KB. `managed` is the token the managed
    /// Secret holds (for `selfRenew`).
    fn issuer(
        &self,
        ctx: &Context,
        managed: Option<ApiToken>,
        credential: Result<ApiToken>,
    ) -> impl Future<Output = Result<Self::Issuer>> + Send;
    /// Copies issuer state into status and drops what is no longer needed (KB service accounts).
    fn settle(
        issuer: &mut Self::Issuer,
        status: &mut CredentialStatus,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Extra data keys the Secret should have even before an issuer exists (to detect drift).
    fn expected_extra(&self, status: &CredentialStatus) -> Vec<(String, String)>;
}

/// Reads the credential the resource authenticates with, from its own namespace.
async fn read_credential<K: Kind>(ctx: &Context, obj: &K) -> Result<ApiToken> {
    let secrets = Api::namespaced(ctx.kube.clone(), &obj.namespace().unwrap_or_default());
    crate::issuer::read_credential(&secrets, obj.auth_ref()).await
}

fn secret_name<K: Kind>(obj: &K) -> String {
    obj.secret_template()
        .name
        .clone()
        .unwrap_or_else(|| obj.name_any())
}

fn owner_ref<K: Kind>(obj: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into(),
        kind: K::kind(&()).into(),
        name: obj.name_any(),
        uid: obj.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn marker<K: Kind>(ctx: &Context, obj: &K) -> Marker {
    Marker {
        cluster: ctx.settings.cluster_id.clone(),
        namespace: obj.namespace().unwrap_or_default(),
        uid: obj.uid().unwrap_or_default(),
    }
}

/// Whole seconds: what the apiserver keeps, so a status read back compares equal.
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap_or_else(Utc::now)
}

fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Runs both controllers until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + Clone + 'static,
) {
    // One watch per namespace when several are named: a Role per namespace grants no
    // cluster-wide list, and merged watchers cannot share one store.
    let scopes: Vec<Option<String>> = match ctx.settings.namespaces.as_slice() {
        [] => vec![None],
        names => names.iter().cloned().map(Some).collect(),
    };
    let pts: Vec<_> = scopes
        .iter()
        .map(|ns| controller::<NucliaPersonalToken>(ctx.clone(), ns.as_deref()))
        .collect();
    let kbs: Vec<_> = scopes
        .iter()
        .map(|ns| controller::<NucliaKbApiKey>(ctx.clone(), ns.as_deref()))
        .collect();
    let _ = ctx.stores.set((
        pts.iter().map(|c| c.store()).collect(),
        kbs.iter().map(|c| c.store()).collect(),
    ));
    let mut runs = Vec::new();
    for c in pts {
        runs.push(
            c.graceful_shutdown_on(shutdown.clone())
                .run(reconcile, error_policy, ctx.clone())
                .for_each(|_| async {})
                .boxed(),
        );
    }
    for c in kbs {
        runs.push(
            c.graceful_shutdown_on(shutdown.clone())
                .run(reconcile, error_policy, ctx.clone())
                .for_each(|_| async {})
                .boxed(),
        );
    }
    futures::future::join_all(runs).await;
}

/// A controller for one kind: the resources, plus Secrets (metadata only, so no secret data is
/// cached) mapped to the resources that own them or read credentials from them.
fn controller<K: Kind>(ctx: Arc<Context>, namespace: Option<&str>) -> Controller<K> {
    let s = &ctx.settings;
    let mut wc = watcher::Config::default();
    if let Some(sel) = &s.label_selector {
        wc = wc.labels(sel);
    }
    let (resources, secrets): (Api<K>, Api<PartialObjectMeta<Secret>>) = match namespace {
        Some(ns) => (
            Api::namespaced(ctx.kube.clone(), ns),
            Api::namespaced(ctx.kube.clone(), ns),
        ),
        None => (Api::all(ctx.kube.clone()), Api::all(ctx.kube.clone())),
    };
    // The cache keeps every resource for the process's life: without managedFields (the
    // largest part of an object, and never read) it is a fraction of the size.
    let (reader, writer) = reflector::store();
    let index = Arc::new(CredentialIndex::default());
    let indexed = index.clone();
    let resources = reflector(
        writer,
        watcher(resources, wc)
            .modify(|o: &mut K| o.meta_mut().managed_fields = None)
            .map_ok(move |event| {
                indexed.observe(&event);
                event
            }),
    )
    .applied_objects();
    let controller = Controller::for_stream(resources, reader)
        .with_config(kube::runtime::controller::Config::default().concurrency(s.concurrency));
    // Metadata only: no Secret data is cached in the operator's memory.
    controller.watches(secrets, watcher::Config::default(), move |secret| {
        let ns = secret.namespace();
        let name = secret.name_any();
        let rv = secret.resource_version();
        let mut refs: Vec<ObjectRef<K>> = secret
            .owner_references()
            .iter()
            .filter(|r| r.kind == K::kind(&()) && r.controller == Some(true))
            // The echo of the owner's own write changes nothing for it.
            .filter(|r| !ctx.memo.secret_seen(&r.uid, rv.as_deref()))
            .filter_map(|r| ns.as_deref().map(|ns| ObjectRef::new(&r.name).within(ns)))
            .collect();
        // Resources that read their credentials from this Secret: a credential that appears
        // or changes is picked up at once.
        if let Some(ns) = ns.as_deref() {
            refs.extend(
                index
                    .readers(ns, &name)
                    .iter()
                    .map(|r| ObjectRef::new(r).within(ns)),
            );
        }
        refs
    })
}

async fn reconcile<K: Kind>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action> {
    let started = std::time::Instant::now();
    let uid = obj.uid().unwrap_or_default();
    let result = if obj.meta().deletion_timestamp.is_some() {
        cleanup(obj.as_ref(), &ctx).await
    } else if let Some(wait) =
        ctx.memo
            .unchanged(&uid, obj.resource_version().as_deref(), Utc::now())
    {
        ctx.metrics.reconcile_skipped(K::kind(&()).as_ref());
        return Ok(Action::requeue(wait));
    } else {
        Engine::new(obj.as_ref(), &ctx).apply().await
    };
    ctx.metrics
        .observe_reconcile(K::kind(&()).as_ref(), started.elapsed());
    if result.is_ok()
        && let Ok(mut m) = ctx.backoff.lock()
    {
        m.remove(&uid);
    }
    result
}

/// Exponential backoff with jitter per resource; rate limits wait at least `Retry-After`;
/// errors the user must fix retry on the slow end of the range.
fn error_policy<K: Kind>(obj: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action {
    let s = &ctx.settings;
    ctx.metrics
        .reconcile_error(K::kind(&()).as_ref(), err.label());
    let uid = obj.uid().unwrap_or_default();
    let delay = ctx
        .backoff
        .lock()
        .ok()
        .and_then(|mut m| {
            m.entry(uid)
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
        .unwrap_or(s.backoff_max);
    let delay = if err.is_transient() {
        delay
    } else {
        delay.max(s.backoff_max / 4)
    };
    let delay = err.retry_after().map_or(delay, |ra| delay.max(ra));
    tracing::warn!(kind = K::kind(&()).as_ref(), name = %obj.name_any(), namespace = ?obj.namespace(),
        reason = err.label(), error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// One reconcile of one live resource.
struct Engine<'a, K: Kind> {
    obj: &'a K,
    ctx: &'a Context,
    api: Api<K>,
    secrets: Api<Secret>,
    status: CredentialStatus,
    issuer: Option<K::Issuer>,
    now: DateTime<Utc>,
    uid: String,
    /// This reconcile already wrote the finalizer (with an issue intent): `obj` is now stale,
    /// and a second resourceVersion-guarded patch would only conflict.
    finalizer_written: bool,
    /// Versions of the resource this reconcile saw or wrote, and of the Secret it leaves, for
    /// [`Memo`].
    resource_versions: Vec<String>,
    secret_version: Option<String>,
    /// The credential, when read ahead (alongside the Secret, for a resource about to mint).
    credential: Option<Result<ApiToken>>,
}

impl<'a, K: Kind> Engine<'a, K> {
    fn new(obj: &'a K, ctx: &'a Context) -> Self {
        let ns = obj.namespace().unwrap_or_default();
        Self {
            obj,
            ctx,
            api: Api::namespaced(ctx.kube.clone(), &ns),
            secrets: Api::namespaced(ctx.kube.clone(), &ns),
            status: obj.cr_status().cloned().unwrap_or_default(),
            issuer: None,
            now: now(),
            uid: obj.uid().unwrap_or_default(),
            finalizer_written: false,
            resource_versions: obj.resource_version().into_iter().collect(),
            secret_version: None,
            credential: None,
        }
    }

    async fn apply(mut self) -> Result<Action> {
        match self.apply_inner().await {
            Ok(action) => Ok(action),
            // The cached object was stale (our own write raced a watch event): look again soon,
            // quietly; the resourceVersion guard did its job.
            Err(Error::Kube { source, .. }) if Error::is_conflict(&source) => {
                self.ctx.memo.invalidate(&self.uid);
                Ok(Action::requeue(Duration::from_millis(500)))
            }
            Err(e) => {
                self.ctx.memo.invalidate(&self.uid);
                self.report_failure(&e).await;
                Err(e)
            }
        }
    }

    /// Records a failure in the conditions (Ready stays True while the Secret still holds a
    /// good token) and as a Warning Event when the reason is new.
    async fn report_failure(&mut self, e: &Error) {
        let generation = self.obj.meta().generation;
        let token_ok =
            self.status.token_id.is_some() && self.status.not_after.is_some_and(|t| t > self.now);
        let mut message = e.to_string();
        if matches!(
            e,
            Error::Nuclia(nuclia::Error::Unauthorized { .. } | nuclia::Error::Forbidden { .. })
        ) {
            // Nuclia's answer cannot say which credential; the user needs to know where it is.
            let r = self.obj.auth_ref();
            message.push_str(&format!(
                "; check the credential in Secret {:?} key {:?} (spec.auth.secretRef)",
                r.name, r.key
            ));
        }
        let was = self
            .status
            .condition(status::ISSUING)
            .map(|c| c.reason.clone());
        if !token_ok || matches!(e, Error::SecretConflict(_)) {
            status::set(
                &mut self.status.conditions,
                status::READY,
                false,
                e.label(),
                &message,
                generation,
                self.now,
            );
        }
        status::set(
            &mut self.status.conditions,
            status::ISSUING,
            false,
            e.label(),
            &message,
            generation,
            self.now,
        );
        self.status.observed_generation = generation;
        if was.as_deref() != Some(e.label()) {
            self.ctx
                .event(&self.obj.object_ref(&()), true, e.label(), message);
        }
        if let Err(write_err) =
            status::write(&self.api, self.obj, self.obj.cr_status(), &self.status).await
        {
            tracing::debug!(error = %write_err, "could not record failure in status");
        }
        self.publish_metrics();
    }

    async fn issuer(&mut self, view: &SecretView) -> Result<&mut K::Issuer> {
        if self.issuer.is_none() {
            // The managed token may mint its successor (selfRenew) only while it is the one
            // status vouches for.
            let managed = match &view.state {
                SecretState::Owned {
                    token_hash: Some(h),
                    ..
                } if Some(h) == self.status.token_hash.as_ref() => view.token.clone(),
                _ => None,
            };
            let credential = match self.credential.take() {
                Some(read) => read,
                None => read_credential(self.ctx, self.obj).await,
            };
            self.issuer = Some(self.obj.issuer(self.ctx, managed, credential).await?);
        }
        Ok(self.issuer.as_mut().expect("issuer was just set"))
    }

    async fn apply_inner(&mut self) -> Result<Action> {
        let policy = self.obj.policy()?;
        let secret_name = secret_name(self.obj);
        let template = self.obj.secret_template().clone();
        let extra = self.obj.expected_extra(&self.status);
        let read = secret::read(
            &self.secrets,
            &secret_name,
            &self.uid,
            self.obj.token_key(),
            &template,
            &extra,
        );
        let view = if self.status.token_id.is_none() {
            // No token yet: this reconcile will most likely mint, so read the credential while
            // the Secret is read instead of after.
            let (view, credential) = tokio::join!(read, read_credential(self.ctx, self.obj));
            self.credential = Some(credential);
            view?
        } else {
            read.await?
        };
        self.secret_version = view.resource_version.clone();

        // Leak guard: an intent that never completed may have minted a token we do not know.
        if let Some((nonce, at)) = self.pending_intent() {
            let age = (self.now - at).to_std().unwrap_or_default();
            if age < self.ctx.settings.intent_grace {
                return Ok(Action::requeue(self.ctx.settings.intent_grace - age));
            }
            self.sweep_interrupted(&view, &policy).await?;
            self.status.resolved_intent = Some(nonce);
        }

        if let (Some(issued), Some(not_after)) = (self.status.issued_at, self.status.not_after) {
            // renewBefore may have changed since the token was issued
            self.status.renewal_time = Some(lifecycle::renewal_time(
                &policy, &self.uid, issued, not_after,
            ));
        }
        let annotations = self.obj.annotations();
        let obs = Observation {
            now: self.now,
            uid: &self.uid,
            policy: &policy,
            status: &self.status,
            secret: view.state.clone(),
            rotate_request: annotations.get(ANNOTATION_ROTATE).map(String::as_str),
            revoke_now_request: annotations.get(ANNOTATION_REVOKE_NOW).map(String::as_str),
            last_verified: self.ctx.last_verified(&self.uid),
            verify_interval: chrono_dur(self.ctx.settings.verify_interval),
        };
        let decision = lifecycle::decide(&obs);
        let generation = self.obj.meta().generation;
        match decision.step {
            Step::Conflict => {
                return Err(Error::SecretConflict(format!(
                    "Secret {secret_name:?} exists and is not owned by this {}; delete it or set spec.secret.name to another name",
                    K::kind(&())
                )));
            }
            Step::Issue(reason) => self.issue(reason, &policy, &view, &secret_name).await?,
            Step::RefreshSecret => {
                let token = view
                    .token
                    .clone()
                    .expect("an owned Secret with a matching hash has a token");
                self.write_secret(&secret_name, &token, &view).await?;
            }
            Step::Verify => {
                if !self.verify(&view).await? {
                    self.issue(IssueReason::RevokedUpstream, &policy, &view, &secret_name)
                        .await?;
                }
            }
            Step::Idle => {}
        }
        if !self.finalizer_written && !has_finalizer(self.obj) {
            self.add_finalizer(None).await?;
        }
        self.revoke_due(&view).await?;
        if let Some(issuer) = self.issuer.as_mut() {
            K::settle(issuer, &mut self.status).await?;
        }
        let expires = self
            .status
            .not_after
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        status::set(
            &mut self.status.conditions,
            status::READY,
            true,
            "TokenValid",
            format!("Secret {secret_name} holds a valid token until {expires}"),
            generation,
            self.now,
        );
        status::set(
            &mut self.status.conditions,
            status::ISSUING,
            false,
            "Idle",
            "no issue in progress",
            generation,
            self.now,
        );
        self.status.observed_generation = generation;
        self.status.secret_name = Some(secret_name);
        let written =
            status::write(&self.api, self.obj, self.obj.cr_status(), &self.status).await?;
        // The status write is not resourceVersion-guarded: the version it returns stands for
        // this reconcile only if nobody changed what it acted on meanwhile.
        if let Some(rv) = written
            .filter(|w| same_inputs(self.obj, w))
            .and_then(|w| w.resource_version())
        {
            self.resource_versions.push(rv);
        }
        self.publish_metrics();
        let wake = self.next_wake();
        if let Some(secret_version) = self.secret_version.take() {
            self.ctx.memo.settle(
                &self.uid,
                std::mem::take(&mut self.resource_versions),
                secret_version,
                Utc::now() + chrono_dur(wake),
            );
        }
        Ok(Action::requeue(wake))
    }

    fn publish_metrics(&self) {
        let ready = self
            .status
            .condition(status::READY)
            .is_some_and(|c| c.status == "True");
        self.ctx.metrics.set_credential(
            K::kind(&()).as_ref(),
            &self.obj.namespace().unwrap_or_default(),
            &self.obj.name_any(),
            ready,
            self.status.not_after.map(|t| t.timestamp()),
            self.status.renewal_time.map(|t| t.timestamp()),
        );
    }

    /// The next due time from the status just written, capped so a missed event heals itself.
    fn next_wake(&self) -> Duration {
        let s = &self.status;
        let verify = self
            .ctx
            .last_verified(&self.uid)
            .map(|t| t + chrono_dur(self.ctx.settings.verify_interval));
        let next = [s.renewal_time, s.not_after, verify]
            .into_iter()
            .flatten()
            .chain(s.previous_tokens.iter().map(|p| p.revoke_at))
            .min();
        let wait = next.map(|t| (t - now()).to_std().unwrap_or(Duration::from_millis(200)));
        wait.unwrap_or(self.ctx.settings.requeue_max)
            .clamp(Duration::from_millis(200), self.ctx.settings.requeue_max)
    }

    fn pending_intent(&self) -> Option<(String, DateTime<Utc>)> {
        let raw = self.obj.annotations().get(ANNOTATION_ISSUE_INTENT)?;
        let (nonce, at) = raw.split_once(' ')?;
        if self.status.resolved_intent.as_deref() == Some(nonce) {
            return None;
        }
        let at = DateTime::parse_from_rfc3339(at)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(DateTime::UNIX_EPOCH);
        Some((nonce.to_owned(), at))
    }

    /// Records the intent to mint, together with the finalizer, guarded by resourceVersion: of
    /// two replicas racing (a leader hand-over), only one gets to mint.
    async fn add_finalizer(&mut self, intent: Option<&str>) -> Result<()> {
        let mut finalizers = self.obj.finalizers().to_vec();
        if !finalizers.iter().any(|f| f == FINALIZER) {
            finalizers.push(FINALIZER.into());
        }
        let mut meta = serde_json::json!({
            "resourceVersion": self.obj.resource_version(),
            "finalizers": finalizers,
        });
        if let Some(intent) = intent {
            meta["annotations"] = serde_json::json!({ ANNOTATION_ISSUE_INTENT: intent });
        }
        let written = self
            .api
            .patch(
                &self.obj.name_any(),
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "metadata": meta })),
            )
            .await
            .map_err(Error::kube("record issue intent"))?;
        self.resource_versions.extend(written.resource_version());
        self.finalizer_written = true;
        Ok(())
    }

    async fn issue(
        &mut self,
        reason: IssueReason,
        policy: &Policy,
        view: &SecretView,
        secret_name: &str,
    ) -> Result<()> {
        let nonce = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let intent = format!(
            "{nonce} {}",
            self.now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        self.issuer(view).await?;
        self.add_finalizer(Some(&intent)).await?;
        let marker = marker(self.ctx, self.obj);
        let expires = self.now + policy.lifetime;
        let minted = match self
            .issuer
            .as_mut()
            .expect("issuer")
            .issue(&marker, expires)
            .await
        {
            Ok(m) => m,
            Err(e) => {
                // Refused outright: nothing was minted, so there is nothing for the guard to sweep.
                if !matches!(&e, Error::Nuclia(n) if n.is_transient() || matches!(n, nuclia::Error::Malformed { .. }))
                {
                    self.status.resolved_intent = Some(nonce);
                }
                return Err(e);
            }
        };
        if let Err(e) = self.write_secret_minted(secret_name, &minted, view).await {
            // The token never reached the Secret: take it back rather than leak it.
            if self
                .issuer
                .as_mut()
                .expect("issuer")
                .revoke(&minted.id, minted.service_account_id.as_deref())
                .await
                .is_ok()
            {
                self.status.resolved_intent = Some(nonce);
            }
            return Err(e);
        }
        // The grace period starts when consumers can see the new token, not when this
        // reconcile started: a slow mint must not eat into it.
        let grace_end = if reason.revoke_replaced_now() {
            self.now
        } else {
            now() + policy.revoke_previous_after
        };
        self.record_current(
            policy,
            &minted.id,
            &minted.token,
            minted.not_after,
            grace_end,
        );
        let annotations = self.obj.annotations();
        let s = &mut self.status;
        s.resolved_intent = Some(nonce);
        s.rotate_handled = annotations.get(ANNOTATION_ROTATE).cloned();
        s.revoke_now_handled = annotations.get(ANNOTATION_REVOKE_NOW).cloned();
        if let Some(old_name) = s.secret_name.clone().filter(|n| n != secret_name) {
            secret::delete_owned(&self.secrets, &old_name, &self.uid).await?;
        }
        if let Some(issuer) = self.issuer.as_mut() {
            K::settle(issuer, &mut self.status).await?;
        }
        self.ctx.mark_verified(&self.uid, self.now);
        let note = format!(
            "issued token {} ({}), valid until {}",
            minted.id,
            reason.as_str(),
            minted
                .not_after
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        tracing::info!(kind = K::kind(&()).as_ref(), name = %self.obj.name_any(), token_id = %minted.id, reason = reason.as_str(), "issued");
        let warning = matches!(
            reason,
            IssueReason::SecretRepaired | IssueReason::RevokedUpstream | IssueReason::Expired
        );
        // The first issue is told by the Ready condition; an Event for it would be one more
        // write per resource in a burst. Rotations, repairs and failures get one.
        if let Some(event_reason) = reason_event(reason) {
            self.ctx
                .event(&self.obj.object_ref(&()), warning, event_reason, note);
        }
        Ok(())
    }

    async fn write_secret_minted(
        &mut self,
        name: &str,
        minted: &Minted,
        view: &SecretView,
    ) -> Result<()> {
        let extra = self
            .issuer
            .as_ref()
            .map(|i| i.secret_extra_data())
            .unwrap_or_default();
        let mut data: BTreeMap<String, String> = extra.into_iter().collect();
        data.insert(
            self.obj.token_key().to_owned(),
            minted.token.expose().to_owned(),
        );
        let template = self.obj.secret_template().clone();
        let desired = secret::Desired {
            name,
            template: &template,
            owner: owner_ref(self.obj),
            data,
            token_id: &minted.id,
            not_after: minted.not_after,
        };
        self.secret_version = secret::write(
            &self.secrets,
            &desired,
            view.exists && view.state != SecretState::Missing,
        )
        .await?;
        Ok(())
    }

    /// Rewrites the Secret's metadata and extra data around the token it already holds.
    async fn write_secret(
        &mut self,
        name: &str,
        token: &ApiToken,
        view: &SecretView,
    ) -> Result<()> {
        let (Some(id), Some(not_after)) = (self.status.token_id.clone(), self.status.not_after)
        else {
            return Ok(());
        };
        let extra = self.obj.expected_extra(&self.status);
        let mut data: BTreeMap<String, String> = extra.into_iter().collect();
        data.insert(self.obj.token_key().to_owned(), token.expose().to_owned());
        let template = self.obj.secret_template().clone();
        let desired = secret::Desired {
            name,
            template: &template,
            owner: owner_ref(self.obj),
            data,
            token_id: &id,
            not_after,
        };
        self.secret_version = secret::write(&self.secrets, &desired, view.exists).await?;
        Ok(())
    }

    /// Whether the current token still exists upstream, from the list shared by every resource
    /// that uses the same credential; also sweeps marked tokens of resources that are gone.
    async fn verify(&mut self, view: &SecretView) -> Result<bool> {
        let ctx = self.ctx;
        let issuer = self.issuer(view).await?;
        let mut listed = ctx.live.get(issuer, ctx.settings.verify_interval).await?;
        let Some(id) = self.status.token_id.clone() else {
            return Ok(true);
        };
        // A list older than the token cannot vouch against it.
        let mut alive =
            listed.live.contains(&id) || self.status.issued_at.is_some_and(|t| t >= listed.at);
        if !alive {
            // The shared list may have been fetched (for another resource) while this token was
            // being minted: `issued_at` is the start of that reconcile, in whole seconds, so it
            // cannot tell. Judge only by a list fetched now, after the token was recorded.
            let issuer = self.issuer.as_mut().expect("issuer");
            ctx.live.invalidate(issuer).await;
            listed = ctx.live.get(issuer, ctx.settings.verify_interval).await?;
            alive = listed.live.contains(&id);
        }
        if alive {
            self.ctx.mark_verified(&self.uid, self.now);
            // Once per list, by the reconcile that fetched it.
            if let Some(list) = &listed.fetched {
                self.sweep_orphans(list).await;
            }
        } else {
            self.ctx
                .live
                .invalidate(self.issuer.as_ref().expect("issuer"))
                .await;
            self.ctx.event(
                &self.obj.object_ref(&()),
                true,
                "RevokedUpstream",
                format!("token {id} no longer exists at Nuclia; issuing a new one"),
            );
        }
        Ok(alive)
    }

    /// Revokes tokens marked by this cluster for resources that no longer exist.
    async fn sweep_orphans(&mut self, live: &[crate::issuer::LiveToken]) {
        let Some(known) = self.ctx.known_uids() else {
            return;
        };
        let settings = &self.ctx.settings;
        let orphans: Vec<_> = live
            .iter()
            .filter(|t| {
                t.marker.as_ref().is_some_and(|m| {
                    m.cluster == settings.cluster_id
                        && settings.sees_namespace(&m.namespace)
                        && !known.contains(&m.uid)
                })
            })
            .cloned()
            .collect();
        let Some(issuer) = self.issuer.as_mut() else {
            return;
        };
        for t in orphans {
            match issuer.revoke(&t.id, t.service_account_id.as_deref()).await {
                Ok(()) => {
                    tracing::info!(token_id = %t.id, "revoked a token of a resource that no longer exists")
                }
                Err(e) => {
                    tracing::warn!(token_id = %t.id, error = %e, "could not revoke an orphaned token")
                }
            }
        }
    }

    /// Makes `id` the current token in status; the one it replaces waits until `grace_end`.
    fn record_current(
        &mut self,
        policy: &Policy,
        id: &str,
        token: &ApiToken,
        not_after: DateTime<Utc>,
        grace_end: DateTime<Utc>,
    ) {
        let s = &mut self.status;
        if let Some(old) = s.token_id.take() {
            let sa = s.kb.as_ref().and_then(|k| k.service_account_id.clone());
            s.previous_tokens.push(PreviousToken {
                id: old,
                revoke_at: grace_end,
                service_account_id: sa,
            });
        }
        s.token_id = Some(id.to_owned());
        s.token_hash = Some(lifecycle::token_hash(token.expose()));
        s.issued_at = Some(self.now);
        s.not_after = Some(not_after);
        s.renewal_time = Some(lifecycle::renewal_time(
            policy, &self.uid, self.now, not_after,
        ));
        s.spec_hash = Some(policy.spec_hash.clone());
    }

    /// After an interrupted issue: adopt the token the Secret holds if it is ours and alive,
    /// and revoke every other token marked for this resource that status does not reference.
    async fn sweep_interrupted(&mut self, view: &SecretView, policy: &Policy) -> Result<()> {
        let marker = marker(self.ctx, self.obj);
        let live = self.issuer(view).await?.list_live().await?;
        let mine: Vec<_> = live
            .into_iter()
            .filter(|t| t.marker.as_ref() == Some(&marker))
            .collect();
        let mut referenced: HashSet<String> = self
            .status
            .previous_tokens
            .iter()
            .map(|p| p.id.clone())
            .collect();
        referenced.extend(self.status.token_id.clone());
        if let (Some(id), Some(token)) = (&view.token_id, &view.token)
            && !referenced.contains(id)
            && let Some(found) = mine.iter().find(|t| &t.id == id)
        {
            let not_after = found.expires.unwrap_or(self.now + policy.lifetime);
            let grace_end = self.now + policy.revoke_previous_after;
            self.record_current(policy, id, token, not_after, grace_end);
            // Where it lives (a KB key's service account) is issuer state, copied to status.
            if let Some(issuer) = self.issuer.as_mut() {
                issuer.adopted(found);
            }
            referenced.insert(id.clone());
            tracing::info!(token_id = %id, "adopted the token an interrupted issue left in the Secret");
        }
        let issuer = self.issuer.as_mut().expect("issuer");
        for t in mine.iter().filter(|t| !referenced.contains(&t.id)) {
            issuer
                .revoke(&t.id, t.service_account_id.as_deref())
                .await?;
            tracing::info!(token_id = %t.id, "revoked a token an interrupted issue left behind");
        }
        Ok(())
    }

    /// Revokes replaced tokens whose grace period is over.
    async fn revoke_due(&mut self, view: &SecretView) -> Result<()> {
        let due: Vec<PreviousToken> = self
            .status
            .previous_tokens
            .iter()
            .filter(|p| p.revoke_at <= self.now)
            .cloned()
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        self.issuer(view).await?;
        for p in due {
            self.issuer
                .as_mut()
                .expect("issuer")
                .revoke(&p.id, p.service_account_id.as_deref())
                .await?;
            self.status.previous_tokens.retain(|q| q.id != p.id);
            tracing::info!(kind = K::kind(&()).as_ref(), name = %self.obj.name_any(), token_id = %p.id, "revoked previous token");
        }
        Ok(())
    }
}

fn reason_event(reason: IssueReason) -> Option<&'static str> {
    match reason {
        IssueReason::Initial => None,
        IssueReason::SecretRepaired => Some("SecretRepaired"),
        IssueReason::RevokedUpstream => Some("RevokedUpstream"),
        _ => Some("Rotated"),
    }
}

/// Whether `after` asks the same of the operator as `before`: same spec, same requests, not
/// being deleted (the issue intent is the operator's own bookkeeping).
fn same_inputs<K: Kind>(before: &K, after: &K) -> bool {
    let requests = |o: &K| {
        let mut a = o.annotations().clone();
        a.remove(ANNOTATION_ISSUE_INTENT);
        a
    };
    before.meta().generation == after.meta().generation
        && after.meta().deletion_timestamp.is_none()
        && requests(before) == requests(after)
}

fn has_finalizer<K: Resource>(obj: &K) -> bool {
    obj.meta()
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == FINALIZER))
}

/// Deletion: revoke every token (unless `Orphan`), release what the issuer owns, delete the
/// Secret, then let the resource go.
async fn cleanup<K: Kind>(obj: &K, ctx: &Context) -> Result<Action> {
    if !has_finalizer(obj) {
        return Ok(Action::await_change());
    }
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.kube.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(ctx.kube.clone(), &ns);
    let status = obj.cr_status().cloned().unwrap_or_default();
    let uid = obj.uid().unwrap_or_default();
    let revoke = obj.deletion_policy() == DeletionPolicy::Revoke;
    let minted_anything = status.token_id.is_some()
        || !status.previous_tokens.is_empty()
        || obj.annotations().contains_key(ANNOTATION_ISSUE_INTENT)
        || status.kb.is_some();
    if revoke && minted_anything {
        let result: Result<()> = async {
            let managed = None;
            let credential = read_credential(ctx, obj).await;
            let mut issuer = obj.issuer(ctx, managed, credential).await?;
            let marker = marker(ctx, obj);
            let sa = status
                .kb
                .as_ref()
                .and_then(|k| k.service_account_id.clone());
            let mut ids: Vec<(String, Option<String>)> = status
                .previous_tokens
                .iter()
                .map(|p| (p.id.clone(), p.service_account_id.clone()))
                .collect();
            ids.extend(status.token_id.clone().map(|id| (id, sa)));
            // and whatever an interrupted issue may have minted
            for t in issuer.list_live().await? {
                if t.marker.as_ref() == Some(&marker) && !ids.iter().any(|(id, _)| *id == t.id) {
                    ids.push((t.id, t.service_account_id));
                }
            }
            for (id, sa) in &ids {
                issuer.revoke(id, sa.as_deref()).await?;
            }
            issuer.cleanup(&marker, true).await
        }
        .await;
        if let Err(e) = result {
            let note = format!(
                "cannot revoke the tokens before deletion: {e}; fix the credentials, or set spec.deletionPolicy: Orphan to delete without revoking"
            );
            ctx.event(&obj.object_ref(&()), true, "RevokeFailed", note);
            return Err(e);
        }
    }
    secret::delete_owned(&secrets, &secret_name(obj), &uid).await?;
    let finalizers: Vec<String> = obj
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    let patch = serde_json::json!({ "metadata": { "resourceVersion": obj.resource_version(), "finalizers": finalizers } });
    match api
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        Ok(_) => {}
        Err(e) if Error::is_not_found(&e) => {}
        Err(e) => return Err(Error::kube("remove finalizer")(e)),
    }
    ctx.forget(&uid);
    ctx.metrics
        .forget_credential(K::kind(&()).as_ref(), &ns, &obj.name_any());
    tracing::info!(kind = K::kind(&()).as_ref(), name = %obj.name_any(), revoked = revoke, "cleaned up");
    Ok(Action::await_change())
}
