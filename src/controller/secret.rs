//! The Secret a resource owns: read it (classifying ownership), write it, release it. A Secret
//! this resource does not own is never written; a missing one is created with POST so that a
//! Secret someone else creates at the same moment is not taken over.
//!
//! Every Secret the operator writes carries the finalizer [`SECRET_FINALIZER`]: deleting it
//! (a user, or a namespace deletion) leaves it readable until the operator lets it go, so the
//! tokens that depend on it can still be revoked.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

use crate::crd::{
    ANNOTATION_NOT_AFTER, ANNOTATION_TOKEN_ID, FIELD_MANAGER, LABEL_MANAGED_BY, LABEL_OWNER_KIND,
    LABEL_OWNER_NAME, MANAGED_BY, SECRET_FINALIZER, SecretTemplate,
};
use crate::error::{Error, Result};
use crate::lifecycle::{SecretState, token_hash};
use crate::nuclia::ApiToken;

/// What the Secret holds, as far as the lifecycle and the leak guard care.
pub struct SecretView {
    pub state: SecretState,
    /// The token in it (owned Secrets only); kept in memory for this reconcile.
    pub token: Option<ApiToken>,
    /// The token id its annotation names.
    pub token_id: Option<String>,
    pub exists: bool,
    /// The Secret's resourceVersion when read.
    pub resource_version: Option<String>,
    /// Deleted, held only by the operator's finalizer.
    pub terminating: bool,
}

impl SecretView {
    pub fn missing() -> Self {
        SecretView {
            state: SecretState::Missing,
            token: None,
            token_id: None,
            exists: false,
            resource_version: None,
            terminating: false,
        }
    }
}

/// The Secret's desired content.
pub struct Desired<'a> {
    pub name: &'a str,
    pub template: &'a SecretTemplate,
    pub owner: OwnerReference,
    pub data: BTreeMap<String, String>,
    pub token_id: &'a str,
    pub not_after: DateTime<Utc>,
}

fn owned_by(secret: &Secret, uid: &str) -> bool {
    secret
        .metadata
        .owner_references
        .as_ref()
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r.uid == uid && r.controller == Some(true))
        })
}

/// Reads the Secret. `expected` is the non-token data and metadata the spec asks for, to tell
/// whether a refresh is due.
pub async fn read(
    api: &Api<Secret>,
    name: &str,
    owner_uid: &str,
    token_key: &str,
    template: &SecretTemplate,
    extra: &[(String, String)],
) -> Result<SecretView> {
    let Some(secret) = api.get_opt(name).await.map_err(Error::kube("get Secret"))? else {
        return Ok(SecretView::missing());
    };
    let terminating = secret.metadata.deletion_timestamp.is_some();
    if !owned_by(&secret, owner_uid) {
        return Ok(SecretView {
            state: SecretState::Foreign,
            token: None,
            token_id: None,
            exists: true,
            resource_version: secret.metadata.resource_version.clone(),
            terminating,
        });
    }
    let data = secret.data.clone().unwrap_or_default();
    let text = |k: &str| {
        data.get(k)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
    };
    let token = text(token_key).filter(|t| !t.is_empty());
    let labels = secret.metadata.labels.clone().unwrap_or_default();
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    let held = secret
        .metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == SECRET_FINALIZER));
    let up_to_date = held
        && template
            .labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        && template
            .annotations
            .iter()
            .all(|(k, v)| annotations.get(k) == Some(v))
        && extra
            .iter()
            .all(|(k, v)| text(k).as_deref() == Some(v.as_str()));
    Ok(SecretView {
        state: SecretState::Owned {
            token_hash: token.as_deref().map(token_hash),
            up_to_date,
        },
        token: token.map(ApiToken::new),
        token_id: annotations.get(ANNOTATION_TOKEN_ID).cloned(),
        exists: true,
        resource_version: secret.metadata.resource_version.clone(),
        terminating,
    })
}

fn build(d: &Desired<'_>, owner_kind: &str) -> Secret {
    let mut labels = d.template.labels.clone();
    labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    labels.insert(LABEL_OWNER_KIND.into(), owner_kind.into());
    labels.insert(
        LABEL_OWNER_NAME.into(),
        d.owner.name.chars().take(63).collect(),
    );
    let mut annotations = d.template.annotations.clone();
    annotations.insert(ANNOTATION_TOKEN_ID.into(), d.token_id.into());
    annotations.insert(
        ANNOTATION_NOT_AFTER.into(),
        d.not_after
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    Secret {
        metadata: ObjectMeta {
            name: Some(d.name.into()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![d.owner.clone()]),
            finalizers: Some(vec![SECRET_FINALIZER.into()]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            d.data
                .iter()
                .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// Writes the Secret: create when missing (fails rather than take over a Secret created
/// meanwhile), server-side apply when this resource owns it. Returns the new resourceVersion.
pub async fn write(api: &Api<Secret>, d: &Desired<'_>, exists: bool) -> Result<Option<String>> {
    let mut secret = build(d, &d.owner.kind);
    if !exists {
        return match api
            .create(
                &PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                },
                &secret,
            )
            .await
        {
            Ok(s) => Ok(s.metadata.resource_version),
            Err(e)
                if Error::is_conflict(&e) || matches!(&e, kube::Error::Api(s) if s.code == 409) =>
            {
                Err(Error::SecretConflict(format!(
                    "Secret {:?} was created by someone else; choose another spec.secret.name or delete that Secret",
                    d.name
                )))
            }
            Err(e) => Err(Error::kube("create Secret")(e)),
        };
    }
    secret.metadata.managed_fields = None;
    let mut value = serde_json::to_value(&secret).map_err(|e| Error::InvalidSpec(e.to_string()))?;
    value["apiVersion"] = "v1".into();
    value["kind"] = "Secret".into();
    let written = api
        .patch(
            d.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&value),
        )
        .await
        .map_err(Error::kube("apply Secret"))?;
    Ok(written.metadata.resource_version)
}

/// Whether the namespace is being deleted (then its resources are too, and their Secrets must
/// stay readable until they have revoked). Asked with a dry-run create, which the apiserver's
/// namespace lifecycle admission refuses in a terminating namespace: no extra permission is
/// needed, and nothing is written.
pub async fn namespace_terminating(api: &Api<Secret>, name: &str) -> Result<bool> {
    let probe = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let params = PostParams {
        dry_run: true,
        field_manager: Some(FIELD_MANAGER.into()),
    };
    match api.create(&params, &probe).await {
        Err(kube::Error::Api(s)) if s.code == 403 => Ok(s
            .details
            .as_ref()
            .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"))
            || s.message.contains("being terminated")),
        // Taken (the Secret is still there), or created in a dry run: the namespace lives.
        Ok(_) => Ok(false),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        // No answer (an apiserver restart): no guess either way.
        Err(e) => Err(Error::kube("probe the namespace")(e)),
    }
}

/// Lets go of the Secret if this resource owns it: drops the operator's finalizer, then deletes
/// it, or with `keep` (`deletionPolicy: Orphan`) leaves it in place with no owner, so the
/// garbage collector does not take it either.
pub async fn release(api: &Api<Secret>, name: &str, owner_uid: &str, keep: bool) -> Result<()> {
    let Some(secret) = api.get_opt(name).await.map_err(Error::kube("get Secret"))? else {
        return Ok(());
    };
    if !owned_by(&secret, owner_uid) {
        return Ok(());
    }
    let finalizers: Vec<String> = secret
        .metadata
        .finalizers
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f != SECRET_FINALIZER)
        .collect();
    let mut meta = serde_json::json!({
        "resourceVersion": secret.metadata.resource_version,
        "finalizers": finalizers,
    });
    if keep {
        let owners: Vec<OwnerReference> = secret
            .metadata
            .owner_references
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.uid != owner_uid)
            .collect();
        meta["ownerReferences"] = serde_json::to_value(owners).unwrap_or_default();
    }
    let held = secret.metadata.finalizers.iter().flatten().count() != finalizers.len();
    if held || keep {
        match api
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "metadata": meta })),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if Error::is_not_found(&e) => return Ok(()),
            Err(e) => return Err(Error::kube("release Secret")(e)),
        }
    }
    if keep || secret.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(e) if Error::is_not_found(&e) => Ok(()),
        Err(e) => Err(Error::kube("delete Secret")(e)),
    }
}
