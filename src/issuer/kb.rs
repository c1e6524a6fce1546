//! Knowledge Box API keys (regional API), everything about them: keys of a service account of
//! the KB, the issuer that mints and revokes them, and the `NucliaKbApiKey` spec as the
//! controller sees it (its Secret data, its status details, its scope).
//!
//! By default the operator creates one service account per resource, titled with its ownership
//! marker, and deletes it once no recorded key lives in it; `serviceAccount.id` adopts an
//! existing one (its role must match `spec.role`), never deleted. Every key's scope (zone,
//! account, KB, service account) is recorded, so a key is revoked where it was minted even
//! after `kbUrl`, `account` or `role` changed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kube::ResourceExt;

use super::formats::{self, Consumer, Shape};
use super::{Issuer, LiveToken, Marker, Minted, UserCache, gone_is_ok};
use crate::controller::{Context, Kind, ManagedToken, Purpose, StatusOf};
use crate::crd::{
    CredentialType, KbApiKeyStatus, KbLocationStatus, KbRole, LifecycleSpec, ManagedSecret,
    NucliaKbApiKey, NucliaKbApiKeySpec, SecretKeyRef, TokenScope,
};
use crate::error::{Error, Result};
use crate::nuclia::{self, ApiToken, Client, Credential, KbLocation};

/// Account ids resolved per (who lists — the user behind a login, else the credential — KB or
/// zone, `spec.account`), so discovery runs once per user, and a resource naming an account
/// never borrows another resource's answer.
#[derive(Clone, Default)]
pub struct AccountCache(Arc<Mutex<HashMap<AccountKey, (String, Instant)>>>);

pub(crate) type AccountKey = (String, String, Option<String>);

impl AccountCache {
    pub(crate) fn get(&self, key: &AccountKey) -> Option<String> {
        let mut m = self.0.lock().ok()?;
        let (account, used) = m.get_mut(key)?;
        *used = Instant::now();
        Some(account.clone())
    }
    pub(crate) fn put(&self, key: AccountKey, account: String) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(key, (account, Instant::now()));
        }
    }
    /// Drops the accounts of credentials not used within `idle`; returns how many remain.
    pub fn evict_idle(&self, idle: Duration) -> usize {
        let Ok(mut m) = self.0.lock() else {
            return 0;
        };
        m.retain(|_, (_, used)| used.elapsed() < idle);
        m.shrink_to_fit();
        m.len()
    }
}

/// A Knowledge Box as the API addresses it.
#[derive(Clone, Debug, Default, PartialEq)]
struct Place {
    zone: String,
    account_id: String,
    kb_id: String,
}

impl Place {
    /// The place a scope names, falling back to `home` for scopes recorded without one.
    fn of(scope: &TokenScope, home: Option<&Place>) -> Option<Place> {
        match (&scope.zone, &scope.account_id, &scope.kb_id) {
            (Some(zone), Some(account_id), Some(kb_id)) => Some(Place {
                zone: zone.clone(),
                account_id: account_id.clone(),
                kb_id: kb_id.clone(),
            }),
            _ => home.cloned(),
        }
    }
}

/// Where a revoker whose scope names no KB finds one when it must list (the deletion of a
/// resource whose interrupted first issue recorded nothing): the KB `spec.kbUrl` names, its
/// account from `spec.account` or discovery, as the issuer finds them.
struct Locate {
    kb_url: String,
    account: Option<String>,
    accounts: AccountCache,
}

/// What minting needs beyond revoking.
struct MintTarget {
    role: KbRole,
    adopted: Option<String>,
    /// Title of a service account the operator creates (before the marker).
    title: String,
}

pub struct KbIssuer {
    client: Client,
    credential: Credential,
    /// Who lists (see [`Issuer::scope_key`]).
    users: UserCache,
    /// Where listing goes, and revocations of keys recorded without a scope.
    home: Option<Place>,
    /// `None` for an issuer built only to revoke.
    mint: Option<MintTarget>,
    /// For a revoker with no home: where to find it when a list is needed.
    locate: Option<Locate>,
    /// Where the key lives; written back to status by [`Kind::settle`].
    pub state: KbLocationStatus,
    /// The resource this issuer works for: a service account is its own (created by the
    /// operator for it, deleted with its last key) only when the marker in its title names
    /// this resource, never because some marker is there.
    owner: Option<Marker>,
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
        users: &UserCache,
    ) -> Result<Self> {
        let location = client.endpoints().locate_kb(&spec.kb_url)?;
        let mut state = previous.cloned().unwrap_or_default();
        let same_kb = state.kb_id.as_deref() == Some(location.kb_id.as_str())
            && state.zone.as_deref() == Some(location.zone.as_str());
        if !same_kb {
            // Another KB: its keys (and service accounts) are revoked in their own scope,
            // recorded with each key; the location starts afresh.
            state = KbLocationStatus {
                retired_service_accounts: state.retired_service_accounts,
                ..Default::default()
            };
        }
        let account_id = match state
            .account_id
            .clone()
            .filter(|_| same_kb && spec.account.is_none())
        {
            Some(id) => id,
            None => {
                // By user: every login of one user finds the same account for a KB.
                let lister = users.lister_of(&client, &credential).await;
                let cache_key = (lister, location.kb_id.clone(), spec.account.clone());
                match accounts.get(&cache_key) {
                    Some(id) => id,
                    None => {
                        let wanted = spec.account.as_deref();
                        let id = resolve_account(&client, &credential, wanted, &location).await?;
                        accounts.put(cache_key, id.clone());
                        id
                    }
                }
            }
        };
        state.account_id = Some(account_id.clone());
        state.zone = Some(location.zone.clone());
        state.kb_id = Some(location.kb_id.clone());
        Ok(Self {
            client,
            credential,
            users: users.clone(),
            home: Some(Place {
                zone: location.zone,
                account_id,
                kb_id: location.kb_id,
            }),
            mint: Some(MintTarget {
                role: spec.role,
                adopted: spec.service_account.id.clone(),
                title,
            }),
            locate: None,
            state,
            owner: None,
        })
    }

    /// The resource this issuer works for (see `owner`).
    pub fn for_resource(mut self, owner: Marker) -> Self {
        self.owner = Some(owner);
        self
    }

    /// Whether `token`'s service account was created by the operator for this resource.
    fn owns(&self, token: &LiveToken) -> bool {
        match (&token.marker, &self.owner) {
            (Some(m), Some(owner)) => m.same_resource(owner),
            _ => false,
        }
    }

    /// An issuer that only revokes and lists, at the places recorded in status: no request.
    pub fn revoker(
        client: Client,
        credential: Credential,
        home: &TokenScope,
        state: Option<&KbLocationStatus>,
        users: UserCache,
    ) -> Self {
        let state = state.cloned().unwrap_or_default();
        let recorded = TokenScope {
            zone: state.zone.clone(),
            account_id: state.account_id.clone(),
            kb_id: state.kb_id.clone(),
            ..Default::default()
        };
        let home = Place::of(home, None).or_else(|| Place::of(&recorded, None));
        Self {
            client,
            credential,
            users,
            home,
            mint: None,
            locate: None,
            state,
            owner: None,
        }
    }

    /// A revoker that, when it knows no KB, lists the one `kb_url` names (its account from
    /// `account` or discovery) when it must list: see [`Locate`].
    fn or_locate(mut self, kb_url: &str, account: Option<&str>, accounts: &AccountCache) -> Self {
        if self.home.is_none() {
            self.locate = Some(Locate {
                kb_url: kb_url.to_owned(),
                account: account.map(str::to_owned),
                accounts: accounts.clone(),
            });
        }
        self
    }

    /// The KB this issuer lists: the home it was given, or, for a revoker that has none, the
    /// one [`Locate`] names. An untrusted `kbUrl` is refused before any request; a KB that
    /// cannot be located (credential refused, account not found) is an error, so that the
    /// caller does not take "nothing listed" for "nothing there".
    async fn listing_place(&mut self) -> Result<Option<Place>> {
        if self.home.is_none()
            && let Some(l) = &self.locate
        {
            let location = self.client.endpoints().locate_kb(&l.kb_url)?;
            let lister = self.users.lister_of(&self.client, &self.credential).await;
            let key = (lister, location.kb_id.clone(), l.account.clone());
            let account_id = match l.accounts.get(&key) {
                Some(id) => id,
                None => {
                    let id = resolve_account(
                        &self.client,
                        &self.credential,
                        l.account.as_deref(),
                        &location,
                    )
                    .await?;
                    l.accounts.put(key, id.clone());
                    id
                }
            };
            self.home = Some(Place {
                zone: location.zone,
                account_id,
                kb_id: location.kb_id,
            });
            self.locate = None;
        }
        Ok(self.home.clone())
    }

    async fn service_accounts(
        &self,
        place: &Place,
    ) -> std::result::Result<Vec<nuclia::ServiceAccount>, nuclia::Error> {
        self.client
            .service_accounts(
                &self.credential,
                &place.zone,
                &place.account_id,
                &place.kb_id,
            )
            .await
    }

    /// The service account to mint in: the adopted one (whose role must be `spec.role`), the
    /// owned one of the right role and deletion policy, one marked for this resource (left by
    /// an interrupted attempt), or a new one.
    async fn ensure_service_account(
        &mut self,
        place: &Place,
        target: &MintTarget,
        marker: &Marker,
    ) -> Result<String> {
        if let Some(id) = &target.adopted {
            let listed = self.service_accounts(place).await?;
            let Some(sa) = listed.iter().find(|sa| sa.id == *id) else {
                return Err(Error::InvalidSpec(format!(
                    "spec.serviceAccount.id {id:?} is not a service account of Knowledge Box {}; fix the id, or remove it to let the operator create one",
                    place.kb_id
                )));
            };
            if sa.role != nuclia_role(target.role) {
                return Err(Error::InvalidSpec(format!(
                    "spec.role is {} but the adopted service account {id:?} has role {}; set spec.role to {} or remove spec.serviceAccount.id",
                    target.role.as_str(),
                    sa.role.as_str(),
                    sa.role.as_str()
                )));
            }
            self.state.service_account_id = Some(id.clone());
            self.state.service_account_owned = false;
            self.state.service_account_kept = false;
            self.state.role = Some(target.role);
            return Ok(id.clone());
        }
        if let (Some(id), true, Some(role)) = (
            &self.state.service_account_id,
            self.state.service_account_owned,
            self.state.role,
        ) && role == target.role
            && self.state.service_account_kept == marker.keep
        {
            return Ok(id.clone());
        }
        let existing = self.service_accounts(place).await?.into_iter().find(|sa| {
            Marker::find(&sa.title)
                .is_some_and(|m| m.same_resource(marker) && m.keep == marker.keep)
                && sa.role == nuclia_role(target.role)
        });
        let id = match existing {
            Some(sa) => sa.id,
            None => {
                let title = marker.label(&target.title);
                self.client
                    .create_service_account(
                        &self.credential,
                        &place.zone,
                        &place.account_id,
                        &place.kb_id,
                        &title,
                        nuclia_role(target.role),
                    )
                    .await?
            }
        };
        self.state.service_account_id = Some(id.clone());
        self.state.service_account_owned = true;
        self.state.service_account_kept = marker.keep;
        self.state.role = Some(target.role);
        Ok(id)
    }

    async fn delete_service_account(&self, place: &Place, id: &str) -> Result<()> {
        gone_is_ok(
            self.client
                .delete_service_account(
                    &self.credential,
                    &place.zone,
                    &place.account_id,
                    &place.kb_id,
                    id,
                )
                .await,
        )
    }

    /// Deletes service accounts that older versions retired (tracked in status, at the home
    /// KB) once no key the resource still needs lives there (the current one, or one of
    /// `still_needed`).
    async fn retire_unused_accounts(&mut self, still_needed: &[Option<String>]) -> Result<()> {
        let current = self.state.service_account_id.clone();
        let retired = std::mem::take(&mut self.state.retired_service_accounts);
        for id in retired {
            let needed = still_needed
                .iter()
                .chain(std::iter::once(&current))
                .any(|n| n.as_deref() == Some(id.as_str()));
            match self.home.clone() {
                Some(place) if !needed => self.delete_service_account(&place, &id).await?,
                _ => self.state.retired_service_accounts.push(id),
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
                Error::InvalidSpec(format!(
                    "spec.account {wanted:?} is not an account this credential can see; fix the slug or id, or remove it to discover the account"
                ))
            })?;
        let kbs = client.kbs(credential, &location.zone, &id).await?;
        if !kbs.iter().any(|kb| kb.id == location.kb_id) {
            return Err(Error::InvalidSpec(format!(
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
    Err(Error::InvalidSpec(format!(
        "Knowledge Box {} is not in any of the {} account(s) this credential can see; check spec.kbUrl and the credential, or set spec.account",
        location.kb_id,
        accounts.len()
    )))
}

impl Issuer for KbIssuer {
    async fn retire_unused(&mut self, still_needed: &[Option<String>]) -> Result<()> {
        self.retire_unused_accounts(still_needed).await
    }

    async fn issue(&mut self, marker: &Marker, expires: DateTime<Utc>) -> Result<Minted> {
        let (Some(place), Some(target)) = (self.home.clone(), self.mint.take()) else {
            return Err(Error::InvalidSpec(
                "internal: this Knowledge Box issuer cannot mint".into(),
            ));
        };
        let result = self.mint_in(&place, &target, marker, expires).await;
        self.mint = Some(target);
        result
    }

    async fn revoke(&mut self, id: &str, scope: &TokenScope) -> Result<()> {
        let sa = scope
            .service_account_id
            .as_deref()
            .or(self.state.service_account_id.as_deref());
        let (Some(sa), Some(place)) = (sa, Place::of(scope, self.home.as_ref())) else {
            return Ok(());
        };
        // A 404 here (the key, its service account or the whole KB gone) means revoked.
        gone_is_ok(
            self.client
                .delete_service_account_key(
                    &self.credential,
                    &place.zone,
                    &place.account_id,
                    &place.kb_id,
                    sa,
                    id,
                )
                .await,
        )
    }

    async fn release(&mut self, scope: &TokenScope) -> Result<()> {
        if !scope.service_account_owned {
            return Ok(());
        }
        let (Some(sa), Some(place)) = (&scope.service_account_id, Place::of(scope, None)) else {
            return Ok(());
        };
        self.delete_service_account(&place, sa).await
    }

    async fn release_marked(&mut self, marker: &Marker) -> Result<()> {
        let Some(place) = self.listing_place().await? else {
            return Ok(());
        };
        let listed = match self.service_accounts(&place).await {
            Err(nuclia::Error::NotFound { .. }) => return Ok(()),
            other => other?,
        };
        for sa in listed {
            if Marker::find(&sa.title).is_some_and(|m| m.same_resource(marker)) {
                self.delete_service_account(&place, &sa.id).await?;
            }
        }
        Ok(())
    }

    async fn list_live(&mut self) -> Result<Vec<LiveToken>> {
        let Some(place) = self.listing_place().await? else {
            return Ok(Vec::new());
        };
        let mut live = Vec::new();
        for sa in self.service_accounts(&place).await? {
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

    async fn scope_key(&mut self) -> String {
        let (zone, kb) = self
            .home
            .as_ref()
            .map(|p| (p.zone.as_str(), p.kb_id.as_str()))
            .unwrap_or_default();
        let lister = self.users.lister_of(&self.client, &self.credential).await;
        format!("kb:{lister}:{zone}:{kb}")
    }

    fn adopted(&mut self, token: &LiveToken) {
        // A marked key lives in a service account this resource created; an unmarked one in
        // the adopted account.
        let Some(sa) = token.service_account_id.clone() else {
            return;
        };
        let owned = self.owns(token);
        self.state.service_account_id = Some(sa);
        self.state.service_account_owned = owned;
        self.state.service_account_kept = token.marker.as_ref().is_some_and(|m| m.keep);
        self.state.role = self.mint.as_ref().map(|t| t.role);
    }

    fn scope_of(&self, token: &LiveToken) -> TokenScope {
        let place = self.home.clone().unwrap_or_default();
        TokenScope {
            credential: None,
            zone: Some(place.zone),
            account_id: Some(place.account_id),
            kb_id: Some(place.kb_id),
            service_account_id: token.service_account_id.clone(),
            // only a service account whose marker names this resource is its own (one titled
            // for another resource, even an earlier one of this name, is never deleted)
            service_account_owned: self.owns(token),
            cluster_credential: None,
        }
    }

    /// A KB key names no key id when it authenticates: `GET /api/authorizer/info` says which
    /// KB, account and (where Nuclia says it: `user.user_id`) service account it belongs to.
    /// That is proof only for a key of a service account the operator created for one
    /// resource (marked): an unmarked (adopted) service account may be shared by several
    /// resources, each holding a key of it, so there nothing proves which key a value is.
    async fn proves(&mut self, value: &ApiToken, token: &LiveToken) -> Result<bool> {
        let (Some(place), Some(sa)) = (self.home.clone(), token.service_account_id.as_deref())
        else {
            return Ok(false);
        };
        if token.marker.is_none() {
            return Ok(false);
        }
        let key = Credential::ServiceAccount(value.clone());
        let Some(info) = super::authorizer_user(&self.client, key, &place.zone).await? else {
            return Ok(false);
        };
        Ok(info.kb_id.as_deref() == Some(place.kb_id.as_str())
            && info
                .account_id
                .as_deref()
                .is_none_or(|a| a == place.account_id)
            && info.user_id.as_deref() == Some(sa))
    }

    fn lists_all_of(&self, scope: &TokenScope) -> bool {
        self.home
            .as_ref()
            .is_some_and(|home| Place::of(scope, None).as_ref() == Some(home))
    }
}

impl KbIssuer {
    async fn mint_in(
        &mut self,
        place: &Place,
        target: &MintTarget,
        marker: &Marker,
        expires: DateTime<Utc>,
    ) -> Result<Minted> {
        let sa = self.ensure_service_account(place, target, marker).await?;
        let created = self
            .client
            .create_service_account_key(
                &self.credential,
                &place.zone,
                &place.account_id,
                &place.kb_id,
                &sa,
                expires,
            )
            .await
            .map_err(|e| match (e, &target.adopted) {
                (nuclia::Error::NotFound { .. }, Some(id)) => Error::InvalidSpec(format!(
                    "spec.serviceAccount.id {id:?} is not a service account of Knowledge Box {}; fix the id, or remove it to let the operator create one",
                    place.kb_id
                )),
                (e, _) => e.into(),
            })?;
        Ok(Minted {
            id: created.id,
            token: created.token,
            not_after: expires,
            scope: TokenScope {
                credential: None,
                zone: Some(place.zone.clone()),
                account_id: Some(place.account_id.clone()),
                kb_id: Some(place.kb_id.clone()),
                service_account_id: Some(sa),
                service_account_owned: self.state.service_account_owned,
                cluster_credential: None,
            },
        })
    }

    fn credential(spec: &NucliaKbApiKeySpec, token: ApiToken) -> Credential {
        typed(spec.auth.credential_type, token)
    }
}

fn typed(t: CredentialType, token: ApiToken) -> Credential {
    match t {
        CredentialType::Bearer => Credential::Bearer(token),
        CredentialType::NuaKey => Credential::NuaKey(token),
    }
}

/// The marker naming `obj` (its deletion policy aside): what a service account's title must
/// name for it to be `obj`'s own.
fn owner_marker(ctx: &Context, obj: &NucliaKbApiKey) -> Marker {
    Marker {
        cluster: ctx.settings.cluster_id.clone(),
        namespace: obj.namespace().unwrap_or_default(),
        uid: obj.uid().unwrap_or_default(),
        keep: false,
        installation: Some(ctx.settings.installation_id.clone()),
    }
}

fn first_credential(credentials: Vec<ApiToken>) -> Result<ApiToken> {
    credentials.into_iter().next().ok_or_else(|| {
        Error::CredentialsMissing("no credential to manage the Knowledge Box with".into())
    })
}

/// The KB id and zone of the current key: its recorded scope (`status.kb` for older statuses).
fn current_kb(status: &KbApiKeyStatus) -> Option<(Option<String>, Option<String>)> {
    match (&status.scope, &status.own.kb) {
        (Some(scope), _) if scope.kb_id.is_some() => {
            Some((scope.kb_id.clone(), scope.zone.clone()))
        }
        (_, Some(kb)) => Some((kb.kb_id.clone(), kb.zone.clone())),
        _ => None,
    }
}

impl Kind for NucliaKbApiKey {
    type Issuer = KbIssuer;

    fn lifecycle(&self) -> &LifecycleSpec {
        &self.spec.lifecycle
    }

    fn shaping(&self) -> Result<serde_json::Value> {
        let s = &self.spec;
        s.auth.validate().map_err(Error::InvalidSpec)?;
        s.secret.template.validate().map_err(Error::InvalidSpec)?;
        let k = &s.secret.keys;
        let plain = [k.token.as_str(), &k.kb_url, &k.kb_id, &k.zone];
        formats::validate(&s.secret.template, Shape::KbKey, &plain).map_err(Error::InvalidSpec)?;
        Ok(serde_json::json!([
            s.kb_url,
            s.account,
            s.role,
            s.lifecycle.days,
            s.auth,
            s.service_account,
            s.secret.template.name,
            s.secret.keys
        ]))
    }

    fn secret(&self) -> &dyn ManagedSecret {
        &self.spec.secret
    }

    fn auth_ref(&self) -> &SecretKeyRef {
        static NONE: std::sync::LazyLock<SecretKeyRef> =
            std::sync::LazyLock::new(|| SecretKeyRef {
                name: String::new(),
                key: String::new(),
            });
        self.spec.auth.secret_ref.as_ref().unwrap_or(&NONE)
    }

    fn cluster_credential(&self) -> Option<&str> {
        self.spec
            .auth
            .cluster_credential_ref
            .as_ref()
            .map(|r| r.name.as_str())
    }

    fn requested_role(&self) -> Option<KbRole> {
        Some(self.spec.role)
    }

    fn adopted_service_account(&self) -> Option<&str> {
        self.spec.service_account.id.as_deref()
    }

    fn managed_token(&self, _purpose: Purpose) -> ManagedToken {
        ManagedToken::Never
    }

    async fn issuer(
        &self,
        ctx: &Context,
        credentials: Vec<ApiToken>,
        status: &StatusOf<Self>,
    ) -> Result<KbIssuer> {
        // Refuse an untrusted kbUrl before using, let alone sending, any credential.
        ctx.nuclia.endpoints().locate_kb(&self.spec.kb_url)?;
        let token = first_credential(credentials)?;
        let credential = match self.cluster_credential() {
            Some(name) => typed(ctx.cluster_credential_type(name), token),
            None => KbIssuer::credential(&self.spec, token),
        };
        let title = format!(
            "{}/{}",
            self.namespace().unwrap_or_default(),
            self.name_any()
        );
        Ok(KbIssuer::prepare(
            ctx.nuclia.clone(),
            credential,
            &self.spec,
            status.own.kb.as_ref(),
            title,
            &ctx.accounts,
            &ctx.users,
        )
        .await?
        .for_resource(owner_marker(ctx, self)))
    }

    fn revoker(&self, ctx: &Context, credentials: Vec<ApiToken>, home: &TokenScope) -> KbIssuer {
        // Revokers are built with at least one credential; an empty list revokes nothing.
        let token = credentials
            .into_iter()
            .next()
            .unwrap_or_else(|| ApiToken::new(String::new()));
        // The credential of the scope: a cluster credential's type is its own.
        let credential = match home.cluster_credential.as_deref().or_else(|| {
            home.credential
                .is_none()
                .then(|| self.cluster_credential())
                .flatten()
        }) {
            Some(name) => typed(ctx.cluster_credential_type(name), token),
            None => KbIssuer::credential(&self.spec, token),
        };
        KbIssuer::revoker(
            ctx.nuclia.clone(),
            credential,
            home,
            self.status.as_ref().and_then(|s| s.own.kb.as_ref()),
            ctx.users.clone(),
        )
        // Nothing recorded (an interrupted first issue): the KB the issue minted in is the
        // spec's, located as the issuer does, when the deletion sweep lists it.
        .or_locate(
            &self.spec.kb_url,
            self.spec.account.as_deref(),
            &ctx.accounts,
        )
        .for_resource(owner_marker(ctx, self))
    }

    /// The KB of the current token.
    fn secret_data(&self, status: &StatusOf<Self>) -> Vec<(String, String)> {
        let Some((kb_id, zone)) = current_kb(status) else {
            return Vec::new();
        };
        let keys = &self.spec.secret.keys;
        let url = self.spec.kb_url.trim_end_matches('/').to_owned();
        [
            (keys.kb_url.clone(), Some(url)),
            (keys.kb_id.clone(), kb_id),
            (keys.zone.clone(), zone),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }

    fn consumer(&self, status: &StatusOf<Self>) -> Option<Consumer> {
        let (kb_id, zone) = current_kb(status)?;
        Some(Consumer::KbKey {
            url: self.spec.kb_url.trim_end_matches('/').to_owned(),
            kb_id: kb_id?,
            zone: zone?,
        })
    }

    fn unscoped(status: &StatusOf<Self>) -> TokenScope {
        let kb = status.own.kb.clone().unwrap_or_default();
        TokenScope {
            credential: None,
            zone: kb.zone,
            account_id: kb.account_id,
            kb_id: kb.kb_id,
            service_account_id: kb.service_account_id,
            service_account_owned: kb.service_account_owned,
            ..Default::default()
        }
    }

    fn record(issuer: &KbIssuer, status: &mut StatusOf<Self>) {
        status.own.kb = Some(issuer.state.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nuclia::ClientConfig;

    /// A service account is this resource's own (deleted with its last key) only when its
    /// marker names this resource: one titled for another resource (another tenant's, or an
    /// earlier one of this name) is never, and an unmarked (adopted) one neither.
    #[test]
    fn a_service_account_is_owned_only_when_its_marker_names_this_resource() {
        crate::runtime::install_crypto();
        let me = Marker {
            cluster: "c".into(),
            namespace: "b".into(),
            uid: "uid-b".into(),
            keep: false,
            installation: Some("inst1".into()),
        };
        let home = TokenScope {
            zone: Some("europe-1".into()),
            account_id: Some("acc".into()),
            kb_id: Some("kb".into()),
            ..Default::default()
        };
        let mut issuer = KbIssuer::revoker(
            Client::new(ClientConfig::default()).unwrap(),
            Credential::Bearer(ApiToken::new("login".into())),
            &home,
            None,
            UserCache::new(Duration::from_secs(60)),
        )
        .for_resource(me.clone());
        let key = |marker: Option<Marker>| LiveToken {
            id: "key".into(),
            marker,
            expires: None,
            service_account_id: Some("sa".into()),
        };
        let theirs = Marker {
            namespace: "a".into(),
            uid: "uid-a".into(),
            ..me.clone()
        };
        let kept = Marker {
            keep: true,
            ..me.clone()
        };
        for (marker, owned) in [
            (Some(me), true),
            (Some(kept), true),
            (Some(theirs), false),
            (None, false),
        ] {
            let token = key(marker.clone());
            assert_eq!(
                issuer.scope_of(&token).service_account_owned,
                owned,
                "{marker:?}"
            );
            issuer.adopted(&token);
            assert_eq!(issuer.state.service_account_owned, owned, "{marker:?}");
        }
        assert!(issuer.lists_all_of(&home));
        let elsewhere = TokenScope {
            kb_id: Some("other-kb".into()),
            ..home
        };
        assert!(!issuer.lists_all_of(&elsewhere));
    }
}
