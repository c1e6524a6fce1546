//! Issuing a token: record the intent (with the finalizer), mint, write the Secret, record the
//! token in status. A token that never reached the Secret is taken back at once; one whose
//! issue was interrupted is found by the leak guard (`guard`).

use kube::ResourceExt;

use super::revoke::{Why, revoke, settle};
use super::{Engine, marker, now};
use crate::controller::secret::{self, SecretView, owner_ref};
use crate::controller::{Kind, StatusOf};
use crate::crd::{
    ANNOTATION_REVOKE_NOW, ANNOTATION_ROTATE, CredentialStatus, IssueIntent, RolloutRestartStatus,
};
use crate::error::{Error, Result};
use crate::issuer::Issuer;
use crate::lifecycle::{self, Grace, IssueReason, NewToken, Policy, SecretState};
use crate::nuclia::{self, ApiToken};

impl<K: Kind> Engine<'_, K> {
    /// Issues a token for `reason`; the one it replaces keeps `grace` (the plan's).
    pub(super) async fn issue(
        &mut self,
        reason: IssueReason,
        grace: Grace,
        policy: &Policy,
        view: &SecretView,
        secret_name: &str,
    ) -> Result<()> {
        let expires = self.now + policy.lifetime;
        let intent = IssueIntent {
            nonce: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
            at: self.now,
            expires: Some(expires),
        };
        // The policy first (resolving the credential checks it), then its quotas.
        self.issuer(view).await?;
        // Boxed: a rare path that would otherwise grow every reconcile's future.
        Box::pin(self.check_quota(reason)).await?;
        self.add_finalizer(Some(&intent)).await?;
        let marker = marker(self.ctx, self.obj);
        let issuer = self.issuer.as_mut().expect("issuer");
        let minted = match issuer.issue(&marker, expires).await {
            Ok(m) => m,
            Err(e) => {
                // Refused outright: nothing was minted, so there is nothing for the guard to sweep.
                if !matches!(&e, Error::Nuclia(n) if n.is_transient() || matches!(n, nuclia::Error::Malformed { .. }))
                {
                    self.status.resolved_intent = Some(intent.nonce);
                }
                // What the issuer made on the way (a KB key's service account) is recorded, so
                // that deletion releases it without a list.
                if let Some(issuer) = self.issuer.as_mut()
                    && let Err(e) = settle::<K>(issuer, &mut self.status).await
                {
                    tracing::debug!(error = %e, "could not record the issuer's state");
                }
                return Err(e);
            }
        };
        let mut scope = minted.scope.clone();
        self.record_source(&mut scope);
        // The grace period starts when consumers can see the new token, not when this
        // reconcile started: a slow mint must not eat into it.
        let grace_end = grace.end(self.now, now(), &policy.windows);
        // Recorded in a copy first: the Secret is written from it, and only a token that
        // reached the Secret becomes the status.
        let mut next = self.status.clone();
        let replaced = next.token_id.clone();
        let replaced_scope = next.scope.clone();
        let token_hash = lifecycle::token_hash(minted.token.expose());
        let evicted = lifecycle::record_issue(
            &mut next,
            policy,
            &self.uid,
            self.now,
            NewToken {
                id: &minted.id,
                token_hash: token_hash.clone(),
                not_after: minted.not_after,
                scope: scope.clone(),
            },
            grace_end,
            grace.in_window(),
        );
        // A login that may have leaked (whatever this issue is for: a repair may come first):
        // what else it minted goes at once too.
        let leaked = lifecycle::reissue_pending(
            self.reissue_request.as_deref(),
            self.status.reissue_handled.as_deref(),
        );
        let mut revoked_now = usize::from(replaced.is_some());
        if leaked && let Some(source) = &replaced_scope {
            revoked_now += lifecycle::revoke_minted_with(&mut next, source, self.now).len();
        }
        // The login's `nuclia.dev/reissue-minted` as this token is minted: a later value
        // re-issues it (and the Secret carries it on, for what is minted with this token).
        let ns = self.obj.namespace().unwrap_or_default();
        next.reissue_handled = self.ctx.reissue_request(&ns, Some(&scope));
        if let Err(e) = self
            .write_secret(secret_name, &minted.token, &next, view)
            .await
        {
            // The token never reached the Secret: take it back rather than leak it.
            let issuer = self.issuer.as_mut().expect("issuer");
            let why = Why::NeverDelivered;
            if revoke::<K>(self.ctx, issuer, &minted.id, &scope, why)
                .await
                .is_ok()
            {
                self.status.resolved_intent = Some(intent.nonce);
            }
            return Err(e);
        }
        self.restart_consumers(&mut next, &minted.id, replaced.as_deref(), grace, policy)
            .await;
        self.status = next;
        self.secret_state = Some(SecretState::Owned {
            token_hash: Some(token_hash),
            up_to_date: true,
        });
        let annotations = self.obj.annotations();
        let s = &mut self.status;
        s.resolved_intent = Some(intent.nonce);
        s.rotate_handled = annotations.get(ANNOTATION_ROTATE).cloned();
        s.revoke_now_handled = annotations.get(ANNOTATION_REVOKE_NOW).cloned();
        // The token is in the Secret of this name now: status says so even if a later step of
        // this reconcile fails (the old one is released here).
        let old = s.secret_name.replace(secret_name.to_owned());
        if let Some(old_name) = old.filter(|n| n != secret_name) {
            secret::release(&self.secrets, &old_name, &self.uid, false).await?;
        }
        self.ctx.mark_verified(&self.uid, self.now);
        self.upstream_dead = false;
        self.report_issue(reason, policy, &minted.id, minted.not_after, &evicted);
        if leaked {
            self.reissue_done(replaced_scope.as_ref(), Some(revoked_now));
        }
        // The plan after this step judges the new token, minted with the login as it is now.
        self.reissue_request = self.status.reissue_handled.clone();
        Ok(())
    }

    /// A cluster credential's quotas for this namespace (`spec.policy.maxKeysPerNamespace`,
    /// `maxIssuesPerNamespacePerHour`): nothing is minted beyond them. A re-issue after
    /// `nuclia.dev/reissue-minted` is never held (the old key is what must go).
    async fn check_quota(&self, reason: IssueReason) -> Result<()> {
        let Some(cc) = self.obj.cluster_credential() else {
            return Ok(());
        };
        if self.ctx.settings.cluster_credential_namespace.is_none() {
            return Ok(());
        }
        let Some(policy) = self.cluster_credential_policy(cc).await? else {
            return Ok(()); // resolving it says what is wrong
        };
        let ns = self.obj.namespace().unwrap_or_default();
        let holds = self.status.token_id.is_some()
            && self
                .status
                .scope
                .as_ref()
                .is_some_and(|s| s.cluster_credential.as_deref() == Some(cc));
        if !holds && policy.max_keys_per_namespace.is_some() {
            let created = self
                .obj
                .creation_timestamp()
                .map_or(i64::MAX, |t| t.0.as_second());
            let (holders, ahead) = self.ctx.key_queue(cc, &ns, &self.obj.name_any(), created);
            if let Err(message) =
                crate::cluster_credential::check_keys(cc, &policy, &ns, holders, ahead)
            {
                self.ctx
                    .metrics
                    .quota_exceeded(cc, &ns, "maxKeysPerNamespace");
                return Err(Error::QuotaExceeded {
                    message,
                    retry_after: None,
                });
            }
        }
        if reason == IssueReason::CredentialReissued {
            return Ok(());
        }
        let limit = policy.max_issues_per_namespace_per_hour;
        if let Err(free) = self.ctx.take_issue_slot(cc, &ns, limit, self.now) {
            self.ctx
                .metrics
                .quota_exceeded(cc, &ns, "maxIssuesPerNamespacePerHour");
            return Err(Error::QuotaExceeded {
                message: format!(
                    "namespace {ns:?} has minted {} key(s) through NucliaClusterCredential {cc:?} in the last hour, its limit (spec.policy.maxIssuesPerNamespacePerHour); the next one can be minted at {}",
                    limit.unwrap_or_default(),
                    free.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
                retry_after: (free - self.now).to_std().ok(),
            });
        }
        Ok(())
    }

    /// The policy of cluster credential `name`, from the watch (read once if the watch has
    /// not shown it yet); None if it does not exist.
    async fn cluster_credential_policy(
        &self,
        name: &str,
    ) -> Result<Option<crate::cluster_credential::ClusterCredentialPolicy>> {
        use crate::cluster_credential::NucliaClusterCredential;
        if let Some(cc) = self
            .ctx
            .cluster_credentials
            .get()
            .and_then(|s| s.get(&kube::runtime::reflector::ObjectRef::new(name)))
        {
            return Ok(Some(cc.spec.policy.clone()));
        }
        let api: kube::Api<NucliaClusterCredential> = kube::Api::all(self.ctx.kube.clone());
        Ok(api
            .get_opt(name)
            .await
            .map_err(Error::kube("get NucliaClusterCredential"))?
            .map(|cc| cc.spec.policy))
    }

    /// Counts this resource's re-issue after `nuclia.dev/reissue-minted` on the login `source`
    /// (the scope of the token it replaced) names: done, revoking `revoked` at once, or failed.
    pub(super) fn reissue_done(
        &self,
        source: Option<&crate::crd::TokenScope>,
        revoked: Option<usize>,
    ) {
        let (Some(source), Some(value)) = (source, self.reissue_request.as_deref()) else {
            return;
        };
        self.ctx
            .reissue_done(&self.obj.object_ref(&()), source, value, revoked);
    }

    /// Restarts `spec.rolloutRestartTargets` now that the Secret holds token `id`, and starts
    /// the replaced token's grace period when the restart was asked (the new pods need the
    /// whole grace period to come up). A failure is reported, not retried: the token lifecycle
    /// goes on, and the next token tries again.
    async fn restart_consumers(
        &self,
        next: &mut CredentialStatus,
        id: &str,
        replaced: Option<&str>,
        grace: Grace,
        policy: &Policy,
    ) {
        let targets = self.obj.restart_targets();
        if targets.is_empty() {
            next.rollout_restart = None;
            return;
        }
        let namespace = self.obj.namespace().unwrap_or_default();
        let (at, failures) = self.ctx.restarter.restart(&namespace, targets).await;
        lifecycle::restart_asked(next, replaced, grace, at, &policy.windows);
        let names = targets
            .iter()
            .map(|t| format!("{} {}", t.kind.as_str(), t.name))
            .collect::<Vec<_>>()
            .join(", ");
        if failures.is_empty() {
            let note = format!("rollout restart of {names} requested for token {id}");
            self.event(false, "RolloutRestarted", note);
        } else {
            let note = format!("rollout restart failed: {}", failures.join("; "));
            self.event(true, "RolloutRestartFailed", note);
        }
        next.rollout_restart = Some(RolloutRestartStatus {
            token_id: Some(id.to_owned()),
            requested_at: Some(at),
            failures,
        });
    }

    /// Log line and Events of an issue.
    fn report_issue(
        &self,
        reason: IssueReason,
        policy: &Policy,
        id: &str,
        not_after: chrono::DateTime<chrono::Utc>,
        evicted: &[String],
    ) {
        let until = not_after.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        tracing::info!(kind = K::kind(&()).as_ref(), name = %self.obj.name_any(), token_id = %id, reason = reason.as_str(), "issued");
        if lifecycle::lifetime_shortened(policy, self.now, not_after) {
            let note = format!(
                "Nuclia granted token {id} a lifetime until {until}, shorter than the {} day(s) asked; it is renewed at two thirds of the lifetime granted",
                policy.lifetime.num_days()
            );
            self.event(true, "LifetimeShortened", note);
        }
        for old in evicted {
            let note = format!(
                "revoking replaced token {old} before its grace period ends: at most {} replaced tokens wait",
                crate::crd::MAX_PREVIOUS_TOKENS
            );
            self.event(true, "PreviousTokenRevokedEarly", note);
        }
        // What went as planned is told by status (Ready, `issuedAt`, `rotateHandled`) and the
        // metrics: an Event for each first issue, scheduled renewal or requested rotation would
        // be one more apiserver write per resource in every burst and storm. An edit that
        // replaced the token, break-glass, repairs and failures get one.
        let (event, warning) = match reason {
            IssueReason::Initial | IssueReason::Renewal | IssueReason::RotateRequested => return,
            IssueReason::SecretRepaired => ("SecretRepaired", true),
            IssueReason::CredentialReissued => ("CredentialReissued", true),
            IssueReason::RevokedUpstream => ("RevokedUpstream", true),
            IssueReason::Expired => ("Rotated", true),
            _ => ("Rotated", false),
        };
        let note = format!(
            "issued token {id} ({}), valid until {until}",
            reason.as_str()
        );
        self.event(warning, event, note);
    }

    /// Rewrites the Secret's metadata and data around the token it already holds.
    pub(super) async fn refresh_secret(&mut self, name: &str, view: &SecretView) -> Result<()> {
        let Some(token) = self.held_token(view).await else {
            return Ok(());
        };
        let status = self.status.clone();
        self.write_secret(name, &token, &status, view).await?;
        self.secret_state = Some(SecretState::Owned {
            token_hash: status.token_hash.clone(),
            up_to_date: true,
        });
        Ok(())
    }

    /// Writes the Secret with `token` and the data `status` calls for.
    async fn write_secret(
        &mut self,
        name: &str,
        token: &ApiToken,
        status: &StatusOf<K>,
        view: &SecretView,
    ) -> Result<()> {
        let (Some(id), Some(not_after)) = (status.token_id.as_deref(), status.not_after) else {
            return Ok(());
        };
        let data = secret::desired_data(self.obj, status, token.expose());
        let template = secret::template_of(self.obj, status);
        let desired = secret::Desired {
            name,
            template: &template,
            owner: owner_ref(self.obj),
            data,
            token_id: id,
            not_after,
        };
        let written = secret::write(&self.secrets, &desired, view).await?;
        self.secret_version = written.metadata.resource_version.clone();
        // What was written is known without reading it back.
        let obj = self.obj;
        let known = secret::view_of(
            &written,
            &desired.owner,
            obj.token_key(),
            desired.template,
            |t| secret::desired_data(obj, status, t),
        );
        self.secret_known = Some((known, secret::desired_fingerprint(obj, status)));
        Ok(())
    }
}
