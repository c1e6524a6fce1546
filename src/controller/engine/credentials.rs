//! Credential selection: which credentials one reconcile calls Nuclia with, for minting or for
//! revoking, for the spec's scope or the recorded scope of an older token: `spec.auth.secretRef`
//! (read once per reconcile, or ahead while the Secret is read), a `NucliaClusterCredential`
//! (its policy checked), and the managed token itself where the kind lets it speak.

use kube::ResourceExt;

use super::Engine;
use crate::controller::secret::SecretView;
use crate::controller::{Kind, ManagedToken, Purpose};
use crate::crd::{SecretKeyRef, TokenScope};
use crate::error::{Error, Result};
use crate::lifecycle::SecretState;
use crate::nuclia::ApiToken;

impl<K: Kind> Engine<'_, K> {
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
                        && self.obj.managed_token(purpose) != ManagedToken::Never
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
        let speaks = order != ManagedToken::Never
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
        if order == ManagedToken::First {
            out.extend(managed.clone());
        }
        match self.auth_credential(purpose).await {
            Ok(t) => out.push(t),
            // The bootstrap credential may be long gone: the managed token is enough.
            Err(e) if managed.is_none() => return Err(e),
            Err(_) => {}
        }
        if order == ManagedToken::Last {
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
            .remember_cluster_credential(name, resolved.credential_type, resolved.mark);
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
}
