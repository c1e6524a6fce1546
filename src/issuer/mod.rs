//! Minting and revoking at Nuclia: one [`Issuer`] trait with an implementation per credential
//! kind, and the ownership [`Marker`] every minted credential carries. No scheduling here: the
//! lifecycle decides, the controller calls.

pub mod kb;
pub mod personal;

use std::future::Future;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::crd::SecretKeyRef;
use crate::error::{Error, Result};
use crate::nuclia::ApiToken;

/// Identifies what this operator minted: the cluster it runs in, the resource's namespace (so an
/// operator that watches some namespaces judges only tokens of those) and the resource's UID.
/// Appended to a personal token's description or a service account's title, so a token minted
/// just before a crash, or left by a resource deleted without its finalizer, can be found and
/// revoked. Credentials without a marker are never touched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    pub cluster: String,
    pub namespace: String,
    pub uid: String,
}

impl Marker {
    const OPEN: &'static str = "[nto:";

    pub fn render(&self) -> String {
        format!(
            "{}{}/{}/{}]",
            Self::OPEN,
            self.cluster,
            self.namespace,
            self.uid
        )
    }

    /// `text` followed by the marker, e.g. `CI pipeline [nto:<cluster>:<uid>]`.
    pub fn label(&self, text: &str) -> String {
        format!("{text} {}", self.render())
    }

    /// The marker at the end of `text`, if any.
    pub fn find(text: &str) -> Option<Marker> {
        let start = text.rfind(Self::OPEN)?;
        let inner = text[start + Self::OPEN.len()..].strip_suffix(']')?;
        // From the right: the cluster id is the operator's to choose; the others hold no '/'.
        let (rest, uid) = inner.rsplit_once('/')?;
        let (cluster, namespace) = rest.rsplit_once('/')?;
        [cluster, namespace, uid]
            .iter()
            .all(|p| !p.is_empty())
            .then(|| Marker {
                cluster: cluster.into(),
                namespace: namespace.into(),
                uid: uid.into(),
            })
    }
}

/// A token or key just minted. The value lives only here and in the Secret.
#[derive(Debug)]
pub struct Minted {
    pub id: String,
    pub token: ApiToken,
    pub not_after: DateTime<Utc>,
    /// The service account holding it (Knowledge Box keys).
    pub service_account_id: Option<String>,
}

/// A credential that exists upstream (no value).
#[derive(Clone, Debug, PartialEq)]
pub struct LiveToken {
    pub id: String,
    pub marker: Option<Marker>,
    pub expires: Option<DateTime<Utc>>,
    pub service_account_id: Option<String>,
}

/// Issue, revoke and list one kind of credential at Nuclia, for one resource.
pub trait Issuer: Send {
    /// Mints a credential that expires at `expires` and carries `marker`.
    fn issue(
        &mut self,
        marker: &Marker,
        expires: DateTime<Utc>,
    ) -> impl Future<Output = Result<Minted>> + Send;
    /// Revokes one credential; one that is already gone counts as revoked.
    fn revoke(
        &mut self,
        id: &str,
        service_account_id: Option<&str>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Every credential this issuer's account credential can see in its scope, marked or not.
    fn list_live(&mut self) -> impl Future<Output = Result<Vec<LiveToken>>> + Send;
    /// Key under which [`Issuer::list_live`] results are shared: the account credential's
    /// fingerprint and the scope, so resources that share a credential share one list call.
    fn scope_key(&self) -> String;
    /// Extra data keys written next to the token (the KB URL, id and zone for KB keys).
    fn secret_extra_data(&self) -> Vec<(String, String)>;
    /// Releases what the issuer owns besides tokens (the KB kind's service accounts) once the
    /// resource goes; `revoke` says whether upstream credentials are to be removed.
    fn cleanup(&mut self, marker: &Marker, revoke: bool)
    -> impl Future<Output = Result<()>> + Send;
    /// The leak guard adopted `token` (marked for this resource, found in the Secret after an
    /// interrupted issue) as the current credential: record where it lives.
    fn adopted(&mut self, _token: &LiveToken) {}
}

/// Reads a credential from a Secret in the resource's own namespace. The error says what to fix
/// and never quotes the value.
pub async fn read_credential(secrets: &Api<Secret>, r: &SecretKeyRef) -> Result<ApiToken> {
    let secret = secrets
        .get_opt(&r.name)
        .await
        .map_err(Error::kube("get credentials Secret"))?
        .ok_or_else(|| {
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

/// Maps "already gone" to success, the rule for every revocation.
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
        };
        assert_eq!(m.label("CI pipeline"), "CI pipeline [nto:c:1/apps/0f6a-11]");
        assert_eq!(Marker::find(&m.label("CI pipeline")), Some(m.clone()));
        let last = Marker::find("a [nto:c/n/1] then [nto:c2/n2/u2]").unwrap();
        assert_eq!(
            (
                last.cluster.as_str(),
                last.namespace.as_str(),
                last.uid.as_str()
            ),
            ("c2", "n2", "u2")
        );
        for foreign in [
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
