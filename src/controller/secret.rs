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
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

use super::{Kind, StatusOf};
use crate::crd::{
    ANNOTATION_NOT_AFTER, ANNOTATION_TOKEN_ID, FIELD_MANAGER, LABEL_MANAGED_BY, LABEL_OWNER_KIND,
    LABEL_OWNER_NAME, MANAGED_BY, SECRET_FINALIZER, SecretTemplate,
};
use crate::error::{Error, Result};
use crate::issuer::formats;
use crate::lifecycle::{SecretState, token_hash};
use crate::nuclia::ApiToken;

/// The name of the Secret the spec asks for (the resource's own name by default).
pub(super) fn secret_name<K: Kind>(obj: &K) -> String {
    obj.secret_template()
        .name
        .clone()
        .unwrap_or_else(|| obj.name_any())
}

pub(super) fn owner_ref<K: Kind>(obj: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into(),
        kind: K::kind(&()).into(),
        name: obj.name_any(),
        uid: obj.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The type of a Secret that names none.
const DEFAULT_TYPE: &str = "Opaque";

/// What the Secret holds, as far as the lifecycle and the leak guard care.
#[derive(Clone)]
pub struct SecretView {
    pub state: SecretState,
    /// The token in it (owned Secrets only); kept in memory for this reconcile.
    pub token: Option<ApiToken>,
    /// The view was kept from an earlier reconcile, which keeps no token: `token` is None
    /// whatever the Secret holds, and is read when a step needs it.
    pub token_withheld: bool,
    /// The token id its annotation names.
    pub token_id: Option<String>,
    pub exists: bool,
    /// The Secret's resourceVersion when read.
    pub resource_version: Option<String>,
    /// Deleted, held only by the operator's finalizer.
    pub terminating: bool,
    /// Its type (owned Secrets only).
    pub secret_type: Option<String>,
    /// The data keys the operator wrote into it (its field manager owns them): those the spec
    /// no longer asks for are removed.
    pub owned_keys: Vec<String>,
    /// Restored from a backup: written by the operator for an earlier resource of this kind and
    /// name (whose UID is gone), not yet taken over (see [`restored_for`]).
    pub restored: bool,
    /// The expiry its annotation names.
    pub not_after: Option<DateTime<Utc>>,
    /// The `nuclia.dev/reissue-minted` mark the owner had acted on when it wrote the token.
    pub reissue_mark: Option<String>,
}

impl SecretView {
    pub fn missing() -> Self {
        SecretView {
            state: SecretState::Missing,
            token: None,
            token_withheld: false,
            token_id: None,
            exists: false,
            resource_version: None,
            terminating: false,
            secret_type: None,
            owned_keys: Vec::new(),
            restored: false,
            not_after: None,
            reissue_mark: None,
        }
    }

    /// The view without its token, to keep past this reconcile.
    pub fn without_token(mut self) -> Self {
        self.token_withheld |= self.token.take().is_some();
        self
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

/// Everything the Secret's data should hold around `token`: the kind's plain keys, the token,
/// and the additional formats the spec asks for (their values computed from `token`).
pub fn desired_data<K: Kind>(
    obj: &K,
    status: &StatusOf<K>,
    token: &str,
) -> BTreeMap<String, String> {
    let template = obj.secret_template();
    let mut data = formats::render(template, obj.consumer(status).as_ref(), token);
    data.extend(obj.secret_data(status));
    data.insert(obj.token_key().to_owned(), token.to_owned());
    data
}

/// A fingerprint of what [`desired_data`] asks around any token for `status`: a view of the
/// Secret judged up to date against one status stands for another only if they agree.
pub fn desired_fingerprint<K: Kind>(obj: &K, status: &StatusOf<K>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    desired_data(obj, status, "").hash(&mut h);
    h.finish()
}

/// The data keys of `secret` that the operator's field manager owns (wrote and nobody took
/// over since), from its managed fields.
fn keys_owned(secret: &Secret) -> Vec<String> {
    let mut keys: Vec<String> = secret
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() == Some(FIELD_MANAGER))
        .filter_map(|m| m.fields_v1.as_ref()?.0.get("f:data")?.as_object())
        .flat_map(|data| data.keys())
        .filter_map(|k| k.strip_prefix("f:"))
        .map(String::from)
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The owner-name label's value for a resource named `name`: a valid label value (at most 63
/// characters, alphanumeric at both ends), so that a long name whose 63rd character is a `-`
/// or a `.` does not make every Secret write fail.
pub fn owner_name_label(name: &str) -> String {
    let kept: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(63)
        .collect();
    kept.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

/// Whether `secret`, not owned by `owner`, is one the operator wrote for an earlier resource
/// of the same kind and name, restored from a backup (or left behind by a resource deleted
/// without the operator): its labels name that kind and name, its annotation the token, and
/// its controller, if it names one, is of that kind and name. A namespace holds one object of
/// a kind and name at a time, so that earlier resource is gone.
fn restored_for(secret: &Secret, owner: &OwnerReference) -> bool {
    let meta = &secret.metadata;
    let label = |k: &str| {
        meta.labels
            .as_ref()
            .and_then(|l| l.get(k))
            .map(String::as_str)
    };
    let name = owner_name_label(&owner.name);
    label(LABEL_MANAGED_BY) == Some(MANAGED_BY)
        && label(LABEL_OWNER_KIND) == Some(owner.kind.as_str())
        && label(LABEL_OWNER_NAME) == Some(name.as_str())
        && meta
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(ANNOTATION_TOKEN_ID))
        && meta
            .owner_references
            .iter()
            .flatten()
            .filter(|r| r.controller == Some(true))
            .all(|r| r.kind == owner.kind && r.name == owner.name && r.uid != owner.uid)
}

/// Every Secret the resource may have written, to release at deletion: the one status records
/// (it holds the current token, also while a rename waits for the next one), the spec's, and
/// any other the Secret watch shows it controls (an earlier name).
pub fn written_names<K: Kind>(obj: &K, ctx: &super::Context) -> Vec<String> {
    let ns = obj.namespace().unwrap_or_default();
    let uid = obj.uid().unwrap_or_default();
    let mut names: Vec<String> = obj
        .cr_status()
        .and_then(|s| s.secret_name.clone())
        .into_iter()
        .chain([secret_name(obj)])
        .chain(ctx.secrets_controlled_by(&ns, &uid))
        .collect();
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// The Secret's metadata as the spec asks for it, with `nuclia.dev/reissue-minted` when the
/// current token was minted after one (what was minted with this Secret's token re-issues too).
pub fn template_of<'a, K: Kind>(
    obj: &'a K,
    status: &StatusOf<K>,
) -> std::borrow::Cow<'a, SecretTemplate> {
    let template = obj.secret_template();
    match &status.reissue_handled {
        None => std::borrow::Cow::Borrowed(template),
        Some(v) => {
            let mut t = template.clone();
            t.annotations
                .insert(crate::crd::ANNOTATION_REISSUE.into(), v.clone());
            std::borrow::Cow::Owned(t)
        }
    }
}

/// Reads the Secret. The spec's labels, annotations and type, and `desired` (the whole data
/// the spec asks for around the token the Secret holds, see [`desired_data`]), tell whether a
/// refresh is due: a format key edited by hand, or one the spec no longer asks for, is.
pub async fn read(
    api: &Api<Secret>,
    name: &str,
    owner: &OwnerReference,
    token_key: &str,
    template: &SecretTemplate,
    desired: impl FnOnce(&str) -> BTreeMap<String, String>,
) -> Result<SecretView> {
    let Some(secret) = api.get_opt(name).await.map_err(Error::kube("get Secret"))? else {
        return Ok(SecretView::missing());
    };
    Ok(view_of(&secret, owner, token_key, template, desired))
}

/// Classifies `secret` as [`read`] does (also the Secret a write returns: what the operator
/// wrote is known without reading it back).
pub fn view_of(
    secret: &Secret,
    owner: &OwnerReference,
    token_key: &str,
    template: &SecretTemplate,
    desired: impl FnOnce(&str) -> BTreeMap<String, String>,
) -> SecretView {
    let terminating = secret.metadata.deletion_timestamp.is_some();
    let restored = !owned_by(secret, &owner.uid) && restored_for(secret, owner);
    if !owned_by(secret, &owner.uid) && !restored {
        return SecretView {
            state: SecretState::Foreign,
            token: None,
            token_withheld: false,
            token_id: None,
            exists: true,
            resource_version: secret.metadata.resource_version.clone(),
            terminating,
            secret_type: None,
            owned_keys: Vec::new(),
            restored: false,
            not_after: None,
            reissue_mark: None,
        };
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
    let secret_type = secret.type_.clone().unwrap_or_else(|| DEFAULT_TYPE.into());
    let owned_keys = keys_owned(secret);
    let data_current = || {
        let Some(token) = token.as_deref() else {
            return false;
        };
        let want = desired(token);
        want.iter()
            .all(|(k, v)| text(k).as_deref() == Some(v.as_str()))
            && owned_keys.iter().all(|k| want.contains_key(k))
    };
    let up_to_date = !restored
        && held
        && template
            .labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        && template
            .annotations
            .iter()
            .all(|(k, v)| annotations.get(k) == Some(v))
        && secret_type == desired_type(template)
        && data_current();
    SecretView {
        state: SecretState::Owned {
            token_hash: token.as_deref().map(token_hash),
            up_to_date,
        },
        token: token.map(ApiToken::new),
        token_withheld: false,
        token_id: annotations.get(ANNOTATION_TOKEN_ID).cloned(),
        exists: true,
        resource_version: secret.metadata.resource_version.clone(),
        terminating,
        secret_type: Some(secret_type),
        owned_keys,
        restored,
        not_after: annotations
            .get(ANNOTATION_NOT_AFTER)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc)),
        reissue_mark: annotations.get(crate::crd::ANNOTATION_REISSUE).cloned(),
    }
}

/// The type the spec asks for.
fn desired_type(template: &SecretTemplate) -> &str {
    template.secret_type.as_deref().unwrap_or(DEFAULT_TYPE)
}

fn build(d: &Desired<'_>, owner_kind: &str) -> Secret {
    let mut labels = d.template.labels.clone();
    labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    labels.insert(LABEL_OWNER_KIND.into(), owner_kind.into());
    labels.insert(LABEL_OWNER_NAME.into(), owner_name_label(&d.owner.name));
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
        type_: Some(desired_type(d.template).into()),
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
/// meanwhile), server-side apply when this resource owns it, and removes the data keys it
/// wrote that `d` no longer has. A Secret of another type is replaced (a Secret's type cannot
/// change in place). Returns the Secret as written.
pub async fn write(api: &Api<Secret>, d: &Desired<'_>, view: &SecretView) -> Result<Secret> {
    let mut secret = build(d, &d.owner.kind);
    if !view.exists || view.state == SecretState::Missing {
        return create(api, d.name, &secret).await;
    }
    if view.restored {
        // The restored owner reference names a resource that is gone: this one replaces it
        // (server-side apply would keep both, and only one may be the controller).
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": view.resource_version,
                "ownerReferences": [d.owner],
            }
        });
        merge(api, d.name, &patch, "take over the restored Secret").await?;
    }
    let current_type = view.secret_type.as_deref().unwrap_or(DEFAULT_TYPE);
    if current_type != desired_type(d.template) {
        return replace(api, d, &secret).await;
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
    // Server-side apply drops only the keys no other manager shares (the create, a hand edit
    // taken back): the rest of what the spec no longer asks for goes explicitly.
    let stale: serde_json::Map<String, serde_json::Value> = written
        .data
        .iter()
        .flatten()
        .map(|(k, _)| k)
        .filter(|k| view.owned_keys.contains(k) && !d.data.contains_key(*k))
        .map(|k| (k.clone(), serde_json::Value::Null))
        .collect();
    if stale.is_empty() {
        return Ok(written);
    }
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": written.metadata.resource_version},
        "data": stale,
    });
    merge(api, d.name, &patch, "remove Secret keys").await
}

/// A merge patch of the Secret as the operator's field manager; `what` names it in the error.
async fn merge(
    api: &Api<Secret>,
    name: &str,
    patch: &serde_json::Value,
    what: &'static str,
) -> Result<Secret> {
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    api.patch(name, &params, &Patch::Merge(patch))
        .await
        .map_err(Error::kube(what))
}

async fn create(api: &Api<Secret>, name: &str, secret: &Secret) -> Result<Secret> {
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match api.create(&params, secret).await {
        Ok(s) => Ok(s),
        Err(e) if Error::is_conflict(&e) || matches!(&e, kube::Error::Api(s) if s.code == 409) => {
            Err(Error::SecretConflict(format!(
                "Secret {name:?} was created by someone else; choose another spec.secret.name or delete that Secret"
            )))
        }
        Err(e) => Err(Error::kube("create Secret")(e)),
    }
}

/// Replaces the Secret with one of the type `d` asks for, keeping its token: checked first
/// with a dry run (a type the apiserver refuses leaves the Secret as it is), then the old one
/// is let go (its finalizer dropped, deleted) and the new one created at once, so consumers
/// see it missing for a few milliseconds only.
async fn replace(api: &Api<Secret>, d: &Desired<'_>, secret: &Secret) -> Result<Secret> {
    let dry_run = PostParams {
        dry_run: true,
        field_manager: Some(FIELD_MANAGER.into()),
    };
    match api.create(&dry_run, secret).await {
        // Valid, and the name is taken (by the Secret being replaced): go ahead.
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        // Gone meanwhile: created below.
        Ok(_) => {}
        Err(kube::Error::Api(s)) if matches!(s.code, 400 | 403 | 422) => {
            return Err(Error::InvalidSpec(format!(
                "the apiserver refuses Secret {:?} as type {:?}: {}; set spec.secret.type to another type",
                d.name,
                desired_type(d.template),
                s.message
            )));
        }
        Err(e) => return Err(Error::kube("check the Secret's new type")(e)),
    }
    release(api, d.name, &d.owner.uid, false).await?;
    create(api, d.name, secret).await
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
