//! One reconcile's view of one resource ([`Engine`]) and what every step of it needs: the
//! credentials of a scope, the issuer, the token the Secret holds, the issue intent and the
//! finalizer; the engine's clock and the marker of what the resource mints. The steps
//! themselves live beside it: `reconcile` (the plan), `issue`, `guard`, `revoke`, `conditions`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};

use super::secret::{self, SecretView, owner_ref, secret_name};
use super::{Context, Kind, Purpose};
use crate::crd::{
    ANNOTATION_ISSUE_INTENT, CredentialStatus, FINALIZER, IssueIntent, SecretKeyRef, TokenScope,
};
use crate::error::{Error, Result};
use crate::issuer::Marker;
use crate::lifecycle::SecretState;
use crate::nuclia::ApiToken;

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
    /// The issue intent this reconcile wrote (`obj` still shows the one before).
    intent_written: Option<IssueIntent>,
    /// Versions of the resource this reconcile saw or wrote, and of the Secret it leaves, for
    /// the memo.
    pub(super) resource_versions: Vec<String>,
    pub(super) secret_version: Option<String>,
    /// The newest version of the Secret the watch had delivered when this reconcile started.
    pub(super) secret_seen_at_start: Option<String>,
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
    pub(super) read_ahead: Option<Result<ApiToken>>,
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
            intent_written: None,
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
    pub(super) async fn read_credential(&self, r: &SecretKeyRef) -> Result<ApiToken> {
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
    pub(super) async fn read_secret(&self) -> Result<SecretView> {
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

    /// The issue intent on the resource that status has not resolved.
    pub(super) fn pending_intent(&self) -> Option<IssueIntent> {
        match &self.intent_written {
            Some(intent) => unresolved(intent.clone(), &self.status),
            None => pending_intent(self.obj, &self.status),
        }
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
        if let Some(intent) = intent {
            self.intent_written = Some(intent.clone());
        }
        Ok(())
    }
}

/// The issue intent on `obj` that `status` has not resolved.
pub(super) fn pending_intent<K: Kind>(obj: &K, status: &CredentialStatus) -> Option<IssueIntent> {
    unresolved(
        IssueIntent::parse(obj.annotations().get(ANNOTATION_ISSUE_INTENT)?)?,
        status,
    )
}

/// `intent`, unless `status` has resolved it.
fn unresolved(intent: IssueIntent, status: &CredentialStatus) -> Option<IssueIntent> {
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
