//! The controllers: kube-runtime wiring for every kind around one lifecycle engine
//! ([`engine`]) that carries out what [`crate::lifecycle::decide`] and
//! [`crate::lifecycle::decide_deletion`] plan. Per kind, only [`Kind`] differs (its
//! implementations live with their issuers, one file per credential kind).
//!
//! Beside the engine: `context` (what every reconcile shares), `memo` and `caches` (what the
//! process remembers between reconciles), `secret` (the managed Secret), `secret_watch` and
//! `resource_index` (who is woken by a Secret), `verify` (the shared upstream lists), `kept`
//! (tokens kept by `Orphan` deletions), `restart` (rollout restarts), `cluster_credentials`
//! (their status), `status` (condition primitives). `docs/lifecycle.md` walks through them.

mod caches;
mod cluster_credentials;
mod context;
mod engine;
pub(crate) mod kept;
mod memo;
mod resource_index;
pub(crate) mod restart;
pub mod secret;
mod secret_watch;
pub mod status;
#[cfg(test)]
mod tests;
mod verify;

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, ObjectRef, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crd::{
    CredentialStatus, DeletionPolicy, LifecycleSpec, NucliaKbApiKey, NucliaNuaKey,
    NucliaPersonalToken, RolloutRestartTarget, SecretKeyRef, SecretTemplate, TokenScope,
};
use crate::error::Result;
use crate::issuer::Issuer;
use crate::issuer::formats::Consumer;
use crate::lifecycle::Policy;
use crate::nuclia::ApiToken;
pub use context::Context;
use engine::{error_policy, reconcile};
use resource_index::ResourceIndex;

/// kubectl's copy of the last applied manifest: never read, dropped from the cache.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Settings of the controllers (from the command line).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Identifies this cluster in ownership markers.
    pub cluster_id: String,
    /// Whether `cluster_id` is unique by construction (the kube-system namespace's UID), so
    /// tokens marked before markers named their installation can be swept.
    pub cluster_id_unique: bool,
    /// Identifies this installation in ownership markers (see [`crate::runtime::identity`]).
    pub installation_id: String,
    pub verify_interval: Duration,
    /// Cap on any scheduled wake-up, so a missed event heals itself.
    pub requeue_max: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How long an issue intent may be in flight before it counts as interrupted; longer than
    /// one Nuclia call, so a replica taking over never sweeps a mint still in progress.
    pub intent_grace: Duration,
    /// How long a deletion retries revocations no credential can make before giving up on them.
    pub revoke_timeout: Duration,
    /// At most one mint per resource per this interval.
    pub min_issue_interval: Duration,
    /// At most one rollout restart of a workload per this interval.
    pub rollout_restart_interval: Duration,
    /// Rotation windows of resources that name none.
    pub default_rotation_windows: crate::windows::Windows,
    pub concurrency: u16,
    /// Namespaces to watch (empty: all).
    pub namespaces: Vec<String>,
    pub label_selector: Option<String>,
    /// Namespace of the Secrets that `NucliaClusterCredential`s read; None: cluster
    /// credentials are turned off.
    pub cluster_credential_namespace: Option<String>,
    /// The operator's own namespace (`--lease-namespace`), where [`Settings::kept_configmap`]
    /// lives.
    pub operator_namespace: String,
    /// The ConfigMap that records the resources deleted with `deletionPolicy: Orphan`, whose
    /// tokens the orphan sweep never revokes (see [`kept`]).
    pub kept_configmap: String,
}

impl Settings {
    /// The orphan sweep may only judge tokens of resources it can see: every resource of a
    /// watched namespace (a label selector hides some, so it turns the sweep off).
    fn sees_namespace(&self, namespace: &str) -> bool {
        self.label_selector.is_none()
            && (self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace))
    }
}

/// What the credentials are for: the managed token's place among them may differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    Mint,
    Revoke,
}

/// Where the token the managed Secret holds stands among the credentials a kind calls Nuclia
/// with (beside `spec.auth.secretRef`'s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManagedToken {
    Never,
    First,
    Last,
}

impl ManagedToken {
    /// A personal token's: it may delete personal tokens of its user, itself included (the best
    /// credential at hand when the bootstrap login has expired); with `selfRenew` it also mints.
    pub fn of_personal_token(self_renew: bool, purpose: Purpose) -> Self {
        match (self_renew, purpose) {
            (true, _) => ManagedToken::First,
            (false, Purpose::Revoke) => ManagedToken::Last,
            (false, Purpose::Mint) => ManagedToken::Never,
        }
    }
}

/// A kind's status as the engine handles it: what every kind records, through `Deref`, and the
/// kind's own part, written with it.
pub trait KindStatus:
    std::ops::Deref<Target = CredentialStatus>
    + std::ops::DerefMut
    + From<CredentialStatus>
    + Clone
    + Default
    + PartialEq
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<X> KindStatus for crate::crd::KindStatus<X> where
    X: Clone + Default + PartialEq + Debug + Serialize + DeserializeOwned + Send + Sync + 'static
{
}

/// The status type of kind `K`.
pub type StatusOf<K> = <K as kube::core::object::HasStatus>::Status;

/// What distinguishes the credential kinds; the engine is otherwise the same. Each kind's
/// implementation lives with its issuer in [`crate::issuer`].
pub trait Kind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + kube::core::object::HasStatus<Status: KindStatus>
    + Send
    + Sync
    + 'static
{
    type Issuer: Issuer + Sync;
    /// The lifecycle fields of the spec, shared by every kind.
    fn lifecycle(&self) -> &LifecycleSpec;
    fn cr_status(&self) -> Option<&StatusOf<Self>> {
        kube::core::object::HasStatus::status(self)
    }
    /// Validates the kind's own spec fields (the error says what to fix) and returns those that
    /// shape the credential: a change of any of them rotates it ([`Policy::for_spec`]).
    fn shaping(&self) -> Result<serde_json::Value>;
    /// The validated spec; the error says what to fix.
    fn policy(&self) -> Result<Policy> {
        Policy::for_spec(self.shaping()?, self.lifecycle())
            .map_err(crate::error::Error::InvalidSpec)
    }
    /// The managed Secret the spec describes.
    fn secret(&self) -> &dyn crate::crd::ManagedSecret;
    fn secret_template(&self) -> &SecretTemplate {
        self.secret().template()
    }
    /// Data key of the token in the managed Secret.
    fn token_key(&self) -> &str {
        self.secret().token_key()
    }
    fn auth_ref(&self) -> &SecretKeyRef;
    /// The `NucliaClusterCredential` named instead of `auth_ref` (then `auth_ref` is not used).
    fn cluster_credential(&self) -> Option<&str> {
        None
    }
    /// The Knowledge Box role asked for, checked against a cluster credential's ceiling.
    fn requested_role(&self) -> Option<crate::crd::KbRole> {
        None
    }
    fn deletion_policy(&self) -> DeletionPolicy {
        self.lifecycle().deletion_policy
    }
    /// Whether, and where, the managed token itself is one of the credentials.
    fn managed_token(&self, purpose: Purpose) -> ManagedToken;
    /// The issuer that mints in the scope the spec asks for now (a KB key's locates the KB
    /// and finds its account, refusing an untrusted `kbUrl` before using any credential).
    /// `status` is the engine's, as this reconcile has it so far. Default: the revoker, for a
    /// kind whose scope is the credential's own (a personal token's user).
    fn issuer(
        &self,
        ctx: &Context,
        credentials: Vec<ApiToken>,
        _status: &StatusOf<Self>,
    ) -> impl Future<Output = Result<Self::Issuer>> + Send {
        let issuer = self.revoker(ctx, credentials, &TokenScope::default());
        async move { Ok(issuer) }
    }
    /// An issuer that revokes and lists at recorded scopes (`home` for listing): no request.
    fn revoker(&self, ctx: &Context, credentials: Vec<ApiToken>, home: &TokenScope)
    -> Self::Issuer;
    /// Workloads restarted after the Secret's token changes.
    fn restart_targets(&self) -> &[RolloutRestartTarget] {
        &self.lifecycle().rollout_restart_targets
    }
    /// Data keys the Secret holds next to the token (a KB key's URL, id and zone).
    fn secret_data(&self, status: &StatusOf<Self>) -> Vec<(String, String)>;
    /// The credential as its consumers use it, for `spec.secret.additionalFormats` (None while
    /// a KB key's location is not known).
    fn consumer(&self, status: &StatusOf<Self>) -> Option<Consumer>;
    /// The scope of the current token of a status older than recorded scopes (a KB key's
    /// location was recorded on its own). Default: the resource's own scope.
    fn unscoped(_status: &StatusOf<Self>) -> TokenScope {
        TokenScope::default()
    }
    /// Copies issuer state into status (where a KB key lives). Default: nothing to copy.
    fn record(_issuer: &Self::Issuer, _status: &mut StatusOf<Self>) {}
    /// Whether a token of this kind expires at Nuclia at its `notAfter`. A NUA key does not:
    /// its `notAfter` is the rotation period only, so a NUA client that could not be revoked
    /// is never taken for expired (it stays recorded, or is abandoned with the Event and
    /// metric).
    fn expires_upstream(&self) -> bool {
        true
    }
    /// The service account the spec adopts (`spec.serviceAccount.id` of a KB key): keys minted
    /// there carry no marker.
    fn adopted_service_account(&self) -> Option<&str> {
        None
    }
}

/// Every credential kind the operator runs, one line each: a fourth kind adds its line here
/// (its CRD, its controllers and its caches follow from it) and its own file.
pub(crate) const KINDS: [Registration; 3] = [
    Registration::of::<NucliaPersonalToken>(),
    Registration::of::<NucliaKbApiKey>(),
    Registration::of::<NucliaNuaKey>(),
];

/// What the operator needs of one kind without knowing its type: its CRD and how to start its
/// controller in one watched scope.
pub(crate) struct Registration {
    /// The kind's name (`kind` in its CRD).
    pub name: fn() -> &'static str,
    /// The kind's CRD as derived from its type (before the shared printer columns and schema
    /// touches of [`crate::crds`]).
    pub crd: fn() -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    start: fn(Arc<Context>, Option<&str>, Shutdown) -> Started,
}

impl Registration {
    const fn of<K: Kind + kube::CustomResourceExt>() -> Self {
        Self {
            name: kind_name::<K>,
            crd: K::crd,
            start: start::<K>,
        }
    }
}

fn kind_name<K: Kind>() -> &'static str {
    match K::kind(&()) {
        std::borrow::Cow::Borrowed(name) => name,
        // Never for a derived kind: its name is a static string.
        std::borrow::Cow::Owned(name) => Box::leak(name.into_boxed_str()),
    }
}

/// The shutdown signal every controller shares.
type Shutdown = futures::future::Shared<futures::future::BoxFuture<'static, ()>>;

/// One kind's controller in one scope, built but not yet running.
struct Started {
    cache: Arc<dyn KindCache>,
    trigger: SecretTrigger,
    cluster_trigger: ClusterCredentialTrigger,
    run: futures::future::BoxFuture<'static, ()>,
}

fn start<K: Kind>(ctx: Arc<Context>, namespace: Option<&str>, shutdown: Shutdown) -> Started {
    let ((controller, index), (trigger, cluster_trigger)) = controller::<K>(ctx.clone(), namespace);
    let cache: Arc<dyn KindCache> = Arc::new((controller.store(), index));
    let run = controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(outcome::<K, _>(ctx))
        .boxed();
    Started {
        cache,
        trigger,
        cluster_trigger,
        run,
    }
}

/// One kind's cache in one watched scope, as the rest of the operator asks it: with its index
/// of which resources read which credentials Secret and which UIDs and tokens exist.
pub(crate) trait KindCache: Send + Sync {
    /// Whether the cache holds every resource (polled: the store's readiness future wakes
    /// only its last poller).
    fn ready(&self) -> bool;
    /// Whether a resource has this UID or records this token in its status.
    fn knows(&self, uid: &str, token: &str) -> bool;
    /// Resources in `namespace`, other than `uid`, with the finalizer, that authenticate with
    /// Secret `secret`: `Kind/name` and whether each is being deleted.
    fn readers(&self, namespace: &str, secret: &str, uid: &str) -> Vec<(String, bool)>;
    /// Namespaces of the resources that name cluster credential `name` or hold its keys.
    fn cluster_credential_users(&self, name: &str) -> Vec<String>;
    /// Current keys minted with cluster credential `name`, by namespace.
    fn keys_through(&self, name: &str) -> Vec<(String, u32)>;
    /// See [`ResourceIndex::key_queue`].
    fn key_queue(&self, cc: &str, namespace: &str, me: &str, created: i64) -> (u32, u32);
}

impl<K: Kind> KindCache for (reflector::Store<K>, Arc<ResourceIndex>) {
    fn ready(&self) -> bool {
        matches!(self.0.wait_until_ready().now_or_never(), Some(Ok(())))
    }

    fn knows(&self, uid: &str, token: &str) -> bool {
        self.1.knows(uid, token)
    }

    fn readers(&self, namespace: &str, secret: &str, uid: &str) -> Vec<(String, bool)> {
        self.1
            .readers(namespace, secret)
            .into_iter()
            .filter_map(|name| self.0.get(&ObjectRef::new(&name).within(namespace)))
            .filter(|o| {
                o.uid().as_deref() != Some(uid)
                    && o.finalizers().iter().any(|f| f == crate::crd::FINALIZER)
            })
            .map(|o| {
                let name = format!("{}/{}", K::kind(&()), o.name_any());
                (name, o.meta().deletion_timestamp.is_some())
            })
            .collect()
    }

    fn cluster_credential_users(&self, name: &str) -> Vec<String> {
        self.1
            .cluster_credential_users(name)
            .into_iter()
            .map(|(ns, _)| ns)
            .collect()
    }

    fn keys_through(&self, name: &str) -> Vec<(String, u32)> {
        self.1.keys_through(name)
    }

    fn key_queue(&self, cc: &str, namespace: &str, me: &str, created: i64) -> (u32, u32) {
        self.1.key_queue(cc, namespace, me, created)
    }
}

/// The caches of every controller: one per kind and watched namespace.
pub(crate) type Stores = Vec<Arc<dyn KindCache>>;

/// Runs every kind's controllers until `shutdown` resolves.
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
    let shared: Shutdown = shutdown.clone().boxed().shared();
    let mut runs = Vec::new();
    let (mut caches, mut controllers, mut secret_stores) = (vec![], vec![], vec![]);
    let mut cluster_triggers = Vec::new();
    for ns in &scopes {
        let mut triggers = Vec::new();
        for kind in &KINDS {
            let started = (kind.start)(ctx.clone(), ns.as_deref(), shared.clone());
            caches.push(started.cache);
            triggers.push(started.trigger);
            cluster_triggers.push(started.cluster_trigger);
            controllers.push(started.run);
        }
        let (store, watch) = secret_watch(ctx.clone(), ns.as_deref(), triggers);
        runs.push(
            watch
                .take_until(shutdown.clone())
                .for_each(|_| async {})
                .boxed(),
        );
        secret_stores.push((ns.clone(), store));
    }
    if ctx.settings.cluster_credential_namespace.is_some() {
        let (store, watch) = cluster_credential_watch(ctx.clone(), cluster_triggers);
        let _ = ctx.cluster_credentials.set(store);
        runs.push(
            watch
                .take_until(shutdown.clone())
                .for_each(|_| async {})
                .boxed(),
        );
        runs.push(cluster_credentials::run(ctx.clone(), shutdown.clone()).boxed());
    }
    // Before any controller runs: a reconcile asks the caches.
    let _ = ctx.stores.set(caches);
    let _ = ctx.secret_stores.set(secret_stores);
    runs.extend(controllers);
    let housekeeping = caches::housekeeping(ctx.clone());
    let until = shutdown.clone();
    runs.push(
        async move {
            tokio::select! {
                _ = housekeeping => {}
                _ = until => {}
            }
        }
        .boxed(),
    );
    futures::future::join_all(runs).await;
}

/// What a kind's controller reports besides its reconciles (those report through
/// [`error_policy`]): a watch error is logged and counted, not dropped, since after one the
/// watch starts again, often with a full list of everything it covers.
fn outcome<K: Kind, T>(
    ctx: Arc<Context>,
) -> impl FnMut(
    Result<T, kube::runtime::controller::Error<crate::error::Error, watcher::Error>>,
) -> std::future::Ready<()> {
    move |r| {
        if let Err(kube::runtime::controller::Error::QueueError(e)) = &r {
            watch_error(&ctx, K::kind(&()).as_ref(), e);
        }
        std::future::ready(())
    }
}

fn watch_error(ctx: &Context, watch: &str, e: &watcher::Error) {
    ctx.metrics.watch_error(watch);
    tracing::warn!(watch, error = %e, "watch failed; it starts again");
}

/// Where the shared Secret watch sends a Secret event for one kind: the resources of that kind
/// it concerns get a reconcile.
type SecretTrigger = Box<dyn Fn(&PartialObjectMeta<Secret>) + Send + Sync>;

/// The Secret metadata watch of one scope, shared by the kinds: its store, and the stream that
/// drives it (and wakes each kind's resources through its trigger).
fn secret_watch(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    triggers: Vec<SecretTrigger>,
) -> (
    reflector::Store<PartialObjectMeta<Secret>>,
    impl futures::Stream<Item = ()> + Send,
) {
    let api: Api<PartialObjectMeta<Secret>> = match namespace {
        Some(ns) => Api::namespaced(ctx.kube.clone(), ns),
        None => Api::all(ctx.kube.clone()),
    };
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(secret_watch::slim),
    )
    .touched_objects()
    .filter_map(move |secret| {
        match &secret {
            Ok(secret) => {
                for t in &triggers {
                    t(secret);
                }
            }
            Err(e) => watch_error(&ctx, "Secret", e),
        }
        std::future::ready(Some(()))
    });
    (reader, stream)
}

/// Where the cluster credential watch sends an event: the resources of one kind and scope that
/// name that cluster credential or hold its keys get a reconcile.
type ClusterCredentialTrigger = Box<dyn Fn(&str) + Send + Sync>;

/// The one `NucliaClusterCredential` watch: its store (the marks and Secrets of each, read by
/// reconciles) and the stream that drives it, waking the resources that use each. The store
/// takes an event before the resources hear of it, so they read what woke them.
fn cluster_credential_watch(
    ctx: Arc<Context>,
    triggers: Vec<ClusterCredentialTrigger>,
) -> (
    reflector::Store<crate::cluster_credential::NucliaClusterCredential>,
    impl futures::Stream<Item = ()> + Send,
) {
    let api: Api<crate::cluster_credential::NucliaClusterCredential> = Api::all(ctx.kube.clone());
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    )
    .touched_objects()
    .filter_map(move |cc| {
        match &cc {
            Ok(cc) => {
                let name = cc.name_any();
                // A failure with it need not wait for its backoff to try again.
                ctx.memo
                    .credential_changed(&memo::credential_key("", None, Some(&name)));
                for t in &triggers {
                    t(&name);
                }
            }
            Err(e) => watch_error(&ctx, "NucliaClusterCredential", e),
        }
        std::future::ready(Some(()))
    });
    (reader, stream)
}

/// A controller for one kind, woken by its resources and, through the triggers it returns for
/// the shared watches, by the Secrets they own or read credentials from and by the cluster
/// credentials they use (a policy change takes effect at once rather than at their next retry;
/// a `nuclia.dev/reissue-minted` mark re-issues).
fn controller<K: Kind>(
    ctx: Arc<Context>,
    namespace: Option<&str>,
) -> (
    (Controller<K>, Arc<ResourceIndex>),
    (SecretTrigger, ClusterCredentialTrigger),
) {
    let s = &ctx.settings;
    let mut wc = watcher::Config::default();
    if let Some(sel) = &s.label_selector {
        wc = wc.labels(sel);
    }
    let resources: Api<K> = match namespace {
        Some(ns) => Api::namespaced(ctx.kube.clone(), ns),
        None => Api::all(ctx.kube.clone()),
    };
    // The cache keeps every resource for the process's life: without managedFields and
    // kubectl's copy of the last applied manifest (the largest parts of an object, never
    // read) it is a fraction of the size.
    let (reader, writer) = reflector::store();
    let index = Arc::new(ResourceIndex::default());
    let indexed = index.clone();
    let gone = ctx.clone();
    let resources = reflector(
        writer,
        watcher(resources, wc)
            .modify(|o: &mut K| {
                let meta = o.meta_mut();
                meta.managed_fields = None;
                if let Some(a) = meta.annotations.as_mut() {
                    a.remove(LAST_APPLIED);
                }
            })
            .map_ok(move |event| {
                indexed.observe(&event);
                // Gone without the operator's clean-up (a finalizer removed by hand, or no
                // longer matching --label-selector): its series and memory go too.
                if let watcher::Event::Delete(o) = &event {
                    gone.metrics.forget_credential(
                        K::kind(&()).as_ref(),
                        &o.namespace().unwrap_or_default(),
                        &o.name_any(),
                    );
                    gone.forget(&o.uid().unwrap_or_default());
                }
                event
            }),
    )
    .applied_objects();
    let (tx, rx) = futures::channel::mpsc::unbounded::<ObjectRef<K>>();
    let controller = Controller::for_stream(resources, reader)
        .with_config(kube::runtime::controller::Config::default().concurrency(s.concurrency))
        .reconcile_on(rx);
    let users = index.clone();
    let cluster_tx = tx.clone();
    let cluster_trigger: ClusterCredentialTrigger = Box::new(move |name: &str| {
        for (ns, resource) in users.cluster_credential_users(name) {
            let _ = cluster_tx.unbounded_send(ObjectRef::new(&resource).within(&ns));
        }
    });
    let readers = index.clone();
    let trigger: SecretTrigger = Box::new(move |secret: &PartialObjectMeta<Secret>| {
        let ns = secret.namespace();
        let rv = secret.resource_version();
        let owners = secret
            .owner_references()
            .iter()
            .filter(|r| r.kind == K::kind(&()) && r.controller == Some(true))
            // The echo of the owner's own write changes nothing for it.
            .filter(|r| !ctx.memo.secret_seen(&r.uid, rv.as_deref()))
            .filter_map(|r| ns.as_deref().map(|ns| ObjectRef::new(&r.name).within(ns)));
        for r in owners {
            let _ = tx.unbounded_send(r);
        }
        // Resources that read their credentials from this Secret: a credential that appears
        // or changes is picked up at once.
        if let Some(ns) = ns.as_deref() {
            let key = memo::credential_key(ns, Some(&secret.name_any()), None);
            ctx.memo.credential_changed(&key);
            for name in readers.readers(ns, &secret.name_any()) {
                let _ = tx.unbounded_send(ObjectRef::new(&name).within(ns));
            }
            // A cluster credential's Secret: the resources using it (its mark re-issues).
            if ctx.settings.cluster_credential_namespace.as_deref() == Some(ns) {
                for cc in ctx.cluster_credentials_reading(&secret.name_any()) {
                    for (ns, resource) in readers.cluster_credential_users(&cc) {
                        let _ = tx.unbounded_send(ObjectRef::new(&resource).within(&ns));
                    }
                }
            }
        }
    });
    ((controller, index), (trigger, cluster_trigger))
}
