//! NUA keys (regional zone API, nuclia-api.md §4), everything about them: the issuer that
//! creates and deletes NUA clients, and the `NucliaNuaKey` spec as the controller sees it.
//!
//! A NUA key carries no expiry at Nuclia, and renewing a client's key may invalidate the old
//! one at once, so every token of a `NucliaNuaKey` is its own NUA client: a rotation creates
//! a new client (with the ownership marker in its description), and the old client is deleted
//! after `rotation.revokePreviousAfter`. The token id is the client id; the scope records the
//! zone and account, where the client is deleted whatever the spec says later.

use chrono::{DateTime, Utc};

use super::formats::{self, Consumer, Shape};
use super::kb::AccountCache;
use super::{Issuer, LiveToken, Marker, Minted, UserCache, gone_is_ok};
use crate::controller::{Context, Kind, ManagedToken, Purpose, StatusOf};
use crate::crd::{
    LifecycleSpec, ManagedSecret, NucliaNuaKey, NucliaNuaKeySpec, SecretKeyRef, TokenScope,
};
use crate::error::{Error, Result};
use crate::nuclia::{self, ApiToken, Client, Credential, NuaClientCreation};

pub struct NuaIssuer {
    client: Client,
    credential: Credential,
    /// Who lists (see [`Issuer::scope_key`]).
    users: UserCache,
    zone: String,
    /// The account the clients live in; `None` for a revoker that knows none yet.
    account_id: Option<String>,
    /// For a revoker with no recorded account (an interrupted first issue): `spec.account`, to
    /// resolve the account when a list is needed.
    resolve: Option<(Option<String>, AccountCache)>,
    /// `None` for an issuer built only to revoke.
    mint: Option<NuaClientCreation>,
}

/// Refuses a zone the operator cannot address through its configured endpoints, before any
/// credential is used.
fn check_zone(client: &Client, zone: &str) -> Result<()> {
    client.endpoints().regional(zone).map(drop).map_err(|e| {
        nuclia::Error::UntrustedEndpoint {
            url: format!("zone {zone:?}"),
            reason: e.to_string(),
        }
        .into()
    })
}

impl NuaIssuer {
    /// Resolves the account (cached per credential, zone and `spec.account`) and prepares a
    /// mint in the spec's zone.
    pub async fn prepare(
        client: Client,
        credential: Credential,
        spec: &NucliaNuaKeySpec,
        accounts: &AccountCache,
        users: &UserCache,
    ) -> Result<Self> {
        check_zone(&client, &spec.zone)?;
        let lister = users.lister_of(&client, &credential).await;
        let key = (lister, format!("nua:{}", spec.zone), spec.account.clone());
        let account_id = match accounts.get(&key) {
            Some(id) => id,
            None => {
                let id = resolve_account(&client, &credential, spec.account.as_deref()).await?;
                accounts.put(key, id.clone());
                id
            }
        };
        Ok(Self {
            client,
            credential,
            users: users.clone(),
            zone: spec.zone.clone(),
            account_id: Some(account_id),
            resolve: None,
            mint: Some(NuaClientCreation {
                title: spec.title.clone(),
                contact: spec.contact.clone(),
                description: spec.description.clone().unwrap_or_default(),
                allow_kb_management: spec.allow_kb_management,
                tokens_limit: spec.tokens_limit,
            }),
        })
    }

    /// The home account, resolved now when a revoker knows none (nothing recorded: an
    /// interrupted first issue may still have left a marked client behind).
    async fn home_account(&mut self) -> Result<Option<String>> {
        if self.account_id.is_none()
            && let Some((wanted, accounts)) = self.resolve.take()
        {
            let lister = self.users.lister_of(&self.client, &self.credential).await;
            let key = (lister, format!("nua:{}", self.zone), wanted.clone());
            let id = match accounts.get(&key) {
                Some(id) => id,
                None => {
                    let id =
                        resolve_account(&self.client, &self.credential, wanted.as_deref()).await?;
                    accounts.put(key, id.clone());
                    id
                }
            };
            self.account_id = Some(id);
        }
        Ok(self.account_id.clone())
    }

    /// The zone and account of a scope, or home.
    fn place<'a>(&'a self, scope: &'a TokenScope) -> Option<(&'a str, &'a str)> {
        match (&scope.zone, &scope.account_id) {
            (Some(z), Some(a)) => Some((z.as_str(), a.as_str())),
            _ => self.account_id.as_deref().map(|a| (self.zone.as_str(), a)),
        }
    }
}

async fn resolve_account(
    client: &Client,
    credential: &Credential,
    wanted: Option<&str>,
) -> Result<String> {
    let accounts = client.accounts(credential).await?;
    match wanted {
        Some(wanted) => accounts
            .into_iter()
            .find(|a| a.slug == wanted || a.id == wanted)
            .map(|a| a.id)
            .ok_or_else(|| {
                Error::InvalidSpec(format!(
                    "spec.account {wanted:?} is not an account this credential can see; fix the slug or id"
                ))
            }),
        None => match accounts.as_slice() {
            [one] => Ok(one.id.clone()),
            many => Err(Error::InvalidSpec(format!(
                "the credential sees {} accounts; set spec.account to the slug or id of the one the NUA client belongs to",
                many.len()
            ))),
        },
    }
}

impl Issuer for NuaIssuer {
    async fn issue(&mut self, marker: &Marker, expires: DateTime<Utc>) -> Result<Minted> {
        let (Some(account_id), Some(target)) = (self.account_id.clone(), self.mint.as_ref()) else {
            return Err(Error::InvalidSpec(
                "internal: this NUA key issuer cannot mint".into(),
            ));
        };
        let mut body = target.clone();
        body.description = if body.description.is_empty() {
            marker.render()
        } else {
            marker.label(&body.description)
        };
        let created = self
            .client
            .create_nua_client(&self.credential, &self.zone, &account_id, &body)
            .await?;
        Ok(Minted {
            id: created.client_id,
            token: created.token,
            // No expiry at Nuclia: the operator's own rotation period.
            not_after: expires,
            scope: TokenScope {
                zone: Some(self.zone.clone()),
                account_id: Some(account_id),
                ..TokenScope::default()
            },
        })
    }

    async fn revoke(&mut self, id: &str, scope: &TokenScope) -> Result<()> {
        let Some((zone, account)) = self.place(scope) else {
            return Ok(());
        };
        gone_is_ok(
            self.client
                .delete_nua_client(&self.credential, zone, account, id)
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
        let Some(account) = self.home_account().await? else {
            return Ok(Vec::new());
        };
        let clients = self
            .client
            .nua_clients(&self.credential, &self.zone, &account)
            .await?;
        Ok(clients
            .into_iter()
            .map(|c| LiveToken {
                marker: Marker::find(&c.description).or_else(|| Marker::find(&c.title)),
                id: c.client_id,
                expires: None,
                service_account_id: None,
            })
            .collect())
    }

    async fn scope_key(&mut self) -> String {
        let lister = self.users.lister_of(&self.client, &self.credential).await;
        // Not resolved yet: the list will be of the account `spec.account` names.
        let account = match (&self.account_id, &self.resolve) {
            (Some(id), _) => id.clone(),
            (None, Some((wanted, _))) => format!("?{}", wanted.as_deref().unwrap_or_default()),
            (None, None) => String::new(),
        };
        format!("nua:{lister}:{}:{account}", self.zone)
    }

    fn scope_of(&self, _token: &LiveToken) -> TokenScope {
        TokenScope {
            zone: Some(self.zone.clone()),
            account_id: self.account_id.clone(),
            ..TokenScope::default()
        }
    }

    /// A NUA key names its client when it authenticates (`GET /api/authorizer/info`:
    /// `user.user_id` is the client id, nuclia-api.md §5.3): proof that the value is that
    /// client's key.
    async fn proves(&mut self, value: &ApiToken, token: &LiveToken) -> Result<bool> {
        let Some(account) = self.account_id.clone() else {
            return Ok(false);
        };
        let key = Credential::NuaKey(value.clone());
        let Some(info) = super::authorizer_user(&self.client, key, &self.zone).await? else {
            return Ok(false);
        };
        Ok(info.user_id.as_deref() == Some(token.id.as_str())
            && info.account_id.as_deref().is_none_or(|a| a == account))
    }

    /// The list is of every client of the account in the zone.
    fn lists_all_of(&self, scope: &TokenScope) -> bool {
        scope.zone.as_deref() == Some(self.zone.as_str())
            && scope.account_id.is_some()
            && scope.account_id == self.account_id
    }
}

impl Kind for NucliaNuaKey {
    type Issuer = NuaIssuer;

    fn lifecycle(&self) -> &LifecycleSpec {
        &self.spec.lifecycle
    }

    fn shaping(&self) -> Result<serde_json::Value> {
        let s = &self.spec;
        s.secret.template.validate().map_err(Error::InvalidSpec)?;
        let k = &s.secret.keys;
        let plain = [k.token.as_str(), &k.zone, &k.account, &k.client_id];
        for (i, a) in plain.iter().enumerate() {
            if plain[..i].contains(a) {
                return Err(Error::InvalidSpec(format!(
                    "spec.secret.keys names data key {a:?} twice; give each key its own name"
                )));
            }
        }
        formats::validate(&s.secret.template, Shape::NuaKey, &plain).map_err(Error::InvalidSpec)?;
        Ok(serde_json::json!([
            s.zone,
            s.account,
            s.title,
            s.description,
            s.contact,
            s.allow_kb_management,
            s.tokens_limit,
            s.lifecycle.days,
            s.auth,
            s.secret.template.name,
            s.secret.keys
        ]))
    }

    fn secret(&self) -> &dyn ManagedSecret {
        &self.spec.secret
    }

    fn auth_ref(&self) -> &SecretKeyRef {
        &self.spec.auth.secret_ref
    }

    fn managed_token(&self, _purpose: Purpose) -> ManagedToken {
        ManagedToken::Never
    }

    /// A NUA client lives until it is deleted: `notAfter` is the rotation period only.
    fn expires_upstream(&self) -> bool {
        false
    }

    async fn issuer(
        &self,
        ctx: &Context,
        credentials: Vec<ApiToken>,
        _status: &StatusOf<Self>,
    ) -> Result<NuaIssuer> {
        // Refuse an unusable zone before using, let alone sending, any credential.
        check_zone(&ctx.nuclia, &self.spec.zone)?;
        let token = credentials.into_iter().next().ok_or_else(|| {
            Error::CredentialsMissing("no credential to manage NUA clients with".into())
        })?;
        NuaIssuer::prepare(
            ctx.nuclia.clone(),
            Credential::Bearer(token),
            &self.spec,
            &ctx.accounts,
            &ctx.users,
        )
        .await
    }

    fn revoker(&self, ctx: &Context, credentials: Vec<ApiToken>, home: &TokenScope) -> NuaIssuer {
        let token = credentials
            .into_iter()
            .next()
            .unwrap_or_else(|| ApiToken::new(String::new()));
        let recorded = self.status.as_ref().and_then(|s| s.scope.as_ref());
        let (zone, account_id) = match (&home.zone, &home.account_id) {
            (Some(z), Some(a)) => (z.clone(), Some(a.clone())),
            _ => (
                recorded
                    .and_then(|s| s.zone.clone())
                    .unwrap_or_else(|| self.spec.zone.clone()),
                recorded.and_then(|s| s.account_id.clone()),
            ),
        };
        let resolve = account_id
            .is_none()
            .then(|| (self.spec.account.clone(), ctx.accounts.clone()));
        NuaIssuer {
            client: ctx.nuclia.clone(),
            credential: Credential::Bearer(token),
            users: ctx.users.clone(),
            zone,
            account_id,
            resolve,
            mint: None,
        }
    }

    /// The zone, account id and client id of the current key.
    fn secret_data(&self, status: &StatusOf<Self>) -> Vec<(String, String)> {
        let Some(scope) = &status.scope else {
            return Vec::new();
        };
        let keys = &self.spec.secret.keys;
        [
            (keys.zone.clone(), scope.zone.clone()),
            (keys.account.clone(), scope.account_id.clone()),
            (keys.client_id.clone(), status.token_id.clone()),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }

    fn consumer(&self, status: &StatusOf<Self>) -> Option<Consumer> {
        let scope = status.scope.as_ref()?;
        Some(Consumer::NuaKey {
            zone: scope.zone.clone()?,
            account_id: scope.account_id.clone()?,
            client_id: status.token_id.clone()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nuclia::ClientConfig;

    /// A zone is only ever turned into a host through the configured endpoints; a name that
    /// cannot be one (the CRD's pattern refuses it too) is refused before any request, as an
    /// untrusted endpoint.
    #[test]
    fn zones_outside_the_configured_endpoints_are_refused() {
        crate::runtime::install_crypto();
        let client = Client::new(ClientConfig::default()).unwrap();
        assert!(check_zone(&client, "europe-1").is_ok());
        for zone in ["evil.example.com", "x/../y", "", "a:8080", "Europe-1", "-x"] {
            let e = check_zone(&client, zone).unwrap_err();
            assert!(e.to_string().contains("zone"), "{zone}: {e}");
            assert!(
                matches!(e, Error::Nuclia(nuclia::Error::UntrustedEndpoint { .. })),
                "{zone}: {e:?}"
            );
        }
    }
}
