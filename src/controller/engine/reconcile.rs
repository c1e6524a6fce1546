//! One reconcile of a live resource: read what is, ask the lifecycle for the plan, carry it
//! out, and report what came of it: the conditions (`Ready` says whether the Secret holds the
//! current, valid token, whatever happened; `Issuing` what the engine is doing or what failed;
//! `Stalled`, kstatus, only while a terminal reason waits for a person), the per-resource
//! metrics, and the one status write every step goes through (a JSON patch, only when status
//! changed, so a resync of a healthy resource writes nothing). Also the entry point that sends
//! a resource being deleted to [`super::revoke::cleanup`], and the error policy.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;

use kube::api::{Patch, PatchParams};

use super::{Engine, chrono_dur, has_finalizer, now, same_inputs};
use crate::controller::secret::{self, SecretView, secret_name};
use crate::controller::secret_watch::Seen;
use crate::controller::{Context, Kind, status};
use crate::crd::{
    ANNOTATION_ISSUE_INTENT, ANNOTATION_REVOKE_NOW, ANNOTATION_ROTATE, FIELD_MANAGER, IssueIntent,
};
use crate::error::{Error, Result};
use crate::lifecycle::{self, Observation, Plan, Policy, SecretState, Step};
use crate::nuclia;
use crate::runtime::metrics::CredentialState;

pub(crate) async fn reconcile<K: Kind>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action> {
    // Its Nuclia calls take their turn at a shared credential as its namespace's.
    let tenant = obj.namespace().unwrap_or_default();
    crate::nuclia::fair::for_tenant(tenant, reconcile_one(obj, ctx)).await
}

async fn reconcile_one<K: Kind>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action> {
    let started = std::time::Instant::now();
    let uid = obj.uid().unwrap_or_default();
    let result = if obj.meta().deletion_timestamp.is_some() {
        super::revoke::cleanup(obj.as_ref(), &ctx).await
    } else if !reissue_asked(obj.as_ref(), &ctx)
        && let Some(wait) =
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

/// A login the current token was minted with carries a `nuclia.dev/reissue-minted` value this
/// resource has not acted on: news the memo cannot see (it follows the resource and its own
/// Secret), brought by the watch of that login Secret.
fn reissue_asked<K: Kind>(obj: &K, ctx: &Context) -> bool {
    let Some(status) = obj.cr_status() else {
        return false;
    };
    let ns = obj.namespace().unwrap_or_default();
    let pending = |scope: Option<&crate::crd::TokenScope>, handled: Option<&String>| {
        lifecycle::reissue_pending(
            ctx.reissue_request(&ns, scope).as_deref(),
            handled.map(String::as_str),
        )
    };
    pending(status.scope.as_ref(), status.reissue_handled.as_ref())
        || status
            .previous_tokens
            .iter()
            .any(|p| pending(p.scope.as_ref(), p.reissue_handled.as_ref()))
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
    let delay = ctx.next_backoff(uid);
    let delay = if err.is_transient() {
        delay
    } else {
        delay.max(ctx.settings.backoff_max / 4)
    };
    err.retry_after().map_or(delay, |ra| delay.max(ra))
}

impl<K: Kind> Engine<'_, K> {
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
                    // Precise time, as `backing_off` reads it: against whole seconds, a hold
                    // ending within the second would wake it again and again for nothing.
                    (retry, crate::clock::now() + chrono_dur(retry)),
                    Some(credential),
                );
                Err(e)
            }
        }
    }

    /// How the memo names the credential the spec reads (a change of it ends a backoff).
    fn credential_key(&self) -> String {
        crate::controller::memo::credential_key(
            &self.obj.namespace().unwrap_or_default(),
            Some(&self.obj.auth_ref().name),
            self.obj.cluster_credential(),
        )
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
            reissue_request: self.reissue_request.as_deref(),
            leaked_previous: &self.leaked_previous,
            last_verified: self.ctx.last_verified(&self.uid),
            verify_interval: chrono_dur(self.ctx.settings.verify_interval),
            min_issue_interval: chrono_dur(self.ctx.settings.min_issue_interval),
            last_mint_attempt: annotations
                .get(ANNOTATION_ISSUE_INTENT)
                .and_then(|a| IssueIntent::parse(a))
                .map(|i| i.at),
            upstream_dead: self.upstream_dead,
            pending_intent: self.pending_intent().map(|i| i.at),
            intent_grace: chrono_dur(self.ctx.settings.intent_grace),
            requeue_max: chrono_dur(self.ctx.settings.requeue_max),
        }
    }

    /// Asks the lifecycle for the plan, and records the renewal times it computed.
    fn plan(&mut self, policy: &Policy, secret: SecretState) -> Plan {
        let plan = lifecycle::decide(&self.observe(policy, secret));
        self.status.renewal_time = plan.renewal_time;
        self.status.next_renewal = plan.next_renewal;
        plan
    }

    async fn apply_inner(&mut self) -> Result<Action> {
        let policy = match self.obj.policy().and_then(|p| {
            p.or_default_windows(&self.ctx.settings.default_rotation_windows)
                .map_err(Error::InvalidSpec)
        }) {
            Ok(policy) => policy,
            Err(e) => {
                // While the spec cannot be served, a Secret someone deletes still goes, and
                // Ready stays truthful: the failure is judged against the Secret as it is.
                let name = secret_name(self.obj);
                if let Ok(view) = self.read_secret().await
                    && let Ok(view) = self.let_deleted_secrets_go(view, &name).await
                {
                    self.secret_state = view.map(|v| v.state);
                }
                return Err(e);
            }
        };
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
        let view = if self.status.token_id.is_none() && self.obj.cluster_credential().is_none() {
            // No token yet: this reconcile will most likely mint, so read the credential while
            // the Secret is read instead of after.
            let auth = self.read_credential(self.obj.auth_ref());
            let (view, credential) = tokio::join!(read, auth);
            self.read_ahead = Some(credential);
            view?
        } else {
            read.await?
        };
        let Some(view) = self.let_deleted_secrets_go(view, &secret_name).await? else {
            // The whole namespace is going, this resource with it (the cache may not show it
            // yet): the Secret stays until the resources that need it have revoked.
            return Ok(Action::requeue(Duration::from_secs(2)));
        };
        self.secret_version = view.resource_version.clone();
        self.secret_state = Some(view.state.clone());
        self.secret_known = Some((
            view.clone(),
            secret::desired_fingerprint(self.obj, &self.status),
        ));
        // Adoption asks Nuclia: not while suspended.
        if view.restored && !policy.suspended {
            self.adopt_restored(&view, &policy, &secret_name).await?;
        }

        let mut plan = self.plan(&policy, view.state.clone());
        match plan.step {
            // A mint may still be in flight (another replica, during a hand-over).
            Step::AwaitIntent => return Ok(Action::requeue(plan.sleep(self.now))),
            // Leak guard: an intent that never completed may have minted a token we do not know.
            Step::ResolveIntent => {
                if let Some(intent) = self.pending_intent() {
                    self.sweep_interrupted(&view, &policy, plan.grace, &intent)
                        .await?;
                    self.status.resolved_intent = Some(intent.nonce);
                }
                plan = self.plan(&policy, view.state.clone());
            }
            _ => {}
        }
        // A mint that failed waits for its backoff whatever woke this reconcile (an event of
        // the Secret, say), unless the resource changed since; the failure stays reported.
        let backing_off = match plan.step {
            Step::Issue(_) | Step::Wait(_) => self.ctx.memo.backing_off(
                &self.uid,
                self.obj.resource_version().as_deref(),
                crate::clock::now(),
            ),
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
            Step::Issue(reason) => {
                if plan.renewal_forced && reason == lifecycle::IssueReason::Renewal {
                    self.renewing_outside_window(&plan);
                }
                let issued = self
                    .issue(reason, plan.grace, &policy, &view, &secret_name)
                    .await;
                if issued.is_err() && reason == lifecycle::IssueReason::CredentialReissued {
                    let source = self.status.scope.clone();
                    self.reissue_done(source.as_ref(), None);
                }
                issued?
            }
            Step::RefreshSecret => self.refresh_secret(&secret_name, &view).await?,
            Step::Verify => {
                if !self.verify(&view).await? {
                    // The verdict is the plan's to weigh: the minimum interval holds for it too.
                    self.upstream_dead = true;
                    let replan = self.plan(&policy, view.state.clone());
                    if let Step::Issue(reason) = replan.step {
                        self.issue(reason, replan.grace, &policy, &view, &secret_name)
                            .await?;
                    }
                }
            }
            Step::Wait(_)
            | Step::Idle
            | Step::AwaitIntent
            | Step::ResolveIntent
            | Step::Suspended => {}
        }
        // A suspended resource writes nothing but status (it has its finalizer if it ever
        // minted).
        if !self.finalizer_written && !has_finalizer(self.obj) && !policy.suspended {
            self.add_finalizer(None).await?;
        }
        // The plan after the step: its revocations, renewal time (verification may have learned
        // an earlier expiry) and wake-up are the ones that run.
        let secret_now = self.secret_state.clone().unwrap_or(SecretState::Missing);
        let after: Plan = self.plan(&policy, secret_now.clone());
        self.revoke_replaced(&view, &after.revoke).await?;
        if let Some(issuer) = self.issuer.as_mut() {
            super::revoke::settle::<K>(issuer, &mut self.status).await?;
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
        self.write_status(None).await?;
        self.publish_metrics();
        if let Some(left) = backing_off {
            // The failure's entry stays in the memo (and its backoff in the error policy's).
            return Ok(Action::requeue(left));
        }
        let wake = after.sleep(now());
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
}

impl<K: Kind> Engine<'_, K> {
    /// Lets go of this resource's Secrets that someone deleted (its finalizer would hold them
    /// Terminating): the one the spec names, which is then repaired, and one of an earlier name
    /// while a rename waits (its new name taken, or no credential to mint with). Returns the
    /// view, missing if its Secret went; None while the whole namespace is being deleted.
    async fn let_deleted_secrets_go(
        &self,
        view: SecretView,
        secret_name: &str,
    ) -> Result<Option<SecretView>> {
        let mut view = view;
        if view.terminating && matches!(view.state, SecretState::Owned { .. }) {
            if secret::namespace_terminating(&self.secrets, secret_name).await? {
                return Ok(None);
            }
            secret::release(&self.secrets, secret_name, &self.uid, false).await?;
            view = SecretView::missing();
        }
        let ns = self.obj.namespace().unwrap_or_default();
        if let Some(old) = self.status.secret_name.clone().filter(|n| n != secret_name)
            && self.ctx.secret_terminating(&ns, &old, &self.uid)
            && !secret::namespace_terminating(&self.secrets, &old).await?
        {
            secret::release(&self.secrets, &old, &self.uid, false).await?;
        }
        Ok(Some(view))
    }
}

/// Reasons that wait for a person to change the spec or a Secret: `Stalled` (kstatus).
fn is_terminal(label: &str) -> bool {
    matches!(
        label,
        "InvalidSpec" | "SecretConflict" | "UntrustedEndpoint" | "CredentialNotAllowed"
    )
}

impl<K: Kind> Engine<'_, K> {
    /// The one status writer: writes `self.status` if it differs from the status of `read`
    /// (the resource as last read; None: as this reconcile found it), replacing it whole (the
    /// operator is its only writer, and a JSON patch costs the apiserver far less than a
    /// server-side apply of the same content). Returns the resourceVersion written. The write
    /// is not resourceVersion-guarded: the version stands for this reconcile's own echo (for
    /// the memo) only if nobody changed what it acted on meanwhile.
    pub(super) async fn write_status(&mut self, read: Option<&K>) -> Result<Option<String>> {
        let read = read.unwrap_or(self.obj);
        if read.cr_status() == Some(&self.status) {
            return Ok(None);
        }
        let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
            { "op": "add", "path": "/status", "value": &self.status }
        ]))
        .map_err(|e| Error::InvalidSpec(e.to_string()))?;
        let written = self
            .api
            .patch_status(
                &read.name_any(),
                &PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                },
                &Patch::Json::<()>(patch),
            )
            .await
            .map_err(Error::kube("patch status"))?;
        let rv = written.resource_version();
        if same_inputs(self.obj, &written) {
            self.resource_versions.extend(rv.clone());
        }
        Ok(rv)
    }
    /// Ready, Issuing and Stalled after a successful reconcile: Ready says whether the Secret
    /// holds the current token, whatever step this was.
    pub(super) fn set_conditions(
        &mut self,
        policy: &Policy,
        secret_name: &str,
        secret: &SecretState,
        plan: &Plan,
    ) {
        let generation = self.obj.meta().generation;
        let now = self.now;
        let ready = match lifecycle::secret_holds_current(&self.status, secret, now) {
            Ok(()) => {
                let s = &self.status;
                let expires = s
                    .not_after
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default();
                let mut message =
                    format!("Secret {secret_name} holds a valid token until {expires}");
                // Judged against the spec the token was minted for: a spec change waiting for
                // its new token is not a shortened lifetime.
                if let (Some(issued), Some(not_after)) = (s.issued_at, s.not_after)
                    && s.spec_hash.as_deref() == Some(policy.spec_hash.as_str())
                    && lifecycle::lifetime_shortened(policy, issued, not_after)
                {
                    message.push_str(&format!(
                        " (lifetime shortened by Nuclia to {}s of the {} day(s) asked; renewed at two thirds of it)",
                        (not_after - issued).num_seconds(),
                        policy.lifetime.num_days()
                    ));
                }
                let at = |t: chrono::DateTime<chrono::Utc>| {
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                };
                match (plan.next_renewal, plan.renewal_time) {
                    (Some(next), _) if plan.renewal_forced => message.push_str(&format!(
                        "; no rotation window has room for its renewal before {}: it renews then, outside the windows",
                        at(next)
                    )),
                    (Some(next), Some(due)) if next > due && due <= now => message.push_str(
                        &format!("; its renewal waits for the rotation window at {}", at(next)),
                    ),
                    _ => {}
                }
                if let Some(r) = &s.rollout_restart
                    && r.token_id == s.token_id
                    && !r.failures.is_empty()
                {
                    message.push_str(&format!(
                        "; rollout restart failed: {}",
                        r.failures.join("; ")
                    ));
                }
                (true, "TokenValid", message)
            }
            Err(u) => (
                false,
                u.reason,
                format!("Secret {secret_name}: {}", u.message),
            ),
        };
        let issuing = match &plan.step {
            Step::Suspended => (
                false,
                "Suspended",
                "spec.suspend is true: nothing is minted, renewed, verified or revoked".to_owned(),
            ),
            Step::Wait(reason) => {
                let at = plan
                    .wake_at
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default();
                let message = format!(
                    "a new token is due ({}); waiting for the minimum interval between issues, until {at}",
                    reason.as_str()
                );
                (true, "Waiting", message)
            }
            _ => (false, "Idle", "no issue in progress".to_owned()),
        };
        let c = &mut self.status.conditions;
        status::set(c, status::READY, ready.0, ready.1, ready.2, generation, now);
        status::set(
            c,
            status::ISSUING,
            issuing.0,
            issuing.1,
            issuing.2,
            generation,
            now,
        );
        status::remove(c, status::STALLED);
        if policy.suspended {
            let message = "spec.suspend is true: no call to Nuclia and no write but this status until it is false; deleting the resource still revokes its credentials";
            status::set(
                c,
                status::SUSPENDED,
                true,
                "Suspended",
                message,
                generation,
                now,
            );
        } else {
            status::remove(c, status::SUSPENDED);
        }
        self.status.observed_generation = generation;
    }

    /// A scheduled renewal that no rotation window had room for before its safety deadline:
    /// it runs now, and says so.
    fn renewing_outside_window(&self, plan: &Plan) {
        let when = |t: Option<chrono::DateTime<chrono::Utc>>| {
            t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default()
        };
        let note = format!(
            "renewing outside the rotation windows: none has room for the renewal between its renewal time {} and the safety deadline {} (halfway to expiry at {}); widen or add windows",
            when(plan.renewal_time),
            when(plan.next_renewal),
            when(self.status.not_after),
        );
        tracing::warn!(kind = K::kind(&()).as_ref(), name = %self.obj.name_any(), "renewing outside the rotation windows");
        self.event(true, "RenewalOutsideWindow", note);
        self.ctx
            .metrics
            .renewal_outside_window(K::kind(&()).as_ref());
    }

    /// Records a failure in the conditions and as a Warning Event when the reason is new.
    /// Ready turns False unless the Secret holds the current, valid token.
    pub(super) async fn report_failure(&mut self, e: &Error) {
        let generation = self.obj.meta().generation;
        let mut message = e.to_string();
        if matches!(
            e,
            Error::Nuclia(nuclia::Error::Unauthorized { .. } | nuclia::Error::Forbidden { .. })
        ) {
            // Nuclia's answer cannot say which credential; the user needs to know where it is.
            match self.obj.cluster_credential() {
                Some(name) => message.push_str(&format!(
                    "; check NucliaClusterCredential {name:?} (spec.auth.clusterCredentialRef): a cluster admin must fix its Secret"
                )),
                None => {
                    let r = self.obj.auth_ref();
                    message.push_str(&format!(
                        "; check the credential in Secret {:?} key {:?} (spec.auth.secretRef)",
                        r.name, r.key
                    ));
                }
            }
        }
        let holds = match &self.secret_state {
            Some(state) => lifecycle::secret_holds_current(&self.status, state, self.now)
                .map_err(|u| u.message),
            // Failed before the Secret was read: judge by status alone.
            None if self.status.token_id.is_some()
                && self.status.not_after.is_some_and(|t| t > self.now) =>
            {
                Ok(())
            }
            None => Err("no valid token recorded".to_owned()),
        };
        let holds = match holds {
            Ok(()) if self.upstream_dead => {
                Err("its token was revoked at Nuclia and not yet replaced".to_owned())
            }
            other => other,
        };
        let was = self
            .status
            .condition(status::ISSUING)
            .map(|c| c.reason.clone());
        let c = &mut self.status.conditions;
        if let Err(why) = &holds {
            let name = secret_name(self.obj);
            let ready_message = format!("Secret {name}: {why}; {message}");
            status::set(
                c,
                status::READY,
                false,
                e.label(),
                ready_message,
                generation,
                self.now,
            );
        }
        status::set(
            c,
            status::ISSUING,
            false,
            e.label(),
            &message,
            generation,
            self.now,
        );
        if is_terminal(e.label()) {
            status::set(
                c,
                status::STALLED,
                true,
                e.label(),
                &message,
                generation,
                self.now,
            );
        } else {
            status::remove(c, status::STALLED);
        }
        self.status.observed_generation = generation;
        if was.as_deref() != Some(e.label()) {
            self.event(true, e.label(), message);
        }
        if let Err(write_err) = self.write_status(None).await {
            tracing::debug!(error = %write_err, "could not record failure in status");
        }
        self.publish_metrics();
    }

    pub(super) fn publish_metrics(&self) {
        let ready = self
            .status
            .condition(status::READY)
            .is_some_and(|c| c.status == "True");
        let previous = &self.status.previous_tokens;
        self.ctx.metrics.set_credential(
            K::kind(&()).as_ref(),
            &self.obj.namespace().unwrap_or_default(),
            &self.obj.name_any(),
            CredentialState {
                ready,
                expiry: self.status.not_after.map(|t| t.timestamp()),
                renewal: self.status.next_renewal.map(|t| t.timestamp()),
                suspended: self
                    .status
                    .condition(status::SUSPENDED)
                    .is_some_and(|c| c.status == "True"),
                previous_tokens: previous.len(),
                revocation_due: previous.iter().map(|p| p.revoke_at.timestamp()).min(),
            },
        );
    }
}
