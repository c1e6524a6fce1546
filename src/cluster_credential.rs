//! `NucliaClusterCredential`: one account credential (a user token, PAT or NUA key) kept in a
//! Secret of the operator's own namespace, lent to the namespaced kinds of the namespaces its
//! policy names (`spec.auth.clusterCredentialRef`), as cert-manager's ClusterIssuer and External
//! Secrets' ClusterSecretStore. A namespace gets keys minted with it, never the credential.
//!
//! Here: the resource, the pure policy check (namespace, kind, role ceiling) and the resolution
//! of a reference into the credential it names. The engine calls [`resolve`] where it would
//! otherwise read `spec.auth.secretRef` in the resource's namespace.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use kube::ResourceExt;
use kube::api::Api;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::crd::{CredentialType, KbRole, SecretKeyRef};
use crate::error::{Error, Result};
use crate::nuclia::ApiToken;

/// The kinds that may reference a cluster credential.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AllowedKind {
    NucliaKbApiKey,
}

impl AllowedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AllowedKind::NucliaKbApiKey => "NucliaKbApiKey",
        }
    }
}

fn default_kinds() -> Vec<AllowedKind> {
    vec![AllowedKind::NucliaKbApiKey]
}

/// Namespaces by their labels: every `matchLabels` pair must be on the namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSelector {
    /// Labels the namespace must carry, all of them. An empty selector selects nothing here
    /// (unlike Kubernetes' "everything"): to lend the credential to every namespace, say so with
    /// `allNamespaces: true`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
}

/// Who may use the credential, and for what.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterCredentialPolicy {
    /// Namespaces allowed by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub namespaces: Vec<String>,
    /// Namespaces allowed by their labels (in addition to `namespaces`). Whoever may label a
    /// namespace may then use the credential: keep such labels to cluster admins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<NamespaceSelector>,
    /// Every namespace may use the credential (must be said explicitly; an empty selector
    /// selects nothing).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_namespaces: bool,
    /// Kinds that may reference the credential (default and only one for now:
    /// `NucliaKbApiKey`; personal tokens minted with it would hand out the credential's own
    /// powers).
    #[serde(default = "default_kinds")]
    pub kinds: Vec<AllowedKind>,
    /// The highest Knowledge Box role a key may be minted with through this credential:
    /// `SMEMBER` (the default: read-only keys), `SCONTRIBUTOR` or `SOWNER`.
    #[serde(default)]
    pub max_role: KbRole,
    /// At most this many keys per namespace through this credential (current keys; a key in
    /// its grace period after a rotation does not count). A resource that holds one keeps
    /// renewing it; one that does not waits, `Ready=False` and `Issuing=False` with reason
    /// `QuotaExceeded`, while its namespace holds this many (older resources first). Unset: no
    /// limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_keys_per_namespace: Option<u32>,
    /// At most this many keys minted per namespace through this credential in any hour
    /// (renewals, rotations and repairs count; a re-issue after `nuclia.dev/reissue-minted`
    /// does not). Beyond it the resource waits until the hour frees a slot: `Issuing=False`
    /// with reason `QuotaExceeded` (and `Ready=False`, unless a valid key is in place). Counted by the running operator (a restart starts the
    /// count again). Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_issues_per_namespace_per_hour: Option<u32>,
}

impl Default for ClusterCredentialPolicy {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            namespace_selector: None,
            all_namespaces: false,
            kinds: default_kinds(),
            max_role: KbRole::SMEMBER,
            max_keys_per_namespace: None,
            max_issues_per_namespace_per_hour: None,
        }
    }
}

/// An account credential in a Secret of the operator's namespace, lent to the namespaces its
/// policy names to mint Knowledge Box keys; they never see the credential itself.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "nuclia.dev",
    version = "v1alpha1",
    kind = "NucliaClusterCredential",
    doc = "A Nuclia account credential in the operator's namespace, lent to the namespaces its policy allows.",
    status = "ClusterCredentialStatus",
    shortname = "ncc",
    category = "nuclia",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"MaxRole","type":"string","jsonPath":".spec.policy.maxRole"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct NucliaClusterCredentialSpec {
    /// The Secret key holding the credential, in the operator's namespace
    /// (`--cluster-credential-namespace`, by default the namespace the operator runs in). It
    /// may be the Secret of a `NucliaPersonalToken` of that namespace, so the credential renews
    /// itself.
    pub secret_ref: SecretKeyRef,
    /// `Bearer` (a user token or personal access token, the default) or `NuaKey`.
    #[serde(default, rename = "type")]
    pub credential_type: CredentialType,
    /// Which namespaces may use the credential, for which kinds and roles. Nothing is allowed
    /// unless named.
    #[serde(default)]
    pub policy: ClusterCredentialPolicy,
}

/// Observed state of a cluster credential. Never holds the credential.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterCredentialStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: True while the Secret holds a credential Nuclia accepts (checked once per
    /// verify interval, for every resource that uses it); False with `CredentialsMissing` (no
    /// Secret, no key, not a token) or `Unauthorized` (refused by Nuclia).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Namespaces whose resources name this cluster credential now (allowed or not) or hold
    /// keys minted with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// When Nuclia last accepted the credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified: Option<chrono::DateTime<chrono::Utc>>,
    /// What each namespace uses of the credential (refreshed at least every minute while the
    /// policy sets a quota, else every verify interval).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["namespace"]))]
    pub usage: Vec<NamespaceUsage>,
}

/// One namespace's use of a cluster credential.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceUsage {
    /// The namespace.
    pub namespace: String,
    /// Current keys minted with the credential there.
    pub keys: u32,
    /// Keys minted with it there in the last hour (by this operator process).
    pub issues_last_hour: u32,
}

/// Whether a resource of `namespace` that holds no key yet may get one under
/// `spec.policy.maxKeysPerNamespace`: `holders` resources there hold keys, `ahead` older ones
/// wait for one. The error is the message of a `QuotaExceeded` condition.
pub fn check_keys(
    name: &str,
    policy: &ClusterCredentialPolicy,
    namespace: &str,
    holders: u32,
    ahead: u32,
) -> Result<(), String> {
    match policy.max_keys_per_namespace {
        Some(max) if holders.saturating_add(ahead) >= max => Err(format!(
            "namespace {namespace:?} holds {holders} key(s) through NucliaClusterCredential {name:?}{}, its limit (spec.policy.maxKeysPerNamespace: {max}); delete one here, or ask a cluster admin to raise it",
            if ahead > 0 {
                format!(" and {ahead} older resource(s) wait for one")
            } else {
                String::new()
            }
        )),
        _ => Ok(()),
    }
}

impl ClusterCredentialPolicy {
    /// Whether the policy can allow any namespace at all.
    pub fn allows_some(&self) -> bool {
        self.all_namespaces
            || !self.namespaces.is_empty()
            || self
                .namespace_selector
                .as_ref()
                .is_some_and(|s| !s.match_labels.is_empty())
    }
}

/// Whether the policy lets `namespace` (with `labels`) mint a `kind` with `role`; the error is the
/// message of a `CredentialNotAllowed` condition.
pub fn check(
    name: &str,
    policy: &ClusterCredentialPolicy,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    kind: &str,
    role: Option<KbRole>,
) -> Result<(), String> {
    let by_name = policy.namespaces.iter().any(|n| n == namespace);
    let by_labels = policy.namespace_selector.as_ref().is_some_and(|s| {
        !s.match_labels.is_empty() && s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    });
    if !(policy.all_namespaces || by_name || by_labels) {
        return Err(format!(
            "NucliaClusterCredential {name:?} does not allow namespace {namespace:?} (spec.policy); ask a cluster admin, or use spec.auth.secretRef"
        ));
    }
    if !policy.kinds.iter().any(|k| k.as_str() == kind) {
        return Err(format!(
            "NucliaClusterCredential {name:?} does not allow kind {kind} (spec.policy.kinds)"
        ));
    }
    if let Some(role) = role
        && rank(role) > rank(policy.max_role)
    {
        return Err(format!(
            "NucliaClusterCredential {name:?} allows roles up to {} (spec.policy.maxRole); {} asked: lower spec.role",
            policy.max_role.as_str(),
            role.as_str()
        ));
    }
    Ok(())
}

fn rank(r: KbRole) -> u8 {
    match r {
        KbRole::SMEMBER => 0,
        KbRole::SCONTRIBUTOR => 1,
        KbRole::SOWNER => 2,
    }
}

/// A cluster credential resolved: where its Secret is and how it is sent.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The Secret key, in the cluster credential namespace.
    pub secret_ref: SecretKeyRef,
    pub credential_type: CredentialType,
    pub token: ApiToken,
    /// `nuclia.dev/reissue-minted` on the cluster credential, as read.
    pub mark: Option<String>,
}

/// Resolves `name` for a resource of `kind` in `namespace` asking for `role`. With `check_policy`
/// (minting, verifying) the policy must allow it; revoking what was minted with it is always
/// allowed (a namespace removed from the policy keeps its tokens until deletion or rotation, and
/// deletion must be able to revoke them).
pub async fn resolve(
    kube: &kube::Client,
    credential_namespace: &str,
    name: &str,
    namespace: &str,
    kind: &str,
    role: Option<KbRole>,
    check_policy: bool,
) -> Result<Resolved> {
    let api: Api<NucliaClusterCredential> = Api::all(kube.clone());
    let cc = api
        .get_opt(name)
        .await
        .map_err(Error::kube("get NucliaClusterCredential"))?
        .ok_or_else(|| {
            Error::CredentialsMissing(format!(
                "NucliaClusterCredential {name:?} not found; fix spec.auth.clusterCredentialRef"
            ))
        })?;
    if check_policy {
        let labels = if cc.spec.policy.namespace_selector.is_some() {
            let ns: Api<Namespace> = Api::all(kube.clone());
            ns.get_opt(namespace)
                .await
                .map_err(Error::kube("get Namespace"))?
                .and_then(|n| n.metadata.labels)
                .unwrap_or_default()
        } else {
            BTreeMap::new()
        };
        check(name, &cc.spec.policy, namespace, &labels, kind, role)
            .map_err(Error::CredentialNotAllowed)?;
    }
    let secrets: Api<Secret> = Api::namespaced(kube.clone(), credential_namespace);
    let token = crate::issuer::read_credential(&secrets, &cc.spec.secret_ref)
        .await
        .map_err(|e| match e {
            // The namespaced resource's owner cannot see that namespace: say whose it is.
            Error::CredentialsMissing(m) => Error::CredentialsMissing(format!(
                "NucliaClusterCredential {name:?}: {m} (namespace {credential_namespace:?}; a cluster admin must fix it)"
            )),
            other => other,
        })?;
    let mark = cc
        .annotations()
        .get(crate::crd::ANNOTATION_REISSUE)
        .cloned();
    Ok(Resolved {
        secret_ref: cc.spec.secret_ref.clone(),
        credential_type: cc.spec.credential_type,
        token,
        mark,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn policy_allows_named_and_labelled_namespaces_up_to_the_ceiling() {
        let p = ClusterCredentialPolicy {
            namespaces: vec!["team-a".into()],
            namespace_selector: Some(NamespaceSelector {
                match_labels: labels(&[("nuclia", "yes")]),
            }),
            ..Default::default()
        };
        let kb = "NucliaKbApiKey";
        let none = labels(&[]);
        let yes = labels(&[("nuclia", "yes"), ("x", "y")]);
        let role = Some(KbRole::SMEMBER);
        assert_eq!(check("c", &p, "team-a", &none, kb, role), Ok(()));
        assert_eq!(check("c", &p, "team-b", &yes, kb, role), Ok(()));
        let table = [
            ("team-b", &none, kb, role, "does not allow namespace"),
            (
                "team-b",
                &labels(&[("nuclia", "no")]),
                kb,
                role,
                "does not allow namespace",
            ),
            (
                "team-a",
                &none,
                "NucliaPersonalToken",
                None,
                "does not allow kind",
            ),
            (
                "team-a",
                &none,
                kb,
                Some(KbRole::SCONTRIBUTOR),
                "allows roles up to SMEMBER",
            ),
            (
                "team-a",
                &none,
                kb,
                Some(KbRole::SOWNER),
                "allows roles up to SMEMBER",
            ),
        ];
        for (ns, l, kind, role, want) in table {
            let err = check("c", &p, ns, l, kind, role).unwrap_err();
            assert!(err.contains(want), "{ns} {kind} {role:?}: {err}");
        }
        let higher = ClusterCredentialPolicy {
            max_role: KbRole::SCONTRIBUTOR,
            ..p.clone()
        };
        assert_eq!(
            check(
                "c",
                &higher,
                "team-a",
                &none,
                kb,
                Some(KbRole::SCONTRIBUTOR)
            ),
            Ok(())
        );
    }

    #[test]
    fn an_empty_policy_or_selector_allows_nothing() {
        let all = labels(&[("a", "b")]);
        let kb = "NucliaKbApiKey";
        let empty = ClusterCredentialPolicy::default();
        assert!(check("c", &empty, "x", &all, kb, None).is_err());
        let empty_selector = ClusterCredentialPolicy {
            namespace_selector: Some(NamespaceSelector::default()),
            ..Default::default()
        };
        assert!(check("c", &empty_selector, "x", &all, kb, None).is_err());
        let everyone = ClusterCredentialPolicy {
            all_namespaces: true,
            ..Default::default()
        };
        assert_eq!(check("c", &everyone, "x", &all, kb, None), Ok(()));
    }

    #[test]
    fn a_key_quota_counts_holders_and_older_waiters() {
        let p = ClusterCredentialPolicy {
            max_keys_per_namespace: Some(2),
            ..Default::default()
        };
        assert_eq!(check_keys("c", &p, "a", 0, 0), Ok(()));
        assert_eq!(check_keys("c", &p, "a", 1, 0), Ok(()));
        assert_eq!(check_keys("c", &p, "a", 0, 1), Ok(()));
        let full = check_keys("c", &p, "a", 2, 0).unwrap_err();
        assert!(
            full.contains("spec.policy.maxKeysPerNamespace: 2"),
            "{full}"
        );
        let queued = check_keys("c", &p, "a", 1, 1).unwrap_err();
        assert!(queued.contains("1 older resource(s) wait"), "{queued}");
        let none = ClusterCredentialPolicy::default();
        assert_eq!(check_keys("c", &none, "a", 500, 500), Ok(()));
    }

    #[test]
    fn spec_defaults_are_least_privilege() {
        let spec: NucliaClusterCredentialSpec = serde_json::from_value(serde_json::json!({
            "secretRef": {"name": "login"}
        }))
        .unwrap();
        assert_eq!(spec.policy.kinds, vec![AllowedKind::NucliaKbApiKey]);
        assert_eq!(spec.policy.max_role, KbRole::SMEMBER);
        assert!(spec.policy.namespaces.is_empty() && !spec.policy.all_namespaces);
        assert_eq!(spec.credential_type, CredentialType::Bearer);
    }
}
