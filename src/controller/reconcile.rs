//! One reconcile of a live resource: read what is, ask the lifecycle for the plan, carry it
//! out, and say in the conditions what came of it. Also the entry point that sends a resource
//! being deleted to [`super::revoke::cleanup`], and the error policy.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::secret::{self, SecretView};
use super::secret_watch::Seen;
use super::{Context, Kind, Purpose, status};
use crate::crd::{
    ANNOTATION_ISSUE_INTENT, ANNOTATION_REVOKE_NOW, ANNOTATION_ROTATE, CredentialStatus, FINALIZER,
    IssueIntent, SecretKeyRef, TokenScope,
};
use crate::error::{Error, Result};
use crate::issuer::Marker;
use crate::lifecycle::{self, Observation, Plan, Policy, SecretState, Step};
use crate::nuclia::ApiToken;

pub(crate) async fn reconcile<K: Kind>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action> {
    let started = std::time::Instant::now();
    let uid = obj.uid().unwrap_or_default();
    let result = if obj.meta().deletion_timestamp.is_some() {
        super::revoke::cleanup(obj.as_ref(), &ctx).await
    } else if let Some(wait) =
        ctx.memo
            .unchanged(&uid, obj.resource_version().as_deref(), crate::clock::now())
    {
        ctx.metrics.reconcile_skipped(K::kind(&()).as_ref());
        return Ok(Action::requeue(wait));
    } else {
        let why = ctx.memo.why_full(&uid, obj.resource_version().as_deref());
        tracing::debug!(why, "full reconcile");
        Engine::new(obj.as_ref(), &ctx).apply().await
    };
    ctx.metrics
        .observe_reconcile(K::kind(&()).as_ref(), started.elapsed());
    // A failure's backoff goes on while a reconcile only waits for it to end.
    if result.is_ok()
        && !ctx.memo.failing(&uid)
        && let Ok(mut m) = ctx.backoff.lock()
    {
        m.remove(&uid);
    }
    result
}

/// The next delay of the resource's exponential backoff (with jitter).
pub(super) fn next_backoff(ctx: &Context, uid: &str) -> Duration {
    let s = &ctx.settings;
    ctx.backoff
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

/// Exponential backoff with jitter per resource; rate limits wait at least `Retry-After`;
/// errors the user must fix retry on the slow end of the range.
/// The failed reconcile of a live resource recorded its backoff (see [`Engine::apply`]) so that
/// the echoes of its own writes wait for it too; it is taken here, not drawn again.
pub(crate) fn error_policy<K: Kind>(obj: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_error(K::kind(&()).as_ref(), err.label());
    let uid = obj.uid().unwrap_or_default();
    let delay = ctx
        .memo
        .take_retry(&uid)
        .unwrap_or_else(|| failure_delay(&ctx, &uid, err));
    tracing::warn!(kind = K::kind(&()).as_ref(), name = %obj.name_any(), namespace = ?obj.namespace(),
        reason = err.label(), error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The next delay after `err`: the resource's backoff, at least a quarter of the maximum for
/// errors the user must fix, and at least `Retry-After`.
fn failure_delay(ctx: &Context, uid: &str, err: &Error) -> Duration {
    let delay = next_backoff(ctx, uid);
    let delay = if err.is_transient() {
        delay
    } else {
        delay.max(ctx.settings.backoff_max / 4)
    };
    err.retry_after().map_or(delay, |ra| delay.max(ra))
}

pub(super) fn secret_name<K: Kind>(obj: &K) -> String {
    obj.secret_template()
        .name
        .clone()
        .unwrap_or_else(|| obj.name_any())
}

pub(super) fn owner_ref<K: Kind>(obj: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into(),
        kind: K::kind(&()).into(),
        name: obj.name_any(),
        uid: obj.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The ownership marker of what this resource mints now (its deletion policy decides which).
pub(super) fn marker<K: Kind>(ctx: &Context, obj: &K) -> Marker {
    Marker {
        cluster: ctx.settings.cluster_id.clone(),
        namespace: obj.namespace().unwrap_or_default(),
        uid: obj.uid().unwrap_or_default(),
        keep: obj.deletion_policy() == crate::crd::DeletionPolicy::Orphan,
        installation: Some(ctx.settings.installation_id.clone()),
    }
}

/// Whole seconds: what the apiserver keeps, so a status read back compares equal.
pub(super) fn now() -> DateTime<Utc> {
    let now = crate::clock::now();
    DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now)
}

pub(super) fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

pub(super) fn has_finalizer<K: Resource>(obj: &K) -> bool {
    obj.meta()
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == FINALIZER))
}

/// One reconcile of one live resource.
pub(super) struct Engine<'a, K: Kind> {
    pub(super) obj: &'a K,
    pub(super) ctx: &'a Context,
    pub(super) api: Api<K>,
    pub(super) secrets: Api<Secret>,
    pub(super) status: CredentialStatus,
    /// The issuer for the spec's scope, built on first use.
    pub(super) issuer: Option<K::Issuer>,
    pub(super) now: DateTime<Utc>,
    pub(super) uid: String,
    /// This reconcile already wrote the finalizer (with an issue intent): `obj` is now stale,
    /// and a second resourceVersion-guarded patch would only conflict.
    pub(super) finalizer_written: bool,
    /// Versions of the resource this reconcile saw or wrote, and of the Secret it leaves, for
    /// the memo.
    pub(super) resource_versions: Vec<String>,
    pub(super) secret_version: Option<String>,
    /// The newest version of the Secret the watch had delivered when this reconcile started.
    secret_seen_at_start: Option<String>,
    /// What the Secret holds now, as far as this reconcile knows (None: not read yet).
    pub(super) secret_state: Option<SecretState>,
    /// The whole view of the Secret as this reconcile leaves it (read or written), for the
    /// memo (which drops its token), with the [`secret::desired_fingerprint`] it was judged
    /// against.
    pub(super) secret_known: Option<(SecretView, u64)>,
    /// The token the Secret held when this reconcile started, read late (see
    /// [`Self::held_token`]).
    held_token: Option<ApiToken>,
    /// The credential read ahead (alongside the Secret, for a resource about to mint).
    read_ahead: Option<Result<ApiToken>>,
    /// The credential of `spec.auth.secretRef`, once read.
    auth_token: Option<ApiToken>,
    /// Verification found the current token gone upstream: the Secret holds a dead token.
    pub(super) upstream_dead: bool,
}

impl<'a, K: Kind> Engine<'a, K> {
    pub(super) fn new(obj: &'a K, ctx: &'a Context) -> Self {
        let ns = obj.namespace().unwrap_or_default();
        let uid = obj.uid().unwrap_or_default();
        Self {
            obj,
            ctx,
            api: Api::namespaced(ctx.kube.clone(), &ns),
            secrets: Api::namespaced(ctx.kube.clone(), &ns),
            status: obj.cr_status().cloned().unwrap_or_default(),
            issuer: None,
            now: now(),
            secret_seen_at_start: ctx.memo.secret_seen_now(&uid),
            uid,
            finalizer_written: false,
            resource_versions: obj.resource_version().into_iter().collect(),
            secret_version: None,
            secret_state: None,
            secret_known: None,
            held_token: None,
            read_ahead: None,
            auth_token: None,
            upstream_dead: false,
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
                self.report_failure(&e).await;
                // Until the backoff is over, the echoes of this reconcile's own writes (the
                // intent, the failure in status) wake nothing, and the failing step waits.
                let retry = failure_delay(self.ctx, &self.uid, &e);
                let credential = self.credential_key();
                self.ctx.memo.fail(
                    &self.uid,
                    std::mem::take(&mut self.resource_versions),
                    self.secret_version.take(),
                    self.secret_seen_at_start.take(),
                    (retry, now() + chrono_dur(retry)),
                    Some(credential),
                );
                Err(e)
            }
        }
    }

    /// How the memo names the credential the spec reads (a change of it ends a backoff).
    fn credential_key(&self) -> String {
        super::memo::credential_key(
            &self.obj.namespace().unwrap_or_default(),
            Some(&self.obj.auth_ref().name),
            self.obj.cluster_credential(),
        )
    }

    /// The credential of `spec.auth.secretRef`, read once per reconcile; or that of the
    /// cluster credential the spec names, resolved each time with its policy checked, whatever
    /// the purpose (a sweep asked for by a hand-written issue intent must not borrow it). Only
    /// the tokens status records as minted through it are revoked without the policy
    /// ([`Self::scope_credentials`]).
    async fn auth_credential(&mut self, _purpose: Purpose) -> Result<ApiToken> {
        if let Some(name) = self.obj.cluster_credential() {
            let name = name.to_owned();
            return self.cluster_credential(&name, true).await;
        }
        if let Some(t) = &self.auth_token {
            return Ok(t.clone());
        }
        let read = match self.read_ahead.take() {
            Some(read) => read,
            None => self.read_credential(self.obj.auth_ref()).await,
        };
        let token = read?;
        self.auth_token = Some(token.clone());
        Ok(token)
    }

    /// Reads a credential from a Secret in the resource's own namespace (through the cache).
    async fn read_credential(&self, r: &SecretKeyRef) -> Result<ApiToken> {
        let ns = self.obj.namespace().unwrap_or_default();
        self.ctx.read_credential(&self.secrets, &ns, r).await
    }

    /// The credentials to call Nuclia with for `purpose`, for a token minted with `source`
    /// (None: the spec's). A token minted with a credential the spec no longer names is
    /// revoked with that credential, and with the token in the Secret only when that is the
    /// current token minted with it too (the same user): another user's could only answer 404.
    pub(super) async fn credentials(
        &mut self,
        view: &SecretView,
        purpose: Purpose,
        source: Option<&SecretKeyRef>,
    ) -> Result<Vec<ApiToken>> {
        if let Some(r) = source
            && (r != self.obj.auth_ref() || self.obj.cluster_credential().is_some())
        {
            let current_from_r = self
                .status
                .scope
                .as_ref()
                .is_some_and(|s| s.credential.as_ref() == Some(r));
            let own = match &view.state {
                SecretState::Owned { token_hash, .. }
                    if purpose == Purpose::Revoke
                        && current_from_r
                        && self.obj.managed_token(purpose) != super::ManagedToken::Never
                        && token_hash.is_some()
                        && *token_hash == self.status.token_hash =>
                {
                    self.held_token(view).await
                }
                _ => None,
            };
            return match self.read_credential(r).await {
                Ok(t) => Ok(std::iter::once(t).chain(own).collect()),
                // That login may be long gone: the token it minted can revoke for its user.
                Err(e) => own.map(|t| vec![t]).ok_or(e),
            };
        }
        // The managed token mints its successor (selfRenew) only while it is the one status
        // vouches for; to revoke, any token of ours in the Secret may speak for its user.
        let order = self.obj.managed_token(purpose);
        let speaks = order != super::ManagedToken::Never
            && match (&view.state, purpose) {
                (SecretState::Owned { token_hash, .. }, Purpose::Mint) => {
                    token_hash.is_some() && *token_hash == self.status.token_hash
                }
                (SecretState::Owned { .. }, Purpose::Revoke) => true,
                _ => false,
            };
        let managed = if speaks {
            self.held_token(view).await
        } else {
            None
        };
        let mut out: Vec<ApiToken> = Vec::new();
        if order == super::ManagedToken::First {
            out.extend(managed.clone());
        }
        match self.auth_credential(purpose).await {
            Ok(t) => out.push(t),
            // The bootstrap credential may be long gone: the managed token is enough.
            Err(e) if managed.is_none() => return Err(e),
            Err(_) => {}
        }
        if order == super::ManagedToken::Last {
            out.extend(managed);
        }
        Ok(out)
    }

    /// A `NucliaClusterCredential`'s credential for this resource; with `check_policy` its
    /// policy must allow this namespace, kind and role.
    pub(super) async fn cluster_credential(
        &mut self,
        name: &str,
        check_policy: bool,
    ) -> Result<ApiToken> {
        let Some(namespace) = &self.ctx.settings.cluster_credential_namespace else {
            return Err(Error::CredentialNotAllowed(
                "cluster credentials are turned off in this installation (--cluster-credentials=false); use spec.auth.secretRef".into(),
            ));
        };
        let resolved = crate::cluster_credential::resolve(
            &self.ctx.kube,
            namespace,
            name,
            &self.obj.namespace().unwrap_or_default(),
            K::kind(&()).as_ref(),
            self.obj.requested_role(),
            check_policy,
        )
        .await?;
        self.ctx
            .remember_cluster_credential_type(name, resolved.credential_type);
        Ok(resolved.token)
    }

    /// The credentials to call Nuclia with for `purpose`, for a token recorded with `scope`:
    /// a token minted through a cluster credential is revoked with that cluster credential.
    pub(super) async fn scope_credentials(
        &mut self,
        view: &SecretView,
        purpose: Purpose,
        scope: &TokenScope,
    ) -> Result<Vec<ApiToken>> {
        match &scope.cluster_credential {
            Some(name) => Ok(vec![self.cluster_credential(name, false).await?]),
            None => {
                self.credentials(view, purpose, scope.credential.as_ref())
                    .await
            }
        }
    }

    /// Records in `scope` the credential source the spec names now.
    pub(super) fn record_source(&self, scope: &mut TokenScope) {
        match self.obj.cluster_credential() {
            Some(name) => {
                scope.cluster_credential = Some(name.to_owned());
                scope.credential = None;
            }
            None => scope.credential = Some(self.obj.auth_ref().clone()),
        }
    }

    /// The issuer for the spec's scope.
    pub(super) async fn issuer(&mut self, view: &SecretView) -> Result<&mut K::Issuer> {
        if self.issuer.is_none() {
            let credentials = self.credentials(view, Purpose::Mint, None).await?;
            self.issuer = Some(self.obj.issuer(self.ctx, credentials, &self.status).await?);
        }
        Ok(self.issuer.as_mut().expect("issuer was just set"))
    }

    /// Reads the resource's Secret.
    async fn read_secret(&self) -> Result<SecretView> {
        let (obj, status) = (self.obj, &self.status);
        secret::read(
            &self.secrets,
            &secret_name(obj),
            &owner_ref(obj),
            obj.token_key(),
            obj.secret_template(),
            |token| secret::desired_data(obj, status, token),
        )
        .await
    }

    /// The token `view` says the Secret holds. A view the memo kept has none: the Secret is
    /// read now, and its token taken only if it is still the one the view describes.
    pub(super) async fn held_token(&mut self, view: &SecretView) -> Option<ApiToken> {
        if !view.token_withheld {
            return view.token.clone();
        }
        if self.held_token.is_none() {
            let fresh = self.read_secret().await.ok()?;
            let same = matches!(
                (&fresh.state, &view.state),
                (SecretState::Owned { token_hash: a, .. }, SecretState::Owned { token_hash: b, .. })
                    if a.is_some() && a == b
            );
            if !same {
                // Changed behind the watch: its event brings a full reconcile.
                return None;
            }
            self.held_token = fresh.token;
        }
        self.held_token.clone()
    }

    fn observe<'o>(&'o self, policy: &'o Policy, secret: SecretState) -> Observation<'o> {
        let annotations = self.obj.annotations();
        Observation {
            now: self.now,
            uid: &self.uid,
            policy,
            status: &self.status,
            secret,
            rotate_request: annotations.get(ANNOTATION_ROTATE).map(String::as_str),
            revoke_now_request: annotations.get(ANNOTATION_REVOKE_NOW).map(String::as_str),
            last_verified: self.ctx.last_verified(&self.uid),
            verify_interval: chrono_dur(self.ctx.settings.verify_interval),
            min_issue_interval: chrono_dur(self.ctx.settings.min_issue_interval),
            last_mint_attempt: annotations
                .get(ANNOTATION_ISSUE_INTENT)
                .and_then(|a| IssueIntent::parse(a))
                .map(|i| i.at),
            upstream_dead: self.upstream_dead,
        }
    }

    async fn apply_inner(&mut self) -> Result<Action> {
        let policy = self.obj.policy()?;
        let secret_name = secret_name(self.obj);
        // No token yet and the Secret watch shows no such Secret: nothing to read. (One
        // created a moment ago by someone else makes the create fail, never taken over.)
        let first_issue = self.status.token_id.is_none() && self.pending_intent().is_none();
        let absent = first_issue
            && self
                .ctx
                .secret_seen(&self.obj.namespace().unwrap_or_default(), &secret_name)
                == Seen::Absent;
        // Something fell due and the watch shows the Secret as the last reconcile left it: its
        // view, kept by the memo, stands for a read (an interrupted issue is swept from a read).
        let kept = if first_issue || self.pending_intent().is_some() {
            None
        } else {
            self.ctx
                .memo
                .secret_view(&self.uid, self.obj.resource_version().as_deref())
        };
        let read = async {
            if absent {
                return Ok(SecretView::missing());
            }
            if let Some(view) = kept {
                return Ok(view);
            }
            self.read_secret().await
        };
        let mut view = if self.status.token_id.is_none() && self.obj.cluster_credential().is_none()
        {
            // No token yet: this reconcile will most likely mint, so read the credential while
            // the Secret is read instead of after.
            let auth = self.read_credential(self.obj.auth_ref());
            let (view, credential) = tokio::join!(read, auth);
            self.read_ahead = Some(credential);
            view?
        } else {
            read.await?
        };
        if view.terminating && matches!(view.state, SecretState::Owned { .. }) {
            if secret::namespace_terminating(&self.secrets, &secret_name).await? {
                // The whole namespace is going, this resource with it (the cache may not show
                // it yet): the Secret stays until the resources that need it have revoked.
                return Ok(Action::requeue(Duration::from_secs(2)));
            }
            // Someone deleted the Secret while the resource lives: let it go, then repair.
            secret::release(&self.secrets, &secret_name, &self.uid, false).await?;
            view = SecretView::missing();
        }
        // The Secret of an earlier name, deleted by someone while the rename waits (its new
        // name taken, or no credential to mint with): let it go, or it stays Terminating.
        let ns = self.obj.namespace().unwrap_or_default();
        if let Some(old) = self
            .status
            .secret_name
            .clone()
            .filter(|n| *n != secret_name)
            && self.ctx.secret_terminating(&ns, &old, &self.uid)
            && !secret::namespace_terminating(&self.secrets, &old).await?
        {
            secret::release(&self.secrets, &old, &self.uid, false).await?;
        }
        self.secret_version = view.resource_version.clone();
        self.secret_state = Some(view.state.clone());
        self.secret_known = Some((
            view.clone(),
            secret::desired_fingerprint(self.obj, &self.status),
        ));
        if view.restored {
            self.adopt_restored(&view, &policy, &secret_name).await?;
        }

        // Leak guard: an intent that never completed may have minted a token we do not know.
        if let Some(intent) = self.pending_intent() {
            let age = (self.now - intent.at).to_std().unwrap_or_default();
            if age < self.ctx.settings.intent_grace {
                return Ok(Action::requeue(self.ctx.settings.intent_grace - age));
            }
            self.sweep_interrupted(&view, &policy, &intent).await?;
            self.status.resolved_intent = Some(intent.nonce);
        }

        if let (Some(issued), Some(not_after)) = (self.status.issued_at, self.status.not_after) {
            // renewBefore may have changed since the token was issued
            self.status.renewal_time = Some(lifecycle::renewal_time(
                &policy, &self.uid, issued, not_after,
            ));
        }
        let plan = lifecycle::decide(&self.observe(&policy, view.state.clone()));
        // A mint that failed waits for its backoff whatever woke this reconcile (an event of
        // the Secret, say), unless the resource changed since; the failure stays reported.
        let backing_off = match plan.step {
            Step::Issue(_) | Step::Wait(_) => {
                self.ctx
                    .memo
                    .backing_off(&self.uid, self.obj.resource_version().as_deref(), now())
            }
            _ => None,
        };
        match plan.step {
            Step::Conflict => {
                return Err(Error::SecretConflict(format!(
                    "Secret {secret_name:?} exists and is not owned by this {}; delete it or set spec.secret.name to another name",
                    K::kind(&())
                )));
            }
            Step::Issue(_) if backing_off.is_some() => {}
            Step::Issue(reason) => self.issue(reason, &policy, &view, &secret_name).await?,
            Step::RefreshSecret => self.refresh_secret(&secret_name, &view).await?,
            Step::Verify => {
                if !self.verify(&view).await? {
                    // The verdict is the plan's to weigh: the minimum interval holds for it too.
                    self.upstream_dead = true;
                    let replan = lifecycle::decide(&self.observe(&policy, view.state.clone()));
                    if let Step::Issue(reason) = replan.step {
                        self.issue(reason, &policy, &view, &secret_name).await?;
                    }
                }
            }
            Step::Wait(_) | Step::Idle => {}
        }
        // Verification may have learned an earlier expiry (a lifetime Nuclia capped quietly).
        if let (Some(issued), Some(not_after)) = (self.status.issued_at, self.status.not_after) {
            self.status.renewal_time = Some(lifecycle::renewal_time(
                &policy, &self.uid, issued, not_after,
            ));
        }
        if !self.finalizer_written && !has_finalizer(self.obj) {
            self.add_finalizer(None).await?;
        }
        // The plan after the step: its revocations and wake-up are the ones that run.
        let secret_now = self.secret_state.clone().unwrap_or(SecretState::Missing);
        let after: Plan = lifecycle::decide(&self.observe(&policy, secret_now.clone()));
        self.revoke_replaced(&view, &after.revoke).await?;
        if let Some(issuer) = self.issuer.as_mut() {
            K::settle(issuer, &mut self.status).await?;
        }
        if backing_off.is_none() {
            self.set_conditions(&policy, &secret_name, &secret_now, &after);
        }
        // A name is recorded once the Secret under it holds the current token: until then the
        // one recorded holds it, and is the one a deletion must release too.
        let holds_token = matches!(&secret_now, SecretState::Owned { token_hash: Some(h), .. }
            if self.status.token_hash.as_ref() == Some(h));
        if holds_token {
            self.status.secret_name = Some(secret_name);
        }
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
        if let Some(left) = backing_off {
            // The failure's entry stays in the memo (and its backoff in the error policy's).
            return Ok(Action::requeue(left));
        }
        let wake = self.wake(&after);
        // Waiting for the minimum interval after a failed attempt is no success: the failure's
        // backoff goes on.
        let still_failing = matches!(plan.step, Step::Wait(_)) && self.ctx.memo.failing(&self.uid);
        if let Some(secret_version) = self.secret_version.take() {
            self.ctx.memo.settle(
                &self.uid,
                std::mem::take(&mut self.resource_versions),
                secret_version,
                self.secret_seen_at_start.take(),
                crate::clock::now() + chrono_dur(wake),
                self.secret_known
                    .take()
                    .filter(|(_, fp)| *fp == secret::desired_fingerprint(self.obj, &self.status))
                    .map(|(view, _)| view),
            );
        }
        if still_failing {
            let credential = self.credential_key();
            self.ctx.memo.still_failing(&self.uid, Some(credential));
        }
        Ok(Action::requeue(wake))
    }

    /// The plan's wake-up, capped so a missed event heals itself; a plan that still has a step
    /// to take looks again after the minimum issue interval (never a hot loop).
    fn wake(&self, plan: &Plan) -> Duration {
        let s = &self.ctx.settings;
        let wait = match plan.wake_at {
            Some(t) => (t - now()).to_std().unwrap_or(Duration::ZERO),
            None if matches!(plan.step, Step::Idle) => s.requeue_max,
            None => s.min_issue_interval,
        };
        wait.clamp(Duration::from_millis(200), s.requeue_max)
    }

    /// The issue intent on the resource that status has not resolved.
    pub(super) fn pending_intent(&self) -> Option<IssueIntent> {
        pending_intent(self.obj, &self.status)
    }

    /// Records the intent to mint, together with the finalizer, guarded by resourceVersion: of
    /// two replicas racing (a leader hand-over), only one gets to mint.
    pub(super) async fn add_finalizer(&mut self, intent: Option<&IssueIntent>) -> Result<()> {
        let mut finalizers = self.obj.finalizers().to_vec();
        if !finalizers.iter().any(|f| f == FINALIZER) {
            finalizers.push(FINALIZER.into());
        }
        let mut meta = serde_json::json!({
            "resourceVersion": self.obj.resource_version(),
            "finalizers": finalizers,
        });
        if let Some(intent) = intent {
            meta["annotations"] = serde_json::json!({ ANNOTATION_ISSUE_INTENT: intent.render() });
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
}

/// The issue intent on `obj` that `status` has not resolved.
pub(super) fn pending_intent<K: Kind>(obj: &K, status: &CredentialStatus) -> Option<IssueIntent> {
    let intent = IssueIntent::parse(obj.annotations().get(ANNOTATION_ISSUE_INTENT)?)?;
    (status.resolved_intent.as_deref() != Some(intent.nonce.as_str())).then_some(intent)
}

/// Whether `after` asks the same of the operator as `before`: same spec, same requests, not
/// being deleted (the issue intent is the operator's own bookkeeping).
pub(super) fn same_inputs<K: Kind>(before: &K, after: &K) -> bool {
    let requests = |o: &K| {
        let mut a = o.annotations().clone();
        a.remove(ANNOTATION_ISSUE_INTENT);
        // not in the cached object
        a.remove(super::LAST_APPLIED);
        a
    };
    before.meta().generation == after.meta().generation
        && after.meta().deletion_timestamp.is_none()
        && requests(before) == requests(after)
}
