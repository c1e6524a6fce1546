//! The lifecycle engine shared by every kind: one reconcile of one resource ([`Engine`], whose
//! state is private to this module and its steps) carries out what
//! [`crate::lifecycle::decide`] and [`crate::lifecycle::decide_deletion`] plan. The steps:
//! `reconcile` (entry, error policy, carrying out the plan, conditions and the one status
//! write), `issue` (intent → mint → Secret → record), `revoke` (the one revoker every
//! revocation goes through, and deletion), `guard` (the leak guard's sweeps, adoption and
//! upstream verification), `credentials` (which credentials a call uses). This file holds the
//! state and what every step needs: the issuer, the Secret's token, the issue intent and the
//! finalizer, the clock and the marker of what the resource mints.

mod credentials;
mod guard;
mod issue;
mod reconcile;
mod revoke;

pub(crate) use reconcile::{error_policy, reconcile};

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};

use super::secret::{self, SecretView, owner_ref, secret_name};
use super::{Context, Kind, Purpose, StatusOf};
use crate::crd::{ANNOTATION_ISSUE_INTENT, CredentialStatus, FINALIZER, IssueIntent};
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
struct Engine<'a, K: Kind> {
    obj: &'a K,
    ctx: &'a Context,
    api: Api<K>,
    secrets: Api<Secret>,
    status: StatusOf<K>,
    /// The issuer for the spec's scope, built on first use.
    issuer: Option<K::Issuer>,
    now: DateTime<Utc>,
    uid: String,
    /// This reconcile already wrote the finalizer (with an issue intent): `obj` is now stale,
    /// and a second resourceVersion-guarded patch would only conflict.
    finalizer_written: bool,
    /// The issue intent this reconcile wrote (`obj` still shows the one before).
    intent_written: Option<IssueIntent>,
    /// Versions of the resource this reconcile saw or wrote, and of the Secret it leaves, for
    /// the memo.
    resource_versions: Vec<String>,
    secret_version: Option<String>,
    /// The newest version of the Secret the watch had delivered when this reconcile started.
    secret_seen_at_start: Option<String>,
    /// What the Secret holds now, as far as this reconcile knows (None: not read yet).
    secret_state: Option<SecretState>,
    /// The whole view of the Secret as this reconcile leaves it (read or written), for the
    /// memo (which drops its token), with the [`secret::desired_fingerprint`] it was judged
    /// against.
    secret_known: Option<(SecretView, u64)>,
    /// The token the Secret held when this reconcile started, read late (see
    /// [`Self::held_token`]).
    held_token: Option<ApiToken>,
    /// The credential read ahead (alongside the Secret, for a resource about to mint).
    read_ahead: Option<Result<ApiToken>>,
    /// The credential of `spec.auth.secretRef`, once read.
    auth_token: Option<ApiToken>,
    /// Verification found the current token gone upstream: the Secret holds a dead token.
    upstream_dead: bool,
    /// `nuclia.dev/reissue-minted` on the Secret the current token was minted with.
    reissue_request: Option<String>,
    /// Replaced tokens minted before a `nuclia.dev/reissue-minted` value their login carries.
    leaked_previous: Vec<String>,
}

impl<'a, K: Kind> Engine<'a, K> {
    fn new(obj: &'a K, ctx: &'a Context) -> Self {
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
            reissue_request: ctx
                .reissue_request(&ns, obj.cr_status().and_then(|s| s.scope.as_ref())),
            leaked_previous: obj
                .cr_status()
                .map(|s| {
                    s.previous_tokens
                        .iter()
                        .filter(|p| {
                            crate::lifecycle::reissue_pending(
                                ctx.reissue_request(&ns, p.scope.as_ref()).as_deref(),
                                p.reissue_handled.as_deref(),
                            )
                        })
                        .map(|p| p.id.clone())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Records an Event on this resource.
    fn event(&self, warning: bool, reason: &str, note: String) {
        self.ctx
            .event(&self.obj.object_ref(&()), warning, reason, note);
    }

    /// Whether a token that expires at `not_after` is gone at Nuclia on its own by now (never
    /// for a kind whose tokens do not expire there).
    fn expired_on_its_own(&self, not_after: Option<DateTime<Utc>>) -> bool {
        crate::lifecycle::expired_on_its_own(not_after, self.obj.expires_upstream(), self.now)
    }

    /// The issuer for the spec's scope.
    async fn issuer(&mut self, view: &SecretView) -> Result<&mut K::Issuer> {
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
            &secret::template_of(obj, status),
            |token| secret::desired_data(obj, status, token),
        )
        .await
    }

    /// The token `view` says the Secret holds. A view the memo kept has none: the Secret is
    /// read now, and its token taken only if it is still the one the view describes.
    async fn held_token(&mut self, view: &SecretView) -> Option<ApiToken> {
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
    fn pending_intent(&self) -> Option<IssueIntent> {
        match &self.intent_written {
            Some(intent) => unresolved(intent.clone(), &self.status),
            None => pending_intent(self.obj, &self.status),
        }
    }

    /// Records the intent to mint, together with the finalizer, guarded by resourceVersion: of
    /// two replicas racing (a leader hand-over), only one gets to mint.
    async fn add_finalizer(&mut self, intent: Option<&IssueIntent>) -> Result<()> {
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
