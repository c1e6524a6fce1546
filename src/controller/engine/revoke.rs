//! The one revoker, and deletion. Every token any step revokes goes through [`revoke`]
//! (replaced tokens at the end of their grace period, deletion, a mint that never reached its
//! Secret, what an interrupted issue left, orphans), and every service account the operator
//! created is released from here, so each is logged and counted alike
//! (`nuclia_operator_revocations_total{kind,reason}`). A token is revoked in the scope it was
//! minted in, with the credentials of that scope; a 404 there means it is gone.
//!
//! Deletion carries out the plan of [`crate::lifecycle::decide_deletion`] and always finishes:
//! resources that authenticate with this resource's Secret and are being deleted too go first;
//! a token no credential can revoke is retried with backoff up to `--revoke-timeout` after the
//! deletion began, then left to expire with a Warning Event `RevokeAbandoned` (id and expiry,
//! never a value). `deletionPolicy: Orphan` revokes nothing and keeps the Secret, without its
//! owner.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;

use super::{Engine, chrono_dur, has_finalizer, marker, now};
use crate::controller::kept::{self, KeptToken};
use crate::controller::secret::{self, SecretView, owner_ref, secret_name};
use crate::controller::{Context, Kind, Purpose, StatusOf};
use crate::crd::{DeletionPolicy, FINALIZER, PreviousToken, TokenScope};
use crate::error::{Error, Result};
use crate::issuer::Issuer;
use crate::lifecycle::{self, DeletionObservation, DeletionStep, DeletionWait, Readers};
use crate::nuclia;

/// Why a token is revoked: the log line and the metric say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Why {
    /// Replaced: at the end of its grace period, or early (too many wait, or break-glass).
    Replaced,
    /// Its resource is being deleted.
    Deleted,
    /// Minted, but it never reached the Secret: taken back at once.
    NeverDelivered,
    /// Left behind by an interrupted issue (the leak guard).
    Interrupted,
    /// Marked for a resource of this installation that no longer exists.
    Orphaned,
}

impl Why {
    fn as_str(self) -> &'static str {
        match self {
            Why::Replaced => "Replaced",
            Why::Deleted => "Deleted",
            Why::NeverDelivered => "NeverDelivered",
            Why::Interrupted => "Interrupted",
            Why::Orphaned => "Orphaned",
        }
    }
}

/// Revokes token `id` in `scope` with `issuer`: the one place any token is revoked.
pub(super) async fn revoke<K: Kind>(
    ctx: &Context,
    issuer: &mut K::Issuer,
    id: &str,
    scope: &TokenScope,
    why: Why,
) -> Result<()> {
    issuer.revoke(id, scope).await?;
    let kind = K::kind(&());
    ctx.metrics.revoked(kind.as_ref(), why.as_str());
    tracing::info!(kind = kind.as_ref(), token_id = %id, reason = why.as_str(), "revoked");
    Ok(())
}

/// After a step that used `issuer`: deletes what it retired that no recorded token needs (a KB
/// key's earlier service accounts), then records where the kind's tokens live in `status`.
pub(super) async fn settle<K: Kind>(
    issuer: &mut K::Issuer,
    status: &mut StatusOf<K>,
) -> Result<()> {
    let still_needed: Vec<Option<String>> = status
        .previous_tokens
        .iter()
        .map(|p| p.service_account_id.clone())
        .collect();
    issuer.retire_unused(&still_needed).await?;
    K::record(issuer, status);
    Ok(())
}

/// A recorded token: its id, where it was minted, when it expires.
struct Recorded {
    id: String,
    scope: TokenScope,
    not_after: Option<DateTime<Utc>>,
}

/// The scope of a replaced token (tokens recorded before scopes existed name only their
/// service account; the rest is the resource's own).
fn scope_of_previous(p: &PreviousToken) -> TokenScope {
    p.scope.clone().unwrap_or_else(|| TokenScope {
        service_account_id: p.service_account_id.clone(),
        ..Default::default()
    })
}

impl<K: Kind> Engine<'_, K> {
    /// The scope of the current token (statuses older than scopes: what the kind recorded).
    fn current_scope(&self) -> TokenScope {
        match &self.status.scope {
            Some(scope) => scope.clone(),
            None => K::unscoped(&self.status),
        }
    }

    /// Revokes one recorded token in its own scope, with that scope's credentials.
    async fn revoke_in_scope(
        &mut self,
        view: &SecretView,
        id: &str,
        scope: &TokenScope,
        why: Why,
    ) -> Result<()> {
        let credentials = self.scope_credentials(view, Purpose::Revoke, scope).await?;
        let mut revoker = self.obj.revoker(self.ctx, credentials, scope);
        revoke::<K>(self.ctx, &mut revoker, id, scope, why).await
    }

    /// Deletes the service account of `scope` if the operator created it and no recorded
    /// token lives in it any more.
    async fn release_if_unused(&mut self, view: &SecretView, scope: &TokenScope) -> Result<()> {
        let Some(sa) = scope
            .service_account_id
            .as_ref()
            .filter(|_| scope.service_account_owned)
        else {
            return Ok(());
        };
        let current = self.status.token_id.as_ref().map(|_| self.current_scope());
        let in_use = current
            .iter()
            .chain(
                self.status
                    .previous_tokens
                    .iter()
                    .filter_map(|p| p.scope.as_ref()),
            )
            .any(|s| s.service_account_id.as_ref() == Some(sa) && s.kb_id == scope.kb_id)
            || self
                .status
                .previous_tokens
                .iter()
                .any(|p| p.scope.is_none() && p.service_account_id.as_ref() == Some(sa));
        if in_use {
            return Ok(());
        }
        let credentials = self.scope_credentials(view, Purpose::Revoke, scope).await?;
        let mut revoker = self.obj.revoker(self.ctx, credentials, scope);
        revoker.release(scope).await
    }

    /// Revokes the replaced tokens the plan says are due. One that cannot be revoked stays
    /// recorded (and fails the reconcile) until it has expired on its own; a kind whose tokens
    /// do not expire at Nuclia (NUA keys) keeps it recorded until it is revoked.
    pub(super) async fn revoke_replaced(
        &mut self,
        view: &SecretView,
        due: &[PreviousToken],
    ) -> Result<()> {
        for p in due {
            let scope = scope_of_previous(p);
            match self
                .revoke_in_scope(view, &p.id, &scope, Why::Replaced)
                .await
            {
                Ok(()) => {
                    self.status.previous_tokens.retain(|q| q.id != p.id);
                    if let Err(e) = self.release_if_unused(view, &scope).await {
                        // Kept recorded, so the retry releases its service account (the
                        // revocation itself will answer 404: already done).
                        self.status.previous_tokens.push(p.clone());
                        return Err(e);
                    }
                }
                Err(e) if self.expired_on_its_own(p.not_after) => {
                    self.status.previous_tokens.retain(|q| q.id != p.id);
                    tracing::warn!(token_id = %p.id, error = %e, "a replaced token could not be revoked but has expired");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Revokes every token the resource minted, previous ones first and the current one last
    /// (a personal token may be the credential that revokes the others), then releases the
    /// service accounts it created. Progress is kept in `self.status`.
    async fn revoke_everything(&mut self, view: &SecretView) -> Result<()> {
        let mut tokens: Vec<Recorded> = self
            .status
            .previous_tokens
            .iter()
            .map(|p| Recorded {
                id: p.id.clone(),
                scope: scope_of_previous(p),
                not_after: p.not_after,
            })
            .collect();
        let had_current = self.status.token_id.is_some();
        if let Some(id) = self.status.token_id.clone() {
            tokens.push(Recorded {
                id,
                scope: self.current_scope(),
                not_after: self.status.not_after,
            });
        }
        for t in tokens {
            match self
                .revoke_in_scope(view, &t.id, &t.scope, Why::Deleted)
                .await
            {
                Ok(()) => {}
                // Expired on its own: nothing is left to revoke (as for replaced tokens). A
                // NUA key never expires at Nuclia: it is revoked or abandoned, never dropped.
                Err(e) if self.expired_on_its_own(t.not_after) => {
                    tracing::warn!(token_id = %t.id, error = %e, "a token could not be revoked but has expired");
                }
                Err(e) => return Err(e),
            }
            if self.status.token_id.as_ref() == Some(&t.id) {
                self.status.token_id = None;
            } else {
                self.status.previous_tokens.retain(|p| p.id != t.id);
            }
            self.release_if_unused(view, &t.scope).await?;
        }
        // A service account created for a key whose mint was refused (with a current token,
        // the loop has released it already).
        let home = self.current_scope();
        if !had_current {
            self.release_if_unused(view, &home).await?;
        }
        // Whatever an interrupted issue may have minted: only then is a list needed. With
        // nothing recorded, `home` names no place: the kind's revoker lists where the spec
        // says the issue minted (a KB key: the spec's KB), or fails, and the intent stays
        // unresolved (retried, then reported by `RevokeAbandoned`).
        if let Some(intent) = self.pending_intent() {
            self.sweep_marked(view, &home).await?;
            self.status.resolved_intent = Some(intent.nonce);
        }
        Ok(())
    }

    /// Revokes the tokens and releases the service accounts marked for this resource (status
    /// records none of them any more).
    async fn sweep_marked(&mut self, view: &SecretView, home: &TokenScope) -> Result<()> {
        let marker = marker(self.ctx, self.obj);
        let credentials = self.credentials(view, Purpose::Revoke, None).await?;
        let mut revoker = self.obj.revoker(self.ctx, credentials, home);
        let live = match revoker.list_live().await {
            Err(Error::Nuclia(nuclia::Error::NotFound { .. })) => Vec::new(),
            other => other?,
        };
        for t in live
            .iter()
            .filter(|t| t.marker.as_ref().is_some_and(|m| m.same_resource(&marker)))
        {
            let scope = revoker.scope_of(t);
            revoke::<K>(self.ctx, &mut revoker, &t.id, &scope, Why::Interrupted).await?;
        }
        revoker.release_marked(&marker).await
    }

    /// Gives up on what is still recorded (past `--revoke-timeout`): records that in status
    /// first (nothing recorded any more, the interrupted issue resolved), then reports it once
    /// (Event `RevokeAbandoned`, metric). A second run of the clean-up (the finalizer patch
    /// failed, or the cache was stale) finds nothing recorded and reports nothing again.
    /// Returns the resourceVersion to guard the finalizer patch with.
    async fn abandon(&mut self, e: &Error) -> Result<Option<String>> {
        let obj = self.obj;
        let kind = K::kind(&());
        // The cached object may predate the record of an earlier run.
        let fresh = self
            .api
            .get_opt(&obj.name_any())
            .await
            .map_err(Error::kube("read the resource"))?;
        let Some(fresh) = fresh else {
            return Ok(obj.resource_version());
        };
        if let Some(status) = fresh.cr_status() {
            self.status = status.clone();
        }
        let remaining = self.remaining();
        if remaining.is_empty() {
            return Ok(fresh.resource_version());
        }
        let recorded = self.status.previous_tokens.len() + self.status.token_id.iter().count();
        self.status.previous_tokens.clear();
        self.status.token_id = None;
        if let Some(intent) = self.pending_intent() {
            self.status.resolved_intent = Some(intent.nonce);
        }
        let written = self.write_status(Some(&fresh)).await?;
        let note = format!(
            "gave up revoking after --revoke-timeout ({}s): {e}; not confirmed revoked, so left valid at Nuclia: {}",
            self.ctx.settings.revoke_timeout.as_secs(),
            remaining.join(", ")
        );
        self.ctx
            .metrics
            .revocations_abandoned(kind.as_ref(), recorded as u64);
        tracing::warn!(kind = kind.as_ref(), name = %obj.name_any(), namespace = ?obj.namespace(), "{note}");
        self.ctx
            .event(&obj.object_ref(&()), true, "RevokeAbandoned", note);
        Ok(written.or_else(|| fresh.resource_version()))
    }

    /// Records this resource as kept by `deletionPolicy: Orphan` (the policy at deletion
    /// time), with the tokens its status records, so that no orphan sweep revokes them
    /// ([`super::kept`]). Nothing minted, nothing recorded.
    async fn record_kept(&self) -> Result<()> {
        let s = &self.status;
        let intent = self.pending_intent();
        let mut tokens: Vec<(KeptToken, Option<DateTime<Utc>>)> = s
            .previous_tokens
            .iter()
            .map(|p| {
                let scope = scope_of_previous(p);
                (
                    KeptToken {
                        id: p.id.clone(),
                        scope,
                    },
                    p.not_after,
                )
            })
            .collect();
        if let Some(id) = &s.token_id {
            let scope = self.current_scope();
            tokens.push((
                KeptToken {
                    id: id.clone(),
                    scope,
                },
                s.not_after,
            ));
        }
        if tokens.is_empty() && intent.is_none() {
            return Ok(());
        }
        // Everything it protects is gone at Nuclia once the last expiry has passed (an
        // interrupted issue's token expires when its intent asked).
        let until = if self.obj.expires_upstream() {
            tokens
                .iter()
                .map(|(_, t)| *t)
                .chain(intent.iter().map(|i| i.expires))
                .try_fold(None, |latest: Option<DateTime<Utc>>, t| {
                    t.map(|t| Some(latest.map_or(t, |l| l.max(t))))
                })
                .flatten()
        } else {
            None
        };
        let entry = kept::Entry {
            kind: K::kind(&()).into_owned(),
            namespace: self.obj.namespace().unwrap_or_default(),
            name: self.obj.name_any(),
            kept_at: self.now,
            tokens: tokens.into_iter().map(|(t, _)| t).collect(),
            until,
        };
        kept::update(self.ctx, Some((&self.uid, &entry)), &[], self.now).await?;
        tracing::info!(kind = %entry.kind, name = %entry.name, tokens = entry.tokens.len(), "recorded the tokens kept by deletionPolicy: Orphan");
        Ok(())
    }

    /// What is still recorded, for the `RevokeAbandoned` Event: ids and expiries.
    fn remaining(&self) -> Vec<String> {
        let at = |t: Option<DateTime<Utc>>| {
            t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_else(|| "an unknown time".into())
        };
        let upstream = self.obj.expires_upstream();
        let token = |id: &str, not_after: Option<DateTime<Utc>>| {
            if upstream {
                format!("{id} (expires {})", at(not_after))
            } else {
                format!("{id} (never expires at Nuclia: delete it by hand)")
            }
        };
        let mut out: Vec<String> = self
            .status
            .previous_tokens
            .iter()
            .map(|p| token(&p.id, p.not_after))
            .collect();
        if let Some(id) = &self.status.token_id {
            out.push(token(id, self.status.not_after));
        }
        if let Some(intent) = self.pending_intent() {
            out.push(format!(
                "any token an interrupted issue at {} may have minted (expires {})",
                intent.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                at(intent.expires)
            ));
        }
        out
    }
}

/// Who else authenticates with this resource's Secret, as far as the caches show.
fn readers(ctx: &Context, ns: &str, secret: &str, uid: &str) -> (Readers, Vec<(String, bool)>) {
    let readers = ctx.readers(ns, secret, uid);
    let seen = if readers.is_empty() {
        Readers::None
    } else if readers.iter().any(|(_, deleting)| *deleting) {
        Readers::Deleting
    } else {
        Readers::Live {
            namespace_terminating: None,
        }
    };
    (seen, readers)
}

/// Deletion: carries out [`lifecycle::decide_deletion`]'s plan: revoke every token (unless
/// `Orphan`), release what the resource owns, let the Secret go, then the resource.
pub(super) async fn cleanup<K: Kind>(obj: &K, ctx: &Context) -> Result<Action> {
    if !has_finalizer(obj) {
        return Ok(Action::await_change());
    }
    let kind = K::kind(&());
    let ns = obj.namespace().unwrap_or_default();
    let uid = obj.uid().unwrap_or_default();
    let name = secret_name(obj);
    let keep = obj.deletion_policy() == DeletionPolicy::Orphan;
    let mut engine = Engine::new(obj, ctx);
    let (readers, reader_names) = readers(ctx, &ns, &name, &uid);
    let mut seen = DeletionObservation {
        now: engine.now,
        started: obj
            .meta()
            .deletion_timestamp
            .as_ref()
            .map(crate::crd::chrono_time)
            .unwrap_or(engine.now),
        revoke_timeout: chrono_dur(ctx.settings.revoke_timeout),
        policy: obj.deletion_policy(),
        caches_loaded: ctx.stores.get().is_none() || ctx.caches_ready(),
        readers,
        pending_intent: engine.pending_intent().map(|i| i.at),
        intent_grace: chrono_dur(ctx.settings.intent_grace),
        failed: false,
    };
    let mut plan = lifecycle::decide_deletion(&seen);
    if plan.step == DeletionStep::CheckNamespace {
        // The whole namespace is going, the readers with it (the cache may not show it yet).
        let terminating = secret::namespace_terminating(&engine.secrets, &name).await?;
        seen.readers = Readers::Live {
            namespace_terminating: Some(terminating),
        };
        plan = lifecycle::decide_deletion(&seen);
    }
    // The version the finalizer patch is guarded by (a status write here moves it).
    let mut resource_version = obj.resource_version();
    // Whether something was given up on (reported by `RevokeAbandoned`).
    let mut abandoned = false;
    match plan.step {
        DeletionStep::Wait { why, .. } => {
            if why == DeletionWait::Readers {
                tracing::debug!(name = %obj.name_any(), readers = ?reader_names, "waiting for the resources that authenticate with this Secret");
            }
            return Ok(Action::requeue(plan.sleep(seen.now, Duration::ZERO)));
        }
        DeletionStep::Revoke => {
            // The Secret that holds the current token (the spec may name another, a rename that
            // never got its token): it may have to revoke with it.
            let holding = obj.cr_status().and_then(|s| s.secret_name.as_deref());
            let view = secret::read(
                &engine.secrets,
                holding.unwrap_or(&name),
                &owner_ref(obj),
                obj.token_key(),
                obj.secret_template(),
                |_| Default::default(),
            )
            .await?;
            if let Err(e) = engine.revoke_everything(&view).await {
                seen.failed = true;
                let plan = lifecycle::decide_deletion(&seen);
                if let DeletionStep::Retry { .. } = plan.step {
                    let obj_ref = obj.object_ref(&());
                    ctx.metrics.reconcile_error(kind.as_ref(), e.label());
                    let note = format!(
                        "cannot revoke the tokens before deletion: {e}; retrying until {} (--revoke-timeout), then they are left to expire; fix the credentials, or set spec.deletionPolicy: Orphan",
                        plan.deadline
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    );
                    ctx.event(&obj_ref, true, "RevokeFailed", note);
                    // What was revoked stays revoked: record it, so a retry does not need the
                    // credentials of tokens already gone.
                    if let Err(w) = engine.write_status(None).await {
                        tracing::debug!(error = %w, "could not record revocation progress");
                    }
                    let delay = plan.sleep(now(), ctx.next_backoff(&uid));
                    tracing::warn!(kind = kind.as_ref(), name = %obj.name_any(), namespace = %ns, error = %e, retry_in = ?delay, "revocation before deletion failed");
                    return Ok(Action::requeue(delay));
                }
                resource_version = engine.abandon(&e).await?;
                abandoned = true;
            }
        }
        DeletionStep::Keep => {
            if let Err(e) = engine.record_kept().await {
                // Without the record, another resource's orphan sweep could revoke what the
                // user chose to keep: retried like a revocation, given up on only at
                // --revoke-timeout.
                seen.failed = true;
                let plan = lifecycle::decide_deletion(&seen);
                if let DeletionStep::Retry { .. } = plan.step {
                    let delay = plan.sleep(now(), ctx.next_backoff(&uid));
                    tracing::warn!(kind = kind.as_ref(), name = %obj.name_any(), namespace = %ns, error = %e, retry_in = ?delay, "could not record the tokens kept by deletionPolicy: Orphan");
                    return Ok(Action::requeue(delay));
                }
                let note = format!(
                    "could not record the tokens kept by deletionPolicy: Orphan before --revoke-timeout: {e}; the orphan sweep may revoke them"
                );
                tracing::warn!(kind = kind.as_ref(), name = %obj.name_any(), namespace = %ns, "{note}");
                ctx.event(&obj.object_ref(&()), true, "KeepNotRecorded", note);
            }
        }
        // Never planned here (the namespace was asked above; Retry and Abandon follow a
        // failure): look again rather than let the resource go unrevoked.
        DeletionStep::CheckNamespace | DeletionStep::Retry { .. } | DeletionStep::Abandon => {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
    }
    // Every Secret it wrote, so that none stays Terminating on the token-in-use finalizer.
    for name in secret::written_names(obj, ctx) {
        secret::release(&engine.secrets, &name, &uid, keep).await?;
    }
    let finalizers: Vec<String> = obj
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    let patch = serde_json::json!({ "metadata": { "resourceVersion": resource_version, "finalizers": finalizers } });
    match engine
        .api
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
        .forget_credential(kind.as_ref(), &ns, &obj.name_any());
    tracing::info!(kind = kind.as_ref(), name = %obj.name_any(), revoked = !keep && !abandoned, abandoned, "cleaned up");
    Ok(Action::await_change())
}
