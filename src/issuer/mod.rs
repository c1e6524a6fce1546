//! Minting and revoking at Nuclia: one [`Issuer`] trait, one file per credential kind holding
//! everything about it (its issuer, its spec as the controller sees it, its Secret data, its
//! status details and scope), and the ownership [`Marker`] every minted credential carries. No
//! scheduling here: the lifecycle decides, the controller calls.

pub mod formats;
pub mod kb;
pub mod nua;
pub mod personal;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::crd::{SecretKeyRef, TokenScope};
use crate::error::{Error, Result};
use crate::nuclia::{self, ApiToken, Client, Credential};

/// One list of credentials' user: (user id, asked at) once known, and when it was last used.
/// Behind an async lock, so that logins used by many resources at once are asked once.
#[derive(Default)]
struct KnownUser {
    user: Option<(String, Instant)>,
    used: Option<Instant>,
}

/// The user behind each list of user credentials (user tokens, PATs; keyed by their
/// fingerprints), for [`Issuer::scope_key`]: what a login lists (its user's tokens, the service
/// accounts of a KB, the NUA clients of an account) is the same for every login of one user, so
/// with many logins of one user each list is fetched once per interval, not once per login.
/// The user is asked again once a verify interval old, so every login is still checked once
/// per interval (a revoked login shows), with a small call.
#[derive(Clone)]
pub struct UserCache {
    max_age: Duration,
    entries: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<KnownUser>>>>>,
}

impl UserCache {
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            entries: Arc::default(),
        }
    }

    /// Who lists with `credentials` (tried in order, the next on Unauthorized or Forbidden, as
    /// every call of an issuer does): `user:<id>`, or `cred:<fingerprints>` when that cannot be
    /// told (not user credentials, or Nuclia did not answer who).
    pub async fn lister(&self, client: &Client, credentials: &[Credential]) -> String {
        let chain: Vec<String> = credentials.iter().map(|c| c.fingerprint()).collect();
        let chain = chain.join("+");
        let users = !credentials.is_empty()
            && credentials
                .iter()
                .all(|c| matches!(c, Credential::Bearer(_)));
        if !users {
            return format!("cred:{chain}");
        }
        let entry = {
            let mut m = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            m.entry(chain.clone()).or_default().clone()
        };
        let mut known = entry.lock().await;
        known.used = Some(Instant::now());
        if let Some((user, asked)) = &known.user
            && asked.elapsed() < self.max_age
        {
            return format!("user:{user}");
        }
        let asked = with_credentials(credentials, |c| async move { client.user(&c).await }).await;
        match asked {
            Ok(user) => {
                let lister = format!("user:{}", user.id);
                known.user = Some((user.id, Instant::now()));
                return lister;
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not tell the user behind a credential; its lists are not shared");
            }
        }
        known.user = None;
        format!("cred:{chain}")
    }

    /// [`Self::lister`] of one credential.
    pub async fn lister_of(&self, client: &Client, credential: &Credential) -> String {
        self.lister(client, std::slice::from_ref(credential)).await
    }

    /// Drops the users of credentials not used within `idle`; returns how many remain.
    pub fn evict_idle(&self, idle: Duration) -> usize {
        let mut m = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, e| match e.try_lock() {
            Ok(known) => known.used.is_some_and(|u| u.elapsed() < idle),
            // Being asked right now.
            Err(_) => true,
        });
        m.shrink_to_fit();
        m.len()
    }
}

/// Runs `op` with each credential in turn until one is not refused (Unauthorized or
/// Forbidden): how every call of an issuer uses its credentials.
pub async fn with_credentials<T, F, Fut>(
    credentials: &[Credential],
    mut op: F,
) -> std::result::Result<T, nuclia::Error>
where
    F: FnMut(Credential) -> Fut,
    Fut: Future<Output = std::result::Result<T, nuclia::Error>>,
{
    let mut last = None;
    for c in credentials {
        match op(c.clone()).await {
            Err(e @ (nuclia::Error::Unauthorized { .. } | nuclia::Error::Forbidden { .. })) => {
                last = Some(e)
            }
            other => return other,
        }
    }
    Err(last.unwrap_or_else(|| nuclia::Error::Config("no credential to call Nuclia with".into())))
}

/// Identifies what this operator minted: the cluster it runs in, the resource's namespace (so an
/// operator that watches some namespaces judges only tokens of those), the resource's UID and
/// the installation that minted it (random, kept in a ConfigMap: two clusters given the same
/// `--cluster-id` still tell their tokens apart, so neither sweeps the other's).
/// Appended to a personal token's description or a service account's title, so a token minted
/// just before a crash, or left by a resource deleted without its finalizer, can be found and
/// revoked. Credentials without a marker are never touched.
///
/// A resource with `deletionPolicy: Orphan` marks its tokens `[nto-keep:…]`: they are its own for
/// the leak guard, but the orphan sweep leaves them alone once the resource is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    pub cluster: String,
    pub namespace: String,
    pub uid: String,
    /// Minted for `deletionPolicy: Orphan`: never swept.
    pub keep: bool,
    /// The installation that minted it (`@<id>` after the UID); absent in tokens minted before
    /// installations had an id.
    pub installation: Option<String>,
}

impl Marker {
    const OPEN: &'static str = "[nto:";
    const OPEN_KEEP: &'static str = "[nto-keep:";

    pub fn render(&self) -> String {
        let open = if self.keep {
            Self::OPEN_KEEP
        } else {
            Self::OPEN
        };
        match &self.installation {
            Some(i) => format!(
                "{open}{}/{}/{}@{i}]",
                self.cluster, self.namespace, self.uid
            ),
            None => format!("{open}{}/{}/{}]", self.cluster, self.namespace, self.uid),
        }
    }

    /// Whether both mark the same resource (whatever its deletion policy was at the time).
    pub fn same_resource(&self, other: &Marker) -> bool {
        self.cluster == other.cluster && self.namespace == other.namespace && self.uid == other.uid
    }

    /// `text` followed by the marker, e.g. `CI pipeline [nto:<cluster>:<uid>]`.
    pub fn label(&self, text: &str) -> String {
        format!("{text} {}", self.render())
    }

    /// The marker at the end of `text`, if any.
    pub fn find(text: &str) -> Option<Marker> {
        let plain = text.rfind(Self::OPEN).map(|i| (i, Self::OPEN.len(), false));
        let keep = text
            .rfind(Self::OPEN_KEEP)
            .map(|i| (i, Self::OPEN_KEEP.len(), true));
        let (start, len, keep) = plain.into_iter().chain(keep).max_by_key(|m| m.0)?;
        let inner = text[start + len..].strip_suffix(']')?;
        // From the right: the cluster id is the operator's to choose; the others hold no '/'.
        let (rest, last) = inner.rsplit_once('/')?;
        let (cluster, namespace) = rest.rsplit_once('/')?;
        let (uid, installation) = match last.split_once('@') {
            Some((uid, i)) if !i.is_empty() => (uid, Some(i.to_owned())),
            Some(_) => return None,
            None => (last, None),
        };
        [cluster, namespace, uid]
            .iter()
            .all(|p| !p.is_empty())
            .then(|| Marker {
                cluster: cluster.into(),
                namespace: namespace.into(),
                uid: uid.into(),
                keep,
                installation,
            })
    }
}

/// A token or key just minted. The value lives only here and in the Secret.
#[derive(Debug)]
pub struct Minted {
    pub id: String,
    pub token: ApiToken,
    pub not_after: DateTime<Utc>,
    /// Where it was minted (the credential ref is filled in by the controller).
    pub scope: TokenScope,
}

/// A credential that exists upstream (no value).
#[derive(Clone, Debug, PartialEq)]
pub struct LiveToken {
    pub id: String,
    pub marker: Option<Marker>,
    pub expires: Option<DateTime<Utc>>,
    pub service_account_id: Option<String>,
}

/// Issue, revoke and list one kind of credential at Nuclia, for one resource. An issuer holds
/// the credentials of one scope; revocations name the scope each token was minted in.
pub trait Issuer: Send {
    /// Mints a credential that expires at `expires` and carries `marker`.
    fn issue(
        &mut self,
        marker: &Marker,
        expires: DateTime<Utc>,
    ) -> impl Future<Output = Result<Minted>> + Send;
    /// Revokes one credential in the scope it was minted in; one that is already gone there
    /// (or whose whole scope is gone, e.g. a deleted Knowledge Box) counts as revoked.
    fn revoke(&mut self, id: &str, scope: &TokenScope) -> impl Future<Output = Result<()>> + Send;
    /// Deletes what held tokens in `scope` besides the tokens themselves (a service account the
    /// operator created); called once no recorded token lives there.
    fn release(&mut self, scope: &TokenScope) -> impl Future<Output = Result<()>> + Send;
    /// Deletes leftovers marked for `marker` other than tokens (service accounts an interrupted
    /// issue created), when the resource goes.
    fn release_marked(&mut self, marker: &Marker) -> impl Future<Output = Result<()>> + Send;
    /// Every credential this issuer's account credential can see in its scope, marked or not.
    fn list_live(&mut self) -> impl Future<Output = Result<Vec<LiveToken>>> + Send;
    /// Key under which [`Issuer::list_live`] results are shared: who lists (the account
    /// credential's fingerprint, or the user behind it) and the scope, so resources that would
    /// get the same list share one list call.
    fn scope_key(&mut self) -> impl Future<Output = String> + Send;
    /// The scope of a live token found upstream (the leak guard adopts it).
    fn scope_of(&self, token: &LiveToken) -> TokenScope;
    /// The leak guard adopted `token` (found in the Secret after an interrupted issue) as the
    /// current credential: record where it lives.
    fn adopted(&mut self, _token: &LiveToken) {}
    /// Whether `value`, found in a Secret that only claims (by its `nuclia.dev/token-id`
    /// annotation) to hold `token`, is proven to be `token`'s credential: it authenticates at
    /// Nuclia, and Nuclia's answer names the same key, client or service account. Ids are not
    /// secrets, so a claim alone is never enough. Default: nothing proves it (no adoption).
    fn proves(
        &mut self,
        _value: &ApiToken,
        _token: &LiveToken,
    ) -> impl Future<Output = Result<bool>> + Send {
        async { Ok(false) }
    }
    /// Deletes what this issuer retired (a KB key's service accounts of an earlier scope) where
    /// no token still recorded lives: `still_needed` names the service accounts of the replaced
    /// tokens. Called only by the engine's revoker. Default: nothing is retired.
    fn retire_unused(
        &mut self,
        _still_needed: &[Option<String>],
    ) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }
    /// Whether [`Issuer::list_live`] lists every credential of `scope` (so one of that scope
    /// missing from the list is gone). Default: it cannot tell.
    fn lists_all_of(&self, _scope: &TokenScope) -> bool {
        false
    }
}

/// Who `credential` says it is (`GET {regional}/api/authorizer/info` in `zone`), for
/// [`Issuer::proves`]; None when Nuclia refuses it (it proves nothing).
async fn authorizer_user(
    client: &Client,
    credential: Credential,
    zone: &str,
) -> Result<Option<nuclia::AuthorizerUser>> {
    let regional = client.endpoints().regional(zone)?;
    match client.authorizer_info(&credential, &regional).await {
        Ok(info) => Ok(Some(info.user)),
        Err(
            nuclia::Error::Unauthorized { .. }
            | nuclia::Error::Forbidden { .. }
            | nuclia::Error::NotFound { .. },
        ) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Reads a credential from a Secret in the resource's own namespace. The error says what to fix
/// and never quotes the value.
pub async fn read_credential(secrets: &Api<Secret>, r: &SecretKeyRef) -> Result<ApiToken> {
    fetch_credential(secrets, r).await.map(|(token, _)| token)
}

/// [`read_credential`], with the resourceVersion of the Secret it came from (for a cache).
pub async fn fetch_credential(
    secrets: &Api<Secret>,
    r: &SecretKeyRef,
) -> Result<(ApiToken, Option<String>)> {
    let secret = secrets
        .get_opt(&r.name)
        .await
        .map_err(Error::kube("get credentials Secret"))?;
    let rv = secret
        .as_ref()
        .and_then(|s| s.metadata.resource_version.clone());
    Ok((credential_from(secret.as_ref(), r)?, rv))
}

/// The credential under `r.key` of `secret` (None: the Secret does not exist).
fn credential_from(secret: Option<&Secret>, r: &SecretKeyRef) -> Result<ApiToken> {
    let secret = secret.ok_or_else(|| {
            Error::CredentialsMissing(format!(
                "credentials Secret {:?} not found in this namespace; create it with the Nuclia token under key {:?}",
                r.name, r.key
            ))
        })?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .map(|b| b.0.as_slice());
    let Some(bytes) = bytes else {
        return Err(Error::CredentialsMissing(format!(
            "credentials Secret {:?} has no key {:?}; put the Nuclia token there or fix spec.auth.secretRef.key",
            r.name, r.key
        )));
    };
    let text = std::str::from_utf8(bytes).map_err(|_| {
        Error::CredentialsMissing(format!(
            "key {:?} of Secret {:?} is not text; it must hold a Nuclia token",
            r.key, r.name
        ))
    })?;
    let text = text.trim();
    if text.is_empty() || text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Error::CredentialsMissing(format!(
            "key {:?} of Secret {:?} is empty or not a single token; it must hold a Nuclia token",
            r.key, r.name
        )));
    }
    Ok(ApiToken::new(text.to_owned()))
}

/// Maps "already gone" to success, the rule for every revocation (always asked in the token's
/// own scope, so a 404 there means it is gone, not that it lives elsewhere).
pub(crate) fn gone_is_ok(r: std::result::Result<(), crate::nuclia::Error>) -> Result<()> {
    match r {
        Err(crate::nuclia::Error::NotFound { .. }) => Ok(()),
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_ignore_foreign_text() {
        let m = Marker {
            cluster: "c:1".into(),
            namespace: "apps".into(),
            uid: "0f6a-11".into(),
            keep: false,
            installation: None,
        };
        assert_eq!(m.label("CI pipeline"), "CI pipeline [nto:c:1/apps/0f6a-11]");
        assert_eq!(Marker::find(&m.label("CI pipeline")), Some(m.clone()));
        let kept = Marker {
            keep: true,
            ..m.clone()
        };
        assert_eq!(kept.label("CI"), "CI [nto-keep:c:1/apps/0f6a-11]");
        assert_eq!(Marker::find(&kept.label("CI")), Some(kept.clone()));
        assert!(kept.same_resource(&m) && kept != m);
        // the last marker wins, whichever its kind
        assert!(
            !Marker::find(&format!("{} {}", kept.render(), m.render()))
                .unwrap()
                .keep
        );
        assert!(
            Marker::find(&format!("{} {}", m.render(), kept.render()))
                .unwrap()
                .keep
        );
        let last = Marker::find("a [nto:c/n/1] then [nto:c2/n2/u2]").unwrap();
        assert_eq!(
            (
                last.cluster.as_str(),
                last.namespace.as_str(),
                last.uid.as_str()
            ),
            ("c2", "n2", "u2")
        );
        // with the installation that minted it; the same resource either way
        let installed = Marker {
            installation: Some("9c0ffee1".into()),
            ..m.clone()
        };
        assert_eq!(installed.render(), "[nto:c:1/apps/0f6a-11@9c0ffee1]");
        assert_eq!(
            Marker::find(&installed.label("CI")),
            Some(installed.clone())
        );
        assert!(installed.same_resource(&m));
        for foreign in [
            "x [nto:c1/ns/u1@]",
            "CI pipeline",
            "[nto:]",
            "x [nto:c1/ns/]",
            "x [nto:c1/ns/u1] trailing",
            "[nto:nouid]",
            "[nto:c/u]",
        ] {
            assert_eq!(Marker::find(foreign), None, "{foreign}");
        }
    }
}
