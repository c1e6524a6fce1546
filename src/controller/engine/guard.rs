//! The leak guard and upstream drift: after an interrupted issue, adopt the token the Secret
//! holds and revoke every other token marked for the resource; on the verify interval, check
//! the current token still exists upstream (one list per credential or user, shared) and revoke the
//! tokens of resources that are gone (never those minted for `deletionPolicy: Orphan`).

use std::collections::HashSet;

use super::revoke::{Why, revoke, settle};
use super::{Engine, marker};
use crate::controller::kept;
use crate::controller::secret::SecretView;
use crate::controller::{Kind, Purpose};
use crate::crd::IssueIntent;
use crate::error::Result;
use crate::issuer::{Issuer, LiveToken};
use crate::lifecycle::{self, Grace, NewToken, Policy};

impl<K: Kind> Engine<'_, K> {
    /// After an interrupted issue: adopt the token the Secret holds if it is ours and alive,
    /// and revoke every other token the intent may have minted that status does not reference.
    /// Ours means marked for this resource: the intent annotation is the tenant's to write, so
    /// it is a claim, never a proof, and an unmarked token (a key of an adopted service account,
    /// which other resources may share) is neither adopted nor revoked here.
    pub(super) async fn sweep_interrupted(
        &mut self,
        view: &SecretView,
        policy: &Policy,
        grace: Grace,
        intent: &IssueIntent,
    ) -> Result<()> {
        let marker = marker(self.ctx, self.obj);
        // With the revoking credentials: the Secret may hold the interrupted issue's token,
        // which status does not vouch for yet, and it may be the only credential left (a
        // self-renewing token whose login has expired). Not kept for minting.
        let credentials = self.credentials(view, Purpose::Revoke, None).await?;
        let mut issuer = self.obj.issuer(self.ctx, credentials, &self.status).await?;
        let live = issuer.list_live().await?;
        // A key minted into an adopted service account carries no marker: nothing proves it
        // this resource's (the intent is the tenant's to write), so it is reported, never
        // revoked. Only one the interrupted issue could have made: that account, that expiry.
        let unproven: Vec<LiveToken> = match (self.obj.adopted_service_account(), intent.expires) {
            (Some(sa), Some(expires)) => live
                .iter()
                .filter(|t| t.marker.is_none() && t.service_account_id.as_deref() == Some(sa))
                .filter(|t| {
                    t.expires
                        .is_some_and(|e| (e - expires).num_seconds().abs() <= 1)
                })
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        let mine: Vec<LiveToken> = live
            .into_iter()
            .filter(|t| t.marker.as_ref().is_some_and(|m| m.same_resource(&marker)))
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
            issuer.adopted(found);
            let mut scope = issuer.scope_of(found);
            self.record_source(&mut scope);
            let grace_end = grace.end(self.now, self.now, &policy.windows);
            let new = NewToken {
                id,
                token_hash: lifecycle::token_hash(token.expose()),
                not_after: found.expires.unwrap_or(self.now + policy.lifetime),
                scope,
            };
            lifecycle::record_issue(
                &mut self.status,
                policy,
                &self.uid,
                self.now,
                new,
                grace_end,
                grace.in_window(),
            );
            self.status.reissue_handled = view.reissue_mark.clone();
            self.secret_state = Some(view.state.clone());
            referenced.insert(id.clone());
            tracing::info!(token_id = %id, "adopted the token an interrupted issue left in the Secret");
        }
        for t in mine.iter().filter(|t| !referenced.contains(&t.id)) {
            let scope = issuer.scope_of(t);
            revoke::<K>(self.ctx, &mut issuer, &t.id, &scope, Why::Interrupted).await?;
        }
        self.report_unproven(&unproven, &referenced);
        // Where an adopted token lives (a KB key's service account) goes to status.
        settle::<K>(&mut issuer, &mut self.status).await
    }

    /// Reports (Warning Event `RevokeAbandoned`, the abandoned-revocations metric, the log)
    /// the keys an interrupted issue may have minted where nothing marks them, by id and
    /// expiry: they are left valid.
    fn report_unproven(&self, unproven: &[LiveToken], referenced: &HashSet<String>) {
        let names: Vec<String> = unproven
            .iter()
            .filter(|t| !referenced.contains(&t.id))
            .map(|t| {
                let until = t.expires.map_or_else(
                    || "an unknown time".to_owned(),
                    |e| e.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                );
                format!("{} (expires {until})", t.id)
            })
            .collect();
        if names.is_empty() {
            return;
        }
        let kind = K::kind(&());
        let note = format!(
            "an interrupted issue may have minted {} into the adopted service account; keys there carry no ownership marker, so nothing proves them this resource's and they are not revoked: revoke them by hand unless someone else made them",
            names.join(", ")
        );
        tracing::warn!(kind = kind.as_ref(), name = %kube::ResourceExt::name_any(self.obj), "{note}");
        self.ctx
            .metrics
            .revocations_abandoned(kind.as_ref(), names.len() as u64);
        self.event(true, "RevokeAbandoned", note);
    }

    /// A Secret restored from a backup (written by the operator for an earlier resource of this
    /// kind and name, whose UID is gone) while this status records no token (status is seldom
    /// restored): its token is adopted as the current one when it is alive upstream and proven
    /// to be the one the Secret holds, so a restore keeps the consumers' credential and mints
    /// nothing; it rotates and is revoked like any other from then on. A token no longer alive,
    /// or not proven, is not adopted: the Secret is taken over by the next issue, and the
    /// token it claimed is never revoked by this resource.
    pub(super) async fn adopt_restored(
        &mut self,
        view: &SecretView,
        policy: &Policy,
        secret_name: &str,
    ) -> Result<()> {
        let (Some(id), Some(token)) = (&view.token_id, &view.token) else {
            return Ok(());
        };
        if self.status.token_id.is_some() {
            return Ok(());
        }
        let credentials = self.credentials(view, Purpose::Mint, None).await?;
        let mut issuer = self.obj.issuer(self.ctx, credentials, &self.status).await?;
        let live = issuer.list_live().await?;
        let Some(found) = live.iter().find(|t| &t.id == id) else {
            tracing::info!(token_id = %id, "the restored Secret's token is gone upstream; issuing a new one");
            return Ok(());
        };
        if !self.proven_restored(&mut issuer, token, found).await? {
            let note = format!(
                "Secret {secret_name:?} names token {id}, but it is not shown to hold it (the token must be marked for an earlier {} of this namespace that no longer exists, and the value must authenticate at Nuclia as that token); not adopted: a new token is issued and the Secret is overwritten",
                K::kind(&())
            );
            tracing::warn!(token_id = %id, "a restored Secret's token is not proven: not adopted");
            self.event(true, "AdoptionRefused", note);
            return Ok(());
        }
        // Not `issuer.adopted`: what held the token (a KB key's service account, titled for the
        // earlier resource) is only its scope, released once the token is revoked; the next
        // token is minted where this resource mints.
        let mut scope = issuer.scope_of(found);
        self.record_source(&mut scope);
        let not_after = found
            .expires
            .or(view.not_after)
            .unwrap_or(self.now + policy.lifetime);
        lifecycle::record_issue(
            &mut self.status,
            policy,
            &self.uid,
            self.now,
            NewToken {
                id,
                token_hash: lifecycle::token_hash(token.expose()),
                not_after,
                scope,
            },
            // Nothing is replaced: status records no token.
            self.now,
            false,
        );
        // The mark its owner had acted on when it wrote the token: a newer one re-issues it.
        self.status.reissue_handled = view.reissue_mark.clone();
        self.secret_state = Some(view.state.clone());
        let note = format!(
            "adopted token {id} (valid until {}) from Secret {:?}, restored for an earlier {} of this name; nothing was minted",
            not_after.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            secret_name,
            K::kind(&())
        );
        tracing::info!(token_id = %id, "adopted the token of a restored Secret");
        self.event(false, "Adopted", note);
        settle::<K>(&mut issuer, &mut self.status).await
    }

    /// Whether a restored Secret is shown to hold `found`, the live token its annotation names
    /// (ids are not secrets: the annotation is only a claim). Its marker must name this
    /// namespace and a resource that no longer exists (the earlier resource of this name; not
    /// a live one, nor a token some status records), and the value must authenticate at Nuclia
    /// as that very token ([`Issuer::proves`]).
    async fn proven_restored(
        &self,
        issuer: &mut K::Issuer,
        value: &crate::nuclia::ApiToken,
        found: &LiveToken,
    ) -> Result<bool> {
        let Some(m) = &found.marker else {
            return Ok(false);
        };
        let namespace = kube::ResourceExt::namespace(self.obj).unwrap_or_default();
        if m.namespace != namespace || (m.uid != self.uid && self.ctx.knows(&m.uid, &found.id)) {
            return Ok(false);
        }
        issuer.proves(value, found).await
    }

    /// Whether the current token still exists upstream, from the list shared by every resource
    /// that uses the same credential; also sweeps marked tokens of resources that are gone.
    pub(super) async fn verify(&mut self, view: &SecretView) -> Result<bool> {
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
            ctx.mark_verified(&self.uid, self.now);
            // Nuclia may cap a lifetime without saying so when it mints: the list's expiry,
            // when earlier, is the one renewal must beat (by more than a minute: a list that
            // rounds its times must not shorten every token once).
            if let Some(listed_expiry) = listed.live.expires(&id)
                && self
                    .status
                    .not_after
                    .is_some_and(|n| listed_expiry + chrono::Duration::minutes(1) < n)
            {
                self.status.not_after = Some(listed_expiry);
                let until = listed_expiry.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                let note = format!(
                    "Nuclia lists token {id} as valid until {until}, earlier than recorded; it is renewed before then"
                );
                self.event(true, "LifetimeShortened", note);
            }
            // Once per list, by the reconcile that fetched it.
            if let Some(list) = &listed.fetched {
                self.sweep_orphans(list).await;
            }
        } else {
            ctx.live
                .invalidate(self.issuer.as_mut().expect("issuer"))
                .await;
            let note = format!(
                "token {id} no longer exists at Nuclia (revoked or expired); issuing a new one"
            );
            self.event(true, "RevokedUpstream", note);
        }
        Ok(alive)
    }

    /// Revokes tokens this installation marked for resources that no longer exist, except those
    /// minted for `deletionPolicy: Orphan` and those of resources deleted with that policy
    /// ([`super::kept`]: the policy at deletion time counts), which are left alone.
    ///
    /// A token marked with this cluster id by another installation is never revoked: it is
    /// another cluster given the same `--cluster-id` (or this installation's identity was
    /// recreated). It is reported, loudly, once per installation and process.
    async fn sweep_orphans(&mut self, live: &[LiveToken]) {
        // Before every cache is complete an unknown UID proves nothing (and once complete,
        // kube-runtime's stores stay ready).
        if !self.ctx.caches_ready() {
            return;
        }
        let settings = &self.ctx.settings;
        let mut orphans = Vec::new();
        for t in live {
            let Some(m) = t.marker.as_ref() else { continue };
            // A token some status records is revoked by that resource, whatever its marker says
            // (one adopted from a restored Secret names the resource it was minted for).
            if m.cluster != settings.cluster_id
                || m.keep
                || !settings.sees_namespace(&m.namespace)
                || self.ctx.knows(&m.uid, &t.id)
            {
                continue;
            }
            match m.installation.as_deref() {
                Some(i) if i == settings.installation_id => orphans.push(t.clone()),
                // Marked before installations had an id: ours only if no other cluster can
                // carry this cluster id.
                None if settings.cluster_id_unique => orphans.push(t.clone()),
                None => {}
                Some(other) => self.ctx.foreign_installation(other, &t.id),
            }
        }
        if orphans.is_empty() {
            return;
        }
        // Only now, with something to revoke, is the record of kept resources read.
        let record = match kept::read(self.ctx).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the record of kept tokens; revoking no orphan this time");
                return;
            }
        };
        orphans.retain(|t| !t.marker.as_ref().is_some_and(|m| record.keeps(&m.uid)));
        self.prune_kept(&record, live).await;
        let Some(issuer) = self.issuer.as_mut() else {
            return;
        };
        for t in orphans {
            let scope = issuer.scope_of(&t);
            match revoke::<K>(self.ctx, issuer, &t.id, &scope, Why::Orphaned).await {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(token_id = %t.id, error = %e, "could not revoke an orphaned token")
                }
            }
        }
    }

    /// Drops from the record of kept resources what is gone at Nuclia: entries past their last
    /// expiry, and entries of this kind whose every token lives where `live` lists all (a NUA
    /// client's account) and is not in it, with no token marked for them left.
    async fn prune_kept(&self, record: &kept::Record, live: &[LiveToken]) {
        let Some(issuer) = self.issuer.as_ref() else {
            return;
        };
        let kind = K::kind(&());
        let listed: HashSet<&str> = live.iter().map(|t| t.id.as_str()).collect();
        let gone: Vec<String> = record
            .entries
            .iter()
            .filter_map(|(uid, e)| {
                let e = e.as_ref()?;
                let all_gone = e.kind == kind.as_ref()
                    && !e.tokens.is_empty()
                    && e.tokens
                        .iter()
                        .all(|t| issuer.lists_all_of(&t.scope) && !listed.contains(t.id.as_str()))
                    && !live
                        .iter()
                        .any(|t| t.marker.as_ref().is_some_and(|m| &m.uid == uid));
                all_gone.then(|| uid.clone())
            })
            .collect();
        if gone.is_empty() && record.expired(self.now).is_empty() {
            return;
        }
        if let Err(e) = kept::update(self.ctx, None, &gone, self.now).await {
            tracing::debug!(error = %e, "could not prune the record of kept tokens");
        }
    }
}
