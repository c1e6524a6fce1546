//! Personal access tokens (global API), everything about them: the issuer (minted with the
//! account credential from `spec.auth`, or, with `selfRenew`, with the managed token itself),
//! and the `NucliaPersonalToken` spec as the controller sees it.

use chrono::{DateTime, Utc};

use super::formats::{self, Consumer, Shape};
use super::{Issuer, LiveToken, Marker, Minted, UserCache, gone_is_ok};
use crate::controller::{Context, Kind, ManagedToken, Purpose, StatusOf};
use crate::crd::{LifecycleSpec, ManagedSecret, NucliaPersonalToken, SecretKeyRef, TokenScope};
use crate::error::{Error, Result};
use crate::nuclia::{self, ApiToken, Client, Credential};

pub struct PersonalIssuer {
    client: Client,
    description: String,
    /// Credentials in the order they are tried; the next one is used on Unauthorized.
    credentials: Vec<Credential>,
    /// The user behind each list of credentials (see [`Issuer::scope_key`]).
    users: UserCache,
}

impl PersonalIssuer {
    pub fn new(
        client: Client,
        description: String,
        credentials: Vec<ApiToken>,
        users: UserCache,
    ) -> Self {
        Self {
            client,
            description,
            credentials: credentials.into_iter().map(Credential::Bearer).collect(),
            users,
        }
    }

    /// Runs `op` with each credential in turn until one is not refused.
    async fn with_credentials<T, F, Fut>(&self, op: F) -> std::result::Result<T, nuclia::Error>
    where
        F: FnMut(Credential) -> Fut,
        Fut: Future<Output = std::result::Result<T, nuclia::Error>>,
    {
        super::with_credentials(&self.credentials, op).await
    }
}

impl Issuer for PersonalIssuer {
    async fn issue(&mut self, marker: &Marker, expires: DateTime<Utc>) -> Result<Minted> {
        let description = marker.label(&self.description);
        let client = self.client.clone();
        let created = self
            .with_credentials(|c| {
                let (client, description) = (client.clone(), description.clone());
                async move {
                    client
                        .create_personal_token(&c, &description, expires)
                        .await
                }
            })
            .await?;
        Ok(Minted {
            id: created.id,
            token: created.token,
            not_after: created.expires.unwrap_or(expires),
            scope: TokenScope::default(),
        })
    }

    /// The scope of a personal token is the user behind its credential: the controller hands
    /// this issuer the credentials of the token's own scope.
    async fn revoke(&mut self, id: &str, _scope: &TokenScope) -> Result<()> {
        let client = self.client.clone();
        gone_is_ok(
            self.with_credentials(|c| {
                let client = client.clone();
                async move { client.delete_personal_token(&c, id).await }
            })
            .await,
        )
    }

    async fn release(&mut self, _scope: &TokenScope) -> Result<()> {
        Ok(())
    }

    async fn release_marked(&mut self, _marker: &Marker) -> Result<()> {
        Ok(())
    }

    async fn list_live(&mut self) -> Result<Vec<LiveToken>> {
        let client = self.client.clone();
        let items = self
            .with_credentials(|c| {
                let client = client.clone();
                async move { client.list_personal_tokens(&c).await }
            })
            .await?;
        Ok(items
            .into_iter()
            .map(|t| LiveToken {
                marker: Marker::find(&t.description),
                id: t.id,
                expires: t.expires,
                service_account_id: None,
            })
            .collect())
    }

    /// Every credential of one user lists the same tokens (all of that user's): one list per
    /// user, whichever of the user's logins asks (see [`UserCache::lister`]).
    async fn scope_key(&mut self) -> String {
        let lister = self.users.lister(&self.client, &self.credentials).await;
        format!("pat:{lister}")
    }

    /// A personal token names no token id when it authenticates: the proof is that it
    /// authenticates and lists `token` among its own user's tokens. That is the user's word, and
    /// the user is the boundary for personal tokens anyway: any token of a user may list and
    /// delete every token of that user.
    async fn proves(&mut self, value: &ApiToken, token: &LiveToken) -> Result<bool> {
        let asked = self
            .client
            .list_personal_tokens(&Credential::Bearer(value.clone()))
            .await;
        match asked {
            Ok(items) => Ok(items.iter().any(|t| t.id == token.id)),
            Err(nuclia::Error::Unauthorized { .. } | nuclia::Error::Forbidden { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn scope_of(&self, _token: &LiveToken) -> TokenScope {
        TokenScope::default()
    }
}

impl Kind for NucliaPersonalToken {
    type Issuer = PersonalIssuer;

    fn lifecycle(&self) -> &LifecycleSpec {
        &self.spec.lifecycle
    }

    fn shaping(&self) -> Result<serde_json::Value> {
        let s = &self.spec;
        s.secret.validate().map_err(Error::InvalidSpec)?;
        formats::validate(&s.secret, Shape::PersonalToken, &[self.token_key()])
            .map_err(Error::InvalidSpec)?;
        Ok(serde_json::json!([
            s.description,
            s.lifecycle.days,
            s.auth,
            s.secret.name
        ]))
    }

    fn secret(&self) -> &dyn ManagedSecret {
        &self.spec.secret
    }

    fn auth_ref(&self) -> &SecretKeyRef {
        &self.spec.auth.secret_ref
    }

    /// A personal token may delete personal tokens of its user, itself included: the best
    /// credential at hand when the bootstrap login has expired. With `selfRenew` it also mints.
    fn managed_token(&self, purpose: Purpose) -> ManagedToken {
        ManagedToken::of_personal_token(self.spec.auth.self_renew, purpose)
    }

    fn revoker(
        &self,
        ctx: &Context,
        credentials: Vec<ApiToken>,
        _home: &TokenScope,
    ) -> PersonalIssuer {
        PersonalIssuer::new(
            ctx.nuclia.clone(),
            self.spec.description.clone(),
            credentials,
            ctx.users.clone(),
        )
    }

    fn secret_data(&self, _status: &StatusOf<Self>) -> Vec<(String, String)> {
        Vec::new()
    }

    fn consumer(&self, _status: &StatusOf<Self>) -> Option<Consumer> {
        Some(Consumer::PersonalToken)
    }
}
