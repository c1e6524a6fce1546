//! A credential kind for engine tests, `Scripted`, whose issuer talks to a scripted Nuclia
//! ([`Upstream`]) instead of the network. The upstream keeps the live tokens, accepts a
//! credential if it is a login it was told about or the value of a live token (a personal
//! token may act for its user), tries the credentials it is handed in order as the personal
//! issuer does, answers 503 to the next call of an operation on request, and records every call.
//!
//! The kind borrows the personal token's rules for the managed token (first with `selfRenew`,
//! last to revoke otherwise).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, LazyLock, Mutex};

use chrono::{DateTime, Utc};
use kube::{CustomResource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::controller::{Context, Kind, ManagedToken, Purpose, StatusOf};
use crate::crd::{LifecycleSpec, ManagedSecret, SecretKeyRef, SecretTemplate, TokenScope};
use crate::error::Result;
use crate::issuer::{Issuer, LiveToken, Marker, Minted, gone_is_ok};
use crate::lifecycle::Policy;
use crate::nuclia::{self, ApiToken};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "test.nuclia.dev",
    version = "v1",
    kind = "Scripted",
    namespaced,
    status = "crate::crd::PersonalTokenStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct ScriptedSpec {
    pub auth: SecretKeyRef,
    #[serde(default)]
    pub self_renew: bool,
    #[serde(default)]
    pub secret: SecretTemplate,
    #[serde(flatten)]
    pub lifecycle: LifecycleSpec,
}

/// One call the engine made to Nuclia.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub op: Op,
    /// The token revoked.
    pub id: Option<String>,
    /// The credentials the engine handed over, in order.
    pub credentials: Vec<String>,
    /// The one Nuclia accepted, if any.
    pub used: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Issue,
    Revoke,
    List,
}

pub struct Live {
    pub value: String,
    pub marker: Option<Marker>,
    pub expires: DateTime<Utc>,
}

#[derive(Default)]
pub struct Nuclia {
    pub logins: HashSet<String>,
    /// Refuse every credential (the user was disabled).
    pub refuse_all: bool,
    pub tokens: BTreeMap<String, Live>,
    /// The next call of each of these answers 503.
    pub unavailable: VecDeque<Op>,
    /// Tokens never expire here, as NUA keys (their `notAfter` is a rotation period only).
    pub no_expiry: bool,
    pub calls: Vec<Call>,
    minted: u32,
}

/// The scripted Nuclia of one test resource.
#[derive(Clone, Default)]
pub struct Upstream(pub Arc<Mutex<Nuclia>>);

/// Each resource's upstream, by UID: the engine builds issuers from the resource alone.
static UPSTREAMS: LazyLock<Mutex<HashMap<String, Upstream>>> = LazyLock::new(Mutex::default);

impl Upstream {
    pub fn register(uid: &str, logins: &[&str]) -> Upstream {
        let up = Upstream::default();
        up.0.lock().unwrap().logins = logins.iter().map(|l| l.to_string()).collect();
        UPSTREAMS.lock().unwrap().insert(uid.into(), up.clone());
        up
    }

    /// Makes the resource with `uid` use this upstream too (resources sharing a login).
    pub fn share(&self, uid: &str) {
        UPSTREAMS.lock().unwrap().insert(uid.into(), self.clone());
    }

    fn of(uid: &str) -> Upstream {
        UPSTREAMS
            .lock()
            .unwrap()
            .get(uid)
            .cloned()
            .expect("an upstream registered for the resource")
    }

    pub fn nuclia(&self) -> std::sync::MutexGuard<'_, Nuclia> {
        self.0.lock().unwrap()
    }

    /// A live token, as if minted earlier (value `value-<id>`).
    pub fn seed(&self, id: &str, marker: Option<Marker>, expires: DateTime<Utc>) {
        self.nuclia().tokens.insert(
            id.into(),
            Live {
                value: format!("value-{id}"),
                marker,
                expires,
            },
        );
    }

    pub fn live_ids(&self) -> Vec<String> {
        self.nuclia().tokens.keys().cloned().collect()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.nuclia().calls.clone()
    }

    /// The ids of the tokens the engine asked to revoke, in order.
    pub fn revoked(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.op == Op::Revoke)
            .filter_map(|c| c.id)
            .collect()
    }

    pub fn ops(&self) -> Vec<Op> {
        self.calls().into_iter().map(|c| c.op).collect()
    }
}

impl Nuclia {
    /// Records the call and finds the credential Nuclia accepts, the personal issuer's way.
    fn call(
        &mut self,
        op: Op,
        id: Option<&str>,
        credentials: &[ApiToken],
    ) -> std::result::Result<(), nuclia::Error> {
        let offered: Vec<String> = credentials.iter().map(|c| c.expose().into()).collect();
        let fault = self
            .unavailable
            .iter()
            .position(|o| *o == op)
            .and_then(|i| self.unavailable.remove(i));
        let used = offered
            .iter()
            .find(|c| {
                !self.refuse_all
                    && (self.logins.contains(*c) || self.tokens.values().any(|t| &t.value == *c))
            })
            .cloned()
            .filter(|_| fault.is_none());
        self.calls.push(Call {
            op,
            id: id.map(str::to_owned),
            credentials: offered,
            used: used.clone(),
        });
        let op_name = "scripted";
        match (fault, used) {
            (Some(_), _) => Err(nuclia::Error::Transient {
                op: op_name,
                detail: "HTTP 503".into(),
            }),
            (None, None) => Err(nuclia::Error::Unauthorized {
                op: op_name,
                detail: "invalid token".into(),
            }),
            (None, Some(_)) => Ok(()),
        }
    }
}

pub struct ScriptedIssuer {
    upstream: Upstream,
    credentials: Vec<ApiToken>,
}

impl Issuer for ScriptedIssuer {
    async fn issue(&mut self, marker: &Marker, expires: DateTime<Utc>) -> Result<Minted> {
        let mut n = self.upstream.nuclia();
        n.call(Op::Issue, None, &self.credentials)?;
        n.minted += 1;
        let id = format!("minted-{}", n.minted);
        let value = format!("value-{id}");
        n.tokens.insert(
            id.clone(),
            Live {
                value: value.clone(),
                marker: Some(marker.clone()),
                expires,
            },
        );
        Ok(Minted {
            id,
            token: ApiToken::new(value),
            not_after: expires,
            scope: TokenScope::default(),
        })
    }

    async fn revoke(&mut self, id: &str, _scope: &TokenScope) -> Result<()> {
        let mut n = self.upstream.nuclia();
        n.call(Op::Revoke, Some(id), &self.credentials)?;
        let gone = match n.tokens.remove(id) {
            Some(_) => Ok(()),
            None => Err(nuclia::Error::NotFound {
                op: "scripted",
                detail: "no such token".into(),
            }),
        };
        gone_is_ok(gone)
    }

    async fn release(&mut self, _scope: &TokenScope) -> Result<()> {
        Ok(())
    }

    async fn release_marked(&mut self, _marker: &Marker) -> Result<()> {
        Ok(())
    }

    async fn list_live(&mut self) -> Result<Vec<LiveToken>> {
        let mut n = self.upstream.nuclia();
        n.call(Op::List, None, &self.credentials)?;
        Ok(n.tokens
            .iter()
            .map(|(id, t)| LiveToken {
                id: id.clone(),
                marker: t.marker.clone(),
                expires: Some(t.expires),
                service_account_id: None,
            })
            .collect())
    }

    async fn scope_key(&mut self) -> String {
        let first = self.credentials.first().map(|c| c.fingerprint());
        format!("scripted:{}", first.unwrap_or_default())
    }

    fn scope_of(&self, _token: &LiveToken) -> TokenScope {
        TokenScope::default()
    }

    /// Exact, as a NUA key's: the value is that live token's.
    async fn proves(&mut self, value: &ApiToken, token: &LiveToken) -> Result<bool> {
        let n = self.upstream.nuclia();
        Ok(n.tokens
            .get(&token.id)
            .is_some_and(|t| t.value == value.expose()))
    }

    fn lists_all_of(&self, _scope: &TokenScope) -> bool {
        true
    }
}

impl Kind for Scripted {
    type Issuer = ScriptedIssuer;

    fn lifecycle(&self) -> &LifecycleSpec {
        &self.spec.lifecycle
    }

    fn shaping(&self) -> Result<serde_json::Value> {
        Ok(serde_json::json!([self.spec.auth, self.spec.secret.name]))
    }

    fn policy(&self) -> Result<Policy> {
        let s = &self.spec;
        let shaping = self.shaping()?;
        // Always 30 days: the scenarios' clocks are set for it.
        let lifecycle = LifecycleSpec {
            days: 30,
            ..s.lifecycle.clone()
        };
        Ok(Policy::for_spec(shaping, &lifecycle).expect("a valid policy"))
    }

    fn secret(&self) -> &dyn ManagedSecret {
        &self.spec.secret
    }

    fn auth_ref(&self) -> &SecretKeyRef {
        &self.spec.auth
    }

    fn expires_upstream(&self) -> bool {
        !Upstream::of(&self.uid().unwrap_or_default())
            .nuclia()
            .no_expiry
    }

    fn managed_token(&self, purpose: Purpose) -> ManagedToken {
        ManagedToken::of_personal_token(self.spec.self_renew, purpose)
    }

    fn revoker(
        &self,
        _ctx: &Context,
        credentials: Vec<ApiToken>,
        _home: &TokenScope,
    ) -> ScriptedIssuer {
        ScriptedIssuer {
            upstream: Upstream::of(&self.uid().unwrap_or_default()),
            credentials,
        }
    }

    fn secret_data(&self, _status: &StatusOf<Self>) -> Vec<(String, String)> {
        Vec::new()
    }

    fn consumer(&self, _status: &StatusOf<Self>) -> Option<crate::issuer::formats::Consumer> {
        Some(crate::issuer::formats::Consumer::PersonalToken)
    }
}
