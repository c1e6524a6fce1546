//! Knowledge Box API keys (regional API): keys of a service account of the KB. By default the
//! operator creates one service account per resource, titled with its ownership marker, and
//! deletes it with the resource; `serviceAccount.id` adopts an existing one, never deleted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use super::{Issuer, LiveToken, Marker, Minted, gone_is_ok};
use crate::crd::{KbLocationStatus, KbRole, KbSecretKeys, NucliaKbApiKeySpec};
use crate::error::Result;
use crate::nuclia::{self, Client, Credential, KbLocation};

/// Account ids resolved per (credential, KB, `spec.account`), so discovery runs once per
/// credential, and a resource naming an account never borrows another resource's answer.
#[derive(Clone, Default)]
pub struct AccountCache(Arc<Mutex<HashMap<AccountKey, String>>>);

type AccountKey = (String, String, Option<String>);

impl AccountCache {
    fn get(&self, key: &AccountKey) -> Option<String> {
        self.0.lock().ok()?.get(key).cloned()
    }
    fn put(&self, key: AccountKey, account: String) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(key, account);
        }
    }
}

pub struct KbIssuer {
    client: Client,
    credential: Credential,
    location: KbLocation,
    account_id: String,
    role: KbRole,
    adopted: Option<String>,
    keys: KbSecretKeys,
    /// Title of a service account the operator creates (before the marker).
    title: String,
    /// Where the key lives; written back to status by the controller.
    pub state: KbLocationStatus,
}

fn nuclia_role(role: KbRole) -> nuclia::KbRole {
    match role {
        KbRole::SMEMBER => nuclia::KbRole::SMEMBER,
        KbRole::SCONTRIBUTOR => nuclia::KbRole::SCONTRIBUTOR,
        KbRole::SOWNER => nuclia::KbRole::SOWNER,
    }
}

impl KbIssuer {
    /// Locates the KB (refusing hosts the operator is not configured for, before any request)
    /// and resolves the account id: from status when it is for the same KB, else from
    /// `spec.account`, the NUA key's own account, or discovery through the account's KBs.
    pub async fn prepare(
        client: Client,
        credential: Credential,
        spec: &NucliaKbApiKeySpec,
        previous: Option<&KbLocationStatus>,
        title: String,
        accounts: &AccountCache,
    ) -> Result<Self> {
        let location = client.endpoints().locate_kb(&spec.kb_url)?;
        let mut state = previous.cloned().unwrap_or_default();
        let same_kb = state.kb_id.as_deref() == Some(location.kb_id.as_str())
            && state.zone.as_deref() == Some(location.zone.as_str());
        if !same_kb {
            // A different KB: forget the old location; its keys are still in previousTokens.
            let retired = state
                .service_account_id
                .take()
                .filter(|_| state.service_account_owned);
            state = KbLocationStatus {
                retired_service_accounts: state.retired_service_accounts,
                ..Default::default()
            };
            state.retired_service_accounts.extend(retired);
        }
        let cache_key = (
            credential.fingerprint(),
            location.kb_id.clone(),
            spec.account.clone(),
        );
        let account_id = match state
            .account_id
            .clone()
            .filter(|_| same_kb && spec.account.is_none())
        {
            Some(id) => id,
            None => match accounts.get(&cache_key) {
                Some(id) => id,
                None => {
                    let id =
                        resolve_account(&client, &credential, spec.account.as_deref(), &location)
                            .await?;
                    accounts.put(cache_key, id.clone());
                    id
                }
            },
        };
        state.account_id = Some(account_id.clone());
        state.zone = Some(location.zone.clone());
        state.kb_id = Some(location.kb_id.clone());
        Ok(Self {
            client,
            credential,
            location,
            account_id,
            role: spec.role,
            adopted: spec.service_account.id.clone(),
            keys: spec.secret.keys.clone(),
            title,
            state,
        })
    }

    async fn service_accounts(
        &self,
    ) -> std::result::Result<Vec<nuclia::ServiceAccount>, nuclia::Error> {
        let l = &self.location;
        self.client
            .service_accounts(&self.credential, &l.zone, &self.account_id, &l.kb_id)
            .await
    }

    /// The service account to mint in: the adopted one, the owned one of the right role, one
    /// marked for this resource with the right role (left by an interrupted attempt), or a new one.
    async fn ensure_service_account(&mut self, marker: &Marker) -> Result<String> {
        if let Some(id) = &self.adopted {
            if self.state.service_account_owned
                && let Some(old) = self.state.service_account_id.take()
                && old != *id
            {
                self.state.retired_service_accounts.push(old);
            }
            self.state.service_account_id = Some(id.clone());
            self.state.service_account_owned = false;
            self.state.role = None;
            return Ok(id.clone());
        }
        if let (Some(id), true, Some(role)) = (
            &self.state.service_account_id,
            self.state.service_account_owned,
            self.state.role,
        ) && role == self.role
        {
            return Ok(id.clone());
        }
        // Role changed (or first issue): the old owned account retires once its key is revoked.
        if self.state.service_account_owned
            && let Some(old) = self.state.service_account_id.take()
        {
            self.state.retired_service_accounts.push(old);
        }
        let l = self.location.clone();
        let existing = self.service_accounts().await?.into_iter().find(|sa| {
            Marker::find(&sa.title).as_ref() == Some(marker)
                && sa.role == nuclia_role(self.role)
                && !self.state.retired_service_accounts.contains(&sa.id)
        });
        let id = match existing {
            Some(sa) => sa.id,
            None => {
                let title = marker.label(&self.title);
                self.client
                    .create_service_account(
                        &self.credential,
                        &l.zone,
                        &self.account_id,
                        &l.kb_id,
                        &title,
                        nuclia_role(self.role),
                    )
                    .await?
            }
        };
        self.state.service_account_id = Some(id.clone());
        self.state.service_account_owned = true;
        self.state.role = Some(self.role);
        Ok(id)
    }

    async fn delete_service_account(&self, id: &str) -> Result<()> {
        let l = &self.location;
        gone_is_ok(
            self.client
                .delete_service_account(&self.credential, &l.zone, &self.account_id, &l.kb_id, id)
                .await,
        )
    }

    /// Deletes retired service accounts that no longer hold a key the resource still needs.
    pub async fn retire_unused(&mut self, still_needed: &[Option<String>]) -> Result<()> {
        let retired = std::mem::take(&mut self.state.retired_service_accounts);
        for id in retired {
            if still_needed
                .iter()
                .any(|n| n.as_deref() == Some(id.as_str()))
            {
                self.state.retired_service_accounts.push(id);
            } else {
                self.delete_service_account(&id).await?;
            }
        }
        Ok(())
    }
}

async fn resolve_account(
    client: &Client,
    credential: &Credential,
    wanted: Option<&str>,
    location: &KbLocation,
) -> Result<String> {
    if matches!(credential, Credential::NuaKey(_)) {
        // A NUA key belongs to exactly one account, which the authorizer names.
        let info = client
            .authorizer_info(credential, &location.regional)
            .await?;
        if let Some(id) = info.user.account_id {
            return Ok(id);
        }
    }
    let accounts = client.accounts(credential).await?;
    if let Some(wanted) = wanted {
        let id = accounts
            .into_iter()
            .find(|a| a.slug == wanted || a.id == wanted)
            .map(|a| a.id)
            .ok_or_else(|| {
                crate::error::Error::InvalidSpec(format!(
                    "spec.account {wanted:?} is not an account this credential can see; fix the slug or id, or remove it to discover the account"
                ))
            })?;
        let kbs = client.kbs(credential, &location.zone, &id).await?;
        if !kbs.iter().any(|kb| kb.id == location.kb_id) {
            return Err(crate::error::Error::InvalidSpec(format!(
                "spec.account {wanted:?} does not hold Knowledge Box {}; fix spec.account or remove it to discover the account",
                location.kb_id
            )));
        }
        return Ok(id);
    }
    for account in &accounts {
        match client.kbs(credential, &location.zone, &account.id).await {
            Ok(kbs) if kbs.iter().any(|kb| kb.id == location.kb_id) => {
                return Ok(account.id.clone());
            }
            Ok(_) | Err(nuclia::Error::Forbidden { .. } | nuclia::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(crate::error::Error::InvalidSpec(format!(
        "Knowledge Box {} is not in any of the {} account(s) this credential can see; check spec.kbUrl and the credential, or set spec.account",
        location.kb_id,
        accounts.len()
    )))
}

impl Issuer for KbIssuer {
    async fn issue(&mut self, marker: &Marker, expires: DateTime<Utc>) -> Result<Minted> {
        let sa = self.ensure_service_account(marker).await?;
        let l = &self.location;
        let created = self
            .client
            .create_service_account_key(
                &self.credential,
                &l.zone,
                &self.account_id,
                &l.kb_id,
                &sa,
                expires,
            )
            .await
            .map_err(|e| match (e, &self.adopted) {
                (nuclia::Error::NotFound { .. }, Some(id)) => crate::error::Error::InvalidSpec(format!(
                    "spec.serviceAccount.id {id:?} is not a service account of Knowledge Box {}; fix the id, or remove it to let the operator create one",
                    l.kb_id
                )),
                (e, _) => e.into(),
            })?;
        Ok(Minted {
            id: created.id,
            token: created.token,
            not_after: expires,
            service_account_id: Some(sa),
        })
    }

    async fn revoke(&mut self, id: &str, service_account_id: Option<&str>) -> Result<()> {
        let Some(sa) = service_account_id.or(self.state.service_account_id.as_deref()) else {
            return Ok(());
        };
        let l = &self.location;
        gone_is_ok(
            self.client
                .delete_service_account_key(
                    &self.credential,
                    &l.zone,
                    &self.account_id,
                    &l.kb_id,
                    sa,
                    id,
                )
                .await,
        )
    }

    async fn list_live(&mut self) -> Result<Vec<LiveToken>> {
        let accounts = self.service_accounts().await?;
        let mut live = Vec::new();
        for sa in accounts {
            // Keys of an owned (marked) account carry its marker; an adopted account's keys
            // are listed unmarked, so they are checked for drift but never swept.
            let marker = Marker::find(&sa.title);
            for key in sa.keys {
                live.push(LiveToken {
                    id: key.id,
                    marker: marker.clone(),
                    expires: Some(key.expires),
                    service_account_id: Some(sa.id.clone()),
                });
            }
        }
        Ok(live)
    }

    fn scope_key(&self) -> String {
        format!(
            "kb:{}:{}:{}",
            self.credential.fingerprint(),
            self.location.zone,
            self.location.kb_id
        )
    }

    fn secret_extra_data(&self) -> Vec<(String, String)> {
        vec![
            (self.keys.kb_url.clone(), self.location.kb_url.to_string()),
            (self.keys.kb_id.clone(), self.location.kb_id.clone()),
            (self.keys.zone.clone(), self.location.zone.clone()),
        ]
    }

    fn adopted(&mut self, token: &LiveToken) {
        // A marked key lives in a service account this resource created (only those carry the
        // marker), so it is owned; the one status named before retires unless it is the same.
        let Some(sa) = token.service_account_id.clone() else {
            return;
        };
        if let Some(old) = self.state.service_account_id.take()
            && old != sa
            && self.state.service_account_owned
        {
            self.state.retired_service_accounts.push(old);
        }
        self.state.service_account_id = Some(sa);
        self.state.service_account_owned = true;
        self.state.role = Some(self.role);
    }

    async fn cleanup(&mut self, marker: &Marker, revoke: bool) -> Result<()> {
        if !revoke {
            return Ok(());
        }
        if self.state.service_account_owned
            && let Some(id) = self.state.service_account_id.clone()
        {
            self.delete_service_account(&id).await?;
        }
        self.retire_unused(&[]).await?;
        // Accounts marked for this resource that an interrupted attempt left behind.
        for sa in self.service_accounts().await? {
            if Marker::find(&sa.title).as_ref() == Some(marker) {
                self.delete_service_account(&sa.id).await?;
            }
        }
        Ok(())
    }
}
